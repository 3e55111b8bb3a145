"""
Dot-stuffing must not depend on chunk boundaries (twisted.mail's client
truncates messages when a '.' line meets a 16 KiB boundary).
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from twistedmail.smtp.client import DotStuffer, stuff

pieces = st.sampled_from([b".", b"..", b"\r\n", b"\r", b"\n", b"a", b"x.y", b" "])
messages = st.lists(pieces, max_size=40).map(b"".join)


def reference(message: bytes) -> bytes:
    """RFC 5321 §4.5.2 written the obvious way, one line at a time."""
    text = re.sub(rb"\r\n|\r|\n", b"\n", message)
    lines = text.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    out = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)
    return out + b".\r\n"


def unstuff(stream: bytes) -> bytes:
    """What a receiver stores (RFC 5321 §4.5.2, receiver side)."""
    assert stream.endswith(b".\r\n")
    body = stream[: -len(b".\r\n")]
    lines = body.split(b"\r\n")[:-1] if body else []
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines)


def chunked(message: bytes, cuts: list[int]) -> bytes:
    stuffer = DotStuffer()
    out = []
    start = 0
    for cut in sorted(set(cuts)):
        out.append(stuffer.feed(message[start:cut]))
        start = cut
    out.append(stuffer.feed(message[start:]))
    out.append(stuffer.finish())
    return b"".join(out)


@settings(max_examples=400, deadline=None)
@given(messages, st.lists(st.integers(min_value=0, max_value=200)))
def test_any_chunking_gives_the_reference_stream(message: bytes, cuts: list[int]) -> None:
    cuts = [c for c in cuts if c <= len(message)]
    stream = chunked(message, cuts)
    assert stream == reference(message)
    # The only end-of-data is ours: never a <CRLF>.<CRLF> earlier in the stream.
    assert (b"\r\n" + stream).find(b"\r\n.\r\n") == len(stream) - 3
    # No bare CR or LF goes out (SMTP smuggling).
    assert re.search(rb"\r(?!\n)|(?<!\r)\n", stream) is None


@settings(max_examples=200, deadline=None)
@given(messages, st.lists(st.integers(min_value=0, max_value=200)))
def test_crlf_messages_come_back_byte_exact(message: bytes, cuts: list[int]) -> None:
    crlf = re.sub(rb"\r\n|\r|\n", b"\r\n", message)
    if crlf and not crlf.endswith(b"\r\n"):
        crlf += b"\r\n"
    assert unstuff(chunked(crlf, [c for c in cuts if c <= len(crlf)])) == crlf


def test_every_boundary_of_a_dot_line() -> None:
    message = b"a\r\n.\r\n.b\r\n..\r\nend\r\n"
    expected = b"a\r\n..\r\n..b\r\n...\r\nend\r\n.\r\n"
    for cut in range(len(message) + 1):
        assert chunked(message, [cut]) == expected
        for cut2 in range(cut, len(message) + 1):
            assert chunked(message, [cut, cut2]) == expected


def test_dot_line_at_a_64k_boundary() -> None:
    """The twisted.mail truncation: a '.' line exactly at a chunk boundary."""
    first = b"x" * (64 * 1024 - 2) + b"\r\n"
    message = first + b".\r\nafter\r\n"
    stream = b"".join(stuff(message))
    assert unstuff(stream) == message


def test_first_line_dot_and_empty_message() -> None:
    assert b"".join(stuff(b".")) == b"..\r\n.\r\n"
    assert b"".join(stuff(b"")) == b".\r\n"
    assert b"".join(stuff(b"a\r")) == b"a\r\n.\r\n"
