"""
The web page in a real browser: headless Chromium logs in, reads a delivered
message (its HTML in the sandboxed frame, with no script run), sends a
message, and sees it arrive through the live event stream.

Skipped, with the reason, where Chromium or chromedriver is missing.  Set
``TWISTEDMAIL_SCREENSHOT=/path.png`` to keep a screenshot of the page.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet.threads import deferToThread

from tests.http.http_harness import ALICE, PASSWORDS, Server, message, start_server
from tests.http.http_webdriver import Browser, missing

#: pytest_twisted.ensureDeferred, typed (the package has no type hints).
ensure_deferred: Callable[[Callable[..., Any]], Callable[..., Any]] = pytest_twisted.ensureDeferred

pytestmark = pytest.mark.skipif(missing() is not None, reason=str(missing()))

HOSTILE_HTML = (
    b"From: Carol <carol@remote.test>\r\nTo: alice@example.test\r\nSubject: Newsletter\r\n"
    b"Date: Fri, 27 Nov 2026 07:00:00 +0000\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n\r\n"
    b"<h1>Weekly news</h1><p>Read <b>this</b>.</p>"
    b"<script>parent.document.title='pwned'</script>"
    b'<img src="https://tracker.test/p.gif" onerror="parent.document.title=\'pwned\'">\r\n'
)


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Server]:
    yield from start_server("memory", tmp_path)


def drive(base: str, screenshot: str) -> dict[str, Any]:
    """The whole browser session; runs in a thread."""
    browser = Browser()
    seen: dict[str, Any] = {}
    try:
        browser.go(base + "/")
        browser.wait_for("!document.getElementById('login-view').hidden")
        browser.type("#login-address", ALICE)
        browser.type("#login-password", PASSWORDS[ALICE])
        browser.click("#login-submit")
        browser.wait_for("document.querySelectorAll('.message-row').length === 2")
        seen["unread_badge"] = browser.text("#mailboxes li.current .count")
        # Read the plain-text message delivered earlier.
        browser.click(".message-row:nth-child(2)")
        browser.wait_for("document.getElementById('reader-body').textContent.includes('how are')")
        seen["subject"] = browser.text("#reader-subject")
        seen["body"] = browser.text("#reader-body")
        # The HTML one: rendered in the sandboxed frame, its script never runs.
        browser.click(".message-row:nth-child(1)")
        browser.wait_for("!document.getElementById('reader-frame').hidden")
        seen["images_note"] = browser.wait_for("!document.getElementById('images-note').hidden")
        seen["sandbox"] = browser.run(
            "return document.getElementById('reader-frame').getAttribute('sandbox')"
        )
        browser.screenshot(screenshot)
        seen["screenshot_size"] = os.path.getsize(screenshot)
        # Compose and send to ourselves; the new message arrives through /api/events.
        browser.click("#compose-button")
        browser.wait_for("document.getElementById('compose-dialog').open")
        browser.type("#compose-to", ALICE)
        browser.type("#compose-subject", "Sent from the browser")
        browser.type("#compose-text", "Hello from Chromium")
        browser.screenshot(screenshot.replace(".png", "-compose.png"))
        browser.click("#compose-send")
        browser.wait_for(
            "Array.from(document.querySelectorAll('.message-row .subject'))"
            ".some(e => e.textContent.includes('Sent from the browser'))"
        )
        seen["title"] = browser.run("return document.title")
        seen["rows"] = browser.run(
            "return Array.from(document.querySelectorAll('.message-row .subject'))"
            ".map(e => e.textContent)"
        )
        # Flag it, move it to Archive, and find it there.
        browser.run(
            "Array.from(document.querySelectorAll('.message-row'))"
            ".find(r => r.textContent.includes('Sent from the browser')).click()"
        )
        browser.wait_for(
            "document.getElementById('reader-subject').textContent.includes('browser')"
        )
        browser.click("#flag-button")
        browser.wait_for("document.getElementById('flag-button').textContent === 'Unflag'")
        browser.run(
            "const s = document.getElementById('move-select'); s.value = 'Archive';"
            "s.dispatchEvent(new Event('change'));"
        )
        browser.wait_for("document.querySelectorAll('.message-row').length === 2")
        browser.click("#mailboxes li[data-name='Archive']")
        browser.wait_for(
            "document.getElementById('list-title').textContent === 'Archive'"
            " && document.querySelectorAll('.message-row').length === 1"
        )
        seen["archived"] = browser.text(".message-row .subject")
        browser.click("#logout-button")
        browser.wait_for("!document.getElementById('login-view').hidden")
    finally:
        browser.close()
    return seen


@ensure_deferred
async def test_browser_reads_sends_and_sees_new_mail(web: Server, tmp_path: Path) -> None:
    await web.deliver(ALICE, message("Lunch on Friday?"))
    await web.deliver(ALICE, HOSTILE_HTML)
    screenshot = os.environ.get("TWISTEDMAIL_SCREENSHOT") or str(tmp_path / "page.png")
    seen = await deferToThread(drive, f"http://127.0.0.1:{web.port}", screenshot)
    assert seen["unread_badge"] == "2"
    assert seen["subject"] == "Lunch on Friday?"
    assert "how are you?" in seen["body"]
    assert seen["sandbox"] == "allow-popups allow-popups-to-escape-sandbox"
    assert seen["title"] == "twistedmail"  # the message's script never ran
    assert "Sent from the browser" in " ".join(seen["rows"])
    assert seen["screenshot_size"] > 1000
    assert "★" in seen["archived"] and "Sent from the browser" in seen["archived"]
    # The store agrees: two left in INBOX, one flagged in Archive, a copy in Sent.
    account = await web.account(ALICE)
    assert len(await account.messages("INBOX")) == 2
    [archived] = await account.messages("Archive")
    assert "\\Flagged" in archived.flags
    assert len(await account.messages("Sent")) == 1
