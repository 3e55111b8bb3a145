"""
Messages as they come from the wild, through the whole session: raw 8-bit
headers, RFC 2047/2231 encodings, nested message/rfc822, no Content-Type,
and a 20 MB attachment (parsed in a thread, fetched in slices).
"""

from __future__ import annotations

import base64

import pytest_twisted  # type: ignore[import-untyped]

from tests.imap.conftest import Client
from twistedmail.interfaces import IMailAccount

EIGHT_BIT = (
    "From: J\u00fcrgen <j@example.de>\r\nTo: alice@example.test\r\n"
    "Subject: Gr\u00fc\u00dfe \u2603\r\n"
    "Date: Mon, 5 Feb 2024 09:00:00 +0100\r\n\r\nK\u00f6ln\r\n"
).encode()

NO_CONTENT_TYPE = b"From: a@example.test\r\nSubject: bare\r\n\r\nplain text\r\n"

NESTED = (
    b"From: a@example.test\r\nSubject: =?ISO-8859-1?Q?Caf=E9?=\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
    b"--outer\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n"
    b"--inner\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n"
    b"--inner\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>hello</p>\r\n--inner--\r\n"
    b"--outer\r\nContent-Type: message/rfc822\r\n\r\n"
    b"From: b@example.test\r\nSubject: inner\r\n\r\ninner body\r\n"
    b"--outer\r\nContent-Type: application/pdf\r\n"
    b"Content-Disposition: attachment; filename*=UTF-8''%E2%82%AC%20rates.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--outer--\r\n"
)


def big_message(size: int) -> bytes:
    payload = base64.encodebytes(b"\xa5" * size).replace(b"\n", b"\r\n")
    return (
        b"From: a@example.test\r\nSubject: big\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        b"--b\r\nContent-Type: application/octet-stream; name=big.bin\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + payload + b"--b--\r\n"
    )


@pytest_twisted.ensureDeferred
async def test_eight_bit_headers_are_served_as_bytes(client: Client, account: IMailAccount) -> None:
    await account.append("INBOX", EIGHT_BIT)
    await client.login()
    await client.command(b"s1 SELECT INBOX")
    out = await client.command(b"a1 FETCH 1 (ENVELOPE BODY.PEEK[HEADER] BODYSTRUCTURE)")
    assert out.endswith(b"a1 OK FETCH completed\r\n")
    assert "Gr\u00fc\u00dfe".encode() in out
    out = await client.command('a2 SEARCH CHARSET UTF-8 SUBJECT "GR\u00dc\u00dfe"'.encode())
    assert out == b"* SEARCH 1\r\na2 OK SEARCH completed\r\n"
    out = await client.command('a3 SEARCH CHARSET UTF-8 BODY "k\u00f6ln"'.encode())
    assert out == b"* SEARCH 1\r\na3 OK SEARCH completed\r\n"


@pytest_twisted.ensureDeferred
async def test_no_content_type_and_nested_structures(client: Client, account: IMailAccount) -> None:
    await account.append("INBOX", NO_CONTENT_TYPE)
    await account.append("INBOX", NESTED)
    await client.login()
    await client.command(b"s1 SELECT INBOX")
    out = await client.command(b"a1 FETCH 1 BODYSTRUCTURE")
    # RFC 2045 §5.2: no Content-Type means text/plain; charset=us-ascii.
    assert out.upper().startswith(
        b'* 1 FETCH (BODYSTRUCTURE ("TEXT" "PLAIN" ("CHARSET" "US-ASCII")'
    )
    out = await client.command(b"a2 FETCH 2 (BODYSTRUCTURE BODY.PEEK[2.HEADER] BODY.PEEK[1.2])")
    assert out.endswith(b"a2 OK FETCH completed\r\n")
    assert b'"MESSAGE" "RFC822"' in out.upper() and b"BODY[1.2] {12}\r\n<p>hello</p>" in out
    assert b"BODY[2.HEADER] {40}\r\nFrom: b@example.test\r\nSubject: inner\r\n\r\n" in out
    out = await client.command(b"a3 SEARCH SUBJECT caf\xc3\xa9")
    assert out.startswith(b"a3 BAD ")  # 8-bit needs a quoted string or literal
    out = await client.command(b'a4 SEARCH CHARSET UTF-8 SUBJECT "CAF\xc3\x89"')
    assert out == b"* SEARCH 2\r\na4 OK SEARCH completed\r\n"


@pytest_twisted.ensureDeferred
async def test_twenty_megabyte_attachment(client: Client, account: IMailAccount) -> None:
    data = big_message(15 * 1024 * 1024)  # 20 MB once base64-encoded
    assert len(data) > 20_000_000
    await client.login()
    client.send(b"a1 APPEND INBOX {%d}\r\n" % len(data))
    assert client.take() == b"+ Ready for literal data\r\n"
    out = await client.finish(data, b"a1")
    assert out.startswith(b"a1 OK [APPENDUID ")
    await client.command(b"s1 SELECT INBOX")
    out = await client.command(b"a2 FETCH 1 (RFC822.SIZE BODYSTRUCTURE BODY.PEEK[2]<0.16>)")
    assert b"RFC822.SIZE %d" % len(data) in out
    assert b'"APPLICATION" "OCTET-STREAM" ("NAME" "BIG.BIN")' in out.upper()
    assert b"BODY[2]<0> {16}\r\npaWlpaWlpaWlpaWl)" in out
    assert out.endswith(b"a2 OK FETCH completed\r\n")
    out = await client.command(b"a3 UID SEARCH LARGER 20000000 SUBJECT big")
    assert out == b"* SEARCH 1\r\na3 OK UID SEARCH completed\r\n"
