"""
An adversarial review of the running daemon, protocol side: relaying,
one user's mail kept from another, mailbox names that try to leave the
store, TLS, passwords, limits, hostile bytes, SMTP smuggling, files on disk
and user names.  Each test proves one property of the project's standards
(issues 2-6) against a real ``twistd`` subprocess with real clients.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import os
import random
import smtplib
import socket
import ssl
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.daemon_harness import LOOPBACK, TWISTEDMAIL, WAIT, MailHost, parse
from tests.e2e.security_harness import (
    ALICE,
    ALICE_PASSWORD,
    BOB,
    BOB_PASSWORD,
    IMAP,
    IMAPS,
    MAX_LITERAL,
    MAX_MESSAGE,
    REMOTE,
    WRONG_PASSWORD,
    Raw,
    escapes,
    http_call,
    http_login,
    https_context,
    imap_login,
    imap_messages,
    plain_message,
    ports,
    queue_is_empty,
    raw_imap,
    security_daemon,
    smtp_send,
    still_serves,
    tls_context,
    wait_for_subject,
)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailHost]:
    yield from security_daemon(tmp_path_factory)


# --- No open relay -------------------------------------------------------------------------

RELAY_ATTEMPTS = [
    REMOTE,
    "victim@REMOTE.test",
    "victim%remote.test@example.test",
    "@example.test:victim@remote.test",
    '"victim@remote.test"@example.test',
    "victim@remote.test@example.test",
    "victim@[127.0.0.1]",
    "victim@[IPv6:::1]",
    "victim@example.test.remote.test",
    "victim@remote.test.",
    "postmaster@remote.test",
]


def test_no_open_relay_from_loopback_on_the_mx_port(host: MailHost) -> None:
    raw = Raw(ports(host)["smtp"])
    try:
        assert raw.line().startswith(b"220")
        raw.send(b"EHLO attacker.test\r\n")
        assert raw.smtp_reply().startswith(b"250 ")
        for sender in (ALICE, REMOTE, ""):
            raw.send(f"MAIL FROM:<{sender}>\r\n".encode())
            assert raw.smtp_reply().startswith(b"250 "), sender
            for rcpt in RELAY_ATTEMPTS:
                raw.send(f"RCPT TO:<{rcpt}>\r\n".encode())
                reply = raw.smtp_reply()
                assert reply[:1] in (b"5",), (sender, rcpt, reply)
            raw.send(b"RSET\r\n")
            assert raw.smtp_reply().startswith(b"250")
    finally:
        raw.close()
    assert queue_is_empty(host)


def test_submission_without_auth_relays_nothing(host: MailHost) -> None:
    with smtplib.SMTP(LOOPBACK, ports(host)["submission"], timeout=WAIT) as client:
        client.starttls(context=tls_context(host))
        client.ehlo()
        code, _ = client.mail(ALICE)
        assert code == 530
        code, _ = client.rcpt(REMOTE)
        assert code in (503, 530)
    assert queue_is_empty(host)


def test_catch_all_never_turns_into_a_relay(host: MailHost) -> None:
    """``x%remote@catchall`` and friends land in the catch-all's INBOX, never the queue."""
    tricky = [
        "victim%remote.test@other.test",
        '"victim@remote.test"@other.test',
        "victim!remote.test@other.test",
    ]
    for rcpt in tricky:
        smtp_send(host, [rcpt], plain_message(f"catchall {rcpt[:6]}", to=rcpt))
    assert queue_is_empty(host)
    with smtplib.SMTP(LOOPBACK, ports(host)["smtp"], timeout=WAIT) as client:
        client.mail(REMOTE)
        code, _ = client.rcpt("@other.test:victim@remote.test")
        assert code >= 500
    assert queue_is_empty(host)


def test_smtp_addresses_with_control_characters_never_reach_a_header(host: MailHost) -> None:
    """A bare CR in a quoted local part would be a line break in Return-Path:."""
    raw = Raw(ports(host)["smtp"])
    try:
        assert raw.line().startswith(b"220")
        raw.send(b"EHLO x\r\n")
        raw.smtp_reply()
        for sender in (b'"a\rX-Injected: 1"@remote.test', b'"a\x0bb\x00"@remote.test'):
            raw.send(b"MAIL FROM:<" + sender + b">\r\n")
            assert raw.smtp_reply()[:1] == b"5", sender
        raw.send(f"MAIL FROM:<{REMOTE}>\r\n".encode())
        assert raw.smtp_reply().startswith(b"250")
        raw.send(b'RCPT TO:<"z\rX-Injected: 1"@other.test>\r\n')  # the catch-all's domain
        assert raw.smtp_reply()[:1] == b"5"
    finally:
        raw.close()


def test_an_authenticated_user_cannot_send_as_another_local_user(host: MailHost) -> None:
    """RFC 6409 §6.1: submission refuses a sender the user does not own."""
    with smtplib.SMTP(LOOPBACK, ports(host)["submission"], timeout=WAIT) as client:
        client.starttls(context=tls_context(host))
        client.login(BOB, BOB_PASSWORD)
        for sender in (
            ALICE,
            "ALICE@example.test",
            "alice+x@example.test",
            "team@example.test",
            "nobody@example.test",
            "anyone@other.test",
            "bob@elsewhere.test",
        ):
            assert client.mail(sender)[0] == 553, sender
            client.rset()
        for sender in (BOB, "Bob+lists@example.test", ""):
            assert client.mail(sender)[0] == 250, sender
            client.rset()
    assert queue_is_empty(host)


# --- Users see only their own mail -----------------------------------------------------------


def test_a_user_never_sees_another_users_mail_over_imap_or_http(host: MailHost) -> None:
    smtp_send(host, [ALICE], plain_message("for alice only", "alice-secret-41\r\n", to=ALICE))
    smtp_send(host, [BOB], plain_message("for bob", "bob-text\r\n"))
    wait_for_subject(host, ALICE, ALICE_PASSWORD, "for alice only")
    wait_for_subject(host, BOB, BOB_PASSWORD, "for bob")

    client = imap_login(host, BOB, BOB_PASSWORD)
    try:
        typ, listed = client.list('""', "*")
        assert typ == "OK"
        assert not any(b"alice" in line for line in listed if isinstance(line, bytes))
        for name in [
            ALICE,
            f"{ALICE}/INBOX",
            "../" + ALICE,
            "#users/alice",
            "~alice",
            "/INBOX",
            "Other Users/alice",
        ]:
            typ, _ = client.select(f'"{name}"', readonly=True)
            assert typ == "NO", name
            typ, _ = client.status(f'"{name}"', "(MESSAGES)")
            assert typ == "NO", name
        typ, listed = client.list(f'"../{ALICE}/"', "*")
        assert typ in ("OK", "NO")
        assert not any(b"alice" in line for line in listed if isinstance(line, bytes))
        client.select("INBOX", readonly=True)
        typ, data = client.uid("FETCH", "1:*", "(BODY.PEEK[])")
        assert typ == "OK"
        assert b"alice-secret-41" not in b"".join(
            part for item in data if isinstance(item, tuple) for part in item
        )
    finally:
        client.logout()

    token, _ = http_login(host, BOB, BOB_PASSWORD)
    status, _, listing = http_call(host, "GET", "/api/mailboxes", token=token)
    assert status == 200 and b"alice" not in listing
    for uid in range(1, 8):
        for suffix in ("", "/raw", "/attachments/0"):
            for box in ("INBOX", "Sent"):
                path = f"/api/mailboxes/{box}/messages/{uid}{suffix}"
                status, _, body = http_call(host, "GET", path, token=token)
                assert b"alice-secret-41" not in body, path
                assert b"for alice only" not in body, path
    for path in [
        f"/api/mailboxes/{ALICE}/messages",
        f"/api/mailboxes/..%2F{ALICE.replace('@', '%40')}/messages",
        f"/api/mailboxes/%2e%2e%2F{ALICE}%2FINBOX/messages",
        f"/api/mailboxes/%252e%252e%252f{ALICE}/messages",
        f"/api/mailboxes/../../{ALICE}/messages",
    ]:
        status, _, body = http_call(host, "GET", path, token=token)
        assert status in (400, 404), (path, status, body)
        assert b"alice-secret" not in body
    status, _, body = http_call(
        host, "GET", f"/api/mailboxes/INBOX/messages?user={ALICE}", token=token
    )
    assert b"for alice only" not in body


HOSTILE_IMAP_NAMES = [
    b'"../evil1"',
    b'"../../evil2"',
    b'"a/../../evil3"',
    b'"/evil4"',
    b'"..\\\\evil6"',
    b"{7+}\r\nev\x00il07",
    b'"&AC8-evil8"',
    b'"&AC4-&AC4-/evil9"',
    b'"&AC4-&AC4-&AC8-evil10"',
    b'"&AC4ALgAv-evil11"',
    b'"&AFw-evil12"',
    b'"&AAA-evil13"',
    b'"evil14&AAo-"',
    b'"INBOX/../../evil15"',
    b'"evil16/&AC4-&AC4-"',
    b'"evil17/./x"',
    b'"."',
    b'".."',
    b'"&AC4-&AC4-"',
    b'"&AC4-"',
    b'""',
    b'"evil18//x"',
    b"{13+}\r\nevil19\r\nx\r\nyz",
]


def test_imap_mailbox_names_cannot_escape_the_store(host: MailHost) -> None:
    alice_dir = host.data / "mail" / ALICE
    imap_messages(host, ALICE, ALICE_PASSWORD)  # alice's Maildir exists
    before = sorted(p.name for p in alice_dir.iterdir())
    raw = raw_imap(host)
    try:
        n = 0
        for name in HOSTILE_IMAP_NAMES:
            for command in (
                b"CREATE %s",
                b"SELECT %s",
                b"DELETE %s",
                b"RENAME INBOX %s",
                b"RENAME Drafts %s",
                b"STATUS %s (MESSAGES)",
                b"SUBSCRIBE %s",
                b"APPEND %s {4+}\r\nhi\r\n",
            ):
                n += 1
                tag = b"T%d" % n
                raw.send(tag + b" " + command.replace(b"%s", name) + b"\r\n")
                answer = raw.until_tagged(tag)[-1]
                assert answer.split()[1] in (b"NO", b"BAD"), (command, name, answer)
        for name in [b'"../' + ALICE.encode() + b'"', b'"../' + ALICE.encode() + b'/INBOX"']:
            for command in (b"DELETE %s", b"RENAME %s Mine", b"SELECT %s"):
                n += 1
                tag = b"T%d" % n
                raw.send(tag + b" " + command.replace(b"%s", name) + b"\r\n")
                answer = raw.until_tagged(tag)[-1]
                assert answer.split()[1] in (b"NO", b"BAD"), (command, name, answer)
        raw.send(b"Z NOOP\r\n")
        assert raw.until_tagged(b"Z")[-1].startswith(b"Z OK")
    finally:
        raw.close()
    assert escapes(host) == []
    assert sorted(p.name for p in alice_dir.iterdir()) == before


# --- TLS on every listener ---------------------------------------------------------------------


def test_every_listener_offers_tls(host: MailHost) -> None:
    found = ports(host)
    assert set(found) == {"smtp", "submission", "submissions", "imap", "imaps", "http", "https"}
    context = tls_context(host)
    for role in ("smtp", "submission"):
        with smtplib.SMTP(LOOPBACK, found[role], timeout=WAIT) as client:
            client.ehlo("client.test")
            assert client.has_extn("starttls"), role
            assert not client.has_extn("auth"), f"{role} offers AUTH before TLS"
            client.starttls(context=context)
            client.ehlo("client.test")
            if role == "submission":
                assert client.has_extn("auth")
    with smtplib.SMTP_SSL(
        LOOPBACK, found["submissions"], timeout=WAIT, context=https_context(host)
    ) as client:
        assert client.noop()[0] == 250
    client_imap = IMAP(found["imap"])
    try:
        assert "STARTTLS" in client_imap.capabilities
        client_imap.starttls(context)
        client_imap.login(BOB, BOB_PASSWORD)
    finally:
        client_imap.logout()
    secure = imaplib.IMAP4_SSL(
        LOOPBACK, found["imaps"], ssl_context=https_context(host), timeout=WAIT
    )
    try:
        secure.login(BOB, BOB_PASSWORD)
    finally:
        secure.logout()
    status, headers, _ = http_call(host, "GET", "/healthz", secure=True)
    assert status == 200
    assert headers["Strict-Transport-Security"]
    # Nothing older than TLS 1.2 (RFC 8996).
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    old.set_ciphers("ALL:@SECLEVEL=0")
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1
    for role in ("submissions", "imaps", "https"):
        with (
            socket.create_connection((LOOPBACK, found[role]), timeout=WAIT) as sock,
            pytest.raises(ssl.SSLError),
        ):
            old.wrap_socket(sock).close()


def test_starttls_discards_plaintext_pipelined_after_it(host: MailHost) -> None:
    """RFC 3207 §4.2, RFC 3501 §6.2.1 (CVE-2011-0411): no injected commands."""
    found = ports(host)
    context = https_context(host)
    with socket.create_connection((LOOPBACK, found["smtp"]), timeout=WAIT) as sock:
        plain = sock.makefile("rb")
        assert plain.readline().startswith(b"220")
        sock.sendall(b"EHLO x\r\n")
        while plain.readline()[3:4] != b" ":
            pass
        sock.sendall(b"STARTTLS\r\nNOOP injected\r\n")
        assert plain.readline().startswith(b"220")
        with context.wrap_socket(sock) as secure:
            secure.sendall(b"HELP\r\n")
            assert secure.makefile("rb").readline().startswith(b"214")  # not NOOP's 250
    with socket.create_connection((LOOPBACK, found["imap"]), timeout=WAIT) as sock:
        plain = sock.makefile("rb")
        assert plain.readline().startswith(b"* OK")
        sock.sendall(b"a STARTTLS\r\nb NOOP\r\n")
        assert plain.readline().startswith(b"a OK")
        with context.wrap_socket(sock) as secure:
            secure.sendall(b"c NOOP\r\n")
            assert secure.makefile("rb").readline().startswith(b"c OK")


# --- Passwords ------------------------------------------------------------------------------


def test_passwords_are_hashed_and_never_logged(host: MailHost) -> None:
    source = "127.0.0.21"
    # Wrong and right passwords through every door.
    for password in (WRONG_PASSWORD, BOB_PASSWORD):
        with contextlib.suppress(imaplib.IMAP4.error):
            imap_login(host, BOB, password, source).logout()
        with (
            contextlib.suppress(smtplib.SMTPAuthenticationError),
            smtplib.SMTP(
                LOOPBACK, ports(host)["submission"], timeout=WAIT, source_address=(source, 0)
            ) as client,
        ):
            client.starttls(context=tls_context(host))
            client.login(BOB, password)
        http_call(
            host, "POST", "/api/session", {"address": BOB, "password": password}, source=source
        )
        encoded = base64.b64encode(f"{BOB}:{password}".encode()).decode()
        http_call(
            host,
            "GET",
            "/api/mailboxes",
            headers={"Authorization": f"Basic {encoded}"},
            source=source,
        )
    # A password typed into the user name field is logged as the login name;
    # so only the password field is checked.
    accounts = (host.data / "accounts.json").read_text()
    assert "scrypt$" in accounts
    log = host.log()
    for secret in (ALICE_PASSWORD, BOB_PASSWORD, WRONG_PASSWORD):
        assert secret not in accounts
        assert secret not in log
        for wire in (
            base64.b64encode(secret.encode()),
            base64.b64encode(f"\0{BOB}\0{secret}".encode()),
        ):
            assert wire.decode("ascii") not in log


# --- Limits ------------------------------------------------------------------------------------


def test_smtp_line_size_and_connection_limits_hold_and_others_are_served(host: MailHost) -> None:
    raw = Raw(ports(host)["smtp"], "127.0.0.31")
    try:
        assert raw.line().startswith(b"220")
        raw.send(b"EHLO " + b"a" * 20_000 + b"\r\n")
        assert raw.smtp_reply()[:1] == b"5"
        raw.send(b"EHLO client.test\r\n")
        assert raw.smtp_reply().startswith(b"250 ")
        raw.send(f"MAIL FROM:<{REMOTE}> SIZE={10**12}\r\n".encode())
        assert raw.smtp_reply().startswith(b"552")
        raw.send(f"MAIL FROM:<{REMOTE}>\r\n".encode())
        assert raw.smtp_reply().startswith(b"250")
        raw.send(f"RCPT TO:<{BOB}>\r\n".encode())
        assert raw.smtp_reply().startswith(b"250")
        raw.send(b"DATA\r\n")
        assert raw.smtp_reply().startswith(b"354")
        line = b"x" * 998 + b"\r\n"
        for _ in range(MAX_MESSAGE // len(line) + 10):
            raw.send(line)
        raw.send(b".\r\n")
        assert raw.smtp_reply().startswith(b"552")
        raw.send(
            b"MAIL FROM:<" + REMOTE.encode() + b">\r\nRCPT TO:<" + BOB.encode() + b">\r\nDATA\r\n"
        )
        assert raw.smtp_reply().startswith(b"250")
        assert raw.smtp_reply().startswith(b"250")
        assert raw.smtp_reply().startswith(b"354")
        raw.send(b"y" * 5000 + b"\r\n.\r\n")  # RFC 5321 §4.5.3.1.6: 1000-octet lines
        assert raw.smtp_reply()[:1] == b"5"
        raw.send(b"NOOP\r\n")
        assert raw.smtp_reply().startswith(b"250")
    finally:
        raw.close()

    # max_connections_per_client = 5: the sixth from one address is turned away.
    held = [Raw(ports(host)["smtp"], "127.0.0.32") for _ in range(5)]
    try:
        for connection in held:
            assert connection.line().startswith(b"220")
        extra = Raw(ports(host)["smtp"], "127.0.0.32")
        try:
            assert extra.line().startswith(b"421")
        finally:
            extra.close()
        other = Raw(ports(host)["smtp"], "127.0.0.33")
        try:
            assert other.line().startswith(b"220")
        finally:
            other.close()
    finally:
        for connection in held:
            connection.close()


def test_failed_auth_and_login_are_limited_per_client(host: MailHost) -> None:
    source = "127.0.0.41"
    with smtplib.SMTP(
        LOOPBACK, ports(host)["submission"], timeout=WAIT, source_address=(source, 0)
    ) as client:
        client.starttls(context=tls_context(host))
        client.ehlo()
        codes = []
        for _ in range(4):
            try:
                client.login(BOB, WRONG_PASSWORD)
            except smtplib.SMTPAuthenticationError as e:
                codes.append(e.smtp_code)
            except smtplib.SMTPServerDisconnected:
                codes.append(421)
                break
        # smtplib tries PLAIN then LOGIN: two failures a call; the third locks.
        assert codes[0] == 535 and codes[1] == 421, codes
    # The lockout holds on the other submission listener too.
    with (
        smtplib.SMTP_SSL(
            LOOPBACK,
            ports(host)["submissions"],
            timeout=WAIT,
            source_address=(source, 0),
            context=https_context(host),
        ) as client,
        pytest.raises((smtplib.SMTPAuthenticationError, smtplib.SMTPServerDisconnected)),
    ):
        client.login(BOB, BOB_PASSWORD)
    # IMAP: 5 failures, then even the right password is refused from there.
    for _ in range(5):
        with pytest.raises(imaplib.IMAP4.error):
            imap_login(host, BOB, WRONG_PASSWORD, source)
    with pytest.raises(imaplib.IMAP4.error, match=r"UNAVAILABLE|Too many"):
        imap_login(host, BOB, BOB_PASSWORD, source)
    secure = IMAPS(ports(host)["imaps"], https_context(host), source)
    try:  # and on the other IMAP listener
        with pytest.raises(imaplib.IMAP4.error, match=r"UNAVAILABLE|Too many"):
            secure.login(BOB, BOB_PASSWORD)
    finally:
        secure.logout()
    imap_login(host, BOB, BOB_PASSWORD, "127.0.0.42").logout()  # others unaffected
    # HTTP: 429 after five failures.
    statuses = [
        http_call(
            host,
            "POST",
            "/api/session",
            {"address": ALICE, "password": WRONG_PASSWORD},
            source=source,
        )[0]
        for _ in range(6)
    ]
    assert statuses[:5] == [401] * 5 and statuses[5] == 429, statuses


def test_imap_literal_and_line_limits(host: MailHost) -> None:
    raw = raw_imap(host)
    try:
        raw.send(b"A1 APPEND INBOX {%d}\r\n" % (MAX_LITERAL + 1))
        answer = raw.line()
        assert answer.startswith((b"A1 NO", b"A1 BAD")), answer
        for size in (b"99999999999999999999999", b"-1", b"1e9", b"0x10"):
            raw.send(b"A2 APPEND INBOX {" + size + b"}\r\n")
            answer = raw.line()
            assert answer.startswith((b"A2 NO", b"A2 BAD")), (size, answer)
        raw.send(b"A3 NOOP\r\n")
        assert raw.until_tagged(b"A3")[-1].startswith(b"A3 OK")
        # A non-synchronising literal past the limit cannot be refused before
        # it is sent (RFC 7888 §4): an absurd one closes the connection.
        raw.send(b"A4 APPEND INBOX {999999999999+}\r\n")
        assert raw.closed()
    finally:
        raw.close()
    raw = raw_imap(host)
    try:
        raw.sock.settimeout(WAIT)
        with contextlib.suppress(OSError):
            for _ in range(64):
                raw.send(b"a" * 65_536)  # 4 MiB without a line end
        assert raw.closed()
        assert b"BYE" in raw.buffer or raw.buffer == b""
    finally:
        raw.close()
    still_serves(host)
    raw_imap(host).close()


# --- Bad input never stops the daemon ---------------------------------------------------------


def test_a_flood_of_wrong_logins_never_stalls_other_sessions(host: MailHost) -> None:
    """
    Unknown users cost a full scrypt (so timing reveals nothing); those must
    run in the thread pool.  The measure is a count: NOOP round trips a
    logged-in session completes while the flood runs.  Were scrypt on the
    reactor thread, each NOOP would wait behind a hash (about one NOOP per
    login); in the pool they are answered between hashes, many per login.
    """
    sources = [f"127.0.1.{n}" for n in range(1, 9)]
    per_source = 4  # under the lockout of 5, so every attempt really hashes
    failures: list[int] = []

    def flood(source: str) -> None:
        for n in range(per_source):
            client = IMAP(ports(host)["imap"], source)
            try:
                with contextlib.suppress(imaplib.IMAP4.error):
                    client.login(f"nobody{n}-{source}@example.test", WRONG_PASSWORD)
                    raise AssertionError("an unknown user logged in")
                failures.append(1)
            finally:
                client.logout()

    raw = raw_imap(host)
    threads = [threading.Thread(target=flood, args=(s,)) for s in sources]
    noops = 0
    try:
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            raw.send(b"N NOOP\r\n")
            assert raw.until_tagged(b"N")[-1].startswith(b"N OK")
            noops += 1
    finally:
        for thread in threads:
            thread.join()
        raw.close()
    logins = len(sources) * per_source
    assert len(failures) == logins
    assert noops >= 10 * logins, (noops, logins)


def test_garbage_on_every_listener_leaves_the_daemon_serving(host: MailHost) -> None:

    rng = random.Random(20261127)
    garbage = [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
        + bytes(rng.randrange(256) for _ in range(300)),
        b"\x00" * 4096,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"EHLO x\r\nAUTH PLAIN =\r\nAUTH LOGIN\r\n*\r\nSTARTTLS\r\n" * 20,
        b"a LOGIN {5}\r\n" + b"\xff" * 200 + b"\r\n",
        b"A AUTHENTICATE PLAIN\r\n" + b"%%%%\r\n" * 3,
        b"POST /api/session HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 20_000 + b"\r\n",
        bytes(rng.randrange(256) for _ in range(20_000)),
    ]
    for _role, port in ports(host).items():
        for blob in garbage:
            raw = Raw(port)
            try:
                with contextlib.suppress(OSError):
                    raw.send(blob)
                    raw.sock.shutdown(socket.SHUT_WR)
                    raw.sock.settimeout(5)
                    raw.closed()
            except TimeoutError:
                pass  # the server may wait for more; it is closed below
            finally:
                raw.close()
    # Hostile command streams in logged-in sessions, then everyone is served.
    lines = [
        b"x SELECT INBOX",
        b"x FETCH 1:* (BODY[HEADER.FIELDS (" + b"A " * 5000 + b")])",
        b"x SEARCH " + b"NOT " * 5000 + b"ALL",
        b"x SEARCH " + b"(" * 5000 + b"ALL" + b")" * 5000,
        b"x FETCH 4294967295:1 FLAGS",
        b"x UID FETCH 0:* FLAGS",
        b"x STORE 1:* FLAGS (" + b"\\Seen " * 3000 + b")",
        b'x LIST "" ' + b"%*" * 3000,
        b'x COPY 1:* ""',
        b'x APPEND INBOX (\\Seen) "99-Foo-9999 99:99:99 +9999" {1+}\r\nx',
        b"x SEARCH CHARSET UTF-99 ALL",
        b"x ID (" + b'"a" "b" ' * 2000 + b")",
        b"x ENABLE " + b"QRESYNC " * 3000,
        b"x IDLE",
        b"DONE",
    ]
    raw = raw_imap(host)
    try:
        for line in lines:
            raw.send(line + b"\r\n")
        raw.send(b"Z NOOP\r\n")
        answered = raw.until_tagged(b"Z")
        assert answered[-1].startswith(b"Z OK"), answered[-5:]
    except EOFError:
        pass  # closing a hostile session is fine; the others must go on
    finally:
        raw.close()
    still_serves(host)
    imap_login(host, ALICE, ALICE_PASSWORD).logout()
    status, _, _ = http_call(host, "GET", "/healthz")
    assert status == 200


# --- SMTP smuggling ---------------------------------------------------------------------------

SMUGGLING_ENDS = [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\r\n.\r", b"\r.\r", b"\n..\n"]


def test_smtp_smuggling_never_ends_data_early(host: MailHost) -> None:
    for n, end in enumerate(SMUGGLING_ENDS):
        smuggled = (
            f"MAIL FROM:<{ALICE}>\r\nRCPT TO:<{BOB}>\r\nDATA\r\n"
            f"From: {ALICE}\r\nSubject: smuggled-{n}\r\n\r\nforged\r\n"
        ).encode()
        raw = Raw(ports(host)["smtp"])
        try:
            assert raw.line().startswith(b"220")
            raw.send(b"EHLO x\r\n")
            raw.smtp_reply()
            raw.send(f"MAIL FROM:<{REMOTE}>\r\nRCPT TO:<{BOB}>\r\nDATA\r\n".encode())
            assert [raw.smtp_reply()[:3] for _ in range(3)] == [b"250", b"250", b"354"]
            raw.send(
                f"Subject: carrier-{n}\r\n\r\nhello".encode() + end + smuggled + b".\r\nQUIT\r\n"
            )
            replies = [raw.smtp_reply()[:3], raw.smtp_reply()[:3]]
            assert replies[1] == b"221", (end, replies)
            assert replies[0] in (b"250", b"550", b"554", b"500", b"501"), (end, replies)
        finally:
            raw.close()
    for raw_message in imap_messages(host, BOB, BOB_PASSWORD):
        message = parse(raw_message)
        assert not str(message["Subject"] or "").startswith("smuggled-"), raw_message[:300]


# --- Files and the admin command -------------------------------------------------------------


def test_data_files_are_private(host: MailHost) -> None:
    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    # The harness made the data directory with mkdir (0755 under umask 022).
    assert mode(host.data) == 0o700
    assert mode(host.data / "accounts.json") == 0o600
    assert mode(host.data / "tls") == 0o700
    assert mode(host.data / "tls" / "selfsigned.pem") == 0o600
    for directory, subdirs, files in os.walk(host.data):
        for name in subdirs + files:
            path = Path(directory) / name
            assert not mode(path) & 0o002, f"{path} is world-writable"
            if name.endswith(".pem") or name.startswith("accounts.json"):
                assert not mode(path) & 0o077, f"{path} is open to others"


def test_admin_command_refuses_users_that_could_escape(host: MailHost) -> None:
    for name in [
        "../evilU1@example.test",
        '"/../../evilU2"@example.test',
        "evilU3/x@example.test",
        '"evil\\\\U4"@example.test',
        "evilU5@../x",
        "evilU6@example.test/..",
    ]:
        result = subprocess.run(
            [
                TWISTEDMAIL,
                "--config",
                str(host.config_path),
                "user",
                "add",
                name,
                "--password-stdin",
            ],
            input="pw-for-odd-user\n",
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
        )
        assert result.returncode == 1, (name, result.stdout, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "evil" not in host.cli("user", "list").lower()
    assert escapes(host) == []


def test_a_unicode_login_reaches_one_user_in_any_form(host: MailHost) -> None:
    composed = "\u00e9lodie@example.test"
    host.cli("user", "add", composed, "--password-stdin", stdin="pw-\u00e9lodie\n")
    with pytest.raises(AssertionError):
        host.cli("user", "add", "e\u0301lodie@example.test", "--password-stdin", stdin="x\n")
    for login in (composed, "E\u0301LODIE@example.test", "\uff45\u0301lodie@EXAMPLE.test"):
        client = IMAP(ports(host)["imap"])
        try:
            plain = b"\0" + login.encode() + b"\0" + "pw-\u00e9lodie".encode()
            typ, _ = client.authenticate("PLAIN", _answer(plain))
            assert typ == "OK", login
        finally:
            client.logout()
    users = host.cli("user", "list")
    assert users.count("lodie@example.test") == 1, users


def _answer(response: bytes) -> Callable[[bytes], bytes]:
    """An imaplib SASL callback that always says ``response``."""

    def answer(_challenge: bytes) -> bytes:
        return response

    return answer
