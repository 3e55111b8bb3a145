"""
Our SMTP client against our SMTP server over loopback: the two halves agree
on pipelining, per-recipient replies and byte-exact bodies whatever the
chunk boundaries (the twisted.mail truncation bug).
"""

from __future__ import annotations

from typing import Any

import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint

from tests.smtp.smtpd_harness import BOB, CAROL, World, body_of, world  # type: ignore[import-not-found]
from twistedmail.model import Recipient
from twistedmail.smtp.client import CHUNK_SIZE, ClientOptions, TLSPolicy, Transaction, deliver

__all__ = ["world"]


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def dotty_message() -> bytes:
    """Lines of '.' at 64 KiB boundaries of the raw message; no line over 998 octets."""
    out = bytearray(b"From: alice@crepes.fr\r\nTo: bob@hamburger.edu\r\nSubject: dots\r\n\r\n")
    out += b".first body line\r\n"
    for k in range(1, 4):
        boundary = k * CHUNK_SIZE - (k % 2)  # exactly at, and one before, a boundary
        while boundary - len(out) > 900:
            out += b"y" * 76 + b"\r\n"
        out += b"z" * max(boundary - len(out) - 2, 0) + b"\r\n"
        out += b".\r\n..\r\n.x\r\n"
    out += "Grüße\r\n".encode()
    return bytes(out)


async def send(mail: World, txn: Transaction) -> Any:
    reactor = _reactor()
    factory = mail.factory()
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    try:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port, timeout=5)
        options = ClientOptions(helo_name="crepes.fr", tls=TLSPolicy.NEVER)
        return await deliver(endpoint, reactor, options, txn)
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_byte_exact_through_our_server(world):
    message = dotty_message()
    txn = Transaction(
        "alice@crepes.fr",
        (Recipient(BOB), Recipient("nobody@hamburger.edu"), Recipient(CAROL)),
        message,
        body="8BITMIME",
    )
    result = await send(world, txn)
    codes = [(r.address, r.reply.code) for r in result.recipients]
    assert codes == [(BOB, 250), ("nobody@hamburger.edu", 550), (CAROL, 250)]
    assert result.recipients[1].reply.enhanced == "5.1.1"
    for user in (BOB, CAROL):
        (stored,) = await world.inbox(user)
        assert body_of(stored) == message
