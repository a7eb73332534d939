"""Runs an Exchange through a pipeline, and turns every error into what the client can still be
told (the sink decides what that is). Each error gets a request id, in the log line and in the
answer; an exception that is not a `TrioswapError` is a bug: logged once with its traceback,
answered as a 500 that shows no traceback."""

from __future__ import annotations

import logging

import trio

from trioswap.clip import clip
from trioswap.errors import InternalError, TrioswapError
from trioswap.pipeline.exchange import Exchange
from trioswap.pipeline.loader import Pipeline
from trioswap.protocols.errors import new_request_id, status_of

log = logging.getLogger("trioswap.proxy")


async def run_pipeline(pipeline: Pipeline, exchange: Exchange) -> None:
    try:
        async with exchange.stack:
            for stage in pipeline.stages:
                if await stage(exchange):
                    return
    except Exception as error:
        await deliver_error(exchange, error)


async def deliver_error(exchange: Exchange, error: Exception) -> None:
    request_id = exchange.request_id or new_request_id()
    error = _unwrap(error)
    exchange.error = type(error)
    where = f"{clip(exchange.method)} {clip(exchange.path)}"
    if exchange.translation is not None:
        where += f" ({exchange.translation.codec.label.decode()})"
    if isinstance(error, TrioswapError):
        status = status_of(error)
        level = logging.WARNING if status >= 500 else logging.INFO
        log.log(level, "%s %s -> %d: %s", request_id, where, status, error)
    else:
        log.error("%s %s -> 500: unexpected error", request_id, where, exc_info=error)
        error = InternalError(request_id)
        exchange.error = InternalError
    # Shielded: an error answer is short, and cut halfway it would leave the client a broken
    # response instead of the error.
    with trio.CancelScope(shield=True):
        await exchange.sink.fail(error, request_id)


def _unwrap(error: Exception) -> Exception:
    """The one error inside the exception groups of the nurseries it came through."""
    while isinstance(error, ExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error
