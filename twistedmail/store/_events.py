"""
The listener registry behind `IMailAccount.listen`, shared by every backend.

The contract says a listener that raises is logged and does not stop the
others, and that listeners run after the change committed and before the
Deferred fires.  Backends only decide *when* to call `Listeners.emit`; this
module decides *how*, so that the rule holds the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from twisted.logger import Logger

from twistedmail.model import ChangeEvent

Listener = Callable[[ChangeEvent], None]


class Listeners:
    """
    The listeners of one account.

    Each registration gets its own token, so the same callable added twice is
    called twice and each removal removes exactly one registration.
    """

    log = Logger()

    def __init__(self, user: str) -> None:
        self._user = user
        self._listeners: dict[object, Listener] = {}

    def __len__(self) -> int:
        return len(self._listeners)

    def add(self, listener: Listener) -> Callable[[], None]:
        """Register ``listener``; the result removes it (calling it twice is harmless)."""
        token = object()
        self._listeners[token] = listener

        def remove() -> None:
            self._listeners.pop(token, None)

        return remove

    def emit(self, event: ChangeEvent) -> None:
        """
        Call every listener with ``event``.

        A snapshot is taken first so that a listener may add or remove
        listeners (an IMAP session logging out on an event) without
        disturbing this round; one removed meanwhile is no longer called.
        """
        for token, listener in list(self._listeners.items()):
            if token not in self._listeners:
                continue
            try:
                listener(event)
            except Exception:
                self.log.failure(
                    "Mail event listener {listener!r} failed on {event_type} for {user}",
                    listener=listener,
                    event_type=type(event).__name__,
                    user=self._user,
                )

    def emit_all(self, events: Iterable[ChangeEvent]) -> None:
        """Emit several events in order (one operation touching several mailboxes)."""
        for event in events:
            self.emit(event)
