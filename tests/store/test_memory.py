"""
What only the in-memory store offers: an injected clock and size limits, so
protocol tests can pin dates and provoke `QuotaExceeded` with a real store.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet.task import Clock

from twistedmail.interfaces import QuotaExceeded
from twistedmail.model import FlagMode, MessagesAdded
from twistedmail.store.memory import Limits, MemoryStore

ALICE = "alice@example.test"


@pytest_twisted.ensureDeferred
async def test_clock_gives_internal_dates_and_seeds_uidvalidity():
    clock = Clock()
    clock.advance(1_700_000_000.75)
    store = MemoryStore(clock)
    account = await store.account(ALICE)
    appended = await account.deliver(b"Subject: x\r\n\r\n")
    assert appended.info.internal_date == datetime.fromtimestamp(1_700_000_000, UTC)
    assert appended.uidvalidity >= 1_700_000_000


@pytest_twisted.ensureDeferred
async def test_uidvalidity_strictly_increases_even_when_the_clock_stands_still():
    store = MemoryStore(Clock())
    highest = 0
    for user in ("a@example.test", "b@example.test"):
        account = await store.account(user)
        defaults = [
            (await account.status(i.name)).uidvalidity for i in await account.list_mailboxes()
        ]
        assert len(set(defaults)) == len(defaults)
        assert min(defaults) > highest
        highest = max(defaults)
        for _ in range(3):
            await account.create_mailbox("Again")
            uidvalidity = (await account.status("Again")).uidvalidity
            assert uidvalidity > highest
            highest = uidvalidity
            await account.delete_mailbox("Again")


@pytest_twisted.ensureDeferred
async def test_message_size_limit():
    store = MemoryStore(limits=Limits(max_message_size=10))
    account = await store.account(ALICE)
    events: list[object] = []
    account.listen(events.append)
    await account.append("INBOX", b"x" * 10)
    with pytest.raises(QuotaExceeded):
        await account.append("INBOX", b"x" * 11)
    with pytest.raises(QuotaExceeded):
        await account.deliver(b"x" * 11)
    assert (await account.status("INBOX")).messages == 1
    assert len(events) == 1


@pytest_twisted.ensureDeferred
async def test_account_quota_counts_every_mailbox_and_copies():
    store = MemoryStore(limits=Limits(quota=25))
    account = await store.account(ALICE)
    first = await account.append("INBOX", b"x" * 10)
    await account.append("Sent", b"y" * 10)
    with pytest.raises(QuotaExceeded):
        await account.append("Drafts", b"z" * 6)
    with pytest.raises(QuotaExceeded):
        await account.copy("INBOX", [first.info.uid], "Archive")
    moved = await account.move("INBOX", [first.info.uid], "Archive")  # no growth
    assert len(moved.mapping) == 1
    other = await store.account("bob@example.test")
    await other.deliver(b"b" * 20)  # the quota is per account


@pytest_twisted.ensureDeferred
async def test_close_forgets_accounts():
    store = MemoryStore()
    account = await store.account(ALICE)
    await account.deliver(b"Subject: x\r\n\r\n")
    await store.close()
    fresh = await store.account(ALICE)
    assert fresh is not account
    assert (await fresh.status("INBOX")).messages == 0


@pytest_twisted.ensureDeferred
async def test_large_mailbox_listing_is_in_uid_order_after_churn():
    """UID order comes from insertion order; expunges and moves must not disturb it."""
    store = MemoryStore()
    account = await store.account(ALICE)
    events: list[object] = []
    account.listen(events.append)
    uids = [(await account.deliver(b"m%d" % n)).info.uid for n in range(2000)]
    await account.set_flags("INBOX", uids[::3], ["\\Deleted"], FlagMode.ADD)
    await account.expunge("INBOX")
    await account.copy("INBOX", uids[1::3], "INBOX")
    listed = [m.uid for m in await account.messages("INBOX")]
    assert listed == sorted(listed)
    assert len(listed) == len(set(listed))
    assert sum(isinstance(e, MessagesAdded) for e in events) == 2001
