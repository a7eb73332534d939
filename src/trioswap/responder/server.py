"""The responder's ASGI application and command line (see the package docstring)."""

from __future__ import annotations

import argparse
import collections
import hashlib
import itertools
import json
import math
import os
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

from trioswap.responder import chat, messages, ollama, responses
from trioswap.responder.replies import (
    KNOBS,
    Meta,
    Reply,
    Turn,
    count_tokens,
    plan,
    prompt_text,
    split_words,
)
from trioswap.responder.wire import (
    JSON,
    Frame,
    RequestError,
    dumps,
    error_body,
    max_tokens_of,
    parse_json,
)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_RECORDED_REQUESTS = 1000
CRASH_EXIT_CODE = 3
EMBEDDING_SIZE = 8
WEBSOCKET_PATH = "/ws"
API_FAMILIES = ("chat", "anthropic", "responses")
DEFAULT_APIS = "chat,anthropic"
# llama-server's answer for a path it has no route for (any method: cpp-httplib has no 405).
NOT_FOUND = dumps({"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}})
METHOD_NOT_ALLOWED = error_body(405, "Method Not Allowed", "invalid_request_error")


def embed(text: str) -> list[float]:
    """A deterministic unit vector derived from a hash of the text (a SHA-256 digest is
    exactly eight 32-bit words)."""
    words = struct.unpack(f">{EMBEDDING_SIZE}I", hashlib.sha256(text.encode()).digest())
    raw = [n / 2**31 - 1.0 for n in words]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [v / norm for v in raw]


def token_id(word: str) -> int:
    return zlib.crc32(word.encode()) % 32000


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
        enforce_ctx: bool = False,
        tokens_per_second: float = 0.0,
        slow_health: float = 0.0,
        crash_after_chunks: int | None = None,
        grandchild_pid: int | None = None,
        apis: Iterable[str] = ("chat", "anthropic"),
        unserved_status: int | None = None,  # None: as any path without a route
        ollama_api: ollama.OllamaApi | None = None,
    ) -> None:
        self.model_id = model_id
        self.port = port
        self.text = response_text
        self.chunks = split_words(response_text)
        self.ctx_size = ctx_size
        self.enforce_ctx = enforce_ctx
        self.delay = 1.0 / tokens_per_second if tokens_per_second > 0 else 0.0
        self.slow_health = slow_health
        self.crash_after_chunks = crash_after_chunks
        self.grandchild_pid = grandchild_pid
        self.unserved_status = unserved_status
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
        self.text_headers = [(b"content-type", b"text/plain"), *base_headers]
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
        # path -> method -> handler
        self.routes: dict[str, dict[str, Handler]] = {
            "/health": {"GET": self.health},
            "/v1/models": {"GET": self.models},
            "/props": {"GET": self.props},
            "/debug/requests": {"GET": self.debug_requests, "DELETE": self.debug_clear},
            "/debug/last": {"GET": self.debug_last},
            "/debug/info": {"GET": self.debug_info},
        }
        families: dict[str, dict[str, dict[str, Handler]]] = {
            "chat": {
                "/v1/chat/completions": {"POST": self.chat_completions},
                "/v1/completions": {"POST": self.completions},
                "/v1/embeddings": {"POST": self.embeddings},
                "/v1/audio/transcriptions": {"POST": self.echo},
                "/v1/audio/speech": {"POST": self.echo},
                "/v1/images/generations": {"POST": self.echo},
                "/tokenize": {"POST": self.tokenize},
                "/apply-template": {"POST": self.apply_template},
            },
            "anthropic": {
                "/v1/messages": {"POST": self.anthropic_messages},
                "/v1/messages/count_tokens": {"POST": self.anthropic_count_tokens},
            },
            "responses": {"/v1/responses": {"POST": self.openai_responses}},
        }
        # Paths of the families not served: they answer `unserved_status`.
        self.unserved: set[str] = set()
        for family, routes in families.items():
            if family in apis:
                self.routes.update(routes)
            else:
                self.unserved.update(routes)
        self.ollama = ollama_api
        if ollama_api is not None:
            for path, answers in ollama_api.routes.items():
                self.routes[path] = {
                    method: self.ollama_handler(answer) for method, answer in answers.items()
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
        try:
            status = await self.dispatch(method, path, scope, body, receive, send)
        except RequestError as exc:
            status = await self.send_json(
                send, exc.status, error_body(exc.status, str(exc), exc.error_type, exc.extra)
            )
        log(f"{method} {path} -> {status}")

    async def dispatch(
        self, method: str, path: str, scope: Scope, body: bytes, receive: Receive, send: Send
    ) -> int:
        methods = self.routes.get(path)
        if methods is None:
            unserved = self.unserved_status if path in self.unserved else None
            if unserved == 405:
                # An empty Allow: the resource exists but allows no method (RFC 9110 10.2.1).
                return await self.send_json(send, 405, METHOD_NOT_ALLOWED, [(b"allow", b"")])
            # An explicit --unserved-status 404 answers as llama-server, even with --ollama.
            if unserved == 404 or self.ollama is None:
                return await self.send_json(send, 404, NOT_FOUND)
            return await self.send_body(send, 404, ollama.NOT_FOUND, self.text_headers)
        handler = methods.get(method)
        if handler is None:
            allow = ", ".join(methods).encode()
            return await self.send_json(send, 405, METHOD_NOT_ALLOWED, [(b"allow", allow)])
        if self.ollama is not None and path in ollama.MODEL_PATHS:
            self.ollama.require(parse_json(body))
        return await handler(scope, body, receive, send)

    def ollama_handler(self, answer: ollama.OllamaHandler) -> Handler:
        async def handle(scope: Scope, body: bytes, receive: Receive, send: Send) -> int:
            status, value = answer(body)
            return await self.send_json(send, status, dumps(value))

        return handle

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

    async def send_json(
        self, send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]] = ()
    ) -> int:
        return await self.send_body(send, status, body, [*self.json_headers, *headers])

    @staticmethod
    async def send_body(
        send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]]
    ) -> int:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())],
            }
        )
        await send_last(send, {"type": "http.response.body", "body": body})
        return status

    def new_id(self, prefix: str) -> str:
        return f"{prefix}{self._id_prefix}-{next(self._ids)}"

    def meta(self, request: JSON) -> Meta:
        model = request.get("model") or self.model_id
        return Meta(model, int(time.time()), self.responder_info, self.new_id)

    def reply(self, turn: Turn, prompt_tokens: int, max_tokens: int | None) -> Reply:
        return plan(turn, self.chunks, prompt_tokens, max_tokens)

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

    async def stream(self, receive: Receive, send: Send, frames: Iterable[Frame]) -> int:
        """Send an event stream of `frames`. Those that carry generated pieces are paced by
        tokens-per-second; after --crash-after-chunks of them, we die before sending more."""

        async def run() -> None:
            await send({"type": "http.response.start", "status": 200, "headers": self.sse_headers})
            sent = 0
            pending: bytes | None = None  # held back so that the last frame ends the body
            for data, piece in frames:
                if pending is not None:
                    await send({"type": "http.response.body", "body": pending, "more_body": True})
                if sent == self.crash_after_chunks:
                    crash(sent)
                if piece:
                    if self.delay:
                        await trio.sleep(self.delay)
                    sent += 1
                pending = data
            await send_last(send, {"type": "http.response.body", "body": pending or b""})

        await self.paced(receive, run)
        return 200

    async def answer(
        self,
        receive: Receive,
        send: Send,
        request: JSON,
        reply: Reply,
        body: Callable[[], JSON],
        frames: Callable[[], Iterable[Frame]],
    ) -> int:
        """The reply as one body, taking as long as streaming it would, or as an event stream."""
        if request.get("stream") is True:
            return await self.stream(receive, send, frames())
        if self.delay:
            await self.paced(receive, partial(trio.sleep, self.delay * reply.output_tokens))
        return await self.send_json(send, 200, dumps(body()))

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

    async def chat_completions(
        self, scope: Scope, body: bytes, receive: Receive, send: Send
    ) -> int:
        request = parse_json(body)
        prompt_tokens = chat.prompt_tokens(request)
        if self.enforce_ctx and prompt_tokens >= self.ctx_size:
            # As llama-server refuses a prompt that does not fit its context.
            raise RequestError(
                400,
                "the request exceeds the available context size, try increasing it",
                "exceed_context_size_error",
                {"n_prompt_tokens": prompt_tokens, "n_ctx": self.ctx_size},
            )
        reply = self.reply(
            chat.turn(request.get("messages")),
            prompt_tokens,
            max_tokens_of(request, "max_tokens", "max_completion_tokens"),
        )
        meta = self.meta(request)
        return await self.answer(
            receive,
            send,
            request,
            reply,
            partial(chat.completion, reply, meta),
            partial(chat.chunks, reply, meta, include_usage(request)),
        )

    async def completions(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> int:
        request = parse_json(body)
        reply = self.reply(
            Turn(""), count_tokens(request.get("prompt")), max_tokens_of(request, "max_tokens")
        )
        meta = self.meta(request)
        return await self.answer(
            receive,
            send,
            request,
            reply,
            partial(chat.text_completion, reply, meta),
            partial(chat.text_completion_chunks, reply, meta, include_usage(request)),
        )

    async def embeddings(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> int:
        request = parse_json(body)
        inputs = request.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not all(isinstance(item, str) for item in inputs):
            raise RequestError(400, "input must be a string or a list of strings")
        tokens = count_tokens(inputs)
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

    async def anthropic_messages(
        self, scope: Scope, body: bytes, receive: Receive, send: Send
    ) -> int:
        request = parse_json(body)
        reply = self.reply(
            messages.turn(request.get("messages")),
            messages.prompt_tokens(request),
            max_tokens_of(request, "max_tokens"),
        )
        meta = self.meta(request)
        return await self.answer(
            receive,
            send,
            request,
            reply,
            partial(messages.message, reply, meta),
            partial(messages.events, reply, meta),
        )

    async def anthropic_count_tokens(
        self, scope: Scope, body: bytes, receive: Receive, send: Send
    ) -> int:
        tokens = messages.prompt_tokens(parse_json(body))
        return await self.send_json(send, 200, dumps({"input_tokens": tokens}))

    async def openai_responses(
        self, scope: Scope, body: bytes, receive: Receive, send: Send
    ) -> int:
        request = parse_json(body)
        reply = self.reply(
            responses.turn(request),
            responses.prompt_tokens(request),
            max_tokens_of(request, "max_output_tokens"),
        )
        answer = responses.Answer(reply, self.meta(request), request)
        return await self.answer(receive, send, request, reply, answer.body, answer.events)

    async def tokenize(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> int:
        content = parse_json(body).get("content", "")
        if not isinstance(content, str):
            raise RequestError(400, "content must be a string")
        tokens = [token_id(word) for word in content.split()]
        return await self.send_json(send, 200, dumps({"tokens": tokens}))

    async def apply_template(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> int:
        """The prompt is the messages' text one part per line, no role markers, so /tokenize
        counts it as usage counts the messages."""
        conversation = parse_json(body).get("messages")
        if not isinstance(conversation, list):
            raise RequestError(400, "messages must be a list")
        return await self.send_json(send, 200, dumps({"prompt": prompt_text(conversation)}))

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

    async def debug_last(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> int:
        """Each path's last request body, parsed when it is JSON: what reached the server."""
        last: JSON = {}
        for request in reversed(self.requests):
            path = request["path"]
            if path in last:
                continue
            try:
                last[path] = json.loads(request["body"])
            except ValueError:
                last[path] = request["body"]
        return await self.send_json(send, 200, dumps(last))

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


def api_families(value: str) -> frozenset[str]:
    names = frozenset(name.strip() for name in value.split(",") if name.strip())
    unknown = sorted(names.difference(API_FAMILIES))
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"{', '.join(unknown) or 'nothing'}: name API families among {', '.join(API_FAMILIES)}"
        )
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m trioswap.responder",
        description="A fake OpenAI-compatible LLM server for tests and benchmarks.",
        epilog=KNOBS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    parser.add_argument(
        "--enforce-ctx",
        action="store_true",
        help="refuse chat prompts of --ctx-size tokens or more, as llama-server does (400 "
        "exceed_context_size_error)",
    )
    parser.add_argument(
        "--apis",
        type=api_families,
        metavar="LIST",
        help="the API families served natively, comma separated: chat (chat completions, "
        "completions, embeddings, audio, images, /tokenize, /apply-template), anthropic "
        "(/v1/messages and its count_tokens), responses (/v1/responses); default: "
        f"{DEFAULT_APIS}, or with --ollama those its --ollama-version serves",
    )
    parser.add_argument(
        "--unserved-status",
        type=int,
        choices=(404, 405),
        help="how the paths of families left out of --apis answer: 404 File Not Found, as "
        "llama-server answers any path it lacks, or 405 Method Not Allowed with an empty Allow, "
        "as servers answer that know the path but serve no method there (default: as any path "
        "without a route: 404 File Not Found, or with --ollama Ollama's 404 page not found)",
    )
    parser.add_argument(
        "--ollama",
        action="store_true",
        help="also speak Ollama's model listing API (/api/version, /api/tags, /api/show, /api/ps; "
        "/v1/models lists the catalogue) and serve only the catalogue's models",
    )
    parser.add_argument(
        "--ollama-models",
        type=ollama.catalogue,
        default=ollama.DEFAULT_MODELS,
        metavar="SPEC",
        help="the --ollama catalogue: a JSON file, a list of {name, family, parameter_size, "
        "quantization_level, size, num_ctx, context_length, capabilities, gguf} of which only "
        "name is required (gguf: a GGUF file, relative to the list's folder, whose tokenizer.ggml "
        "metadata /api/show reports), or generate:N for N models model-0000:latest ... "
        "(default: llama3.2:3b with num_ctx 8192, qwen2.5-coder:7b)",
    )
    parser.add_argument(
        "--ollama-version",
        default=ollama.DEFAULT_VERSION,
        metavar="VERSION",
        help="what /api/version says, and unless --apis is given the families served: chat, "
        "responses from 0.13.3, anthropic from 0.14.0; a version that is not X.Y.Z... or is "
        "0.0.0 counts as the newest (default: %(default)s)",
    )
    parser.add_argument(
        "--ollama-default-ctx",
        type=int,
        default=ollama.DEFAULT_CTX,
        metavar="N",
        help="the context /api/ps reports for loaded models without num_ctx (default: %(default)s)",
    )
    opts = parser.parse_args(argv)
    if opts.apis is None:
        opts.apis = (
            ollama.families(opts.ollama_version) if opts.ollama else api_families(DEFAULT_APIS)
        )
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
        enforce_ctx=opts.enforce_ctx,
        tokens_per_second=opts.tokens_per_second,
        slow_health=opts.slow_health,
        crash_after_chunks=opts.crash_after_chunks,
        grandchild_pid=grandchild_pid,
        apis=opts.apis,
        unserved_status=opts.unserved_status,
        ollama_api=ollama.OllamaApi(
            opts.ollama_models, version=opts.ollama_version, default_ctx=opts.ollama_default_ctx
        )
        if opts.ollama
        else None,
    )
    code = trio.run(run, opts, app)
    # Skip interpreter teardown (tens of ms): a supervisor waiting for us to exit is waiting on it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
