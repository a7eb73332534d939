"""The web UI under /ui: pages, the models fragment, vendored assets, the path prefix, the
Basic-auth prompt, and escaping of what models and clients name. The pages' scripts are driven
in a real browser elsewhere; here trioswap runs for real and httpx reads what it serves."""

from __future__ import annotations

import base64
import hashlib
import re
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from tests.conftest import RESPONDER, LaunchFn, random_start_port
from trioswap.web.ui import NAV, base_path

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["/ui/", *(f"/ui/{page}" for page, _ in NAV), "/ui/models/m"]
HOSTILE = "<script>alert(1)</script>"


def ui_config(top: str = "") -> str:
    return f"""
startPort: {random_start_port()}
{top}
models:
  m:
    cmd: {RESPONDER} --port ${{PORT}} --model-id m
    name: "{HOSTILE}"
    aliases: [emm]
    capabilities:
      in: [text]
      out: [text, audio]
  "odd<b>":
    cmd: {RESPONDER} --port ${{PORT}} --model-id odd
peers:
  office:
    proxy: http://127.0.0.1:9
    models: [far]
"""


class Links(HTMLParser):
    """Every URL a page points at (href, src, hx-get, action) and its data-base."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.base: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src", "hx-get", "action") and value is not None:
                self.urls.append(value)
            if tag == "html" and name == "data-base":
                self.base = value


def links_of(page: str) -> Links:
    parser = Links()
    parser.feed(page)
    return parser


def assert_page(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text[:500]
    assert response.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert 'data-testid="nav"' in response.text
    for page, label in NAV:
        assert f'data-nav="{page}"' in response.text and f">{label}</a>" in response.text


async def test_pages_fragment_and_assets(launch: LaunchFn) -> None:
    ts = await launch(ui_config())
    async with ts.client() as client:
        for path in ("/", "/ui"):
            response = await client.get(path)
            assert response.status_code == 302 and response.headers["location"] == "/ui/"

        assets: set[str] = set()
        for path in PAGES:
            response = await client.get(path)
            assert_page(response)
            links = links_of(response.text)
            assert links.base == ""
            assert all(url.startswith("/ui/") for url in links.urls), links.urls
            assets.update(
                url for url in links.urls if url.startswith(("/ui/static/", "/ui/vendor/"))
            )
            # A model's name and an id with markup in it are text, never markup.
            assert HOSTILE not in response.text and "odd<b>" not in response.text

        # Every file a page names is served, with its type; unchanged files are not sent again.
        assert "/ui/vendor/htmx-2.0.11/htmx.min.js" in assets
        assert "/ui/vendor/uplot-1.6.32/uPlot.iife.min.js" in assets
        for url in sorted(assets):
            response = await client.get(url)
            assert response.status_code == 200, url
            kind = response.headers["content-type"]
            if url.endswith(".js"):
                assert kind == "text/javascript; charset=utf-8", url
            elif url.endswith(".css"):
                assert kind == "text/css; charset=utf-8", url
            again = await client.get(url, headers={"If-None-Match": response.headers["etag"]})
            assert again.status_code == 304 and again.content == b""
        licence = await client.get("/ui/vendor/htmx-2.0.11/LICENSE")
        assert licence.headers["content-type"] == "text/plain; charset=utf-8"
        assert (await client.get("/ui/static/js/nothing.js")).status_code == 404
        assert (await client.get("/ui/static/../templates/base.html")).status_code == 404
        nothing = await client.get("/ui/nothing/here")
        assert nothing.status_code == 404 and nothing.headers["content-type"].startswith(
            "text/html"
        )

        # The models table: local models with their buttons, the peer's read-only.
        page = (await client.get("/ui/models")).text
        row = re.search(r'<tr data-testid="model-row" data-model="m".*?</tr>', page, re.S)
        assert row and 'data-state="stopped"' in row[0]
        assert 'data-testid="model-load"' in row[0] and 'data-testid="model-unload"' in row[0]
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in row[0]
        peer = re.search(r'<tr data-testid="model-row" data-model="office/far".*?</tr>', page, re.S)
        assert peer and "read-only" in peer[0] and "model-load" not in peer[0]
        assert 'data-model="odd&lt;b&gt;"' in page

        # Loading the model shows in the fragment htmx refreshes the table with.
        assert (await client.get("/upstream/m/health")).status_code == 200
        fragment = await client.get("/ui/fragments/models", params={"model": "m"})
        assert fragment.status_code == 200 and fragment.text.count('data-testid="model-row"') == 1
        assert 'data-state="ready"' in fragment.text
        assert re.search(r'data-testid="model-pid">\d+<', fragment.text)
        # Unloading is answered once the model is stopped.
        assert (await client.post("/api/models/unload/emm")).status_code == 200
        fragment = await client.get("/ui/fragments/models", params={"model": "m"})
        assert 'data-state="stopped"' in fragment.text

        odd = await client.get("/ui/models/odd%3Cb%3E")
        assert_page(odd)
        assert '<h1 class="model-title">odd&lt;b&gt;</h1>' in odd.text
        alias = await client.get("/ui/models/emm")
        assert_page(alias)
        assert re.search(r'id="model-page" data-model="m"', alias.text)
        missing = await client.get(f"/ui/models/{HOSTILE}")
        assert missing.status_code == 404 and HOSTILE not in missing.text

        settings = (await client.get("/ui/settings")).text
        assert settings.count('data-testid="policy-select"') == 2
        assert settings.count('data-testid="ctx-input"') == 2
        assert "office/far" in settings  # named as set on its peer, with no controls

        # Behind a proxy: every link and asset under its prefix, the redirect too.
        behind = {"X-Forwarded-Prefix": "/proxy"}
        response = await client.get("/", headers=behind)
        assert response.headers["location"] == "/proxy/ui/"
        for path in PAGES:
            response = await client.get(path, headers=behind)
            assert_page(response)
            links = links_of(response.text)
            assert links.base == "/proxy"
            assert links.urls and all(url.startswith("/proxy/") for url in links.urls), links.urls
        fragment = await client.get("/ui/fragments/models", headers=behind)
        assert all(url.startswith("/proxy/") for url in links_of(fragment.text).urls)

        # A prefix that is not a plain path is ignored.
        for bad in (
            "https://evil.example",
            "//evil.example",
            '/a"b',
            "/a'b",
            "/../x",
            "/%2e%2e",
            "/a b",
            "/a<b",
        ):
            response = await client.get("/ui/models", headers={"X-Forwarded-Prefix": bad})
            assert_page(response)
            links = links_of(response.text)
            assert links.base == "" and all(url.startswith("/ui/") for url in links.urls), bad


async def test_a_browser_is_asked_for_the_key_and_gets_in_with_basic_auth(
    launch: LaunchFn,
) -> None:
    ts = await launch(ui_config(top="apiKeys: [sk-ui]"))
    async with ts.client() as client:
        for path in ("/ui/models", "/ui/vendor/htmx-2.0.11/htmx.min.js", "/"):
            response = await client.get(path)
            assert response.status_code == 401
            assert response.headers["www-authenticate"].startswith("Basic")
        wrong = base64.b64encode(b"anyone:sk-wrong").decode()
        response = await client.get("/ui/models", headers={"Authorization": f"Basic {wrong}"})
        assert response.status_code == 401
        right = base64.b64encode(b"anyone:sk-ui").decode()
        response = await client.get("/ui/models", headers={"Authorization": f"Basic {right}"})
        assert_page(response)
        response = await client.get("/", headers={"Authorization": "Bearer sk-ui"})
        assert response.status_code == 302


@pytest.mark.parametrize(
    ("forwarded", "root_path", "expected"),
    [
        (None, "", ""),
        ("/proxy", "", "/proxy"),
        ("/proxy/", "", "/proxy"),
        ("/a/b-c_d.e~f", "", "/a/b-c_d.e~f"),
        ("/", "/root", ""),
        (None, "/root", "/root"),
        ("https://evil.example", "/root", "/root"),
        ("//evil.example", "", ""),
        ("/a/../b", "", ""),
        ("/./a", "", ""),
        ("/%2e%2e", "", ""),
        ('/a"b', "", ""),
        ("/a'b", "", ""),
        ("/a\\b", "", ""),
        ("javascript:alert(1)", "", ""),
        ("/" + "a" * 300, "", ""),
        ("", "", ""),
    ],
)
def test_base_path_takes_only_plain_paths(
    forwarded: str | None, root_path: str, expected: str
) -> None:
    assert base_path(forwarded, root_path) == expected


def test_vendored_files_match_their_recorded_checksums() -> None:
    vendor = ROOT / "static_ui" / "vendor"
    recorded = re.findall(r"^([0-9a-f]{64})  (\S+/\S+)$", (vendor / "README.md").read_text(), re.M)
    assert len(recorded) == 5
    for digest, name in recorded:
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name
