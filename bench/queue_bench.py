"""
Outbound queue benchmark: messages per second from submission, through the
sending server's queue, into the receiving server's Maildir.

Paths measured (each with its own fresh daemons):

* ``ours -> ours``: smtplib submits (STARTTLS + AUTH, several kept-open
  sessions in threads) to Alice's ``twistd -n twistedmail`` (crepes.fr),
  whose queue delivers over SMTP to Bob's daemon (hamburger.edu) through a
  ``[routes]`` entry.  The clock stops when the last message is a file in
  Bob's Maildir.
* ``postfix -> ours`` (if Debian's postfix is installed and we are root):
  the same submissions, in plain SMTP from loopback, to a private Postfix
  instance relaying hamburger.edu to Bob's daemon, with opportunistic TLS
  as our client does (``smtp_tls_security_level = may``), and again
  without TLS (``postfix, no TLS``), where Postfix can also reuse its
  connections to Bob's server for several messages.
* ``direct -> ours``: the same submissions straight to Bob's MX port, no
  queue in between: the ceiling the receiving side sets.

Both daemons use the Maildir store (fsync'd file and directory before any
250), and the queue fsyncs each message and envelope before its 250.
The machine's load is printed with the table: the figures are only
comparable within one run.

Usage: ``python bench/queue_bench.py [--messages 1000] [--size 2048]
[--sessions 8] [--no-postfix]``.  A benchmark, not a test: it prints a
table and never fails CI.
"""

from __future__ import annotations

import argparse
import os
import shutil
import smtplib
import ssl
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

# The daemons are driven by the e2e tests' harness (the checkout's root on the path).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e import postfix_harness
from tests.e2e.daemon_harness import PASSWORD, MailHost

ALICE = "alice@crepes.fr"
BOB = "bob@hamburger.edu"
DEADLINE = 600.0
"""Give up on a path after this long (a hung run, not a slow one)."""


def make_message(index: int, size: int) -> bytes:
    head = (
        f"From: {ALICE}\r\nTo: {BOB}\r\nSubject: bench {index}\r\n"
        f"Message-ID: <bench.{index}@crepes.fr>\r\n"
        "Date: Fri, 27 Nov 2026 09:00:00 +0000\r\n\r\n"
    ).encode()
    line = b"x" * 76 + b"\r\n"
    body = line * max(0, (size - len(head)) // len(line))
    return head + body + b"y" * max(0, size - len(head) - len(body) - 2) + b"\r\n"


Sender = Callable[[list[bytes]], None]
"""Sends its share of the messages over one connection."""


def submission_sender(host: MailHost) -> Sender:
    context = ssl.create_default_context(cafile=host.cafile)

    def send(messages: list[bytes]) -> None:
        with smtplib.SMTP("127.0.0.1", host.submission_port, timeout=60) as client:
            client.starttls(context=context)
            client.login(ALICE, PASSWORD)
            for raw in messages:
                client.sendmail(ALICE, [BOB], raw)

    return send


def plain_sender(port: int) -> Sender:
    def send(messages: list[bytes]) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
            for raw in messages:
                client.sendmail(ALICE, [BOB], raw)

    return send


def count_files(directory: Path) -> int:
    try:
        return sum(1 for _ in os.scandir(directory))
    except FileNotFoundError:
        return 0


@dataclass
class Result:
    name: str
    messages: int
    submitted: float
    delivered: float | None

    @property
    def rate(self) -> float | None:
        return self.messages / self.delivered if self.delivered else None


def run(name: str, send: Sender, bob: MailHost, messages: int, size: int, sessions: int) -> Result:
    """Submit ``messages`` over ``sessions`` connections; time until all are Bob's files."""
    batches: list[list[bytes]] = [[] for _ in range(sessions)]
    for i in range(messages):
        batches[i % sessions].append(make_message(i, size))
    new = bob.maildir(BOB) / "new"
    already = count_files(new)
    start = time.monotonic()
    with ThreadPoolExecutor(sessions) as pool:
        for future in [pool.submit(send, batch) for batch in batches]:
            future.result()
    submitted = time.monotonic() - start
    while count_files(new) - already < messages:
        if time.monotonic() - start > DEADLINE:
            print(f"{name}: gave up after {DEADLINE:.0f} s", file=sys.stderr)
            return Result(name, messages, submitted, None)
        time.sleep(0.01)
    return Result(name, messages, submitted, time.monotonic() - start)


def hosts(root: Path) -> tuple[MailHost, MailHost]:
    limits = {"smtp": {"max_connections_per_client": 200, "max_connections": 500}}
    alice = MailHost(root / "crepes", "crepes.fr", extra=limits)
    bob = MailHost(root / "hamburger", "hamburger.edu", extra=limits)
    alice.route_to(bob)
    bob.route_to(alice)
    alice.add_user(ALICE)
    bob.add_user(BOB)
    return alice, bob


def through_postfix(root: Path, label: str, tls: str, args: argparse.Namespace) -> Result:
    """The same submissions to a private Postfix relaying hamburger.edu to Bob's daemon."""
    _, bob = hosts(root)
    postfix = postfix_harness.Postfix(
        {"hamburger.edu": f"127.0.0.1:{bob.smtp_port}"}, {"smtp_tls_security_level": tls}
    )
    try:
        bob.start()
        postfix.start()
        return run(label, plain_sender(postfix.port), bob, args.messages, args.size, args.sessions)
    finally:
        postfix.stop()
        bob.stop()


def rows(results: list[Result], size: int, sessions: int) -> Iterator[str]:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    yield (
        f"{results[0].messages} messages of {size} bytes, {sessions} submission sessions, "
        f"{os.cpu_count()} CPUs, load average {load}"
    )
    ours = next((r.rate for r in results if r.name == "ours -> ours"), None)
    yield ""
    yield f"{'path':<18} {'all 250s (s)':>13} {'all stored (s)':>15} {'msg/s':>8} {'vs ours':>8}"
    for r in results:
        stored = f"{r.delivered:.2f}" if r.delivered else "-"
        rate = f"{r.rate:.0f}" if r.rate else "-"
        ratio = f"{r.rate / ours:.2f}x" if r.rate and ours else "-"
        yield f"{r.name:<18} {r.submitted:>13.2f} {stored:>15} {rate:>8} {ratio:>8}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--no-postfix", action="store_true")
    args = parser.parse_args()

    results = []
    root = Path(tempfile.mkdtemp(prefix="twistedmail-queue-bench-"))
    try:
        alice, bob = hosts(root / "ours")
        try:
            bob.start()
            alice.start()
            results.append(
                run(
                    "ours -> ours",
                    submission_sender(alice),
                    bob,
                    args.messages,
                    args.size,
                    args.sessions,
                )
            )
            results.append(
                run(
                    "direct -> ours",
                    plain_sender(bob.smtp_port),
                    bob,
                    args.messages,
                    args.size,
                    args.sessions,
                )
            )
        finally:
            alice.stop()
            bob.stop()

        reason = "--no-postfix" if args.no_postfix else postfix_harness.unavailable()
        if reason:
            print(f"postfix -> ours: skipped ({reason})", file=sys.stderr)
        else:
            for tls, label in (("may", "postfix -> ours"), ("none", "postfix, no TLS")):
                results.append(through_postfix(root / f"postfix-{tls}", label, tls, args))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    for line in rows(results, args.size, args.sessions):
        print(line)


if __name__ == "__main__":
    main()
