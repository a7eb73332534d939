"""Command line: `trioswap [--config FILE] [--config-dir DIR] [--listen HOST:PORT]
[--state-dir DIR]`, `trioswap validate [--strict] [--json] FILE`, `trioswap schema` and
`trioswap logs [--model M | --source S] [--url U] [--api-key K] [--no-history]`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import zipfile
from dataclasses import replace
from importlib import resources
from pathlib import Path

import trio

from trioswap import __version__
from trioswap.assets import data_folder
from trioswap.config import (
    LOG_LEVELS,
    Config,
    json_schema,
    load,
    load_dir,
    redacted,
    summary,
)
from trioswap.errors import ConfigError
from trioswap.runtime import make_state_dir, state_path

DEFAULT_LISTEN = "127.0.0.1:8080"


def demo_config_path() -> Path:
    with resources.as_file(data_folder("config") / "demo.yaml") as path:
        return Path(path)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="trioswap",
        description="A model-swapping proxy for local LLM servers.",
        epilog="With no --config, serves the bundled demo config.",
    )
    parser.add_argument("--version", action="version", version=f"trioswap {__version__}")
    parser.add_argument("--config", "-c", help="YAML config file (llama-swap format)")
    parser.add_argument(
        "--config-dir", help="also read every *.yaml/*.yml here, merged in name order"
    )
    parser.add_argument("--strict", action="store_true", help="treat config warnings as errors")
    parser.add_argument("--listen", "-l", default=DEFAULT_LISTEN, help="HOST:PORT to serve on")
    parser.add_argument("--log-level", choices=LOG_LEVELS, help="overrides logLevel")
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="where runtime overrides (ctx size, prompt optimization) are kept (default: the "
        "config file's folder; for the demo, $XDG_STATE_HOME/trioswap)",
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("responder", help="run the bundled test/demo upstream server (see --help)")
    validate = sub.add_parser("validate", help="check a config: its warnings, errors, summary")
    validate.add_argument("file", nargs="?", help="YAML config file (default: --config)")
    validate.add_argument(
        "--strict", action="store_true", default=argparse.SUPPRESS, help="warnings are errors"
    )
    validate.add_argument("--json", action="store_true", help="print the resolved config")
    sub.add_parser("schema", help="print the config file's JSON Schema")
    logs = sub.add_parser("logs", help="tail a running trioswap's logs (reconnects on restart)")
    which = logs.add_mutually_exclusive_group()
    which.add_argument("--model", "-m", help="one model's log (an id or alias)")
    which.add_argument("--source", default="all", help="all (default), proxy, upstream or a model")
    logs.add_argument("--url", default=f"http://{DEFAULT_LISTEN}", help="trioswap's address")
    logs.add_argument("--api-key", help="one of its apiKeys (default: $TRIOSWAP_API_KEY)")
    logs.add_argument("--no-history", action="store_true", help="only lines from now on")
    return parser.parse_args(argv)


def self_command() -> str:
    """How a child process runs this trioswap: configs use it as ${env.TRIOSWAP_SELF}."""
    argv0 = sys.argv[0]
    if argv0.endswith(".pyz") and zipfile.is_zipfile(argv0):
        return shlex.join([sys.executable, str(Path(argv0).resolve())])
    return shlex.join([sys.executable, "-m", "trioswap"])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["responder"]:
        from trioswap.responder import main as responder_main

        responder_main(argv[1:])
    os.environ.setdefault("TRIOSWAP_SELF", self_command())
    args = parse_args(argv)
    if args.command == "schema":
        return _print(json.dumps(json_schema(), indent=2))
    if args.command == "validate":
        return _validate(args)
    if args.command == "logs":
        from trioswap.logs_cli import main as logs_main

        return logs_main(args.url, args.model or args.source, args.api_key, not args.no_history)
    demo = args.config is None and args.config_dir is None
    try:
        config = _load(args.config or (None if args.config_dir else demo_config_path()), args)
    except ConfigError as exc:
        for warning in exc.warnings:
            print(f"trioswap: warning: {warning}", file=sys.stderr)
        print(f"trioswap: invalid config\n{exc}", file=sys.stderr)
        return 1
    for warning in config.warnings:
        print(f"trioswap: warning: {warning}", file=sys.stderr)
    if args.log_level:
        config = _with_log_level(config, args.log_level)
    if args.state_dir is not None:
        try:
            make_state_dir(args.state_dir)
        except OSError as exc:
            print(
                f"trioswap: --state-dir {args.state_dir} cannot be used: {exc.strerror or exc}",
                file=sys.stderr,
            )
            return 1
    config_file = None if demo else Path(config.path)
    state_file = state_path(config_file, args.state_dir, os.environ)
    return trio.run(_serve, config, args.listen, demo, state_file)


def _load(path: str | Path | None, args: argparse.Namespace) -> Config:
    if args.config_dir:
        return load_dir(path, args.config_dir, strict=args.strict)
    assert path is not None
    return load(path, strict=args.strict)


def _validate(args: argparse.Namespace) -> int:
    path = args.file or args.config
    if path is None and not args.config_dir:
        print("trioswap validate: name a config file", file=sys.stderr)
        return 2
    try:
        config = _load(path, args)
    except ConfigError as exc:
        for warning in exc.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print(exc, file=sys.stderr)
        print(
            f"invalid: {len(exc.problems)} problem" + "s" * (len(exc.problems) != 1),
            file=sys.stderr,
        )
        return 1
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        return _print(json.dumps(redacted(config), indent=2))
    return _print(summary(config))


def _print(text: str) -> int:
    try:
        print(text, flush=True)
    except BrokenPipeError:  # `trioswap validate --json FILE | head` is fine
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stays open until exit
    return 0


def _with_log_level(config: Config, level: str) -> Config:
    return replace(config, log_level=level)


async def _serve(config: Config, listen: str, demo: bool, state_file: Path) -> int:
    # Imported here so `trioswap validate` and `--version` don't pay for the web stack.
    from trioswap.app import (
        bind_listener,
        is_loopback,
        open_activity,
        raise_open_file_limit,
        run,
        setup_logging,
    )
    from trioswap.observe.activity import ActivityStoreError
    from trioswap.observe.logs import LogHub

    try:
        listener = bind_listener(listen, config.listen_backlog)
    except (OSError, ValueError) as exc:
        print(
            f"trioswap: cannot listen on {listen}: {getattr(exc, 'strerror', None) or exc}",
            file=sys.stderr,
        )
        return 1
    try:
        activity = await open_activity(config)
    except ActivityStoreError as exc:
        listener.close()
        print(f"trioswap: store.path {config.observe.store_path}: {exc}", file=sys.stderr)
        return 1
    logs = LogHub(to_stdout=config.log_to_stdout)
    setup_logging(config.log_level, config.log_time_format, logs)
    raise_open_file_limit()
    if not config.api_keys and not is_loopback(listener):
        logging.getLogger("trioswap").warning(
            "listening on %s without apiKeys: anyone who can reach this address can use and "
            "unload your models (set apiKeys, or listen on 127.0.0.1)",
            listen,
        )
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(run, config, listener, logs, state_file, activity)
        url = binds[0]
        print(f"trioswap listening on {url}", flush=True)
        if demo:
            print(_demo_hint(url, config), flush=True)
    return 0


def _demo_hint(url: str, config: Config) -> str:
    first = next(iter(config.models))
    return (
        f"Serving the bundled demo config ({len(config.models)} models). Try:\n"
        f"  curl {url}/v1/models\n"
        f"  curl {url}/v1/chat/completions -H 'content-type: application/json' "
        f'-d \'{{"model": "{first}", "messages": [{{"role": "user", "content": "hi"}}]}}\'\n'
        f"  curl {url}/running\n"
        f"or open {url}/ui/ in a browser.\n"
        "Use --config FILE for your own models (see config/example.yaml)."
    )
