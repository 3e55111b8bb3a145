"""
Our SMTP client against a real listener on 127.0.0.1: TLS, AUTH and large
messages byte-exact through every chunk boundary.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet.endpoints import TCP4ClientEndpoint

from tests.outbound.smtpsink import SinkConfig, listen  # type: ignore[import-not-found]
from twistedmail.model import Recipient
from twistedmail.smtp.client import (
    CHUNK_SIZE,
    ClientOptions,
    SMTPClientError,
    TLSPolicy,
    Transaction,
    deliver,
)
from twistedmail.tls import client_tls_options


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


async def run(config: SinkConfig, txn: Transaction, options: ClientOptions) -> Any:
    reactor = _reactor()
    port = await listen(reactor, config)
    try:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port, timeout=5)
        return await deliver(endpoint, reactor, options, txn)
    finally:
        await port.stopListening()


def message_with_dots_at_every_boundary() -> bytes:
    """Lines of '.' placed right at, before and after each 64 KiB boundary."""
    out = bytearray(b"Subject: dots\r\n\r\n")
    for k in range(1, 5):
        boundary = k * CHUNK_SIZE
        filler = boundary - len(out) - 2 - k % 3
        out += b"y" * max(filler, 0) + b"\r\n"
        out += b".\r\n..\r\n.x\r\n"
    out += b"end\r\n"
    return bytes(out)


@pytest_twisted.ensureDeferred
async def test_opportunistic_tls_with_an_unverifiable_certificate():
    """RFC 7435: a self-signed certificate still gets TLS, not a failure."""
    config = SinkConfig(starttls=True, credentials=("relayuser", "secret"))
    message = message_with_dots_at_every_boundary()
    options = ClientOptions(
        helo_name="crepes.fr",
        tls_hostname="localhost",
        tls_options=client_tls_options,
        username="relayuser",
        password="secret",
    )
    txn = Transaction("alice@crepes.fr", (Recipient("bob@hamburger.edu"),), message)
    result = await run(config, txn, options)
    assert result.tls and result.recipients[0].delivered
    (got,) = config.received
    assert got.tls and got.auth == "relayuser"
    assert got.message == message


@pytest_twisted.ensureDeferred
async def test_required_tls_fails_on_an_unverifiable_certificate():
    config = SinkConfig(starttls=True)
    options = ClientOptions(
        helo_name="crepes.fr",
        tls=TLSPolicy.REQUIRED,
        tls_hostname="smarthost.example",
        tls_options=client_tls_options,
    )
    txn = Transaction("alice@crepes.fr", (Recipient("bob@hamburger.edu"),), b"hi\r\n")
    with pytest.raises(SMTPClientError) as caught:
        await run(config, txn, options)
    assert not caught.value.reply.permanent
    assert config.received == []


@pytest_twisted.ensureDeferred
async def test_plain_large_message_and_bare_lf_normalised():
    config = SinkConfig(extensions=("8BITMIME",))
    message = b"a\nb\r\n" + b"z" * (3 * CHUNK_SIZE) + b"\r\n.\r\n"
    txn = Transaction("", (Recipient("bob@hamburger.edu"),), message, body="8BITMIME")
    result = await run(config, txn, ClientOptions(helo_name="crepes.fr"))
    assert result.recipients[0].delivered
    (got,) = config.received
    assert got.sender == ""
    assert got.message == message.replace(b"a\nb", b"a\r\nb")


@pytest_twisted.ensureDeferred
async def test_connection_refused_is_temporary():
    reactor = _reactor()
    port = await listen(reactor, SinkConfig())
    number = port.getHost().port
    await port.stopListening()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", number, timeout=5)
    txn = Transaction("a@crepes.fr", (Recipient("b@x.example"),), b"hi\r\n")
    with pytest.raises(SMTPClientError) as caught:
        await deliver(endpoint, reactor, ClientOptions(helo_name="c"), txn)
    assert caught.value.reply.enhanced == "4.4.1"
