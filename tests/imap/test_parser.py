"""The command grammar (RFC 3501 §9 and extensions), without a session."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twistedmail.imap.fetch import FetchAtt, Section
from twistedmail.imap.parser import (
    AppendArgs,
    CommandError,
    FetchArgs,
    ListArgs,
    LoginArgs,
    SearchArgs,
    StoreArgs,
    mailbox_name,
    parse_command,
    parse_tag,
)
from twistedmail.imap.searchkeys import (
    And,
    DateKey,
    HasFlag,
    HeaderKey,
    InSeq,
    InUid,
    Not,
    Or,
    UnsupportedCharset,
)
from twistedmail.imap.syntax import STAR, ParseError, Reader, SeqSet
from twistedmail.model import FlagMode


def test_quoted_escapes_and_literals() -> None:
    cmd = parse_command(b'a LOGIN "a\\\\b\\"c" {3}\r\nx y')
    assert cmd.args == LoginArgs('a\\b"c', "x y")
    cmd = parse_command(b"a LOGIN {3+}\r\nabc {0}\r\n")
    assert cmd.args == LoginArgs("abc", "")
    with pytest.raises(CommandError):
        parse_command(b'a LOGIN "bad\\escape" x')
    with pytest.raises(CommandError):
        parse_command(b"a LOGIN {5}\r\nabc")  # shorter than announced


def test_tags() -> None:
    assert parse_tag(b"a.1] NOOP") == b"a.1]"
    assert parse_tag(b"+x NOOP") is None
    assert parse_tag(b"NOOP") is None
    with pytest.raises(ParseError):
        parse_command(b"")


def test_sequence_sets() -> None:
    r = Reader(b"1:*,5:2,7")
    assert r.seq_set() == SeqSet(((1, STAR), (5, 2), (7, 7)))
    assert SeqSet(((5, 2),)).resolve(10) == [(2, 5)]
    assert SeqSet(((STAR, 3),)).resolve(2) == [(2, 3)]
    assert Reader(b"$").seq_set() == SeqSet(saved=True)
    for bad in (b"0", b"1:", b",1", b"a", b"4294967296"):
        with pytest.raises(ParseError):
            r = Reader(bad)
            r.seq_set()
            r.end()


def test_fetch_attributes() -> None:
    cmd = parse_command(
        b'a FETCH 1 (BODY.PEEK[1.2.HEADER.FIELDS.NOT (X-A "X B")]<10.20> RFC822.SIZE)'
    )
    assert cmd.args == FetchArgs(
        SeqSet(((1, 1),)),
        (
            FetchAtt("BODY", Section((1, 2), "HEADER.FIELDS.NOT", ("X-A", "X B")), True, (10, 20)),
            FetchAtt("RFC822.SIZE"),
        ),
    )
    cmd = parse_command(b"a FETCH 1 BODY[2.MIME]")
    assert cmd.args == FetchArgs(SeqSet(((1, 1),)), (FetchAtt("BODY", Section((2,), "MIME")),))
    cmd = parse_command(b"a FETCH 1 body[]")
    assert cmd.args == FetchArgs(SeqSet(((1, 1),)), (FetchAtt("BODY", Section()),))
    cmd = parse_command(b"a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)")
    assert cmd.name == "UID FETCH"
    assert cmd.args == FetchArgs(
        SeqSet(((1, STAR),)), (FetchAtt("FLAGS"), FetchAtt("MODSEQ")), 12345
    )
    for bad in (
        b"BODY[MIME]",
        b"BODY[0]",
        b"BODY.PEEK",
        b"BODY[TEXT]<1>",
        b"FOO",
        b"(FLAGS",
        b"BODY[HEADER",
    ):
        with pytest.raises(CommandError):
            parse_command(b"a FETCH 1 " + bad)


def test_store() -> None:
    cmd = parse_command(b"a STORE 2:4 -FLAGS.SILENT \\seen $Junk")
    assert cmd.args == StoreArgs(SeqSet(((2, 4),)), FlagMode.REMOVE, True, ("\\Seen", "$Junk"))
    cmd = parse_command(b"a STORE 1 (UNCHANGEDSINCE 9) FLAGS ()")
    assert cmd.args == StoreArgs(SeqSet(((1, 1),)), FlagMode.REPLACE, False, (), 9)


def test_append() -> None:
    cmd = parse_command(b'a APPEND inbox (\\Draft) "15-Mar-2024 08:05:00 -0330" {2+}\r\nhi')
    assert cmd.args == AppendArgs(
        "INBOX",
        ("\\Draft",),
        datetime(2024, 3, 15, 8, 5, tzinfo=timezone(-timedelta(hours=3, minutes=30))),
        b"hi",
    )
    assert parse_command(b"a APPEND x {1+}\r\nz").args == AppendArgs("x", (), None, b"z")
    with pytest.raises(CommandError):
        parse_command(b'a APPEND x "hi"')  # the message must be a literal


def test_search_tree() -> None:
    cmd = parse_command(
        b'a SEARCH CHARSET UTF-8 OR FROM "b\xc3\xb6b" (UNSEEN SINCE 1-Feb-2024) NOT UID 1:3'
    )
    assert cmd.args == SearchArgs(
        And(
            (
                Or(
                    HeaderKey("From", "b\u00f6b"),
                    And(
                        (
                            Not(HasFlag("\\Seen")),
                            DateKey(">=", datetime(2024, 2, 1, tzinfo=UTC).date(), False),
                        )
                    ),
                ),
                Not(InUid(SeqSet(((1, 3),)))),
            )
        )
    )
    assert parse_command(b"a SEARCH RETURN (COUNT) 1:2").args == SearchArgs(
        InSeq(SeqSet(((1, 2),))), ("COUNT",)
    )
    with pytest.raises(UnsupportedCharset):
        parse_command(b"a SEARCH CHARSET ISO-8859-1 ALL")
    with pytest.raises(CommandError):
        parse_command(b"a SEARCH " + b"NOT " * 200 + b"ALL")


def test_list_extended() -> None:
    cmd = parse_command(b'a LIST (SUBSCRIBED RECURSIVEMATCH) "" ("INBOX" Work/%) RETURN (CHILDREN)')
    assert cmd.args == ListArgs(
        "",
        ("INBOX", "Work/%"),
        frozenset({"SUBSCRIBED", "RECURSIVEMATCH"}),
        frozenset({"CHILDREN"}),
        (),
        True,
    )
    with pytest.raises(CommandError):
        parse_command(b'a LIST (RECURSIVEMATCH) "" *')


def test_mailbox_names() -> None:
    assert mailbox_name(b"inbox") == "INBOX"
    assert mailbox_name(b"Inbox/Sub") == "INBOX/Sub"
    assert mailbox_name(b"Entw&APw-rfe") == "Entw\u00fcrfe"
    assert mailbox_name("Entw\u00fcrfe".encode()) == "Entw\u00fcrfe"
    with pytest.raises(ParseError):
        mailbox_name(b"&Jjo")


@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_ever_fail_cleanly(data: bytes) -> None:
    with contextlib.suppress(ParseError, UnsupportedCharset):
        parse_command(data)


@given(
    st.lists(
        st.sampled_from(
            [
                b"a",
                b" ",
                b"(",
                b")",
                b"[",
                b"]",
                b"{",
                b"}",
                b"+",
                b"1",
                b":",
                b"*",
                b'"',
                b"\\",
                b"<",
                b">",
                b".",
                b"FETCH",
                b"SEARCH",
                b"BODY",
                b"UID",
                b"NOT",
                b"OR",
                b"LIST",
                b"\r\n",
                b"{3+}\r\n",
            ]
        ),
        max_size=40,
    )
)
def test_grammar_shaped_noise_fails_cleanly(parts: list[bytes]) -> None:
    with contextlib.suppress(ParseError, UnsupportedCharset):
        parse_command(b"".join(parts))
