"""
Mailbox commands (RFC 3501 §6.3): SELECT, EXAMINE, CREATE, DELETE, RENAME,
SUBSCRIBE, UNSUBSCRIBE, LIST, LSUB, STATUS, APPEND, with the extensions
that qualify them (CONDSTORE, SPECIAL-USE, LIST-EXTENDED, LIST-STATUS,
UIDPLUS, APPENDLIMIT).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twistedmail.imap import wire
from twistedmail.imap.dispatch import AUTH, CommandSpec
from twistedmail.imap.errors import Reply, bad, no, ok, reply_for
from twistedmail.imap.listing import DELIMITER, Entry, list_entries, lsub_entries, pattern_matcher
from twistedmail.imap.parser import (
    AppendArgs,
    Command,
    CreateArgs,
    ListArgs,
    MailboxArgs,
    RenameArgs,
    StatusArgs,
)
from twistedmail.imap.selected import SelectedMailbox, flags_list, ranges_text
from twistedmail.imap.syntax import SeqSet
from twistedmail.interfaces import IMailAccount, NoSuchMailbox
from twistedmail.model import INBOX, SEEN, SYSTEM_FLAGS, MailboxStatus, SpecialUse

if TYPE_CHECKING:  # pragma: no cover
    from twistedmail.imap.session import IMAPSession

_SPECIAL_USES = {use.value.upper(): use for use in SpecialUse}


def _account(session: IMAPSession) -> IMailAccount:
    assert session.account is not None
    return session.account


def _user(session: IMAPSession) -> str:
    assert session.user is not None
    return session.user


async def select(session: IMAPSession, command: Command) -> Reply:
    """RFC 3501 §6.3.1-2; RFC 7162 §3.1.8 (CONDSTORE) and §3.1.2.1 (HIGHESTMODSEQ)."""
    args = command.args
    assert isinstance(args, MailboxArgs)
    read_only = command.name == "EXAMINE"
    if args.qresync is not None and not session.qresync:
        return bad("QRESYNC is not enabled")
    if session.qresync and session.selected is not None:
        session.untagged(b"OK [CLOSED] Previous mailbox closed")  # RFC 7162 §3.2.11
    # A failed SELECT leaves no mailbox selected (§6.3.1), so drop it first.
    session.unselect()
    if args.condstore:
        session.condstore = True
    view = session.make_view(args.mailbox, read_only)
    try:
        await view.load()
    except BaseException:
        view.close()
        raise
    session.select(view)
    infos = view.infos
    # Few distinct flag sets, however many messages (a frozenset keeps its hash).
    keywords = {f for each in {i.flags for i in infos.values()} for f in each} - SYSTEM_FLAGS
    first_unseen = next(
        (seq for seq, uid in enumerate(view.uids, 1) if SEEN not in infos[uid].flags), 0
    )
    flags = frozenset(SYSTEM_FLAGS | keywords)
    session.untagged(b"FLAGS " + flags_list(flags))
    permanent = b"()" if read_only else flags_list(flags | {"\\*"})
    session.untagged(b"OK [PERMANENTFLAGS %s] Flags permitted" % permanent)
    session.untagged(b"%d EXISTS" % view.exists)
    session.untagged(b"%d RECENT" % len(view.recent))
    if first_unseen:
        session.untagged(b"OK [UNSEEN %d] First unseen" % first_unseen)
    session.untagged(b"OK [UIDVALIDITY %d] UIDs valid" % view.uidvalidity)
    session.untagged(b"OK [UIDNEXT %d] Predicted next UID" % view.uidnext)
    session.untagged(b"OK [HIGHESTMODSEQ %d] Highest" % view.highestmodseq)
    if args.qresync is not None and args.qresync[0] == view.uidvalidity:
        _resync(session, view, args.qresync[1], args.qresync[2])
    code = "READ-ONLY" if read_only else "READ-WRITE"
    return ok(f"{command.name} completed", code)


def _resync(session: IMAPSession, view: SelectedMailbox, modseq: int, known: SeqSet | None) -> None:
    """RFC 7162 §3.2.5.1: what vanished, then what changed since ``modseq``."""
    ranges = known.resolve(view.uidnext) if known is not None else [(1, view.uidnext - 1)]
    gone = view.missing(ranges)
    if gone:
        session.untagged(b"VANISHED (EARLIER) " + ranges_text(gone))
    for seq, uid in enumerate(view.uids, 1):
        info = view.infos[uid]
        if info.modseq > modseq:
            flags = flags_list(view.flags_of(uid))
            session.untagged(
                b"%d FETCH (UID %d FLAGS %s MODSEQ (%d))" % (seq, uid, flags, info.modseq)
            )


async def create(session: IMAPSession, command: Command) -> Reply:
    """RFC 3501 §6.3.3; RFC 6154 §3 CREATE (USE (...))."""
    args = command.args
    assert isinstance(args, CreateArgs)
    # A trailing delimiter only declares the intent to create children.
    name = args.mailbox.rstrip(DELIMITER)
    if not name:
        return no("Invalid mailbox name", "CANNOT")
    if name == INBOX:
        return no("INBOX always exists", "ALREADYEXISTS")
    uses = [_SPECIAL_USES.get(u.upper()) for u in args.special_use]
    if len(uses) > 1 or None in uses:
        return no("Unsupported special-use attribute", "USEATTR")
    await _account(session).create_mailbox(name, uses[0] if uses else None)
    return ok("CREATE completed")


async def delete(session: IMAPSession, command: Command) -> Reply:
    args = command.args
    assert isinstance(args, MailboxArgs)
    if session.selected is not None and session.selected.name == args.mailbox:
        session.unselect()
    await _account(session).delete_mailbox(args.mailbox)
    session.server.recent.deleted(_user(session), args.mailbox)
    return ok("DELETE completed")


async def rename(session: IMAPSession, command: Command) -> Reply:
    args = command.args
    assert isinstance(args, RenameArgs)
    new = args.new.rstrip(DELIMITER)
    await _account(session).rename_mailbox(args.old, new)
    session.server.recent.renamed(_user(session), args.old, new, DELIMITER)
    return ok("RENAME completed")


async def subscribe(session: IMAPSession, command: Command) -> Reply:
    args = command.args
    assert isinstance(args, MailboxArgs)
    if command.name == "SUBSCRIBE":
        await _account(session).subscribe(args.mailbox)
    else:
        await _account(session).unsubscribe(args.mailbox)
    return ok(f"{command.name} completed")


async def list_(session: IMAPSession, command: Command) -> Reply:
    args = command.args
    assert isinstance(args, ListArgs)
    account = _account(session)
    if command.name == "LSUB":
        matcher = pattern_matcher(args.reference, args.patterns)
        existing = {m.name for m in await account.list_mailboxes() if m.selectable}
        for entry in lsub_entries(await account.subscriptions(), existing, matcher):
            session.untagged(entry.line("LSUB"))
        return ok("LSUB completed")
    if not args.extended and args.patterns == ("",):
        # RFC 3501 §6.3.8: the delimiter and root of the reference.
        session.untagged(b'LIST (\\Noselect) "%s" ""' % DELIMITER.encode())
        return ok("LIST completed")
    matcher = pattern_matcher(args.reference, args.patterns)
    mailboxes = await account.list_mailboxes()
    need_subscriptions = "SUBSCRIBED" in args.select_opts or "SUBSCRIBED" in args.return_opts
    subscribed = await account.subscriptions() if need_subscriptions else frozenset()
    entries = list_entries(mailboxes, subscribed, matcher, args.select_opts, args.return_opts)
    for entry in entries:
        session.untagged(entry.line("LIST"))
        if "STATUS" in args.return_opts and entry.selectable:
            await _list_status(session, entry, args.status_atts)
    return ok("LIST completed")


async def _list_status(session: IMAPSession, entry: Entry, atts: tuple[str, ...]) -> None:
    """RFC 5819: a STATUS response right after the mailbox's LIST response."""
    try:
        status = await _account(session).status(entry.name)
        line = await _status_line(session, entry.name, status, atts)
    except NoSuchMailbox:  # deleted meanwhile
        return
    session.untagged(line)


async def _recent(session: IMAPSession, name: str, status: MailboxStatus) -> int:
    """
    RFC 3501 §6.3.10 STATUS RECENT: in the selected mailbox, this session's
    ``\\Recent`` messages; elsewhere, those the next session to SELECT it
    would get (§2.3.2).  STATUS itself claims none of them.
    """
    view = session.selected
    if view is not None and view.name == name and view.uidvalidity == status.uidvalidity:
        return len(view.recent)
    claimed = session.server.recent.claimed(_user(session), name, status.uidvalidity)
    if claimed == 0:
        return status.messages
    if claimed >= status.uidnext - 1 or not status.messages:
        return 0
    # Some above the mark, some perhaps expunged: only the listing can tell.
    infos = await _account(session).messages(name)
    return sum(1 for info in infos if info.uid > claimed)


async def _status_line(
    session: IMAPSession, name: str, status: MailboxStatus, atts: tuple[str, ...]
) -> bytes:
    recent = await _recent(session, name, status) if "RECENT" in atts else 0
    values = {
        "MESSAGES": status.messages,
        "RECENT": recent,
        "UIDNEXT": status.uidnext,
        "UIDVALIDITY": status.uidvalidity,
        "UNSEEN": status.unseen,
        "HIGHESTMODSEQ": status.highestmodseq,
        "SIZE": status.size,
    }
    items = b" ".join(b"%s %d" % (att.encode(), values[att]) for att in atts)
    return b"STATUS %s (%s)" % (wire.astring(wire.encode_mailbox(name)), items)


async def status(session: IMAPSession, command: Command) -> Reply:
    args = command.args
    assert isinstance(args, StatusArgs)
    if "HIGHESTMODSEQ" in args.atts:
        session.condstore = True  # RFC 7162 §3.1: a CONDSTORE-enabling command
    result = await _account(session).status(args.mailbox)
    session.untagged(await _status_line(session, args.mailbox, result, args.atts))
    return ok("STATUS completed")


async def append(session: IMAPSession, command: Command) -> Reply:
    """RFC 3501 §6.3.11; RFC 4315 §3 APPENDUID; TRYCREATE for a missing mailbox."""
    args = command.args
    assert isinstance(args, AppendArgs)
    if not args.message:
        return no("Empty message", "CANNOT")
    flags = [f for f in args.flags if f != "\\Recent"]
    try:
        appended = await _account(session).append(args.mailbox, args.message, flags, args.date)
    except NoSuchMailbox as e:
        return reply_for(e, command.name, destination=True)
    return ok("APPEND completed", f"APPENDUID {appended.uidvalidity} {appended.info.uid}")


COMMANDS = {
    "SELECT": CommandSpec(select, AUTH),
    "EXAMINE": CommandSpec(select, AUTH),
    "CREATE": CommandSpec(create, AUTH),
    "DELETE": CommandSpec(delete, AUTH),
    "RENAME": CommandSpec(rename, AUTH),
    "SUBSCRIBE": CommandSpec(subscribe, AUTH),
    "UNSUBSCRIBE": CommandSpec(subscribe, AUTH),
    "LIST": CommandSpec(list_, AUTH),
    "LSUB": CommandSpec(list_, AUTH),
    "STATUS": CommandSpec(status, AUTH),
    "APPEND": CommandSpec(append, AUTH),
}
