"""
kill -9 of a daemon that is delivering from its queue, then a restart:
every message arrives, at most the ones in flight twice (RFC 5321 §6.1).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from typing import Any

import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet import defer, task, threads

from tests.outbound.smtpsink import SinkConfig, listen  # type: ignore[import-not-found]
from twistedmail.outbound.queue import OutboundQueue
from twistedmail.outbound.runner import OutboundSettings, QueueRunner

COUNT = 30
KILL_AT = 8
CONCURRENCY = 3

CHILD = textwrap.dedent(
    """
    import sys
    from twisted.internet import defer, reactor
    from twistedmail.model import Envelope, Recipient
    from twistedmail.outbound.queue import OutboundQueue
    from twistedmail.outbound.runner import OutboundSettings, QueueRunner

    queue_dir, port = sys.argv[1], sys.argv[2]
    count, concurrency = int(sys.argv[3]), int(sys.argv[4])
    queue = OutboundQueue(queue_dir, reactor)
    settings = OutboundSettings(
        routes=(("hamburger.edu", "tcp:127.0.0.1:" + port),),
        max_concurrency=concurrency,
        max_per_destination=concurrency,
    )
    runner = QueueRunner(
        queue, settings, clock=reactor, reactor=reactor, hostname="crepes.fr",
        is_local=lambda domain: False, deliver_local=None, resolver=object(),
    )

    @defer.inlineCallbacks
    def main():
        for n in range(count):
            message = b"Subject: %d\\r\\n\\r\\nbody %d\\r\\n" % (n, n)
            envelope = Envelope("alice@crepes.fr", (Recipient("bob@hamburger.edu"),))
            yield queue.enqueue(envelope, message)
        print("queued", flush=True)
        runner.startService()

    reactor.callWhenRunning(main)
    reactor.run()
    """
)


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@pytest_twisted.ensureDeferred
async def test_kill_9_while_delivering_then_restart_loses_nothing(tmp_path):
    queue_dir = str(tmp_path / "queue")
    child: list[subprocess.Popen[str]] = []

    def data_end() -> bytes:
        # The sink has the message; the sender dies before it hears 250.
        if len(sink.received) + 1 == KILL_AT and child[0].poll() is None:
            os.kill(child[0].pid, signal.SIGKILL)
        return b"250 2.0.0 ok"

    sink = SinkConfig(data_end=data_end)
    port = await listen(_reactor(), sink)
    proc = subprocess.Popen(  # noqa: ASYNC220 (returns at once; the waits are in threads)
        [
            sys.executable,
            "-c",
            CHILD,
            queue_dir,
            str(port.getHost().port),
            str(COUNT),
            str(CONCURRENCY),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    child.append(proc)
    try:
        assert proc.stdout is not None
        assert (await threads.deferToThread(proc.stdout.readline)).strip() == "queued"
        await threads.deferToThread(proc.wait, 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = len(sink.received)
    assert KILL_AT <= before < COUNT

    reactor = _reactor()
    queue = OutboundQueue(queue_dir, reactor)
    settings = OutboundSettings(routes=(("hamburger.edu", f"tcp:127.0.0.1:{port.getHost().port}"),))
    runner = QueueRunner(
        queue,
        settings,
        clock=reactor,
        reactor=reactor,
        hostname="crepes.fr",
        is_local=lambda domain: False,
        deliver_local=lambda envelope, message: defer.succeed(None),
        resolver=object(),
    )
    runner.startService()
    try:
        for _ in range(600):
            if not queue.files.ids():
                break
            await task.deferLater(reactor, 0.05, lambda: None)
        await runner.wait_idle()
    finally:
        await runner.stopService()
        await port.stopListening()
    assert queue.files.ids() == []
    subjects = [r.message.split(b"\r\n")[0] for r in sink.received]
    assert set(subjects) == {b"Subject: %d" % n for n in range(COUNT)}
    # Only what was in flight at the kill can arrive twice.
    assert len(subjects) - COUNT <= CONCURRENCY
    assert os.listdir(os.path.join(queue_dir, "messages")) == []
