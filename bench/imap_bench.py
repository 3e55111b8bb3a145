"""
IMAP benchmark: one 10,000-message INBOX, served by ``twistd -n
twistedmail`` on each store backend and by Dovecot, in the same run.

Measured (issue 5, Benchmark), each over plain TCP on loopback with one
client connection that stays logged in and selected:

* SELECT INBOX, the first time (Maildir: the index is built from the files)
  and again (warm);
* FETCH 1:* (FLAGS) and FETCH 1:* (ENVELOPE);
* UID SEARCH SUBJECT by header text (1 message in 100 matches);
* STORE 1:* +FLAGS (\\Flagged), then -FLAGS: every message changes (for a
  Maildir, every file is renamed);
* a mixed workload: 10 clients in threads, each running sessions of LOGIN,
  SELECT, FETCH 20 (FLAGS ENVELOPE), FETCH BODY[] of one, STORE +FLAGS,
  APPEND, UID STORE +FLAGS (\\Deleted) on what it appended, EXPUNGE, LOGOUT,
  counted in commands per second.

How the mailbox is filled: for Maildir, 10,000 files are written straight
into ``cur/`` (the store adopts mail other programs drop in), and the same
files into Dovecot's Maildir; the memory store lives in the daemon, so it
is filled over IMAP with pipelined LITERAL+ APPENDs after start.

The peer is a private Dovecot (Debian ``dovecot-imapd``; needs root for its
privilege separation) on a loopback port with a passwd-file (PLAIN scheme,
so a LOGIN costs it nothing), ``mail_fsync`` left at its default.  Our users
get a cheap scrypt hash for the same reason.  Without Dovecot the table has
our columns only.

The client is a minimal one (reads lines and literals, counts untagged
FETCH responses to check every message was answered), so that the server's
time dominates.  Each single-client figure is the fastest of ``--repeat``
runs, the servers taking turns, since the machine is shared.

Usage: ``python bench/imap_bench.py [--messages 10000] [--repeat 3]
[--clients 10] [--sessions 8] [--no-dovecot] [--only maildir,memory,dovecot]``.
A benchmark, not a test: it prints a table and never fails CI.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

# The daemon is driven by the e2e tests' harness (the checkout's root on the path).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.daemon_harness import MailHost, free_port

USER = "bench@bench.test"
PASSWORD = "bench password"
NEEDLE = "quarterly"
"""In the subject of every 100th message: what UID SEARCH looks for."""
DOVECOT = "/usr/sbin/dovecot"
NOBODY = 65534
TUNING = "maildir_very_dirty_syncs = yes\n"
"""Only Dovecot touches its Maildir: rescan cur/ only when it must (as our index does)."""
LOGIN_TUNING = "  service_count = 0\n  process_min_avail = 2\n"
"""Dovecot's "high-performance" login mode: login processes serve many clients."""
TIMEOUT = 600.0
"""A socket read that takes longer is a hung server, not a slow one."""


# --- The mailbox ----------------------------------------------------------------------


def make_message(index: int, size: int = 2048) -> bytes:
    topic = f"{NEEDLE} report" if index % 100 == 0 else "status update"
    head = (
        f"Return-Path: <sender{index % 50}@example.test>\r\n"
        f"From: Sender {index % 50} <sender{index % 50}@example.test>\r\n"
        f"To: Bench User <{USER}>\r\n"
        f"Cc: team{index % 7}@example.test\r\n"
        f"Subject: {topic} number {index}\r\n"
        f"Date: Fri, 27 Nov 2026 09:{index // 60 % 60:02d}:{index % 60:02d} +0000\r\n"
        f"Message-ID: <bench.{index}@example.test>\r\n"
        f"In-Reply-To: <bench.{max(0, index - 1)}@example.test>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    body = line * max(1, (size - len(head)) // len(line))
    return head + body


def build_maildir(root: Path, count: int, size: int) -> None:
    """``count`` messages in ``root/cur`` as a delivery agent leaves them (no flags yet)."""
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    start = int(time.time()) - count
    for index in range(count):
        raw = make_message(index, size)
        path = root / "cur" / f"{start + index}.M{index}P1.bench,S={len(raw)}:2,"
        path.write_bytes(raw)
        os.utime(path, (start + index, start + index))


# --- A minimal IMAP client ----------------------------------------------------------------

_LITERAL = re.compile(rb"\{(\d+)\}\r\n\Z")


class ImapError(Exception):
    pass


class Client:
    """One connection; `command` sends a line and reads to its tagged reply."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.reader = self.sock.makefile("rb", buffering=1 << 16)
        self.tags = 0
        greeting = self.reader.readline()
        if not greeting.startswith(b"* OK"):
            raise ImapError(f"greeting: {greeting!r}")

    def send(self, line: bytes, literal: bytes | None = None) -> bytes:
        """Send one command (a literal as LITERAL+, no round trip); its tag."""
        self.tags += 1
        tag = b"b%d" % self.tags
        if literal is None:
            self.sock.sendall(tag + b" " + line + b"\r\n")
        else:
            self.sock.sendall(tag + b" " + line + b" {%d+}\r\n" % len(literal) + literal + b"\r\n")
        return tag

    def read(self, tag: bytes) -> list[bytes]:
        """Every response line up to and including the tagged one; NO/BAD raise."""
        lines: list[bytes] = []
        done = tag + b" "
        while True:
            line = self.reader.readline()
            if not line:
                raise ImapError("connection closed")
            while m := _LITERAL.search(line):
                line += self.reader.read(int(m[1])) + self.reader.readline()
            lines.append(line)
            if line.startswith(done):
                if not line.startswith(done + b"OK"):
                    raise ImapError(line.decode("ascii", "replace").strip())
                return lines

    def command(self, line: bytes, literal: bytes | None = None) -> list[bytes]:
        return self.read(self.send(line, literal))

    def login(self) -> None:
        self.command(b'LOGIN "%s" "%s"' % (USER.encode(), PASSWORD.encode()))

    def close(self) -> None:
        with contextlib.suppress(ImapError, OSError):
            self.command(b"LOGOUT")
        self.reader.close()
        self.sock.close()


def count_fetches(lines: list[bytes]) -> int:
    return sum(1 for line in lines if line.startswith(b"* ") and b" FETCH (" in line[:24])


def exists_of(lines: list[bytes]) -> int:
    for line in lines:
        if line.startswith(b"* ") and line.rstrip().endswith(b" EXISTS"):
            return int(line.split()[1])
    raise ImapError("no EXISTS in the SELECT reply")


def fill_over_imap(port: int, count: int, size: int, batch: int = 200) -> None:
    """APPEND ``count`` messages, ``batch`` at a time pipelined (LITERAL+)."""
    client = Client(port)
    client.login()
    try:
        for first in range(0, count, batch):
            tags = [
                client.send(b"APPEND INBOX ()", make_message(i, size))
                for i in range(first, min(count, first + batch))
            ]
            for tag in tags:
                client.read(tag)
    finally:
        client.close()


# --- The servers --------------------------------------------------------------------------


class Server:
    name: str
    port: int

    def stop(self) -> None:
        raise NotImplementedError


class Ours(Server):
    """``twistd -n twistedmail`` with one storage backend."""

    def __init__(self, root: Path, storage: str, count: int, size: int) -> None:
        self.name = f"ours/{storage}"
        self.fill_seconds: float | None = None
        self.host = MailHost(
            root,
            "bench.test",
            storage=storage,
            extra={"imap": {"max_connections_per_user": 1000, "max_login_failures": 1000}},
        )
        self.host.data.mkdir(parents=True, exist_ok=True)
        self.host.add_user(USER, PASSWORD)
        if storage == "maildir":
            build_maildir(self.host.maildir(USER), count, size)
        self.host.start()
        assert self.host.imap_port is not None, "the daemon has no IMAP listener"
        self.port = self.host.imap_port
        if storage != "maildir":
            started = time.perf_counter()
            fill_over_imap(self.port, count, size)
            self.fill_seconds = time.perf_counter() - started

    def stop(self) -> None:
        self.host.stop()
        trouble = [
            line
            for line in self.host.log_lines()
            if "Traceback" in line or "Unhandled" in line or "SERVERBUG" in line
        ]
        if trouble:
            print(
                f"{self.name}: the daemon logged errors:", *trouble[:20], sep="\n", file=sys.stderr
            )


class Dovecot(Server):
    """A private Dovecot master on a loopback port, its own config and Maildir."""

    def __init__(self, root: Path, count: int, size: int, tuned: bool = False) -> None:
        self.name = "dovecot-tuned" if tuned else "dovecot"
        self.root = root
        root.mkdir(parents=True)
        for directory in (root, root.parent):
            directory.chmod(0o755)  # its unprivileged processes walk into it
        self.port = free_port()
        home = root / "home"
        build_maildir(home / "Maildir", count, size)
        for path in (home, *home.rglob("*")):
            os.chown(path, NOBODY, NOBODY)
        (root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}:{NOBODY}:{NOBODY}::{home}::\n")
        self.config = root / "dovecot.conf"
        self.config.write_text(
            f"passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN {root}/passwd\n}}\n"
            f"userdb {{\n  driver = passwd-file\n  args = {root}/passwd\n}}\n"
            f"base_dir = {root}/run\nstate_dir = {root}/state\nlog_path = {root}/dovecot.log\n"
            "protocols = imap\nlisten = 127.0.0.1\nssl = no\ndisable_plaintext_auth = no\n"
            "auth_mechanisms = plain login\nmail_location = maildir:~/Maildir\n"
            "mail_max_userip_connections = 1000\n"
            + (TUNING if tuned else "")
            + "service imap-login {\n  chroot =\n"
            + (LOGIN_TUNING if tuned else "")
            + f"  inet_listener imap {{\n    address = 127.0.0.1\n    port = {self.port}\n  }}\n"
            "  inet_listener imaps {\n    port = 0\n  }\n}\n"
        )
        self.process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=5).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = root / "dovecot.log"
                    raise RuntimeError(
                        "dovecot did not start: " + (log.read_text() if log.exists() else "")
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def dovecot_unavailable() -> str | None:
    if not os.path.exists(DOVECOT):
        return f"{DOVECOT} is not installed (Debian package dovecot-imapd)"
    if os.geteuid() != 0:
        return "a private Dovecot needs root for its privilege separation"
    return None


# --- The measurements --------------------------------------------------------------------


@dataclass
class Figure:
    seconds: list[float] = field(default_factory=list)
    commands: int = 1
    note: str = ""

    @property
    def best(self) -> float | None:
        return min(self.seconds) if self.seconds else None


Operation = Callable[[Client, int], int]
"""Runs on a logged-in, selected client; returns how many commands it sent."""


def op_select(client: Client, count: int) -> int:
    exists = exists_of(client.command(b"SELECT INBOX"))
    if exists != count:
        raise ImapError(f"SELECT: {exists} EXISTS, expected {count}")
    return 1


def op_fetch(items: bytes) -> Operation:
    def run(client: Client, count: int) -> int:
        got = count_fetches(client.command(b"FETCH 1:* " + items))
        if got != count:
            raise ImapError(f"FETCH {items!r}: {got} responses, expected {count}")
        return 1

    return run


def op_search(client: Client, count: int) -> int:
    lines = client.command(b"UID SEARCH SUBJECT " + NEEDLE.encode())
    found = [line for line in lines if line.startswith(b"* SEARCH")]
    hits = len(found[0].split()) - 2 if found else 0
    if hits != (count + 99) // 100:
        raise ImapError(f"SEARCH: {hits} hits, expected {(count + 99) // 100}")
    return 1


def op_store(client: Client, count: int) -> int:
    for sign in (b"+", b"-"):
        got = count_fetches(client.command(b"STORE 1:* " + sign + b"FLAGS (\\Flagged)"))
        if got != count:
            raise ImapError(f"STORE {sign!r}: {got} responses, expected {count}")
    return 2


SINGLE: list[tuple[str, Operation]] = [
    ("SELECT INBOX (warm)", op_select),
    ("FETCH 1:* (FLAGS)", op_fetch(b"(FLAGS)")),
    ("FETCH 1:* (ENVELOPE)", op_fetch(b"(ENVELOPE)")),
    ("UID SEARCH SUBJECT text", op_search),
    ("STORE 1:* +/-FLAGS", op_store),
]


def timed(run: Callable[[], int]) -> tuple[float, int]:
    started = time.perf_counter()
    commands = run()
    return time.perf_counter() - started, commands


MIXED_ALL = (
    "LOGIN",
    "SELECT",
    "FETCH 20",
    "FETCH BODY[]",
    "STORE",
    "APPEND",
    "UID STORE",
    "EXPUNGE",
    "LOGOUT",
)
Latencies = dict[str, list[float]]


def mixed_session(port: int, count: int, index: int, latencies: Latencies) -> int:
    """One mail client's visit; the number of commands sent."""

    def command(kind: str, line: bytes, literal: bytes | None = None) -> list[bytes]:
        started = time.perf_counter()
        reply = client.command(line, literal)
        latencies.setdefault(kind, []).append(time.perf_counter() - started)
        return reply

    client = Client(port)
    command("LOGIN", b'LOGIN "%s" "%s"' % (USER.encode(), PASSWORD.encode()))
    exists_of(command("SELECT", b"SELECT INBOX"))
    # Only the original messages are read: they are never expunged, so their
    # numbers stay put while other clients append and expunge their own.
    first = 1 + (index * 37) % max(1, count - 20)
    command("FETCH 20", b"FETCH %d:%d (FLAGS ENVELOPE)" % (first, first + 19))
    command("FETCH BODY[]", b"FETCH %d (BODY[])" % first)
    command("STORE", b"STORE %d:%d +FLAGS (\\Answered)" % (first, first + 4))
    reply = command("APPEND", b"APPEND INBOX ()", make_message(count + index))
    uid = re.search(rb"\[APPENDUID \d+ (\d+)\]", reply[-1])
    if uid is None:
        raise ImapError(f"no APPENDUID: {reply[-1]!r}")
    command("UID STORE", b"UID STORE " + uid[1] + b" +FLAGS.SILENT (\\Deleted)")
    command("EXPUNGE", b"EXPUNGE")
    command("LOGOUT", b"LOGOUT")
    client.reader.close()
    client.sock.close()
    return len(MIXED_ALL)


def mixed(port: int, count: int, clients: int, sessions: int) -> tuple[float, int, Latencies]:
    done: list[int] = []
    errors: list[BaseException] = []
    latencies: list[Latencies] = [{} for _ in range(clients)]

    def worker(number: int) -> None:
        try:
            for n in range(sessions):
                done.append(mixed_session(port, count, number * sessions + n, latencies[number]))
        except BaseException as e:  # reported after the threads end
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    merged: Latencies = {}
    for each in latencies:
        for kind, seconds in each.items():
            merged.setdefault(kind, []).extend(seconds)
    return elapsed, sum(done), merged


def messages_in_inbox(port: int) -> int:
    client = Client(port)
    client.login()
    lines = client.command(b"STATUS INBOX (MESSAGES)")
    client.close()
    m = re.search(rb"\(MESSAGES (\d+)\)", b"".join(lines))
    if m is None:
        raise ImapError(f"STATUS: {lines!r}")
    return int(m[1])


# --- The table ------------------------------------------------------------------------------


def cell(figure: Figure | None) -> str:
    if figure is None or figure.best is None:
        return (figure.note if figure else "") or "-"
    per = figure.best / figure.commands
    return f"{per * 1000:9.1f} ms {1 / per:8.1f}/s"


def ratio(ours: Figure | None, peer: Figure | None) -> str:
    if ours is None or peer is None or ours.best is None or peer.best is None:
        return "-"
    return f"{(peer.best / peer.commands) / (ours.best / ours.commands):.2f}x"


def rows(names: list[str], figures: dict[str, dict[str, Figure]]) -> Iterator[str]:
    header = f"{'operation':32}" + "".join(f"{n:>26}" for n in names)
    yield header
    yield "-" * len(header)
    for label, by_server in figures.items():
        yield f"{label:32}" + "".join(f"{cell(by_server.get(n)):>26}" for n in names)
    ours = [n for n in names if n.startswith("ours")]
    peers = [n for n in names if not n.startswith("ours")]
    if not ours or not peers:
        return
    pairs = [(o, p) for o in ours for p in peers]
    yield ""
    yield "Speed relative to the peer (above 1: ours is faster):"
    header = f"{'operation':32}" + "".join(f"{o[5:] + ' vs ' + p:>26}" for o, p in pairs)
    yield header
    yield "-" * len(header)
    for label, by_server in figures.items():
        if label.startswith("fill"):  # no peer figure
            continue
        yield f"{label:32}" + "".join(
            f"{ratio(by_server.get(o), by_server.get(p)):>26}" for o, p in pairs
        )


def latency_rows(names: list[str], breakdown: dict[str, dict[str, float]]) -> Iterator[str]:
    header = f"{'command':32}" + "".join(f"{n:>26}" for n in names)
    yield header
    yield "-" * len(header)
    for kind, by_server in breakdown.items():
        yield f"{kind:32}" + "".join(f"{by_server[n] * 1000:>23.1f} ms" for n in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--sessions", type=int, default=8, help="per client, mixed workload")
    parser.add_argument("--no-dovecot", action="store_true")
    parser.add_argument("--only", default="maildir,memory,dovecot")
    args = parser.parse_args()
    wanted = args.only.split(",")
    if "dovecot" in wanted and not args.no_dovecot and (reason := dovecot_unavailable()):
        print(f"dovecot: skipped ({reason})", file=sys.stderr)
        wanted.remove("dovecot")
    if args.no_dovecot and "dovecot" in wanted:
        wanted.remove("dovecot")

    root = Path(tempfile.mkdtemp(prefix="twistedmail-imap-bench-"))
    servers: list[Server] = []
    figures: dict[str, dict[str, Figure]] = {}
    breakdown: dict[str, dict[str, float]] = {}
    try:
        for storage in ("maildir", "memory"):
            if storage in wanted:
                servers.append(Ours(root / storage, storage, args.messages, args.size))
        if "dovecot" in wanted:
            servers.append(Dovecot(root / "dovecot", args.messages, args.size))
            servers.append(Dovecot(root / "dovecot-tuned", args.messages, args.size, tuned=True))
        for server in servers:
            fill = getattr(server, "fill_seconds", None)
            if fill is not None:
                figures.setdefault(f"fill: APPEND x{args.messages} pipelined", {})[server.name] = (
                    Figure([fill], args.messages)
                )

        clients: dict[str, Client] = {}
        for server in servers:
            client = clients[server.name] = Client(server.port)
            client.login()
            seconds, _ = timed(lambda: op_select(client, args.messages))  # noqa: B023
            figures.setdefault("SELECT INBOX (first)", {})[server.name] = Figure([seconds])
        for label, operation in SINGLE:
            row = figures.setdefault(label, {})
            for _ in range(args.repeat):
                for server in servers:  # taking turns, so that load spikes hit everyone
                    client = clients[server.name]
                    seconds, commands = timed(lambda: operation(client, args.messages))  # noqa: B023
                    figure = row.setdefault(server.name, Figure(commands=commands))
                    figure.seconds.append(seconds)
        for client in clients.values():
            client.close()

        label = f"mixed, {args.clients} clients (cmds)"
        for server in servers:
            seconds, commands, latencies = mixed(
                server.port, args.messages, args.clients, args.sessions
            )
            left = messages_in_inbox(server.port)
            note = "" if left == args.messages else f"INBOX left with {left}!"
            figures.setdefault(label, {})[server.name] = Figure([seconds], commands, note)
            for kind in MIXED_ALL:
                mean = sum(latencies[kind]) / len(latencies[kind])
                breakdown.setdefault(kind, {})[server.name] = mean
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)

    print(
        f"{args.messages} messages of ~{args.size} B in INBOX; best of {args.repeat}; "
        f"mixed: {args.clients} clients x {args.sessions} sessions x 9 commands; "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )
    names = [s.name for s in servers]
    for line in rows(names, figures):
        print(line)
    print()
    print(f"Mixed workload: mean latency of each command ({args.clients} clients at once)")
    for line in latency_rows(names, breakdown):
        print(line)


if __name__ == "__main__":
    main()
