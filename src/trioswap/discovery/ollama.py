"""A running Ollama's models, as `ollama/<name>`: listed, routed and optimized like local ones.

`Ollama.run` lives in the app's root nursery. It reads `/api/version`, `/api/tags` and `/api/ps`
at start, every `ollama.refresh`, and when a request names an `ollama/…` id it does not know
(at most once a second, concurrent asks sharing one read). Each model's `/api/show` (its
Modelfile's parameters) is read in the background after a listing and when a request needs it
first; `show --verbose`'s vocabulary only when the optimizer first counts for the model. An
Ollama that does not answer is not an error: its models leave the listing, which is logged once
when it goes away and once when it is back.

The context a model is served with is what Ollama loads it with, not what it was trained for
(`model_info.<arch>.context_length`): `PARAMETER num_ctx` of its Modelfile, else the
`context_length` `/api/ps` reports while it is loaded, else `OLLAMA_CONTEXT_LENGTH` (when set
for trioswap), else Ollama's documented default (`DEFAULT_CONTEXT`).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from typing import Any

import trio

from trioswap.clip import clip
from trioswap.config import Config, Filters, ModelConfig, OllamaSettings
from trioswap.pipeline.translated import read_reply
from trioswap.pipeline.upstream import (
    TRANSPORT_ERRORS,
    PoolFor,
    open_response,
    upstream_timeouts,
    upstream_url,
)

log = logging.getLogger("trioswap.ollama")

PREFIX = "ollama/"
# docs/context-length.mdx (ollama commit 948f693, the 0.2x series): 4k below 24 GiB of VRAM,
# 32k up to 48 GiB, 256k above. trioswap cannot see Ollama's VRAM, so it assumes the least:
# a smaller budget over-trims a little; a larger one lets Ollama silently cut the prompt.
DEFAULT_CONTEXT = 4096
# Ollama serves /v1/responses from 0.13.3 and /v1/messages (Anthropic) from 0.14.0; older
# versions get those requests translated to chat completions.
NATIVE_SINCE = {"responses": (0, 13, 3), "anthropic": (0, 14, 0)}
# An unknown id reads the listing again at most this often (seconds): a client asking for
# names that do not exist cannot make trioswap poll Ollama in a loop.
ON_DEMAND_GAP = 1.0
# The longest a listing may take before it counts as a failure (seconds).
READ_TIMEOUT = 10.0
SHOW_CONCURRENCY = 4
_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")
_JSON = [(b"content-type", b"application/json")]


class OllamaUnavailable(Exception):
    """Ollama did not answer, or answered something that is not its API."""


@dataclass(frozen=True, slots=True)
class Shown:
    """What `/api/show` says about a model that matters here."""

    num_ctx: int | None
    trained_context: int | None


@dataclass(frozen=True, slots=True)
class Discovered:
    """One model Ollama serves. `config` is how the pipeline's stages see it: a model with no
    command, Ollama's URL as its proxy and the Ollama name as `useModelName`."""

    name: str
    digest: str
    size: int
    details: Mapping[str, Any]
    modified_at: str
    config: ModelConfig = field(repr=False)

    @property
    def id(self) -> str:
        return self.config.id


def model_key(name: str) -> str:
    """Ollama's own name for a model name: `llama3.2` is `llama3.2:latest`."""
    last = name.rpartition("/")[2]
    return name if ":" in last else f"{name}:latest"


def parse_version(text: object) -> tuple[int, int, int] | None:
    match = _VERSION.match(text) if isinstance(text, str) else None
    return None if match is None else (int(match[1]), int(match[2]), int(match[3]))


def api_modes(version: tuple[int, int, int] | None) -> dict[str, str]:
    """Native for the families this Ollama serves, else translated. A version that does not
    parse (a development build) is taken as new."""
    return {
        family: "native" if version is None or version >= since else "translate"
        for family, since in NATIVE_SINCE.items()
    }


def num_ctx(parameters: object) -> int | None:
    """`num_ctx` of `/api/show`'s `parameters`: `key value` lines, the key padded."""
    if not isinstance(parameters, str):
        return None
    for line in parameters.splitlines():
        key, _, value = line.strip().partition(" ")
        if key == "num_ctx":
            try:
                size = int(value.strip())
            except ValueError:
                return None
            return size if size > 0 else None
    return None


def shown(reply: Mapping[str, Any]) -> Shown:
    info = reply.get("model_info")
    trained = None
    if isinstance(info, dict):
        arch = info.get("general.architecture")
        value = info.get(f"{arch}.context_length")
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            trained = value
    return Shown(num_ctx(reply.get("parameters")), trained)


def vocabulary(reply: Mapping[str, Any]) -> dict[str, Any] | None:
    """The `tokenizer.ggml.*` metadata of a verbose `/api/show`, if it has the arrays."""
    info = reply.get("model_info")
    if not isinstance(info, dict):
        return None
    meta = {k: v for k, v in info.items() if k.startswith("tokenizer.ggml.") and v is not None}
    if not isinstance(meta.get("tokenizer.ggml.tokens"), list):
        return None
    return meta


def env_context(environ: Mapping[str, str]) -> int | None:
    try:
        value = int(environ.get("OLLAMA_CONTEXT_LENGTH", ""))
    except ValueError:
        return None
    return value if value > 0 else None


class Ollama:
    """The models one Ollama serves, kept current. Not thread-safe; lives on the event loop."""

    def __init__(
        self,
        settings: OllamaSettings,
        config: Config,
        pools: PoolFor,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        self.settings = settings
        self.endpoint = settings.endpoint
        self._config = config
        self._pool = pools(settings.timeouts)
        self.template = template(settings, config)
        self._extensions = {"timeout": upstream_timeouts(self.template)}
        self._env_context = env_context(environ)
        # None until the first read; then whether the last one worked.
        self.up: bool | None = None
        self.version: str | None = None
        self._models: dict[str, Discovered] = {}
        # /api/ps: Ollama name → its entry.
        self._loaded: dict[str, Mapping[str, Any]] = {}
        self._shown: dict[tuple[str, str], Shown | None] = {}
        self._showing: dict[tuple[str, str], trio.Event] = {}
        self._shadowed: set[str] = set()
        self._wake = trio.Event()
        self._read = trio.Event()  # set when the next read ends
        self._last_read = -float("inf")

    # -- what the rest of trioswap asks -----------------------------------------------------

    def get(self, model_id: str) -> Discovered | None:
        if not model_id.startswith(PREFIX):
            return None
        return self._models.get(model_key(model_id[len(PREFIX) :]))

    async def find(self, model_id: str) -> Discovered | None:
        """The model a request names, reading the listing again if it is not known (yet)."""
        if not model_id.startswith(PREFIX):
            return None
        found = self.get(model_id)
        if found is None and trio.current_time() - self._last_read >= ON_DEMAND_GAP:
            read = self._read
            self._wake.set()
            with trio.move_on_after(READ_TIMEOUT):
                await read.wait()
            found = self.get(model_id)
        return found

    def models(self) -> list[Discovered]:
        return list(self._models.values())

    def loaded(self) -> Mapping[str, Mapping[str, Any]]:
        """What `/api/ps` said at the last read: Ollama name → entry."""
        return self._loaded

    def is_loaded(self, model: Discovered) -> bool:
        return model.name in self._loaded

    def known_context(self, model: Discovered) -> tuple[int, str]:
        """The context as far as what is read so far says (the listing, not waiting)."""
        facts = self._shown.get((model.name, model.digest))
        if facts is not None and facts.num_ctx is not None:
            return facts.num_ctx, "ollama num_ctx"
        loaded = self._loaded.get(model.name, {}).get("context_length")
        if isinstance(loaded, int) and not isinstance(loaded, bool) and loaded > 0:
            return loaded, "ollama /api/ps"
        if self._env_context is not None:
            return self._env_context, "OLLAMA_CONTEXT_LENGTH"
        return DEFAULT_CONTEXT, "ollama default"

    async def context(self, model: Discovered) -> tuple[int, str]:
        """The context Ollama serves the model with, and where that came from."""
        await self.show(model)
        return self.known_context(model)

    async def show(self, model: Discovered) -> Shown | None:
        """`/api/show` for the model, read once per digest (concurrent asks share one read)."""
        key = (model.name, model.digest)
        while key not in self._shown:
            showing = self._showing.get(key)
            if showing is not None:
                await showing.wait()
                continue
            done = self._showing[key] = trio.Event()
            try:
                reply = await self._post(b"/api/show", {"model": model.name})
                self._shown[key] = shown(reply)
            except OllamaUnavailable as exc:
                log.info("ollama: no /api/show for %s: %s", model.name, exc)
                return None
            finally:
                del self._showing[key]
                done.set()
        return self._shown[key]

    async def vocabulary(self, model: Discovered) -> dict[str, Any] | None:
        """The model's tokenizer metadata from a verbose `/api/show`, or None."""
        try:
            reply = await self._post(b"/api/show", {"model": model.name, "verbose": True})
        except OllamaUnavailable as exc:
            log.info("ollama: no vocabulary for %s: %s", model.name, exc)
            return None
        return vocabulary(reply)

    # -- the task ---------------------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        log.info(
            "ollama: discovering models at %s (%s), every %g s",
            self.endpoint,
            self.settings.source,
            self.settings.refresh,
        )
        task_status.started()
        async with trio.open_nursery() as nursery:
            while True:
                self._wake = trio.Event()
                read, self._read = self._read, trio.Event()
                with trio.move_on_after(READ_TIMEOUT) as scope:
                    await self._read_listing()
                if scope.cancelled_caught:
                    self._went_away(f"no answer within {READ_TIMEOUT:g} s")
                self._last_read = trio.current_time()
                read.set()
                if self._models:
                    nursery.start_soon(self._show_all, list(self._models.values()))
                with trio.move_on_after(self.settings.refresh):
                    await self._wake.wait()

    async def _read_listing(self) -> None:
        try:
            version = (await self._get(b"/api/version")).get("version")
            tags = (await self._get(b"/api/tags")).get("models")
            ps = (await self._get(b"/api/ps")).get("models")
        except OllamaUnavailable as exc:
            self._went_away(str(exc))
            return
        if not isinstance(tags, list):
            self._went_away("/api/tags has no list of models")
            return
        self.version = version if isinstance(version, str) else None
        modes = api_modes(parse_version(version))
        models: dict[str, Discovered] = {}
        for entry in tags:
            model = self._discovered(entry, modes)
            if model is not None:
                models[model.name] = model
        self._models = models
        self._loaded = {
            e["name"]: e
            for e in (ps if isinstance(ps, list) else [])
            if isinstance(e, dict) and isinstance(e.get("name"), str)
        }
        if self.up is not True:
            log.info(
                "ollama %s at %s: %d models (as ollama/<name>)",
                self.version or "(version unknown)",
                self.endpoint,
                len(models),
            )
        self.up = True

    def _went_away(self, why: str) -> None:
        if self.up is not False:
            log.warning(
                "ollama at %s is not reachable (%s): its models are not listed until it is",
                self.endpoint,
                why,
            )
        self.up = False
        self._models = {}
        self._loaded = {}

    def _discovered(self, entry: object, modes: Mapping[str, str]) -> Discovered | None:
        if not isinstance(entry, dict):
            return None
        name = entry.get("name") or entry.get("model")
        if not isinstance(name, str) or not name:
            return None
        model_id = PREFIX + name
        if self._config.resolve(model_id) is not None or self._config.peer_target(model_id):
            if model_id not in self._shadowed:
                self._shadowed.add(model_id)
                log.warning(
                    "ollama: %s is also a model or alias in the config, which wins: Ollama's "
                    "model is not reachable under that name",
                    clip(model_id),
                )
            return None
        details = entry.get("details")
        size = entry.get("size")
        return Discovered(
            name=name,
            digest=str(entry.get("digest") or ""),
            size=size if isinstance(size, int) else 0,
            details=details if isinstance(details, dict) else {},
            modified_at=str(entry.get("modified_at") or ""),
            config=replace(self.template, id=model_id, use_model_name=name, apis=modes),
        )

    async def _show_all(self, models: list[Discovered]) -> None:
        limiter = trio.CapacityLimiter(SHOW_CONCURRENCY)

        async def one(model: Discovered) -> None:
            async with limiter:
                await self.show(model)

        async with trio.open_nursery() as nursery:
            for model in models:
                if (model.name, model.digest) not in self._shown:
                    nursery.start_soon(one, model)

    # -- HTTP -------------------------------------------------------------------------------

    async def _get(self, path: bytes) -> dict[str, Any]:
        return await self._call(b"GET", path, None)

    async def _post(self, path: bytes, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._call(b"POST", path, json.dumps(body).encode())

    async def _call(self, method: bytes, path: bytes, content: bytes | None) -> dict[str, Any]:
        try:
            async with AsyncExitStack() as stack:
                response = await open_response(
                    stack,
                    self._pool,
                    method=method,
                    url=upstream_url(self.endpoint, path, b""),
                    headers=_JSON if content is not None else [],
                    content=content,
                    extensions=self._extensions,
                )
                data = await read_reply(response, "ollama")
        except TRANSPORT_ERRORS as exc:
            raise OllamaUnavailable(f"{path.decode()}: {exc or type(exc).__name__}") from None
        if response.status != 200:
            detail = data[:200].decode(errors="replace")
            raise OllamaUnavailable(f"{path.decode()} answered {response.status}: {detail}")
        try:
            parsed = json.loads(data)
        except ValueError:
            raise OllamaUnavailable(f"{path.decode()} did not answer JSON") from None
        if not isinstance(parsed, dict):
            raise OllamaUnavailable(f"{path.decode()} did not answer a JSON object")
        return parsed


def template(settings: OllamaSettings, config: Config) -> ModelConfig:
    """What every discovered model shares: no command, Ollama as the proxy, the global policy."""
    return ModelConfig(
        id=PREFIX,
        cmd=(),
        cmd_stop=None,
        proxy=settings.endpoint,
        check_endpoint=None,
        ttl=0,
        unload_timeout=0,
        aliases=(),
        env={},
        port=None,
        unlisted=False,
        use_model_name=None,
        name=None,
        description=None,
        metadata={},
        filters=Filters(),
        concurrency_limit=0,
        prompt_optimization=config.prompt_optimization,
        truncation_mode=None,
        tokenizer=None,
        send_loading_state=False,
        timeouts=settings.timeouts,
        capabilities=None,
        ignore_websockets=False,
        apis=api_modes(None),
    )
