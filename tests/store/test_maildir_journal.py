"""
The Maildir store's delivery journal: a delivery is acknowledged once its
record is flushed, so a crash before the checkpoint must lose nothing (the
store replays the journal when it opens) and duplicate nothing (a file that
is still there, wherever it was moved, is not written again).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock

from tests.store.maildir_harness import ALICE, files_in
from twistedmail.model import INBOX, SEEN, FlagMode
from twistedmail.store import _maildir_journal as journal
from twistedmail.store._maildir_delivery import write_batch_journaled
from twistedmail.store._maildir_journal import CHECKPOINT_DELAY, Journal, Record, Slot, scan
from twistedmail.store.maildir import MaildirStore

ROOT = Path(__file__).resolve().parents[2]


def message(n: int) -> bytes:
    return b"From: a@example.test\r\nSubject: journalled %d\r\n\r\nbody %d\r\n" % (n, n)


def record(n: int) -> Record:
    return Record(ALICE.encode(), b"%d.base" % n, 1_700_000_000 + n, message(n))


def size_of(rec: Record) -> int:
    return journal.record_size(rec.relpath, rec.base, len(rec.data))


def in_place(call: Callable[..., Any], *args: Any) -> Deferred[Any]:
    """A thread pool that runs each job at once, on this thread."""
    return maybeDeferred(call, *args)


def open_journal(tmp_path: Path, capacity: int = journal.CAPACITY) -> tuple[Journal, Clock]:
    clock = Clock()
    opened = Journal.open(
        str(tmp_path / "journal"), str(tmp_path / "mail"), in_place, clock.callLater, capacity
    )
    assert opened is not None
    return opened, clock


def log_records(tmp_path: Path, name: str) -> list[Record]:
    contents = (tmp_path / "journal" / name).read_bytes()
    generation = journal._read_generation(contents)
    assert generation is not None
    return list(scan(contents, generation))


def write(slot: Slot, *records: Record | int) -> None:
    journal.append(slot.fd, slot.offset, slot.generation, records)


# --- the log format ---------------------------------------------------------------------


def test_a_torn_record_hides_neither_the_next_one_nor_an_old_generation_shows(tmp_path):
    jr, _clock = open_journal(tmp_path)
    first, second = record(1), record(2)
    slot = jr.reserve([size_of(first), size_of(second)])
    assert slot is not None
    write(slot, first, second)
    assert log_records(tmp_path, "log.0") == [first, second]
    # A crash tore the first record (its tail never reached the disk).
    path = tmp_path / "journal" / "log.0"
    contents = bytearray(path.read_bytes())
    contents[slot.offset + 100] ^= 0xFF
    path.write_bytes(bytes(contents))
    assert log_records(tmp_path, "log.0") == [second]
    # Records of another generation are retired ones.
    assert list(scan(bytes(contents), slot.generation + 1)) == []
    jr.release(slot)
    jr.close()


def test_a_failed_delivery_leaves_a_hole_the_scan_skips(tmp_path):
    jr, _clock = open_journal(tmp_path)
    folder = tmp_path / "mail" / ALICE
    for sub in ("cur", "new", "tmp"):
        (folder / sub).mkdir(parents=True)
    items: list[tuple[str, bytes, int, str | None]] = [
        ("1.base", message(1), 1_700_000_001, None),
        ("2.base", message(2), 1_700_000_002, "no-such-spare"),
    ]
    (folder / "tmp" / "1.base").mkdir()  # the first cannot be written
    sizes = [size_of(record(1)), size_of(record(2))]
    slot = jr.reserve(sizes)
    assert slot is not None
    outcomes = write_batch_journaled(str(folder), items, slot, ALICE.encode(), sizes)
    assert isinstance(outcomes[0], OSError) and outcomes[1] is None
    assert files_in(folder / "new") == ["2.base"]
    assert log_records(tmp_path, "log.0") == [record(2)]
    jr.release(slot)
    jr.close()


def test_a_journal_that_cannot_be_flushed_takes_the_files_back(tmp_path):
    folder = tmp_path / "mail" / ALICE
    for sub in ("cur", "new", "tmp"):
        (folder / sub).mkdir(parents=True)
    broken = Slot(journal._Log(fd=-1, generation=1), 4096, 1)
    items: list[tuple[str, bytes, int, str | None]] = [("1.base", message(1), 1, None)]
    [outcome] = write_batch_journaled(str(folder), items, broken, ALICE.encode(), [4096])
    assert isinstance(outcome, OSError)
    assert files_in(folder / "new") == [] and files_in(folder / "tmp") == []


def test_replay_keeps_mail_of_a_vanished_folder_and_never_leaves_the_mail_root(tmp_path):
    mail = tmp_path / "mail"
    inbox = mail / ALICE
    for sub in ("cur", "new", "tmp"):
        (inbox / sub).mkdir(parents=True)
    user = ALICE.encode()
    records = [
        Record(user + b"/.Gone", b"1.base", 1_700_000_001, message(1)),  # folder renamed away
        Record(b"nobody@example.test", b"2.base", 1_700_000_002, message(2)),  # account removed
        Record(user + b"/../../escape", b"3.base", 1_700_000_003, message(3)),
        Record(user, b"../4.base", 1_700_000_004, message(4)),
        Record(b".", b"5.base", 1_700_000_005, message(5)),
    ]
    assert journal.replay(str(mail), records) == 1
    assert files_in(inbox / "new") == ["1.base"]
    assert (inbox / "new" / "1.base").read_bytes() == message(1)
    assert (inbox / "new" / "1.base").stat().st_mtime == 1_700_000_001
    assert sorted(os.listdir(tmp_path)) == ["mail"]
    assert sorted(os.listdir(mail)) == [ALICE]


# --- checkpoints ------------------------------------------------------------------------


def test_a_checkpoint_waits_for_the_writes_in_flight_then_retires_them(tmp_path):
    jr, clock = open_journal(tmp_path)
    early = jr.reserve([size_of(record(1))])
    assert early is not None
    clock.advance(CHECKPOINT_DELAY)  # due: the logs switch, but a write is still running
    late = jr.reserve([size_of(record(2))])
    assert late is not None and late.fd != early.fd
    write(early, record(1))
    write(late, record(2))
    assert log_records(tmp_path, "log.0") == [record(1)]
    assert jr.busy
    jr.release(early)  # now the first log is synced and retired
    assert log_records(tmp_path, "log.0") == []
    assert log_records(tmp_path, "log.1") == [record(2)]
    jr.release(late)
    assert not jr.busy
    clock.advance(CHECKPOINT_DELAY)
    assert log_records(tmp_path, "log.1") == []
    jr.close()


def test_a_full_journal_sends_deliveries_the_fsync_way(tmp_path):
    one = size_of(record(1))
    jr, _clock = open_journal(tmp_path, capacity=4096 + 3 * one)
    held: list[Slot] = []
    while (slot := jr.reserve([one])) is not None:
        held.append(slot)
        assert len(held) < 10
    # Both logs filled up: the first still has writers, so it cannot be
    # checkpointed and reused yet.
    assert len(held) == 6 and len({slot.fd for slot in held}) == 2
    for slot in held[:3]:
        jr.release(slot)  # the first log's writers are done: it is synced and free
    assert jr.reserve([one]) is not None
    for slot in held[3:]:
        jr.release(slot)
    jr.close()


# --- the store: crash, replay, clean stop ----------------------------------------------


CRASHING_DELIVERER = textwrap.dedent(
    """
    import os, signal, sys
    from twisted.internet import reactor
    from twisted.internet.defer import gatherResults
    from twistedmail.store import _maildir_journal
    from twistedmail.store.maildir import MaildirStore

    _maildir_journal.CHECKPOINT_DELAY = 3600.0  # the crash comes before any checkpoint

    def deliver(account):
        return gatherResults([
            account.deliver(b"Subject: journalled %d\\r\\n\\r\\nbody %d\\r\\n" % (n, n))
            for n in range(int(sys.argv[2]))
        ])

    def acknowledged(appended):
        print(" ".join(str(a.info.uid) for a in appended), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    def start():
        store = MaildirStore(sys.argv[1], reactor)
        store.account(sys.argv[3]).addCallback(deliver).addCallback(acknowledged)

    reactor.callWhenRunning(start)
    reactor.run()
    """
)


def crash_after_delivering(data_dir: Path, count: int) -> list[int]:
    """A process delivers ``count`` messages, hears every one acknowledged, and is killed."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", CRASHING_DELIVERER, str(data_dir), str(count), ALICE],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    return [int(uid) for uid in done.stdout.split()]


def subject(data: bytes) -> bytes:
    return data.split(b"\r\n", 1)[0]


@pytest_twisted.ensureDeferred
async def test_acknowledged_mail_lost_from_the_maildir_in_a_crash_is_replayed(tmp_path):
    uids = crash_after_delivering(tmp_path, 12)
    assert sorted(uids) == list(range(1, 13))
    root = tmp_path / "mail" / ALICE
    files = files_in(root / "new")
    assert len(files) == 12
    stamps = {name: (root / "new" / name).stat().st_mtime for name in files}
    # What a power cut can do to files that were never fsync'd: some are
    # gone; one was read and flagged, one moved to Archive before the cut.
    os.rename(root / "new" / files[0], root / "cur" / f"{files[0]}:2,S")
    os.rename(root / "new" / files[1], root / ".Archive" / "cur" / f"{files[1]}:2,")
    for name in files[2:]:
        os.unlink(root / "new" / name)
    store = MaildirStore(str(tmp_path), _reactor())
    try:
        account = await store.account(ALICE)
        infos = await account.messages(INBOX)
        assert len(infos) == 11  # nothing lost, the moved one not brought back
        bodies = [await account.fetch(INBOX, info.uid) for info in infos]
        archived = await account.messages("Archive")
        assert len(archived) == 1
        bodies.append(await account.fetch("Archive", archived[0].uid))
        expected = {b"Subject: journalled %d" % n for n in range(12)}
        assert sorted(map(subject, bodies)) == sorted(expected)
        for name in files[2:]:  # written again as they were: name and internal date
            assert (root / "new" / name).stat().st_mtime == stamps[name]
        assert sum(SEEN in info.flags for info in infos) == 1
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_mail_removed_after_a_clean_stop_stays_removed(tmp_path):
    store = MaildirStore(str(tmp_path), _reactor())
    account = await store.account(ALICE)
    appended = [await account.deliver(message(n)) for n in range(3)]
    await account.set_flags(INBOX, [appended[0].info.uid], [SEEN], FlagMode.ADD)
    await store.close()
    root = tmp_path / "mail" / ALICE
    for sub in ("new", "cur"):
        for name in os.listdir(root / sub):
            os.unlink(root / sub / name)  # as another mail program would
    again = MaildirStore(str(tmp_path), _reactor())
    try:
        account = await again.account(ALICE)
        assert await account.messages(INBOX) == []
    finally:
        await again.close()


@pytest_twisted.ensureDeferred
async def test_a_second_store_on_the_same_data_fsyncs_its_own_deliveries(tmp_path):
    first = MaildirStore(str(tmp_path), _reactor())
    second = MaildirStore(str(tmp_path), _reactor())
    try:
        assert first._journal is not None and second._journal is None
        for store in (first, second):
            account = await store.account(ALICE)
            await account.deliver(message(1))
        assert len(files_in(tmp_path / "mail" / ALICE / "new")) == 2
    finally:
        await first.close()
        await second.close()


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@pytest_twisted.ensureDeferred
async def test_a_journal_that_cannot_be_opened_leaves_deliveries_the_fsync_way(tmp_path):
    (tmp_path / "maildir-journal").write_bytes(b"not a directory")
    store = MaildirStore(str(tmp_path), _reactor())
    try:
        assert store._journal is None
        account = await store.account(ALICE)
        appended = await account.deliver(message(1))
        assert await account.fetch(INBOX, appended.info.uid) == message(1)
    finally:
        await store.close()
