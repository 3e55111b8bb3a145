"""
MX logic (RFC 5321 §5.1, RFC 7505) against a real twisted.names server on
127.0.0.1, and the static-route / smart-host choices.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.names import dns

from tests.outbound.dnsserver import start  # type: ignore[import-not-found]
from twistedmail.outbound.mx import Hop, Router, RoutingError, SmartHost, make_resolver, resolve_mx
from twistedmail.smtp.client import TLSPolicy

RECORDS: dict[bytes, list[Any]] = {
    b"hamburger.test": [
        dns.Record_MX(10, b"mx1.hamburger.test"),
        dns.Record_MX(10, b"mx2.hamburger.test"),
        dns.Record_MX(20, b"backup.hamburger.test"),
    ],
    b"mx1.hamburger.test": [dns.Record_A("127.0.0.1")],
    b"mx2.hamburger.test": [dns.Record_A("127.0.0.2")],
    b"backup.hamburger.test": [dns.Record_A("127.0.0.3"), dns.Record_AAAA("::1")],
    b"implicit.test": [dns.Record_A("127.0.0.4"), dns.Record_AAAA("::4")],
    b"nullmx.test": [dns.Record_MX(0, b"")],
    b"noaddr.test": [dns.Record_MX(10, b"nothing.noaddr.test"), dns.Record_TXT(b"x")],
    b"nothing.noaddr.test": [dns.Record_TXT(b"no address here")],
}


@pytest.fixture
def dns_server():
    from twisted.internet import reactor

    port, resolver = pytest_twisted.blockon(
        Deferred.fromCoroutine(start(reactor, b"test", RECORDS))
    )
    yield resolver
    pytest_twisted.blockon(defer.maybeDeferred(port.stopListening))


@pytest_twisted.ensureDeferred
async def test_preference_order_and_addresses(dns_server):
    hops = await resolve_mx(dns_server, "hamburger.test", 2525, random.Random(1))
    hosts = [h.host for h in hops]
    assert set(hosts[:2]) == {"mx1.hamburger.test", "mx2.hamburger.test"}
    assert hops[2:] == (
        Hop("backup.hamburger.test", "127.0.0.3", 2525),
        Hop("backup.hamburger.test", "::1", 2525),
    )
    assert {h.address for h in hops[:2]} == {"127.0.0.1", "127.0.0.2"}


@pytest_twisted.ensureDeferred
async def test_equal_preferences_are_shuffled(dns_server):
    firsts = set()
    for seed in range(12):
        hops = await resolve_mx(dns_server, "hamburger.test", rng=random.Random(seed))
        firsts.add(hops[0].host)
        assert hops[-1].host == "backup.hamburger.test"
    assert firsts == {"mx1.hamburger.test", "mx2.hamburger.test"}


@pytest_twisted.ensureDeferred
async def test_no_mx_means_the_domain_itself(dns_server):
    """RFC 5321 §5.1: the implicit MX, at A and AAAA."""
    hops = await resolve_mx(dns_server, "implicit.test")
    assert hops == (Hop("implicit.test", "127.0.0.4"), Hop("implicit.test", "::4"))


@pytest_twisted.ensureDeferred
async def test_null_mx_is_a_permanent_failure(dns_server):
    """RFC 7505 §4.2: 556 5.1.10, no connection attempt."""
    with pytest.raises(RoutingError) as caught:
        await resolve_mx(dns_server, "nullmx.test")
    assert caught.value.permanent and caught.value.reply.enhanced == "5.1.10"


@pytest_twisted.ensureDeferred
async def test_nxdomain_is_permanent(dns_server):
    with pytest.raises(RoutingError) as caught:
        await resolve_mx(dns_server, "nonexistent.test")
    assert caught.value.permanent and caught.value.reply.enhanced == "5.1.2"


@pytest_twisted.ensureDeferred
async def test_exchanger_without_address_is_temporary(dns_server):
    with pytest.raises(RoutingError) as caught:
        await resolve_mx(dns_server, "noaddr.test")
    assert not caught.value.permanent and caught.value.reply.enhanced == "4.4.3"


@pytest_twisted.ensureDeferred
async def test_dns_server_down_is_temporary():
    from twisted.internet import reactor
    from twisted.internet.protocol import DatagramProtocol

    udp: Any = reactor
    port = udp.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")  # never answers
    number = port.getHost().port
    resolver = make_resolver([f"127.0.0.1:{number}"], reactor)
    resolver.timeout = (0.05,)
    try:
        with pytest.raises(RoutingError) as caught:
            await resolve_mx(resolver, "hamburger.test")
    finally:
        await port.stopListening()
    assert not caught.value.permanent


@pytest_twisted.ensureDeferred
async def test_address_literal_needs_no_dns():
    hops = await resolve_mx(None, "[127.0.0.9]", 2525)
    assert hops == (Hop("[127.0.0.9]", "127.0.0.9", 2525),)
    hops = await resolve_mx(None, "[IPv6:::1]")
    assert hops[0].address == "::1"


@pytest_twisted.ensureDeferred
async def test_static_route_then_smart_host_then_mx(dns_server):
    router = Router(dns_server, {"Crepes.FR": "tcp:127.0.0.1:2626"}, port=2525)
    route = await router.route("crepes.fr")
    assert route.hops == (Hop("crepes.fr", endpoint="tcp:127.0.0.1:2626"),)
    route = await router.route("implicit.test")
    assert route.key == "mx:implicit.test" and route.hops[0].port == 2525
    smart = SmartHost.parse("127.0.0.1:587", username="u", password="p", require_tls=True)
    router = Router(dns_server, {"crepes.fr": "tcp:127.0.0.1:2626"}, smart)
    route = await router.route("implicit.test")
    assert route.hops == (Hop("127.0.0.1", "127.0.0.1", 587),)
    assert route.tls is TLSPolicy.REQUIRED and route.username == "u"
    assert (await router.route("crepes.fr")).key == "route:tcp:127.0.0.1:2626"


def test_smart_host_parsing():
    assert SmartHost.parse("relay.example") == SmartHost("relay.example", 25)
    assert SmartHost.parse("[::1]:2525") == SmartHost("::1", 2525)
    assert SmartHost.parse("relay.example:587").port == 587
    relay = SmartHost.parse("tcp:smtp.example.net:587", username="u")
    assert (relay.host, relay.port, relay.endpoint) == (
        "smtp.example.net",
        587,
        "tcp:smtp.example.net:587",
    )
    relay = SmartHost.parse("tcp:host=127.0.0.1:port=2525:timeout=5")
    assert (relay.host, relay.port) == ("127.0.0.1", 2525)


def test_nameserver_forms():
    from twisted.internet import reactor

    resolver = make_resolver(
        ["192.0.2.53", "127.0.0.1:5353", "[::1]:5300", "2001:db8::53"], reactor
    )
    assert resolver.servers == [
        ("192.0.2.53", 53),
        ("127.0.0.1", 5353),
        ("::1", 5300),
        ("2001:db8::53", 53),
    ]
