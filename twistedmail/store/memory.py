"""
The in-memory mail store: the reference backend and every test's fake.

It implements `twistedmail.interfaces.IMailStore` to the letter so that
protocol tests can use it instead of mocks, and ``tests/store`` proves it
behaves like Maildir.  Nothing is kept when the process stops.

Everything happens synchronously; each method returns an already-fired
`Deferred`.  Per mailbox, messages live in a dict keyed by UID: UIDs are only
ever added in ascending order and dicts keep insertion order, so iterating it
*is* UID order and `messages` is O(n) with no sort.  The unseen count and
total size are kept up to date on every change, so `status` is O(1).

Where the contract leaves room, this store decides and ``tests/store`` pins
the decision for every backend:

* a new message (append, delivery, copy, move) takes a MODSEQ above the
  mailbox's HIGHESTMODSEQ, so CONDSTORE clients see it as a change; each
  message whose flags change takes its own new MODSEQ; one expunge takes one;
* internal dates are kept in UTC to whole seconds;
* new accounts are subscribed to their default mailboxes, and deleting a
  mailbox keeps its subscription (RFC 3501 §6.3.6);
* renaming INBOX gives the new mailbox a new UIDVALIDITY and fresh UIDs;
* an invalid name is reported before a missing one;
* delivery to a missing or invalid folder lands in INBOX.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import ParamSpec, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from twistedmail.interfaces import (
    IMailAccount,
    IMailStore,
    InvalidMailboxName,
    MailboxExists,
    MailboxHasChildren,
    MailboxNotAllowed,
    NoSuchMailbox,
    NoSuchMessage,
    QuotaExceeded,
)
from twistedmail.model import (
    DEFAULT_MAILBOXES,
    DELETED,
    INBOX,
    SEEN,
    Appended,
    ChangeEvent,
    CopyResult,
    FlagMode,
    FlagsChanged,
    FlagsResult,
    MailboxCreated,
    MailboxDeleted,
    MailboxInfo,
    MailboxRenamed,
    MailboxStatus,
    MessageInfo,
    MessagesAdded,
    MessagesExpunged,
    SpecialUse,
    normalize_flags,
)
from twistedmail.model import internal_date as internal_date_of
from twistedmail.store._events import Listeners
from twistedmail.store._names import (
    is_inside,
    parents,
    renamed,
    sort_key,
    validate_mailbox_name,
    validate_user_key,
)

_P = ParamSpec("_P")
_T = TypeVar("_T")

#: UIDVALIDITY is a 32-bit non-zero number (RFC 3501 §9, ``nz-number``).
_MAX_UIDVALIDITY = 2**32 - 1


def _deferred(call: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> Deferred[_T]:
    """
    Run ``call`` now and hand back its outcome as a fired Deferred.

    The contract says errors arrive as failures, never as exceptions raised
    from the call itself; this is the one place that makes it so.
    """
    try:
        result = call(*args, **kwargs)
    except Exception:
        return fail()
    return succeed(result)


@dataclass(frozen=True, slots=True)
class Limits:
    """
    Size limits a memory store enforces, so protocol tests can provoke
    `QuotaExceeded` (SMTP ``552``, IMAP ``NO [OVERQUOTA]``) with a real store.

    ``max_message_size`` bounds one message; ``quota`` bounds the bytes of
    all of an account's messages together.  ``None`` means no limit.
    """

    max_message_size: int | None = None
    quota: int | None = None


class _UidValidities:
    """
    Hands out UIDVALIDITY values, strictly increasing across the whole store.

    Seeded from the clock so that a store recreated after a restart (which
    forgets everything) starts above the values clients may have cached.
    """

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._last = 0

    def next(self) -> int:
        self._last = max(self._last + 1, int(self._now()))
        if self._last > _MAX_UIDVALIDITY:  # pragma: no cover - after year 2106
            self._last = 1
        return self._last


class _Mailbox:
    """One mailbox: its counters and its messages, kept consistent together."""

    def __init__(self, name: str, special_use: SpecialUse | None, uidvalidity: int) -> None:
        self.name = name
        self.special_use = special_use
        self.uidvalidity = uidvalidity
        self.uidnext = 1
        self.highestmodseq = 1
        self.messages: dict[int, tuple[MessageInfo, bytes]] = {}
        self.unseen = 0
        self.size = 0

    def info(self) -> MailboxInfo:
        return MailboxInfo(self.name, self.special_use, True)

    def status(self) -> MailboxStatus:
        return MailboxStatus(
            uidvalidity=self.uidvalidity,
            uidnext=self.uidnext,
            highestmodseq=self.highestmodseq,
            messages=len(self.messages),
            unseen=self.unseen,
            size=self.size,
        )

    def add(self, data: bytes, flags: frozenset[str], internal_date: datetime) -> MessageInfo:
        """Store one message under the next UID, with a new MODSEQ (RFC 7162 §3.1)."""
        self.highestmodseq += 1
        info = MessageInfo(self.uidnext, flags, internal_date, len(data), self.highestmodseq)
        self.uidnext += 1
        self.messages[info.uid] = (info, data)
        self.size += info.size
        self.unseen += SEEN not in flags
        return info

    def set_flags(self, uid: int, flags: frozenset[str]) -> MessageInfo:
        old, data = self.messages[uid]
        self.highestmodseq += 1
        new = replace(old, flags=flags, modseq=self.highestmodseq)
        self.messages[uid] = (new, data)
        self.unseen += (SEEN not in flags) - (SEEN not in old.flags)
        return new

    def remove(self, uids: Sequence[int]) -> MessagesExpunged:
        """Remove ``uids`` (all present) as one change with one new MODSEQ."""
        for uid in uids:
            info, _ = self.messages.pop(uid)
            self.size -= info.size
            self.unseen -= SEEN not in info.flags
        self.highestmodseq += 1
        return MessagesExpunged(self.name, self.uidvalidity, tuple(uids), self.highestmodseq)


@implementer(IMailAccount)
class MemoryAccount:
    """One user's mailboxes, in memory.  See `IMailAccount` for each method."""

    def __init__(
        self,
        user: str,
        uidvalidities: _UidValidities,
        now: Callable[[], float],
        limits: Limits = Limits(),
    ) -> None:
        self._user = user
        self._uidvalidities = uidvalidities
        self._now = now
        self._limits = limits
        self._listeners = Listeners(user)
        self._mailboxes: dict[str, _Mailbox] = {}
        self._subscriptions: set[str] = set()
        for name, special_use in DEFAULT_MAILBOXES:
            self._mailboxes[name] = _Mailbox(name, special_use, uidvalidities.next())
            self._subscriptions.add(name)

    @property
    def user(self) -> str:
        return self._user

    # --- helpers -----------------------------------------------------------------

    def _get(self, name: str) -> _Mailbox:
        mailbox = self._mailboxes.get(validate_mailbox_name(name))
        if mailbox is None:
            raise NoSuchMailbox(name)
        return mailbox

    def _make(self, name: str, special_use: SpecialUse | None = None) -> list[ChangeEvent]:
        """Create ``name`` and its missing parents; return the events to emit."""
        events: list[ChangeEvent] = []
        for parent in parents(name):
            if parent not in self._mailboxes:
                self._mailboxes[parent] = _Mailbox(parent, None, self._uidvalidities.next())
                events.append(MailboxCreated(parent))
        self._mailboxes[name] = _Mailbox(name, special_use, self._uidvalidities.next())
        events.append(MailboxCreated(name))
        return events

    def _check_room(self, sizes: Iterable[int]) -> None:
        """Refuse, before any change, what would break the store's `Limits`."""
        sizes = list(sizes)
        largest = self._limits.max_message_size
        if largest is not None and any(size > largest for size in sizes):
            raise QuotaExceeded(f"message larger than {largest} bytes")
        quota = self._limits.quota
        if quota is not None:
            used = sum(mailbox.size for mailbox in self._mailboxes.values())
            if used + sum(sizes) > quota:
                raise QuotaExceeded(f"account {self._user} would exceed {quota} bytes")

    def _emit(self, events: Iterable[ChangeEvent]) -> None:
        for event in events:
            self._listeners.emit(event)

    # --- mailboxes -----------------------------------------------------------------

    def list_mailboxes(self) -> Deferred[list[MailboxInfo]]:
        names = sorted(self._mailboxes, key=sort_key)
        return succeed([self._mailboxes[name].info() for name in names])

    def create_mailbox(
        self, name: str, special_use: SpecialUse | None = None
    ) -> Deferred[MailboxInfo]:
        return _deferred(self._create_mailbox, name, special_use)

    def _create_mailbox(self, name: str, special_use: SpecialUse | None) -> MailboxInfo:
        name = validate_mailbox_name(name)
        if name in self._mailboxes:
            raise MailboxExists(name)
        self._emit(self._make(name, special_use))
        return self._mailboxes[name].info()

    def delete_mailbox(self, name: str) -> Deferred[None]:
        return _deferred(self._delete_mailbox, name)

    def _delete_mailbox(self, name: str) -> None:
        mailbox = self._get(name)
        if mailbox.name == INBOX:
            raise MailboxNotAllowed("INBOX cannot be deleted")
        if any(is_inside(other, mailbox.name) for other in self._mailboxes):
            raise MailboxHasChildren(mailbox.name)
        # RFC 3501 §6.3.6: subscriptions are not removed with the mailbox.
        del self._mailboxes[mailbox.name]
        self._emit([MailboxDeleted(mailbox.name)])

    def rename_mailbox(self, old: str, new: str) -> Deferred[None]:
        return _deferred(self._rename_mailbox, old, new)

    def _rename_mailbox(self, old: str, new: str) -> None:
        new = validate_mailbox_name(new)  # a bad name is reported before a missing one
        source = self._get(old)
        if new in self._mailboxes:
            raise MailboxExists(new)
        if source.name == INBOX:
            # INBOX itself stays, so ``INBOX/old`` is a fine new name for its mail.
            self._rename_inbox(source, new)
            return
        if is_inside(new, source.name):
            raise InvalidMailboxName(f"cannot rename {source.name!r} inside itself")
        old = source.name
        moving = [name for name in self._mailboxes if renamed(name, old, new) != name]
        moving.sort(key=sort_key)
        for name in moving:
            if renamed(name, old, new) in self._mailboxes:
                raise MailboxExists(renamed(name, old, new))
        events: list[ChangeEvent] = []
        for parent in parents(new):
            if parent not in self._mailboxes:
                self._mailboxes[parent] = _Mailbox(parent, None, self._uidvalidities.next())
                events.append(MailboxCreated(parent))
        for name in moving:
            mailbox = self._mailboxes.pop(name)
            mailbox.name = renamed(name, old, new)
            self._mailboxes[mailbox.name] = mailbox
            events.append(MailboxRenamed(name, mailbox.name))
        self._subscriptions = {renamed(s, old, new) for s in self._subscriptions}
        self._emit(events)

    def _rename_inbox(self, inbox: _Mailbox, new: str) -> None:
        """
        RFC 3501 §6.3.5: renaming INBOX moves its messages to a new mailbox
        and leaves INBOX empty; its children stay where they are.
        """
        events = self._make(new)
        target = self._mailboxes[new]
        for info, data in inbox.messages.values():
            target.add(data, info.flags, info.internal_date)
        uids = list(inbox.messages)
        if uids:
            events.append(inbox.remove(uids))
        self._emit(events)

    # --- subscriptions -------------------------------------------------------------

    def subscriptions(self) -> Deferred[frozenset[str]]:
        return succeed(frozenset(self._subscriptions))

    def subscribe(self, name: str) -> Deferred[None]:
        return _deferred(lambda: self._subscriptions.add(validate_mailbox_name(name)))

    def unsubscribe(self, name: str) -> Deferred[None]:
        return _deferred(lambda: self._subscriptions.discard(validate_mailbox_name(name)))

    # --- reading -------------------------------------------------------------------

    def status(self, name: str) -> Deferred[MailboxStatus]:
        return _deferred(lambda: self._get(name).status())

    def messages(self, name: str) -> Deferred[list[MessageInfo]]:
        return _deferred(lambda: [info for info, _ in self._get(name).messages.values()])

    def fetch(
        self, name: str, uid: int, offset: int = 0, length: int | None = None
    ) -> Deferred[bytes]:
        return _deferred(self._fetch, name, uid, offset, length)

    def _fetch(self, name: str, uid: int, offset: int, length: int | None) -> bytes:
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("negative offset or length")
        found = self._get(name).messages.get(uid)
        if found is None:
            raise NoSuchMessage(f"{name} UID {uid}")
        data = found[1]
        if offset == 0 and (length is None or length >= len(data)):
            return data
        return data[offset:] if length is None else data[offset : offset + length]

    # --- adding --------------------------------------------------------------------

    def append(
        self,
        name: str,
        message: bytes,
        flags: Iterable[str] = (),
        internal_date: datetime | None = None,
    ) -> Deferred[Appended]:
        return _deferred(self._append, name, message, normalize_flags(flags), internal_date)

    def _append(
        self, name: str, message: bytes, flags: frozenset[str], internal_date: datetime | None
    ) -> Appended:
        mailbox = self._get(name)
        if not isinstance(message, bytes):
            raise TypeError("message must be bytes")
        self._check_room([len(message)])
        if internal_date is None:
            when = datetime.fromtimestamp(self._now(), UTC).replace(microsecond=0)
        else:
            when = internal_date_of(internal_date)
        info = mailbox.add(message, flags, when)
        self._emit([MessagesAdded(mailbox.name, mailbox.uidvalidity, (info,))])
        return Appended(mailbox.name, mailbox.uidvalidity, info)

    def deliver(self, message: bytes, mailbox: str = INBOX) -> Deferred[Appended]:
        """
        A name that is invalid or does not exist falls back to INBOX: a
        ``user+folder@`` address must never turn a deliverable message into
        a bounce.
        """
        try:
            target = self._get(mailbox).name
        except (InvalidMailboxName, NoSuchMailbox):
            target = INBOX
        if INBOX not in self._mailboxes:  # pragma: no cover - INBOX cannot be lost here
            self._make(INBOX)
        return _deferred(self._append, target, message, frozenset(), None)

    def copy(self, source: str, uids: Sequence[int], destination: str) -> Deferred[CopyResult]:
        return _deferred(self._copy, source, uids, destination, False)

    def move(self, source: str, uids: Sequence[int], destination: str) -> Deferred[CopyResult]:
        return _deferred(self._copy, source, uids, destination, True)

    def _copy(self, source: str, uids: Sequence[int], destination: str, move: bool) -> CopyResult:
        validate_mailbox_name(destination)  # a bad name is reported before a missing one
        src = self._get(source)
        dst = self._get(destination)
        if move and src is dst:
            raise MailboxNotAllowed("MOVE onto the same mailbox")
        present = sorted({uid for uid in uids if uid in src.messages})
        if not move:
            self._check_room(src.messages[uid][0].size for uid in present)
        mapping: list[tuple[int, int]] = []
        added: list[MessageInfo] = []
        for uid in present:
            info, data = src.messages[uid]
            new = dst.add(data, info.flags, info.internal_date)
            mapping.append((uid, new.uid))
            added.append(new)
        events: list[ChangeEvent] = []
        if added:
            events.append(MessagesAdded(dst.name, dst.uidvalidity, tuple(added)))
            if move:
                events.append(src.remove(present))
        self._emit(events)
        return CopyResult(dst.uidvalidity, tuple(mapping))

    # --- changing ------------------------------------------------------------------

    def set_flags(
        self,
        name: str,
        uids: Sequence[int],
        flags: Iterable[str],
        mode: FlagMode,
        unchanged_since: int | None = None,
    ) -> Deferred[FlagsResult]:
        return _deferred(self._set_flags, name, uids, normalize_flags(flags), mode, unchanged_since)

    def _set_flags(
        self,
        name: str,
        uids: Sequence[int],
        flags: frozenset[str],
        mode: FlagMode,
        unchanged_since: int | None,
    ) -> FlagsResult:
        mailbox = self._get(name)
        changed: list[MessageInfo] = []
        failed: list[int] = []
        for uid in sorted({uid for uid in uids if uid in mailbox.messages}):
            info = mailbox.messages[uid][0]
            # RFC 7162 §3.1.3: UNCHANGEDSINCE fails messages changed after it.
            if unchanged_since is not None and info.modseq > unchanged_since:
                failed.append(uid)
                continue
            new_flags = mode.apply(info.flags, flags)
            if new_flags != info.flags:
                changed.append(mailbox.set_flags(uid, new_flags))
        if changed:
            self._emit([FlagsChanged(mailbox.name, mailbox.uidvalidity, tuple(changed))])
        return FlagsResult(tuple(changed), tuple(failed))

    def expunge(self, name: str, uids: Sequence[int] | None = None) -> Deferred[list[int]]:
        return _deferred(self._expunge, name, uids)

    def _expunge(self, name: str, uids: Sequence[int] | None) -> list[int]:
        mailbox = self._get(name)
        wanted = None if uids is None else set(uids)
        gone = [
            uid
            for uid, (info, _) in mailbox.messages.items()
            if DELETED in info.flags and (wanted is None or uid in wanted)
        ]
        if gone:
            self._emit([mailbox.remove(gone)])
        return gone

    def listen(self, listener: Callable[[ChangeEvent], None]) -> Callable[[], None]:
        return self._listeners.add(listener)


@implementer(IMailStore)
class MemoryStore:
    """
    Every account, in memory.

    ``clock`` (any `IReactorTime`, e.g. a `task.Clock` in tests) gives
    default internal dates and seeds UIDVALIDITY; without one the wall clock
    is used.  ``limits`` applies to every account.
    """

    def __init__(self, clock: IReactorTime | None = None, limits: Limits = Limits()) -> None:
        self._now: Callable[[], float] = clock.seconds if clock is not None else time.time
        self._limits = limits
        self._uidvalidities = _UidValidities(self._now)
        self._accounts: dict[str, MemoryAccount] = {}

    def account(self, user: str) -> Deferred[IMailAccount]:
        return _deferred(self._account, user)

    def _account(self, user: str) -> IMailAccount:
        key = validate_user_key(user)
        found = self._accounts.get(key)
        if found is None:
            found = MemoryAccount(key, self._uidvalidities, self._now, self._limits)
            self._accounts[key] = found
        return found

    def remove_account(self, user: str) -> Deferred[None]:
        self._accounts.pop(user, None)
        return succeed(None)

    def close(self) -> Deferred[None]:
        self._accounts.clear()
        return succeed(None)
