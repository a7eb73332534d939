"""What a model's launch command says about the model, and rewriting its context size.

llama-server's flags are read as it reads them: `-m`/`--model`, `-c`/`--ctx-size`,
`-np`/`--parallel`, `-kvu`/`--kv-unified`, `--kv-unified-per-slot`, each as `FLAG VALUE` or
`FLAG=VALUE`, the last one winning, and their `LLAMA_ARG_*` environment variables where the flag
is absent. A command that is not llama-server's simply has none of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

MODEL_FLAGS = ("-m", "--model")
CTX_FLAGS = ("-c", "--ctx-size")
PARALLEL_FLAGS = ("-np", "--parallel")
UNIFIED_FLAGS = ("-kvu", "--kv-unified")
NOT_UNIFIED_FLAGS = ("-no-kvu", "--no-kv-unified")
PER_SLOT_FLAGS = ("--kv-unified-per-slot",)
_ENV = {
    MODEL_FLAGS: "LLAMA_ARG_MODEL",
    CTX_FLAGS: "LLAMA_ARG_CTX_SIZE",
    PARALLEL_FLAGS: "LLAMA_ARG_N_PARALLEL",
    PER_SLOT_FLAGS: "LLAMA_ARG_KV_UNIFIED_PER_SLOT",
}


def flag_value(
    cmd: Sequence[str], flags: tuple[str, ...], env: Mapping[str, str] | None = None
) -> str | None:
    """The value of the last of `flags` in `cmd`, else of its environment variable in `env`."""
    found: str | None = None
    for i, word in enumerate(cmd):
        if word in flags:
            if i + 1 < len(cmd):
                found = cmd[i + 1]
        else:
            name, sep, value = word.partition("=")
            if sep and name in flags:
                found = value
    if found is None and env is not None and flags in _ENV:
        found = env.get(_ENV[flags])
    return found


def int_flag(
    cmd: Sequence[str], flags: tuple[str, ...], env: Mapping[str, str] | None = None
) -> int | None:
    value = flag_value(cmd, flags, env)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def model_file(cmd: Sequence[str], env: Mapping[str, str] | None = None) -> str | None:
    """The GGUF file the command loads (`-m PATH`), if it names one. Only a `.gguf` path counts:
    `-m` means other things to other programs (`python -m module`)."""
    path = flag_value(cmd, MODEL_FLAGS, env)
    return path if path is not None and path.lower().endswith(".gguf") else None


def ctx_size(cmd: Sequence[str], env: Mapping[str, str] | None = None) -> int | None:
    """The context size the command asks for; None when absent or 0 (the model's own)."""
    size = int_flag(cmd, CTX_FLAGS, env)
    return size if size is not None and size > 0 else None


def context_per_request(window: int, cmd: Sequence[str], env: Mapping[str, str]) -> int:
    """How much of a `window`-token context one request may use. llama-server splits its
    context between `--parallel` slots unless the KV cache is unified (shared by all slots,
    each request may use all of it); `--kv-unified-per-slot N` caps a slot at N."""
    per_slot = int_flag(cmd, PER_SLOT_FLAGS, env)
    if per_slot is not None and per_slot > 0:
        return min(window, per_slot)
    slots = int_flag(cmd, PARALLEL_FLAGS, env)
    unified = _last_switch(cmd, UNIFIED_FLAGS, NOT_UNIFIED_FLAGS)
    # Slots given explicitly get a split cache unless unified is asked for; the auto default
    # (-1) unifies it.
    if slots is not None and slots > 1 and unified is not True:
        return window // slots
    return window


def with_ctx_size(cmd: Sequence[str], size: int) -> tuple[str, ...]:
    """`cmd` asking for a `size`-token context: every existing `-c`/`--ctx-size` rewritten in
    place, or `--ctx-size SIZE` appended."""
    out = list(cmd)
    found = False
    for i, word in enumerate(out):
        if word in CTX_FLAGS and i + 1 < len(out):
            out[i + 1] = str(size)
            found = True
        else:
            name, sep, _ = word.partition("=")
            if sep and name in CTX_FLAGS:
                out[i] = f"{name}={size}"
                found = True
    if not found:
        out += ["--ctx-size", str(size)]
    return tuple(out)


def _last_switch(cmd: Sequence[str], on: tuple[str, ...], off: tuple[str, ...]) -> bool | None:
    state: bool | None = None
    for word in cmd:
        if word in on:
            state = True
        elif word in off:
            state = False
    return state
