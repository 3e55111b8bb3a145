"""
Maildir deliveries per second, with and without the delivery journal.

The store alone, no SMTP: one account, 2 KB messages delivered one after
the other (what one kept-open SMTP session asks of the store) and ten at a
time (ten sessions), each acknowledged only once durable.  ``journal`` is
the default path (one flushed log record per message, see
twistedmail/store/_maildir_journal.py); ``fsync`` makes every delivery
fsync its file and ``new/`` itself, as the store did before the journal.
Reactor CPU is the reactor thread's own time per delivery (thread_time),
the part that other sessions wait for.

Usage: ``python bench/delivery_bench.py [--messages 2000] [--repeat 3]``.
A benchmark, not a test: it prints a table; the modes take turns and the
best run of each counts (the machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from typing import Any

from twisted.internet.defer import ensureDeferred, gatherResults

from twistedmail.store.maildir import MaildirStore

USER = "bob@bench.test"
MODES = ("journal", "fsync")


def message(size: int) -> bytes:
    head = b"From: alice@crepes.example\r\nTo: bob@bench.test\r\nSubject: bench\r\n\r\n"
    return head + b"x" * max(0, size - len(head) - 2) + b"\r\n"


async def run(reactor: Any, mode: str, n: int, size: int, parallel: int) -> tuple[float, float]:
    """Deliveries per second and reactor CPU microseconds per delivery."""
    data_dir = tempfile.mkdtemp(prefix=f"deliverybench-{mode}-")
    store = MaildirStore(data_dir, reactor, journal=mode == "journal")
    try:
        account = await store.account(USER)
        body = message(size)
        for _ in range(20):  # warm: folder loaded, threads started
            await account.deliver(body)
        start, cpu = time.perf_counter(), time.thread_time()
        for _ in range(n // parallel):
            await gatherResults([account.deliver(body) for _ in range(parallel)])
        elapsed, used = time.perf_counter() - start, time.thread_time() - cpu
        done = (n // parallel) * parallel
        return done / elapsed, used / done * 1e6
    finally:
        await store.close()
        shutil.rmtree(data_dir, ignore_errors=True)


async def main(reactor: Any, args: argparse.Namespace) -> None:
    print(f"{args.messages} deliveries of {args.size} octets, best of {args.repeat}")
    print(f"{'deliveries':<22}{'mode':<9}{'per second':>12}{'reactor CPU us':>16}{'vs fsync':>10}")
    for parallel in (1, 10):
        best: dict[str, tuple[float, float]] = {}
        for _ in range(args.repeat):
            for mode in MODES:
                rate, cpu = await run(reactor, mode, args.messages, args.size, parallel)
                if mode not in best or rate > best[mode][0]:
                    best[mode] = (rate, cpu)
        label = "one at a time" if parallel == 1 else f"{parallel} at a time"
        for mode in MODES:
            rate, cpu = best[mode]
            ratio = rate / best["fsync"][0]
            print(f"{label:<22}{mode:<9}{rate:>12.0f}{cpu:>16.0f}{ratio:>9.2f}x")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor
    failures: list[BaseException] = []

    async def run_then_stop() -> None:
        try:
            await main(reactor, args)
        except BaseException as e:
            failures.append(e)
        finally:
            reactor.stop()

    def start() -> None:
        ensureDeferred(run_then_stop())

    reactor.callWhenRunning(start)
    reactor.run()
    if failures:
        raise failures[0]


if __name__ == "__main__":
    cli()
