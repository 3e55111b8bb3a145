"""
Authenticated-state commands at the byte level: LIST/LSUB (RFC 3501 §6.3.8-9,
RFC 5258, RFC 5819, RFC 6154, RFC 3348), CREATE/DELETE/RENAME, SUBSCRIBE,
STATUS, APPEND (RFC 4315 APPENDUID, TRYCREATE), SELECT/EXAMINE.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest_twisted  # type: ignore[import-untyped]

from tests.imap.conftest import Client, message  # type: ignore[import-not-found]
from twistedmail.interfaces import IMailAccount


@pytest_twisted.ensureDeferred
async def test_list_all_with_special_use_and_children(client: Client) -> None:
    await client.login()
    await client.command(b"c1 CREATE Work/Projects")
    out = await client.command(b'a1 LIST "" *')
    assert out == (
        b'* LIST (\\HasNoChildren) "/" INBOX\r\n'
        b'* LIST (\\HasNoChildren \\Archive) "/" Archive\r\n'
        b'* LIST (\\HasNoChildren \\Drafts) "/" Drafts\r\n'
        b'* LIST (\\HasNoChildren \\Junk) "/" Junk\r\n'
        b'* LIST (\\HasNoChildren \\Sent) "/" Sent\r\n'
        b'* LIST (\\HasNoChildren \\Trash) "/" Trash\r\n'
        b'* LIST (\\HasChildren) "/" Work\r\n'
        b'* LIST (\\HasNoChildren) "/" Work/Projects\r\n'
        b"a1 OK LIST completed\r\n"
    )


@pytest_twisted.ensureDeferred
async def test_list_percent_and_reference(client: Client) -> None:
    await client.login()
    await client.command(b"c1 CREATE Work/Projects/Deep")
    out = await client.command(b'a1 LIST "Work/" %')
    assert out == b'* LIST (\\HasChildren) "/" Work/Projects\r\na1 OK LIST completed\r\n'
    out = await client.command(b'a2 LIST "" inbox')
    assert out == b'* LIST (\\HasNoChildren) "/" INBOX\r\na2 OK LIST completed\r\n'


@pytest_twisted.ensureDeferred
async def test_list_empty_pattern_gives_delimiter(client: Client) -> None:
    await client.login()
    out = await client.command(b'a1 LIST "" ""')
    assert out == b'* LIST (\\Noselect) "/" ""\r\na1 OK LIST completed\r\n'


@pytest_twisted.ensureDeferred
async def test_list_non_ascii_name_is_modified_utf7(client: Client) -> None:
    await client.login()
    assert await client.command(b"a1 CREATE Entw&APw-rfe") == b"a1 OK CREATE completed\r\n"
    out = await client.command(b'a2 LIST "" Entw*')
    assert out == b'* LIST (\\HasNoChildren) "/" Entw&APw-rfe\r\na2 OK LIST completed\r\n'


@pytest_twisted.ensureDeferred
async def test_list_extended_subscribed_and_status(client: Client) -> None:
    await client.login()
    await client.command(b"s1 SUBSCRIBE INBOX")
    await client.command(b"s2 SUBSCRIBE Gone")
    await client.command(b"p1 APPEND INBOX {%d+}\r\n" % len(message()) + message())
    out = await client.command(
        b'a1 LIST (SUBSCRIBED) "" (INBOX Gone) RETURN (STATUS (MESSAGES UNSEEN))'
    )
    assert out == (
        b'* LIST (\\HasNoChildren \\Subscribed) "/" INBOX\r\n'
        b"* STATUS INBOX (MESSAGES 1 UNSEEN 1)\r\n"
        b'* LIST (\\NonExistent \\Subscribed) "/" Gone\r\n'
        b"a1 OK LIST completed\r\n"
    )
    out = await client.command(b'a2 LIST (SPECIAL-USE) "" *')
    assert b"INBOX" not in out and b'\\Sent) "/" Sent' in out
    out = await client.command(b'a3 LIST "" (INBOX Sent) RETURN (SUBSCRIBED)')
    assert out == (
        b'* LIST (\\HasNoChildren \\Subscribed) "/" INBOX\r\n'
        b'* LIST (\\HasNoChildren \\Subscribed \\Sent) "/" Sent\r\n'
        b"a3 OK LIST completed\r\n"
    )


@pytest_twisted.ensureDeferred
async def test_lsub(client: Client) -> None:
    await client.login()
    await client.command(b"c1 CREATE a/b")
    await client.command(b"s1 SUBSCRIBE a/b")
    assert (
        await client.command(b'a1 LSUB "" a*') == b'* LSUB () "/" a/b\r\na1 OK LSUB completed\r\n'
    )
    # RFC 3501 §6.3.9: an unsubscribed parent matched by % shows as \Noselect.
    assert (
        await client.command(b'a2 LSUB "" a%')
        == b'* LSUB (\\Noselect) "/" a\r\na2 OK LSUB completed\r\n'
    )
    await client.command(b"u1 UNSUBSCRIBE a/b")
    assert await client.command(b'a3 LSUB "" a*') == b"a3 OK LSUB completed\r\n"


@pytest_twisted.ensureDeferred
async def test_create_delete_rename_errors(client: Client) -> None:
    await client.login()
    assert await client.command(b"a1 CREATE Foo/") == b"a1 OK CREATE completed\r\n"
    assert (
        await client.command(b"a2 CREATE Foo")
        == b"a2 NO [ALREADYEXISTS] Mailbox already exists\r\n"
    )
    assert (
        await client.command(b"a3 CREATE inbox") == b"a3 NO [ALREADYEXISTS] INBOX always exists\r\n"
    )
    assert await client.command(b"a4 CREATE a//b") == b"a4 NO [CANNOT] Invalid mailbox name\r\n"
    assert await client.command(b"a5 RENAME Foo Bar") == b"a5 OK RENAME completed\r\n"
    assert (
        await client.command(b"a6 DELETE Foo") == b"a6 NO [NONEXISTENT] Mailbox does not exist\r\n"
    )
    assert (
        await client.command(b"a7 DELETE INBOX")
        == b"a7 NO [CANNOT] Operation not allowed on this mailbox\r\n"
    )
    assert await client.command(b"a8 DELETE Bar") == b"a8 OK DELETE completed\r\n"
    await client.command(b"c9 CREATE P/C")
    assert await client.command(b"a9 DELETE P") == (
        b"a9 NO [HASCHILDREN] Mailbox has children; delete them first\r\n"
    )


@pytest_twisted.ensureDeferred
async def test_create_special_use(client: Client, account: IMailAccount) -> None:
    # RFC 6154 §3.
    await client.login()
    assert (
        await client.command(b"a1 CREATE Everything (USE (\\All))") == b"a1 OK CREATE completed\r\n"
    )
    assert await client.command(b"a2 CREATE X (USE (\\Bogus))") == (
        b"a2 NO [USEATTR] Unsupported special-use attribute\r\n"
    )
    out = await client.command(b'a3 LIST "" Everything')
    assert out == b'* LIST (\\HasNoChildren \\All) "/" Everything\r\na3 OK LIST completed\r\n'


@pytest_twisted.ensureDeferred
async def test_status(client: Client) -> None:
    await client.login()
    await client.command(b"p1 APPEND INBOX (\\Seen) {%d+}\r\n" % len(message()) + message())
    await client.command(b"p2 APPEND INBOX {%d+}\r\n" % len(message()) + message())
    out = await client.command(b"a1 STATUS INBOX (MESSAGES RECENT UNSEEN UIDNEXT)")
    assert (
        out
        == b"* STATUS INBOX (MESSAGES 2 RECENT 2 UNSEEN 1 UIDNEXT 3)\r\na1 OK STATUS completed\r\n"
    )
    assert await client.command(b"a2 STATUS Nope (MESSAGES)") == (
        b"a2 NO [NONEXISTENT] Mailbox does not exist\r\n"
    )
    assert (await client.command(b"a3 STATUS INBOX (BOGUS)")).startswith(b"a3 BAD ")


@pytest_twisted.ensureDeferred
async def test_append_appenduid_and_trycreate(client: Client, account: IMailAccount) -> None:
    await client.login()
    data = message()
    client.send(b'a1 APPEND INBOX (\\Flagged) " 7-Feb-2024 10:00:00 +0100" {%d}\r\n' % len(data))
    assert client.take() == b"+ Ready for literal data\r\n"
    out = await client.finish(data, b"a1")
    status = await account.status("INBOX")
    assert out == b"a1 OK [APPENDUID %d 1] APPEND completed\r\n" % status.uidvalidity
    assert await account.fetch("INBOX", 1) == data
    [info] = await account.messages("INBOX")
    assert info.flags == {"\\Flagged"}
    assert info.internal_date == datetime(2024, 2, 7, 9, 0, tzinfo=UTC)
    out = await client.command(b"a2 APPEND Missing {%d+}\r\n" % len(data) + data)
    assert out == b"a2 NO [TRYCREATE] Mailbox does not exist\r\n"


@pytest_twisted.ensureDeferred
async def test_append_too_big_refused_before_reading(factory) -> None:
    client = Client(factory)
    await client.login()
    client.send(b"a1 APPEND INBOX {%d}\r\n" % (factory.settings.max_literal_size + 1))
    # RFC 7889: NO [TOOBIG], and no continuation.
    assert client.take() == b"a1 NO [TOOBIG] Literal too large\r\n"


@pytest_twisted.ensureDeferred
async def test_select_responses(client: Client, account: IMailAccount) -> None:
    await client.login()
    await account.append("INBOX", message("one"), ["\\Seen"])
    await account.append("INBOX", message("two"), ["$Important"])
    status = await account.status("INBOX")
    out = await client.command(b"a1 SELECT INBOX")
    assert out == (
        b"* FLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen $Important)\r\n"
        b"* OK [PERMANENTFLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen $Important \\*)]"
        b" Flags permitted\r\n"
        b"* 2 EXISTS\r\n"
        b"* 2 RECENT\r\n"  # the first session told of them (RFC 3501 §2.3.2)
        b"* OK [UNSEEN 2] First unseen\r\n"
        b"* OK [UIDVALIDITY %d] UIDs valid\r\n"
        b"* OK [UIDNEXT 3] Predicted next UID\r\n"
        b"* OK [HIGHESTMODSEQ %d] Highest\r\n"
        b"a1 OK [READ-WRITE] SELECT completed\r\n"
    ) % (status.uidvalidity, status.highestmodseq)
    out = await client.command(b"a2 EXAMINE INBOX")
    assert b"* OK [PERMANENTFLAGS ()] Flags permitted\r\n" in out
    assert out.endswith(b"a2 OK [READ-ONLY] EXAMINE completed\r\n")
    # A failed SELECT leaves nothing selected (RFC 3501 §6.3.1).
    assert (
        await client.command(b"a3 SELECT Nope") == b"a3 NO [NONEXISTENT] Mailbox does not exist\r\n"
    )
    assert await client.command(b"a4 FETCH 1 FLAGS") == b"a4 BAD No mailbox selected\r\n"


@pytest_twisted.ensureDeferred
async def test_list_recursivematch_childinfo(client: Client) -> None:
    # RFC 5258 §3.5: a parent that is not subscribed but has a subscribed
    # child is returned with CHILDINFO.
    await client.login()
    await client.command(b"c1 CREATE Lists/Python")
    await client.command(b"s1 SUBSCRIBE Lists/Python")
    out = await client.command(b'a1 LIST (SUBSCRIBED RECURSIVEMATCH) "" Lists')
    assert out == (
        b'* LIST (\\HasChildren) "/" Lists ("CHILDINFO" ("SUBSCRIBED"))\r\na1 OK LIST completed\r\n'
    )


@pytest_twisted.ensureDeferred
async def test_condstore_select_status_and_fetch(client: Client, account: IMailAccount) -> None:
    # RFC 7162 §3.1.8 SELECT (CONDSTORE), §3.1.4 FETCH MODSEQ.
    await account.append("INBOX", message())
    await client.login()
    status = await account.status("INBOX")
    out = await client.command(b"a1 STATUS INBOX (HIGHESTMODSEQ)")
    assert (
        out
        == b"* STATUS INBOX (HIGHESTMODSEQ %d)\r\na1 OK STATUS completed\r\n" % status.highestmodseq
    )
    out = await client.command(b"a2 SELECT INBOX (CONDSTORE)")
    assert b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % status.highestmodseq in out
    [info] = await account.messages("INBOX")
    out = await client.command(b"a3 FETCH 1 (FLAGS)")
    assert out == (
        b"* 1 FETCH (FLAGS (\\Recent) MODSEQ (%d))\r\na3 OK FETCH completed\r\n" % info.modseq
    )
    out = await client.command(b"a4 STORE 1 +FLAGS (\\Seen)")
    [info] = await account.messages("INBOX")
    assert out == (
        b"* 1 FETCH (FLAGS (\\Seen \\Recent) MODSEQ (%d))\r\na4 OK STORE completed\r\n"
        % info.modseq
    )
    out = await client.command(b"a5 UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % info.modseq)
    assert out == b"a5 OK UID FETCH completed\r\n"
