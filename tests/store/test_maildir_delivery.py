"""
The Maildir store's delivery path under load: deliveries into one folder
share a thread-pool job, its directory fsync and its index append, and
nothing lists the folder while mail pours in, without losing sight of
what other programs do meanwhile.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet.defer import Deferred, gatherResults
from twisted.python.failure import Failure

from tests.store.maildir_harness import ALICE, drop
from twistedmail.delivery import Delivery
from twistedmail.interfaces import TemporaryFailure
from twistedmail.model import (
    INBOX,
    SEEN,
    Appended,
    ChangeEvent,
    Envelope,
    FlagsChanged,
    MessagesAdded,
    Recipient,
)
from twistedmail.routing import LocalRoute
from twistedmail.store._maildir_delivery import DeliveryQueue, write_batch
from twistedmail.store._maildir_files import make_spares
from twistedmail.store._maildir_folder import Folder


def message(n: int) -> bytes:
    return b"From: a@example.test\r\nSubject: burst %d\r\n\r\nbody %d\r\n" % (n, n)


# --- group commit -----------------------------------------------------------------------


class HeldPool:
    """
    The reactor's thread pool, by hand: each job runs (for real) when the
    test lets it finish, so the test decides what arrives during a write.
    """

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]] = []

    def __call__(self, call: Callable[..., Any], *args: Any) -> Deferred[Any]:
        done: Deferred[Any] = Deferred()
        self.jobs.append((call, args, done))
        return done

    def finish(self, expected: Callable[..., Any] = write_batch) -> tuple[Any, ...]:
        """Run the oldest job (which must be a call of ``expected``); its arguments."""
        call, args, done = self.jobs.pop(0)
        assert call is expected
        done.callback(call(*args))
        return args


class Names:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return f"spare{self.count}"


def inbox(path: Path) -> Folder:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return Folder(INBOX, str(path), lambda: 7, os.listdir)


def test_deliveries_arriving_during_the_writes_share_the_next_job(tmp_path: Path) -> None:
    folder, pool = inbox(tmp_path), HeldPool()
    heard: list[ChangeEvent] = []
    queue = DeliveryQueue(folder, pool, heard.extend, Names())
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    uids: dict[int, int] = {}

    def record(appended: Appended, n: int) -> None:
        uids[n] = appended.info.uid

    for n in (1, 2):  # a lone delivery starts at once; so does a second
        queue.add(f"{n}.base", message(n), when).addCallback(record, n)
        assert len(pool.jobs) == n
    for n in (3, 4, 5):
        queue.add(f"{n}.base", message(n), when).addCallback(record, n)
    assert len(pool.jobs) == 2  # the others wait for one of them
    pool.jobs.append(pool.jobs.pop(0))  # the second job finishes first...
    pool.finish()
    assert uids == {2: 1}  # ...and its message is added first
    assert len(pool.jobs[1][1][1]) == 3  # one job for the three waiting
    pool.finish()
    pool.finish()
    assert uids == {2: 1, 1: 2, 3: 3, 4: 4, 5: 5}
    assert sorted(os.listdir(tmp_path / "new")) == [f"{n}.base" for n in (1, 2, 3, 4, 5)]
    assert (tmp_path / "new" / "4.base").read_bytes() == message(4)
    assert (tmp_path / "new" / "4.base").stat().st_mtime == when.timestamp()
    added = [[i.uid for i in e.messages] for e in heard if isinstance(e, MessagesAdded)]
    assert added == [[1], [2], [3, 4, 5]]
    assert len(heard) == 3
    while pool.jobs:
        pool.finish(make_spares)


def test_a_message_that_cannot_be_written_fails_alone(tmp_path: Path) -> None:
    folder, pool = inbox(tmp_path), HeldPool()
    queue = DeliveryQueue(folder, pool, lambda events: None, Names())
    when = datetime(2026, 1, 2, tzinfo=UTC)
    (tmp_path / "tmp" / "3.base").write_bytes(b"someone else's")  # O_EXCL refuses it
    results: dict[int, object] = {}

    def record(result: object, n: int) -> None:
        results[n] = result

    for n in (1, 2, 3, 4):
        queue.add(f"{n}.base", message(n), when).addBoth(record, n)
    pool.finish()
    pool.finish()
    pool.finish()  # 3 and 4 together
    assert [n for n, r in sorted(results.items()) if isinstance(r, Appended)] == [1, 2, 4]
    failed = results[3]
    assert isinstance(failed, Failure) and failed.check(TemporaryFailure)
    assert sorted(os.listdir(tmp_path / "new")) == ["1.base", "2.base", "4.base"]
    assert (tmp_path / "tmp" / "3.base").read_bytes() == b"someone else's"


def test_mail_that_cannot_be_indexed_is_taken_back(tmp_path: Path) -> None:
    folder, pool = inbox(tmp_path), HeldPool()
    queue = DeliveryQueue(folder, pool, lambda events: None, Names())
    (tmp_path / "twistedmail-uidlist.lock").mkdir()  # the index lock cannot be opened
    results: list[object] = []
    for n in (1, 2):
        queue.add(f"{n}.base", message(n), datetime(2026, 1, 2, tzinfo=UTC)).addBoth(results.append)
    pool.finish()
    pool.finish()
    assert all(isinstance(r, Failure) and r.check(TemporaryFailure) for r in results)
    assert os.listdir(tmp_path / "new") == []  # the senders' retries make no duplicates


def test_deliveries_write_into_spare_files_made_ahead(tmp_path: Path) -> None:
    folder, pool = inbox(tmp_path), HeldPool()
    queue = DeliveryQueue(folder, pool, lambda events: None, Names())
    when = datetime(2026, 1, 2, tzinfo=UTC)

    def deliver(n: int) -> str | None:
        queue.add(f"{n}.base", message(n), when)
        [item] = pool.finish()[1]
        assert (tmp_path / "new" / f"{n}.base").read_bytes() == message(n)
        spare: str | None = item[3]
        return spare

    assert deliver(1) is None  # nothing made ahead yet: this one makes its own file
    made = pool.finish(make_spares)[1]
    assert len(made) == 8
    assert sorted(os.listdir(tmp_path / "tmp")) == sorted(made)
    assert all((tmp_path / "tmp" / name).read_bytes() == b"" for name in made)
    used = [deliver(n) for n in (2, 3, 4)]
    assert not pool.jobs  # topped up only once half are used
    used.append(deliver(5))
    assert set(used) <= set(made) and len(set(used)) == 4
    assert len(pool.finish(make_spares)[1]) == 4
    assert len(os.listdir(tmp_path / "tmp")) == 8
    # A spare cleaned away by someone else: the delivery makes its own file.
    for name in os.listdir(tmp_path / "tmp"):
        os.unlink(tmp_path / "tmp" / name)
    assert deliver(6) is not None
    # Closing takes the spares away, also those still being made.
    for n in (7, 8, 9):
        deliver(n)
    assert pool.jobs[0][0] is make_spares
    queue.close()
    pool.finish(make_spares)
    assert os.listdir(tmp_path / "tmp") == []
    assert len(os.listdir(tmp_path / "new")) == 9


def test_a_failed_directory_fsync_takes_every_file_of_the_job_back(tmp_path: Path) -> None:
    inbox(tmp_path)

    def broken(path: str) -> None:
        raise OSError(5, "Input/output error")

    items: list[tuple[str, bytes, int, str | None]] = [
        (f"{n}.base", message(n), 1700000000, None) for n in range(3)
    ]
    outcomes = write_batch(str(tmp_path), items, broken)
    assert all(isinstance(o, OSError) for o in outcomes)
    assert os.listdir(tmp_path / "new") == []
    assert os.listdir(tmp_path / "tmp") == []
    assert write_batch(str(tmp_path), items) == [None, None, None]
    assert sorted(os.listdir(tmp_path / "new")) == [f"{n}.base" for n in range(3)]


# --- deliveries into one folder ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_concurrent_deliveries_are_durable_with_distinct_ascending_uids(stores, root):
    account = await stores().account(ALICE)
    appended = await gatherResults([account.deliver(message(n)) for n in range(60)])
    uids = [a.info.uid for a in appended]
    assert sorted(uids) == list(range(1, 61))
    assert len(os.listdir(root / "new")) == 60
    for spare in os.listdir(root / "tmp"):  # only empty files made ahead
        assert (root / "tmp" / spare).stat().st_size == 0
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
    # Gone in one step (our pool may be making spare files in its tmp/ now).
    os.rename(root / ".Lists", root.parent / "lost-Lists")
    second = await account.deliver(message(2), "Lists")
    assert second.mailbox == INBOX
    assert await account.fetch(INBOX, second.info.uid) == message(2)


@pytest_twisted.ensureDeferred
async def test_delivery_recreates_a_lost_inbox(stores, root):
    account = await stores().account(ALICE)
    await account.deliver(message(1))
    # Gone in one step each (our pool may be making spare files in tmp/ now).
    for sub in ("new", "tmp"):
        os.rename(root / sub, root.parent / f"lost-{sub}")
    appended = await account.deliver(message(2))
    assert appended.mailbox == INBOX
    assert await account.fetch(INBOX, appended.info.uid) == message(2)


@pytest_twisted.ensureDeferred
async def test_a_disk_that_refuses_the_write_fails_delivery_and_leaves_nothing(stores, root):
    store = stores()
    account = await store.account(ALICE)
    await account.deliver(message(1))
    delivery = Delivery(store, None)
    rcpt = Recipient(ALICE)
    routes = [LocalRoute(rcpt, (ALICE,))]
    envelope = Envelope("sender@example.test", (rcpt,))
    done = await delivery.deliver(envelope, message(2), routes)
    [(user, appended)] = done.stored
    assert user == ALICE and appended.info.uid == 2
    assert await account.fetch(INBOX, 2) == b"Return-Path: <sender@example.test>\r\n" + message(2)
    # tmp/ is gone (in one step: our pool may be making spare files in it)
    # and a file sits in its place: no message file can be made.
    os.rename(root / "tmp", root.parent / "lost-tmp")
    (root / "tmp").write_bytes(b"")
    with pytest.raises(TemporaryFailure):
        await delivery.deliver(envelope, message(3), routes)
    assert len(os.listdir(root / "new")) == 2
    assert [i.uid for i in await account.messages(INBOX)] == [1, 2]
