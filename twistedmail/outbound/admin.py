"""
``twistedmail queue ...``: look at the outbound queue and act on it.

Reading is done straight from the files.  Changes go through the daemon
when one runs, so that only one process ever writes an entry: the command
drops a request into ``control/`` and the runner applies it within a
second (`twistedmail.outbound.runner.QueueRunner`).  When no daemon holds
the queue lock, ``retry`` and ``delete`` are applied here directly, while
``bounce`` (which needs the runner to write and send the DSN) waits for
the daemon's next start.
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import os
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

from twistedmail.interfaces import MailError
from twistedmail.outbound.queue import QueueEntry, QueueFiles, queue_dir, valid_id

#: How long a command waits for the running daemon to apply a request.
WAIT_SECONDS = 10.0


class _Context(Protocol):
    """What `twistedmail.cli` hands a command handler (its ``Context``)."""

    args: argparse.Namespace

    @property
    def config(self) -> Any: ...

    def out(self, line: str) -> None: ...


class QueueCommandError(MailError):
    """Bad input; `twistedmail.cli.main` prints the text as one line."""


def _files(ctx: _Context) -> QueueFiles:
    return QueueFiles(queue_dir(ctx.config.server.data_dir))


def _duration(seconds: float) -> str:
    total = int(abs(seconds))
    if total >= 86400:
        return f"{total // 86400}d{total % 86400 // 3600}h"
    if total >= 3600:
        return f"{total // 3600}h{total % 3600 // 60}m"
    if total >= 60:
        return f"{total // 60}m"
    return f"{total}s"


def _when(next_attempt: float, now: float) -> str:
    if next_attempt <= now:
        return "due now"
    return f"next in {_duration(next_attempt - now)}"


def _entry(files: QueueFiles, queue_id: str) -> QueueEntry:
    if not valid_id(queue_id):
        raise QueueCommandError(f"not a queue id: {queue_id!r}")
    entry = files.read_entry(queue_id)
    if entry is None:
        raise QueueCommandError(f"no message {queue_id} in the queue")
    return entry


def _summary(entry: QueueEntry, now: float) -> list[str]:
    sender = f"<{entry.sender}>"
    lines = [
        f"{entry.id}  {_duration(now - entry.queued_at):>5} old  {entry.size:>8} bytes  {sender}"
    ]
    for state in entry.recipients:
        detail = state.status.value
        if state.status.value == "pending":
            detail += f", {_when(entry.next_attempt, now)}"
        if state.attempts:
            detail += f", {state.attempts} attempt(s)"
        last = f"  {state.reply}" if state.reply else ""
        lines.append(f"    {state.address}  [{detail}]{last}")
    return lines


def queue_list(ctx: _Context) -> int:
    files = _files(ctx)
    now = time.time()
    entries = list(files.entries())
    for entry in entries:
        for line in _summary(entry, now):
            ctx.out(line)
    for queue_id, operation in files.requests():
        ctx.out(f"(request waiting for the daemon: {operation} {queue_id})")
    pending = sum(len(e.pending) for e in entries)
    ctx.out(f"{len(entries)} message(s), {pending} recipient(s) to deliver.")
    return 0


def queue_show(ctx: _Context) -> int:
    files = _files(ctx)
    entry = _entry(files, ctx.args.id)
    now = time.time()
    for line in _summary(entry, now):
        ctx.out(line)
    ctx.out(f"  queued: {time.strftime('%Y-%m-%d %H:%M:%S %z', time.localtime(entry.queued_at))}")
    for key in ("ret", "envid", "body"):
        value = getattr(entry, key)
        if value:
            ctx.out(f"  {key}: {value}")
    if entry.smtputf8:
        ctx.out("  smtputf8: yes")
    for state in entry.recipients:
        notify = ",".join(state.recipient.notify)
        if notify or state.recipient.orcpt:
            ctx.out(
                f"  {state.address}: notify={notify or '-'} orcpt={state.recipient.orcpt or '-'}"
            )
    with open(files.message_path(entry.id), "rb") as f:
        head = f.read(64 * 1024)
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
    for name in ("From", "To", "Cc", "Subject", "Date", "Message-ID"):
        for value in headers.get_all(name, []):
            ctx.out(f"  {name}: {' '.join(str(value).split())}")
    return 0


def _request(ctx: _Context, queue_id: str, operation: str, apply: Callable[[], str]) -> int:
    """
    Hand ``operation`` to the running daemon, or when none runs, ``apply``
    it here while holding the daemon's lock so it cannot start meanwhile.
    """
    files = _files(ctx)
    lock = files.try_lock()
    if lock is not None:
        try:
            ctx.out(apply())
        finally:
            os.close(lock)
        return 0
    files.request(queue_id, operation)
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if (queue_id, operation) not in files.requests():
            ctx.out(f"Done: {operation} {queue_id}.")
            return 0
        time.sleep(0.1)
    ctx.out(f"Asked the daemon to {operation} {queue_id}; it has not done so yet.")
    return 0


def queue_retry(ctx: _Context) -> int:
    files = _files(ctx)
    queue_id = ctx.args.id or "ALL"
    if queue_id != "ALL":
        _entry(files, queue_id)

    def apply() -> str:
        targets = [_entry(files, queue_id)] if queue_id != "ALL" else list(files.entries())
        for entry in targets:
            files.write_entry(replace(entry, next_attempt=time.time()))
        return f"{len(targets)} message(s) will be tried as soon as the daemon runs."

    return _request(ctx, queue_id, "retry", apply)


def queue_delete(ctx: _Context) -> int:
    files = _files(ctx)
    entry = _entry(files, ctx.args.id)

    def apply() -> str:
        files.remove(entry.id)
        return f"Deleted {entry.id}."

    return _request(ctx, entry.id, "delete", apply)


def queue_bounce(ctx: _Context) -> int:
    files = _files(ctx)
    entry = _entry(files, ctx.args.id)

    def apply() -> str:
        files.request(entry.id, "bounce")
        return f"{entry.id} will be returned to <{entry.sender}> when the daemon starts."

    return _request(ctx, entry.id, "bounce", apply)


def register(subparsers: Any) -> None:
    """Add ``queue list|show|retry|delete|bounce`` to the admin command."""
    group = subparsers.add_parser("queue", help="the outbound mail queue")
    commands = group.add_subparsers(title="commands", metavar="COMMAND", required=True)

    def add(name: str, handler: Callable[[_Context], int], help_text: str) -> Any:
        parser = commands.add_parser(name, help=help_text, description=help_text)
        parser.set_defaults(handler=handler)
        return parser

    add("list", queue_list, "list queued messages with each recipient's state")
    add("show", queue_show, "show one queued message").add_argument("id")
    add("retry", queue_retry, "try now (one message, or all)").add_argument("id", nargs="?")
    add("delete", queue_delete, "drop a message without telling anyone").add_argument("id")
    add("bounce", queue_bounce, "give up on a message and tell its sender").add_argument("id")
