"""
Conformance: messages — append, deliver, fetch, flags, MODSEQ, expunge, copy
and move — for every backend.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta, timezone

import pytest
import pytest_twisted  # type: ignore[import-untyped]

from twistedmail.interfaces import (
    IMailAccount,
    InvalidMailboxName,
    MailboxNotAllowed,
    NoSuchMailbox,
    NoSuchMessage,
)
from twistedmail.model import (
    ANSWERED,
    DELETED,
    DRAFT,
    FLAGGED,
    SEEN,
    Appended,
    FlagMode,
    MessageInfo,
)

WHEN = datetime(2024, 2, 29, 23, 59, 58, tzinfo=timezone(timedelta(hours=2)))


def message(n: int = 1) -> bytes:
    return (
        f"From: bob@example.test\r\nTo: alice@example.test\r\nSubject: message {n}\r\n"
        f"\r\nBody of message {n}.\r\n"
    ).encode()


async def fill(account: IMailAccount, name: str, count: int) -> list[Appended]:
    return [await account.append(name, message(n)) for n in range(count)]


async def info(account: IMailAccount, name: str, uid: int) -> MessageInfo:
    found = [m for m in await account.messages(name) if m.uid == uid]
    assert len(found) == 1
    return found[0]


# --- append and deliver --------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_append_stores_flags_keywords_and_date(account):
    data = message()
    status = await account.status("INBOX")
    appended = await account.append("INBOX", data, ["\\SEEN", "\\flagged", "$Label1", "Work"], WHEN)
    assert appended.mailbox == "INBOX"
    assert appended.uidvalidity == status.uidvalidity
    got = appended.info
    assert got.uid >= status.uidnext
    assert got.flags == {SEEN, FLAGGED, "$Label1", "Work"}
    assert got.internal_date == WHEN
    assert got.internal_date.tzinfo is not None
    assert got.size == len(data)
    assert got.modseq > status.highestmodseq
    assert await account.messages("INBOX") == [got]
    assert await account.fetch("INBOX", got.uid) == data
    after = await account.status("INBOX")
    assert after.uidnext > got.uid
    assert after.highestmodseq >= got.modseq


@pytest_twisted.ensureDeferred
async def test_append_defaults_to_no_flags_and_now(account):
    before = datetime.now(UTC).replace(microsecond=0)
    appended = await account.append("INBOX", message())
    after = datetime.now(UTC)
    assert appended.info.flags == frozenset()
    assert before - timedelta(seconds=1) <= appended.info.internal_date <= after
    assert appended.info.internal_date.tzinfo is not None


@pytest_twisted.ensureDeferred
async def test_internal_date_is_kept_to_the_second(account):
    """Decision: whole seconds, as IMAP INTERNALDATE and file mtimes carry them."""
    precise = datetime(2023, 5, 1, 12, 0, 1, 999999, tzinfo=UTC)
    appended = await account.append("INBOX", message(), internal_date=precise)
    assert appended.info.internal_date == precise.replace(microsecond=0)
    assert (await account.messages("INBOX"))[0].internal_date == precise.replace(microsecond=0)


@pytest_twisted.ensureDeferred
async def test_append_to_missing_mailbox_fails(account, events):
    with pytest.raises(NoSuchMailbox):
        await account.append("Nowhere", message())
    with pytest.raises(InvalidMailboxName):
        await account.append("a//b", message())
    assert events == []


@pytest_twisted.ensureDeferred
async def test_uids_ascend_and_are_unique(account):
    appended = await fill(account, "INBOX", 20)
    uids = [a.info.uid for a in appended]
    assert uids == sorted(set(uids))
    assert uids[0] >= 1
    listed = await account.messages("INBOX")
    assert [m.uid for m in listed] == uids
    assert [m for m in listed] == [a.info for a in appended]


@pytest_twisted.ensureDeferred
async def test_uids_are_not_reused_after_expunge(account):
    appended = await fill(account, "INBOX", 3)
    uids = [a.info.uid for a in appended]
    await account.set_flags("INBOX", uids, [DELETED], FlagMode.ADD)
    assert await account.expunge("INBOX") == uids
    again = await account.append("INBOX", message())
    assert again.info.uid > uids[-1]
    assert (await account.status("INBOX")).uidnext > again.info.uid


@pytest_twisted.ensureDeferred
async def test_deliver_goes_to_inbox_unseen(account, events):
    appended = await account.deliver(message())
    assert appended.mailbox == "INBOX"
    assert appended.info.flags == frozenset()
    assert (await account.status("INBOX")).unseen == 1
    assert len(events) == 1


@pytest_twisted.ensureDeferred
async def test_deliver_to_a_folder_and_fallback_to_inbox(account):
    await account.create_mailbox("Lists/python")
    assert (await account.deliver(message(), "Lists/python")).mailbox == "Lists/python"
    assert (await account.deliver(message(), "Missing")).mailbox == "INBOX"
    # Decision: a name that is not even valid also lands in INBOX, never bounces.
    assert (await account.deliver(message(), "../escape")).mailbox == "INBOX"
    assert (await account.status("INBOX")).messages == 2


# --- status --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_status_counters_follow_every_change(account):
    await account.create_mailbox("Count")
    sizes = []
    for n in range(4):
        data = message(n) * (n + 1)
        sizes.append(len(data))
        await account.append("Count", data, [SEEN] if n == 0 else [])
    status = await account.status("Count")
    assert (status.messages, status.unseen, status.size) == (4, 3, sum(sizes))
    uids = [m.uid for m in await account.messages("Count")]
    await account.set_flags("Count", uids[1:3], [SEEN], FlagMode.ADD)
    assert (await account.status("Count")).unseen == 1
    await account.set_flags("Count", uids[:1], [DELETED], FlagMode.REPLACE)
    assert (await account.status("Count")).unseen == 2
    await account.expunge("Count")
    status = await account.status("Count")
    assert (status.messages, status.unseen, status.size) == (3, 1, sum(sizes[1:]))


@pytest_twisted.ensureDeferred
async def test_reading_a_missing_mailbox_fails(account):
    with pytest.raises(NoSuchMailbox):
        await account.status("Missing")
    with pytest.raises(NoSuchMailbox):
        await account.messages("Missing")
    with pytest.raises(NoSuchMailbox):
        await account.fetch("Missing", 1)
    with pytest.raises(NoSuchMailbox):
        await account.set_flags("Missing", [1], [SEEN], FlagMode.ADD)
    with pytest.raises(NoSuchMailbox):
        await account.expunge("Missing")


# --- fetch ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_fetch_whole_and_ranges(account):
    data = bytes(range(256)) * 4
    uid = (await account.append("INBOX", data)).info.uid
    assert await account.fetch("INBOX", uid) == data
    assert await account.fetch("INBOX", uid, 0, 10) == data[:10]
    assert await account.fetch("INBOX", uid, 100) == data[100:]
    assert await account.fetch("INBOX", uid, 100, 50) == data[100:150]
    assert await account.fetch("INBOX", uid, 1000, 100) == data[1000:]
    assert await account.fetch("INBOX", uid, len(data)) == b""
    assert await account.fetch("INBOX", uid, len(data) + 5, 10) == b""
    assert await account.fetch("INBOX", uid, 5, 0) == b""


@pytest_twisted.ensureDeferred
async def test_fetch_missing_message_fails(account):
    uid = (await account.append("INBOX", message())).info.uid
    with pytest.raises(NoSuchMessage):
        await account.fetch("INBOX", uid + 1)
    await account.set_flags("INBOX", [uid], [DELETED], FlagMode.ADD)
    await account.expunge("INBOX")
    with pytest.raises(NoSuchMessage):
        await account.fetch("INBOX", uid)


@pytest_twisted.ensureDeferred
async def test_8bit_and_odd_bytes_are_stored_exactly(account):
    data = (
        "Subject: Grüße aus Köln — 日本語\r\n".encode()
        + b"X-Latin1: caf\xe9\r\n"
        + b"X-Raw: \x80\x81\xfe\xff\r\n"
        + b"From: =?utf-8?q?J=C3=BCrgen?= <j@example.test>\r\n"
        + b"\r\n"
        + b"bare LF\nlone CR\rNUL \x00 byte\r\n.\r\n..\r\nFrom start of line\r\n"
        + b"no final newline"
    )
    appended = await account.append("INBOX", data)
    assert appended.info.size == len(data)
    assert await account.fetch("INBOX", appended.info.uid) == data
    delivered = await account.deliver(data)
    assert await account.fetch("INBOX", delivered.info.uid) == data


@pytest_twisted.ensureDeferred
async def test_empty_message_is_stored(account):
    appended = await account.append("INBOX", b"")
    assert appended.info.size == 0
    assert await account.fetch("INBOX", appended.info.uid) == b""


@pytest_twisted.ensureDeferred
async def test_20_megabyte_message_is_stored_exactly(account):
    header = b"Subject: big\r\nContent-Type: application/octet-stream\r\n\r\n"
    data = header + os.urandom(20 * 1024 * 1024)
    appended = await account.append("INBOX", data)
    assert appended.info.size == len(data)
    assert (await account.status("INBOX")).size == len(data)
    assert await account.fetch("INBOX", appended.info.uid) == data
    tail = await account.fetch("INBOX", appended.info.uid, len(data) - 1000, 5000)
    assert tail == data[-1000:]


# --- flags and MODSEQ ----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_flag_modes(account):
    uid = (await account.append("INBOX", message(), [SEEN, "Work"])).info.uid
    result = await account.set_flags("INBOX", [uid], [FLAGGED, "$Todo"], FlagMode.ADD)
    assert [m.flags for m in result.changed] == [{SEEN, "Work", FLAGGED, "$Todo"}]
    result = await account.set_flags("INBOX", [uid], [SEEN, "$Todo"], FlagMode.REMOVE)
    assert [m.flags for m in result.changed] == [{"Work", FLAGGED}]
    result = await account.set_flags("INBOX", [uid], [ANSWERED, DRAFT], FlagMode.REPLACE)
    assert [m.flags for m in result.changed] == [{ANSWERED, DRAFT}]
    result = await account.set_flags("INBOX", [uid], [], FlagMode.REPLACE)
    assert [m.flags for m in result.changed] == [frozenset()]
    assert (await info(account, "INBOX", uid)).flags == frozenset()
    assert result.failed == ()


@pytest_twisted.ensureDeferred
async def test_system_flags_are_case_insensitive_keywords_are_not(account):
    uid = (await account.append("INBOX", message())).info.uid
    await account.set_flags(
        "INBOX", [uid], ["\\seen", "\\DELETED", "$MDNSent", "work"], FlagMode.ADD
    )
    assert (await info(account, "INBOX", uid)).flags == {SEEN, DELETED, "$MDNSent", "work"}
    assert (await account.status("INBOX")).unseen == 0
    result = await account.set_flags("INBOX", [uid], ["WORK", "\\Seen"], FlagMode.REMOVE)
    assert [m.flags for m in result.changed] == [{DELETED, "$MDNSent", "work"}]


@pytest_twisted.ensureDeferred
async def test_modseq_rises_only_for_changed_messages(account):
    appended = await fill(account, "INBOX", 3)
    uids = [a.info.uid for a in appended]
    await account.set_flags("INBOX", uids[:1], [SEEN], FlagMode.ADD)
    before = {m.uid: m for m in await account.messages("INBOX")}
    highest = (await account.status("INBOX")).highestmodseq
    result = await account.set_flags("INBOX", uids, [SEEN], FlagMode.ADD)
    assert [m.uid for m in result.changed] == uids[1:]
    for changed in result.changed:
        assert changed.modseq > highest
        assert changed.flags == {SEEN}
    after = {m.uid: m for m in await account.messages("INBOX")}
    assert after[uids[0]] == before[uids[0]]  # unchanged keeps its MODSEQ
    for changed in result.changed:
        assert after[changed.uid] == changed
    status = await account.status("INBOX")
    assert status.highestmodseq == max(m.modseq for m in after.values())


@pytest_twisted.ensureDeferred
async def test_no_change_means_no_new_modseq_and_no_event(account, events):
    uid = (await account.append("INBOX", message(), [SEEN])).info.uid
    status = await account.status("INBOX")
    del events[:]
    for mode, flags in [
        (FlagMode.ADD, [SEEN]),
        (FlagMode.REMOVE, [FLAGGED]),
        (FlagMode.REPLACE, [SEEN]),
    ]:
        result = await account.set_flags("INBOX", [uid], flags, mode)
        assert result.changed == () and result.failed == ()
    assert await account.status("INBOX") == status
    assert events == []


@pytest_twisted.ensureDeferred
async def test_set_flags_ignores_missing_uids(account):
    uid = (await account.append("INBOX", message())).info.uid
    result = await account.set_flags("INBOX", [uid + 10, uid, uid + 20], [SEEN], FlagMode.ADD)
    assert [m.uid for m in result.changed] == [uid]
    assert result.failed == ()
    result = await account.set_flags("INBOX", [], [SEEN], FlagMode.ADD)
    assert result.changed == ()


@pytest_twisted.ensureDeferred
async def test_unchanged_since_fails_messages_changed_later(account):
    """RFC 7162 §3.1.3: only messages with MODSEQ <= UNCHANGEDSINCE are stored to."""
    first, second = [a.info for a in await fill(account, "INBOX", 2)]
    since = (await account.status("INBOX")).highestmodseq
    touched = await account.set_flags("INBOX", [first.uid], [FLAGGED], FlagMode.ADD)
    result = await account.set_flags(
        "INBOX", [first.uid, second.uid], [SEEN], FlagMode.ADD, unchanged_since=since
    )
    assert result.failed == (first.uid,)
    assert [m.uid for m in result.changed] == [second.uid]
    assert (await info(account, "INBOX", first.uid)) == touched.changed[0]
    exact = touched.changed[0].modseq
    result = await account.set_flags(
        "INBOX", [first.uid], [SEEN], FlagMode.ADD, unchanged_since=exact
    )
    assert result.failed == () and [m.uid for m in result.changed] == [first.uid]


@pytest_twisted.ensureDeferred
async def test_unchanged_since_zero_fails_everything(account):
    uids = [a.info.uid for a in await fill(account, "INBOX", 2)]
    result = await account.set_flags("INBOX", uids, [SEEN], FlagMode.ADD, unchanged_since=0)
    assert result.failed == tuple(uids)
    assert result.changed == ()


# --- expunge -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_expunge_removes_every_deleted_message(account):
    uids = [a.info.uid for a in await fill(account, "INBOX", 5)]
    await account.set_flags("INBOX", [uids[3], uids[1], uids[4]], [DELETED], FlagMode.ADD)
    highest = (await account.status("INBOX")).highestmodseq
    assert await account.expunge("INBOX") == [uids[1], uids[3], uids[4]]
    assert [m.uid for m in await account.messages("INBOX")] == [uids[0], uids[2]]
    status = await account.status("INBOX")
    assert status.messages == 2
    assert status.highestmodseq > highest


@pytest_twisted.ensureDeferred
async def test_uid_expunge_removes_only_the_given_deleted_messages(account):
    """RFC 4315 UID EXPUNGE: \\Deleted messages outside the set stay."""
    uids = [a.info.uid for a in await fill(account, "INBOX", 4)]
    await account.set_flags("INBOX", uids[:3], [DELETED], FlagMode.ADD)
    assert await account.expunge("INBOX", [uids[2], uids[3], uids[0], 999]) == [uids[0], uids[2]]
    assert [m.uid for m in await account.messages("INBOX")] == [uids[1], uids[3]]


@pytest_twisted.ensureDeferred
async def test_expunge_with_nothing_deleted_changes_nothing(account, events):
    await fill(account, "INBOX", 2)
    status = await account.status("INBOX")
    del events[:]
    assert await account.expunge("INBOX") == []
    assert await account.expunge("INBOX", []) == []
    assert await account.status("INBOX") == status
    assert events == []


# --- copy and move -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_copy_keeps_bytes_flags_and_dates(account):
    await account.create_mailbox("Copies")
    await account.append("INBOX", message(0), [SEEN, "Work"], WHEN)
    await account.append("INBOX", message(1), [], WHEN + timedelta(days=1))
    await account.append("INBOX", message(2), [FLAGGED, DELETED], WHEN - timedelta(days=1))
    source = await account.messages("INBOX")
    result = await account.copy("INBOX", [m.uid for m in reversed(source)] + [999], "Copies")
    assert result.uidvalidity == (await account.status("Copies")).uidvalidity
    assert [old for old, _ in result.mapping] == [m.uid for m in source]
    new_uids = [new for _, new in result.mapping]
    assert new_uids == sorted(set(new_uids))
    copies = await account.messages("Copies")
    assert [m.uid for m in copies] == new_uids
    for original, copied in zip(source, copies, strict=True):
        assert (copied.flags, copied.internal_date, copied.size) == (
            original.flags,
            original.internal_date,
            original.size,
        )
        assert await account.fetch("Copies", copied.uid) == await account.fetch(
            "INBOX", original.uid
        )
    assert await account.messages("INBOX") == source


@pytest_twisted.ensureDeferred
async def test_copy_onto_itself_adds_new_uids(account):
    uids = [a.info.uid for a in await fill(account, "INBOX", 2)]
    result = await account.copy("inbox", uids, "INBOX")
    assert [old for old, _ in result.mapping] == uids
    assert all(new > uids[-1] for _, new in result.mapping)
    assert (await account.status("INBOX")).messages == 4


@pytest_twisted.ensureDeferred
async def test_copy_and_move_of_nothing(account, events):
    await account.create_mailbox("Dest")
    del events[:]
    for operation in (account.copy, account.move):
        result = await operation("INBOX", [1, 2, 3], "Dest")
        assert result.mapping == ()
        assert result.uidvalidity == (await account.status("Dest")).uidvalidity
    assert events == []


@pytest_twisted.ensureDeferred
async def test_copy_and_move_need_both_mailboxes(account):
    uid = (await account.append("INBOX", message())).info.uid
    for operation in (account.copy, account.move):
        with pytest.raises(NoSuchMailbox):
            await operation("INBOX", [uid], "Missing")
        with pytest.raises(NoSuchMailbox):
            await operation("Missing", [uid], "INBOX")
    assert [m.uid for m in await account.messages("INBOX")] == [uid]


@pytest_twisted.ensureDeferred
async def test_move_transfers_messages(account):
    await account.create_mailbox("Archive/2024")
    await account.append("INBOX", message(0), [SEEN], WHEN)
    await account.append("INBOX", message(1), ["$Keep"], WHEN)
    await account.append("INBOX", message(2), [], WHEN)
    source = await account.messages("INBOX")
    moving = [source[2].uid, source[0].uid]
    highest = (await account.status("INBOX")).highestmodseq
    result = await account.move("INBOX", moving, "Archive/2024")
    assert [old for old, _ in result.mapping] == sorted(moving)
    left = await account.messages("INBOX")
    assert left == [source[1]]
    assert (await account.status("INBOX")).highestmodseq > highest
    moved = await account.messages("Archive/2024")
    assert [m.uid for m in moved] == [new for _, new in result.mapping]
    assert [(m.flags, m.internal_date) for m in moved] == [
        (source[0].flags, WHEN),
        (source[2].flags, WHEN),
    ]
    assert await account.fetch("Archive/2024", moved[1].uid) == message(2)
    with pytest.raises(NoSuchMessage):
        await account.fetch("INBOX", source[0].uid)


@pytest_twisted.ensureDeferred
async def test_move_onto_itself_is_refused(account, events):
    uid = (await account.append("INBOX", message())).info.uid
    status = await account.status("INBOX")
    del events[:]
    with pytest.raises(MailboxNotAllowed):
        await account.move("INBOX", [uid], "inbox")
    assert await account.status("INBOX") == status
    assert events == []


@pytest_twisted.ensureDeferred
async def test_counters_agree_with_the_messages_after_a_mixed_workload(account):
    """The incremental counters (unseen, size, HIGHESTMODSEQ) never drift from the truth."""
    await account.create_mailbox("Mix")
    for n in range(12):
        await account.append(
            "INBOX" if n % 2 else "Mix", message(n) * (n + 1), [SEEN] * (n % 3 == 0)
        )
    inbox = [m.uid for m in await account.messages("INBOX")]
    await account.set_flags("INBOX", inbox[::2], [SEEN, DELETED], FlagMode.ADD)
    await account.set_flags("INBOX", inbox[1::2], [SEEN], FlagMode.REMOVE)
    await account.copy("INBOX", inbox, "Mix")
    await account.expunge("INBOX", inbox[:2])
    await account.move("INBOX", inbox[3:], "Mix")
    await account.set_flags(
        "Mix", [m.uid for m in await account.messages("Mix")], [], FlagMode.REPLACE
    )
    for name in ["INBOX", "Mix"]:
        listed = await account.messages(name)
        status = await account.status(name)
        assert status.messages == len(listed)
        assert status.unseen == sum(SEEN not in m.flags for m in listed)
        assert status.size == sum(m.size for m in listed)
        for m in listed:
            assert m.size == len(await account.fetch(name, m.uid))
        if listed:
            assert status.uidnext > listed[-1].uid
            assert status.highestmodseq >= max(m.modseq for m in listed)
        assert [m.uid for m in listed] == sorted({m.uid for m in listed})


KEYWORDS = [f"$Label{n}" for n in range(1, 6)] + [f"kw{n:02d}" for n in range(30)] + ["NonJunk"]


@pytest_twisted.ensureDeferred
async def test_many_keywords_round_trip(account):
    """More keywords than Maildir's 26 filename letters must still all be kept."""
    first = await account.append("INBOX", message(1), KEYWORDS[:20])
    second = await account.append("INBOX", message(2), [*KEYWORDS[20:], SEEN])
    assert first.info.flags == set(KEYWORDS[:20])
    await account.set_flags("INBOX", [first.info.uid], KEYWORDS[30:], FlagMode.ADD)
    listed = {m.uid: m.flags for m in await account.messages("INBOX")}
    assert listed[first.info.uid] == set(KEYWORDS[:20] + KEYWORDS[30:])
    assert listed[second.info.uid] == set(KEYWORDS[20:]) | {SEEN}
