"""
One Maildir folder as the store sees it: its files, index and cache.

The disk is the truth, and other programs (mutt, Dovecot, a second
twistedmail process) may change it at any time, so every operation starts
with `Folder.sync`.  Listing ``cur/`` of a 100,000-message folder costs tens
of milliseconds, so ``new/`` and ``cur/`` are listed again only when their
mtime (or inode) changed since we last looked; our own renames update the
remembered mtime as long as nobody else touched the directory first.  A
directory whose mtime is too close to our listing is listed again next
time, because another change within the same timestamp tick would not move
the mtime (Dovecot makes the same call): within a second on filesystems
with whole-second mtimes, within 50 ms where mtimes have sub-second parts
(Linux stamps them with its coarse clock, a few milliseconds).

Differences found by a sync become events: files nobody indexed get new
UIDs (`MessagesAdded`), renamed flag letters get a new MODSEQ
(`FlagsChanged`), vanished files are expunged (`MessagesExpunged`).
Everything here is synchronous and runs on the reactor thread; changes to
the index happen under the folder's `FileLock`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NamedTuple

from twisted.logger import Logger

from twistedmail.interfaces import NoSuchMailbox
from twistedmail.model import (
    SEEN,
    ChangeEvent,
    FlagsChanged,
    MailboxStatus,
    MessageInfo,
    MessagesAdded,
    MessagesExpunged,
)
from twistedmail.store._maildir_index import LOCK_FILE, FileLock, IndexLost, UidIndex
from twistedmail.store._maildir_keywords import Keywords, cur_name, split_name

if TYPE_CHECKING:  # pragma: no cover
    from twistedmail.store._maildir_delivery import DeliveryQueue

log = Logger()

_DIRS = ("new", "cur")
#: Listing again while the directory mtime is this close to the listing time.
_DIRTY_WINDOW_NS = 1_000_000_000
_FINE_DIRTY_WINDOW_NS = 50_000_000


def _too_recent(mtime_ns: int, listed_ns: int) -> bool:
    coarse = mtime_ns % 1_000_000_000 == 0
    return listed_ns - mtime_ns < (_DIRTY_WINDOW_NS if coarse else _FINE_DIRTY_WINDOW_NS)


#: The maildir spec: tmp/ files untouched for 36 hours are leftovers.
_TMP_MAX_AGE = 36 * 3600

Stamp = tuple[int, int]


class Placed(NamedTuple):
    """A message file we put into a folder, waiting for its UID."""

    base: str
    subdir: str
    filename: str
    letters: str
    extra: frozenset[str]
    when: datetime
    size: int


@dataclass(slots=True)
class Entry:
    base: str
    subdir: str
    filename: str
    letters: str
    info: MessageInfo


def _date(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class Folder:
    def __init__(
        self,
        name: str,
        path: str,
        new_uidvalidity: Callable[[], int],
        listdir: Callable[[str], list[str]],
    ) -> None:
        self.name = name
        self.path = path
        self.index = UidIndex(path)
        self.keywords = Keywords(path)
        self.lock = FileLock(os.path.join(path, LOCK_FILE))
        self._new_uidvalidity = new_uidvalidity
        self._listdir = listdir
        self._entries: dict[int, Entry] = {}
        # The file names of _entries per directory, kept in step with it, so
        # that a sync can compare a listing with them using set operations.
        self._names: dict[str, set[str]] = {d: set() for d in _DIRS}
        self._loaded = False
        #: Deliveries waiting to be written (made by `Transfer` on first use).
        self.deliveries: DeliveryQueue | None = None
        self._stamps: dict[str, Stamp | None] = {"new": None, "cur": None}
        self._dirty: set[str] = set()
        self._sorted: list[MessageInfo] | None = None
        self._status: tuple[int, int] | None = None
        self._normal: dict[str, str] = {}

    def _letters(self, filename: str) -> str:
        """Flag letters of a file, normalised (sorted, unique, no blanks); memoised."""
        info = split_name(filename)[1]
        found = self._normal.get(info)
        if found is None:
            found = "".join(sorted({c for c in info if not c.isspace()}))
            if len(self._normal) < 4096:
                self._normal[info] = found
        return found

    def close(self) -> None:
        if self.deliveries is not None:
            self.deliveries.close()
        self.index.close()
        self.lock.close()

    # --- reading the cache -----------------------------------------------------------

    @property
    def uidvalidity(self) -> int:
        return self.index.uidvalidity

    def entry(self, uid: int) -> Entry | None:
        return self._entries.get(uid)

    def file_path(self, entry: Entry) -> str:
        return os.path.join(self.path, entry.subdir, entry.filename)

    def messages(self) -> list[MessageInfo]:
        """The cached UID-sorted list; rebuilt only after a change."""
        if self._sorted is None:
            self._sorted = [self._entries[uid].info for uid in sorted(self._entries)]
        return self._sorted

    def status(self) -> MailboxStatus:
        if self._status is None:
            infos = self._entries.values()
            unseen = sum(1 for e in infos if SEEN not in e.info.flags)
            self._status = (unseen, sum(e.info.size for e in infos))
        return MailboxStatus(
            uidvalidity=self.index.uidvalidity,
            uidnext=self.index.uidnext,
            highestmodseq=self.index.highestmodseq,
            messages=len(self._entries),
            unseen=self._status[0],
            size=self._status[1],
        )

    def _changed(self) -> None:
        self._sorted = None
        self._status = None

    def _put(self, entry: Entry) -> None:
        """Cache ``entry`` under its UID, replacing what was there."""
        old = self._entries.get(entry.info.uid)
        if old is not None:
            self._names[old.subdir].discard(old.filename)
        self._entries[entry.info.uid] = entry
        self._names[entry.subdir].add(entry.filename)

    def _pop(self, uid: int) -> None:
        old = self._entries.pop(uid, None)
        if old is not None:
            self._names[old.subdir].discard(old.filename)

    def _replace_all(self, entries: dict[int, Entry]) -> None:
        self._entries = entries
        self._names = {d: set() for d in _DIRS}
        for entry in entries.values():
            self._names[entry.subdir].add(entry.filename)

    # --- syncing with the disk ---------------------------------------------------------

    def _stat_dir(self, subdir: str) -> Stamp:
        try:
            st = os.stat(os.path.join(self.path, subdir))
        except FileNotFoundError:
            raise NoSuchMailbox(self.name) from None
        return (st.st_mtime_ns, st.st_ino)

    def invalidate(self) -> None:
        """Forget what we know of the directories: the next sync lists both."""
        self._dirty.update(_DIRS)

    def sync(self) -> list[ChangeEvent]:
        """Bring the cache and index in line with the disk; return the events."""
        stamps = {d: self._stat_dir(d) for d in _DIRS}
        stale = {d for d in _DIRS if stamps[d] != self._stamps[d] or d in self._dirty}
        if self._loaded and not stale and self.index.unchanged():
            return []
        with self.lock.held():
            others = self._refresh_index()
            if not self._loaded:
                self._clean_tmp()
                stale = set(_DIRS)
            self.keywords.refresh()
            listed = time.time_ns()
            fresh = {d: self._list(d) for d in sorted(stale, key=_DIRS.index)}
            quick = None if others or not self._loaded else self._only_added(fresh)
            events = quick if quick is not None else self._reconcile(self._listing(fresh))
            self.index.flush()
        for d in stale:
            self._stamps[d] = stamps[d]
            if _too_recent(stamps[d][0], listed):
                self._dirty.add(d)
            else:
                self._dirty.discard(d)
        self._loaded = True
        return events

    def _refresh_index(self) -> bool:
        """Catch up with the index; True if someone else changed it (or it was lost)."""
        try:
            return self.index.refresh()
        except IndexLost:
            # Contract: a lost UID index means a new, larger UIDVALIDITY.
            self.index.create(self._new_uidvalidity())
            if self._loaded:
                log.warn("UID index of {folder} was lost; new UIDVALIDITY", folder=self.path)
            self._replace_all({})
            self._loaded = False
            self._changed()
            return True

    def _list(self, subdir: str) -> set[str]:
        """The message file names in ``subdir``."""
        # Hidden files are not mail; a line break would break the index's
        # line format (and no maildir writer makes one).  Both are rare, so
        # one C-level look at all names decides whether to filter at all.
        names = self._listdir(os.path.join(self.path, subdir))
        joined = "/".join(names)  # "/" cannot occur in a file name
        if "\n" not in joined and "/." not in joined and not joined.startswith("."):
            return set(names)
        return {name for name in names if not name.startswith(".") and "\n" not in name}

    def _only_added(self, fresh: dict[str, set[str]]) -> list[ChangeEvent] | None:
        """
        The common case after deliveries, ours or others': the listed
        directories only gained files nobody indexed.  Adopt them without
        walking every message; None if anything else changed (a file went,
        was renamed, or is indexed already), which `_reconcile` sorts out.
        Call with an index nobody else changed since we last read it, so
        that index and cache agree.
        """
        added: dict[str, tuple[str, str]] = {}
        for subdir, names in fresh.items():
            known = self._names[subdir]
            if not known <= names:
                return None
            for filename in names - known:
                base = filename.partition(":")[0]
                if base in added or base in self.index.by_base:
                    return None
                added[base] = (subdir, filename)
        if not added:
            return []
        infos = self._adopt(added, sorted(added))
        if not infos:
            return []
        self._changed()
        return [MessagesAdded(self.name, self.uidvalidity, tuple(infos))]

    def _adopt(self, files: dict[str, tuple[str, str]], bases: list[str]) -> list[MessageInfo]:
        """Give files nobody indexed a UID each, in base-name (delivery) order."""
        if bases:
            log.info("Adopting {count} new files in {folder}", count=len(bases), folder=self.path)
        infos: list[MessageInfo] = []
        dirs = {subdir: os.path.join(self.path, subdir, "") for subdir in _DIRS}
        dates: dict[int, datetime] = {}  # files dropped in together share a second
        for base in bases:
            subdir, filename = files[base]
            letters = self._letters(filename)
            try:
                st = os.stat(dirs[subdir] + filename)
            except FileNotFoundError:
                continue
            record = self.index.add(base, letters, int(st.st_mtime), st.st_size)
            flags = self.keywords.flags_of(letters)
            when = dates.get(record.date)
            if when is None:
                when = dates[record.date] = _date(record.date)
            info = MessageInfo(record.uid, flags, when, record.size, record.modseq)
            self._put(Entry(base, subdir, filename, letters, info))
            infos.append(info)
        return infos

    def _listing(self, fresh: dict[str, set[str]]) -> dict[str, tuple[str, str]]:
        """base -> (subdir, filename): ``fresh`` listings, the cache for the other dirs."""
        files: dict[str, tuple[str, str]] = {}
        for entry in self._entries.values():
            if entry.subdir not in fresh:
                files[entry.base] = (entry.subdir, entry.filename)
        # new/ before cur/: a file moved new -> cur meanwhile is still seen.
        for subdir in _DIRS:
            for filename in fresh.get(subdir, ()):
                files[filename.partition(":")[0]] = (subdir, filename)
        return files

    def _reconcile(self, files: dict[str, tuple[str, str]]) -> list[ChangeEvent]:
        if any(r.base not in files for r in self.index.by_uid.values()):
            # A file renamed while we listed may be missed: look once more
            # before calling anything expunged.
            files = self._listing({d: self._list(d) for d in _DIRS})
        initial = not self._loaded
        old = self._entries
        new: dict[int, Entry] = {}
        changed: list[MessageInfo] = []
        adopt: list[str] = []
        # Mail arrives in bursts: many messages share an internal date (to
        # the second), and making the datetime was a third of a cold read.
        dates: dict[int, datetime] = {}
        for base, (subdir, filename) in files.items():
            record = self.index.by_base.get(base)
            if record is None:
                adopt.append(base)
                continue
            prev = old.get(record.uid)
            if prev is not None and prev.base != base:
                prev = None
            if (
                prev is not None
                and prev.filename == filename
                and prev.letters == record.letters
                and prev.info.modseq == record.modseq
            ):
                new[record.uid] = prev
                continue
            if filename.endswith(":2," + record.letters) or (
                not record.letters and ":" not in filename
            ):
                letters = record.letters  # the common case, without parsing
            else:
                letters = self._letters(filename)
                if record.letters != letters:
                    record = self.index.change(record.uid, letters)
            flags = self.keywords.flags_of(letters) | record.extra
            when = dates.get(record.date)
            if when is None:
                when = dates[record.date] = _date(record.date)
            info = MessageInfo(record.uid, flags, when, record.size, record.modseq)
            if prev is not None and info != prev.info:
                changed.append(info)
            new[record.uid] = Entry(base, subdir, filename, letters, info)
        added = [new[uid].info for uid in sorted(set(new) - set(old))] if not initial else []
        self._replace_all(new)
        added += self._adopt(files, sorted(adopt))
        gone = [r.uid for r in self.index.by_uid.values() if r.base not in files]
        if gone:
            self.index.remove(sorted(gone))
        expunged = sorted((set(old) - set(self._entries)) | set(gone))
        events: list[ChangeEvent] = []
        if changed or added or expunged:
            self._changed()
        if changed:
            events.append(FlagsChanged(self.name, self.uidvalidity, tuple(changed)))
        if added:
            events.append(MessagesAdded(self.name, self.uidvalidity, tuple(added)))
        if expunged:
            events.append(
                MessagesExpunged(
                    self.name, self.uidvalidity, tuple(expunged), self.index.highestmodseq
                )
            )
        return events

    def _clean_tmp(self) -> None:
        tmp = os.path.join(self.path, "tmp")
        cutoff = time.time() - _TMP_MAX_AGE
        try:
            names = os.listdir(tmp)
        except FileNotFoundError:
            return
        for name in names:
            path = os.path.join(tmp, name)
            try:
                st = os.stat(path)
                if st.st_mtime < cutoff and st.st_atime < cutoff:
                    os.unlink(path)
                    log.info("Removed stale {path} (maildir spec: 36 hours)", path=path)
            except (FileNotFoundError, IsADirectoryError, PermissionError):
                pass

    # --- our own changes ------------------------------------------------------------------

    @contextmanager
    def own_change(self, subdirs: Iterable[str]) -> Iterator[None]:
        """
        Around our own renames/unlinks: if nobody else touched the directory
        before us, its new mtime is ours and needs no listing.
        """
        before = {d: self._stat_dir(d) for d in set(subdirs)}
        try:
            yield
        finally:
            for d, stamp in before.items():
                if stamp == self._stamps[d] and d not in self._dirty:
                    self._stamps[d] = self._stat_dir(d)

    def commit_added(self, placed: Sequence[Placed]) -> tuple[list[MessageInfo], list[ChangeEvent]]:
        """
        Give UIDs to files we placed.

        A file another process (or one of our syncs) already adopted keeps
        the UID it got there.
        """
        infos: list[MessageInfo] = []
        fresh: list[MessageInfo] = []
        with self.lock.held():
            self._refresh_index()
            if any(p.letters for p in placed):
                self.keywords.refresh()  # no letters (deliveries): no keywords to name
            for base, subdir, filename, letters, extra, when, size in placed:
                record = self.index.by_base.get(base) or self.index.add(
                    base, letters, int(when.timestamp()), size, extra
                )
                entry = self._entries.get(record.uid)
                if entry is None or entry.base != base:
                    flags = self.keywords.flags_of(letters) | record.extra
                    info = MessageInfo(record.uid, flags, when, size, record.modseq)
                    entry = Entry(base, subdir, filename, letters, info)
                    self._put(entry)
                    fresh.append(info)
                infos.append(entry.info)
            self.index.flush()
        events: list[ChangeEvent] = []
        if fresh:
            self._changed()
            events.append(MessagesAdded(self.name, self.uidvalidity, tuple(fresh)))
        return infos, events

    def rename_flags(self, entry: Entry, flags: frozenset[str]) -> MessageInfo | None:
        """
        Give one message new flags: rename its file into ``cur/``, take a
        new MODSEQ.  None if the flags that can be stored did not change.
        Call under the lock and inside `own_change`, then `index.flush`.
        """
        letters, extra = self.keywords.letters_of(flags, entry.letters)
        record = self.index.by_uid.get(entry.info.uid)
        if record is None or (letters == entry.letters and extra == record.extra):
            return None
        if letters != entry.letters:
            filename = cur_name(entry.base, letters)
            try:
                os.rename(self.file_path(entry), os.path.join(self.path, "cur", filename))
            except FileNotFoundError:
                self.invalidate()  # someone else moved it: the next sync will tell
                return None
            self._names[entry.subdir].discard(entry.filename)
            entry.subdir, entry.filename, entry.letters = "cur", filename, letters
            self._names["cur"].add(filename)
        record = self.index.change(entry.info.uid, letters, extra)
        flags = self.keywords.flags_of(letters) | record.extra
        entry.info = info = replace(entry.info, flags=flags, modseq=record.modseq)
        self._changed()
        return info

    def forget(self, uids: Sequence[int]) -> MessagesExpunged | None:
        """
        Drop messages whose files we removed or moved away, with one MODSEQ.
        Call under the lock, then `index.flush`.
        """
        present = [uid for uid in uids if uid in self._entries]
        if not present:
            return None
        for uid in present:
            self._pop(uid)
        known = [uid for uid in present if uid in self.index.by_uid]
        if known:
            self.index.remove(known)
        self._changed()
        return MessagesExpunged(
            self.name, self.uidvalidity, tuple(sorted(present)), self.index.highestmodseq
        )
