"""
Conformance: change events, listeners and concurrent deliveries, for every backend.

IMAP IDLE and HTTP push are only as good as these events: every committed
change, whoever made it, reaches every listener before the caller hears back.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import pytest
import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher

from twistedmail.interfaces import IMailAccount, MailboxExists, MailError, NoSuchMailbox
from twistedmail.model import (
    DELETED,
    SEEN,
    Appended,
    ChangeEvent,
    FlagMode,
    FlagsChanged,
    MailboxCreated,
    MailboxDeleted,
    MessagesAdded,
    MessagesExpunged,
)


def message(n: int = 1) -> bytes:
    return f"Subject: message {n}\r\nMessage-ID: <{n}@example.test>\r\n\r\nBody {n}\r\n".encode()


@pytest.fixture
def logged() -> Iterator[list[LogEvent]]:
    seen: list[LogEvent] = []
    observer = cast(ILogObserver, seen.append)
    globalLogPublisher.addObserver(observer)
    yield seen
    globalLogPublisher.removeObserver(observer)


@pytest_twisted.ensureDeferred
async def test_append_event_reaches_two_listeners(account, events):
    second: list[ChangeEvent] = []
    stop = account.listen(second.append)
    appended = await account.append("INBOX", message(), [SEEN])
    expected = MessagesAdded("INBOX", appended.uidvalidity, (appended.info,))
    assert events == [expected]
    assert second == [expected]
    stop()


@pytest_twisted.ensureDeferred
async def test_events_are_emitted_before_the_deferred_fires(account, events):
    """So that a session answering OK already knows what it did (and IDLE peers too)."""
    seen_at_fire: list[int] = []

    def note(result: object) -> object:
        seen_at_fire.append(len(events))
        return result

    d = account.append("INBOX", message())
    d.addCallback(note)
    await d
    assert seen_at_fire == [1]


@pytest_twisted.ensureDeferred
async def test_events_reach_listeners_of_every_session(store, account):
    """Another session (same account object) sees a delivery made elsewhere."""
    other_session = await store.account("alice@example.test")
    seen: list[ChangeEvent] = []
    stop = other_session.listen(seen.append)
    delivered = await account.deliver(message())
    assert seen == [MessagesAdded("INBOX", delivered.uidvalidity, (delivered.info,))]
    stop()


@pytest_twisted.ensureDeferred
async def test_other_accounts_events_are_not_seen(store, events):
    bob = await store.account("bob@example.test")
    await bob.deliver(message())
    await bob.create_mailbox("Bob's")
    assert events == []


@pytest_twisted.ensureDeferred
async def test_raising_listener_is_logged_and_others_still_run(account, logged):
    def broken(event: ChangeEvent) -> None:
        raise RuntimeError("listener bug")

    after: list[ChangeEvent] = []
    stop_broken = account.listen(broken)
    stop_after = account.listen(after.append)
    appended = await account.append("INBOX", message())
    assert after == [MessagesAdded("INBOX", appended.uidvalidity, (appended.info,))]
    failures = [e for e in logged if "log_failure" in e]
    assert len(failures) == 1
    assert failures[0]["log_failure"].check(RuntimeError)
    assert (await account.status("INBOX")).messages == 1
    stop_broken()
    stop_after()


@pytest_twisted.ensureDeferred
async def test_unlisten_stops_events(account):
    seen: list[ChangeEvent] = []
    stop = account.listen(seen.append)
    await account.append("INBOX", message())
    stop()
    stop()  # twice is harmless
    await account.append("INBOX", message())
    assert len(seen) == 1


@pytest_twisted.ensureDeferred
async def test_flag_events_carry_new_state_of_changed_messages_only(account, events):
    first, second = [(await account.append("INBOX", message(n))).info for n in range(2)]
    await account.set_flags("INBOX", [first.uid], [SEEN], FlagMode.ADD)
    del events[:]
    result = await account.set_flags("INBOX", [first.uid, second.uid], [SEEN], FlagMode.ADD)
    status = await account.status("INBOX")
    assert events == [FlagsChanged("INBOX", status.uidvalidity, result.changed)]
    assert [m.uid for m in result.changed] == [second.uid]


@pytest_twisted.ensureDeferred
async def test_expunge_event_carries_uids_and_highestmodseq(account, events):
    uids = [(await account.append("INBOX", message(n))).info.uid for n in range(3)]
    await account.set_flags("INBOX", uids[1:], [DELETED], FlagMode.ADD)
    del events[:]
    await account.expunge("INBOX")
    status = await account.status("INBOX")
    assert events == [
        MessagesExpunged("INBOX", status.uidvalidity, tuple(uids[1:]), status.highestmodseq)
    ]


@pytest_twisted.ensureDeferred
async def test_copy_and_move_events(account, events):
    await account.create_mailbox("Dest")
    uids = [(await account.append("INBOX", message(n))).info.uid for n in range(2)]
    del events[:]
    copied = await account.copy("INBOX", uids[:1], "Dest")
    dest = await account.messages("Dest")
    assert events == [MessagesAdded("Dest", copied.uidvalidity, (dest[0],))]
    del events[:]
    moved = await account.move("INBOX", uids, "Dest")
    dest = await account.messages("Dest")
    inbox = await account.status("INBOX")
    assert events == [
        MessagesAdded("Dest", moved.uidvalidity, tuple(dest[1:])),
        MessagesExpunged("INBOX", inbox.uidvalidity, tuple(uids), inbox.highestmodseq),
    ]


@pytest_twisted.ensureDeferred
async def test_mailbox_events(account, events):
    await account.create_mailbox("Box")
    await account.delete_mailbox("Box")
    assert events == [MailboxCreated("Box"), MailboxDeleted("Box")]


@pytest_twisted.ensureDeferred
async def test_failed_operations_emit_nothing(account, events):
    with pytest.raises(MailboxExists):
        await account.create_mailbox("Sent")
    with pytest.raises(NoSuchMailbox):
        await account.append("Missing", message())
    with pytest.raises(NoSuchMailbox):
        await account.copy("INBOX", [1], "Missing")
    assert events == []


@pytest_twisted.ensureDeferred
async def test_concurrent_deliveries_all_land_with_distinct_uids(account, events):
    """Many SMTP sessions finishing DATA at once: nothing lost, no UID shared."""
    count = 40
    pending: list[Deferred[Appended]] = [account.deliver(message(n)) for n in range(count)]
    results = await gatherResults(pending)
    uids = [r.info.uid for r in results]
    assert len(set(uids)) == count
    listed = await account.messages("INBOX")
    assert sorted(uids) == [m.uid for m in listed]
    bodies = {await account.fetch("INBOX", r.info.uid) for r in results}
    assert bodies == {message(n) for n in range(count)}
    added = [m.uid for e in events if isinstance(e, MessagesAdded) for m in e.messages]
    assert sorted(added) == sorted(uids)


@pytest_twisted.ensureDeferred
async def test_concurrent_appends_to_several_mailboxes(account):
    await account.create_mailbox("Other")
    pending: list[Deferred[Appended]] = []
    for n in range(20):
        pending.append(account.append("INBOX", message(n), [SEEN]))
        pending.append(account.append("Other", message(n)))
    await gatherResults(pending)
    assert (await account.status("INBOX")).messages == 20
    assert (await account.status("Other")).unseen == 20


def _error_calls(account: IMailAccount) -> list[Deferred[Any]]:
    return [
        account.create_mailbox("INBOX"),
        account.delete_mailbox("INBOX"),
        account.delete_mailbox("Missing"),
        account.rename_mailbox("Missing", "x"),
        account.subscribe("a//b"),
        account.status("Missing"),
        account.messages("../x"),
        account.append("Missing", b"x"),
        account.fetch("INBOX", 12345),
        account.set_flags("Missing", [1], [SEEN], FlagMode.ADD),
        account.expunge("Missing"),
        account.copy("Missing", [1], "INBOX"),
        account.move("INBOX", [1], "INBOX"),
    ]


@pytest_twisted.ensureDeferred
async def test_errors_arrive_as_failed_deferreds_never_raised(account):
    """The contract's first rule: calling never raises; the Deferred fails."""
    for d in _error_calls(account):
        assert isinstance(d, Deferred)
        with pytest.raises(MailError):
            await d


@pytest_twisted.ensureDeferred
async def test_listener_sees_the_committed_state(account):
    """A listener may call back into the account; the change is already visible."""
    pending: list[Deferred[Any]] = []

    def look(event: ChangeEvent) -> None:
        if isinstance(event, MessagesAdded):
            pending.append(account.status(event.mailbox))
            pending.append(account.fetch(event.mailbox, event.messages[0].uid))

    stop = account.listen(look)
    await account.append("INBOX", message(7))
    stop()
    status, data = await gatherResults(pending)
    assert status.messages == 1
    assert data == message(7)


@pytest_twisted.ensureDeferred
async def test_concurrent_moves_of_the_same_messages_neither_duplicate_nor_lose(account):
    """Two sessions moving the same mail at once: each message ends up in exactly one place."""
    await account.create_mailbox("A")
    await account.create_mailbox("B")
    uids = [(await account.append("INBOX", message(n))).info.uid for n in range(10)]
    to_a = account.move("INBOX", uids, "A")
    to_b = account.move("INBOX", uids[::-1], "B")
    results = await gatherResults([to_a, to_b])
    moved = [old for result in results for old, _ in result.mapping]
    assert sorted(moved) == uids
    assert await account.messages("INBOX") == []
    in_a = [await account.fetch("A", m.uid) for m in await account.messages("A")]
    in_b = [await account.fetch("B", m.uid) for m in await account.messages("B")]
    assert sorted(in_a + in_b) == sorted(message(n) for n in range(10))


@pytest_twisted.ensureDeferred
async def test_concurrent_creates_of_one_name_succeed_once(account):
    attempts = [account.create_mailbox("Race") for _ in range(5)]
    outcomes = []
    for d in attempts:
        try:
            await d
            outcomes.append("created")
        except MailboxExists:
            outcomes.append("exists")
    assert sorted(outcomes) == ["created"] + ["exists"] * 4
    assert (await account.status("Race")).messages == 0
