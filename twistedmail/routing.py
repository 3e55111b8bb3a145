"""
Where each recipient's mail goes: to local users, or out through the queue.

No I/O and no protocol here: the SMTP server, the HTTP send API and the
outbound bounce path all ask the same question and get the same answer, so
"who is local" and "who may relay" are decided in one place.  The open-relay
rule lives here: a non-local recipient is only ever routed remote when the
caller says the sender may relay (an authenticated user), never because of
the client's address, loopback included.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from twistedmail.interfaces import RelayDenied
from twistedmail.model import Recipient


class Resolver(Protocol):
    """What routing needs of `twistedmail.accounts.Accounts`."""

    def resolve(self, address: str) -> tuple[str, ...]:
        """Users behind a local address; RelayDenied / NoSuchUser / ValueError."""
        ...


@dataclass(frozen=True, slots=True)
class LocalRoute:
    """``recipient`` is delivered to these canonical users' INBOXes."""

    recipient: Recipient
    users: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RemoteRoute:
    """``recipient`` goes to the outbound queue."""

    recipient: Recipient


Route = LocalRoute | RemoteRoute


def route(resolver: Resolver, recipient: Recipient, *, may_relay: bool) -> Route:
    """
    Decide one recipient.

    :raises NoSuchUser: a local domain with nobody of that name (550 5.1.1).
    :raises RelayDenied: not local and ``may_relay`` is false (554 5.7.1).
    :raises ValueError: the address is malformed.
    """
    try:
        users = resolver.resolve(recipient.address)
    except RelayDenied:
        if may_relay:
            return RemoteRoute(recipient)
        raise
    return LocalRoute(recipient, users)


def local_users(routes: Iterable[Route]) -> tuple[str, ...]:
    """Every distinct local user, in first-seen order: each gets one copy."""
    seen: dict[str, None] = {}
    for r in routes:
        if isinstance(r, LocalRoute):
            for user in r.users:
                seen.setdefault(user, None)
    return tuple(seen)


def remote_recipients(routes: Iterable[Route]) -> tuple[Recipient, ...]:
    """The remote recipients, duplicates (same address) dropped."""
    seen: dict[str, Recipient] = {}
    for r in routes:
        if isinstance(r, RemoteRoute):
            seen.setdefault(r.recipient.address.lower(), r.recipient)
    return tuple(seen.values())
