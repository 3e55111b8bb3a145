"""
The wire level of our SMTP client: reply parsing, timeouts and flow control
(`SMTPClientProtocol`), and the DATA stream (`DotStuffer`), with no SMTP
logic; `twistedmail.smtp.client` holds the conversation.  Split from it to
keep each module to one job; everything here is re-exported there.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

#: Bytes of the message handed to the transport at once while streaming DATA.
CHUNK_SIZE = 64 * 1024

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?: |$)")


# --- Replies ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """One (possibly multi-line) SMTP reply; ``enhanced`` is RFC 3463's code."""

    code: int
    lines: tuple[str, ...]
    enhanced: str | None = None

    @property
    def text(self) -> str:
        """The reply text without the enhanced code, lines joined by spaces."""
        return " ".join(_strip_enhanced(line) for line in self.lines).strip()

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 300

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    def __str__(self) -> str:
        enhanced = f" {self.enhanced}" if self.enhanced else ""
        return f"{self.code}{enhanced} {self.text}".rstrip()

    @classmethod
    def synthetic(cls, code: int, enhanced: str, text: str) -> Reply:
        """A reply we make up ourselves (timeouts, refused connections)."""
        return cls(code, (f"{enhanced} {text}",), enhanced)


def _strip_enhanced(line: str) -> str:
    match = _ENHANCED.match(line)
    return line[match.end() :] if match else line


# --- Dot-stuffing ----------------------------------------------------------------


class DotStuffer:
    """
    Turn message bytes into the DATA stream, whatever the chunking.

    RFC 5321 §4.5.2: every line starting with ``.`` gets one more ``.``,
    including the first line.  Bare CR and bare LF become CRLF (§2.3.8) so
    the receiver can never see an end-of-data other than ours (SMTP
    smuggling); a proper CRLF message passes unchanged apart from stuffing.
    A CR at the end of one chunk is held back until the next chunk says
    whether an LF follows.
    """

    def __init__(self) -> None:
        self._at_line_start = True
        self._held_cr = False

    def feed(self, data: bytes) -> bytes:
        if self._held_cr:
            data = b"\r" + data
            self._held_cr = False
        if data.endswith(b"\r"):
            data = data[:-1]
            self._held_cr = True
        if not data:
            return b""
        text = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        text = text.replace(b"\n.", b"\n..")
        if self._at_line_start and text.startswith(b"."):
            text = b"." + text
        self._at_line_start = text.endswith(b"\n")
        return text.replace(b"\n", b"\r\n")

    def finish(self) -> bytes:
        """The end of the stream: a last CRLF if missing, then ``.CRLF``."""
        tail = b""
        if self._held_cr:
            self._held_cr = False
            tail = b"\r\n"
        elif not self._at_line_start:
            tail = b"\r\n"
        self._at_line_start = True
        return tail + b".\r\n"


def stuff(message: bytes, chunk_size: int = CHUNK_SIZE) -> Iterable[bytes]:
    """The DATA stream of ``message`` (terminator included), in pieces."""
    stuffer = DotStuffer()
    for start in range(0, len(message), chunk_size):
        piece = stuffer.feed(message[start : start + chunk_size])
        if piece:
            yield piece
    yield stuffer.finish()


def xtext(value: str) -> str:
    """RFC 3461 §4 xtext: ``+XX`` for ``+``, ``=``, controls and non-ASCII."""
    out = []
    for byte in value.encode("utf-8"):
        if 33 <= byte <= 126 and byte not in (ord("+"), ord("=")):
            out.append(chr(byte))
        else:
            out.append(f"+{byte:02X}")
    return "".join(out)


# --- The line protocol -------------------------------------------------------------


class ProtocolViolation(Exception):
    """The server sent something that is not an SMTP reply."""


@implementer(IPushProducer)
class SMTPClientProtocol(Protocol):
    """
    Reply parsing, timeouts and flow control; no SMTP logic.

    Replies queue up in order (pipelining) and `next_reply` hands them out.
    Every wait has a timeout on ``clock``; when it expires the connection is
    aborted and every waiter fails.
    """

    MAX_LINE = 4096

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._buffer = b""
        self._lines: list[str] = []
        self._replies: deque[Reply] = deque()
        self._waiters: deque[Deferred[Reply]] = deque()
        self._timer: IDelayedCall | None = None
        self._failure: Exception | None = None
        self._paused = False
        self._drained: Deferred[None] | None = None
        self._starttls_pending = False

    # Protocol

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while self._failure is None:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > self.MAX_LINE:
                    self._violation("reply line too long")
                return
            line, self._buffer = self._buffer[:end], self._buffer[end + 1 :]
            if len(line) > self.MAX_LINE:
                self._violation("reply line too long")
                return
            self._line_received(line.rstrip(b"\r").decode("utf-8", "replace"))

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._cancel_timer()
        if self._failure is None:
            self._failure = ConnectionError("connection lost")
        self._fail_waiters()

    # IPushProducer: the transport tells us when its buffer is full or drained.

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        if self._drained is not None:
            drained, self._drained = self._drained, None
            self._cancel_timer()
            drained.callback(None)

    def stopProducing(self) -> None:
        self._paused = True

    # API used by the session

    def send(self, *lines: bytes) -> None:
        """Write command lines (several at once when pipelining)."""
        self.transport.writeSequence([part for line in lines for part in (line, b"\r\n")])  # type: ignore[union-attr]

    def expect_starttls(self) -> None:
        """The next reply ends plain text: refuse anything sent after it (CVE-2011-0411)."""
        self._starttls_pending = True

    def next_reply(self, timeout: float, stage: str) -> Deferred[Reply]:
        if self._replies:
            return defer.succeed(self._replies.popleft())
        if self._failure is not None:
            return defer.fail(self._failure)
        waiter: Deferred[Reply] = Deferred()
        self._waiters.append(waiter)
        self._arm(timeout, f"no reply to {stage} in {timeout:g} s")
        return waiter

    async def write_body(self, chunks: Iterable[bytes], limit: float) -> None:
        """
        Stream DATA with flow control; RFC 5321 §4.5.3.2.5: fail when the
        transport makes no progress for ``timeout`` seconds.
        """
        transport = self.transport
        assert transport is not None
        transport.registerProducer(self, True)  # type: ignore[attr-defined]
        try:
            for chunk in chunks:
                if self._failure is not None:
                    raise self._failure
                transport.write(chunk)
                if self._paused:
                    self._drained = Deferred()
                    self._arm(limit, f"data block not sent in {limit:g} s")
                    await self._drained
        finally:
            if self._failure is None:
                transport.unregisterProducer()  # type: ignore[attr-defined]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    # internals

    def _line_received(self, line: str) -> None:
        if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in ("", " ", "-"):
            self._violation(f"not an SMTP reply: {line[:40]!r}")
            return
        self._lines.append(line)
        if line[3:4] == "-":
            return
        code = int(line[:3])
        texts = tuple(part[4:] for part in self._lines)
        self._lines = []
        match = _ENHANCED.match(texts[0])
        enhanced = None
        if match and match.group(1) == str(code)[0]:
            enhanced = ".".join(match.groups())
        reply = Reply(code, texts, enhanced)
        if self._starttls_pending:
            self._starttls_pending = False
            if self._buffer:
                self._violation("data after the STARTTLS reply")
                return
        if self._waiters:
            self._cancel_timer()
            self._waiters.popleft().callback(reply)
        else:
            self._replies.append(reply)

    def _arm(self, timeout: float, why: str) -> None:
        self._cancel_timer()
        self._timer = self.clock.callLater(timeout, self._expired, why)

    def _expired(self, why: str) -> None:
        self._timer = None
        self._failure = TimeoutError(why)
        self._fail_waiters()
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def _violation(self, why: str) -> None:
        self._failure = ProtocolViolation(why)
        self._fail_waiters()
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _fail_waiters(self) -> None:
        assert self._failure is not None
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            waiter.errback(self._failure)
        if self._drained is not None:
            drained, self._drained = self._drained, None
            drained.errback(self._failure)
