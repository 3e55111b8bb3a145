"""
What FETCH and SEARCH read: header-only parses for big messages, the parse
cache, and that neither changes a byte of what the client gets.
"""

from __future__ import annotations

import pytest_twisted  # type: ignore[import-untyped]

from tests.imap.conftest import ALICE, Client, message
from twistedmail.imap.fetch import Section
from twistedmail.imap.loading import HEADER_PREFIX
from twistedmail.imap.server import IMAPFactory
from twistedmail.interfaces import IMailAccount
from twistedmail.message import ParsedMessage

BIG_BODY = "A line of text that makes this message bigger than the prefix.\r\n" * 1000


def _big(subject: str, extra_header: bytes = b"") -> bytes:
    raw = message(subject, body=BIG_BODY)
    head, _, body = raw.partition(b"\r\n\r\n")
    return head + b"\r\n" + extra_header + b"Content-Type: text/plain\r\n\r\n" + body


async def _select(factory: IMAPFactory, account: IMailAccount, *raws: bytes) -> Client:
    for raw in raws:
        await account.append("INBOX", raw)
    client = Client(factory)
    await client.login()
    assert b"s1 OK" in await client.command(b"s1 SELECT INBOX")
    return client


def _entry(factory: IMAPFactory, uid: int, uidvalidity: int) -> ParsedMessage | None:
    return factory.parsed_cache.get((ALICE, "INBOX", uidvalidity, uid), header_only=True)


ITEMS = b"(ENVELOPE BODY.PEEK[HEADER] BODY.PEEK[HEADER.FIELDS (SUBJECT)] RFC822.HEADER)"


@pytest_twisted.ensureDeferred
async def test_header_items_of_a_big_message_read_only_its_header(
    factory: IMAPFactory, account: IMailAccount
) -> None:
    long_header = b"X-Long: " + b"y" * (HEADER_PREFIX + 10) + b"\r\n"
    raws = [_big("big"), message("small"), _big("long", long_header)]
    assert len(raws[0]) > HEADER_PREFIX
    client = await _select(factory, account, *raws)
    uidvalidity = (await account.status("INBOX")).uidvalidity
    first = await client.command(b"a1 FETCH 1:3 " + ITEMS)
    assert first.endswith(b"a1 OK FETCH completed\r\n")
    big, small, long = (_entry(factory, uid, uidvalidity) for uid in (1, 2, 3))
    assert big is not None and not big.complete
    assert small is not None and small.complete
    # A header longer than the prefix: the whole message was read.
    assert long is not None and long.complete
    # From the cache, and after a complete parse replaced the header-only one,
    # every byte is the same.
    assert await client.command(b"a1 FETCH 1:3 " + ITEMS) == first
    out = await client.command(b"a2 FETCH 1 (BODYSTRUCTURE BODY.PEEK[])")
    assert b"a2 OK" in out and raws[0] in out
    entry = _entry(factory, 1, uidvalidity)
    assert entry is not None and entry.complete
    assert await client.command(b"a1 FETCH 1:3 " + ITEMS) == first
    # What a complete parse of each message gives, item for item.
    for n, raw in enumerate(raws, 1):
        full = ParsedMessage.parse(raw)
        header = full.root.header_bytes
        subject = full.section(Section(text="HEADER.FIELDS", fields=("SUBJECT",)))
        assert (
            b"* %d FETCH (ENVELOPE %s BODY[HEADER] {%d}\r\n%s"
            b" BODY[HEADER.FIELDS (SUBJECT)] {%d}\r\n%s RFC822.HEADER {%d}\r\n%s)\r\n"
            % (n, full.envelope(), len(header), header, len(subject), subject, len(header), header)
        ) in first


@pytest_twisted.ensureDeferred
async def test_search_after_header_only_parses(factory: IMAPFactory, account: IMailAccount) -> None:
    client = await _select(factory, account, _big("alpha"), _big("beta"), message("alphabet"))
    await client.command(b"a1 FETCH 1:* ENVELOPE")
    assert await client.command(b"a2 SEARCH SUBJECT alpha") == (
        b"* SEARCH 1 3\r\na2 OK SEARCH completed\r\n"
    )
    # A body key needs the whole message, header-only parse cached or not.
    assert await client.command(b"a3 SEARCH BODY bigger SUBJECT beta") == (
        b"* SEARCH 2\r\na3 OK SEARCH completed\r\n"
    )
    assert await client.command(b"a4 SEARCH TEXT prefix") == (
        b"* SEARCH 1 2\r\na4 OK SEARCH completed\r\n"
    )


@pytest_twisted.ensureDeferred
async def test_a_cached_message_expunged_elsewhere_is_still_gone(
    factory: IMAPFactory, account: IMailAccount
) -> None:
    a = await _select(factory, account, message("m1"), _big("m2"))
    b = Client(factory)
    await b.login()
    await b.command(b"s1 SELECT INBOX")
    for items in (b"ENVELOPE", b"BODY.PEEK[]"):
        assert b"c1 OK" in await a.command(b"c1 FETCH 1:2 " + items)
    await b.command(b"b1 STORE 2 +FLAGS.SILENT (\\Deleted)")
    await b.command(b"b2 EXPUNGE")
    for items in (b"ENVELOPE", b"BODY.PEEK[]", b"BODYSTRUCTURE"):
        out = await a.command(b"a1 FETCH 2 " + items)
        assert out == b"a1 NO [EXPUNGEISSUED] Some messages were expunged meanwhile\r\n"
    # SEARCH cannot match what it cannot read.
    assert await a.command(b"a2 SEARCH SUBJECT m2") == b"* SEARCH\r\na2 OK SEARCH completed\r\n"
    assert await a.command(b"a3 NOOP") == b"* 2 EXPUNGE\r\na3 OK NOOP completed\r\n"
