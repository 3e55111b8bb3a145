"""
The daemon: first the service tree `make_service` builds, in process with
stand-in protocols on real loopback ports; then ``twistd -n twistedmail`` as
a subprocess, started, read from its log, and stopped with SIGTERM.

The subprocess tests learn each listener's port from the log line
``<role> listening on <host> port <n>`` (every listener is given port 0).
Listeners whose protocol is not written yet are logged as "not yet
available"; as protocols land, these tests connect to them automatically.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import ssl
import subprocess
import sysconfig
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.application.service import Service
from twisted.internet.protocol import Factory
from twisted.internet.threads import deferToThread
from twisted.logger import capturedLogs, formatEvent
from twisted.protocols.wire import Echo

from twistedmail.config import ConfigError, load_config
from twistedmail.service import (
    PROTOCOLS,
    ListenError,
    ListenerService,
    ServiceContext,
    make_service,
)
from twistedmail.tls import self_signed_paths

ROLES = tuple(PROTOCOLS)
IMPLICIT_TLS = {"submissions", "imaps", "https"}
LOOPBACK_ANY_PORT = "tcp:0:interface=127.0.0.1"
LISTENING = re.compile(r"\] (?P<role>\w+) listening on (?P<host>\S+) port (?P<port>\d+)")
NOT_YET = re.compile(r"\] (?P<role>\w+) listener \S+ not started: \w+ is not yet available")
HOSTNAME = "mail.example.test"


# --- Clients (run in threads, never on the reactor) ----------------------------------


def open_connection(port: int, role: str, cafile: str) -> socket.socket:
    """A connected socket, through a verified TLS handshake for implicit-TLS roles."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    if role not in IMPLICIT_TLS:
        return raw
    context = ssl.create_default_context(cafile=cafile)
    return context.wrap_socket(raw, server_hostname=HOSTNAME)


def echo_round_trip(port: int, role: str, cafile: str) -> bytes:
    with open_connection(port, role, cafile) as connection:
        connection.sendall(b"ping\r\n")
        received = b""
        while len(received) < 6:
            chunk = connection.recv(64)
            if not chunk:
                break
            received += chunk
        return received


# --- In process: make_service with stand-in protocols ----------------------------------


def echo_protocols(available: set[str]) -> dict[str, Any]:
    def maker(ctx: ServiceContext, role: str) -> Factory | None:
        return Factory.forProtocol(Echo) if role in available else None

    return {role: ("Echo", maker) for role in ROLES}


def config_for(tmp_path: Path, **listeners: str) -> Any:
    overrides: dict[str, object] = {
        "server.data_dir": str(tmp_path / "data"),
        "server.storage": "memory",
        "server.hostname": HOSTNAME,
    }
    for role in ROLES:
        overrides[f"listeners.{role}"] = listeners.get(role, "none")
    return load_config(None, overrides)


def ports_from(events: Any) -> dict[str, int]:
    ports = {}
    for event in events:
        match = LISTENING.search("] " + formatEvent(event))
        if match:
            ports[match["role"]] = int(match["port"])
    return ports


@pytest_twisted.ensureDeferred
async def test_listeners_serve_and_log_their_ports(tmp_path):
    from twisted.internet import reactor

    config = config_for(tmp_path, smtp=LOOPBACK_ANY_PORT, submissions=LOOPBACK_ANY_PORT)
    service = make_service(config, reactor, echo_protocols({"smtp", "submissions"}))
    with capturedLogs() as events:
        service.privilegedStartService()
        service.startService()
    try:
        ports = ports_from(events)
        assert set(ports) == {"smtp", "submissions"}
        assert all(port > 0 for port in ports.values())
        _, cafile = self_signed_paths(str(tmp_path / "data"))
        plain = await deferToThread(echo_round_trip, ports["smtp"], "smtp", cafile)
        assert plain == b"ping\r\n"
        # Implicit TLS with the self-signed certificate, verified for the hostname.
        secure = await deferToThread(echo_round_trip, ports["submissions"], "submissions", cafile)
        assert secure == b"ping\r\n"
        assert any("with implicit TLS" in formatEvent(e) for e in events)
    finally:
        with capturedLogs() as stopping:
            await service.stopService()
    text = [formatEvent(e) for e in stopping]
    assert "smtp stopped listening" in text
    assert "twistedmail stopped" in text
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", ports["smtp"]), timeout=5).close()


@pytest_twisted.ensureDeferred
async def test_unavailable_protocol_is_logged_and_not_started(tmp_path):
    from twisted.internet import reactor

    config = config_for(tmp_path, imap=LOOPBACK_ANY_PORT)
    with capturedLogs() as events:
        service = make_service(config, reactor, echo_protocols(set()))
        service.privilegedStartService()
        service.startService()
    await service.stopService()
    text = [formatEvent(e) for e in events]
    assert f"imap listener {LOOPBACK_ANY_PORT} not started: Echo is not yet available" in text
    assert not ports_from(events)


class ServiceFactory(Factory, Service):
    """A protocol factory with its own lifecycle (as SMTP's, to say 421 on stop)."""

    protocol = Echo

    def __init__(self) -> None:
        self.events: list[str] = []

    def startService(self) -> None:
        Service.startService(self)
        self.events.append("start")

    def stopService(self) -> None:
        Service.stopService(self)
        self.events.append("stop")


@pytest_twisted.ensureDeferred
async def test_a_factory_that_is_a_service_starts_and_stops_with_its_listener(tmp_path):
    from twisted.internet import reactor

    factory = ServiceFactory()
    protocols: dict[str, Any] = {role: ("Echo", lambda ctx, role: None) for role in ROLES}
    protocols["imap"] = ("Echo", lambda ctx, role: factory)
    service = make_service(config_for(tmp_path, imap=LOOPBACK_ANY_PORT), reactor, protocols)
    with capturedLogs() as events:
        service.privilegedStartService()
        service.startService()
    assert factory.events == ["start"]
    assert "twistedmail running, listening for imap" in [formatEvent(e) for e in events]
    await service.stopService()
    assert factory.events == ["start", "stop"]


def test_port_in_use_fails_before_the_reactor_runs(tmp_path):
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        description = f"tcp:{port}:interface=127.0.0.1"
        listener = ListenerService(
            "imap", description, serverFromString(reactor, description), Factory.forProtocol(Echo)
        )
        with pytest.raises(ListenError) as info:
            listener.privilegedStartService()
    assert str(info.value).startswith(f"cannot listen for imap on {description}: ")


def test_unknown_storage_lists_the_installed_ones(tmp_path):
    from twisted.internet import reactor

    config = load_config(None, {"server.storage": "nosuch", "server.data_dir": str(tmp_path)})
    with pytest.raises(ConfigError) as info:
        make_service(config, reactor)
    assert "unknown store 'nosuch'" in str(info.value)
    assert "maildir" in str(info.value) and "memory" in str(info.value)


def test_unusable_data_dir_is_a_config_error(tmp_path):
    from twisted.internet import reactor

    blocker = tmp_path / "file"
    blocker.write_text("")
    config = load_config(None, {"server.data_dir": str(blocker / "data")})
    with pytest.raises(ConfigError, match=r"\[server\] data_dir: cannot create"):
        make_service(config, reactor)


def test_data_dir_is_made_private_and_absolute(tmp_path):
    from twisted.internet import reactor

    config = config_for(tmp_path)
    service = make_service(config, reactor)
    data = tmp_path / "data"
    assert service.context.data_dir == str(data)
    assert data.is_dir()
    assert data.stat().st_mode & 0o077 == 0


# --- As twistd runs it -----------------------------------------------------------------


TWISTD = os.path.join(sysconfig.get_path("scripts"), "twistd")
START_TIMEOUT = 60  # a safety net for a hung daemon, never a measurement


class Daemon:
    """A ``twistd -n twistedmail`` subprocess whose log is read line by line."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.process = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "twistedmail", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, done: Callable[[list[str]], bool], allow_exit: bool = False) -> None:
        """Read the log until ``done(lines)``; fail if the daemon exits first."""
        while not done(self.lines):
            try:
                line = self._queue.get(timeout=START_TIMEOUT)
            except queue.Empty:
                pytest.fail("the daemon said nothing for a minute:\n" + self.log())
            if line is None:
                if allow_exit:
                    self._queue.put(None)  # for finish()
                    return
                pytest.fail("the daemon exited:\n" + self.log())
            self.lines.append(line)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.process.send_signal(sig)
        return self.finish()

    def finish(self) -> int:
        """Wait for the daemon to exit and read the rest of its log."""
        code = self.process.wait(timeout=START_TIMEOUT)
        while (line := self._queue.get(timeout=START_TIMEOUT)) is not None:
            self.lines.append(line)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        return "\n".join(self.lines)


def listeners_reported(lines: list[str]) -> dict[str, int | None]:
    """Role -> port for listening ones, None for 'not yet available' ones."""
    reported: dict[str, int | None] = {}
    for line in lines:
        if match := LISTENING.search(line):
            reported[match["role"]] = int(match["port"])
        elif match := NOT_YET.search(line):
            reported[match["role"]] = None
    return reported


def started(lines: list[str]) -> bool:
    # "running" comes once the reactor runs with twistd's signal handlers in
    # place; a SIGTERM sent earlier would kill the process without a clean stop.
    return any("twistedmail running, listening for" in line for line in lines)


@pytest.fixture
def daemons() -> Iterator[Callable[..., Daemon]]:
    running: list[Daemon] = []

    def start(args: list[str], cwd: Path) -> Daemon:
        daemon = Daemon(args, cwd)
        running.append(daemon)
        return daemon

    yield start
    for daemon in running:
        daemon.kill()


def every_listener_on_port_0() -> list[str]:
    return [arg for role in ROLES for arg in (f"--{role}", LOOPBACK_ANY_PORT)]


@pytest.mark.parametrize("storage", ["memory", "maildir"])
def test_twistd_starts_logs_listeners_and_stops_on_sigterm(tmp_path, daemons, storage):
    data = tmp_path / "data"
    daemon = daemons(
        [
            "--data-dir",
            str(data),
            "--storage",
            storage,
            "--hostname",
            HOSTNAME,
            *every_listener_on_port_0(),
        ],
        tmp_path,
    )
    daemon.wait_for(started)
    assert f"twistedmail starting as {HOSTNAME}: data in {data}, {storage} storage" in daemon.log()
    assert set(listeners_reported(daemon.lines)) == set(ROLES)
    _, cafile = self_signed_paths(str(data))
    for role, port in listeners_reported(daemon.lines).items():
        if port is not None:
            with open_connection(port, role, cafile):
                pass  # accepted (and for implicit TLS, a verified handshake)

    code = daemon.stop()
    # twistd stops the services, then re-raises SIGTERM on itself so that a
    # supervisor sees how it ended (twisted.application.app._exitWithSignal).
    assert code == -signal.SIGTERM, daemon.log()
    log = daemon.log()
    assert "twistedmail stopped" in log
    assert "Server Shut Down." in log
    assert "Traceback" not in log and "Unhandled" not in log
    assert os.listdir(tmp_path) == ["data"]  # nothing but the data directory


def test_twistd_reads_the_config_file_and_options_win(tmp_path, daemons):
    config = tmp_path / "twistedmail.toml"
    config.write_text(
        f'[server]\nhostname = "from-file.example.test"\ndata_dir = "{tmp_path / "data"}"\n'
        'storage = "maildir"\n'
        '[listeners]\nsmtp = "tcp:1:interface=127.0.0.1"\n'
    )
    daemon = daemons(
        ["--config", str(config), "--storage", "memory", *every_listener_on_port_0()],
        tmp_path,
    )
    daemon.wait_for(started)
    expected = f"starting as from-file.example.test: data in {tmp_path / 'data'}, memory storage"
    assert expected in daemon.log()
    assert daemon.stop() == -signal.SIGTERM


def test_port_in_use_exits_non_zero(tmp_path, daemons):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        endpoint = f"tcp:{busy.getsockname()[1]}:interface=127.0.0.1"
        args = [arg for role in ROLES for arg in (f"--{role}", endpoint)]
        daemon = daemons(
            ["--data-dir", str(tmp_path / "data"), "--storage", "memory", *args], tmp_path
        )
        daemon.wait_for(started, allow_exit=True)
        code = daemon.finish()
    log = daemon.log()
    assert code != 0
    assert "cannot listen for" in log and endpoint in log


def run_twistd(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # No --pidfile: a refused start must not leave twistd.pid behind either.
    return subprocess.run(
        [TWISTD, "-n", "twistedmail", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        check=False,
    )


@pytest.mark.parametrize(
    ("make_args", "expected"),
    [
        (
            lambda tmp: ["--smtp", "tcp:abc"],
            "twistedmail: command line: [listeners] smtp: bad endpoint 'tcp:abc': ",
        ),
        (
            lambda tmp: ["--config", str(tmp / "missing.toml")],
            "twistedmail: cannot read config file {tmp}/missing.toml: No such file or directory",
        ),
        (
            lambda tmp: ["--config", str(write_config(tmp, "[smtp]\nmax_size = 1\n"))],
            "twistedmail: {tmp}/bad.toml: unknown key 'max_size' in [smtp] ",
        ),
        (
            lambda tmp: ["--storage", "nosuch", "--data-dir", str(tmp / "data")],
            "twistedmail: [server] storage: unknown store 'nosuch' (installed: ",
        ),
        (
            lambda tmp: ["--set", "imap.idle_timeout=soon"],
            "twistedmail: command line: [imap] idle_timeout: expected an integer, got 'soon'",
        ),
    ],
)
def test_bad_configuration_exits_with_one_clear_line(tmp_path, make_args, expected):
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    result = run_twistd(make_args(tmp_path), workdir)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(expected.format(tmp=tmp_path)), lines[0]
    assert result.stdout == ""
    assert list(workdir.iterdir()) == [], "nothing half-started: no pid file, no data"


def write_config(directory: Path, text: str) -> Path:
    path = directory / "bad.toml"
    path.write_text(text)
    return path
