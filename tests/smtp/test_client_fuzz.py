"""Hostile or broken servers: whatever they send, the client ends cleanly."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from twistedmail.model import Recipient
from twistedmail.smtp.client import (
    ClientOptions,
    SMTPClientError,
    SMTPClientProtocol,
    Transaction,
    TransactionResult,
    send_message,
)

replies = st.sampled_from(
    [
        b"220 hi\r\n",
        b"250 ok\r\n",
        b"250-PIPELINING\r\n",
        b"250-SIZE 10\r\n",
        b"250-SIZE x\r\n",
        b"250 STARTTLS\r\n",
        b"354 go\r\n",
        b"421 bye\r\n",
        b"550 5.1.1 no\r\n",
        b"334 \r\n",
        b"\r\n",
        b"2\r\n",
        b"999 what\r\n",
        b"250 5.0.0 mismatched enhanced code\r\n",
        b"\xff\xfe garbage\r\n",
        b"250",
        b"x" * 5000,
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(replies, max_size=25), st.booleans())
def test_any_server_bytes_end_in_a_result_or_a_session_error(chunks, lose) -> None:
    clock = Clock()
    proto = SMTPClientProtocol(clock)
    proto.makeConnection(StringTransport())
    txn = Transaction("a@b.example", (Recipient("c@d.example"), Recipient("e@d.example")), b"x\r\n")
    outcome: list[object] = []
    d = Deferred.fromCoroutine(send_message(proto, ClientOptions(helo_name="h"), txn))
    d.addBoth(outcome.append)
    for chunk in chunks:
        if outcome:
            break
        proto.dataReceived(chunk)
    if lose and not outcome:
        proto.connectionLost(Failure(ConnectionError("gone")))
    clock.advance(3600)  # every timeout expires
    assert len(outcome) == 1
    (value,) = outcome
    if isinstance(value, Failure):
        assert isinstance(value.value, SMTPClientError), value
    else:
        assert isinstance(value, TransactionResult)
        assert len(value.recipients) == 2
