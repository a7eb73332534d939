"""The observability routes of the control app, in llama-swap's shapes: `/api/events` (SSE),
`/api/inflight` (+ cancel), `/api/captures/<id>`, `/api/metrics/activity`, `/api/metrics/stats`,
`/api/performance` and `/metrics` (Prometheus). They only adapt HTTP to `observe/`."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import trio
from quart import Response, request
from quart_trio import QuartTrio

from trioswap.errors import BadRequest, RouteNotFound
from trioswap.observe.captures import rebuild
from trioswap.observe.events import INFLIGHT, LOG_DATA, MODEL_STATUS, sse
from trioswap.observe.logs import PROXY, UPSTREAM, LogHub
from trioswap.observe.observability import Observability
from trioswap.pipeline.sink import EVENT_STREAM_HEADERS


class NotFound(RouteNotFound):
    """A 404 for a thing the route names (a capture, an in-flight request) that is not there."""

    def __init__(self, what: str) -> None:
        BadRequest.__init__(self, what)


def register_observe_api(app: QuartTrio, obs: Observability, logs: LogHub) -> None:
    @app.get("/api/events")
    async def events() -> Response:
        async def frames() -> AsyncIterator[bytes]:
            with obs.events.subscribe() as subscriber:
                # What a new subscriber starts from, as llama-swap sends it.
                for source in (PROXY, UPSTREAM):
                    history = "".join(line + "\n" for line in logs.history(source))
                    subscriber.offer(sse(LOG_DATA, {"source": source, "data": history}))
                subscriber.offer(sse(MODEL_STATUS, obs.model_status()))
                subscriber.offer(sse(INFLIGHT, obs.inflight.snapshot(time.time())))
                async for frame in subscriber:
                    yield frame

        response = Response(frames(), mimetype="text/event-stream")
        for name, value in EVENT_STREAM_HEADERS:
            response.headers[name.decode()] = value.decode()
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.timeout = None
        return response

    @app.get("/api/inflight")
    async def inflight() -> list[dict[str, object]]:
        return obs.inflight.list(time.time())

    @app.post("/api/inflight/<entry_id>/cancel")
    async def cancel_inflight(entry_id: str) -> dict[str, str]:
        if not (entry_id.isdigit() and obs.inflight.cancel(int(entry_id))):
            raise NotFound("inflight request not found")
        return {"msg": "ok"}

    @app.get("/api/captures/<capture_id>")
    async def capture(capture_id: str) -> dict[str, object]:
        if not capture_id.isdigit():
            raise BadRequest("a capture id is a number")
        found = None if obs.captures is None else obs.captures.capture(int(capture_id))
        if found is None:
            raise NotFound("capture not found")
        view = found.view()
        # Parsing a streamed reply back is bounded by the capture's size, but not free.
        view["rebuilt"] = await trio.to_thread.run_sync(rebuild, found)
        return view

    @app.get("/api/metrics/activity")
    async def activity() -> dict[str, object]:
        try:
            page = await obs.activity.query(request.args)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        # Captures are evicted as the ring fills (and gone after a restart): said as it is now.
        captures = obs.captures
        for entry in page["data"]:
            entry["has_capture"] = captures is not None and entry["id"] in captures
        return page

    @app.get("/api/metrics/stats")
    async def activity_stats() -> dict[str, object]:
        try:
            return await obs.activity.stats(request.args)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None

    @app.get("/api/performance")
    async def performance() -> Response | dict[str, object]:
        after = None
        if text := request.args.get("after"):
            try:
                after = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise BadRequest("invalid 'after' timestamp, use RFC3339 format") from None
            if after.tzinfo is None:
                after = after.replace(tzinfo=UTC)
        history = obs.system.history(after)
        if not history.get("enabled", False):
            return Response('{"enabled": false}', status=503, mimetype="application/json")
        return history

    @app.get("/metrics")
    async def metrics() -> Response:
        body, content_type = await obs.metrics.render(request.headers.get("Accept", ""))
        return Response(body, content_type=content_type)
