"""
Failed-login limiting, shared by SMTP AUTH, IMAP and HTTP.

A password guesser gets ``max_failures`` tries per ``window`` seconds for a
key (a client IP, or a user name), then every attempt for that key is
refused for ``lockout`` seconds, right or wrong, so guessing stays slow
however many connections the guesser opens.  Protocols call `allowed`
before checking credentials and report the outcome with `failed` or
`succeeded`.  Memory is bounded: at most ``max_keys`` keys are tracked, and
the least recently touched ones are forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

from twisted.internet.interfaces import IReactorTime


@dataclass
class _Entry:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0


class LoginThrottle:
    """Failed-login limiting per key (client IP, or user), shared by SMTP AUTH, IMAP and HTTP."""

    def __init__(
        self,
        clock: IReactorTime,
        max_failures: int = 5,
        window: float = 300.0,
        lockout: float = 300.0,
        max_keys: int = 10_000,
    ) -> None:
        if max_failures < 1 or window <= 0 or lockout < 0 or max_keys < 1:
            raise ValueError("max_failures, window and max_keys must be positive")
        self._clock = clock
        self._max_failures = max_failures
        self._window = window
        self._lockout = lockout
        self._max_keys = max_keys
        # Least recently touched first, so eviction forgets the stalest key.
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def allowed(self, key: str) -> bool:
        """False while ``key`` is locked out."""
        entry = self._entries.get(key)
        if entry is None:
            return True
        now = self._clock.seconds()
        if entry.locked_until > now:
            return False
        self._expire(entry, now)
        if not entry.failures:
            del self._entries[key]
        return True

    def failed(self, key: str) -> None:
        """Count a failed attempt; the ``max_failures``-th in a window locks the key."""
        now = self._clock.seconds()
        entry = self._entries.pop(key, None) or _Entry()
        self._expire(entry, now)
        entry.failures.append(now)
        if len(entry.failures) >= self._max_failures:
            entry.locked_until = now + self._lockout
            entry.failures.clear()
        self._entries[key] = entry
        if len(self._entries) > self._max_keys:
            self._evict(now)

    def succeeded(self, key: str) -> None:
        """Forget the key's failures: a user who finally types it right starts afresh."""
        entry = self._entries.get(key)
        if entry is not None and entry.locked_until <= self._clock.seconds():
            del self._entries[key]

    def __len__(self) -> int:
        """How many keys are tracked (for tests and metrics)."""
        return len(self._entries)

    def _expire(self, entry: _Entry, now: float) -> None:
        while entry.failures and entry.failures[0] <= now - self._window:
            entry.failures.popleft()

    def _evict(self, now: float) -> None:
        for key in [k for k, e in self._entries.items() if self._idle(e, now)]:
            del self._entries[key]
        # Make room for a tenth more, so a flood of new keys does not rescan
        # every entry on every failure.
        while len(self._entries) > self._max_keys - self._max_keys // 10:
            self._entries.popitem(last=False)

    def _idle(self, entry: _Entry, now: float) -> bool:
        self._expire(entry, now)
        return not entry.failures and entry.locked_until <= now
