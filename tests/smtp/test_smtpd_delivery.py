"""
Routing and delivery without any protocol: what SMTP, HTTP send and bounces
share.  Both store backends.
"""

from __future__ import annotations

import pytest
import pytest_twisted  # type: ignore[import-untyped]

from tests.smtp.smtpd_harness import BOB, CAROL, world  # type: ignore[import-not-found]
from twistedmail.delivery import Delivery
from twistedmail.interfaces import NoSuchUser, RelayDenied, TemporaryFailure
from twistedmail.model import Envelope, Recipient
from twistedmail.routing import (
    LocalRoute,
    RemoteRoute,
    Route,
    local_users,
    remote_recipients,
    route,
)

__all__ = ["world"]


def test_routing_decisions(world):
    local = route(world.accounts, Recipient("Team@hamburger.edu"), may_relay=False)
    assert local == LocalRoute(Recipient("Team@hamburger.edu"), (BOB, CAROL))
    with pytest.raises(NoSuchUser):
        route(world.accounts, Recipient("nobody@hamburger.edu"), may_relay=True)
    with pytest.raises(RelayDenied):
        route(world.accounts, Recipient("x@remote.example"), may_relay=False)
    remote = route(world.accounts, Recipient("x@remote.example"), may_relay=True)
    assert remote == RemoteRoute(Recipient("x@remote.example"))
    with pytest.raises(ValueError):
        route(world.accounts, Recipient("not an address"), may_relay=True)
    routes: list[Route] = [local, remote, route(world.accounts, Recipient(BOB), may_relay=False)]
    routes.append(remote)
    assert local_users(routes) == (BOB, CAROL)
    assert remote_recipients(routes) == (Recipient("x@remote.example"),)


@pytest_twisted.ensureDeferred
async def test_delivery_stores_once_per_user_and_queues_once(world):
    delivery = Delivery(world.store, world.outbox)
    recipients = (Recipient(BOB), Recipient("team@hamburger.edu"), Recipient("x@remote.example"))
    routes: list[Route] = [route(world.accounts, r, may_relay=True) for r in recipients]
    envelope = Envelope("alice@hamburger.edu", recipients, ret="FULL")
    done = await delivery.deliver(envelope, b"Subject: s\r\n\r\nbody\r\n", routes)
    assert [user for user, _ in done.stored] == [BOB, CAROL]
    assert done.queue_id == "Q1"
    [(queued_envelope, queued)] = world.outbox.calls
    assert queued_envelope.recipients == (Recipient("x@remote.example"),)
    assert queued_envelope.ret == "FULL"
    assert queued == b"Subject: s\r\n\r\nbody\r\n"
    for user in (BOB, CAROL):
        assert await world.inbox(user) == [
            b"Return-Path: <alice@hamburger.edu>\r\nSubject: s\r\n\r\nbody\r\n"
        ]


@pytest_twisted.ensureDeferred
async def test_remote_without_outbox_is_a_temporary_failure(world):
    delivery = Delivery(world.store, None)
    assert not delivery.can_relay
    routes: list[Route] = [RemoteRoute(Recipient("x@remote.example"))]
    routes.append(LocalRoute(Recipient(BOB), (BOB,)))
    with pytest.raises(TemporaryFailure):
        await delivery.deliver(Envelope("", (Recipient("x@remote.example"),)), b"x\r\n", routes)
    assert await world.inbox(BOB) == []
