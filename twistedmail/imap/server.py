"""
The IMAP listener: settings, and the factory `twistedmail.service` wires in.

One factory serves one listener.  For ``imap`` (port 143 role) pass the TLS
options and ``implicit_tls=False``: clients upgrade with STARTTLS.  For
``imaps`` (993, RFC 8314) pass ``implicit_tls=True``: the factory wraps each
connection in TLS itself, so both listeners use plain ``tcp:`` endpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.application.service import IService, Service
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IAddress, IProtocol, IReactorTime
from twisted.internet.protocol import Factory, Protocol, ServerFactory
from twisted.internet.ssl import CertificateOptions
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from twistedmail.imap.recent import RecentTracker
from twistedmail.imap.session import IMAPSession
from twistedmail.message import ParsedCache
from twistedmail.throttle import LoginThrottle

log = Logger()


@dataclass(frozen=True, slots=True)
class ImapSettings:
    """
    Limits and policy of the IMAP server.

    ``idle_timeout`` is the autologout timer (RFC 3501 §5.4: at least 30
    minutes).  ``max_literal_size`` bounds APPEND (advertised as RFC 7889
    APPENDLIMIT); every other command, literals included, is bounded by
    ``max_command_size``.  ``max_line_length`` is per line (RFC 7162 §4
    asks servers to take at least 8192 octets).
    """

    idle_timeout: float = 1800.0
    #: Seconds a connection may stay idle before it has logged in.
    login_timeout: float = 180.0
    max_literal_size: int = 50_000_000
    max_command_size: int = 1_000_000
    #: Before login every command, literals included, stays this small.
    max_unauthenticated_command_size: int = 16_384
    max_line_length: int = 65_536
    max_connections_per_user: int = 20
    #: Sessions in total and from one client address, logged in or not: a
    #: stranger must not hold every file descriptor (each one is a socket).
    max_connections: int = 500
    max_connections_per_client: int = 50
    max_login_failures: int = 5
    login_failure_window: float = 300.0
    login_lockout: float = 300.0
    allow_plaintext_login_on_loopback: bool = False
    #: Messages bigger than this are parsed in a thread, so one big FETCH
    #: never stalls every other session.
    parse_in_thread_above: int = 256 * 1024


@implementer(IService)
class IMAPFactory(ServerFactory, Service):
    """
    Builds `IMAPSession`s sharing one login throttle and per-user counts.
    Also an `IService`: the daemon adds it to its service tree, and stopping
    says BYE to every session.
    """

    def __init__(
        self,
        settings: ImapSettings,
        portal: Portal,
        hostname: str,
        tls_options: CertificateOptions | None,
        implicit_tls: bool,
        clock: IReactorTime,
        reactor: Any,
        throttle: LoginThrottle | None = None,
        recent: RecentTracker | None = None,
    ) -> None:
        if implicit_tls and tls_options is None:
            raise ValueError("implicit TLS needs TLS options")
        self.settings = settings
        self.portal = portal
        self.hostname = hostname
        self.tls_options = tls_options
        self.implicit_tls = implicit_tls
        self.clock = clock
        self.reactor = reactor
        #: Shared with the other IMAP listener when given, so ``imap`` and
        #: ``imaps`` together allow a guesser only ``max_login_failures``.
        self.throttle = (
            LoginThrottle(
                clock,
                max_failures=settings.max_login_failures,
                window=settings.login_failure_window,
                lockout=settings.login_lockout,
            )
            if throttle is None  # not ``or``: an empty throttle is falsy (len 0)
            else throttle
        )
        #: Who has been told about which messages (RFC 3501 §2.3.2).  Share
        #: one between ``imap`` and ``imaps``: a message is recent in one
        #: session, whichever listener it came through.
        self.recent = RecentTracker() if recent is None else recent
        self._users: dict[str, int] = {}
        #: Open sessions, for a polite shutdown.
        self.sessions: set[IMAPSession] = set()
        self.parsed_cache = ParsedCache()
        self._tls: TLSMemoryBIOFactory | None = None
        if implicit_tls and tls_options is not None:
            self._tls = TLSMemoryBIOFactory(tls_options, False, _Plain(self))

    def buildProtocol(self, addr: IAddress | None) -> IProtocol | None:  # type: ignore[override]
        host = str(getattr(addr, "host", "unknown"))
        if not self._admit(host):
            # RFC 3501 §7.1.5: BYE as the greeting.  Under implicit TLS the
            # client expects a handshake, so the connection is just closed.
            return None if self._tls is not None else _Refused()
        if self._tls is not None:
            return self._tls.buildProtocol(addr)
        return self.session(secure=False)

    def _admit(self, host: str) -> bool:
        if len(self.sessions) >= self.settings.max_connections:
            log.warn("IMAP connection limit reached; refusing {client}", client=host)
            return False
        mine = sum(1 for session in self.sessions if session.peer_host == host)
        if mine >= self.settings.max_connections_per_client:
            log.warn("IMAP per-client connection limit reached for {client}", client=host)
            return False
        return True

    def session(self, secure: bool) -> IMAPSession:
        protocol = IMAPSession(self, secure=secure)
        protocol.factory = self
        return protocol

    def shut_down(self) -> Deferred[None]:
        """BYE to every session; fires when all have closed."""
        closing = [session.shut_down() for session in list(self.sessions)]
        done: Deferred[None] = DeferredList(closing).addCallback(lambda _: None)
        return done

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)  # type: ignore[no-untyped-call]
        return self.shut_down()

    def claim_user(self, user: str) -> bool:
        """Count a session of ``user``; False if it would be one too many."""
        count = self._users.get(user, 0)
        if count >= self.settings.max_connections_per_user:
            return False
        self._users[user] = count + 1
        return True

    def release_user(self, user: str) -> None:
        count = self._users.get(user, 0) - 1
        if count > 0:
            self._users[user] = count
        else:
            self._users.pop(user, None)

    def connections_of(self, user: str) -> int:
        return self._users.get(user, 0)


class _Plain(Factory):
    """The inner factory under implicit TLS: sessions that know they are secure."""

    def __init__(self, outer: IMAPFactory) -> None:
        self._outer = outer

    def buildProtocol(self, addr: IAddress | None) -> IMAPSession:
        return self._outer.session(secure=True)


class _Refused(Protocol):
    """Says BYE and hangs up: the greeting of a connection over a limit."""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(b"* BYE Too many connections; try again later\r\n")
        self.transport.loseConnection()
