"""
Selected-state commands (RFC 3501 §6.4): CHECK, CLOSE, EXPUNGE, SEARCH,
FETCH, STORE, COPY and their UID forms, with UNSELECT (RFC 3691), MOVE
(RFC 6851), UID EXPUNGE (RFC 4315), ESEARCH (RFC 4731), SEARCHRES
(RFC 5182), CONDSTORE (RFC 7162) and IDLE (RFC 2177).
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

from twistedmail.imap.dispatch import AUTH, SELECTED, CommandSpec
from twistedmail.imap.errors import Reply, bad, no, ok, reply_for
from twistedmail.imap.fetch import (
    FetchAtt,
    FetchRenderer,
    header_only,
    needs_body,
    needs_parse,
    sets_seen,
)
from twistedmail.imap.loading import Loader
from twistedmail.imap.parser import Command, CopyArgs, FetchArgs, SearchArgs, SeqArgs, StoreArgs
from twistedmail.imap.search import evaluate
from twistedmail.imap.searchkeys import And, ModSeqKey, Not, Or, SearchKey, needs_text
from twistedmail.imap.selected import RECENT, SelectedMailbox, ranges_text, uid_set
from twistedmail.interfaces import IMailAccount, NoSuchMailbox, NoSuchMessage
from twistedmail.message import ParsedMessage
from twistedmail.model import SEEN, FlagMode

if TYPE_CHECKING:  # pragma: no cover
    from twistedmail.imap.session import IMAPSession


#: Bytes of FETCH output between two checks of the client's pace.
_CHUNK = 256 * 1024


def _view(session: IMAPSession) -> tuple[SelectedMailbox, IMailAccount]:
    assert session.selected is not None and session.account is not None
    return session.selected, session.account


async def check(session: IMAPSession, command: Command) -> Reply:
    return ok("CHECK completed")


async def close(session: IMAPSession, command: Command) -> Reply:
    """RFC 3501 §6.4.2: expunge silently (no EXPUNGE responses), then deselect."""
    view, account = _view(session)
    session.unselect()
    if not view.read_only:
        await account.expunge(view.name)
    return ok("CLOSE completed")


async def unselect(session: IMAPSession, command: Command) -> Reply:
    session.unselect()
    return ok("UNSELECT completed")


async def expunge(session: IMAPSession, command: Command) -> Reply:
    """EXPUNGE and RFC 4315 UID EXPUNGE; the responses come from the store's event."""
    view, account = _view(session)
    if view.read_only:
        return no("Mailbox is read-only", "READ-ONLY")
    uids = None
    if isinstance(command.args, SeqArgs):
        uids = view.resolve(command.args.seqs, uid=True)
        if not uids:
            return ok("UID EXPUNGE completed")
    await account.expunge(view.name, uids)
    return ok(f"{command.name} completed")


async def fetch(session: IMAPSession, command: Command) -> Reply:
    """RFC 3501 §6.4.5; §6.4.8 (UID FETCH always reports UID); RFC 7162 §3.1.4."""
    args = command.args
    assert isinstance(args, FetchArgs)
    view, account = _view(session)
    uids = view.resolve(args.seqs, command.uid)
    atts = list(args.atts)
    if command.uid and not any(a.name == "UID" for a in atts):
        atts.insert(0, FetchAtt("UID"))
    if args.changed_since is not None or any(a.name == "MODSEQ" for a in atts):
        session.condstore = True
    if args.vanished:
        # RFC 7162 §3.2.6: only UID FETCH, only with QRESYNC enabled.
        if not (command.uid and session.qresync):
            return bad("VANISHED needs UID FETCH with QRESYNC enabled")
        gone = view.missing(args.seqs.resolve(view.uids[-1] if view.uids else 0))
        if gone:
            session.untagged(b"VANISHED (EARLIER) " + ranges_text(gone))
    if args.changed_since is not None:
        uids = [u for u in uids if view.infos[u].modseq > args.changed_since]
    has_flags = any(a.name == "FLAGS" for a in atts)
    if session.condstore and has_flags and not any(a.name == "MODSEQ" for a in atts):
        atts.append(FetchAtt("MODSEQ"))  # RFC 7162 §3.2
    seen_now: set[int] = set()
    if sets_seen(atts) and not view.read_only:
        unseen = [u for u in uids if SEEN not in view.infos[u].flags]
        if unseen:
            result = await account.set_flags(view.name, unseen, [SEEN], FlagMode.ADD)
            view.apply_own(result.changed)
            seen_now = {i.uid for i in result.changed}
    renderer = FetchRenderer(atts)
    # RFC 3501 §6.4.5: a \Seen set by this fetch is reported with it.
    seen_renderer = FetchRenderer([*atts, FetchAtt("FLAGS")]) if not has_flags else renderer
    body, parse, header = needs_body(atts), needs_parse(atts), header_only(atts)
    loader = Loader(session, view, account)
    infos, recent, numbers = view.infos, view.recent, view.uids
    with_recent: dict[frozenset[str], frozenset[str]] = {}
    flags_only = [a.name for a in atts] == ["FLAGS"]
    tails: dict[frozenset[str], bytes] = {}
    vanished = False
    out: list[bytes] = []
    pending = 0
    at = 0  # where the next UID usually is in `numbers` (both ascend)
    for uid in uids:
        if pending > _CHUNK:
            # Flow control: wait for a slow client, let other sessions run.
            session.write(b"".join(out))
            out.clear()
            pending = 0
            await session.flow.ready()
        info = infos.get(uid)
        if info is None:
            continue
        raw = parsed = None
        if body:
            found = loader.cached_content(uid, parse, header)
            if found is None:
                try:
                    found = await loader.content(uid, parse, header)
                except NoSuchMessage:
                    vanished = True  # expunged by another session, not yet announced
                    continue
                info = infos.get(uid, info)
            raw, parsed = found
        flags = info.flags
        if uid in recent:
            flags = with_recent.get(flags) or with_recent.setdefault(flags, flags | {RECENT})
        if at >= len(numbers) or numbers[at] != uid:
            at = bisect.bisect_left(numbers, uid)
        at += 1
        if flags_only:
            # FETCH (FLAGS): one answer per distinct flag set, spelt once.
            tail = tails.get(flags)
            if tail is None:
                tail = tails[flags] = b" FETCH (%s)\r\n" % renderer.render(info, flags, None, None)
            line = b"* %d" % at + tail
        else:
            render = seen_renderer if uid in seen_now else renderer
            line = b"* %d FETCH (%s)\r\n" % (at, render.render(info, flags, raw, parsed))
        out.append(line)
        pending += len(line)
    if out:
        session.write(b"".join(out))
    if vanished:
        return no("Some messages were expunged meanwhile", "EXPUNGEISSUED")
    return ok(f"{command.name} completed")


async def store(session: IMAPSession, command: Command) -> Reply:
    """RFC 3501 §6.4.6; RFC 7162 §3.1.3 UNCHANGEDSINCE and [MODIFIED]."""
    args = command.args
    assert isinstance(args, StoreArgs)
    view, account = _view(session)
    if view.read_only:
        return no("Mailbox is read-only", "READ-ONLY")
    uids = view.resolve(args.seqs, command.uid)
    if args.unchanged_since is not None:
        session.condstore = True
    flags = [f for f in args.flags if f != "\\Recent"]
    result = await account.set_flags(view.name, uids, flags, args.mode, args.unchanged_since)
    view.apply_own(result.changed)
    failed = set(result.failed)
    if not args.silent:
        atts = [FetchAtt("FLAGS")]
        if command.uid:
            atts.insert(0, FetchAtt("UID"))
        if session.condstore:
            atts.append(FetchAtt("MODSEQ"))
        renderer = FetchRenderer(atts)
        infos, recent, numbers = view.infos, view.recent, view.uids
        out: list[bytes] = []
        at = 0  # as in fetch
        for uid in uids:
            info = infos.get(uid)
            if info is None or uid in failed:
                continue
            shown = info.flags | {RECENT} if uid in recent else info.flags
            if at >= len(numbers) or numbers[at] != uid:
                at = bisect.bisect_left(numbers, uid)
            at += 1
            out.append(b"* %d FETCH (%s)\r\n" % (at, renderer.render(info, shown, None, None)))
        if out:
            session.write(b"".join(out))
    if failed:
        modified = failed if command.uid else {view.seq_of(u) for u in failed}
        return ok("Conditional STORE failed for some", "MODIFIED " + uid_set(modified).decode())
    return ok(f"{command.name} completed")


async def copy(session: IMAPSession, command: Command) -> Reply:
    """COPY (RFC 3501 §6.4.7) and MOVE (RFC 6851) with COPYUID (RFC 4315 §3)."""
    args = command.args
    assert isinstance(args, CopyArgs)
    view, account = _view(session)
    move = command.name.endswith("MOVE")
    if move and view.read_only:
        return no("Mailbox is read-only", "READ-ONLY")
    uids = view.resolve(args.seqs, command.uid)
    if not uids:
        return ok(f"{command.name} completed")
    try:
        if move:
            result = await account.move(view.name, uids, args.mailbox)
        else:
            result = await account.copy(view.name, uids, args.mailbox)
    except NoSuchMailbox as e:
        return reply_for(e, command.name, destination=True)
    code = None
    if result.mapping:
        sources = uid_set(s for s, _ in result.mapping).decode()
        targets = uid_set(t for _, t in result.mapping).decode()
        code = f"COPYUID {result.uidvalidity} {sources} {targets}"
    if move:
        # RFC 6851 §4.3: COPYUID goes in an untagged OK before the EXPUNGEs.
        if code:
            session.untagged(b"OK [%s] Moved" % code.encode())
        return ok(f"{command.name} completed")
    return ok(f"{command.name} completed", code)


async def search(session: IMAPSession, command: Command) -> Reply:
    """RFC 3501 §6.4.4, RFC 4731 ESEARCH, RFC 5182 SAVE, RFC 7162 §3.1.5 MODSEQ."""
    args = command.args
    assert isinstance(args, SearchArgs)
    view, account = _view(session)

    loader = Loader(session, view, account)
    # Header keys need only the header: no whole (maybe 20 MB) message read.
    header = not needs_text(args.key)
    get = loader.header if header else loader.parsed

    async def load(uid: int) -> ParsedMessage | None:
        try:
            return await get(uid)
        except NoSuchMessage:
            return None

    def cached(uid: int) -> ParsedMessage | None:
        return loader.cached(uid, header)

    uids = await evaluate(view, args.key, load, session.flow.ready, cached)
    modseq = _uses_modseq(args.key)
    if modseq:
        session.condstore = True
    numbers = uids if command.uid else [view.seq_of(u) for u in uids]
    if args.returns is None:
        line = b" ".join([b"SEARCH", *(b"%d" % n for n in numbers)])
        if modseq and uids:
            line += b" (MODSEQ %d)" % max(view.infos[u].modseq for u in uids)
        session.untagged(line)
        return ok(f"{command.name} completed")
    if "SAVE" in args.returns:
        view.saved = uids
        if set(args.returns) == {"SAVE"}:
            return ok(f"{command.name} completed")
    parts = [b'ESEARCH (TAG "%s")' % command.tag]
    if command.uid:
        parts.append(b"UID")
    if numbers and "MIN" in args.returns:
        parts.append(b"MIN %d" % numbers[0])
    if numbers and "MAX" in args.returns:
        parts.append(b"MAX %d" % numbers[-1])
    if "COUNT" in args.returns:
        parts.append(b"COUNT %d" % len(numbers))
    if numbers and "ALL" in args.returns:
        parts.append(b"ALL " + uid_set(numbers))
    if modseq and uids:
        parts.append(b"MODSEQ %d" % max(view.infos[u].modseq for u in uids))
    session.untagged(b" ".join(parts))
    return ok(f"{command.name} completed")


def _uses_modseq(key: SearchKey) -> bool:
    if isinstance(key, ModSeqKey):
        return True
    if isinstance(key, And):
        return any(_uses_modseq(k) for k in key.keys)
    if isinstance(key, Or):
        return _uses_modseq(key.left) or _uses_modseq(key.right)
    if isinstance(key, Not):
        return _uses_modseq(key.key)
    return False


async def idle(session: IMAPSession, command: Command) -> Reply:
    """
    RFC 2177: updates are pushed as they happen until the client sends
    ``DONE``; nothing else ends IDLE (other lines are ignored).
    """
    session.continuation(b"idling")
    session.idling = True
    try:
        session.flush_updates(True)
        while True:
            line = await session.read_line()
            if line.strip().upper() == b"DONE":
                break
    finally:
        session.idling = False
    return ok("IDLE terminated")


COMMANDS = {
    "CHECK": CommandSpec(check, SELECTED),
    "CLOSE": CommandSpec(close, SELECTED),
    "UNSELECT": CommandSpec(unselect, SELECTED),
    "EXPUNGE": CommandSpec(expunge, SELECTED),
    "UID EXPUNGE": CommandSpec(expunge, SELECTED),
    # RFC 3501 §7.4.1: no EXPUNGE responses after FETCH, STORE, SEARCH.
    "FETCH": CommandSpec(fetch, SELECTED, expunge_ok=False),
    "UID FETCH": CommandSpec(fetch, SELECTED),
    "STORE": CommandSpec(store, SELECTED, expunge_ok=False),
    "UID STORE": CommandSpec(store, SELECTED),
    "SEARCH": CommandSpec(search, SELECTED, expunge_ok=False),
    "UID SEARCH": CommandSpec(search, SELECTED),
    "COPY": CommandSpec(copy, SELECTED),
    "UID COPY": CommandSpec(copy, SELECTED),
    "MOVE": CommandSpec(copy, SELECTED),
    "UID MOVE": CommandSpec(copy, SELECTED),
    "IDLE": CommandSpec(idle, AUTH),
}
