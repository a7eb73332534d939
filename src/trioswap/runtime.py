"""Runtime overrides of the config, per model: the prompt optimizer's policy and the context size
a model server is started with. They are set over the control API and kept in a small JSON state
file, so they survive restarts:

    {"version": 1, "models": {"<id>": {"promptOptimization": "always", "ctxSize": 8192}}}

Each change is written whole (a temp file beside it, fsync, rename) before it takes effect, one
change at a time. A file trioswap cannot read is left alone until the first change, which moves it
aside as `….bad`; entries of models the config no longer has are kept in the file, unused. Also
here, never persisted: the latest optimization snapshot of each model, for the API to show.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Collection, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import trio

from trioswap.config import POLICIES, ModelConfig
from trioswap.config.cmdline import with_ctx_size
from trioswap.errors import TrioswapError

log = logging.getLogger("trioswap.runtime")

VERSION = 1
POLICY_KEY = "promptOptimization"
CTX_KEY = "ctxSize"
MIN_CTX_SIZE = 256
MAX_CTX_SIZE = 16_777_216

Entries = dict[str, dict[str, Any]]


class StateWriteError(TrioswapError):
    def __init__(self, path: Path, exc: OSError) -> None:
        super().__init__(
            f"cannot save the runtime state to {path}: {exc.strerror or exc}; nothing was "
            "changed (check that folder, or start trioswap with another --state-dir)"
        )


def state_path(
    config_file: Path | None, state_dir: Path | None, environ: Mapping[str, str]
) -> Path:
    """`<state dir>/<config stem>.state.json`: the state dir is `state_dir`, else the config
    file's folder; with no config file (the bundled demo), `$XDG_STATE_HOME/trioswap`."""
    if state_dir is None:
        if config_file is not None:
            state_dir = config_file.parent
        else:
            xdg = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
            state_dir = Path(xdg) / "trioswap"
    stem = "demo" if config_file is None else config_file.stem
    return state_dir / f"{stem}.state.json"


def make_state_dir(folder: Path) -> None:
    """Create `--state-dir` if missing; OSError when it cannot hold the state file."""
    folder.mkdir(parents=True, exist_ok=True)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"{folder} is not writable")


def check_policy(value: object) -> str | None:
    """`value` as a policy override (None: no override); ValueError saying what is valid."""
    if value is None:
        return None
    if not isinstance(value, str) or value not in POLICIES:
        raise ValueError(f"{value!r} is not a policy: use one of {', '.join(POLICIES)}, or null")
    return value


def check_ctx_size(value: object) -> int | None:
    """`value` as a ctx size override (None: no override); ValueError saying what is valid."""
    if value is None:
        return None
    # bool is an int subclass, but `true` is no context size.
    if type(value) is not int or not MIN_CTX_SIZE <= value <= MAX_CTX_SIZE:
        raise ValueError(
            f"{value!r} is not a context size: use an integer from {MIN_CTX_SIZE} to "
            f"{MAX_CTX_SIZE}, or null"
        )
    return value


def read_entries(path: Path) -> tuple[Entries, str | None]:
    """The file's model entries, or why it cannot be used; a missing file has none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}, None
    except (OSError, UnicodeDecodeError) as exc:
        return {}, getattr(exc, "strerror", None) or str(exc)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        return {}, f"not JSON: {exc}"
    if not isinstance(document, dict) or document.get("version") != VERSION:
        return {}, f'not a version {VERSION} state file (no "version": {VERSION})'
    models = document.get("models", {})
    if not isinstance(models, dict) or not all(isinstance(e, dict) for e in models.values()):
        return {}, '"models" is not an object of objects'
    return models, None


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` so that a crash leaves the old file or the new one, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself survives a crash too
    finally:
        os.close(folder)


class RuntimeState:
    """The overrides in effect (sync reads, for the hot path) and their state file (async
    writes). With no path (tests, tools), nothing is persisted."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        # Told of every optimization snapshot (model id, snapshot): events and metrics.
        self.snapshot_listeners: list[Callable[[str, Mapping[str, Any]], None]] = []
        self._entries: Entries = {}
        self._policies: dict[str, str] = {}
        self._ctx_sizes: dict[str, int] = {}
        self._snapshots: dict[str, Mapping[str, Any]] = {}
        # The file on disk could not be read: moved aside at the first write, not overwritten.
        self._keep_bad = False
        self._writing = trio.Lock()

    @classmethod
    async def load(
        cls, path: Path, models: Collection[str], discovered_prefix: str | None = None
    ) -> RuntimeState:
        """The state in `path` for a config with `models`, and models found at run time whose
        ids start with `discovered_prefix` (Ollama's); problems are logged warnings."""
        state = cls(path)
        entries, problem = await trio.to_thread.run_sync(read_entries, path)
        if problem is not None:
            log.warning(
                "runtime state file %s cannot be used (%s): starting with no runtime overrides; "
                "it is kept as %s.bad when one is next set",
                path,
                problem,
                path.name,
            )
            state._keep_bad = True
        state._entries = entries
        for model_id, entry in entries.items():
            discovered = discovered_prefix is not None and model_id.startswith(discovered_prefix)
            if model_id not in models and not discovered:
                log.warning(
                    "runtime state file %s: model %r is not in the config: its overrides are "
                    "kept in the file, unused",
                    path,
                    model_id,
                )
                continue
            state._adopt(model_id, entry)
        return state

    def _adopt(self, model_id: str, entry: Mapping[str, Any]) -> None:
        for key, check, into in (
            (POLICY_KEY, check_policy, self._policies),
            (CTX_KEY, check_ctx_size, self._ctx_sizes),
        ):
            try:
                value = check(entry.get(key))
            except ValueError as exc:
                log.warning(
                    "runtime state file %s: model %r: %s: %s; ignored",
                    self.path,
                    model_id,
                    key,
                    exc,
                )
                continue
            if value is not None:
                into[model_id] = value

    # -- the hot path ---------------------------------------------------------------------

    def policy(self, model_id: str) -> str | None:
        return self._policies.get(model_id)

    def ctx_size(self, model_id: str) -> int | None:
        return self._ctx_sizes.get(model_id)

    def launch(self, model: ModelConfig) -> ModelConfig:
        """`model` as it is to be started: with its runtime ctx size, if it has one."""
        size = self._ctx_sizes.get(model.id)
        return model if size is None else with_ctx(model, size)

    def record_snapshot(self, model_id: str, snapshot: Mapping[str, Any]) -> None:
        self._snapshots[model_id] = snapshot
        for listener in self.snapshot_listeners:
            listener(model_id, snapshot)

    def snapshot(self, model_id: str) -> Mapping[str, Any] | None:
        return self._snapshots.get(model_id)

    # -- changes --------------------------------------------------------------------------

    async def set_policy(self, model_id: str, policy: str | None) -> None:
        """Persist, then use, `model_id`'s policy override (None: the config's again)."""
        await self._change(model_id, POLICY_KEY, check_policy(policy))

    async def set_ctx_size(self, model_id: str, size: int | None) -> None:
        """Persist, then use, `model_id`'s ctx size override (None: the config's again)."""
        await self._change(model_id, CTX_KEY, check_ctx_size(size))

    async def _change(self, model_id: str, key: str, value: str | int | None) -> None:
        # A change is saved whole or not at all, even if its requester goes away meanwhile; the
        # lock keeps each read-modify-write of the file apart.
        with trio.CancelScope(shield=True):
            async with self._writing:
                entries = dict(self._entries)
                entry = {k: v for k, v in entries.get(model_id, {}).items() if k != key}
                if value is not None:
                    entry[key] = value
                if entry:
                    entries[model_id] = entry
                else:
                    entries.pop(model_id, None)
                if self.path is not None:
                    try:
                        await trio.to_thread.run_sync(self._save, self.path, entries)
                    except OSError as exc:
                        raise StateWriteError(self.path, exc) from exc
                self._entries = entries
                self._policies.pop(model_id, None)
                self._ctx_sizes.pop(model_id, None)
                self._adopt(model_id, entry)

    def _save(self, path: Path, entries: Entries) -> None:
        """Runs in a worker thread, under the write lock."""
        if self._keep_bad:
            bad = path.with_name(path.name + ".bad")
            try:
                os.replace(path, bad)
                log.warning("runtime state file %s moved aside to %s", path, bad.name)
            except FileNotFoundError:
                pass
            self._keep_bad = False
        text = json.dumps({"version": VERSION, "models": entries}, indent=2) + "\n"
        write_atomically(path, text)


def with_ctx(model: ModelConfig, size: int) -> ModelConfig:
    """`model` started with a `size`-token context, also when it is moved to another port."""
    moved = model.with_port
    return replace(
        model,
        cmd=with_ctx_size(model.cmd, size),
        with_port=None if moved is None else lambda port: with_ctx(moved(port), size),
    )
