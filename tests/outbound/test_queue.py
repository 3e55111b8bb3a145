"""The durable queue: what is acknowledged is on disk, and survives kill -9."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest
import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet import defer
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from twistedmail.interfaces import IOutbox, TemporaryFailure
from twistedmail.model import Envelope, Recipient
from twistedmail.outbound.queue import (
    OutboundQueue,
    QueueEntry,
    QueueFiles,
    RecipientState,
    RecipientStatus,
)

ENVELOPE = Envelope(
    "alice@crepes.fr",
    (
        Recipient("bob@hamburger.edu", ("FAILURE",), "rfc822;bob@hamburger.edu"),
        Recipient("c@x.example"),
    ),
    ret="HDRS",
    envid="E1",
    body="8BITMIME",
    extra=(("AUTH", "<>"),),
)


def result_of(d: Any) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "Deferred has not fired"
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


def test_enqueue_writes_message_and_envelope(tmp_path) -> None:
    clock = Clock()
    clock.advance(1000)
    queue = OutboundQueue(str(tmp_path), clock)
    verifyObject(IOutbox, queue)
    seen: list[QueueEntry] = []
    queue.listen(seen.append)
    message = b"Subject: x\r\n\r\n\xc3\xa9t\xc3\xa9\r\n"
    queue_id = result_of(queue.enqueue(ENVELOPE, message))
    assert [e.id for e in seen] == [queue_id]
    files = QueueFiles(str(tmp_path))
    assert files.read_message(queue_id) == message
    entry = files.read_entry(queue_id)
    assert entry == seen[0]
    assert entry.envelope() == dataclasses.replace(ENVELOPE, size=len(message))
    assert (entry.sender, entry.ret, entry.envid, entry.body, entry.extra) == (
        "alice@crepes.fr",
        "HDRS",
        "E1",
        "8BITMIME",
        (("AUTH", "<>"),),
    )
    assert entry.queued_at == 1000 and entry.next_attempt == 1000 and entry.size == len(message)
    assert os.listdir(tmp_path / "tmp") == []


def test_update_and_remove(tmp_path) -> None:
    queue = OutboundQueue(str(tmp_path), Clock())
    queue_id = result_of(queue.enqueue(ENVELOPE, b"m\r\n"))
    entry = result_of(queue.load())[0]
    state = RecipientState(
        ENVELOPE.recipients[0], RecipientStatus.DELIVERED, 1, "250 2.0.0 ok", "2.0.0", "mx.example"
    )
    assert result_of(queue.update(entry.with_recipient(state))) is True
    again = queue.files.read_entry(queue_id)
    assert again is not None and again.recipients[0] == state
    assert [r.address for r in again.pending] == ["c@x.example"]
    result_of(queue.remove(queue_id))
    assert queue.files.ids() == []
    assert os.listdir(tmp_path / "messages") == []
    # An update after a delete (admin) does not resurrect the entry.
    assert result_of(queue.update(again)) is False
    assert queue.files.ids() == []


def test_load_removes_unacknowledged_leftovers(tmp_path) -> None:
    queue = OutboundQueue(str(tmp_path), Clock())
    kept = result_of(queue.enqueue(ENVELOPE, b"m\r\n"))
    (tmp_path / "messages" / "orphan1").write_bytes(b"never acknowledged")
    (tmp_path / "tmp" / "half.json.abcd").write_bytes(b"{")
    entries = result_of(queue.load())
    assert [e.id for e in entries] == [kept]
    assert sorted(os.listdir(tmp_path / "messages")) == [kept]
    assert os.listdir(tmp_path / "tmp") == []


def test_damaged_envelope_is_skipped(tmp_path) -> None:
    queue = OutboundQueue(str(tmp_path), Clock())
    kept = result_of(queue.enqueue(ENVELOPE, b"m\r\n"))
    (tmp_path / "envelopes" / "bad.json").write_bytes(b"not json")
    (tmp_path / "messages" / "bad").write_bytes(b"x")
    assert [e.id for e in result_of(queue.load())] == [kept]


def test_enqueue_failure_is_temporary(tmp_path) -> None:
    queue = OutboundQueue(str(tmp_path), Clock())
    os.rmdir(tmp_path / "envelopes")
    (tmp_path / "envelopes").write_bytes(b"")  # the rename into it fails
    with pytest.raises(TemporaryFailure):
        result_of(queue.enqueue(ENVELOPE, b"m\r\n"))
    os.unlink(tmp_path / "envelopes")
    os.mkdir(tmp_path / "envelopes")
    assert result_of(queue.load()) == []
    assert os.listdir(tmp_path / "messages") == []


def test_no_recipients_is_refused(tmp_path) -> None:
    queue = OutboundQueue(str(tmp_path), Clock())
    with pytest.raises(TemporaryFailure):
        result_of(queue.enqueue(Envelope("a@b.example", ()), b"x"))


def test_runner_lock_is_exclusive_between_processes(tmp_path) -> None:
    files = QueueFiles(str(tmp_path))
    fd = files.try_lock()
    assert fd is not None
    code = (
        "import sys; from twistedmail.outbound.queue import QueueFiles;"
        f"sys.exit(0 if QueueFiles({str(tmp_path)!r}).try_lock() is None else 1)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    os.close(fd)
    assert subprocess.run([sys.executable, "-c", code]).returncode == 1


@pytest_twisted.inlineCallbacks
def test_enqueue_in_threads_with_the_real_reactor(tmp_path):
    from twisted.internet import reactor

    queue = OutboundQueue(str(tmp_path), reactor)
    ids = yield defer.gatherResults([queue.enqueue(ENVELOPE, b"m%d\r\n" % i) for i in range(20)])
    assert sorted(ids) == queue.files.ids()
    assert {queue.files.read_message(i) for i in ids} == {b"m%d\r\n" % i for i in range(20)}


WRITER = textwrap.dedent(
    """
    import sys
    from twisted.internet import reactor
    from twistedmail.model import Envelope, Recipient
    from twistedmail.outbound.queue import OutboundQueue

    queue = OutboundQueue(sys.argv[1], reactor)
    count = [0]

    def one():
        n = count[0]
        count[0] += 1
        body = b"Subject: %d\\r\\n\\r\\n" % n + b"x" * (n * 997 % 50000) + b"\\r\\n"
        d = queue.enqueue(Envelope("a@crepes.fr", (Recipient("b%d@x.example" % n),)), body)
        def done(queue_id):
            sys.stdout.write("%s %d\\n" % (queue_id, n))
            sys.stdout.flush()
            one()
        d.addCallback(done)

    for _ in range(4):
        reactor.callWhenRunning(one)
    reactor.run()
    """
)


def test_kill_9_while_enqueueing_loses_nothing_acknowledged(tmp_path) -> None:
    """RFC 5321 §6.1: once acknowledged, a message survives any crash."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    acknowledged: dict[str, int] = {}
    queue_id: str
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while len(acknowledged) < 60 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        queue_id, number = line.split()
        acknowledged[queue_id] = int(number)
    os.kill(proc.pid, signal.SIGKILL)
    # Whatever the child managed to print after our last read is acknowledged too.
    for line in proc.stdout.read().splitlines():
        queue_id, number = line.split()
        acknowledged[queue_id] = int(number)
    proc.wait()
    assert len(acknowledged) >= 60
    queue = OutboundQueue(str(tmp_path), Clock())
    entries = {e.id: e for e in result_of(queue.load())}
    for queue_id, n in acknowledged.items():
        entry = entries[queue_id]
        assert entry.recipients[0].address == f"b{n}@x.example"
        body = queue.files.read_message(queue_id)
        assert body == b"Subject: %d\r\n\r\n" % n + b"x" * (n * 997 % 50000) + b"\r\n"
    # At most the writes in flight (4) were on disk but not yet acknowledged.
    assert len(entries) - len(acknowledged) <= 4
    assert os.listdir(tmp_path / "tmp") == []
    assert sorted(os.listdir(tmp_path / "messages")) == sorted(entries)
