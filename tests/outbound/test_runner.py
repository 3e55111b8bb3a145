"""
The queue runner: retries, expiry, bounces and grouping, with time driven by
task.Clock and delivery over real loopback connections to a sink server.
"""

from __future__ import annotations

import email
import email.policy
import os
from typing import Any

import pytest
import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet import defer, task
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.names import dns

from tests.outbound.dnsserver import start as start_dns  # type: ignore[import-not-found]
from tests.outbound.smtpsink import SinkConfig, SinkFactory, listen  # type: ignore[import-not-found]
from twistedmail.interfaces import NoSuchUser
from twistedmail.model import Envelope, Recipient
from twistedmail.outbound.queue import OutboundQueue, RecipientStatus
from twistedmail.outbound.runner import OutboundSettings, QueueRunner

MESSAGE = b"From: alice@crepes.fr\r\nSubject: hi\r\n\r\n.Hello\r\n"
LOCAL_USERS = ("alice@crepes.fr", "alice2@crepes.fr")


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


class Mailboxes:
    """What deliver_local stores (helper E's delivery is wired in by service.py)."""

    def __init__(self) -> None:
        self.boxes: dict[str, list[tuple[Envelope, bytes]]] = {}

    def deliver(self, envelope: Envelope, message: bytes) -> Deferred[None]:
        (rcpt,) = envelope.recipients
        if rcpt.address not in LOCAL_USERS:
            return defer.fail(NoSuchUser(rcpt.address))
        self.boxes.setdefault(rcpt.address, []).append((envelope, message))
        return defer.succeed(None)


class Harness:
    def __init__(self, tmp_path: Any, routes: dict[str, str], **settings: Any) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.queue = OutboundQueue(str(tmp_path / "queue"), self.clock)
        self.mail = Mailboxes()
        self.settings = OutboundSettings(routes=tuple(routes.items()), **settings)
        self.runner = self.make_runner()

    def make_runner(self, resolver: Any = None, connect: Any = None) -> QueueRunner:
        return QueueRunner(
            self.queue,
            self.settings,
            clock=self.clock,
            reactor=_reactor(),
            hostname="crepes.fr",
            is_local=lambda domain: domain == "crepes.fr",
            deliver_local=self.mail.deliver,
            resolver=resolver if resolver is not None else object(),
            connect=connect,
        )

    def enqueue(self, sender: str, *rcpts: str | Recipient, message: bytes = MESSAGE) -> str:
        recipients = tuple(r if isinstance(r, Recipient) else Recipient(r) for r in rcpts)
        out: list[str] = []
        self.queue.enqueue(Envelope(sender, recipients), message).addCallback(out.append)
        return out[0]

    async def run(self, seconds: float = 0) -> None:
        """Let ``seconds`` pass, then wait for the attempts that started."""
        self.clock.advance(seconds)
        await self.runner.wait_idle()
        self.clock.advance(0)  # entries made due by the attempt (DSNs)
        await self.runner.wait_idle()

    def entry(self, queue_id: str) -> Any:
        return self.queue.files.read_entry(queue_id)


async def dead_port() -> int:
    port = await listen(_reactor(), SinkConfig())
    number: int = port.getHost().port
    await port.stopListening()
    return number


def dsn_fields(message: bytes) -> tuple[Any, Any]:
    msg = email.message_from_bytes(message, policy=email.policy.default)
    parts: list[Any] = list(msg.iter_parts())
    return msg, parts[1].get_payload()[1]


@pytest.fixture
def harnesses() -> Any:
    made: list[Harness] = []
    yield made
    for h in made:
        h.runner.stopService()
        h.clock.advance(60)


@pytest_twisted.ensureDeferred
async def test_one_session_per_destination_and_local_delivery(tmp_path, harnesses):
    sink = SinkConfig()
    port = await listen(_reactor(), sink)
    h = Harness(tmp_path, {"hamburger.edu": f"tcp:127.0.0.1:{port.getHost().port}"})
    harnesses.append(h)
    h.runner.startService()
    h.enqueue("alice@crepes.fr", "bob@hamburger.edu", "carol@Hamburger.edu", "alice2@crepes.fr")
    await h.run()
    await port.stopListening()
    assert sink.connections == 1
    (got,) = sink.received
    assert got.recipients == ["bob@hamburger.edu", "carol@Hamburger.edu"]
    assert got.message == MESSAGE and got.sender == "alice@crepes.fr"
    assert [m for _, m in h.mail.boxes["alice2@crepes.fr"]] == [MESSAGE]
    assert h.queue.files.ids() == []


@pytest_twisted.ensureDeferred
async def test_server_down_then_up(tmp_path, harnesses):
    """Connection refused is a 4.4.1 deferral; the retry after 60 s delivers."""
    number = await dead_port()
    h = Harness(tmp_path, {"hamburger.edu": f"tcp:127.0.0.1:{number}"}, retry_schedule=(60, 300))
    harnesses.append(h)
    h.runner.startService()
    queue_id = h.enqueue("alice@crepes.fr", "bob@hamburger.edu")
    await h.run()
    entry = h.entry(queue_id)
    (state,) = entry.recipients
    assert state.status is RecipientStatus.PENDING and state.status_code == "4.4.1"
    assert entry.attempts == 1 and entry.next_attempt == h.clock.seconds() + 60
    sink = SinkConfig()
    port = await TCP4ServerEndpoint(_reactor(), number, interface="127.0.0.1").listen(
        SinkFactory(sink)
    )
    await h.run(59)
    assert sink.received == []
    await h.run(1)
    await port.stopListening()
    assert [r.message for r in sink.received] == [MESSAGE]
    assert h.queue.files.ids() == []


@pytest_twisted.ensureDeferred
async def test_unknown_remote_user_bounces_to_the_local_sender(tmp_path, harnesses):
    sink = SinkConfig(rcpt=lambda a: b"550 5.1.1 no such user" if "nobody" in a else b"250 ok")
    port = await listen(_reactor(), sink)
    h = Harness(tmp_path, {"hamburger.edu": f"tcp:127.0.0.1:{port.getHost().port}"})
    harnesses.append(h)
    h.runner.startService()
    h.enqueue("alice@crepes.fr", "bob@hamburger.edu", "nobody@hamburger.edu")
    await h.run()
    await port.stopListening()
    assert sink.received[0].recipients == ["bob@hamburger.edu"]
    ((envelope, bounce),) = h.mail.boxes["alice@crepes.fr"]
    assert envelope.sender == ""
    msg, fields = dsn_fields(bounce)
    assert msg["From"] == "Mail Delivery System <MAILER-DAEMON@crepes.fr>"
    assert fields["Final-Recipient"] == "rfc822; nobody@hamburger.edu"
    assert (fields["Action"], fields["Status"]) == ("failed", "5.1.1")
    assert fields["Remote-MTA"] == "dns; 127.0.0.1"  # the address reached, not the route key
    assert "550 5.1.1 no such user" in fields["Diagnostic-Code"]
    assert h.queue.files.ids() == []


@pytest_twisted.ensureDeferred
async def test_unknown_local_user_bounces_and_a_bounce_is_never_bounced(tmp_path, harnesses):
    h = Harness(tmp_path, {})
    harnesses.append(h)
    h.runner.startService()
    h.enqueue("", "ghost@crepes.fr")  # a bounce that cannot be delivered: dropped
    h.enqueue("alice@crepes.fr", "ghost@crepes.fr")
    await h.run()
    ((_envelope, bounce),) = h.mail.boxes["alice@crepes.fr"]
    _, fields = dsn_fields(bounce)
    assert fields["Status"] == "5.1.1" and "Remote-MTA" not in fields
    assert h.queue.files.ids() == []


@pytest_twisted.ensureDeferred
async def test_delay_warning_then_expiry(tmp_path, harnesses):
    number = await dead_port()
    h = Harness(
        tmp_path,
        {"hamburger.edu": f"tcp:127.0.0.1:{number}"},
        retry_schedule=(60, 120),
        max_age=600,
        delay_warning=100,
    )
    harnesses.append(h)
    h.runner.startService()
    queue_id = h.enqueue("alice@crepes.fr", "bob@hamburger.edu")
    await h.run()  # t=0
    await h.run(60)  # t=60: second attempt, next in 120
    assert "alice@crepes.fr" not in h.mail.boxes
    await h.run(120)  # t=180: past delay_warning
    ((_, warning),) = h.mail.boxes["alice@crepes.fr"]
    _msg, fields = dsn_fields(warning)
    assert fields["Action"] == "delayed" and fields["Status"] == "4.4.1"
    assert "Will-Retry-Until" in fields
    assert h.entry(queue_id).delay_warned
    await h.run(120)  # t=300
    await h.run(120)  # t=420
    await h.run(120)  # t=540
    assert len(h.mail.boxes["alice@crepes.fr"]) == 1  # warned once only
    assert h.entry(queue_id).next_attempt == h.entry(queue_id).queued_at + 600
    await h.run(60)  # t=600: expired
    assert h.queue.files.ids() == []
    msg, fields = dsn_fields(h.mail.boxes["alice@crepes.fr"][1][1])
    assert fields["Action"] == "failed" and fields["Status"] == "4.4.1"
    assert "expired" in fields["Diagnostic-Code"]
    text = next(iter(msg.iter_parts())).get_content()
    assert "10 minutes" in text and "temporary failure" in text and "permanent" not in text


@pytest_twisted.ensureDeferred
async def test_notify_success_and_never(tmp_path, harnesses):
    """RFC 3461: SUCCESS -> 'delivered' locally, 'relayed' to a server without DSN."""
    sink = SinkConfig(extensions=("PIPELINING",))
    port = await listen(_reactor(), sink)
    h = Harness(tmp_path, {"hamburger.edu": f"tcp:127.0.0.1:{port.getHost().port}"})
    harnesses.append(h)
    h.runner.startService()
    h.enqueue(
        "alice@crepes.fr",
        Recipient("alice2@crepes.fr", ("SUCCESS",)),
        Recipient("bob@hamburger.edu", ("SUCCESS",)),
        Recipient("ghost@crepes.fr", ("NEVER",)),
    )
    await h.run()
    await port.stopListening()
    ((_, report),) = h.mail.boxes["alice@crepes.fr"]
    msg = email.message_from_bytes(report, policy=email.policy.default)
    parts: list[Any] = list(msg.iter_parts())
    actions = sorted(block["Action"] for block in parts[1].get_payload()[1:])
    assert actions == ["delivered", "relayed"]


@pytest_twisted.ensureDeferred
async def test_per_destination_limit(tmp_path, harnesses):
    sink = SinkConfig()
    port = await listen(_reactor(), sink)
    h = Harness(
        tmp_path,
        {"hamburger.edu": f"tcp:127.0.0.1:{port.getHost().port}"},
        max_per_destination=1,
    )
    harnesses.append(h)
    h.runner.startService()
    for n in range(5):
        h.enqueue("alice@crepes.fr", f"b{n}@hamburger.edu")
    await h.run()
    await port.stopListening()
    assert len(sink.received) == 5 and sink.max_active == 1


@pytest_twisted.ensureDeferred
async def test_mx_route_and_null_mx(tmp_path, harnesses):
    sink = SinkConfig()
    port = await listen(_reactor(), sink)
    records: dict[bytes, list[Any]] = {
        b"hamburger.test": [dns.Record_MX(10, b"mx.hamburger.test")],
        b"mx.hamburger.test": [dns.Record_A("127.0.0.1")],
        b"nomail.test": [dns.Record_MX(0, b"")],
    }
    dns_port, resolver = await start_dns(_reactor(), b"test", records)
    h = Harness(tmp_path, {}, mx_port=port.getHost().port)
    h.runner = h.make_runner(resolver)
    harnesses.append(h)
    h.runner.startService()
    h.enqueue("alice@crepes.fr", "bob@hamburger.test", "x@nomail.test")
    await h.run()
    await port.stopListening()
    await dns_port.stopListening()
    assert sink.received[0].recipients == ["bob@hamburger.test"]
    _, fields = dsn_fields(h.mail.boxes["alice@crepes.fr"][0][1])
    assert (fields["Final-Recipient"], fields["Status"]) == ("rfc822; x@nomail.test", "5.1.10")


@pytest_twisted.ensureDeferred
async def test_restart_picks_up_the_queue(tmp_path, harnesses):
    number = await dead_port()
    h = Harness(tmp_path, {"hamburger.edu": f"tcp:127.0.0.1:{number}"})
    h.runner.startService()
    h.enqueue("alice@crepes.fr", "bob@hamburger.edu")
    await h.run()
    await h.runner.stopService()
    sink = SinkConfig()
    port = await listen(_reactor(), sink)
    h2 = Harness(tmp_path, {"hamburger.edu": f"tcp:127.0.0.1:{port.getHost().port}"})
    harnesses.append(h2)
    h2.runner.startService()
    await h2.run(3600)
    await port.stopListening()
    assert len(sink.received) == 1 and h2.queue.files.ids() == []


def test_second_runner_waits_for_the_lock(tmp_path) -> None:
    h = Harness(tmp_path, {})
    h.runner.startService()
    other = h.make_runner()
    other.startService()
    assert not other._loaded
    h.runner.stopService()
    h.clock.advance(5)
    assert other._loaded
    other.stopService()
    h.clock.advance(60)


@pytest_twisted.ensureDeferred
async def test_failed_opportunistic_tls_falls_back_to_plain_text(tmp_path, harnesses):
    """RFC 7435 §6: a broken STARTTLS must not stop delivery that plain text allows."""
    sink = SinkConfig(starttls=True, broken_tls=True)
    port = await listen(_reactor(), sink)
    h = Harness(tmp_path, {"hamburger.edu": f"tcp:127.0.0.1:{port.getHost().port}"})
    harnesses.append(h)
    h.runner.startService()
    h.enqueue("alice@crepes.fr", "bob@hamburger.edu")
    await h.run()
    await port.stopListening()
    assert sink.connections == 2
    (got,) = sink.received
    assert not got.tls and got.message == MESSAGE
    assert h.queue.files.ids() == []


@pytest_twisted.ensureDeferred
async def test_an_unreadable_entry_backs_off_instead_of_spinning(tmp_path, harnesses):
    h = Harness(tmp_path, {}, retry_schedule=(60,))
    harnesses.append(h)
    h.runner.startService()
    h.queue.fresh_limit = 0  # read from disk even the first time
    queue_id = h.enqueue("alice@crepes.fr", "alice2@crepes.fr")
    path = h.queue.files.message_path(queue_id)
    os.unlink(path)
    os.mkdir(path)  # reading it now fails with IsADirectoryError
    await h.run()
    assert h.runner.entries()[queue_id].next_attempt == h.clock.seconds() + 60
    os.rmdir(path)
    h.queue.files._write(path, MESSAGE)
    await h.run(60)
    assert h.mail.boxes["alice2@crepes.fr"][0][1] == MESSAGE
    assert h.queue.files.ids() == []


async def _until_closed(sink: SinkConfig) -> None:
    for _ in range(200):
        if sink.active == 0:
            return
        await task.deferLater(_reactor(), 0.01, lambda: None)
    raise AssertionError("connections still open")


@pytest_twisted.ensureDeferred
async def test_connections_are_reused_then_closed_when_idle(tmp_path, harnesses):
    """Like Postfix's scache: one TCP+TLS handshake for a run of messages."""
    sink = SinkConfig(starttls=True)
    port = await listen(_reactor(), sink)
    h = Harness(
        tmp_path,
        {"hamburger.edu": f"tcp:127.0.0.1:{port.getHost().port}"},
        max_per_destination=1,
    )
    harnesses.append(h)
    h.runner.startService()
    for n in range(4):
        h.enqueue("alice@crepes.fr", f"b{n}@hamburger.edu")
    await h.run()
    assert len(sink.received) == 4 and sink.connections == 1
    assert all(r.tls for r in sink.received)
    h.enqueue("alice@crepes.fr", "late@hamburger.edu")
    await h.run(1)  # still within connection_cache_time
    assert len(sink.received) == 5 and sink.connections == 1
    h.clock.advance(2)  # idle too long: QUIT
    await _until_closed(sink)
    await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_kept_connection_that_died_is_replaced(tmp_path, harnesses):
    sink = SinkConfig(rset=b"421 4.4.2 idle too long")
    port = await listen(_reactor(), sink)
    h = Harness(tmp_path, {"hamburger.edu": f"tcp:127.0.0.1:{port.getHost().port}"})
    harnesses.append(h)
    h.runner.startService()
    h.enqueue("alice@crepes.fr", "a@hamburger.edu")
    await h.run()
    h.enqueue("alice@crepes.fr", "b@hamburger.edu")
    await h.run()
    await port.stopListening()
    assert [r.recipients for r in sink.received] == [["a@hamburger.edu"], ["b@hamburger.edu"]]
    assert sink.connections == 2
    assert h.queue.files.ids() == []


@pytest_twisted.ensureDeferred
async def test_smart_host_with_auth_and_required_tls(tmp_path, harnesses):
    """relay_host takes every remote domain; AUTH only once TLS is up."""
    sink = SinkConfig(starttls=True, credentials=("crepes", "relay-secret"))
    port = await listen(_reactor(), sink)
    relay = f"tcp:127.0.0.1:{port.getHost().port}"
    h = Harness(
        tmp_path, {}, relay_host=relay, relay_username="crepes", relay_password="relay-secret"
    )
    harnesses.append(h)
    h.runner.startService()
    h.enqueue("alice@crepes.fr", "bob@hamburger.edu", "x@elsewhere.example")
    await h.run()
    (got,) = sink.received  # one session for both domains: same destination
    assert got.auth == "crepes" and got.tls
    assert sorted(got.recipients) == ["bob@hamburger.edu", "x@elsewhere.example"]
    # Required TLS verifies the certificate: a self-signed one defers the mail.
    h2 = Harness(tmp_path / "two", {}, relay_host=relay, relay_require_tls=True)
    harnesses.append(h2)
    h2.runner.startService()
    queue_id = h2.enqueue("alice@crepes.fr", "bob@hamburger.edu")
    await h2.run()
    await port.stopListening()
    (state,) = h2.entry(queue_id).recipients
    assert state.status is RecipientStatus.PENDING
    assert len(sink.received) == 1


@pytest_twisted.ensureDeferred
async def test_a_554_greeting_bounces_at_once(tmp_path, harnesses):
    """RFC 5321 §3.1: 554 at the greeting means no service here; no retrying until expiry."""
    sink = SinkConfig(greeting=b"554 5.7.1 no mail service for you")
    port = await listen(_reactor(), sink)
    h = Harness(tmp_path, {"hamburger.edu": f"tcp:127.0.0.1:{port.getHost().port}"})
    harnesses.append(h)
    h.runner.startService()
    h.enqueue("alice@crepes.fr", "bob@hamburger.edu")
    await h.run()
    await port.stopListening()
    assert h.queue.files.ids() == [] and sink.connections == 1
    ((_, bounce),) = h.mail.boxes["alice@crepes.fr"]
    _, fields = dsn_fields(bounce)
    assert (fields["Action"], fields["Status"]) == ("failed", "5.7.1")
    assert fields["Remote-MTA"] == "dns; 127.0.0.1"
    assert "554 5.7.1 no mail service" in fields["Diagnostic-Code"]


async def _two_exchangers(tmp_path: Any, harnesses: Any, ports: dict[str, int]) -> Harness:
    """hamburger.test with mx1 (preference 10) and mx2 (20), dialled at ``ports``."""
    from twisted.internet.endpoints import TCP4ClientEndpoint

    records: dict[bytes, list[Any]] = {
        b"hamburger.test": [
            dns.Record_MX(10, b"mx1.hamburger.test"),
            dns.Record_MX(20, b"mx2.hamburger.test"),
        ],
        b"mx1.hamburger.test": [dns.Record_A("127.0.0.1")],
        b"mx2.hamburger.test": [dns.Record_A("127.0.0.1")],
    }
    dns_port, resolver = await start_dns(_reactor(), b"test", records)
    h = Harness(tmp_path, {})
    h.runner = h.make_runner(
        resolver, lambda hop: TCP4ClientEndpoint(_reactor(), "127.0.0.1", ports[hop.host])
    )
    harnesses.append(h)
    h.runner.startService()
    h.dns_port = dns_port  # type: ignore[attr-defined]
    return h


@pytest_twisted.ensureDeferred
async def test_a_554_greeting_from_one_exchanger_tries_the_next(tmp_path, harnesses):
    """RFC 5321 §5.1: the refusal is one host's; another exchanger may take the mail."""
    refusing = SinkConfig(greeting=b"554 5.7.1 not here")
    willing = SinkConfig()
    one, two = await listen(_reactor(), refusing), await listen(_reactor(), willing)
    ports = {"mx1.hamburger.test": one.getHost().port, "mx2.hamburger.test": two.getHost().port}
    h = await _two_exchangers(tmp_path, harnesses, ports)
    h.enqueue("alice@crepes.fr", "bob@hamburger.test")
    await h.run()
    for port in (one, two, h.dns_port):  # type: ignore[attr-defined]
        await port.stopListening()
    assert refusing.connections == 1 and [r.recipients for r in willing.received] == [
        ["bob@hamburger.test"]
    ]
    assert "alice@crepes.fr" not in h.mail.boxes and h.queue.files.ids() == []


@pytest_twisted.ensureDeferred
async def test_a_554_greeting_with_another_exchanger_down_defers(tmp_path, harnesses):
    """The first exchanger is unreachable, the second refuses: the first may come back."""
    refusing = SinkConfig(greeting=b"554 5.7.1 not here")
    one = await listen(_reactor(), refusing)
    ports = {"mx1.hamburger.test": await dead_port(), "mx2.hamburger.test": one.getHost().port}
    h = await _two_exchangers(tmp_path, harnesses, ports)
    queue_id = h.enqueue("alice@crepes.fr", "bob@hamburger.test")
    await h.run()
    for port in (one, h.dns_port):  # type: ignore[attr-defined]
        await port.stopListening()
    assert refusing.connections == 1
    (state,) = h.entry(queue_id).recipients
    assert state.status is RecipientStatus.PENDING and state.status_code == "4.4.1"
    assert state.remote is None  # nobody answered: no Remote-MTA to name
    assert "alice@crepes.fr" not in h.mail.boxes
