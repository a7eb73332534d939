"""Runs an Exchange through a pipeline and turns trioswap errors into responses."""

from __future__ import annotations

import logging

from trioswap.errors import TrioswapError, Unauthorized
from trioswap.pipeline.exchange import Exchange
from trioswap.pipeline.loader import Pipeline
from trioswap.pipeline.stages.auth import CHALLENGE
from trioswap.protocols.errors import error_bytes, status_of, stream_error_event

log = logging.getLogger("trioswap.proxy")


async def run_pipeline(pipeline: Pipeline, exchange: Exchange) -> None:
    try:
        async with exchange.stack:
            for stage in pipeline.stages:
                if await stage(exchange):
                    return
    except TrioswapError as error:
        await deliver_error(exchange, error)


async def deliver_error(exchange: Exchange, error: TrioswapError) -> None:
    status = status_of(error)
    level = logging.WARNING if status >= 500 else logging.INFO
    log.log(level, "%s %s -> %d: %s", exchange.method, exchange.path, status, error)
    if not exchange.response_started:
        headers = CHALLENGE if isinstance(error, Unauthorized) else None
        await exchange.respond(status, error_bytes(exchange.family, error), headers)
    elif exchange.event_stream:
        await exchange.sink.body(stream_error_event(exchange.family, error), True)
        await exchange.sink.body(b"", False)
    else:
        # Headers are gone and the body is not an event stream: the only honest signal left is
        # to end the response short, which the client sees as a truncated body.
        await exchange.sink.body(b"", False)
