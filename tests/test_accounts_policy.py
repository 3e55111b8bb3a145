"""
The two address policies decided in `Accounts`: who gets postmaster mail
(RFC 5321 §4.5.1) and which senders a user owns (RFC 6409 §6.1).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.logger import capturedLogs, formatEvent

from twistedmail.accounts import Accounts
from twistedmail.interfaces import AccountsError, NoSuchUser, RelayDenied
from twistedmail.service import _log_postmasters

ALICE = "alice@example.test"
BOB = "bob@example.test"
ZOE = "zoe@other.test"


@pytest.fixture
def path(tmp_path: Path) -> str:
    accounts = Accounts(str(tmp_path / "accounts.json"), scrypt_n=2)
    for user in (BOB, ALICE, ZOE):
        accounts.add_user(user, "pw")
    accounts.close()
    return str(tmp_path / "accounts.json")


def test_postmaster_defaults_to_the_domains_first_user(path: str) -> None:
    accounts = Accounts(path)
    assert accounts.resolve("postmaster@example.test") == (ALICE,)
    assert accounts.resolve("PostMaster@EXAMPLE.test") == (ALICE,)
    assert accounts.resolve("postmaster+x@example.test") == (ALICE,)
    assert accounts.resolve("postmaster@other.test") == (ZOE,)
    assert accounts.postmasters() == {"example.test": (ALICE,), "other.test": (ZOE,)}


def test_an_explicit_postmaster_wins(path: str) -> None:
    accounts = Accounts(path, postmaster=ZOE)
    accounts.add_alias("postmaster@example.test", [BOB])
    assert accounts.resolve("postmaster@example.test") == (BOB,)
    assert accounts.resolve("postmaster@other.test") == (ZOE,)


def test_the_configured_postmaster_comes_before_catch_all_and_guesses(path: str) -> None:
    accounts = Accounts(path, postmaster="Zoe@Other.test")
    accounts.set_catch_all("example.test", BOB)
    assert accounts.postmaster == ZOE
    assert accounts.resolve("postmaster@example.test") == (ZOE,)
    # Not a postmaster address: the catch-all as before.
    assert accounts.resolve("anybody@example.test") == (BOB,)


def test_unset_the_catch_all_comes_before_the_first_user(path: str) -> None:
    accounts = Accounts(path)
    accounts.set_catch_all("example.test", BOB)
    assert accounts.resolve("postmaster@example.test") == (BOB,)


def test_a_configured_postmaster_that_is_nobody_falls_back(path: str) -> None:
    for nobody in ("root@elsewhere.test", "ghost@example.test", "postmaster@other.test"):
        accounts = Accounts(path, postmaster=nobody)
        assert accounts.resolve("postmaster@example.test") == (ALICE,)
        assert accounts.resolve("postmaster@other.test") == (ZOE,)
    with pytest.raises(AccountsError):
        Accounts(path, postmaster="not an address")


def test_a_domain_without_users_gets_the_first_user_of_all(path: str) -> None:
    accounts = Accounts(path)
    accounts.add_domain("empty.test")
    assert accounts.resolve("postmaster@empty.test") == (ALICE,)
    with pytest.raises(NoSuchUser):
        accounts.resolve("someone@empty.test")
    with pytest.raises(RelayDenied):
        accounts.resolve("postmaster@remote.test")


def test_bare_postmaster(path: str) -> None:
    # The host name's domain when it is local ...
    assert Accounts(path, hostname="Other.Test").resolve("Postmaster") == (ZOE,)
    # ... else the first domain with a postmaster of its own ...
    accounts = Accounts(path, hostname="mx.example.test")
    accounts.add_alias("postmaster@other.test", [BOB])
    assert accounts.resolve("postmaster") == (BOB,)
    accounts.remove_alias("postmaster@other.test")
    # ... else the first domain; the configured postmaster as for any domain.
    assert accounts.resolve("POSTMASTER") == (ALICE,)
    assert Accounts(path, postmaster=ZOE).resolve("postmaster") == (ZOE,)


def test_without_any_user_postmaster_is_nobody(tmp_path: Path) -> None:
    accounts = Accounts(str(tmp_path / "accounts.json"))
    accounts.add_domain("example.test")
    with pytest.raises(NoSuchUser):
        accounts.resolve("postmaster@example.test")
    with pytest.raises(NoSuchUser):
        accounts.resolve("postmaster")
    assert accounts.postmasters() == {"example.test": ()}


def test_may_send_as(path: str) -> None:
    accounts = Accounts(path)
    accounts.add_alias("me@example.test", [ALICE])
    accounts.add_alias("both@example.test", [ALICE, BOB])
    accounts.set_catch_all("other.test", ALICE)
    mine = [ALICE, "ALICE@example.test", "alice+tag@example.test", "me@example.test"]
    # She gets their postmaster mail: the first user; other.test's catch-all.
    mine += ["postmaster@example.test", "postmaster@other.test"]
    for address in mine:
        assert accounts.may_send_as(ALICE, address), address
    theirs = [
        BOB,
        "both@example.test",
        "x@other.test",
        "alice@remote.test",
        "postmaster@remote.test",
    ]
    theirs += ["not an address", "alice@[127.0.0.1]", "", "postmaster"]
    for address in theirs:
        assert not accounts.may_send_as(ALICE, address), address
    assert accounts.addresses_of(ALICE) == {ALICE, "me@example.test"}


def test_startup_log_says_who_the_postmasters_are(path: str) -> None:
    accounts = Accounts(path, postmaster="root@remote.test", scrypt_n=2)
    accounts.add_domain("empty.test")
    accounts.remove_user(ZOE)
    accounts.remove_user(ALICE)
    accounts.remove_user(BOB)
    accounts.add_user(BOB, "pw")
    with capturedLogs() as events:
        _log_postmasters(accounts)
    text = [formatEvent(e) for e in events]
    assert "postmaster for example.test is bob@example.test" in text
    assert "postmaster for empty.test is bob@example.test" in text
    assert "postmaster for other.test is bob@example.test" in text
    assert any("[server] postmaster root@remote.test is not a local" in t for t in text)
