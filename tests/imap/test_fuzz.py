"""
Property tests: arbitrary command streams never crash a session, never
disturb another session, and every command gets a tagged OK, NO or BAD.

The memory store answers synchronously, so each command's reply is there
as soon as its bytes are in; no reactor turns are needed.
"""

from __future__ import annotations

import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.cred.portal import Portal
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport

from twistedmail.imap.server import IMAPFactory, ImapSettings
from twistedmail.imap.session import IMAPSession
from twistedmail.interfaces import IMailAccount
from twistedmail.store.memory import MemoryStore

COMMANDS = [
    b"CAPABILITY", b"NOOP", b"ID", b"ENABLE", b"NAMESPACE", b"LOGIN", b"SELECT", b"EXAMINE",
    b"CREATE", b"DELETE", b"RENAME", b"SUBSCRIBE", b"UNSUBSCRIBE", b"LIST", b"LSUB", b"STATUS",
    b"APPEND", b"CHECK", b"CLOSE", b"UNSELECT", b"EXPUNGE", b"SEARCH", b"FETCH", b"STORE",
    b"COPY", b"MOVE", b"UID FETCH", b"UID SEARCH", b"UID STORE", b"UID COPY", b"UID MOVE",
    b"UID EXPUNGE", b"FROB", b"UID", b"select",
]  # fmt: skip
WORDS = [
    b"INBOX", b"Trash", b"a/b", b"*", b"%", b"1", b"1:*", b"*:1", b"$", b"0", b"4294967296",
    b"2,4:5", b"FLAGS", b"+FLAGS.SILENT", b"-FLAGS", b"(\\Seen)", b"\\Deleted", b"BODY[]",
    b"BODY.PEEK[1.2.HEADER.FIELDS (SUBJECT)]<0.10>", b"BODY[TEXT]<5.0>", b"(UID ENVELOPE)",
    b"BODYSTRUCTURE", b"ALL", b"FULL", b"FAST", b"OR", b"NOT", b"SEEN", b"FROM", b"HEADER",
    b"SINCE", b"1-Feb-2024", b"31-Feb-2024", b"CHARSET", b"UTF-8", b"RETURN", b"(MIN SAVE)",
    b"()", b"(", b")", b"[", b"]", b"NIL", b'""', b'"a\\"b"', b'"unterminated', b"\\", b"{",
    b"{-1}", b"{5", b"(UNCHANGEDSINCE 1)", b"(CHANGEDSINCE 0)", b"(USE (\\Sent))",
    b"(MESSAGES UNSEEN)", b"(SUBSCRIBED)", b"&AOk-", b"&bad", b"\xc3\xa9", b"\x00", b"\x7f",
    b"MODSEQ", b"LARGER", b"99999999999999999999", b"CONDSTORE", b"(CONDSTORE)", b"QRESYNC",
    b"(QRESYNC (1 1 1:*))", b"(CHANGEDSINCE 1 VANISHED)", b"ENABLE", b"IDLE",
]  # fmt: skip

_token = st.one_of(
    st.sampled_from(WORDS),
    st.binary(max_size=12).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.binary(max_size=40).map(lambda b: b"{%d+}\r\n" % len(b) + b),
)
_command = st.tuples(st.sampled_from(COMMANDS), st.lists(_token, max_size=6))


def _result(d: Deferred[Any]) -> Any:
    box: list[Any] = []
    d.addBoth(box.append)
    return box[0]


def _session(factory: IMAPFactory, account: IMailAccount) -> tuple[IMAPSession, StringTransport]:
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 1))
    session = factory.session(secure=False)
    session.makeConnection(transport)
    assert session.logged_in(account, lambda: None) is None
    transport.clear()
    return session, transport


def _framed(words: list[bytes]) -> bool:
    """Whether a line's literal announcements are all well-formed ``{n+}``s."""
    line = b" ".join(words)
    return not re.search(rb"\{\d+\}\r\n|\{\d*\+?\}?$", line) and not line.endswith(b"}")


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(_command, min_size=1, max_size=12))
def test_random_commands_always_get_a_tagged_reply(
    commands: list[tuple[bytes, list[bytes]]],
) -> None:
    store = MemoryStore()
    account: IMailAccount = _result(store.account("alice@example.test"))
    msg = b"From: a@b\r\nSubject: s\r\n\r\nbody\r\n"
    for _ in range(3):
        _result(account.append("INBOX", msg))
    portal = Portal(None, [])  # type: ignore[arg-type]
    factory = IMAPFactory(ImapSettings(), portal, "mx", None, False, task.Clock(), None)
    session, transport = _session(factory, account)
    other, other_transport = _session(factory, account)
    other.dataReceived(b"o1 SELECT INBOX\r\n")
    assert b"o1 OK" in other_transport.value()
    session.dataReceived(b"s0 SELECT INBOX\r\n")
    transport.clear()
    for n, (name, args) in enumerate(commands):
        words = [b"h%d" % n, name, *args]
        if not _framed(words):
            continue
        line = b" ".join(words)
        session.dataReceived(line + b"\r\n")
        out = transport.value()
        transport.clear()
        assert b"SERVERBUG" not in out and b"Internal server error" not in out, (line, out)
        assert re.search(rb"(^|\r\n)h%d (OK|NO|BAD) " % n, out), (line, out)
        assert not transport.disconnecting, (line, out)
    # The other session is unaffected and its numbering still adds up.
    other_transport.clear()
    other.dataReceived(b"o2 NOOP\r\no3 FETCH 1:* UID\r\n")
    out = other_transport.value()
    assert b"o2 OK" in out and (b"o3 OK" in out or b"o3 BAD" in out), out
    uids = [int(u) for u in re.findall(rb"\* \d+ FETCH \(UID (\d+)\)", out)]
    seqs = [int(s) for s in re.findall(rb"\* (\d+) FETCH \(UID", out)]
    assert seqs == list(range(1, len(seqs) + 1))
    assert uids == sorted(uids)
    live = [i.uid for i in _result(account.messages("INBOX"))]
    if b"o3 OK" in out:
        assert uids == live
