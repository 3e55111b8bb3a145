"""
The session states and the shape of a command table entry.

Kept apart from the session so that the command modules and the session
can both name them without importing each other.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from twistedmail.imap.errors import Reply
from twistedmail.imap.parser import Command

if TYPE_CHECKING:  # pragma: no cover
    from twistedmail.imap.session import IMAPSession


class State(enum.Enum):
    """RFC 3501 §3 connection states."""

    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


ANY = frozenset({State.NOT_AUTHENTICATED, State.AUTHENTICATED, State.SELECTED})
NOT_AUTH = frozenset({State.NOT_AUTHENTICATED})
AUTH = frozenset({State.AUTHENTICATED, State.SELECTED})
SELECTED = frozenset({State.SELECTED})

Handler = Callable[["IMAPSession", Command], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """
    One entry of the command table.

    ``expunge_ok`` is False for FETCH, STORE and SEARCH (by sequence number),
    after which RFC 3501 §7.4.1 forbids sending EXPUNGE responses.
    """

    handler: Handler
    states: frozenset[State]
    expunge_ok: bool = True
