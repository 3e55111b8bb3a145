"""
The one place an accepted message becomes stored or queued mail.

SMTP (end of DATA/BDAT), the HTTP send API and outbound bounces all call
`Delivery.deliver` with an envelope, the message bytes and the routes
decided by `twistedmail.routing`.  It knows no protocol.

Semantics (the caller answers success only when the Deferred fires):

* Each distinct local user gets one copy in INBOX, with ``Return-Path:``
  prepended (RFC 5321 §4.4: added at final delivery), however many of the
  recipients' addresses lead to them.
* Remote recipients are handed to the `IOutbox` in one `enqueue`, without
  ``Return-Path`` (that is the final MTA's job).
* All or nothing.  SMTP gives one reply for the whole DATA (RFC 5321
  §4.1.1.4; unlike LMTP there is no per-recipient answer), so if any local
  delivery or the enqueue fails, the copies already stored are expunged
  again and the error is raised: the client gets a 4xx, retries, and no
  recipient ends up with a duplicate.  Their IMAP sessions may briefly see
  the message come and go; that is the price of no duplicates.  A rollback
  that itself fails is logged (and that user may then get a duplicate).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import NamedTuple, cast

from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger
from twisted.python.failure import Failure

from twistedmail.interfaces import (
    IMailAccount,
    IMailStore,
    IOutbox,
    MailError,
    TemporaryFailure,
)
from twistedmail.model import DELETED, Appended, Envelope, FlagMode
from twistedmail.routing import Route, local_users, remote_recipients

log = Logger()


def return_path(sender: str) -> bytes:
    """``Return-Path: <sender>`` (``<>`` for the null sender of a bounce)."""
    return f"Return-Path: <{sender}>\r\n".encode()


class Delivered(NamedTuple):
    """
    What a successful delivery did: the local copies and the queue id.  A
    NamedTuple: one per message, cheaper to build than a frozen dataclass.
    """

    stored: tuple[tuple[str, Appended], ...]
    queue_id: str | None


class Delivery:
    """Delivers accepted messages into the store and the outbound queue."""

    def __init__(self, store: IMailStore, outbox: IOutbox | None) -> None:
        self._store = store
        self._outbox = outbox

    @property
    def can_relay(self) -> bool:
        """False until an outbound queue exists: remote recipients are refused."""
        return self._outbox is not None

    def deliver(
        self, envelope: Envelope, message: bytes, routes: Sequence[Route]
    ) -> Deferred[Delivered]:
        """
        Store ``message`` for every local route and queue it for the remote
        ones; fire when all of it is durable.

        :raises TemporaryFailure: a remote route but no outbox, or a store
            or the queue failed transiently (nothing remains delivered).
        :raises QuotaExceeded: a local user's mailbox is full (likewise).
        """
        users = local_users(routes)
        if len(users) == 1 and not remote_recipients(routes):
            return self._deliver_one(users[0], envelope, message)
        return Deferred.fromCoroutine(self._deliver(envelope, message, routes))

    def _deliver_one(self, user: str, envelope: Envelope, message: bytes) -> Deferred[Delivered]:
        """
        The common case, one local user and nobody remote, as plain callbacks:
        nothing to roll back, and no coroutine or DeferredList on the path
        every SMTP delivery takes (they cost more than the index append).
        """
        local_copy = return_path(envelope.sender) + message
        d: Deferred[IMailAccount] = self._store.account(user)

        def store(account: IMailAccount) -> Deferred[Appended]:
            return account.deliver(local_copy)

        def stored(appended: Appended) -> Delivered:
            self._delivered(user, appended)
            return Delivered(((user, appended),), None)

        def failed(failure: Failure) -> Failure:
            self._log_failure(failure)
            return failure

        return d.addCallback(store).addCallbacks(stored, failed)

    @staticmethod
    def _delivered(user: str, appended: Appended) -> None:
        log.info(
            "Delivered to {user} uid {uid} ({size} octets)",
            user=user,
            uid=appended.info.uid,
            size=appended.info.size,
        )

    @staticmethod
    def _log_failure(f: Failure) -> None:
        if isinstance(f.value, MailError):
            log.warn("Local delivery failed: {why!r}", why=f.value)
        else:
            log.failure("Local delivery failed", f)

    async def _deliver(
        self, envelope: Envelope, message: bytes, routes: Sequence[Route]
    ) -> Delivered:
        users = local_users(routes)
        remote = remote_recipients(routes)
        if remote and self._outbox is None:
            raise TemporaryFailure("remote recipients but no outbound queue")
        local_copy = return_path(envelope.sender) + message
        results = await DeferredList(
            [Deferred.fromCoroutine(self._store_one(user, local_copy)) for user in users],
            consumeErrors=True,
        )
        stored: list[tuple[str, IMailAccount, Appended]] = []
        failures: list[Failure] = []
        for ok, value in results:
            if ok:
                stored.append(value)
            else:
                failures.append(cast(Failure, value))
        if failures:
            for f in failures:
                self._log_failure(f)
            await self._rollback(stored)
            failures[0].raiseException()
        queue_id = None
        if remote:
            assert self._outbox is not None
            try:
                queue_id = await self._outbox.enqueue(replace(envelope, recipients=remote), message)
            except Exception:
                log.failure("Queueing for {count} remote recipients failed", count=len(remote))
                await self._rollback(stored)
                raise
        for user, _account, appended in stored:
            self._delivered(user, appended)
        return Delivered(tuple((u, a) for u, _acc, a in stored), queue_id)

    async def _store_one(self, user: str, message: bytes) -> tuple[str, IMailAccount, Appended]:
        account = await self._store.account(user)
        appended = await account.deliver(message)
        return user, account, appended

    async def _rollback(self, stored: Sequence[tuple[str, IMailAccount, Appended]]) -> None:
        for user, account, appended in stored:
            uid = appended.info.uid
            try:
                await account.set_flags(appended.mailbox, [uid], [DELETED], FlagMode.ADD)
                await account.expunge(appended.mailbox, [uid])
            except Exception:
                log.failure("Rollback of uid {uid} for {user} failed", uid=uid, user=user)
