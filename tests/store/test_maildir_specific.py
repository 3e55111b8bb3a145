"""
What only the Maildir store promises: the files on disk, other programs
working on the same Maildir, locking, and what a crash leaves behind.

The shared behaviour is in the conformance suite; these tests look at the
directory itself, as Dovecot or mutt would.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet import threads
from twisted.internet.defer import gatherResults

from tests.store.maildir_harness import ALICE, drop, files_in
from twistedmail.interfaces import InvalidMailboxName, NoSuchMailbox
from twistedmail.model import (
    ANSWERED,
    DELETED,
    DRAFT,
    FLAGGED,
    INBOX,
    SEEN,
    FlagMode,
    FlagsChanged,
    MailboxInfo,
    MessagesAdded,
    MessagesExpunged,
    SpecialUse,
)
from twistedmail.store._maildir_names import decode_mutf7, encode_mutf7


def message(n: int = 1, size: int = 0) -> bytes:
    body = b"x" * size if size else f"message {n}".encode()
    return b"From: a@example.test\r\nSubject: test %d\r\n\r\n" % n + body + b"\r\n"


# --- names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        ("Sent", "Sent"),
        ("Bär", "B&AOQ-r"),
        ("a&b", "a&-b"),
        ("台北", "&U,BTFw-"),  # RFC 3501 §5.1.3's example
        ("日本語", "&ZeVnLIqe-"),
    ],
)
def test_modified_utf7_round_trips(text: str, encoded: str) -> None:
    assert encode_mutf7(text) == encoded
    assert decode_mutf7(encoded) == text


@pytest_twisted.ensureDeferred
async def test_new_account_layout_is_maildir_plus_plus(stores, root):
    await stores().account(ALICE)
    entries = set(os.listdir(root))
    assert {"cur", "new", "tmp", ".Sent", ".Drafts", ".Trash", ".Junk", ".Archive"} <= entries
    for folder in (".Sent", ".Trash"):
        assert {"cur", "new", "tmp", "maildirfolder"} <= set(os.listdir(root / folder))
    # Dovecot 2.3's subscriptions file: version header, then one name a line.
    text = (root / "subscriptions").read_text()
    assert text.startswith("V\t2\n\n")
    assert set(text.split("\n")[2:-1]) == {"INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"}


@pytest_twisted.ensureDeferred
async def test_folder_directories_use_dots_and_modified_utf7(stores, root):
    account = await stores().account(ALICE)
    await account.create_mailbox("Foo/Bär")
    await account.create_mailbox("a.b")
    assert (root / ".Foo" / "cur").is_dir()
    assert (root / ".Foo.B&AOQ-r" / "cur").is_dir()
    # "." is the on-disk separator: escaped as Dovecot's listescape does.
    assert (root / ".a\\2eb" / "cur").is_dir()
    names = [m.name for m in await account.list_mailboxes()]
    assert {"Foo", "Foo/Bär", "a.b"} <= set(names)
    await account.subscribe("Foo/Bär")
    assert "Foo\tB&AOQ-r\n" in (root / "subscriptions").read_text()


@pytest_twisted.ensureDeferred
async def test_folder_made_by_another_program_is_listed(stores, root):
    account = await stores().account(ALICE)
    for sub in ("cur", "new", "tmp"):
        (root / ".Lists.Python" / sub).mkdir(parents=True)
    (root / ".inbox" / "cur").mkdir(parents=True)  # not a name we would write: ignored
    listed = await account.list_mailboxes()
    assert MailboxInfo("Lists", None, False) in listed
    assert MailboxInfo("Lists/Python", None, True) in listed
    assert [m.name for m in listed].count("INBOX") == 1
    drop(root / ".Lists.Python", "new", "1.2.host", message())
    assert [m.uid for m in await account.messages("Lists/Python")] == [1]


@pytest_twisted.ensureDeferred
async def test_creating_a_bare_parent_directory_makes_it_selectable(stores, root):
    account = await stores().account(ALICE)
    (root / ".Lists").mkdir()
    assert MailboxInfo("Lists", None, False) in await account.list_mailboxes()
    await account.create_mailbox("Lists", SpecialUse.ARCHIVE)
    assert MailboxInfo("Lists", SpecialUse.ARCHIVE, True) in await account.list_mailboxes()
    assert (root / ".Lists" / "maildirfolder").exists()
    await account.append("Lists", message())
    assert (await account.status("Lists")).messages == 1


@pytest_twisted.ensureDeferred
async def test_a_folder_removed_by_another_program_is_gone(stores, root):
    account = await stores().account(ALICE)
    await account.append("Junk", message())
    await account.messages("Junk")
    shutil.rmtree(root / ".Junk")
    with pytest.raises(NoSuchMailbox):
        await account.messages("Junk")
    with pytest.raises(NoSuchMailbox):
        await account.expunge("Junk")
    await account.create_mailbox("Junk")
    assert await account.messages("Junk") == []


@pytest_twisted.ensureDeferred
async def test_special_use_survives_reopen(stores):
    account = await stores().account(ALICE)
    await account.create_mailbox("Old", SpecialUse.ARCHIVE)
    again = await stores().account(ALICE)
    fresh = {m.name: m.special_use for m in await again.list_mailboxes()}
    assert fresh["Sent"] is SpecialUse.SENT
    assert fresh["Old"] is SpecialUse.ARCHIVE
    assert fresh["INBOX"] is None


@pytest.mark.parametrize(
    "user", ["", ".", "..", "../bob@example.test", "a/b@example.test", ".hidden", "a b", "x\x00"]
)
@pytest_twisted.ensureDeferred
async def test_users_that_could_escape_are_refused(stores, tmp_path, user):
    with pytest.raises(InvalidMailboxName):
        await stores().account(user)
    assert not (tmp_path / "bob@example.test").exists()


# --- files and flags -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_delivered_mail_is_a_file_in_new(stores, root):
    account = await stores().account(ALICE)
    data = message(1)
    appended = await account.deliver(data)
    [name] = files_in(root / "new")
    assert re.fullmatch(rf"\d+\.M\d{{6}}P\d+Q\d+R[0-9a-f]+\..+,S={len(data)}", name)
    assert (root / "new" / name).read_bytes() == data
    # Nothing of the message is left in tmp/: at most empty files made
    # ahead for the next deliveries (_maildir_files.make_spares).
    assert all((root / "tmp" / n).stat().st_size == 0 for n in files_in(root / "tmp"))
    mtime = int((root / "new" / name).stat().st_mtime)
    assert appended.info.internal_date == datetime.fromtimestamp(mtime, UTC)


@pytest_twisted.ensureDeferred
async def test_flags_are_the_info_suffix_in_ascii_order(stores, root):
    account = await stores().account(ALICE)
    when = datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)
    appended = await account.append("Sent", message(), [SEEN], when)
    [name] = files_in(root / ".Sent" / "cur")
    assert name.endswith(":2,S")
    assert (root / ".Sent" / "cur" / name).stat().st_mtime == when.timestamp()
    uid = appended.info.uid
    flags = [SEEN, DELETED, FLAGGED, ANSWERED, DRAFT, "$Label1", "Work"]
    await account.set_flags("Sent", [uid], flags, FlagMode.REPLACE)
    [name] = files_in(root / ".Sent" / "cur")
    assert name.endswith(":2,DFRSTab")
    assert (root / ".Sent" / "dovecot-keywords").read_text() == "0 $Label1\n1 Work\n"
    [info] = await account.messages("Sent")
    assert info.flags == frozenset(flags)


@pytest_twisted.ensureDeferred
async def test_flagging_delivered_mail_moves_it_to_cur(stores, root):
    account = await stores().account(ALICE)
    appended = await account.deliver(message())
    await account.set_flags("INBOX", [appended.info.uid], [SEEN], FlagMode.ADD)
    assert files_in(root / "new") == []
    [name] = files_in(root / "cur")
    assert name.endswith(":2,S")


@pytest_twisted.ensureDeferred
async def test_copy_is_a_hard_link_with_the_destination_keywords(stores, root):
    account = await stores().account(ALICE)
    await account.append("INBOX", message(), ["$Junk", "Work"])
    await account.append("Trash", message(2), ["Work"])  # Work is "a" in Trash
    result = await account.copy("INBOX", [1], "Trash")
    assert result.mapping == ((1, 2),)
    [src] = files_in(root / "cur")
    names = files_in(root / ".Trash" / "cur")
    assert src.endswith(":2,ab")
    copied = [n for n in names if n.endswith(":2,ab")]
    assert len(copied) == 1
    assert (root / "cur" / src).stat().st_ino == (root / ".Trash" / "cur" / copied[0]).stat().st_ino
    assert (root / ".Trash" / "dovecot-keywords").read_text() == "0 Work\n1 $Junk\n"


# --- other programs on the same Maildir ------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_mail_dropped_into_new_gets_the_next_uid_and_an_event(stores, root):
    account = await stores().account(ALICE)
    await account.deliver(message(1))
    seen: list[object] = []
    account.listen(seen.append)
    drop(root, "new", "1700000000.P1Q1.otherhost", message(2))
    infos = await account.messages("INBOX")
    assert [i.uid for i in infos] == [1, 2]
    [event] = seen
    assert isinstance(event, MessagesAdded)
    assert [i.uid for i in event.messages] == [2]
    assert await account.fetch("INBOX", 2) == message(2)
    assert infos[1].internal_date == datetime.fromtimestamp(
        int((root / "new" / "1700000000.P1Q1.otherhost").stat().st_mtime), UTC
    )


@pytest_twisted.ensureDeferred
async def test_odd_file_names_do_not_confuse_the_index(stores, root):
    account = await stores().account(ALICE)
    drop(root, "new", "1.with space.host", message(1))
    drop(root, "new", "2.line\nbreak.host", message(2))
    drop(root, "cur", ".hidden", message(3))
    assert [i.uid for i in await account.messages("INBOX")] == [1]
    again = await stores().account(ALICE)
    assert [i.uid for i in await again.messages("INBOX")] == [1]
    assert await again.fetch("INBOX", 1) == message(1)


@pytest_twisted.ensureDeferred
async def test_flags_changed_by_renaming_are_noticed(stores, root):
    account = await stores().account(ALICE)
    appended = await account.append("INBOX", message())
    before = await account.status("INBOX")
    seen: list[object] = []
    account.listen(seen.append)
    [name] = files_in(root / "cur")
    os.rename(root / "cur" / name, root / "cur" / (name.partition(":")[0] + ":2,FS"))
    [info] = await account.messages("INBOX")
    assert info.flags == {SEEN, FLAGGED}
    assert info.modseq > appended.info.modseq
    [event] = seen
    assert isinstance(event, FlagsChanged)
    assert event.messages == (info,)
    assert (await account.status("INBOX")).highestmodseq > before.highestmodseq


@pytest_twisted.ensureDeferred
async def test_a_file_removed_by_another_program_is_expunged(stores, root):
    account = await stores().account(ALICE)
    await account.deliver(message(1))
    await account.deliver(message(2))
    await account.messages("INBOX")
    seen: list[object] = []
    account.listen(seen.append)
    os.unlink(root / "new" / files_in(root / "new")[0])
    assert [i.uid for i in await account.messages("INBOX")] == [2]
    [event] = seen
    assert isinstance(event, MessagesExpunged)
    assert event.uids == (1,)


@pytest_twisted.ensureDeferred
async def test_flags_changed_while_we_were_away_get_a_new_modseq(stores, root):
    account = await stores().account(ALICE)
    appended = await account.append("INBOX", message())
    [name] = files_in(root / "cur")
    os.rename(root / "cur" / name, root / "cur" / (name + "S"))
    reopened = await stores().account(ALICE)
    [info] = await reopened.messages("INBOX")
    assert info.uid == appended.info.uid
    assert info.flags == {SEEN}
    assert info.modseq > appended.info.modseq


@pytest_twisted.ensureDeferred
async def test_two_stores_on_one_maildir_never_share_a_uid(stores):
    """Two MaildirStores on one directory behave like two processes (flock + re-read)."""
    first = await stores().account(ALICE)
    second = await stores().account(ALICE)
    assert first is not second
    deliveries = [(first if n % 2 else second).deliver(message(n)) for n in range(40)]
    appended = await gatherResults(deliveries)
    uids = [a.info.uid for a in appended]
    assert sorted(uids) == list(range(1, 41))
    one = await first.messages("INBOX")
    two = await second.messages("INBOX")
    assert [i.uid for i in one] == [i.uid for i in two] == list(range(1, 41))
    for n, a in enumerate(appended):
        assert await first.fetch("INBOX", a.info.uid) == message(n)
    # A flag change in one is seen, with the same MODSEQ, by the other.
    result = await first.set_flags("INBOX", [5], [SEEN], FlagMode.ADD)
    [info] = [i for i in await second.messages("INBOX") if i.uid == 5]
    assert info == result.changed[0]


_CHILD = """
import sys
from twisted.internet import defer, task
from twistedmail.store.maildir import MaildirStore

async def main(reactor, data_dir, count):
    store = MaildirStore(data_dir, reactor)
    account = await store.account("alice@example.test")
    for start in range(0, count, 5):
        batch = [account.deliver(b"Subject: child\\r\\n\\r\\n") for n in range(5)]
        for appended in await defer.gatherResults(batch):
            print(appended.info.uid)
    await store.close()

task.react(lambda r: defer.Deferred.fromCoroutine(main(r, sys.argv[1], int(sys.argv[2]))))
"""


@pytest_twisted.ensureDeferred
async def test_another_process_delivering_at_the_same_time(stores, tmp_path):
    """A real second process: only the flock and re-reading keep UIDs apart."""
    import sys

    account = await stores().account(ALICE)
    child = threads.deferToThread(
        subprocess.run,
        [sys.executable, "-c", _CHILD, str(tmp_path), "100"],
        capture_output=True,
        timeout=120,
    )
    ours: list[int] = []
    while not child.called or len(ours) < 20:
        batch = await gatherResults([account.deliver(message(n)) for n in range(5)])
        ours += [a.info.uid for a in batch]
    done = await child
    assert done.returncode == 0, done.stderr.decode()
    theirs = [int(line) for line in done.stdout.split()]
    assert len(theirs) == 100
    assert not set(ours) & set(theirs)
    uids = [i.uid for i in await account.messages("INBOX")]
    assert uids == sorted(ours + theirs) == list(range(1, len(uids) + 1))
    again = await stores().account(ALICE)
    assert [i.uid for i in await again.messages("INBOX")] == uids


# --- persistence and crashes ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_uids_and_uidvalidity_persist_across_reopen(stores):
    account = await stores().account(ALICE)
    for n in range(3):
        await account.deliver(message(n))
    await account.expunge("INBOX")  # nothing deleted: no change
    before = await account.status("INBOX")
    again = await stores().account(ALICE)
    after = await again.status("INBOX")
    assert after == before
    assert [i.uid for i in await again.messages("INBOX")] == [1, 2, 3]


@pytest_twisted.ensureDeferred
async def test_lost_index_means_a_new_larger_uidvalidity(stores, root):
    account = await stores().account(ALICE)
    await account.deliver(message(1))
    await account.deliver(message(2))
    before = await account.status("INBOX")
    (root / "twistedmail-uidlist").unlink()
    again = await stores().account(ALICE)
    after = await again.status("INBOX")
    assert after.uidvalidity > before.uidvalidity
    assert after.messages == 2
    assert [i.uid for i in await again.messages("INBOX")] == [1, 2]


@pytest_twisted.ensureDeferred
async def test_a_file_in_new_not_yet_indexed_is_adopted(stores, root):
    """kill -9 between the rename into new/ and the index commit loses nothing."""
    account = await stores().account(ALICE)
    await account.deliver(message(1))
    await account.deliver(message(2))
    await account.expunge("INBOX")
    drop(root, "new", "1800000000.M000001P9Q9.host,S=10", message(3))
    again = await stores().account(ALICE)
    infos = await again.messages("INBOX")
    assert [i.uid for i in infos] == [1, 2, 3]
    assert await again.fetch("INBOX", 3) == message(3)


@pytest_twisted.ensureDeferred
async def test_an_incomplete_index_line_is_ignored_and_cut_off(stores, root):
    account = await stores().account(ALICE)
    await account.deliver(message(1))
    index = root / "twistedmail-uidlist"
    index.write_text(index.read_text() + "+ 7 9 = half-writ")  # a writer died mid-line
    again = await stores().account(ALICE)
    assert [i.uid for i in await again.messages("INBOX")] == [1]
    appended = await again.deliver(message(2))
    assert appended.info.uid == 2
    text = (root / "twistedmail-uidlist").read_text()
    assert "half-writ" not in text
    third = await stores().account(ALICE)
    assert [i.uid for i in await third.messages("INBOX")] == [1, 2]


@pytest_twisted.ensureDeferred
async def test_the_index_log_is_compacted_and_others_follow(stores, root):
    account = await stores().account(ALICE)
    other = await stores().account(ALICE)
    for n in range(10):
        await account.append("INBOX", message(n))
    await other.messages("INBOX")  # has read the log up to here
    for n in range(200):
        await account.set_flags(
            "INBOX", [n % 10 + 1], [SEEN], FlagMode.ADD if n // 10 % 2 == 0 else FlagMode.REMOVE
        )
    lines = (root / "twistedmail-uidlist").read_text().splitlines()
    assert len(lines) < 2 * 10 + 100 + 2
    ours = await account.messages("INBOX")
    assert await other.messages("INBOX") == ours  # followed the rewrite (new inode)
    assert await (await stores().account(ALICE)).messages("INBOX") == ours
    assert (await other.status("INBOX")).highestmodseq == 10 + 1 + 200


@pytest_twisted.ensureDeferred
async def test_stale_tmp_files_are_cleaned_at_open(stores, root):
    await stores().account(ALICE)
    old = root / "tmp" / "1.leftover"
    old.write_bytes(b"half a message")
    long_ago = time.time() - 37 * 3600
    os.utime(old, (long_ago, long_ago))
    fresh = root / "tmp" / "2.in-progress"
    fresh.write_bytes(b"being written")
    account = await stores().account(ALICE)
    await account.messages("INBOX")
    assert files_in(root / "tmp") == ["2.in-progress"]


@pytest_twisted.ensureDeferred
async def test_ranges_read_from_a_large_message(stores):
    account = await stores().account(ALICE)
    data = message(1, size=3 * 1024 * 1024)
    await account.append("INBOX", data)
    assert await account.fetch("INBOX", 1, 10, 20) == data[10:30]
    assert await account.fetch("INBOX", 1, len(data) - 5) == data[-5:]
    assert await account.fetch("INBOX", 1, len(data) + 5, 10) == b""
    assert await account.fetch("INBOX", 1, 100_000, 200_000) == data[100_000:300_000]


# --- large folders -----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_large_unchanged_folder_is_not_listed_again(stores, root):
    store = stores()
    account = await store.account(ALICE)
    folder = root / ".Sent"
    count = 100_000
    for n in range(count):
        fd = os.open(folder / "cur" / f"1600000000.M{n:06d}P1Q1.host,S=0:2,S", os.O_CREAT)
        os.close(fd)
    past = time.time() - 60
    for sub in ("cur", "new"):
        os.utime(folder / sub, (past, past))
    infos = await account.messages("Sent")
    assert len(infos) == count
    assert infos[-1].uid == count
    scans = len(store.listed)
    assert scans == 2  # new/ and cur/, once
    await account.messages("Sent")
    await account.status("Sent")
    assert len(store.listed) == scans
    # Our own changes do not make us list 100,000 names again.
    await account.set_flags("Sent", [7], [FLAGGED], FlagMode.ADD)
    await account.append("Sent", message())
    await account.messages("Sent")
    assert len(store.listed) == scans
    # Another program's change does.
    drop(folder, "new", "1900000000.P1Q1.other", message())
    assert len(await account.messages("Sent")) == count + 2
    assert len(store.listed) > scans


# --- Dovecot reads what we write --------------------------------------------------------

_DOVECOT_IMAP = "/usr/lib/dovecot/imap"


@pytest.mark.skipif(not os.path.exists(_DOVECOT_IMAP), reason="Dovecot is not installed")
@pytest_twisted.ensureDeferred
async def test_dovecot_sees_our_messages_flags_and_folders(stores, root):
    # Not under tmp_path: pytest's base directory is 0700, closed to "nobody".
    work = Path(tempfile.mkdtemp(prefix="twistedmail-dovecot-"))
    try:
        await _dovecot_reads(stores, root, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def _dovecot_reads(stores, root: Path, work: Path) -> None:
    account = await stores().account(ALICE)
    await account.deliver(message(1))
    await account.append("INBOX", message(2), [SEEN, FLAGGED, "Work"])
    await account.create_mailbox("Foo/Bär")
    await account.subscribe("Foo/Bär")
    await account.append("Foo/Bär", message(3))
    maildir = work / "Maildir"
    shutil.copytree(root, maildir, symlinks=True)
    conf = work / "dovecot.conf"
    conf.write_text(
        f"mail_location = maildir:{maildir}\n"
        "namespace inbox {\n  inbox = yes\n  separator = /\n}\n"
        f"ssl = no\nbase_dir = {work}/run\nstate_dir = {work}/state\n"
        f"log_path = {work}/log\n"
    )
    command = [_DOVECOT_IMAP, "-c", str(conf)]
    if os.geteuid() == 0:
        # Dovecot will not serve mail as root: run it as nobody on the copy.
        for top, dirs, names in os.walk(work):
            for name in [".", *dirs, *names]:
                os.chown(os.path.join(top, name), 65534, 65534)
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    script = (
        'a list "" "*"\r\nl lsub "" "*"\r\n'
        "b select INBOX\r\nc uid fetch 1:* (flags body.peek[])\r\n"
        'd select "Foo/B&AOQ-r"\r\ne fetch 1 body.peek[]\r\nf logout\r\n'
    )
    env = {"USER": ALICE, "HOME": str(work), "PATH": os.environ.get("PATH", "/usr/bin")}
    done = await threads.deferToThread(
        subprocess.run, command, input=script.encode(), capture_output=True, env=env, timeout=60
    )
    out = done.stdout.decode("utf-8", "replace")
    assert done.returncode == 0, done.stderr
    assert '"/" Foo/B&AOQ-r' in out
    assert '* LSUB () "/" Foo/B&AOQ-r' in out
    assert '* LSUB () "/" Sent' in out
    assert "b OK" in out and "d OK" in out
    assert "message 1" in out and "message 2" in out and "message 3" in out
    flags = re.findall(r"FLAGS \(([^)]*)\)", out)
    assert any({"\\Seen", "\\Flagged", "Work"} <= set(f.split()) for f in flags), out


# --- long STOREs and EXPUNGEs take turns with everybody else -----------------------


def _fill(root: Path, count: int) -> None:
    """What another program's bulk import does: ``count`` files straight into cur/."""
    for n in range(count):
        drop(root, "cur", f"1700000000.M{n:06d}P1Q{n}.importer:2,", message(n))


def _flagged_on_disk(root: Path) -> int:
    return sum("F" in name.partition(":2,")[2] for name in os.listdir(root / "cur"))


@pytest_twisted.ensureDeferred
async def test_a_store_over_many_messages_lets_other_sessions_in_between(stores, root):
    from twisted.internet import reactor

    account = await stores().account(ALICE)
    _fill(root, 1200)
    uids = [info.uid for info in await account.messages(INBOX)]
    seen_midway: list[int] = []
    done = account.set_flags(INBOX, uids, [FLAGGED], FlagMode.ADD)
    reactor.callLater(0, lambda: seen_midway.append(_flagged_on_disk(root)))
    result = await done
    assert len(result.changed) == 1200 and _flagged_on_disk(root) == 1200
    # Another session's turn came while the files were being renamed.
    [midway] = seen_midway
    assert 0 < midway < 1200
    assert all(FLAGGED in info.flags for info in await account.messages(INBOX))


@pytest_twisted.ensureDeferred
async def test_an_expunge_of_many_messages_lets_other_sessions_in_between(stores, root):
    from twisted.internet import reactor

    account = await stores().account(ALICE)
    _fill(root, 1200)
    infos = await account.messages(INBOX)
    await account.set_flags(INBOX, [info.uid for info in infos[:1100]], [DELETED], FlagMode.ADD)
    heard: list[object] = []
    account.listen(heard.append)
    seen_midway: list[int] = []
    done = account.expunge(INBOX)
    reactor.callLater(0, lambda: seen_midway.append(len(os.listdir(root / "cur"))))
    removed = await done
    assert removed == [info.uid for info in infos[:1100]]
    [midway] = seen_midway
    assert 100 < midway < 1200
    left = await account.messages(INBOX)
    assert [info.uid for info in left] == [info.uid for info in infos[1100:]]
    expunged = [uid for e in heard if isinstance(e, MessagesExpunged) for uid in e.uids]
    assert expunged == removed
    # A fresh process agrees.
    again = await stores().account(ALICE)
    assert [info.uid for info in await again.messages(INBOX)] == [i.uid for i in infos[1100:]]


@pytest_twisted.ensureDeferred
async def test_a_move_of_many_messages_lets_other_sessions_in_between(stores, root):
    from twisted.internet import reactor

    account = await stores().account(ALICE)
    _fill(root, 1200)
    uids = [info.uid for info in await account.messages(INBOX)]
    seen_midway: list[int] = []
    done = account.move(INBOX, uids, "Archive")
    reactor.callLater(0, lambda: seen_midway.append(len(os.listdir(root / "cur"))))
    result = await done
    [midway] = seen_midway
    assert 0 < midway < 1200
    assert [old for old, _new in result.mapping] == uids
    assert await account.messages(INBOX) == []
    archived = await account.messages("Archive")
    assert sorted(info.uid for info in archived) == sorted(new for _old, new in result.mapping)
    assert len(os.listdir(root / ".Archive" / "cur")) == 1200
