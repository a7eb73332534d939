"""The web UI in a real browser: Playwright driving Debian's Chromium (`scripts/install-browser`)
against a real trioswap with responder models, through the pages' `data-testid`s.

The bridge: these are trio tests (trioswap through conftest's `launch`, side requests through
httpx), while Playwright's async API runs on asyncio. One Chromium per module lives on an
asyncio loop in a thread of its own (`Chromium`); a test hands it coroutines, `await
tab.run(steps)`, and trio waits for each in a worker thread, so trio's tasks (a stream being
read, say) go on meanwhile, and a cancelled test cancels the coroutine. Each test gets a fresh
browser context. Waiting is Playwright's `expect`, which polls; nothing sleeps. What is shown
only for a moment (a state, a growing reply) is recorded in the page by a MutationObserver and
checked afterwards, so no poll can miss it; the page's own timers are moved on with
Playwright's clock where a test depends on them.

Screenshots of every page are written to artifacts/screenshots/ (git-ignored; CI keeps them);
a failed test leaves a screenshot of its page there too.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import Future
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio
from playwright.async_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    async_playwright,
    expect,
)
from playwright.async_api import (
    Error as PlaywrightError,
)

from tests.conftest import RESPONDER, LaunchFn, Trioswap, random_start_port, wait_until

T = TypeVar("T")

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
# How long an action or an `expect` waits: generous for a loaded 2-core machine.
WAIT_MS = 10_000
expect.set_options(timeout=WAIT_MS)

# The responder streams one word per chunk, RATE a second; a reply's words are asked for with
# its `[[text: ...]]` marker, so a test chooses how long a stream lasts.
RATE = 20
QUICK_REPLY = " ".join(f"w{i}" for i in range(RATE))  # about 1 s
ENDLESS_REPLY = " ".join(f"w{i}" for i in range(60 * RATE))  # a minute: always cut short
START_DELAY = 1.0  # the `late` model's start, long enough to be seen starting
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}


def ui_config(top: str = "") -> str:
    return f"""
healthCheckTimeout: 20
startPort: {random_start_port()}
captureBuffer: 5
{top}
models:
  m:
    cmd: {RESPONDER} --port ${{PORT}} --model-id m --ctx-size 4096 --tokens-per-second {RATE}
    promptOptimization: limit_only
  late:
    cmd: {RESPONDER} --port ${{PORT}} --model-id late --startup-delay {START_DELAY}
"""


def asking(text: str, *, stream: bool = False) -> dict[str, object]:
    """A chat request whose reply is `text`."""
    content = f"please [[text: {text}]]"
    return {"model": "m", "stream": stream, "messages": [{"role": "user", "content": content}]}


class Chromium:
    """A headless Chromium whose whole life is one coroutine (`_serve`) on an asyncio loop in a
    thread of its own; trio tests hand that loop coroutines with `run`."""

    def __init__(self) -> None:
        started: Future[tuple[asyncio.AbstractEventLoop, Browser, asyncio.Event]] = Future()
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._serve(started),), name="playwright"
        )
        self._thread.start()
        try:
            self._loop, self.browser, self._closing = started.result()
        except BaseException:
            self._thread.join()
            raise

    @staticmethod
    async def _serve(started: Future[Any]) -> None:
        try:
            async with async_playwright() as playwright:
                # As root, Playwright adds --no-sandbox itself (chromium_sandbox is off).
                browser = await playwright.chromium.launch(executable_path=CHROMIUM)
                try:
                    closing = asyncio.Event()
                    started.set_result((asyncio.get_running_loop(), browser, closing))
                    await closing.wait()
                finally:
                    await browser.close()
        except BaseException as exc:
            if started.done():
                raise
            started.set_exception(exc)  # the launch failed: the fixture says why

    async def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the browser's loop while trio waits in a worker thread."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return await trio.to_thread.run_sync(future.result, abandon_on_cancel=True)
        finally:
            future.cancel()  # a no-op once done; else the coroutine is cancelled

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._closing.set)
        self._thread.join()


class Tab:
    """A page in a fresh browser context; `run(steps)` runs `steps(page)` in the browser."""

    def __init__(self, chromium: Chromium, page: Page) -> None:
        self._chromium = chromium
        self.page = page
        self.errors: list[Exception] = []

        def threw(error: Exception) -> None:  # Playwright tags handlers: no bound methods
            self.errors.append(error)

        page.on("pageerror", threw)

    async def run(self, steps: Callable[[Page], Coroutine[Any, Any, T]]) -> T:
        return await self._chromium.run(steps(self.page))


OpenTab = Callable[..., AbstractAsyncContextManager[Tab]]


@pytest.fixture(scope="module")
def chromium() -> Iterator[Chromium]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: run scripts/install-browser (apt-get install chromium)"
        )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for old in SCREENSHOTS.glob("*.png"):
        old.unlink()  # what the folder shows is this run's
    browser = Chromium()
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture
def open_tab(chromium: Chromium, request: pytest.FixtureRequest) -> OpenTab:
    """`async with open_tab(ts, **context_options) as tab:` a page on trioswap `ts`; a test
    fails if the page threw, and leaves a screenshot when it fails."""

    @asynccontextmanager
    async def opened(ts: Trioswap, **options: Any) -> AsyncIterator[Tab]:
        context: BrowserContext = await chromium.run(
            chromium.browser.new_context(base_url=ts.url, **options)
        )
        try:
            tab = Tab(chromium, await chromium.run(context.new_page()))
            try:
                yield tab
            except BaseException:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    path = SCREENSHOTS / f"failed-{request.node.name}.png"
                    try:
                        await chromium.run(tab.page.screenshot(path=path, full_page=True))
                    except Exception:
                        pass  # the test's own failure is what to report
                raise
            assert not tab.errors, f"the page threw: {tab.errors}"
        finally:
            with trio.CancelScope(shield=True):
                await chromium.run(context.close())

    return opened


async def open_ui(page: Page, path: str) -> None:
    """Open a UI page and wait until its live event stream is connected."""
    response = await page.goto(path)
    assert response is not None and response.status == 200, path
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live")


async def stopped(ts: Trioswap, model: str) -> bool:
    return model not in await ts.states()  # /running leaves stopped models out


async def idle(ts: Trioswap, model: str) -> bool:
    """Whether `model` has no request in flight (every lease returned)."""
    return (await ts.running())[model]["in_flight"] == 0


# Records each state a model's row shows, as the page draws it (window.shownStates).
TRACE_ROW_STATES = """model => {
    window.shownStates = [];
    const rows = document.querySelector('[data-testid="models-rows"]');
    const note = () => {
        const row = [...rows.querySelectorAll('[data-testid="model-row"]')]
            .find((r) => r.dataset.model === model);
        if (row && window.shownStates.at(-1) !== row.dataset.state) {
            window.shownStates.push(row.dataset.state);
        }
    };
    note();
    new MutationObserver(note).observe(rows, { childList: true, subtree: true, attributes: true });
}"""


async def test_a_model_loads_from_the_models_page_and_its_state_changes_live(
    launch: LaunchFn, open_tab: OpenTab
) -> None:
    ts = await launch(ui_config())

    async def steps(page: Page) -> None:
        await page.clock.install()  # page time flows, and can be moved on (below)
        await open_ui(page, "/ui/models")
        row = page.locator('[data-testid="model-row"][data-model="late"]')
        await expect(row).to_have_attribute("data-state", "stopped")
        # A user's pause before clicking: the events sent on connecting are drawn.
        await page.clock.fast_forward(1000)
        await page.evaluate(TRACE_ROW_STATES, "late")
        await row.get_by_test_id("model-load").click()
        await expect(row.get_by_test_id("model-load")).to_be_disabled()
        await expect(row).to_have_attribute("data-state", "ready")
        await expect(row.get_by_test_id("model-pid")).to_have_text(re.compile(r"^\d+$"))
        # Every state was shown, in order, in this same page (a reload would lose the trace).
        assert await page.evaluate("window.shownStates") == ["stopped", "starting", "ready"]

    async with open_tab(ts) as tab:
        await tab.run(steps)
    assert (await ts.states())["late"] == "ready"


async def test_a_state_change_inside_the_refresh_throttle_is_not_lost(
    launch: LaunchFn, open_tab: OpenTab
) -> None:
    # `stubborn` ignores SIGTERM, so it is surely still stopping when the table is first read.
    stubborn = f"""
  stubborn:
    cmd: {RESPONDER} --port ${{PORT}} --model-id stubborn --ignore-sigterm
    unloadTimeout: 1
"""
    ts = await launch(ui_config() + stubborn)
    async with ts.client() as client:
        assert (await client.get("/upstream/stubborn/health")).status_code == 200

    async def unload(page: Page) -> None:
        await page.clock.install()
        await open_ui(page, "/ui/models")
        row = page.locator('[data-testid="model-row"][data-model="stubborn"]')
        await expect(row).to_have_attribute("data-state", "ready")
        await page.clock.fast_forward(1000)
        await page.clock.pause_at(await page.evaluate("Date.now() + 1000"))
        await row.get_by_test_id("model-unload").click()

    async def shown(page: Page) -> None:
        await page.clock.run_for(1000)
        row = page.locator('[data-testid="model-row"][data-model="stubborn"]')
        await expect(row).to_have_attribute("data-state", "stopped", timeout=1500)

    async with open_tab(ts) as tab:
        await tab.run(unload)
        await wait_until(lambda: stopped(ts, "stubborn"))
        await tab.run(shown)


# Records each (state, text) the Playground's latest reply shows (window.shownReplies).
TRACE_REPLIES = """() => {
    window.shownReplies = [];
    const box = document.querySelector('[data-testid="chat-messages"]');
    new MutationObserver(() => {
        const reply = [...box.querySelectorAll('[data-role="assistant"]')].at(-1);
        if (!reply) return;
        const text = reply.querySelector('[data-testid="chat-content"]').textContent;
        const last = window.shownReplies.at(-1);
        if (!last || last[0] !== reply.dataset.state || last[1] !== text) {
            window.shownReplies.push([reply.dataset.state, text]);
        }
    }).observe(box, { childList: true, subtree: true, characterData: true, attributes: true });
}"""


async def test_the_playground_streams_a_reply_and_stop_cuts_a_slow_one(
    launch: LaunchFn, open_tab: OpenTab
) -> None:
    ts = await launch(ui_config())
    replies = '[data-testid="chat-message"][data-role="assistant"]'

    async def streamed(page: Page) -> None:
        await open_ui(page, "/ui/playground")
        await expect(page.get_by_test_id("pg-model")).to_be_enabled()
        await page.get_by_test_id("pg-model").select_option("m")
        await page.get_by_test_id("chat-input").fill(f"[[text: {QUICK_REPLY}]]")
        await page.evaluate(TRACE_REPLIES)
        await page.locator("#chat-send").click()
        reply = page.locator(replies).first
        await expect(reply).to_have_attribute("data-state", "done")
        await expect(reply.get_by_test_id("chat-content")).to_have_text(QUICK_REPLY)
        await expect(reply.get_by_test_id("chat-meta")).to_contain_text(f"{RATE} tokens")
        # While it streamed, the reply was drawn again and again, growing.
        shown: list[list[str]] = await page.evaluate("window.shownReplies")
        assert [state for state, _ in shown] == ["streaming"] * (len(shown) - 1) + ["done"]
        growing = [text for state, text in shown if state == "streaming" and text]
        assert len(growing) > 1 and growing == sorted(growing, key=len), growing
        assert all(QUICK_REPLY.startswith(text) for text in growing), growing

    async def stopped_early(page: Page) -> str:
        await page.get_by_test_id("chat-input").fill(f"[[text: {ENDLESS_REPLY}]]")
        await page.locator("#chat-send").click()
        reply = page.locator(replies).nth(1)
        await expect(reply.get_by_test_id("chat-content")).to_have_text(re.compile(r"\S"))
        await page.locator("#chat-stop").click()
        await expect(reply).to_have_attribute("data-state", "stopped")
        await expect(page.locator("#chat-send")).to_be_enabled()
        await expect(page.locator("#chat-stop")).to_be_disabled()
        return await reply.get_by_test_id("chat-content").inner_text()

    async with open_tab(ts) as tab:
        await tab.run(streamed)
        cut = await tab.run(stopped_early)
    assert ENDLESS_REPLY.startswith(cut) and len(cut) < len(ENDLESS_REPLY)
    # The browser hung up, and trioswap let go of the upstream request.
    await wait_until(lambda: idle(ts, "m"))


async def test_a_policy_set_in_settings_is_used_by_the_next_request(
    launch: LaunchFn, open_tab: OpenTab
) -> None:
    ts = await launch(ui_config())
    row = '[data-testid="settings-row"][data-model="m"]'

    async def choose(page: Page) -> None:
        await open_ui(page, "/ui/settings")
        settings = page.locator(row)
        await expect(settings.get_by_test_id("policy-select")).to_be_enabled()
        await expect(settings.get_by_test_id("policy-status")).to_have_text("now limit_only")
        await expect(settings.get_by_test_id("snapshot")).to_have_text("none yet")
        await settings.get_by_test_id("policy-select").select_option("always")
        await expect(settings.get_by_test_id("policy-status")).to_have_text("set here")

    async def shown(page: Page, before: int, after: int) -> None:
        settings = page.locator(row)
        # The page was not reloaded: the snapshot arrives with the optimizer's event.
        tokens = settings.get_by_test_id("snapshot-tokens")
        await expect(tokens).to_have_text(f"{before:,} → {after:,} tokens")
        await settings.get_by_test_id("snapshot-show").click()
        body = page.get_by_test_id("snapshot-body")
        await expect(page.get_by_test_id("snapshot-dialog")).to_be_visible()
        await expect(body.locator("dt", has_text="Policy").locator("+ dd")).to_have_text("always")

    async with open_tab(ts) as tab:
        await tab.run(choose)
        async with ts.client() as client:
            response = await client.post("/v1/chat/completions", json=asking("optimized"))
            assert response.status_code == 200, response.text
            latest = await client.get("/api/model/m/prompt-optimization/latest")
        snapshot = latest.json()
        assert snapshot["policy"] == "always"
        tokens = snapshot["tokens"]
        await tab.run(lambda page: shown(page, tokens["before"], tokens["after"]))


async def test_a_log_line_appears_live_on_the_logs_page(
    launch: LaunchFn, open_tab: OpenTab
) -> None:
    ts = await launch(ui_config())
    marker = f"marker-{secrets.token_hex(4)}"
    said = '[data-testid="log-panel"] .log-line'

    async def opened(page: Page) -> None:
        await open_ui(page, "/ui/logs")
        await expect(page.get_by_test_id("log-status")).to_have_text("live")
        await expect(page.locator(said).first).to_be_visible()  # the history came
        await expect(page.locator(said, has_text=marker)).to_have_count(0)

    async def seen(page: Page) -> None:
        # The model server logs each request it answers: "[m] GET /marker-… -> 404".
        line = page.locator(said, has_text=marker)
        await expect(line).to_have_count(1)
        await expect(line).to_contain_text(f"[m] GET /{marker}")

    async with open_tab(ts) as tab:
        await tab.run(opened)
        async with ts.client() as client:
            assert (await client.get(f"/upstream/m/{marker}")).status_code == 404
        await tab.run(seen)


async def test_a_capture_opens_from_the_activity_page(launch: LaunchFn, open_tab: OpenTab) -> None:
    ts = await launch(ui_config())
    answer = f"captured {secrets.token_hex(4)} reply"
    async with ts.client() as client:
        response = await client.post("/v1/chat/completions", json=asking(answer, stream=True))
        assert response.status_code == 200 and "[DONE]" in response.text

    async def steps(page: Page) -> None:
        await open_ui(page, "/ui/activity")
        row = page.get_by_test_id("activity-row").filter(has=page.get_by_test_id("capture-open"))
        await expect(row).to_have_count(1)
        await row.get_by_test_id("capture-open").click()
        dialog = page.get_by_test_id("capture-dialog")
        await expect(dialog).to_be_visible()
        request = dialog.get_by_test_id("capture-request")
        await expect(request).to_contain_text("POST /v1/chat/completions")
        await expect(request.get_by_test_id("capture-request-body")).to_contain_text(answer)
        await dialog.get_by_test_id("capture-tab-response").click()
        response = dialog.get_by_test_id("capture-response")
        await expect(response).to_be_visible()
        await expect(response).to_contain_text("status 200")
        await expect(response.get_by_test_id("capture-response-body")).to_contain_text("[DONE]")
        await dialog.get_by_test_id("capture-tab-rebuilt").click()
        rebuilt = dialog.get_by_test_id("capture-rebuilt-text")
        await expect(rebuilt).to_be_visible()
        await expect(rebuilt).to_have_text(answer)
        await dialog.get_by_test_id("capture-close").click()
        await expect(dialog).to_be_hidden()

    async with open_tab(ts) as tab:
        await tab.run(steps)


async def test_an_inflight_request_is_cancelled_from_the_activity_page(
    launch: LaunchFn, open_tab: OpenTab
) -> None:
    ts = await launch(ui_config())
    said: list[str] = []  # the reply's words as they arrive
    finished: list[str] = []  # "[DONE]", if the stream got that far
    errors: list[str] = []  # the error event that ends a cancelled stream
    flowing, ended = trio.Event(), trio.Event()

    async def slow_stream() -> None:
        async with ts.client() as client:
            request = client.build_request(
                "POST", "/v1/chat/completions", json=asking(ENDLESS_REPLY, stream=True)
            )
            response = await client.send(request, stream=True)
            try:
                async for line in response.aiter_lines():
                    if line.startswith("data: {"):
                        event = json.loads(line.removeprefix("data: "))
                        if "error" in event:
                            errors.append(event["error"]["message"])
                            continue
                        for choice in event["choices"]:
                            said.append(choice["delta"].get("content") or "")
                        if len(said) > 1:
                            flowing.set()
                    elif line == "data: [DONE]":
                        finished.append(line)
            finally:
                await response.aclose()
        ended.set()

    async def opened(page: Page) -> None:
        await open_ui(page, "/ui/activity")
        await expect(page.get_by_test_id("inflight-count")).to_have_text("0")

    async def cancelled(page: Page) -> None:
        row = page.get_by_test_id("inflight-row")
        await expect(row).to_have_count(1)
        await expect(row.locator("td").nth(2)).to_have_text("m")
        await expect(row.locator("td").nth(3)).to_have_text("POST /v1/chat/completions")
        await row.get_by_test_id("inflight-cancel").click()
        await expect(row).to_have_count(0)
        await expect(page.get_by_test_id("inflight-count")).to_have_text("0")

    async with open_tab(ts) as tab, trio.open_nursery() as nursery:
        await tab.run(opened)
        nursery.start_soon(slow_stream)
        with trio.fail_after(15):
            await flowing.wait()  # tokens are streaming
        await tab.run(cancelled)
        with trio.fail_after(10):
            await ended.wait()
    text = "".join(said)
    assert not finished and ENDLESS_REPLY.startswith(text) and len(text) < len(ENDLESS_REPLY)
    # The stream ends with an error event that says why, in the client's family.
    assert len(errors) == 1 and "was cancelled (POST /api/inflight/" in errors[0]
    await wait_until(lambda: idle(ts, "m"))


async def test_with_api_keys_the_ui_opens_only_with_the_key(
    launch: LaunchFn, open_tab: OpenTab
) -> None:
    ts = await launch(ui_config(top="apiKeys: [sk-browser]"))

    async def refused(page: Page) -> None:
        async with page.expect_response(lambda r: r.url.endswith("/ui/models")) as answer:
            try:
                await page.goto("/ui/models")
            except PlaywrightError as exc:
                # Headless Chromium ends a navigation that asked for credentials it was not
                # given as a network error, after the 401.
                assert "ERR_INVALID_AUTH_CREDENTIALS" in str(exc)
        response = await answer.value
        assert response.status == 401
        assert (await response.header_value("www-authenticate") or "").startswith("Basic")

    async def admitted(page: Page) -> None:
        await open_ui(page, "/ui/models")  # the live events are let in too
        row = page.locator('[data-testid="model-row"][data-model="m"]')
        await expect(row).to_have_attribute("data-state", "stopped")

    async with open_tab(ts) as tab:
        await tab.run(refused)
    wrong = {"username": "anyone", "password": "sk-wrong"}
    async with open_tab(ts, http_credentials=wrong) as tab:
        await tab.run(refused)
    right = {"username": "anyone", "password": "sk-browser"}
    async with open_tab(ts, http_credentials=right) as tab:
        await tab.run(admitted)


# Every page, and what shows that it has drawn what it fetched.
PAGES: list[tuple[str, str, Callable[[Page], Locator]]] = [
    ("models", "/ui/models", lambda p: p.locator('[data-testid="model-row"][data-model="m"]')),
    ("model", "/ui/models/m", lambda p: p.get_by_test_id("model-details")),
    ("activity", "/ui/activity", lambda p: p.get_by_test_id("activity-row").first),
    ("settings", "/ui/settings", lambda p: p.get_by_test_id("snapshot-tokens").first),
    ("logs", "/ui/logs", lambda p: p.locator('[data-testid="log-panel"] .log-line').first),
    ("performance", "/ui/performance", lambda p: p.get_by_test_id("performance-status")),
]


async def shoot(page: Page, name: str) -> None:
    await page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


async def chat_in_playground(page: Page, text: str) -> None:
    await open_ui(page, "/ui/playground")
    await expect(page.get_by_test_id("pg-model")).to_be_enabled()
    await page.get_by_test_id("pg-model").select_option("m")
    await page.get_by_test_id("chat-input").fill(f"[[text: {text}]]")
    await page.locator("#chat-send").click()
    reply = page.locator('[data-testid="chat-message"][data-role="assistant"]').last
    await expect(reply).to_have_attribute("data-state", "done")


async def test_screenshots_of_every_page(launch: LaunchFn, open_tab: OpenTab) -> None:
    ts = await launch(ui_config())
    async with ts.client() as client:
        for stream in (False, True):
            response = await client.post(
                "/v1/chat/completions", json=asking("hello", stream=stream)
            )
            assert response.status_code == 200

    async def every_page(page: Page) -> str:
        for name, path, drawn in PAGES:
            await open_ui(page, path)
            await expect(drawn(page)).to_be_visible()
            if name == "performance":
                await expect(drawn(page)).not_to_have_text("loading…")
            await shoot(page, name)
        await chat_in_playground(page, "Hello from the playground")
        await shoot(page, "playground")
        await open_ui(page, "/ui/models")
        return await page.evaluate("getComputedStyle(document.body).backgroundColor")

    async def dark(page: Page) -> str:
        await open_ui(page, "/ui/models")
        await expect(PAGES[0][2](page)).to_be_visible()
        await shoot(page, "models-dark")
        return await page.evaluate("getComputedStyle(document.body).backgroundColor")

    async def phone(page: Page) -> None:
        await chat_in_playground(page, "Hello from a phone")
        await shoot(page, "playground-phone")
        # Usable on a phone: nothing wider than the screen, the menu behind its button.
        assert await page.evaluate("document.documentElement.scrollWidth <= innerWidth")
        await expect(page.get_by_test_id("nav")).to_be_hidden()
        await page.get_by_test_id("nav-toggle").click()
        await expect(page.get_by_test_id("nav")).to_be_visible()
        await shoot(page, "playground-phone-menu")

    async with open_tab(ts, color_scheme="light") as tab:
        light_background = await tab.run(every_page)
    async with open_tab(ts, color_scheme="dark") as tab:
        dark_background = await tab.run(dark)
    assert light_background != dark_background
    async with open_tab(ts, **PHONE) as tab:
        await tab.run(phone)
    shot = {path.stem for path in SCREENSHOTS.glob("*.png")}
    assert {name for name, _, _ in PAGES} | {"playground", "models-dark"} <= shot
