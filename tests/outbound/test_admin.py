"""``twistedmail queue ...`` with and without a running daemon."""

from __future__ import annotations

import argparse
import io
import os
from typing import Any

import pytest
import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet import defer, threads
from twisted.internet.task import Clock

from twistedmail import cli
from twistedmail.model import Envelope, Recipient
from twistedmail.outbound import admin
from twistedmail.outbound.queue import OutboundQueue, QueueFiles, queue_dir
from twistedmail.outbound.runner import OutboundSettings, QueueRunner

MESSAGE = b"From: alice@crepes.fr\r\nTo: bob@hamburger.edu\r\nSubject: queued\r\n\r\nhi\r\n"


def run_cli(data_dir: str, *argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    parser.add_argument("--data-dir")
    admin.register(parser.add_subparsers(required=True))
    args = parser.parse_args(["--data-dir", data_dir, *argv])
    out = io.StringIO()
    ctx = cli.Context(args, io.StringIO(), out)
    code: int = args.handler(ctx)
    return code, out.getvalue()


def enqueue(queue: OutboundQueue, *rcpts: str, sender: str = "alice@crepes.fr") -> str:
    out: list[str] = []
    envelope = Envelope(sender, tuple(Recipient(r) for r in rcpts))
    queue.enqueue(envelope, MESSAGE).addCallback(out.append)
    return out[0]


def test_list_and_show_offline(tmp_path) -> None:
    queue = OutboundQueue(queue_dir(str(tmp_path)), Clock())
    first = enqueue(queue, "bob@hamburger.edu", "carol@hamburger.edu")
    enqueue(queue, "dave@x.example")
    code, text = run_cli(str(tmp_path), "queue", "list")
    assert code == 0
    assert first in text and "<alice@crepes.fr>" in text
    assert "carol@hamburger.edu  [pending, due now]" in text
    assert text.rstrip().endswith("2 message(s), 3 recipient(s) to deliver.")
    code, text = run_cli(str(tmp_path), "queue", "show", first)
    assert "Subject: queued" in text and "To: bob@hamburger.edu" in text


def test_bad_ids_are_one_line_errors(tmp_path) -> None:
    QueueFiles(queue_dir(str(tmp_path)))
    with pytest.raises(admin.QueueCommandError, match="no message"):
        run_cli(str(tmp_path), "queue", "show", "abc123")
    with pytest.raises(admin.QueueCommandError, match="not a queue id"):
        run_cli(str(tmp_path), "queue", "delete", "../../etc")


def test_retry_and_delete_offline_bounce_waits_for_the_daemon(tmp_path) -> None:
    clock = Clock()
    queue = OutboundQueue(queue_dir(str(tmp_path)), clock)
    one = enqueue(queue, "bob@hamburger.edu")
    two = enqueue(queue, "carol@hamburger.edu")
    entry = queue.files.read_entry(one)
    assert entry is not None
    queue.files.write_entry(entry.__class__(**{**_fields(entry), "next_attempt": 4e9}))
    code, text = run_cli(str(tmp_path), "queue", "retry", one)
    assert code == 0 and "1 message(s)" in text
    again = queue.files.read_entry(one)
    assert again is not None and again.next_attempt < 4e9
    run_cli(str(tmp_path), "queue", "delete", two)
    assert queue.files.ids() == [one]
    code, text = run_cli(str(tmp_path), "queue", "bounce", one)
    assert "when the daemon starts" in text
    assert queue.files.requests() == [(one, "bounce")]


def _fields(entry: Any) -> dict[str, Any]:
    return {name: getattr(entry, name) for name in entry.__dataclass_fields__}


@pytest_twisted.ensureDeferred
async def test_requests_go_through_the_running_daemon(tmp_path):
    """The daemon holds the lock; the command asks it and waits until it is done."""
    from twisted.internet import reactor

    delivered: list[tuple[Envelope, bytes]] = []

    def deliver_local(envelope: Envelope, message: bytes) -> defer.Deferred[None]:
        delivered.append((envelope, message))
        return defer.succeed(None)

    queue = OutboundQueue(queue_dir(str(tmp_path)), reactor)
    settings = OutboundSettings(
        routes=(("x.example", "tcp:127.0.0.1:1"),),  # nobody listens: stays queued
        control_interval=0.02,
        retry_schedule=(3600,),
    )
    runner = QueueRunner(
        queue,
        settings,
        clock=reactor,
        reactor=reactor,
        hostname="crepes.fr",
        is_local=lambda domain: domain == "crepes.fr",
        deliver_local=deliver_local,
        resolver=object(),
    )
    runner.startService()
    try:
        one = await queue.enqueue(
            Envelope("alice@crepes.fr", (Recipient("b@hamburger.edu"),)), MESSAGE
        )
        two = await queue.enqueue(
            Envelope("alice@crepes.fr", (Recipient("c@hamburger.edu"),)), MESSAGE
        )
        await runner.wait_idle()
        while len(runner.entries()) < 2 or any(e.attempts == 0 for e in runner.entries().values()):
            await runner.wait_idle()
            await threads.deferToThread(lambda: None)
        _code, text = await threads.deferToThread(run_cli, str(tmp_path), "queue", "delete", two)
        assert "Done: delete" in text
        assert queue.files.ids() == [one]
        _, text = await threads.deferToThread(run_cli, str(tmp_path), "queue", "bounce", one)
        assert "Done: bounce" in text
        await runner.wait_idle()
        while not delivered:
            await threads.deferToThread(lambda: None)
            await runner.wait_idle()
        assert queue.files.ids() == []
        ((envelope, bounce),) = delivered
        assert envelope.sender == "" and envelope.recipients[0].address == "alice@crepes.fr"
        assert b"returned to sender by the administrator" in bounce
    finally:
        await runner.stopService()
    assert not os.listdir(os.path.join(queue_dir(str(tmp_path)), "control"))
