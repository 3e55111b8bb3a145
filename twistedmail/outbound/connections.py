"""
Open SMTP connections kept for the next message to the same host.

A new connection costs a TCP handshake, a greeting, EHLO twice and a TLS
handshake; a queue full of mail for one destination would pay that per
message.  Like Postfix's ``scache``, a connection that ended its
transaction cleanly waits here a short time (``cache_time``) for the next
message to the same host with the same TLS and AUTH settings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger

from twistedmail.outbound.mx import Hop
from twistedmail.smtp.client import (
    ClientOptions,
    SMTPClientError,
    SMTPConnection,
    TLSPolicy,
    Transaction,
    TransactionResult,
)

log = Logger()


def _key(hop: Hop, options: ClientOptions) -> str:
    return f"{hop}|{options.tls.value}|{options.username or ''}"


class ConnectionCache:
    """
    :param connect: makes an endpoint for a hop.
    :param cache_time: seconds an idle connection is kept (0: never).
    :param reuse_limit: transactions after which a connection is closed.
    """

    def __init__(
        self,
        clock: IReactorTime,
        connect: Callable[[Hop], IStreamClientEndpoint],
        cache_time: float = 2.0,
        reuse_limit: int = 100,
    ) -> None:
        self.clock = clock
        self.connect = connect
        self.cache_time = cache_time
        self.reuse_limit = reuse_limit
        self._idle: dict[str, list[tuple[SMTPConnection, IDelayedCall]]] = {}
        self.closed = False

    async def open(self, hop: Hop, options: ClientOptions) -> SMTPConnection:
        """
        A new connection.  Opportunistic TLS that fails to negotiate is
        retried in plain text (RFC 7435 §6: no worse than no TLS at all).

        :raises SMTPClientError:
        """
        try:
            return await SMTPConnection.open(self.connect(hop), self.clock, options)
        except SMTPClientError as err:
            if err.stage != "TLS" or options.tls is not TLSPolicy.OPPORTUNISTIC:
                raise
            log.info("TLS with {hop} failed; trying without", hop=str(hop))
            plain = replace(options, tls=TLSPolicy.NEVER)
            return await SMTPConnection.open(self.connect(hop), self.clock, plain)

    def _take(self, hop: Hop, options: ClientOptions) -> SMTPConnection | None:
        key = _key(hop, options)
        idle = self._idle.get(key, [])
        while idle:
            connection, timer = idle.pop()
            if timer.active():
                timer.cancel()
            if connection.usable:
                return connection
        self._idle.pop(key, None)
        return None

    async def deliver(
        self, hop: Hop, options: ClientOptions, txn: Transaction
    ) -> TransactionResult:
        """
        One transaction over an idle connection to ``hop`` if there is one,
        a new one otherwise; the connection then goes back to the cache.

        :raises SMTPClientError:
        """
        connection = self._take(hop, options)
        if connection is not None:
            try:
                result = await connection.send(txn)
            except SMTPClientError as err:
                if err.stage != "RSET":
                    raise
                connection = None  # it died while idle; nothing was sent yet
            else:
                self.release(hop, options, connection)
                return result
        connection = await self.open(hop, options)
        result = await connection.send(txn)
        self.release(hop, options, connection)
        return result

    def release(self, hop: Hop, options: ClientOptions, connection: SMTPConnection) -> None:
        """Keep ``connection`` for the next message, or say goodbye."""
        if (
            self.closed
            or self.cache_time <= 0
            or not connection.usable
            or connection.transactions >= self.reuse_limit
        ):
            self._quit(connection)
            return
        key = _key(hop, options)
        timer = self.clock.callLater(self.cache_time, self._expire, key, connection)
        self._idle.setdefault(key, []).append((connection, timer))

    def _expire(self, key: str, connection: SMTPConnection) -> None:
        idle = self._idle.get(key, [])
        self._idle[key] = [(c, t) for c, t in idle if c is not connection]
        if not self._idle[key]:
            del self._idle[key]
        self._quit(connection)

    def _quit(self, connection: SMTPConnection) -> None:
        Deferred.fromCoroutine(connection.quit()).addErrback(
            lambda f: log.failure("QUIT failed", f)
        )

    def close(self) -> None:
        """Close every idle connection (the runner is stopping)."""
        self.closed = True
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection, timer in connections:
                if timer.active():
                    timer.cancel()
                self._quit(connection)
