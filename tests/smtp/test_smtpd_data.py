"""
The message body: dot-stuffing, the end of data, SMTP smuggling, line and
size limits, BDAT (RFC 5321 §4.1.1.4, §4.5.2, §4.5.3.1; RFC 3030).
"""

from __future__ import annotations

import pytest
import pytest_twisted  # type: ignore[import-untyped]

from tests.smtp.smtpd_harness import BOB, body_of, memory_world, world  # type: ignore[import-not-found]
from twistedmail.smtp.data import ChunkCollector, DataError, DataReader

__all__ = ["memory_world", "world"]

START = "EHLO x", "MAIL FROM:<a@crepes.fr>", "RCPT TO:<bob@hamburger.edu>"

STUFFED = b"..\r\n...\r\n..x\r\nplain\r\n.. \r\n"
UNSTUFFED = b".\r\n..\r\n.x\r\nplain\r\n. \r\n"


def feed_in_pieces(data: bytes, cuts: list[int], reader: DataReader) -> int | None:
    """Feed ``data`` cut at ``cuts``; return the total octets used at the end."""
    used_before = 0
    start = 0
    for cut in [*cuts, len(data)]:
        used = reader.feed(data[start:cut])
        if used is not None:
            return used_before + used
        used_before += cut - start
        start = cut
    return None


def test_dot_unstuffing_at_every_split_point():
    """A "." line at every buffer boundary: the end is found once and exactly."""
    wire = b".." + b"x" * 3 + b"\r\n" + STUFFED + b".\r\nQUIT\r\n"
    expected = b".xxx\r\n" + UNSTUFFED
    end = len(wire) - len(b"QUIT\r\n")
    for cut in range(len(wire) + 1):
        reader = DataReader(10_000)
        assert feed_in_pieces(wire, [cut], reader) == end, cut
        assert reader.error is None
        assert reader.message() == expected
    reader = DataReader(10_000)
    assert feed_in_pieces(wire, list(range(1, len(wire))), reader) == end
    assert reader.message() == expected


def test_empty_message():
    reader = DataReader(100)
    assert reader.feed(b".\r\nNOOP\r\n") == 3
    assert reader.message() == b""


@pytest.mark.parametrize(
    "payload",
    [
        b"\n.\n",
        b"\n.\r\n",
        b"\r\n.\n",
        b"\r.\r",
        b"\r.\r\n",
        b"\r\n.\r",
        b"\n.\r",
    ],
)
def test_smuggling_payloads_never_end_the_data(payload):
    """SMTP smuggling (2023): only <CRLF>.<CRLF> ends DATA; the rest is refused."""
    smuggled = b"MAIL FROM:<evil@x>\r\nRCPT TO:<bob@hamburger.edu>\r\nDATA\r\nevil\r\n"
    wire = b"Subject: hi\r\n\r\nhi" + payload + smuggled + b".\r\nNOOP\r\n"
    for cut in range(0, len(wire), 3):
        reader = DataReader(10_000)
        used = feed_in_pieces(wire, [cut], reader)
        assert used == len(wire) - len(b"NOOP\r\n")
        assert reader.error is DataError.BARE_NEWLINE
        assert reader.message() == b""


def test_long_lines():
    ok = b"x" * 998 + b"\r\n"
    reader = DataReader(100_000)
    assert reader.feed(ok + b".\r\n") == len(ok) + 3
    assert reader.error is None
    # 999 + CRLF = 1001 octets: refused, in any chunking, without losing the end.
    wire = b"a\r\n" + b"y" * 999 + b"\r\n" + b".\r\n"
    for cut in range(0, len(wire), 97):
        reader = DataReader(100_000)
        assert feed_in_pieces(wire, [cut], reader) == len(wire)
        assert reader.error is DataError.LINE_TOO_LONG


@pytest.mark.parametrize("max_line", [6, 1000])
def test_line_limit_is_exact_wherever_long_lines_fall(max_line):
    """
    RFC 5321 §4.5.3.1.6: a message is refused iff some line has more than
    max_line octets with its CRLF, whatever the lengths around it (the check
    skips over runs of lines, so test it against the plain definition).
    """
    sizes = [0, 1, max_line // 2, max_line - 3, max_line - 2, max_line - 1, max_line, 2 * max_line]
    layouts = [[a] for a in sizes]
    layouts += [[a, b] for a in sizes for b in sizes]
    layouts += [[a, b, c] for a in sizes for b in sizes for c in sizes[::2]]
    layouts += [[1] * max_line + [a] for a in sizes]
    for lengths in layouts:
        text = b"".join(b"x" * n + b"\r\n" for n in lengths)
        expected = DataError.LINE_TOO_LONG if max(lengths) > max_line - 2 else None
        reader = DataReader(10**6, max_line)
        assert reader.feed(text + b".\r\n") == len(text) + 3
        assert reader.error is expected, lengths
        chunks = ChunkCollector(10**6, max_line)
        chunks.add(text)
        chunks.finish()
        assert chunks.error is expected, lengths


def test_a_huge_line_is_not_buffered():
    reader = DataReader(10**9)
    for _ in range(100):
        assert reader.feed(b"z" * 65536) is None
    assert len(reader._carry) <= 1
    assert reader.feed(b"\r\n.\r\n") == 5
    assert reader.error is DataError.LINE_TOO_LONG


def test_a_long_line_ending_in_cr_then_end():
    reader = DataReader(10_000)
    assert reader.feed(b"q" * 2000 + b"\r") is None
    assert reader.feed(b"\n.\r\n") == 4
    assert reader.error is DataError.LINE_TOO_LONG


def test_size_limit_counts_unstuffed_octets_and_keeps_reading():
    reader = DataReader(10)
    assert reader.feed(b"..........\r\n") is None  # 11 octets after unstuffing + CRLF
    assert reader.error is DataError.TOO_BIG
    assert reader.feed(b"more\r\n.\r\n") == 9


def test_chunks_check_lines_too():
    chunks = ChunkCollector(100)
    chunks.add(b"a\nb\r\n")
    assert chunks.finish() == b""
    assert chunks.error is DataError.BARE_NEWLINE
    chunks = ChunkCollector(100)
    chunks.add(b"a\r\n")
    chunks.add(b"b")
    assert chunks.finish() == b"a\r\nb"


# --- through the session ---------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_dot_stuffing_round_trip(world):
    c = world.client()
    c.take()
    await c.lines(*START, "DATA")
    out = await c.send(b"..first\r\n" + STUFFED + b".\r\n")
    assert out.startswith(b"250 ")
    [stored] = await world.inbox(BOB)
    assert body_of(stored) == b".first\r\n" + UNSTUFFED


@pytest_twisted.ensureDeferred
async def test_byte_by_byte_session(world):
    c = world.client()
    c.take()
    wire = (
        b"EHLO x\r\nMAIL FROM:<a@crepes.fr>\r\nRCPT TO:<bob@hamburger.edu>\r\nDATA\r\n"
        b"..\r\n.\r\nNOOP\r\n"
    )
    out = b""
    for i in range(len(wire)):
        out += await c.send(wire[i : i + 1])
    assert out.endswith(b"250 2.0.0 Ok\r\n")
    assert b"250 2.0.0 Ok: queued as " in out
    [stored] = await world.inbox(BOB)
    assert body_of(stored) == b".\r\n"


@pytest_twisted.ensureDeferred
async def test_smuggled_commands_are_not_executed(world):
    c = world.client()
    c.take()
    await c.lines(*START, "DATA")
    out = await c.send(
        b"Subject: x\r\n\r\nhi\n.\nMAIL FROM:<evil@x>\r\nRCPT TO:<bob@hamburger.edu>\r\n"
        b"DATA\r\nsmuggled\r\n.\r\nNOOP\r\n"
    )
    assert out == (
        b"550 5.5.2 Bare CR or LF in message data; lines must end with CRLF "
        b"(RFC 5321 \xc2\xa72.3.8)\r\n250 2.0.0 Ok\r\n"
    )
    assert await world.inbox(BOB) == []


@pytest_twisted.ensureDeferred
async def test_long_data_line_refused_without_leaving_data_mode(memory_world):
    c = memory_world.client()
    c.take()
    await c.lines(*START, "DATA")
    out = await c.send(b"x" * 20000 + b"\r\nRSET\r\nQUIT\r\n.\r\nNOOP\r\n")
    assert out == (
        b"550 5.5.2 Message has a line longer than 1000 octets "
        b"(RFC 5321 \xc2\xa74.5.3.1.6)\r\n250 2.0.0 Ok\r\n"
    )
    assert await memory_world.inbox(BOB) == []


@pytest_twisted.ensureDeferred
async def test_long_command_line_tail_is_not_a_command(memory_world):
    """The twisted.mail injection: the tail of an over-long line must not run."""
    c = memory_world.client()
    c.take()
    out = await c.send(b"NOOP " + b"A" * 5000 + b" QUIT\r\nNOOP\r\n")
    assert out == b"500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n"
    # Longer than the framer holds, arriving in pieces: one 500 at its end.
    for _ in range(10):
        assert await c.send(b"QUIT " * 1000) == b""
    assert await c.send(b"\r\nNOOP\r\n") == b"500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n"
    assert not c.closed


@pytest_twisted.ensureDeferred
async def test_bdat_chunks(world):
    c = world.client()
    c.take()
    await c.lines(*START)
    part1 = b"Subject: chunks\r\n\r\n.a dot line stays\r\n"
    part2 = b"second\r\n.\r\n"
    out = await c.send(
        b"BDAT %d\r\n" % len(part1) + part1 + b"BDAT %d LAST\r\n" % len(part2) + part2
    )
    lines = out.split(b"\r\n")
    assert lines[0] == b"250 2.0.0 %d octets received" % len(part1)
    assert lines[1].startswith(b"250 2.0.0 Ok: queued as ")
    [stored] = await world.inbox(BOB)
    assert body_of(stored) == part1 + part2  # no dot-unstuffing in BDAT


@pytest_twisted.ensureDeferred
async def test_bdat_without_transaction_still_reads_the_chunk(memory_world):
    c = memory_world.client()
    c.take()
    out = await c.send(b"EHLO x\r\nBDAT 6 LAST\r\nQUIT\r\nNOOP\r\n")
    assert out.split(b"\r\n")[-3:] == [b"503 5.5.1 Need MAIL command", b"250 2.0.0 Ok", b""]


@pytest_twisted.ensureDeferred
async def test_bdat_zero_last_and_mixing_with_data(memory_world):
    c = memory_world.client()
    c.take()
    await c.lines(*START)
    out = await c.send(b"BDAT 3\r\nab\nBDAT 0 LAST\r\n")
    assert out.split(b"\r\n")[1].startswith(b"550 5.5.2 Bare CR or LF")
    await c.lines("MAIL FROM:<a@b.c>", "RCPT TO:<bob@hamburger.edu>")
    out = await c.send(b"BDAT 4\r\nab\r\nDATA\r\n")
    assert out.split(b"\r\n")[1] == b"503 5.5.1 Cannot mix DATA and BDAT"


@pytest_twisted.ensureDeferred
async def test_bdat_over_size(memory_world):
    from twistedmail.smtp.server import SmtpSettings

    c = memory_world.client(memory_world.factory(settings=SmtpSettings(max_message_size=10)))
    c.take()
    await c.lines(*START)
    out = await c.send(b"BDAT 20\r\n" + b"x" * 20 + b"BDAT 2 LAST\r\nxx")
    assert out.split(b"\r\n")[:2] == [
        b"552 5.3.4 Message size exceeds fixed maximum message size",
        b"503 5.5.1 Need MAIL command",
    ]
