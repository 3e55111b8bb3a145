"""
Threads of the Maildir store's own for delivery jobs.

A delivery is one thread job on the path between a message's end and its
``250``, so the cost of handing a job to a thread and its result back is
paid by every message.  Twisted's reactor pool (`deferToThreadPool`) spends
about 55 us more wall time and 16 us more reactor CPU per job than the
stdlib's `ThreadPoolExecutor` handing its result back with
``callFromThread`` (copying the logging context, coordinating its team of
workers): about 10% of a one-at-a-time delivery (bench/delivery_bench.py).
So deliveries run here; everything else stays on the reactor's pool.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from twisted.internet.defer import Deferred

_T = TypeVar("_T")

#: Delivery jobs at once: two per folder (`_maildir_delivery`), a few folders.
WORKERS = 4


class Writers:
    """Run blocking delivery jobs in a few threads; results come back as Deferreds."""

    def __init__(self, reactor: Any, workers: int = WORKERS) -> None:
        self._reactor = reactor
        self._workers = workers
        self._executor: ThreadPoolExecutor | None = None

    def __call__(self, call: Callable[..., _T], *args: Any) -> Deferred[_T]:
        if self._executor is None:  # no threads until the first delivery
            self._executor = ThreadPoolExecutor(self._workers, "maildir-writer")
        done: Deferred[_T] = Deferred()

        def finished(future: Future[_T]) -> None:  # in the worker thread
            error = future.exception()
            if error is None:
                self._reactor.callFromThread(done.callback, future.result())
            else:
                self._reactor.callFromThread(done.errback, error)

        self._executor.submit(call, *args).add_done_callback(finished)
        return done

    def shutdown(self) -> None:
        """No new jobs; those running finish in the background."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
