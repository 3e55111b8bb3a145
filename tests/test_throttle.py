"""LoginThrottle, driven by task.Clock: per address as before, and per account."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.task import Clock

from twistedmail.accounts import Accounts
from twistedmail.throttle import LoginThrottle, fold_login


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
    with pytest.raises(ValueError):
        make(Clock(), known_per_user=0)


# --- Per account (a guesser with many addresses) ------------------------------

OWNER_HOME = "203.0.113.7"


def guess_from_many(
    throttle: LoginThrottle, login: str, count: int, net: str = "198.51.100"
) -> None:
    """One wrong password each from ``count`` fresh addresses."""
    for i in range(count):
        address = f"{net}.{i}"
        assert throttle.allowed(address, login), (address, login)
        throttle.failed(address, login)


def test_many_addresses_lock_the_account_but_not_its_known_addresses() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock, max_failures=3, window=60, lockout=120)
    throttle.succeeded(OWNER_HOME, "alice@example.test")
    # 4 x max_failures, one per address: no address is near its own limit.
    guess_from_many(throttle, "alice@example.test", 11)
    assert throttle.allowed("192.0.2.200", "alice@example.test")
    throttle.failed("192.0.2.200", "alice@example.test")
    # Locked: a new address is refused, right password or wrong ...
    assert not throttle.allowed("192.0.2.201", "alice@example.test")
    assert not throttle.allowed("198.51.100.3", "alice@example.test")
    # ... the owner's usual address is not, and other accounts are not.
    assert throttle.allowed(OWNER_HOME, "alice@example.test")
    assert throttle.allowed("192.0.2.201", "bob@example.test")
    assert throttle.allowed("192.0.2.201")
    # The lock ends after ``lockout``.
    clock.advance(119)
    assert not throttle.allowed("192.0.2.201", "alice@example.test")
    clock.advance(1)
    assert throttle.allowed("192.0.2.201", "alice@example.test")


def test_the_account_threshold_is_four_times_the_address_one() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock)  # max_failures 5: the account locks at 20
    guess_from_many(throttle, "alice@example.test", 19)
    assert throttle.allowed("192.0.2.1", "alice@example.test")
    throttle.failed("192.0.2.1", "alice@example.test")
    assert not throttle.allowed("192.0.2.2", "alice@example.test")


def test_account_failures_outside_the_window_are_forgotten() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock, max_failures=2, window=60)
    guess_from_many(throttle, "alice@example.test", 7)
    clock.advance(60)
    guess_from_many(throttle, "alice@example.test", 7, net="192.0.2")
    assert throttle.allowed("203.0.113.99", "alice@example.test")


def test_a_wrong_password_from_a_known_address_still_counts() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock, max_failures=2)
    throttle.succeeded(OWNER_HOME, "alice@example.test")
    throttle.failed(OWNER_HOME, "alice@example.test")
    throttle.failed(OWNER_HOME, "alice@example.test")
    # The address limit applies to the owner's address as to any other ...
    assert not throttle.allowed(OWNER_HOME, "alice@example.test")
    # ... and both failures counted for the account: 6 more lock it.
    guess_from_many(throttle, "alice@example.test", 6)
    assert not throttle.allowed("192.0.2.1", "alice@example.test")


def test_the_owner_logging_in_does_not_reset_the_account_count() -> None:
    """Else a distributed guesser would get a fresh set of tries at every login."""
    clock = Clock()
    throttle = LoginThrottle(clock, max_failures=2)
    guess_from_many(throttle, "alice@example.test", 7)
    throttle.succeeded(OWNER_HOME, "alice@example.test")
    throttle.failed("192.0.2.1", "alice@example.test")
    assert not throttle.allowed("192.0.2.2", "alice@example.test")
    assert throttle.allowed(OWNER_HOME, "alice@example.test")


def test_a_right_password_from_a_locked_address_is_refused() -> None:
    """Even for an account it logged in to before: the address limit wins."""
    clock = Clock()
    throttle = LoginThrottle(clock, max_failures=3)
    throttle.succeeded(OWNER_HOME, "alice@example.test")
    for user in ("bob@example.test", "carol@example.test", "dave@example.test"):
        throttle.failed(OWNER_HOME, user)
    assert not throttle.allowed(OWNER_HOME, "alice@example.test")
    assert not throttle.allowed(OWNER_HOME)


def test_known_addresses_are_forgotten_after_a_while() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock, max_failures=2, lockout=10_000, known_for=3600)
    throttle.succeeded(OWNER_HOME, "alice@example.test")
    guess_from_many(throttle, "alice@example.test", 8)
    assert throttle.allowed(OWNER_HOME, "alice@example.test")
    clock.advance(3600)
    assert not throttle.allowed(OWNER_HOME, "alice@example.test")


def test_each_user_remembers_only_its_last_few_addresses() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock, max_failures=2, known_per_user=3)
    for i in range(5):
        throttle.succeeded(f"203.0.113.{i}", "alice@example.test")
        clock.advance(1)
    guess_from_many(throttle, "alice@example.test", 8)
    allowed = [throttle.allowed(f"203.0.113.{i}", "alice@example.test") for i in range(5)]
    assert allowed == [False, False, True, True, True]


def test_a_success_is_known_for_that_user_only() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock, max_failures=2)
    throttle.succeeded(OWNER_HOME, "bob@example.test")
    guess_from_many(throttle, "alice@example.test", 8)
    assert not throttle.allowed(OWNER_HOME, "alice@example.test")


def test_every_spelling_of_a_name_is_one_account() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock, max_failures=2)
    spellings = [
        "alice@example.test",
        "ALICE@EXAMPLE.TEST",
        "\uff41lice@example.test",  # full-width a
        "  alice@example.test ",
        '"alice"@Example.Test',
        "alice@example.test.",
    ]
    for n in range(8):
        assert throttle.allowed(f"192.0.2.{n}", spellings[n % len(spellings)])
        throttle.failed(f"192.0.2.{n}", spellings[n % len(spellings)])
    for login in spellings:
        assert not throttle.allowed("192.0.2.100", login), login


def test_names_that_are_no_user_are_counted_and_refused_alike() -> None:
    """A lockout must not tell a guesser which names exist."""
    clock = Clock()
    throttle = LoginThrottle(clock, max_failures=2, canonical=lambda login: None)
    guess_from_many(throttle, "nobody@example.test", 8)
    assert not throttle.allowed("192.0.2.1", "NOBODY@example.test")
    guess_from_many(throttle, "not an address at all", 8)
    assert not throttle.allowed("192.0.2.1", "Not An Address At All ")


def test_the_canonical_user_names_the_account(tmp_path: Path) -> None:
    """With `Accounts.canonical_user`, as the protocols use it; folding agrees with it."""
    accounts = Accounts(str(tmp_path / "accounts.json"), scrypt_n=2)
    try:
        accounts.add_user("alice@bücher.example", "pw")
        throttle = LoginThrottle(Clock(), max_failures=2, canonical=accounts.canonical_user)
        for login in (
            "Alice@BÜCHER.example",
            "alice@xn--bcher-kva.example",
            "\uff41lice@bücher.example",
            ' "alice"@bücher.example ',
        ):
            assert throttle.account(login) == "alice@bücher.example", login
            assert fold_login(login) == accounts.canonical_user(login), login
    finally:
        accounts.close()


def test_memory_is_bounded_with_many_addresses_and_users() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock, max_failures=3, max_keys=50, known_per_user=2)
    for i in range(2000):
        throttle.failed(f"10.0.{i // 250}.{i % 250}", f"user{i}@example.test")
        throttle.succeeded(f"10.1.{i // 250}.{i % 250}", f"user{i % 300}@example.test")
        assert len(throttle) <= 3 * 50
    for i in range(100):
        throttle.succeeded(f"10.2.0.{i}", "alice@example.test")
    assert len(throttle.accounts._known["alice@example.test"]) == 2
    # Overlong names cannot make one key big.
    throttle.failed("10.3.0.1", "x" * 1_000_000)
    assert max(len(k) for k in throttle.accounts._accounts._entries) <= 320


def test_a_flood_of_junk_names_does_not_evict_a_locked_account() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock, max_failures=2, max_keys=20)
    guess_from_many(throttle, "alice@example.test", 8)
    for i in range(200):
        throttle.failed(f"192.0.2.{i}", f"junk{i}@example.test")
    assert not throttle.allowed("203.0.113.50", "alice@example.test")


def test_an_address_alone_is_checked_when_the_user_is_not_known_yet() -> None:
    """SMTP AUTH checks the address at ``AUTH``, the account once decoded."""
    clock = Clock()
    throttle = LoginThrottle(clock, max_failures=2)
    guess_from_many(throttle, "alice@example.test", 8)
    assert throttle.allowed("192.0.2.1")
    assert not throttle.allowed("192.0.2.1", "alice@example.test")
