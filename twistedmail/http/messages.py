"""
``/api/mailboxes/{mailbox}/messages``: list (paged, sorted, searched), get
one parsed, change flags, move, delete.

Messages are named by IMAP UID within the caller's own mailbox, so every
lookup goes through the caller's `IMailAccount`: no id reaches another
user's mail.  Listing sorts on the internal (arrival) date, which needs no
parsing; only the messages on the requested page are parsed.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twistedmail.http.errors import ApiError, from_store_error
from twistedmail.http.mailboxes import find_special
from twistedmail.http.routing import Call, Param, Reply, json_reply
from twistedmail.http.search import matching, search_key
from twistedmail.http.views import full, summary
from twistedmail.interfaces import MailError, NoSuchMessage
from twistedmail.model import (
    ANSWERED,
    DELETED,
    DRAFT,
    FLAGGED,
    SEEN,
    FlagMode,
    MessageInfo,
    SpecialUse,
    normalize_flag,
)

_SORTS = {"date": False, "-date": True, "uid": False, "-uid": True}

LIST_PARAMS: tuple[Param, ...] = (
    Param("limit", "integer", "Messages per page (default 50)."),
    Param("offset", "integer", "How many matching messages to skip."),
    Param("sort", "string", "date, -date (newest first, the default), uid or -uid."),
)

_BOOLEAN_FLAGS = {"seen": SEEN, "flagged": FLAGGED, "answered": ANSWERED, "draft": DRAFT}


@dataclass(frozen=True)
class Located:
    mailbox: str
    uidvalidity: int
    info: MessageInfo


async def _infos(call: Call, mailbox: str) -> tuple[int, list[MessageInfo]]:
    try:
        status = await call.me.status(mailbox)
        infos = await call.me.messages(mailbox)
    except MailError as e:
        raise from_store_error(e, "mailbox") from None
    return status.uidvalidity, infos


async def locate(call: Call) -> Located:
    """The ``{mailbox}``/``{uid}`` of the path, or 404."""
    mailbox, uid = call.path["mailbox"], call.uid()
    uidvalidity, infos = await _infos(call, mailbox)
    uids = [i.uid for i in infos]
    at = bisect.bisect_left(uids, uid)
    if at == len(uids) or uids[at] != uid:
        raise from_store_error(NoSuchMessage())
    return Located(mailbox, uidvalidity, infos[at])


async def list_messages(call: Call) -> Reply:
    mailbox = call.path["mailbox"]
    settings = call.ctx.settings
    limit = call.int_arg("limit", settings.page_size, 1, settings.max_page_size)
    offset = call.int_arg("offset", 0, 0, 2**31)
    sort = call.arg("sort") or "-date"
    if sort not in _SORTS:
        raise ApiError.bad("sort", f"sort must be one of {sorted(_SORTS)}")
    key = search_key(call)
    uidvalidity, infos = await _infos(call, mailbox)
    if key is not None:
        found = await matching(call.ctx, call.me, mailbox, uidvalidity, infos, key)
        infos = [i for i in infos if i.uid in found]
    infos = _sorted(infos, sort)
    page = infos[offset : offset + limit]
    listed: list[dict[str, Any]] = []
    for info in page:
        try:
            parsed = await call.ctx.parsed(call.me, mailbox, uidvalidity, info.uid)
        except MailError:
            continue  # expunged while we were reading
        listed.append(summary(mailbox, info, parsed))
    return json_reply(
        {
            "mailbox": mailbox,
            "uidvalidity": uidvalidity,
            "total": len(infos),
            "offset": offset,
            "limit": limit,
            "messages": listed,
        }
    )


def _sorted(infos: Sequence[MessageInfo], sort: str) -> list[MessageInfo]:
    reverse = _SORTS[sort]
    if sort.endswith("date"):
        return sorted(infos, key=lambda i: (i.internal_date, i.uid), reverse=reverse)
    return sorted(infos, key=lambda i: i.uid, reverse=reverse)


async def get_message(call: Call) -> Reply:
    found = await locate(call)
    try:
        parsed = await call.ctx.parsed(call.me, found.mailbox, found.uidvalidity, found.info.uid)
    except MailError as e:
        raise from_store_error(e) from None
    images = bool(call.bool_arg("images"))
    return json_reply(full(found.mailbox, found.info, parsed, images))


# --- Changes -----------------------------------------------------------------------


def _flag_list(body: dict[str, Any], field: str) -> list[str]:
    value = body.get(field)
    if not isinstance(value, list) or not all(isinstance(f, str) and f for f in value):
        raise ApiError.bad(field, f"{field} must be a list of flag names")
    flags = [normalize_flag(f) for f in value]
    for flag in flags:
        if any(c in flag for c in ' ()*%"]{') or any(ord(c) < 33 or ord(c) > 126 for c in flag):
            raise ApiError.bad(field, f"{flag!r} is not a valid flag or keyword")
    return flags


async def update_message(call: Call) -> Reply:
    """
    ``PATCH``: ``flags`` (replace), ``add_flags``, ``remove_flags``, the
    booleans ``seen``/``flagged``/``answered``/``draft``, and ``mailbox``
    (move there; done last, so flags are set first and travel along).
    """
    found = await locate(call)
    body = call.json()
    account, mailbox, uid = call.me, found.mailbox, found.info.uid
    changes: list[tuple[list[str], FlagMode]] = []
    if "flags" in body:
        changes.append((_flag_list(body, "flags"), FlagMode.REPLACE))
    if "add_flags" in body:
        changes.append((_flag_list(body, "add_flags"), FlagMode.ADD))
    if "remove_flags" in body:
        changes.append((_flag_list(body, "remove_flags"), FlagMode.REMOVE))
    for name, flag in _BOOLEAN_FLAGS.items():
        if name in body:
            if not isinstance(body[name], bool):
                raise ApiError.bad(name, f"{name} must be true or false")
            changes.append(([flag], FlagMode.ADD if body[name] else FlagMode.REMOVE))
    destination = body.get("mailbox")
    if destination is not None and (not isinstance(destination, str) or not destination):
        raise ApiError.bad("mailbox", "mailbox must be a non-empty mailbox name")
    unknown = set(body) - {"flags", "add_flags", "remove_flags", "mailbox", *_BOOLEAN_FLAGS}
    if unknown:
        raise ApiError.bad(sorted(unknown)[0], f"unknown field {sorted(unknown)[0]!r}")
    try:
        flags = found.info.flags
        for wanted, mode in changes:
            result = await account.set_flags(mailbox, [uid], wanted, mode)
            for changed in result.changed:
                flags = changed.flags
        if destination is not None and destination != mailbox:
            moved = await account.move(mailbox, [uid], destination)
            if not moved.mapping:
                raise NoSuchMessage()
            return json_reply(
                {"mailbox": destination, "uid": moved.mapping[0][1], "flags": sorted(flags)}
            )
    except MailError as e:
        raise from_store_error(e, "mailbox") from None
    return json_reply({"mailbox": mailbox, "uid": uid, "flags": sorted(flags)})


async def delete_message(call: Call) -> Reply:
    """
    ``DELETE``: move to the Trash mailbox, or remove for good with
    ``permanent=true``, when already in Trash, or when there is no Trash.
    """
    found = await locate(call)
    account, mailbox, uid = call.me, found.mailbox, found.info.uid
    permanent = bool(call.bool_arg("permanent"))
    try:
        trash = await find_special(account, SpecialUse.TRASH)
        if not permanent and trash is not None and trash != mailbox:
            moved = await account.move(mailbox, [uid], trash)
            new_uid = moved.mapping[0][1] if moved.mapping else None
            return json_reply({"deleted": "trash", "mailbox": trash, "uid": new_uid})
        await account.set_flags(mailbox, [uid], [DELETED], FlagMode.ADD)
        await account.expunge(mailbox, [uid])
    except MailError as e:
        raise from_store_error(e) from None
    return json_reply({"deleted": "permanent", "mailbox": mailbox, "uid": uid})
