"""
The Maildir store's delivery path under load: one thread-pool job per
message, directory fsyncs shared between concurrent deliveries, and no
listing of the folder while mail pours in, without losing sight of what
other programs do meanwhile.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest
import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet import threads
from twisted.internet.defer import gatherResults

from twistedmail.model import INBOX, SEEN, FlagsChanged, MessagesAdded
from twistedmail.store._maildir_files import DirSync, fsync_dir
from twistedmail.store.maildir import MaildirStore

ALICE = "alice@example.test"


def message(n: int) -> bytes:
    return b"From: a@example.test\r\nSubject: burst %d\r\n\r\nbody %d\r\n" % (n, n)


class CountingStore(MaildirStore):
    """A MaildirStore that records every directory listing of message files."""

    def __init__(self, data_dir: str) -> None:
        from twisted.internet import reactor

        super().__init__(data_dir, reactor)
        self.listed: list[str] = []

    def _listdir(self, path: str) -> list[str]:
        self.listed.append(path)
        return super()._listdir(path)


@pytest.fixture
def stores(tmp_path: Path):
    made: list[MaildirStore] = []

    def make() -> CountingStore:
        store = CountingStore(str(tmp_path))
        made.append(store)
        return store

    yield make
    for store in made:
        pytest_twisted.blockon(store.close())


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "mail" / ALICE


def drop(root: Path, subdir: str, name: str, data: bytes) -> None:
    """What another program (procmail, mutt) does: tmp/, then rename."""
    tmp = root / "tmp" / name.partition(":")[0]
    tmp.write_bytes(data)
    os.rename(tmp, root / subdir / name)


# --- group commit of the directory fsync ---------------------------------------------


class CountingFsync:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, path: str) -> None:
        self.calls += 1
        fsync_dir(path)


def test_one_directory_fsync_covers_every_rename_before_it(tmp_path: Path) -> None:
    fsync = CountingFsync()
    sync = DirSync(str(tmp_path), fsync)
    tickets = [sync.ticket() for _ in range(3)]  # three renames, then their waits
    for ticket in tickets:
        sync.wait(ticket)
    assert fsync.calls == 1
    sync.wait(sync.ticket())  # a rename after that fsync started needs its own
    assert fsync.calls == 2


def test_a_failed_directory_fsync_is_retried_by_the_next_waiter(tmp_path: Path) -> None:
    calls: list[str] = []

    def flaky(path: str) -> None:
        calls.append(path)
        if len(calls) == 1:
            raise OSError(5, "I/O error")
        fsync_dir(path)

    sync = DirSync(str(tmp_path), flaky)
    first, second = sync.ticket(), sync.ticket()
    with pytest.raises(OSError):
        sync.wait(first)
    sync.wait(second)  # not covered by the failed fsync: does its own
    assert len(calls) == 2
    sync.wait(first)  # covered now
    assert len(calls) == 2


def test_threads_renaming_together_all_come_back_durable(tmp_path: Path) -> None:
    fsync = CountingFsync()
    (tmp_path / "new").mkdir()
    sync = DirSync(str(tmp_path / "new"), fsync)
    start = threading.Barrier(8)

    def writer(n: int) -> None:
        start.wait()
        tmp = tmp_path / f"t{n}"
        tmp.write_bytes(b"%d" % n)
        os.rename(tmp, tmp_path / "new" / f"m{n}")
        sync.wait(sync.ticket())

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sorted(os.listdir(tmp_path / "new")) == sorted(f"m{n}" for n in range(8))
    assert 1 <= fsync.calls <= 8


# --- deliveries into one folder ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_concurrent_deliveries_are_durable_with_distinct_ascending_uids(stores, root):
    account = await stores().account(ALICE)
    appended = await gatherResults([account.deliver(message(n)) for n in range(60)])
    uids = [a.info.uid for a in appended]
    assert sorted(uids) == list(range(1, 61))
    assert len(os.listdir(root / "new")) == 60
    assert os.listdir(root / "tmp") == []
    for n, a in enumerate(appended):
        assert await account.fetch(INBOX, a.info.uid) == message(n)
    # A fresh process sees the same UIDs for the same files.
    again = await stores().account(ALICE)
    infos = await again.messages(INBOX)
    assert [i.uid for i in infos] == list(range(1, 61))
    for n, a in enumerate(appended):
        assert await again.fetch(INBOX, a.info.uid) == message(n)


@pytest_twisted.ensureDeferred
async def test_a_burst_of_deliveries_lists_no_directory(stores, root):
    store = stores()
    account = await store.account(ALICE)
    past = time.time() - 60  # not within the racy window of our first listing
    for sub in ("cur", "new"):
        os.utime(root / sub, (past, past))
    await account.messages(INBOX)
    listed = len(store.listed)
    for start in range(0, 40, 10):
        await gatherResults([account.deliver(message(n)) for n in range(start, start + 10)])
    assert len(store.listed) == listed
    # The next read looks at new/ once (it changed), cur/ not at all.
    infos = await account.messages(INBOX)
    assert [i.uid for i in infos] == list(range(1, 41))
    assert store.listed[listed:] == [str(root / "new")]


@pytest_twisted.ensureDeferred
async def test_mail_dropped_in_during_a_burst_is_picked_up(stores, root):
    account = await stores().account(ALICE)
    await account.messages(INBOX)
    seen: list[object] = []
    account.listen(seen.append)
    first = [account.deliver(message(n)) for n in range(10)]
    drop(root, "new", "1700000000.P1Q1.otherhost", message(99))
    second = [account.deliver(message(n)) for n in range(10, 20)]
    ours = [a.info.uid for a in await gatherResults(first + second)]
    infos = await account.messages(INBOX)
    assert len(infos) == 21
    [theirs] = set(i.uid for i in infos) - set(ours)
    assert await account.fetch(INBOX, theirs) == message(99)
    added = [i.uid for e in seen if isinstance(e, MessagesAdded) for i in e.messages]
    assert sorted(added) == sorted([*ours, theirs])
    assert len(added) == len(set(added))


@pytest_twisted.ensureDeferred
async def test_mail_dropped_right_after_a_read_is_seen_by_the_next_read(stores, root):
    """The racy window: a change within the mtime tick of our listing."""
    account = await stores().account(ALICE)
    await account.deliver(message(1))
    assert len(await account.messages(INBOX)) == 1
    drop(root, "new", "1700000001.P1Q1.otherhost", message(2))
    assert len(await account.messages(INBOX)) == 2


@pytest_twisted.ensureDeferred
async def test_our_delivered_mail_read_and_moved_by_another_program(stores, root):
    account = await stores().account(ALICE)
    appended = [await account.deliver(message(n)) for n in range(5)]
    await account.messages(INBOX)
    seen: list[object] = []
    account.listen(seen.append)
    # mutt reads the third message: new/ -> cur/ with the S flag.
    [name] = [n for n in os.listdir(root / "new") if n.startswith(_base_of(root, appended[2]))]
    os.rename(root / "new" / name, root / "cur" / f"{name}:2,S")
    await account.deliver(message(5))
    infos = {i.uid: i for i in await account.messages(INBOX)}
    assert len(infos) == 6
    assert infos[appended[2].info.uid].flags == {SEEN}
    assert [type(e) for e in seen] == [MessagesAdded, FlagsChanged]


def _base_of(root: Path, appended: object) -> str:
    """The file name prefix of a delivered message, found through the index."""
    uid = appended.info.uid  # type: ignore[attr-defined]
    for line in (root / "twistedmail-uidlist").read_text().splitlines():
        fields = line.split(" ")
        if fields[0] == "+" and int(fields[1]) == uid:
            return fields[6]
    raise AssertionError(f"UID {uid} not in the index")


@pytest_twisted.ensureDeferred
async def test_delivery_into_a_folder_removed_by_another_program_goes_to_inbox(stores, root):
    account = await stores().account(ALICE)
    await account.create_mailbox("Lists")
    first = await account.deliver(message(1), "Lists")
    assert first.mailbox == "Lists"
    shutil.rmtree(root / ".Lists")
    second = await account.deliver(message(2), "Lists")
    assert second.mailbox == INBOX
    assert await account.fetch(INBOX, second.info.uid) == message(2)


@pytest_twisted.ensureDeferred
async def test_delivery_recreates_a_lost_inbox(stores, root):
    account = await stores().account(ALICE)
    await account.deliver(message(1))
    await threads.deferToThread(shutil.rmtree, root / "new")
    await threads.deferToThread(shutil.rmtree, root / "tmp")
    appended = await account.deliver(message(2))
    assert appended.mailbox == INBOX
    assert await account.fetch(INBOX, appended.info.uid) == message(2)
