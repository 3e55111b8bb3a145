"""LoginThrottle, driven by task.Clock."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from twistedmail.throttle import LoginThrottle


def make(clock: Clock, **kw: float) -> LoginThrottle:
    return LoginThrottle(clock, **kw)  # type: ignore[arg-type]


def fail(throttle: LoginThrottle, key: str, times: int) -> None:
    for _ in range(times):
        assert throttle.allowed(key)
        throttle.failed(key)


def test_locks_after_max_failures_and_unlocks_after_lockout() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock, max_failures=3, window=60, lockout=120)
    fail(throttle, "192.0.2.1", 2)
    assert throttle.allowed("192.0.2.1")
    throttle.failed("192.0.2.1")
    assert not throttle.allowed("192.0.2.1")
    clock.advance(119)
    assert not throttle.allowed("192.0.2.1")
    clock.advance(1)
    assert throttle.allowed("192.0.2.1")
    # The lockout cleared the count: a fresh set of tries.
    fail(throttle, "192.0.2.1", 2)
    assert throttle.allowed("192.0.2.1")


def test_failures_outside_the_window_are_forgotten() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock, max_failures=3, window=60, lockout=120)
    fail(throttle, "k", 2)
    clock.advance(61)
    fail(throttle, "k", 2)
    assert throttle.allowed("k")
    throttle.failed("k")
    assert not throttle.allowed("k")


def test_success_resets_the_count() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock, max_failures=3)
    fail(throttle, "alice@example.test", 2)
    throttle.succeeded("alice@example.test")
    fail(throttle, "alice@example.test", 2)
    assert throttle.allowed("alice@example.test")
    assert len(throttle) == 1


def test_success_does_not_lift_a_lockout() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock, max_failures=1, lockout=10)
    throttle.failed("k")
    throttle.succeeded("k")
    assert not throttle.allowed("k")


def test_keys_are_independent() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock, max_failures=2)
    fail(throttle, "a", 2)
    assert not throttle.allowed("a")
    assert throttle.allowed("b")


def test_defaults() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock)
    fail(throttle, "k", 4)
    assert throttle.allowed("k")
    throttle.failed("k")
    assert not throttle.allowed("k")
    clock.advance(300)
    assert throttle.allowed("k")


def test_memory_is_bounded() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock, max_failures=3, max_keys=100)
    for i in range(1000):
        throttle.failed(f"198.51.100.{i}")
        assert len(throttle) <= 100
    # The newest keys are the ones remembered.
    throttle.failed("198.51.100.999")
    throttle.failed("198.51.100.999")
    assert not throttle.allowed("198.51.100.999")


def test_idle_entries_are_forgotten_first() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock, max_failures=2, window=10, lockout=1000, max_keys=10)
    throttle.failed("locked")
    throttle.failed("locked")
    for i in range(9):
        throttle.failed(f"old-{i}")
    clock.advance(11)  # the old failures leave the window; the lockout stays
    throttle.failed("new")
    assert not throttle.allowed("locked")
    assert len(throttle) == 2


def test_allowed_forgets_expired_keys() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock, window=10)
    throttle.failed("k")
    clock.advance(10)
    assert throttle.allowed("k")
    assert len(throttle) == 0


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        make(Clock(), max_failures=0)
    with pytest.raises(ValueError):
        make(Clock(), window=0)
