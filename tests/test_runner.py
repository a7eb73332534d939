"""Unexpected exceptions, in the pipeline runner and in the control app: a JSON 500 in the
client's family with a request id, the traceback logged once under that id and never sent."""

from __future__ import annotations

import json
import logging
from contextlib import AsyncExitStack

import pytest
from fuzz.stage_fakes import NoRequestBody

from trioswap.config import loads
from trioswap.errors import ModelNotFound
from trioswap.observe.logs import LogHub
from trioswap.pipeline.exchange import Exchange
from trioswap.pipeline.loader import Pipeline
from trioswap.pipeline.runner import run_pipeline
from trioswap.pipeline.sink import Sink
from trioswap.pipeline.translation import LearnedApis
from trioswap.protocols.errors import Family, Headers
from trioswap.supervisor import Supervisor
from trioswap.web.control import create_control_app

CONFIG = loads("models:\n  m:\n    cmd: server --port ${PORT}\n")


class Recorder:
    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.data = b""

    async def start(self, status: int, headers: Headers) -> None:
        self.status = status
        self.headers = dict(headers)

    async def body(self, chunk: bytes, more: bool) -> None:
        self.data += chunk


def exchange(family: Family, recorder: Recorder) -> Exchange:
    return Exchange(
        method="POST",
        path="/v1/chat/completions\r\nforged",
        raw_path=b"/v1/chat/completions",
        query=b"",
        headers=[],
        sink=Sink(recorder, family),
        stack=AsyncExitStack(),
        request_body=NoRequestBody(),
    )


class Boom:
    async def __call__(self, exchange: Exchange) -> bool:
        return {}["missing"]  # type: ignore[no-any-return]


class NotFoundInAGroup:
    async def __call__(self, exchange: Exchange) -> bool:
        raise ExceptionGroup("from a nursery", [ModelNotFound("nope")])


@pytest.mark.parametrize("family", list(Family))
async def test_unexpected_exception_is_a_500_with_a_request_id(
    family: Family, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder()
    with caplog.at_level(logging.INFO, logger="trioswap.proxy"):
        await run_pipeline(
            Pipeline("p", family, frozenset({"POST"}), (Boom(),)), exchange(family, recorder)
        )
    assert recorder.status == 500
    body = json.loads(recorder.data)
    request_id = body["request_id"]
    assert recorder.headers[b"x-request-id"] == request_id.encode()
    assert request_id in str(body)
    assert "Traceback" not in recorder.data.decode() and "KeyError" not in recorder.data.decode()
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    assert request_id in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is KeyError
    assert "\r\nforged" not in record.getMessage()  # the path is escaped


async def test_a_trioswap_error_inside_exception_groups_keeps_its_status() -> None:
    recorder = Recorder()
    pipeline = Pipeline("p", Family.OPENAI, frozenset({"POST"}), (NotFoundInAGroup(),))
    await run_pipeline(pipeline, exchange(Family.OPENAI, recorder))
    assert recorder.status == 404
    assert json.loads(recorder.data)["error"]["code"] == "model_not_found"


async def test_control_app_answers_unexpected_exceptions_in_json(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = create_control_app(CONFIG, Supervisor(CONFIG, LogHub()), LogHub(), LearnedApis())

    @app.get("/boom")
    async def boom() -> str:
        raise RuntimeError("secret detail")

    client = app.test_client()
    with caplog.at_level(logging.INFO, logger="trioswap.control"):
        response = await client.get("/boom")
        assert response.status_code == 500
        body = await response.get_json()
        assert "secret detail" not in json.dumps(body)
        request_id = body["request_id"]
        assert response.headers["x-request-id"] == request_id
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and request_id in errors[0].getMessage()
        assert errors[0].exc_info is not None

        response = await client.get("/no/such/route")
        assert response.status_code == 404
        assert "error" in await response.get_json()
        response = await client.post("/models/unload/nope")
        assert response.status_code == 404
        assert (await response.get_json())["error"]["code"] == "model_not_found"
