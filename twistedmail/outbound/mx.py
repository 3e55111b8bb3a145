"""
Where mail for a domain goes: a static route, the smart host, or the
domain's mail exchangers.

MX lookup follows RFC 5321 §5.1: exchangers in preference order, shuffled
among equals, each tried at every A and AAAA address; no MX means the domain
itself is the (implicit) exchanger; RFC 7505's null MX means the domain takes
no mail at all, a permanent failure.  DNS comes from ``twisted.names``; tests
point the resolver at a local ``twisted.names`` server.
"""

from __future__ import annotations

import ipaddress
import random
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.names import client, dns, hosts, resolve
from twisted.names.error import AuthoritativeDomainError, DNSNameError

from twistedmail.smtp.client import Reply, TLSPolicy

log = Logger()

SMTP_PORT = 25


@dataclass(frozen=True, slots=True)
class Hop:
    """
    One thing to connect to.  ``host`` names it (logs, TLS SNI, the DSN's
    Remote-MTA); ``address`` is an IP to dial, or None to let the endpoint
    resolve ``host`` (smart host); ``endpoint`` is a Twisted client endpoint
    string from a static route and overrides both.
    """

    host: str
    address: str | None = None
    port: int = SMTP_PORT
    endpoint: str | None = None

    def __str__(self) -> str:
        if self.endpoint:
            return self.endpoint
        return f"{self.host}[{self.address or '?'}]:{self.port}"


@dataclass(frozen=True, slots=True)
class Route:
    """
    How to reach one destination.  ``key`` groups recipients into one SMTP
    session and counts towards the per-destination concurrency limit.
    """

    key: str
    hops: tuple[Hop, ...]
    tls: TLSPolicy = TLSPolicy.OPPORTUNISTIC
    username: str | None = None
    password: str | None = field(default=None, repr=False)


_ENDPOINT_TYPES = frozenset({"tcp", "tcp6", "tls", "ssl", "unix", "host"})


@dataclass(frozen=True, slots=True)
class SmartHost:
    """
    Every non-local message goes here (``relay_host``), with AUTH if given.
    ``endpoint`` is set when the relay was given as a client endpoint string.
    """

    host: str
    port: int = SMTP_PORT
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    require_tls: bool = False
    endpoint: str | None = None

    @classmethod
    def parse(cls, text: str, **kw: Any) -> SmartHost:
        """``tcp:host:port`` (a client endpoint), ``host``, ``host:port``, ``[v6]:port``."""
        text = text.strip()
        kind, _, rest = text.partition(":")
        if rest and kind.lower() in _ENDPOINT_TYPES:
            positional = []
            keywords = {}
            for part in rest.split(":"):
                key, eq, value = part.partition("=")
                if eq:
                    keywords[key] = value
                else:
                    positional.append(part)
            host = keywords.get("host") or (positional[0] if positional else "localhost")
            port = keywords.get("port") or (positional[1] if len(positional) > 1 else "")
            number = int(port) if port.isdigit() else SMTP_PORT
            return cls(host, number, endpoint=text, **kw)
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port = rest.lstrip(":")
        elif text.count(":") == 1:
            host, _, port = text.partition(":")
        else:
            host, port = text, ""
        return cls(host, int(port) if port else SMTP_PORT, **kw)


class RoutingError(Exception):
    """No route now (temporary) or ever (permanent, e.g. null MX)."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply

    @property
    def permanent(self) -> bool:
        return self.reply.permanent


def make_resolver(nameservers: Sequence[str], reactor: IReactorTime) -> Any:
    """
    A ``twisted.names`` resolver: the given servers (``ip``, ``ip:port`` or
    ``[ipv6]:port``),
    or ``/etc/hosts`` then ``/etc/resolv.conf`` when none are configured.
    """
    if nameservers:
        servers = []
        for server in nameservers:
            host, port = server, 53
            if server.startswith("["):  # [v6]:port
                host, _, rest = server[1:].partition("]")
                port = int(rest.lstrip(":") or 53)
            elif server.count(":") == 1:  # v4:port (a bare v6 has several colons)
                host, _, number = server.partition(":")
                port = int(number)
            servers.append((host, port))
        return client.Resolver(servers=servers, reactor=reactor)  # type: ignore[no-untyped-call]
    system = client.Resolver(resolv="/etc/resolv.conf", reactor=reactor)  # type: ignore[no-untyped-call]
    local = hosts.Resolver(b"/etc/hosts")  # type: ignore[no-untyped-call]
    return resolve.ResolverChain([local, system])  # type: ignore[no-untyped-call]


def _ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _address_literal(domain: str) -> str | None:
    """RFC 5321 §4.1.3: ``[192.0.2.1]`` or ``[IPv6:2001:db8::1]``."""
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    inner = domain[1:-1]
    if inner.lower().startswith("ipv6:"):
        inner = inner[5:]
    return _ip(inner)


def _name(value: Any) -> str:
    return str(value).rstrip(".").lower()


async def _addresses(resolver: Any, host: str) -> list[str]:
    """A then AAAA addresses of ``host``; lookups that fail count as none."""
    results = await defer.DeferredList(
        [resolver.lookupAddress(host), resolver.lookupIPV6Address(host)], consumeErrors=True
    )
    out: list[str] = []
    for success, value in results:
        if not success:
            continue
        for record in value[0]:
            if record.type == dns.A:
                out.append(record.payload.dottedQuad())
            elif record.type == dns.AAAA:
                out.append(socket.inet_ntop(socket.AF_INET6, record.payload.address))
    return out


async def resolve_mx(
    resolver: Any, domain: str, port: int = SMTP_PORT, rng: random.Random | None = None
) -> tuple[Hop, ...]:
    """
    The hops for ``domain`` in the order to try them.

    :raises RoutingError: permanent for a domain that does not exist
        (NXDOMAIN) or has a null MX (RFC 7505 §4.2, ``556 5.1.10``);
        temporary when DNS fails or no exchanger has an address.
    """
    rng = rng or random.Random()
    literal = _address_literal(domain)
    if literal is not None:
        return (Hop(domain, literal, port),)
    try:
        answers, _, _ = await resolver.lookupMailExchange(domain)
    except (DNSNameError, AuthoritativeDomainError) as err:
        # NXDOMAIN: the domain does not exist and never will for this message.
        reply = Reply.synthetic(550, "5.1.2", f"domain {domain} does not exist")
        raise RoutingError(reply) from err
    except Exception as err:  # SERVFAIL, timeouts, refused: try again later
        reply = Reply.synthetic(451, "4.4.3", f"DNS lookup for {domain} failed")
        raise RoutingError(reply) from err
    records = [a.payload for a in answers if a.type == dns.MX]
    exchangers = [(r.preference, _name(r.name)) for r in records if _name(r.name)]
    if records and not exchangers:
        # RFC 7505 §3: a lone MX of "." says the domain accepts no mail.
        raise RoutingError(
            Reply.synthetic(556, "5.1.10", f"domain {domain} accepts no mail (null MX)")
        )
    if not exchangers:
        exchangers = [(0, domain.lower())]  # RFC 5321 §5.1: the implicit MX
    # Preference order; equals shuffled so load spreads (RFC 5321 §5.1).
    keyed = [(pref, rng.random(), host) for pref, host in exchangers]
    keyed.sort()
    hops: list[Hop] = []
    for _, _, host in keyed:
        for address in await _addresses(resolver, host):
            hops.append(Hop(host, address, port))
    if not hops:
        raise RoutingError(
            Reply.synthetic(451, "4.4.3", f"no address for any mail exchanger of {domain}")
        )
    return tuple(hops)


class Router:
    """Static routes first, then the smart host, then MX (RFC 5321 §5.1)."""

    def __init__(
        self,
        resolver: Any,
        routes: Mapping[str, str] | None = None,
        smart_host: SmartHost | None = None,
        port: int = SMTP_PORT,
        rng: random.Random | None = None,
    ) -> None:
        self.resolver = resolver
        self.routes = {k.lower(): v for k, v in (routes or {}).items()}
        self.smart_host = smart_host
        self.port = port
        self.rng = rng or random.Random()

    async def route(self, domain: str) -> Route:
        """:raises RoutingError:"""
        domain = domain.lower()
        endpoint = self.routes.get(domain)
        if endpoint is not None:
            return Route(f"route:{endpoint}", (Hop(domain, endpoint=endpoint),))
        smart = self.smart_host
        if smart is not None:
            hop = Hop(smart.host, _ip(smart.host), smart.port, smart.endpoint)
            tls = TLSPolicy.REQUIRED if smart.require_tls else TLSPolicy.OPPORTUNISTIC
            return Route(
                f"relay:{smart.host}:{smart.port}", (hop,), tls, smart.username, smart.password
            )
        hops = await resolve_mx(self.resolver, domain, self.port, self.rng)
        return Route(f"mx:{domain}", hops)
