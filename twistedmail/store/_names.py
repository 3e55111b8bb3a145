"""
Mailbox-name rules shared by every backend.

The contract (`twistedmail.interfaces`) promises that a bad name fails with
`InvalidMailboxName` *before* any change, in every backend alike; keeping the
rules in one place is what makes the in-memory store and Maildir refuse
exactly the same names.  Backends that map names to paths may refuse more
(Maildir++ uses ``.`` as its on-disk separator) but never less.
"""

from __future__ import annotations

import unicodedata

from twistedmail.interfaces import InvalidMailboxName
from twistedmail.model import HIERARCHY_DELIMITER, INBOX

#: Longest accepted name, in characters.  Generous for people, small enough
#: that no backend has to think about pathological names.
MAX_NAME_CHARS = 255

#: Longest accepted hierarchy part, in UTF-8 bytes: one path component on
#: every common filesystem.
MAX_PART_BYTES = 255


def _bad_character(text: str) -> str | None:
    """
    The first character that may never appear in a name or storage key.

    Control characters (Unicode category ``Cc``: C0, DEL and C1) could
    smuggle line breaks into protocol replies and logs; lone surrogates
    cannot be encoded as UTF-8 at all; ``\\`` is a path separator on Windows
    and a quoting character in IMAP.
    """
    for char in text:
        if char == "\\" or unicodedata.category(char) in ("Cc", "Cs"):
            return char
    return None


def validate_mailbox_name(name: object) -> str:
    """
    Check ``name`` and return its canonical spelling.

    RFC 3501 §5.1: ``INBOX`` is case-insensitive, so a first part equal to
    ``inbox`` in any case is spelled ``INBOX`` (``inbox/Lists`` becomes
    ``INBOX/Lists``); every other part keeps its case.

    :raises InvalidMailboxName: empty name, empty part (``a//b``, ``/a``,
        ``a/``), a part of ``.`` or ``..``, a control character, ``\\``,
        more than `MAX_NAME_CHARS` characters, or a part longer than
        `MAX_PART_BYTES` UTF-8 bytes.
    """
    if not isinstance(name, str):
        raise InvalidMailboxName(f"mailbox name is not text: {name!r}")
    if not name:
        raise InvalidMailboxName("empty mailbox name")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidMailboxName(f"mailbox name longer than {MAX_NAME_CHARS} characters")
    bad = _bad_character(name)
    if bad is not None:
        raise InvalidMailboxName(f"mailbox name contains {bad!r}: {name!r}")
    parts = name.split(HIERARCHY_DELIMITER)
    for part in parts:
        if not part:
            raise InvalidMailboxName(f"mailbox name has an empty part: {name!r}")
        if part in (".", ".."):
            raise InvalidMailboxName(f"mailbox name has a {part!r} part: {name!r}")
        if len(part.encode("utf-8")) > MAX_PART_BYTES:
            raise InvalidMailboxName(f"mailbox name part longer than {MAX_PART_BYTES} bytes")
    if parts[0].upper() == INBOX:
        parts[0] = INBOX
    return HIERARCHY_DELIMITER.join(parts)


def validate_user_key(user: object) -> str:
    """
    Check that ``user`` can name an account's storage, and return it unchanged.

    A user name becomes a directory for disk backends, so it must be one
    harmless path component: not empty, not ``.``/``..``, no ``/``, ``\\``
    or control characters, at most `MAX_PART_BYTES` UTF-8 bytes.  The store
    does not fold case: callers pass the canonical user name.

    :raises InvalidMailboxName: the contract's error for an unusable key.
    """
    if not isinstance(user, str):
        raise InvalidMailboxName(f"user name is not text: {user!r}")
    if not user or user in (".", ".."):
        raise InvalidMailboxName(f"unusable user name: {user!r}")
    if "/" in user:
        raise InvalidMailboxName(f"user name contains '/': {user!r}")
    bad = _bad_character(user)
    if bad is not None:
        raise InvalidMailboxName(f"user name contains {bad!r}: {user!r}")
    if len(user.encode("utf-8")) > MAX_PART_BYTES:
        raise InvalidMailboxName(f"user name longer than {MAX_PART_BYTES} bytes")
    return user


def parents(name: str) -> list[str]:
    """
    Every ancestor of ``name``, outermost first: ``a/b/c`` gives ``a``, ``a/b``.

    RFC 3501 §6.3.3: CREATE makes the missing ones.
    """
    parts = name.split(HIERARCHY_DELIMITER)
    return [HIERARCHY_DELIMITER.join(parts[:i]) for i in range(1, len(parts))]


def is_inside(child: str, parent: str) -> bool:
    """True if ``child`` lies strictly below ``parent`` in the hierarchy."""
    return child.startswith(parent + HIERARCHY_DELIMITER)


def renamed(name: str, old: str, new: str) -> str:
    """
    What ``name`` becomes when ``old`` is renamed to ``new``.

    ``old`` itself and everything inside it move (RFC 3501 §6.3.5: children
    are renamed with their parent); any other name is returned unchanged.
    """
    if name == old:
        return new
    if is_inside(name, old):
        return new + name[len(old) :]
    return name


def sort_key(name: str) -> tuple[bool, list[str]]:
    """
    The order `list_mailboxes` promises: INBOX (and its children) first, then
    by name part by part, so that children follow their parent directly
    (``a``, ``a/b``, ``a b``; plain string order would put ``a b`` between).
    """
    parts = name.split(HIERARCHY_DELIMITER)
    return (parts[0] != INBOX, parts)
