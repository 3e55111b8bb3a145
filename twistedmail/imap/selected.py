"""
The selected mailbox as one session sees it.

Sequence numbers are per session: they only change when *this* session
tells its client so.  The view keeps its own ascending UID list and
metadata, listens to the account's change events, and holds what it learns
as pending updates until the session may announce them:

* RFC 3501 §7.4.1: EXPUNGE must not be sent while no command is in
  progress, nor during FETCH, STORE or SEARCH (a client that pipelines
  those by sequence number would act on the wrong messages), so expunges
  wait for NOOP, IDLE, or the end of any other command.
* EXISTS and flag changes (``* n FETCH (FLAGS ...)``) may go at the end of
  any command (§5.2, §7.3.1).

Until an expunge is announced the message keeps its number and its cached
metadata, so FETCH of FLAGS or UID still answers for it.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

from twistedmail.imap.recent import RecentTracker
from twistedmail.imap.syntax import STAR, ParseError, SeqSet
from twistedmail.interfaces import IMailAccount
from twistedmail.model import (
    SYSTEM_FLAGS,
    ChangeEvent,
    FlagsChanged,
    MailboxDeleted,
    MailboxRenamed,
    MailboxStatus,
    MessageInfo,
    MessagesAdded,
    MessagesExpunged,
)

RECENT = "\\Recent"


class InvalidSequence(ParseError):
    """A message sequence number beyond EXISTS: answered ``BAD``."""


class SelectedMailbox:
    def __init__(
        self,
        account: IMailAccount,
        name: str,
        read_only: bool,
        on_change: Callable[[], None],
        tracker: RecentTracker | None = None,
        user: str = "",
    ) -> None:
        """
        With a ``tracker``, ``\\Recent`` is shared out between sessions
        (RFC 3501 §2.3.2); without one (a view outside IMAP) every message
        that arrives while the view is open counts as recent.
        """
        self.account = account
        self.name = name
        self.read_only = read_only
        self.gone = False
        self.uidvalidity = 0
        self.uidnext = 1
        self.highestmodseq = 0
        self.uids: list[int] = []
        self.infos: dict[int, MessageInfo] = {}
        self.recent: set[int] = set()
        #: RFC 5182 SEARCHRES: the UIDs the last SEARCH ... SAVE found.
        self.saved: list[int] = []
        self._on_change = on_change
        self._tracker = tracker
        self._user = user
        self._added: dict[int, MessageInfo] = {}
        self._flags: dict[int, MessageInfo] = {}
        self._expunged: set[int] = set()
        self._stop_listening: Callable[[], None] | None = None

    async def load(self) -> MailboxStatus:
        """Listen first, then read, so that no change falls between the two."""
        self._stop_listening = self.account.listen(self._event)
        status: MailboxStatus = await self.account.status(self.name)
        infos: list[MessageInfo] = await self.account.messages(self.name)
        self.uidvalidity = status.uidvalidity
        self.highestmodseq = status.highestmodseq
        gone = self._expunged
        if gone:
            self.infos.update((i.uid, i) for i in infos if i.uid not in gone)
        else:
            self.infos.update((i.uid, i) for i in infos)
        self.uids = sorted(self.infos)
        self._expunged.clear()
        # Messages the events told us about and the listing already had.
        for uid in list(self._added):
            if uid in self.infos:
                del self._added[uid]
        self._flags = {
            u: i
            for u, i in self._flags.items()
            if u in self.infos and i.modseq > self.infos[u].modseq
        }
        self.uidnext = max(status.uidnext, self.uids[-1] + 1 if self.uids else 1)
        if self._tracker is not None:
            # RFC 3501 §6.3.1: SELECT is the first notification of these.
            self.recent = set(self._claim(self.uids))
        return status

    def _claim(self, uids: list[int]) -> Sequence[int]:
        """Which of ``uids``, about to be announced, are recent in this session."""
        if self._tracker is None:
            return uids
        return self._tracker.claim(self._user, self.name, self.uidvalidity, uids, self.read_only)

    def close(self) -> None:
        if self._stop_listening is not None:
            self._stop_listening()
            self._stop_listening = None

    # --- events -------------------------------------------------------------------

    def _event(self, event: ChangeEvent) -> None:
        if isinstance(event, MailboxRenamed):
            if event.old == self.name:
                self.name = event.new
            return
        if isinstance(event, MailboxDeleted):
            if event.mailbox == self.name:
                self.gone = True
                self._on_change()
            return
        if getattr(event, "mailbox", None) != self.name:
            return
        if isinstance(event, MessagesAdded):
            if event.uidvalidity != self.uidvalidity and self.uidvalidity:
                return
            for info in event.messages:
                if info.uid not in self.infos:
                    self._added[info.uid] = info
                    self.uidnext = max(self.uidnext, info.uid + 1)
                self.highestmodseq = max(self.highestmodseq, info.modseq)
        elif isinstance(event, FlagsChanged):
            if event.messages:
                self._flags.update((info.uid, info) for info in event.messages)
                top = max(info.modseq for info in event.messages)
                self.highestmodseq = max(self.highestmodseq, top)
        elif isinstance(event, MessagesExpunged):
            for uid in event.uids:
                if self._added.pop(uid, None) is None:
                    self._expunged.add(uid)
                self._flags.pop(uid, None)
            self.highestmodseq = max(self.highestmodseq, event.highestmodseq)
        self._on_change()

    def apply_own(self, infos: Iterable[MessageInfo]) -> None:
        """
        Take in flag changes this session made and reports itself (STORE,
        FETCH setting ``\\Seen``), so they are not announced a second time.
        """
        known, flags = self.infos, self._flags
        top = self.highestmodseq
        for info in infos:
            uid = info.uid
            if uid in known:
                known[uid] = info
            pending = flags.get(uid)
            if pending is not None and pending.modseq <= info.modseq:
                del flags[uid]
            if info.modseq > top:
                top = info.modseq
        self.highestmodseq = top

    def expunge_pending(self, uid: int) -> bool:
        """Whether ``uid`` was expunged elsewhere and this client not yet told."""
        return uid in self._expunged

    def has_pending(self) -> bool:
        return bool(self._added or self._flags or self._expunged or self.gone)

    def updates(
        self, allow_expunge: bool, with_modseq: bool, vanished: bool = False
    ) -> list[bytes]:
        """
        The untagged responses to send now, applied to the view as sent.

        With ``vanished`` (QRESYNC enabled, RFC 7162 §3.2.10) expunges are
        reported as one ``VANISHED`` response of UIDs instead of EXPUNGEs.
        """
        out: list[bytes] = []
        if allow_expunge and self._expunged and vanished:
            gone = []
            for uid in sorted(self._expunged):
                i = bisect.bisect_left(self.uids, uid)
                if i < len(self.uids) and self.uids[i] == uid:
                    del self.uids[i]
                    del self.infos[uid]
                    self.recent.discard(uid)
                    gone.append(uid)
            self._expunged.clear()
            if gone:
                out.append(b"* VANISHED %s\r\n" % uid_set(gone))
        if allow_expunge and self._expunged:
            # Highest first: each number sent is still valid for the client
            # when it reads it, whatever order it applies them in.
            for uid in sorted(self._expunged, reverse=True):
                i = bisect.bisect_left(self.uids, uid)
                if i < len(self.uids) and self.uids[i] == uid:
                    del self.uids[i]
                    del self.infos[uid]
                    self.recent.discard(uid)
                    out.append(b"* %d EXPUNGE\r\n" % (i + 1))
            self._expunged.clear()
        if self._flags:
            for uid in sorted(self._flags):
                info = self._flags[uid]
                old = self.infos.get(uid)
                if old is None or uid in self._expunged:
                    continue
                self.infos[uid] = info
                if old.flags == info.flags and not with_modseq:
                    continue
                items = b"UID %d FLAGS %s" % (uid, flags_list(self.flags_of(uid)))
                if with_modseq:
                    items += b" MODSEQ (%d)" % info.modseq
                out.append(b"* %d FETCH (%s)\r\n" % (self.seq_of(uid), items))
            self._flags.clear()
        if self._added:
            last = self.uids[-1] if self.uids else 0
            new: list[int] = []
            for uid in sorted(self._added):
                if uid > last:
                    self.uids.append(uid)
                    self.infos[uid] = self._added[uid]
                    new.append(uid)
                    last = uid
            self._added.clear()
            # RFC 3501 §7.3.1: this EXISTS may be the first any session sends.
            self.recent.update(self._claim(new))
            out.append(b"* %d EXISTS\r\n" % len(self.uids))
            out.append(b"* %d RECENT\r\n" % len(self.recent))
        return out

    # --- numbering ----------------------------------------------------------------

    @property
    def exists(self) -> int:
        return len(self.uids)

    def seq_of(self, uid: int) -> int:
        return bisect.bisect_left(self.uids, uid) + 1

    def flags_of(self, uid: int) -> frozenset[str]:
        flags = self.infos[uid].flags
        return flags | {RECENT} if uid in self.recent else flags

    def info_of(self, uid: int) -> MessageInfo:
        """The metadata to report, with this session's ``\\Recent``."""
        info = self.infos[uid]
        if uid in self.recent:
            return replace(info, flags=info.flags | {RECENT})
        return info

    def resolve(self, seqs: SeqSet, uid: bool) -> list[int]:
        """
        The UIDs a sequence set names, ascending.

        Message numbers beyond EXISTS are a client error (RFC 3501 §9
        seq-number); UIDs that do not exist are simply left out (§6.4.8).
        ``$`` is the last saved SEARCH result (RFC 5182 §2.2).
        """
        if seqs.saved:
            return [u for u in self.saved if u in self.infos]
        uids = self.uids
        if uid:
            largest = uids[-1] if uids else 0
            ranges = seqs.resolve(largest)
            if len(ranges) == 1:
                lo, hi = ranges[0]
                return uids[bisect.bisect_left(uids, lo) : bisect.bisect_right(uids, hi)]
            found: set[int] = set()
            for lo, hi in ranges:
                found.update(uids[bisect.bisect_left(uids, lo) : bisect.bisect_right(uids, hi)])
            return sorted(found)
        exists = len(uids)
        if not exists and any(STAR in r for r in seqs.ranges):
            # "1:*" in an empty mailbox names nothing; clients send it.
            return []
        ranges = seqs.resolve(exists)
        if any(hi > exists or lo < 1 for lo, hi in ranges):
            raise InvalidSequence("message sequence number out of range")
        if len(ranges) == 1:
            lo, hi = ranges[0]
            return uids[lo - 1 : hi]
        seqnums: set[int] = set()
        for lo, hi in ranges:
            seqnums.update(range(lo, hi + 1))
        return [uids[n - 1] for n in sorted(seqnums)]

    def missing(self, ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """
        The UIDs in ``ranges`` below UIDNEXT that are not in the view: what
        QRESYNC reports as ``VANISHED (EARLIER)`` (RFC 7162 §3.2.5.1, §3.2.6).
        The store keeps no expunge history, so this may include UIDs the
        client never saw, which the RFC lets it ignore.
        """
        out: list[tuple[int, int]] = []
        for lo, hi in ranges:
            hi = min(hi, self.uidnext - 1)
            start = lo
            i = bisect.bisect_left(self.uids, lo)
            while start <= hi:
                present = self.uids[i] if i < len(self.uids) else hi + 1
                if present > start:
                    out.append((start, min(present - 1, hi)))
                start = present + 1
                i += 1
        return out


def ranges_text(ranges: Iterable[tuple[int, int]]) -> bytes:
    """``(lo, hi)`` pairs as a sequence set."""
    return b",".join(b"%d" % lo if lo == hi else b"%d:%d" % (lo, hi) for lo, hi in ranges)


def flags_list(flags: frozenset[str]) -> bytes:
    """A flag list in a stable order: system flags first, then keywords."""
    system = sorted(f for f in flags if f in SYSTEM_FLAGS)
    keywords = sorted(f for f in flags if f not in SYSTEM_FLAGS)
    return b"(" + b" ".join(f.encode("utf-8") for f in system + keywords) + b")"


def uid_set(uids: Iterable[int]) -> bytes:
    """Ascending numbers as a compact sequence set: ``1:3,7,9:10``."""
    out: list[bytes] = []
    start = prev = -1
    for n in sorted(uids):
        if n == prev + 1:
            prev = n
            continue
        if start != -1:
            out.append(b"%d" % start if start == prev else b"%d:%d" % (start, prev))
        start = prev = n
    if start != -1:
        out.append(b"%d" % start if start == prev else b"%d:%d" % (start, prev))
    return b",".join(out)
