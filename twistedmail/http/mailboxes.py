"""
``/api/mailboxes``: list with counters, create, rename, delete.

Names are the store's (``/`` as the hierarchy delimiter); special use is
reported as the RFC 6154 attribute without its backslash, lower-cased
(``"sent"``, ``"trash"``), so a client finds its Sent folder without
guessing from the name.
"""

from __future__ import annotations

from typing import Any

from twistedmail.http.errors import ApiError, from_store_error
from twistedmail.http.routing import Call, Reply, json_reply
from twistedmail.interfaces import IMailAccount, MailError, NoSuchMailbox
from twistedmail.model import MailboxInfo, SpecialUse

#: ``"sent"`` -> `SpecialUse.SENT`, and so on.
SPECIAL_USES = {use.value[1:].lower(): use for use in SpecialUse}


def special_use_name(use: SpecialUse | None) -> str | None:
    return None if use is None else use.value[1:].lower()


async def find_special(account: IMailAccount, use: SpecialUse) -> str | None:
    """The first mailbox with special use ``use``, or None."""
    for info in await account.list_mailboxes():
        if info.special_use is use and info.selectable:
            return info.name
    return None


async def _describe(account: IMailAccount, info: MailboxInfo) -> dict[str, Any]:
    described: dict[str, Any] = {
        "name": info.name,
        "special_use": special_use_name(info.special_use),
        "selectable": info.selectable,
    }
    if info.selectable:
        try:
            status = await account.status(info.name)
        except MailError:
            status = None  # deleted by another session meanwhile
        if status is not None:
            described.update(
                total=status.messages,
                unseen=status.unseen,
                size=status.size,
                uidvalidity=status.uidvalidity,
                uidnext=status.uidnext,
            )
    return described


async def list_mailboxes(call: Call) -> Reply:
    account = call.me
    infos = await account.list_mailboxes()
    subscribed = await account.subscriptions()
    listed = []
    for info in infos:
        described = await _describe(account, info)
        described["subscribed"] = info.name in subscribed
        listed.append(described)
    return json_reply({"mailboxes": listed})


def _name(body: dict[str, Any], field: str = "name") -> str:
    name = body.get(field)
    if not isinstance(name, str) or not name:
        raise ApiError.bad(field, f"{field} must be a non-empty string")
    return name


async def create_mailbox(call: Call) -> Reply:
    body = call.json()
    name = _name(body)
    use_text = body.get("special_use")
    use = None
    if use_text is not None:
        if not isinstance(use_text, str) or use_text.lower() not in SPECIAL_USES:
            raise ApiError.bad("special_use", f"special_use must be one of {sorted(SPECIAL_USES)}")
        use = SPECIAL_USES[use_text.lower()]
    try:
        info = await call.me.create_mailbox(name, use)
    except MailError as e:
        raise from_store_error(e, "name") from None
    await call.me.subscribe(info.name)
    described = await _describe(call.me, info)
    return json_reply(described, 201)


async def update_mailbox(call: Call) -> Reply:
    """``PATCH``: ``name`` renames (children too), ``subscribed`` (un)subscribes."""
    account = call.me
    name = call.path["mailbox"]
    body = call.json()
    unknown = sorted(set(body) - {"name", "subscribed"})
    if unknown:
        raise ApiError.bad(unknown[0], f"unknown field {unknown[0]!r}")
    subscribed = body.get("subscribed")
    if subscribed is not None and not isinstance(subscribed, bool):
        raise ApiError.bad("subscribed", "subscribed must be true or false")
    if not body:
        raise ApiError.bad("name", "give a new name or subscribed")
    try:
        if "name" in body:
            new = _name(body)
            await account.rename_mailbox(name, new)
            name = new
        if subscribed is not None:
            await (account.subscribe(name) if subscribed else account.unsubscribe(name))
        infos = await account.list_mailboxes()
    except MailError as e:
        raise from_store_error(e, "name") from None
    for info in infos:
        if info.name == name:
            described = await _describe(account, info)
            described["subscribed"] = name in await account.subscriptions()
            return json_reply(described)
    raise from_store_error(NoSuchMailbox())


async def delete_mailbox(call: Call) -> Reply:
    name = call.path["mailbox"]
    try:
        await call.me.delete_mailbox(name)
    except MailError as e:
        raise from_store_error(e, "mailbox") from None
    await call.me.unsubscribe(name)
    return Reply(204, b"")
