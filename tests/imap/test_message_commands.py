"""
Selected-state commands at the byte level: FETCH (RFC 3501 §6.4.5), STORE
(§6.4.6, RFC 7162 UNCHANGEDSINCE), COPY/MOVE with COPYUID (RFC 4315,
RFC 6851), EXPUNGE / UID EXPUNGE, CLOSE, UNSELECT (RFC 3691).
"""

from __future__ import annotations

import pytest_twisted  # type: ignore[import-untyped]

from tests.imap.conftest import Client, message, seen_elsewhere, turn
from twistedmail.interfaces import IMailAccount


async def _selected(client: Client, account: IMailAccount, count: int = 3) -> int:
    for i in range(count):
        await account.append("INBOX", message(f"m{i + 1}"))
    await seen_elsewhere(client.factory)
    await client.login()
    out = await client.command(b"s1 SELECT INBOX")
    assert b"s1 OK" in out
    status = await account.status("INBOX")
    return status.uidvalidity


@pytest_twisted.ensureDeferred
async def test_fetch_flags_uid_size(client: Client, account: IMailAccount) -> None:
    await _selected(client, account)
    size = len(message("m1"))
    out = await client.command(b"a1 FETCH 1:2 (FLAGS UID RFC822.SIZE)")
    assert out == (
        b"* 1 FETCH (FLAGS () UID 1 RFC822.SIZE %d)\r\n"
        b"* 2 FETCH (FLAGS () UID 2 RFC822.SIZE %d)\r\n"
        b"a1 OK FETCH completed\r\n"
    ) % (size, size)


@pytest_twisted.ensureDeferred
async def test_sequence_set_forms(client: Client, account: IMailAccount) -> None:
    await _selected(client, account)
    # "*" and reversed ranges (RFC 3501 §9 seq-range).
    out = await client.command(b"a1 FETCH *:2 UID")
    assert out == b"* 2 FETCH (UID 2)\r\n* 3 FETCH (UID 3)\r\na1 OK FETCH completed\r\n"
    out = await client.command(b"a2 FETCH 3,1 UID")
    assert out == b"* 1 FETCH (UID 1)\r\n* 3 FETCH (UID 3)\r\na2 OK FETCH completed\r\n"
    assert (await client.command(b"a3 FETCH 4 UID")).startswith(b"a3 BAD ")
    assert (await client.command(b"a4 FETCH 0 UID")).startswith(b"a4 BAD ")
    # UID FETCH: unknown UIDs are no error; UID is always reported (§6.4.8).
    out = await client.command(b"a5 UID FETCH 2:99 FLAGS")
    assert out == (
        b"* 2 FETCH (UID 2 FLAGS ())\r\n* 3 FETCH (UID 3 FLAGS ())\r\na5 OK UID FETCH completed\r\n"
    )
    assert await client.command(b"a6 UID FETCH 99 FLAGS") == b"a6 OK UID FETCH completed\r\n"


@pytest_twisted.ensureDeferred
async def test_fetch_body_sets_seen_and_peek_does_not(
    client: Client, account: IMailAccount
) -> None:
    await _selected(client, account)
    data = message("m1")
    out = await client.command(b"a1 FETCH 1 BODY.PEEK[]")
    assert out == b"* 1 FETCH (BODY[] {%d}\r\n%s)\r\na1 OK FETCH completed\r\n" % (len(data), data)
    [info, *_] = await account.messages("INBOX")
    assert "\\Seen" not in info.flags
    out = await client.command(b"a2 FETCH 1 BODY[]<0.4>")
    # RFC 3501 §6.4.5: \Seen set by the fetch is reported with it.
    assert out == b"* 1 FETCH (BODY[]<0> {4}\r\nFrom FLAGS (\\Seen))\r\na2 OK FETCH completed\r\n"
    [info, *_] = await account.messages("INBOX")
    assert "\\Seen" in info.flags
    # Not announced a second time as an unsolicited update.
    assert await client.command(b"a3 NOOP") == b"a3 OK NOOP completed\r\n"


@pytest_twisted.ensureDeferred
async def test_examine_fetch_does_not_set_seen(client: Client, account: IMailAccount) -> None:
    await account.append("INBOX", message())
    await client.login()
    await client.command(b"e1 EXAMINE INBOX")
    out = await client.command(b"a1 FETCH 1 RFC822.TEXT")
    assert out == b"* 1 FETCH (RFC822.TEXT {11}\r\nHi there.\r\n)\r\na1 OK FETCH completed\r\n"
    [info] = await account.messages("INBOX")
    assert "\\Seen" not in info.flags


@pytest_twisted.ensureDeferred
async def test_fetch_header_fields(client: Client, account: IMailAccount) -> None:
    await _selected(client, account, 1)
    out = await client.command(b"a1 FETCH 1 (BODY.PEEK[HEADER.FIELDS (Subject)])")
    assert out == (
        b"* 1 FETCH (BODY[HEADER.FIELDS (Subject)] {15}\r\nSubject: m1\r\n\r\n)\r\n"
        b"a1 OK FETCH completed\r\n"
    )


@pytest_twisted.ensureDeferred
async def test_fetch_macros(client: Client, account: IMailAccount) -> None:
    await _selected(client, account, 1)
    out = await client.command(b"a1 FETCH 1 FAST")
    assert out.startswith(b'* 1 FETCH (FLAGS () INTERNALDATE "')
    assert b"RFC822.SIZE" in out and b"ENVELOPE" not in out
    out = await client.command(b"a2 FETCH 1 ALL")
    assert b'ENVELOPE ("Mon, 7 Feb 2024 10:00:00 +0000" "m1" ' in out


@pytest_twisted.ensureDeferred
async def test_store_forms(client: Client, account: IMailAccount) -> None:
    await _selected(client, account)
    out = await client.command(b"a1 STORE 1:2 +FLAGS (\\Flagged $Work)")
    assert out == (
        b"* 1 FETCH (FLAGS (\\Flagged $Work))\r\n"
        b"* 2 FETCH (FLAGS (\\Flagged $Work))\r\n"
        b"a1 OK STORE completed\r\n"
    )
    out = await client.command(b"a2 STORE 1 -FLAGS.SILENT $Work")
    assert out == b"a2 OK STORE completed\r\n"
    out = await client.command(b"a3 UID STORE 3 FLAGS (\\Seen)")
    assert out == b"* 3 FETCH (UID 3 FLAGS (\\Seen))\r\na3 OK UID STORE completed\r\n"
    infos = await account.messages("INBOX")
    assert [set(i.flags) for i in infos] == [{"\\Flagged"}, {"\\Flagged", "$Work"}, {"\\Seen"}]
    assert (await client.command(b"a4 STORE 1 FLAGS.BOGUS x")).startswith(b"a4 BAD ")


@pytest_twisted.ensureDeferred
async def test_store_unchangedsince(client: Client, account: IMailAccount) -> None:
    # RFC 7162 §3.1.3: a message changed since the given MODSEQ is left
    # alone and reported in [MODIFIED].
    await _selected(client, account, 2)
    infos = await account.messages("INBOX")
    await account.set_flags(
        "INBOX", [2], ["\\Answered"], __import__("twistedmail.model").model.FlagMode.ADD
    )
    since = infos[1].modseq
    out = await client.command(b"a1 STORE 1:2 (UNCHANGEDSINCE %d) +FLAGS (\\Seen)" % since)
    assert out.endswith(b"a1 OK [MODIFIED 2] Conditional STORE failed for some\r\n")
    assert b"* 1 FETCH (FLAGS (\\Seen) MODSEQ (" in out


@pytest_twisted.ensureDeferred
async def test_copy_and_move_report_copyuid(client: Client, account: IMailAccount) -> None:
    await _selected(client, account)
    trash = (await account.status("Trash")).uidvalidity
    out = await client.command(b"a1 COPY 1:2 Trash")
    assert out == b"a1 OK [COPYUID %d 1:2 1:2] COPY completed\r\n" % trash
    assert (
        await client.command(b"a2 COPY 1 Nope") == b"a2 NO [TRYCREATE] Mailbox does not exist\r\n"
    )
    out = await client.command(b"a3 UID MOVE 2 Trash")
    assert out == (
        b"* OK [COPYUID %d 2 3] Moved\r\n* 2 EXPUNGE\r\na3 OK UID MOVE completed\r\n" % trash
    )
    out = await client.command(b"a4 FETCH 1:* UID")
    assert out == b"* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 3)\r\na4 OK FETCH completed\r\n"


@pytest_twisted.ensureDeferred
async def test_expunge_and_uid_expunge(client: Client, account: IMailAccount) -> None:
    await _selected(client, account, 4)
    await client.command(b"a1 STORE 1:3 +FLAGS.SILENT (\\Deleted)")
    # RFC 4315 §2.1: only the given UIDs.
    out = await client.command(b"a2 UID EXPUNGE 2")
    assert out == b"* 2 EXPUNGE\r\na2 OK UID EXPUNGE completed\r\n"
    # Highest first, each number valid when read.
    out = await client.command(b"a3 EXPUNGE")
    assert out == b"* 2 EXPUNGE\r\n* 1 EXPUNGE\r\na3 OK EXPUNGE completed\r\n"
    out = await client.command(b"a4 FETCH 1:* UID")
    assert out == b"* 1 FETCH (UID 4)\r\na4 OK FETCH completed\r\n"


@pytest_twisted.ensureDeferred
async def test_close_expunges_silently_unselect_does_not(
    client: Client, account: IMailAccount
) -> None:
    await _selected(client, account, 2)
    await client.command(b"a1 STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert await client.command(b"a2 UNSELECT") == b"a2 OK UNSELECT completed\r\n"
    assert len(await account.messages("INBOX")) == 2
    await client.command(b"a3 SELECT INBOX")
    assert await client.command(b"a4 CLOSE") == b"a4 OK CLOSE completed\r\n"
    assert len(await account.messages("INBOX")) == 1
    assert await client.command(b"a5 CHECK") == b"a5 BAD No mailbox selected\r\n"


@pytest_twisted.ensureDeferred
async def test_read_only_refuses_changes(client: Client, account: IMailAccount) -> None:
    await account.append("INBOX", message())
    await client.login()
    await client.command(b"e1 EXAMINE INBOX")
    assert (
        await client.command(b"a1 STORE 1 +FLAGS (\\Seen)")
        == b"a1 NO [READ-ONLY] Mailbox is read-only\r\n"
    )
    assert await client.command(b"a2 EXPUNGE") == b"a2 NO [READ-ONLY] Mailbox is read-only\r\n"
    assert await client.command(b"a3 MOVE 1 Trash") == b"a3 NO [READ-ONLY] Mailbox is read-only\r\n"


@pytest_twisted.ensureDeferred
async def test_star_in_empty_mailbox_names_nothing(client: Client) -> None:
    await client.login()
    await client.command(b"s1 SELECT INBOX")
    assert await client.command(b"a1 FETCH 1:* FLAGS") == b"a1 OK FETCH completed\r\n"
    assert (await client.command(b"a2 FETCH 1 FLAGS")).startswith(b"a2 BAD ")


@pytest_twisted.ensureDeferred
async def test_fetch_waits_for_a_slow_client(client: Client, account: IMailAccount) -> None:
    # The transport pauses the session's producer when its buffer is full;
    # a long FETCH stops between messages until it is resumed.
    for i in range(4):
        await account.append("INBOX", message(f"m{i}", "x" * 200_000 + "\r\n"))
    await client.login()
    await client.command(b"s1 SELECT INBOX")
    client.session.flow.pauseProducing()
    client.send(b"a1 FETCH 1:* BODY.PEEK[]\r\n")
    for _ in range(20):
        await turn()
    out = client.take()
    assert out.count(b" FETCH (") == 2 and b"a1 OK" not in out
    client.session.flow.resumeProducing()
    out = await client.wait_for(b"a1 OK")
    assert out.count(b" FETCH (") == 2


@pytest_twisted.ensureDeferred
async def test_check_uid_copy_and_append_to_selected(client: Client, account: IMailAccount) -> None:
    await _selected(client, account, 2)
    assert await client.command(b"a1 CHECK") == b"a1 OK CHECK completed\r\n"
    trash = (await account.status("Trash")).uidvalidity
    out = await client.command(b"a2 UID COPY 2,1 Trash")
    assert out == b"a2 OK [COPYUID %d 1:2 1:2] UID COPY completed\r\n" % trash
    # Copying to the selected mailbox: its EXISTS comes with the reply.
    inbox = (await account.status("INBOX")).uidvalidity
    out = await client.command(b"a3 COPY 1 INBOX")
    assert out == b"* 3 EXISTS\r\n* 1 RECENT\r\na3 OK [COPYUID %d 1 3] COPY completed\r\n" % inbox
    data = message("appended")
    out = await client.command(b"a4 APPEND INBOX (\\Recent $X) {%d+}\r\n" % len(data) + data)
    assert out == b"* 4 EXISTS\r\n* 2 RECENT\r\na4 OK [APPENDUID %d 4] APPEND completed\r\n" % inbox
    [*_, last] = await account.messages("INBOX")
    assert last.flags == {"$X"}  # \Recent cannot be set by a client


@pytest_twisted.ensureDeferred
async def test_rename_inbox_while_selected(client: Client, account: IMailAccount) -> None:
    # RFC 3501 §6.3.5: renaming INBOX moves its messages and leaves it empty.
    await _selected(client, account, 2)
    out = await client.command(b"a1 RENAME INBOX Old")
    assert out == b"* 2 EXPUNGE\r\n* 1 EXPUNGE\r\na1 OK RENAME completed\r\n"
    assert len(await account.messages("Old")) == 2
    assert await client.command(b"a2 LOGOUT") == b"* BYE Logging out\r\na2 OK LOGOUT completed\r\n"
