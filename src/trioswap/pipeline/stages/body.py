"""`read_body` and `limit_body`: the request body, after `auth` has looked at the headers.

`read_body` reads the whole body into `exchange.body`, for stages that need it (the model is in
it); a multipart form is read only as far as its `model` field and the rest streams on (see
`pipeline.form`). `limit_body` is for pipelines that pass the body on as it comes
(`/upstream/…`): a body whose Content-Length declares more than `maxRequestBodyMB` is refused
before a model is started for it. Either way the body is counted as it arrives, refused (413) once
it passes the limit and dropped (408) when it stalls for `requestBodyTimeout`.
"""

from __future__ import annotations

from trioswap.pipeline.exchange import Exchange
from trioswap.pipeline.form import read_form
from trioswap.pipeline.stage import StageContext
from trioswap.pipeline.stages.resolve import media_type

FORM = b"multipart/form-data"


class ReadBody:
    def __init__(self, context: StageContext) -> None:
        pass

    async def __call__(self, exchange: Exchange) -> bool:
        content_type = exchange.header(b"content-type")
        if content_type is not None and media_type(content_type) == FORM:
            exchange.request_body = await read_form(exchange.request_body, content_type)
        else:
            exchange.body = await exchange.request_body.read()
        return False


class LimitBody:
    def __init__(self, context: StageContext) -> None:
        pass

    async def __call__(self, exchange: Exchange) -> bool:
        exchange.request_body.check()
        return False
