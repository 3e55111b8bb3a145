"""
Which session gets ``\\Recent`` for a message (RFC 3501 §2.3.2).

A message is recent in exactly one session: the first to be told about it,
by SELECT or by an untagged EXISTS.  A read-only session (EXAMINE, §6.3.2)
sees the same messages as recent but takes nothing away from the sessions
after it.  Per user, mailbox and UIDVALIDITY the tracker keeps one number,
the highest UID already handed out: UIDs only grow (§2.3.1.1), so every
message above it is one no read-write session has been told about yet.

The store contract has no place for this, so the state lives in the
process, shared by every IMAP listener (``imap`` and ``imaps``), and a
restart forgets it.  Messages whose fate is then unknown are recent again,
once, for the first session to select their mailbox: §2.3.2 says a message
SHOULD be considered recent when the server cannot tell.  (Dovecot keeps
the number in its index and so survives a restart; we do not.)

IMAP4rev2 (RFC 9051 Appendix E) dropped ``\\Recent``; this is for
IMAP4rev1 clients, some of which still count it as "new mail".
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence


class RecentTracker:
    """The highest UID handed out as recent, per (user, mailbox, UIDVALIDITY)."""

    def __init__(self) -> None:
        #: user -> (mailbox, UIDVALIDITY) -> highest UID claimed.
        self._claimed: dict[str, dict[tuple[str, int], int]] = {}

    def claim(
        self, user: str, mailbox: str, uidvalidity: int, uids: Sequence[int], read_only: bool
    ) -> Sequence[int]:
        """
        The UIDs of ``uids`` (ascending) that are recent for a session being
        told about them now; unless ``read_only``, no later session gets them.
        """
        if not uids:
            return uids
        key = (mailbox, uidvalidity)
        mine = self._claimed.get(user)
        highest = mine.get(key, 0) if mine is not None else 0
        if uids[-1] <= highest:
            return ()
        if not read_only:
            self._claimed.setdefault(user, {})[key] = uids[-1]
        return uids[bisect.bisect_right(uids, highest) :]

    def claimed(self, user: str, mailbox: str, uidvalidity: int) -> int:
        """UIDs above this one are recent for the next session (0: every UID)."""
        return self._claimed.get(user, {}).get((mailbox, uidvalidity), 0)

    def renamed(self, user: str, old: str, new: str, delimiter: str) -> None:
        """
        Follow an IMAP RENAME of ``old`` (and its children) to ``new``, whose
        messages keep their UIDs and UIDVALIDITY.  Renaming INBOX moves its
        messages to a new mailbox with a new UIDVALIDITY (§6.3.5), and INBOX
        keeps its own: nothing to follow.
        """
        mine = self._claimed.get(user)
        if mine is None or old.upper() == "INBOX":
            return
        prefix = old + delimiter
        for name, uidvalidity in [k for k in mine if k[0] == old or k[0].startswith(prefix)]:
            moved = (new + name[len(old) :], uidvalidity)
            mine[moved] = mine.pop((name, uidvalidity))

    def deleted(self, user: str, mailbox: str) -> None:
        """Forget a deleted mailbox, so a new one of that name starts afresh."""
        mine = self._claimed.get(user)
        if mine is not None:
            for key in [k for k in mine if k[0] == mailbox]:
                del mine[key]
