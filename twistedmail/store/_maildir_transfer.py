"""
Putting message files into Maildir folders: append/deliver, copy and move.

Each path keeps the contract's order: the data is on disk (file fsync'd in
the thread pool) before its name appears in ``new/`` or ``cur/``, the
directory is fsync'd, and the index and listeners hear of it last.  Copies
are hard links (a message file never changes once written, Dovecot does the
same), so copying a 20 MB message costs no I/O; moves are renames.  Both
keep the file's mtime, which is its internal date.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine, Iterable, Sequence
from contextlib import ExitStack, suppress
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from twisted.internet.defer import Deferred, succeed

from twistedmail.interfaces import NoSuchMailbox, TemporaryFailure
from twistedmail.model import Appended, ChangeEvent, CopyResult, MessageInfo
from twistedmail.store import _maildir_files as files
from twistedmail.store._maildir_delivery import DeliveryQueue
from twistedmail.store._maildir_files import UniqueNames
from twistedmail.store._maildir_folder import Folder, Placed
from twistedmail.store._maildir_journal import Journal
from twistedmail.store._maildir_keywords import cur_name

_T = TypeVar("_T")

#: Files renamed, linked or unlinked in one stretch on the reactor thread;
#: then the reactor turns, so a STORE or MOVE over 10,000 messages (0.1-0.2 s
#: of system calls) never pauses every other session at once.
RENAMES_AT_ONCE = 500


class _Placed(NamedTuple):
    """What one stretch of `Transfer.run` did."""

    mapping: dict[int, int]
    fallback: list[tuple[int, MessageInfo, str]]
    added: list[ChangeEvent]
    expunged: list[ChangeEvent]
    found: list[ChangeEvent]


class Transfer:
    """
    The writing half of one account; runs its blocking parts via ``thread``
    (to await), deliveries via ``in_thread`` (returns a Deferred; the
    store's own writer threads, see `_maildir_writers`).
    """

    def __init__(
        self,
        names: UniqueNames,
        thread: Callable[..., Coroutine[Any, Any, Any]],
        in_thread: Callable[..., Deferred[Any]],
        emit: Callable[[Iterable[ChangeEvent]], None],
        now: Callable[[], float],
        journal: Journal | None = None,
        turn: Callable[[], Deferred[None]] | None = None,
    ) -> None:
        self._names = names
        self._turn = turn or (lambda: succeed(None))
        self._journal = journal
        self._thread = thread
        self._in_thread = in_thread
        self._emit = emit
        self._now = now

    def deliver(self, folder: Folder, data: bytes, when: datetime) -> Deferred[Appended]:
        """
        The SMTP path: no flags, so the file goes to ``new/`` and needs no
        keyword letters, no lock and no look at the folder before it lands;
        concurrent deliveries share the thread job, the directory fsync and
        the index append (`DeliveryQueue`).

        The folder is not synced first: mail others dropped in is found by
        the next read of the folder (`IMailAccount.messages`), and our own
        file enters the cache directly, so a burst of deliveries never
        lists or walks the folder.
        """
        queue = folder.deliveries
        if queue is None:
            queue = folder.deliveries = DeliveryQueue(
                folder,
                self._in_thread,
                self._emit,
                lambda: self._names.temporary(self._now()),
                self._journal,
            )
        return queue.add(self._names.base(self._now(), len(data)), data, when)

    async def store(
        self,
        folder: Folder,
        data: bytes,
        flags: frozenset[str],
        when: datetime,
        *,
        deliver: bool,
    ) -> Appended:
        size = len(data)
        base = self._names.base(self._now(), size)
        try:
            tmp: str = await self._thread(
                files.write_tmp, folder.path, base, data, int(when.timestamp())
            )
        except FileNotFoundError:
            raise NoSuchMailbox(folder.name) from None
        except OSError as e:
            raise TemporaryFailure(f"cannot write into {folder.name}: {e.strerror}") from e
        try:
            with folder.lock.held():
                folder.keywords.refresh()
                letters, extra = folder.keywords.letters_of(flags)
                # The maildir spec: fresh mail goes to new/; anything with
                # flags (APPEND) belongs in cur/ with its ":2," info.
                subdir = "new" if deliver and not letters else "cur"
                filename = base if subdir == "new" else cur_name(base, letters)
                with folder.own_change((subdir,)):
                    os.rename(tmp, os.path.join(folder.path, subdir, filename))
            await self._thread(files.fsync_dirs, [os.path.join(folder.path, subdir)])
        except BaseException as e:
            with suppress(OSError):
                os.unlink(tmp)
            if isinstance(e, FileNotFoundError):
                raise NoSuchMailbox(folder.name) from None
            if isinstance(e, OSError):
                raise TemporaryFailure(f"cannot store into {folder.name}") from e
            raise
        placed = Placed(base, subdir, filename, letters, extra, when, size)
        infos, events = folder.commit_added([placed])
        self._emit(events)
        return Appended(folder.name, folder.uidvalidity, infos[0])

    async def run(
        self,
        src: Folder,
        uids: Sequence[int],
        dst: Folder,
        *,
        move: bool,
        quiet: bool = False,
    ) -> CopyResult:
        """
        COPY (hard links) or MOVE (renames) ``uids`` from ``src`` to ``dst``.

        Both folders are locked (in path order, so two processes cannot
        deadlock) while files are placed and the indexes updated; a crash
        in between loses nothing: a moved file not yet in ``dst``'s index is
        adopted there, and ``src`` notices it is gone.  `RENAMES_AT_ONCE`
        files at a time, with a turn of the reactor in between (``turn``).
        ``quiet`` leaves out the `MessagesAdded` event (renaming INBOX, RFC
        3501 §6.3.5).
        """
        mapping: dict[int, int] = {}
        fallback: list[tuple[int, MessageInfo, str]] = []
        added: list[ChangeEvent] = []
        expunged: list[ChangeEvent] = []
        placed = False
        wanted = sorted(set(uids))
        for start in range(0, max(len(wanted), 1), RENAMES_AT_ONCE):
            if start:
                await self._turn()
            part = self._place(src, wanted[start : start + RENAMES_AT_ONCE], dst, move=move)
            self._emit(part.found)
            mapping.update(part.mapping)
            fallback += part.fallback
            added += part.added
            expunged += part.expunged
            placed = placed or bool(part.mapping)
        if placed:
            dirs = [os.path.join(dst.path, "cur")]
            if move:
                dirs += [os.path.join(src.path, d) for d in ("new", "cur")]
            await self._thread(files.fsync_dirs, dirs)
        if not quiet:
            self._emit(added)
        self._emit(expunged)
        for uid, info, path in fallback:
            # No hard links here (another filesystem, a link limit): copy the bytes.
            data: bytes = await self._thread(files.read_all, path)
            appended = await self.store(dst, data, info.flags, info.internal_date, deliver=False)
            mapping[uid] = appended.info.uid
        return CopyResult(dst.uidvalidity, tuple(sorted(mapping.items())))

    def _place(self, src: Folder, uids: Sequence[int], dst: Folder, *, move: bool) -> _Placed:
        """One synchronous stretch of `run`, under both folders' locks."""
        mapping: dict[int, int] = {}
        fallback: list[tuple[int, MessageInfo, str]] = []
        placed: list[tuple[int, Placed]] = []
        moved: list[int] = []
        expunged: list[ChangeEvent] = []
        found: list[ChangeEvent] = []  # others' changes, told after the locks go
        folders = sorted({id(f): f for f in (src, dst)}.values(), key=lambda f: f.path)
        with ExitStack() as locks:
            for folder in folders:
                locks.enter_context(folder.lock.held())
            for folder in folders:
                found += folder.sync()
            dst.keywords.refresh()
            with ExitStack() as changes:
                changes.enter_context(dst.own_change(("cur",)))
                if move:
                    changes.enter_context(src.own_change(("new", "cur")))
                for uid in uids:
                    entry = src.entry(uid)
                    if entry is None:
                        continue
                    info = entry.info
                    letters, extra = dst.keywords.letters_of(info.flags)
                    base = entry.base if move else self._names.base(self._now(), info.size)
                    filename = cur_name(base, letters)
                    target = os.path.join(dst.path, "cur", filename)
                    try:
                        if move:
                            os.rename(src.file_path(entry), target)
                        else:
                            os.link(src.file_path(entry), target)
                    except FileNotFoundError:
                        src.invalidate()  # renamed by someone else: skip it this time
                        continue
                    except OSError as e:
                        if move:
                            raise TemporaryFailure(f"cannot move into {dst.name}") from e
                        fallback.append((uid, info, src.file_path(entry)))
                        continue
                    when, size = info.internal_date, info.size
                    placed.append((uid, Placed(base, "cur", filename, letters, extra, when, size)))
                    moved.append(uid)
            infos, added = dst.commit_added([p for _, p in placed])
            mapping.update((uid, info.uid) for (uid, _), info in zip(placed, infos, strict=True))
            if move:
                event = src.forget(moved)
                src.index.flush()
                if event is not None:
                    expunged.append(event)
        return _Placed(mapping, fallback, added, expunged, found)
