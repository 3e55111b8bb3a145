"""
The daemon's side of the outbound queue (`OutboundQueue`): the `IOutbox`
that authenticated submission hands remote recipients to, and the storage
the runner reads and updates.  The files themselves, their layout and the
crash-safety argument are in `twistedmail.outbound.spool`; its names are
re-exported here.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet import defer, threads
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from twistedmail.interfaces import IOutbox, TemporaryFailure
from twistedmail.model import Envelope
from twistedmail.outbound.groupcommit import GroupCommit
from twistedmail.outbound.spool import (
    FORMAT_VERSION,
    QUEUE_SUBDIR,
    Change,
    QueueEntry,
    QueueFiles,
    RecipientState,
    RecipientStatus,
    queue_dir,
    valid_id,
)

__all__ = [
    "FORMAT_VERSION",
    "QUEUE_SUBDIR",
    "Change",
    "OutboundQueue",
    "QueueEntry",
    "QueueFiles",
    "RecipientState",
    "RecipientStatus",
    "queue_dir",
    "valid_id",
]

log = Logger()

_T = TypeVar("_T")

#: Bytes of new messages kept in memory for their first attempt.
FRESH_LIMIT = 32 * 1024 * 1024


@implementer(IOutbox)
class OutboundQueue:
    """
    The daemon's side of the queue: `IOutbox` for the SMTP server and the
    storage the runner reads and updates.  Disk work runs in the reactor's
    thread pool when it has one (a `task.Clock` in tests has none: then it
    runs inline); writes to one entry keep their order.
    """

    def __init__(self, queue_dir: str, reactor: IReactorTime) -> None:
        self.files = QueueFiles(queue_dir)
        self.reactor = reactor
        self._listeners: list[Callable[[QueueEntry], None]] = []
        self._tails: dict[str, Deferred[Any]] = {}
        self._enqueuing: set[str] = set()
        self.commits: GroupCommit[Change] = GroupCommit(self.files.commit, self._in_thread)
        #: New messages kept for their first attempt, which then need not
        #: read back what was just written (at most ``fresh_limit`` bytes).
        self._fresh: dict[str, bytes] = {}
        self._fresh_bytes = 0
        self.fresh_limit = FRESH_LIMIT

    def _in_thread(self, fn: Callable[..., _T], *args: Any) -> Deferred[_T]:
        if IReactorThreads.providedBy(self.reactor):
            pool = self.reactor.getThreadPool()  # type: ignore[attr-defined]
            return threads.deferToThreadPool(self.reactor, pool, fn, *args)  # type: ignore[arg-type]
        return defer.maybeDeferred(fn, *args)

    def _serial(self, queue_id: str, change: Change) -> Deferred[Any]:
        """Commit ``change`` after every earlier change to ``queue_id`` has been committed."""
        previous = self._tails.get(queue_id)
        if previous is None:
            result = self._commit(change)
        else:
            result = Deferred()

            def run(_: object) -> None:
                self._commit(change).chainDeferred(result)

            previous.addBoth(run)
        tail: Deferred[Any] = Deferred()
        self._tails[queue_id] = tail

        def settle(value: object) -> object:
            if self._tails.get(queue_id) is tail:
                del self._tails[queue_id]
            tail.callback(None)
            return value

        result.addBoth(settle)
        return result

    def _commit(self, change: Change) -> Deferred[Any]:
        """Stage in a thread of its own, then commit with whatever else is ready."""
        if change.entry is None:
            return self.commits.submit(change)
        return self._in_thread(self.files.stage, change).addCallback(self.commits.submit)

    def listen(self, listener: Callable[[QueueEntry], None]) -> None:
        """Call ``listener`` with each new entry once it is durable (the runner)."""
        self._listeners.append(listener)

    def new_id(self) -> str:
        return f"{int(self.reactor.seconds() * 1000):011x}{secrets.token_hex(5)}"

    def enqueue(self, envelope: Envelope, message: bytes) -> Deferred[str]:
        if not envelope.recipients:
            return defer.fail(TemporaryFailure("no recipients to queue"))
        now = self.reactor.seconds()
        entry = QueueEntry(
            id=self.new_id(),
            sender=envelope.sender,
            recipients=tuple(RecipientState(r) for r in envelope.recipients),
            queued_at=now,
            next_attempt=now,
            size=len(message),
            ret=envelope.ret,
            envid=envelope.envid,
            body=envelope.body,
            smtputf8=envelope.smtputf8,
            extra=envelope.extra,
        )
        self._enqueuing.add(entry.id)

        def stored(_: None) -> str:
            self._enqueuing.discard(entry.id)
            log.info(
                "Queued {id} from <{sender}> for {count} recipient(s), {size} bytes",
                id=entry.id,
                sender=entry.sender,
                count=len(entry.recipients),
                size=entry.size,
            )
            if self._listeners and self._fresh_bytes + len(message) <= self.fresh_limit:
                self._fresh[entry.id] = message
                self._fresh_bytes += len(message)
            for listener in list(self._listeners):
                try:
                    listener(entry)
                except Exception:
                    log.failure("Queue listener failed")
            return entry.id

        def failed(failure: Any) -> Any:
            self._enqueuing.discard(entry.id)
            log.failure("Could not queue a message", failure)
            raise TemporaryFailure("could not write to the queue")

        change = Change(entry.id, entry, message)
        return self._serial(entry.id, change).addCallbacks(stored, failed)

    def update(self, entry: QueueEntry) -> Deferred[bool]:
        """Durably record new state; False if the entry was deleted meanwhile."""
        return self._serial(entry.id, Change(entry.id, entry))

    def remove(self, queue_id: str) -> Deferred[None]:
        self._take_fresh(queue_id)
        return self._serial(queue_id, Change(queue_id))

    def read_message(self, queue_id: str) -> Deferred[bytes]:
        """The message bytes: from memory the first time after enqueue, else from disk."""
        message = self._take_fresh(queue_id)
        if message is not None:
            return defer.succeed(message)
        return self._in_thread(self.files.read_message, queue_id)

    def _take_fresh(self, queue_id: str) -> bytes | None:
        message = self._fresh.pop(queue_id, None)
        if message is not None:
            self._fresh_bytes -= len(message)
        return message

    def load(self) -> Deferred[list[QueueEntry]]:
        """Every entry on disk, after removing leftovers of a crash."""

        def scan() -> list[QueueEntry]:
            removed = self.files.clean(frozenset(self._enqueuing))
            if removed:
                log.info("Removed {count} leftover queue file(s)", count=removed)
            return list(self.files.entries())

        return self._in_thread(scan)
