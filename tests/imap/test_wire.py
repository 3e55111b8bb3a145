"""IMAP value encoding (RFC 3501 §4, §5.1.3, §9)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twistedmail.imap import wire


def test_quoted_escapes_quote_and_backslash() -> None:
    assert wire.quoted(b'a"b\\c') == b'"a\\"b\\\\c"'
    assert wire.quoted(b"") == b'""'


@pytest.mark.parametrize("bad", [b"a\rb", b"a\nb", b"\x00", b"caf\xc3\xa9", b"\x01"])
def test_quoted_refuses_unsafe(bad: bytes) -> None:
    with pytest.raises(ValueError):
        wire.quoted(bad)


def test_literal() -> None:
    assert wire.literal(b"caf\xc3\xa9") == b"{5}\r\ncaf\xc3\xa9"
    assert wire.literal(b"") == b"{0}\r\n"


def test_string_chooses_quoted_or_literal() -> None:
    assert wire.string(b"hello world") == b'"hello world"'
    assert wire.string(b"a\r\nb") == b"{4}\r\na\r\nb"
    assert wire.string(b"\xff") == b"{1}\r\n\xff"
    # Quote and backslash are legal escaped, but literals are what Dovecot
    # sends and what client parsers get right.
    assert wire.string(b'say "hi"') == b'{8}\r\nsay "hi"'
    assert wire.string(b"a\\b") == b"{3}\r\na\\b"
    long = b"x" * (wire.QUOTED_MAX + 1)
    assert wire.string(long).startswith(b"{%d}\r\n" % len(long))


def test_nstring() -> None:
    assert wire.nstring(None) == b"NIL"
    assert wire.nstring(b"NIL") == b'"NIL"'
    assert wire.nstring(b"") == b'""'


def test_atom_safe() -> None:
    assert wire.atom_safe(b"INBOX")
    assert wire.atom_safe(b"\\Seen") is False  # backslash is a quoted-special
    for bad in [b"", b"a b", b"a(", b"a)", b"{", b"%", b"*", b'"', b"]", b"\x7f", b"\xc3\xa9"]:
        assert not wire.atom_safe(bad), bad


def test_astring() -> None:
    assert wire.astring(b"INBOX") == b"INBOX"
    assert wire.astring(b"a]b") == b"a]b"  # ASTRING-CHAR includes resp-specials
    assert wire.astring(b"a b") == b'"a b"'
    assert wire.astring(b"") == b'""'
    assert wire.astring(b"nil") == b'"nil"'
    assert wire.astring(b"\xc3\xa9") == b"{2}\r\n\xc3\xa9"


def test_paren_list() -> None:
    assert wire.paren_list([]) == b"()"
    assert wire.paren_list([b"\\Seen", b"$Junk"]) == b"(\\Seen $Junk)"


def test_imap_date_space_padded_day_and_offset() -> None:
    when = datetime(2024, 3, 5, 7, 8, 9, tzinfo=timezone(timedelta(hours=-5, minutes=-30)))
    assert wire.imap_date(when) == b'" 5-Mar-2024 07:08:09 -0530"'
    when = datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert wire.imap_date(when) == b'"31-Dec-1999 23:59:59 +0000"'
    assert wire.imap_date(datetime(2020, 1, 17, 1, 2, 3)) == b'"17-Jan-2020 01:02:03 +0000"'


# RFC 3501 §5.1.3's own example, plus common cases.
MAILBOXES = [
    ("~peter/mail/台北/日本語", b"~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
    ("INBOX", b"INBOX"),
    ("Tom & Jerry", b"Tom &- Jerry"),
    ("Entwürfe", b"Entw&APw-rfe"),
    ("&", b"&-"),
    ("😀", b"&2D3eAA-"),
    ("", b""),
]


@pytest.mark.parametrize(("name", "wire_form"), MAILBOXES)
def test_mailbox_round_trip(name: str, wire_form: bytes) -> None:
    assert wire.encode_mailbox(name) == wire_form
    assert wire.decode_mailbox(wire_form) == name


@pytest.mark.parametrize(
    "bad",
    [
        b"&",  # unterminated
        b"&U,BTFw",  # unterminated
        b"&AGE-",  # "a" must not be encoded
        b"&ACY-",  # "&" must be &-
        b"&U,BTF-",  # truncated code unit
        b"&U,BTFx-",  # non-zero padding bits
        b"&2D0-",  # lone high surrogate
        b"&U,A-&ZeU-",  # adjacent encoded runs
        b"&U/BTFw-",  # "/" is not modified BASE64
        b"&U=-",
        b"caf\xc3\xa9",  # raw 8-bit
        b"a\x00b",
        b"a\tb",
    ],
)
def test_decode_mailbox_is_strict(bad: bytes) -> None:
    with pytest.raises(ValueError):
        wire.decode_mailbox(bad)


@given(st.text())
def test_mailbox_codec_round_trips_any_text(name: str) -> None:
    # Lone surrogates cannot be encoded as UTF-16; skip them.
    if any(0xD800 <= ord(c) <= 0xDFFF for c in name):
        return
    encoded = wire.encode_mailbox(name)
    assert all(0x20 <= c <= 0x7E for c in encoded)
    assert wire.decode_mailbox(encoded) == name


@given(st.binary(max_size=40))
def test_decode_mailbox_never_crashes_otherwise(data: bytes) -> None:
    try:
        name = wire.decode_mailbox(data)
    except ValueError:
        return
    # Strictness: whatever decodes has exactly one spelling.
    assert wire.encode_mailbox(name) == data
