"""The browser SDK and the demo app in headless Chromium (Debian's, fake camera and
microphone), as a chat app's users would meet them: presence, typing and messages between
two people; a 1:1 call ringing both of bob's pages, answered on one; a page refresh in the
middle of a call; the demo at desktop and phone sizes with no console errors and no
failed requests (screenshots kept as test artifacts)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from tests.message_backend import MessageBackend
from tests.test_sfu_browser import ARGS, CHROMIUM

STATE_KINDS = ("memory",)
pytestmark = pytest.mark.usefixtures("served_collector")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
#: Real-life timers where a browser must act within them; short ones where a test waits.
TIMINGS = {
    "demo_tokens": True,
    "call_grace_period": 20.0,
    "ring_timeout": 30.0,
    "typing_timeout": 1.5,
    "typing_throttle": 0.5,
    "presence_grace": 0.3,
}


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            await b.close()


class Watched:
    """A page whose console errors, page errors and failed requests are kept."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.problems: list[str] = []
        page.on(
            "console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}")
        )
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: self.problems.append(f"failed: {r.url}"))
        page.on(
            "response",
            lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status}: {r.url}"),
        )


async def sign_in(context: BrowserContext, base: str, name: str) -> Watched:
    page = Watched(await context.new_page())
    await page.page.goto(f"{base}/demo")
    await page.page.fill("#name", name)
    await page.page.click("#signin button")
    await page.page.wait_for_function("window.appReady === true", timeout=20000)
    return page


async def eventually(page: Page, expression: str, timeout: float = 15.0) -> Any:
    return await page.wait_for_function(expression, timeout=timeout * 1000)


def contact_dot(user: str, status: str) -> str:
    selector = f'#contacts li[data-user="{user}"] .dot'
    return f"document.querySelector('{selector}')?.classList.contains('{status}')"


async def test_presence_typing_and_messages_between_two_people(
    hub_factory: Any, backend: MessageBackend, browser: Browser
) -> None:
    hub = await hub_factory(**TIMINGS, message_backend_url=backend.url)
    alice = await sign_in(await browser.new_context(), hub.base, "Alice")
    bob = await sign_in(await browser.new_context(), hub.base, "Bob")
    # Each sees the other, by name, online.
    await eventually(alice.page, contact_dot("u-bob", "online"))
    await eventually(bob.page, contact_dot("u-alice", "online"))
    assert await alice.page.inner_text('#contacts li[data-user="u-bob"] .name') == "Bob"

    await bob.page.select_option("#status", "away")
    await eventually(alice.page, contact_dot("u-bob", "away"))

    await alice.page.click('#contacts li[data-user="u-bob"]')
    await bob.page.click('#contacts li[data-user="u-alice"]')
    await alice.page.type("#text", "hel")
    await eventually(bob.page, "document.querySelector('#typing').textContent.includes('Alice')")
    # Alice stops typing without sending: the indicator goes away by itself.
    await eventually(bob.page, "document.querySelector('#typing').textContent === ''", 10)

    await alice.page.fill("#text", "hello bob")
    await alice.page.press("#text", "Enter")
    await eventually(
        bob.page,
        "[...document.querySelectorAll('.msg')].some(m => m.textContent.includes('hello bob'))",
    )
    await eventually(
        alice.page,
        "[...document.querySelectorAll('.msg.mine')].some(m => m.textContent.includes('sent'))",
    )
    assert [m["content"] for m in backend.persisted] == ["hello bob"]
    reply = await bob.page.evaluate("sb.sendMessage(app.chats.get('u-alice').roomId, 'hi alice')")
    assert reply["messageId"] == "msg_2"
    await eventually(
        alice.page,
        "[...document.querySelectorAll('.msg')].some(m => m.textContent.includes('hi alice'))",
    )
    for page in (alice, bob):
        assert page.problems == []


async def frames_from(page: Page, user: str) -> int:
    stats = await page.evaluate("window.activeCall ? window.activeCall.stats() : {}")
    video = (stats.get(user) or {}).get("video") or {}
    return int(video.get("framesDecoded", 0))


async def decoding(page: Page, user: str, timeout: float = 25.0) -> None:
    """Video frames from ``user`` keep being decoded on ``page``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    first = await frames_from(page, user)
    while (now := await frames_from(page, user)) < max(first, 1) + 10:
        if loop.time() >= deadline:
            log = await page.inner_text("#log")
            stats = await page.evaluate("window.activeCall ? window.activeCall.stats() : {}")
            raise AssertionError(f"{now} frames from {user}; log: {log}; stats: {stats}")
        await asyncio.sleep(0.3)


async def test_a_call_rings_every_device_and_survives_a_refresh(
    hub_factory: Any, browser: Browser
) -> None:
    hub = await hub_factory(**TIMINGS)
    alice = await sign_in(await browser.new_context(), hub.base, "Alice")
    bob_context = await browser.new_context()
    bob1 = await sign_in(bob_context, hub.base, "Bob")
    bob2 = Watched(await bob_context.new_page())  # a second device (another tab)
    await bob2.page.goto(f"{hub.base}/demo")
    await bob2.page.fill("#name", "Bob")
    await bob2.page.click("#signin button")
    await bob2.page.wait_for_function("window.appReady === true", timeout=20000)
    await eventually(alice.page, contact_dot("u-bob", "online"))

    await alice.page.click('#contacts li[data-user="u-bob"]')
    await alice.page.click("#video-call")
    for bob in (bob1, bob2):
        await eventually(bob.page, "!document.querySelector('#ringing').hidden")
        assert "Alice is calling" in await bob.page.inner_text("#ringing-text")
    await bob1.page.click("#accept")
    # The other device stops ringing; the call connects with video both ways.
    await eventually(bob2.page, "document.querySelector('#ringing').hidden")
    assert await bob2.page.evaluate("window.activeCall") is None
    await eventually(alice.page, "window.activeCall?.state === 'active'")
    await decoding(alice.page, "u-bob")
    await decoding(bob1.page, "u-alice")

    # Alice refreshes her page: the call resumes and video flows again, both ways.
    await alice.page.reload()
    await alice.page.wait_for_function("window.appReady === true", timeout=20000)
    await eventually(alice.page, "window.activeCall?.state === 'active'", 20)
    await decoding(alice.page, "u-bob", 30)
    await decoding(bob1.page, "u-alice", 30)
    # And bob, the callee, too.
    await bob1.page.reload()
    await bob1.page.wait_for_function("window.appReady === true", timeout=20000)
    await eventually(bob1.page, "window.activeCall?.state === 'active'", 20)
    await decoding(bob1.page, "u-alice", 30)
    await decoding(alice.page, "u-bob", 30)

    # Hanging up ends it on both sides.
    await alice.page.click("#hangup")
    await eventually(
        bob1.page, "window.activeCall === null && document.querySelector('#incall').hidden"
    )
    await eventually(alice.page, "window.activeCall === null")
    for page in (alice, bob1, bob2):
        assert page.problems == []


@pytest.mark.parametrize(("width", "height"), [(1280, 800), (390, 844)])
async def test_the_demo_fits_desktop_and_phone_without_errors(
    hub_factory: Any, backend: MessageBackend, browser: Browser, width: int, height: int
) -> None:
    hub = await hub_factory(**TIMINGS, message_backend_url=backend.url)
    pages = []
    for name in ("Carol", "Dave"):
        context = await browser.new_context(viewport={"width": width, "height": height})
        pages.append(await sign_in(context, hub.base, name))
    carol, dave = pages
    await eventually(carol.page, contact_dot("u-dave", "online"))
    await carol.page.click('#contacts li[data-user="u-dave"]')
    await carol.page.fill("#text", "on a small screen too")
    await carol.page.press("#text", "Enter")
    await eventually(dave.page, "document.querySelector('#contacts .badge')?.textContent === '1'")
    # Nothing wider than the screen: no sideways scrolling.
    overflow = await carol.page.evaluate("document.documentElement.scrollWidth - innerWidth")
    assert overflow <= 0
    ARTIFACTS.mkdir(exist_ok=True)
    await carol.page.screenshot(path=ARTIFACTS / f"demo-{width}x{height}.png", full_page=True)
    with contextlib.suppress(Exception):
        await carol.page.click("#video-call")
        await eventually(carol.page, "!document.querySelector('#incall').hidden")
        await carol.page.screenshot(path=ARTIFACTS / f"demo-call-{width}x{height}.png")
    for page in pages:
        assert page.problems == []


async def test_declined_and_unanswered_calls_end_on_both_sides(
    hub_factory: Any, browser: Browser
) -> None:
    hub = await hub_factory(**{**TIMINGS, "ring_timeout": 2.0})
    alice = await sign_in(await browser.new_context(), hub.base, "Alice")
    bob = await sign_in(await browser.new_context(), hub.base, "Bob")
    await eventually(alice.page, contact_dot("u-bob", "online"))
    record = """(call) => {
        window.seen = [];
        for (const t of ["ringing", "accepted", "rejected", "cancelled", "missed", "ended"])
            call.addEventListener(t, (e) => window.seen.push([t, e.detail.reason || null]));
    }"""
    await bob.page.evaluate(
        f"sb.addEventListener('incomingcall', (e) => ({record})(e.detail.call))"
    )
    await alice.page.evaluate(
        f"sb.call('u-bob', {{ video: false }}).then((call) => ({record})(call))"
    )
    await eventually(bob.page, "!document.querySelector('#ringing').hidden")
    await bob.page.click("#decline")
    await eventually(alice.page, "window.seen.some(([t]) => t === 'ended')")
    assert await alice.page.evaluate("window.seen") == [
        ["ringing", None],
        ["rejected", None],
        ["ended", "rejected"],
    ]
    # Nobody answers: the callee's devices get "missed", the caller "ended" (no_answer).
    await alice.page.evaluate(
        f"sb.call('u-bob', {{ video: false }}).then((call) => ({record})(call))"
    )
    await eventually(bob.page, "!document.querySelector('#ringing').hidden")
    await eventually(bob.page, "document.querySelector('#ringing').hidden", 10)
    assert await bob.page.evaluate("window.seen") == [["missed", "missed"], ["ended", "missed"]]
    await eventually(alice.page, "window.seen.some(([t]) => t === 'ended')")
    assert await alice.page.evaluate("window.seen") == [["ringing", None], ["ended", "no_answer"]]
    for page in (alice, bob):
        assert page.problems == []


async def test_a_small_mesh_call_connects_everyone_and_toggles_reach_all(
    hub_factory: Any, browser: Browser
) -> None:
    hub = await hub_factory(**TIMINGS)
    alice, bob, carol = [
        await sign_in(await browser.new_context(), hub.base, name)
        for name in ("Alice", "Bob", "Carol")
    ]
    await eventually(alice.page, contact_dot("u-carol", "online"))
    await alice.page.evaluate(
        "sb.call(['u-bob', 'u-carol'], { video: true }).then((c) => { window.activeCall = c; })"
    )
    for page in (bob, carol):
        await eventually(page.page, "!document.querySelector('#ringing').hidden")
        await page.page.click("#accept")
    # Everyone decodes everyone: alice-bob, alice-carol and bob-carol.
    for page, others in (
        (alice, ("u-bob", "u-carol")),
        (bob, ("u-alice", "u-carol")),
        (carol, ("u-alice", "u-bob")),
    ):
        for other in others:
            await decoding(page.page, other)
    # Bob mutes his microphone: both others are told.
    await bob.page.click("#mic")
    for page in (alice, carol):
        await eventually(page.page, "window.activeCall.participants.get('u-bob')?.audio === false")
    await bob.page.click("#hangup")
    await eventually(alice.page, "window.activeCall.participants.get('u-bob')?.state === 'left'")
    await decoding(alice.page, "u-carol")  # the call goes on without bob
    for page in (alice, bob, carol):
        assert page.problems == []
