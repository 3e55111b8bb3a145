"""
The Maildir store's delivery journal: one flush per delivery instead of two.

A Maildir delivery is durable once its file and its directory entry in
``new/`` are on disk, which costs two fsyncs, each a journal commit of the
filesystem and a flush of the disk's cache: about 0.3 ms on the benchmark
machine, more than everything else between a message's end and its
``250``.  Databases and MTAs (Postfix's queue file, a database's write-ahead
log) get durability for one flush instead: the bytes are appended to a
file that already exists and whose blocks are already allocated, so an
``fdatasync`` writes data and nothing else (0.08 ms here).

So deliveries are written into the Maildir without fsync (``tmp/``, then
renamed into ``new/`` as always), and the same bytes, with where they went,
are written into this journal and ``fdatasync``'d before the ``250``.  A
checkpoint, in the thread pool a fraction of a second later, makes the
Maildir files themselves durable with one ``syncfs`` for the whole batch and
then starts the journal afresh.  After a crash, opening the store replays
the journal: every record whose file is in none of its account's folders
is written again (fsync'd), so nothing acknowledged is lost.

Two logs take turns, so deliveries go on into one while the other is
checkpointed; when neither has room (or the journal is in use by another
process, which ``flock`` tells), deliveries take the classic path and
fsync their files and directory themselves.  Messages over
`JOURNAL_LIMIT` always do: writing them twice would cost more than a flush.

Layout of each log: a 4 KiB header block (magic, generation) and records
at 512-byte boundaries, each a header (magic, generation, length, CRC-32 of
the payload, CRC-32 of the header) and a payload (folder path relative to
the mail root, file base name, mtime, message).  A new generation (random)
in the header block retires every record at once; records from an older
generation, torn ones and holes are skipped by the scan, which tries every
boundary, so one torn record cannot hide an acknowledged one after it.

Known limits: a message expunged (or its folder deleted) in the moment
between its delivery and the checkpoint comes back (into INBOX if its
folder is gone) if the machine crashes right then; a clean shutdown
checkpoints first, so only a crash can.  The ``syncfs`` covers the mail
root's filesystem, so an account whose Maildir is mounted from elsewhere
should not be journalled (keep the data directory on one filesystem).
"""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from twistedmail import _locking
from twistedmail.store._maildir_files import fsync_dir, write_tmp

log = Logger()

#: Messages larger than this are not journalled (written twice, they would cost more than a flush).
JOURNAL_LIMIT = 256 * 1024
#: Each log's size.  Preallocated, so appends change no metadata.
CAPACITY = 4 * 1024 * 1024
#: Checkpoint once a quarter of the active log is used, or this long after its first record.
CHECKPOINT_DELAY = 0.2
#: A failed checkpoint is tried again after this long.
RETRY_DELAY = 1.0

_HEADER_BLOCK = 4096
_ALIGN = 512
_LOG_MAGIC = b"TMJLOG01"
_RECORD_MAGIC = b"TMJREC01"
_LOG_HEADER = struct.Struct("<8sQI")  # magic, generation, crc of the two
_RECORD_HEADER = struct.Struct("<8sQIII")  # magic, generation, length, payload crc, header crc
_PAYLOAD_HEADER = struct.Struct("<HHq")  # relpath length, base length, mtime
_LOCK_FILE = "lock"
_LOG_NAMES = ("log.0", "log.1")


def record_size(relpath: bytes, base: bytes, data_size: int) -> int:
    """The room one record takes in a log, padding included."""
    size = _RECORD_HEADER.size + _PAYLOAD_HEADER.size + len(relpath) + len(base) + data_size
    return -(-size // _ALIGN) * _ALIGN


@dataclass(frozen=True, slots=True)
class Record:
    relpath: bytes
    base: bytes
    mtime: int
    data: bytes


def _encode(record: Record, generation: int, room: int) -> bytes:
    payload = b"".join(
        (
            _PAYLOAD_HEADER.pack(len(record.relpath), len(record.base), record.mtime),
            record.relpath,
            record.base,
            record.data,
        )
    )
    head = struct.pack("<8sQII", _RECORD_MAGIC, generation, len(payload), zlib.crc32(payload))
    encoded = head + struct.pack("<I", zlib.crc32(head)) + payload
    return encoded + bytes(room - len(encoded))


def _decode(payload: bytes) -> Record:
    rel_len, base_len, mtime = _PAYLOAD_HEADER.unpack_from(payload)
    start = _PAYLOAD_HEADER.size
    relpath = payload[start : start + rel_len]
    base = payload[start + rel_len : start + rel_len + base_len]
    return Record(relpath, base, mtime, payload[start + rel_len + base_len :])


def scan(contents: bytes, generation: int) -> Iterator[Record]:
    """Every intact record of ``generation`` in a log's contents."""
    offset = _HEADER_BLOCK
    while offset + _RECORD_HEADER.size <= len(contents):
        found = contents.find(_RECORD_MAGIC, offset)
        if found < 0:
            return
        if found % _ALIGN:
            offset = found - found % _ALIGN + _ALIGN
            continue
        offset = found
        if offset + _RECORD_HEADER.size > len(contents):
            return
        magic, gen, length, crc, head_crc = _RECORD_HEADER.unpack_from(contents, offset)
        end = offset + _RECORD_HEADER.size + length
        if (
            magic == _RECORD_MAGIC
            and gen == generation
            and head_crc == zlib.crc32(contents[offset : offset + _RECORD_HEADER.size - 4])
            and end <= len(contents)
        ):
            payload = contents[offset + _RECORD_HEADER.size : end]
            if zlib.crc32(payload) == crc:
                yield _decode(payload)
                offset += -(-(end - offset) // _ALIGN) * _ALIGN
                continue
        offset += _ALIGN


# --- blocking work, for the thread pool ----------------------------------------------------


def append(fd: int, offset: int, generation: int, records: Sequence[Record | int]) -> None:
    """
    Write records (an int is a hole of that many octets: a delivery that
    failed before its record) at ``offset`` and flush them.
    """
    parts = []
    for record in records:
        if isinstance(record, int):
            parts.append(bytes(record))
        else:
            parts.append(
                _encode(
                    record, generation, record_size(record.relpath, record.base, len(record.data))
                )
            )
    os.pwrite(fd, b"".join(parts), offset)
    os.fdatasync(fd)


def _write_header(fd: int, generation: int) -> None:
    head = struct.pack("<8sQ", _LOG_MAGIC, generation)
    os.pwrite(fd, head + struct.pack("<I", zlib.crc32(head)), 0)
    os.fdatasync(fd)


def _read_generation(contents: bytes) -> int | None:
    if len(contents) < _LOG_HEADER.size:
        return None
    magic, generation, crc = _LOG_HEADER.unpack_from(contents)
    head = contents[: _LOG_HEADER.size - 4]
    if magic != _LOG_MAGIC or crc != zlib.crc32(head):
        return None
    return int(generation)


def _new_generation() -> int:
    return int.from_bytes(os.urandom(8), "little") or 1


def _syncfs_call() -> Callable[[int], None]:
    """``syncfs(2)`` where libc has it (one flush for a whole batch of files), else ``sync``."""
    try:
        import ctypes  # the stdlib has no syncfs wrapper; some builds lack ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.syncfs
    except (ImportError, OSError, AttributeError):
        return lambda fd: os.sync()

    def syncfs(fd: int) -> None:
        if call(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))

    return syncfs


def _present_bases(root: bytes) -> set[bytes]:
    """The base names of every message file in one account, all folders."""
    found: set[bytes] = set()
    folders = [root] + [
        os.path.join(root, name)
        for name in os.listdir(root)
        if name.startswith(b".") and os.path.isdir(os.path.join(root, name))
    ]
    for folder in folders:
        for sub in (b"new", b"cur"):
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                found.update(
                    name.partition(b":")[0] for name in os.listdir(os.path.join(folder, sub))
                )
    return found


def replay(mail_root: str, records: Sequence[Record]) -> int:
    """
    Write again every journalled message whose file is in none of its
    account's folders (a crash before the checkpoint); return how many.

    A message whose folder is gone (renamed or deleted in the moment before
    the crash) goes to the account's INBOX: it was acknowledged, so it must
    not be lost.  A record whose account no longer exists is dropped.
    """
    root = os.fsencode(mail_root)
    present: dict[bytes, set[bytes]] = {}
    written = 0
    for record in records:
        parts = record.relpath.split(b"/")
        user = parts[0]
        if user in (b"", b".") or b".." in parts or b"/" in record.base or not record.base:
            continue  # not a name we write: never follow it out of the mail root
        user_root = os.path.join(root, user)
        if not os.path.isdir(user_root):
            continue  # the account was removed
        if user not in present:
            present[user] = _present_bases(user_root)
        if record.base in present[user]:
            continue
        folder = os.path.join(root, record.relpath)
        if not os.path.isdir(os.path.join(folder, b"new")):
            folder = user_root
        folder_path, base = os.fsdecode(folder), os.fsdecode(record.base)
        tmp = write_tmp(folder_path, base, record.data, record.mtime)
        os.rename(tmp, os.path.join(folder_path, "new", base))
        fsync_dir(os.path.join(folder_path, "new"))
        present[user].add(record.base)
        written += 1
    return written


# --- the journal, on the reactor thread ----------------------------------------------------


@dataclass(slots=True)
class _Log:
    fd: int
    generation: int
    used: int = _HEADER_BLOCK
    inflight: int = 0

    @property
    def clean(self) -> bool:
        return self.used == _HEADER_BLOCK


@dataclass(frozen=True, slots=True)
class Slot:
    """Room reserved in a log for one delivery job's records."""

    log: _Log = field(repr=False)
    offset: int
    generation: int

    @property
    def fd(self) -> int:
        return self.log.fd


class Journal:
    """
    The delivery journal of one store (see the module doc).

    ``thread`` runs a blocking call in the reactor's thread pool and
    returns a Deferred; ``call_later`` is the reactor's.
    """

    def __init__(
        self,
        directory: str,
        mail_root: str,
        lock_fd: int,
        logs: tuple[_Log, _Log],
        thread: Callable[..., Deferred[Any]],
        call_later: Callable[..., Any],
        capacity: int,
    ) -> None:
        self.directory = directory
        self._capacity = capacity
        self._mail_root = mail_root
        self._lock_fd = lock_fd
        self._logs = logs
        self._active = 0
        self._thread = thread
        self._call_later = call_later
        self._syncfs = _syncfs_call()
        self._draining: _Log | None = None
        self._syncing = False
        self._timer: Any = None
        self._closed = False
        self._idle: list[Deferred[None]] = []

    @classmethod
    def open(
        cls,
        directory: str,
        mail_root: str,
        thread: Callable[..., Deferred[Any]],
        call_later: Callable[..., Any],
        capacity: int = CAPACITY,
    ) -> Journal | None:
        """
        Take the journal (None if another store, in this process or another,
        has it: that one journals, this one fsyncs), replay what a crash
        left in it, and start both logs afresh.  Blocking: at startup.
        """
        os.makedirs(directory, exist_ok=True)
        os.makedirs(mail_root, exist_ok=True)
        lock_fd = _locking.try_lock(os.path.join(directory, _LOCK_FILE))
        if lock_fd is None:
            return None
        try:
            logs = _open_logs(directory, mail_root, capacity)
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(directory, mail_root, lock_fd, logs, thread, call_later, capacity)

    # --- deliveries -----------------------------------------------------------------------

    def relpath(self, folder_path: str) -> bytes:
        """How a record names a folder: its path under the mail root."""
        return os.fsencode(os.path.relpath(folder_path, self._mail_root))

    def reserve(self, sizes: Sequence[int]) -> Slot | None:
        """Room for records of these sizes (see `record_size`), or None: fsync instead."""
        if self._closed:
            return None
        total = sum(sizes)
        log_ = self._logs[self._active]
        if log_.used + total > self._capacity:
            self.checkpoint()
            log_ = self._logs[self._active]
            if log_.used + total > self._capacity:
                return None
        slot = Slot(log_, log_.used, log_.generation)
        if log_.clean and self._timer is None:
            self._timer = self._call_later(CHECKPOINT_DELAY, self._due)
        log_.used += total
        log_.inflight += 1
        if log_.used - _HEADER_BLOCK >= self._capacity // 4:
            self.checkpoint()
        return slot

    def release(self, slot: Slot) -> None:
        """The job holding ``slot`` is over (flushed or failed)."""
        slot.log.inflight -= 1
        if slot.log is self._draining and slot.log.inflight == 0:
            self._sync()
        self._tell_idle()

    # --- checkpoints -------------------------------------------------------------------------

    def _due(self) -> None:
        self._timer = None
        self.checkpoint()

    def checkpoint(self) -> None:
        """Switch logs and make everything the old one holds durable in the Maildir."""
        current = self._logs[self._active]
        other = self._logs[1 - self._active]
        if self._draining is not None or current.clean or not other.clean:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._draining = current
        self._active = 1 - self._active
        if current.inflight == 0:
            self._sync()

    def _sync(self) -> None:
        draining = self._draining
        if draining is None or self._syncing or self._closed:
            return
        self._syncing = True
        generation = _new_generation()
        job = self._thread(self._checkpoint_files, draining.fd, generation)
        job.addBoth(self._synced, draining, generation)

    def _checkpoint_files(self, fd: int, generation: int) -> None:
        root = os.open(self._mail_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self._syncfs(root)
        finally:
            os.close(root)
        _write_header(fd, generation)

    def _synced(self, result: Failure | None, draining: _Log, generation: int) -> None:
        self._syncing = False
        if isinstance(result, Failure):
            log.failure("Journal checkpoint failed; trying again", result)
            self._call_later(RETRY_DELAY, self._sync)
            self._tell_idle()
            return
        draining.generation = generation
        draining.used = _HEADER_BLOCK
        self._draining = None
        active = self._logs[self._active]
        if not active.clean and self._timer is None and not self._closed:
            self._timer = self._call_later(CHECKPOINT_DELAY, self._due)
        self._tell_idle()

    # --- shutdown ---------------------------------------------------------------------------

    def when_idle(self) -> Deferred[None]:
        """Fires once no delivery job or checkpoint is running (at once if none is)."""
        done: Deferred[None] = Deferred()
        self._idle.append(done)
        self._tell_idle()
        return done

    def _tell_idle(self) -> None:
        if self._idle and not self.busy:
            waiting, self._idle = self._idle, []
            for done in waiting:
                done.callback(None)

    def close(self) -> None:
        """
        A clean stop: everything journalled is made durable and retired, so
        a restart replays nothing (and brings back nothing expunged since).
        Call once no delivery job is running (the store's close waits).
        """
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            if any(not log_.clean for log_ in self._logs):
                root = os.open(self._mail_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    self._syncfs(root)
                finally:
                    os.close(root)
                for log_ in self._logs:
                    if not log_.clean:
                        _write_header(log_.fd, _new_generation())
        finally:
            for log_ in self._logs:
                os.close(log_.fd)
            os.close(self._lock_fd)

    @property
    def busy(self) -> bool:
        """A delivery job or a checkpoint is still running."""
        return self._syncing or any(log_.inflight for log_ in self._logs)


def _open_logs(directory: str, mail_root: str, capacity: int) -> tuple[_Log, _Log]:
    """Replay what both logs hold, then start them afresh (new generations, preallocated)."""
    records: list[Record] = []
    fds: list[int] = []
    try:
        for name in _LOG_NAMES:
            path = os.path.join(directory, name)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fds.append(fd)
            contents = os.pread(fd, max(capacity, os.fstat(fd).st_size), 0)
            generation = _read_generation(contents)
            if generation is not None:
                records.extend(scan(contents, generation))
        if records:
            replayed = replay(mail_root, records)
            log.info(
                "Replayed the delivery journal: {replayed} of {count} messages rewritten",
                replayed=replayed,
                count=len(records),
            )
            root = os.open(mail_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                _syncfs_call()(root)
            finally:
                os.close(root)
        logs = []
        for fd in fds:
            if os.fstat(fd).st_size < capacity:
                os.posix_fallocate(fd, 0, capacity)
                os.fsync(fd)
            generation = _new_generation()
            _write_header(fd, generation)
            logs.append(_Log(fd, generation))
        fsync_dir(directory)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return logs[0], logs[1]
