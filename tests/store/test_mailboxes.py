"""
Conformance: accounts, mailboxes, hierarchy and subscriptions, for every backend.

Each test is the executable form of a sentence in `twistedmail.interfaces`.
"""

from __future__ import annotations

import pytest
import pytest_twisted  # type: ignore[import-untyped]
from zope.interface.verify import verifyObject

from twistedmail.interfaces import (
    IMailAccount,
    IMailStore,
    InvalidMailboxName,
    MailboxExists,
    MailboxHasChildren,
    MailboxNotAllowed,
    NoSuchMailbox,
)
from twistedmail.model import (
    DEFAULT_MAILBOXES,
    SEEN,
    FlagMode,
    MailboxCreated,
    MailboxDeleted,
    MailboxInfo,
    MailboxRenamed,
    MessagesExpunged,
    SpecialUse,
)


def message(n: int = 1) -> bytes:
    return (
        f"From: bob@example.test\r\nTo: alice@example.test\r\nSubject: message {n}\r\n"
        f"\r\nBody of message {n}.\r\n"
    ).encode()


async def names(account: IMailAccount) -> list[str]:
    return [info.name for info in await account.list_mailboxes()]


# --- accounts ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_store_and_account_provide_the_interfaces(store, account):
    assert verifyObject(IMailStore, store)
    assert verifyObject(IMailAccount, account)
    assert account.user == "alice@example.test"


@pytest_twisted.ensureDeferred
async def test_account_object_is_shared_while_open(store, account):
    """Sessions of one user share one account object, so events reach them all."""
    assert await store.account("alice@example.test") is account


@pytest_twisted.ensureDeferred
async def test_accounts_do_not_see_each_other(store, account):
    bob = await store.account("bob@example.test")
    await account.create_mailbox("Private")
    await account.append("INBOX", message())
    assert "Private" not in await names(bob)
    assert (await bob.status("INBOX")).messages == 0


@pytest.mark.parametrize("user", ["", ".", "..", "../evil", "a/b", "/etc", "a\\b", "x\x00y", "\n"])
@pytest_twisted.ensureDeferred
async def test_unusable_user_names_are_refused(store, user):
    with pytest.raises(InvalidMailboxName):
        await store.account(user)


@pytest_twisted.ensureDeferred
async def test_remove_account_forgets_everything(store, account):
    await account.create_mailbox("Gone")
    await account.append("INBOX", message())
    await store.remove_account("alice@example.test")
    await store.remove_account("nobody@example.test")  # unknown is no error
    fresh = await store.account("alice@example.test")
    assert "Gone" not in await names(fresh)
    assert (await fresh.status("INBOX")).messages == 0


# --- listing and defaults ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_new_account_has_the_default_mailboxes(account):
    listed = await account.list_mailboxes()
    assert listed[0] == MailboxInfo("INBOX", None, True)
    assert {(i.name, i.special_use) for i in listed} == set(DEFAULT_MAILBOXES)
    assert all(i.selectable for i in listed)


@pytest_twisted.ensureDeferred
async def test_default_mailboxes_are_subscribed(account):
    """Decision: clients that show only subscribed folders see the defaults at once."""
    assert await account.subscriptions() == {name for name, _ in DEFAULT_MAILBOXES}


@pytest_twisted.ensureDeferred
async def test_list_is_inbox_first_then_by_name_part_by_part(account):
    for name in ["b", "a b", "a/b", "a/b/c", "INBOX/x", "Zed"]:
        await account.create_mailbox(name)
    defaults = sorted(name for name, _ in DEFAULT_MAILBOXES if name != "INBOX")
    expected = ["INBOX", "INBOX/x", *sorted([*defaults, "Zed"]), "a", "a/b", "a/b/c", "a b", "b"]
    assert await names(account) == expected


@pytest_twisted.ensureDeferred
async def test_new_mailbox_starts_empty(account):
    inbox = await account.status("INBOX")
    created = await account.create_mailbox("Fresh")
    assert created == MailboxInfo("Fresh", None, True)
    status = await account.status("Fresh")
    assert (status.uidnext, status.highestmodseq) == (1, 1)
    assert (status.messages, status.unseen, status.size) == (0, 0, 0)
    assert 0 < status.uidvalidity < 2**32
    assert status.uidvalidity != inbox.uidvalidity
    assert await account.messages("Fresh") == []


@pytest_twisted.ensureDeferred
async def test_create_with_special_use(account):
    info = await account.create_mailbox("Everything", SpecialUse.ALL)
    assert info.special_use is SpecialUse.ALL
    listed = {i.name: i for i in await account.list_mailboxes()}
    assert listed["Everything"].special_use is SpecialUse.ALL


# --- create --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_create_makes_missing_parents(account, events):
    await account.create_mailbox("a")
    del events[:]
    await account.create_mailbox("a/b/c/d")
    assert events == [MailboxCreated("a/b"), MailboxCreated("a/b/c"), MailboxCreated("a/b/c/d")]
    listed = {i.name: i for i in await account.list_mailboxes()}
    for name in ["a", "a/b", "a/b/c", "a/b/c/d"]:
        assert listed[name].selectable
        await account.status(name)


@pytest.mark.parametrize("name", ["Sent", "INBOX", "inbox", "InBoX"])
@pytest_twisted.ensureDeferred
async def test_create_existing_is_refused(account, events, name):
    with pytest.raises(MailboxExists):
        await account.create_mailbox(name)
    assert events == []


@pytest_twisted.ensureDeferred
async def test_other_names_are_case_sensitive(account):
    await account.create_mailbox("Work")
    await account.create_mailbox("work")
    await account.append("work", message())
    assert (await account.status("Work")).messages == 0
    assert (await account.status("work")).messages == 1
    with pytest.raises(NoSuchMailbox):
        await account.status("WORK")


@pytest_twisted.ensureDeferred
async def test_inbox_is_case_insensitive_everywhere(account):
    """RFC 3501 §5.1: INBOX in any case is INBOX, also as the first part of a child."""
    appended = await account.append("inbox", message())
    assert appended.mailbox == "INBOX"
    await account.deliver(message(), "Inbox")
    assert (await account.status("iNbOx")).messages == 2
    assert len(await account.messages("INBOX")) == 2
    info = await account.create_mailbox("inbox/Lists")
    assert info.name == "INBOX/Lists"
    assert "INBOX/Lists" in await names(account)
    await account.status("INBOX/Lists")
    await account.status("InBox/Lists")
    await account.subscribe("inbox/Lists")
    assert "INBOX/Lists" in await account.subscriptions()


# --- delete --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_delete_removes_mailbox_and_messages(account, events):
    await account.create_mailbox("Old")
    await account.append("Old", message())
    del events[:]
    await account.delete_mailbox("Old")
    assert events == [MailboxDeleted("Old")]
    assert "Old" not in await names(account)
    with pytest.raises(NoSuchMailbox):
        await account.status("Old")
    with pytest.raises(NoSuchMailbox):
        await account.messages("Old")


@pytest_twisted.ensureDeferred
async def test_delete_refusals(account, events):
    await account.create_mailbox("p/c")
    with pytest.raises(NoSuchMailbox):
        await account.delete_mailbox("Missing")
    for inbox in ["INBOX", "inbox"]:
        with pytest.raises(MailboxNotAllowed):
            await account.delete_mailbox(inbox)
    del events[:]
    with pytest.raises(MailboxHasChildren):
        await account.delete_mailbox("p")
    assert events == []
    await account.delete_mailbox("p/c")
    await account.delete_mailbox("p")
    assert "p" not in await names(account)


@pytest_twisted.ensureDeferred
async def test_recreated_mailbox_gets_new_uidvalidity(account):
    await account.create_mailbox("Again")
    await account.append("Again", message())
    before = await account.status("Again")
    await account.delete_mailbox("Again")
    await account.create_mailbox("Again")
    after = await account.status("Again")
    assert after.uidvalidity != before.uidvalidity
    assert (after.messages, after.uidnext, after.highestmodseq) == (0, 1, 1)


@pytest_twisted.ensureDeferred
async def test_subscriptions_survive_delete(account):
    """RFC 3501 §6.3.6: the server must not drop a subscription on its own."""
    await account.create_mailbox("Lists")
    await account.subscribe("Lists")
    await account.delete_mailbox("Lists")
    assert "Lists" in await account.subscriptions()


# --- rename --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_rename_keeps_uids_uidvalidity_and_flags(account):
    await account.create_mailbox("Before")
    for n in range(3):
        await account.append("Before", message(n), [SEEN] if n else [])
    status = await account.status("Before")
    listed = await account.messages("Before")
    await account.rename_mailbox("Before", "After")
    assert await account.status("After") == status
    assert await account.messages("After") == listed
    assert await account.fetch("After", listed[1].uid) == message(1)
    with pytest.raises(NoSuchMailbox):
        await account.status("Before")


@pytest_twisted.ensureDeferred
async def test_rename_moves_children_and_leaves_lookalikes(account, events):
    for name in ["a", "a/b", "a/b/c", "ab", "a b"]:
        await account.create_mailbox(name)
    await account.append("a/b/c", message())
    del events[:]
    await account.rename_mailbox("a", "x")
    assert events == [
        MailboxRenamed("a", "x"),
        MailboxRenamed("a/b", "x/b"),
        MailboxRenamed("a/b/c", "x/b/c"),
    ]
    listed = await names(account)
    for name in ["x", "x/b", "x/b/c", "ab", "a b"]:
        assert name in listed
    for name in ["a", "a/b", "a/b/c"]:
        assert name not in listed
    assert (await account.status("x/b/c")).messages == 1


@pytest_twisted.ensureDeferred
async def test_rename_creates_missing_parents_of_the_new_name(account, events):
    await account.create_mailbox("leaf")
    del events[:]
    await account.rename_mailbox("leaf", "p/q/leaf")
    assert events == [
        MailboxCreated("p"),
        MailboxCreated("p/q"),
        MailboxRenamed("leaf", "p/q/leaf"),
    ]
    listed = await names(account)
    assert {"p", "p/q", "p/q/leaf"} <= set(listed)
    assert "leaf" not in listed


@pytest_twisted.ensureDeferred
async def test_rename_refusals_change_nothing(account, events):
    await account.create_mailbox("a/b")
    await account.create_mailbox("other")
    before = await account.list_mailboxes()
    del events[:]
    with pytest.raises(NoSuchMailbox):
        await account.rename_mailbox("missing", "new")
    with pytest.raises(MailboxExists):
        await account.rename_mailbox("a", "other")
    with pytest.raises(MailboxExists):
        await account.rename_mailbox("a", "a")
    with pytest.raises(MailboxExists):
        await account.rename_mailbox("other", "inbox")
    with pytest.raises(InvalidMailboxName):
        await account.rename_mailbox("a", "a/b/c")
    with pytest.raises(InvalidMailboxName):
        await account.rename_mailbox("a", "../a")
    with pytest.raises(InvalidMailboxName):
        await account.rename_mailbox("a/../a", "z")
    assert await account.list_mailboxes() == before
    assert events == []


@pytest_twisted.ensureDeferred
async def test_rename_inbox_moves_its_messages(account, events):
    """RFC 3501 §6.3.5: INBOX stays, empty; its mail moves; its children stay put."""
    await account.create_mailbox("INBOX/child")
    await account.append("INBOX", message(1), [SEEN])
    await account.append("INBOX", message(2), ["$Work"])
    inbox_before = await account.status("INBOX")
    old = await account.messages("INBOX")
    del events[:]
    await account.rename_mailbox("inbox", "Saved")
    inbox = await account.status("INBOX")
    assert inbox.uidvalidity == inbox_before.uidvalidity
    assert inbox.messages == 0
    assert inbox.uidnext == inbox_before.uidnext  # UIDs are never reused
    assert inbox.highestmodseq > inbox_before.highestmodseq
    saved = await account.messages("Saved")
    assert [(m.flags, m.internal_date, m.size) for m in saved] == [
        (m.flags, m.internal_date, m.size) for m in old
    ]
    assert [await account.fetch("Saved", m.uid) for m in saved] == [message(1), message(2)]
    assert "INBOX/child" in await names(account)
    assert events[0] == MailboxCreated("Saved")
    assert events[1] == MessagesExpunged(
        "INBOX", inbox.uidvalidity, tuple(m.uid for m in old), inbox.highestmodseq
    )
    assert len(events) == 2


@pytest_twisted.ensureDeferred
async def test_rename_inbox_below_itself_is_allowed(account):
    """INBOX does not move, so ``INBOX/old`` is a fine home for its mail."""
    await account.append("INBOX", message())
    await account.rename_mailbox("INBOX", "INBOX/old")
    assert (await account.status("INBOX/old")).messages == 1
    assert (await account.status("INBOX")).messages == 0


# --- subscriptions -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_subscribe_and_unsubscribe(account):
    await account.subscribe("Does/Not/Exist")  # RFC 3501 §6.3.6: need not exist
    await account.subscribe("Does/Not/Exist")
    assert "Does/Not/Exist" in await account.subscriptions()
    await account.unsubscribe("Does/Not/Exist")
    await account.unsubscribe("Never subscribed")
    assert "Does/Not/Exist" not in await account.subscriptions()
    await account.unsubscribe("inbox")
    assert "INBOX" not in await account.subscriptions()
    with pytest.raises(InvalidMailboxName):
        await account.subscribe("a//b")


@pytest_twisted.ensureDeferred
async def test_subscriptions_follow_rename(account):
    for name in ["a", "a/b", "ab"]:
        await account.create_mailbox(name)
        await account.subscribe(name)
    await account.rename_mailbox("a", "x")
    subscribed = await account.subscriptions()
    assert {"x", "x/b", "ab"} <= subscribed
    assert not {"a", "a/b"} & subscribed


# --- names ---------------------------------------------------------------------------

UNICODE_NAMES = ["Entwürfe/Ärger", "日本語", "📬 Post", "Café & Crème", "with.dots", "a b/c d"]


@pytest_twisted.ensureDeferred
async def test_unicode_names_round_trip(account):
    for name in UNICODE_NAMES:
        created = await account.create_mailbox(name)
        assert created.name == name
        appended = await account.append(name, message())
        assert appended.mailbox == name
        assert await account.fetch(name, appended.info.uid) == message()
    listed = await names(account)
    for name in UNICODE_NAMES:
        assert name in listed
    assert "Entwürfe" in listed
    await account.rename_mailbox("日本語", "Получено/日本語")
    assert (await account.status("Получено/日本語")).messages == 1


ESCAPES = [
    "",
    ".",
    "..",
    "a/../b",
    "../x",
    "a/..",
    "./a",
    "/abs",
    "a//b",
    "a/",
    "a\\b",
    "..\\x",
    "x\x00y",
    "\n",
    "line\r\nbreak",
    "tab\there",
    "del\x7f",
    "c1\x85",
    "x" * 256,
    "ä" * 128,
]


@pytest.mark.parametrize("bad", ESCAPES, ids=repr)
@pytest_twisted.ensureDeferred
async def test_escaping_and_malformed_names_are_refused_everywhere(account, events, bad):
    await account.create_mailbox("ok")
    await account.append("ok", message())
    before = await account.list_mailboxes()
    del events[:]
    calls = [
        lambda: account.create_mailbox(bad),
        lambda: account.create_mailbox(f"ok/{bad}"),
        lambda: account.delete_mailbox(bad),
        lambda: account.rename_mailbox("ok", bad),
        lambda: account.rename_mailbox(bad, "new"),
        lambda: account.status(bad),
        lambda: account.messages(bad),
        lambda: account.append(bad, message()),
        lambda: account.fetch(bad, 1),
        lambda: account.set_flags(bad, [1], [SEEN], FlagMode.ADD),
        lambda: account.expunge(bad),
        lambda: account.copy("ok", [1], bad),
        lambda: account.move("ok", [1], bad),
        lambda: account.subscribe(bad),
    ]
    for call in calls:
        with pytest.raises(InvalidMailboxName):
            await call()
    assert await account.list_mailboxes() == before
    assert (await account.status("ok")).messages == 1
    assert bad not in await account.subscriptions()
    assert events == []


@pytest_twisted.ensureDeferred
async def test_an_invalid_name_is_reported_before_a_missing_one(account):
    """Decision: InvalidMailboxName wins over NoSuchMailbox when both apply."""
    with pytest.raises(InvalidMailboxName):
        await account.rename_mailbox("Missing", "../x")
    with pytest.raises(InvalidMailboxName):
        await account.copy("Missing", [1], "a//b")
    with pytest.raises(InvalidMailboxName):
        await account.move("Missing", [1], "x\x00")


LOOKALIKE_NAMES = [
    ".hidden",
    "...",
    "a./b",
    "cur",
    "new",
    "tmp",
    "INBOX.Sent",
    "dovecot-uidlist",
    "dovecot-keywords",
    "maildirfolder",
    "courierimapsubscribed",
    "subscriptions",
    " leading",
    "trailing ",
    "&",
    "&-",
    "&AOQ-",
    "%",
    "*",
]


@pytest_twisted.ensureDeferred
async def test_names_that_look_like_storage_files_are_just_names(account):
    """No name collides with a backend's own files or with another name."""
    uids = {}
    for name in LOOKALIKE_NAMES:
        await account.create_mailbox(name)
        uids[name] = (await account.append(name, name.encode())).info.uid
        await account.subscribe(name)
    listed = await names(account)
    for name in LOOKALIKE_NAMES:
        assert name in listed
        assert (await account.status(name)).messages == 1
        assert await account.fetch(name, uids[name]) == name.encode()
    assert set(LOOKALIKE_NAMES) <= await account.subscriptions()
    assert (await account.status("INBOX")).messages == 0
    assert len(listed) == len(set(listed))
