"""
Unsolicited responses between sessions (RFC 3501 §5.2, §7.4.1) and IDLE
(RFC 2177): each session's sequence numbers only move when it is told.
"""

from __future__ import annotations

import pytest_twisted  # type: ignore[import-untyped]

from tests.imap.conftest import Client, message, seen_elsewhere  # type: ignore[import-not-found]
from twistedmail.imap.server import IMAPFactory
from twistedmail.interfaces import IMailAccount
from twistedmail.model import FlagMode


async def _two(
    factory: IMAPFactory, account: IMailAccount, count: int = 3
) -> tuple[Client, Client]:
    for i in range(count):
        await account.append("INBOX", message(f"m{i + 1}"))
    await seen_elsewhere(factory)
    a, b = Client(factory), Client(factory)
    for c in (a, b):
        await c.login()
        await c.command(b"s1 SELECT INBOX")
    return a, b


@pytest_twisted.ensureDeferred
async def test_delivery_is_announced_at_next_command(
    factory: IMAPFactory, account: IMailAccount
) -> None:
    a, _ = await _two(factory, account)
    await account.deliver(message("new"))
    assert a.take() == b""  # nothing while no command is in progress
    assert await a.command(b"a1 NOOP") == b"* 4 EXISTS\r\n* 1 RECENT\r\na1 OK NOOP completed\r\n"
    out = await a.command(b"a2 FETCH 4 (UID FLAGS)")
    assert out == b"* 4 FETCH (UID 4 FLAGS (\\Recent))\r\na2 OK FETCH completed\r\n"


@pytest_twisted.ensureDeferred
async def test_flag_changes_reach_the_other_session(
    factory: IMAPFactory, account: IMailAccount
) -> None:
    a, b = await _two(factory, account)
    assert await b.command(b"b1 STORE 2 +FLAGS (\\Flagged)") == (
        b"* 2 FETCH (FLAGS (\\Flagged))\r\nb1 OK STORE completed\r\n"
    )
    assert (
        await a.command(b"a1 NOOP")
        == b"* 2 FETCH (UID 2 FLAGS (\\Flagged))\r\na1 OK NOOP completed\r\n"
    )
    # ...and only once.
    assert await a.command(b"a2 NOOP") == b"a2 OK NOOP completed\r\n"
    assert await b.command(b"b2 NOOP") == b"b2 OK NOOP completed\r\n"


@pytest_twisted.ensureDeferred
async def test_expunge_waits_for_a_command_that_allows_it(
    factory: IMAPFactory, account: IMailAccount
) -> None:
    a, b = await _two(factory, account)
    await b.command(b"b1 STORE 2 +FLAGS.SILENT (\\Deleted)")
    assert await b.command(b"b2 EXPUNGE") == b"* 2 EXPUNGE\r\nb2 OK EXPUNGE completed\r\n"
    # RFC 3501 §7.4.1: not after FETCH, STORE or SEARCH; message 2 keeps its
    # number and cached metadata until the client is told.
    out = await a.command(b"a1 FETCH 1:3 (UID FLAGS)")
    assert out == (
        b"* 1 FETCH (UID 1 FLAGS ())\r\n"
        b"* 2 FETCH (UID 2 FLAGS ())\r\n"
        b"* 3 FETCH (UID 3 FLAGS ())\r\n"
        b"a1 OK FETCH completed\r\n"
    )
    assert await a.command(b"a2 SEARCH ALL") == b"* SEARCH 1 2 3\r\na2 OK SEARCH completed\r\n"
    out = await a.command(b"a3 STORE 3 +FLAGS (\\Seen)")
    assert out == b"* 3 FETCH (FLAGS (\\Seen))\r\na3 OK STORE completed\r\n"
    # A body fetch of the vanished message cannot be answered.
    out = await a.command(b"a4 FETCH 2:3 BODY.PEEK[HEADER.FIELDS (SUBJECT)]")
    assert out.startswith(b"* 3 FETCH (BODY[HEADER.FIELDS (SUBJECT)] ")
    assert out.endswith(b"a4 NO [EXPUNGEISSUED] Some messages were expunged meanwhile\r\n")
    assert await a.command(b"a5 NOOP") == b"* 2 EXPUNGE\r\na5 OK NOOP completed\r\n"
    out = await a.command(b"a6 FETCH 1:* UID")
    assert out == b"* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 3)\r\na6 OK FETCH completed\r\n"


@pytest_twisted.ensureDeferred
async def test_uid_commands_may_carry_expunges(factory: IMAPFactory, account: IMailAccount) -> None:
    a, b = await _two(factory, account)
    await b.command(b"b1 STORE 1 +FLAGS.SILENT (\\Deleted)")
    await b.command(b"b2 EXPUNGE")
    out = await a.command(b"a1 UID FETCH 1:* UID")
    assert out.endswith(b"* 1 EXPUNGE\r\na1 OK UID FETCH completed\r\n")


@pytest_twisted.ensureDeferred
async def test_idle_pushes_and_ends_on_done_only(
    factory: IMAPFactory, account: IMailAccount
) -> None:
    a, b = await _two(factory, account)
    a.send(b"i1 IDLE\r\n")
    assert a.take() == b"+ idling\r\n"
    await account.deliver(message("pushed"))
    assert a.take() == b"* 4 EXISTS\r\n* 1 RECENT\r\n"
    await b.command(b"b1 STORE 1 +FLAGS (\\Seen)")
    assert a.take() == b"* 1 FETCH (UID 1 FLAGS (\\Seen))\r\n"
    await b.command(b"b2 STORE 1 +FLAGS.SILENT (\\Deleted)")
    await b.command(b"b3 EXPUNGE")
    assert a.take() == b"* 1 FETCH (UID 1 FLAGS (\\Deleted \\Seen))\r\n* 1 EXPUNGE\r\n"
    # RFC 2177: only DONE ends IDLE.
    a.send(b"i2 NOOP\r\n")
    assert a.take() == b""
    a.send(b"DONE\r\n")
    assert await a.wait_for(b"i1 ") == b"i1 OK IDLE terminated\r\n"
    assert await a.command(b"a1 NOOP") == b"a1 OK NOOP completed\r\n"


@pytest_twisted.ensureDeferred
async def test_idle_sends_pending_updates_first(
    factory: IMAPFactory, account: IMailAccount
) -> None:
    a, _ = await _two(factory, account)
    await account.set_flags("INBOX", [3], ["\\Answered"], FlagMode.ADD)
    a.send(b"i1 IDLE\r\nDONE\r\n")
    out = await a.wait_for(b"i1 ")
    assert out == b"+ idling\r\n* 3 FETCH (UID 3 FLAGS (\\Answered))\r\ni1 OK IDLE terminated\r\n"


@pytest_twisted.ensureDeferred
async def test_condstore_updates_carry_modseq(factory: IMAPFactory, account: IMailAccount) -> None:
    a, b = await _two(factory, account)
    await a.command(b"e1 ENABLE CONDSTORE")
    await b.command(b"b1 STORE 1 +FLAGS (\\Seen)")
    [info, *_] = await account.messages("INBOX")
    out = await a.command(b"a1 NOOP")
    assert (
        out
        == b"* 1 FETCH (UID 1 FLAGS (\\Seen) MODSEQ (%d))\r\na1 OK NOOP completed\r\n" % info.modseq
    )
    out = await a.command(b"a2 FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % (info.modseq - 1))
    assert (
        out == b"* 1 FETCH (FLAGS (\\Seen) MODSEQ (%d))\r\na2 OK FETCH completed\r\n" % info.modseq
    )


@pytest_twisted.ensureDeferred
async def test_selected_mailbox_deleted_elsewhere(
    factory: IMAPFactory, account: IMailAccount
) -> None:
    await account.create_mailbox("Work")
    a, b = Client(factory), Client(factory)
    await a.login()
    await b.login()
    await a.command(b"s1 SELECT Work")
    await b.command(b"d1 DELETE Work")
    a.send(b"a1 NOOP\r\n")
    assert await a.wait_for(b"BYE") == b"* BYE Selected mailbox was deleted\r\n"
    assert a.transport.disconnecting


@pytest_twisted.ensureDeferred
async def test_session_renaming_follows(factory: IMAPFactory, account: IMailAccount) -> None:
    await account.create_mailbox("Old")
    await account.append("Old", message())
    a, b = Client(factory), Client(factory)
    await a.login()
    await b.login()
    await a.command(b"s1 SELECT Old")
    await b.command(b"r1 RENAME Old New")
    out = await a.command(b"a1 FETCH 1 BODY.PEEK[HEADER.FIELDS (SUBJECT)]")
    assert out.endswith(b"a1 OK FETCH completed\r\n")


@pytest_twisted.ensureDeferred
async def test_qresync(factory: IMAPFactory, account: IMailAccount) -> None:
    # RFC 7162 §3.2: VANISHED replaces EXPUNGE; SELECT (QRESYNC ...) reports
    # what vanished and what changed since the client's MODSEQ.
    a, b = await _two(factory, account, 5)
    status = await account.status("INBOX")
    assert (
        await a.command(b"q0 SELECT INBOX (QRESYNC (1 1))")
    ) == b"q0 BAD QRESYNC is not enabled\r\n"
    assert (
        await a.command(b"e1 ENABLE QRESYNC") == b"* ENABLED QRESYNC\r\ne1 OK ENABLE completed\r\n"
    )
    await a.command(b"s2 SELECT INBOX")
    await b.command(b"b1 STORE 2,4 +FLAGS.SILENT (\\Deleted)")
    await b.command(b"b2 EXPUNGE")
    assert await a.command(b"a1 NOOP") == b"* VANISHED 2,4\r\na1 OK NOOP completed\r\n"
    await b.command(b"b3 STORE 3 +FLAGS (\\Seen)")  # seq 3 is UID 5 for b now
    [*_, five] = await account.messages("INBOX")
    out = await a.command(
        b"a2 SELECT INBOX (QRESYNC (%d %d 1:5))" % (status.uidvalidity, status.highestmodseq)
    )
    assert out.startswith(b"* OK [CLOSED] Previous mailbox closed\r\n")
    assert (
        b"* VANISHED (EARLIER) 2,4\r\n* 3 FETCH (UID 5 FLAGS (\\Seen) MODSEQ (%d))\r\n"
        % five.modseq
        in out
    )
    out = await a.command(
        b"a3 UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d VANISHED)" % status.highestmodseq
    )
    assert out == (
        b"* VANISHED (EARLIER) 2,4\r\n"
        b"* 3 FETCH (UID 5 FLAGS (\\Seen) MODSEQ (%d))\r\na3 OK UID FETCH completed\r\n"
        % five.modseq
    )
    assert (await a.command(b"a4 FETCH 1 (FLAGS) (CHANGEDSINCE 1 VANISHED)")).startswith(b"a4 BAD ")
