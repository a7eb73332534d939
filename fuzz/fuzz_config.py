"""Fuzz target: the config loader. Any text either loads or raises ConfigError (never another
exception), every problem names the file, `strict` turns exactly the warnings into errors, and a
loaded config can always be shown by `trioswap validate`."""

from __future__ import annotations

import json
import sys

import atheris

with atheris.instrument_imports():
    from trioswap.config import loads, redacted, summary
    from trioswap.errors import ConfigError

ENVIRON = {"HOME": "/home/fuzz", "MODEL_DIR": "/models"}


def test_one_input(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    try:
        config = loads(text, "fuzz.yaml", ENVIRON)
    except ConfigError as exc:
        for problem in exc.problems:
            assert problem.file == "fuzz.yaml"
        return
    for warning in config.warnings:
        assert warning.file == "fuzz.yaml"
    if config.warnings:
        try:
            loads(text, "fuzz.yaml", ENVIRON, strict=True)
        except ConfigError as exc:
            assert sorted(map(str, exc.problems)) == sorted(map(str, config.warnings))
        else:
            raise AssertionError(f"strict loaded despite {len(config.warnings)} warnings")
    json.dumps(redacted(config))
    assert summary(config).startswith("OK: ")
    for model in config.models.values():
        if model.with_port is not None and model.port is not None:
            assert model.with_port(model.port + 1).port == model.port + 1


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
