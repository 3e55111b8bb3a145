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
) -> list[int]:
    """
    The UIDs of the messages matching ``key``, ascending.

    ``pause`` is awaited every `_BATCH` loaded messages, so that a search
    through a big mailbox lets other sessions run.
    """
    ctx = _Context(view)
    content = needs_content(key)
    found = []
    loaded = 0
    for seq, uid in enumerate(list(view.uids), 1):
        info = view.infos.get(uid)
        if info is None:
            continue
        verdict = _match(key, ctx, seq, info, None)
        if verdict is None and content:
            loaded += 1
            if pause is not None and loaded % _BATCH == 0:
                await pause()
            parsed = await load(uid)
            verdict = False if parsed is None else _match(key, ctx, seq, info, parsed)
        if verdict:
            found.append(uid)
    return found


def _match(
    key: SearchKey, ctx: _Context, seq: int, info: MessageInfo, parsed: ParsedMessage | None
) -> bool | None:
    """True, False, or None when the answer needs the (unloaded) message."""
    if isinstance(key, All):
        return True
    if isinstance(key, And):
        result: bool | None = True
        for k in key.keys:
            r = _match(k, ctx, seq, info, parsed)
            if r is False:
                return False
            if r is None:
                result = None
        return result
    if isinstance(key, Or):
        left = _match(key.left, ctx, seq, info, parsed)
        if left is True:
            return True
        right = _match(key.right, ctx, seq, info, parsed)
        if right is True:
            return True
        return None if left is None or right is None else False
    if isinstance(key, Not):
        r = _match(key.key, ctx, seq, info, parsed)
        return None if r is None else not r
    if isinstance(key, HasFlag):
        return key.flag in info.flags
    if isinstance(key, Recent):
        return info.uid in ctx.view.recent
    if isinstance(key, InSeq):
        if key.seqs.saved:
            return info.uid in ctx.saved
        return key.seqs.contains(seq, ctx.exists)
    if isinstance(key, InUid):
        if key.uids.saved:
            return info.uid in ctx.saved
        return key.uids.contains(info.uid, ctx.largest_uid)
    if isinstance(key, SizeKey):
        return info.size > key.size if key.op == ">" else info.size < key.size
    if isinstance(key, ModSeqKey):
        return info.modseq >= key.modseq
    if isinstance(key, DateKey):
        if key.sent:
            if parsed is None:
                return None
            sent = parsed.date()
            if sent is None:
                return False
            day = sent.date()
        else:
            day = info.internal_date.date()
        if key.op == "<":
            return day < key.day
        if key.op == "=":
            return day == key.day
        return day >= key.day
    if parsed is None:
        return None
    if isinstance(key, HeaderKey):
        values = parsed.header(key.name)
        if not key.value:
            return bool(values)
        needle = key.value.casefold()
        return any(needle in v.casefold() for v in values)
    if isinstance(key, TextKey):
        needle = key.value.casefold()
        if needle in parsed.body_text().casefold():
            return True
        if key.body_only:
            return False
        return any(needle in f"{n}: {v}".casefold() for n, v in parsed.headers())
    raise AssertionError(f"unknown search key {key!r}")  # pragma: no cover
