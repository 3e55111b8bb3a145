"""
``GET /api/events``: the account's change events as Server-Sent Events.

These are the same events an IMAP IDLE session hears (`IMailAccount.listen`),
whoever caused them: SMTP delivery, an IMAP client, another browser tab.
Each is one ``event:``/``data:`` pair with a JSON object naming the mailbox.
The stream opens with a ``ready`` event, so a client knows it is subscribed
before it fetches state (anything after that arrives as an event); a
comment line every ``keepalive`` seconds keeps proxies from closing it.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from twistedmail.http.errors import ApiError
from twistedmail.http.routing import STREAMING, Call, Reply
from twistedmail.model import (
    ChangeEvent,
    FlagsChanged,
    MailboxCreated,
    MailboxDeleted,
    MessagesAdded,
    MessagesExpunged,
)

log = Logger()


def describe(event: ChangeEvent) -> tuple[str, dict[str, Any]]:
    """The SSE event name and JSON data of one change event."""
    if isinstance(event, MessagesAdded):
        return "message_added", {
            "mailbox": event.mailbox,
            "uidvalidity": event.uidvalidity,
            "uids": [m.uid for m in event.messages],
        }
    if isinstance(event, FlagsChanged):
        return "flags_changed", {
            "mailbox": event.mailbox,
            "uidvalidity": event.uidvalidity,
            "messages": [{"uid": m.uid, "flags": sorted(m.flags)} for m in event.messages],
        }
    if isinstance(event, MessagesExpunged):
        return "messages_expunged", {
            "mailbox": event.mailbox,
            "uidvalidity": event.uidvalidity,
            "uids": list(event.uids),
        }
    if isinstance(event, MailboxCreated):
        return "mailbox_created", {"mailbox": event.mailbox}
    if isinstance(event, MailboxDeleted):
        return "mailbox_deleted", {"mailbox": event.mailbox}
    return "mailbox_renamed", {"old": event.old, "new": event.new}


def frame(name: str, data: object) -> bytes:
    """One SSE event (WHATWG HTML §9.2.5); JSON never contains a raw newline."""
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def event_stream(call: Call) -> Reply:
    request, account, user = call.request, call.me, call.user or ""
    streams = call.ctx.streams
    if streams[user] >= call.ctx.settings.max_event_streams:
        # Each stream holds a connection and a listener: bound them per user.
        raise ApiError(429, "too_many_streams", "Too many open event streams.")
    streams[user] += 1
    request.setResponseCode(200)
    request.setHeader(b"Content-Type", b"text/event-stream; charset=utf-8")
    request.setHeader(b"X-Accel-Buffering", b"no")  # nginx: do not buffer the stream
    request.write(b"retry: 5000\n\n" + frame("ready", {"user": call.user}))
    open_ = [True]

    def listener(event: ChangeEvent) -> None:
        if open_[0]:
            name, data = describe(event)
            request.write(frame(name, data))

    def keepalive() -> None:
        if open_[0]:
            request.write(b": keepalive\n\n")

    stop_listening = account.listen(listener)
    ticker = LoopingCall(keepalive)
    ticker.clock = call.ctx.clock
    ticker.start(call.ctx.settings.keepalive, now=False)

    def closed(_: object) -> None:
        open_[0] = False
        streams[user] -= 1
        if streams[user] <= 0:
            del streams[user]
        stop_listening()
        if ticker.running:
            ticker.stop()
        log.debug("Event stream of {user} closed", user=call.user)

    request.notifyFinish().addBoth(closed)
    return STREAMING
