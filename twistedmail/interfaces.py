"""
The contracts between twistedmail's parts, and the errors they raise.

The mailbox store is the product: SMTP delivery writes into it, IMAP and HTTP
read and change it, and every backend (in memory, Maildir, a third party's
dropin) must behave exactly as written here.  ``tests/store`` is the
executable form of this text and runs against every backend.

General rules for every `IMailAccount` method:

* Every method returns a `Deferred`; a backend that can answer at once
  returns an already-fired one.  Errors arrive as failures wrapping the
  exceptions below, never as exceptions raised from the call itself.
* Mailbox names use `twistedmail.model.HIERARCHY_DELIMITER` (``/``).
  ``INBOX`` is matched case-insensitively and always reported as ``INBOX``;
  every other name is case-sensitive.  Names are Unicode; a name with an
  empty part (``a//b``, ``/a``, ``a/``), a part of ``.`` or ``..``, NUL,
  control characters, ``\\``, or (for backends that map names to paths)
  anything else that could leave the account's storage fails with
  `InvalidMailboxName` before any change is made.
* Each change is atomic: it is either fully committed (and durable, for a
  persistent backend) when the Deferred fires, or it leaves no trace.
* After a change commits and before its Deferred fires, the account calls
  every listener added with `IMailAccount.listen` with one event from
  `twistedmail.model` per affected mailbox, on the reactor thread.
* UIDs in a mailbox strictly ascend in the order messages are added and are
  never reused within one UIDVALIDITY.  A backend that loses its UID index
  must pick a new, larger UIDVALIDITY.  MODSEQs (RFC 7162) strictly ascend
  per mailbox: every flag change and every expunge takes a new one, and a
  mailbox's HIGHESTMODSEQ is never below any of its messages' MODSEQ.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from zope.interface import Attribute, Interface

if TYPE_CHECKING:  # pragma: no cover
    from twisted.internet.defer import Deferred

    from twistedmail.model import (
        Appended,
        ChangeEvent,
        CopyResult,
        Envelope,
        FlagMode,
        FlagsResult,
        MailboxInfo,
        MailboxStatus,
        MessageInfo,
        SpecialUse,
    )


# --- Errors ---------------------------------------------------------------------
#
# Each protocol maps these to its replies in exactly one place.  Their text is
# for logs, never for clients.


class MailError(Exception):
    """Base class of every error twistedmail's parts raise to each other."""


class NoSuchUser(MailError):
    """The user or address is not known here."""


class NoSuchMailbox(MailError):
    """The mailbox does not exist (IMAP ``NO [NONEXISTENT]`` / ``[TRYCREATE]``)."""


class MailboxExists(MailError):
    """The mailbox already exists (IMAP ``NO [ALREADYEXISTS]``)."""


class InvalidMailboxName(MailError):
    """The name is empty, malformed, or could escape the store."""


class MailboxHasChildren(MailError):
    """DELETE of a mailbox that still has children is refused."""


class MailboxNotAllowed(MailError):
    """The operation is not allowed on this mailbox (e.g. deleting INBOX)."""


class NoSuchMessage(MailError):
    """No message with that UID is in the mailbox (any more)."""


class QuotaExceeded(MailError):
    """Storing this would exceed the account's quota or a size limit."""


class TemporaryFailure(MailError):
    """Something transient failed (disk full, lock timeout); try again later."""


class RelayDenied(MailError):
    """The address is not local and the client may not relay to it."""


class AccountsError(MailError):
    """A change to users, domains or aliases was refused (duplicate, malformed)."""


# --- The mailbox store --------------------------------------------------------------


class IMailAccount(Interface):
    """
    One user's mailboxes.

    An account object is shared by every session of the same user in one
    process, so that events reach them all.  Nothing here lets one account
    see another's mail.
    """

    user = Attribute("The canonical user name (``alice@example.test``); read-only.")

    def list_mailboxes() -> Deferred[list[MailboxInfo]]:
        """
        Every mailbox of the account, sorted by name, INBOX first.

        Parents that exist only as hierarchy are reported with
        ``selectable=False``.
        """

    def create_mailbox(name: str, special_use: SpecialUse | None = None) -> Deferred[MailboxInfo]:
        """
        Create a mailbox, and any missing parents (RFC 3501 §6.3.3).

        Creating a name that exists only as a non-selectable parent makes it
        selectable.  A new mailbox has a new UIDVALIDITY, UIDNEXT 1 and
        HIGHESTMODSEQ 1.  Emits `MailboxCreated` for each mailbox made.

        :raises MailboxExists: the (selectable) mailbox exists, or ``name`` is INBOX.
        :raises InvalidMailboxName: see the module docstring.
        """

    def delete_mailbox(name: str) -> Deferred[None]:
        """
        Delete a mailbox and every message in it.  Emits `MailboxDeleted`.

        :raises NoSuchMailbox: it does not exist.
        :raises MailboxNotAllowed: it is INBOX.
        :raises MailboxHasChildren: it has children (delete those first).
        """

    def rename_mailbox(old: str, new: str) -> Deferred[None]:
        """
        Rename a mailbox and all its children (RFC 3501 §6.3.5).

        Messages keep their UIDs and the mailbox its UIDVALIDITY.  Missing
        parents of ``new`` are created.  Renaming INBOX moves all its messages
        to a new mailbox ``new`` and leaves INBOX empty.  Subscriptions follow
        the rename.  Emits `MailboxRenamed` (one per renamed mailbox) or, for
        INBOX, `MailboxCreated` + `MessagesExpunged`.

        :raises NoSuchMailbox: ``old`` does not exist.
        :raises MailboxExists: ``new`` exists.
        :raises InvalidMailboxName: either name is invalid, or ``new`` lies
            inside ``old``.
        """

    def subscriptions() -> Deferred[frozenset[str]]:
        """The subscribed names (LSUB); they need not exist (RFC 3501 §6.3.6)."""

    def subscribe(name: str) -> Deferred[None]:
        """Add ``name`` to the subscriptions.  :raises InvalidMailboxName:"""

    def unsubscribe(name: str) -> Deferred[None]:
        """Remove ``name`` from the subscriptions; not subscribed is no error."""

    def status(name: str) -> Deferred[MailboxStatus]:
        """
        The counters of one mailbox.

        :raises NoSuchMailbox: it does not exist or is not selectable.
        """

    def messages(name: str) -> Deferred[list[MessageInfo]]:
        """
        Every message of a mailbox, ascending by UID: what SELECT loads.

        For Maildir this is also when mail dropped in by another program is
        picked up (and its events emitted before the result fires).

        :raises NoSuchMailbox:
        """

    def append(
        name: str,
        message: bytes,
        flags: Iterable[str] = (),
        internal_date: datetime | None = None,
    ) -> Deferred[Appended]:
        """
        Store a message durably (fsync'd file and directory for a disk store).

        ``flags`` are normalised (`twistedmail.model.normalize_flags`);
        ``internal_date`` defaults to now.  The bytes are stored exactly as
        given and come back byte-for-byte from `fetch`.  Emits `MessagesAdded`.

        :raises NoSuchMailbox: (IMAP answers ``NO [TRYCREATE]``).
        :raises QuotaExceeded: the message or the account is too big.
        :raises TemporaryFailure: the disk failed; nothing was stored.
        """

    def deliver(message: bytes, mailbox: str = "INBOX") -> Deferred[Appended]:
        """
        The SMTP/LMTP path: `append` to ``mailbox`` with no flags, falling
        back to INBOX when ``mailbox`` does not exist (INBOX is recreated if
        it was somehow lost).  The caller answers ``250`` only after this
        fires.
        """

    def fetch(name: str, uid: int, offset: int = 0, length: int | None = None) -> Deferred[bytes]:
        """
        Raw bytes of one message, or of ``length`` bytes from ``offset``.

        A range past the end is truncated (``b""`` past the end).  A disk
        backend reads only the range it is asked for.

        :raises NoSuchMessage: no such UID.
        :raises NoSuchMailbox:
        """

    def set_flags(
        name: str,
        uids: Sequence[int],
        flags: Iterable[str],
        mode: FlagMode,
        unchanged_since: int | None = None,
    ) -> Deferred[FlagsResult]:
        """
        Replace, add or remove flags on the given messages (STORE).

        UIDs that do not exist are ignored.  Messages whose flags end up the
        same are not changed and keep their MODSEQ.  With ``unchanged_since``
        (RFC 7162 UNCHANGEDSINCE) messages whose MODSEQ is greater are left
        alone and listed in ``failed``.  Emits one `FlagsChanged` if anything
        changed.

        :raises NoSuchMailbox:
        """

    def expunge(name: str, uids: Sequence[int] | None = None) -> Deferred[list[int]]:
        """
        Remove every message flagged ``\\Deleted`` (only those among ``uids``
        when given: RFC 4315 UID EXPUNGE).  Returns the removed UIDs,
        ascending.  Emits `MessagesExpunged` if any went.

        :raises NoSuchMailbox:
        """

    def copy(source: str, uids: Sequence[int], destination: str) -> Deferred[CopyResult]:
        """
        Copy messages with their flags and internal dates (RFC 3501 §6.4.7).

        Missing UIDs are skipped.  Copying a mailbox onto itself is allowed.
        Emits `MessagesAdded` on ``destination``.

        :raises NoSuchMailbox: either mailbox is missing (``[TRYCREATE]`` for
            the destination).
        """

    def move(source: str, uids: Sequence[int], destination: str) -> Deferred[CopyResult]:
        """
        Copy, then expunge the originals, as one operation (RFC 6851).

        Emits `MessagesAdded` on ``destination`` then `MessagesExpunged` on
        ``source``.

        :raises NoSuchMailbox:
        :raises MailboxNotAllowed: ``source`` and ``destination`` are the same.
        """

    def listen(listener: Callable[[ChangeEvent], None]) -> Callable[[], None]:
        """
        Call ``listener`` with every change event of this account, from any
        session or delivery, until the returned callable is called.

        A listener that raises is logged and does not stop other listeners.
        """


class IMailStore(Interface):
    """Where every user's mail lives; a backend provides this."""

    def account(user: str) -> Deferred[IMailAccount]:
        """
        The account of ``user``, made with `DEFAULT_MAILBOXES` if it is new.

        Repeated calls return the same object while the store is open.  The
        store does not check that the user exists in the accounts database:
        its callers (the cred realm, delivery) do that first.

        :raises InvalidMailboxName: ``user`` is not usable as a storage key.
        """

    def remove_account(user: str) -> Deferred[None]:
        """Delete every mailbox and message of ``user``; unknown is no error."""

    def close() -> Deferred[None]:
        """Release files, locks and timers; called when the daemon stops."""


class IStoreMaker(Interface):
    """
    A plugin that builds one kind of store.

    Found with ``twisted.plugin.getPlugins(IStoreMaker)``, so a third party
    adds a backend by installing a dropin in ``twisted/plugins``.
    """

    name = Attribute("The name ``storage =`` picks, e.g. ``maildir``.")
    description = Attribute("One line for ``--help`` and the logs.")

    def make_store(data_dir: str, reactor: object) -> IMailStore:
        """
        A store keeping its data under ``data_dir`` (a backend that keeps
        nothing on disk may ignore it).  ``reactor`` provides at least
        ``IReactorTime`` and ``IReactorThreads`` for timers and thread pools.
        """


# --- Outbound ----------------------------------------------------------------


class IOutbox(Interface):
    """Where mail for remote recipients goes: the durable outbound queue."""

    def enqueue(envelope: Envelope, message: bytes) -> Deferred[str]:
        """
        Write the message and envelope durably; fire with a queue id.

        The submitting client is answered ``250`` only after this fires.

        :raises TemporaryFailure: nothing was queued.
        """
