"""
Blocking file work of the Maildir store, meant for the reactor's thread pool.

Nothing here touches shared state: each function gets paths and bytes and
returns a result, so running them in threads cannot race the index
bookkeeping, which stays on the reactor thread.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import socket


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

    def temporary(self, now: float) -> str:
        """A unique name for a file in ``tmp/`` whose size is not known yet."""
        return self.base(now, 0).rpartition(",S=")[0]


def write_tmp(
    folder: str,
    base: str,
    data: bytes,
    mtime: int,
    spare: str | None = None,
    *,
    sync: bool = True,
) -> str:
    """
    Write ``data`` into ``tmp/``, fsync it, stamp the internal date; return the path.

    ``spare`` names an empty file we made in ``tmp/`` beforehand
    (`make_spares`) to write into instead of creating ``base`` there.
    ``sync=False`` leaves the fsync to the caller (the delivery journal,
    whose record makes the message durable instead).
    """
    fd = -1
    if spare is not None:
        path = os.path.join(folder, "tmp", spare)
        with contextlib.suppress(FileNotFoundError):  # cleaned away: make one
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    if fd < 0:
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
        if sync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
    return path


def make_spares(folder: str, names: list[str]) -> list[str]:
    """
    Make empty files in ``tmp/`` for deliveries to come; return those made.

    Allocating a new inode is the slowest step of a delivery on some disks
    (about 170 us on the benchmark machine's ext4, more than the rename and
    the directory fsync together), and doing it ahead, off the path between
    a message's end and its ``250``, takes it out of the wait.  To other
    programs these are deliveries in progress; left behind by a crash they
    are cleaned up like any stale ``tmp/`` file (the maildir spec's 36 hours).
    """
    made = []
    for name in names:
        try:
            fd = os.open(
                os.path.join(folder, "tmp", name),
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                0o600,
            )
        except OSError:
            break  # the delivery makes its own file then
        os.close(fd)
        made.append(name)
    return made


def remove_files(directory: str, names: list[str]) -> None:
    """Unlink ``names`` in ``directory``, whatever is already gone."""
    for name in names:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(directory, name))


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
