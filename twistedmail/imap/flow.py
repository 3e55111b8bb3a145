"""
Output flow control for one session.

A FETCH of a whole mailbox can produce gigabytes; writing it all at once
would hold it in memory until a slow client read it, and a loop that never
yields would stall every other session.  The session registers a
`WriteFlow` with its transport as a streaming producer: the transport
pauses it when its write buffer fills and resumes it when it drains, and
long commands wait on `WriteFlow.ready` between messages.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer


@implementer(IPushProducer)
class WriteFlow:
    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self.paused = False
        self._waiters: list[Deferred[None]] = []

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def stopProducing(self) -> None:
        # The connection is gone: let waiting commands run to their end
        # (their writes go nowhere) rather than hang.
        self.resumeProducing()

    def ready(self) -> Deferred[None]:
        """Fires when the client has read enough; at least one reactor turn later."""
        waiter: Deferred[None] = Deferred()
        if self.paused:
            self._waiters.append(waiter)
        elif self._reactor is not None:
            # Let other sessions run between chunks of a long answer.
            self._reactor.callLater(0, waiter.callback, None)
        else:
            return succeed(None)
        return waiter
