"""
Every error the HTTP API answers, and the one mapping from store errors to
HTTP statuses.

Clients get ``{"error": {"code", "message"[, "field"]}}``: a stable machine
code, a safe fixed text and, for bad input, the name of the offending field.
The text of a store exception is for the log only (it may name paths or
other users), so it is never copied into a response.
"""

from __future__ import annotations

import json

from twistedmail.interfaces import (
    InvalidMailboxName,
    MailboxExists,
    MailboxHasChildren,
    MailboxNotAllowed,
    MailError,
    NoSuchMailbox,
    NoSuchMessage,
    NoSuchUser,
    QuotaExceeded,
    RelayDenied,
    TemporaryFailure,
)


class ApiError(Exception):
    """An error answer: HTTP status, machine code, safe message, maybe a field."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers

    @classmethod
    def bad(cls, field: str, message: str, code: str = "invalid") -> ApiError:
        """400 for bad input, naming the field (or query/path parameter)."""
        return cls(400, code, message, field)

    def body(self) -> bytes:
        error: dict[str, str] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return json.dumps({"error": error}, ensure_ascii=False).encode("utf-8")


# Store error -> (status, code, safe message).  The one place the HTTP API
# decides what a store error means to a client.
_STORE_ERRORS: dict[type[MailError], tuple[int, str, str]] = {
    NoSuchMailbox: (404, "no_such_mailbox", "There is no such mailbox."),
    NoSuchMessage: (404, "no_such_message", "There is no such message."),
    MailboxExists: (409, "mailbox_exists", "A mailbox with that name already exists."),
    MailboxHasChildren: (409, "mailbox_has_children", "Delete the mailbox's children first."),
    MailboxNotAllowed: (403, "not_allowed", "That is not allowed on this mailbox."),
    InvalidMailboxName: (400, "invalid_mailbox_name", "That is not a valid mailbox name."),
    QuotaExceeded: (413, "quota_exceeded", "The message or mailbox is too large."),
    TemporaryFailure: (503, "temporary_failure", "A temporary failure; try again later."),
    NoSuchUser: (400, "no_such_recipient", "There is no such local recipient."),
    RelayDenied: (403, "relay_denied", "Relaying to that recipient is not allowed."),
}


def from_store_error(error: MailError, field: str | None = None) -> ApiError:
    """The answer for a store error; unknown kinds are a 500."""
    for kind, (status, code, message) in _STORE_ERRORS.items():
        if isinstance(error, kind):
            headers = (("Retry-After", "30"),) if status == 503 else ()
            if status != 400:
                field = None
            return ApiError(status, code, message, field, headers)
    return ApiError(500, "internal_error", "An internal error occurred.")


def not_found() -> ApiError:
    return ApiError(404, "not_found", "No such resource.")


def unauthorized() -> ApiError:
    return ApiError(
        401,
        "unauthorized",
        "Log in first: a session token or Basic credentials.",
        headers=(("WWW-Authenticate", 'Bearer realm="twistedmail"'),),
    )
