"""
One SMTP connection: `SMTPSession`, a state machine driven by a command
table (`COMMANDS`).

A command's handler either answers at once or returns a Deferred; while one
is pending, input is paused, so replies always come out in command order
under PIPELINING (RFC 2920 §3) however slow a check or a delivery is.  The
framing (lines, DATA, BDAT) is in `twistedmail.smtp.framing`, the body
reader in `twistedmail.smtp.data`, argument parsing in
`twistedmail.smtp.params`, SASL decoding in `twistedmail.smtp.sasl`, every
reply text in `twistedmail.smtp.replies`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IAddress, IDelayedCall
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from twistedmail.delivery import Delivered
from twistedmail.interfaces import IMailAccount, MailError, NoSuchUser, RelayDenied
from twistedmail.model import Envelope, Recipient
from twistedmail.routing import RemoteRoute, Route, route
from twistedmail.smtp import replies, sasl
from twistedmail.smtp.data import ChunkCollector, DataError, DataReader
from twistedmail.smtp.framing import FramedProtocol
from twistedmail.smtp.params import MailFrom, ParamError, parse_mail_from, parse_rcpt_to
from twistedmail.smtp.replies import Reply
from twistedmail.smtp.settings import Role
from twistedmail.smtp.trace import (
    TraceInfo,
    new_id,
    protocol_name,
    received_header,
    submission_headers,
)

if TYPE_CHECKING:  # pragma: no cover
    from twistedmail.smtp.server import SMTPFactory

log = Logger()

AUTH_LINE = 12288

_DATA_ERRORS = {
    DataError.TOO_BIG: replies.MESSAGE_TOO_BIG,
    DataError.BARE_NEWLINE: replies.BARE_NEWLINE,
    DataError.LINE_TOO_LONG: replies.DATA_LINE_TOO_LONG,
}


def _is_loopback(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


@dataclass
class _Transaction:
    """One MAIL ... DATA/BDAT transaction (RFC 5321 §3.3)."""

    mail: MailFrom
    routes: list[Route] = field(default_factory=list)
    attempts: int = 0
    chunks: ChunkCollector | None = None


Handler = Any  # Callable[[SMTPSession, str], Deferred[None] | None]


class SMTPSession(FramedProtocol):
    """One SMTP connection."""

    def __init__(self, factory: SMTPFactory) -> None:
        super().__init__()
        self.factory = factory
        self.settings = factory.settings
        self._clock = factory.clock
        self.max_line = AUTH_LINE
        self.client_ip = ""
        self._admitted = False
        self._connected = False
        self._tls = factory.role is Role.SUBMISSIONS
        self._helo: str | None = None
        self._esmtp = False
        self._user: str | None = None
        self._tx: _Transaction | None = None
        self._sasl: sasl.Mechanism | None = None
        self._errors = 0
        self._busy = False
        self._settled: list[Deferred[None]] = []
        self._closing = False
        self._bdat_last = False
        self._last_input = 0.0
        self._timer: IDelayedCall | None = None

    @property
    def _wire(self) -> Any:
        """The transport, with the TCP/TLS methods `ITransport` does not declare."""
        return self.transport

    # --- connection lifecycle ---------------------------------------------------

    def connectionMade(self) -> None:
        self._connected = True
        peer: IAddress = self._wire.getPeer()
        self.client_ip = str(getattr(peer, "host", "") or "")
        self._last_input = self._clock.seconds()
        if not self.factory.admit(self):
            self._send(replies.TOO_MANY_CONNECTIONS)
            return
        self._admitted = True
        # Plain TCP only: under TLS the transport's writes go through the TLS layer.
        self.flush_writes = not self._tls and hasattr(self.transport, "doWrite")
        self._send(replies.greeting(self.factory.hostname))
        self._timer = self._clock.callLater(self.settings.idle_timeout, self._check_idle)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._connected = False
        self.stop_input()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._admitted:
            self._admitted = False
            self.factory.release(self)

    def shut_down(self) -> Deferred[None]:
        """
        The server is stopping: take no new command, let a pending delivery
        finish and answer (a 421 in its place would make the client send the
        message again), then say 421 (RFC 5321 §3.8) and close.
        """
        self.stop_input()
        d = self.settled()
        d.addCallback(lambda _: self._send(replies.SHUTTING_DOWN))
        return d

    def _check_idle(self) -> None:
        self._timer = None
        if not self._connected:
            return
        idle = self._clock.seconds() - self._last_input
        if self._busy or idle < self.settings.idle_timeout:
            # A pending delivery is not the client's silence.
            wait = self.settings.idle_timeout - (0 if self._busy else idle)
            self._timer = self._clock.callLater(wait, self._check_idle)
            return
        log.info("Idle timeout for {client}", client=self.client_ip)
        self._send(replies.TIMEOUT)

    def dataReceived(self, data: bytes) -> None:
        self._last_input = self._clock.seconds()
        super().dataReceived(data)

    # --- output -------------------------------------------------------------------

    def _send(self, reply: Reply) -> None:
        if reply.is_syntax_error:
            self._errors += 1
        if not self._connected or self._closing:
            return
        self.send(reply.wire)
        if reply.closes:
            self._close()
        elif self._errors >= self.settings.max_errors:
            self._send(replies.TOO_MANY_ERRORS)

    def _close(self) -> None:
        self._closing = True
        self.stop_input()
        self._wire.loseConnection()

    # --- input ----------------------------------------------------------------------

    def line_too_long(self) -> None:
        if self._sasl is not None:
            self._sasl = None
        self._send(replies.LINE_TOO_LONG)

    def line_received(self, line: bytes) -> None:
        if self._sasl is not None:
            self._guarded(self._sasl_response, line)
        else:
            self._guarded(self._command, line)

    def data_finished(self, reader: DataReader) -> None:
        self._guarded(self._body_done, reader)

    def chunk_finished(self) -> None:
        self._guarded(self._chunk_done)

    def _guarded(self, step: Callable[..., Deferred[None] | None], *args: Any) -> None:
        """
        Run one step of the session; a bug in it costs this client a 451,
        never the connection or anybody else's session (STYLE.md §4).
        """
        try:
            result = step(*args)
        except Exception:
            log.failure("Unexpected error in SMTP session from {client}", client=self.client_ip)
            self._tx = None
            self._sasl = None
            self._send(replies.LOCAL_ERROR)
            return
        if result is not None:
            self._wait_for(result)

    def _wait_for(self, d: Deferred[None]) -> None:
        """Hold input until ``d`` fires, so the next reply cannot overtake."""
        self._busy = True
        # One callback pair, not addErrback + addBoth: this runs per message.
        d.addCallbacks(self._done, self._failed)
        if self._busy:
            self.pause_input()

    def _failed(self, failure: Failure) -> None:
        try:
            self._unexpected(failure)
        finally:
            self._done(None)

    def _unexpected(self, failure: Failure) -> None:
        log.failure(
            "Unexpected error in SMTP session from {client}", failure, client=self.client_ip
        )
        self._tx = None
        self._send(replies.LOCAL_ERROR)

    def _done(self, _: object) -> None:
        self._busy = False
        self.resume_input()
        if not self._busy:
            waiting, self._settled = self._settled, []
            for d in waiting:
                d.callback(None)

    def settled(self) -> Deferred[None]:
        """
        Fire once no command's answer is pending (and buffered input is
        processed): what tests and a graceful shutdown wait for.
        """
        if not self._busy:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._settled.append(d)
        return d

    def _command(self, line: bytes) -> Deferred[None] | None:
        verb_bytes, _, arg_bytes = line.partition(b" ")
        verb = verb_bytes.upper()
        limit = AUTH_LINE if verb == b"AUTH" else self.settings.max_command_line
        if len(line) + 2 > limit:
            self._send(replies.LINE_TOO_LONG)
            return None
        handler = COMMANDS.get(verb)
        if handler is None:
            self._send(replies.UNKNOWN_COMMAND)
            return None
        try:
            arg = arg_bytes.decode("utf-8").strip(" ")
        except UnicodeDecodeError:
            self._send(replies.BAD_SYNTAX)
            return None
        result: Deferred[None] | None = handler(self, arg)
        return result

    # --- session commands ------------------------------------------------------------

    def do_helo(self, arg: str) -> None:
        if not arg or " " in arg:
            self._send(replies.HELO_SYNTAX)
            return
        self._helo, self._esmtp, self._tx = arg, False, None
        self._send(replies.reply(250, None, f"{self.factory.hostname}"))

    def do_ehlo(self, arg: str) -> None:
        if not arg or " " in arg:
            self._send(replies.HELO_SYNTAX)
            return
        # RFC 5321 §4.1.4: EHLO in a session resets the transaction.
        self._helo, self._esmtp, self._tx = arg, True, None
        lines = [
            self.factory.hostname,
            "PIPELINING",
            f"SIZE {self.settings.max_message_size}",
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
            "DSN",
            "CHUNKING",
        ]
        if self.factory.tls_options is not None and not self._tls:
            lines.append("STARTTLS")
        if self._auth_offered() and self._user is None:
            lines.append("AUTH " + " ".join(sasl.MECHANISMS))
        self._send(Reply(250, None, tuple(lines)))

    def do_noop(self, arg: str) -> None:
        self._send(replies.OK)

    def do_rset(self, arg: str) -> None:
        if arg:
            self._send(replies.NO_ARGUMENTS)
            return
        self._tx = None
        self._send(replies.RESET_OK)

    def do_quit(self, arg: str) -> None:
        self._send(replies.BYE)
        self._close()

    def do_vrfy(self, arg: str) -> None:
        # RFC 5321 §3.5.3, §7.3: 252 for everybody, so VRFY tells nothing.
        self._send(replies.VRFY_CANNOT if arg else replies.VRFY_SYNTAX)

    def do_expn(self, arg: str) -> None:
        self._send(replies.NOT_IMPLEMENTED)  # RFC 5321 §7.3 allows turning it off

    def do_help(self, arg: str) -> None:
        self._send(replies.HELP)

    def do_starttls(self, arg: str) -> None:
        options = self.factory.tls_options
        if arg:
            self._send(replies.NO_ARGUMENTS)
            return
        if self._tls:
            self._send(replies.ALREADY_TLS)
            return
        if options is None:
            self._send(replies.NOT_IMPLEMENTED)
            return
        self._send(replies.READY_FOR_TLS)
        self.flush_writes = False
        # RFC 3207 §5/§4.2: anything pipelined after STARTTLS arrived in the
        # clear and must not be executed; all earlier state is forgotten.
        self.discard_input()
        self._wire.startTLS(options)
        self._tls = True
        self._helo, self._esmtp, self._tx, self._user = None, False, None, None

    # --- AUTH (RFC 4954) ----------------------------------------------------------------

    def _auth_offered(self) -> bool:
        if self.factory.role is Role.MX or self.factory.portal is None:
            return False
        if self._tls:
            return True
        return self.settings.allow_plaintext_auth_on_loopback and _is_loopback(self.client_ip)

    def do_auth(self, arg: str) -> Deferred[None] | None:
        if self.factory.role is Role.MX or self.factory.portal is None:
            self._send(replies.AUTH_NOT_AVAILABLE)
            return None
        if not self._esmtp:
            self._send(replies.SEND_HELO_FIRST)
            return None
        if self._user is not None:
            self._send(replies.ALREADY_AUTHENTICATED)
            return None
        if self._tx is not None:
            self._send(replies.AUTH_IN_TRANSACTION)
            return None
        if not self._auth_offered():
            self._send(replies.ENCRYPTION_REQUIRED)
            return None
        if not self.factory.throttle.allowed(self.client_ip):
            self._send(replies.AUTH_LOCKED)
            return None
        name, _, initial = arg.partition(" ")
        try:
            mechanism = sasl.start(name)
        except sasl.SaslError as e:
            self._send(e.reply)
            return None
        self._sasl = mechanism
        return self._sasl_step(initial.strip() or None)

    def _sasl_response(self, line: bytes) -> Deferred[None] | None:
        try:
            text = line.decode("ascii").strip()
        except UnicodeDecodeError:
            text = "!"  # not base64: _decode refuses it
        return self._sasl_step(text)

    def _sasl_step(self, response: str | None) -> Deferred[None] | None:
        assert self._sasl is not None
        try:
            result = self._sasl.step(response)
        except sasl.SaslError as e:
            self._sasl = None
            if e.counts:
                self._auth_failed()
            else:
                self._send(e.reply)
            return None
        if isinstance(result, sasl.Challenge):
            if self._connected and not self._closing:
                self.send(replies.auth_challenge(result.text))
            return None
        self._sasl = None
        # The user is known only now: refuse a locked account (unless this
        # address logged in to it before) before the password is checked.
        if not self.factory.throttle.allowed(self.client_ip, result.username):
            self._send(replies.AUTH_LOCKED)
            return None
        return self._login(result)

    def _login(self, credentials: sasl.Credentials) -> Deferred[None]:
        portal = self.factory.portal
        assert portal is not None
        creds = UsernamePassword(
            credentials.username.encode("utf-8"), credentials.password.encode("utf-8")
        )
        d: Deferred[Any] = portal.login(creds, None, IMailAccount)

        def succeeded(result: tuple[Any, Any, Any]) -> None:
            _iface, avatar, logout = result
            logout()
            self._user = str(avatar.user)
            self.factory.throttle.succeeded(self.client_ip, credentials.username)
            log.info("{user} authenticated from {client}", user=self._user, client=self.client_ip)
            self._send(replies.AUTH_OK)

        def failed(failure: Failure) -> None:
            if isinstance(failure.value, UnauthorizedLogin):
                self._auth_failed(credentials.username)
            else:
                log.failure("AUTH failed unexpectedly", failure)
                self._send(replies.TEMPORARY_AUTH_FAILURE)

        done: Deferred[None] = d.addCallbacks(succeeded, failed)
        return done

    def _auth_failed(self, username: str | None = None) -> None:
        """Count a failure against the address and, once known, the account."""
        self.factory.throttle.failed(self.client_ip, username)
        self._send(replies.AUTH_FAILED)
        if not self.factory.throttle.allowed(self.client_ip, username):
            self._send(replies.AUTH_LOCKED)

    # --- the mail transaction ----------------------------------------------------------

    def do_mail(self, arg: str) -> None:
        if self._helo is None:
            self._send(replies.SEND_HELO_FIRST)
            return
        if self._tx is not None:
            self._send(replies.NESTED_MAIL)
            return
        if self.factory.role is not Role.MX and self._user is None:
            # RFC 6409 §4.3: submission needs authentication.
            self._send(replies.AUTH_REQUIRED)
            return
        try:
            mail = parse_mail_from(arg, self.settings.max_message_size)
        except ParamError as e:
            self._send(e.reply)
            return
        if not self._esmtp and mail.has_parameters:
            self._send(replies.UNKNOWN_PARAMETER)  # parameters need EHLO
            return
        if self._user is not None and not self._may_send_as(self._user, mail.sender):
            log.info("{user} may not send as {sender}", user=self._user, sender=mail.sender)
            self._send(replies.SENDER_NOT_OWNED)
            return
        self._tx = _Transaction(mail)
        self._send(replies.SENDER_OK)

    def _may_send_as(self, user: str, sender: str) -> bool:
        """
        RFC 6409 §6.1: an authenticated user sends only as an address of
        theirs (`Accounts.may_send_as`), so one user cannot impersonate
        another, nor anybody else, through us; Postfix's
        reject_sender_login_mismatch does the same.  Only the envelope is
        checked: the From: header is the user's to write, as with Postfix
        (the HTTP API checks From because it writes the message itself).
        The null sender is always allowed: RFC 6409 §3.2 says it MUST NOT
        in itself be a reason to refuse (MUAs send MDNs with it, RFC 5321 §4.5.5).
        """
        if not sender or not self.settings.enforce_sender_identity:
            return True
        return bool(self.factory.accounts.may_send_as(user, sender))

    def do_rcpt(self, arg: str) -> None:
        tx = self._tx
        if tx is None:
            self._send(replies.NEED_MAIL)
            return
        tx.attempts += 1
        if len(tx.routes) >= self.settings.max_recipients:
            self._send(replies.TOO_MANY_RECIPIENTS)  # RFC 5321 §4.5.3.1.10
            return
        try:
            rcpt = parse_rcpt_to(arg, tx.mail.smtputf8)
        except ParamError as e:
            self._send(e.reply)
            return
        # A bare <postmaster> stays so: routing knows whose it is (RFC 5321 §4.1.1.3).
        recipient = Recipient(rcpt.address, rcpt.notify, rcpt.orcpt)
        try:
            decided = route(self.factory.accounts, recipient, may_relay=self._user is not None)
        except (NoSuchUser, RelayDenied) as e:
            self._send(replies.for_error(e))
            return
        except ValueError:
            self._send(replies.BAD_RECIPIENT)
            return
        if isinstance(decided, RemoteRoute) and not self.factory.delivery.can_relay:
            self._send(replies.NO_OUTBOX)
            return
        tx.routes.append(decided)
        self._send(replies.RECIPIENT_OK)

    def _ready_for_body(self, tx: _Transaction | None) -> Reply | None:
        """Why the transaction cannot take a body now, or None."""
        if tx is None:
            return replies.NEED_MAIL
        if not tx.routes:
            # RFC 2920 §3.1: with pipelined RCPTs all refused, DATA gets 554.
            return replies.NO_VALID_RECIPIENTS if tx.attempts else replies.NEED_RCPT
        return None

    def do_data(self, arg: str) -> None:
        if arg:
            self._send(replies.NO_ARGUMENTS)
            return
        tx = self._tx
        problem = self._ready_for_body(tx)
        if problem is None and tx is not None and tx.chunks is not None:
            problem = replies.BDAT_AFTER_DATA
        if problem is not None:
            self._send(problem)
            return
        self._send(replies.START_DATA)
        self.start_data(DataReader(self.settings.max_message_size, self.settings.max_text_line))

    def _body_done(self, reader: DataReader) -> Deferred[None] | None:
        self._last_input = self._clock.seconds()
        if reader.error is not None:
            self._refuse_body(reader.error)
            return None
        return self._deliver_now(reader.message())

    def do_bdat(self, arg: str) -> None:
        parts = arg.split()
        if not 1 <= len(parts) <= 2 or not parts[0].isdigit() or not parts[0].isascii():
            self._send(replies.BDAT_SYNTAX)
            return
        if len(parts) == 2 and parts[1].upper() != "LAST":
            self._send(replies.BDAT_SYNTAX)
            return
        self._bdat_last = len(parts) == 2
        tx = self._tx
        # RFC 3030 §2: the chunk is read whatever the answer will be.
        ready = self._ready_for_body(tx) is None
        if ready and tx is not None and tx.chunks is None:
            tx.chunks = ChunkCollector(self.settings.max_message_size, self.settings.max_text_line)
        self.start_chunk(int(parts[0]))

    def chunk_data(self, data: bytes) -> None:
        tx = self._tx
        if tx is not None and tx.chunks is not None:
            tx.chunks.add(data)

    def _chunk_done(self) -> Deferred[None] | None:
        self._last_input = self._clock.seconds()
        tx = self._tx
        problem = self._ready_for_body(tx)
        if problem is not None or tx is None or tx.chunks is None:
            self._send(problem or replies.NEED_MAIL)
            return None
        chunks = tx.chunks
        if chunks.error is DataError.TOO_BIG:
            self._refuse_body(DataError.TOO_BIG)
            return None
        if not self._bdat_last:
            self._send(replies.chunk_received(chunks.size))
            return None
        message = chunks.finish()
        if chunks.error is not None:
            self._refuse_body(chunks.error)
            return None
        return self._deliver_now(message)

    def _refuse_body(self, error: DataError) -> None:
        log.info("Refused message from {client}: {why}", client=self.client_ip, why=error.value)
        self._tx = None
        self._send(_DATA_ERRORS[error])

    def _deliver_now(self, body: bytes) -> Deferred[None]:
        tx, self._tx = self._tx, None
        assert tx is not None
        return self._accept(tx, body)

    def _accept(self, tx: _Transaction, body: bytes) -> Deferred[None]:
        """Add our headers and deliver; 250 only once everything is durable."""
        mail = tx.mail
        info = TraceInfo(
            helo=self._helo or "",
            client_ip=self.client_ip,
            hostname=self.factory.hostname,
            protocol=protocol_name(
                esmtp=self._esmtp,
                tls=self._tls,
                authenticated=self._user is not None,
                utf8=mail.smtputf8,
            ),
            message_id=new_id(),
            date=self.factory.dates.format(self._clock.seconds()),
        )
        single = tx.routes[0].recipient.address if len(tx.routes) == 1 else None
        head = received_header(info, single)
        if self.factory.role is not Role.MX:
            head += submission_headers(body, info)
        message = head + body
        envelope = Envelope(
            sender=mail.sender,
            recipients=tuple([r.recipient for r in tx.routes]),
            ret=mail.ret,
            envid=mail.envid,
            body=mail.body,
            smtputf8=mail.smtputf8,
            size=len(message),
        )
        d = self.factory.delivery.deliver(envelope, message, tx.routes)

        def delivered(result: Delivered) -> None:
            log.info(
                "Accepted {id} from {client} for {count} recipients",
                id=info.message_id,
                client=self.client_ip,
                count=len(tx.routes),
            )
            self._send(replies.queued(info.message_id))

        def failed(failure: Failure) -> None:
            if isinstance(failure.value, MailError):  # expected; delivery logged the detail
                log.warn("Delivery of {id} failed: {why!r}", id=info.message_id, why=failure.value)
            else:
                log.failure("Delivery of {id} failed", failure, id=info.message_id)
            self._send(replies.for_error(failure.value or Exception()))

        done: Deferred[None] = d.addCallbacks(delivered, failed)
        return done


COMMANDS: dict[bytes, Handler] = {
    b"HELO": SMTPSession.do_helo,
    b"EHLO": SMTPSession.do_ehlo,
    b"MAIL": SMTPSession.do_mail,
    b"RCPT": SMTPSession.do_rcpt,
    b"DATA": SMTPSession.do_data,
    b"BDAT": SMTPSession.do_bdat,
    b"RSET": SMTPSession.do_rset,
    b"NOOP": SMTPSession.do_noop,
    b"QUIT": SMTPSession.do_quit,
    b"VRFY": SMTPSession.do_vrfy,
    b"EXPN": SMTPSession.do_expn,
    b"HELP": SMTPSession.do_help,
    b"STARTTLS": SMTPSession.do_starttls,
    b"AUTH": SMTPSession.do_auth,
}
