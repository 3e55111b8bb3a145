"""
Every SMTP reply the server sends, and the one mapping from domain errors to
replies.

Texts are fixed and safe: nothing a client sent and no exception text ever
goes back on the wire (the detail goes to the log).  Enhanced status codes
(RFC 2034, RFC 3463) are carried by every 2xx/4xx/5xx reply except the
greeting and the HELO/EHLO answers, which RFC 2034 §3 exempts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twistedmail.interfaces import (
    MailError,
    NoSuchUser,
    QuotaExceeded,
    RelayDenied,
    TemporaryFailure,
)


@dataclass(frozen=True, slots=True)
class Reply:
    """
    One (possibly multi-line) reply: ``code``, enhanced ``status``, ``lines``.

    The wire form is built once, with the reply: most replies are the
    constants below, sent again for every message, so encoding them per send
    was work repeated on every command.
    """

    code: int
    status: str | None
    lines: tuple[str, ...]
    #: `encode`'s result, computed at construction.
    wire: bytes = field(init=False, repr=False, compare=False)
    #: A 421 ends the session (RFC 5321 §3.8).
    closes: bool = field(init=False, repr=False, compare=False)
    #: 500-504 count towards the session's error limit.
    is_syntax_error: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Frozen: the derived fields are set once here, never changed after.
        object.__setattr__(self, "wire", _encode(self.code, self.status, self.lines))
        object.__setattr__(self, "closes", self.code == 421)
        object.__setattr__(self, "is_syntax_error", 500 <= self.code <= 504)

    def encode(self) -> bytes:
        """The wire form: ``code-`` on every line but the last (RFC 5321 §4.2.1)."""
        return self.wire


def _encode(code: int, status: str | None, lines: tuple[str, ...]) -> bytes:
    out = []
    last = len(lines) - 1
    for i, line in enumerate(lines):
        sep = " " if i == last else "-"
        text = f"{status} {line}" if status else line
        out.append(f"{code}{sep}{text}\r\n")
    return "".join(out).encode("utf-8")


def reply(code: int, status: str | None, *lines: str) -> Reply:
    return Reply(code, status, lines)


# --- 2xx ------------------------------------------------------------------------
OK = reply(250, "2.0.0", "Ok")
SENDER_OK = reply(250, "2.1.0", "Sender ok")
RECIPIENT_OK = reply(250, "2.1.5", "Recipient ok")
RESET_OK = reply(250, "2.0.0", "Reset")
BYE = reply(221, "2.0.0", "Bye")
VRFY_CANNOT = reply(252, "2.5.0", "Cannot VRFY user; send some mail and we will try")
HELP = reply(
    214,
    "2.0.0",
    "Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH",
    "See RFC 5321",
)
AUTH_OK = reply(235, "2.7.0", "Authentication successful")
READY_FOR_TLS = reply(220, "2.0.0", "Ready to start TLS")

# --- 3xx (no enhanced code: RFC 2034 §3 covers 2xx, 4xx and 5xx only) ------------
START_DATA = reply(354, None, "End data with <CR><LF>.<CR><LF>")

# --- 4xx ------------------------------------------------------------------------
TOO_MANY_CONNECTIONS = reply(421, "4.7.0", "Too many connections, try again later")
TIMEOUT = reply(421, "4.4.2", "Idle timeout, closing connection")
SHUTTING_DOWN = reply(421, "4.3.2", "Service shutting down, try again later")
TOO_MANY_ERRORS = reply(421, "4.7.0", "Too many errors, closing connection")
AUTH_LOCKED = reply(421, "4.7.0", "Too many failed authentications, try again later")
LOCAL_ERROR = reply(451, "4.3.0", "Local error in processing, try again later")
NO_OUTBOX = reply(451, "4.3.0", "Outgoing mail is not available here yet, try again later")
MAILBOX_FULL = reply(452, "4.2.2", "Mailbox full, try again later")
TOO_MANY_RECIPIENTS = reply(452, "4.5.3", "Too many recipients")
TLS_UNAVAILABLE = reply(454, "4.7.0", "TLS not available")
TEMPORARY_AUTH_FAILURE = reply(454, "4.7.0", "Temporary authentication failure")

# --- 5xx ------------------------------------------------------------------------
UNKNOWN_COMMAND = reply(500, "5.5.2", "Command not recognized")
LINE_TOO_LONG = reply(500, "5.5.2", "Line too long")
BAD_SYNTAX = reply(501, "5.5.2", "Syntax error")
HELO_SYNTAX = reply(501, "5.5.4", "Syntax: HELO/EHLO hostname")
MAIL_SYNTAX = reply(501, "5.5.4", "Syntax: MAIL FROM:<address> [parameters]")
RCPT_SYNTAX = reply(501, "5.5.4", "Syntax: RCPT TO:<address> [parameters]")
VRFY_SYNTAX = reply(501, "5.5.4", "Syntax: VRFY address")
NO_ARGUMENTS = reply(501, "5.5.4", "No parameters allowed")
BDAT_SYNTAX = reply(501, "5.5.4", "Syntax: BDAT size [LAST]")
BAD_SENDER = reply(501, "5.1.7", "Bad sender address syntax")
BAD_RECIPIENT = reply(501, "5.1.3", "Bad recipient address syntax")
AUTH_CANCELLED = reply(501, "5.0.0", "Authentication cancelled")
AUTH_BAD_BASE64 = reply(501, "5.5.2", "Cannot decode response")
NOT_IMPLEMENTED = reply(502, "5.5.1", "Command not implemented")
SEND_HELO_FIRST = reply(503, "5.5.1", "Send HELO/EHLO first")
NESTED_MAIL = reply(503, "5.5.1", "Sender already given")
NEED_MAIL = reply(503, "5.5.1", "Need MAIL command")
NEED_RCPT = reply(503, "5.5.1", "Need RCPT command")
ALREADY_AUTHENTICATED = reply(503, "5.5.1", "Already authenticated")
AUTH_IN_TRANSACTION = reply(503, "5.5.1", "AUTH not allowed during a mail transaction")
AUTH_NOT_AVAILABLE = reply(503, "5.5.1", "AUTH not available")
ALREADY_TLS = reply(503, "5.5.1", "TLS already active")
BDAT_AFTER_DATA = reply(503, "5.5.1", "Cannot mix DATA and BDAT")
UNKNOWN_MECHANISM = reply(504, "5.5.4", "Unrecognized authentication mechanism")
AUTH_REQUIRED = reply(530, "5.7.0", "Authentication required")
AUTH_FAILED = reply(535, "5.7.8", "Authentication credentials invalid")
ENCRYPTION_REQUIRED = reply(538, "5.7.11", "Encryption required for authentication")
USER_UNKNOWN = reply(550, "5.1.1", "User unknown")
BARE_NEWLINE = reply(
    550, "5.5.2", "Bare CR or LF in message data; lines must end with CRLF (RFC 5321 §2.3.8)"
)
DATA_LINE_TOO_LONG = reply(
    550, "5.5.2", "Message has a line longer than 1000 octets (RFC 5321 §4.5.3.1.6)"
)
MESSAGE_TOO_BIG = reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
NON_ASCII_ADDRESS = reply(553, "5.6.7", "Non-ASCII address needs SMTPUTF8")
RELAY_DENIED = reply(554, "5.7.1", "Relay access denied")
#: RFC 6409 §6.1: an MSA may refuse a sender the user does not own (550 there;
#: 553 "mailbox name not allowed", RFC 5321 §4.2.2, as Postfix answers).
SENDER_NOT_OWNED = reply(553, "5.7.1", "Sender address not owned by authenticated user")
NO_VALID_RECIPIENTS = reply(554, "5.5.1", "No valid recipients")
UNKNOWN_PARAMETER = reply(555, "5.5.4", "Unsupported MAIL/RCPT parameter")
BAD_PARAMETER = reply(501, "5.5.4", "Invalid MAIL/RCPT parameter value")


def greeting(hostname: str) -> Reply:
    return reply(220, None, f"{hostname} ESMTP")


def queued(queue_id: str) -> Reply:
    return reply(250, "2.0.0", f"Ok: queued as {queue_id}")


def chunk_received(size: int) -> Reply:
    return reply(250, "2.0.0", f"{size} octets received")


def auth_challenge(b64: str) -> bytes:
    """A SASL challenge line (RFC 4954 §4); 334 carries no enhanced code."""
    return f"334 {b64}\r\n".encode("ascii")


def for_error(error: BaseException) -> Reply:
    """
    The reply for a domain error: the one place protocol code turns our
    exceptions into SMTP (STYLE.md §4).  Anything unknown is a local error.
    """
    if isinstance(error, NoSuchUser):
        return USER_UNKNOWN
    if isinstance(error, RelayDenied):
        return RELAY_DENIED
    if isinstance(error, QuotaExceeded):
        # RFC 3463 §3.3: X.2.2 is a persistent transient failure; the sender
        # retries, and delivery succeeds once space is freed.
        return MAILBOX_FULL
    if isinstance(error, TemporaryFailure | MailError):
        return LOCAL_ERROR
    return LOCAL_ERROR
