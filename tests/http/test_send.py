"""
``POST /api/messages``: JSON and multipart sends, local delivery and the
outbound queue through `Delivery`, the Sent copy, and every refusal.
"""

from __future__ import annotations

import base64
import email
import email.policy
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted  # type: ignore[import-untyped]

from tests.http.http_harness import ALICE, BOB, Server, call, start_server

#: pytest_twisted.ensureDeferred, typed (the package has no type hints).
ensure_deferred: Callable[[Callable[..., Any]], Callable[..., Any]] = pytest_twisted.ensureDeferred


def parse(raw: bytes) -> email.message.EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


async def inbox_of(server: Server, user: str) -> list[bytes]:
    account = await server.account(user)
    infos = await account.messages("INBOX")
    return [await account.fetch("INBOX", i.uid) for i in infos]


@ensure_deferred
async def test_send_json_delivers_locally_queues_remote_and_keeps_sent_copy(
    server: Server,
) -> None:
    client = await server.login()
    r = await call(
        client,
        "POST",
        "/api/messages",
        json_body={
            "from": ALICE,
            "to": [BOB],
            "cc": ["Zoë <zoe@remote.test>"],
            "bcc": ["hidden@remote.test"],
            "subject": "Grüße",
            "text": "Hello Bob\n.\nA dot line above.\n",
            "html": "<p>Hello <b>Bob</b></p>",
        },
    )
    assert r.status == 201, r.body
    sent = r.json()
    assert sent["local_deliveries"] == 1 and sent["queue_id"] == "Q1"
    assert sent["message_id"].endswith("@mail.example.test>")
    [delivered] = await inbox_of(server, BOB)
    assert delivered.startswith(b"Return-Path: <alice@example.test>\r\nReceived: from [127.0.0.1]")
    msg = parse(delivered)
    assert msg["Subject"] == "Grüße" and msg["From"] == ALICE and msg["To"] == BOB
    assert msg["Bcc"] is None  # never in the copies that travel
    assert msg["Message-ID"] == sent["message_id"]
    body = msg.get_body(("plain",))
    assert body is not None
    assert body.get_content().replace("\r\n", "\n") == "Hello Bob\n.\nA dot line above.\n"
    html = msg.get_body(("html",))
    assert html is not None and "<b>Bob</b>" in html.get_content()
    [(envelope, queued)] = server.outbox.queued
    assert envelope.sender == ALICE
    assert sorted(r.address for r in envelope.recipients) == [
        "hidden@remote.test",
        "zoe@remote.test",
    ]
    assert b"hidden@remote.test" not in queued
    # The Sent copy keeps Bcc, is \Seen, and shows in the API.
    assert sent["sent"]["mailbox"] == "Sent"
    url = f"/api/mailboxes/Sent/messages/{sent['sent']['uid']}"
    copy = (await call(client, "GET", url)).json()
    assert copy["seen"] is True
    assert copy["bcc"] == [{"name": "", "address": "hidden@remote.test"}]


@ensure_deferred
async def test_send_multipart_with_attachments_from_an_alias(memory_server: Server) -> None:
    client = await memory_server.login()
    boundary = uuid.uuid4().hex
    payload = bytes(range(256)) * 4000  # ~1 MB, binary
    parts = [
        ("from", None, b"al@example.test"),
        ("to", None, b"bob@example.test"),
        ("subject", None, "Pièce jointe".encode()),
        ("text", None, b"see attached"),
        ("attachments", ("data.bin", "application/octet-stream"), payload),
        ("attachments", ("note.txt", "text/plain"), b"a note\n"),
    ]
    body = b""
    for name, file, data in parts:
        body += f"--{boundary}\r\n".encode()
        if file is None:
            body += f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        else:
            body += (
                f'Content-Disposition: form-data; name="{name}"; filename="{file[0]}"\r\n'
                f"Content-Type: {file[1]}\r\n\r\n"
            ).encode()
        body += data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    r = await call(
        client,
        "POST",
        "/api/messages",
        body=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert r.status == 201, r.body
    [delivered] = await inbox_of(memory_server, BOB)
    msg = parse(delivered)
    assert msg["From"] == "al@example.test" and msg["Subject"] == "Pièce jointe"
    attachments = {a.get_filename(): a.get_content() for a in msg.iter_attachments()}
    assert attachments["data.bin"] == payload
    assert attachments["note.txt"].replace("\r\n", "\n") == "a note\n"
    bob = await memory_server.login(BOB)
    listing = (await call(bob, "GET", "/api/mailboxes/INBOX/messages")).json()
    assert listing["messages"][0]["has_attachments"] is True


@ensure_deferred
async def test_send_json_attachment_base64(memory_server: Server) -> None:
    client = await memory_server.login()
    r = await call(
        client,
        "POST",
        "/api/messages",
        json_body={
            "from": ALICE,
            "to": BOB,
            "subject": "pic",
            "text": "x",
            "attachments": [
                {
                    "filename": "dot.png",
                    "content_type": "image/png",
                    "data": base64.b64encode(b"\x89PNG fake").decode(),
                }
            ],
        },
    )
    assert r.status == 201, r.body
    [delivered] = await inbox_of(memory_server, BOB)
    [part] = list(parse(delivered).iter_attachments())
    assert part.get_content_type() == "image/png" and part.get_content() == b"\x89PNG fake"


@ensure_deferred
async def test_send_refusals_name_the_field(memory_server: Server) -> None:
    client = await memory_server.login()
    good = {"from": ALICE, "to": [BOB], "subject": "s", "text": "t"}
    cases = [
        ({**good, "from": BOB}, 403, "from"),
        ({**good, "from": "not an address"}, 400, "from"),
        ({k: v for k, v in good.items() if k != "from"}, 400, "from"),
        ({**good, "to": []}, 400, "to"),
        ({**good, "to": [BOB, "nobody@example.test"]}, 400, "to[1]"),
        ({**good, "cc": ["bad@@x"]}, 400, "cc[0]"),
        ({**good, "to": "x\r\nBcc: evil@remote.test"}, 400, "to[0]"),
        ({**good, "subject": "hi\r\nBcc: evil@remote.test"}, 400, "subject"),
        ({**good, "subject": 5}, 400, "subject"),
        ({**good, "attachments": [{"data": "%%%"}]}, 400, "attachments[0]"),
        ({**good, "colour": "red"}, 400, "colour"),
    ]
    for body, status, field in cases:
        r = await call(client, "POST", "/api/messages", json_body=body)
        assert r.status == status, (body, r.body)
        assert r.json()["error"].get("field") == field, (body, r.body)
    r = await call(
        client, "POST", "/api/messages", body=b"text", headers={"Content-Type": "text/plain"}
    )
    assert r.status == 415
    r = await call(
        client,
        "POST",
        "/api/messages",
        body=b"--x\r\nno headers here",
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    )
    assert r.status == 400 and r.error_code == "bad_multipart"
    assert await inbox_of(memory_server, BOB) == []
    assert memory_server.outbox.queued == []


@ensure_deferred
async def test_request_over_the_upload_limit_is_413(memory_server: Server) -> None:
    client = await memory_server.login()
    big = b"x" * 3_100_000
    r = await call(
        client, "POST", "/api/messages", body=big, headers={"Content-Type": "application/json"}
    )
    assert r.status == 413 and r.error_code == "too_large"
    # The connection and the server are fine afterwards.
    assert (await call(client, "GET", "/api/session")).status == 200


@pytest.fixture
def no_relay_server(tmp_path: Path) -> Iterator[Server]:
    yield from start_server("memory", tmp_path, relay=False)


@ensure_deferred
async def test_remote_recipients_without_an_outbound_queue(no_relay_server: Server) -> None:
    client = await no_relay_server.login()
    body = {"from": ALICE, "to": [BOB, "far@remote.test"], "subject": "s", "text": "t"}
    r = await call(client, "POST", "/api/messages", json_body=body)
    assert r.status == 503 and r.error_code == "no_outbound"
    assert r.json()["error"]["field"] == "to[1]"
    assert await inbox_of(no_relay_server, BOB) == []
    # Local mail still goes.
    r = await call(client, "POST", "/api/messages", json_body={**body, "to": [BOB]})
    assert r.status == 201


@ensure_deferred
async def test_a_request_without_credentials_gets_only_a_small_body(memory_server: Server) -> None:
    # A stranger must not make the server spool max_upload_size per connection.
    stranger = memory_server.client()
    big = b"x" * 100_000
    r = await call(
        stranger, "POST", "/api/session", body=big, headers={"Content-Type": "application/json"}
    )
    assert r.status == 413 and r.error_code == "too_large"
    # The same size from a logged-in client is merely bad JSON, not too large.
    client = await memory_server.login()
    r = await call(
        client, "POST", "/api/messages", body=big, headers={"Content-Type": "application/json"}
    )
    assert r.status == 400
