"""
Reading a message body: DATA (dot-stuffed, ends with ``CRLF.CRLF``) and
BDAT chunks (counted octets, RFC 3030).

Decisions, all from the SMTP smuggling lessons (2023):

* A line ends only with CRLF, and the data ends only on ``<CRLF>.<CRLF>``
  (RFC 5321 §4.1.1.4).  ``<LF>.<LF>``, ``<LF>.<CR><LF>``, ``<CR><LF>.<LF>``
  and friends never end the data: they are ordinary (bad) bytes inside it.
* A bare CR or bare LF anywhere in the data is *refused*, not normalised:
  the reader keeps reading to the real end, then the message is rejected
  with ``550 5.5.2`` (what Postfix's ``smtpd_forbid_bare_newline`` and mox
  do).  Normalising would silently store something other than what the
  client meant, and mail with bare LFs is what smuggling attacks are made of.
* A line longer than 1000 octets with its CRLF (RFC 5321 §4.5.3.1.6) gets
  the message refused too, again only after the real end; the reader never
  leaves data mode early and never buffers more than one line's worth of an
  over-long line.
* Over the size limit, the reader stops keeping bytes but goes on looking
  for the end, so the session stays in step (RFC 1870 §6.3: 552 at the end).

The same checks apply to BDAT, so both ways in store the same kind of bytes.
"""

from __future__ import annotations

import enum


class DataError(enum.Enum):
    """Why a message that reached its end is refused."""

    TOO_BIG = "too big"
    BARE_NEWLINE = "bare CR or LF"
    LINE_TOO_LONG = "line too long"


# When a message has several faults, the one reported must not depend on how
# the input happened to be cut into packets: the most serious one wins.
_SEVERITY = {DataError.TOO_BIG: 0, DataError.LINE_TOO_LONG: 1, DataError.BARE_NEWLINE: 2}


def _has_bare_newline(segment: bytes) -> bool:
    """True if ``segment`` (holding no CRLF) has a CR or LF in it."""
    return b"\r" in segment or b"\n" in segment


_CRLF = b"\r\n"
_END = b"\r\n.\r\n"


def _lines_ok(block: bytes, max_line: int) -> DataError | None:
    """Check complete CRLF-terminated lines for bare CR/LF and length."""
    crlf = block.count(_CRLF)
    if block.count(b"\r") != crlf or block.count(b"\n") != crlf:
        return DataError.BARE_NEWLINE
    # Every LF now ends a CRLF.  A line starting at `pos` is short enough (at
    # most max_line - 2 octets before its CRLF) iff an LF lies within
    # block[pos : pos + max_line]; the last LF there ends a run of short
    # lines, so one rfind skips ~max_line octets, not one line: no split of
    # the message into a list of lines (this runs for every message).
    pos = 0
    end = len(block)
    while end - pos > max_line - 2:
        lf = block.rfind(b"\n", pos, pos + max_line)
        if lf < 0:
            return DataError.LINE_TOO_LONG
        pos = lf + 1
    return None


class DataReader:
    """
    Incremental DATA reader.  Feed it whatever arrives; it says when the
    terminating line was seen and how much of the input it used.

    The carried-over partial line is kept below ``max_line`` octets, so the
    memory it holds is bounded by ``max_size`` plus one line.
    """

    def __init__(self, max_size: int, max_line: int = 1000) -> None:
        self._max_size = max_size
        self._max_line = max_line
        self._parts: list[bytes] = []
        self._size = 0
        # Bytes after the last CRLF: the start of a line, unless _in_long_line.
        self._carry = b""
        self._in_long_line = False
        self.error: DataError | None = None

    @property
    def size(self) -> int:
        """Octets of message so far (after dot-unstuffing)."""
        return self._size

    def message(self) -> bytes:
        """The unstuffed message, CRLF line endings as received."""
        return b"".join(self._parts)

    def feed(self, data: bytes) -> int | None:
        """
        Consume ``data``.  Return None if the end was not reached (all of
        ``data`` is consumed), else how many octets of ``data`` up to and
        including the terminating ``.CRLF`` were used; the rest belongs to
        the next command.
        """
        carried = len(self._carry)
        buf = self._carry + data if carried else data
        start = 0
        if self._in_long_line:
            i = buf.find(_CRLF)
            if i < 0:
                tail_cr = buf.endswith(b"\r")
                if _has_bare_newline(buf[:-1] if tail_cr else buf):
                    self._fail(DataError.BARE_NEWLINE)
                self._carry = b"\r" if tail_cr else b""
                return None
            if _has_bare_newline(buf[:i]):
                self._fail(DataError.BARE_NEWLINE)
            start = i + 2
            self._in_long_line = False
        # `start` is at the beginning of a line from here on.
        if buf.startswith(b".\r\n", start):
            end, block_end = start + 3, start
        else:
            i = buf.find(_END, start)
            if i >= 0:
                end, block_end = i + 5, i + 2
            else:
                end = -1
                last = buf.rfind(_CRLF, start)
                block_end = last + 2 if last >= 0 else start
        if block_end > start:
            self._take(buf[start:block_end])
        if end >= 0:
            self._carry = b""
            return end - carried
        carry = buf[block_end:]
        if len(carry) >= self._max_line:
            # Already too long even if the CRLF comes next: refuse the
            # message, remember only whether a CR may be half of the CRLF.
            tail_cr = carry.endswith(b"\r")
            if _has_bare_newline(carry[:-1] if tail_cr else carry):
                self._fail(DataError.BARE_NEWLINE)
            self._fail(DataError.LINE_TOO_LONG)
            self._in_long_line = True
            carry = b"\r" if tail_cr else b""
        self._carry = carry
        return None

    def _take(self, block: bytes) -> None:
        """Check, unstuff and keep complete lines starting at a line start."""
        if self.error is DataError.BARE_NEWLINE:
            return  # nothing can be worse; just find the end
        problem = _lines_ok(block, self._max_line)
        if problem is not None:
            self._fail(problem)
        if self.error is not None:
            return
        # RFC 5321 §4.5.2: drop the first "." of every line that starts with one.
        if block.startswith(b".") or b"\r\n." in block:
            block = (_CRLF + block).replace(b"\r\n.", _CRLF)[2:]
        self._size += len(block)
        if self._size > self._max_size:
            self._fail(DataError.TOO_BIG)
            return
        self._parts.append(block)

    def _fail(self, error: DataError) -> None:
        if self.error is None or _SEVERITY[error] > _SEVERITY[self.error]:
            self.error = error
        self._parts = []


class ChunkCollector:
    """
    The BDAT side: chunks of exact sizes, no dot-stuffing (RFC 3030 §2).

    Octets over the size limit are counted but not kept; the line checks run
    once on the whole message at ``LAST``.
    """

    def __init__(self, max_size: int, max_line: int = 1000) -> None:
        self._max_size = max_size
        self._max_line = max_line
        self._parts: list[bytes] = []
        self.size = 0
        self.error: DataError | None = None

    def add(self, data: bytes) -> None:
        self.size += len(data)
        if self.error is not None:
            return
        if self.size > self._max_size:
            self.error = DataError.TOO_BIG
            self._parts = []
            return
        self._parts.append(data)

    def finish(self) -> bytes:
        """The whole message; sets `error` if the line checks fail."""
        message = b"".join(self._parts)
        if self.error is None and message:
            complete = message if message.endswith(_CRLF) else message + _CRLF
            self.error = _lines_ok(complete, self._max_line)
        if self.error is not None:
            self._parts = []
            return b""
        return message
