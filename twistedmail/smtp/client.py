"""
Our SMTP client: hands one message to one server and says what happened to
each recipient.

Written on Twisted's core instead of ``twisted.mail.smtp``'s client, which
dot-stuffs per 16 KiB chunk (so a ``.`` line at a chunk boundary truncates the
message silently) and turns CRLF into CR CR LF.  Here the body goes through
`DotStuffer`, whose output does not depend on how the input is chunked.

The conversation is one coroutine (`send_message`) over a small line protocol
(`SMTPClientProtocol`) that only parses replies, enforces the RFC 5321
§4.5.3.2 timeouts on an injected clock and streams the body with flow
control.  Session-level failures (no greeting, timeout, lost connection,
required TLS missing) raise `SMTPClientError`; everything about a transaction
(MAIL, RCPT, DATA replies) comes back as one `RecipientResult` per recipient.
The wire level (replies, the line protocol, dot-stuffing) lives in
`twistedmail.smtp.client_wire` and is re-exported here.
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from twisted.internet import ssl
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from twistedmail.model import Recipient
from twistedmail.smtp.client_wire import (
    CHUNK_SIZE,
    DotStuffer,
    ProtocolViolation,
    Reply,
    SMTPClientProtocol,
    stuff,
    xtext,
)

__all__ = [
    "CHUNK_SIZE",
    "ClientOptions",
    "DotStuffer",
    "ProtocolViolation",
    "RecipientResult",
    "Reply",
    "SMTPClientError",
    "SMTPClientProtocol",
    "SMTPConnection",
    "TLSOptionsFactory",
    "TLSPolicy",
    "Timeouts",
    "Transaction",
    "TransactionResult",
    "default_tls_options",
    "deliver",
    "send_message",
    "stuff",
    "xtext",
]

log = Logger()


# --- Values -------------------------------------------------------------------


class TLSPolicy(enum.Enum):
    """How much TLS a destination gets (RFC 3207, RFC 7435)."""

    NEVER = "never"
    #: Use STARTTLS when offered, accept any certificate, fall back to plain text.
    OPPORTUNISTIC = "opportunistic"
    #: Require STARTTLS and a certificate valid for the host name.
    REQUIRED = "required"


@dataclass(frozen=True, slots=True)
class Timeouts:
    """RFC 5321 §4.5.3.2 minimums, in seconds; ``quit`` is ours."""

    greeting: float = 300.0
    command: float = 300.0
    data_init: float = 120.0
    data_block: float = 180.0
    data_end: float = 600.0
    quit: float = 30.0


TLSOptionsFactory = Callable[[str, bool], Any]


def default_tls_options(hostname: str, verify: bool) -> Any:
    """
    Client TLS options when ``twistedmail.tls`` is not handed in: verified
    with the system roots when TLS is required, anything goes otherwise
    (opportunistic TLS must not fail on an unverifiable certificate).

    Each call makes a new OpenSSL context (for verified TLS that reads the
    system CA store, milliseconds of CPU): fine for one session; a
    long-lived sender (the queue runner) hands in a cache instead,
    ``twistedmail.outbound.tlscache.TLSOptionsCache``.
    """
    if verify:
        return ssl.optionsForClientTLS(hostname)
    return ssl.CertificateOptions(verify=False)


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """How to talk to one destination."""

    helo_name: str
    tls: TLSPolicy = TLSPolicy.OPPORTUNISTIC
    #: Name the server's certificate must carry (TLS required) and SNI.
    tls_hostname: str | None = None
    tls_options: TLSOptionsFactory = default_tls_options
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    #: Allow AUTH without TLS (loopback tests only; never for real hosts).
    auth_plaintext: bool = False
    timeouts: Timeouts = Timeouts()


@dataclass(frozen=True, slots=True)
class Transaction:
    """One message to send: the envelope parts the client needs, and the bytes."""

    sender: str
    recipients: tuple[Recipient, ...]
    message: bytes
    body: str | None = None
    smtputf8: bool = False
    ret: str | None = None
    envid: str | None = None


@dataclass(frozen=True, slots=True)
class RecipientResult:
    address: str
    reply: Reply

    @property
    def delivered(self) -> bool:
        return self.reply.positive

    @property
    def permanent(self) -> bool:
        return self.reply.permanent


@dataclass(frozen=True, slots=True)
class TransactionResult:
    """
    Per-recipient outcome.  ``dsn`` says the server took over RFC 3461
    notification duties (it offered DSN, so NOTIFY went with each RCPT).
    """

    recipients: tuple[RecipientResult, ...]
    dsn: bool = False
    tls: bool = False
    #: The address actually reached (the DSN's Remote-MTA for a static route).
    peer: str | None = None


class SMTPClientError(Exception):
    """
    The session failed as a whole; ``reply`` is the server's or a synthetic
    one; ``peer`` the address of the server when a connection was made.
    """

    def __init__(self, reply: Reply, stage: str, peer: str | None = None) -> None:
        super().__init__(f"{stage}: {reply}")
        self.reply = reply
        self.stage = stage
        self.peer = peer

    @property
    def refused_service(self) -> bool:
        """
        The server itself said, before any transaction, that it will never
        take mail from us: a 5yz greeting (RFC 5321 §3.1: 554 means no SMTP
        service here) or a 5yz to both EHLO and HELO (§4.2.1: permanent).
        Refused TLS or AUTH is our configuration, never this.
        """
        return self.stage in ("greeting", "EHLO") and self.reply.permanent


# --- The conversation -------------------------------------------------------------


def _session_error(err: Exception, stage: str) -> SMTPClientError:
    if isinstance(err, SMTPClientError):
        return err
    if isinstance(err, TimeoutError):
        return SMTPClientError(Reply.synthetic(421, "4.4.2", str(err)), stage)
    if isinstance(err, ProtocolViolation):
        return SMTPClientError(Reply.synthetic(421, "4.5.0", str(err)), stage)
    return SMTPClientError(Reply.synthetic(421, "4.4.2", f"connection lost during {stage}"), stage)


class _Session:
    """The state of one conversation, from greeting to QUIT."""

    def __init__(self, proto: SMTPClientProtocol, options: ClientOptions) -> None:
        self.proto = proto
        self.options = options
        self.extensions: dict[str, str] = {}
        self.esmtp = False
        self.tls = False

    async def command(self, line: bytes, stage: str, limit: float | None = None) -> Reply:
        self.proto.send(line)
        return await self.proto.next_reply(limit or self.options.timeouts.command, stage)

    async def hello(self) -> None:
        name = self.options.helo_name.encode(
            "idna" if not self.options.helo_name.isascii() else "ascii"
        )
        reply = await self.command(b"EHLO " + name, "EHLO")
        if reply.positive:
            self.esmtp = True
            self.extensions = {}
            for line in reply.lines[1:]:
                keyword, _, params = line.partition(" ")
                self.extensions[keyword.upper()] = params
            return
        # RFC 5321 §3.2: a server that does not know EHLO gets HELO.
        if reply.code in (500, 501, 502, 504, 550):
            reply = await self.command(b"HELO " + name, "HELO")
            if reply.positive:
                self.esmtp = False
                self.extensions = {}
                return
        raise SMTPClientError(reply, "EHLO")

    async def start(self) -> None:
        timeouts = self.options.timeouts
        greeting = await self.proto.next_reply(timeouts.greeting, "greeting")
        if greeting.code != 220:
            if greeting.permanent:
                # RFC 5321 §3.1: a server that greets with 554 waits for QUIT.
                self.proto.send(b"QUIT")
            raise SMTPClientError(greeting, "greeting")
        await self.hello()
        policy = self.options.tls
        if policy is not TLSPolicy.NEVER and "STARTTLS" in self.extensions:
            self.proto.expect_starttls()
            reply = await self.command(b"STARTTLS", "STARTTLS")
            if reply.code == 220:
                hostname = self.options.tls_hostname or "localhost"
                verify = policy is TLSPolicy.REQUIRED
                self.proto.transport.startTLS(self.options.tls_options(hostname, verify))  # type: ignore[union-attr]
                self.tls = True
                try:
                    # RFC 3207 §4.2: forget everything learnt before TLS.
                    await self.hello()
                except SMTPClientError:
                    raise
                except Exception as err:
                    # Most often a failed handshake; the caller may retry in
                    # plain text when TLS was only opportunistic (RFC 7435 §6).
                    failed = Reply.synthetic(421, "4.7.5", "TLS negotiation failed")
                    raise SMTPClientError(failed, "TLS") from err
            elif policy is TLSPolicy.REQUIRED:
                raise SMTPClientError(reply, "STARTTLS")
        if policy is TLSPolicy.REQUIRED and not self.tls:
            raise SMTPClientError(
                Reply.synthetic(421, "4.7.10", "TLS required but not offered"), "STARTTLS"
            )
        if self.options.username is not None:
            await self.authenticate()

    async def authenticate(self) -> None:
        """RFC 4954 with PLAIN (RFC 4616) or LOGIN; never in clear unless allowed."""
        if not self.tls and not self.options.auth_plaintext:
            raise SMTPClientError(
                Reply.synthetic(421, "4.7.11", "refusing to send credentials without TLS"), "AUTH"
            )
        mechanisms = self.extensions.get("AUTH", "").upper().split()
        user = (self.options.username or "").encode()
        password = (self.options.password or "").encode()
        if "PLAIN" in mechanisms:
            token = base64.b64encode(b"\0" + user + b"\0" + password)
            reply = await self.command(b"AUTH PLAIN " + token, "AUTH")
        elif "LOGIN" in mechanisms:
            reply = await self.command(b"AUTH LOGIN", "AUTH")
            if reply.code == 334:
                reply = await self.command(base64.b64encode(user), "AUTH")
            if reply.code == 334:
                reply = await self.command(base64.b64encode(password), "AUTH")
        else:
            reply = Reply.synthetic(421, "4.7.8", "server offers no usable AUTH mechanism")
        if reply.code != 235:
            # Credentials are configuration: keep the mail queued, never bounce it.
            raise SMTPClientError(
                Reply.synthetic(454, "4.7.0", f"authentication failed: {reply}"), "AUTH"
            )

    def mail_command(self, txn: Transaction, utf8: bool) -> bytes:
        params = []
        if "SIZE" in self.extensions:
            params.append(f"SIZE={len(txn.message)}")
        # RFC 6152 §3: without 8BITMIME we should downgrade or bounce; like
        # Postfix (and every server in practice accepting 8-bit) we send as is.
        # We do no BDAT, so BINARYMIME content goes as 8BITMIME.
        if txn.body in ("8BITMIME", "BINARYMIME") and "8BITMIME" in self.extensions:
            params.append("BODY=8BITMIME")
        if utf8:
            params.append("SMTPUTF8")
        if "DSN" in self.extensions:
            if txn.ret:
                params.append(f"RET={txn.ret}")
            if txn.envid:
                params.append(f"ENVID={xtext(txn.envid)}")
        line = f"MAIL FROM:<{txn.sender}>" + "".join(" " + p for p in params)
        return line.encode("utf-8")

    def rcpt_command(self, rcpt: Recipient) -> bytes:
        params = []
        if "DSN" in self.extensions:
            if rcpt.notify:
                params.append("NOTIFY=" + ",".join(rcpt.notify))
            if rcpt.orcpt:
                kind, _, addr = rcpt.orcpt.partition(";")
                params.append(f"ORCPT={kind};{xtext(addr)}")
        line = f"RCPT TO:<{rcpt.address}>" + "".join(" " + p for p in params)
        return line.encode("utf-8")

    def precheck(self, txn: Transaction) -> tuple[Reply | None, bool]:
        """A permanent reply that dooms the whole transaction before MAIL, and SMTPUTF8 use."""
        needs_utf8 = txn.smtputf8 or not (
            txn.sender.isascii() and all(r.address.isascii() for r in txn.recipients)
        )
        if needs_utf8 and "SMTPUTF8" not in self.extensions:
            # RFC 6531 §3.2: the message cannot be downgraded; bounce it cleanly.
            return Reply.synthetic(553, "5.6.7", "server does not support SMTPUTF8"), False
        limit = self.extensions.get("SIZE", "").strip()
        if limit.isdigit() and int(limit) > 0 and len(txn.message) > int(limit):
            # RFC 1870 §6: do not send what the server already said it refuses.
            return Reply.synthetic(
                552, "5.3.4", f"message exceeds the server's limit of {limit}"
            ), False
        return None, needs_utf8

    async def transaction(self, txn: Transaction, rset: bool = False) -> TransactionResult:
        """
        :param rset: start with RSET (a reused connection); with PIPELINING
            it goes in the same group as MAIL, saving a round trip per
            message (RFC 2920 §3.1 lets RSET appear anywhere in a group).
        :raises SMTPClientError: stage ``"RSET"`` when RSET failed (nothing
            of this transaction can have been delivered).
        """
        doom, utf8 = self.precheck(txn)
        if doom is not None:
            return self._all(txn, doom)
        timeouts = self.options.timeouts
        mail = self.mail_command(txn, utf8)
        rcpts = [self.rcpt_command(r) for r in txn.recipients]
        if "PIPELINING" in self.extensions:
            # RFC 2920 §3.1: MAIL, every RCPT and DATA in one group.
            self.proto.send(*([b"RSET"] if rset else []), mail, *rcpts, b"DATA")
            if rset:
                await self._rset_reply()
            mail_reply = await self.proto.next_reply(timeouts.command, "MAIL")
            rcpt_replies = [await self.proto.next_reply(timeouts.command, "RCPT") for _ in rcpts]
            data_reply = await self.proto.next_reply(timeouts.data_init, "DATA")
            if not mail_reply.positive:
                return self._all(txn, mail_reply)
            accepted = [r.positive for r in rcpt_replies]
            if not any(accepted):
                if data_reply.code == 354:
                    # A broken server opened DATA with no recipient: end it empty.
                    await self.command(b".", "DATA end", timeouts.data_end)
                return self._results(txn, rcpt_replies, None)
        else:
            if rset:
                self.proto.send(b"RSET")
                await self._rset_reply()
            mail_reply = await self.command(mail, "MAIL")
            if not mail_reply.positive:
                return self._all(txn, mail_reply)
            rcpt_replies = [await self.command(line, "RCPT") for line in rcpts]
            if not any(r.positive for r in rcpt_replies):
                await self.command(b"RSET", "RSET")
                return self._results(txn, rcpt_replies, None)
            data_reply = await self.command(b"DATA", "DATA", timeouts.data_init)
        if data_reply.code != 354:
            return self._results(txn, rcpt_replies, data_reply)
        await self.proto.write_body(stuff(txn.message), timeouts.data_block)
        final = await self.proto.next_reply(timeouts.data_end, "end of data")
        return self._results(txn, rcpt_replies, final)

    async def _rset_reply(self) -> None:
        try:
            reply = await self.proto.next_reply(self.options.timeouts.command, "RSET")
        except Exception as err:
            # The connection died while idle: the body was never sent.
            raise SMTPClientError(_session_error(err, "RSET").reply, "RSET") from err
        if not reply.positive:
            raise SMTPClientError(reply, "RSET")

    def _all(self, txn: Transaction, reply: Reply) -> TransactionResult:
        results = tuple(RecipientResult(r.address, reply) for r in txn.recipients)
        return TransactionResult(results, "DSN" in self.extensions, self.tls)

    def _results(
        self, txn: Transaction, rcpt_replies: list[Reply], final: Reply | None
    ) -> TransactionResult:
        results = []
        for rcpt, reply in zip(txn.recipients, rcpt_replies, strict=True):
            if reply.positive and final is not None:
                reply = final
            results.append(RecipientResult(rcpt.address, reply))
        return TransactionResult(tuple(results), "DSN" in self.extensions, self.tls)

    async def quit(self) -> None:
        try:
            await self.command(b"QUIT", "QUIT", self.options.timeouts.quit)
        except Exception as err:
            # The message is already handed over; a rude goodbye changes nothing.
            log.debug("QUIT failed: {error}", error=err)
        finally:
            self.proto.close()


class SMTPConnection:
    """
    An open session, ready for transactions: what a connection cache keeps
    between messages to the same host so that the TCP and TLS handshakes
    are paid once (Postfix's scache does the same).
    """

    def __init__(self, proto: SMTPClientProtocol, options: ClientOptions) -> None:
        self.proto = proto
        self.options = options
        self._session = _Session(proto, options)
        self.transactions = 0
        self.peer = _peer_host(proto)

    @classmethod
    async def open(
        cls, endpoint: IStreamClientEndpoint, clock: IReactorTime, options: ClientOptions
    ) -> SMTPConnection:
        """
        Connect, read the greeting, EHLO, STARTTLS and AUTH as the options say.

        :raises SMTPClientError: refused connections are 4.4.1; a failed TLS
            negotiation has stage ``"TLS"``.
        """
        try:
            proto = await endpoint.connect(_ClientFactory(clock))
        except Exception as err:
            reason = f"connection failed: {err.__class__.__name__}"
            raise SMTPClientError(Reply.synthetic(421, "4.4.1", reason), "connect") from err
        assert isinstance(proto, SMTPClientProtocol)
        return await cls.start(proto, options)

    @classmethod
    async def start(cls, proto: SMTPClientProtocol, options: ClientOptions) -> SMTPConnection:
        """`open` on an already connected protocol."""
        connection = cls(proto, options)
        try:
            await connection._session.start()
        except Exception as err:
            proto.close()
            error = _session_error(err, "greeting")
            error.peer = connection.peer
            raise error from err
        return connection

    @property
    def tls(self) -> bool:
        return self._session.tls

    @property
    def usable(self) -> bool:
        """Still connected and in a known state: may carry another message."""
        transport = self.proto.transport
        return (
            self.proto._failure is None
            and transport is not None
            and not getattr(transport, "disconnecting", False)
        )

    async def send(self, txn: Transaction) -> TransactionResult:
        """
        One transaction; on a reused connection RSET first (RFC 5321
        §4.1.1.5) so that whatever the last one left open is gone.

        :raises SMTPClientError: stage ``"RSET"`` when a reused connection
            turned out dead before anything was sent (just reconnect).
        """
        try:
            result = await self._session.transaction(txn, rset=self.transactions > 0)
        except Exception as err:
            self.proto.close()
            error = _session_error(err, "transaction")
            error.peer = self.peer
            raise error from err
        self.transactions += 1
        return replace(result, peer=self.peer)

    async def quit(self) -> None:
        await self._session.quit()


async def send_message(
    proto: SMTPClientProtocol, options: ClientOptions, txn: Transaction
) -> TransactionResult:
    """
    Run a whole session on a connected protocol: greeting, EHLO, STARTTLS,
    AUTH, one transaction, QUIT.

    :raises SMTPClientError: the session failed before per-recipient replies
        could be had; its ``reply`` says whether the failure is permanent.
    """
    connection = await SMTPConnection.start(proto, options)
    result = await connection.send(txn)
    await connection.quit()
    return result


def _peer_host(proto: SMTPClientProtocol) -> str | None:
    """The IP address (or UNIX socket path) at the other end, if known."""
    try:
        address = proto.transport.getPeer()  # type: ignore[union-attr]
    except Exception:
        return None
    host = getattr(address, "host", None) or getattr(address, "name", None)
    if isinstance(host, bytes):
        host = host.decode("utf-8", "replace")
    return host if isinstance(host, str) and host else None


class _ClientFactory(Factory):
    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock

    def buildProtocol(self, addr: object) -> SMTPClientProtocol:
        proto = SMTPClientProtocol(self.clock)
        proto.factory = self
        return proto


async def deliver(
    endpoint: IStreamClientEndpoint,
    clock: IReactorTime,
    options: ClientOptions,
    txn: Transaction,
) -> TransactionResult:
    """One message over a new connection; refusals become 4.4.1."""
    connection = await SMTPConnection.open(endpoint, clock, options)
    result = await connection.send(txn)
    await connection.quit()
    return result
