"""
``POST /api/messages``: send, through the same path as SMTP submission.

Recipients are routed by `twistedmail.routing` (the user is authenticated,
so remote recipients may be relayed) and the message goes to
`twistedmail.delivery.Delivery`, which stores local copies and queues the
rest exactly as for a message submitted over SMTP.  Only then is a copy
(with Bcc) appended to the sender's Sent mailbox, so a failed send leaves no
"sent" message behind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from twistedmail.http.auth import client_ip
from twistedmail.http.compose import build, draft_from_json, draft_from_multipart
from twistedmail.http.context import ApiContext
from twistedmail.http.errors import ApiError, from_store_error
from twistedmail.http.mailboxes import find_special
from twistedmail.http.routing import Call, Reply, json_reply
from twistedmail.interfaces import MailError, NoSuchUser, RelayDenied
from twistedmail.model import SEEN, Envelope, Recipient, SpecialUse
from twistedmail.routing import RemoteRoute, Route, route

log = Logger()

#: Request bodies above this are parsed and built in the thread pool.
_THREAD_ABOVE = 256 * 1024

_T = TypeVar("_T")


async def send_message(call: Call) -> Reply:
    ctx, request = call.ctx, call.request
    content_type = request.getHeader(b"content-type") or b""
    kind = content_type.split(b";")[0].strip().lower()
    big = len(call.body_bytes) > _THREAD_ABOVE
    if kind == b"application/json":
        draft = await _work(ctx, big, lambda: draft_from_json(call.json()))
    elif kind == b"multipart/form-data":
        draft = await _work(ctx, big, draft_from_multipart, content_type, call.body_bytes)
    else:
        raise ApiError(
            415, "unsupported_media_type", "Send application/json or multipart/form-data."
        )
    assert call.user is not None
    mine = {a.lower() for a in ctx.accounts.addresses_of(call.user)}
    if draft.sender.address.lower() not in mine:
        raise ApiError(403, "not_your_address", "from must be one of your own addresses.", "from")
    routes: list[Route] = []
    labels = [f"to[{n}]" for n in range(len(draft.to))]
    labels += [f"cc[{n}]" for n in range(len(draft.cc))]
    labels += [f"bcc[{n}]" for n in range(len(draft.bcc))]
    seen: set[str] = set()
    for mailbox, label in zip(draft.to + draft.cc + draft.bcc, labels, strict=True):
        if mailbox.address.lower() in seen:
            continue
        seen.add(mailbox.address.lower())
        try:
            decided = route(ctx.accounts, Recipient(mailbox.address), may_relay=True)
        except (NoSuchUser, RelayDenied) as e:
            raise from_store_error(e, label) from None
        except ValueError:
            raise ApiError.bad(label, f"{label} is not a valid email address") from None
        if isinstance(decided, RemoteRoute) and not ctx.delivery.can_relay:
            raise ApiError(503, "no_outbound", "Mail to other domains cannot be sent yet.", label)
        routes.append(decided)
    now = ctx.clock.seconds()
    hostname = ctx.settings.hostname
    message, message_id = await _work(ctx, big, build, draft, now, hostname, False)
    protocol = "HTTPS" if request.isSecure() else "HTTP"
    trace = (
        f"Received: from [{client_ip(request)}] by {hostname} (twistedmail) "
        f"with {protocol}A; {_date(message)}\r\n"
    ).encode("utf-8", "replace")
    message = trace + message
    envelope = Envelope(
        sender=draft.sender.address,
        recipients=tuple(r.recipient for r in routes),
        smtputf8=draft.needs_utf8,
        size=len(message),
    )
    try:
        delivered = await ctx.delivery.deliver(envelope, message, routes)
    except MailError as e:
        raise from_store_error(e) from None
    log.info(
        "{user} sent {msgid} to {count} recipients over HTTP",
        user=call.user,
        msgid=message_id,
        count=len(routes),
    )
    sent_copy = await _keep_copy(
        call, (await _work(ctx, big, build, draft, now, hostname, True))[0]
    )
    return json_reply(
        {
            "message_id": message_id,
            "queue_id": delivered.queue_id,
            "local_deliveries": len(delivered.stored),
            "sent": sent_copy,
        },
        201,
    )


async def _work(ctx: ApiContext, big: bool, f: Callable[..., _T], *args: Any) -> _T:
    """
    ``f(*args)``, in the thread pool for a big request: parsing a large
    multipart body and building a large MIME message take the stdlib a
    second or more, which on the reactor thread would pause every session.
    """
    if not big or not IReactorThreads.providedBy(ctx.reactor):
        return f(*args)
    result: _T = await deferToThreadPool(ctx.reactor, ctx.reactor.getThreadPool(), f, *args)
    return result


def _date(message: bytes) -> str:
    """The Date we just wrote, reused in the trace line."""
    for line in message.split(b"\r\n"):
        if line.lower().startswith(b"date:"):
            return line[5:].strip().decode("ascii", "replace")
        if not line:
            break
    return ""


async def _keep_copy(call: Call, message: bytes) -> dict[str, object] | None:
    """Append to Sent; a failure here is logged, not reported: the mail went."""
    account = call.me
    try:
        sent = await find_special(account, SpecialUse.SENT)
        if sent is None:
            return None
        appended = await account.append(sent, message, [SEEN])
    except MailError:
        log.failure("Could not keep a Sent copy for {user}", user=call.user)
        return None
    return {"mailbox": appended.mailbox, "uid": appended.info.uid}
