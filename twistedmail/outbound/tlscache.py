"""
TLS client settings made once and reused for every session of a runner.

An OpenSSL context is what costs: for verified TLS, building one loads the
system's CA store (about 7 ms of CPU on the development machine, per
session when made afresh); for opportunistic TLS it is a fraction of that
but still per session.  Nothing in a context depends on the peer except
what we set per connection (SNI, and for verified TLS the name checked), so:

* opportunistic TLS (RFC 7435 §3: encrypt, accept any certificate) shares
  one context for every host, and names the host by SNI per connection;
* verified TLS keeps one set of options per host name, the most recently
  used ``size`` of them (a smart host is one name; a bound keeps a busy MX
  list from growing the cache without end).

The CA store is therefore read once per host name per daemon: trust changes
on disk take effect after a restart (as with Postfix).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from OpenSSL import SSL
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import CertificateOptions
from twisted.protocols.tls import TLSMemoryBIOProtocol
from zope.interface import implementer

from twistedmail.smtp.client import TLSOptionsFactory
from twistedmail.tls import client_tls_options


def _server_name(hostname: str) -> bytes | None:
    """SNI for ``hostname``: none for address literals (RFC 6066 §3) or names DNS cannot carry."""
    if isIPAddress(hostname) or isIPv6Address(hostname):
        return None
    try:
        return hostname.encode("idna")
    except UnicodeError:
        return None


@implementer(IOpenSSLClientConnectionCreator)
class _Opportunistic:
    """Connections from a shared unverifying context, each with its own SNI."""

    def __init__(self, options: CertificateOptions, hostname: str) -> None:
        self._options = options
        self._server_name = _server_name(hostname)

    def clientConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        connection = self._options.clientConnectionForTLS(tlsProtocol)
        if self._server_name is not None:
            connection.set_tlsext_host_name(self._server_name)
        return connection


class TLSOptionsCache:
    """
    A `TLSOptionsFactory` that reuses contexts (see the module docstring).

    :param verified: makes the options for verified TLS to a host name
        (``twistedmail.tls.client_tls_options`` by default; tests hand in one
        that trusts their own CA).
    :param size: how many host names keep their verified options.
    """

    def __init__(self, verified: TLSOptionsFactory = client_tls_options, size: int = 64) -> None:
        self._verified = verified
        self._size = max(size, 1)
        self._by_host: OrderedDict[str, Any] = OrderedDict()
        self._opportunistic = CertificateOptions()  # verify=False is its default
        #: Verified options made (not taken from the cache): for tests and stats.
        self.made = 0

    def __call__(self, hostname: str, verify: bool) -> Any:
        if not verify:
            return _Opportunistic(self._opportunistic, hostname)
        key = hostname.lower()
        options = self._by_host.get(key)
        if options is not None:
            self._by_host.move_to_end(key)
            return options
        options = self._verified(hostname, True)
        self.made += 1
        self._by_host[key] = options
        if len(self._by_host) > self._size:
            self._by_host.popitem(last=False)
        return options
