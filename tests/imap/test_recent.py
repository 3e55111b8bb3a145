"""
``\\Recent`` shared out between sessions (RFC 3501 §2.3.2): the first
session told of a message, by SELECT (§6.3.1) or an untagged EXISTS
(§7.3.1), sees it as recent, and no read-write session after it does.
EXAMINE (§6.3.2) sees it too but takes nothing away.  SELECT's RECENT
count, STATUS (RECENT), SEARCH RECENT/NEW/OLD and FETCH FLAGS agree.
"""

from __future__ import annotations

from typing import Any

import pytest_twisted  # type: ignore[import-untyped]

from tests.imap.conftest import Client, message  # type: ignore[import-not-found]
from twistedmail.imap.recent import RecentTracker
from twistedmail.imap.server import IMAPFactory
from twistedmail.interfaces import IMailAccount
from twistedmail.model import FlagMode


async def _seed(account: IMailAccount, count: int = 2) -> None:
    for i in range(count):
        await account.append("INBOX", message(f"m{i + 1}"), ["\\Seen"] if i == 0 else [])


async def _client(factory: IMAPFactory) -> Client:
    client = Client(factory)
    await client.login()
    return client


def _recent_line(out: bytes) -> bytes:
    [line] = [x for x in out.split(b"\r\n") if x.endswith(b" RECENT")]
    return line


@pytest_twisted.ensureDeferred
async def test_first_select_gets_recent_the_second_does_not(
    factory: IMAPFactory, account: IMailAccount
) -> None:
    await _seed(account)
    a, b = await _client(factory), await _client(factory)
    assert _recent_line(await a.command(b"a1 SELECT INBOX")) == b"* 2 RECENT"
    assert _recent_line(await b.command(b"b1 SELECT INBOX")) == b"* 0 RECENT"
    assert await a.command(b"a2 FETCH 1:* (FLAGS)") == (
        b"* 1 FETCH (FLAGS (\\Seen \\Recent))\r\n"
        b"* 2 FETCH (FLAGS (\\Recent))\r\n"
        b"a2 OK FETCH completed\r\n"
    )
    assert await b.command(b"b2 FETCH 1:* (FLAGS)") == (
        b"* 1 FETCH (FLAGS (\\Seen))\r\n* 2 FETCH (FLAGS ())\r\nb2 OK FETCH completed\r\n"
    )
    # RFC 3501 §6.4.4: NEW is RECENT UNSEEN, OLD is NOT RECENT.
    assert await a.command(b"a3 SEARCH RECENT") == b"* SEARCH 1 2\r\na3 OK SEARCH completed\r\n"
    assert await a.command(b"a4 SEARCH NEW") == b"* SEARCH 2\r\na4 OK SEARCH completed\r\n"
    assert await a.command(b"a5 SEARCH OLD") == b"* SEARCH\r\na5 OK SEARCH completed\r\n"
    assert await b.command(b"b3 SEARCH RECENT") == b"* SEARCH\r\nb3 OK SEARCH completed\r\n"
    assert await b.command(b"b4 SEARCH NEW") == b"* SEARCH\r\nb4 OK SEARCH completed\r\n"
    assert await b.command(b"b5 SEARCH OLD") == b"* SEARCH 1 2\r\nb5 OK SEARCH completed\r\n"
    # STATUS of the selected mailbox: this session's own count.
    assert await a.command(b"a6 STATUS INBOX (RECENT)") == (
        b"* STATUS INBOX (RECENT 2)\r\na6 OK STATUS completed\r\n"
    )
    assert await b.command(b"b6 STATUS INBOX (RECENT)") == (
        b"* STATUS INBOX (RECENT 0)\r\nb6 OK STATUS completed\r\n"
    )
    # Still recent for ``a`` when it selects the mailbox again: only the
    # first notification counts, and this session had it.
    assert _recent_line(await a.command(b"a7 SELECT INBOX")) == b"* 0 RECENT"


@pytest_twisted.ensureDeferred
async def test_examine_does_not_take_recent_away(
    factory: IMAPFactory, account: IMailAccount
) -> None:
    # RFC 3501 §6.3.2: EXAMINE MUST NOT cause messages to lose \Recent.
    await _seed(account)
    a, b, c = await _client(factory), await _client(factory), await _client(factory)
    assert _recent_line(await a.command(b"a1 EXAMINE INBOX")) == b"* 2 RECENT"
    out = await a.command(b"a2 FETCH 2 (FLAGS)")
    assert out == b"* 2 FETCH (FLAGS (\\Recent))\r\na2 OK FETCH completed\r\n"
    assert _recent_line(await b.command(b"b1 SELECT INBOX")) == b"* 2 RECENT"
    assert _recent_line(await c.command(b"c1 EXAMINE INBOX")) == b"* 0 RECENT"
    # A delivery announced to the read-only session first stays recent for
    # the read-write one.
    await account.deliver(message("new"))
    assert await a.command(b"a3 NOOP") == b"* 3 EXISTS\r\n* 3 RECENT\r\na3 OK NOOP completed\r\n"
    assert await b.command(b"b2 NOOP") == b"* 3 EXISTS\r\n* 3 RECENT\r\nb2 OK NOOP completed\r\n"
    assert await c.command(b"c2 NOOP") == b"* 3 EXISTS\r\n* 0 RECENT\r\nc2 OK NOOP completed\r\n"


@pytest_twisted.ensureDeferred
async def test_exists_gives_recent_to_the_first_session_to_announce(
    factory: IMAPFactory, account: IMailAccount
) -> None:
    await _seed(account)
    a, b = await _client(factory), await _client(factory)
    await a.command(b"a1 SELECT INBOX")
    await b.command(b"b1 SELECT INBOX")
    await account.deliver(message("new"))
    assert await b.command(b"b2 NOOP") == b"* 3 EXISTS\r\n* 1 RECENT\r\nb2 OK NOOP completed\r\n"
    assert await a.command(b"a2 NOOP") == b"* 3 EXISTS\r\n* 2 RECENT\r\na2 OK NOOP completed\r\n"
    assert await b.command(b"b3 UID SEARCH RECENT") == (
        b"* SEARCH 3\r\nb3 OK UID SEARCH completed\r\n"
    )
    assert await a.command(b"a3 UID SEARCH RECENT") == (
        b"* SEARCH 1 2\r\na3 OK UID SEARCH completed\r\n"
    )
    assert await b.command(b"b4 FETCH 3 (FLAGS)") == (
        b"* 3 FETCH (FLAGS (\\Recent))\r\nb4 OK FETCH completed\r\n"
    )
    assert await a.command(b"a4 FETCH 3 (FLAGS)") == (
        b"* 3 FETCH (FLAGS ())\r\na4 OK FETCH completed\r\n"
    )


@pytest_twisted.ensureDeferred
async def test_idle_announcement_claims_recent(factory: IMAPFactory, account: IMailAccount) -> None:
    a, b = await _client(factory), await _client(factory)
    await a.command(b"a1 SELECT INBOX")
    await b.command(b"b1 SELECT INBOX")
    a.send(b"i1 IDLE\r\n")
    assert a.take() == b"+ idling\r\n"
    await account.deliver(message("pushed"))
    assert a.take() == b"* 1 EXISTS\r\n* 1 RECENT\r\n"
    assert await b.command(b"b2 NOOP") == b"* 1 EXISTS\r\n* 0 RECENT\r\nb2 OK NOOP completed\r\n"
    a.send(b"DONE\r\n")
    assert await a.wait_for(b"i1 ") == b"i1 OK IDLE terminated\r\n"


@pytest_twisted.ensureDeferred
async def test_status_counts_what_the_next_select_would_get(
    factory: IMAPFactory, account: IMailAccount
) -> None:
    await _seed(account)
    watcher, a = await _client(factory), await _client(factory)
    status = b"w1 STATUS INBOX (MESSAGES RECENT)"
    assert await watcher.command(status) == (
        b"* STATUS INBOX (MESSAGES 2 RECENT 2)\r\nw1 OK STATUS completed\r\n"
    )
    # STATUS takes nothing: the next SELECT still gets both.
    assert _recent_line(await a.command(b"a1 SELECT INBOX")) == b"* 2 RECENT"
    assert await watcher.command(status) == (
        b"* STATUS INBOX (MESSAGES 2 RECENT 0)\r\nw1 OK STATUS completed\r\n"
    )
    await a.command(b"a2 LOGOUT")
    # Delivered while nobody has it selected: recent for the next session.
    await account.deliver(message("three"))
    await account.deliver(message("four"))
    await account.deliver(message("five"))
    await account.set_flags("INBOX", [4], ["\\Deleted"], FlagMode.ADD)
    await account.expunge("INBOX", [4])
    assert await watcher.command(status) == (
        b"* STATUS INBOX (MESSAGES 4 RECENT 2)\r\nw1 OK STATUS completed\r\n"
    )
    out = await watcher.command(b'w2 LIST "" INBOX RETURN (STATUS (RECENT))')
    assert b"* STATUS INBOX (RECENT 2)\r\n" in out
    assert _recent_line(await watcher.command(b"w3 SELECT INBOX")) == b"* 2 RECENT"
    assert await watcher.command(b"w4 UID SEARCH RECENT") == (
        b"* SEARCH 3 5\r\nw4 OK UID SEARCH completed\r\n"
    )


@pytest_twisted.ensureDeferred
async def test_other_users_and_mailboxes_are_apart(
    factory: IMAPFactory, account: IMailAccount
) -> None:
    await _seed(account)
    await account.create_mailbox("Other")
    await account.append("Other", message("o1"))
    a = await _client(factory)
    await a.command(b"a1 SELECT INBOX")
    assert await a.command(b"a2 STATUS Other (RECENT)") == (
        b"* STATUS Other (RECENT 1)\r\na2 OK STATUS completed\r\n"
    )
    bob = Client(factory)
    await bob.login("bob@example.test")
    assert _recent_line(await bob.command(b"b1 SELECT INBOX")) == b"* 0 RECENT"


@pytest_twisted.ensureDeferred
async def test_rename_keeps_what_was_handed_out(
    factory: IMAPFactory, account: IMailAccount
) -> None:
    await account.create_mailbox("Work")
    await account.create_mailbox("Work/Old")
    await account.append("Work", message("w1"))
    await account.append("Work/Old", message("w2"))
    a, b = await _client(factory), await _client(factory)
    assert _recent_line(await a.command(b"a1 SELECT Work/Old")) == b"* 1 RECENT"
    assert _recent_line(await a.command(b"a2 SELECT Work")) == b"* 1 RECENT"
    await a.command(b"a3 UNSELECT")
    assert await a.command(b"a4 RENAME Work Job") == b"a4 OK RENAME completed\r\n"
    assert _recent_line(await b.command(b"b1 SELECT Job")) == b"* 0 RECENT"
    assert _recent_line(await b.command(b"b2 SELECT Job/Old")) == b"* 0 RECENT"
    # A mailbox deleted and made again starts afresh.
    await b.command(b"b3 UNSELECT")
    assert await a.command(b"a5 DELETE Job/Old") == b"a5 OK DELETE completed\r\n"
    await account.create_mailbox("Job/Old")
    await account.append("Job/Old", message("w3"))
    assert _recent_line(await b.command(b"b4 SELECT Job/Old")) == b"* 1 RECENT"


@pytest_twisted.ensureDeferred
async def test_listeners_sharing_a_tracker_share_recent(
    factory: IMAPFactory, account: IMailAccount
) -> None:
    # What service.py does for ``imap`` and ``imaps``: one tracker for both.
    await _seed(account)
    other = IMAPFactory(
        factory.settings,
        factory.portal,
        factory.hostname,
        None,
        False,
        factory.clock,
        factory.reactor,
        recent=factory.recent,
    )
    a, b = await _client(other), await _client(factory)
    assert _recent_line(await a.command(b"a1 SELECT INBOX")) == b"* 2 RECENT"
    assert _recent_line(await b.command(b"b1 SELECT INBOX")) == b"* 0 RECENT"


def test_tracker_claims_above_the_mark_only() -> None:
    tracker = RecentTracker()
    assert list(tracker.claim("u", "INBOX", 7, [1, 2, 3], read_only=True)) == [1, 2, 3]
    assert list(tracker.claim("u", "INBOX", 7, [1, 2, 3], read_only=False)) == [1, 2, 3]
    assert list(tracker.claim("u", "INBOX", 7, [1, 2, 3, 5], read_only=False)) == [5]
    assert list(tracker.claim("u", "INBOX", 7, [1, 2, 3, 5], read_only=False)) == []
    # A new UIDVALIDITY is a new mailbox (RFC 3501 §2.3.1.1).
    assert list(tracker.claim("u", "INBOX", 8, [1], read_only=False)) == [1]
    assert tracker.claimed("u", "INBOX", 7) == 5
    assert tracker.claimed("v", "INBOX", 7) == 0


def test_service_gives_imap_and_imaps_one_tracker(factory: IMAPFactory, tmp_path: Any) -> None:
    from twistedmail.accounts import Accounts
    from twistedmail.config import Config
    from twistedmail.service import ServiceContext, _imap_factory

    unused: Any = None  # fields _imap_factory does not read
    ctx = ServiceContext(
        Config(),
        factory.reactor,
        "/nonexistent",
        unused,
        Accounts.in_data_dir(str(tmp_path)),  # its login throttle folds names with it
        factory.portal,
        unused,
        unused,
        unused,
    )
    imap, imaps = _imap_factory(ctx, "imap"), _imap_factory(ctx, "imaps")
    assert isinstance(imap, IMAPFactory) and isinstance(imaps, IMAPFactory)
    assert imap.recent is imaps.recent
    assert imap.recent is not factory.recent  # one per daemon, not per process
    assert imap.throttle is imaps.throttle
