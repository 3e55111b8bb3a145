"""Session tokens on a task.Clock: lifetimes, logout, the bound on their number."""

from __future__ import annotations

from twisted.internet.task import Clock

from twistedmail.http.sessions import Sessions
from twistedmail.interfaces import IMailAccount
from twistedmail.store.memory import MemoryStore

ACCOUNT = IMailAccount(MemoryStore().account("alice@example.test").result)


def make(clock: Clock, max_sessions: int = 10) -> Sessions:
    return Sessions(clock, lifetime=100.0, idle=30.0, max_sessions=max_sessions)


def test_token_finds_its_session_until_idle_too_long() -> None:
    clock = Clock()
    sessions = make(clock)
    token = sessions.create("alice@example.test", ACCOUNT)
    assert len(token) >= 40
    clock.advance(29)
    found = sessions.get(token)
    assert found is not None and found.user == "alice@example.test"
    clock.advance(29)  # used 29 s ago: still alive
    assert sessions.get(token) is not None
    clock.advance(30)
    assert sessions.get(token) is None
    assert len(sessions) == 0


def test_absolute_lifetime_ends_even_an_active_session() -> None:
    clock = Clock()
    sessions = make(clock)
    token = sessions.create("alice@example.test", ACCOUNT)
    for _ in range(3):
        clock.advance(25)
        assert sessions.get(token) is not None
    clock.advance(25)  # 100 s after login
    assert sessions.get(token) is None


def test_logout_and_unknown_tokens() -> None:
    sessions = make(Clock())
    token = sessions.create("alice@example.test", ACCOUNT)
    other = sessions.create("alice@example.test", ACCOUNT)
    assert token != other
    sessions.end(token)
    sessions.end(token)  # twice is harmless
    assert sessions.get(token) is None
    assert sessions.get(other) is not None
    assert sessions.get("") is None and sessions.get("x" * 43) is None


def test_the_least_recently_used_session_goes_first_when_full() -> None:
    clock = Clock()
    sessions = make(clock, max_sessions=2)
    first = sessions.create("a@example.test", ACCOUNT)
    second = sessions.create("b@example.test", ACCOUNT)
    assert sessions.get(first) is not None  # first is now the most recently used
    third = sessions.create("c@example.test", ACCOUNT)
    assert len(sessions) == 2
    assert sessions.get(second) is None
    assert sessions.get(first) is not None and sessions.get(third) is not None
