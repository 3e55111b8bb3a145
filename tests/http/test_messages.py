"""
``/api/mailboxes/{mailbox}/messages``: list, paging, sort, search, one message
parsed, raw, attachments, the sanitised HTML page, flags, move and delete.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest_twisted  # type: ignore[import-untyped]

from tests.http.http_harness import (
    ALICE,
    BOB,
    Server,
    call,
    message,
    multipart_message,
)

#: pytest_twisted.ensureDeferred, typed (the package has no type hints).
ensure_deferred: Callable[[Callable[..., Any]], Callable[..., Any]] = pytest_twisted.ensureDeferred


@ensure_deferred
async def test_list_pages_sorted_newest_first(server: Server) -> None:
    for n in range(5):
        await server.deliver(ALICE, message(f"number {n}"))
    client = await server.login()
    r = await call(client, "GET", "/api/mailboxes/INBOX/messages?limit=2")
    assert r.status == 200
    page = r.json()
    assert page["total"] == 5 and page["limit"] == 2 and page["offset"] == 0
    assert [m["subject"] for m in page["messages"]] == ["number 4", "number 3"]
    first = page["messages"][0]
    assert first["from"] == {"name": "Carol", "address": "carol@remote.test"}
    assert first["to"] == [{"name": "", "address": ALICE}]
    assert first["seen"] is False and first["flags"] == []
    assert first["has_attachments"] is False
    assert first["preview"].startswith("Hi Alice, how are you?")
    assert first["date"] == "2026-11-27T08:00:00+00:00"
    r = await call(client, "GET", "/api/mailboxes/INBOX/messages?limit=2&offset=4")
    assert [m["subject"] for m in r.json()["messages"]] == ["number 0"]
    r = await call(client, "GET", "/api/mailboxes/INBOX/messages?sort=uid&limit=1")
    assert r.json()["messages"][0]["subject"] == "number 0"


@ensure_deferred
async def test_list_parameter_errors_name_the_parameter(memory_server: Server) -> None:
    client = await memory_server.login()
    base = "/api/mailboxes/INBOX/messages"
    for query, field in [
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("offset=-1", "offset"),
        ("sort=size", "sort"),
        ("since=yesterday", "since"),
        ("seen=maybe", "seen"),
        ("larger=big", "larger"),
        ("q=FROM", "q"),
        ("q=NOSUCHKEY", "q"),
        ("uid=x", "uid"),
        ("header=nocolon", "header"),
    ]:
        r = await call(client, "GET", f"{base}?{query}")
        assert r.status == 400, query
        assert r.json()["error"]["field"] == field, query
    r = await call(client, "GET", "/api/mailboxes/Nope/messages")
    assert r.status == 404 and r.error_code == "no_such_mailbox"


@ensure_deferred
async def test_search_with_imap_criteria(server: Server) -> None:
    await server.deliver(ALICE, message("lunch today", sender="dave@remote.test"))
    await server.deliver(ALICE, message("project status", body="the budget is fine\r\n"))
    uid = await server.deliver(ALICE, message("lunch tomorrow"))
    account = await server.account(ALICE)
    from twistedmail.model import FLAGGED, FlagMode

    await account.set_flags("INBOX", [uid], [FLAGGED], FlagMode.ADD)
    client = await server.login()
    base = "/api/mailboxes/INBOX/messages"

    async def subjects(query: str) -> list[str]:
        r = await call(client, "GET", f"{base}?{query}&sort=uid")
        assert r.status == 200, r.body
        return [m["subject"] for m in r.json()["messages"]]

    assert await subjects("subject=lunch") == ["lunch today", "lunch tomorrow"]
    assert await subjects("from=dave") == ["lunch today"]
    assert await subjects("body=BUDGET") == ["project status"]
    assert await subjects("flagged=true") == ["lunch tomorrow"]
    assert await subjects("subject=lunch&flagged=false") == ["lunch today"]
    assert await subjects("q=OR%20FROM%20dave%20BODY%20budget") == ["lunch today", "project status"]
    assert await subjects("q=UNFLAGGED%20NOT%20SUBJECT%20status") == ["lunch today"]
    assert await subjects("senton=2026-11-27&uid=2:*") == ["project status", "lunch tomorrow"]
    r = await call(client, "GET", f"{base}?subject=lunch&limit=1")
    assert r.json()["total"] == 2


@ensure_deferred
async def test_get_one_message_parsed(server: Server) -> None:
    uid = await server.deliver(ALICE, multipart_message())
    client = await server.login()
    r = await call(client, "GET", f"/api/mailboxes/INBOX/messages/{uid}")
    assert r.status == 200
    got = r.json()
    assert got["subject"] == "Report" and got["uid"] == uid and got["mailbox"] == "INBOX"
    assert got["text"].strip() == "Plain report"
    assert got["has_attachments"] is True
    # The HTML is sanitised: no script, no handler, no javascript: link, no tracker.
    html = got["html"]
    assert "<b>bold</b>" in html
    for bad in ("script", "onclick", "javascript:", "tracker.test"):
        assert bad not in html
    assert got["remote_images_blocked"] == 1
    assert got["html_url"] == f"/api/mailboxes/INBOX/messages/{uid}/html"
    [attachment] = got["attachments"]
    assert attachment["filename"] == 'résumé".pdf'
    assert attachment["content_type"] == "application/pdf"
    assert attachment["size"] == 130
    assert ["subject", "Report"] in got["headers"]
    r = await call(client, "GET", f"/api/mailboxes/INBOX/messages/{uid}?images=true")
    assert "https://tracker.test/pixel.gif" in r.json()["html"]


@ensure_deferred
async def test_raw_attachment_and_html_frame(server: Server) -> None:
    uid = await server.deliver(ALICE, multipart_message())
    client = await server.login()
    base = f"/api/mailboxes/INBOX/messages/{uid}"
    r = await call(client, "GET", base + "/raw")
    assert r.status == 200 and r.headers["content-type"] == "message/rfc822"
    assert r.body == multipart_message()
    assert r.headers["content-disposition"].startswith("attachment;")
    r = await call(client, "GET", base + "/attachments/0")
    assert r.status == 200 and r.body == b"%PDF-1.4 fake" * 10
    assert r.headers["content-type"] == "application/pdf"
    disposition = r.headers["content-disposition"]
    # The quote in the name cannot end the parameter early; the exact name rides in filename*.
    assert disposition.startswith('attachment; filename="r_sum__.pdf"')
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9_.pdf" in disposition
    r = await call(client, "GET", base + "/attachments/1")
    assert r.status == 404 and r.error_code == "no_such_attachment"
    r = await call(client, "GET", base + "/attachments/x")
    assert r.status == 400
    r = await call(client, "GET", base + "/html")
    assert r.status == 200 and r.headers["content-type"].startswith("text/html")
    policy = r.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "img-src data:;" in policy
    assert "sandbox" in policy and "allow-scripts" not in policy
    assert b"<script" not in r.body and b"<b>bold</b>" in r.body
    r = await call(client, "GET", base + "/html?images=1")
    assert "img-src data: https: http:;" in r.headers["content-security-policy"]


@ensure_deferred
async def test_hostile_attachments_only_ever_download(memory_server: Server) -> None:
    raw = (
        b"From: x@remote.test\r\nTo: alice@example.test\r\nSubject: svg\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\n"
        b"see attached\r\n--B\r\nContent-Type: text/html\r\n"
        b'Content-Disposition: attachment; filename="../../evil.html"\r\n\r\n'
        b"<script>alert(1)</script>\r\n--B--\r\n"
    )
    uid = await memory_server.deliver(ALICE, raw)
    client = await memory_server.login()
    r = await call(client, "GET", f"/api/mailboxes/INBOX/messages/{uid}/attachments/0")
    assert r.status == 200
    assert r.headers["content-type"] == "text/html"
    assert r.headers["x-content-type-options"] == "nosniff"
    disposition = r.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="_.._evil.html"')
    assert "/" not in disposition
    assert "sandbox" in r.headers["content-security-policy"]


@ensure_deferred
async def test_flags_move_and_delete(server: Server) -> None:
    uid = await server.deliver(ALICE, message("flag me"))
    client = await server.login()
    url = f"/api/mailboxes/INBOX/messages/{uid}"
    r = await call(client, "PATCH", url, json_body={"seen": True, "flagged": True})
    assert r.status == 200 and r.json()["flags"] == ["\\Flagged", "\\Seen"]
    r = await call(
        client, "PATCH", url, json_body={"add_flags": ["$Work"], "remove_flags": ["\\seen"]}
    )
    assert r.json()["flags"] == ["$Work", "\\Flagged"]
    r = await call(client, "PATCH", url, json_body={"flags": ["\\Answered"]})
    assert r.json()["flags"] == ["\\Answered"]
    r = await call(client, "GET", url)
    assert r.json()["answered"] is True and r.json()["flagged"] is False
    # Move to Archive: the message gets a new UID there.
    r = await call(client, "PATCH", url, json_body={"mailbox": "Archive", "seen": True})
    assert r.status == 200
    moved = r.json()
    assert moved["mailbox"] == "Archive"
    assert (await call(client, "GET", url)).status == 404
    archived = f"/api/mailboxes/Archive/messages/{moved['uid']}"
    got = (await call(client, "GET", archived)).json()
    assert got["seen"] is True and got["answered"] is True
    # Delete: to Trash first, then for good from Trash.
    r = await call(client, "DELETE", archived)
    assert r.status == 200 and r.json()["deleted"] == "trash"
    trashed = f"/api/mailboxes/Trash/messages/{r.json()['uid']}"
    assert (await call(client, "GET", trashed)).status == 200
    r = await call(client, "DELETE", trashed)
    assert r.json()["deleted"] == "permanent"
    assert (await call(client, "GET", trashed)).status == 404
    listing = (await call(client, "GET", "/api/mailboxes/Trash/messages")).json()
    assert listing["total"] == 0


@ensure_deferred
async def test_permanent_delete_and_update_errors(memory_server: Server) -> None:
    uid = await memory_server.deliver(ALICE, message("bye"))
    client = await memory_server.login()
    url = f"/api/mailboxes/INBOX/messages/{uid}"
    for body, field in [
        ({"seen": "yes"}, "seen"),
        ({"flags": "\\Seen"}, "flags"),
        ({"flags": ["bad flag"]}, "flags"),
        ({"mailbox": ""}, "mailbox"),
        ({"colour": "red"}, "colour"),
    ]:
        r = await call(client, "PATCH", url, json_body=body)
        assert r.status == 400 and r.json()["error"]["field"] == field, body
    r = await call(client, "PATCH", url, json_body={"mailbox": "Nowhere"})
    assert r.status == 404 and r.error_code == "no_such_mailbox"
    r = await call(client, "PATCH", url, body=b"[1]", headers={"Content-Type": "application/json"})
    assert r.status == 400 and r.json()["error"]["field"] == "body"
    r = await call(client, "DELETE", url + "?permanent=true")
    assert r.json()["deleted"] == "permanent"
    trash = (await call(client, "GET", "/api/mailboxes/Trash/messages")).json()
    assert trash["total"] == 0
    for bad in ("0", "-1", "abc", "99999999999"):
        r = await call(client, "GET", f"/api/mailboxes/INBOX/messages/{bad}")
        assert r.status == 400 and r.json()["error"]["field"] == "uid"
    r = await call(client, "GET", "/api/mailboxes/INBOX/messages/7")
    assert r.status == 404 and r.error_code == "no_such_message"


@ensure_deferred
async def test_no_user_reaches_another_users_messages(server: Server) -> None:
    uid = await server.deliver(ALICE, message("private"))
    bob = await server.login(BOB)
    base = f"/api/mailboxes/INBOX/messages/{uid}"
    for method, path in [
        ("GET", base),
        ("GET", base + "/raw"),
        ("GET", base + "/html"),
        ("GET", base + "/attachments/0"),
        ("PATCH", base),
        ("DELETE", base),
    ]:
        r = await call(bob, method, path, json_body={"seen": True} if method == "PATCH" else None)
        assert r.status == 404, (method, path)
    assert (await call(bob, "GET", "/api/mailboxes/INBOX/messages")).json()["total"] == 0
    alice = await server.login(ALICE)
    got = (await call(alice, "GET", base)).json()
    assert got["subject"] == "private" and got["seen"] is False


@ensure_deferred
async def test_big_attachment_round_trip(memory_server: Server) -> None:
    import base64

    blob = bytes(range(256)) * 8192  # 2 MiB
    encoded = base64.encodebytes(blob).replace(b"\n", b"\r\n")
    raw = (
        b"From: x@remote.test\r\nTo: alice@example.test\r\nSubject: big\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\n"
        b"big one\r\n--B\r\nContent-Type: application/octet-stream\r\n"
        b'Content-Disposition: attachment; filename="blob.bin"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded + b"--B--\r\n"
    )
    uid = await memory_server.deliver(ALICE, raw)
    client = await memory_server.login()
    listing = (await call(client, "GET", "/api/mailboxes/INBOX/messages")).json()
    assert listing["messages"][0]["has_attachments"] is True
    r = await call(client, "GET", f"/api/mailboxes/INBOX/messages/{uid}/attachments/0")
    assert r.status == 200 and r.body == blob
