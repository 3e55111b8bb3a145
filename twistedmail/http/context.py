"""
What every HTTP handler shares: the settings, the services the composition
root hands in, and the per-site state (sessions, throttle, parse cache).

One `ApiContext` belongs to one site; nothing here is module-level, so two
sites (or two tests) never share a session or a cache entry.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool

from twistedmail.accounts import Accounts
from twistedmail.delivery import Delivery
from twistedmail.http.pages import Pages
from twistedmail.http.routing import Route
from twistedmail.http.sessions import Sessions
from twistedmail.interfaces import IMailAccount, IMailStore
from twistedmail.message import ParsedCache, ParsedMessage
from twistedmail.throttle import LoginThrottle

# Messages bigger than this are parsed in a thread, so one 20 MB message
# does not pause every other connection (see twistedmail.message).  Size
# alone misleads: a 500 KB message of 14,000 tiny MIME parts (anyone can
# send one) took half a second, and a page of 50 of them 25 s on the
# reactor; at 32 KiB the worst on the reactor is a few milliseconds.
_THREAD_PARSE_SIZE = 32 * 1024


@dataclass(frozen=True)
class HttpSettings:
    """Limits and lifetimes of the HTTP API; every default is safe."""

    max_upload_size: int = 25_000_000
    """Largest request body, in octets; more is answered 413."""
    session_lifetime: float = 12 * 3600.0
    """Seconds a session token is valid after login, however active."""
    session_idle: float = 2 * 3600.0
    """Seconds of inactivity after which a session token expires."""
    max_sessions: int = 10_000
    """Sessions kept at most; the oldest go first."""
    page_size: int = 50
    max_page_size: int = 500
    max_event_streams: int = 20
    """Open ``/api/events`` streams per user; more are refused with 429."""
    keepalive: float = 25.0
    """Seconds between comment lines on an idle event stream (proxies close idle ones)."""
    hostname: str = "localhost"
    """Right-hand side of the Message-IDs of sent mail."""
    max_login_failures: int = 5
    login_window: float = 300.0
    login_lockout: float = 300.0


@dataclass
class ApiContext:
    """The services and state handlers use; built once per site."""

    settings: HttpSettings
    portal: Portal
    accounts: Accounts
    store: IMailStore
    delivery: Delivery
    clock: IReactorTime
    reactor: Any
    sessions: Sessions
    throttle: LoginThrottle
    pages: Pages
    routes: tuple[Route, ...]
    health: Callable[[], Mapping[str, bool]] | None = None
    cache: ParsedCache = field(default_factory=lambda: ParsedCache(32 * 1024 * 1024))
    streams: Counter[str] = field(default_factory=Counter)
    """Open event streams per user."""

    async def parsed(
        self, account: IMailAccount, mailbox: str, uidvalidity: int, uid: int
    ) -> ParsedMessage:
        """
        One message, parsed and cached.

        The key includes the user and UIDVALIDITY, so a recreated mailbox
        or another user's message can never be served from the cache.
        """
        key = (account.user, mailbox, uidvalidity, uid)
        found = self.cache.get(key)
        if found is not None:
            return found
        raw: bytes = await account.fetch(mailbox, uid)
        parsed = await self.parse(raw)
        self.cache.put(key, parsed)
        return parsed

    def parse(self, raw: bytes) -> Deferred[ParsedMessage]:
        if len(raw) > _THREAD_PARSE_SIZE and IReactorThreads.providedBy(self.reactor):
            pool = self.reactor.getThreadPool()
            result: Deferred[ParsedMessage] = deferToThreadPool(
                self.reactor, pool, _parse_in_thread, raw
            )
            return result
        return Deferred.fromCoroutine(_parse_now(raw))


def _parse_in_thread(raw: bytes) -> ParsedMessage:
    parsed = ParsedMessage.parse(raw)
    # Walking every part for the attachment list costs as much again for a
    # message of many parts; it is remembered, so do it here too.
    parsed.attachments()
    return parsed


async def _parse_now(raw: bytes) -> ParsedMessage:
    return ParsedMessage.parse(raw)
