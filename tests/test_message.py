"""
Message parsing: exact ENVELOPE/BODYSTRUCTURE/sections and decoded views.

Expected IMAP bytes were checked against Dovecot 2.3 serving the same
messages; `test_matches_dovecot` re-checks them wherever Dovecot is
installed (a real peer is the best oracle).
"""

from __future__ import annotations

import base64
import os
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.dovecot_oracle import dovecot_fetch, needs_dovecot
from twistedmail.imap import structure
from twistedmail.imap.fetch import Section, section_label
from twistedmail.imap.wire import literal
from twistedmail.message import Attachment, ParsedCache, ParsedMessage, decode_words


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


ALTERNATIVE_WITH_ATTACHMENTS = (
    crlf("""\
Return-Path: <alice@example.org>
Received: from mx.example.org by mail.example.net; Tue, 1 Oct 2024 10:00:00 +0000
Received: from laptop by mx.example.org; Tue, 1 Oct 2024 09:59:59 +0000
From: Alice Example <alice@example.org>
To: Bob <bob@example.net>, carol@example.net
Cc: "Dave, Jr." <dave@example.com>
Subject: Quarterly report
Date: Tue, 01 Oct 2024 09:59:58 +0000
Message-ID: <report-1@example.org>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer-XYZ"

This is a multi-part message in MIME format.

--outer-XYZ
Content-Type: multipart/alternative; boundary=inner_ABC

--inner_ABC
Content-Type: text/plain; charset="UTF-8"; format=flowed
Content-Transfer-Encoding: quoted-printable

Hello Bob,

Here is the report =E2=82=AC.
--inner_ABC
Content-Type: text/html; charset=UTF-8
Content-Transfer-Encoding: 7bit

<html><body><p>Hello Bob,</p><p>Here is the report &euro;.</p></body></html>

--inner_ABC--

--outer-XYZ
Content-Type: application/pdf; name="report.pdf"
Content-Disposition: attachment; filename="report.pdf"; size=12
Content-Transfer-Encoding: base64
Content-Description: The report

""")
    + base64.encodebytes(b"%PDF-1.4 abc").replace(b"\n", b"\r\n")
    + crlf("""\
--outer-XYZ
Content-Type: image/png; name=logo.png
Content-ID: <logo@example.org>
Content-Disposition: inline; filename=logo.png
Content-Language: en, de
Content-Location: http://example.org/logo.png
Content-Transfer-Encoding: base64

iVBORw0KGgo=
--outer-XYZ--
epilogue
""")
)

NESTED_RFC822 = crlf("""\
From: Eve <eve@example.com>
To: Frank <frank@example.com>
Subject: Fwd: Lunch
Date: Wed, 2 Oct 2024 12:00:00 -0700
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b1"

--b1
Content-Type: text/plain

See below.

--b1
Content-Type: message/rfc822
Content-Disposition: inline

From: Grace <grace@example.com>
To: Eve <eve@example.com>
Subject: Lunch
Date: Tue, 1 Oct 2024 11:00:00 -0700
Message-ID: <lunch@example.com>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="b2"

--b2
Content-Type: text/plain; charset=us-ascii

Lunch at noon?
--b2
Content-Type: text/html; charset=us-ascii

<p>Lunch at noon?</p>
--b2--

--b1--
""")

ENCODED_HEADERS = crlf("""\
From: =?UTF-8?B?SsO2cmcgTcO8bGxlcg==?= <joerg@example.de>
To: =?ISO-8859-1?Q?Andr=E9?= <andre@example.fr>
Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus?= =?UTF-8?Q?_M=C3=BCnchen?=
Date: Thu, 3 Oct 2024 08:00:00 +0200
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="=_b"

--=_b
Content-Type: text/plain; charset=iso-8859-1
Content-Transfer-Encoding: quoted-printable

Gr=FC=DFe!
--=_b
Content-Type: application/octet-stream
Content-Disposition: attachment;
 filename*=UTF-8''%E2%82%AC%20rates.txt

cmF0ZXM=
--=_b
Content-Type: text/plain; name="=?UTF-8?B?w7xiZXIudHh0?="
Content-Disposition: attachment;
 filename*0*=UTF-8''long%20na;
 filename*1="me part two.txt"

over
--=_b--
""")

EIGHT_BIT_HEADERS = crlf("""\
From: Jörg Müller <jörg@example.de>
To: "Zoë" <zoe@example.com>
Subject: Grüße aus Köln
Date: Fri, 4 Oct 2024 10:00:00 +0200
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Grüße!
""")

NO_CONTENT_TYPE = crlf("""\
From: root@localhost
To: undisclosed-recipients:;
Subject: cron
Date: Sat, 5 Oct 2024 00:00:00 +0000

line one
line two
""")

BROKEN_BOUNDARY = crlf("""\
From: spam@example.com
To: A Group: a@example.com, "B" <b@example.com>;, c@example.com
Subject: broken
Content-Type: multipart/mixed; boundary="never-closed"

preamble
--never-closed
Content-Type: text/plain

first part
--never-closedX
not a delimiter
--never-closed
Content-Type: text/html

<b>second</b> part without close delimiter
""")

ADDRESS_ZOO = crlf(
    'From: "Joe Q. Public" <john.q.public@example.com>, Mary Smith <@machine.tld:mary@example.net>'
    ', , jdoe@one.test (John Doe), "weird \\\\ \\"q\\"" <"quoted local"@example.org>\n'
    "Sender:\n"
    "Reply-To: Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>\n"
    "To: A Group(Some people):Chris Jones <c@(Chris's host.)public.example>,joe@example.org,"
    " John <jdoe@one.test> (my dear friend); (the end of the group)\n"
    "Cc: Undisclosed recipients:;\n"
    "Bcc: nodomain, <>, =?utf-8?q?J=C3=B6rg?= <j@x.de>\n"
    "Subject:\n"
    "In-Reply-To: <a@b>\n <c@d>\n"
    "Message-ID:   <id@host>   \n"
    "Date: Thu,\n      13\n        Feb\n          1969\n      23:32\n"
    "               -0330 (Newfoundland Time)\n"
    "\nbody\n"
)


SAMPLES = {
    "alternative_with_attachments": ALTERNATIVE_WITH_ATTACHMENTS,
    "nested_rfc822": NESTED_RFC822,
    "encoded_headers": ENCODED_HEADERS,
    "eight_bit_headers": EIGHT_BIT_HEADERS,
    "no_content_type": NO_CONTENT_TYPE,
    "broken_boundary": BROKEN_BOUNDARY,
    "address_zoo": ADDRESS_ZOO,
    # Odd but unambiguous shapes where Dovecot and we agree byte for byte.
    "header_only": b"From: a@b.c\r\nSubject: x\r\n",
    "just_crlf": b"\r\n",
    "body_only": b"\r\nhello\r\n",
    "ct_comment": crlf(
        "Content-Type: text/plain (plain text); charset=us-ascii (ascii)\n"
        "Content-Transfer-Encoding: 7bit (seven)\n\nx\n"
    ),
    "duplicate_content_type": crlf("Content-Type: text/html\nContent-Type: text/plain\n\nx\n"),
    "transport_padding": crlf(
        'Content-Type: multipart/mixed; boundary="a b"\n\n'
        "--a b   \n\none\n--a b\t\n\ntwo\n--a b--  \n"
    ),
    "empty_from": b"From:\r\nTo: <a@b>\r\n\r\n",
    "upper_case_multipart": crlf(
        "Content-Type: MULTIPART/MIXED; BOUNDARY=zz\n\n--zz\n\na\n--zz--\n"
    ),
    "epilogue_with_delimiter": crlf(
        "Content-Type: multipart/alternative; boundary=x\n\npre\n--x\n"
        "Content-Type: text/plain\n\na\n--x--\nepilogue\n--x\nnot a part\n"
    ),
    "eight_bit_parameter": crlf('Content-Type: text/plain; name="grüße.txt"; charset=utf-8\n\nx\n'),
    "space_before_colon": b"Subject : spaced\r\nFrom : x@y\r\n\r\nb\r\n",
    "folded_content_type": crlf(
        'Content-Type: multipart/mixed;\n\tboundary="fold"\n\n--fold\n\na\n--fold--\n'
    ),
    "leading_continuation": b" leading continuation\r\nSubject: s\r\n\r\nb\r\n",
    "mbox_from_line": b"From a@b Mon Jan 1\r\nSubject: s\r\n\r\nb\r\n",
    "encoded_group_and_literal_domain": (
        b"To: =?utf-8?q?Gr=C3=BCppe?=: a@b;\r\n"
        b'From: "last, first" <x@y>, <a.b@[1.2.3.4]>, a@b.c (comment (nested))\r\n\r\n'
    ),
    "one_language": crlf(
        "Content-Type: text/plain\nContent-Disposition: attachment\nContent-Language: en\n\nx\n"
    ),
}


# --- exact IMAP structures (RFC 3501 §7.4.2), as Dovecot sends them -----------------


def test_envelope_multipart() -> None:
    assert ParsedMessage.parse(ALTERNATIVE_WITH_ATTACHMENTS).envelope() == (
        b'("Tue, 01 Oct 2024 09:59:58 +0000" "Quarterly report" '
        b'(("Alice Example" NIL "alice" "example.org")) '
        b'(("Alice Example" NIL "alice" "example.org")) '
        b'(("Alice Example" NIL "alice" "example.org")) '
        b'(("Bob" NIL "bob" "example.net")(NIL NIL "carol" "example.net")) '
        b'(("Dave, Jr." NIL "dave" "example.com")) NIL NIL "<report-1@example.org>")'
    )


def test_bodystructure_alternative_with_attachments() -> None:
    parsed = ParsedMessage.parse(ALTERNATIVE_WITH_ATTACHMENTS)
    assert parsed.bodystructure(True) == (
        b'((("text" "plain" ("charset" "UTF-8" "format" "flowed") NIL NIL "quoted-printable" 43 2'
        b' NIL NIL NIL NIL)("text" "html" ("charset" "UTF-8") NIL NIL "7bit" 78 1 NIL NIL NIL NIL)'
        b' "alternative" ("boundary" "inner_ABC") NIL NIL NIL)'
        b'("application" "pdf" ("name" "report.pdf") NIL "The report" "base64" 16 NIL'
        b' ("attachment" ("filename" "report.pdf" "size" "12")) NIL NIL)'
        b'("image" "png" ("name" "logo.png") "<logo@example.org>" NIL "base64" 12 NIL'
        b' ("inline" ("filename" "logo.png")) ("en" "de") "http://example.org/logo.png")'
        b' "mixed" ("boundary" "outer-XYZ") NIL NIL NIL)'
    )
    assert parsed.bodystructure(False) == (
        b'((("text" "plain" ("charset" "UTF-8" "format" "flowed") NIL NIL "quoted-printable" 43 2)'
        b'("text" "html" ("charset" "UTF-8") NIL NIL "7bit" 78 1) "alternative")'
        b'("application" "pdf" ("name" "report.pdf") NIL "The report" "base64" 16)'
        b'("image" "png" ("name" "logo.png") "<logo@example.org>" NIL "base64" 12) "mixed")'
    )


def test_bodystructure_nested_message() -> None:
    # message/rfc822: envelope, body and line count of the embedded message.
    assert ParsedMessage.parse(NESTED_RFC822).bodystructure(True) == (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 12 1 NIL NIL NIL NIL)'
        b'("message" "rfc822" NIL NIL NIL "7bit" 370 ("Tue, 1 Oct 2024 11:00:00 -0700" "Lunch"'
        b' (("Grace" NIL "grace" "example.com")) (("Grace" NIL "grace" "example.com"))'
        b' (("Grace" NIL "grace" "example.com")) (("Eve" NIL "eve" "example.com")) NIL NIL NIL'
        b' "<lunch@example.com>") (("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 14 0'
        b' NIL NIL NIL NIL)("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 21 0 NIL NIL NIL'
        b' NIL) "alternative" ("boundary" "b2") NIL NIL NIL) 17 NIL ("inline" NIL) NIL NIL)'
        b' "mixed" ("boundary" "b1") NIL NIL NIL)'
    )


def test_no_content_type_is_text_plain_us_ascii() -> None:
    parsed = ParsedMessage.parse(NO_CONTENT_TYPE)
    assert parsed.bodystructure(True) == (
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 20 2 NIL NIL NIL NIL)'
    )
    # Group syntax: group start and end markers (RFC 3501 §7.4.2).
    assert b'((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL))' in parsed.envelope()


def test_eight_bit_headers_are_literals() -> None:
    parsed = ParsedMessage.parse(EIGHT_BIT_HEADERS)
    assert parsed.envelope() == (
        b'("Fri, 4 Oct 2024 10:00:00 +0200" {17}\r\nGr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln'
        b' (({13}\r\nJ\xc3\xb6rg M\xc3\xbcller NIL {5}\r\nj\xc3\xb6rg "example.de"))'
        b' (({13}\r\nJ\xc3\xb6rg M\xc3\xbcller NIL {5}\r\nj\xc3\xb6rg "example.de"))'
        b' (({13}\r\nJ\xc3\xb6rg M\xc3\xbcller NIL {5}\r\nj\xc3\xb6rg "example.de"))'
        b' (({4}\r\nZo\xc3\xab NIL "zoe" "example.com")) NIL NIL NIL NIL)'
    )
    assert parsed.header("subject") == ["Grüße aus Köln"]
    assert parsed.addresses("from") == [("Jörg Müller", "jörg@example.de")]


def test_rfc2231_continuations_are_joined_as_sent() -> None:
    structure = ParsedMessage.parse(ENCODED_HEADERS).bodystructure(True)
    assert b'("attachment" ("filename*" "UTF-8\'\'%E2%82%AC%20rates.txt"))' in structure
    assert b'("attachment" ("filename*" "UTF-8\'\'long%20name part two.txt"))' in structure
    # Encoded words in parameters are passed through, not decoded.
    assert b'("name" "=?UTF-8?B?w7xiZXIudHh0?=" "charset" "us-ascii")' in structure


def test_parameter_case_and_quotes_as_sent() -> None:
    raw = crlf(
        'Content-Type: TEXT/Plain; CharSet="UTF-8" (comment); Format=Flowed\n'
        "Content-Transfer-Encoding: Quoted-Printable\n"
        'Content-Disposition: INLINE; FileName="A \\"B\\".TXT"\n'
        "\nbody\nline2"
    )
    assert ParsedMessage.parse(raw).bodystructure(True) == (
        b'("TEXT" "Plain" ("CharSet" "UTF-8" "Format" "Flowed") NIL NIL "Quoted-Printable" 11 1'
        b' NIL ("INLINE" ("FileName" {9}\r\nA "B".TXT)) NIL NIL)'
    )


def test_broken_boundary() -> None:
    # No close delimiter; a line that merely starts with the delimiter still
    # is one (RFC 2046 §5.1.1), as in Dovecot.
    parsed = ParsedMessage.parse(BROKEN_BOUNDARY)
    assert parsed.bodystructure(False) == (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 10 0)'
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0)'
        b'("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 44 1) "mixed")'
    )
    assert parsed.section(Section((3,))) == b"<b>second</b> part without close delimiter\r\n"


@pytest.mark.parametrize(
    "header",
    [b'multipart/mixed; boundary="zz"', b"multipart/mixed"],
)
def test_multipart_without_parts_gets_one_empty_part(header: bytes) -> None:
    raw = b"From: a@b.c\r\nContent-Type: " + header + b"\r\n\r\nno parts here\r\n"
    structure = ParsedMessage.parse(raw).bodystructure(False)
    assert structure.startswith(
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0) "mixed")'
    )


def test_digest_parts_default_to_message_rfc822() -> None:
    raw = crlf(
        "Content-Type: multipart/digest; boundary=d\n\n--d\n\nFrom: x@y\nSubject: s\n\nhi\n--d--\n"
    )
    assert ParsedMessage.parse(raw).bodystructure(False) == (
        b'(("message" "rfc822" NIL NIL NIL "7bit" 27 (NIL "s" ((NIL NIL "x" "y"))'
        b' ((NIL NIL "x" "y")) ((NIL NIL "x" "y")) NIL NIL NIL NIL NIL)'
        b' ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 2 0) 3) "digest")'
    )


def test_address_zoo() -> None:
    # RFC 5322 appendix A oddities: comments, routes, quoted local parts,
    # groups, empty elements (MISSING_* as Dovecot), folded Date.
    assert ParsedMessage.parse(ADDRESS_ZOO).envelope() == (
        b'("Thu,      13        Feb          1969      23:32               -0330 (Newfoundland'
        b' Time)" "" (("Joe Q. Public" NIL "john.q.public" "example.com")("Mary Smith"'
        b' "@machine.tld" "mary" "example.net")(NIL NIL "MISSING_MAILBOX" "MISSING_DOMAIN")'
        b'("John Doe" NIL "jdoe" "one.test")({11}\r\nweird \\ "q" NIL "quoted local"'
        b' "example.org")) (("Joe Q. Public" NIL "john.q.public" "example.com")("Mary Smith"'
        b' "@machine.tld" "mary" "example.net")(NIL NIL "MISSING_MAILBOX" "MISSING_DOMAIN")'
        b'("John Doe" NIL "jdoe" "one.test")({11}\r\nweird \\ "q" NIL "quoted local"'
        b' "example.org")) (("Pete" NIL "pete" "silly.test")) ((NIL NIL "A Group" NIL)'
        b'("Chris Jones" NIL "c" "public.example")(NIL NIL "joe" "example.org")'
        b'("John" NIL "jdoe" "one.test")(NIL NIL NIL NIL)) ((NIL NIL "Undisclosed recipients"'
        b' NIL)(NIL NIL NIL NIL)) ((NIL NIL "nodomain" "MISSING_DOMAIN")(NIL NIL'
        b' "MISSING_MAILBOX" "MISSING_DOMAIN")("=?utf-8?q?J=C3=B6rg?=" NIL "j" "x.de"))'
        b' "<a@b> <c@d>" "<id@host>   ")'
    )


def test_where_we_differ_from_dovecot() -> None:
    """
    Deliberate differences from Dovecot 2.3, each for an RFC reason.

    The line break before a delimiter belongs to the delimiter (RFC 2046
    §5.1.1), also right after an inner close delimiter; an invalid
    Content-Type is text/plain (RFC 2045 §5.2) rather than ``"" ""``;
    Content-Disposition and friends count without MIME-Version; control
    characters go in literals instead of being rewritten.
    """
    nested = crlf(
        "Content-Type: multipart/mixed; boundary=o\n\n--o\n"
        "Content-Type: multipart/related; boundary=i\n\n--i\n\nx\n--i--\n--o--\n"
    )
    assert ParsedMessage.parse(nested).section(Section((1,))) == b"--i\r\n\r\nx\r\n--i--"
    for header in (b"text", b";;;"):
        raw = b"Content-Type: " + header + b"\r\n\r\nx\r\n"
        assert ParsedMessage.parse(raw).bodystructure(False) == (
            b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 3 1)'
        )
    raw = b"Content-Disposition: attachment\r\nContent-MD5: Q2hlY2s=\r\n\r\nx\r\n"
    assert (
        ParsedMessage.parse(raw)
        .bodystructure(True)
        .endswith(b'3 1 "Q2hlY2s=" ("attachment" NIL) NIL NIL)')
    )
    raw = b"Subject: a\tb\x01\r\n\r\n"
    assert ParsedMessage.parse(raw).envelope().startswith(b"(NIL {4}\r\na\tb\x01 NIL")


# --- sections (RFC 3501 §6.4.5) ---------------------------------------------------


def test_sections_of_a_single_part_message() -> None:
    raw = b"From: a@b.c\r\nSubject: hi\r\n\r\nbody\r\n"
    parsed = ParsedMessage.parse(raw)
    assert parsed.section(Section()) == raw
    assert parsed.section(Section(text="HEADER")) == b"From: a@b.c\r\nSubject: hi\r\n\r\n"
    assert parsed.section(Section(text="TEXT")) == b"body\r\n"
    assert parsed.section(Section((1,))) == b"body\r\n"  # part 1 is the body
    assert parsed.section(Section((1,), "MIME")) == b"From: a@b.c\r\nSubject: hi\r\n\r\n"
    assert parsed.section(Section((2,))) == b""
    assert parsed.section(Section((1, 1))) == b""
    assert parsed.section(Section((1,), "HEADER")) == b""


def test_header_fields_keep_order_case_and_duplicates() -> None:
    parsed = ParsedMessage.parse(ALTERNATIVE_WITH_ATTACHMENTS)
    fields = parsed.section(Section(text="HEADER.FIELDS", fields=("received", "SUBJECT")))
    assert fields == (
        b"Received: from mx.example.org by mail.example.net; Tue, 1 Oct 2024 10:00:00 +0000\r\n"
        b"Received: from laptop by mx.example.org; Tue, 1 Oct 2024 09:59:59 +0000\r\n"
        b"Subject: Quarterly report\r\n\r\n"
    )
    assert parsed.section(Section(text="HEADER.FIELDS", fields=("X-None",))) == b"\r\n"
    rest = parsed.section(
        Section(text="HEADER.FIELDS.NOT", fields=("Received", "Return-Path", "To", "Cc"))
    )
    assert rest.startswith(b"From: Alice Example <alice@example.org>\r\nSubject:")
    assert b"Received" not in rest and rest.endswith(b"\r\n\r\n")


def test_sections_of_nested_parts() -> None:
    parsed = ParsedMessage.parse(ALTERNATIVE_WITH_ATTACHMENTS)
    assert parsed.section(Section((1, 1))) == b"Hello Bob,\r\n\r\nHere is the report =E2=82=AC."
    assert parsed.section(Section((1, 2), "MIME")) == (
        b"Content-Type: text/html; charset=UTF-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
    )
    assert parsed.section(Section((2,))) == b"JVBERi0xLjQgYWJj\r\n"[:16]
    assert parsed.section(Section((2, 1))) == parsed.section(Section((2,)))  # Dovecot too
    assert parsed.section(Section((2, 1, 1))) == b""
    # BODY[1] of a multipart part is its body with the delimiters.
    assert parsed.section(Section((1,))).startswith(b"--inner_ABC\r\nContent-Type: text/plain")
    assert parsed.section(Section((1,))).endswith(b"--inner_ABC--\r\n")
    assert parsed.section(Section((4,))) == b""


def test_sections_of_embedded_message() -> None:
    parsed = ParsedMessage.parse(NESTED_RFC822)
    inner = parsed.section(Section((2,)))
    assert inner.startswith(b"From: Grace") and len(inner) == 370
    assert parsed.section(Section((2,), "MIME")) == (
        b"Content-Type: message/rfc822\r\nContent-Disposition: inline\r\n\r\n"
    )
    header = parsed.section(Section((2,), "HEADER"))
    assert header.startswith(b"From: Grace") and header.endswith(b'boundary="b2"\r\n\r\n')
    assert parsed.section(Section((2,), "TEXT")).startswith(b"--b2\r\n")
    assert parsed.section(Section((2,), "HEADER.FIELDS", ("Subject",))) == b"Subject: Lunch\r\n\r\n"
    assert parsed.section(Section((2, 1))) == b"Lunch at noon?"
    assert (
        parsed.section(Section((2, 2), "MIME"))
        == b"Content-Type: text/html; charset=us-ascii\r\n\r\n"
    )
    assert parsed.section(Section((1,), "HEADER")) == b""  # not a message part


def test_header_without_body_or_final_newline() -> None:
    raw = b"From: a@b.c\r\nSubject: x"
    parsed = ParsedMessage.parse(raw)
    assert parsed.section(Section(text="HEADER")) == raw
    assert parsed.section(Section(text="TEXT")) == b""
    assert (
        parsed.section(Section(text="HEADER.FIELDS", fields=("SUBJECT",))) == b"Subject: x\r\n\r\n"
    )


def test_bare_lf_message() -> None:
    raw = (
        b"From: a@b.c\nContent-Type: multipart/mixed; boundary=x\n\n--x\n\none\n--x\n\ntwo\n--x--\n"
    )
    parsed = ParsedMessage.parse(raw)
    assert parsed.section(Section((1,))) == b"one"
    assert parsed.section(Section((2,))) == b"two"
    assert parsed.section(Section(text="HEADER")).endswith(b"boundary=x\n\n")


# --- decoded views (SEARCH, HTTP) ---------------------------------------------------


def test_rfc2047_headers() -> None:
    parsed = ParsedMessage.parse(ENCODED_HEADERS)
    assert parsed.header("Subject") == ["Grüße aus München"]
    assert parsed.addresses("from") == [("Jörg Müller", "joerg@example.de")]
    assert parsed.addresses("to") == [("André", "andre@example.fr")]
    assert parsed.date() == datetime(2024, 10, 3, 8, 0, tzinfo=timezone(timedelta(hours=2)))


@pytest.mark.parametrize(
    ("text", "decoded"),
    [
        ("=?utf-8?q?a?= =?utf-8?q?b?=", "ab"),  # blanks between words dropped
        ("=?utf-8?q?a?= b", "a b"),
        ("x =?ISO-8859-1?B?SWYgeW91IGNhbiByZWFkIHRoaXMgeW8=?=", "x If you can read this yo"),
        ("=?UTF-8?B?4oI=?= =?UTF-8?B?rA==?=", "€"),  # a character split across words
        ("=?utf-8*en?Q?hi?=", "hi"),  # RFC 2231 language suffix
        ("=?x-unknown?Q?caf=E9?=", "café"),  # unknown charset: UTF-8, then cp1252
        ("=?utf-8?B?!!!?=", "=?utf-8?B?!!!?="),
        ("plain", "plain"),
    ],
)
def test_decode_words(text: str, decoded: str) -> None:
    assert decode_words(text) == decoded


def test_folded_header_is_unfolded() -> None:
    raw = b"Subject: a long\r\n subject line\r\n\r\n"
    assert ParsedMessage.parse(raw).header("subject") == ["a long subject line"]


def test_addresses_skip_group_markers() -> None:
    parsed = ParsedMessage.parse(BROKEN_BOUNDARY)
    assert parsed.addresses("to") == [
        ("", "a@example.com"),
        ("B", "b@example.com"),
        ("", "c@example.com"),
    ]
    assert parsed.addresses("cc") == []


def test_date_missing_or_bad() -> None:
    assert ParsedMessage.parse(BROKEN_BOUNDARY).date() is None
    assert ParsedMessage.parse(b"Date: yesterday\r\n\r\n").date() is None
    naive = ParsedMessage.parse(b"Date: Sat, 5 Oct 2024 00:00:00 -0000\r\n\r\n").date()
    assert naive == datetime(2024, 10, 5, tzinfo=UTC)


def test_text_and_html() -> None:
    text, html = ParsedMessage.parse(ALTERNATIVE_WITH_ATTACHMENTS).text_and_html()
    assert text == "Hello Bob,\r\n\r\nHere is the report €."
    assert html is not None and html.startswith("<html><body><p>Hello Bob,")
    text, html = ParsedMessage.parse(ENCODED_HEADERS).text_and_html()
    assert text == "Grüße!" and html is None
    assert ParsedMessage.parse(EIGHT_BIT_HEADERS).text_and_html() == ("Grüße!\r\n", None)


def test_body_text_includes_embedded_messages() -> None:
    body = ParsedMessage.parse(NESTED_RFC822).body_text()
    assert "See below." in body and "Lunch at noon?" in body and "<p>" in body


def test_attachments() -> None:
    parsed = ParsedMessage.parse(ALTERNATIVE_WITH_ATTACHMENTS)
    assert parsed.has_attachments
    assert parsed.attachments() == [
        Attachment(0, "report.pdf", "application/pdf", 12, (2,)),
        Attachment(1, "logo.png", "image/png", 8, (3,)),
    ]
    assert parsed.attachment_bytes(0) == b"%PDF-1.4 abc"
    assert parsed.attachment_bytes(1) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(IndexError):
        parsed.attachment_bytes(2)


def test_attachment_filenames_rfc2231_and_rfc2047() -> None:
    parsed = ParsedMessage.parse(ENCODED_HEADERS)
    assert [(a.filename, a.content_type, a.part) for a in parsed.attachments()] == [
        ("€ rates.txt", "application/octet-stream", (2,)),
        ("long name part two.txt", "text/plain", (3,)),
    ]
    assert parsed.attachment_bytes(0) == b"cmF0ZXM="  # no transfer encoding declared
    raw = crlf('Content-Type: application/pdf; name="=?UTF-8?B?w7xiZXIucGRm?="\n\nx')
    only = ParsedMessage.parse(raw).attachments()
    assert only == [Attachment(0, "über.pdf", "application/pdf", 1, (1,))]


@pytest.mark.parametrize(
    "header",
    [
        'Content-Type: application/pdf; name="grüße.pdf"'.encode(),
        'Content-Disposition: attachment; filename="grüße.pdf"'.encode("latin-1"),
        b"Content-Disposition: attachment; filename*=iso-8859-1'de'gr%FC%DFe.pdf",
        b'Content-Disposition: attachment; filename*0="gr"; filename*1="\xc3\xbc\xc3\x9fe.pdf"',
    ],
)
def test_raw_eight_bit_and_rfc2231_filenames(header: bytes) -> None:
    raw = header + b"\r\nContent-Type: application/pdf\r\n\r\nx"
    assert [a.filename for a in ParsedMessage.parse(raw).attachments()] == ["grüße.pdf"]


def test_forwarded_message_is_one_attachment() -> None:
    parsed = ParsedMessage.parse(NESTED_RFC822)
    assert [(a.content_type, a.part) for a in parsed.attachments()] == [("message/rfc822", (2,))]
    assert parsed.attachment_bytes(0).startswith(b"From: Grace")


def test_no_attachments() -> None:
    parsed = ParsedMessage.parse(NO_CONTENT_TYPE)
    assert not parsed.has_attachments and parsed.attachments() == []
    assert parsed.body_text() == "line one\r\nline two\r\n"


def test_malformed_base64_attachment_still_decodes() -> None:
    raw = crlf(
        "Content-Type: multipart/mixed; boundary=b\n\n--b\n"
        "Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
        "cmF0ZX*\n--b--\n"
    )
    assert ParsedMessage.parse(raw).attachment_bytes(0) == b"rate"


# --- a 20 MB attachment --------------------------------------------------------------


def test_twenty_megabyte_attachment() -> None:
    payload = os.urandom(15 * 1024 * 1024)
    encoded = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    raw = (
        crlf(
            "From: big@example.com\nSubject: big\nContent-Type: multipart/mixed; boundary=BIG\n\n"
            "--BIG\nContent-Type: text/plain\n\nsee attached\n--BIG\n"
            "Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n"
            'Content-Disposition: attachment; filename="big.bin"\n\n'
        )
        + encoded
        + b"--BIG--\r\n"
    )
    assert len(raw) > 20_000_000
    started = time.perf_counter()
    parsed = ParsedMessage.parse(raw)
    structure = parsed.bodystructure(True)
    elapsed = time.perf_counter() - started
    assert b'"base64" %d NIL ("attachment"' % (len(encoded) - 2) in structure
    assert parsed.attachments() == [
        Attachment(0, "big.bin", "application/octet-stream", len(payload), (2,))
    ]
    assert parsed.attachment_bytes(0) == payload
    assert parsed.section(Section((2,))) == encoded[:-2]
    # Generous bound: parsing is a few find() passes, not a per-line loop.
    assert elapsed < 2.0


# --- robustness ------------------------------------------------------------------------

_PIECES = st.sampled_from(
    [
        b"From: a@b\r\n",
        b"To: g: x@y, <>, ;\r\n",
        b"Content-Type: multipart/mixed; boundary=q\r\n",
        b"Content-Type: message/rfc822\r\n",
        b'Content-Type: text/plain; charset="x\r\n',
        b"Content-Disposition: attachment; filename*0*=x; filename*1=y\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
        b"\r\n",
        b"\n",
        b"--q\r\n",
        b"--q--\r\n",
        b" folded\r\n",
        b"body \xff\xfe text\r\n",
        b"=?utf-8?b?////?= (",
    ]
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_PIECES | st.binary(max_size=12), max_size=30).map(b"".join))
def test_any_input_parses_and_renders(raw: bytes) -> None:
    parsed = ParsedMessage.parse(raw)
    parsed.envelope()
    parsed.bodystructure(True)
    parsed.bodystructure(False)
    for section in (Section(), Section((1,)), Section((1, 1), "MIME"), Section((2,), "TEXT")):
        assert isinstance(parsed.section(section), bytes)
    parsed.body_text()
    parsed.text_and_html()
    for attachment in parsed.attachments():
        parsed.attachment_bytes(attachment.index)
    parsed.header("subject")
    parsed.addresses("to")
    parsed.date()


_HEADER_SECTIONS = (
    Section(text="HEADER"),
    Section(text="HEADER.FIELDS", fields=("Subject", "from", "X-None")),
    Section(text="HEADER.FIELDS.NOT", fields=("SUBJECT",)),
)


def _agrees_with_full_parse(raw: bytes, cut: int) -> bool:
    """Whether a header-only parse of ``raw[:cut]``, if any, serves what the full one does."""
    head = ParsedMessage.parse_header(raw[:cut])
    if head is None:
        return False
    full = ParsedMessage.parse(raw)
    assert not head.complete and head.raw == full.root.header_bytes
    assert head.envelope() == full.envelope()
    for section in _HEADER_SECTIONS:
        assert head.section(section) == full.section(section)
    for name in ("subject", "from", "to", "date", "content-type"):
        assert head.header(name) == full.header(name)
        assert head.addresses(name) == full.addresses(name)
    assert head.headers() == full.headers() and head.date() == full.date()
    return True


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_header_only_parse_matches_the_full_parse(name: str) -> None:
    raw = SAMPLES[name]
    served = [cut for cut in range(len(raw) + 1) if _agrees_with_full_parse(raw, cut)]
    header_end = ParsedMessage.parse(raw).root.body_start
    # Served exactly when the prefix holds the empty line and a byte more.
    assert served == list(range(header_end + 1, len(raw) + 1))


@settings(max_examples=150, deadline=None)
@given(st.lists(_PIECES | st.binary(max_size=12), max_size=30).map(b"".join), st.integers(0, 400))
def test_header_only_parse_of_any_prefix(raw: bytes, cut: int) -> None:
    _agrees_with_full_parse(raw, cut)


def test_header_only_parse_has_no_body() -> None:
    head = ParsedMessage.parse_header(b"Subject: s\r\n\r\nbody")
    assert head is not None
    for use in (
        lambda: head.bodystructure(True),
        lambda: head.section(Section()),
        lambda: head.section(Section(text="TEXT")),
        lambda: head.section(Section((1,))),
        head.body_text,
        head.attachments,
    ):
        with pytest.raises(ValueError):
            use()


def test_envelope_and_bodystructure_are_computed_once() -> None:
    parsed = ParsedMessage.parse(ALTERNATIVE_WITH_ATTACHMENTS)
    assert parsed.envelope() is parsed.envelope()
    assert parsed.bodystructure(True) is parsed.bodystructure(True)
    assert parsed.bodystructure(False) is parsed.bodystructure(False)
    assert parsed.bodystructure(False) != parsed.bodystructure(True)


_HEADER_VALUES = st.lists(
    st.sampled_from(
        [
            "Stra\u00dfe",
            "STRASSE",
            "\u212aelvin",
            "kelvin",
            "=?utf-8?q?Gr=C3=BC=C3=9Fe?=",
            "=?x?b?@@?=",
            "=?iso-8859-1?q?caf=E9?=",
            " ",
            "\r\n ",
            "\u017fs",
            "Re:",
            "Quarterly",
            "caf\u00e9",
            "a",
        ]
    )
    | st.text(max_size=6),
    max_size=6,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(_HEADER_VALUES, max_size=3),
    st.sampled_from(["", "ss", "k", "\u00df", "caf\u00e9", "e", "grüße", "re: q", "strasse"])
    | st.text(max_size=3),
)
def test_header_contains_is_searching_the_decoded_values(values: list[str], needle: str) -> None:
    raw = b"".join(b"Subject: " + v.encode("utf-8", "surrogatepass") + b"\r\n" for v in values)
    parsed = ParsedMessage.parse(raw + b"\r\nbody")
    folded = needle.casefold()
    expected = any(folded in v.casefold() for v in parsed.header("subject"))
    assert parsed.header_contains("subject", folded) == expected
    assert parsed.header_contains("Subject", folded) == expected  # from the memo now


_ADDRESS_PIECES = st.sampled_from(
    [
        b"a",
        b"b.c",
        b"Name",
        b"x",
        b" ",
        b"\t",
        b"\x0b",
        b"\x0c",
        b"\xc3\xa9",
        b"<",
        b">",
        b"@",
        b",",
        b".",
        b'"',
        b"(c)",
        b":",
        b";",
        b"[1.2.3.4]",
        b"\\",
        b"=?utf-8?q?x?=",
    ]
)


_WORD = st.lists(
    st.sampled_from([b"a", b"B", b"\x0b", b"\x0c", b"\xc3\xa9", b".", b"=", b"\x00", b"-"]),
    min_size=1,
    max_size=3,
).map(b"".join)
_BLANK = st.sampled_from([b"", b" ", b"\t", b" \t "])
_ELEMENT = st.one_of(
    st.builds(
        lambda words, gap, local, domain: (
            gap.join(words) + gap + b"<" + local + b"@" + domain + b">"
        ),
        st.lists(_WORD, max_size=3),
        _BLANK,
        _WORD,
        _WORD,
    ),
    st.builds(lambda local, domain: local + b"@" + domain, _WORD, _WORD),
    _ADDRESS_PIECES,
)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.tuples(_BLANK, _ELEMENT, _BLANK).map(b"".join), min_size=1, max_size=3).map(
        b",".join
    )
    | st.lists(_ADDRESS_PIECES | st.binary(max_size=3), max_size=14).map(b"".join)
)
def test_simple_address_lists_parse_as_the_general_parser_does(value: bytes) -> None:
    simple = structure._simple_address_list(value)
    if simple is not None:
        assert simple == structure._parse_address_list(value)


@pytest.mark.parametrize(
    "value",
    [
        b"Sender 5 <s5@example.test>",
        b"a@b",
        b" A\tB  C <x.y@z> , q@r ",
        b"<a@b>",
        b"N<a@b>",
        b"\xc3\xa9t\xc3\xa9 <a@b>",
        b"V\x0bT <a@b>",
    ],
)
def test_everyday_address_lists_take_the_short_way(value: bytes) -> None:
    simple = structure._simple_address_list(value)
    assert simple is not None and simple == structure._parse_address_list(value)


@pytest.mark.parametrize(
    ("value", "needle", "found"),
    [
        ("Re: QUARTERLY report", "quarterly", True),
        ("STRASSE", "straße", True),
        ("Straße", "ss", True),
        ("\u212aelvin", "kelvin", True),
        ("=?utf-8?q?Gr=C3=BC=C3=9Fe?=", "grüsse", True),
        ("=?utf-8?q?Gr=C3=BC=C3=9Fe?=", "=?utf-8", False),
        ("plain", "PLAIN", False),  # the needle comes case-folded
    ],
)
def test_header_contains_examples(value: str, needle: str, found: bool) -> None:
    parsed = ParsedMessage.parse(b"Subject: " + value.encode() + b"\r\n\r\n")
    for _ in range(2):
        assert parsed.header_contains("subject", needle.casefold() if found else needle) is found


def test_header_contains_with_many_field_names() -> None:
    names = [f"X-F{n}" for n in range(8)]
    raw = "".join(f"{name}: value {n}\r\n" for n, name in enumerate(names)).encode() + b"\r\nb"
    parsed = ParsedMessage.parse(raw)
    for _ in range(2):  # the second round partly from the memo, partly not
        for n, name in enumerate(names):
            assert parsed.header_contains(name, f"value {n}")
            assert not parsed.header_contains(name, f"value {n + 1}")


def test_deep_nesting_is_bounded() -> None:
    raw = b"Content-Type: message/rfc822\r\n\r\n" * 500 + b"body"
    parsed = ParsedMessage.parse(raw)
    assert parsed.bodystructure(True).count(b'"message" "rfc822"') < 100


# --- cache -----------------------------------------------------------------------------


def test_cache_is_lru_by_bytes() -> None:
    a = ParsedMessage.parse(b"a" * 40)
    b = ParsedMessage.parse(b"b" * 40)
    c = ParsedMessage.parse(b"c" * 40)
    assert a.cost == b.cost == c.cost > 40  # the structure counts too
    cache = ParsedCache(max_bytes=2 * a.cost + 10)
    cache.put("a", a)
    cache.put("b", b)
    assert cache.get("a") is a  # a is now most recently used
    cache.put("c", c)
    assert cache.get("b") is None and cache.get("a") is a and cache.get("c") is c
    assert cache.total_bytes == 2 * a.cost and len(cache) == 2
    cache.put("huge", ParsedMessage.parse(b"x" * (2 * a.cost)))
    assert cache.get("huge") is None and len(cache) == 2
    cache.discard("a")
    assert cache.total_bytes == c.cost
    key = ("alice", "INBOX", 7, 1)
    parsed = cache.get_or_parse(key, b"Subject: hi\r\n\r\n")
    assert cache.get_or_parse(key, b"ignored") is parsed
    cache.clear()
    assert len(cache) == 0 and cache.total_bytes == 0


def test_cache_counts_small_messages_by_their_structure() -> None:
    # 10,000 tiny messages must not fit a cache sized for 10,000 raw bytes.
    raw = b"Subject: x\r\nFrom: a@b\r\nTo: c@d\r\n\r\nhi"
    parsed = ParsedMessage.parse(raw)
    assert parsed.cost >= len(raw) + 3 * 200


def test_header_only_entries_are_served_only_when_asked_for() -> None:
    raw = b"Subject: hi\r\n\r\n" + b"body " * 10
    head = ParsedMessage.parse_header(raw[:20])
    assert head is not None and not head.complete
    cache = ParsedCache()
    cache.put("k", head)
    assert cache.get("k") is None
    assert cache.get("k", header_only=True) is head
    assert cache.get_or_parse("k", raw).complete
    assert cache.get("k", header_only=True) is not head


# --- Dovecot as the oracle (tests/dovecot_oracle.py) ------------------------------------


@needs_dovecot
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_matches_dovecot(name: str) -> None:
    """ENVELOPE, BODYSTRUCTURE, BODY and every section form, byte for byte."""
    raw = SAMPLES[name]
    parsed = ParsedMessage.parse(raw)
    requests = ["ENVELOPE", "BODYSTRUCTURE", "BODY"]
    mine = [
        b"ENVELOPE " + parsed.envelope(),
        b"BODYSTRUCTURE " + parsed.bodystructure(True),
        b"BODY " + parsed.bodystructure(False),
    ]
    paths = {part.path for part in parsed.root.walk()} | {(1,), (9,), (1, 1), (2, 1), (1, 1, 1)}
    for path in sorted(paths):
        texts = [None, "HEADER", "TEXT"] + (["MIME", "HEADER.FIELDS"] if path else [])
        for text in texts:
            fields = ("FROM", "CONTENT-TYPE") if text == "HEADER.FIELDS" else ()
            section = Section(path, text, fields)
            label = section_label(section)
            requests.append("BODY.PEEK[" + label.decode() + "]")
            mine.append(b"BODY[" + label + b"] " + literal(parsed.section(section)))
    assert dovecot_fetch(raw, " ".join(requests).encode()) == b" ".join(mine)
