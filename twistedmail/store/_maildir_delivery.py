"""
Group commit of deliveries into one Maildir folder.

Durable delivery costs two fsyncs (the file, then its directory after the
rename into ``new/``), a thread-pool round trip and an index append.  When
many sessions deliver into one folder at once, doing all of that per
message makes the threads fight over the GIL and the disk.  So deliveries
queue per folder, and a thread-pool job (two at most at a time) takes
everything queued: each file is written, fsync'd and renamed into
``new/``, then one directory fsync covers all the renames.  Back on the
reactor thread one index append hands out the job's UIDs, in queue order,
and its deliveries fire.  Whatever arrives while the jobs run is the next
job, so a lone delivery starts at once and waits for nobody (what Postfix
and Dovecot do with their queue and index commits).

On the fsync path, each queue also keeps a few empty files in ``tmp/``,
made in the pool between jobs, for deliveries to write into: allocating a
new inode is the slowest step of a delivery on some filesystems, and this
takes it out of the time between a message's end and its ``250``
(`make_spares`).

With the store's delivery journal (`_maildir_journal`), a job's files are
not fsync'd: their records are appended to the journal and flushed once,
which makes them durable (`write_batch_journaled`).

The contract is the same as one message at a time: a delivery fires only
when it is durable (its file and the directory fsync'd, or its journal
record flushed) and its UID is in the index; one that fails leaves no file
behind.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from twistedmail.interfaces import MailError, NoSuchMailbox, TemporaryFailure
from twistedmail.model import Appended, ChangeEvent
from twistedmail.store import _maildir_journal as journal
from twistedmail.store._maildir_files import fsync_dir, make_spares, remove_files, write_tmp
from twistedmail.store._maildir_folder import Folder, Placed
from twistedmail.store._maildir_journal import JOURNAL_LIMIT, Journal, Record, Slot, record_size

log = Logger()

#: One job writes at most this many messages (or bytes): the rest is the next job.
_MAX_BATCH = 64
_MAX_BATCH_BYTES = 8 * 1024 * 1024
#: Jobs writing into one folder at once.  With one, a lone delivery that
#: found the queue idle made everybody arriving just after it wait for its
#: fsyncs; with two, they start at once, and the kernel merges the two
#: jobs' journal commits.  (smtp-source -s 10 -d, paired runs: +12-40%.)
_MAX_JOBS = 2
#: Empty tmp/ files kept ready: twice the largest batch, within these
#: bounds, made in one go once half of them are used.
_MIN_SPARES = 8
_MAX_SPARES = 32


@dataclass(slots=True)
class _Delivery:
    base: str
    data: bytes
    when: datetime
    done: Deferred[Appended]


_Item = tuple[str, bytes, int, str | None]


def _place(
    folder: str, items: list[_Item], *, sync: bool
) -> tuple[list[OSError | None], list[str]]:
    """
    Every ``(base, data, mtime, spare)`` written into ``tmp/`` (into the
    ``spare`` file if given, see `make_spares`; fsync'd if ``sync``) and
    renamed into ``new/`` as ``base``.  One outcome per item, and the paths
    placed; an item that failed leaves nothing behind.
    """
    new = os.path.join(folder, "new")
    outcomes: list[OSError | None] = []
    placed: list[str] = []
    for base, data, mtime, spare in items:
        try:
            tmp = write_tmp(folder, base, data, mtime, spare, sync=sync)
            target = os.path.join(new, base)
            try:
                os.rename(tmp, target)
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as e:
            outcomes.append(e)
            continue
        placed.append(target)
        outcomes.append(None)
    return outcomes, placed


def _take_back(
    placed: list[str], outcomes: list[OSError | None], error: OSError
) -> list[OSError | None]:
    """Not durable: remove the files, so the 4xx the sender gets and its retry make no duplicate."""
    for target in placed:
        with contextlib.suppress(OSError):
            os.unlink(target)
    return [error if outcome is None else outcome for outcome in outcomes]


def write_batch(
    folder: str, items: list[_Item], fsync_new: Callable[[str], None] = fsync_dir
) -> list[OSError | None]:
    """
    In a pool thread: every item placed in ``new/`` (`_place`, each file
    fsync'd), then one fsync of ``new/`` for all.

    Returns one outcome per item: None (durable) or the error that stopped
    it, in which case nothing of it remains on disk.
    """
    outcomes, placed = _place(folder, items, sync=True)
    if placed:
        try:
            fsync_new(os.path.join(folder, "new"))
        except OSError as e:
            return _take_back(placed, outcomes, e)
    return outcomes


def write_batch_journaled(
    folder: str, items: list[_Item], slot: Slot, relpath: bytes, sizes: list[int]
) -> list[OSError | None]:
    """
    `write_batch` with the delivery journal: the files are placed without
    an fsync, and their records appended to the journal at ``slot`` and
    flushed, which makes them durable (see `_maildir_journal`).  A failed
    item's room stays a hole the replay skips.  Same outcomes as `write_batch`.
    """
    outcomes, placed = _place(folder, items, sync=False)
    if placed:
        records: list[Record | int] = [
            size if outcome is not None else Record(relpath, os.fsencode(base), mtime, data)
            for (base, data, mtime, _spare), size, outcome in zip(
                items, sizes, outcomes, strict=True
            )
        ]
        try:
            journal.append(slot.fd, slot.offset, slot.generation, records)
        except OSError as e:
            return _take_back(placed, outcomes, e)
    return outcomes


def _error(folder: Folder, error: OSError) -> Exception:
    if isinstance(error, FileNotFoundError):
        return NoSuchMailbox(folder.name)
    return TemporaryFailure(f"cannot write into {folder.name}: {error.strerror}")


class DeliveryQueue:
    """The deliveries waiting for one folder, and the job writing them."""

    def __init__(
        self,
        folder: Folder,
        thread: Callable[..., Deferred[Any]],
        emit: Callable[[Iterable[ChangeEvent]], None],
        temporary_name: Callable[[], str],
        journal: Journal | None = None,
    ) -> None:
        self._folder = folder
        self._journal = journal
        self._relpath = (folder.path, journal.relpath(folder.path) if journal else b"")
        self._thread = thread
        self._emit = emit
        self._temporary_name = temporary_name
        self._waiting: deque[_Delivery] = deque()
        self._running = 0
        self._spares: list[str] = []
        self._wanted = _MIN_SPARES
        self._preparing = False
        self._closed = False

    def add(self, base: str, data: bytes, when: datetime) -> Deferred[Appended]:
        """Fires with the message's UID once it is durable (see the module doc)."""
        done: Deferred[Appended] = Deferred()
        self._waiting.append(_Delivery(base, data, when, done))
        if self._running < _MAX_JOBS:
            self._start()
        return done

    def _start(self) -> None:
        batch: list[_Delivery] = []
        size = 0
        while self._waiting and len(batch) < _MAX_BATCH and (not batch or size < _MAX_BATCH_BYTES):
            item = self._waiting.popleft()
            batch.append(item)
            size += len(item.data)
        self._running += 1
        self._wanted = max(self._wanted, min(_MAX_SPARES, 2 * len(batch)))
        spares = self._spares
        items = [
            (d.base, d.data, int(d.when.timestamp()), spares.pop() if spares else None)
            for d in batch
        ]
        slot = None
        if self._journal is not None and all(len(d.data) <= JOURNAL_LIMIT for d in batch):
            relpath = self._journal_name()
            sizes = [record_size(relpath, os.fsencode(d.base), len(d.data)) for d in batch]
            slot = self._journal.reserve(sizes)
        job: Deferred[list[OSError | None]]
        if slot is None:
            job = self._thread(write_batch, self._folder.path, items)
        else:
            job = self._thread(
                write_batch_journaled, self._folder.path, items, slot, relpath, sizes
            )
        job.addBoth(self._written, batch, slot)

    def _journal_name(self) -> bytes:
        """The folder's name in journal records (remembered: `os.path.relpath` is slow)."""
        path, relpath = self._relpath
        if path != self._folder.path and self._journal is not None:
            relpath = self._journal.relpath(self._folder.path)
            self._relpath = (self._folder.path, relpath)
        return relpath

    def _written(
        self,
        outcomes: list[OSError | None] | Failure,
        batch: list[_Delivery],
        slot: Slot | None = None,
    ) -> None:
        self._running -= 1
        if slot is not None and self._journal is not None:
            self._journal.release(slot)
        results: list[Appended | BaseException | Failure] = []
        try:
            results = self._commit(outcomes, batch)
        except Exception as e:
            log.failure("Committing {count} deliveries failed", count=len(batch))
            # The senders hear a 4xx and will retry: take the files back so
            # the retry is no duplicate (what write_batch does on failure).
            if not isinstance(outcomes, Failure):
                bases = [d.base for d, o in zip(batch, outcomes, strict=True) if o is None]
                remove_files(os.path.join(self._folder.path, "new"), bases)
            self._folder.invalidate()
            if not isinstance(e, MailError):
                e = TemporaryFailure(f"cannot index mail in {self._folder.name}")
            results = [e] * len(batch)
        # The next job goes to the disk before this one's senders hear back.
        if self._waiting:
            self._start()
        self._prepare()
        for delivery, result in zip(batch, results, strict=True):
            if isinstance(result, Appended):
                delivery.done.callback(result)
            else:
                delivery.done.errback(result)

    def _prepare(self) -> None:
        """
        Top up the spare ``tmp/`` files, in the pool, while nobody waits for them.

        Not with the journal: there a delivery waits for no inode allocation
        to reach the disk, and making the file in the job is cheaper than
        another thread-pool job (bench/delivery_bench.py, one at a time: 2-8%).
        """
        missing = self._wanted - len(self._spares)
        if self._journal is not None or self._preparing or self._closed:
            return
        if 2 * missing < self._wanted:
            return
        self._preparing = True
        names = [self._temporary_name() for _ in range(missing)]
        job: Deferred[list[str]] = self._thread(make_spares, self._folder.path, names)
        job.addBoth(self._prepared)

    def _prepared(self, made: list[str] | Failure) -> None:
        self._preparing = False
        if isinstance(made, Failure):
            return  # deliveries make their own files meanwhile
        if self._closed:
            remove_files(os.path.join(self._folder.path, "tmp"), made)
        else:
            self._spares.extend(made)

    def close(self) -> None:
        """Take the spare files away again (the folder is closed or deleted)."""
        self._closed = True
        remove_files(os.path.join(self._folder.path, "tmp"), self._spares)
        self._spares.clear()

    def _commit(
        self, outcomes: list[OSError | None] | Failure, batch: list[_Delivery]
    ) -> list[Appended | BaseException | Failure]:
        if isinstance(outcomes, Failure):
            return [outcomes] * len(batch)
        folder = self._folder
        placed = [
            Placed(d.base, "new", d.base, "", frozenset(), d.when, len(d.data))
            for d, outcome in zip(batch, outcomes, strict=True)
            if outcome is None
        ]
        infos, events = folder.commit_added(placed) if placed else ([], [])
        self._emit(events)
        stored = iter(infos)
        return [
            Appended(folder.name, folder.uidvalidity, next(stored))
            if outcome is None
            else _error(folder, outcome)
            for outcome in outcomes
        ]
