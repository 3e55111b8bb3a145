"""
The ESMTP server's entry point: `SMTPFactory`, one per listener, builds an
`SMTPSession` (`twistedmail.smtp.session`) per connection and enforces the
connection limits across them.

Three roles share the code (RFC 6409 §3 and RFC 8314 §3):

* MX: local recipients only, no AUTH; STARTTLS when a certificate is given.
* SUBMISSION: STARTTLS, and AUTH required before MAIL.
* SUBMISSIONS: the same over implicit TLS (the endpoint wraps the socket).

Relaying is decided by `twistedmail.routing`: only an authenticated session
may send to non-local domains; the client's address never matters.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.application.service import IService, Service
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from zope.interface import implementer

from twistedmail.delivery import Delivery
from twistedmail.interfaces import IMailStore, IOutbox
from twistedmail.routing import Resolver
from twistedmail.smtp.session import SMTPSession
from twistedmail.smtp.settings import Role, SmtpSettings
from twistedmail.smtp.trace import DateMemo
from twistedmail.throttle import LoginThrottle

__all__ = ["Role", "SMTPFactory", "SMTPSession", "SmtpSettings"]

log = Logger()


@implementer(IService)
class SMTPFactory(ServerFactory, Service):
    """
    Builds sessions for one listener and enforces the connection limits
    (total and per client address) across them.  Also an `IService`, whose
    stop says 421 to every session after any pending delivery is answered.
    """

    def __init__(
        self,
        role: Role,
        settings: SmtpSettings,
        hostname: str,
        accounts: Resolver,
        store: IMailStore,
        portal: Portal | None,
        outbox: IOutbox | None,
        tls_options: Any | None,
        clock: IReactorTime,
        throttle: LoginThrottle | None = None,
    ) -> None:
        self.role = role
        self.settings = settings
        self.hostname = hostname
        self.accounts = accounts
        self.portal = portal
        self.tls_options = tls_options
        self.clock = clock
        self.delivery = Delivery(store, outbox)
        #: Trace-header dates, shared by this listener's sessions.
        self.dates = DateMemo()
        # ``is None``, not ``or``: a LoginThrottle with no entries has len 0
        # and is falsy, so ``or`` would never share a fresh one.
        self.throttle = (
            LoginThrottle(
                clock,
                max_failures=settings.max_auth_failures,
                # `Accounts` has it; a bare `Resolver` (some tests) does not,
                # and the throttle then folds names itself the same way.
                canonical=getattr(accounts, "canonical_user", None),
            )
            if throttle is None
            else throttle
        )
        self._sessions: set[SMTPSession] = set()
        self._per_client: Counter[str] = Counter()

    def buildProtocol(self, addr: IAddress | None) -> SMTPSession:
        return SMTPSession(self)

    def admit(self, session: SMTPSession) -> bool:
        """Count a new session in, or False if a limit is reached."""
        if len(self._sessions) >= self.settings.max_connections:
            log.warn("Connection limit reached; refusing {client}", client=session.client_ip)
            return False
        if self._per_client[session.client_ip] >= self.settings.max_connections_per_client:
            log.warn("Per-client limit reached for {client}", client=session.client_ip)
            return False
        self._sessions.add(session)
        self._per_client[session.client_ip] += 1
        return True

    def release(self, session: SMTPSession) -> None:
        self._sessions.discard(session)
        self._per_client[session.client_ip] -= 1
        if self._per_client[session.client_ip] <= 0:
            del self._per_client[session.client_ip]

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    def shut_down(self) -> Deferred[None]:
        """
        Say 421 to every session and close them; fires when all pending
        deliveries have been answered.
        """
        sessions = [session.shut_down() for session in list(self._sessions)]
        done: Deferred[None] = DeferredList(sessions).addCallback(lambda _: None)
        return done

    # IService: service.py adds this factory to the tree so stopping the
    # daemon closes sessions politely.
    def stopService(self) -> Deferred[None]:
        Service.stopService(self)  # type: ignore[no-untyped-call]
        return self.shut_down()
