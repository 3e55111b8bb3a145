"""
The textbook story with two real daemons on loopback: Alice's server
``crepes.fr`` and Bob's server ``hamburger.edu``, each a ``twistd -n
twistedmail`` subprocess with its own data directory and a ``[routes]``
table pointing the other's domain at the other's SMTP port.

Alice submits (``twistedmail send`` and smtplib, STARTTLS + AUTH); her
server queues the message durably, connects to Bob's server as an SMTP
client and hands it over.  Around that: Bob's server away (deferred, then
delivered), Bob unknown (an RFC 3464 DSN back in Alice's INBOX), expiry,
``kill -9`` of Alice's server with mail queued, and a real Postfix on both
sides of the conversation.

Waits poll a condition with a deadline (`daemon_harness.WAIT`); retry
schedules of a second or two make retries happen within the test.
"""

from __future__ import annotations

import re
import secrets
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest

import tests.e2e.postfix_harness as postfix_harness
from tests.e2e.daemon_harness import (
    PASSWORD,
    MailHost,
    body_of,
    parse,
    parts_of,
    received_lines,
    wait_until,
)

ALICE = "alice@crepes.fr"
BOB = "bob@hamburger.edu"
STORAGES = ["maildir", "memory"]


class Hosts:
    """Alice's and Bob's servers, routed to each other; the test starts them."""

    def __init__(self, root: Path, storage: str = "maildir", **alice_outbound: object) -> None:
        outbound: dict[str, object] = {"retry_schedule": [1, 1, 2], "delay_warning": 0}
        self.alice = MailHost(
            root / "crepes", "crepes.fr", storage=storage, outbound={**outbound, **alice_outbound}
        )
        self.bob = MailHost(root / "hamburger", "hamburger.edu", storage=storage, outbound=outbound)
        self.alice.route_to(self.bob)
        self.bob.route_to(self.alice)
        self.alice.add_user(ALICE)
        self.bob.add_user(BOB)

    def stop(self) -> None:
        for host in (self.alice, self.bob):
            if host.daemon is not None:
                host.daemon.kill()


@pytest.fixture
def make_hosts(tmp_path: Path) -> Iterator[type[Hosts]]:
    made: list[Hosts] = []

    def make(storage: str = "maildir", **alice_outbound: object) -> Hosts:
        hosts = Hosts(tmp_path, storage, **alice_outbound)
        made.append(hosts)
        return hosts

    yield make  # type: ignore[misc]
    for hosts in made:
        hosts.stop()


def need_imap(host: MailHost) -> None:
    if host.storage != "maildir" and host.imap_port is None:
        pytest.skip(
            f"{host.storage} storage is read over IMAP, which the daemon does not serve yet"
        )


def message(subject: str, body: bytes, to: str = BOB, sender: str = ALICE) -> bytes:
    """A complete RFC 5322 message (Date and Message-ID given: nothing gets added)."""
    token = secrets.token_hex(8)
    head = (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
        "Date: Fri, 27 Nov 2026 09:00:00 +0100\r\n"
        f"Message-ID: <{token}@crepes.fr>\r\n"
    )
    return head.encode() + b"\r\n" + body


# A body that dot-stuffing, chunking and line-end handling could all damage:
# dot lines, a lone "." line, trailing spaces, and more than one 64 KiB read.
TRICKY_BODY = (
    b"Bob, the crepes are ready.\r\n"
    b".\r\n"
    b"..two dots\r\n"
    b".x\r\n"
    b"trailing spaces   \r\n"
    + b"".join(b"line %06d %s\r\n" % (i, b"=" * 60) for i in range(1500))
    + b"-- \r\nAlice\r\n"
)


def header_names(raw: bytes) -> list[str]:
    head = raw.partition(b"\r\n\r\n")[0].decode("utf-8", "replace")
    return [line.split(":", 1)[0] for line in head.split("\r\n") if line[:1] not in (" ", "\t")]


def assert_relayed_exactly(received: bytes, original: bytes) -> None:
    """
    What Bob's server stored is Alice's bytes with only trace fields in
    front: ``Return-Path:``, Bob's server's ``Received:`` (newest first,
    RFC 5321 §4.4), then Alice's server's.
    """
    assert received.endswith(original)
    prefix = received[: -len(original)]
    names = header_names(prefix + b"\r\n")
    assert set(names) <= {"Return-Path", "Received"}, names
    trace = received_lines(prefix + b"\r\n")
    assert len(trace) == 2, trace
    by_bob, by_alice = trace
    # Bob's server took it from crepes.fr's client, over the STARTTLS it offered.
    assert re.search(
        r"from crepes\.fr \(\[127\.0\.0\.1\]\) by hamburger\.edu \(twistedmail\)", by_bob
    )
    assert " with ESMTPS " in by_bob and f"for <{BOB}>" in by_bob
    # Alice's server took the submission with STARTTLS and AUTH.
    assert "by crepes.fr (twistedmail) with ESMTPSA " in by_alice, by_alice
    # RFC 5321 §4.4: the final delivery records the reverse path, first.
    assert prefix.startswith(f"Return-Path: <{ALICE}>\r\n".encode())


# --- 1. Submission, queue, relay, delivery --------------------------------------------


@pytest.mark.parametrize("storage", STORAGES)
def test_alice_writes_to_bob_through_both_servers(make_hosts, storage):
    hosts = make_hosts(storage)
    hosts.bob.start()
    hosts.alice.start()
    need_imap(hosts.bob)
    need_imap(hosts.alice)

    # With smtplib: STARTTLS verified against crepes.fr's certificate, AUTH.
    original = message("Bonjour", TRICKY_BODY)
    hosts.alice.submit(ALICE, [BOB], original)
    [received] = hosts.bob.wait_for_mail(BOB, 1)
    assert_relayed_exactly(received, original)

    # With the command-line tools: Alice changes her password while her
    # server runs (it reads the accounts file afresh), then sends.
    fresh = "une crêpe, deux crêpes"
    assert hosts.alice.cli("user", "passwd", ALICE, "--password-stdin", stdin=fresh + "\n")
    hosts.alice.passwords[ALICE] = fresh
    with pytest.raises(smtplib.SMTPAuthenticationError):
        hosts.alice.submit(ALICE, [BOB], original, password=PASSWORD)
    output = hosts.alice.cli(
        "send",
        "--server",
        f"127.0.0.1:{hosts.alice.submission_port}",
        "--user",
        ALICE,
        "--password-stdin",
        "--from",
        ALICE,
        "--to",
        BOB,
        "--subject",
        "Les crêpes",
        stdin=f"{fresh}\nBob, the crepes are ready.\n.\nA.\n",
    )
    assert (
        output.strip()
        == f"Sent to 1 of 1 recipient(s) via 127.0.0.1:{hosts.alice.submission_port}."
    )
    mails = hosts.bob.wait_for_mail(BOB, 2)
    sent = next(m for m in mails if m != received)
    assert parse(sent)["Subject"] == "Les crêpes"
    assert body_of(sent) == b"Bob, the crepes are ready.\r\n.\r\nA.\r\n"
    trace = received_lines(sent)
    assert len(trace) == 2 and "by hamburger.edu" in trace[0] and "by crepes.fr" in trace[1]

    # And back: Bob's server routes crepes.fr to Alice's.
    reply = message("Re: Bonjour", b"Merci!\r\n", to=ALICE, sender=BOB)
    hosts.bob.submit(BOB, [ALICE], reply)
    [answer] = hosts.alice.wait_for_mail(ALICE, 1)
    assert answer.endswith(reply)
    wait_until(hosts.alice.queue_empty, "Alice's queue to empty")
    wait_until(hosts.bob.queue_empty, "Bob's queue to empty")
    assert "Traceback" not in hosts.alice.log() + hosts.bob.log()


# --- 2. Bob's server away: deferred, then delivered -------------------------------------


def test_bob_down_deferred_then_delivered_when_he_comes_up(make_hosts):
    # delay_warning 1 s: the second attempt (a second after queueing) also
    # tells Alice, once, that her message is late (RFC 3464 Action: delayed).
    hosts = make_hosts(delay_warning=1)
    hosts.alice.start()
    original = message("Are you there?", b"Bob?\r\n")
    hosts.alice.submit(ALICE, [BOB], original)

    def deferred() -> str | None:
        listing = hosts.alice.queue_list()
        return (
            listing
            if re.search(r"\[pending, [^]]*, (?:[2-9]|\d\d+) attempt\(s\)\]", listing)
            else None
        )

    listing = wait_until(deferred, "a second failed attempt in `queue list`")
    assert f"<{ALICE}>" in listing and f"    {BOB}  [pending, " in listing
    assert "1 message(s), 1 recipient(s) to deliver." in listing
    [warning] = hosts.alice.wait_for_mail(ALICE, 1)
    report = delivery_status(warning)
    assert report[1]["Action"] == "delayed"
    assert report[1]["Status"].startswith("4.")
    assert "Will-Retry-Until" in report[1]

    hosts.bob.start()
    [received] = hosts.bob.wait_for_mail(BOB, 1)
    assert received.endswith(original)
    wait_until(hosts.alice.queue_empty, "Alice's queue to empty")
    assert len(hosts.alice.inbox(ALICE)) == 1, "no second DSN: delivered is not reported"


# --- 3. Bob unknown: a DSN within one attempt -------------------------------------------


def delivery_status(raw: bytes) -> list[dict[str, str]]:
    """
    Check ``raw`` is an RFC 3464 report and return its delivery-status
    blocks (per-message fields first, then one per recipient).
    """
    dsn = parse(raw)
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    parts = parts_of(dsn)
    assert len(parts) == 3
    human, status, returned = parts
    assert human.get_content_type() == "text/plain"
    assert status.get_content_type() == "message/delivery-status"
    assert returned.get_content_type() in ("message/rfc822", "text/rfc822-headers")
    blocks = parts_of(status)
    assert len(blocks) >= 2
    return [dict(block.items()) for block in blocks]


@pytest.mark.parametrize("storage", STORAGES)
def test_unknown_recipient_gets_alice_a_dsn_within_one_attempt(make_hosts, storage):
    hosts = make_hosts(storage)
    hosts.bob.start()
    hosts.alice.start()
    need_imap(hosts.alice)
    original = message("For nobody", b"Hello?\r\n", to="nobody@hamburger.edu")
    hosts.alice.submit(ALICE, ["nobody@hamburger.edu"], original)

    [raw] = hosts.alice.wait_for_mail(ALICE, 1)
    assert raw.startswith(b"Return-Path: <>\r\n")  # the null reverse path (RFC 5321 §6.2)
    dsn = parse(raw)
    assert dsn["From"] == "Mail Delivery System <MAILER-DAEMON@crepes.fr>"
    assert dsn["To"].addresses[0].addr_spec == ALICE
    assert dsn["Auto-Submitted"] == "auto-replied"
    per_message, per_recipient = delivery_status(raw)
    assert per_message["Reporting-MTA"] == "dns; crepes.fr"
    assert per_recipient["Final-Recipient"] == "rfc822; nobody@hamburger.edu"
    assert per_recipient["Action"] == "failed"
    assert per_recipient["Status"] == "5.1.1"
    assert per_recipient["Diagnostic-Code"].startswith("smtp; 550 5.1.1")
    assert per_recipient["Remote-MTA"] == "dns; 127.0.0.1"  # the address the route reached
    [returned] = parts_of(parts_of(dsn)[2])
    assert returned["Subject"] == "For nobody"

    wait_until(hosts.alice.queue_empty, "Alice's queue to empty")
    attempts = [line for line in hosts.alice.log_lines() if "recipient(s) settled" in line]
    assert len(attempts) == 1, attempts  # one session, no retry of a 5xx
    if storage == "maildir":
        assert hosts.bob.inbox(BOB) == []


# --- 4. Expiry -----------------------------------------------------------------------------


def test_undeliverable_until_max_age_gets_alice_a_dsn(make_hosts):
    hosts = make_hosts(max_age=3, retry_schedule=[1])
    hosts.alice.start()  # Bob's server never comes up
    hosts.alice.submit(ALICE, [BOB], message("Lost", b"Too late.\r\n"))

    [raw] = hosts.alice.wait_for_mail(ALICE, 1)
    _per_message, per_recipient = delivery_status(raw)
    assert per_recipient["Final-Recipient"] == f"rfc822; {BOB}"
    assert per_recipient["Action"] == "failed"
    # The last temporary reason stands (as Postfix reports an expired 4.4.1).
    assert re.fullmatch(r"4\.\d{1,3}\.\d{1,3}", per_recipient["Status"])
    assert "expired" in per_recipient["Diagnostic-Code"]
    wait_until(hosts.alice.queue_empty, "Alice's queue to empty")
    settled = [line for line in hosts.alice.log_lines() if "failed DSN" in line]
    assert len(settled) == 1, settled


# --- One message, several recipients -----------------------------------------------------


def test_one_session_per_destination_and_per_recipient_outcomes(make_hosts):
    """
    One message to two of Bob's mailboxes, an unknown address there, and
    Alice's colleague on her own server: hamburger.edu gets one SMTP
    session carrying its three recipients; Alice hears about the unknown
    one only.
    """
    hosts = make_hosts()
    hosts.bob.add_user("bobby@hamburger.edu")
    hosts.alice.add_user("chef@crepes.fr")
    hosts.bob.start()
    hosts.alice.start()
    recipients = [BOB, "bobby@hamburger.edu", "nobody@hamburger.edu", "chef@crepes.fr"]
    original = message("Pour tous", b"Crepes for everyone.\r\n", to=", ".join(recipients))
    hosts.alice.submit(ALICE, recipients, original)

    for host, user in [(hosts.bob, BOB), (hosts.bob, "bobby@hamburger.edu")]:
        [received] = host.wait_for_mail(user, 1)
        assert received.endswith(original)
        # Several recipients: the trace names none (RFC 5321 §7.2, Bcc privacy).
        assert b"for <" not in received[: -len(original)]
    [local] = hosts.alice.wait_for_mail("chef@crepes.fr", 1)
    assert local.endswith(original)
    [raw] = hosts.alice.wait_for_mail(ALICE, 1)
    _, failed = delivery_status(raw)
    assert failed["Final-Recipient"] == "rfc822; nobody@hamburger.edu"
    wait_until(hosts.alice.queue_empty, "Alice's queue to empty")
    sessions = [line for line in hosts.alice.log_lines() if "recipient(s) settled" in line]
    assert len(sessions) == 1 and "3 of 3 recipient(s) settled" in sessions[0], sessions


# --- The queue admin commands against the running daemon -----------------------------------


def queue_ids(listing: str) -> list[str]:
    return re.findall(r"^([0-9a-z]+) +\S+ old ", listing, re.MULTILINE)


def test_queue_show_bounce_delete_and_retry_through_the_running_daemon(make_hosts):
    hosts = make_hosts(retry_schedule=[3600])  # no retry on its own within the test
    hosts.alice.start()  # Bob's server is down
    for subject in ("to bounce", "to delete", "to retry"):
        hosts.alice.submit(ALICE, [BOB], message(subject, b"...\r\n"))
    listing = wait_until(
        lambda: q if (q := hosts.alice.queue_list()).count("next in ") == 3 else None,
        "three deferred messages",
    )
    bounce, delete, retry = queue_ids(listing)
    shown = hosts.alice.cli("queue", "show", bounce)
    assert "  Subject: to bounce" in shown and f"<{ALICE}>" in shown

    assert hosts.alice.cli("queue", "bounce", bounce).strip() == f"Done: bounce {bounce}."
    [raw] = hosts.alice.wait_for_mail(ALICE, 1)
    _, report = delivery_status(raw)
    assert (report["Action"], report["Status"]) == ("failed", "5.0.0")
    assert "administrator" in report["Diagnostic-Code"]

    assert hosts.alice.cli("queue", "delete", delete).strip() == f"Done: delete {delete}."
    assert queue_ids(hosts.alice.queue_list()) == [retry]

    hosts.bob.start()
    assert hosts.alice.cli("queue", "retry", retry).strip() == f"Done: retry {retry}."
    [received] = hosts.bob.wait_for_mail(BOB, 1)
    assert parse(received)["Subject"] == "to retry"
    wait_until(hosts.alice.queue_empty, "Alice's queue to empty")
    assert len(hosts.alice.inbox(ALICE)) == 1  # deleting tells nobody


# --- 5. kill -9 ----------------------------------------------------------------------------


def markers_in(mails: list[bytes]) -> list[str]:
    found = []
    for raw in mails:
        match = re.search(rb"^Subject: queued (\d+)\r$", raw, re.MULTILINE)
        assert match, raw[:400]
        found.append(match[1].decode())
    return found


def test_kill_9_with_mail_queued_loses_nothing_and_delivers_once(make_hosts):
    count = 12
    hosts = make_hosts()
    hosts.alice.start()  # Bob's server is down: everything stays queued
    for i in range(count):
        hosts.alice.submit(ALICE, [BOB], message(f"queued {i}", b"x\r\n" * (i + 1)))
    hosts.alice.kill()
    assert hosts.alice.daemon is not None
    assert hosts.alice.daemon.process.returncode == -9

    hosts.alice.start()  # the same data directory, a new process
    hosts.alice.wait_for_log(f"Queue runner started with {count} queued message(s)")
    hosts.bob.start()
    wait_until(hosts.alice.queue_empty, "Alice's queue to empty", timeout=40)
    mails = hosts.bob.inbox(BOB)
    assert sorted(markers_in(mails), key=int) == [str(i) for i in range(count)]


def test_kill_9_while_delivering_loses_nothing(make_hosts):
    """
    A crash in the middle of deliveries: every message arrives, and at most
    once more (a remote 250 not yet recorded, RFC 5321 §6.1).  Bob's server
    comes up with 40 messages of 100 KB waiting, and Alice's is killed as
    soon as the first one lands.
    """
    count = 40
    hosts = make_hosts()
    hosts.alice.start()
    body = b"".join(b"%05d %s\r\n" % (n, b"y" * 92) for n in range(1000))
    for i in range(count):
        hosts.alice.submit(ALICE, [BOB], message(f"queued {i}", body))
    hosts.bob.start()
    wait_until(lambda: hosts.bob.inbox_files(BOB), "a first delivery", interval=0.005)
    hosts.alice.kill()
    before = len(hosts.bob.inbox(BOB))

    hosts.alice.start()
    wait_until(hosts.alice.queue_empty, "Alice's queue to empty", timeout=40)
    found = markers_in(hosts.bob.inbox(BOB))
    assert set(found) == {str(i) for i in range(count)}
    duplicates = sorted((m for m in set(found) if found.count(m) > 1), key=int)
    assert all(found.count(m) == 2 for m in duplicates), sorted(found, key=int)
    # At most the sessions in flight at the kill can repeat (max_per_destination).
    assert len(duplicates) <= 4, (before, duplicates)
    for raw in hosts.bob.inbox(BOB):
        assert body_of(raw) == body


# --- 7. Postfix ------------------------------------------------------------------------------


@pytest.fixture
def postfix_for(make_hosts):
    """Start a private Postfix that relays each domain to its server."""
    reason = postfix_harness.unavailable()
    if reason:
        pytest.skip(reason)
    started: list[postfix_harness.Postfix] = []

    def start(hosts: Hosts) -> postfix_harness.Postfix:
        relays = {
            "hamburger.edu": f"127.0.0.1:{hosts.bob.smtp_port}",
            "crepes.fr": f"127.0.0.1:{hosts.alice.smtp_port}",
        }
        instance = postfix_harness.Postfix(relays)
        started.append(instance)
        instance.start()
        return instance

    yield start
    for instance in started:
        instance.stop()


def test_our_client_delivers_to_postfix_and_postfix_relays_to_our_server(make_hosts, postfix_for):
    hosts = make_hosts()
    postfix = postfix_for(hosts)
    hosts.alice.routes[postfix_harness.DOMAIN] = f"tcp:127.0.0.1:{postfix.port}"
    hosts.bob.start()
    hosts.alice.start()

    # Alice -> her server (queue, our SMTP client) -> Postfix -> Carol's Maildir.
    carol = f"carol@{postfix_harness.DOMAIN}"
    original = message("Pour Postfix", TRICKY_BODY, to=carol)
    hosts.alice.submit(ALICE, [carol], original)
    [delivered] = wait_until(
        lambda: postfix.maildir_messages(),
        lambda: f"Postfix to deliver:\n{postfix.log()}\n{hosts.alice.log()}",
    )
    # Postfix stores with the local line end (LF), as Unix Maildirs do.
    unix = original.replace(b"\r\n", b"\n")
    assert delivered.endswith(unix)
    head = delivered[: -len(unix)].decode()
    assert f"Return-Path: <{ALICE}>" in head
    assert re.search(r"Received: from crepes\.fr \(unknown \[127\.0\.0\.1\]\)", head), head
    wait_until(hosts.alice.queue_empty, "Alice's queue to empty")

    # A client -> Postfix (relaying for hamburger.edu) -> our server -> Bob's INBOX.
    relayed = message("Via Postfix", TRICKY_BODY, sender=carol)
    with smtplib.SMTP("127.0.0.1", postfix.port, timeout=30) as client:
        assert not client.sendmail(carol, [BOB], relayed)
    [received] = wait_until(
        lambda: hosts.bob.inbox(BOB),
        lambda: f"Postfix to relay to Bob:\n{postfix.log()}\n{hosts.bob.log()}",
    )
    assert received.endswith(relayed)
    trace = received_lines(received[: -len(relayed)] + b"\r\n")
    assert len(trace) == 2, trace
    assert re.match(
        r"Received: from postfix\.test \(\[127\.0\.0\.1\]\) by hamburger\.edu", trace[0]
    )
    assert "by postfix.test (Postfix)" in trace[1]
    assert "status=sent" in postfix.log()
