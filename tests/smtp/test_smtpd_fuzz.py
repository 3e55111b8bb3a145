"""
Hostile input never crashes a session, never answers out of protocol, and
never stops the next client from being served (STYLE.md §6).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import pytest_twisted  # type: ignore[import-untyped]
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.smtp.smtpd_harness import BOB, Client, World, make_accounts  # type: ignore[import-not-found]
from twistedmail.smtp.data import DataReader
from twistedmail.smtp.params import ParamError, parse_mail_from, parse_rcpt_to
from twistedmail.smtp.server import Role, SmtpSettings
from twistedmail.store.memory import MemoryStore

REPLY = re.compile(rb"\A(?:(?:[2-5]\d\d[ -][^\r\n]*|334 [A-Za-z0-9+/=]*)\r\n)*\Z")

VERBS = [
    "HELO", "EHLO", "MAIL FROM:", "RCPT TO:", "DATA", "BDAT", "RSET", "NOOP", "QUIT",
    "VRFY", "HELP", "STARTTLS", "AUTH", "AUTH PLAIN", "AUTH LOGIN", "EXPN", "",
]  # fmt: skip

line = st.builds(
    lambda verb, arg: f"{verb} {arg}".encode(errors="surrogateescape"),
    st.sampled_from(VERBS),
    st.one_of(
        st.text(max_size=40),
        st.sampled_from(["<bob@hamburger.edu>", "<>", "<a@b.c> SIZE=1", "3 LAST", "0", "*"]),
    ),
)
endings = st.sampled_from([b"\r\n", b"\n", b"\r", b"", b"\r\n.\r\n", b"\n.\n"])
chunk = st.one_of(
    st.builds(lambda ls, e: b"".join(x + e for x in ls), st.lists(line, max_size=8), endings),
    st.binary(max_size=300),
)


@pytest.fixture
def world(tmp_path: Any) -> World:
    return World(make_accounts(str(tmp_path / "accounts.json")), MemoryStore())


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(chunks=st.lists(chunk, min_size=1, max_size=6), role=st.sampled_from(list(Role)))
def test_garbage_never_crashes_and_next_client_is_served(world, chunks, role):
    factory = world.factory(
        role, settings=SmtpSettings(max_message_size=2000), outbox=True, tls=True
    )
    bad = Client(factory, ip="192.0.2.66")
    for data in chunks:
        bad.session.dataReceived(data)
        world.clock.advance(1)
    out = bad.take()
    assert REPLY.match(out), out[-200:]
    bad.session.connectionLost()
    good = Client(factory, ip="192.0.2.7")
    good.session.dataReceived(
        b"EHLO ok\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<bob@hamburger.edu>\r\nDATA\r\nhi\r\n.\r\n"
    )
    if role is Role.MX:
        assert b"250 2.0.0 Ok: queued as " in good.take()
    else:
        assert b"530 5.7.0 Authentication required" in good.take()
    assert factory.session_count == 1


@given(st.text(max_size=80), st.integers(min_value=0, max_value=10**6))
def test_mail_parameters_parse_or_refuse(text, size):
    try:
        parse_mail_from(text, size)
    except ParamError as e:
        assert 500 <= e.reply.code < 600


@given(st.text(max_size=80), st.booleans())
def test_rcpt_parameters_parse_or_refuse(text, utf8):
    try:
        parse_rcpt_to(text, utf8)
    except ParamError as e:
        assert 500 <= e.reply.code < 600


@pytest_twisted.ensureDeferred
async def test_good_client_after_fuzzing_gets_its_mail_stored(world):
    factory = world.factory()
    Client(factory).session.dataReceived(b"\x00\xff" * 5000 + b"\r\nDATA\r\n.\r\n")
    good = Client(factory)
    good.session.dataReceived(
        b"EHLO ok\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<bob@hamburger.edu>\r\nDATA\r\nhi\r\n.\r\n"
    )
    assert len(await world.inbox(BOB)) == 1


data_bytes = st.lists(
    st.sampled_from([b"\r\n", b".", b"\r", b"\n", b"a", b"..", b"\r\n.\r\n", b"x" * 40]),
    max_size=60,
).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(data=data_bytes, cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=8))
def test_data_reader_is_independent_of_how_input_is_cut(data, cuts):
    """Where TCP splits the stream must never change the end, the bytes or the verdict."""
    whole = DataReader(500, max_line=100)
    expected = whole.feed(data)
    pieces = DataReader(500, max_line=100)
    used = None
    start = 0
    for cut in [*sorted(c for c in cuts if c <= len(data)), len(data)]:
        got = pieces.feed(data[start:cut])
        if got is not None:
            used = start + got
            break
        start = cut
    assert used == expected
    assert pieces.error == whole.error
    if expected is not None:
        assert pieces.message() == whole.message()
        assert data[:expected].endswith(b".\r\n")
