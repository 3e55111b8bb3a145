"""
Conformance: what a persistent backend keeps across a restart.

Skipped for backends that keep nothing (the ``reopen`` fixture decides).
Clients cache UIDs per UIDVALIDITY and MODSEQs for CONDSTORE resync, so a
restart must not reuse a UID or step a MODSEQ back.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest_twisted  # type: ignore[import-untyped]

from twistedmail.model import DELETED, SEEN, FlagMode, SpecialUse

WHEN = datetime(2022, 1, 2, 3, 4, 5, tzinfo=UTC)


def message(n: int = 1) -> bytes:
    return f"Subject: kept {n}\r\n\r\nBody {n}\r\n".encode()


@pytest_twisted.ensureDeferred
async def test_messages_survive_reopen(account, reopen):
    await account.append("INBOX", message(1), [SEEN, "$Work"], WHEN)
    await account.append("INBOX", b"Subject: 8bit \xe4\xf6\xfc\r\n\r\n\x00\xff\r\n", [], WHEN)
    status = await account.status("INBOX")
    listed = await account.messages("INBOX")
    account = await reopen()
    assert await account.status("INBOX") == status
    assert await account.messages("INBOX") == listed
    assert await account.fetch("INBOX", listed[0].uid) == message(1)
    assert await account.fetch("INBOX", listed[1].uid, 0, 18) == b"Subject: 8bit \xe4\xf6\xfc\r"


@pytest_twisted.ensureDeferred
async def test_uids_are_not_reused_after_expunge_and_reopen(account, reopen):
    uids = [(await account.append("INBOX", message(n))).info.uid for n in range(3)]
    await account.set_flags("INBOX", uids[1:], [DELETED], FlagMode.ADD)
    await account.expunge("INBOX")
    uidvalidity = (await account.status("INBOX")).uidvalidity
    account = await reopen()
    again = await account.append("INBOX", message(9))
    assert again.uidvalidity == uidvalidity
    assert again.info.uid > uids[-1]


@pytest_twisted.ensureDeferred
async def test_modseq_keeps_rising_after_reopen(account, reopen):
    uid = (await account.append("INBOX", message())).info.uid
    await account.set_flags("INBOX", [uid], [SEEN], FlagMode.ADD)
    highest = (await account.status("INBOX")).highestmodseq
    account = await reopen()
    assert (await account.status("INBOX")).highestmodseq == highest
    result = await account.set_flags("INBOX", [uid], ["$Later"], FlagMode.ADD)
    assert result.changed[0].modseq > highest
    result = await account.set_flags(
        "INBOX", [uid], [SEEN], FlagMode.REMOVE, unchanged_since=highest
    )
    assert result.failed == (uid,)


@pytest_twisted.ensureDeferred
async def test_mailboxes_and_subscriptions_survive_reopen(account, reopen):
    await account.create_mailbox("Entwürfe/Ärger")
    await account.create_mailbox("Everything", SpecialUse.ALL)
    await account.create_mailbox("with.dots/日本語")
    await account.subscribe("Entwürfe/Ärger")
    await account.subscribe("Not/There")
    await account.unsubscribe("Junk")
    await account.delete_mailbox("Junk")
    listed = await account.list_mailboxes()
    subscribed = await account.subscriptions()
    statuses = {i.name: await account.status(i.name) for i in listed}
    account = await reopen()
    assert await account.list_mailboxes() == listed
    assert await account.subscriptions() == subscribed
    assert {i.name: await account.status(i.name) for i in listed} == statuses


@pytest_twisted.ensureDeferred
async def test_rename_survives_reopen(account, reopen):
    await account.create_mailbox("a/b")
    uid = (await account.append("a/b", message(), [SEEN])).info.uid
    await account.subscribe("a/b")
    status = await account.status("a/b")
    await account.rename_mailbox("a", "z")
    account = await reopen()
    names = [i.name for i in await account.list_mailboxes()]
    assert "z/b" in names and "a" not in names and "a/b" not in names
    assert await account.status("z/b") == status
    assert await account.fetch("z/b", uid) == message()
    assert "z/b" in await account.subscriptions()


@pytest_twisted.ensureDeferred
async def test_recreated_mailbox_uidvalidity_differs_across_reopen(account, reopen):
    await account.create_mailbox("Again")
    before = (await account.status("Again")).uidvalidity
    account = await reopen()
    await account.delete_mailbox("Again")
    await account.create_mailbox("Again")
    after = (await account.status("Again")).uidvalidity
    assert after != before
    account = await reopen()
    assert (await account.status("Again")).uidvalidity == after


@pytest_twisted.ensureDeferred
async def test_moves_and_copies_survive_reopen(account, reopen):
    await account.create_mailbox("Dest")
    uids = [(await account.append("INBOX", message(n), [], WHEN)).info.uid for n in range(3)]
    await account.copy("INBOX", uids[:1], "Dest")
    await account.move("INBOX", uids[1:], "Dest")
    inbox = await account.messages("INBOX")
    dest = await account.messages("Dest")
    account = await reopen()
    assert await account.messages("INBOX") == inbox
    assert await account.messages("Dest") == dest
    assert [await account.fetch("Dest", m.uid) for m in dest] == [message(n) for n in range(3)]


@pytest_twisted.ensureDeferred
async def test_removed_account_stays_removed_after_reopen(store, account, reopen):
    await account.create_mailbox("Gone")
    await store.remove_account("alice@example.test")
    account = await reopen()
    assert "Gone" not in [i.name for i in await account.list_mailboxes()]


@pytest_twisted.ensureDeferred
async def test_many_keywords_survive_reopen(account, reopen):
    keywords = {f"kw{n:02d}" for n in range(40)} | {"$Forwarded", "$MDNSent"}
    uid = (await account.append("INBOX", message(), keywords)).info.uid
    await account.set_flags("INBOX", [uid], ["kw00", "kw39"], FlagMode.REMOVE)
    listed = await account.messages("INBOX")
    account = await reopen()
    assert await account.messages("INBOX") == listed
    assert listed[0].flags == keywords - {"kw00", "kw39"}
