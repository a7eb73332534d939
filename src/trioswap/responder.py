"""A small, fast, fake OpenAI-compatible LLM server (``python -m trioswap.responder``).

It stands in for llama-server and friends in tests, the demo config and the benchmarks.
It is a raw ASGI application served by hypercorn on trio, so that benchmarks measure
the proxy rather than the upstream. Knobs on the command line make it misbehave the way
real servers do: slow to bind, slow to load, slow to answer, crashing mid-stream,
failing to start, ignoring SIGTERM, leaving a grandchild behind.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import itertools
import json
import math
import os
import re
import secrets
import signal
import struct
import subprocess
import sys
import time
import urllib.parse
import zlib
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import Any, NoReturn

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
JSON = dict[str, Any]

MAX_RECORDED_REQUESTS = 1000
CRASH_EXIT_CODE = 3
EMBEDDING_SIZE = 8
WEBSOCKET_PATH = "/ws"

_encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def dumps(value: object) -> bytes:
    return _encode_json(value).encode()


def sse(value: object) -> bytes:
    return b"data: " + dumps(value) + b"\n\n"


def anthropic_sse(event: str, value: object) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + dumps(value) + b"\n\n"


def split_words(text: str) -> list[str]:
    """Split into word chunks, each carrying its leading whitespace like real tokens do,
    so that joining the chunks gives back the exact text."""
    chunks = re.findall(r"\s*\S+", text)
    if not chunks:
        return [text]
    chunks[-1] += text[len("".join(chunks)) :]
    return chunks


def count_words(value: object) -> int:
    """Whitespace words in a prompt: a string, a list of strings or content parts, or
    a message with ``content``/``text``."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(count_words(item) for item in value)
    if isinstance(value, dict):
        return count_words(value.get("content")) + count_words(value.get("text"))
    return 0


def embed(text: str) -> list[float]:
    """A deterministic unit vector derived from a hash of the text (a SHA-256 digest is
    exactly eight 32-bit words)."""
    words = struct.unpack(f">{EMBEDDING_SIZE}I", hashlib.sha256(text.encode()).digest())
    raw = [n / 2**31 - 1.0 for n in words]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [v / norm for v in raw]


def token_id(word: str) -> int:
    return zlib.crc32(word.encode()) % 32000


class RequestError(Exception):
    def __init__(self, status: int, message: str, error_type: str = "invalid_request_error"):
        super().__init__(message)
        self.status = status
        self.error_type = error_type


def error_body(status: int, message: str, error_type: str) -> bytes:
    return dumps({"error": {"message": message, "type": error_type, "code": status}})


def parse_json(body: bytes) -> JSON:
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise RequestError(400, f"invalid JSON body: {exc}") from None
    if not isinstance(value, dict):
        raise RequestError(400, "request body must be a JSON object")
    return value


def max_tokens_of(request: JSON) -> int | None:
    value = request.get("max_tokens", request.get("max_completion_tokens"))
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RequestError(400, "max_tokens must be a positive integer")
    return value


def include_usage(request: JSON) -> bool:
    options = request.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def header(scope: Scope, name: bytes) -> bytes:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return b""


def multipart_fields(content_type: bytes, body: bytes) -> JSON:
    # Imported here: the email package costs ~20 ms at start-up, and start-up time is what a
    # swap between responders waits for.
    import email.parser
    import email.policy

    parser = email.parser.BytesParser(policy=email.policy.HTTP)
    message = parser.parsebytes(b"Content-Type: " + content_type + b"\r\n\r\n" + body)
    fields: JSON = {}
    if not message.is_multipart():
        return fields
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        if filename is None:
            fields[name] = data.decode(errors="replace")
        else:
            fields[name] = {"filename": filename, "size": len(data)}
    return fields


async def cancel_on_disconnect(receive: Receive, cancel_scope: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    cancel_scope.cancel()


async def send_last(send: Send, message: Message) -> None:
    """The final body message, shielded: hypercorn reports `http.disconnect` from inside it once
    the response is complete, and a watcher's cancel must not cut hypercorn's own bookkeeping."""
    with trio.CancelScope(shield=True):
        await send(message)


def log(line: str) -> None:
    # A supervisor that stopped reading our stdout must not break request handling.
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except OSError:
        pass


Handler = Callable[[Scope, bytes, Receive, Send], Awaitable[int]]


class Responder:
    """The ASGI application. Everything that does not depend on the request is
    computed here, once."""

    def __init__(
        self,
        *,
        model_id: str,
        port: int,
        response_text: str,
        ctx_size: int = 4096,
        tokens_per_second: float = 0.0,
        slow_health: float = 0.0,
        crash_after_chunks: int | None = None,
        grandchild_pid: int | None = None,
    ) -> None:
        self.model_id = model_id
        self.port = port
        self.text = response_text
        self.chunks = split_words(response_text)
        self.delay = 1.0 / tokens_per_second if tokens_per_second > 0 else 0.0
        self.slow_health = slow_health
        self.crash_after_chunks = crash_after_chunks
        self.grandchild_pid = grandchild_pid
        # Set by the server once the port is bound; /health says "loading" until then.
        self.ready_at = math.inf
        self.requests: collections.deque[JSON] = collections.deque(maxlen=MAX_RECORDED_REQUESTS)
        self.responder_info = {"model_id": model_id, "port": port}
        self._id_prefix = secrets.token_hex(4)
        self._ids = itertools.count(1)

        base_headers = [
            (b"x-responder-model", model_id.encode()),
            (b"x-responder-port", str(port).encode()),
        ]
        self.json_headers = [(b"content-type", b"application/json"), *base_headers]
        self.sse_headers = [
            (b"content-type", b"text/event-stream"),
            (b"cache-control", b"no-cache"),
            *base_headers,
        ]
        self.health_ok = dumps({"status": "ok"})
        self.health_loading = dumps(
            {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
        )
        self.models_body = dumps(
            {
                "object": "list",
                "data": [
                    {
                        "id": model_id,
                        "object": "model",
                        "owned_by": "responder",
                        "created": int(time.time()),
                    }
                ],
            }
        )
        self.props_body = dumps(
            {
                "default_generation_settings": {"n_ctx": ctx_size},
                "model_path": f"{model_id}.gguf",
                "total_slots": 1,
            }
        )
        self.routes: dict[tuple[str, str], Handler] = {
            ("GET", "/health"): self.health,
            ("GET", "/v1/models"): self.models,
            ("GET", "/props"): self.props,
            ("POST", "/v1/chat/completions"): self.chat_completions,
            ("POST", "/v1/completions"): self.completions,
            ("POST", "/v1/embeddings"): self.embeddings,
            ("POST", "/v1/messages"): self.messages,
            ("POST", "/v1/messages/count_tokens"): self.count_tokens,
            ("POST", "/tokenize"): self.tokenize,
            ("POST", "/v1/audio/transcriptions"): self.echo,
            ("POST", "/v1/audio/speech"): self.echo,
            ("POST", "/v1/images/generations"): self.echo,
            ("GET", "/debug/requests"): self.debug_requests,
            ("DELETE", "/debug/requests"): self.debug_clear,
            ("GET", "/debug/info"): self.debug_info,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        if scope["type"] == "websocket":
            await self.websocket_echo(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        method: str = scope["method"]
        path: str = scope["path"]
        body = await self.read_body(receive)
        if path != "/health" and not path.startswith("/debug/"):
            self.record(scope, body)
        handler = self.routes.get((method, path))
        try:
            if handler is None:
                raise RequestError(404, f"no route for {method} {path}", "not_found_error")
            status = await handler(scope, body, receive, send)
        except RequestError as exc:
            status = await self.send_json(
                send, exc.status, error_body(exc.status, str(exc), exc.error_type)
            )
        log(f"{method} {path} -> {status}")

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    @staticmethod
    async def websocket_echo(scope: Scope, receive: Receive, send: Send) -> None:
        """`/ws`: send back every message as it came, text as text and bytes as bytes."""
        await receive()  # websocket.connect
        if scope["path"] != WEBSOCKET_PATH:
            # Closing before accepting makes hypercorn refuse the handshake (403).
            await send({"type": "websocket.close", "code": 1008})
            return
        subprotocols = scope.get("subprotocols") or [None]
        await send({"type": "websocket.accept", "subprotocol": subprotocols[0]})
        log(f"websocket {scope['path']} accepted")
        while (message := await receive())["type"] == "websocket.receive":
            await send({**message, "type": "websocket.send"})

    @staticmethod
    async def read_body(receive: Receive) -> bytes:
        message = await receive()
        body: bytes = message.get("body", b"")
        if not message.get("more_body"):
            return body
        parts = [body]
        while message.get("more_body"):
            message = await receive()
            parts.append(message.get("body", b""))
        return b"".join(parts)

    def record(self, scope: Scope, body: bytes) -> None:
        self.requests.append(
            {
                "method": scope["method"],
                "path": scope["path"],
                "raw_path": scope["raw_path"].decode("latin-1"),
                "query": scope["query_string"].decode("latin-1"),
                "headers": {
                    name.decode("latin-1"): value.decode("latin-1")
                    for name, value in scope["headers"]
                },
                "body": body.decode(errors="replace"),
            }
        )

    async def send_json(self, send: Send, status: int, body: bytes) -> int:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*self.json_headers, (b"content-length", str(len(body)).encode())],
            }
        )
        await send_last(send, {"type": "http.response.body", "body": body})
        return status

    def new_id(self, prefix: str) -> str:
        return f"{prefix}{self._id_prefix}-{next(self._ids)}"

    def generated(self, max_tokens: int | None) -> tuple[list[str], bool]:
        """The chunks to send, and whether generation was cut short by max_tokens."""
        if max_tokens is None or max_tokens >= len(self.chunks):
            return self.chunks, False
        return self.chunks[:max_tokens], True

    async def paced(self, receive: Receive, work: Callable[[], Awaitable[None]]) -> None:
        """Run generation, abandoning it if the client goes away, as llama-server does.
        Without a pace it finishes at once, so watching for a disconnect is not worth a task."""
        if not self.delay:
            await work()
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_on_disconnect, receive, nursery.cancel_scope)
            await work()
            nursery.cancel_scope.cancel()

    async def stream(
        self,
        receive: Receive,
        send: Send,
        head: Iterable[bytes],
        pieces: list[str],
        frame: Callable[[int, str], bytes],
        tail: list[bytes],
    ) -> int:
        """Send an event stream: ``head`` frames, one frame per generated piece (paced by
        tokens-per-second, and where --crash-after-chunks strikes), then ``tail`` frames."""

        async def run() -> None:
            await send({"type": "http.response.start", "status": 200, "headers": self.sse_headers})
            for data in head:
                await send({"type": "http.response.body", "body": data, "more_body": True})
            for index, piece in enumerate(pieces):
                if index == self.crash_after_chunks:
                    crash(index)
                if self.delay:
                    await trio.sleep(self.delay)
                await send(
                    {"type": "http.response.body", "body": frame(index, piece), "more_body": True}
                )
            if len(pieces) == self.crash_after_chunks:
                crash(len(pieces))
            for data in tail[:-1]:
                await send({"type": "http.response.body", "body": data, "more_body": True})
            await send_last(send, {"type": "http.response.body", "body": tail[-1]})

        await self.paced(receive, run)
        return 200

    async def generate(self, receive: Receive, pieces: list[str]) -> None:
        """Take as long as streaming the pieces would, for non-streaming answers."""
        if self.delay:
            await self.paced(receive, partial(trio.sleep, self.delay * len(pieces)))

    async def health(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> int:
        if self.slow_health:
            await trio.sleep(self.slow_health)
        if trio.current_time() < self.ready_at:
            return await self.send_json(send, 503, self.health_loading)
        return await self.send_json(send, 200, self.health_ok)

    async def models(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> int:
        return await self.send_json(send, 200, self.models_body)

    async def props(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> int:
        return await self.send_json(send, 200, self.props_body)

    def usage(self, prompt_tokens: int, completion_tokens: int) -> JSON:
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }

    async def chat_completions(
        self, scope: Scope, body: bytes, receive: Receive, send: Send
    ) -> int:
        request = parse_json(body)
        pieces, truncated = self.generated(max_tokens_of(request))
        finish_reason = "length" if truncated else "stop"
        model = request.get("model") or self.model_id
        usage = self.usage(count_words(request.get("messages")), len(pieces))
        completion_id = self.new_id("chatcmpl-")
        created = int(time.time())
        if request.get("stream") is not True:
            await self.generate(receive, pieces)
            response = {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(pieces)},
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": usage,
                "responder": self.responder_info,
            }
            return await self.send_json(send, 200, dumps(response))

        def chunk(choices: list[JSON], **extra: object) -> bytes:
            return sse(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": choices,
                    **extra,
                    "responder": self.responder_info,
                }
            )

        def frame(index: int, piece: str) -> bytes:
            delta = {"role": "assistant", "content": piece} if index == 0 else {"content": piece}
            return chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}])

        tail = [
            chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish_reason}])
        ]
        if include_usage(request):
            tail.append(chunk([], usage=usage))
        tail.append(b"data: [DONE]\n\n")
        return await self.stream(receive, send, (), pieces, frame, tail)

    async def completions(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> int:
        request = parse_json(body)
        pieces, truncated = self.generated(max_tokens_of(request))
        finish_reason = "length" if truncated else "stop"
        model = request.get("model") or self.model_id
        usage = self.usage(count_words(request.get("prompt")), len(pieces))
        completion_id = self.new_id("cmpl-")
        created = int(time.time())

        def completion(text: str, finish: str | None, **extra: object) -> JSON:
            return {
                "id": completion_id,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
                **extra,
                "responder": self.responder_info,
            }

        if request.get("stream") is not True:
            await self.generate(receive, pieces)
            return await self.send_json(
                send, 200, dumps(completion("".join(pieces), finish_reason, usage=usage))
            )
        tail = [sse(completion("", finish_reason))]
        if include_usage(request):
            tail.append(sse({**completion("", None), "choices": [], "usage": usage}))
        tail.append(b"data: [DONE]\n\n")
        return await self.stream(
            receive, send, (), pieces, lambda _, piece: sse(completion(piece, None)), tail
        )

    async def embeddings(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> int:
        request = parse_json(body)
        inputs = request.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not all(isinstance(item, str) for item in inputs):
            raise RequestError(400, "input must be a string or a list of strings")
        tokens = count_words(inputs)
        response = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": index, "embedding": embed(text)}
                for index, text in enumerate(inputs)
            ],
            "model": request.get("model") or self.model_id,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return await self.send_json(send, 200, dumps(response))

    async def messages(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> int:
        request = parse_json(body)
        pieces, truncated = self.generated(max_tokens_of(request))
        stop_reason = "max_tokens" if truncated else "end_turn"
        model = request.get("model") or self.model_id
        input_tokens = count_words(request.get("system")) + count_words(request.get("messages"))
        message_id = self.new_id("msg_")
        if request.get("stream") is not True:
            await self.generate(receive, pieces)
            response = {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": "".join(pieces)}],
                "stop_reason": stop_reason,
                "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": len(pieces)},
                "responder": self.responder_info,
            }
            return await self.send_json(send, 200, dumps(response))

        start = {
            "type": "message_start",
            "message": {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": 1},
                "responder": self.responder_info,
            },
        }
        head = (
            anthropic_sse("message_start", start),
            anthropic_sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            anthropic_sse("ping", {"type": "ping"}),
        )
        tail = [
            anthropic_sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
            anthropic_sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": {"output_tokens": len(pieces)},
                },
            ),
            anthropic_sse("message_stop", {"type": "message_stop"}),
        ]

        def frame(_: int, piece: str) -> bytes:
            return anthropic_sse(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": piece},
                },
            )

        return await self.stream(receive, send, head, pieces, frame, tail)

    async def count_tokens(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> int:
        request = parse_json(body)
        tokens = count_words(request.get("system")) + count_words(request.get("messages"))
        return await self.send_json(send, 200, dumps({"input_tokens": tokens}))

    async def tokenize(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> int:
        content = parse_json(body).get("content", "")
        if not isinstance(content, str):
            raise RequestError(400, "content must be a string")
        tokens = [token_id(word) for word in content.split()]
        return await self.send_json(send, 200, dumps({"tokens": tokens}))

    async def echo(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> int:
        content_type = header(scope, b"content-type")
        fields: object = {}
        if content_type.lower().startswith(b"multipart/"):
            fields = multipart_fields(content_type, body)
        elif content_type.lower().startswith(b"application/x-www-form-urlencoded"):
            fields = dict(urllib.parse.parse_qsl(body.decode(errors="replace")))
        else:
            try:
                fields = json.loads(body)
            except ValueError:
                fields = {}
            if not isinstance(fields, dict):
                fields = {}
        received = {"content_type": content_type.decode("latin-1"), "bytes": len(body)}
        response = {"text": self.text, "received": {**received, "fields": fields}}
        return await self.send_json(send, 200, dumps(response))

    async def debug_requests(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> int:
        return await self.send_json(send, 200, dumps(list(self.requests)))

    async def debug_clear(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> int:
        cleared = len(self.requests)
        self.requests.clear()
        return await self.send_json(send, 200, dumps({"cleared": cleared}))

    async def debug_info(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> int:
        info = {
            "model_id": self.model_id,
            "port": self.port,
            "pid": os.getpid(),
            "grandchild_pid": self.grandchild_pid,
        }
        return await self.send_json(send, 200, dumps(info))


def crash(chunks_sent: int) -> NoReturn:
    sys.stderr.write(f"responder: crashing after {chunks_sent} chunks\n")
    sys.stderr.flush()
    os._exit(CRASH_EXIT_CODE)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m trioswap.responder",
        description="A fake OpenAI-compatible LLM server for tests and benchmarks.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-id", required=True, help="the model this server says it serves")
    parser.add_argument(
        "--startup-delay", type=float, default=0.0, metavar="SECONDS", help="wait before binding"
    )
    parser.add_argument(
        "--loading-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="after binding, /health answers 503 'Loading model' for this long",
    )
    parser.add_argument(
        "--slow-health",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="delay every /health answer",
    )
    parser.add_argument(
        "--tokens-per-second",
        type=float,
        default=0.0,
        metavar="RATE",
        help="generation speed; each chunk takes 1/RATE seconds (0: no delay)",
    )
    parser.add_argument(
        "--response-text",
        default="Hello from {model_id} on port {port}.",
        metavar="TEXT",
        help="the generated text; {model_id} and {port} are substituted",
    )
    parser.add_argument(
        "--fail-on-start", action="store_true", help="print errors and exit after --startup-delay"
    )
    parser.add_argument("--exit-code", type=int, default=1, help="exit code for --fail-on-start")
    parser.add_argument(
        "--crash-after-chunks",
        type=int,
        metavar="N",
        help=f"die (exit code {CRASH_EXIT_CODE}) after streaming N chunks",
    )
    parser.add_argument("--ignore-sigterm", action="store_true")
    parser.add_argument(
        "--spawn-grandchild",
        action="store_true",
        help="start a sleeping child process in our process group",
    )
    parser.add_argument("--ctx-size", type=int, default=4096, metavar="N")
    opts = parser.parse_args(argv)
    if not opts.response_text:
        parser.error("--response-text must not be empty")
    if opts.crash_after_chunks is not None and opts.crash_after_chunks < 0:
        parser.error("--crash-after-chunks must not be negative")
    return opts


async def watch_signals(
    signals: list[signal.Signals],
    stop: trio.Event,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with trio.open_signal_receiver(*signals) as receiver:
        task_status.started()
        # Keep receiving, so that a repeated signal during shutdown cannot kill us.
        async for _ in receiver:
            stop.set()


async def run(opts: argparse.Namespace, app: Responder) -> int:
    signals = [signal.SIGINT] if opts.ignore_sigterm else [signal.SIGINT, signal.SIGTERM]
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(watch_signals, signals, stop)
        # Only now, so that a supervisor which saw this line can rely on a clean exit.
        sys.stderr.write(f"responder {opts.model_id}: pid {os.getpid()}\n")
        if app.grandchild_pid is not None:
            sys.stderr.write(f"responder {opts.model_id}: grandchild pid {app.grandchild_pid}\n")
        sys.stderr.flush()
        code = await start_and_serve(opts, app, stop)
        nursery.cancel_scope.cancel()
    return code


async def start_and_serve(opts: argparse.Namespace, app: Responder, stop: trio.Event) -> int:
    with trio.move_on_after(opts.startup_delay):
        await stop.wait()
    if stop.is_set():
        return 0
    if opts.fail_on_start:
        sys.stderr.write(
            f"llama_model_load: error loading model: failed to open {opts.model_id}.gguf\n"
            f"error: failed to load model '{opts.model_id}'\n"
            f"main: exiting due to model loading error (port {opts.port})\n"
        )
        sys.stderr.flush()
        return int(opts.exit_code)

    config = Config()
    host = f"[{opts.host}]" if ":" in opts.host else opts.host
    config.bind = [f"{host}:{opts.port}"]
    config.accesslog = None
    config.loglevel = "WARNING"
    # Like llama-server's, not hypercorn's 100: a proxy opens hundreds of connections at once.
    config.backlog = 1024
    app.ready_at = trio.current_time() + opts.loading_delay
    code = 0
    try:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(partial(serve, app, config, shutdown_trigger=stop.wait))
            log(f"responder {opts.model_id} listening on {binds[0]}")
    except* OSError as group:
        # Typically the port is taken; say so in one line rather than a nested traceback.
        error: BaseException = group
        while isinstance(error, BaseExceptionGroup):
            error = error.exceptions[0]
        sys.stderr.write(f"error: cannot serve on {host}:{opts.port}: {error}\n")
        code = 1
    return code


def spawn_grandchild() -> int:
    # Deliberately never reaped or killed by us: it is there to leak unless a supervisor
    # kills our whole process group.
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(3600)"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return child.pid


def main(argv: list[str] | None = None) -> NoReturn:
    opts = parse_args(argv)
    # Before ignoring SIGTERM, so the grandchild does not inherit that.
    grandchild_pid = spawn_grandchild() if opts.spawn_grandchild else None
    if opts.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    app = Responder(
        model_id=opts.model_id,
        port=opts.port,
        response_text=opts.response_text.replace("{model_id}", opts.model_id).replace(
            "{port}", str(opts.port)
        ),
        ctx_size=opts.ctx_size,
        tokens_per_second=opts.tokens_per_second,
        slow_health=opts.slow_health,
        crash_after_chunks=opts.crash_after_chunks,
        grandchild_pid=grandchild_pid,
    )
    code = trio.run(run, opts, app)
    # Skip interpreter teardown (tens of ms): a supervisor waiting for us to exit is waiting on it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
