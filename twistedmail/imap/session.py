"""
One IMAP connection: framing, the state machine and command dispatch.

Framing (RFC 3501 §2.2, §4.3, §7.5): a command is a line, or a line ending
in a literal announcement ``{n}`` / ``{n+}`` followed by ``n`` octets and
more of the command.  The size is checked *before* any octet is read: an
acceptable synchronising literal gets ``+ go ahead``; an unacceptable one
ends the command with a tagged reply and no continuation, so the client
never sends it; an unacceptable non-synchronising one (RFC 7888 §4) is
read and thrown away, or the connection is closed when it is absurd.

Commands run one at a time: while one is in progress the receiver is
paused, so pipelined commands wait in the buffer and responses never
interleave.  A running command may ask for a continuation line
(AUTHENTICATE, IDLE's DONE) through `IMAPSession.read_line`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, ISSLTransport
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from twistedmail.imap import commands_auth, commands_mailbox, commands_message
from twistedmail.imap.dispatch import CommandSpec, State
from twistedmail.imap.errors import Reply, bad, no, reply_for
from twistedmail.imap.flow import WriteFlow
from twistedmail.imap.parser import CommandError, parse_command, parse_tag
from twistedmail.imap.searchkeys import CHARSETS, UnsupportedCharset
from twistedmail.imap.selected import SelectedMailbox
from twistedmail.imap.syntax import ParseError
from twistedmail.interfaces import IMailAccount

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable

    from twistedmail.imap.server import IMAPFactory

log = Logger()

_LITERAL_END = re.compile(rb"\{(\d+)(\+?)\}\Z")
_APPEND = re.compile(rb"[^ ]+ APPEND ", re.IGNORECASE)
# More digits than this is no size anyone means; refuse it without arithmetic.
_MAX_DIGITS = 12

COMMANDS: dict[str, CommandSpec] = {
    **commands_auth.COMMANDS,
    **commands_mailbox.COMMANDS,
    **commands_message.COMMANDS,
}


#: Commands that leave the selected mailbox (or, IDLE, flush by themselves):
#: news of the old mailbox is not worth sending first.
_NO_PRE_FLUSH = frozenset({"IDLE", "SELECT", "EXAMINE", "CLOSE", "UNSELECT"})


#: Seconds a closing connection waits for the client's side of the TLS
#: shutdown (or its EOF) before it is aborted.
CLOSE_GRACE = 10.0


class ConnectionGone(Exception):
    """The client went away while a command waited for a continuation line."""


class IMAPSession(LineReceiver):
    def __init__(self, server: IMAPFactory, secure: bool = False) -> None:
        self.server = server
        self.settings = server.settings
        self.MAX_LENGTH = server.settings.max_line_length
        self.state = State.NOT_AUTHENTICATED
        self.secure = secure
        self.account: IMailAccount | None = None
        self.user: str | None = None
        self.selected: SelectedMailbox | None = None
        #: RFC 7162 §3.1: CONDSTORE enabled (ENABLE, SELECT (CONDSTORE) or use).
        self.condstore = False
        #: RFC 7162 §3.2: QRESYNC enabled (VANISHED instead of EXPUNGE).
        self.qresync = False
        self.idling = False
        self._logout: Callable[[], None] | None = None
        self._parts: list[bytes] = []
        self._size = 0
        self._literal_left = 0
        self._literal_chunks: list[bytes] = []
        self._discarding = False
        self._waiter: Deferred[bytes] | None = None
        self._running = False
        self._in_dispatch = False
        self._after_reply: Callable[[], None] | None = None
        self._timer: IDelayedCall | None = None
        self._closing: IDelayedCall | None = None
        self._counted = False
        self.flow = WriteFlow(server.reactor)
        self._shutting_down = False
        self._closed: list[Deferred[None]] = []

    # --- connection -----------------------------------------------------------------

    @property
    def peer_host(self) -> str:
        peer = self.transport.getPeer() if self.transport is not None else None
        return str(getattr(peer, "host", "unknown"))

    def connectionMade(self) -> None:
        # Implicit TLS done by the listener (the daemon wraps ``imaps`` in
        # TLSMemoryBIOFactory, or an ``ssl:`` endpoint): already secure.
        if ISSLTransport.providedBy(self.transport):
            self.secure = True
        if self.transport is not None:
            self.transport.registerProducer(self.flow, True)  # type: ignore[attr-defined]
        self.server.sessions.add(self)
        self._reset_timer()
        caps = " ".join(commands_auth.capabilities(self))
        self.write(
            b"* OK [CAPABILITY %s] %s IMAP4rev1 ready\r\n"
            % (caps.encode(), self.server.hostname.encode())
        )

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.state = State.LOGOUT
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._closing is not None and self._closing.active():
            self._closing.cancel()
        self._closing = None
        self.unselect()
        if self._counted and self.user is not None:
            self.server.release_user(self.user)
            self._counted = False
        if self._logout is not None:
            logout, self._logout = self._logout, None
            logout()
        if self._waiter is not None:
            waiter, self._waiter = self._waiter, None
            waiter.errback(ConnectionGone())
        self.flow.stopProducing()
        self.server.sessions.discard(self)
        closed, self._closed = self._closed, []
        for d in closed:
            d.callback(None)

    def shut_down(self) -> Deferred[None]:
        """
        Say BYE and close (RFC 3501 §7.1.5); fires once the connection is
        gone.  A command in progress is answered first, so that a client
        whose APPEND was stored is told so.
        """
        closed: Deferred[None] = Deferred()
        self._closed.append(closed)
        if self._running and not self.idling and self._waiter is None:
            self._shutting_down = True
        else:
            self._say_bye()
        return closed

    def _say_bye(self) -> None:
        self.write(b"* BYE Server shutting down\r\n")
        self.close()

    def _reset_timer(self) -> None:
        # RFC 3501 §5.4: the autologout timer is at least 30 minutes.  Before
        # login a connection is a stranger's and gets only login_timeout (as
        # Dovecot's 3 minutes), so idle strangers cannot hold connections.
        timeout = self.settings.idle_timeout
        if self.state is State.NOT_AUTHENTICATED:
            timeout = min(timeout, self.settings.login_timeout)
        if self._timer is not None and self._timer.active():
            self._timer.reset(timeout)
        else:
            self._timer = self.server.clock.callLater(timeout, self._timed_out)

    def _timed_out(self) -> None:
        self.write(b"* BYE Autologout; idle for too long\r\n")
        self.close()

    def close(self) -> None:
        self.state = State.LOGOUT
        transport = self.transport
        if transport is None or self._closing is not None:
            return
        # Over TLS (STARTTLS or imaps) loseConnection waits for a registered
        # producer to unregister, then sends close_notify and waits for the
        # peer's close_notify or EOF, which a transport paused for the running
        # command would never read: the connection, and a daemon stopping,
        # would wait forever.  So unregister, read again (dataReceived drops
        # what arrives now), and abort a peer that never answers.
        transport.unregisterProducer()  # type: ignore[attr-defined]
        self._resume_transport()
        transport.loseConnection()
        self._closing = self.server.clock.callLater(CLOSE_GRACE, self._abort)

    def _abort(self) -> None:
        self._closing = None
        abort = getattr(self.transport, "abortConnection", None)
        if abort is not None:
            abort()

    def dataReceived(self, data: bytes) -> None:
        if self.state is State.LOGOUT and self._closing is not None:
            return  # closing: nothing more is a command
        super().dataReceived(data)  # type: ignore[no-untyped-call]

    # --- output ---------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def untagged(self, line: bytes) -> None:
        self.write(b"* " + line + b"\r\n")

    def continuation(self, text: bytes = b"Ready") -> None:
        self.write(b"+ " + text + b"\r\n")

    def flush_updates(self, allow_expunge: bool) -> None:
        """Send what the selected view has learnt, where RFC 3501 §7.4.1 allows."""
        view = self.selected
        if view is None:
            return
        if view.gone:
            # The mailbox was deleted under us (another session): there is no
            # state left to report against.
            self.write(b"* BYE Selected mailbox was deleted\r\n")
            self.close()
            return
        lines = view.updates(allow_expunge, self.condstore, self.qresync)
        if lines:
            self.write(b"".join(lines))

    def _changed(self) -> None:
        # RFC 2177: while idling, updates go out as they happen.
        if self.idling:
            self.flush_updates(True)

    # --- mailbox selection ------------------------------------------------------------

    def make_view(self, name: str, read_only: bool) -> SelectedMailbox:
        assert self.account is not None
        return SelectedMailbox(
            self.account, name, read_only, self._changed, self.server.recent, self.user or ""
        )

    def select(self, view: SelectedMailbox) -> None:
        self.unselect()
        self.selected = view
        self.state = State.SELECTED

    def unselect(self) -> None:
        if self.selected is not None:
            self.selected.close()
            self.selected = None
            if self.state is State.SELECTED:
                self.state = State.AUTHENTICATED

    # --- login ----------------------------------------------------------------------

    def plaintext_allowed(self) -> bool:
        """Whether LOGIN / AUTHENTICATE PLAIN may be used now (RFC 3501 §6.2.3)."""
        if self.secure:
            return True
        loopback = self.peer_host.startswith("127.") or self.peer_host == "::1"
        return self.settings.allow_plaintext_login_on_loopback and loopback

    def logged_in(self, account: IMailAccount, logout: Callable[[], None]) -> Reply | None:
        """Enter the authenticated state, unless the user has too many connections."""
        user = str(account.user)
        if not self.server.claim_user(user):
            logout()
            return no("Too many connections for this user", "LIMIT")
        self._counted = True
        self.user = user
        self.account = account
        self._logout = logout
        self.state = State.AUTHENTICATED
        self._reset_timer()  # the full autologout time from now on
        log.info("IMAP login {user} from {peer}", user=user, peer=self.peer_host)
        return None

    def after_reply(self, action: Callable[[], None]) -> None:
        """Run ``action`` right after the tagged reply is written (STARTTLS)."""
        self._after_reply = action

    def start_tls(self) -> None:
        # RFC 3501 §6.2.1 / RFC 7817: anything the client pipelined after
        # STARTTLS was sent in the clear; throw it away.
        self._buffer = b""
        self.transport.startTLS(self.server.tls_options)  # type: ignore[union-attr]
        self.secure = True

    # --- continuation lines -----------------------------------------------------------

    def read_line(self) -> Deferred[bytes]:
        """The next line the client sends, for the running command."""
        waiter: Deferred[bytes] = Deferred()
        self._waiter = waiter
        self.paused = False
        self._resume_transport()
        if not self._busyReceiving and self._buffer:
            self.dataReceived(b"")  # type: ignore[no-untyped-call]
        return waiter

    # --- framing ----------------------------------------------------------------------

    def lineReceived(self, line: bytes) -> None:
        self._reset_timer()
        if self._waiter is not None:
            waiter, self._waiter = self._waiter, None
            self.pauseProducing()  # type: ignore[no-untyped-call]
            waiter.callback(line)
            return
        if self._running or self.state is State.LOGOUT:
            return
        if self._discarding:
            self._discard_line(line)
            return
        self._size += len(line)
        m = _LITERAL_END.search(line)
        if m is None:
            self._parts.append(line)
            data = b"".join(self._parts)
            too_long = self._size > self.settings.max_command_size + (
                self.settings.max_literal_size if _APPEND.match(data) else 0
            )
            self._parts = []
            self._size = 0
            if too_long:
                self._refuse_command(data, bad("Command too long"))
                return
            self._dispatch(data)
            return
        self._parts.append(line + b"\r\n")
        digits, plus = m.group(1), m.group(2) == b"+"
        first = self._parts[0]
        limit = (
            self.settings.max_literal_size
            if _APPEND.match(first)
            else self.settings.max_command_size
        )
        total = limit + self.settings.max_command_size
        if self.state is State.NOT_AUTHENTICATED:
            # A stranger gets no big buffer: LOGIN needs a few hundred octets,
            # and without this an unauthenticated APPEND literal would be read
            # into memory (up to max_literal_size) before "Log in first".
            limit = total = self.settings.max_unauthenticated_command_size
        size = int(digits) if len(digits) <= _MAX_DIGITS else -1
        if size < 0 or size > limit or self._size + size > total:
            reply = (
                no("Literal too large", "TOOBIG")
                if _APPEND.match(first)
                else bad("Literal too large", "TOOBIG")
            )
            self._refuse_command(first, reply)
            if plus:
                if size < 0 or size > 2 * limit + 2**20:
                    self.write(b"* BYE Literal too large\r\n")
                    self.close()
                    return
                self._discarding = True
                self._start_literal(size)
            return
        if not plus:
            self.continuation(b"Ready for literal data")
        self._start_literal(size)

    def _start_literal(self, size: int) -> None:
        if size == 0:
            return
        self._literal_left = size
        self._literal_chunks = []
        self.setRawMode()  # type: ignore[no-untyped-call]

    def rawDataReceived(self, data: bytes) -> None:
        self._reset_timer()
        take = data[: self._literal_left]
        self._literal_left -= len(take)
        if not self._discarding:
            self._literal_chunks.append(take)
            self._size += len(take)
        if self._literal_left == 0:
            if not self._discarding:
                self._parts.append(b"".join(self._literal_chunks))
            self._literal_chunks = []
            self.setLineMode(data[len(take) :])  # type: ignore[no-untyped-call]

    def _discard_line(self, line: bytes) -> None:
        """The rest of a refused command: skip it, literals and all."""
        m = _LITERAL_END.search(line)
        if m is None or m.group(2) != b"+" or len(m.group(1)) > _MAX_DIGITS:
            self._discarding = False
            return
        self._start_literal(int(m.group(1)))

    def _refuse_command(self, first: bytes, reply: Reply) -> None:
        self._parts = []
        self._size = 0
        tag = parse_tag(first) or b"*"
        self.write(reply.line(tag))

    def lineLengthExceeded(self, line: bytes) -> None:
        self.write(b"* BYE Line too long\r\n")
        self.close()

    # --- dispatch ---------------------------------------------------------------------

    def _dispatch(self, data: bytes) -> None:
        self._running = True
        self._in_dispatch = True
        self.pauseProducing()  # type: ignore[no-untyped-call]
        d = Deferred.fromCoroutine(self._execute(data))
        d.addErrback(self._crashed)
        d.addBoth(self._done)
        self._in_dispatch = False
        if not self._running and self.state is not State.LOGOUT:
            # Finished at once: let the LineReceiver loop we are in carry on
            # rather than recursing into it (a long pipeline would overflow).
            self.paused = False
            self._resume_transport()

    def _resume_transport(self) -> None:
        resume = getattr(self.transport, "resumeProducing", None)
        if resume is not None:
            resume()

    def _crashed(self, failure: Failure) -> None:
        log.failure("IMAP session crashed", failure)
        self.write(b"* BYE Internal server error\r\n")
        self.close()

    def _done(self, _: object) -> None:
        self._running = False
        if self.state is State.LOGOUT:
            return
        if not self._in_dispatch:
            self.resumeProducing()  # type: ignore[no-untyped-call]

    async def _execute(self, data: bytes) -> None:
        try:
            command = parse_command(data)
        except UnsupportedCharset:
            tag = parse_tag(data) or b"*"
            charsets = " ".join(CHARSETS)
            self.write(no("Unsupported charset", f"BADCHARSET ({charsets})").line(tag))
            return
        except CommandError as e:
            self.write(bad(f"Syntax error: {e.reason}").line(e.tag))
            return
        except ParseError:
            self.write(b"* BAD Missing or invalid tag\r\n")
            return
        spec = COMMANDS.get(command.name)
        if spec is None:
            self.write(bad("Unknown command").line(command.tag))
            return
        if self.state not in spec.states:
            self.write(bad(_wrong_state(self.state, spec)).line(command.tag))
            return
        if self.selected is not None and command.name not in _NO_PRE_FLUSH:
            # Flag changes and new messages may go out at any point of a
            # command (RFC 3501 §7.2.3, §7.3.1); sending them first means the
            # command's own answers use the freshest state.
            self.flush_updates(False)
        try:
            reply = await spec.handler(self, command)
        except ParseError as e:
            reply = bad(str(e))
        except ConnectionGone:
            return
        except Exception as e:
            reply = reply_for(e, command.name)
        if self.transport is None or getattr(self.transport, "disconnecting", False):
            return
        self.flush_updates(spec.expunge_ok)
        self.write(reply.line(command.tag))
        if self._after_reply is not None:
            action, self._after_reply = self._after_reply, None
            action()
        if self.state is State.LOGOUT:
            self.close()
        elif self._shutting_down:
            self._say_bye()


def _wrong_state(state: State, spec: CommandSpec) -> str:
    if state is State.NOT_AUTHENTICATED:
        return "Log in first"
    if State.SELECTED in spec.states and State.AUTHENTICATED not in spec.states:
        return "No mailbox selected"
    if State.NOT_AUTHENTICATED in spec.states:
        return "Already logged in"
    return "Command not valid in this state"
