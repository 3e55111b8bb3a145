"""
Issue 6's "done when", literally: a real ``twistd -n twistedmail`` per store
backend, its users added with the real ``twistedmail user add`` command while
it runs, then

- a script that has only ``curl`` (the real binary, HTTP Basic) does
  everything the API offers: folders, send, list, read parsed and raw, flag,
  move, delete, download an attachment of a message that came in over SMTP,
  the OpenAPI document and the health check;
- headless Chromium, through the standard-library WebDriver client, uses the
  page served by the same daemon: logs in, reads a message smtplib delivered
  to the daemon's MX port, sends one to itself, sees it arrive live, logs out.

Both stories share one daemon per backend (module-scoped fixture) and use
different users, so neither sees the other's mail.  Everything here blocks
(the daemon is another process); every wait is a poll with a deadline.
"""

from __future__ import annotations

import json
import shutil
import smtplib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import pytest

from tests.e2e.daemon_harness import LOOPBACK, WAIT, MailHost, free_port, wait_until
from tests.e2e.test_twistd import listeners_reported
from tests.http.http_webdriver import Browser, missing

DOMAIN = "example.test"
SCRIPT_USER = "script@example.test"
WEB_USER = "web@example.test"
PASSWORDS = {SCRIPT_USER: "curl can do it all", WEB_USER: "clicky clicky"}
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"

CURL = shutil.which("curl")
ENTER = "\ue007"  # the WebDriver key code of Enter


@dataclass
class Web:
    """The daemon of one backend and where its listeners are."""

    host: MailHost
    http: int

    @property
    def base(self) -> str:
        return f"http://{LOOPBACK}:{self.http}"


@pytest.fixture(scope="module", params=["memory", "maildir"])
def web(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    storage = str(request.param)
    host = MailHost(
        tmp_path_factory.mktemp(f"web-{storage}"),
        DOMAIN,
        storage=storage,
        extra={"listeners": {"http": f"tcp:0:interface={LOOPBACK}"}},
    )
    host.start()
    try:
        # The admin adds the users to the running daemon, which reloads its accounts.
        for user, password in PASSWORDS.items():
            said = host.cli("user", "add", user, "--password-stdin", stdin=password + "\n")
            assert said.strip() == f"Added user {user}."
        assert host.daemon is not None
        port = listeners_reported(host.daemon.lines).get("http")
        assert port, host.log()
        yield Web(host, port)
    finally:
        host.stop()
    log = host.log()
    assert "Traceback" not in log and "Unhandled" not in log, log


def smtp_deliver(web: Web, message: EmailMessage) -> None:
    """In over the MX port, as a stranger's server would bring it."""
    with smtplib.SMTP(LOOPBACK, web.host.smtp_port, timeout=WAIT) as client:
        client.send_message(message)


def plain(subject: str, to: str, body: str, sender: str = "carol@remote.test") -> EmailMessage:
    message = EmailMessage()
    message["From"] = f"Carol <{sender}>"
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = "Fri, 27 Nov 2026 07:00:00 +0000"
    message.set_content(body)
    return message


# --- The script's story: curl ------------------------------------------------------------


@dataclass
class Answer:
    status: int
    content_type: str
    headers: str
    body: bytes

    def json(self) -> Any:
        assert self.content_type.startswith("application/json"), self
        return json.loads(self.body)


class Curl:
    """The curl binary against one daemon, as one user (HTTP Basic)."""

    def __init__(self, web: Web, user: str, workdir: Path) -> None:
        self.web = web
        self.user = user
        self.workdir = workdir

    def __call__(
        self,
        method: str,
        path: str,
        body: object = None,
        *extra: str,
        auth: bool = True,
    ) -> Answer:
        assert CURL is not None
        out = self.workdir / "body"
        head = self.workdir / "head"
        args = [CURL, "-sS", "-X", method, "-o", str(out), "-D", str(head)]
        args += ["-w", "%{http_code} %{content_type}", "--max-time", str(int(WAIT))]
        if auth:
            args += ["-u", f"{self.user}:{PASSWORDS[self.user]}"]
        if body is not None:
            args += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
        args += [*extra, self.web.base + path]
        result = subprocess.run(
            args,
            input=json.dumps(body).encode() if body is not None else b"",
            capture_output=True,
            timeout=WAIT * 2,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        status, _, content_type = result.stdout.decode().partition(" ")
        return Answer(
            int(status),
            content_type,
            head.read_text("latin-1") if head.exists() else "",
            out.read_bytes() if out.exists() else b"",
        )

    def ok(self, method: str, path: str, body: object = None, status: int = 200) -> Any:
        answer = self(method, path, body)
        assert answer.status == status, answer
        return answer.json() if answer.body else None


def box(name: str) -> str:
    return "/api/mailboxes/" + quote(name, safe="")


def subjects(curl: Curl, mailbox: str) -> list[str]:
    return [m["subject"] for m in curl.ok("GET", box(mailbox) + "/messages")["messages"]]


def next_event(stream: IO[str]) -> tuple[str, Any]:
    """The next Server-Sent Event's name and JSON data (comments skipped)."""
    name, data = "", ""
    for line in stream:
        line = line.rstrip("\n")
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            data += line[len("data: ") :]
        elif not line and name:
            return name, json.loads(data)
    raise AssertionError("the event stream ended")


def test_a_script_does_everything_with_curl(web: Web, tmp_path: Path) -> None:
    curl = Curl(web, SCRIPT_USER, tmp_path)

    # No credentials, wrong ones: 401 in JSON.  Health and the contract need none.
    refused = curl("GET", "/api/mailboxes", auth=False)
    assert refused.status == 401 and refused.json()["error"]["code"]
    assert curl("GET", "/healthz", auth=False).status == 200
    spec = curl("GET", "/api/openapi.json", auth=False).json()
    assert spec["openapi"].startswith("3.")
    for route in ("/api/mailboxes/{mailbox}/messages/{uid}/attachments/{n}", "/api/messages"):
        assert route in spec["paths"]

    # Who am I; the standard folders exist.
    assert curl.ok("GET", "/api/session")["user"] == SCRIPT_USER
    names = {m["name"]: m for m in curl.ok("GET", "/api/mailboxes")["mailboxes"]}
    assert {"INBOX", "Sent", "Trash"} <= set(names)
    assert names["Sent"]["special_use"] == "sent"

    # Create, rename and delete a folder.
    curl.ok("POST", "/api/mailboxes", {"name": "Projects"}, status=201)
    assert curl("POST", "/api/mailboxes", {"name": "Projects"}).status == 409
    curl.ok("PATCH", box("Projects"), {"name": "Archive 2026"})
    listed = [m["name"] for m in curl.ok("GET", "/api/mailboxes")["mailboxes"]]
    assert "Archive 2026" in listed and "Projects" not in listed
    curl.ok("POST", "/api/mailboxes", {"name": "Keep"}, status=201)
    assert curl("DELETE", box("Archive 2026")).status == 204
    assert "Archive 2026" not in [m["name"] for m in curl.ok("GET", "/api/mailboxes")["mailboxes"]]

    # Send to ourselves with JSON: delivered locally, a copy in Sent.
    sent = curl.ok(
        "POST",
        "/api/messages",
        {
            "from": SCRIPT_USER,
            "to": [SCRIPT_USER],
            "subject": "Note to self",
            "text": "Sent with curl.\n",
        },
        status=201,
    )
    assert sent["local_deliveries"] == 1 and sent["sent"]["mailbox"] == "Sent"
    assert subjects(curl, "Sent") == ["Note to self"]
    [listed_message] = curl.ok("GET", box("INBOX") + "/messages")["messages"]
    assert listed_message["subject"] == "Note to self" and not listed_message["seen"]
    uid = listed_message["uid"]
    url = f"{box('INBOX')}/messages/{uid}"

    # Parsed and raw.
    parsed = curl.ok("GET", url)
    assert parsed["from"]["address"] == SCRIPT_USER
    assert parsed["text"].strip() == "Sent with curl."
    raw = curl("GET", url + "/raw")
    assert raw.status == 200 and raw.content_type.startswith("message/rfc822")
    assert (
        b"Subject: Note to self" in raw.body
        and b"\r\nReceived: from [127.0.0.1] by example.test" in raw.body
    )

    # Flag it, find it by flag, move it, delete it (to Trash, then for good).
    assert "\\Flagged" in curl.ok("PATCH", url, {"flagged": True, "seen": True})["flags"]
    flagged = curl.ok("GET", box("INBOX") + "/messages?flagged=true")["messages"]
    assert [m["uid"] for m in flagged] == [uid]
    moved = curl.ok("PATCH", url, {"mailbox": "Keep"})
    assert moved["mailbox"] == "Keep" and "\\Flagged" in moved["flags"]
    assert curl("GET", url).status == 404
    kept = f"{box('Keep')}/messages/{moved['uid']}"
    trashed = curl.ok("DELETE", kept)
    assert trashed["deleted"] == "trash" and trashed["mailbox"] == "Trash"
    gone = curl.ok("DELETE", f"{box('Trash')}/messages/{trashed['uid']}")
    assert gone["deleted"] == "permanent"
    assert subjects(curl, "Trash") == [] and subjects(curl, "Keep") == []

    # A multipart message from outside, over SMTP; its attachment downloaded
    # with curl -OJ, which names the file from Content-Disposition.
    message = plain("Quarterly report", SCRIPT_USER, "The report is attached.")
    message.add_attachment(PDF, maintype="application", subtype="pdf", filename="report Q3.pdf")
    smtp_deliver(web, message)
    arrived = wait_until(
        lambda: curl.ok("GET", box("INBOX") + "/messages")["messages"], "the report in INBOX"
    )
    assert arrived[0]["has_attachments"] and arrived[0]["from"]["address"] == "carol@remote.test"
    report = curl.ok("GET", arrived[0]["url"])
    [attachment] = report["attachments"]
    assert attachment["filename"] == "report Q3.pdf"
    assert attachment["content_type"] == "application/pdf" and attachment["size"] == len(PDF)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    credentials = f"{SCRIPT_USER}:{PASSWORDS[SCRIPT_USER]}"
    got = subprocess.run(
        [CURL or "curl", "-sS", "-f", "-OJ", "-u", credentials, web.base + attachment["url"]],
        cwd=downloads,
        capture_output=True,
        timeout=WAIT * 2,
        check=False,
    )
    assert got.returncode == 0, got.stderr
    [saved] = list(downloads.iterdir())
    assert saved.read_bytes() == PDF
    assert saved.suffix == ".pdf" and "/" not in saved.name

    # Push: curl -N holds the event stream open while curl -F sends a
    # multipart/form-data message with a file; the stream tells of its arrival.
    stream = web.base + "/api/events"
    events = subprocess.Popen(
        [CURL or "curl", "-sSN", "--max-time", str(int(WAIT)), "-u", credentials, stream],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert events.stdout is not None
        assert next_event(events.stdout)[0] == "ready"
        table = tmp_path / "numbers.csv"
        table.write_bytes(b"a,b\r\n1,2\r\n")
        form = ["-F", f"from={SCRIPT_USER}", "-F", f"to={SCRIPT_USER}", "-F", "subject=Numbers"]
        form += ["-F", "text=See the table.", "-F", f"attachments=@{table};type=text/csv"]
        posted = curl("POST", "/api/messages", None, *form)
        assert posted.status == 201, posted
        while (event := next_event(events.stdout))[0] != "message_added":
            pass
        assert event[1]["mailbox"] in ("INBOX", "Sent")
    finally:
        events.terminate()
        events.wait()
    [numbers] = [
        m
        for m in curl.ok("GET", box("INBOX") + "/messages")["messages"]
        if m["subject"] == "Numbers"
    ]
    [csv] = curl.ok("GET", numbers["url"])["attachments"]
    assert (csv["filename"], csv["content_type"]) == ("numbers.csv", "text/csv")
    assert curl("GET", csv["url"]).body == b"a,b\r\n1,2\r\n"

    # A session token works like Basic, and logging out ends it.
    login = curl.ok(
        "POST",
        "/api/session",
        {"address": SCRIPT_USER, "password": PASSWORDS[SCRIPT_USER]},
        status=201,
    )
    bearer = ("-H", f"Authorization: Bearer {login['token']}")
    assert curl("GET", "/api/mailboxes", None, *bearer, auth=False).status == 200
    assert curl("DELETE", "/api/session", None, *bearer, auth=False).status == 204
    assert curl("GET", "/api/mailboxes", None, *bearer, auth=False).status == 401


if CURL is None:
    test_a_script_does_everything_with_curl = pytest.mark.skip(reason="curl is not installed")(
        test_a_script_does_everything_with_curl
    )


# --- The person's story: a browser --------------------------------------------------------


ROW_WITH = (
    "Array.from(document.querySelectorAll('.message-row .subject'))"
    ".some(e => e.textContent === args[0])"
)
CLICK_ROW_WITH = (
    "Array.from(document.querySelectorAll('.message-row'))"
    ".find(r => r.querySelector('.subject').textContent === arguments[0]).click()"
)


def invoice() -> EmailMessage:
    """HTML only (no text/plain alternative), with a PDF attached."""
    message = plain("Invoice 42", WEB_USER, "")
    message.set_content("<p>Dear customer,</p><p>Total due: <b>42 EUR</b></p>", subtype="html")
    message.add_attachment(PDF, maintype="application", subtype="pdf", filename="invoice.pdf")
    return message


def rows(browser: Browser) -> list[str]:
    found = browser.run(
        "return Array.from(document.querySelectorAll('.message-row .subject'))"
        ".map(e => e.textContent)"
    )
    return [str(s) for s in found]


def page_fetch(browser: Browser, path: str, then: str) -> Any:
    """``fetch(path)`` from the page, with its cookie if any; ``then`` maps the response."""
    script = f"const done = arguments[1]; fetch(arguments[0]).then({then}).then(done);"
    return browser._send(
        "POST", browser.session + "/execute/async", {"script": script, "args": [path]}
    )


def fetch_status(browser: Browser, path: str) -> int:
    return int(page_fetch(browser, path, "r => r.status"))


def fetch_json(browser: Browser, path: str) -> Any:
    return page_fetch(browser, path, "r => r.json()")


@pytest.mark.skipif(missing() is not None, reason=str(missing()))
def test_a_person_uses_the_page_in_chromium(web: Web) -> None:
    smtp_deliver(web, plain("Lunch on Friday?", WEB_USER, "Hi, how are you? Lunch on Friday?"))
    browser = Browser()
    try:
        browser.go(web.base + "/")
        browser.wait_for("!document.getElementById('login-view').hidden")
        browser.type("#login-address", WEB_USER)
        browser.type("#login-password", PASSWORDS[WEB_USER])
        browser.click("#login-submit")
        browser.wait_for("document.querySelectorAll('.message-row').length === 1")
        assert browser.text("#whoami") == WEB_USER
        assert browser.text("#mailboxes li.current .count") == "1"

        # Read the message that came in over SMTP, from the keyboard (Enter on
        # the focused row); it is then read, not unread.
        row = browser.find(".message-row")
        browser._send("POST", f"{browser.session}/element/{row}/value", {"text": ENTER})
        browser.wait_for("document.getElementById('reader-body').textContent.includes('Lunch')")
        assert browser.text("#reader-subject") == "Lunch on Friday?"
        assert "carol@remote.test" in browser.text("#reader-from")
        browser.wait_for("!document.querySelector('#mailboxes li.current .count')")

        # Mark it unread again: it stays unread (the reader closes rather than
        # reopening it, which would mark it read at once).
        browser.click("#unread-button")
        browser.wait_for("document.getElementById('reader-content').hidden")
        browser.wait_for("document.querySelector('#mailboxes li.current .count')")
        assert browser.text("#mailboxes li.current .count") == "1"
        assert fetch_json(browser, "/api/mailboxes/INBOX/messages")["messages"][0]["seen"] is False

        # Compose to ourselves; it arrives through the live event stream.
        browser.click("#compose-button")
        browser.wait_for("document.getElementById('compose-dialog').open")
        browser.type("#compose-to", WEB_USER)
        browser.type("#compose-subject", "Sent from the browser")
        browser.type("#compose-text", "Hello from Chromium")
        # Discard asks first once something is written; "no" keeps it all.
        browser.click("#compose-cancel")
        assert "Discard" in browser._send("GET", browser.session + "/alert/text")
        browser._send("POST", browser.session + "/alert/dismiss")
        assert browser.run("return document.getElementById('compose-dialog').open")
        assert browser.run("return document.getElementById('compose-text').value") == (
            "Hello from Chromium"
        )
        browser.click("#compose-send")
        browser.wait_for(
            "Array.from(document.querySelectorAll('.message-row .subject'))"
            ".some(e => e.textContent.includes('Sent from the browser'))"
        )
        assert not browser.run("return document.getElementById('compose-dialog').open")
        assert len(rows(browser)) == 2

        # HTML-only mail with an attachment arrives over SMTP while the page
        # is open; forwarded, it keeps its attachment, and its text is quoted.
        smtp_deliver(web, invoice())
        browser.wait_for(ROW_WITH, "Invoice 42")
        browser.run(CLICK_ROW_WITH, "Invoice 42")
        browser.wait_for("!document.getElementById('reader-frame').hidden")
        browser.click("#forward-button")
        browser.wait_for("document.getElementById('compose-dialog').open")
        assert "invoice.pdf" in browser.text("#compose-forwarded")
        browser.type("#compose-to", WEB_USER)
        browser.click("#compose-send")
        browser.wait_for(ROW_WITH, "Fwd: Invoice 42")
        listed = fetch_json(browser, "/api/mailboxes/INBOX/messages")["messages"]
        [forwarded] = [m for m in listed if m["subject"] == "Fwd: Invoice 42"]
        opened = fetch_json(browser, forwarded["url"])
        assert [(a["filename"], a["size"]) for a in opened["attachments"]] == [
            ("invoice.pdf", len(PDF))
        ]
        assert "Total due: 42 EUR" in opened["text"]
        assert "<b>" not in opened["text"]

        # A folder of our own, open when we log out.
        browser.click("#new-folder-button")
        browser._send("POST", browser.session + "/alert/text", {"text": "Ideas"})
        browser._send("POST", browser.session + "/alert/accept")
        browser.wait_for("document.querySelector(\"#mailboxes li[data-name='Ideas']\")")
        browser.click("#mailboxes li[data-name='Ideas']")
        browser.wait_for("document.getElementById('list-title').textContent === 'Ideas'")

        # Log out: the page asks for a login again, the session is gone, and
        # none of our mail is left in the page, even hidden.
        browser.click("#logout-button")
        browser.wait_for("!document.getElementById('login-view').hidden")
        assert fetch_status(browser, "/api/mailboxes") == 401
        assert (
            browser.run("return document.getElementById('app-view').textContent").find("Invoice")
            == -1
        )

        # Someone else logs in on the same page: their INBOX, not our Ideas.
        browser.type("#login-address", SCRIPT_USER)
        browser.type("#login-password", PASSWORDS[SCRIPT_USER])
        browser.click("#login-submit")
        browser.wait_for("!document.getElementById('app-view').hidden")
        browser.wait_for("document.getElementById('list-title').textContent === 'INBOX'")
        assert browser.text("#whoami") == SCRIPT_USER
        assert browser.text("#login-error") == ""
        browser.click("#logout-button")
        browser.wait_for("!document.getElementById('login-view').hidden")
    finally:
        browser.close()


@pytest.mark.skipif(missing() is not None, reason=str(missing()))
def test_after_a_daemon_restart_the_page_asks_for_a_login(tmp_path: Path) -> None:
    """
    Sessions live in the daemon's memory, so a restart ends them; the open
    page notices through its event stream (refused with 401 on reconnecting)
    instead of going quietly stale.
    """
    http = free_port()
    host = MailHost(
        tmp_path,
        DOMAIN,
        storage="memory",
        extra={"listeners": {"http": f"tcp:{http}:interface={LOOPBACK}"}},
    )
    host.start()
    host.cli("user", "add", WEB_USER, "--password-stdin", stdin=PASSWORDS[WEB_USER] + "\n")
    browser = Browser()
    try:
        browser.go(f"http://{LOOPBACK}:{http}/")
        browser.wait_for("!document.getElementById('login-view').hidden")
        browser.type("#login-address", WEB_USER)
        browser.type("#login-password", PASSWORDS[WEB_USER])
        browser.click("#login-submit")
        browser.wait_for("!document.getElementById('app-view').hidden")
        host.stop()
        host.start()
        # The browser reconnects after the stream's retry delay (5 s), then
        # the page checks its session: several of the driver's script
        # timeouts may pass on a busy machine.
        wait_until(
            lambda: browser.run("return !document.getElementById('login-view').hidden"),
            "the login form after the restart",
        )
        assert browser.run("return document.getElementById('app-view').hidden")
    finally:
        browser.close()
        host.stop()
