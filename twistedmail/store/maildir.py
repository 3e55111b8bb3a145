"""
The Maildir++ mail store: mail as files Dovecot, Courier and mutt can read.

Layout, under ``<data_dir>/mail/<user>/``:

* INBOX is the root's ``cur/ new/ tmp/``; mailbox ``a/b`` is the directory
  ``.a.b`` (Maildir++ uses ``.`` on disk where we show ``/``), each part in
  modified UTF-7 as Dovecot writes it, and a ``.`` inside a part written
  ``\\2e`` as Dovecot's ``listescape`` plugin does (Dovecot's plain
  ``LAYOUT=maildir++`` would refuse such a name; we accept every name the
  in-memory store accepts).  See `_maildir_names`.
* Message files are ``<unique base>,S=<size>:2,<flags>`` with the flags in
  ASCII order and keywords as ``a``..``z`` through ``dovecot-keywords``
  (`_maildir_keywords`).  Delivered mail goes to ``new/``, appended and
  flagged mail to ``cur/``; a file's mtime is its internal date.
* ``twistedmail-uidlist`` in each folder keeps UIDVALIDITY, UIDs and MODSEQs
  (`_maildir_index`), ``subscriptions`` is Dovecot's file, and
  ``twistedmail-special-use`` in a folder holds its RFC 6154 attribute.

Writes follow the maildir spec and our contract: the file is written into
``tmp/`` and fsync'd in the reactor's thread pool, renamed into place, the
directory fsync'd, and only then is a UID committed and the Deferred fired.
Deliveries into one folder that arrive together share that work: one
thread job, one directory fsync, one index append (`_maildir_delivery`).
SMTP deliveries of up to 256 KiB take one flush instead of two: their bytes
are also appended to the store's delivery journal (``maildir-journal/``
beside ``mail/``), which is what makes them durable before the ``250``;
the Maildir files follow with one ``syncfs`` per batch, and opening the
store replays the journal after a crash (`_maildir_journal`).
Index and cache bookkeeping stays on the reactor thread.  Mail that other
programs drop in, flag or remove is noticed by the next read of the folder
(`_maildir_folder`); a delivery does not look.

Known limits: a mailbox rename with children is one directory rename per
mailbox, so a crash in the middle leaves some renamed and some not (nothing
is lost); keywords beyond a folder's 26 letters live only in our index, so
other programs do not see them, and a keyword containing a blank is not
kept at all (an IMAP atom cannot contain one); the lock is our own ``flock`` on
``twistedmail-uidlist.lock``, not Dovecot's dotlock, so a Dovecot running
on the same Maildir at the same time only ever sees consistent files, while
the two indexes stay separate.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twistedmail.interfaces import (
    IMailAccount,
    IMailStore,
    InvalidMailboxName,
    MailboxNotAllowed,
    NoSuchMailbox,
    NoSuchMessage,
    TemporaryFailure,
)
from twistedmail.model import (
    DEFAULT_MAILBOXES,
    DELETED,
    INBOX,
    Appended,
    ChangeEvent,
    CopyResult,
    FlagMode,
    FlagsChanged,
    FlagsResult,
    MailboxDeleted,
    MailboxInfo,
    MailboxRenamed,
    MailboxStatus,
    MessageInfo,
    SpecialUse,
    normalize_flags,
)
from twistedmail.model import internal_date as internal_date_of
from twistedmail.store import _maildir_files as files
from twistedmail.store._events import Listeners
from twistedmail.store._maildir_files import UniqueNames
from twistedmail.store._maildir_folder import Folder
from twistedmail.store._maildir_journal import Journal
from twistedmail.store._maildir_names import check_user, folder_dir
from twistedmail.store._maildir_root import AccountRoot
from twistedmail.store._maildir_transfer import RENAMES_AT_ONCE, Transfer
from twistedmail.store._maildir_writers import Writers
from twistedmail.store._names import (
    parents,
    sort_key,
    validate_mailbox_name,
)

log = Logger()

_P = ParamSpec("_P")
_T = TypeVar("_T")

#: Ranges up to this size are read on the reactor thread; bigger ones in a thread.
_INLINE_READ = 64 * 1024


@implementer(IMailAccount)
class MaildirAccount:
    """One user's Maildir++.  See `IMailAccount` for each method."""

    def __init__(
        self,
        user: str,
        root: AccountRoot,
        reactor: Any,
        names: UniqueNames,
        listdir: Callable[[str], list[str]],
        journal: Journal | None = None,
        writers: Callable[..., Deferred[Any]] | None = None,
    ) -> None:
        self._user = user
        self._root = root
        self._reactor = reactor
        self._transfer = Transfer(
            names,
            self._thread,
            writers or self._in_thread,
            self._emit,
            reactor.seconds,
            journal,
            self._let_others_in,
        )
        self._listdir = listdir
        self._listeners = Listeners(user)
        self._folders: dict[str, Folder] = {}

    @property
    def user(self) -> str:
        return self._user

    # --- plumbing -------------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, _T]) -> Deferred[_T]:
        return Deferred.fromCoroutine(coro)

    async def _thread(self, call: Callable[_P, _T], *args: _P.args, **kw: _P.kwargs) -> _T:
        result: _T = await self._in_thread(call, *args, **kw)
        return result

    def _in_thread(self, call: Callable[_P, _T], *args: _P.args, **kw: _P.kwargs) -> Deferred[_T]:
        pool = self._reactor.getThreadPool()
        return deferToThreadPool(self._reactor, pool, call, *args, **kw)

    def _emit(self, events: Iterable[ChangeEvent]) -> None:
        self._listeners.emit_all(events)

    def close(self) -> None:
        for folder in self._folders.values():
            folder.close()
        self._folders.clear()
        self._root.close()

    def _drop(self, name: str) -> None:
        folder = self._folders.pop(name, None)
        if folder is not None:
            folder.close()

    def _folder(self, name: str) -> Folder:
        name = validate_mailbox_name(name)
        folder = self._folders.get(name)
        if folder is None:
            folder_dir(name)  # refuses names too long for a directory
            if not self._root.selectable(name):
                raise NoSuchMailbox(name)
            path = self._root.folder_path(name)
            folder = Folder(name, path, self._root.new_uidvalidity, self._listdir)
            self._folders[name] = folder
        return folder

    def _synced(self, name: str) -> Folder:
        folder = self._folder(name)
        self._emit(self._catch_up(folder))
        return folder

    def _catch_up(self, folder: Folder) -> list[ChangeEvent]:
        """
        Catch up with the disk; return the events for what others changed.

        Callers holding a folder lock emit them only after letting go, so a
        listener that calls back into the account never runs in the middle
        of an operation.
        """
        try:
            return folder.sync()
        except NoSuchMailbox:
            self._drop(folder.name)  # deleted by another process
            raise

    # --- mailboxes ------------------------------------------------------------------

    def list_mailboxes(self) -> Deferred[list[MailboxInfo]]:
        return self._run(self._list_mailboxes())

    async def _list_mailboxes(self) -> list[MailboxInfo]:
        found = self._root.folders()
        for name in list(found):
            for parent in parents(name):
                found.setdefault(parent, False)
        return [
            MailboxInfo(name, self._root.special_use(name) if found[name] else None, found[name])
            for name in sorted(found, key=sort_key)
        ]

    def create_mailbox(
        self, name: str, special_use: SpecialUse | None = None
    ) -> Deferred[MailboxInfo]:
        return self._run(self._create_mailbox(name, special_use))

    async def _create_mailbox(self, name: str, special_use: SpecialUse | None) -> MailboxInfo:
        self._emit(self._root.create(name, special_use))
        return MailboxInfo(validate_mailbox_name(name), special_use, True)

    def delete_mailbox(self, name: str) -> Deferred[None]:
        return self._run(self._delete_mailbox(name))

    async def _delete_mailbox(self, name: str) -> None:
        name = validate_mailbox_name(name)
        self._drop(name)
        hidden = self._root.delete(name)
        # RFC 3501 §6.3.4: subscriptions are not removed with the mailbox.
        await self._thread(files.remove_tree, hidden)
        self._emit([MailboxDeleted(name)])

    def rename_mailbox(self, old: str, new: str) -> Deferred[None]:
        return self._run(self._rename_mailbox(old, new))

    async def _rename_mailbox(self, old: str, new: str) -> None:
        events = self._root.rename(old, new)
        for event in events:
            if isinstance(event, MailboxRenamed):
                self._drop(event.old)
        self._emit(events)
        old, new = validate_mailbox_name(old), validate_mailbox_name(new)
        if old == INBOX:
            # RFC 3501 §6.3.5: INBOX's mail moves to the new mailbox; INBOX stays.
            inbox = self._synced(INBOX)
            uids = [info.uid for info in inbox.messages()]
            await self._transfer.run(inbox, uids, self._synced(new), move=True, quiet=True)

    # --- subscriptions -------------------------------------------------------------

    def subscriptions(self) -> Deferred[frozenset[str]]:
        return self._run(self._subscriptions())

    async def _subscriptions(self) -> frozenset[str]:
        return frozenset(self._root.subscriptions())

    def subscribe(self, name: str) -> Deferred[None]:
        return self._run(self._subscribe(name, True))

    def unsubscribe(self, name: str) -> Deferred[None]:
        return self._run(self._subscribe(name, False))

    async def _subscribe(self, name: str, on: bool) -> None:
        name = validate_mailbox_name(name)
        with self._root.lock.held():
            names = self._root.subscriptions()
            if (name in names) != on:
                if on:
                    names.add(name)
                else:
                    names.discard(name)
                self._root.write_subscriptions(names)

    # --- reading ------------------------------------------------------------------

    def status(self, name: str) -> Deferred[MailboxStatus]:
        return self._run(self._status(name))

    async def _status(self, name: str) -> MailboxStatus:
        return self._synced(name).status()

    def messages(self, name: str) -> Deferred[list[MessageInfo]]:
        return self._run(self._messages(name))

    async def _messages(self, name: str) -> list[MessageInfo]:
        return list(self._synced(name).messages())

    def fetch(
        self, name: str, uid: int, offset: int = 0, length: int | None = None
    ) -> Deferred[bytes]:
        return self._run(self._fetch(name, uid, offset, length))

    async def _fetch(self, name: str, uid: int, offset: int, length: int | None) -> bytes:
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("negative offset or length")
        folder = self._synced(name)
        for _attempt in range(2):
            entry = folder.entry(uid)
            if entry is None:
                break
            size = entry.info.size
            wanted = max(0, size - offset) if length is None else min(length, max(0, size - offset))
            try:
                if wanted <= _INLINE_READ:
                    return files.read_range(folder.file_path(entry), offset, wanted)
                return await self._thread(files.read_range, folder.file_path(entry), offset, wanted)
            except FileNotFoundError:
                # Renamed (flags) or removed by another program: look again.
                folder.invalidate()
                folder = self._synced(name)
        raise NoSuchMessage(f"{name} UID {uid}")

    # --- adding -------------------------------------------------------------------

    def append(
        self,
        name: str,
        message: bytes,
        flags: Iterable[str] = (),
        internal_date: datetime | None = None,
    ) -> Deferred[Appended]:
        return self._run(self._append(name, message, normalize_flags(flags), internal_date))

    async def _append(
        self, name: str, message: bytes, flags: frozenset[str], internal_date: datetime | None
    ) -> Appended:
        if not isinstance(message, bytes):
            raise TypeError("message must be bytes")
        folder = self._synced(name)
        if internal_date is None:
            when = datetime.fromtimestamp(int(self._reactor.seconds()), UTC)
        else:
            when = internal_date_of(internal_date)
        return await self._transfer.store(folder, message, flags, when, deliver=False)

    def deliver(self, message: bytes, mailbox: str = INBOX) -> Deferred[Appended]:
        """
        A missing or invalid mailbox falls back to INBOX, as memory.py does.

        No sync first (see `Transfer.deliver`): a mailbox removed behind our
        back shows up as the write failing, and then INBOX takes the mail.
        Plain callbacks rather than a coroutine: every SMTP delivery comes
        through here.
        """
        if not isinstance(message, bytes):
            return fail(TypeError("message must be bytes"))
        when = datetime.fromtimestamp(int(self._reactor.seconds()), UTC)
        try:
            folder = self._folder(mailbox)
        except (InvalidMailboxName, NoSuchMailbox):
            return self._run(self._deliver_to_inbox(message, when))
        except Exception:
            return fail()
        d = self._transfer.deliver(folder, message, when)

        def gone(failure: Failure) -> Deferred[Appended]:
            if not isinstance(failure.value, NoSuchMailbox):
                return fail(failure)
            self._drop(folder.name)  # deleted by another program
            return self._run(self._deliver_to_inbox(message, when))

        return d.addErrback(gone)

    async def _deliver_to_inbox(self, message: bytes, when: datetime) -> Appended:
        self._root.ensure()
        return await self._transfer.deliver(self._folder(INBOX), message, when)

    def copy(self, source: str, uids: Sequence[int], destination: str) -> Deferred[CopyResult]:
        return self._run(self._copy(source, uids, destination, False))

    def move(self, source: str, uids: Sequence[int], destination: str) -> Deferred[CopyResult]:
        return self._run(self._copy(source, uids, destination, True))

    async def _copy(
        self, source: str, uids: Sequence[int], destination: str, move: bool
    ) -> CopyResult:
        for name in (source, destination):
            folder_dir(validate_mailbox_name(name))
        src = self._synced(source)
        dst = self._synced(destination)
        if move and src is dst:
            raise MailboxNotAllowed("MOVE onto the same mailbox")
        return await self._transfer.run(src, uids, dst, move=move)

    # --- changing -------------------------------------------------------------------

    def set_flags(
        self,
        name: str,
        uids: Sequence[int],
        flags: Iterable[str],
        mode: FlagMode,
        unchanged_since: int | None = None,
    ) -> Deferred[FlagsResult]:
        return self._run(self._set_flags(name, uids, normalize_flags(flags), mode, unchanged_since))

    async def _set_flags(
        self,
        name: str,
        uids: Sequence[int],
        flags: frozenset[str],
        mode: FlagMode,
        unchanged_since: int | None,
    ) -> FlagsResult:
        folder = self._folder(name)
        changed: list[MessageInfo] = []
        failed: list[int] = []
        wanted = sorted(set(uids))
        for start in range(0, max(len(wanted), 1), RENAMES_AT_ONCE):
            if start:
                await self._let_others_in()
            with folder.lock.held():
                found = self._catch_up(folder)
                folder.keywords.refresh()
                with folder.own_change(("new", "cur")):
                    for uid in wanted[start : start + RENAMES_AT_ONCE]:
                        entry = folder.entry(uid)
                        if entry is None:
                            continue
                        # RFC 7162 §3.1.3: UNCHANGEDSINCE fails messages changed after it.
                        if unchanged_since is not None and entry.info.modseq > unchanged_since:
                            failed.append(uid)
                            continue
                        new_flags = mode.apply(entry.info.flags, flags)
                        if new_flags != entry.info.flags:
                            info = folder.rename_flags(entry, new_flags)
                            if info is not None:
                                changed.append(info)
                folder.index.flush()
            self._emit(found)
        if changed:
            await self._thread(files.fsync_dirs, [os.path.join(folder.path, "cur")])
            self._emit([FlagsChanged(folder.name, folder.uidvalidity, tuple(changed))])
        return FlagsResult(tuple(changed), tuple(failed))

    def _let_others_in(self) -> Deferred[None]:
        """
        A turn of the reactor between long runs of renames or unlinks: a
        STORE or EXPUNGE over 10,000 messages is 0.1-0.2 s of system calls,
        which must not pause every other session at once.
        """
        return deferLater(self._reactor, 0, lambda: None)

    def expunge(self, name: str, uids: Sequence[int] | None = None) -> Deferred[list[int]]:
        return self._run(self._expunge(name, uids))

    async def _expunge(self, name: str, uids: Sequence[int] | None) -> list[int]:
        folder = self._folder(name)
        wanted = None if uids is None else set(uids)
        removed: list[int] = []
        events: list[ChangeEvent] = []
        more = True
        while more:
            if removed:
                await self._let_others_in()
            batch: list[int] = []
            with folder.lock.held():
                found = self._catch_up(folder)
                with folder.own_change(("new", "cur")):
                    for info in folder.messages():
                        if DELETED in info.flags and (wanted is None or info.uid in wanted):
                            if len(batch) == RENAMES_AT_ONCE:
                                break  # the rest after a turn of the reactor
                            entry = folder.entry(info.uid)
                            assert entry is not None
                            try:
                                os.unlink(folder.file_path(entry))
                            except FileNotFoundError:
                                folder.invalidate()  # renamed meanwhile; the next sync decides
                                continue
                            batch.append(info.uid)
                    else:
                        more = False
                event = folder.forget(batch)
                folder.index.flush()
            self._emit(found)
            removed += batch
            if event is not None:
                events.append(event)
            if not batch:
                break
        if events:
            dirs = [os.path.join(folder.path, d) for d in ("new", "cur")]
            await self._thread(files.fsync_dirs, dirs)
            self._emit(events)
        return removed

    def listen(self, listener: Callable[[ChangeEvent], None]) -> Callable[[], None]:
        return self._listeners.add(listener)


@implementer(IMailStore)
class MaildirStore:
    """
    Every user's Maildir++ under ``<data_dir>/mail/``.

    ``reactor`` provides ``IReactorTime`` (default internal dates) and
    ``IReactorThreads`` (file writes and fsyncs run in its thread pool).
    ``journal=False`` makes every delivery fsync its own file and directory
    instead of using the delivery journal (bench/delivery_bench.py compares).
    """

    def __init__(self, data_dir: str, reactor: Any, *, journal: bool = True) -> None:
        data_dir = os.path.abspath(data_dir)
        self._base = os.path.join(data_dir, "mail")
        self._reactor = reactor
        self._names = UniqueNames()
        self._accounts: dict[str, MaildirAccount] = {}
        self._journal = (
            self._open_journal(os.path.join(data_dir, "maildir-journal")) if journal else None
        )
        self._writers = Writers(reactor)

    def _open_journal(self, directory: str) -> Journal | None:
        """
        The delivery journal (see `_maildir_journal`), replayed if a crash
        left records in it; None (deliveries fsync their own files) if
        another store has it or it cannot be opened.
        """

        def thread(call: Callable[..., _T], *args: Any) -> Deferred[_T]:
            pool = self._reactor.getThreadPool()
            return deferToThreadPool(self._reactor, pool, call, *args)

        try:
            return Journal.open(directory, self._base, thread, self._reactor.callLater)
        except OSError as e:
            log.warn(
                "No delivery journal in {directory} ({error}): every delivery fsyncs its files",
                directory=directory,
                error=e.strerror,
            )
            return None

    def _listdir(self, path: str) -> list[str]:
        """Every directory listing of message files goes through here (tests count them)."""
        return os.listdir(path)

    def account(self, user: str) -> Deferred[IMailAccount]:
        found = self._accounts.get(user)  # the common case: no coroutine
        if found is not None:
            return succeed(found)
        return Deferred.fromCoroutine(self._account(user))

    async def _account(self, user: str) -> IMailAccount:
        key = check_user(user)
        found = self._accounts.get(key)
        if found is not None:
            return found
        try:
            root = AccountRoot(os.path.join(self._base, key))
            if root.ensure():
                with root.lock.held():
                    for name, special_use in DEFAULT_MAILBOXES:
                        root.make_folder(name, special_use)
                    root.write_subscriptions({name for name, _ in DEFAULT_MAILBOXES})
        except OSError as e:
            raise TemporaryFailure(f"cannot open the Maildir of {key}") from e
        found = self._accounts.get(key)  # pragma: no branch - nothing yielded above
        if found is None:
            found = MaildirAccount(
                key, root, self._reactor, self._names, self._listdir, self._journal, self._writers
            )
            self._accounts[key] = found
        return found

    def remove_account(self, user: str) -> Deferred[None]:
        return Deferred.fromCoroutine(self._remove_account(user))

    async def _remove_account(self, user: str) -> None:
        key = check_user(user)
        account = self._accounts.pop(key, None)
        if account is not None:
            account.close()
        hidden = os.path.join(self._base, f".del-{os.urandom(6).hex()}")
        try:
            # Out of sight at once; the slow delete happens in a thread.
            os.rename(os.path.join(self._base, key), hidden)
        except FileNotFoundError:
            return
        pool = self._reactor.getThreadPool()
        await deferToThreadPool(self._reactor, pool, files.remove_tree, hidden)

    def close(self) -> Deferred[None]:
        """Deliveries still being written finish first; then the journal is checkpointed."""
        for account in self._accounts.values():
            account.close()
        self._accounts.clear()
        self._writers.shutdown()
        journal, self._journal = self._journal, None
        if journal is None:
            return succeed(None)
        return journal.when_idle().addCallback(lambda _: journal.close())
