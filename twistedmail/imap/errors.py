"""
Tagged replies, and the one place that turns domain errors into them.

Clients get a fixed, safe text and an RFC 5530 response code they can act
on; the exception's own text goes to the log only (it may name paths or
users).  Anything unexpected is ``NO [SERVERBUG]`` with a logged failure,
and the session carries on.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.cred.error import UnauthorizedLogin
from twisted.logger import Logger
from twisted.python.failure import Failure

from twistedmail.interfaces import (
    InvalidMailboxName,
    MailboxExists,
    MailboxHasChildren,
    MailboxNotAllowed,
    NoSuchMailbox,
    NoSuchMessage,
    QuotaExceeded,
    TemporaryFailure,
)

log = Logger()


@dataclass(frozen=True, slots=True)
class Reply:
    """A tagged response: ``tag status [code] text``."""

    status: str
    text: str
    code: str | None = None

    def line(self, tag: bytes) -> bytes:
        code = b"[" + self.code.encode("utf-8") + b"] " if self.code else b""
        return (
            tag
            + b" "
            + self.status.encode("ascii")
            + b" "
            + code
            + self.text.encode("utf-8")
            + b"\r\n"
        )


def ok(text: str, code: str | None = None) -> Reply:
    return Reply("OK", text, code)


def no(text: str, code: str | None = None) -> Reply:
    return Reply("NO", text, code)


def bad(text: str, code: str | None = None) -> Reply:
    return Reply("BAD", text, code)


class Refused(Exception):
    """Raised by a command handler to end the command with ``reply``."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.text)
        self.reply = reply


def reply_for(error: BaseException, command: str, destination: bool = False) -> Reply:
    """
    The reply for an exception a command raised.

    ``destination`` says a missing mailbox was the target of APPEND, COPY or
    MOVE, where RFC 3501 §6.3.11/§6.4.7 ask for ``[TRYCREATE]`` so the client
    may create it and retry.
    """
    if isinstance(error, Refused):
        return error.reply
    if isinstance(error, NoSuchMailbox):
        if destination:
            return no("Mailbox does not exist", "TRYCREATE")
        return no("Mailbox does not exist", "NONEXISTENT")
    if isinstance(error, MailboxExists):
        return no("Mailbox already exists", "ALREADYEXISTS")
    if isinstance(error, InvalidMailboxName):
        return no("Invalid mailbox name", "CANNOT")
    if isinstance(error, MailboxHasChildren):
        # RFC 9051 §7.1 HASCHILDREN.
        return no("Mailbox has children; delete them first", "HASCHILDREN")
    if isinstance(error, MailboxNotAllowed):
        return no("Operation not allowed on this mailbox", "CANNOT")
    if isinstance(error, NoSuchMessage):
        return no("Some messages no longer exist", "EXPUNGEISSUED")
    if isinstance(error, QuotaExceeded):
        return no("Quota or size limit exceeded", "OVERQUOTA")
    if isinstance(error, TemporaryFailure):
        log.warn("Temporary failure in {command}: {error}", command=command, error=str(error))
        return no("Temporary failure, try again later", "UNAVAILABLE")
    if isinstance(error, UnauthorizedLogin):
        return no("Authentication failed", "AUTHENTICATIONFAILED")
    log.failure("Unexpected error in IMAP {command}", Failure(error), command=command)  # type: ignore[no-untyped-call]
    return no("Internal server error", "SERVERBUG")
