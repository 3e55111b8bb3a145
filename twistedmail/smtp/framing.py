"""
Splitting the SMTP byte stream into command lines, DATA and BDAT payloads.

Why not `twisted.protocols.basic.LineReceiver`: its ``lineLengthExceeded``
drops the buffer and leaves the read loop, so the tail of an over-long line
would later be parsed as a command (the injection described in
``notes/twisted-mail.md``), and its per-line ``split`` copies the whole
buffer, quadratic in a deep pipeline.  This small framer has exactly the
modes SMTP needs:

* LINE: lines end with LF (a CR before it is stripped; the DATA reader, not
  this, is strict about CRLF).  A line longer than ``max_line`` is skipped up
  to its end and reported once, never split into commands.
* DATA: bytes go to a `DataReader` until it reports the end.
* CHUNK: exactly N octets go to `chunk_data` (BDAT, RFC 3030).

Input processing can be paused while a command's answer is pending, so
replies stay in command order under PIPELINING (RFC 2920 §3): buffered
commands wait, and the transport stops reading meanwhile.  Unless input is
already buffered, it stops only once more input actually arrives: a client
that waits for the answer (most do, after DATA's end) then costs no two
epoll changes per delivery.

Replies are written at once rather than on the reactor's next turn when the
transport is plain TCP (`flush_output`): each SMTP round trip then takes one
reactor turn instead of two.
"""

from __future__ import annotations

import enum
from typing import Any

from twisted.internet.protocol import Protocol

from twistedmail.smtp.data import DataReader


class Mode(enum.Enum):
    LINE = "line"
    DISCARD = "discard"  # inside an over-long line, waiting for its LF
    DATA = "data"
    CHUNK = "chunk"


class FramedProtocol(Protocol):
    """Base of the SMTP session: override the four ``*_received``/``*_finished`` hooks."""

    #: The longest line the framer passes on (RFC 4954 §4: 12288 for AUTH).
    max_line = 12288

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0
        self._mode = Mode.LINE
        self._input_paused = False
        self._transport_paused = False
        self._running = False
        #: Write replies at once (set for plain TCP transports; see `flush_output`).
        self.flush_writes = False
        self._unsent = False
        self._stopped = False
        self._reader: DataReader | None = None
        self._chunk_left = 0

    # --- hooks ------------------------------------------------------------------

    def line_received(self, line: bytes) -> None:
        raise NotImplementedError

    def line_too_long(self) -> None:
        raise NotImplementedError

    def data_finished(self, reader: DataReader) -> None:
        raise NotImplementedError

    def chunk_data(self, data: bytes) -> None:
        raise NotImplementedError

    def chunk_finished(self) -> None:
        raise NotImplementedError

    # --- control, for the hooks --------------------------------------------------

    def start_data(self, reader: DataReader) -> None:
        """Send what follows the current line to ``reader`` until its end."""
        self._reader = reader
        self._mode = Mode.DATA

    def start_chunk(self, size: int) -> None:
        """Send the next ``size`` octets to `chunk_data`."""
        self._chunk_left = size
        self._mode = Mode.CHUNK
        if size == 0:
            self._mode = Mode.LINE
            self.chunk_finished()

    def pause_input(self) -> None:
        """Hold further input (buffered and unread) until `resume_input`."""
        self._input_paused = True
        if self._pos < len(self._buf):
            self._pause_transport()  # a pipelining client: more is on its way

    def _pause_transport(self) -> None:
        if not self._transport_paused and self.transport is not None:
            self._transport_paused = True
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def resume_input(self) -> None:
        if self._input_paused:
            self._input_paused = False
            if self._transport_paused:
                self._transport_paused = False
                if self.transport is not None and not self._stopped:
                    self.transport.resumeProducing()  # type: ignore[attr-defined]
            self._process()

    def send(self, data: bytes) -> None:
        """Write ``data`` to the client (at once when possible, see `flush_output`)."""
        assert self.transport is not None
        self.transport.write(data)
        self._unsent = True
        self.flush_output()

    def flush_output(self) -> None:
        """
        Send what was written now instead of on the reactor's next turn.

        Twisted's TCP transport queues a write until epoll says the socket
        is writable, so every reply costs a second reactor turn and delays
        the client's next command; sending at once is what asyncio does.
        Inside the input loop this runs once, after everything buffered is
        answered, so pipelined replies still leave in one segment.
        """
        transport: Any = self.transport
        if self._running or not self._unsent or not self.flush_writes or transport is None:
            return
        self._unsent = False
        if transport.connected and not transport.disconnecting:
            # An error comes back as a value and stays for the reactor,
            # which sees it again on its own doWrite and closes properly.
            transport.doWrite()

    def discard_input(self) -> None:
        """Forget everything buffered after the current line (STARTTLS, RFC 3207 §5)."""
        self._buf = b""
        self._pos = 0

    def stop_input(self) -> None:
        """Process nothing more (after QUIT or a 421)."""
        self._stopped = True
        self.discard_input()

    # --- the loop -------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._stopped:
            return
        self._buf = self._buf[self._pos :] + data if self._pos else self._buf + data
        self._pos = 0
        if self._input_paused:
            self._pause_transport()  # keep this, read no more until the answer is out
            return
        self._process()

    def _process(self) -> None:
        if self._running:
            return  # the loop below is on the stack and will see the change
        self._running = True
        try:
            while self._pos < len(self._buf) and not self._input_paused and not self._stopped:
                if not self._step():
                    break
            self._buf = self._buf[self._pos :]
            self._pos = 0
        finally:
            self._running = False
        self.flush_output()

    def _step(self) -> bool:
        """Handle what the buffer holds in the current mode; False: need more input."""
        buf, pos = self._buf, self._pos
        mode = self._mode
        if mode is Mode.LINE:
            i = buf.find(b"\n", pos)
            if i < 0:
                if len(buf) - pos > self.max_line:
                    self._mode = Mode.DISCARD
                    self._pos = len(buf)
                return False
            line = buf[pos:i]
            self._pos = i + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > self.max_line:
                self.line_too_long()
            else:
                self.line_received(line)
            return True
        elif mode is Mode.DISCARD:
            i = buf.find(b"\n", pos)
            if i < 0:
                self._pos = len(buf)
                return False
            self._pos = i + 1
            self._mode = Mode.LINE
            self.line_too_long()
            return True
        elif mode is Mode.DATA:
            assert self._reader is not None
            used = self._reader.feed(buf[pos:] if pos else buf)
            if used is None:
                self._pos = len(buf)
                return False
            self._pos = pos + used
            reader, self._reader = self._reader, None
            self._mode = Mode.LINE
            self.data_finished(reader)
            return True
        else:
            take = min(self._chunk_left, len(buf) - pos)
            self._pos = pos + take
            self._chunk_left -= take
            self.chunk_data(buf[pos : pos + take])
            if self._chunk_left == 0:
                self._mode = Mode.LINE
                self.chunk_finished()
        return True
