"""
A large backlog (after an outage) must not make the runner quadratic: the
work per finished attempt stays logarithmic.  Bounded with the schedule's
own operation counter, never with timings.
"""

from __future__ import annotations

import random
from typing import Any

import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from twistedmail.model import Envelope, Recipient
from twistedmail.outbound.queue import OutboundQueue, QueueEntry, RecipientState
from twistedmail.outbound.runner import OutboundSettings, QueueRunner
from twistedmail.outbound.schedule import AttemptSchedule

BACKLOG = 20_000
START = 1_700_000_000.0


def test_order_replacement_and_removal() -> None:
    s = AttemptSchedule()
    for name, when in (("a", 30.0), ("b", 10.0), ("c", 20.0)):
        s.put(name, when)
    s.put("a", 5.0)  # moved earlier: the old item goes stale
    s.discard("c")
    assert len(s) == 2 and "c" not in s
    assert s.next_time() == 5.0
    assert s.pop_due(4.0) is None
    assert [s.pop_due(100.0), s.pop_due(100.0), s.pop_due(100.0)] == ["a", "b", None]
    assert s.next_time() is None


def test_a_large_backlog_costs_a_few_heap_operations_per_entry() -> None:
    """Every entry rescheduled three times, then all drained: linear in heap operations."""
    rng = random.Random(4)
    s = AttemptSchedule()
    for round_ in range(3):
        for n in range(BACKLOG):
            s.put(f"q{n}", rng.uniform(0, 1000) + round_)
    assert len(s) == BACKLOG
    popped = []
    now = 0.0
    while (when := s.next_time()) is not None:
        now = max(now, when)
        queue_id = s.pop_due(now)
        assert queue_id is not None
        popped.append(queue_id)
    assert sorted(popped) == sorted(f"q{n}" for n in range(BACKLOG))
    # 3 pushes and at most 3 pops per entry, plus compactions (each touches
    # at most 3n items, and happens only after n new stale items).
    assert s.operations <= 12 * BACKLOG


def _write_backlog(queue: OutboundQueue, due: int) -> list[str]:
    """
    The on-disk state after an outage: BACKLOG envelopes, written without
    fsync (a test fixture, not the queue's durable path).  Only the ``due``
    earliest have their message; the others, once due, look deleted by the
    admin command, which costs the runner no disk writes.
    """
    ids = []
    for n in range(BACKLOG):
        queue_id = f"{n:08d}b"
        entry = QueueEntry(
            id=queue_id,
            sender="alice@crepes.fr",
            recipients=(RecipientState(Recipient("alice2@crepes.fr")),),
            queued_at=START - 3600,
            # Reverse order of ids, so that the schedule, not the listing, orders them.
            next_attempt=START + (BACKLOG - n),
            size=10,
        )
        with open(queue.files.envelope_path(queue_id), "wb") as f:
            f.write(entry.to_json())
        ids.append(queue_id)
    first = ids[::-1][:due]
    for queue_id in first:
        with open(queue.files.message_path(queue_id), "wb") as f:
            f.write(queue_id.encode())
    return first


@pytest_twisted.ensureDeferred
async def test_a_backlog_of_20000_is_drained_in_order_with_log_work(tmp_path: Any) -> None:
    from twisted.internet import reactor

    clock = Clock()
    clock.advance(START)
    queue = OutboundQueue(str(tmp_path / "queue"), clock)  # no thread pool: inline
    first = _write_backlog(queue, due=10)
    delivered: list[bytes] = []

    def deliver(envelope: Envelope, message: bytes) -> Deferred[None]:
        delivered.append(message)
        return defer.succeed(None)

    runner = QueueRunner(
        queue,
        OutboundSettings(),
        clock=clock,
        reactor=reactor,
        hostname="crepes.fr",
        is_local=lambda domain: True,
        deliver_local=deliver,
        resolver=object(),
    )
    runner.startService()
    try:
        assert len(runner.schedule) == BACKLOG
        loaded = runner.schedule.operations
        clock.advance(BACKLOG + 1)  # the whole backlog is due
        for _ in range(3):
            await runner.wait_idle()
            clock.advance(0)
        assert len(runner.schedule) == 0 and runner.entries() == {}
        assert [m.decode() for m in delivered] == first  # earliest next attempt first
        # One pop and one re-push per attempt at most, plus stale items
        # dropped: a constant per entry, where a scan would be BACKLOG.
        assert runner.schedule.operations - loaded <= 4 * BACKLOG
    finally:
        await runner.stopService()
