"""
Blocking file work of the Maildir store, meant for the reactor's thread pool.

Nothing here touches the index or the cache: each function gets paths and
bytes and returns a result, so running them in threads cannot race the
bookkeeping, which stays on the reactor thread.  The one piece of state
shared between threads is `DirSync`'s counters, behind its own locks.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import socket
import threading
from collections.abc import Callable


class UniqueNames:
    """
    Maildir file base names: ``<sec>.M<usec>P<pid>Q<n>R<rand>.<host>,S=<size>``.

    The maildir spec (http://cr.yp.to/proto/maildir.html) asks for time,
    process id and a per-process counter before the host name; Dovecot
    writes the same ``M``/``P``/``Q`` fields.  The random ``R`` part keeps
    two stores in one process apart, and the zero-padded microseconds make
    name order delivery order (used to re-adopt files in the same order).
    ``,S=`` is the size, which Dovecot and others read without a stat.
    """

    def __init__(self) -> None:
        self._counter = itertools.count(1)
        self._random = secrets.token_hex(4)
        host = socket.gethostname() or "localhost"
        # The spec: "/" and ":" in the host name are written as octal escapes.
        self._host = host.replace("/", "\\057").replace(":", "\\072")

    def base(self, now: float, size: int) -> str:
        sec = int(now)
        usec = int((now - sec) * 1_000_000)
        return (
            f"{sec}.M{usec:06d}P{os.getpid()}Q{next(self._counter)}R{self._random}"
            f".{self._host},S={size}"
        )


def write_tmp(folder: str, base: str, data: bytes, mtime: int) -> str:
    """Write ``data`` into ``tmp/``, fsync it, stamp the internal date; return the path."""
    path = os.path.join(folder, "tmp", base)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        # The mtime is the internal date: stamp it before the fsync, so it
        # is as durable as the bytes.
        os.utime(fd, (mtime, mtime))
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
    return path


class DirSync:
    """
    Group commit of one directory's fsync, shared by the threads renaming into it.

    A rename is durable once an fsync of its directory *started* after it.
    Each writer takes a ticket right after its rename; the first to get the
    lock fsyncs for every ticket handed out so far, and the writers queued
    behind it find their ticket covered and return without an fsync of their
    own.  Ten deliveries landing together cost one directory fsync, not ten
    (what Postfix's and Dovecot's queues get from their own batching).
    """

    def __init__(self, path: str, fsync: Callable[[str], None] | None = None) -> None:
        self.path = path
        self._fsync = fsync_dir if fsync is None else fsync
        self._issued = 0
        self._synced = 0
        self._counter = threading.Lock()  # guards _issued
        self._lock = threading.Lock()  # one fsync at a time; guards _synced

    def ticket(self) -> int:
        """Call right after a rename into the directory."""
        with self._counter:
            self._issued += 1
            return self._issued

    def wait(self, ticket: int) -> None:
        """Return once an fsync that started after ``ticket``'s rename has finished."""
        with self._lock:
            if self._synced >= ticket:
                return
            with self._counter:
                covered = self._issued  # every rename up to here is done
            self._fsync(self.path)
            self._synced = covered


def place(folder: str, base: str, filename: str, data: bytes, mtime: int, target: DirSync) -> None:
    """
    The whole durable write of one message, in one thread-pool job: into
    ``tmp/``, fsync'd, renamed into ``target``'s directory as ``filename``,
    and that directory fsync'd (with any concurrent renames, see `DirSync`).

    On failure the ``tmp/`` file is gone again and the error propagates; a
    file that reached ``target`` stays (it is durable mail, and the next
    sync adopts it), so this only fails before the rename.
    """
    tmp = write_tmp(folder, base, data, mtime)
    try:
        os.rename(tmp, os.path.join(target.path, filename))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    target.wait(target.ticket())


def fsync_dir(path: str) -> None:
    """Make renames and unlinks in this directory durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dirs(paths: list[str]) -> None:
    for path in paths:
        fsync_dir(path)


def read_range(path: str, offset: int, length: int | None) -> bytes:
    """Read only the bytes asked for (seek, then a bounded read)."""
    with open(path, "rb") as f:
        if offset:
            f.seek(offset)
        return f.read() if length is None else f.read(length)


def read_all(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def remove_tree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
