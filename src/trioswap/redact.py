"""One rule for what is secret, applied wherever a command line or an environment is shown:
`trioswap validate`, `/running`, the log line of a model server's start.

A command-line flag or an environment variable is secret when its name ends in key, keys, token,
secret, password or passwd: `--api-key X`, `--hf-token=X`, `OPENAI_API_KEY=X` and `db_password`
are; `--tokens-per-second`, `--max-tokens` and `CUDA_VISIBLE_DEVICES` are not.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping

MASK = "***"
_SECRET_NAME = re.compile(r"(?:key|keys|token|secret|password|passwd)$", re.IGNORECASE)
_ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def is_secret_name(name: str) -> bool:
    """Whether a flag (`--api-key`) or a variable name (`HF_TOKEN`) holds a secret."""
    return bool(_SECRET_NAME.search(name.lstrip("-")))


def redact_args(args: Iterable[str]) -> list[str]:
    """`--api-key X`, `--api-key=X` and `HF_TOKEN=X` (as `env` takes it) with X masked."""
    out: list[str] = []
    previous = ""
    for arg in args:
        name, eq, _ = arg.partition("=")
        if eq and (name.startswith("-") or _ENV_ASSIGNMENT.match(arg)) and is_secret_name(name):
            out.append(f"{name}={MASK}")
        elif previous.startswith("-") and "=" not in previous and is_secret_name(previous):
            out.append(MASK)
        else:
            out.append(arg)
        previous = arg
    return out


def shown_command(args: Iterable[str]) -> str:
    """A command line as it may be shown: shell-quoted, secrets masked."""
    return shlex.join(redact_args(args))


def redact_env(env: Mapping[str, str]) -> dict[str, str]:
    return {name: MASK if is_secret_name(name) else value for name, value in env.items()}
