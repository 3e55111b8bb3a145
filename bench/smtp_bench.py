"""
SMTP receiving benchmark: messages per second accepted *and* durably stored.

Postfix's ``smtp-source`` (Debian package ``postfix``; no Postfix daemon is
run) sends 2 KB messages to each server under test, with 1 and 10 parallel
sessions, either a new connection per message or kept open (``-d``).  A
run counts only when every message is on disk afterwards.  Peak memory is
the server process's VmHWM.

Servers:

* ``ours``: twistedmail's SMTP server on the Maildir store (fsync'd file
  and directory before 250).
* ``aiosmtpd``: an aiosmtpd server whose handler writes and fsyncs a
  Maildir file the same way (tmp/, fsync, rename to new/, fsync dir).
  aiosmtpd is not a twistedmail dependency: pass ``--aiosmtpd-python`` an
  interpreter that has it (e.g. a scratch venv with ``pip install
  aiosmtpd``), or the peer is skipped with a message.
* ``--peer NAME=HOST:PORT`` adds any already running server (e.g. a
  Postfix configured to deliver into a Maildir on a loopback port); its
  storage cannot be checked from here, so its column trusts its 250s.

Usage: ``python bench/smtp_bench.py [--messages 2000] [--size 2048]``.
This is a benchmark, not a test: it prints a table and never fails CI.
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
CONFIGS = [(1, False), (1, True), (10, False), (10, True)]


# --- the servers (run in child processes) -----------------------------------------


def serve_ours(data_dir: str, port_file: str, memory: bool = False) -> None:
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
    reactor.run()


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


def count_stored(data_dir: str) -> int:
    return sum(
        len(files) for root, _dirs, files in os.walk(data_dir) if os.path.basename(root) == "new"
    )


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

    def __init__(self, python: str, kind: str) -> None:
        self.data_dir = tempfile.mkdtemp(prefix=f"smtpbench-{kind}-")
        port_file = os.path.join(self.data_dir, "port")
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
        self.process = subprocess.Popen(
            [python, __file__, "--serve", kind, "--data", self.data_dir, "--port-file", port_file],
            env=env,
        )
        deadline = time.monotonic() + 30
        while not os.path.exists(port_file) or not Path(port_file).read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{kind} server did not start")
            time.sleep(0.05)
        self.port = int(Path(port_file).read_text())

    def stop(self) -> float | None:
        peak = peak_mb(self.process.pid)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        return peak


def smtp_source(port: int, sessions: int, keep_open: bool, messages: int, size: int) -> float:
    args = [SMTP_SOURCE, "-s", str(sessions), "-m", str(messages), "-l", str(size)]
    args += ["-f", "sender@bench.example", "-t", RECIPIENT, "-M", "client.bench.example"]
    if keep_open:
        args.append("-d")
    start = time.perf_counter()
    subprocess.run([*args, f"127.0.0.1:{port}"], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def run_child(
    python: str, kind: str, sessions: int, keep: bool, n: int, size: int, check: bool = True
) -> Result:
    child = Child(python, kind)
    try:
        elapsed = smtp_source(child.port, sessions, keep, n, size)
        stored = count_stored(child.data_dir) if check else n
    finally:
        peak = child.stop()
    if stored != n:
        return Result(None, peak, f"only {stored}/{n} stored")
    return Result(n / elapsed, peak)


def run_peer(address: str, sessions: int, keep: bool, n: int, size: int) -> Result:
    host, _, port = address.rpartition(":")
    if host not in ("127.0.0.1", "localhost"):
        return Result(None, None, "peers must be on loopback")
    return Result(n / smtp_source(int(port), sessions, keep, n, size), None, "250s trusted")


def has_aiosmtpd(python: str) -> bool:
    probe = subprocess.run([python, "-c", "import aiosmtpd"], capture_output=True, check=False)
    return probe.returncode == 0


def rows(results: dict[str, list[Result]]) -> Iterator[str]:
    names = list(results)
    head = f"{'sessions / connections':<28}" + "".join(f"{n + ' msg/s':>20}" for n in names)
    head += "".join(f"{n + ' peak MB':>18}" for n in names[:2])
    if "aiosmtpd" in results:
        head += f"{'ours/aiosmtpd':>15}"
    yield head
    for i, (sessions, keep) in enumerate(CONFIGS):
        label = f"{sessions} {'session' if sessions == 1 else 'sessions'}, "
        label += "kept open (-d)" if keep else "new per message"
        line = f"{label:<28}"
        for name in names:
            r = results[name][i]
            line += f"{r.rate:>20.0f}" if r.rate else f"{r.note or 'n/a':>20}"
        for name in names[:2]:
            p = results[name][i].peak_mb
            line += f"{p:>18.1f}" if p else f"{'n/a':>18}"
        if "aiosmtpd" in results:
            ours, theirs = results["ours"][i].rate, results["aiosmtpd"][i].rate
            line += f"{ours / theirs:>14.2f}x" if ours and theirs else f"{'n/a':>15}"
        yield line


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
        "--serve", choices=["ours", "ours-memory", "aiosmtpd"], help=argparse.SUPPRESS
    )
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--port-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve in ("ours", "ours-memory"):
        return serve_ours(args.data, args.port_file, memory=args.serve == "ours-memory")
    if args.serve == "aiosmtpd":
        return serve_aiosmtpd(args.data, args.port_file)
    if not os.path.exists(SMTP_SOURCE):
        sys.exit(f"{SMTP_SOURCE} not found: apt install postfix (no daemon needs to run)")
    n, size = args.messages, args.size
    results: dict[str, list[Result]] = {}
    results["ours"] = [run_child(sys.executable, "ours", s, k, n, size) for s, k in CONFIGS]
    if has_aiosmtpd(args.aiosmtpd_python):
        py = args.aiosmtpd_python
        results["aiosmtpd"] = [run_child(py, "aiosmtpd", s, k, n, size) for s, k in CONFIGS]
    else:
        print(
            f"aiosmtpd peer skipped: {args.aiosmtpd_python} cannot import aiosmtpd "
            "(make a scratch venv with `pip install aiosmtpd` and pass --aiosmtpd-python)."
        )
    if args.with_memory:
        results["ours-memory"] = [
            run_child(sys.executable, "ours-memory", s, k, n, size, check=False) for s, k in CONFIGS
        ]
    for spec in args.peer:
        name, _, address = spec.partition("=")
        results[name] = [run_peer(address, s, k, n, size) for s, k in CONFIGS]
    print(f"{n} messages of {size} octets, every one fsync'd before 250 ({os.cpu_count()} CPUs)")
    if args.with_memory:
        print(
            "(ours-memory keeps mail in memory: no disk, no fsync; not comparable for durability)"
        )
    for line in rows(results):
        print(line)


if __name__ == "__main__":
    main()
