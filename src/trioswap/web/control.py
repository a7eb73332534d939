"""The control API, logs and UI, as a Quart app. It only adapts HTTP to the supervisor, config
and log hub; no decisions are made here."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

from quart import Response, request
from quart_trio import QuartTrio

from trioswap.assets import data_folder
from trioswap.config import Config
from trioswap.errors import ModelNotFound, TrioswapError, Unauthorized
from trioswap.observe.logs import ALL, PROXY, UPSTREAM, LogHub
from trioswap.pipeline.stages.auth import CHALLENGE, ApiKeys
from trioswap.protocols.errors import Family, error_body, status_of
from trioswap.supervisor import ModelState, Supervisor

OPEN_PATHS = frozenset({"/health"})


def create_control_app(config: Config, supervisor: Supervisor, logs: LogHub) -> QuartTrio:
    app = QuartTrio("trioswap", static_folder=None)
    keys = ApiKeys(config.api_keys)
    created = int(time.time())
    ui = data_folder("static_ui")

    def error(exc: TrioswapError) -> Response:
        response = Response(
            json.dumps(error_body(Family.OPENAI, exc)), status_of(exc), mimetype="application/json"
        )
        if isinstance(exc, Unauthorized):
            for name, value in CHALLENGE:
                response.headers[name.decode()] = value.decode()
        return response

    @app.before_request
    async def check_key() -> Response | None:
        if request.path in OPEN_PATHS or keys.allows(_raw_headers()):
            return None
        return error(Unauthorized())

    @app.get("/health")
    async def health() -> Response:
        return Response("OK", mimetype="text/plain")

    @app.get("/v1/models")
    async def list_models() -> dict[str, object]:
        data: list[dict[str, object]] = []
        for model in config.models.values():
            if model.unlisted:
                continue
            ids = [model.id]
            if config.include_aliases_in_list:
                ids.extend(model.aliases)
            for model_id in ids:
                entry: dict[str, object] = {
                    "id": model_id,
                    "object": "model",
                    "created": created,
                    "owned_by": "trioswap",
                }
                if model.name:
                    entry["name"] = model.name
                if model.description:
                    entry["description"] = model.description
                if model.metadata:
                    entry["meta"] = {"trioswap": dict(model.metadata)}
                data.append(entry)
        return {"object": "list", "data": data}

    @app.get("/running")
    async def running() -> dict[str, object]:
        out = []
        for model_id, status in supervisor.statuses().items():
            if status.state is ModelState.STOPPED and not status.waiting:
                continue
            model = config.models[model_id]
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
                }
            )
        return {"running": out}

    async def unload(models: list[str] | None) -> dict[str, object]:
        # Answered once the models are stopped: after their requests (drainTimeout bounds the
        # wait), or at once with ?force=true, cutting them.
        force = request.args.get("force", "false").lower() in ("", "1", "true", "yes")
        result = await supervisor.unload(models, force=force)
        return {"status": "ok", "stopped": list(result.stopped), "forced": list(result.forced)}

    @app.post("/models/unload")
    async def unload_all() -> dict[str, object]:
        return await unload(None)

    @app.post("/models/unload/<path:name>")
    async def unload_one(name: str) -> Response | dict[str, object]:
        model_id = config.resolve(name)
        if model_id is None:
            return error(ModelNotFound(name))
        return await unload([model_id])

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

    @app.get("/")
    async def index() -> Response:
        return Response((ui / "index.html").read_text(encoding="utf-8"), mimetype="text/html")

    return app


def _raw_headers() -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in request.headers.items()]


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
