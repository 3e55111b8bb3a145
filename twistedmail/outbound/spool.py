"""
The outbound queue on disk: what we promised to deliver when we said 250.

Layout under the queue directory::

    messages/<id>         the message bytes, written once, never changed
    envelopes/<id>.json   sender, DSN parameters and per-recipient state
    tmp/                  files being written (removed at startup)
    control/<id>.<op>     requests from the admin command (see `QueueControl`)
    runner.lock           flock'd by the daemon that delivers from this queue

Every file is written to ``tmp/``, fsync'd, renamed into place and its
directory fsync'd.  The message goes first and the envelope second, so an
envelope always has its message; a message without an envelope was never
acknowledged and is removed at startup.  Updates replace the whole envelope
by rename, so after ``kill -9`` either the old or the new state is on disk:
a recipient delivered just before the crash may be delivered once more, but
nothing is lost (RFC 5321 §6.1).  Completion removes the envelope first.

The daemon's changes go through a group commit (`QueueFiles.commit`):
concurrent enqueues, updates and completions share their directory fsyncs
(one for ``messages/``, one for ``envelopes/`` per batch) instead of paying
two each, with the same order on disk as above.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

from twisted.logger import Logger

from twistedmail import _locking
from twistedmail.model import Envelope, Recipient
from twistedmail.outbound.groupcommit import Outcome

log = Logger()

MESSAGES = "messages"
ENVELOPES = "envelopes"
TMP = "tmp"
CONTROL = "control"
LOCK = "runner.lock"
FORMAT_VERSION = 1


class RecipientStatus(enum.Enum):
    """Where one recipient stands; ``PENDING`` covers never tried and deferred (4xx)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class RecipientState:
    """
    One recipient's history.  ``reply`` is the last SMTP reply or our own
    diagnostic (``450 4.2.0 mailbox busy``); ``remote`` the host that gave it.
    """

    recipient: Recipient
    status: RecipientStatus = RecipientStatus.PENDING
    attempts: int = 0
    reply: str | None = None
    status_code: str | None = None
    remote: str | None = None
    updated_at: float | None = None

    @property
    def address(self) -> str:
        return self.recipient.address


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """One queued message: its envelope (without recipients) and their states."""

    id: str
    sender: str
    recipients: tuple[RecipientState, ...]
    queued_at: float
    next_attempt: float
    size: int
    attempts: int = 0
    delay_warned: bool = False
    ret: str | None = None
    envid: str | None = None
    body: str | None = None
    smtputf8: bool = False
    extra: tuple[tuple[str, str], ...] = field(default=())

    @property
    def pending(self) -> tuple[RecipientState, ...]:
        return tuple(r for r in self.recipients if r.status is RecipientStatus.PENDING)

    @property
    def done(self) -> bool:
        return not self.pending

    def envelope(self, recipients: tuple[Recipient, ...] | None = None) -> Envelope:
        """The SMTP envelope, for all recipients or the given ones."""
        return Envelope(
            sender=self.sender,
            recipients=recipients
            if recipients is not None
            else tuple(r.recipient for r in self.recipients),
            ret=self.ret,
            envid=self.envid,
            body=self.body,
            smtputf8=self.smtputf8,
            size=self.size,
            extra=self.extra,
        )

    def with_recipient(self, state: RecipientState) -> QueueEntry:
        """This entry with the state of ``state.address`` replaced."""
        states = tuple(state if r.address == state.address else r for r in self.recipients)
        return replace(self, recipients=states)

    # JSON, the on-disk form (readable, never pickle)

    def to_json(self) -> bytes:
        data = {
            "version": FORMAT_VERSION,
            "id": self.id,
            "sender": self.sender,
            "queued_at": self.queued_at,
            "next_attempt": self.next_attempt,
            "size": self.size,
            "attempts": self.attempts,
            "delay_warned": self.delay_warned,
            "ret": self.ret,
            "envid": self.envid,
            "body": self.body,
            "smtputf8": self.smtputf8,
            "extra": [list(pair) for pair in self.extra],
            "recipients": [
                {
                    "address": r.recipient.address,
                    "notify": list(r.recipient.notify),
                    "orcpt": r.recipient.orcpt,
                    "status": r.status.value,
                    "attempts": r.attempts,
                    "reply": r.reply,
                    "status_code": r.status_code,
                    "remote": r.remote,
                    "updated_at": r.updated_at,
                }
                for r in self.recipients
            ],
        }
        return json.dumps(data, indent=1, ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> QueueEntry:
        """:raises ValueError: not an envelope this version understands."""
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
            raise ValueError("unknown envelope format")
        recipients = tuple(
            RecipientState(
                recipient=Recipient(r["address"], tuple(r.get("notify", ())), r.get("orcpt")),
                status=RecipientStatus(r["status"]),
                attempts=int(r.get("attempts", 0)),
                reply=r.get("reply"),
                status_code=r.get("status_code"),
                remote=r.get("remote"),
                updated_at=r.get("updated_at"),
            )
            for r in data["recipients"]
        )
        return cls(
            id=str(data["id"]),
            sender=str(data["sender"]),
            recipients=recipients,
            queued_at=float(data["queued_at"]),
            next_attempt=float(data["next_attempt"]),
            size=int(data["size"]),
            attempts=int(data.get("attempts", 0)),
            delay_warned=bool(data.get("delay_warned", False)),
            ret=data.get("ret"),
            envid=data.get("envid"),
            body=data.get("body"),
            smtputf8=bool(data.get("smtputf8", False)),
            extra=tuple((str(k), str(v)) for k, v in data.get("extra", ())),
        )


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@dataclass(frozen=True, slots=True)
class Change:
    """
    One change for `QueueFiles.commit`: a store (entry and message), an
    update (entry only) or a removal (neither).
    """

    id: str
    entry: QueueEntry | None = None
    message: bytes | None = field(default=None, repr=False)
    #: What `QueueFiles.stage` wrote in ``tmp/``: the message (stores) and envelope.
    tmp_message: str | None = None
    tmp_envelope: str | None = None


#: Where the queue lives inside the data directory.
QUEUE_SUBDIR = "queue"


def queue_dir(data_dir: str) -> str:
    """The queue directory for a data directory (``DATA_DIR/queue``)."""
    return os.path.join(data_dir, QUEUE_SUBDIR)


def valid_id(queue_id: str) -> bool:
    """Queue ids are what `OutboundQueue.new_id` makes: ASCII letters and digits."""
    return bool(queue_id) and queue_id.isalnum() and queue_id.isascii()


class QueueFiles:
    """
    Blocking file operations on one queue directory.  The daemon runs them
    in threads (through `OutboundQueue`); the admin command calls them
    directly.
    """

    def __init__(self, queue_dir: str) -> None:
        self.root = queue_dir
        for sub in (MESSAGES, ENVELOPES, TMP, CONTROL):
            os.makedirs(os.path.join(queue_dir, sub), exist_ok=True)

    def message_path(self, queue_id: str) -> str:
        return os.path.join(self.root, MESSAGES, queue_id)

    def envelope_path(self, queue_id: str) -> str:
        return os.path.join(self.root, ENVELOPES, queue_id + ".json")

    def _write_tmp(self, path: str, data: bytes) -> str:
        """``data`` in a new fsync'd file in ``tmp/``, named after ``path``; its name."""
        tmp = os.path.join(self.root, TMP, f"{os.path.basename(path)}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        return tmp

    def _write(self, path: str, data: bytes) -> None:
        tmp = self._write_tmp(path, data)
        try:
            os.rename(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        self._sync_dir(os.path.dirname(path))

    @staticmethod
    def _sync_dir(directory: str) -> None:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def store(self, entry: QueueEntry, message: bytes) -> None:
        """Message first, then the envelope: an envelope always has its message."""
        self._write(self.message_path(entry.id), message)
        self._write(self.envelope_path(entry.id), entry.to_json())

    def write_entry(self, entry: QueueEntry) -> bool:
        """Replace the envelope; False (nothing written) if the entry was deleted meanwhile."""
        if not os.path.exists(self.message_path(entry.id)):
            return False
        self._write(self.envelope_path(entry.id), entry.to_json())
        return True

    def remove(self, queue_id: str) -> None:
        """Envelope first, so a crash leaves only an unacknowledged-looking orphan."""
        for path in (self.envelope_path(queue_id), self.message_path(queue_id)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            self._sync_dir(os.path.dirname(path))

    def stage(self, change: Change) -> Change:
        """
        Write and fsync a store's or an update's files in ``tmp/``: the slow
        part, done for each change in its own thread, concurrently (the file
        system joins concurrent fsyncs into one journal commit).
        """
        if change.entry is None or change.tmp_envelope is not None:
            return change
        tmp_message = None
        if change.message is not None:
            tmp_message = self._write_tmp(self.message_path(change.id), change.message)
        try:
            tmp_envelope = self._write_tmp(self.envelope_path(change.id), change.entry.to_json())
        except BaseException:
            if tmp_message is not None:
                os.unlink(tmp_message)
            raise
        return replace(change, tmp_message=tmp_message, tmp_envelope=tmp_envelope)

    def commit(self, changes: Sequence[Change]) -> list[Outcome]:
        """
        Make a batch of changes durable with two directory fsyncs in all.

        Order on disk, as for single changes: new messages renamed into
        place and ``messages/`` fsync'd; then envelopes renamed or removed
        and ``envelopes/`` fsync'd (the commit point of every change); then
        completed messages unlinked, unsynced (a message left without its
        envelope by a crash is removed at startup).  Changes not yet staged
        are staged here.

        :returns: per change: None (store, remove), True or False (update:
            False when the entry was deleted meanwhile), or the exception
            that failed it.
        """
        outcomes: list[Outcome] = [None] * len(changes)
        staged = list(changes)
        for i, change in enumerate(changes):
            if change.entry is None:
                continue  # a removal
            if change.message is None and not os.path.exists(self.message_path(change.id)):
                outcomes[i] = False
                continue
            try:
                staged[i] = self.stage(change)
            except Exception as err:
                outcomes[i] = err
        stored = []
        for i, change in enumerate(staged):
            if change.tmp_message is not None and outcomes[i] is None:
                stored.append(i)
                self._step(i, outcomes, os.rename, change.tmp_message, self.message_path(change.id))
        self._sync_group(MESSAGES, [i for i in stored if outcomes[i] is None], outcomes)
        enveloped = []
        for i, change in enumerate(staged):
            if outcomes[i] is not None:
                continue
            if change.entry is None:
                self._step(i, outcomes, _unlink, self.envelope_path(change.id))
            elif change.tmp_envelope is not None:
                self._step(
                    i, outcomes, os.rename, change.tmp_envelope, self.envelope_path(change.id)
                )
            enveloped.append(i)
        self._sync_group(ENVELOPES, [i for i in enveloped if outcomes[i] is None], outcomes)
        for i, change in enumerate(staged):
            if outcomes[i] is None and change.entry is None:
                with contextlib.suppress(OSError):
                    _unlink(self.message_path(change.id))
            elif outcomes[i] is None and change.message is None:
                outcomes[i] = True
            elif outcomes[i] is not None:
                self._undo(change)
        return outcomes

    @staticmethod
    def _step(i: int, outcomes: list[Outcome], fn: Callable[..., None], *args: str) -> None:
        try:
            fn(*args)
        except Exception as err:
            outcomes[i] = err

    def _sync_group(self, sub: str, members: list[int], outcomes: list[Outcome]) -> None:
        """One directory fsync for ``members``; if it fails, they all fail."""
        if not members:
            return
        try:
            self._sync_dir(os.path.join(self.root, sub))
        except OSError as err:
            for i in members:
                outcomes[i] = err

    def _undo(self, change: Change) -> None:
        """
        Best effort after a failed store or update (or one of a deleted
        entry): no temporary files left, and a store that was refused (451)
        leaves no message to deliver.
        """
        for tmp in (change.tmp_message, change.tmp_envelope):
            if tmp is not None:
                with contextlib.suppress(OSError):
                    _unlink(tmp)
        if change.message is not None and change.tmp_envelope is not None:
            for path in (self.envelope_path(change.id), self.message_path(change.id)):
                with contextlib.suppress(OSError):
                    _unlink(path)

    def read_message(self, queue_id: str) -> bytes:
        with open(self.message_path(queue_id), "rb") as f:
            return f.read()

    def read_entry(self, queue_id: str) -> QueueEntry | None:
        try:
            with open(self.envelope_path(queue_id), "rb") as f:
                return QueueEntry.from_json(f.read())
        except FileNotFoundError:
            return None

    def ids(self) -> list[str]:
        names = os.listdir(os.path.join(self.root, ENVELOPES))
        return sorted(n[: -len(".json")] for n in names if n.endswith(".json"))

    def entries(self) -> Iterator[QueueEntry]:
        """Every readable entry, oldest id first; damaged ones are logged and skipped."""
        for queue_id in self.ids():
            try:
                entry = self.read_entry(queue_id)
            except (ValueError, KeyError, TypeError, OSError) as err:
                log.error("Skipping damaged queue envelope {id}: {error}", id=queue_id, error=err)
                continue
            if entry is not None:
                yield entry

    def clean(self, keep: frozenset[str] = frozenset()) -> int:
        """
        Remove leftovers of interrupted writes: temporary files, and messages
        whose envelope never made it (never acknowledged).  ``keep`` are ids
        being enqueued right now.  Returns how many files went.
        """
        removed = 0
        tmp_dir = os.path.join(self.root, TMP)
        for name in os.listdir(tmp_dir):
            if name.split(".", 1)[0] not in keep:
                os.unlink(os.path.join(tmp_dir, name))
                removed += 1
        with_envelope = set(self.ids())
        for name in os.listdir(os.path.join(self.root, MESSAGES)):
            if name not in with_envelope and name not in keep:
                os.unlink(self.message_path(name))
                removed += 1
        return removed

    # Locking: one daemon delivers from a queue; the admin command asks whether one does.

    def try_lock(self) -> int | None:
        """Take the runner lock; the fd (keep it open) or None if another process holds it."""
        return _locking.try_lock(os.path.join(self.root, LOCK))

    # Admin requests, applied by the daemon that holds the lock.

    def request(self, queue_id: str, operation: str) -> None:
        self._write(os.path.join(self.root, CONTROL, f"{queue_id}.{operation}"), b"")

    def requests(self) -> list[tuple[str, str]]:
        out = []
        for name in sorted(os.listdir(os.path.join(self.root, CONTROL))):
            queue_id, _, operation = name.partition(".")
            out.append((queue_id, operation))
        return out

    def request_done(self, queue_id: str, operation: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.root, CONTROL, f"{queue_id}.{operation}"))
