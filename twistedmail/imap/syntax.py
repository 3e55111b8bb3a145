"""
The lexical layer of IMAP commands (RFC 3501 §9 formal syntax).

A `Reader` walks over one complete command exactly as it came off the wire:
lines joined by CRLF with the octets of every literal in place.  The framing
in `twistedmail.imap.session` has already checked each literal's size, so the
reader can take literals at face value.  Every rule the grammar has is one
method here; command-specific grammar lives in `twistedmail.imap.parser`.

RFC 3501 §9 note (2): SP is exactly one space; the reader never skips
whitespace on its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from twistedmail.model import normalize_flag


class ParseError(Exception):
    """The command does not match the grammar: answered with a tagged BAD."""


# RFC 3501 §9: atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards /
# quoted-specials / resp-specials.  CHAR is 7-bit.
_ATOM_SPECIALS = frozenset(b'(){ %*"\\]')
ATOM_CHARS = frozenset(c for c in range(0x21, 0x7F) if c not in _ATOM_SPECIALS)
ASTRING_CHARS = ATOM_CHARS | {ord("]")}
# list-char = ATOM-CHAR / list-wildcards / resp-specials
LIST_CHARS = ASTRING_CHARS | {ord("%"), ord("*")}
# tag = 1*<any ASTRING-CHAR except "+">
TAG_CHARS = ASTRING_CHARS - {ord("+")}

#: The largest number the grammar allows (``number`` is an unsigned 32-bit
#: integer, RFC 3501 §9); RFC 7162 ``mod-sequence-value`` allows 63 bits.
MAX_NUMBER = 2**32 - 1
MAX_NUMBER64 = 2**63 - 1

_MONTHS = {
    b"JAN": 1,
    b"FEB": 2,
    b"MAR": 3,
    b"APR": 4,
    b"MAY": 5,
    b"JUN": 6,
    b"JUL": 7,
    b"AUG": 8,
    b"SEP": 9,
    b"OCT": 10,
    b"NOV": 11,
    b"DEC": 12,
}

_DATE = re.compile(rb"(\d{1,2})-([A-Za-z]{3})-(\d{4})")
_DATE_TIME = re.compile(
    rb"( \d|\d\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)"
)
_LITERAL = re.compile(rb"\{(\d{1,10})(\+?)\}\r\n")

#: "*" in a sequence set: the largest number in use (RFC 3501 §9 seq-number).
STAR = 0


@dataclass(frozen=True, slots=True)
class SeqSet:
    """
    A ``sequence-set``: ranges as sent, ``STAR`` standing for ``*``.

    ``saved`` is RFC 5182's ``$``, the result of the last SEARCH ... SAVE.
    Ranges keep the order the client wrote (``5:2`` is the same as ``2:5``);
    resolving them against a mailbox is the selected view's job.
    """

    ranges: tuple[tuple[int, int], ...] = ()
    saved: bool = False

    def resolve(self, largest: int) -> list[tuple[int, int]]:
        """The ranges with ``*`` replaced by ``largest``, low end first."""
        out = []
        for a, b in self.ranges:
            a = largest if a == STAR else a
            b = largest if b == STAR else b
            out.append((min(a, b), max(a, b)))
        return out

    def contains(self, value: int, largest: int) -> bool:
        return any(lo <= value <= hi for lo, hi in self.resolve(largest))


class Reader:
    """A cursor over one command; each method consumes one grammar rule."""

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    # --- basics ---------------------------------------------------------------

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def peek(self) -> int | None:
        return self.data[self.pos] if self.pos < len(self.data) else None

    def peek_is(self, text: bytes) -> bool:
        return self.data[self.pos : self.pos + len(text)].upper() == text.upper()

    def expect(self, text: bytes) -> None:
        """Consume ``text`` (case-insensitively, RFC 3501 §9 note (1))."""
        if not self.peek_is(text):
            raise ParseError(f"expected {text.decode()!r}")
        self.pos += len(text)

    def accept(self, text: bytes) -> bool:
        if self.peek_is(text):
            self.pos += len(text)
            return True
        return False

    def sp(self) -> None:
        if self.peek() != 0x20:
            raise ParseError("expected a space")
        self.pos += 1

    def end(self) -> None:
        if not self.at_end():
            raise ParseError("unexpected text at the end of the command")

    def _run(self, allowed: frozenset[int]) -> bytes:
        start = self.pos
        data = self.data
        n = len(data)
        while self.pos < n and data[self.pos] in allowed:
            self.pos += 1
        return data[start : self.pos]

    # --- atoms and strings ------------------------------------------------------

    def atom(self) -> bytes:
        value = self._run(ATOM_CHARS)
        if not value:
            raise ParseError("expected an atom")
        return value

    def keyword(self) -> str:
        """An atom used as a keyword of the grammar, upper-cased."""
        return self.atom().decode("ascii").upper()

    def tag(self) -> bytes:
        value = self._run(TAG_CHARS)
        if not value:
            raise ParseError("expected a tag")
        return value

    def quoted(self) -> bytes:
        """``quoted``: DQUOTE *QUOTED-CHAR DQUOTE, with ``\\"`` and ``\\\\``."""
        self.expect(b'"')
        out = bytearray()
        data = self.data
        while True:
            if self.pos >= len(data):
                raise ParseError("unterminated quoted string")
            c = data[self.pos]
            self.pos += 1
            if c == 0x22:
                return bytes(out)
            if c == 0x5C:
                if self.pos >= len(data) or data[self.pos] not in (0x22, 0x5C):
                    raise ParseError("bad escape in quoted string")
                out.append(data[self.pos])
                self.pos += 1
            elif c in (0x0A, 0x0D, 0x00):
                raise ParseError("CR, LF or NUL in quoted string")
            else:
                # 8-bit octets are let through (RFC 6855 UTF-8 in quoted).
                out.append(c)

    def literal(self) -> bytes:
        m = _LITERAL.match(self.data, self.pos)
        if m is None:
            raise ParseError("bad literal")
        size = int(m.group(1))
        start = m.end()
        if start + size > len(self.data):
            raise ParseError("literal is shorter than announced")
        self.pos = start + size
        value = self.data[start : self.pos]
        if b"\x00" in value:
            raise ParseError("NUL in literal")  # RFC 3501 §4.3: CHAR8 excludes NUL
        return value

    def string(self) -> bytes:
        c = self.peek()
        if c == 0x22:
            return self.quoted()
        if c == 0x7B:
            return self.literal()
        raise ParseError("expected a string")

    def astring(self) -> bytes:
        c = self.peek()
        if c in (0x22, 0x7B):
            return self.string()
        value = self._run(ASTRING_CHARS)
        if not value:
            raise ParseError("expected an astring")
        return value

    def nstring(self) -> bytes | None:
        if self.peek_is(b"NIL") and self._atom_ends_at(self.pos + 3):
            self.pos += 3
            return None
        return self.string()

    def _atom_ends_at(self, pos: int) -> bool:
        return pos >= len(self.data) or self.data[pos] not in ASTRING_CHARS

    def text(self, value: bytes) -> str:
        """Decode a string argument as UTF-8 (RFC 6855), or fail the command."""
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ParseError("string is not valid UTF-8") from e

    def astring_text(self) -> str:
        return self.text(self.astring())

    def list_mailbox(self) -> bytes:
        """``list-mailbox = 1*list-char / string`` (LIST patterns)."""
        c = self.peek()
        if c in (0x22, 0x7B):
            return self.string()
        value = self._run(LIST_CHARS)
        if not value:
            raise ParseError("expected a mailbox pattern")
        return value

    # --- numbers ----------------------------------------------------------------

    def number(self, limit: int = MAX_NUMBER) -> int:
        start = self.pos
        data = self.data
        while self.pos < len(data) and 0x30 <= data[self.pos] <= 0x39:
            self.pos += 1
        digits = data[start : self.pos]
        if not digits or len(digits) > 20:
            raise ParseError("expected a number")
        value = int(digits)
        if value > limit:
            raise ParseError("number out of range")
        return value

    def nz_number(self, limit: int = MAX_NUMBER) -> int:
        value = self.number(limit)
        if value == 0:
            raise ParseError("expected a non-zero number")
        return value

    def seq_set(self, allow_saved: bool = True) -> SeqSet:
        """``sequence-set`` with ``*`` and ranges either way round; ``$`` (RFC 5182)."""
        if allow_saved and self.accept(b"$"):
            return SeqSet(saved=True)
        ranges = []
        while True:
            a = self._seq_number()
            b = a
            if self.accept(b":"):
                b = self._seq_number()
            ranges.append((a, b))
            if not self.accept(b","):
                return SeqSet(tuple(ranges))

    def _seq_number(self) -> int:
        if self.accept(b"*"):
            return STAR
        return self.nz_number()

    # --- lists ------------------------------------------------------------------

    def open_paren(self) -> None:
        self.expect(b"(")

    def close_paren(self) -> bool:
        """Consume ``)`` if it is next."""
        return self.accept(b")")

    def flag(self) -> str:
        """``flag``: a keyword atom or ``\\`` atom; system flags canonicalised."""
        if self.accept(b"\\"):
            return normalize_flag("\\" + self.atom().decode("ascii"))
        return self.atom().decode("ascii")

    def flag_list(self) -> list[str]:
        self.open_paren()
        flags: list[str] = []
        if self.close_paren():
            return flags
        while True:
            flags.append(self.flag())
            if self.close_paren():
                return flags
            self.sp()

    # --- dates ------------------------------------------------------------------

    def date(self) -> datetime:
        """``date``: ``d-Mon-yyyy``, optionally quoted (SEARCH keys)."""
        quoted = self.accept(b'"')
        m = _DATE.match(self.data, self.pos)
        if m is None:
            raise ParseError("bad date")
        self.pos = m.end()
        if quoted:
            self.expect(b'"')
        day, month, year = int(m.group(1)), m.group(2).upper(), int(m.group(3))
        if month not in _MONTHS:
            raise ParseError("bad month")
        try:
            return datetime(year, _MONTHS[month], day)
        except ValueError as e:
            raise ParseError("bad date") from e

    def date_time(self) -> datetime:
        """``date-time``: ``"dd-Mon-yyyy hh:mm:ss +zzzz"`` (APPEND)."""
        self.expect(b'"')
        m = _DATE_TIME.match(self.data, self.pos)
        if m is None:
            raise ParseError("bad date-time")
        self.pos = m.end()
        self.expect(b'"')
        month = m.group(2).upper()
        if month not in _MONTHS:
            raise ParseError("bad month")
        offset = timedelta(hours=int(m.group(8)), minutes=int(m.group(9)))
        if m.group(7) == b"-":
            offset = -offset
        try:
            return datetime(
                int(m.group(3)),
                _MONTHS[month],
                int(m.group(1)),
                int(m.group(4)),
                int(m.group(5)),
                int(m.group(6)),
                tzinfo=timezone(offset),
            )
        except ValueError as e:
            raise ParseError("bad date-time") from e
