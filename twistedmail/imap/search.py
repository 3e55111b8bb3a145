"""
SEARCH evaluation (RFC 3501 §6.4.4) over the selected view.

Most keys are answered from `MessageInfo` alone.  Each message is first
tried on its metadata with three-valued logic (True, False, unknown); only
messages the metadata cannot decide are loaded and parsed, so ``SEARCH
UNSEEN FROM x`` parses only unseen messages.

String matching is a case-insensitive substring match on RFC 2047-decoded
text (RFC 3501 leaves the comparison to the server; case-folding is what
clients expect and what RFC 9051 §6.4.4 recommends).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from twistedmail.imap.searchkeys import (
    All,
    And,
    DateKey,
    HasFlag,
    HeaderKey,
    InSeq,
    InUid,
    ModSeqKey,
    Not,
    Or,
    Recent,
    SearchKey,
    SizeKey,
    TextKey,
    needs_content,
)
from twistedmail.imap.selected import SelectedMailbox
from twistedmail.message import ParsedMessage
from twistedmail.model import MessageInfo

Loader = Callable[[int], Awaitable[ParsedMessage | None]]

#: A compiled key: (sequence number, metadata, parse or None) -> True,
#: False, or None when the answer needs the (unloaded) message.
Matcher = Callable[[int, MessageInfo, ParsedMessage | None], bool | None]

#: Messages loaded between two chances for other sessions to run.
_BATCH = 200


class _Context:
    def __init__(self, view: SelectedMailbox) -> None:
        self.view = view
        self.exists = view.exists
        self.largest_uid = view.uids[-1] if view.uids else 0
        self.saved = set(view.saved)


async def evaluate(
    view: SelectedMailbox,
    key: SearchKey,
    load: Loader,
    pause: Callable[[], Awaitable[None]] | None = None,
    cached: Callable[[int], ParsedMessage | None] | None = None,
) -> list[int]:
    """
    The UIDs of the messages matching ``key``, ascending.

    ``pause`` is awaited every `_BATCH` loaded messages, so that a search
    through a big mailbox lets other sessions run.  ``cached``, if given,
    is asked first for a message already in memory (no await, which
    matters over 10,000 messages); ``load`` gets the others.
    """
    match = _compile(key, _Context(view))
    content = needs_content(key)
    infos = view.infos
    found = []
    loaded = 0
    for seq, uid in enumerate(list(view.uids), 1):
        info = infos.get(uid)
        if info is None:
            continue
        verdict = match(seq, info, None)
        if verdict is None and content:
            loaded += 1
            if pause is not None and loaded % _BATCH == 0:
                await pause()
            parsed = cached(uid) if cached is not None else None
            if parsed is None:
                parsed = await load(uid)
            verdict = False if parsed is None else match(seq, info, parsed)
        if verdict:
            found.append(uid)
    return found


def _compile(key: SearchKey, ctx: _Context) -> Matcher:
    """
    ``key`` as one closure per node, so that the tree is walked once per
    SEARCH rather than type-tested again for every message.
    """
    if isinstance(key, All):
        return lambda seq, info, parsed: True
    if isinstance(key, And):
        subs = [_compile(k, ctx) for k in key.keys]
        if len(subs) == 1:
            return subs[0]

        def all_of(seq: int, info: MessageInfo, parsed: ParsedMessage | None) -> bool | None:
            result: bool | None = True
            for sub in subs:
                r = sub(seq, info, parsed)
                if r is False:
                    return False
                if r is None:
                    result = None
            return result

        return all_of
    if isinstance(key, Or):
        left, right = _compile(key.left, ctx), _compile(key.right, ctx)

        def either(seq: int, info: MessageInfo, parsed: ParsedMessage | None) -> bool | None:
            first = left(seq, info, parsed)
            if first is True:
                return True
            second = right(seq, info, parsed)
            if second is True:
                return True
            return None if first is None or second is None else False

        return either
    if isinstance(key, Not):
        inner = _compile(key.key, ctx)

        def negated(seq: int, info: MessageInfo, parsed: ParsedMessage | None) -> bool | None:
            r = inner(seq, info, parsed)
            return None if r is None else not r

        return negated
    if isinstance(key, HasFlag):
        flag = key.flag
        return lambda seq, info, parsed: flag in info.flags
    if isinstance(key, Recent):
        recent = ctx.view.recent
        return lambda seq, info, parsed: info.uid in recent
    if isinstance(key, InSeq):
        if key.seqs.saved:
            return lambda seq, info, parsed: info.uid in ctx.saved
        seqs, exists = key.seqs, ctx.exists
        return lambda seq, info, parsed: seqs.contains(seq, exists)
    if isinstance(key, InUid):
        if key.uids.saved:
            return lambda seq, info, parsed: info.uid in ctx.saved
        uids, largest = key.uids, ctx.largest_uid
        return lambda seq, info, parsed: uids.contains(info.uid, largest)
    if isinstance(key, SizeKey):
        size = key.size
        if key.op == ">":
            return lambda seq, info, parsed: info.size > size
        return lambda seq, info, parsed: info.size < size
    if isinstance(key, ModSeqKey):
        modseq = key.modseq
        return lambda seq, info, parsed: info.modseq >= modseq
    if isinstance(key, DateKey):
        return _date_matcher(key)
    if isinstance(key, HeaderKey):
        return _header_matcher(key)
    if isinstance(key, TextKey):
        return _text_matcher(key)
    raise AssertionError(f"unknown search key {key!r}")  # pragma: no cover


def _date_matcher(key: DateKey) -> Matcher:
    op, wanted, sent = key.op, key.day, key.sent

    def on_day(seq: int, info: MessageInfo, parsed: ParsedMessage | None) -> bool | None:
        if sent:
            if parsed is None:
                return None
            when = parsed.date()
            if when is None:
                return False
            day = when.date()
        else:
            day = info.internal_date.date()
        if op == "<":
            return day < wanted
        if op == "=":
            return day == wanted
        return day >= wanted

    return on_day


def _header_matcher(key: HeaderKey) -> Matcher:
    name, needle = key.name, key.value.casefold()

    def in_header(seq: int, info: MessageInfo, parsed: ParsedMessage | None) -> bool | None:
        if parsed is None:
            return None
        if not needle:
            return bool(parsed.root.values(name))
        return parsed.header_contains(name, needle)

    return in_header


def _text_matcher(key: TextKey) -> Matcher:
    needle, body_only = key.value.casefold(), key.body_only

    def in_text(seq: int, info: MessageInfo, parsed: ParsedMessage | None) -> bool | None:
        if parsed is None:
            return None
        if needle in parsed.body_text().casefold():
            return True
        if body_only:
            return False
        return any(needle in f"{n}: {v}".casefold() for n, v in parsed.headers())

    return in_text
