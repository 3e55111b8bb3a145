"""
The composition root: the one place that turns a `Config` into running parts.

Everything is built here and handed what it needs (store, accounts, portal,
TLS settings, reactor); nothing else reads the configuration or imports the
global reactor.  Each protocol is wired by one small function below
(`_smtp_factory`, `_imap_factory`, `_http_factory`) that returns the
protocol factory for a listener role, or None while that protocol is not
built yet, in which case the listener is logged as not yet available and not
started.

Implicit TLS (``submissions``, ``imaps``, ``https``): a plain endpoint such
as ``tcp:465`` is wrapped in `TLSMemoryBIOFactory` with the configured (or
self-signed) certificate, so every listener shares one certificate setting
and endpoint types other than TCP (``unix:``, ``systemd:``) work too.  An
``ssl:`` endpoint already does its own TLS with the files named in the
string, and is used as it is.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import SSL4ServerEndpoint, serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.internet.ssl import CertificateOptions
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from twistedmail.accounts import Accounts
from twistedmail.auth import make_portal
from twistedmail.config import IMPLICIT_TLS_LISTENERS, Config, ConfigError
from twistedmail.delivery import Delivery
from twistedmail.interfaces import IMailStore, IOutbox, IStoreMaker, MailError
from twistedmail.model import Envelope
from twistedmail.outbound.queue import OutboundQueue
from twistedmail.outbound.runner import OutboundSettings, QueueRunner
from twistedmail.routing import route
from twistedmail.store.makers import store_makers
from twistedmail.throttle import ACCOUNT_FACTOR, AccountLimit, LoginThrottle
from twistedmail.tls import server_tls_options

__all__ = ["MailService", "ServiceContext", "make_service", "make_store"]

log = Logger()


@dataclass(frozen=True)
class ServiceContext:
    """What the composition root hands each protocol: everything, built once."""

    config: Config
    reactor: Any
    data_dir: str
    """Absolute, existing; later chdirs (twistd ``--rundir``) cannot move it."""
    store: IMailStore
    accounts: Accounts
    portal: Portal
    tls: CertificateOptions
    """The server certificate for STARTTLS and implicit-TLS listeners."""
    outbox: IOutbox
    """The durable outbound queue: remote recipients of authenticated senders."""
    delivery: Delivery
    """The one path from an accepted message to the store and the queue."""
    shared: dict[str, Any] = field(default_factory=dict)
    """Objects two listeners share (one HTTP site for ``http`` and ``https``)."""
    listeners: list[ListenerService] = field(default_factory=list)
    """Every listener, for ``/healthz``."""


# --- The protocols ------------------------------------------------------------------
#
# One function per protocol: (context, listener role) -> factory, or None while
# the protocol does not exist yet.  A factory that also provides IService is
# added to the service tree, so that it can close its sessions politely
# (SMTP 421, IMAP BYE) when the daemon stops.


def _smtp_factory(ctx: ServiceContext, role: str) -> IProtocolFactory | None:
    """``smtp`` (MX, no AUTH), ``submission`` (STARTTLS + AUTH) and ``submissions``."""
    from twistedmail.smtp.server import Role, SMTPFactory, SmtpSettings

    c = ctx.config.smtp
    settings = SmtpSettings(
        max_message_size=c.max_message_size,
        max_recipients=c.max_recipients,
        idle_timeout=float(c.idle_timeout),
        max_connections=c.max_connections,
        max_connections_per_client=c.max_connections_per_client,
        max_auth_failures=c.max_auth_failures,
        allow_plaintext_auth_on_loopback=c.allow_plaintext_auth_on_loopback,
        enforce_sender_identity=c.enforce_sender_identity,
    )
    factory = SMTPFactory(
        Role(role),
        settings,
        ctx.config.server.hostname,
        ctx.accounts,
        ctx.store,
        ctx.portal,
        ctx.outbox,
        ctx.tls,
        ctx.reactor,
        # One AUTH throttle for submission and submissions: a guesser gets
        # max_auth_failures per address in all, not per listener.
        throttle=_login_throttle(ctx, "smtp-throttle", c.max_auth_failures),
    )
    return factory


def _imap_factory(ctx: ServiceContext, role: str) -> IProtocolFactory | None:
    """``imap`` (STARTTLS) and ``imaps`` (implicit TLS)."""
    from twistedmail.imap.server import IMAPFactory, ImapSettings

    c = ctx.config.imap
    settings = ImapSettings(
        idle_timeout=float(c.idle_timeout),
        max_literal_size=c.max_literal_size,
        max_connections_per_user=c.max_connections_per_user,
        max_connections=c.max_connections,
        max_connections_per_client=c.max_connections_per_client,
        max_login_failures=c.max_login_failures,
        allow_plaintext_login_on_loopback=c.allow_plaintext_login_on_loopback,
    )
    # Implicit TLS (imaps) is done by the listener, as for SMTP; the session
    # sees a TLS transport and does not offer STARTTLS.
    factory = IMAPFactory(
        settings,
        ctx.portal,
        ctx.config.server.hostname,
        ctx.tls,
        False,
        ctx.reactor,
        ctx.reactor,
        # One throttle for imap and imaps: a guesser gets max_login_failures
        # per address in all, not per listener.
        throttle=_login_throttle(
            ctx,
            "imap-throttle",
            settings.max_login_failures,
            window=settings.login_failure_window,
            lockout=settings.login_lockout,
        ),
        # And one \\Recent tracker: a message is recent in one session
        # (RFC 3501 §2.3.2), whichever listener that session came through.
        recent=ctx.shared.get("imap-recent"),
    )
    ctx.shared.setdefault("imap-recent", factory.recent)
    return factory


def _http_factory(ctx: ServiceContext, role: str) -> IProtocolFactory | None:
    """
    ``http`` and ``https``: the JSON API and the web page.

    Both listeners serve one site, so a login over either is one session,
    behind one connection limit, so the two listeners count together.
    """
    limited = ctx.shared.get("http-limit")
    if limited is None:
        from twistedmail.http.app import make_http_site
        from twistedmail.http.context import HttpSettings
        from twistedmail.http.limits import ConnectionLimit

        settings = HttpSettings(
            max_upload_size=ctx.config.http.max_upload_size,
            hostname=ctx.config.server.hostname,
        )
        site = make_http_site(
            settings,
            ctx.portal,
            ctx.accounts,
            ctx.store,
            ctx.delivery,
            ctx.reactor,
            ctx.reactor,
            health=lambda: _health(ctx),
            throttle=_login_throttle(
                ctx,
                "http-throttle",
                settings.max_login_failures,
                window=settings.login_window,
                lockout=settings.login_lockout,
            ),
        )
        ctx.shared["http"] = site
        c = ctx.config.http
        limited = ConnectionLimit(site, c.max_connections, c.max_connections_per_client)
        ctx.shared["http-limit"] = limited
    return limited  # type: ignore[no-any-return]


def _login_throttle(
    ctx: ServiceContext,
    key: str,
    max_failures: int,
    window: float = 300.0,
    lockout: float = 300.0,
) -> LoginThrottle:
    """
    A protocol's failed-login throttle, shared by its listeners (per-address
    counts add up over ``imap`` and ``imaps``), with one `AccountLimit`
    behind every protocol's (per-account counts add up over SMTP, IMAP and
    HTTP, so a guesser cannot use each protocol's allowance in turn).
    """
    throttle: LoginThrottle | None = ctx.shared.get(key)
    if throttle is None:
        accounts: AccountLimit | None = ctx.shared.get("login-accounts")
        if accounts is None:
            most = max(ctx.config.smtp.max_auth_failures, ctx.config.imap.max_login_failures)
            accounts = ctx.shared["login-accounts"] = AccountLimit(ACCOUNT_FACTOR * most)
        throttle = ctx.shared[key] = LoginThrottle(
            ctx.reactor,
            max_failures=max_failures,
            canonical=ctx.accounts.canonical_user,
            window=window,
            lockout=lockout,
            accounts=accounts,
        )
    return throttle


def _health(ctx: ServiceContext) -> dict[str, bool]:
    """Each listener's state for ``/healthz``: up while it is listening."""
    return {listener.role: listener.port is not None for listener in ctx.listeners}


FactoryMaker = Callable[[ServiceContext, str], IProtocolFactory | None]
ProtocolEntry = tuple[str, FactoryMaker]
"""A protocol's name (for logs) and the function that makes its factory."""

PROTOCOLS: Mapping[str, ProtocolEntry] = MappingProxyType(
    {
        "smtp": ("SMTP", _smtp_factory),
        "submission": ("SMTP", _smtp_factory),
        "submissions": ("SMTP", _smtp_factory),
        "imap": ("IMAP", _imap_factory),
        "imaps": ("IMAP", _imap_factory),
        "http": ("HTTP", _http_factory),
        "https": ("HTTP", _http_factory),
    }
)
"""Listener role (a key of ``[listeners]``) -> (protocol name, factory maker)."""


# --- Services ------------------------------------------------------------------------


class ListenerService(Service):
    """
    One listening endpoint.

    Like `StreamServerEndpointService`, but it keeps the listening port so it
    can log the real address (port 0 becomes a number), and a listen that
    fails at once (address in use, permission denied) raises from
    `privilegedStartService`, so ``twistd`` exits before the reactor runs
    instead of serving with a listener missing.
    """

    def __init__(
        self, role: str, description: str, endpoint: IStreamServerEndpoint, factory: Any
    ) -> None:
        self.role = role
        self.description = description
        self.endpoint = endpoint
        self.factory = factory
        self.implicit_tls = isinstance(factory, TLSMemoryBIOFactory)
        self.port: IListeningPort | None = None
        self._listening: Deferred[IListeningPort] | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()  # type: ignore[no-untyped-call]
        self._listen()

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        if self._listening is None:
            self._listen()

    def _listen(self) -> None:
        listening = self.endpoint.listen(self.factory)
        self._listening = listening
        outcome: list[IListeningPort | Failure] = []
        listening.addBoth(outcome.append)
        if outcome and isinstance(outcome[0], Failure):
            reason = outcome[0].getErrorMessage()
            log.critical(
                "Cannot listen for {role} on {endpoint}: {reason}",
                role=self.role,
                endpoint=self.description,
                reason=reason,
            )
            # twistd removes its pid file, prints this and exits with status 1.
            raise ListenError(f"cannot listen for {self.role} on {self.description}: {reason}")
        if outcome:
            self._started(outcome[0])  # type: ignore[arg-type]
        else:  # an endpoint that listens later (a plugin's)
            listening.addCallbacks(self._started, self._failed)

    def _started(self, port: IListeningPort) -> None:
        self.port = port
        address = port.getHost()
        tls = " with implicit TLS" if self.implicit_tls else ""
        host, number = getattr(address, "host", None), getattr(address, "port", None)
        if number is not None:
            # The e2e tests read the port from this line: keep "listening on HOST port N".
            log.info(
                "{role} listening on {host} port {port}{tls}",
                role=self.role,
                host=host,
                port=number,
                tls=tls,
            )
        else:
            log.info("{role} listening on {address}{tls}", role=self.role, address=address, tls=tls)

    def _failed(self, failure: Failure) -> None:
        log.failure(
            "{role} cannot listen on {endpoint}",
            failure,
            role=self.role,
            endpoint=self.description,
        )

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        listening, self._listening = self._listening, None
        port, self.port = self.port, None
        if port is not None:
            return Deferred.fromCoroutine(_stop_port(self.role, port))
        if listening is not None:
            listening.cancel()
        return Deferred.fromCoroutine(_nothing())


async def _stop_port(role: str, port: IListeningPort) -> None:
    await maybeDeferred(port.stopListening)
    log.info("{role} stopped listening", role=role)


async def _nothing() -> None:
    return None


class ListenError(Exception):
    """A listener could not start; the text says which and why."""


def _log_postmasters(accounts: Accounts) -> None:
    """
    Say who gets each domain's postmaster mail (RFC 5321 §4.5.1), since
    without ``[server] postmaster`` it may be a guess (see `Accounts.resolve`).
    """
    configured = accounts.postmaster
    if configured is not None and not accounts.named_users(configured):
        log.warn(
            "[server] postmaster {address} is not a local user or alias; "
            "postmaster mail goes to each domain's first user instead",
            address=configured,
        )
    for domain, users in accounts.postmasters().items():
        if users:
            log.info("postmaster for {domain} is {users}", domain=domain, users=", ".join(users))
        else:
            log.warn("postmaster for {domain} is nobody: there is no user yet", domain=domain)


class MailService(MultiService):
    """
    The daemon: every listener and worker, then the store and accounts.

    Children stop first (listeners close, sessions end), and only then are
    the store and the accounts file closed, so that nothing writes into a
    closed store during shutdown.
    """

    def __init__(self, context: ServiceContext) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.context = context

    def startService(self) -> None:
        config = self.context.config
        log.info(
            "twistedmail starting as {hostname}: data in {data_dir}, {storage} storage",
            hostname=config.server.hostname,
            data_dir=self.context.data_dir,
            storage=config.server.storage,
        )
        _log_postmasters(self.context.accounts)
        super().startService()  # type: ignore[no-untyped-call]
        # twistd starts services before the reactor runs and installs its
        # signal handlers; this line says both are done (SIGTERM now stops
        # cleanly), so supervisors and tests can wait for it.
        self.context.reactor.callWhenRunning(self._running)

    def _running(self) -> None:
        listening = sorted(
            child.role
            for child in _walk(self)
            if isinstance(child, ListenerService) and child.port is not None
        )
        log.info(
            "twistedmail running, listening for {roles}",
            roles=", ".join(listening) or "nothing",
        )

    def stopService(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        await super().stopService()  # type: ignore[no-untyped-call]
        try:
            await maybeDeferred(self.context.store.close)
        except Exception:
            log.failure("Closing the mail store failed")
        self.context.accounts.close()
        log.info("twistedmail stopped")


def _walk(service: MultiService) -> Iterator[IService]:
    for child in service:
        yield child
        if isinstance(child, MultiService):
            yield from _walk(child)


# --- Building ------------------------------------------------------------------------


def _store_maker(config: Config) -> IStoreMaker:
    makers = store_makers()
    name = config.server.storage
    maker = makers.get(name)
    if maker is None:
        raise ConfigError(
            f"[server] storage: unknown store {name!r} (installed: {', '.join(sorted(makers))})"
        )
    return maker


def make_store(config: Config, data_dir: str, reactor: Any) -> IMailStore:
    """The store ``[server] storage`` names, from the installed store plugins."""
    return _open_store(_store_maker(config), data_dir, reactor)


def _open_store(maker: IStoreMaker, data_dir: str, reactor: Any) -> IMailStore:
    try:
        store: IMailStore = maker.make_store(data_dir, reactor)
    except (OSError, MailError) as e:
        raise ConfigError(f"cannot open the {maker.name} store in {data_dir}: {e}") from None
    return store


def _make_data_dir(config: Config) -> str:
    data_dir = os.path.abspath(config.server.data_dir)
    try:
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
    except OSError as e:
        raise ConfigError(
            f"[server] data_dir: cannot create {data_dir}: {e.strerror or e}"
        ) from None
    if not os.access(data_dir, os.R_OK | os.W_OK | os.X_OK):
        raise ConfigError(f"[server] data_dir: {data_dir} is not writable")
    _make_private(data_dir)
    return data_dir


def _make_private(data_dir: str) -> None:
    """
    The data directory holds the password hashes, the TLS key, the queue and
    every mailbox: owner only.  makedirs' mode does not apply to a directory
    that already exists (made by ``mkdir``, or under another umask), so
    narrow it here; one we do not own is left alone, with a warning.
    """
    mode = os.stat(data_dir).st_mode & 0o777
    if mode & 0o077 == 0:
        return
    try:
        os.chmod(data_dir, mode & 0o700)
    except OSError as e:
        log.warn(
            "The data directory {path} is open to others (mode {mode:o}) and cannot be "
            "made private: {error}",
            path=data_dir,
            mode=mode,
            error=e.strerror or str(e),
        )
        return
    log.info(
        "Made the data directory {path} private (mode {old:o} -> {new:o})",
        path=data_dir,
        old=mode,
        new=mode & 0o700,
    )


def _listener(
    ctx: ServiceContext, role: str, description: str, protocols: Mapping[str, ProtocolEntry]
) -> IService | None:
    protocol, make_factory = protocols[role]
    factory = make_factory(ctx, role)
    if factory is None:
        log.warn(
            "{role} listener {endpoint} not started: {protocol} is not yet available",
            role=role,
            endpoint=description,
            protocol=protocol,
        )
        return None
    endpoint = serverFromString(ctx.reactor, description)  # type: ignore[no-untyped-call]
    served: Any = factory
    if role in IMPLICIT_TLS_LISTENERS and not isinstance(endpoint, SSL4ServerEndpoint):
        served = TLSMemoryBIOFactory(ctx.tls, False, factory, clock=ctx.reactor)
    listener = ListenerService(role, description, endpoint, served)
    ctx.listeners.append(listener)
    if IService.providedBy(factory):
        # The protocol's own service, stopped after its listener.
        holder = MultiService()  # type: ignore[no-untyped-call]
        factory.setServiceParent(holder)  # type: ignore[attr-defined,no-untyped-call]
        listener.setServiceParent(holder)  # type: ignore[no-untyped-call]
        return holder
    return listener


def outbound_settings(config: Config) -> OutboundSettings:
    """``[outbound]`` and ``[routes]`` as the queue runner wants them."""
    c = config.outbound
    return OutboundSettings(
        retry_schedule=tuple(float(s) for s in c.retry_schedule),
        max_age=float(c.max_age),
        delay_warning=float(c.delay_warning) or None,
        max_concurrency=c.max_concurrency,
        max_per_destination=c.max_per_destination,
        relay_host=c.relay_host,
        relay_username=c.relay_username,
        relay_password=c.relay_password,
        relay_require_tls=c.relay_require_tls,
        routes=tuple(sorted(config.routes.items())),
        nameservers=c.nameservers,
    )


def _local_delivery(
    accounts: Accounts, delivery: Delivery
) -> Callable[[Envelope, bytes], Deferred[None]]:
    """
    What the queue runner calls for local recipients (bounces to local
    senders, mail for local domains that reached the queue): the same
    routing and delivery as SMTP, with relaying off.
    """

    async def deliver(envelope: Envelope, message: bytes) -> None:
        routes = [route(accounts, r, may_relay=False) for r in envelope.recipients]
        await delivery.deliver(envelope, message, routes)

    return lambda envelope, message: Deferred.fromCoroutine(deliver(envelope, message))


def make_service(
    config: Config, reactor: Any, protocols: Mapping[str, ProtocolEntry] = PROTOCOLS
) -> MailService:
    """
    Build the whole daemon from ``config``; nothing listens until it starts.

    :param protocols: listener role -> protocol; tests swap in their own.

    :raises ConfigError: something the configuration names cannot be used
        (unknown storage, unwritable data directory, bad certificate, an
        unreadable accounts file); nothing has been started.
    """
    maker = _store_maker(config)  # before any side effect
    data_dir = _make_data_dir(config)
    tls = server_tls_options(
        data_dir, config.tls.certificate, config.tls.private_key, config.server.hostname
    )
    try:
        accounts = Accounts.in_data_dir(
            data_dir, postmaster=config.server.postmaster, hostname=config.server.hostname
        )
    except MailError as e:
        raise ConfigError(str(e)) from None
    store = _open_store(maker, data_dir, reactor)
    queue = OutboundQueue(os.path.join(data_dir, "queue"), reactor)
    delivery = Delivery(store, queue)
    ctx = ServiceContext(
        config=config,
        reactor=reactor,
        data_dir=data_dir,
        store=store,
        accounts=accounts,
        portal=make_portal(accounts, store, reactor),
        tls=tls,
        outbox=queue,
        delivery=delivery,
    )
    root = MailService(ctx)
    runner = QueueRunner(
        queue,
        outbound_settings(config),
        clock=reactor,
        reactor=reactor,
        hostname=config.server.hostname,
        is_local=accounts.is_local_domain,
        deliver_local=_local_delivery(accounts, delivery),
    )
    runner.setServiceParent(root)  # type: ignore[no-untyped-call]
    for role in protocols:
        description = getattr(config.listeners, role)
        if description is None:
            continue
        child = _listener(ctx, role, description, protocols)
        if child is not None:
            child.setServiceParent(root)  # type: ignore[no-untyped-call]
    return root
