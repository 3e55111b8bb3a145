"""
The per-folder UID/MODSEQ index of the Maildir store, and its lock.

Maildir itself has no UIDs: a file's name is all it has.  ``twistedmail-uidlist``
in each folder is an append-only log that gives every file base name a UID
and a MODSEQ and remembers the flag letters it last saw, so that UIDs
survive restarts and flags changed by another program while we were away
still get a new MODSEQ (RFC 7162 needs every change to have one), plus the
internal date and size, so that reopening a large folder needs no stat of
every file::

    TMUIDLIST 1 <uidvalidity> <uidnext> <highestmodseq>
    + <uid> <modseq> =<letters> <date> <size> <base>   a message got a UID
    m <uid> <modseq> =<letters>             its flags changed
    k <uid> <keyword> ...                   its keywords beyond the 26 letters
    - <modseq> <uid> <uid> ...              these messages are gone

Why a log and not a rewritten file: delivery into a 100,000-message folder
appends one line instead of rewriting megabytes, and another process
catches up by reading only the bytes added since it last looked (same
inode, larger size).  The log is compacted (tmp + fsync + rename) when it
holds twice as many lines as live messages; a crash mid-append leaves an
incomplete last line, which readers ignore and the next writer cuts off.

Appends are not fsync'd: the message files are the truth (file and
directory are fsync'd before a UID is handed out), and lines lost to a power
failure are rebuilt by adoption in base-name order, which is delivery order.
Every change is made under `FileLock`, re-reading the log first, so two
daemons (or the daemon and the CLI) never hand out the same UID.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from twistedmail.interfaces import TemporaryFailure

INDEX_FILE = "twistedmail-uidlist"
LOCK_FILE = "twistedmail-uidlist.lock"
_MAGIC = "TMUIDLIST"
_LOCK_TIMEOUT = 10.0


class FileLock:
    """
    An exclusive ``flock`` on a lock file, re-entrant within one object.

    Held only for synchronous stretches on the reactor thread, never across
    a yield, so the wait for another process is short.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._fd: int | None = None
        self._depth = 0

    @contextmanager
    def held(self) -> Iterator[None]:
        if self._depth == 0:
            self._acquire()
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0 and self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _acquire(self) -> None:
        if self._fd is None:
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + _LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            if time.monotonic() > deadline:
                raise TemporaryFailure(f"timed out waiting for {self._path}")
            time.sleep(0.005)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass(slots=True)
class Record:
    uid: int
    modseq: int
    letters: str
    date: int
    size: int
    base: str
    extra: frozenset[str] = frozenset()


def _add_line(r: Record) -> str:
    line = f"+ {r.uid} {r.modseq} ={r.letters} {r.date} {r.size} {r.base}\n"
    return line + _extra_line(r) if r.extra else line


def _extra_line(r: Record) -> str:
    return " ".join(["k", str(r.uid), *sorted(r.extra)]) + "\n"


class IndexLost(Exception):
    """The index file is missing or unreadable: UIDs must start over."""


class UidIndex:
    """The in-memory state of one folder's log, kept in step with the file."""

    def __init__(self, folder: str) -> None:
        self.path = os.path.join(folder, INDEX_FILE)
        self.uidvalidity = 0
        self.uidnext = 1
        self.highestmodseq = 1
        self.by_uid: dict[int, Record] = {}
        self.by_base: dict[str, Record] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._offset = 0
        self._lines = 0
        self._pending: list[str] = []
        # Kept open between appends (one per delivery: open and close were
        # a sixth of an index commit); reopened when the file is replaced.
        self._append_fd: int | None = None
        self._append_ino = 0

    @property
    def loaded(self) -> bool:
        return self._stamp is not None

    def unchanged(self) -> bool:
        """True if the file is exactly as we last read or wrote it (one stat)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        return (st.st_ino, st.st_size, st.st_mtime_ns) == self._stamp

    # --- reading -----------------------------------------------------------------

    def refresh(self) -> bool:
        """
        Catch up with the file: read only the new tail when it grew in place.

        Returns False if the file is exactly as we last read or wrote it
        (nobody else changed anything), True if it was read again.

        :raises IndexLost: no usable file.
        """
        if self._stamp is not None and self.unchanged():
            return False  # one stat instead of open, fstat and close
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
                if stamp == self._stamp:
                    return False
                full = self._stamp is None or st.st_ino != self._stamp[0]
                if full or st.st_size < self._offset:
                    self._reset()
                else:
                    f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            raise IndexLost(self.path) from None
        end = data.rfind(b"\n") + 1
        for line in data[:end].decode("utf-8", "surrogateescape").splitlines():
            self._apply(line)
        self._offset += end
        if not self.uidvalidity:
            raise IndexLost(self.path)
        self._stamp = stamp
        return True

    def _reset(self) -> None:
        self.uidvalidity = 0
        self.uidnext = 1
        self.highestmodseq = 1
        self.by_uid.clear()
        self.by_base.clear()
        self._offset = 0
        self._lines = 0

    def _apply(self, line: str) -> None:
        self._lines += 1
        fields = line.split(" ", 6)
        try:
            kind = fields[0]
            if kind == _MAGIC and self._offset == 0 and not self.uidvalidity:
                self.uidvalidity = int(fields[2])
                self.uidnext = max(self.uidnext, int(fields[3]))
                self.highestmodseq = max(self.highestmodseq, int(fields[4]))
            elif kind == "+" and len(fields) == 7:
                uid, modseq, date, size = map(int, (fields[1], fields[2], fields[4], fields[5]))
                self._add(Record(uid, modseq, fields[3][1:], date, size, fields[6]))
            elif kind == "m" and len(fields) == 4:
                record = self.by_uid.get(int(fields[1]))
                if record is not None:
                    record.modseq = int(fields[2])
                    record.letters = fields[3][1:]
                    self.highestmodseq = max(self.highestmodseq, record.modseq)
            elif kind == "k":
                record = self.by_uid.get(int(fields[1]))
                if record is not None:
                    record.extra = frozenset(line.split(" ")[2:])
            elif kind == "-":
                self.highestmodseq = max(self.highestmodseq, int(fields[1]))
                for gone in line.split(" ")[2:]:
                    self._drop(int(gone))
        except (IndexError, ValueError):
            pass  # a damaged line costs one message a new UID, nothing more

    def _add(self, record: Record) -> None:
        old = self.by_base.get(record.base)
        if old is not None:
            self._drop(old.uid)
        self.by_uid[record.uid] = record
        self.by_base[record.base] = record
        self.uidnext = max(self.uidnext, record.uid + 1)
        self.highestmodseq = max(self.highestmodseq, record.modseq)

    def _drop(self, uid: int) -> None:
        record = self.by_uid.pop(uid, None)
        if record is not None and self.by_base.get(record.base) is record:
            del self.by_base[record.base]

    # --- changing (under the lock, after refresh) -----------------------------------------

    def create(self, uidvalidity: int) -> None:
        """Start a new, empty index (new folder, or the old one was lost)."""
        self._reset()
        self.uidvalidity = uidvalidity
        self._rewrite()

    def add(
        self, base: str, letters: str, date: int, size: int, extra: frozenset[str] = frozenset()
    ) -> Record:
        self.highestmodseq += 1
        record = Record(self.uidnext, self.highestmodseq, letters, date, size, base, extra)
        self._add(record)
        self._pending.append(_add_line(record))
        return record

    def change(self, uid: int, letters: str, extra: frozenset[str] | None = None) -> Record:
        """New flag letters (and, if given, extra keywords) with a new MODSEQ."""
        record = self.by_uid[uid]
        self.highestmodseq += 1
        record.modseq = self.highestmodseq
        record.letters = letters
        self._pending.append(f"m {uid} {record.modseq} ={letters}\n")
        if extra is not None and extra != record.extra:
            record.extra = extra
            self._pending.append(_extra_line(record))
        return record

    def remove(self, uids: Sequence[int]) -> int:
        """Forget ``uids`` as one change with one new MODSEQ; return it."""
        self.highestmodseq += 1
        for uid in uids:
            self._drop(uid)
        self._pending.append(f"- {self.highestmodseq} {' '.join(map(str, uids))}\n")
        return self.highestmodseq

    def flush(self) -> None:
        """Write what changed: append, or compact when the log got long."""
        if not self._pending:
            return
        if self._lines + len(self._pending) > 2 * len(self.by_uid) + 100:
            self._pending.clear()
            self._rewrite()
            return
        data = "".join(self._pending).encode("utf-8", "surrogateescape")
        fd = self._appender()
        try:
            if self._stamp is None or self._stamp[1] != self._offset:
                # Cut off a half-written line a crashed writer left behind
                # (the size we last saw, under this lock, says if there is one).
                os.ftruncate(fd, self._offset)
            os.pwrite(fd, data, self._offset)
            st = os.fstat(fd)
        except OSError:
            self.close()
            raise
        self._lines += len(self._pending)
        self._pending.clear()
        self._offset += len(data)
        self._stamp = (st.st_ino, st.st_size, st.st_mtime_ns)

    def _appender(self) -> int:
        """The open file to append to: the one at ``path`` as last refreshed (under the lock)."""
        ino = self._stamp[0] if self._stamp is not None else -1
        if self._append_fd is None or self._append_ino != ino:
            self.close()
            self._append_fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
            self._append_ino = os.fstat(self._append_fd).st_ino
        return self._append_fd

    def close(self) -> None:
        if self._append_fd is not None:
            os.close(self._append_fd)
            self._append_fd = None

    def _rewrite(self) -> None:
        lines = [f"{_MAGIC} 1 {self.uidvalidity} {self.uidnext} {self.highestmodseq}\n"]
        lines += [_add_line(r) for r in sorted(self.by_uid.values(), key=lambda r: r.uid)]
        data = "".join(lines).encode("utf-8", "surrogateescape")
        tmp = f"{self.path}.tmp.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        st = os.stat(self.path)
        self._offset = len(data)
        self._lines = len(lines)
        self._stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
