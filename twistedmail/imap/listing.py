"""
LIST and LSUB selection (RFC 3501 §6.3.8-9, RFC 5258 LIST-EXTENDED,
RFC 3348 CHILDREN, RFC 6154 SPECIAL-USE): which names a pattern matches and
what attributes each carries.  Pure functions; the command handlers do I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from twistedmail.imap import wire
from twistedmail.model import HIERARCHY_DELIMITER, INBOX, MailboxInfo

DELIMITER = HIERARCHY_DELIMITER


def pattern_matcher(reference: str, patterns: Iterable[str]) -> re.Pattern[str]:
    """
    One regex for ``reference`` + each pattern (RFC 3501 §6.3.8): ``*``
    matches anything, ``%`` anything but the delimiter.  A leading ``INBOX``
    in any case matches ``INBOX``, the one case-insensitive name (§5.1).
    """
    alternatives = []
    for pattern in patterns:
        full = reference + pattern
        if full[:5].upper() == INBOX and (len(full) == 5 or full[5] in (DELIMITER, "*", "%")):
            full = INBOX + full[5:]
        out = []
        for ch in full:
            if ch == "*":
                out.append(".*")
            elif ch == "%":
                out.append(f"[^{re.escape(DELIMITER)}]*")
            else:
                out.append(re.escape(ch))
        alternatives.append("".join(out))
    return re.compile("(?:" + "|".join(alternatives) + r")\Z", re.DOTALL)


def ancestors(name: str) -> list[str]:
    parts = name.split(DELIMITER)
    return [DELIMITER.join(parts[:i]) for i in range(1, len(parts))]


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    attributes: tuple[str, ...]
    #: RFC 5258 §3.5 CHILDINFO for RECURSIVEMATCH.
    child_info: bool = False
    selectable: bool = True

    def line(self, command: str) -> bytes:
        attrs = " ".join(self.attributes).encode()
        mailbox = wire.astring(wire.encode_mailbox(self.name))
        out = b'%s (%s) "%s" %s' % (command.encode(), attrs, DELIMITER.encode(), mailbox)
        if self.child_info:
            out += b' ("CHILDINFO" ("SUBSCRIBED"))'
        return out


def list_entries(
    mailboxes: list[MailboxInfo],
    subscribed: frozenset[str],
    matcher: re.Pattern[str],
    select_opts: frozenset[str],
    return_opts: frozenset[str],
) -> list[Entry]:
    """The LIST responses, in name order with INBOX first."""
    existing = {m.name: m for m in mailboxes}
    parents: set[str] = set()
    for name in existing:
        parents.update(ancestors(name))
    sub_parents: set[str] = set()
    for name in subscribed:
        sub_parents.update(ancestors(name))
    only_subscribed = "SUBSCRIBED" in select_opts
    recursive = "RECURSIVEMATCH" in select_opts
    show_subscribed = only_subscribed or "SUBSCRIBED" in return_opts
    names = set(existing)
    if only_subscribed:
        names = set(subscribed) | (sub_parents if recursive else set())
    out = []
    for name in sorted(names, key=lambda n: (n != INBOX, n)):
        if not matcher.match(name):
            continue
        info = existing.get(name)
        child_info = False
        if only_subscribed and name not in subscribed:
            child_info = True
        if "SPECIAL-USE" in select_opts and (info is None or info.special_use is None):
            continue
        attrs: list[str] = []
        if info is None:
            attrs.append("\\NonExistent")
        elif not info.selectable:
            attrs.append("\\Noselect")
        if info is not None:
            attrs.append("\\HasChildren" if name in parents else "\\HasNoChildren")
        if show_subscribed and name in subscribed:
            attrs.append("\\Subscribed")
        if info is not None and info.special_use is not None:
            attrs.append(info.special_use.value)
        out.append(Entry(name, tuple(attrs), child_info, info is not None and info.selectable))
    return out


def lsub_entries(
    subscribed: frozenset[str], existing: set[str], matcher: re.Pattern[str]
) -> list[Entry]:
    """
    LSUB (RFC 3501 §6.3.9): subscribed names that match; an unsubscribed
    parent that ``%`` stops at is shown as ``\\Noselect``.
    """
    found: dict[str, tuple[str, ...]] = {}
    for name in subscribed:
        if matcher.match(name):
            found[name] = () if name in existing else ("\\Noselect",)
            continue
        for parent in ancestors(name):
            if parent not in subscribed and parent not in found and matcher.match(parent):
                found[parent] = ("\\Noselect",)
    return [Entry(n, found[n]) for n in sorted(found, key=lambda n: (n != INBOX, n))]
