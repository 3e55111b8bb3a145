"""
The values that travel between twistedmail's parts.

Everything here is a frozen dataclass or an enum: protocol code, stores and the
outbound queue pass these around and nobody may change one in place, so a value
handed to an event listener can never be altered under another listener's feet.
Message content itself is always raw ``bytes`` and never lives in these records.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

#: The hierarchy delimiter every store presents to protocols (IMAP LIST, HTTP).
#: Backends may use another on disk (Maildir++ uses ``.``) but translate.
HIERARCHY_DELIMITER = "/"

#: The one mailbox name that is case-insensitive (RFC 3501 §5.1).
INBOX = "INBOX"

# System flags of RFC 3501 §2.3.2 that a store keeps.  ``\Recent`` is a
# per-session notion (dropped in IMAP4rev2) and is left to the IMAP server.
SEEN = "\\Seen"
ANSWERED = "\\Answered"
FLAGGED = "\\Flagged"
DELETED = "\\Deleted"
DRAFT = "\\Draft"
SYSTEM_FLAGS = frozenset({SEEN, ANSWERED, FLAGGED, DELETED, DRAFT})


class SpecialUse(enum.Enum):
    """RFC 6154 special-use attributes a mailbox may carry."""

    SENT = "\\Sent"
    DRAFTS = "\\Drafts"
    TRASH = "\\Trash"
    JUNK = "\\Junk"
    ARCHIVE = "\\Archive"
    ALL = "\\All"
    FLAGGED = "\\Flagged"


#: The mailboxes every new account is given, with their special use.
DEFAULT_MAILBOXES: tuple[tuple[str, SpecialUse | None], ...] = (
    (INBOX, None),
    ("Sent", SpecialUse.SENT),
    ("Drafts", SpecialUse.DRAFTS),
    ("Trash", SpecialUse.TRASH),
    ("Junk", SpecialUse.JUNK),
    ("Archive", SpecialUse.ARCHIVE),
)


class FlagMode(enum.Enum):
    """How a flag update combines with the flags a message already has."""

    REPLACE = "replace"
    ADD = "add"
    REMOVE = "remove"

    def apply(self, old: frozenset[str], flags: frozenset[str]) -> frozenset[str]:
        """The flags a message ends up with when ``flags`` are applied to ``old``."""
        if self is FlagMode.REPLACE:
            return flags
        if self is FlagMode.ADD:
            return old | flags
        return old - flags


def internal_date(when: datetime) -> datetime:
    """
    An internal date as every store keeps it: UTC, whole seconds.

    That is all IMAP's INTERNALDATE and a Maildir file's mtime can carry, so
    every backend returns the same value.  A naive datetime is taken as UTC.
    """
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).replace(microsecond=0)


def normalize_flag(flag: str) -> str:
    """
    Return the canonical spelling of a flag.

    System flags are case-insensitive in IMAP (RFC 3501 §9, ``flag``), so
    ``\\SEEN`` and ``\\seen`` must be the same flag in every store; keywords
    keep the case they were given.
    """
    if flag.startswith("\\"):
        for system in SYSTEM_FLAGS:
            if system.lower() == flag.lower():
                return system
    return flag


def normalize_flags(flags: Iterable[str]) -> frozenset[str]:
    """Canonicalise a collection of flags (see `normalize_flag`)."""
    return frozenset(normalize_flag(f) for f in flags)


@dataclass(frozen=True, slots=True)
class MailboxInfo:
    """
    One mailbox as LIST sees it.

    ``name`` uses `HIERARCHY_DELIMITER`; ``INBOX`` is always spelled ``INBOX``.
    ``selectable`` is False for a name that exists only because it has
    children (RFC 3501 ``\\Noselect``).
    """

    name: str
    special_use: SpecialUse | None = None
    selectable: bool = True


@dataclass(frozen=True, slots=True)
class MailboxStatus:
    """The counters STATUS, SELECT and the HTTP mailbox list report."""

    uidvalidity: int
    uidnext: int
    highestmodseq: int
    messages: int
    unseen: int
    size: int


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """
    Everything about a stored message except its bytes.

    ``uid`` is unique and ascending within its mailbox's UIDVALIDITY;
    ``flags`` holds system flags (canonical spelling) and keywords together;
    ``internal_date`` is timezone-aware; ``size`` is the exact byte length of
    the stored message (RFC822.SIZE); ``modseq`` is the RFC 7162 mod-sequence
    of the last change to this message's metadata.
    """

    uid: int
    flags: frozenset[str]
    internal_date: datetime
    size: int
    modseq: int


@dataclass(frozen=True, slots=True)
class Appended:
    """The result of storing one message: what APPENDUID (RFC 4315) reports."""

    mailbox: str
    uidvalidity: int
    info: MessageInfo


@dataclass(frozen=True, slots=True)
class FlagsResult:
    """
    The result of a flag update.

    ``changed`` holds the new state of every message whose flags actually
    changed (with its new MODSEQ); ``failed`` lists the UIDs skipped because
    their MODSEQ was above ``unchanged_since`` (RFC 7162 §3.1.3 MODIFIED).
    """

    changed: tuple[MessageInfo, ...]
    failed: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class CopyResult:
    """
    The result of COPY or MOVE: what COPYUID (RFC 4315 §3) reports.

    ``mapping`` pairs each source UID with its new UID in the destination, in
    ascending source order; source UIDs that no longer existed are left out.
    """

    uidvalidity: int
    mapping: tuple[tuple[int, int], ...]


# --- Change events -----------------------------------------------------------
#
# A store emits one event per committed change, to every listener on the
# account, whoever caused it: an IMAP session, SMTP delivery, the HTTP API or
# (for Maildir) another program noticed on the next look at the disk.


@dataclass(frozen=True, slots=True)
class MessagesAdded:
    """New messages appeared in ``mailbox`` (delivery, APPEND, COPY, MOVE)."""

    mailbox: str
    uidvalidity: int
    messages: tuple[MessageInfo, ...]


@dataclass(frozen=True, slots=True)
class FlagsChanged:
    """Messages in ``mailbox`` got new flags; each carries its new MODSEQ."""

    mailbox: str
    uidvalidity: int
    messages: tuple[MessageInfo, ...]


@dataclass(frozen=True, slots=True)
class MessagesExpunged:
    """Messages left ``mailbox`` for good (EXPUNGE, MOVE away)."""

    mailbox: str
    uidvalidity: int
    uids: tuple[int, ...]
    highestmodseq: int


@dataclass(frozen=True, slots=True)
class MailboxCreated:
    mailbox: str


@dataclass(frozen=True, slots=True)
class MailboxDeleted:
    mailbox: str


@dataclass(frozen=True, slots=True)
class MailboxRenamed:
    """``old`` is now ``new``; children were renamed too and get their own events."""

    old: str
    new: str


ChangeEvent = (
    MessagesAdded
    | FlagsChanged
    | MessagesExpunged
    | MailboxCreated
    | MailboxDeleted
    | MailboxRenamed
)


# --- Addresses and envelopes --------------------------------------------------


# What `Address.parse` refuses, as precompiled character classes: it runs for
# every MAIL FROM and RCPT TO, and a character-by-character loop in Python
# cost more than the rest of the command.  C0 and C1 controls everywhere,
# and blanks in a domain:
_NOT_DOMAIN_CHAR = re.compile(r"[\x00-\x20\x7f-\x9f]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# ... and in an unquoted local part, a dot-atom, also blanks and specials.
_NOT_ATEXT = re.compile(r'[\x00-\x20\x7f-\x9f()<>\[\]\\,;:"@]')


@dataclass(frozen=True, slots=True)
class Address:
    """
    A mailbox address ``local@domain``.

    The domain is kept lower-cased (domains are case-insensitive); the local
    part keeps its case (RFC 5321 §2.4) but lookups of local users fold it.
    Either part may be UTF-8 (RFC 6531).
    """

    local: str
    domain: str

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"

    @classmethod
    def parse(cls, text: str) -> Address:
        """
        Parse ``local@domain``; raise `ValueError` with a reason if malformed.

        The local part may be a quoted string; the domain may be an address
        literal (``[127.0.0.1]``).
        """
        text = text.strip()
        if text.startswith("<") and text.endswith(">"):
            text = text[1:-1]
        local, sep, domain = text.rpartition("@")
        if not sep or not local or not domain:
            raise ValueError(f"not an address: {text!r}")
        if _NOT_DOMAIN_CHAR.search(domain) or ".." in domain:
            raise ValueError(f"bad domain in address: {text!r}")
        if local[0] == local[-1] == '"' and len(local) >= 2:
            # RFC 5321 §4.1.2: even quoted (qtextSMTP, quoted-pairSMTP) a
            # local part is printable.  A control character, a bare CR above
            # all, would become a line break in Return-Path: or a DSN header.
            bad = _CONTROL.search(local) is not None
        else:
            bad = (
                _NOT_ATEXT.search(local) is not None
                or local[0] == "."
                or local[-1] == "."
                or ".." in local
            )
        if bad:
            raise ValueError(f"bad local part in address: {text!r}")
        if len(local.encode()) > 64 or len(domain.encode()) > 255:
            raise ValueError(f"address too long: {text!r}")
        return cls(local, domain.lower())


@dataclass(frozen=True, slots=True)
class Recipient:
    """One RCPT TO with its RFC 3461 DSN parameters, as the client sent them."""

    address: str
    notify: tuple[str, ...] = ()
    orcpt: str | None = None


@dataclass(frozen=True, slots=True)
class Envelope:
    """
    The SMTP envelope of one message, kept with it through the queue.

    ``sender`` is ``""`` for the null reverse path ``<>`` (bounces).
    ``ret`` and ``envid`` are RFC 3461's MAIL parameters; ``body`` is
    ``7BIT``/``8BITMIME``/``BINARYMIME``; ``smtputf8`` says the message needs
    an RFC 6531 peer.
    """

    sender: str
    recipients: tuple[Recipient, ...]
    ret: str | None = None
    envid: str | None = None
    body: str | None = None
    smtputf8: bool = False
    size: int | None = None
    extra: tuple[tuple[str, str], ...] = field(default=())
