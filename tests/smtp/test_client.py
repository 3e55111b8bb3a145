"""
Our SMTP client on the wire: exact bytes out for scripted server replies.

Everything runs over StringTransport and task.Clock; RFC sections are cited
where a rule decides the expected bytes.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from twistedmail.model import Recipient
from twistedmail.smtp.client import (
    ClientOptions,
    Reply,
    SMTPClientError,
    SMTPClientProtocol,
    SMTPConnection,
    TLSPolicy,
    Transaction,
    TransactionResult,
    send_message,
)

OPTIONS = ClientOptions(helo_name="crepes.fr", tls=TLSPolicy.OPPORTUNISTIC)
EHLO_PIPE = b"250-hamburger.edu\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 8BITMIME\r\n"


class Wire:
    """A client session on a StringTransport, driven reply by reply."""

    def __init__(self, txn: Transaction, options: ClientOptions = OPTIONS) -> None:
        self.clock = Clock()
        self.proto = SMTPClientProtocol(self.clock)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        self.result: list[TransactionResult | Failure] = []
        d = Deferred.fromCoroutine(send_message(self.proto, options, txn))
        d.addBoth(self.result.append)

    def server(self, data: bytes) -> bytes:
        """Feed server bytes; return what the client wrote in response."""
        self.proto.dataReceived(data)
        out: bytes = self.transport.value()
        self.transport.clear()
        return out

    def outcome(self) -> TransactionResult:
        if not self.result:
            self.server(b"221 bye\r\n")  # the session ends with QUIT
        assert len(self.result) == 1, self.result
        value = self.result[0]
        assert isinstance(value, TransactionResult), value
        return value

    def error(self) -> SMTPClientError:
        assert len(self.result) == 1, self.result
        value = self.result[0]
        assert isinstance(value, Failure), value
        assert isinstance(value.value, SMTPClientError)
        return value.value


def txn(*rcpts: str, message: bytes = b"Subject: hi\r\n\r\nHello\r\n", **kw) -> Transaction:
    return Transaction("alice@crepes.fr", tuple(Recipient(r) for r in rcpts), message, **kw)


def test_pipelined_transaction_per_recipient_results() -> None:
    """RFC 2920 §3.1: MAIL, RCPTs and DATA go in one write; results per recipient."""
    w = Wire(txn("bob@hamburger.edu", "nobody@hamburger.edu", body="8BITMIME"))
    assert w.server(b"220 hamburger.edu ESMTP\r\n") == b"EHLO crepes.fr\r\n"
    assert w.server(EHLO_PIPE) == (
        b"MAIL FROM:<alice@crepes.fr> SIZE=22 BODY=8BITMIME\r\n"
        b"RCPT TO:<bob@hamburger.edu>\r\n"
        b"RCPT TO:<nobody@hamburger.edu>\r\n"
        b"DATA\r\n"
    )
    out = w.server(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no such user\r\n354 go\r\n")
    assert out == b"Subject: hi\r\n\r\nHello\r\n.\r\n"
    assert w.server(b"250 2.0.0 queued as X\r\n") == b"QUIT\r\n"
    w.server(b"221 bye\r\n")
    result = w.outcome()
    assert [(r.address, r.delivered, r.permanent) for r in result.recipients] == [
        ("bob@hamburger.edu", True, False),
        ("nobody@hamburger.edu", False, True),
    ]
    assert result.recipients[0].reply == Reply(250, ("2.0.0 queued as X",), "2.0.0")
    assert result.recipients[1].reply.enhanced == "5.1.1"
    assert w.transport.disconnecting


def test_helo_fallback_and_sequential_commands() -> None:
    """RFC 5321 §3.2: EHLO refused with 502 -> HELO; no PIPELINING -> one by one."""
    w = Wire(txn("bob@old.example"))
    assert w.server(b"220 old\r\n") == b"EHLO crepes.fr\r\n"
    assert w.server(b"502 what\r\n") == b"HELO crepes.fr\r\n"
    assert w.server(b"250 old\r\n") == b"MAIL FROM:<alice@crepes.fr>\r\n"
    assert w.server(b"250 ok\r\n") == b"RCPT TO:<bob@old.example>\r\n"
    assert w.server(b"250 ok\r\n") == b"DATA\r\n"
    assert w.server(b"354 go\r\n").endswith(b"\r\n.\r\n")
    assert w.server(b"250 ok\r\n") == b"QUIT\r\n"
    w.server(b"221 bye\r\n")
    assert w.outcome().recipients[0].delivered


def test_multiline_greeting_and_continuations() -> None:
    w = Wire(txn("bob@x.example"))
    assert w.server(b"220-first\r\n") == b""
    assert w.server(b"220 second\r\n") == b"EHLO crepes.fr\r\n"


def test_all_recipients_refused_sequential_resets() -> None:
    w = Wire(txn("a@x.example"))
    w.server(b"220 hi\r\n")
    w.server(b"250 x\r\n")
    w.server(b"250 ok\r\n")
    assert w.server(b"450 4.2.1 busy\r\n") == b"RSET\r\n"
    assert w.server(b"250 ok\r\n") == b"QUIT\r\n"
    w.server(b"221 bye\r\n")
    result = w.outcome()
    assert not result.recipients[0].delivered and not result.recipients[0].permanent


def test_pipelined_data_accepted_without_recipients_is_ended_empty() -> None:
    """RFC 2920 §3.1: a server that says 354 after refusing every RCPT gets an empty message."""
    w = Wire(txn("a@x.example"))
    w.server(b"220 hi\r\n")
    w.server(EHLO_PIPE)
    assert w.server(b"250 ok\r\n550 no\r\n354 go\r\n") == b".\r\n"
    assert w.server(b"554 no valid recipients\r\n") == b"QUIT\r\n"
    assert w.outcome().recipients[0].permanent


def test_mail_refused_applies_to_every_recipient() -> None:
    w = Wire(txn("a@x.example", "b@x.example"))
    w.server(b"220 hi\r\n")
    w.server(EHLO_PIPE)
    w.server(b"553 5.7.1 sender refused\r\n503 no\r\n503 no\r\n503 no\r\n")
    assert [r.reply.code for r in w.outcome().recipients] == [553, 553]


def test_data_end_reply_applies_to_accepted_recipients_only() -> None:
    w = Wire(txn("a@x.example", "b@x.example"))
    w.server(b"220 hi\r\n")
    w.server(EHLO_PIPE)
    w.server(b"250 ok\r\n250 ok\r\n450 4.2.0 later\r\n354 go\r\n")
    w.server(b"554 5.6.0 content refused\r\n")
    codes = [r.reply.code for r in w.outcome().recipients]
    assert codes == [554, 450]


def test_size_over_the_servers_limit_is_a_permanent_failure_without_mail() -> None:
    """RFC 1870 §6: do not try to send what the server said it will refuse."""
    w = Wire(txn("a@x.example", message=b"x" * 2000 + b"\r\n"))
    w.server(b"220 hi\r\n")
    assert w.server(EHLO_PIPE) == b"QUIT\r\n"
    reply = w.outcome().recipients[0].reply
    assert (reply.code, reply.enhanced) == (552, "5.3.4")


def test_smtputf8_needed_but_missing_fails_permanently() -> None:
    """RFC 6531 §3.2: no downgrade; a clean 5.6.7 for the bounce."""
    w = Wire(txn("josé@exemple.fr"))
    w.server(b"220 hi\r\n")
    assert w.server(EHLO_PIPE) == b"QUIT\r\n"
    reply = w.outcome().recipients[0].reply
    assert (reply.code, reply.enhanced) == (553, "5.6.7")


def test_smtputf8_used_when_offered() -> None:
    w = Wire(txn("josé@exemple.fr"))
    w.server(b"220 hi\r\n")
    out = w.server(b"250-x\r\n250 SMTPUTF8\r\n")
    assert out == b"MAIL FROM:<alice@crepes.fr> SMTPUTF8\r\n"
    assert w.server(b"250 ok\r\n") == "RCPT TO:<josé@exemple.fr>\r\n".encode()


def test_dsn_parameters_passed_when_offered() -> None:
    """RFC 3461 §4: NOTIFY/ORCPT per RCPT, RET/ENVID on MAIL, xtext-encoded."""
    t = Transaction(
        "alice@crepes.fr",
        (Recipient("bob@x.example", ("SUCCESS", "FAILURE"), "rfc822;bob+tag@x.example"),),
        b"hi\r\n",
        ret="HDRS",
        envid="id=1",
    )
    w = Wire(t)
    w.server(b"220 hi\r\n")
    out = w.server(b"250-x\r\n250 DSN\r\n")
    assert out == b"MAIL FROM:<alice@crepes.fr> RET=HDRS ENVID=id+3D1\r\n"
    out = w.server(b"250 ok\r\n")
    assert out == (
        b"RCPT TO:<bob@x.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+2Btag@x.example\r\n"
    )
    w.server(b"250 ok\r\n")
    w.server(b"354 go\r\n")
    w.server(b"250 ok\r\n")
    w.server(b"221 bye\r\n")
    assert w.outcome().dsn


def test_dot_stuffing_and_crlf_on_the_wire() -> None:
    """RFC 5321 §4.5.2: first line and every line starting with '.'; CRLF stays CRLF."""
    w = Wire(txn("a@x.example", message=b".first\r\nmid\r\n.\r\n..two\r\nlast"))
    w.server(b"220 hi\r\n")
    w.server(b"250 x\r\n")
    w.server(b"250 ok\r\n")
    w.server(b"250 ok\r\n")
    assert w.server(b"354 go\r\n") == b"..first\r\nmid\r\n..\r\n...two\r\nlast\r\n.\r\n"


def test_greeting_timeout() -> None:
    """RFC 5321 §4.5.3.2.1: five minutes for the greeting, then give up (4.4.2)."""
    w = Wire(txn("a@x.example"))
    w.clock.advance(299)
    assert w.result == []
    w.clock.advance(2)
    err = w.error()
    assert err.reply.code == 421 and err.reply.enhanced == "4.4.2"
    assert w.transport.disconnecting


def test_data_end_timeout_is_ten_minutes() -> None:
    """RFC 5321 §4.5.3.2.6: wait ten minutes for the reply to the final dot."""
    w = Wire(txn("a@x.example"))
    w.server(b"220 hi\r\n")
    w.server(EHLO_PIPE)
    w.server(b"250 ok\r\n250 ok\r\n354 go\r\n")
    w.clock.advance(599)
    assert w.result == []
    w.clock.advance(1)
    assert not w.error().reply.permanent


def test_connection_lost_is_temporary() -> None:
    w = Wire(txn("a@x.example"))
    w.server(b"220 hi\r\n")
    w.proto.connectionLost(Failure(ConnectionError("gone")))
    err = w.error()
    assert err.reply.code == 421 and not err.reply.permanent


def test_garbage_reply_aborts() -> None:
    w = Wire(txn("a@x.example"))
    w.server(b"hello there\r\n")
    assert w.error().reply.enhanced == "4.5.0"


def test_greeting_554_is_a_session_error() -> None:
    w = Wire(txn("a@x.example"))
    w.server(b"554 go away\r\n")
    assert w.error().reply.code == 554


def test_data_after_starttls_reply_is_refused() -> None:
    """CVE-2011-0411: replies injected before the TLS handshake must not be read."""
    w = Wire(txn("a@x.example"))
    w.server(b"220 hi\r\n")
    assert w.server(b"250-x\r\n250 STARTTLS\r\n") == b"STARTTLS\r\n"
    w.server(b"220 go ahead\r\n250-injected\r\n250 AUTH PLAIN\r\n")
    assert w.error().reply.enhanced == "4.5.0"


def test_tls_required_but_not_offered() -> None:
    w = Wire(txn("a@x.example"), ClientOptions(helo_name="c", tls=TLSPolicy.REQUIRED))
    w.server(b"220 hi\r\n")
    assert w.server(b"250 x\r\n") == b""
    err = w.error()
    assert err.reply.enhanced == "4.7.10" and not err.reply.permanent


def test_no_credentials_in_clear() -> None:
    options = ClientOptions(helo_name="c", tls=TLSPolicy.NEVER, username="u", password="p")
    w = Wire(txn("a@x.example"), options)
    w.server(b"220 hi\r\n")
    assert w.server(b"250-x\r\n250 AUTH PLAIN\r\n") == b""
    assert w.error().reply.enhanced == "4.7.11"


def test_auth_plain_when_allowed() -> None:
    """RFC 4616: one initial response, authzid empty."""
    options = ClientOptions(
        helo_name="c", tls=TLSPolicy.NEVER, username="u", password="p", auth_plaintext=True
    )
    w = Wire(txn("a@x.example"), options)
    w.server(b"220 hi\r\n")
    assert w.server(b"250-x\r\n250 AUTH LOGIN PLAIN\r\n") == b"AUTH PLAIN AHUAcA==\r\n"
    assert w.server(b"235 ok\r\n") == b"MAIL FROM:<alice@crepes.fr>\r\n"


def test_auth_login_and_failure_is_temporary() -> None:
    options = ClientOptions(
        helo_name="c", tls=TLSPolicy.NEVER, username="u", password="p", auth_plaintext=True
    )
    w = Wire(txn("a@x.example"), options)
    w.server(b"220 hi\r\n")
    assert w.server(b"250-x\r\n250 AUTH LOGIN\r\n") == b"AUTH LOGIN\r\n"
    assert w.server(b"334 VXNlcm5hbWU6\r\n") == b"dQ==\r\n"
    assert w.server(b"334 UGFzc3dvcmQ6\r\n") == b"cA==\r\n"
    w.server(b"535 5.7.8 bad\r\n")
    err = w.error()
    assert err.stage == "AUTH" and not err.reply.permanent


def test_flow_control_waits_for_the_transport_and_times_out() -> None:
    """RFC 5321 §4.5.3.2.5: a data block that makes no progress for 3 minutes fails."""
    message = b"line\r\n" * 30000  # several chunks
    w = Wire(txn("a@x.example", message=message))
    w.server(b"220 hi\r\n")
    w.server(EHLO_PIPE.replace(b"SIZE 1000", b"SIZE 0"))
    w.proto.pauseProducing()
    out = w.server(b"250 ok\r\n250 ok\r\n354 go\r\n")
    assert 0 < len(out) < len(message)  # one chunk written, then waiting
    w.proto.resumeProducing()  # drained: the rest follows (never paused again)
    assert w.transport.value().endswith(b"\r\n.\r\n")
    w2 = Wire(txn("a@x.example", message=message))
    w2.server(b"220 hi\r\n")
    w2.server(EHLO_PIPE.replace(b"SIZE 1000", b"SIZE 0"))
    w2.proto.pauseProducing()
    w2.server(b"250 ok\r\n250 ok\r\n354 go\r\n")
    w2.clock.advance(181)
    assert w2.error().reply.enhanced == "4.4.2"


def _reused_connection(ehlo: bytes) -> tuple[StringTransport, SMTPClientProtocol, list[object]]:
    """An SMTPConnection that has carried one message; returns what a second send gives."""
    clock = Clock()
    proto = SMTPClientProtocol(clock)
    transport = StringTransport()
    proto.makeConnection(transport)
    opened: list[SMTPConnection] = []
    Deferred.fromCoroutine(SMTPConnection.start(proto, OPTIONS)).addCallback(opened.append)
    proto.dataReceived(b"220 hamburger.edu ESMTP\r\n" + ehlo)
    (connection,) = opened
    first: list[object] = []
    Deferred.fromCoroutine(connection.send(txn("a@hamburger.edu"))).addBoth(first.append)
    proto.dataReceived(
        b"250 ok\r\n250 ok\r\n354 go\r\n" if b"PIPELINING" in ehlo else b"250 ok\r\n"
    )
    if b"PIPELINING" not in ehlo:
        proto.dataReceived(b"250 ok\r\n")
        proto.dataReceived(b"354 go\r\n")
    proto.dataReceived(b"250 queued\r\n")
    assert len(first) == 1 and isinstance(first[0], TransactionResult)
    transport.clear()
    second: list[object] = []
    Deferred.fromCoroutine(connection.send(txn("b@hamburger.edu"))).addBoth(second.append)
    return transport, proto, second


def test_reused_connection_pipelines_rset_with_the_next_mail() -> None:
    """RFC 2920 §3.1: RSET may appear anywhere in a group, so it costs no round trip."""
    transport, proto, second = _reused_connection(EHLO_PIPE)
    assert transport.value() == (
        b"RSET\r\nMAIL FROM:<alice@crepes.fr> SIZE=22\r\nRCPT TO:<b@hamburger.edu>\r\nDATA\r\n"
    )
    proto.dataReceived(b"250 reset\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    proto.dataReceived(b"250 queued\r\n")
    (result,) = second
    assert isinstance(result, TransactionResult) and result.recipients[0].delivered


def test_a_refused_rset_is_a_reconnect_not_a_result() -> None:
    """A 421 to the pipelined RSET: the body is never sent, the caller reconnects."""
    transport, proto, second = _reused_connection(EHLO_PIPE)
    transport.clear()
    proto.dataReceived(b"421 4.4.2 idle too long\r\n")
    (failure,) = second
    assert isinstance(failure, Failure) and isinstance(failure.value, SMTPClientError)
    assert failure.value.stage == "RSET" and transport.value() == b""
    assert transport.disconnecting


def test_reused_connection_without_pipelining_resets_first() -> None:
    transport, proto, _ = _reused_connection(b"250 hamburger.edu\r\n")
    assert transport.value() == b"RSET\r\n"
    transport.clear()
    proto.dataReceived(b"250 reset\r\n")
    assert transport.value() == b"MAIL FROM:<alice@crepes.fr>\r\n"
