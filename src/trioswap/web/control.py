"""The control API, logs and UI, as a Quart app. It only adapts HTTP to the supervisor, config
and log hub; no decisions are made here. It also answers every path that is no route at all
(404, and 405 with `Allow` for a wrong method), in the API family the path belongs to.

API keys are checked in front of Quart (`require_key`), from the headers alone: Quart starts
reading a request's body as soon as it sees the request, before any hook of its own runs. Every
error is JSON in OpenAI's shape with a request id, also for Quart's own (404, 405, 408, 413), and
an unexpected exception is logged once with its traceback and answered as a 500 without one.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import MethodNotAllowed as HTTPMethodNotAllowed
from werkzeug.exceptions import RequestTimeout as HTTPRequestTimeout

from trioswap.auth import ApiKeys
from trioswap.clip import clip
from trioswap.config import Config, ModelConfig
from trioswap.config.cmdline import ctx_size
from trioswap.discovery.ollama import Ollama
from trioswap.errors import (
    BadRequest,
    Forbidden,
    InternalError,
    MethodNotAllowed,
    ModelNotFound,
    PayloadTooLarge,
    RequestTimeout,
    RouteNotFound,
    TrioswapError,
    Unauthorized,
)
from trioswap.observe.logs import ALL, PROXY, UPSTREAM, LogHub
from trioswap.observe.observability import Observability
from trioswap.pipeline.translation import LearnedApis
from trioswap.protocols.errors import (
    Family,
    error_body,
    error_headers,
    new_request_id,
    status_of,
)
from trioswap.protocols.models import ModelList, ollama_entry
from trioswap.runtime import RuntimeState, check_ctx_size, check_policy
from trioswap.supervisor import ModelState, Supervisor
from trioswap.web.asgi import ASGIApp, Receive, Scope, Send, answer_unread
from trioswap.web.observe_api import register_observe_api
from trioswap.web.ui import register_ui
from trioswap.web.ws_logs import register_ws_logs

OPEN_PATHS = frozenset({"/health"})
# Paths under Anthropic's Messages API get their errors in its shape.
ANTHROPIC_PREFIX = "/v1/messages"
UNLOAD_HINT = "POST /models/unload from a script, or the web UI's buttons"
# What /v1/models calls "unloaded": no server process of the model is up.
_NOT_LOADED = frozenset({ModelState.STOPPED, ModelState.FAILED})

log = logging.getLogger("trioswap.control")


class NothingOptimized(RouteNotFound):
    """A 404: the model has no optimization snapshot (yet)."""

    def __init__(self, model: str) -> None:
        BadRequest.__init__(
            self,
            f"model {model!r}: no request for this model has been optimized since trioswap started",
        )


def require_key(app: ASGIApp, api_keys: tuple[str, ...]) -> ASGIApp:
    """`app`, answering 401 to a request without one of `api_keys` (when any are set)."""
    if not api_keys:
        return app
    keys = ApiKeys(api_keys)

    async def checked(scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if (
            (kind == "http" or kind == "websocket")
            and scope["path"] not in OPEN_PATHS
            and not keys.allows(scope["headers"])
        ):
            error = Unauthorized()
            request_id = new_request_id()
            log.info("%s %s %s -> 401: %s", request_id, kind, clip(scope["path"]), error)
            if kind == "http":
                await answer_unread(receive, send, Family.OPENAI, error, request_id)
            else:
                await send({"type": "websocket.close", "code": 1008})
            return
        await app(scope, receive, send)

    return checked


def api_modes(model: ModelConfig, learned: LearnedApis, generation: int | None) -> dict[str, str]:
    """Each family's configured mode, and for `auto`, what this start of the server turned out
    to need ("auto: translate" once it answered the family's route with 404/405)."""
    found = set() if generation is None else learned.learned(model.id, generation)
    return {
        family: f"{mode}: translate" if mode == "auto" and family in found else mode
        for family, mode in model.apis.items()
    }


# The latest optimization snapshot shows at most this much of each body (characters of JSON).
SNAPSHOT_BODY_CHARS = 256 * 1024
_SNAPSHOT_BODIES = ("request", "optimized")


def shown_snapshot(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """A snapshot with its bodies cut to SNAPSHOT_BODY_CHARS (serialized only when asked for,
    not on the request path); a cut body is shown as its JSON text's start."""
    shown = {k: v for k, v in snapshot.items() if k not in _SNAPSHOT_BODIES}
    for key in _SNAPSHOT_BODIES:
        if key in snapshot:
            text = json.dumps(snapshot[key], ensure_ascii=False)
            if len(text) <= SNAPSHOT_BODY_CHARS:
                shown[key] = snapshot[key]
            else:
                shown[key] = {
                    "truncated": True,
                    "chars": len(text),
                    "json": text[:SNAPSHOT_BODY_CHARS],
                }
    return shown


def create_control_app(
    config: Config,
    supervisor: Supervisor,
    logs: LogHub,
    learned: LearnedApis,
    runtime: RuntimeState | None = None,
    ollama: Ollama | None = None,
    observability: Observability | None = None,
) -> QuartTrio:
    app = QuartTrio("trioswap", static_folder=None)
    register_ws_logs(app, config, logs)
    if observability is not None:
        register_observe_api(app, observability, logs)
    if runtime is None:
        runtime = RuntimeState()
    # Control routes take no real bodies; still, what Quart reads is bounded the same way.
    app.config["MAX_CONTENT_LENGTH"] = config.max_request_body
    app.config["BODY_TIMEOUT"] = config.request_body_timeout
    listing = ModelList(config, int(time.time()))

    def loaded(model: str) -> bool:
        return supervisor.state_of(model) not in _NOT_LOADED

    def error(exc: TrioswapError, level: int | None = None) -> Response:
        request_id = new_request_id()
        status = status_of(exc)
        if level is None:
            level = logging.WARNING if status >= 500 else logging.INFO
        where = f"{request.method} {clip(request.path)}"
        log.log(level, "%s %s -> %d: %s", request_id, where, status, exc)
        return _error_response(exc, request_id, _family(request.path))

    @app.before_request
    async def read_the_body() -> None:
        # Before any answer: one sent while the body is still arriving leaves the connection
        # unusable (the next request cannot start), and hypercorn closes it without a word, so
        # a client reusing it fails. Control bodies are small, and bounded like the rest.
        await request.get_data()

    @app.errorhandler(TrioswapError)
    async def trioswap_error(exc: TrioswapError) -> Response:
        return error(exc)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        # Quart's own: no such route or method, a body over the limit, or one that stalled.
        if exc.code == 413:
            return error(PayloadTooLarge(config.max_request_body))
        if isinstance(exc, HTTPRequestTimeout):
            return error(RequestTimeout(config.request_body_timeout))
        # Browsers ask for /favicon.ico on every visit: not worth a log line.
        if exc.code == 404:
            return error(RouteNotFound(request.path), logging.DEBUG)
        if isinstance(exc, HTTPMethodNotAllowed):
            allowed = exc.valid_methods or ()
            return error(MethodNotAllowed(request.method, request.path, allowed), logging.DEBUG)
        response = error(BadRequest(exc.description or exc.name), logging.DEBUG)
        response.status_code = exc.code or 400
        return response

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        request_id = new_request_id()
        log.error(
            "%s %s %s -> 500: unexpected error",
            request_id,
            request.method,
            clip(request.path),
            exc_info=exc,
        )
        return _error_response(InternalError(request_id), request_id, _family(request.path))

    @app.get("/health")
    async def health() -> Response:
        return Response("OK", mimetype="text/plain")

    @app.get("/v1/models")
    @app.get("/models")  # llama-swap's too
    async def list_models() -> dict[str, object]:
        data = listing.data(loaded)
        if ollama is not None:
            for found in ollama.models():
                size, source = ollama.known_context(found)
                data.append(ollama_entry(found, ollama.is_loaded(found), size, source))
        return {"object": "list", "data": data}

    @app.get("/running")
    async def running() -> dict[str, object]:
        out = []
        now = time.time()
        for model_id, status in supervisor.statuses().items():
            if status.state is ModelState.STOPPED and not status.waiting:
                continue
            model = config.models[model_id]
            ready = status.ready_since
            out.append(
                {
                    "model": model_id,
                    "state": status.state.value,
                    "in_flight": status.in_flight,
                    "waiting": status.waiting,
                    "cmd": status.cmd,
                    "proxy": status.proxy,
                    "ttl": model.ttl,
                    "name": model.name or "",
                    "description": model.description or "",
                    "pid": status.pid,
                    "last_error": status.last_error,
                    "apis": api_modes(model, learned, status.generation),
                    "uptime": None if ready is None else round(now - ready, 1),
                    "ttl_left": None if status.ttl_left is None else round(status.ttl_left, 1),
                }
            )
        if ollama is not None:
            out.extend(ollama_running(ollama))
        return {"running": out}

    async def unload(models: list[str] | None) -> dict[str, object]:
        # Answered once the models are stopped: after their requests (drainTimeout bounds the
        # wait), or at once with ?force=true, cutting them.
        force = request.args.get("force", "false").lower() in ("", "1", "true", "yes")
        result = await supervisor.unload(models, force=force)
        return {"status": "ok", "stopped": list(result.stopped), "forced": list(result.forced)}

    # /api/models/unload… are llama-swap's current paths for these.
    @app.post("/models/unload")
    @app.post("/api/models/unload")
    async def unload_all() -> dict[str, object]:
        return await unload(None)

    @app.get("/unload")
    async def legacy_unload() -> Response:
        # llama-swap's first unload, a GET. The guard lets a cross-site page navigate to a
        # control GET (they change nothing, but this one): such a navigation has no Origin.
        site = request.headers.get("sec-fetch-site")
        if site not in (None, "same-origin", "none") and "origin" not in request.headers:
            return error(Forbidden(f"a cross-site page may not unload models: {UNLOAD_HINT}"))
        await unload(None)
        return Response("OK", mimetype="text/plain")

    @app.post("/models/unload/<path:name>")
    @app.post("/api/models/unload/<path:name>")
    async def unload_one(name: str) -> Response | dict[str, object]:
        model_id = config.resolve(name)
        if model_id is None:
            return error(ModelNotFound(name))
        return await unload([model_id])

    def local_model(name: str) -> ModelConfig:
        """The model a path names (an id or an alias), which must be one of ours or Ollama's."""
        model_id = config.resolve(name)
        if model_id is not None:
            return config.models[model_id]
        found = None if ollama is None else ollama.get(name)
        if found is not None:
            return found.config
        target = config.peer_target(name)
        if target is not None:
            raise BadRequest(
                f"model {clip(name)!r} is served by peer {target.peer.id!r}, which optimizes "
                "prompts and sizes contexts on its side: change them on that trioswap"
            )
        raise ModelNotFound(name)

    async def body_field(key: str) -> object:
        try:
            body = json.loads(await request.get_data())
        except ValueError as exc:
            raise BadRequest(f"the body is not valid JSON: {exc}") from None
        if not isinstance(body, dict) or key not in body:
            raise BadRequest(f'send a JSON object with "{key}" (null removes the override)')
        return body[key]

    def policy_view(model: ModelConfig) -> dict[str, object]:
        override = runtime.policy(model.id)
        configured = model.prompt_optimization
        return {
            "model": model.id,
            "policy": override or configured,
            "source": "config" if override is None else "runtime",
            "configured": configured,
            "truncationMode": model.truncation_mode,
        }

    def ctx_view(model: ModelConfig) -> dict[str, object]:
        found = None if ollama is None else ollama.get(model.id)
        if found is not None:
            assert ollama is not None
            size, source = ollama.known_context(found)
            return {"model": model.id, "ctxSize": size, "source": source, "readOnly": True}
        configured: int | None = ctx_size(model.cmd, model.env)
        source = None if configured is None else "cmd"
        if configured is None and model.capabilities and model.capabilities.context:
            configured, source = model.capabilities.context, "capabilities"
        override = runtime.ctx_size(model.id)
        return {
            "model": model.id,
            "ctxSize": configured if override is None else override,
            "source": source if override is None else "runtime",
            "configured": configured,
        }

    @app.get("/api/model/<path:name>/prompt-optimization")
    async def get_policy(name: str) -> dict[str, object]:
        return policy_view(local_model(name))

    @app.post("/api/model/<path:name>/prompt-optimization")
    async def set_policy(name: str) -> dict[str, object]:
        model = local_model(name)
        try:
            policy = check_policy(await body_field("policy"))
        except ValueError as exc:
            raise BadRequest(f"policy: {exc}") from None
        await runtime.set_policy(model.id, policy)
        return policy_view(model)

    @app.get("/api/model/<path:name>/prompt-optimization/latest")
    async def latest_optimization(name: str) -> dict[str, object]:
        model = local_model(name)
        snapshot = runtime.snapshot(model.id)
        if snapshot is None:
            raise NothingOptimized(model.id)
        return shown_snapshot(snapshot)

    @app.get("/api/model/<path:name>/ctxsize")
    async def get_ctx_size(name: str) -> dict[str, object]:
        return ctx_view(local_model(name))

    @app.post("/api/model/<path:name>/ctxsize")
    async def set_ctx_size(name: str) -> dict[str, object]:
        # Saved first; the model's next start uses it, and a running one is started again.
        model = local_model(name)
        if ollama is not None and ollama.get(model.id) is not None:
            raise BadRequest(
                f"model {model.id!r} is Ollama's, which sizes its context itself: set num_ctx "
                "in its Modelfile (PARAMETER num_ctx), or OLLAMA_CONTEXT_LENGTH for ollama serve"
            )
        try:
            size = check_ctx_size(await body_field("ctxSize"))
        except ValueError as exc:
            raise BadRequest(f"ctxSize: {exc}") from None
        await runtime.set_ctx_size(model.id, size)
        return {**ctx_view(model), "restart": supervisor.restart(model.id)}

    @app.get("/logs")
    async def all_logs() -> Response:
        return Response("".join(line + "\n" for line in logs.history(ALL)), mimetype="text/plain")

    @app.get("/logs/stream")
    async def stream_all() -> Response:
        return _log_stream(logs, ALL)

    @app.get("/logs/stream/proxy")
    async def stream_proxy() -> Response:
        return _log_stream(logs, PROXY)

    @app.get("/logs/stream/upstream")
    async def stream_upstream() -> Response:
        return _log_stream(logs, UPSTREAM)

    @app.get("/logs/stream/<path:name>")
    async def stream_model(name: str) -> Response:
        model_id = config.resolve(name)
        if model_id is None:
            return error(ModelNotFound(name))
        return _log_stream(logs, model_id)

    register_ui(app, config, supervisor, ollama)
    return app


def ollama_running(ollama: Ollama) -> list[dict[str, object]]:
    """/running's entries for what Ollama says it has loaded (at its last listing)."""
    out: list[dict[str, object]] = []
    for found in ollama.models():
        entry = ollama.loaded().get(found.name)
        if entry is None:
            continue
        size, source = ollama.known_context(found)
        out.append(
            {
                "model": found.id,
                "state": "ready",
                "external": "ollama",
                "in_flight": None,
                "waiting": 0,
                "cmd": "",
                "proxy": ollama.endpoint,
                "name": found.name,
                "description": "",
                "pid": None,
                "last_error": None,
                "apis": dict(found.config.apis),
                "ctxSize": size,
                "ctxSource": source,
                "sizeVram": entry.get("size_vram"),
                "expiresAt": entry.get("expires_at"),
            }
        )
    return out


def _family(path: str) -> Family:
    if path == ANTHROPIC_PREFIX or path.startswith(ANTHROPIC_PREFIX + "/"):
        return Family.ANTHROPIC
    return Family.OPENAI


def _error_response(exc: TrioswapError, request_id: str, family: Family) -> Response:
    response = Response(
        json.dumps(error_body(family, exc, request_id)),
        status_of(exc),
        mimetype="application/json",
    )
    for name, value in error_headers(exc, request_id):
        response.headers[name.decode()] = value.decode()
    return response


def _log_stream(logs: LogHub, source: str) -> Response:
    with_history = "no-history" not in request.args

    async def lines() -> AsyncIterator[bytes]:
        with logs.subscribe(source) as receive:
            if with_history:
                history = logs.history(source)
                if history:
                    yield "".join(line + "\n" for line in history).encode()
            async for line in receive:
                yield (line + "\n").encode()

    response = Response(lines(), mimetype="text/plain")
    response.headers["X-Accel-Buffering"] = "no"
    response.headers["Cache-Control"] = "no-cache"
    response.timeout = None
    return response
