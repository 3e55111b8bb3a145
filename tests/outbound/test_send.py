"""``twistedmail send``: composing, and submitting with STARTTLS and AUTH."""

from __future__ import annotations

import argparse
import email
import email.policy
import io
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet import threads

from tests.outbound.smtpsink import SinkConfig, listen  # type: ignore[import-not-found]
from twistedmail import cli
from twistedmail.outbound import compose


def test_compose_headers_body_and_attachment(tmp_path) -> None:
    attachment = tmp_path / "notes.pdf"
    attachment.write_bytes(b"%PDF-1.4 \x00\xff binary")
    raw = compose.compose(
        sender="alice@crepes.fr",
        to=["bob@hamburger.edu"],
        cc=["carol@hamburger.edu"],
        subject="Crêpes ce soir ?",
        body="Bonjour Bob,\n.\nÀ bientôt\n",
        attachments=[str(attachment)],
        now=datetime(2026, 11, 27, 8, 0, tzinfo=UTC),
    )
    assert raw.isascii()  # RFC 2047 / transfer encodings, not raw 8-bit
    assert b"\n" not in raw.replace(b"\r\n", b"")
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["From"] == "alice@crepes.fr" and msg["Cc"] == "carol@hamburger.edu"
    assert msg["Subject"] == "Crêpes ce soir ?"
    assert msg["Message-ID"].endswith("@crepes.fr>")
    assert email.utils.parsedate_to_datetime(msg["Date"]) == datetime(
        2026, 11, 27, 8, 0, tzinfo=UTC
    )
    body, attached = msg.iter_parts()
    assert body.get_content().replace("\r\n", "\n") == "Bonjour Bob,\n.\nÀ bientôt\n"
    assert attached.get_content_type() == "application/pdf"
    assert attached.get_filename() == "notes.pdf"
    assert attached.get_content() == b"%PDF-1.4 \x00\xff binary"


def test_compose_utf8_address_uses_raw_utf8_headers() -> None:
    raw = compose.compose(sender="josé@exemple.fr", to=["bob@hamburger.edu"], body="hi\n")
    assert "From: josé@exemple.fr".encode() in raw


def test_submission_address_from_the_listener() -> None:
    assert compose._submission_address("tcp:2587:interface=127.0.0.1") == ("127.0.0.1", 2587)
    assert compose._submission_address("tcp:port=587:interface=::") == ("127.0.0.1", 587)


def run_send(data_dir: str, stdin: str, *argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    parser.add_argument("--data-dir")
    compose.register_send(parser.add_subparsers(required=True))
    args = parser.parse_args(["--data-dir", data_dir, *argv])
    out = io.StringIO()
    ctx = cli.Context(args, io.StringIO(stdin), out)
    code: int = args.handler(ctx)
    return code, out.getvalue()


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@pytest_twisted.ensureDeferred
async def test_send_uses_starttls_and_auth(tmp_path):
    sink = SinkConfig(starttls=True, credentials=("alice@crepes.fr", "s3cret"))
    port = await listen(_reactor(), sink)
    try:
        code, out = await threads.deferToThread(
            run_send,
            str(tmp_path),
            "s3cret\nHello Bob\n",
            "send",
            "--server",
            f"127.0.0.1:{port.getHost().port}",
            "--from",
            "alice@crepes.fr",
            "--to",
            "bob@hamburger.edu",
            "--bcc",
            "hidden@hamburger.edu",
            "--subject",
            "hi",
            "--user",
            "alice@crepes.fr",
            "--password-stdin",
        )
    finally:
        await port.stopListening()
    assert code == 0 and "Sent to 2 of 2" in out
    (got,) = sink.received
    assert got.tls and got.auth == "alice@crepes.fr"
    assert got.recipients == ["bob@hamburger.edu", "hidden@hamburger.edu"]
    assert b"hidden" not in got.message
    msg = email.message_from_bytes(got.message, policy=email.policy.default)
    assert msg.get_content() == "Hello Bob\r\n"


@pytest_twisted.ensureDeferred
async def test_send_refuses_without_starttls(tmp_path):
    sink = SinkConfig()
    port = await listen(_reactor(), sink)
    try:
        with pytest.raises(compose.SendError, match="STARTTLS"):
            await threads.deferToThread(
                run_send,
                str(tmp_path),
                "body\n",
                "send",
                "--server",
                f"127.0.0.1:{port.getHost().port}",
                "--from",
                "a@crepes.fr",
                "--to",
                "b@hamburger.edu",
            )
    finally:
        await port.stopListening()
    assert sink.received == []


@pytest_twisted.ensureDeferred
async def test_wrong_password_is_a_clean_error(tmp_path):
    sink = SinkConfig(starttls=True, credentials=("alice@crepes.fr", "right"))
    port = await listen(_reactor(), sink)
    try:
        with pytest.raises(compose.SendError, match="authentication failed"):
            await threads.deferToThread(
                run_send,
                str(tmp_path),
                "wrong\nbody\n",
                "send",
                "--server",
                f"127.0.0.1:{port.getHost().port}",
                "--from",
                "alice@crepes.fr",
                "--to",
                "b@hamburger.edu",
                "--user",
                "alice@crepes.fr",
                "--password-stdin",
            )
    finally:
        await port.stopListening()
