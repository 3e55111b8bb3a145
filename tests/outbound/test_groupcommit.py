"""
Group commit of queue changes: concurrent changes share directory fsyncs,
and one change that fails does not take the rest of its batch with it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet import defer
from twisted.internet.defer import Deferred

from twistedmail.model import Envelope, Recipient
from twistedmail.outbound.groupcommit import GroupCommit, Outcome
from twistedmail.outbound.queue import (
    Change,
    OutboundQueue,
    QueueEntry,
    QueueFiles,
    RecipientState,
)

ENVELOPE = Envelope("alice@crepes.fr", (Recipient("bob@hamburger.edu"),))


def entry(queue_id: str, next_attempt: float = 0.0) -> QueueEntry:
    return QueueEntry(
        id=queue_id,
        sender="alice@crepes.fr",
        recipients=(RecipientState(Recipient("bob@hamburger.edu")),),
        queued_at=0.0,
        next_attempt=next_attempt,
        size=3,
    )


def test_a_batch_of_every_kind_with_one_failure(tmp_path: Any) -> None:
    files = QueueFiles(str(tmp_path))
    files.store(entry("old"), b"old")
    files.store(entry("gone"), b"gone")
    os.unlink(files.message_path("gone"))  # deleted meanwhile: its update says False
    os.mkdir(files.envelope_path("bad"))  # renaming onto a directory fails
    outcomes = files.commit(
        [
            Change("new", entry("new"), b"new"),
            Change("bad", entry("bad"), b"bad"),
            Change("old", entry("old", 60.0)),
            Change("gone", entry("gone", 60.0)),
            Change("none"),  # removing what is not there is fine
        ]
    )
    assert outcomes[0] is None and isinstance(outcomes[1], OSError)
    assert outcomes[2:] == [True, False, None]
    assert files.read_message("new") == b"new"
    old = files.read_entry("old")
    assert old is not None and old.next_attempt == 60.0
    assert not os.path.exists(files.message_path("bad"))  # refused: nothing to deliver
    assert os.listdir(tmp_path / "tmp") == []
    assert files.commit([Change("old"), Change("new")]) == [None, None]
    assert os.listdir(tmp_path / "messages") == []
    os.rmdir(files.envelope_path("bad"))
    assert files.ids() == ["gone"]


def test_changes_that_arrive_during_a_batch_go_together() -> None:
    """A lone change starts at once; those arriving meanwhile share the next batch."""
    batches: list[Sequence[int]] = []
    threads: list[tuple[Callable[[], list[Outcome]], Deferred[list[Outcome]]]] = []

    def in_thread(work: Callable[[], list[Outcome]]) -> Deferred[list[Outcome]]:
        threads.append((work, Deferred()))
        return threads[-1][1]

    def finish_thread() -> None:
        work, d = threads.pop(0)
        d.callback(work())

    def run(items: Sequence[int]) -> list[Outcome]:
        batches.append(items)
        return [ValueError(n) if n == 3 else n * 10 for n in items]

    group: GroupCommit[int] = GroupCommit(run, in_thread)
    results = [group.submit(n) for n in (1, 2, 3)]
    finish_thread()
    finish_thread()
    assert batches == [[1], [2, 3]] and not threads
    values: list[Any] = []
    for r in results:
        r.addBoth(values.append)
    assert values[:2] == [10, 20] and values[2].check(ValueError)
    assert (group.batches, group.items) == (2, 3)


@pytest_twisted.inlineCallbacks
def test_concurrent_enqueues_and_removals_with_the_real_reactor(tmp_path):
    from twisted.internet import reactor

    queue = OutboundQueue(str(tmp_path), reactor)
    ids = yield defer.gatherResults([queue.enqueue(ENVELOPE, b"m%d\r\n" % i) for i in range(20)])
    assert sorted(ids) == queue.files.ids()
    assert {queue.files.read_message(i) for i in ids} == {b"m%d\r\n" % i for i in range(20)}
    yield defer.gatherResults([queue.remove(queue_id) for queue_id in ids])
    assert queue.commits.items == 40 and queue.commits.batches <= 40
    assert queue.files.ids() == [] and os.listdir(tmp_path / "messages") == []
    assert os.listdir(tmp_path / "tmp") == []


def test_a_batch_that_raises_fails_each_of_its_changes() -> None:
    def run(items: Sequence[int]) -> list[Outcome]:
        raise OSError("disk on fire")

    group: GroupCommit[int] = GroupCommit(run, lambda work: defer.maybeDeferred(work))
    failures: list[Any] = []
    for n in (1, 2):
        group.submit(n).addErrback(failures.append)
    assert [f.check(RuntimeError) for f in failures] == [RuntimeError, RuntimeError]
    assert group.batches == 2  # the group goes on after a failed batch
