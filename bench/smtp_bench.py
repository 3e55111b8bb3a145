"""
SMTP receiving benchmark: messages per second accepted *and* durably stored.

Postfix's ``smtp-source`` (Debian package ``postfix``; no Postfix daemon is
run) sends 2 KB messages to each server under test, with 1 and 10 parallel
sessions, either a new connection per message or kept open (``-d``).  A
run counts only when every message is on disk afterwards.  Peak memory is
the server process's VmHWM.

Servers:

* ``ours``: twistedmail's SMTP server on the Maildir store: durable before
  the 250 (the store's delivery journal flushed, from which a restart
  rewrites anything a crash lost; file and directory fsync'd for messages
  over 256 KiB), see twistedmail/store/_maildir_journal.py.
* ``aiosmtpd``: an aiosmtpd server whose handler writes and fsyncs a
  Maildir file, durable the classic way (tmp/, fsync, rename to new/,
  fsync dir).
  aiosmtpd is not a twistedmail dependency: pass ``--aiosmtpd-python`` an
  interpreter that has it (e.g. a scratch venv with ``pip install
  aiosmtpd``), or the peer is skipped with a message.
* ``postfix`` (optional; skipped with a message unless Debian's postfix is
  installed and we are root, or with ``--no-postfix``): a private Postfix
  instance per column (tests/e2e/postfix_harness.py) on a loopback port,
  whose ``virtual`` agent delivers into a Maildir.  Postfix answers 250 once
  a message is queued, before delivery, so its clock stops only when the
  last message is a file in the Maildir (time to all stored, as
  bench/queue_bench.py does); its peak memory and CPU are spread over many
  processes and are not shown.
* ``--peer NAME=HOST:PORT`` adds any already running server on loopback;
  its storage cannot be checked from here, so its column trusts its 250s.

Usage: ``python bench/smtp_bench.py [--messages 2000] [--size 2048]``.
This is a benchmark, not a test: it prints a table and never fails CI.
On a shared machine use ``--repeat 3`` (servers take turns within each
column and the fastest run counts) and ``--cpu`` (server CPU per message,
steadier than the rate); while tuning, ``--quick``, ``--configs 1d,10d``,
``--only-ours`` and ``--profile FILE`` (cProfile of our server per column).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SMTP_SOURCE = "/usr/sbin/smtp-source"
RECIPIENT = "bob@bench.test"
POSTFIX_DEADLINE = 600.0
"""Give up waiting for Postfix's deliveries after this long (a hung run, not a slow one)."""


# --- the servers (run in child processes) -----------------------------------------


def serve_ours(
    data_dir: str, port_file: str, memory: bool = False, profile: str | None = None
) -> None:
    from twisted.internet import reactor as _reactor
    from twisted.logger import globalLogBeginner

    from twistedmail.accounts import Accounts
    from twistedmail.smtp.server import Role, SMTPFactory, SmtpSettings
    from twistedmail.store.maildir import MaildirStore
    from twistedmail.store.memory import MemoryStore

    reactor: Any = _reactor
    globalLogBeginner.beginLoggingTo([], redirectStandardIO=False)
    accounts = Accounts(os.path.join(data_dir, "accounts.json"), scrypt_n=2)
    accounts.add_user(RECIPIENT, "x")
    store = MemoryStore() if memory else MaildirStore(data_dir, reactor)
    settings = SmtpSettings(max_connections=10_000, max_connections_per_client=10_000)
    factory = SMTPFactory(
        Role.MX, settings, "bench.test", accounts, store, None, None, None, reactor
    )
    port = reactor.listenTCP(0, factory, backlog=128, interface="127.0.0.1")
    Path(port_file).write_text(str(port.getHost().port))
    if profile is None:
        reactor.run()
        return
    import cProfile

    profiler = cProfile.Profile()
    profiler.runcall(reactor.run)
    profiler.dump_stats(profile)


def serve_aiosmtpd(data_dir: str, port_file: str) -> None:
    """The peer, with the same durability: runs under an interpreter that has aiosmtpd."""
    import asyncio
    import socket as socketlib
    import uuid

    from aiosmtpd.smtp import SMTP  # type: ignore[import-not-found, unused-ignore]

    maildir = os.path.join(data_dir, "maildir")
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(maildir, sub), exist_ok=True)

    def write(data: bytes) -> None:
        name = uuid.uuid4().hex
        tmp = os.path.join(maildir, "tmp", name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, os.path.join(maildir, "new", name))
        dfd = os.open(os.path.join(maildir, "new"), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            data = (
                b"Return-Path: <%s>\r\n" % envelope.mail_from.encode() + envelope.original_content
            )
            await asyncio.get_running_loop().run_in_executor(None, write, data)
            return "250 OK"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sock = socketlib.socket()
        sock.bind(("127.0.0.1", 0))
        server = await loop.create_server(lambda: SMTP(Handler()), sock=sock, backlog=128)
        with open(port_file, "w") as f:  # noqa: ASYNC230  (once, before serving)
            f.write(str(sock.getsockname()[1]))
        await server.serve_forever()

    asyncio.run(main())


# --- the driver -------------------------------------------------------------------------


@dataclass
class Result:
    rate: float | None
    peak_mb: float | None
    note: str = ""
    cpu_ms: float | None = None  # server CPU (user + system) per message


def count_stored(data_dir: str) -> int:
    return sum(
        len(files) for root, _dirs, files in os.walk(data_dir) if os.path.basename(root) == "new"
    )


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process, all its threads (proc(5) fields 14 and 15)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class Child:
    """A server under test in its own process, on a fresh data directory."""

    def __init__(self, python: str, kind: str, profile: str | None = None) -> None:
        self.data_dir = tempfile.mkdtemp(prefix=f"smtpbench-{kind}-")
        port_file = os.path.join(self.data_dir, "port")
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
        argv = [python, __file__, "--serve", kind, "--data", self.data_dir]
        argv += ["--port-file", port_file]
        if profile is not None:
            argv += ["--profile", profile]
        self.process = subprocess.Popen(argv, env=env)
        deadline = time.monotonic() + 30
        while not os.path.exists(port_file) or not Path(port_file).read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{kind} server did not start")
            time.sleep(0.05)
        self.port = int(Path(port_file).read_text())
        self.cpu_at_start = cpu_seconds(self.process.pid)

    def stop(self) -> tuple[float | None, float | None]:
        """Stop the server; its peak memory (MB) and CPU seconds."""
        peak = peak_mb(self.process.pid)
        cpu = cpu_seconds(self.process.pid)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        if cpu is None or self.cpu_at_start is None:
            return peak, None
        return peak, cpu - self.cpu_at_start


def smtp_source(
    port: int,
    sessions: int,
    keep_open: bool,
    messages: int,
    size: int,
    recipient: str = RECIPIENT,
) -> float:
    args = [SMTP_SOURCE, "-s", str(sessions), "-m", str(messages), "-l", str(size)]
    args += ["-f", "sender@bench.example", "-t", recipient, "-M", "client.bench.example"]
    if keep_open:
        args.append("-d")
    start = time.perf_counter()
    subprocess.run([*args, f"127.0.0.1:{port}"], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def run_child(
    python: str,
    kind: str,
    sessions: int,
    keep: bool,
    n: int,
    size: int,
    check: bool = True,
    profile: str | None = None,
) -> Result:
    if profile is not None:
        profile = f"{profile}.{sessions}{'d' if keep else ''}"
    child = Child(python, kind, profile)
    try:
        elapsed = smtp_source(child.port, sessions, keep, n, size)
        stored = count_stored(child.data_dir) if check else n
    finally:
        peak, cpu = child.stop()
    if stored != n:
        return Result(None, peak, f"only {stored}/{n} stored")
    return Result(n / elapsed, peak, cpu_ms=None if cpu is None else cpu * 1000 / n)


def run_peer(address: str, sessions: int, keep: bool, n: int, size: int) -> Result:
    host, _, port = address.rpartition(":")
    if host not in ("127.0.0.1", "localhost"):
        return Result(None, None, "peers must be on loopback")
    return Result(n / smtp_source(int(port), sessions, keep, n, size), None, "250s trusted")


def postfix_harness() -> Any:
    """The e2e tests' private-Postfix harness (the checkout's root on the path)."""
    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    from tests.e2e import postfix_harness as harness

    return harness


def postfix_unavailable() -> str | None:
    try:
        harness = postfix_harness()
    except ImportError as e:
        return f"cannot import tests.e2e.postfix_harness ({e})"
    reason: str | None = harness.unavailable()
    return reason


def count_files(directory: Path) -> int:
    try:
        return sum(1 for _ in os.scandir(directory))
    except FileNotFoundError:
        return 0


def run_postfix(sessions: int, keep: bool, n: int, size: int) -> Result:
    """
    A fresh private Postfix; the time until every message is a Maildir file.

    Postfix's 250 means queued (fsync'd in its queue), not delivered, so
    smtp-source finishing is not the end: the clock runs on until the
    ``virtual`` agent has written all ``n`` files into ``new/``.
    """
    harness = postfix_harness()
    postfix = harness.Postfix({})
    try:
        postfix.start()
        new = postfix.vmail / harness.MAILDIR / "new"
        start = time.perf_counter()
        smtp_source(postfix.port, sessions, keep, n, size, f"bob@{harness.DOMAIN}")
        while (stored := count_files(new)) < n:
            if time.perf_counter() - start > POSTFIX_DEADLINE:
                return Result(None, None, f"only {stored}/{n} stored")
            time.sleep(0.01)
        elapsed = time.perf_counter() - start
    finally:
        postfix.stop()
    return Result(n / elapsed, None)


def has_aiosmtpd(python: str) -> bool:
    probe = subprocess.run([python, "-c", "import aiosmtpd"], capture_output=True, check=False)
    return probe.returncode == 0


def parse_configs(text: str) -> list[tuple[int, bool]]:
    """``1,1d,10,10d``: session counts, ``d`` for kept-open connections."""
    configs = []
    for part in text.split(","):
        part = part.strip()
        keep = part.endswith("d")
        configs.append((int(part.removesuffix("d")), keep))
    return configs


def rows(
    results: dict[str, list[Result]], configs: list[tuple[int, bool]], cpu: bool = False
) -> Iterator[str]:
    names = list(results)
    head = f"{'sessions / connections':<28}" + "".join(f"{n + ' msg/s':>20}" for n in names)
    head += "".join(f"{n + ' peak MB':>18}" for n in names[:2])
    if cpu:
        head += "".join(f"{n + ' CPU ms/msg':>20}" for n in names[:2])
    ratios = [p for p in ("aiosmtpd", "postfix") if "ours" in results and p in results]
    head += "".join(f"{'ours/' + p:>15}" for p in ratios)
    yield head
    for i, (sessions, keep) in enumerate(configs):
        label = f"{sessions} {'session' if sessions == 1 else 'sessions'}, "
        label += "kept open (-d)" if keep else "new per message"
        line = f"{label:<28}"
        for name in names:
            r = results[name][i]
            line += f"{r.rate:>20.0f}" if r.rate else f"{r.note or 'n/a':>20}"
        for name in names[:2]:
            p = results[name][i].peak_mb
            line += f"{p:>18.1f}" if p else f"{'n/a':>18}"
        for name in names[:2] if cpu else ():
            c = results[name][i].cpu_ms
            line += f"{c:>20.3f}" if c else f"{'n/a':>20}"
        for peer in ratios:
            ours, theirs = results["ours"][i].rate, results[peer][i].rate
            line += f"{ours / theirs:>14.2f}x" if ours and theirs else f"{'n/a':>15}"
        yield line


def best(runs: list[Result]) -> Result:
    """The fastest complete run: on a shared machine, noise only ever slows a run down."""
    complete = [r for r in runs if r.rate]
    if not complete:
        return runs[-1]
    top = max(complete, key=lambda r: r.rate or 0.0)
    peaks = [r.peak_mb for r in runs if r.peak_mb]
    cpus = [r.cpu_ms for r in complete if r.cpu_ms]
    return Result(top.rate, max(peaks) if peaks else None, top.note, min(cpus) if cpus else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--aiosmtpd-python", default=sys.executable)
    parser.add_argument("--peer", action="append", default=[], help="NAME=HOST:PORT")
    parser.add_argument(
        "--with-memory",
        action="store_true",
        help="also run ours on the in-memory store (no disk): the protocol engine alone",
    )
    parser.add_argument(
        "--configs",
        default="1,1d,10,10d",
        help="which columns: sessions, with d for kept-open (default 1,1d,10,10d)",
    )
    parser.add_argument("--only-ours", action="store_true", help="skip the peers (quick iteration)")
    parser.add_argument("--no-postfix", action="store_true", help="skip the private Postfix peer")
    parser.add_argument(
        "--repeat", type=int, default=1, help="run each cell N times and keep the fastest"
    )
    parser.add_argument(
        "--quick", action="store_true", help="500 messages instead of 2,000 (while iterating)"
    )
    parser.add_argument("--profile", help="cProfile our server into PROFILE.<column>")
    parser.add_argument(
        "--cpu", action="store_true", help="also print each server's CPU time per message"
    )
    parser.add_argument(
        "--serve", choices=["ours", "ours-memory", "aiosmtpd"], help=argparse.SUPPRESS
    )
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--port-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve in ("ours", "ours-memory"):
        memory = args.serve == "ours-memory"
        return serve_ours(args.data, args.port_file, memory=memory, profile=args.profile)
    if args.serve == "aiosmtpd":
        return serve_aiosmtpd(args.data, args.port_file)
    if not os.path.exists(SMTP_SOURCE):
        sys.exit(f"{SMTP_SOURCE} not found: apt install postfix (no daemon needs to run)")
    n = 500 if args.quick else args.messages
    size = args.size
    configs = parse_configs(args.configs)
    servers: list[tuple[str, str, bool]] = [("ours", sys.executable, True)]
    if args.only_ours:
        pass
    elif has_aiosmtpd(args.aiosmtpd_python):
        servers.append(("aiosmtpd", args.aiosmtpd_python, True))
    else:
        print(
            f"aiosmtpd peer skipped: {args.aiosmtpd_python} cannot import aiosmtpd "
            "(make a scratch venv with `pip install aiosmtpd` and pass --aiosmtpd-python)."
        )
    if args.with_memory:
        servers.append(("ours-memory", sys.executable, False))
    if not args.only_ours:
        reason = "--no-postfix" if args.no_postfix else postfix_unavailable()
        if reason is None:
            servers.append(("postfix", "", True))
        else:
            print(f"postfix peer skipped: {reason}")
    results: dict[str, list[Result]] = {name: [] for name, _, _ in servers}
    for s, k in configs:
        # Servers take turns within a column, so a busy spell on a shared
        # machine hits both sides of a ratio rather than one.
        runs: dict[str, list[Result]] = {name: [] for name, _, _ in servers}
        for _ in range(args.repeat):
            for name, python, check in servers:
                if name == "postfix":
                    runs[name].append(run_postfix(s, k, n, size))
                    continue
                profile = f"{args.profile}.{name}" if args.profile and name != "aiosmtpd" else None
                runs[name].append(run_child(python, name, s, k, n, size, check, profile))
        for name in runs:
            results[name].append(best(runs[name]))
    for spec in args.peer:
        name, _, address = spec.partition("=")
        results[name] = [run_peer(address, s, k, n, size) for s, k in configs]
    cpus = os.cpu_count()
    print(f"{n} messages of {size} octets, every one durable on disk before 250 ({cpus} CPUs)")
    if args.repeat > 1:
        print(f"(fastest of {args.repeat} runs per cell, servers taking turns)")
    if "postfix" in results:
        print(
            "(postfix: 250 means queued; its figure is time until every message is in its Maildir)"
        )
    if args.with_memory:
        print(
            "(ours-memory keeps mail in memory: no disk, no fsync; not comparable for durability)"
        )
    for line in rows(results, configs, args.cpu):
        print(line)


if __name__ == "__main__":
    main()
