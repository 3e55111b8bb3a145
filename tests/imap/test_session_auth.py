"""
Greeting, framing, and the any-state and login commands, byte for byte
(RFC 3501 §6.1-6.2, §7.5; RFC 7888 LITERAL+; RFC 4959 SASL-IR).
"""

from __future__ import annotations

import base64

import pytest_twisted  # type: ignore[import-untyped]

from tests.imap.conftest import ALICE, PASSWORD, Client  # type: ignore[import-not-found]
from twistedmail.imap.server import IMAPFactory, ImapSettings


def test_greeting_advertises_capabilities(client: Client) -> None:
    # RFC 3501 §7.1.1: OK greeting; the CAPABILITY code saves a round trip.
    assert client.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 ")
    assert b"AUTH=PLAIN" in client.greeting
    assert client.greeting.endswith(b"] mail.example.test IMAP4rev1 ready\r\n")


@pytest_twisted.ensureDeferred
async def test_capability_noop_logout(client: Client) -> None:
    out = await client.command(b"a1 CAPABILITY")
    assert out.startswith(b"* CAPABILITY IMAP4rev1 LITERAL+ SASL-IR ")
    assert out.endswith(b"a1 OK CAPABILITY completed\r\n")
    assert await client.command(b"a2 NOOP") == b"a2 OK NOOP completed\r\n"
    assert await client.command(b"a3 LOGOUT") == b"* BYE Logging out\r\na3 OK LOGOUT completed\r\n"
    assert client.transport.disconnecting


@pytest_twisted.ensureDeferred
async def test_commands_are_case_insensitive(client: Client) -> None:
    assert await client.command(b"a1 nOoP") == b"a1 OK NOOP completed\r\n"


@pytest_twisted.ensureDeferred
async def test_syntax_errors_are_tagged_bad(client: Client) -> None:
    assert (await client.command(b"a1 FROB")).startswith(b"a1 BAD ")
    assert (await client.command(b"a2 NOOP extra")).startswith(b"a2 BAD ")
    # Two spaces are not one SP (RFC 3501 §9 note 2).
    assert (await client.command(b"a3 LOGIN  a b")).startswith(b"a3 BAD ")
    client.send(b"\r\n")
    assert client.take() == b"* BAD Missing or invalid tag\r\n"
    client.send(b"+tag NOOP\r\n")
    assert client.take() == b"* BAD Missing or invalid tag\r\n"


@pytest_twisted.ensureDeferred
async def test_wrong_state_is_bad(client: Client) -> None:
    assert await client.command(b"a1 SELECT INBOX") == b"a1 BAD Log in first\r\n"
    await client.login()
    assert await client.command(b"a2 FETCH 1 FLAGS") == b"a2 BAD No mailbox selected\r\n"
    assert await client.command(b"a3 LOGIN a b") == b"a3 BAD Already logged in\r\n"


@pytest_twisted.ensureDeferred
async def test_login_ok_and_failure(client: Client) -> None:
    out = await client.command(b'a1 LOGIN alice@example.test "wrong"')
    assert out == b"a1 NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
    out = await client.command(b'a2 LOGIN alice@example.test "' + PASSWORD.encode() + b'"')
    assert out.startswith(b"a2 OK [CAPABILITY IMAP4rev1 ")
    assert out.endswith(b"] Logged in\r\n")
    assert b"AUTH=" not in out and b"LOGINDISABLED" not in out
    assert client.session.user == ALICE


@pytest_twisted.ensureDeferred
async def test_synchronising_literal_gets_continuation(client: Client) -> None:
    # RFC 3501 §7.5: "+" only after an acceptable size.
    client.send(b"a1 LOGIN {18}\r\n")
    assert client.take() == b"+ Ready for literal data\r\n"
    client.send(b"alice@example.test {" + str(len(PASSWORD)).encode() + b"}\r\n")
    assert client.take() == b"+ Ready for literal data\r\n"
    client.send(PASSWORD.encode() + b"\r\n")
    out = await client.wait_for(b"a1 ")
    assert b"a1 OK [CAPABILITY" in out


@pytest_twisted.ensureDeferred
async def test_non_synchronising_literal(client: Client) -> None:
    # RFC 7888: {n+} is read without a continuation request.
    client.send(b"a1 LOGIN {18+}\r\nalice@example.test {13+}\r\n" + PASSWORD.encode() + b"\r\n")
    out = await client.wait_for(b"a1 ")
    assert out.startswith(b"a1 OK [CAPABILITY")


@pytest_twisted.ensureDeferred
async def test_literal_split_across_packets(client: Client) -> None:
    client.send(b"a1 LOGIN {18+}\r\nalice@exa")
    client.send(b"mple.test ")
    client.send(b'"' + PASSWORD.encode() + b'"\r\na2 NOOP\r\n')
    out = await client.wait_for(b"a2 OK")
    assert b"a1 OK [CAPABILITY" in out


def test_oversized_synchronising_literal_refused_before_reading(factory: IMAPFactory) -> None:
    client = Client(factory)
    client.send(b"a1 LOGIN {99999999}\r\n")
    # No "+": the client never sends the octets; the command is over.
    assert client.take() == b"a1 BAD [TOOBIG] Literal too large\r\n"
    client.send(b"a2 NOOP\r\n")
    assert client.take() == b"a2 OK NOOP completed\r\n"


def test_absurd_literal_size_is_bad_not_a_hang(factory: IMAPFactory) -> None:
    client = Client(factory)
    client.send(b"a1 LOGIN {99999999999999999999999}\r\n")
    assert client.take() == b"a1 BAD [TOOBIG] Literal too large\r\n"
    client.send(b"a2 LOGIN {-1}\r\n")
    assert client.take().startswith(b"a2 BAD ")
    client.send(b"a3 NOOP\r\n")
    assert client.take() == b"a3 OK NOOP completed\r\n"


def test_oversized_non_synchronising_literal_is_discarded(factory: IMAPFactory) -> None:
    client = Client(factory)
    size = factory.settings.max_command_size + 10
    client.send(b"a1 LOGIN {%d+}\r\n" % size)
    assert client.take() == b"a1 BAD [TOOBIG] Literal too large\r\n"
    # The octets are swallowed, commands inside them never run.
    client.send(b"a9 LOGOUT\r\n" + b"x" * (size - 12) + b"\r\n rest\r\na2 NOOP\r\n")
    assert client.take() == b"a2 OK NOOP completed\r\n"


def test_absurd_non_synchronising_literal_closes(factory: IMAPFactory) -> None:
    client = Client(factory)
    client.send(b"a1 LOGIN {99999999999+}\r\n")
    assert client.take() == b"a1 BAD [TOOBIG] Literal too large\r\n* BYE Literal too large\r\n"
    assert client.transport.disconnecting


def test_line_too_long_closes(factory: IMAPFactory) -> None:
    client = Client(factory)
    client.send(b"a1 NOOP " + b"x" * (factory.settings.max_line_length + 10))
    assert client.take() == b"* BYE Line too long\r\n"
    assert client.transport.disconnecting


def test_pipelined_commands_answer_in_order(client: Client) -> None:
    client.send(b"a1 NOOP\r\na2 CAPABILITY\r\na3 NOOP\r\n")
    out = client.take()
    assert (
        out.index(b"a1 OK") < out.index(b"* CAPABILITY") < out.index(b"a2 OK") < out.index(b"a3 OK")
    )


def test_long_pipeline_does_not_recurse(client: Client) -> None:
    client.send(b"".join(b"a%d NOOP\r\n" % i for i in range(5000)))
    assert client.take().count(b" OK NOOP completed\r\n") == 5000


@pytest_twisted.ensureDeferred
async def test_authenticate_plain_with_continuation(client: Client) -> None:
    client.send(b"a1 AUTHENTICATE PLAIN\r\n")
    assert client.take() == b"+ \r\n"
    client.send(base64.b64encode(b"\0" + ALICE.encode() + b"\0" + PASSWORD.encode()) + b"\r\n")
    out = await client.wait_for(b"a1 ")
    assert out.startswith(b"a1 OK [CAPABILITY")


@pytest_twisted.ensureDeferred
async def test_authenticate_plain_initial_response(client: Client) -> None:
    # RFC 4959 SASL-IR.
    ir = base64.b64encode(ALICE.encode() + b"\0" + ALICE.encode() + b"\0" + PASSWORD.encode())
    out = await client.command(b"a1 AUTHENTICATE PLAIN " + ir)
    assert out.startswith(b"a1 OK [CAPABILITY")


@pytest_twisted.ensureDeferred
async def test_authenticate_cancel_and_bad_base64(client: Client) -> None:
    client.send(b"a1 AUTHENTICATE PLAIN\r\n")
    assert client.take() == b"+ \r\n"
    client.send(b"*\r\n")
    assert client.take() == b"a1 BAD Authentication cancelled\r\n"
    assert await client.command(b"a2 AUTHENTICATE PLAIN !!!") == b"a2 BAD Invalid base64\r\n"
    out = await client.command(b"a3 AUTHENTICATE PLAIN " + base64.b64encode(b"x\0y\0z"))
    assert out == b"a3 NO [AUTHORIZATIONFAILED] Cannot log in as another user\r\n"
    assert await client.command(b"a4 AUTHENTICATE CRAM-MD5") == (
        b"a4 NO [CANNOT] Unsupported authentication mechanism\r\n"
    )


@pytest_twisted.ensureDeferred
async def test_authenticate_login(client: Client) -> None:
    client.send(b"a1 AUTHENTICATE LOGIN\r\n")
    assert client.take() == b"+ VXNlcm5hbWU6\r\n"
    client.send(base64.b64encode(ALICE.encode()) + b"\r\n")
    assert client.take() == b"+ UGFzc3dvcmQ6\r\n"
    client.send(base64.b64encode(PASSWORD.encode()) + b"\r\n")
    out = await client.wait_for(b"a1 ")
    assert out.startswith(b"a1 OK [CAPABILITY")


@pytest_twisted.ensureDeferred
async def test_logindisabled_without_tls(accounts, store, clock) -> None:
    # RFC 3501 §6.2.3: no plaintext LOGIN on an unencrypted connection.
    from twisted.internet import reactor

    from twistedmail.accounts import make_portal

    factory = IMAPFactory(
        ImapSettings(), make_portal(accounts, store, reactor), "mx", None, False, clock, reactor
    )
    client = Client(factory)
    assert b"LOGINDISABLED" in client.greeting and b"AUTH=PLAIN" not in client.greeting
    out = await client.command(b'a1 LOGIN alice@example.test "' + PASSWORD.encode() + b'"')
    assert out == b"a1 NO [PRIVACYREQUIRED] Use STARTTLS first\r\n"
    assert await client.command(b"a2 STARTTLS") == b"a2 BAD STARTTLS not available\r\n"
    # Once secure (as under implicit TLS), plaintext mechanisms are offered.
    secure = Client(factory, secure=True)
    assert b"AUTH=PLAIN" in secure.greeting and b"LOGINDISABLED" not in secure.greeting


@pytest_twisted.ensureDeferred
async def test_failed_logins_lock_out(client: Client) -> None:
    for i in range(5):
        await client.command(b"a%d LOGIN alice@example.test wrong" % i)
    out = await client.command(b'b1 LOGIN alice@example.test "' + PASSWORD.encode() + b'"')
    assert out == b"b1 NO [UNAVAILABLE] Too many failed logins; try again later\r\n"


@pytest_twisted.ensureDeferred
async def test_connections_per_user_limited(accounts, store, clock) -> None:
    from twisted.internet import reactor

    from twistedmail.accounts import make_portal

    factory = IMAPFactory(
        ImapSettings(allow_plaintext_login_on_loopback=True, max_connections_per_user=1),
        make_portal(accounts, store, reactor),
        "mx",
        None,
        False,
        clock,
        reactor,
    )
    first, second = Client(factory), Client(factory)
    await first.login()
    out = await second.command(b'a1 LOGIN alice@example.test "' + PASSWORD.encode() + b'"')
    assert out == b"a1 NO [LIMIT] Too many connections for this user\r\n"
    first.session.connectionLost(None)
    await second.login()


def test_a_stranger_is_logged_out_after_the_login_timeout(client: Client, clock) -> None:
    # RFC 9051 §5.4: the timer for clients not yet authenticated SHOULD be
    # shorter than the 30 minutes owed to logged-in ones (Dovecot: 3 minutes).
    clock.advance(179)
    assert client.take() == b""
    clock.advance(2)
    assert client.take() == b"* BYE Autologout; idle for too long\r\n"
    assert client.transport.disconnecting


@pytest_twisted.ensureDeferred
async def test_idle_autologout(client: Client, clock) -> None:
    # RFC 3501 §5.4: at least 30 minutes once logged in.
    await client.login()
    clock.advance(1799)
    assert client.take() == b""
    client.send(b"a1 NOOP\r\n")
    clock.advance(1799)
    assert client.take() == b"a1 OK NOOP completed\r\n"
    clock.advance(2)
    assert client.take() == b"* BYE Autologout; idle for too long\r\n"
    assert client.transport.disconnecting


@pytest_twisted.ensureDeferred
async def test_id_enable_namespace(client: Client) -> None:
    out = await client.command(b'a1 ID ("name" "test")')
    assert out == b'* ID ("name" "twistedmail" "version" "0.1.0")\r\na1 OK ID completed\r\n'
    await client.login()
    assert await client.command(b"a2 ENABLE CONDSTORE X-FOO") == (
        b"* ENABLED CONDSTORE\r\na2 OK ENABLE completed\r\n"
    )
    assert await client.command(b"a3 NAMESPACE") == (
        b'* NAMESPACE (("" "/")) NIL NIL\r\na3 OK NAMESPACE completed\r\n'
    )


@pytest_twisted.ensureDeferred
async def test_shutdown_says_bye_to_every_session(factory: IMAPFactory) -> None:
    # RFC 3501 §7.1.5: BYE before the server closes the connection.
    idle, idling = Client(factory), Client(factory)
    await idling.login()
    idling.send(b"i1 IDLE\r\n")
    assert idling.take() == b"+ idling\r\n"
    done = factory.shut_down()
    for c in (idle, idling):
        assert c.take() == b"* BYE Server shutting down\r\n"
        assert c.transport.disconnecting
        c.session.connectionLost(None)
    assert done.called and not factory.sessions
