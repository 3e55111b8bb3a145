"""
Login sessions of the HTTP API: random bearer tokens with an absolute and an
idle lifetime.

Only a SHA-256 digest of each token is kept, so the dictionary lookup cannot
leak a token through timing and a memory dump holds no usable token.
Sessions live in memory: a daemon restart logs everyone out, which is the
safe default for a credential.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

from twistedmail.interfaces import IMailAccount


@dataclass
class Session:
    user: str
    account: IMailAccount
    created: float
    last_used: float
    credential: str | None = None
    """The user's password hash at login: a session dies when it changes."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "replace")).digest()


class Sessions:
    """Tokens -> sessions, bounded in number and lifetime."""

    def __init__(
        self, clock: IReactorTime, lifetime: float, idle: float, max_sessions: int
    ) -> None:
        self._clock = clock
        self._lifetime = lifetime
        self._idle = idle
        self._max = max_sessions
        # Oldest first, so eviction drops the stalest session.
        self._by_digest: OrderedDict[bytes, Session] = OrderedDict()

    def create(self, user: str, account: IMailAccount, credential: str | None = None) -> str:
        """A new session for ``user``; returns its token (43 URL-safe characters)."""
        now = self._clock.seconds()
        token = secrets.token_urlsafe(32)
        self._by_digest[_digest(token)] = Session(user, account, now, now, credential)
        while len(self._by_digest) > self._max:
            self._by_digest.popitem(last=False)
        return token

    def get(self, token: str) -> Session | None:
        """The live session for ``token`` (and note its use), or None."""
        key = _digest(token)
        session = self._by_digest.get(key)
        if session is None:
            return None
        now = self._clock.seconds()
        if now - session.created >= self._lifetime or now - session.last_used >= self._idle:
            del self._by_digest[key]
            return None
        session.last_used = now
        self._by_digest.move_to_end(key)
        return session

    def end(self, token: str) -> None:
        """Log a session out; an unknown token is no error."""
        self._by_digest.pop(_digest(token), None)

    def __len__(self) -> int:
        return len(self._by_digest)
