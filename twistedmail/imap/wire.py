"""
Encoding of the values an IMAP server writes on the wire (RFC 3501 §4, §9).

Every response the server builds goes through these helpers, so that no
value can break the framing of a response: anything that is not provably
safe inside a quoted string is sent as a literal, and ``NIL`` is never
ambiguous with a string.  All functions take and return ``bytes`` because
message data (headers with raw 8-bit text) must reach the client unaltered.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from datetime import UTC, datetime

#: Strings longer than this are sent as literals even when they would be
#: safe quoted, to keep response lines short for clients that read by line.
QUOTED_MAX = 1024

# RFC 3501 §9: atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards /
# quoted-specials / resp-specials.  CHAR is 7-bit, so 8-bit bytes are out too.
_ATOM_SPECIALS = frozenset(b'(){ %*"\\]')
_ATOM_CHARS = frozenset(c for c in range(0x21, 0x7F) if c not in _ATOM_SPECIALS)
# ASTRING-CHAR = ATOM-CHAR / resp-specials ("]").
_ASTRING_CHARS = _ATOM_CHARS | {ord("]")}
# Quoted strings: TEXT-CHAR is any CHAR (0x01-0x7F) except CR and LF.  We
# further keep control characters out (a literal is always safe for them and
# some clients mangle them when quoted).
_QUOTABLE = frozenset(range(0x20, 0x7F))

# The same sets as deletion tables: ``value.translate(None, table)`` is empty
# exactly when every byte is in the set, and runs in C (FETCH ENVELOPE of a
# whole mailbox calls these hundreds of thousands of times).
_ATOM_TABLE = bytes(sorted(_ATOM_CHARS))
_ASTRING_TABLE = bytes(sorted(_ASTRING_CHARS))
_QUOTABLE_TABLE = bytes(sorted(_QUOTABLE))
_PLAIN_QUOTED_TABLE = bytes(sorted(_QUOTABLE - set(b'"\\')))

_MONTHS = (
    b"Jan",
    b"Feb",
    b"Mar",
    b"Apr",
    b"May",
    b"Jun",
    b"Jul",
    b"Aug",
    b"Sep",
    b"Oct",
    b"Nov",
    b"Dec",
)

NIL = b"NIL"


def atom_safe(value: bytes) -> bool:
    """Whether ``value`` can be sent as an IMAP ``atom`` (RFC 3501 §9)."""
    return bool(value) and not value.translate(None, _ATOM_TABLE)


def _astring_atom_safe(value: bytes) -> bool:
    return bool(value) and not value.translate(None, _ASTRING_TABLE)


def quotable(value: bytes) -> bool:
    """Whether ``value`` may be sent as a quoted string by `quoted`."""
    return not value.translate(None, _QUOTABLE_TABLE)


def quoted(value: bytes) -> bytes:
    """
    ``value`` as an IMAP quoted string, escaping ``"`` and ``\\``.

    :raises ValueError: ``value`` holds a byte a quoted string cannot carry
        (CR, LF, NUL, other controls or 8-bit); use `literal` or `string`.
    """
    if not quotable(value):
        raise ValueError("value cannot be sent as a quoted string")
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def literal(value: bytes) -> bytes:
    """``value`` as a synchronising literal: ``{n}\\r\\n`` then the octets."""
    return b"{%d}\r\n" % len(value) + value


def string(value: bytes) -> bytes:
    """
    ``value`` quoted when that is safe and short, else as a literal.

    Values holding ``"`` or ``\\`` go as literals too: escapes in quoted
    strings are where client parsers most often go wrong (Dovecot does the
    same).
    """
    if len(value) <= QUOTED_MAX and not value.translate(None, _PLAIN_QUOTED_TABLE):
        return b'"' + value + b'"'
    return literal(value)


def nstring(value: bytes | None) -> bytes:
    """``NIL`` for None, else `string` (RFC 3501 ``nstring``)."""
    if value is None:
        return NIL
    return string(value)


def astring(value: bytes) -> bytes:
    """
    ``value`` as an atom when it is one, else as a `string`.

    ``NIL`` is quoted: it is a valid astring atom, but clients that parse
    loosely read it as the NIL token.
    """
    if _astring_atom_safe(value) and value.upper() != NIL:
        return value
    return string(value)


def paren_list(items: Iterable[bytes]) -> bytes:
    """Already-encoded ``items`` as a parenthesised, space-separated list."""
    return b"(" + b" ".join(items) + b")"


def imap_date(when: datetime) -> bytes:
    """
    ``when`` as a quoted INTERNALDATE ``"dd-Mon-yyyy hh:mm:ss +zzzz"``.

    RFC 3501 §9 ``date-time``: the day is space-padded (``date-day-fixed``)
    and the month name is English whatever the locale.  A naive datetime is
    taken to be UTC.
    """
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    offset = when.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    sign = b"+" if minutes >= 0 else b"-"
    minutes = abs(minutes)
    return b'"%2d-%s-%04d %02d:%02d:%02d %s%02d%02d"' % (
        when.day,
        _MONTHS[when.month - 1],
        when.year,
        when.hour,
        when.minute,
        when.second,
        sign,
        minutes // 60,
        minutes % 60,
    )


# --- Mailbox names: modified UTF-7 (RFC 3501 §5.1.3) --------------------------


def _is_direct(ch: int) -> bool:
    # Printable US-ASCII except "&" represents itself.
    return 0x20 <= ch <= 0x7E and ch != 0x26


def _b64_encode(text: str) -> bytes:
    raw = text.encode("utf-16-be")
    return base64.b64encode(raw).rstrip(b"=").replace(b"/", b",")


def encode_mailbox(name: str) -> bytes:
    """
    ``name`` in modified UTF-7, the form mailbox names take on the wire.

    RFC 3501 §5.1.3: printable ASCII stands for itself, ``&`` is ``&-``,
    anything else is UTF-16 in modified BASE64 (``,`` for ``/``, no padding)
    between ``&`` and ``-``.
    """
    out = bytearray()
    pending: list[str] = []
    for ch in name:
        code = ord(ch)
        if _is_direct(code):
            if pending:
                out += b"&" + _b64_encode("".join(pending)) + b"-"
                pending.clear()
            out.append(code)
        elif ch == "&":
            if pending:
                out += b"&" + _b64_encode("".join(pending)) + b"-"
                pending.clear()
            out += b"&-"
        else:
            pending.append(ch)
    if pending:
        out += b"&" + _b64_encode("".join(pending)) + b"-"
    return bytes(out)


_B64_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,")


def _decode_shifted(chunk: bytes) -> str:
    if not all(c in _B64_CHARS for c in chunk):
        raise ValueError("bad character in modified BASE64")
    bits = len(chunk) * 6
    if bits % 16 >= 6:
        # More leftover bits than padding can explain: a truncated code unit.
        raise ValueError("truncated UTF-16 in modified BASE64")
    padded = chunk.replace(b",", b"/") + b"=" * (-len(chunk) % 4)
    try:
        raw = base64.b64decode(padded, validate=True)
    except binascii.Error as e:
        raise ValueError("bad modified BASE64") from e
    if len(raw) % 2:
        raise ValueError("odd number of octets in modified BASE64")
    # The unused low bits of the last character must be zero, or the same
    # name would have several spellings.
    if _b64_encode_raw(raw) != chunk:
        raise ValueError("non-canonical modified BASE64")
    try:
        text = raw.decode("utf-16-be", errors="strict")
    except UnicodeDecodeError as e:
        raise ValueError("bad UTF-16 in modified BASE64") from e
    for ch in text:
        if _is_direct(ord(ch)) or ch == "&":
            raise ValueError("printable ASCII must not be BASE64-encoded")
    return text


def _b64_encode_raw(raw: bytes) -> bytes:
    return base64.b64encode(raw).rstrip(b"=").replace(b"/", b",")


def decode_mailbox(value: bytes) -> str:
    """
    The mailbox name whose modified UTF-7 form is ``value``.

    Decoding is strict, so that every name has exactly one spelling: bytes
    outside printable ASCII, an unterminated or empty shift, printable ASCII
    in BASE64, non-zero padding bits, bad UTF-16 and two adjacent encoded
    runs all raise `ValueError`.
    """
    out: list[str] = []
    i = 0
    n = len(value)
    last_shift_end = -1
    while i < n:
        ch = value[i]
        if ch == 0x26:  # "&"
            end = value.find(b"-", i + 1)
            if end < 0:
                raise ValueError("unterminated modified BASE64")
            if end == i + 1:
                out.append("&")
            else:
                if last_shift_end == i:
                    raise ValueError("adjacent modified BASE64 runs")
                out.append(_decode_shifted(value[i + 1 : end]))
                last_shift_end = end + 1
            i = end + 1
        elif 0x20 <= ch <= 0x7E:
            out.append(chr(ch))
            i += 1
        else:
            raise ValueError("mailbox name byte outside printable ASCII")
    return "".join(out)
