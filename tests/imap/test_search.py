"""
SEARCH (RFC 3501 §6.4.4) with every key, CHARSET, ESEARCH (RFC 4731),
SEARCHRES (RFC 5182) and MODSEQ (RFC 7162 §3.1.5).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import pytest_twisted  # type: ignore[import-untyped]

from tests.imap.conftest import Client, message  # type: ignore[import-not-found]
from twistedmail.interfaces import IMailAccount

SUBJECT_2047 = "=?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?="


async def _mailbox(client: Client, account: IMailAccount) -> None:
    """Five messages with distinct flags, dates, sizes, headers and bodies."""
    await account.append(
        "INBOX",
        message("alpha", "apples and pears\r\n"),
        ["\\Seen"],
        datetime(2024, 1, 1, 12, tzinfo=UTC),
    )
    await account.append(
        "INBOX",
        message("beta", "x" * 2000 + "\r\n", sender="carol@example.org"),
        ["\\Flagged", "$Work"],
        datetime(2024, 2, 1, 12, tzinfo=UTC),
    )
    await account.append(
        "INBOX",
        message(SUBJECT_2047, "umlauts\r\n"),
        ["\\Answered", "\\Seen"],
        datetime(2024, 3, 1, 12, tzinfo=UTC),
    )
    await account.append(
        "INBOX",
        b"From: dave@example.net\r\nCc: Erin <erin@example.com>\r\n"
        b"Date: Fri, 1 Mar 2024 23:30:00 -0800\r\n"
        b"X-Custom: Foo Bar\r\n\r\nPlain body\r\n",
        ["\\Deleted", "\\Draft"],
        datetime(2024, 4, 1, 12, tzinfo=UTC),
    )
    await account.append(
        "INBOX", message("epsilon", "last\r\n"), [], datetime(2024, 5, 1, 12, tzinfo=UTC)
    )
    await client.login()
    await client.command(b"s1 SELECT INBOX")


CASES = [
    (b"ALL", b"1 2 3 4 5"),
    (b"SEEN", b"1 3"),
    (b"UNSEEN", b"2 4 5"),
    (b"ANSWERED", b"3"),
    (b"UNANSWERED", b"1 2 4 5"),
    (b"FLAGGED", b"2"),
    (b"UNFLAGGED", b"1 3 4 5"),
    (b"DELETED", b"4"),
    (b"UNDELETED", b"1 2 3 5"),
    (b"DRAFT", b"4"),
    (b"UNDRAFT", b"1 2 3 5"),
    (b"KEYWORD $Work", b"2"),
    (b"UNKEYWORD $Work", b"1 3 4 5"),
    # This session is the first to see them (RFC 3501 §2.3.2).
    (b"RECENT", b"1 2 3 4 5"),
    (b"NEW", b"2 4 5"),
    (b"OLD", b""),
    (b"FROM carol", b"2"),
    (b"FROM BOB", b"1 2 3 5"),
    (b"TO alice", b"1 2 3 5"),
    (b"CC erin", b"4"),
    (b"BCC anyone", b""),
    (b"SUBJECT alpha", b"1"),
    (b'SUBJECT "k\xc3\xb6ln"', b"3"),
    (b"HEADER X-Custom bar", b"4"),
    (b'HEADER X-Custom ""', b"4"),
    (b"BODY pears", b"1"),
    (b"BODY subject", b""),
    (b"TEXT subject", b"1 2 3 5"),
    (b"TEXT PEARS", b"1"),
    (b"BEFORE 1-Feb-2024", b"1"),
    (b"ON 1-Feb-2024", b"2"),
    (b"SINCE 1-Apr-2024", b"4 5"),
    (b'SINCE "1-Apr-2024"', b"4 5"),
    # Sent dates compare the Date: header's own calendar day.
    (b"SENTON 1-Mar-2024", b"4"),
    (b"SENTBEFORE 1-Mar-2024", b"1 2 3 5"),
    (b"SENTSINCE 1-Mar-2024", b"4"),
    (b"LARGER 1000", b"2"),
    (b"SMALLER 1000", b"1 3 4 5"),
    (b"UID 2:3", b"2 3"),
    (b"UID 4:*", b"4 5"),
    (b"2,4:5", b"2 4 5"),
    (b"*", b"5"),
    (b"NOT SEEN", b"2 4 5"),
    (b"OR SEEN FLAGGED", b"1 2 3"),
    (b"OR (SEEN ANSWERED) DELETED", b"3 4"),
    (b"SEEN NOT ANSWERED", b"1"),
    (b"((SEEN))", b"1 3"),
    (b'CHARSET UTF-8 SUBJECT "GR\xc3\x9c\xc3\x9fe"', b"3"),
    (b"CHARSET US-ASCII SUBJECT beta", b"2"),
]


@pytest.mark.parametrize(("criteria", "expected"), CASES)
@pytest_twisted.ensureDeferred
async def test_search_key(
    client: Client, account: IMailAccount, criteria: bytes, expected: bytes
) -> None:
    await _mailbox(client, account)
    out = await client.command(b"a1 SEARCH " + criteria)
    line = b"* SEARCH " + expected if expected else b"* SEARCH"
    assert out == line + b"\r\na1 OK SEARCH completed\r\n"


@pytest_twisted.ensureDeferred
async def test_search_literal_string_and_uid_search(client: Client, account: IMailAccount) -> None:
    await _mailbox(client, account)
    client.send(b"a1 UID SEARCH SUBJECT {4}\r\n")
    assert client.take() == b"+ Ready for literal data\r\n"
    out = await client.finish(b"beta", b"a1")
    assert out == b"* SEARCH 2\r\na1 OK UID SEARCH completed\r\n"


@pytest_twisted.ensureDeferred
async def test_search_errors(client: Client, account: IMailAccount) -> None:
    await _mailbox(client, account)
    out = await client.command(b"a1 SEARCH CHARSET KOI8-R SUBJECT x")
    assert out == b"a1 NO [BADCHARSET (US-ASCII UTF-8)] Unsupported charset\r\n"
    assert (await client.command(b"a2 SEARCH BOGUS")).startswith(b"a2 BAD ")
    assert (await client.command(b"a3 SEARCH")).startswith(b"a3 BAD ")
    assert (await client.command(b"a4 SEARCH " + b"(" * 100 + b"ALL" + b")" * 100)).startswith(
        b"a4 BAD "
    )
    assert (await client.command(b"a5 SEARCH BEFORE 31-Feb-2024")).startswith(b"a5 BAD ")


@pytest_twisted.ensureDeferred
async def test_esearch_and_searchres(client: Client, account: IMailAccount) -> None:
    await _mailbox(client, account)
    out = await client.command(b"a1 SEARCH RETURN (MIN MAX COUNT ALL) UNSEEN")
    assert (
        out == b'* ESEARCH (TAG "a1") MIN 2 MAX 5 COUNT 3 ALL 2,4:5\r\na1 OK SEARCH completed\r\n'
    )
    out = await client.command(b"a2 UID SEARCH RETURN () FLAGGED")
    assert out == b'* ESEARCH (TAG "a2") UID ALL 2\r\na2 OK UID SEARCH completed\r\n'
    out = await client.command(b"a3 SEARCH RETURN (COUNT) BCC nobody")
    assert out == b'* ESEARCH (TAG "a3") COUNT 0\r\na3 OK SEARCH completed\r\n'
    # RFC 5182: SAVE alone sends no ESEARCH; $ then names the result.
    assert await client.command(b"a4 SEARCH RETURN (SAVE) SEEN") == b"a4 OK SEARCH completed\r\n"
    out = await client.command(b"a5 FETCH $ UID")
    assert out == b"* 1 FETCH (UID 1)\r\n* 3 FETCH (UID 3)\r\na5 OK FETCH completed\r\n"
    out = await client.command(b"a6 UID SEARCH $ ANSWERED")
    assert out == b"* SEARCH 3\r\na6 OK UID SEARCH completed\r\n"


@pytest_twisted.ensureDeferred
async def test_search_modseq(client: Client, account: IMailAccount) -> None:
    await _mailbox(client, account)
    infos = await account.messages("INBOX")
    top = max(i.modseq for i in infos)
    out = await client.command(b"a1 SEARCH MODSEQ %d" % top)
    seqs = [n + 1 for n, i in enumerate(infos) if i.modseq >= top]
    assert out == b"* SEARCH %s (MODSEQ %d)\r\na1 OK SEARCH completed\r\n" % (
        b" ".join(b"%d" % s for s in seqs),
        top,
    )
