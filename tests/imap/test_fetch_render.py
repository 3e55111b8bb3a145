"""FETCH response items for one message (RFC 3501 §6.4.5, §7.4.2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from tests.dovecot_oracle import dovecot_fetch, needs_dovecot
from twistedmail.imap.fetch import (
    FetchAtt,
    Section,
    needs_body,
    needs_parse,
    render_fetch_items,
    section_label,
    sets_seen,
)
from twistedmail.message import ParsedMessage
from twistedmail.model import MessageInfo


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


SIMPLE = b"From: a@b.c\r\nSubject: hi\r\n\r\nbody\r\n"

FORWARD = crlf(
    """\
From: Eve <eve@example.com>
To: Frank <frank@example.com>
Subject: Fwd: Lunch
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b1"

--b1
Content-Type: text/plain

See below.

--b1
Content-Type: message/rfc822

From: Grace <grace@example.com>
Subject: =?UTF-8?Q?Mittagessen_=E2=82=AC?=
Content-Type: multipart/alternative; boundary="b2"

--b2
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Mittag um zwölf?
--b2
Content-Type: text/html; charset=us-ascii

<p>Lunch at noon?</p>
--b2--

--b1
Content-Type: application/octet-stream; name="x.bin"
Content-Disposition: attachment; filename="x.bin"
Content-Transfer-Encoding: base64

AAECAw==
--b1--
"""
)

EIGHT_BIT = crlf("From: Jörg <j@example.de>\nSubject: Grüße\n\nHallo\n")


def info(**kwargs: object) -> MessageInfo:
    values: dict[str, object] = {
        "uid": 5,
        "flags": frozenset({"\\Seen", "$Label1", "\\Answered"}),
        "internal_date": datetime(2024, 3, 5, 7, 8, 9, tzinfo=timezone(timedelta(hours=1))),
        "size": len(SIMPLE),
        "modseq": 42,
    }
    values.update(kwargs)
    return MessageInfo(**values)  # type: ignore[arg-type]


def render(atts: list[FetchAtt], raw: bytes = SIMPLE) -> bytes:
    return render_fetch_items(atts, info(size=len(raw)), raw, ParsedMessage.parse(raw))


def test_metadata_items() -> None:
    atts = [
        FetchAtt("UID"),
        FetchAtt("FLAGS"),
        FetchAtt("INTERNALDATE"),
        FetchAtt("RFC822.SIZE"),
        FetchAtt("MODSEQ"),
    ]
    assert render_fetch_items(atts, info(), None, None) == (
        b'UID 5 FLAGS (\\Answered \\Seen $Label1) INTERNALDATE " 5-Mar-2024 07:08:09 +0100"'
        b" RFC822.SIZE 34 MODSEQ (42)"
    )


def test_empty_flags() -> None:
    assert render_fetch_items([FetchAtt("FLAGS")], info(flags=frozenset()), None, None) == (
        b"FLAGS ()"
    )


def test_body_peek_is_labelled_body() -> None:
    atts = [FetchAtt("BODY", Section(text="HEADER.FIELDS", fields=("Subject",)), peek=True)]
    assert render(atts) == b"BODY[HEADER.FIELDS (Subject)] {15}\r\nSubject: hi\r\n\r\n"


def test_whole_message_and_partial() -> None:
    assert render([FetchAtt("BODY", Section())]) == b"BODY[] {34}\r\n" + SIMPLE
    # RFC 3501 §7.4.2: only the origin is echoed.
    assert render([FetchAtt("BODY", Section(), partial=(6, 5))]) == b"BODY[]<6> {5}\r\na@b.c"
    assert render([FetchAtt("BODY", Section(), partial=(100, 5))]) == b"BODY[]<100> {0}\r\n"
    assert render([FetchAtt("BODY", Section(text="TEXT"), partial=(2, 1))]) == (
        b"BODY[TEXT]<2> {1}\r\nd"
    )


def test_rfc822_items() -> None:
    atts = [FetchAtt("RFC822.HEADER"), FetchAtt("RFC822.TEXT"), FetchAtt("RFC822")]
    assert render(atts) == (
        b"RFC822.HEADER {28}\r\nFrom: a@b.c\r\nSubject: hi\r\n\r\n"
        b" RFC822.TEXT {6}\r\nbody\r\n RFC822 {34}\r\n" + SIMPLE
    )


def test_body_and_bodystructure() -> None:
    assert render([FetchAtt("BODY"), FetchAtt("BODYSTRUCTURE")]) == (
        b'BODY ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 6 1)'
        b' BODYSTRUCTURE ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 6 1 NIL NIL NIL NIL)'
    )


def test_envelope_with_eight_bit_header() -> None:
    assert render([FetchAtt("ENVELOPE")], EIGHT_BIT) == (
        b'ENVELOPE (NIL {7}\r\nGr\xc3\xbc\xc3\x9fe (({5}\r\nJ\xc3\xb6rg NIL "j" "example.de"))'
        b' (({5}\r\nJ\xc3\xb6rg NIL "j" "example.de")) (({5}\r\nJ\xc3\xb6rg NIL "j" "example.de"))'
        b" NIL NIL NIL NIL NIL)"
    )


def test_nested_part_sections() -> None:
    atts = [
        FetchAtt("BODY", Section((2,), "HEADER.FIELDS", ("SUBJECT",)), peek=True),
        FetchAtt("BODY", Section((2, 1)), peek=True),
        FetchAtt("BODY", Section((3,), "MIME"), peek=True),
        FetchAtt("BODY", Section((9,)), peek=True),
    ]
    assert render(atts, FORWARD) == (
        b"BODY[2.HEADER.FIELDS (SUBJECT)] {46}\r\n"
        b"Subject: =?UTF-8?Q?Mittagessen_=E2=82=AC?=\r\n\r\n"
        b" BODY[2.1] {17}\r\nMittag um zw\xc3\xb6lf?"
        b' BODY[3.MIME] {142}\r\nContent-Type: application/octet-stream; name="x.bin"\r\n'
        b'Content-Disposition: attachment; filename="x.bin"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        b" BODY[9] {0}\r\n"
    )


def test_section_labels() -> None:
    assert section_label(Section()) == b""
    assert section_label(Section((1, 2))) == b"1.2"
    assert section_label(Section((1, 2), "MIME")) == b"1.2.MIME"
    assert section_label(Section(text="HEADER.FIELDS.NOT", fields=("X-A", "a b"))) == (
        b'HEADER.FIELDS.NOT (X-A "a b")'
    )


def test_needs_body_and_parse() -> None:
    meta = [FetchAtt("FLAGS"), FetchAtt("UID"), FetchAtt("RFC822.SIZE")]
    assert not needs_body(meta) and not needs_parse(meta)
    whole = [*meta, FetchAtt("BODY", Section(), peek=True, partial=(0, 10)), FetchAtt("RFC822")]
    assert needs_body(whole) and not needs_parse(whole)
    for att in (
        FetchAtt("ENVELOPE"),
        FetchAtt("BODY"),
        FetchAtt("BODYSTRUCTURE"),
        FetchAtt("RFC822.HEADER"),
        FetchAtt("BODY", Section(text="HEADER")),
    ):
        assert needs_body([att]) and needs_parse([att]), att


def test_sets_seen() -> None:
    # RFC 3501 §6.4.5: BODY[...] (not .PEEK), RFC822 and RFC822.TEXT set \Seen.
    assert sets_seen([FetchAtt("BODY", Section())])
    assert sets_seen([FetchAtt("RFC822")])
    assert sets_seen([FetchAtt("RFC822.TEXT")])
    assert not sets_seen([FetchAtt("BODY", Section(), peek=True)])
    assert not sets_seen([FetchAtt("RFC822.HEADER")])
    assert not sets_seen([FetchAtt("BODY"), FetchAtt("BODYSTRUCTURE"), FetchAtt("ENVELOPE")])


def test_missing_inputs_are_errors() -> None:
    with pytest.raises(ValueError):
        render_fetch_items([FetchAtt("RFC822")], info(), None, None)
    with pytest.raises(ValueError):
        render_fetch_items([FetchAtt("ENVELOPE")], info(), SIMPLE, None)
    with pytest.raises(ValueError):
        render_fetch_items([FetchAtt("X-UNKNOWN")], info(), SIMPLE, None)


def test_internaldate_utc() -> None:
    when = datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert render_fetch_items([FetchAtt("INTERNALDATE")], info(internal_date=when), None, None) == (
        b'INTERNALDATE "31-Dec-2024 23:59:59 +0000"'
    )


def _request(att: FetchAtt) -> bytes:
    if att.section is None:
        return att.name.encode()
    partial = b"<%d.%d>" % att.partial if att.partial else b""
    return b"BODY.PEEK[" + section_label(att.section) + b"]" + partial


@needs_dovecot
@pytest.mark.parametrize("raw", [SIMPLE, FORWARD, EIGHT_BIT], ids=["simple", "forward", "8bit"])
def test_every_section_form_matches_dovecot(raw: bytes) -> None:
    atts = [
        FetchAtt("ENVELOPE"),
        FetchAtt("BODYSTRUCTURE"),
        FetchAtt("BODY"),
        FetchAtt("RFC822.HEADER"),
        FetchAtt("BODY", Section(text="HEADER.FIELDS.NOT", fields=("FROM",)), peek=True),
        FetchAtt("BODY", Section(), peek=True, partial=(3, 40)),
    ]
    paths = [(), (1,), (2,), (3,), (9,), (1, 1), (2, 1), (2, 2), (2, 1, 1), (3, 1)]
    for path in paths:
        texts = [None, "HEADER", "TEXT"] + (["MIME", "HEADER.FIELDS"] if path else [])
        for text in texts:
            fields = ("SUBJECT", "CONTENT-TYPE") if text == "HEADER.FIELDS" else ()
            atts.append(FetchAtt("BODY", Section(path, text, fields), peek=True))
    ours = render_fetch_items(atts, info(size=len(raw)), raw, ParsedMessage.parse(raw))
    assert ours == dovecot_fetch(raw, b" ".join(_request(a) for a in atts))
