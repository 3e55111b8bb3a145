"""
The queue runner: takes due entries from the queue, delivers them, and
records what happened, on an injected clock.

One attempt of one message: local recipients go to ``deliver_local``;
remote ones are grouped by destination (`twistedmail.outbound.mx.Route`)
and each destination gets one SMTP session carrying all its recipients,
destinations in parallel, within a total and a per-destination limit;
connections that end cleanly are kept a moment for the next message to
the same host (`twistedmail.outbound.connections`).
Recipients that got a 4xx (or whose server could not be reached) are
retried on the schedule until ``max_age``; then, or on a 5xx, the sender
gets an RFC 3464 DSN (`twistedmail.outbound.dsn`) through the same queue.

Crash safety (RFC 5321 §6.1): the outcome of an attempt, and any DSN it
causes, is made durable after the fact, so a crash can repeat a delivery or
a DSN once but never lose one.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred, DeferredSemaphore
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    clientFromString,
)
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from twistedmail.interfaces import NoSuchUser, QuotaExceeded
from twistedmail.model import Envelope, Recipient
from twistedmail.outbound import dsn
from twistedmail.outbound.connections import ConnectionCache
from twistedmail.outbound.mx import Hop, Route, Router, RoutingError, SmartHost, make_resolver
from twistedmail.outbound.queue import (
    OutboundQueue,
    QueueEntry,
    RecipientStatus,
)
from twistedmail.outbound.schedule import AttemptSchedule
from twistedmail.outbound.tlscache import TLSOptionsCache
from twistedmail.smtp.client import (
    ClientOptions,
    Reply,
    SMTPClientError,
    Timeouts,
    TLSOptionsFactory,
    Transaction,
)

log = Logger()

#: Postfix-like growth from a minute to hours; the last step repeats.
DEFAULT_SCHEDULE = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0)


@dataclass(frozen=True, slots=True)
class OutboundSettings:
    """
    What the runner needs from ``[outbound]`` and ``[routes]``; the lead
    maps the config onto it.  Times are seconds.
    """

    retry_schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    max_age: float = 5 * 86400.0
    #: Send a "delayed" DSN once a message is this old (None or 0: never).
    delay_warning: float | None = 4 * 3600.0
    max_concurrency: int = 20
    max_per_destination: int = 4
    relay_host: str | None = None
    relay_username: str | None = None
    relay_password: str | None = field(default=None, repr=False)
    relay_require_tls: bool = False
    #: Domain -> Twisted client endpoint string (``tcp:127.0.0.1:2626``).
    routes: tuple[tuple[str, str], ...] = ()
    #: ``ip`` or ``ip:port``; empty: /etc/hosts and /etc/resolv.conf.
    nameservers: tuple[str, ...] = ()
    #: The port MX hosts are dialled on (25; tests change it).
    mx_port: int = 25
    connect_timeout: float = 30.0
    #: How often to look for requests from the ``queue`` admin command.
    control_interval: float = 1.0
    #: Seconds an idle connection waits for the next message to its host.
    connection_cache_time: float = 2.0
    #: Messages after which a kept connection is closed anyway.
    connection_reuse_limit: int = 100
    #: How long stopService waits for sessions in progress.
    shutdown_grace: float = 10.0
    timeouts: Timeouts = field(default_factory=Timeouts)


@dataclass(frozen=True, slots=True)
class _Outcome:
    status: RecipientStatus
    reply: str
    status_code: str
    remote: str | None = None
    #: The remote server took over DSN duties (it offered DSN; RFC 3461 §4.2).
    remote_dsn: bool = False


def _from_reply(reply: Reply, remote: str | None, remote_dsn: bool = False) -> _Outcome:
    if reply.positive:
        status = RecipientStatus.DELIVERED
    elif reply.permanent:
        status = RecipientStatus.FAILED
    else:
        status = RecipientStatus.PENDING
    code = reply.enhanced or f"{str(reply.code)[0]}.0.0"
    return _Outcome(status, str(reply), code, remote, remote_dsn)


def _remote_name(hop: Hop, peer: str | None) -> str:
    """
    The DSN's Remote-MTA (RFC 3464 §2.3.5): the exchanger's or smart
    host's name; for a static route, whose name is only our configuration's
    key, the address actually reached.
    """
    if hop.endpoint:
        return peer or hop.host
    return hop.host


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


class QueueRunner(Service):
    """
    Delivers from an `OutboundQueue`; a ``twisted.application`` service.

    :param is_local: whether a domain (lower-case) is delivered here.
    :param deliver_local: store a message for the envelope's recipients
        (one at a time here); fails with `NoSuchUser` for an unknown one.
    :param resolver: a ``twisted.names`` resolver; made from
        ``settings.nameservers`` when None.
    :param connect: turns a `Hop` into an endpoint (tests may redirect).
    :param tls_options: client TLS settings per host; a `TLSOptionsCache`
        over ``twistedmail.tls.client_tls_options`` when None.
    """

    def __init__(
        self,
        queue: OutboundQueue,
        settings: OutboundSettings,
        *,
        clock: IReactorTime,
        reactor: Any,
        hostname: str,
        is_local: Callable[[str], bool],
        deliver_local: Callable[[Envelope, bytes], Deferred[None]],
        resolver: Any = None,
        connect: Callable[[Hop], IStreamClientEndpoint] | None = None,
        tls_options: TLSOptionsFactory | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.queue = queue
        self.settings = settings
        self.clock = clock
        self.reactor = reactor
        self.hostname = hostname
        self.is_local = is_local
        self.deliver_local = deliver_local
        # One cache per runner: contexts are made once, not per session.
        self.tls_options = tls_options or TLSOptionsCache()
        self.connect = connect or self._endpoint
        self.connections = ConnectionCache(
            clock, self.connect, settings.connection_cache_time, settings.connection_reuse_limit
        )
        smart = None
        if settings.relay_host:
            smart = SmartHost.parse(
                settings.relay_host,
                username=settings.relay_username,
                password=settings.relay_password,
                require_tls=settings.relay_require_tls,
            )
        self.router = Router(resolver, dict(settings.routes), smart, settings.mx_port, rng)
        self._entries: dict[str, QueueEntry] = {}
        #: Entries waiting for an attempt; one in ``_busy`` is never in it.
        self.schedule = AttemptSchedule()
        self._busy: set[str] = set()
        self._timer: IDelayedCall | None = None
        self._control: LoopingCall | None = None
        self._lock_fd: int | None = None
        self._lock_retry: IDelayedCall | None = None
        self._total = DeferredSemaphore(settings.max_concurrency)
        self._per_destination: dict[str, DeferredSemaphore] = {}
        self._idle: list[Deferred[None]] = []
        self._loaded = False
        self._listening = False

    # --- Service ------------------------------------------------------------

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        if self.router.resolver is None:
            self.router.resolver = make_resolver(self.settings.nameservers, self.reactor)
        self.connections.closed = False
        if not self._listening:
            self._listening = True
            self.queue.listen(self._added)
        self._take_lock()

    def _take_lock(self) -> None:
        self._lock_retry = None
        if not self.running:
            return
        self._lock_fd = self.queue.files.try_lock()
        if self._lock_fd is None:
            # Another daemon (or the admin command, for a moment) holds it.
            log.warn("Queue {dir} is locked by another process; waiting", dir=self.queue.files.root)
            self._lock_retry = self.clock.callLater(5, self._take_lock)
            return
        self.queue.load().addCallbacks(self._loaded_entries, self._load_failed)

    def _load_failed(self, failure: Any) -> None:
        log.failure("Could not read the queue", failure)
        self._lock_retry = self.clock.callLater(30, self._retry_load)

    def _retry_load(self) -> None:
        self._lock_retry = None
        self.queue.load().addCallbacks(self._loaded_entries, self._load_failed)

    def _loaded_entries(self, entries: list[QueueEntry]) -> None:
        if not self.running:
            return
        for entry in entries:
            if entry.id not in self._entries:
                self._put(entry)
        self._loaded = True
        log.info("Queue runner started with {count} queued message(s)", count=len(entries))
        self._control = LoopingCall(self._check_requests)
        self._control.clock = self.clock
        self._control.start(self.settings.control_interval, now=True).addErrback(
            lambda f: log.failure("Queue control loop stopped", f)
        )
        self._schedule()

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        self._cancel_timer()
        if self._lock_retry is not None and self._lock_retry.active():
            self._lock_retry.cancel()
        self._lock_retry = None
        if self._control is not None and self._control.running:
            self._control.stop()
        self.connections.close()
        result: Deferred[None] = Deferred()

        def finish(_: object = None) -> None:
            if result.called:
                return
            if timer.active():
                timer.cancel()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            result.callback(None)

        # Sessions still running after the grace period are abandoned: what
        # they did not record is simply retried (at most a duplicate).
        timer = self.clock.callLater(self.settings.shutdown_grace, finish)
        self.wait_idle().addBoth(finish)
        return result

    # --- Scheduling ----------------------------------------------------------

    def wait_idle(self) -> Deferred[None]:
        """Fires when no attempt is in progress (tests, shutdown)."""
        if not self._busy:
            return defer.succeed(None)
        waiter: Deferred[None] = Deferred()
        self._idle.append(waiter)
        return waiter

    def poke(self) -> None:
        """Run every due entry now instead of at the next timer."""
        self._schedule(0)

    def entries(self) -> Mapping[str, QueueEntry]:
        return dict(self._entries)

    def _added(self, entry: QueueEntry) -> None:
        self._put(entry)
        if self._loaded and self.running:
            self._schedule()

    def _put(self, entry: QueueEntry) -> None:
        """Keep ``entry``'s new state; an entry in an attempt is scheduled when it ends."""
        self._entries[entry.id] = entry
        if entry.id not in self._busy:
            self.schedule.put(entry.id, entry.next_attempt)

    def _forget(self, queue_id: str) -> None:
        self._entries.pop(queue_id, None)
        self.schedule.discard(queue_id)

    def _schedule(self, delay: float | None = None) -> None:
        """Set the timer for the next due entry (O(log n): see `AttemptSchedule`)."""
        if not self.running or not self._loaded:
            return
        now = self.clock.seconds()
        if delay is None:
            when = self.schedule.next_time()
            if when is None:
                self._cancel_timer()
                return
            delay = max(0.0, when - now)
        timer = self._timer
        if timer is not None and timer.active():
            if timer.getTime() <= now + delay:
                return  # already set early enough; _run_due looks again
            timer.cancel()
        self._timer = self.clock.callLater(delay, self._run_due)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _run_due(self) -> None:
        self._timer = None
        now = self.clock.seconds()
        limit = max(2 * self.settings.max_concurrency, 1)
        while len(self._busy) < limit:  # the rest start as attempts finish
            queue_id = self.schedule.pop_due(now)
            if queue_id is None:
                break
            entry = self._entries.get(queue_id)
            if entry is not None:
                self._start(queue_id, self._attempt(entry))
        if len(self._busy) < limit:
            self._schedule()

    def _start(self, queue_id: str, work: Any) -> None:
        self._busy.add(queue_id)
        self.schedule.discard(queue_id)
        d = Deferred.fromCoroutine(work)
        d.addErrback(lambda f: log.failure("Queue attempt for {id} failed", f, id=queue_id))
        d.addBoth(lambda _: self._finished(queue_id))

    def _finished(self, queue_id: str) -> None:
        self._busy.discard(queue_id)
        entry = self._entries.get(queue_id)
        if entry is not None:
            self.schedule.put(queue_id, entry.next_attempt)
        self._schedule()  # before waking waiters, who may look at the timer
        if not self._busy:
            waiters, self._idle = self._idle, []
            for waiter in waiters:
                waiter.callback(None)

    # --- One attempt ---------------------------------------------------------

    async def _attempt(self, entry: QueueEntry) -> None:
        try:
            await self._attempt_once(entry)
        except Exception:
            # A bug or a disk error: log it, and back off in memory so that
            # one bad entry cannot spin the runner.
            log.failure("Attempt for {id} failed; will retry", id=entry.id)
            if entry.id in self._entries:
                delay = self._delay_for(entry.attempts + 1)
                later = replace(entry, next_attempt=self.clock.seconds() + delay)
                self._put(later)

    async def _attempt_once(self, entry: QueueEntry) -> None:
        try:
            message = await self.queue.read_message(entry.id)
        except FileNotFoundError:
            self._forget(entry.id)  # deleted by the admin command
            return
        outcomes: dict[str, _Outcome] = {}
        local = [r.recipient for r in entry.pending if self.is_local(_domain(r.address))]
        remote = [r.recipient for r in entry.pending if not self.is_local(_domain(r.address))]
        work: list[Deferred[dict[str, _Outcome]]] = []
        if local:
            work.append(Deferred.fromCoroutine(self._deliver_locally(entry, local, message)))
        if remote:
            work.append(Deferred.fromCoroutine(self._deliver_remote(entry, remote, message)))
        for part in await defer.gatherResults(work, consumeErrors=True):
            outcomes.update(part)
        await self._record(entry, outcomes, message)

    async def _deliver_locally(
        self, entry: QueueEntry, recipients: list[Recipient], message: bytes
    ) -> dict[str, _Outcome]:
        out = {}
        for rcpt in recipients:
            try:
                await self.deliver_local(entry.envelope((rcpt,)), message)
                reply = Reply.synthetic(250, "2.0.0", "delivered to mailbox")
            except NoSuchUser:
                reply = Reply.synthetic(550, "5.1.1", "no such user here")
            except QuotaExceeded:
                reply = Reply.synthetic(452, "4.2.2", "mailbox full")
            except Exception:
                log.failure("Local delivery of {id} failed", id=entry.id)
                reply = Reply.synthetic(451, "4.3.0", "local delivery failed")
            out[rcpt.address] = _from_reply(reply, None)
        log.info(
            "{id}: local delivery: {done} of {count} done",
            id=entry.id,
            done=sum(o.status is not RecipientStatus.PENDING for o in out.values()),
            count=len(out),
        )
        return out

    async def _deliver_remote(
        self, entry: QueueEntry, recipients: list[Recipient], message: bytes
    ) -> dict[str, _Outcome]:
        out: dict[str, _Outcome] = {}
        domains = sorted({_domain(r.address) for r in recipients})
        routes = await defer.gatherResults(
            [Deferred.fromCoroutine(self._route(d)) for d in domains], consumeErrors=True
        )
        groups: dict[str, tuple[Route, list[Recipient]]] = {}
        for domain, value in zip(domains, routes, strict=True):
            members = [r for r in recipients if _domain(r.address) == domain]
            if isinstance(value, Reply):
                for rcpt in members:
                    out[rcpt.address] = _from_reply(value, None)
                continue
            group = groups.setdefault(value.key, (value, []))
            group[1].extend(members)
        sessions = [
            Deferred.fromCoroutine(self._session(entry, route, members, message))
            for route, members in groups.values()
        ]
        for part in await defer.gatherResults(sessions, consumeErrors=True):
            out.update(part)
        return out

    async def _route(self, domain: str) -> Route | Reply:
        try:
            return await self.router.route(domain)
        except RoutingError as err:
            return err.reply
        except Exception:
            log.failure("Routing {domain} failed", domain=domain)
            return Reply.synthetic(451, "4.4.3", "routing failed")

    async def _session(
        self, entry: QueueEntry, route: Route, recipients: list[Recipient], message: bytes
    ) -> dict[str, _Outcome]:
        """All of one destination's recipients, hop after hop until none is left to try."""
        semaphore = self._per_destination.get(route.key)
        if semaphore is None:
            semaphore = DeferredSemaphore(self.settings.max_per_destination)
            self._per_destination[route.key] = semaphore
        await semaphore.acquire()
        await self._total.acquire()
        try:
            return await self._try_hops(entry, route, recipients, message)
        finally:
            self._total.release()
            semaphore.release()
            if semaphore.tokens == semaphore.limit and not semaphore.waiting:
                self._per_destination.pop(route.key, None)

    async def _try_hops(
        self, entry: QueueEntry, route: Route, recipients: list[Recipient], message: bytes
    ) -> dict[str, _Outcome]:
        """
        RFC 5321 §5.1: each hop in order until every recipient is settled.

        A server that refuses service outright (a 5yz greeting, RFC 5321
        §3.1, or 5yz to EHLO and HELO) fails its recipients at once instead
        of retrying until expiry, but only once every other hop has been
        tried: that refusal is about one host (a block, a misconfiguration),
        and another exchanger may take the mail.  If any hop merely deferred
        a recipient (unreachable, 4yz), the recipient stays deferred with that
        reason.  (Postfix's smtp_skip_5xx_greeting instead defers even when
        every exchanger refuses; we bounce then, as §4.2.1 says of 5yz.)
        """
        out: dict[str, _Outcome] = {}
        deferred: dict[str, _Outcome] = {}
        remaining = list(recipients)
        for hop in route.hops:
            options = ClientOptions(
                helo_name=self.hostname,
                tls=route.tls,
                tls_hostname=hop.host,
                tls_options=self.tls_options,
                username=route.username,
                password=route.password,
                timeouts=self.settings.timeouts,
            )
            txn = Transaction(
                entry.sender,
                tuple(remaining),
                message,
                body=entry.body,
                smtputf8=entry.smtputf8,
                ret=entry.ret,
                envid=entry.envid,
            )
            try:
                result = await self.connections.deliver(hop, options, txn)
            except SMTPClientError as err:
                # RFC 5321 §5.1: a server that cannot be reached or will not
                # talk means the next exchanger; the reply is kept as the reason.
                log.info("{id}: {hop} failed: {error}", id=entry.id, hop=str(hop), error=str(err))
                remote = None if err.stage == "connect" else _remote_name(hop, err.peer)
                outcome = _from_reply(err.reply, remote)
                if outcome.status is RecipientStatus.FAILED and not err.refused_service:
                    # TLS or AUTH refused: our configuration, so keep the mail.
                    outcome = replace(outcome, status=RecipientStatus.PENDING)
                for rcpt in remaining:
                    out[rcpt.address] = outcome
                    if outcome.status is RecipientStatus.PENDING:
                        deferred[rcpt.address] = outcome
                continue
            still = []
            remote = _remote_name(hop, result.peer)
            for rcpt, rcpt_result in zip(remaining, result.recipients, strict=True):
                outcome = _from_reply(rcpt_result.reply, remote, result.dsn)
                out[rcpt.address] = outcome
                if outcome.status is RecipientStatus.PENDING:
                    still.append(rcpt)
                    deferred[rcpt.address] = outcome
            log.info(
                "{id}: {hop}: {done} of {count} recipient(s) settled",
                id=entry.id,
                hop=str(hop),
                done=len(remaining) - len(still),
                count=len(remaining),
            )
            remaining = still
            if not remaining:
                break
        for rcpt in remaining:
            if out[rcpt.address].status is RecipientStatus.FAILED and rcpt.address in deferred:
                out[rcpt.address] = deferred[rcpt.address]
        return out

    # --- Bookkeeping -----------------------------------------------------------

    def _delay_for(self, attempts: int) -> float:
        schedule = self.settings.retry_schedule or DEFAULT_SCHEDULE
        return schedule[min(max(attempts - 1, 0), len(schedule) - 1)]

    async def _record(
        self, entry: QueueEntry, outcomes: Mapping[str, _Outcome], message: bytes
    ) -> None:
        now = self.clock.seconds()
        attempts = entry.attempts + 1
        max_age = self.settings.max_age
        expired = now - entry.queued_at >= max_age
        states = []
        reports: list[dsn.Report] = []
        when = datetime.fromtimestamp(now, UTC)
        for state in entry.recipients:
            outcome = outcomes.get(state.address)
            if state.status is not RecipientStatus.PENDING or outcome is None:
                states.append(state)
                continue
            status = outcome.status
            reply = outcome.reply
            if status is RecipientStatus.PENDING and expired:
                status = RecipientStatus.FAILED
                reply = f"delivery time expired; last error: {outcome.reply}"
            new = replace(
                state,
                status=status,
                attempts=state.attempts + 1,
                reply=reply,
                status_code=outcome.status_code,
                remote=outcome.remote,
                updated_at=now,
            )
            states.append(new)
            action = None
            if status is RecipientStatus.FAILED:
                action = dsn.Action.FAILED
            elif status is RecipientStatus.DELIVERED and not outcome.remote_dsn:
                action = dsn.Action.RELAYED if outcome.remote else dsn.Action.DELIVERED
            if action is not None and dsn.wants(state.recipient, action):
                gave_up = status is not outcome.status  # failed only by expiry
                reports.append(
                    dsn.Report(
                        state.recipient,
                        action,
                        outcome.status_code,
                        reply,
                        outcome.remote,
                        when,
                        expired_after=now - entry.queued_at if gave_up else None,
                    )
                )
        updated = replace(
            entry,
            recipients=tuple(states),
            attempts=attempts,
            next_attempt=min(
                now + self._delay_for(attempts), entry.queued_at + self.settings.max_age
            ),
        )
        warn_after = self.settings.delay_warning
        if (
            warn_after
            and not updated.delay_warned
            and not updated.done
            and now - entry.queued_at >= warn_after
        ):
            updated = replace(updated, delay_warned=True)
            until = datetime.fromtimestamp(entry.queued_at + self.settings.max_age, UTC)
            for state in updated.pending:
                if dsn.wants(state.recipient, dsn.Action.DELAYED):
                    reports.append(
                        dsn.Report(
                            state.recipient,
                            dsn.Action.DELAYED,
                            state.status_code or "4.0.0",
                            state.reply,
                            state.remote,
                            when,
                            until,
                        )
                    )
        await self._notify(entry, reports, message)
        await self._save(updated)

    async def _notify(
        self, entry: QueueEntry, reports: Sequence[dsn.Report], message: bytes
    ) -> None:
        """Queue the DSNs first: a crash before saving repeats one, never loses one."""
        if not reports:
            return
        envelope = entry.envelope()
        if not dsn.may_notify(envelope):
            log.info("{id}: not reporting on a message with the null sender", id=entry.id)
            return
        by_action: dict[str, list[dsn.Report]] = {}
        for report in reports:
            kind = dsn.Action.DELIVERED if report.action == dsn.Action.RELAYED else report.action
            by_action.setdefault(kind, []).append(report)
        now = datetime.fromtimestamp(self.clock.seconds(), UTC)
        arrival = datetime.fromtimestamp(entry.queued_at, UTC)
        for group in by_action.values():
            raw = dsn.build(
                hostname=self.hostname,
                envelope=envelope,
                reports=group,
                message=message,
                arrival=arrival,
                now=now,
            )
            queue_id = await self.queue.enqueue(dsn.envelope_for(envelope, raw), raw)
            log.info(
                "{id}: {action} DSN {dsn_id} to <{sender}>",
                id=entry.id,
                action=group[0].action,
                dsn_id=queue_id,
                sender=entry.sender,
            )

    async def _save(self, entry: QueueEntry) -> None:
        if entry.done:
            # No log line: the session's "settled" line already says so.
            await self.queue.remove(entry.id)
            self._forget(entry.id)
            return
        if await self.queue.update(entry):
            self._put(entry)
        else:
            self._forget(entry.id)

    # --- Admin requests ----------------------------------------------------------

    def _check_requests(self) -> None:
        for queue_id, operation in self.queue.files.requests():
            if queue_id in self._busy:
                continue  # applied once the attempt in progress is recorded
            self._start(queue_id, self._apply(queue_id, operation))

    async def _apply(self, queue_id: str, operation: str) -> None:
        try:
            if queue_id == "ALL":
                ids = [k for k in self._entries if k not in self._busy]
            else:
                ids = [queue_id]
            for target in ids:
                entry = self._entries.get(target)
                if entry is None:
                    continue
                if operation == "retry":
                    await self._save(replace(entry, next_attempt=self.clock.seconds()))
                elif operation == "delete":
                    await self.queue.remove(target)
                    self._forget(target)
                    log.info("{id}: deleted by the administrator", id=target)
                elif operation == "bounce":
                    await self._bounce(entry)
                else:
                    log.warn("Unknown queue request {op} for {id}", op=operation, id=target)
        finally:
            self.queue.files.request_done(queue_id, operation)

    async def _bounce(self, entry: QueueEntry) -> None:
        message = await self.queue.read_message(entry.id)
        reply = Reply.synthetic(550, "5.0.0", "returned to sender by the administrator")
        outcomes = {s.address: _from_reply(reply, None) for s in entry.pending}
        await self._record(entry, outcomes, message)

    # --- Endpoints -----------------------------------------------------------------

    def _endpoint(self, hop: Hop) -> IStreamClientEndpoint:
        timeout = self.settings.connect_timeout
        if hop.endpoint:
            endpoint: IStreamClientEndpoint = clientFromString(self.reactor, hop.endpoint)  # type: ignore[no-untyped-call]
            return endpoint
        if hop.address is not None:
            if ":" in hop.address:
                return TCP6ClientEndpoint(self.reactor, hop.address, hop.port, timeout)  # type: ignore[no-untyped-call]
            return TCP4ClientEndpoint(self.reactor, hop.address, hop.port, timeout=timeout)
        return HostnameEndpoint(self.reactor, hop.host, hop.port, timeout=timeout)
