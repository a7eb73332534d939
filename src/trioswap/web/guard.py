"""The browser guard: ASGI middleware in front of every route (inference and control alike).

A web page the user visits can make their browser send requests to trioswap: simple cross-site
POSTs (CSRF, e.g. `text/plain` to `/models/unload`), GETs that start models, websocket handshakes,
and — by rebinding its own DNS name to 127.0.0.1 — requests whose responses it can read. The
guard refuses those, and answers CORS for the origins `cors.origins` trusts. Clients that are not
browsers (curl, SDKs, agent CLIs, server-side frontends) send neither `Origin` nor `Sec-Fetch-*`
and pass untouched.

Rules, in order:
1. Host. On a loopback listener, or wherever `allowedHosts` is set, the Host header's name
   must be `localhost`, `*.localhost`, an IP literal, or in `allowedHosts` (an entry with a port
   matches that port only). DNS rebinding always arrives with the attacker's own name as Host;
   a browser never sends an IP literal or `localhost` for someone else's page. No Host
   (HTTP/1.0) is not a browser: allowed.
2. Trusted origins. An `Origin` listed in `cors.origins` (or any, with `"*"`) is allowed; its
   preflights (`OPTIONS` + `Access-Control-Request-Method`) are answered here, before auth, and
   its responses carry `Access-Control-Allow-Origin` (never `-Allow-Credentials`). Browsers
   preflight only cross-origin requests, so other origins' preflights fall to rule 3: 403.
3. Cross-site. Otherwise, as Go's `http.CrossOriginProtection` decides: `Sec-Fetch-Site`, when
   sent, must be `same-origin` or `none` (typed by the user); without it, an `Origin` must name
   the Host the request was sent to (`null` never does). Unlike Go, this holds for every method,
   since GETs of inference routes start models. One exception: a top-level navigation (GET/HEAD,
   `Sec-Fetch-Mode: navigate`, `Sec-Fetch-Dest: document`, no Origin) to a control route, so a
   link to the status page works; control GETs change nothing and the page goes to the user.
4. Form bodies. A POST/PUT/PATCH/DELETE to a control route may not carry a form content type
   (`text/plain`, `application/x-www-form-urlencoded`, `multipart/form-data`) nor a body that is
   not JSON: an old browser that sends no Origin still cannot forge one. A bodiless `curl -X POST`
   passes.
Refusals are 403 with a JSON error in the route's API family; websockets are closed before they
are accepted.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from enum import Enum

from trioswap.clip import clip
from trioswap.errors import Forbidden
from trioswap.pipeline.loader import RouteTable
from trioswap.protocols.errors import Family, new_request_id
from trioswap.web.asgi import ASGIApp, Message, Receive, Scope, Send, answer_unread

log = logging.getLogger("trioswap.guard")


class Verdict(Enum):
    PASS = "pass"
    PREFLIGHT = "preflight"
    REFUSE = "refuse"


PASS, PREFLIGHT, REFUSE = Verdict.PASS, Verdict.PREFLIGHT, Verdict.REFUSE

_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_FORM_TYPES = frozenset(
    {b"text/plain", b"application/x-www-form-urlencoded", b"multipart/form-data"}
)
_LOOPBACK_NAMES = frozenset({b"localhost"})
_HOST = re.compile(rb"(\[[0-9a-f:.]+\]|[^:\[\]]+)(?::[0-9]*)?")  # name[:port]
_IPV4 = re.compile(rb"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")
_ALLOW_METHODS = b"GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"
# Headers a browser script may read from a response (the CORS-safelisted ones need no mention).
_EXPOSE_HEADERS = b"x-request-id, request-id, retry-after"
PREFLIGHT_MAX_AGE = 600
HOSTS_SEEN_LIMIT = 32
FORM_MESSAGE = (
    "control routes take no body but JSON (Content-Type: application/json); form and "
    "text/plain bodies are refused so that web pages cannot post them"
)


class Guard:
    def __init__(
        self,
        app: ASGIApp,
        routes: RouteTable,
        *,
        loopback: bool,
        cors_origins: Iterable[str] = (),
        allowed_hosts: Iterable[str] = (),
    ) -> None:
        # The app behind the guard: may be set later (the control plane is built lazily).
        self.app = app
        self._routes = routes
        origins = frozenset(cors_origins)
        hosts = frozenset(host.encode() for host in allowed_hosts)
        self._check_host = loopback or bool(hosts)
        self._hosts = _LOOPBACK_NAMES | hosts
        # Host values seen and allowed, as sent (with port): one set lookup for the usual few.
        self._hosts_seen: set[bytes] = set()
        self._any_origin = "*" in origins
        self._origins = frozenset(origin.encode() for origin in origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        method = scope.get("method", "GET") if kind == "http" else None
        action, refusal, allow = self.verdict(method, scope["path"], headers)
        if action is PREFLIGHT:
            assert allow is not None
            await send_preflight(send, allow, headers)
            return
        if allow is not None:
            send = _with_cors(send, allow)
        if refusal is not None:
            await self._refuse(scope, receive, send, refusal)
            return
        await self.app(scope, receive, send)

    def verdict(
        self, method: str | None, path: str, headers: dict[bytes, bytes]
    ) -> tuple[Verdict, str | None, bytes | None]:
        """What the rules say of a request (`method` None: a websocket handshake): the verdict,
        the reason for a refusal, and the origin the response allows (None: no CORS headers;
        a refusal carries them too, so that the page can read why)."""
        host = headers.get(b"host")
        if self._check_host and host and host not in self._hosts_seen and not self._allowed(host):
            return REFUSE, _host_message(host), None
        origin = headers.get(b"origin")
        allow: bytes | None = None
        if origin is not None and (self._any_origin or origin in self._origins):
            if method is not None:
                allow = self._allow_origin(origin)
                if method == "OPTIONS" and b"access-control-request-method" in headers:
                    return PREFLIGHT, None, allow
        elif (origin is not None or b"sec-fetch-site" in headers) and not self._first_party(
            method, path, headers, origin, host
        ):
            return REFUSE, _cross_site_message(origin), None
        if method in _UNSAFE_METHODS and self._routes.match(path) is None and _form_like(headers):
            return REFUSE, FORM_MESSAGE, allow
        return PASS, None, allow

    def _allowed(self, host: bytes) -> bool:
        lowered = host.lower()
        parts = _HOST.fullmatch(lowered)
        allowed = lowered in self._hosts or (
            parts is not None
            and (
                parts[1] in self._hosts
                or parts[1].endswith(b".localhost")
                or parts[1][:1] == b"["
                or _IPV4.fullmatch(parts[1]) is not None
            )
        )
        if allowed and len(self._hosts_seen) < HOSTS_SEEN_LIMIT:
            self._hosts_seen.add(host)
        return allowed

    def _first_party(
        self,
        method: str | None,
        path: str,
        headers: dict[bytes, bytes],
        origin: bytes | None,
        host: bytes | None,
    ) -> bool:
        """Whether a browser request that is not from a trusted origin comes from trioswap's
        own pages (or the user's address bar), as rule 3 decides."""
        site = headers.get(b"sec-fetch-site")
        if site is not None:
            if site == b"same-origin" or site == b"none":
                return True
            return (
                origin is None
                and method in ("GET", "HEAD")
                and headers.get(b"sec-fetch-mode") == b"navigate"
                and headers.get(b"sec-fetch-dest") == b"document"
                and self._routes.match(path) is None
            )
        if origin is None:
            return True
        scheme, sep, authority = origin.partition(b"://")
        # The scheme is not compared: behind a TLS-terminating proxy trioswap sees plain HTTP.
        return (
            bool(sep)
            and host is not None
            and scheme in (b"http", b"https")
            and authority == host.lower()
        )

    def _allow_origin(self, origin: bytes) -> bytes:
        return b"*" if self._any_origin else origin

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, message: str) -> None:
        request_id = new_request_id()
        log.info(
            "%s refused %s %s: %s",
            request_id,
            scope.get("method", "websocket"),
            clip(scope["path"]),
            message,
        )
        if scope["type"] == "websocket":
            # Closing before accepting makes the server answer the handshake with 403.
            await send({"type": "websocket.close", "code": 1008})
            return
        pipeline = self._routes.match(scope["path"])
        family = pipeline.family if pipeline is not None else Family.OPENAI
        await answer_unread(receive, send, family, Forbidden(message), request_id)


async def send_preflight(send: Send, allow_origin: bytes, headers: dict[bytes, bytes]) -> None:
    response = preflight_headers(allow_origin, headers)
    await send({"type": "http.response.start", "status": 204, "headers": response})
    await send({"type": "http.response.body", "body": b""})


def preflight_headers(
    allow_origin: bytes, headers: dict[bytes, bytes]
) -> list[tuple[bytes, bytes]]:
    """The answer to a trusted origin's preflight, whose request headers are `headers`."""
    response = [
        (b"access-control-allow-origin", allow_origin),
        (b"access-control-allow-methods", _ALLOW_METHODS),
        (b"access-control-max-age", str(PREFLIGHT_MAX_AGE).encode()),
        (b"vary", b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
        (b"content-length", b"0"),
    ]
    requested = headers.get(b"access-control-request-headers")
    if requested:
        # Every request header is accepted, and `*` would not cover Authorization.
        response.append((b"access-control-allow-headers", requested))
    if headers.get(b"access-control-request-private-network") == b"true":
        # Chrome asks before a public page may call a server on the user's machine.
        response.append((b"access-control-allow-private-network", b"true"))
    return response


def _with_cors(send: Send, allow_origin: bytes) -> Send:
    """`send`, with the response's CORS headers set by us: upstream servers (llama-server sends
    `Access-Control-Allow-Origin: *`) do not decide who may read trioswap's responses."""
    added = [
        (b"access-control-allow-origin", allow_origin),
        (b"access-control-expose-headers", _EXPOSE_HEADERS),
        (b"vary", b"Origin"),
    ]

    async def cors_send(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [
                (name, value)
                for name, value in message.get("headers", ())
                if not name.lower().startswith(b"access-control-")
            ]
            headers += added
            message = {**message, "headers": headers}
        await send(message)

    return cors_send


def _form_like(headers: dict[bytes, bytes]) -> bool:
    """Whether a request carries a body that is not JSON, or a content type a form can send."""
    has_body = headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers
    content_type = headers.get(b"content-type")
    if content_type is None:
        return has_body
    media = content_type.partition(b";")[0].strip().lower()
    if media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    ):
        return False
    return has_body or media in _FORM_TYPES


def _host_message(host: bytes) -> str:
    return (
        f"trioswap does not answer to Host {clip(host)!r} (a defence against DNS rebinding); "
        "add the name to allowedHosts if you reach trioswap by it"
    )


def _cross_site_message(origin: bytes | None) -> str:
    source = f"from {clip(origin)!r}" if origin is not None else "from another site"
    return (
        f"cross-site request {source} refused; to let a web page call trioswap, add its "
        "origin to cors.origins"
    )
