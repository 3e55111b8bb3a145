"""
Group commit: changes that arrive while a batch is being made durable wait,
and the next batch takes all of them at once.

The queue makes every change durable with a directory fsync; done per
message, a busy queue pays several fsyncs for each.  Batched, concurrent
submissions (and completions) share them: one thread-pool job at a time
takes everything queued.  A lone change still starts at once, so nothing
waits for a timer; under load the batches grow by themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()

_Item = TypeVar("_Item")

#: The outcome of one item: a value, or the exception that failed it.
Outcome = object


class GroupCommit(Generic[_Item]):
    """
    :param run: makes one batch durable (in a thread); returns one outcome
        per item, in order: an exception instance fails that item's Deferred.
    :param in_thread: runs ``run`` off the reactor thread (or inline).
    """

    def __init__(
        self,
        run: Callable[[Sequence[_Item]], list[Outcome]],
        in_thread: Callable[[Callable[[], list[Outcome]]], Deferred[list[Outcome]]],
    ) -> None:
        self._run = run
        self._in_thread = in_thread
        self._waiting: list[tuple[_Item, Deferred[object]]] = []
        self._running = False
        #: Batches run, and items in them (tests and stats).
        self.batches = 0
        self.items = 0

    def submit(self, item: _Item) -> Deferred[object]:
        """Fires with ``item``'s outcome once its batch is durable."""
        result: Deferred[object] = Deferred()
        self._waiting.append((item, result))
        self._next()
        return result

    def _next(self) -> None:
        if self._running or not self._waiting:
            return
        batch, self._waiting = self._waiting, []
        self._running = True
        self.batches += 1
        self.items += len(batch)
        items = [item for item, _ in batch]
        self._in_thread(lambda: self._run(items)).addBoth(self._done, batch)

    def _done(self, outcomes: object, batch: list[tuple[_Item, Deferred[object]]]) -> None:
        self._running = False
        if not isinstance(outcomes, list) or len(outcomes) != len(batch):
            # `run` itself failed (it should not): every item of it fails.
            if isinstance(outcomes, Failure):
                log.failure("Group commit failed", outcomes)
            else:
                log.error("Group commit gave {outcome!r}", outcome=outcomes)
            error = RuntimeError("group commit failed")
            outcomes = [error] * len(batch)
        for (_, result), outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                result.errback(outcome)
            else:
                result.callback(outcome)
        self._next()
