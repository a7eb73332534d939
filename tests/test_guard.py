"""The browser guard (web/guard.py): its rules driven with ASGI scopes around a tiny app, then
the same defences seen through a real trioswap."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import anthropic
import httpx
import openai
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import RESPONDER, LaunchFn, random_start_port, wait_until
from trioswap.pipeline.loader import Pipeline, RouteTable
from trioswap.protocols.errors import Family
from trioswap.web.asgi import Message, Receive, Scope, Send
from trioswap.web.guard import PREFLIGHT_MAX_AGE, Guard


def _pipeline(family: Family) -> Pipeline:
    return Pipeline(family.value, family, frozenset({"POST"}), ())


OPENAI, ANTHROPIC = _pipeline(Family.OPENAI), _pipeline(Family.ANTHROPIC)
ROUTES = RouteTable(
    exact={"/v1/chat/completions": OPENAI, "/v1/messages": ANTHROPIC},
    prefixes=(("/upstream/", OPENAI),),
)
INFERENCE_PATHS = ["/v1/chat/completions", "/v1/messages", "/upstream/m/props"]
CONTROL_PATHS = ["/models/unload", "/models/unload/m", "/running", "/", "/logs/stream"]
PATHS = INFERENCE_PATHS + CONTROL_PATHS
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
JSON_TYPES = ["application/json", "application/json; charset=utf-8", "application/vnd.x+json"]
FORM_TYPES = [
    "text/plain",
    "text/plain;charset=UTF-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW",
    "TEXT/PLAIN",
]
SITES = [None, "same-origin", "none", "same-site", "cross-site"]
GOOD_HOSTS = [
    "localhost",
    "localhost:8080",
    "LocalHost:8080",
    "ui.localhost:8080",
    "127.0.0.1:8080",
    "127.9.8.7",
    "[::1]:8080",
    "192.168.1.5:8080",
]
FRONTEND = "http://localhost:3000"

# Names an attacker's page can be served from and rebind to 127.0.0.1.
foreign_names = st.one_of(
    st.from_regex(r"[a-z][a-z0-9-]{0,12}(\.[a-z][a-z0-9-]{0,8}){1,3}", fullmatch=True).filter(
        lambda name: not name.endswith(".localhost") and name != "localhost"
    ),
    st.sampled_from(
        ["evil.example", "localhost.evil.example", "127.0.0.1.nip.io", "test", "[::1].evil"]
    ),
)
foreign_hosts = st.builds(
    lambda name, port: name if port is None else f"{name}:{port}",
    foreign_names,
    st.none() | st.integers(1, 65535),
)
foreign_origins = st.one_of(
    st.builds(lambda s, h: f"{s}://{h}", st.sampled_from(["http", "https"]), foreign_hosts),
    st.sampled_from(["null", "http://localhost:3001", "chrome-extension://abcdef", "file://"]),
)
bodies = st.sampled_from([None, "0", "17", "chunked"])


@dataclass
class Outcome:
    reached: bool = False
    status: int | None = None
    headers: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""
    closed: bool = False

    def header(self, name: str) -> str:
        (value,) = self.headers[name]
        return value


async def drive(
    method: str = "GET",
    path: str = "/running",
    *,
    host: str | None = "localhost:8080",
    origin: str | None = None,
    site: str | None = None,
    content_type: str | None = None,
    body: str | None = None,
    websocket: bool = False,
    extra: dict[str, str] | None = None,
    loopback: bool = True,
    cors: tuple[str, ...] = (),
    allowed_hosts: tuple[str, ...] = (),
) -> Outcome:
    """One request (`body`: a content-length, or "chunked") through a guard around an app that
    answers like a model server allowing any origin, in two chunks, or accepts a websocket."""
    outcome = Outcome()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        outcome.reached = True
        if scope["type"] == "websocket":
            await send({"type": "websocket.accept"})
            return
        headers = [(b"Access-Control-Allow-Origin", b"*"), (b"x-request-id", b"r1")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        await send({"type": "http.response.body", "body": b"b"})

    # What hypercorn delivers: the body, then the disconnect once the response is complete. A
    # refused request's body is only taken off the connection (see answer_unread), never read
    # before the refusal is decided.
    messages = [
        {"type": "http.request", "body": b"x", "more_body": False},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Message:
        assert outcome.status is not None, "the body is taken only while the answer goes out"
        if len(messages) > 1:
            return messages.pop(0)
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            outcome.status = message["status"]
            for name, value in message["headers"]:
                outcome.headers.setdefault(name.decode().lower(), []).append(value.decode())
        elif message["type"] == "http.response.body":
            outcome.body += message.get("body", b"")
        else:
            assert message["type"] in ("websocket.accept", "websocket.close")
            outcome.closed = message["type"] == "websocket.close"

    headers = {"host": host, "origin": origin, "sec-fetch-site": site, "content-type": content_type}
    if body == "chunked":
        headers["transfer-encoding"] = "chunked"
    elif body is not None:
        headers["content-length"] = body
    headers.update(extra or {})
    scope: Scope = {
        "type": "websocket" if websocket else "http",
        "path": path,
        "headers": [(k.encode(), v.encode()) for k, v in headers.items() if v is not None],
    }
    if not websocket:
        scope["method"] = method
    guard = Guard(app, ROUTES, loopback=loopback, cors_origins=cors, allowed_hosts=allowed_hosts)
    await guard(scope, receive, send)
    assert outcome.reached != outcome.closed if websocket else outcome.status is not None
    return outcome


def assert_refused(outcome: Outcome, path: str) -> None:
    assert not outcome.reached
    assert outcome.status == 403
    assert "access-control-allow-origin" not in outcome.headers
    body = json.loads(outcome.body)
    if path.startswith("/v1/messages"):
        assert body["type"] == "error"
        assert body["error"]["type"] == "permission_error"
    else:
        assert body["error"]["type"] == "permission_error"
        assert body["error"]["code"] == 403


# Rule 1: the Host header, against DNS rebinding.


@given(
    host=foreign_hosts,
    method=st.sampled_from(METHODS),
    path=st.sampled_from(PATHS),
    origin=st.sampled_from([None, FRONTEND]),
    site=st.sampled_from(SITES),
    allowed=st.sampled_from([(), ("trioswap.lan",)]),
)
async def test_a_foreign_host_is_refused_on_loopback(
    host: str,
    method: str,
    path: str,
    origin: str | None,
    site: str | None,
    allowed: tuple[str, ...],
) -> None:
    outcome = await drive(
        method, path, host=host, origin=origin, site=site, cors=(FRONTEND,), allowed_hosts=allowed
    )
    assert_refused(outcome, path)


@pytest.mark.parametrize("host", [*GOOD_HOSTS, "", None])
@pytest.mark.parametrize("loopback", [True, False])
async def test_loopback_names_and_ip_literals_are_served(host: str | None, loopback: bool) -> None:
    # An attacker's page is never served under these, so they cannot be rebound.
    allowed = () if loopback else ("trioswap.lan",)
    outcome = await drive(host=host, loopback=loopback, allowed_hosts=allowed)
    assert outcome.reached


@given(host=foreign_hosts)
async def test_any_host_is_served_on_a_non_loopback_listener(host: str) -> None:
    assert (await drive(host=host, loopback=False)).reached


@pytest.mark.parametrize("loopback", [True, False])
async def test_allowed_hosts_add_names(loopback: bool) -> None:
    allowed = ("trioswap.lan", "box:8080")
    for host in ("trioswap.lan", "TrioSwap.LAN:8080", "box:8080"):
        assert (await drive(host=host, loopback=loopback, allowed_hosts=allowed)).reached, host
    for host in ("evil.example", "x.trioswap.lan", "trioswap.lan.evil.example", "box:9090"):
        outcome = await drive(host=host, loopback=loopback, allowed_hosts=allowed)
        assert_refused(outcome, "/running")


async def test_hosts_are_remembered_exactly() -> None:
    # One guard serves every request: what it remembers of allowed Hosts lets nothing else in.
    reached: list[bytes] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope["headers"][0][1] if scope["type"] == "http" else b"lifespan")

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        pass

    guard = Guard(app, ROUTES, loopback=True)
    hosts = [f"127.0.0.1:{port}".encode() for port in range(100)]
    for host in [*hosts, *hosts, b"evil.example", b"evil.example:1", b"localhost.evil"]:
        scope = {"type": "http", "method": "GET", "path": "/running", "headers": [(b"host", host)]}
        await guard(scope, receive, send)
    assert reached == hosts + hosts
    await guard({"type": "lifespan"}, receive, send)
    assert reached[-1] == b"lifespan"


# Rule 3: cross-site requests.


@given(
    origin=foreign_origins,
    site=st.sampled_from([None, "same-site", "cross-site"]),
    method=st.sampled_from(METHODS),
    path=st.sampled_from(PATHS),
    content_type=st.sampled_from([None, *JSON_TYPES, *FORM_TYPES]),
    body=bodies,
    loopback=st.booleans(),
    navigation=st.booleans(),
)
async def test_a_foreign_origin_never_reaches_trioswap(
    origin: str,
    site: str | None,
    method: str,
    path: str,
    content_type: str | None,
    body: str | None,
    loopback: bool,
    navigation: bool,
) -> None:
    extra = {"sec-fetch-mode": "navigate", "sec-fetch-dest": "document"} if navigation else {}
    outcome = await drive(
        method,
        path,
        origin=origin,
        site=site,
        content_type=content_type,
        body=body,
        loopback=loopback,
        cors=(FRONTEND,),
        extra=extra | {"access-control-request-method": "POST"},
    )
    assert_refused(outcome, path)


@given(
    site=st.sampled_from(["same-site", "cross-site"]),
    method=st.sampled_from(METHODS),
    path=st.sampled_from(PATHS),
    mode_dest=st.sampled_from(
        [("navigate", "document"), ("navigate", "iframe"), ("no-cors", "image"), ("cors", "empty")]
    ),
)
async def test_cross_site_requests_without_origin_are_refused_but_links_to_pages(
    site: str, method: str, path: str, mode_dest: tuple[str, str]
) -> None:
    mode, dest = mode_dest
    extra = {"sec-fetch-mode": mode, "sec-fetch-dest": dest}
    outcome = await drive(method, path, site=site, extra=extra)
    link = mode_dest == ("navigate", "document") and method in ("GET", "HEAD")
    if link and path in CONTROL_PATHS:
        assert outcome.reached
    else:
        # A link to /upstream/<model>/ would start the model.
        assert_refused(outcome, path)


@given(
    host=st.sampled_from([h for h in GOOD_HOSTS if h.lower() == h]),
    scheme=st.sampled_from(["http", "https"]),
    site=st.sampled_from([None, "same-origin"]),
    method=st.sampled_from(METHODS),
    path=st.sampled_from(PATHS),
    loopback=st.booleans(),
)
async def test_trioswaps_own_pages_are_served(
    host: str, scheme: str, site: str | None, method: str, path: str, loopback: bool
) -> None:
    outcome = await drive(
        method,
        path,
        host=host,
        origin=f"{scheme}://{host}",
        site=site,
        content_type="application/json",
        body="2",
        loopback=loopback,
    )
    assert outcome.reached


@given(
    site=st.sampled_from(["same-origin", "none", None]),
    method=st.sampled_from(METHODS),
    path=st.sampled_from(PATHS),
)
async def test_the_browsers_word_for_same_origin_is_taken(
    site: str | None, method: str, path: str
) -> None:
    # Sec-Fetch-Site is set by the browser, which no page can override; "none" is the user
    # typing the URL. A proxy that rewrites Host does not break trioswap's own page.
    outcome = await drive(
        method, path, host="127.0.0.1:8080", origin="https://trioswap.example", site=site
    )
    assert outcome.reached == (site is not None)


# Rule 4: form bodies on control routes.


@given(
    method=st.sampled_from(METHODS),
    path=st.sampled_from(PATHS),
    content_type=st.sampled_from([None, "application/octet-stream", *JSON_TYPES, *FORM_TYPES]),
    body=bodies,
    same_origin=st.booleans(),
)
async def test_control_routes_take_no_form_bodies(
    method: str, path: str, content_type: str | None, body: str | None, same_origin: bool
) -> None:
    # Without Origin (curl, or a browser too old to send it) or from trioswap's own page.
    origin = "http://localhost:8080" if same_origin else None
    outcome = await drive(method, path, origin=origin, content_type=content_type, body=body)
    has_body = body not in (None, "0")
    is_json = content_type in JSON_TYPES
    refused = (
        path in CONTROL_PATHS
        and method in UNSAFE
        and (content_type in FORM_TYPES or (has_body and not is_json))
    )
    if refused:
        assert_refused(outcome, path)
        assert "JSON" in json.loads(outcome.body)["error"]["message"]
    else:
        assert outcome.reached


# Rule 2: CORS for trusted origins.

PREFLIGHT = {"access-control-request-method": "POST"}


@pytest.mark.parametrize("path", PATHS)
async def test_a_trusted_origins_preflight_is_answered_by_the_guard(path: str) -> None:
    outcome = await drive(
        "OPTIONS",
        path,
        origin=FRONTEND,
        site="same-site",
        cors=("http://localhost:5173", FRONTEND),
        extra=PREFLIGHT | {"access-control-request-headers": "authorization,content-type"},
    )
    assert not outcome.reached
    assert outcome.status == 204
    assert outcome.body == b""
    assert outcome.header("access-control-allow-origin") == FRONTEND
    assert outcome.header("access-control-allow-headers") == "authorization,content-type"
    assert "POST" in outcome.header("access-control-allow-methods")
    assert outcome.header("access-control-max-age") == str(PREFLIGHT_MAX_AGE)
    assert "Origin" in outcome.header("vary")
    assert "access-control-allow-private-network" not in outcome.headers
    assert "access-control-allow-credentials" not in outcome.headers


async def test_a_preflight_from_a_public_page_may_reach_the_users_machine() -> None:
    extra = PREFLIGHT | {"access-control-request-private-network": "true"}
    origin = "https://chat.example.com"
    outcome = await drive(
        "OPTIONS",
        "/v1/chat/completions",
        origin=origin,
        site="cross-site",
        cors=(origin,),
        extra=extra,
    )
    assert outcome.header("access-control-allow-private-network") == "true"
    assert outcome.header("access-control-allow-origin") == origin


@given(
    method=st.sampled_from(METHODS),
    path=st.sampled_from(PATHS),
    site=st.sampled_from(SITES),
    content_type=st.sampled_from([None, *JSON_TYPES]),
    body=st.sampled_from([None, "0"]),
)
async def test_a_trusted_origins_responses_carry_cors_headers(
    method: str, path: str, site: str | None, content_type: str | None, body: str | None
) -> None:
    outcome = await drive(
        method,
        path,
        origin=FRONTEND,
        site=site,
        content_type=content_type,
        body=body,
        cors=(FRONTEND,),
    )
    assert outcome.reached
    assert outcome.body == b"ab"
    # The model server's own "*" is replaced: trioswap decides who reads its responses.
    assert outcome.header("access-control-allow-origin") == FRONTEND
    assert "x-request-id" in outcome.header("access-control-expose-headers")
    assert outcome.header("vary") == "Origin"


@given(origin=foreign_origins, path=st.sampled_from(PATHS))
async def test_a_wildcard_lets_every_origin_read(origin: str, path: str) -> None:
    outcome = await drive("POST", path, origin=origin, site="cross-site", cors=("*",))
    assert outcome.reached
    assert outcome.header("access-control-allow-origin") == "*"
    outcome = await drive(
        "OPTIONS", path, origin=origin, site="cross-site", cors=("*",), extra=PREFLIGHT
    )
    assert (outcome.status, outcome.header("access-control-allow-origin")) == (204, "*")


async def test_a_trusted_origin_still_posts_only_json_to_control_routes() -> None:
    outcome = await drive(
        "POST",
        "/models/unload",
        origin=FRONTEND,
        site="same-site",
        content_type="text/plain",
        cors=(FRONTEND,),
    )
    assert not outcome.reached
    assert outcome.status == 403
    # The page may read why.
    assert outcome.header("access-control-allow-origin") == FRONTEND


# Websockets: a cross-site handshake is CSWSH.


@pytest.mark.parametrize(
    ("host", "origin", "site", "accepted"),
    [
        ("localhost:8080", None, None, True),
        ("localhost:8080", "http://localhost:8080", "same-origin", True),
        ("localhost:8080", FRONTEND, "same-site", True),
        ("evil.example:8080", None, None, False),
        ("evil.example:8080", "http://evil.example:8080", "same-origin", False),
        ("localhost:8080", "https://evil.example", "cross-site", False),
        ("localhost:8080", "https://evil.example", None, False),
        ("localhost:8080", None, "cross-site", False),
    ],
)
async def test_websocket_handshakes(
    host: str, origin: str | None, site: str | None, accepted: bool
) -> None:
    outcome = await drive(
        path="/logs/ws", host=host, origin=origin, site=site, websocket=True, cors=(FRONTEND,)
    )
    assert outcome.reached is accepted
    assert outcome.closed is not accepted


# Through a real trioswap.

EVIL = {"origin": "https://evil.example", "sec-fetch-site": "cross-site"}
TEXT_PLAIN = {"content-type": "text/plain;charset=UTF-8"}


def config(top: str = "") -> str:
    return f"""
startPort: {random_start_port()}
{top}
models:
  m:
    cmd: {RESPONDER} --port ${{PORT}} --model-id m
"""


async def test_a_cross_site_form_post_starts_no_model(launch: LaunchFn) -> None:
    ts = await launch(config())
    chat = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    async with ts.client() as client:
        for path in ("/v1/chat/completions", "/v1/messages"):
            response = await client.post(path, content=chat, headers=EVIL | TEXT_PLAIN)
            assert response.status_code == 403, path
            assert "cors.origins" in response.text
        response = await client.get("/upstream/m/props", headers=EVIL)
        assert response.status_code == 403
        assert response.json()["error"]["type"] == "permission_error"
        assert (
            await client.get("/upstream/m/props", headers={"sec-fetch-site": "cross-site"})
        ).status_code == 403
    assert await ts.running() == {}


async def test_a_cross_site_form_post_unloads_nothing(launch: LaunchFn) -> None:
    ts = await launch(config())
    async with ts.client() as client:
        assert (await client.post("/v1/chat/completions", json={"model": "m"})).status_code == 200
        for path in ("/models/unload", "/models/unload/m"):
            response = await client.post(path, content="x", headers=EVIL | TEXT_PLAIN)
            assert response.status_code == 403, path
            # A browser too old to send Origin still cannot post a form.
            response = await client.post(path, content="x=1", headers=TEXT_PLAIN)
            assert response.status_code == 403, path
        assert await ts.states() == {"m": "ready"}
        # trioswap's own status page (same origin) and curl -X POST still unload.
        own = {"origin": ts.url, "sec-fetch-site": "same-origin"}
        assert (await client.post("/models/unload/m", headers=own)).status_code == 200
        await client.post("/v1/chat/completions", json={"model": "m"})
        assert (await client.post("/models/unload")).status_code == 200

    async def stopped() -> bool:
        return await ts.running() == {}

    await wait_until(stopped)


async def test_a_rebound_host_name_is_refused(launch: LaunchFn) -> None:
    ts = await launch(config())
    port = httpx.URL(ts.url).port
    rebound = {"host": f"evil.example:{port}"}
    async with ts.client() as client:
        for path in ("/running", "/logs", "/v1/models"):
            response = await client.get(path, headers=rebound)
            assert response.status_code == 403, path
            assert "allowedHosts" in response.json()["error"]["message"]
        response = await client.post("/v1/chat/completions", json={"model": "m"}, headers=rebound)
        assert response.status_code == 403
        assert await ts.running() == {}
        for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
            assert (await client.get("/running", headers={"host": host})).status_code == 200


async def test_a_trusted_frontend_calls_trioswap_with_cors(launch: LaunchFn) -> None:
    ts = await launch(config("cors: {origins: ['http://localhost:3000/']}\napiKeys: [sk-one]"))
    frontend = {"origin": "http://localhost:3000", "sec-fetch-site": "same-site"}
    async with ts.client() as client:
        # The preflight carries no key; the guard answers it.
        preflight = frontend | {
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization,content-type",
        }
        response = await client.options("/v1/chat/completions", headers=preflight)
        assert response.status_code == 204
        assert response.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert response.headers["access-control-allow-headers"] == "authorization,content-type"
        assert "POST" in response.headers["access-control-allow-methods"]
        assert int(response.headers["access-control-max-age"]) > 0
        assert "Origin" in response.headers["vary"]
        response = await client.options(
            "/v1/chat/completions", headers=preflight | {"origin": "http://localhost:3001"}
        )
        assert response.status_code == 403
        assert "access-control-allow-origin" not in response.headers

        key = {"authorization": "Bearer sk-one"}
        chat = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        async with client.stream(
            "POST", "/v1/chat/completions", json=chat, headers=frontend | key
        ) as response:
            assert response.status_code == 200
            assert response.headers["access-control-allow-origin"] == "http://localhost:3000"
            assert response.headers.get_list("access-control-allow-origin") == [
                "http://localhost:3000"
            ]
            text = "".join([chunk async for chunk in response.aiter_text()])
        assert "[DONE]" in text
        # Errors too, so the page can show them.
        response = await client.post("/v1/chat/completions", json=chat, headers=frontend)
        assert response.status_code == 401
        assert response.headers["access-control-allow-origin"] == "http://localhost:3000"
        response = await client.get("/running", headers=frontend | key)
        assert response.headers["access-control-allow-origin"] == "http://localhost:3000"


async def test_clients_that_are_not_browsers_work_everywhere(launch: LaunchFn) -> None:
    ts = await launch(config())
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    async with ts.client() as client:
        # Like curl -d: no content type at all; and like the SDKs.
        response = await client.post("/v1/chat/completions", content=json.dumps(chat))
        assert response.status_code == 200
        response = await client.post("/v1/messages", json=chat | {"max_tokens": 5})
        assert response.status_code == 200
        assert (await client.get("/upstream/m/props")).status_code == 200
        for path in ("/running", "/v1/models", "/logs", "/ui/", "/health"):
            assert (await client.get(path)).status_code == 200, path
        response = await client.post("/models/unload", json={})
        assert response.status_code == 200
        assert "access-control-allow-origin" not in response.headers


async def test_the_openai_sdk_still_works(launch: LaunchFn) -> None:
    ts = await launch(config())
    client = openai.AsyncOpenAI(base_url=f"{ts.url}/v1", api_key="unused")
    try:
        completion = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
        assert completion.choices[0].message.content
        assert [model.id async for model in client.models.list()] == ["m"]
    finally:
        await client.close()


async def test_the_anthropic_sdk_still_works(launch: LaunchFn) -> None:
    ts = await launch(config())
    client = anthropic.AsyncAnthropic(base_url=ts.url, api_key="unused")
    try:
        message = await client.messages.create(
            model="m", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )
        assert message.content
    finally:
        await client.close()


async def test_exposure_without_api_keys_is_warned_about(launch: LaunchFn) -> None:
    exposed = await launch(config(), "--listen", "0.0.0.0:0")
    await exposed.wait_for_output(r"listening on 0\.0\.0\.0:0 without apiKeys")
    keyed = await launch(config("apiKeys: [k]"), "--listen", "0.0.0.0:0")
    local = await launch(config())
    for quiet in (keyed, local):
        async with quiet.client() as client:
            assert (await client.get("/health")).status_code == 200
        assert quiet.count_output("without apiKeys") == 0
