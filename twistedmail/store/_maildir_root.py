"""
One user's Maildir++ root: which folders exist, creating, deleting and
renaming them, UIDVALIDITY, subscriptions and special-use attributes.

Folders are created complete (``cur/new/tmp``, ``maildirfolder``, an index,
the special-use file) under a temporary name that can never be a mailbox
(``..new-<random>``) and renamed into place, so another process never sees
half a folder.  Deleting renames the folder out of sight first for the same
reason.  The ``subscriptions`` file is Dovecot 2.3's (``V\\t2`` header, one
name per line, parts separated by a tab, each in modified UTF-7) so that
Dovecot sees the same subscriptions.
"""

from __future__ import annotations

import os
import secrets
import time

from twistedmail.interfaces import (
    InvalidMailboxName,
    MailboxExists,
    MailboxHasChildren,
    MailboxNotAllowed,
    NoSuchMailbox,
)
from twistedmail.model import (
    HIERARCHY_DELIMITER,
    INBOX,
    ChangeEvent,
    MailboxCreated,
    MailboxRenamed,
    SpecialUse,
)
from twistedmail.store._maildir_index import FileLock, UidIndex
from twistedmail.store._maildir_names import (
    decode_mutf7,
    encode_mutf7,
    folder_dir,
    name_of_dir,
)
from twistedmail.store._names import (
    is_inside,
    parents,
    renamed,
    sort_key,
    validate_mailbox_name,
)

_UIDVALIDITY_FILE = "twistedmail-uidvalidity"
_SPECIAL_USE_FILE = "twistedmail-special-use"
_SUBSCRIPTIONS_FILE = "subscriptions"
_ROOT_LOCK = "twistedmail.lock"
_MAX_UIDVALIDITY = 2**32 - 1


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp.{os.getpid()}.{secrets.token_hex(4)}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _make_maildir(path: str) -> None:
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(path, sub), mode=0o700, exist_ok=True)


class AccountRoot:
    """The directory ``<data_dir>/mail/<user>/``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = FileLock(os.path.join(path, _ROOT_LOCK))

    def close(self) -> None:
        self.lock.close()

    def ensure(self) -> bool:
        """Make sure INBOX exists; True if the user directory was new."""
        fresh = not os.path.isdir(self.path)
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        _make_maildir(self.path)
        return fresh

    def new_uidvalidity(self) -> int:
        """
        A UIDVALIDITY larger than any this account handed out before.

        Kept in a root file so that a folder deleted and recreated within
        one second, or an index lost and rebuilt, still gets a larger value
        (RFC 3501 §2.3.1.1); seeded from the clock like Dovecot's.
        """
        path = os.path.join(self.path, _UIDVALIDITY_FILE)
        with self.lock.held():
            try:
                with open(path, encoding="ascii") as f:
                    last = int(f.read().strip() or 0)
            except (FileNotFoundError, ValueError):
                last = 0
            value = max(last + 1, int(time.time()))
            if value > _MAX_UIDVALIDITY:  # pragma: no cover - after year 2106
                value = 1
            _write_atomic(path, f"{value}\n")
        return value

    # --- folders ---------------------------------------------------------------------

    def folder_path(self, name: str) -> str:
        directory = folder_dir(name)
        return self.path if directory is None else os.path.join(self.path, directory)

    def selectable(self, name: str) -> bool:
        return os.path.isdir(os.path.join(self.folder_path(name), "cur"))

    def folders(self) -> dict[str, bool]:
        """Every folder directory here: name -> selectable (has ``cur/``)."""
        found = {INBOX: True}
        with os.scandir(self.path) as entries:
            for entry in entries:
                if entry.is_dir():
                    name = name_of_dir(entry.name)
                    if name is not None:
                        found[name] = os.path.isdir(os.path.join(entry.path, "cur"))
        return found

    def make_folder(self, name: str, special_use: SpecialUse | None) -> None:
        """Create a complete folder (see the module docstring); INBOX is the root."""
        if name == INBOX:
            _make_maildir(self.path)
            return
        final = self.folder_path(name)
        if os.path.isdir(final):
            # A bare directory another program left: make it a folder in place.
            _make_maildir(final)
            open(os.path.join(final, "maildirfolder"), "ab").close()
            if special_use is not None:
                _write_atomic(os.path.join(final, _SPECIAL_USE_FILE), special_use.value + "\n")
            UidIndex(final).create(self.new_uidvalidity())
            return
        staging = os.path.join(self.path, f"..new-{secrets.token_hex(6)}")
        os.mkdir(staging, 0o700)
        _make_maildir(staging)
        open(os.path.join(staging, "maildirfolder"), "wb").close()
        if special_use is not None:
            _write_atomic(os.path.join(staging, _SPECIAL_USE_FILE), special_use.value + "\n")
        UidIndex(staging).create(self.new_uidvalidity())
        os.rename(staging, final)

    def remove_folder(self, name: str) -> str:
        """Move a folder out of sight; return where it went (delete that later)."""
        hidden = os.path.join(self.path, f"..del-{secrets.token_hex(6)}")
        os.rename(self.folder_path(name), hidden)
        return hidden

    def rename_folder(self, old: str, new: str) -> None:
        os.rename(self.folder_path(old), self.folder_path(new))

    def special_use(self, name: str) -> SpecialUse | None:
        if name == INBOX:
            return None
        try:
            with open(os.path.join(self.folder_path(name), _SPECIAL_USE_FILE)) as f:
                return SpecialUse(f.read().strip())
        except (OSError, ValueError):
            return None

    # --- the mailbox tree (each under the root lock) ------------------------------------

    def create(self, name: str, special_use: SpecialUse | None) -> list[ChangeEvent]:
        """CREATE with missing parents (RFC 3501 §6.3.3); the events to emit."""
        name = validate_mailbox_name(name)
        folder_dir(name)
        if name == INBOX:
            raise MailboxExists(name)
        events: list[ChangeEvent] = []
        with self.lock.held():
            existing = self.folders()
            if existing.get(name):
                raise MailboxExists(name)
            for parent in parents(name):
                if not existing.get(parent):
                    self.make_folder(parent, None)
                    events.append(MailboxCreated(parent))
            self.make_folder(name, special_use)
            events.append(MailboxCreated(name))
        return events

    def delete(self, name: str) -> str:
        """Take a childless mailbox out of sight; return where it went."""
        if name == INBOX:
            raise MailboxNotAllowed("INBOX cannot be deleted")
        with self.lock.held():
            existing = self.folders()
            if not existing.get(name):
                raise NoSuchMailbox(name)
            if any(is_inside(other, name) for other in existing):
                raise MailboxHasChildren(name)
            return self.remove_folder(name)

    def rename(self, old: str, new: str) -> list[ChangeEvent]:
        """
        RENAME with children (RFC 3501 §6.3.5), subscriptions following.

        For INBOX only the new, empty mailbox is made here: moving the
        messages is the caller's job.  Each folder is one directory rename.
        """
        old = validate_mailbox_name(old)
        new = validate_mailbox_name(new)
        folder_dir(new)
        events: list[ChangeEvent] = []
        with self.lock.held():
            existing = self.folders()
            if not existing.get(old):
                raise NoSuchMailbox(old)
            if new in existing:
                raise MailboxExists(new)
            if old != INBOX and is_inside(new, old):
                raise InvalidMailboxName(f"cannot rename {old!r} inside itself")
            # INBOX itself stays, so ``INBOX/old`` is a fine new name for its mail.
            moving = [] if old == INBOX else [n for n in existing if renamed(n, old, new) != n]
            moving.sort(key=sort_key)
            for name in moving:
                target = renamed(name, old, new)
                folder_dir(target)
                if target in existing:
                    raise MailboxExists(target)
            for parent in parents(new):
                if not existing.get(parent):
                    self.make_folder(parent, None)
                    events.append(MailboxCreated(parent))
            if old == INBOX:
                self.make_folder(new, None)
                events.append(MailboxCreated(new))
                return events
            for name in moving:
                self.rename_folder(name, renamed(name, old, new))
                events.append(MailboxRenamed(name, renamed(name, old, new)))
            subscribed = self.subscriptions()
            following = {renamed(s, old, new) for s in subscribed}
            if following != subscribed:
                self.write_subscriptions(following)
        return events

    # --- subscriptions ------------------------------------------------------------------

    def subscriptions(self) -> set[str]:
        try:
            with open(os.path.join(self.path, _SUBSCRIPTIONS_FILE), encoding="utf-8") as f:
                lines = f.read().split("\n")
        except FileNotFoundError:
            return set()
        if lines and lines[0] == "V\t2":
            lines = lines[2:]
        names = set()
        for line in lines:
            if not line:
                continue
            try:
                parts = [decode_mutf7(p) for p in line.split("\t")]
                names.add(validate_mailbox_name(HIERARCHY_DELIMITER.join(parts)))
            except (ValueError, InvalidMailboxName):
                pass  # not a name we can show; leave it to its writer
        return names

    def write_subscriptions(self, names: set[str]) -> None:
        lines = [
            "\t".join(encode_mutf7(p) for p in name.split(HIERARCHY_DELIMITER))
            for name in sorted(names)
        ]
        text = "V\t2\n\n" + "".join(line + "\n" for line in lines)
        _write_atomic(os.path.join(self.path, _SUBSCRIPTIONS_FILE), text)
