"""Accounts: resolution rules, persistence, concurrency, passwords, and the cred checker/realm."""

from __future__ import annotations

import json
import os
import stat
import threading
import unicodedata
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_twisted  # type: ignore[import-untyped]
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm
from twisted.internet.task import Clock
from zope.interface import Interface
from zope.interface.verify import verifyObject

from twistedmail.accounts import (
    Accounts,
    AccountsChecker,
    MailRealm,
    check_password,
    hash_password,
    make_portal,
)
from twistedmail.interfaces import AccountsError, IMailAccount, NoSuchUser, RelayDenied
from twistedmail.store.memory import MemoryStore

_Test = TypeVar("_Test", bound=Callable[..., Coroutine[Any, Any, None]])


def ensure_deferred(test: _Test) -> _Test:
    """pytest_twisted.ensureDeferred, typed (the package has no type hints)."""
    result: _Test = pytest_twisted.ensureDeferred(test)
    return result


FAST = 2**10  # scrypt cost for tests; production uses 2**14

ALICE = "alice@example.test"
BOB = "bob@example.test"


def make(path: Path) -> Accounts:
    return Accounts.in_data_dir(str(path), scrypt_n=FAST)


@pytest.fixture
def accounts(tmp_path: Path) -> Accounts:
    acc = make(tmp_path)
    acc.add_user(ALICE, "alice-pw")
    acc.add_user(BOB, "bob-pw")
    return acc


# --- resolution -------------------------------------------------------------------


def test_add_user_makes_its_domain_local(tmp_path: Path) -> None:
    acc = make(tmp_path)
    assert not acc.is_local_domain("example.test")
    acc.add_user("Carol@Example.TEST", "pw")
    assert acc.is_local_domain("example.test")
    assert acc.is_local_domain("EXAMPLE.test.")
    assert acc.users() == ["carol@example.test"]
    assert acc.domains() == ["example.test"]


def test_resolve_user_folds_case(accounts: Accounts) -> None:
    assert accounts.resolve("alice@example.test") == (ALICE,)
    assert accounts.resolve("ALICE@Example.TEST") == (ALICE,)
    assert accounts.resolve("<Alice@example.test>") == (ALICE,)


def test_canonical_user_and_user_exists(accounts: Accounts) -> None:
    assert accounts.canonical_user("Alice@Example.TEST") == ALICE
    assert accounts.canonical_user("nobody@example.test") is None
    assert accounts.canonical_user("alice") is None
    assert accounts.canonical_user("") is None
    assert accounts.user_exists("ALICE@example.test")
    assert not accounts.user_exists("nobody@example.test")


def test_plus_addressing(accounts: Accounts) -> None:
    assert accounts.resolve("bob+lists@example.test") == (BOB,)
    assert accounts.resolve("Bob+Tag+More@example.test") == (BOB,)
    accounts.add_alias("team@example.test", [ALICE, BOB])
    assert accounts.resolve("team+x@example.test") == (ALICE, BOB)
    with pytest.raises(NoSuchUser):
        accounts.resolve("+tag@example.test")


def test_exact_user_with_plus_wins_over_plus_addressing(accounts: Accounts) -> None:
    accounts.add_user("bob+work@example.test", "pw")
    assert accounts.resolve("bob+work@example.test") == ("bob+work@example.test",)
    assert accounts.resolve("bob+home@example.test") == (BOB,)


def test_alias_to_several_users_and_chains(accounts: Accounts) -> None:
    accounts.add_alias("team@example.test", [ALICE, BOB])
    accounts.add_alias("Postmaster@Example.test", ["team@example.test"])
    accounts.add_alias("abuse@example.test", ["postmaster@example.test", ALICE])
    assert accounts.resolve("team@example.test") == (ALICE, BOB)
    assert accounts.resolve("postmaster@example.test") == (ALICE, BOB)
    assert accounts.resolve("ABUSE@example.test") == (ALICE, BOB)
    assert accounts.aliases() == {
        "abuse@example.test": ("postmaster@example.test", ALICE),
        "postmaster@example.test": ("team@example.test",),
        "team@example.test": (ALICE, BOB),
    }


def test_alias_add_extends_existing_alias(accounts: Accounts) -> None:
    accounts.add_alias("team@example.test", [ALICE])
    accounts.add_alias("team@example.test", [BOB, ALICE])
    assert accounts.aliases()["team@example.test"] == (ALICE, BOB)


def test_alias_in_another_domain_makes_it_local(accounts: Accounts) -> None:
    accounts.add_alias("info@other.test", [ALICE])
    assert accounts.is_local_domain("other.test")
    assert accounts.resolve("info@other.test") == (ALICE,)


def test_alias_loops_are_refused(accounts: Accounts) -> None:
    accounts.add_alias("a@example.test", [ALICE])
    accounts.add_alias("b@example.test", ["a@example.test"])
    with pytest.raises(AccountsError, match="loop"):
        accounts.add_alias("a@example.test", ["b@example.test"])
    with pytest.raises(AccountsError, match="itself"):
        accounts.add_alias("c@example.test", ["c@example.test"])
    assert accounts.resolve("b@example.test") == (ALICE,)


def test_alias_loop_in_a_hand_edited_file_is_harmless(tmp_path: Path) -> None:
    data = {
        "version": 1,
        "domains": ["example.test"],
        "users": {ALICE: {"password": hash_password("pw", FAST)}},
        "aliases": {
            "a@example.test": ["b@example.test"],
            "b@example.test": ["a@example.test", ALICE],
            "c@example.test": ["c@example.test"],
        },
        "catch_all": {},
    }
    (tmp_path / "accounts.json").write_text(json.dumps(data))
    acc = make(tmp_path)
    assert acc.resolve("a@example.test") == (ALICE,)
    with pytest.raises(NoSuchUser):
        acc.resolve("c@example.test")


@pytest.mark.parametrize(
    ("alias", "targets", "reason"),
    [
        ("x@example.test", ["someone@remote.test"], "not in a local domain"),
        ("x@example.test", ["nobody@example.test"], "not a user or an alias"),
        (ALICE, [BOB], "is a user"),
        ("x@example.test", [], "at least one target"),
        ("not an address", [ALICE], "not a valid email address"),
        ("x@example.test", ["bad@@x"], "not a valid email address"),
    ],
)
def test_bad_aliases_are_refused(
    accounts: Accounts, alias: str, targets: list[str], reason: str
) -> None:
    with pytest.raises(AccountsError, match=reason):
        accounts.add_alias(alias, targets)


def test_catch_all(accounts: Accounts) -> None:
    accounts.add_alias("team@example.test", [ALICE, BOB])
    accounts.set_catch_all("Example.TEST", "team@example.test")
    assert accounts.resolve("whoever@example.test") == (ALICE, BOB)
    assert accounts.resolve("bob@example.test") == (BOB,)  # users still win
    assert accounts.catch_alls() == {"example.test": "team@example.test"}
    accounts.set_catch_all("example.test", None)
    with pytest.raises(NoSuchUser):
        accounts.resolve("whoever@example.test")


def test_catch_all_needs_a_known_target_and_domain(accounts: Accounts) -> None:
    with pytest.raises(AccountsError, match="not a user or an alias"):
        accounts.set_catch_all("example.test", "nobody@example.test")
    with pytest.raises(AccountsError, match="No such domain"):
        accounts.set_catch_all("other.test", ALICE)


def test_unknown_local_remote_and_malformed(accounts: Accounts) -> None:
    with pytest.raises(NoSuchUser):
        accounts.resolve("nobody@example.test")
    with pytest.raises(RelayDenied):
        accounts.resolve("alice@elsewhere.test")
    with pytest.raises(RelayDenied):
        accounts.resolve("alice@[127.0.0.1]")
    bad_addresses = [
        "",
        "alice",
        "@example.test",
        "alice@",
        "a b@example.test",
        "a..b@example.test",
    ]
    for bad in [*bad_addresses, "a@b@example.test", "alice@-x.test", "alice@x_y.test"]:
        with pytest.raises(ValueError):
            accounts.resolve(bad)


def test_addresses_of(accounts: Accounts) -> None:
    accounts.add_alias("me@example.test", [ALICE])
    accounts.add_alias("also-me@example.test", ["me@example.test"])
    accounts.add_alias("team@example.test", [ALICE, BOB])
    assert accounts.addresses_of(ALICE) == {ALICE, "me@example.test", "also-me@example.test"}
    assert accounts.addresses_of(BOB) == {BOB}
    assert accounts.addresses_of("nobody@example.test") == frozenset()


def test_unicode_addresses(tmp_path: Path) -> None:
    acc = make(tmp_path)
    acc.add_user("Jörg@Bücher.test", "pw")
    assert acc.users() == ["jörg@bücher.test"]
    assert acc.resolve("JÖRG@bücher.test") == ("jörg@bücher.test",)
    # A client without SMTPUTF8 spells the domain as an A-label (RFC 5890).
    assert acc.resolve("jörg@XN--BCHER-KVA.test") == ("jörg@bücher.test",)
    assert acc.is_local_domain("bücher.test")
    assert acc.is_local_domain("xn--bcher-kva.test")
    assert not acc.is_local_domain("[127.0.0.1]")
    assert acc.canonical_user("Jörg@xn--bcher-kva.test") == "jörg@bücher.test"
    with pytest.raises(AccountsError, match="already local"):
        acc.add_domain("xn--bcher-kva.test")
    with pytest.raises(AccountsError, match="not a valid domain"):
        acc.add_domain("xn--.test")


def test_needlessly_quoted_local_part_is_the_same_mailbox(accounts: Accounts) -> None:
    assert accounts.resolve('"alice"@example.test') == (ALICE,)
    assert accounts.resolve('"Al\\ice"@example.test') == (ALICE,)
    with pytest.raises(NoSuchUser):
        accounts.resolve('"alice smith"@example.test')
    # A blank cannot be in a user's name (it names a Maildir directory), but
    # an alias may carry one.
    with pytest.raises(AccountsError, match="blanks"):
        accounts.add_user('"Alice Smith"@example.test', "pw")
    accounts.add_alias('"Alice Smith"@example.test', [ALICE])
    assert accounts.resolve('"ALICE SMITH"@example.test') == (ALICE,)


# --- changes ---------------------------------------------------------------------


def test_duplicate_and_unknown_users_are_refused(accounts: Accounts) -> None:
    with pytest.raises(AccountsError, match="already exists"):
        accounts.add_user("ALICE@example.test", "pw")
    with pytest.raises(AccountsError, match="No such user"):
        accounts.remove_user("nobody@example.test")
    with pytest.raises(AccountsError, match="No such user"):
        accounts.set_password("nobody@example.test", "pw")
    with pytest.raises(AccountsError, match="not a valid email address"):
        accounts.add_user("alice", "pw")
    with pytest.raises(AccountsError, match="empty"):
        accounts.add_user("carol@example.test", "")
    accounts.add_alias("team@example.test", [ALICE])
    with pytest.raises(AccountsError, match="already an alias"):
        accounts.add_user("team@example.test", "pw")


def test_remove_user_prunes_aliases_and_catch_all(accounts: Accounts) -> None:
    accounts.add_alias("team@example.test", [ALICE, BOB])
    accounts.add_alias("solo@example.test", [BOB])
    accounts.add_alias("via@example.test", ["solo@example.test"])
    accounts.set_catch_all("example.test", BOB)
    accounts.remove_user(BOB)
    assert accounts.users() == [ALICE]
    assert accounts.aliases() == {"team@example.test": (ALICE,)}
    assert accounts.catch_alls() == {}
    with pytest.raises(NoSuchUser):
        accounts.resolve(BOB)


def test_remove_alias(accounts: Accounts) -> None:
    accounts.add_alias("team@example.test", [ALICE])
    accounts.remove_alias("Team@example.test")
    assert accounts.aliases() == {}
    with pytest.raises(AccountsError, match="No such alias"):
        accounts.remove_alias("team@example.test")


def test_domains(accounts: Accounts) -> None:
    accounts.add_domain("Other.Test")
    assert accounts.domains() == ["example.test", "other.test"]
    with pytest.raises(AccountsError, match="already local"):
        accounts.add_domain("other.test")
    with pytest.raises(NoSuchUser):
        accounts.resolve("x@other.test")
    with pytest.raises(AccountsError, match="still has 2 user"):
        accounts.remove_domain("example.test")
    accounts.remove_domain("other.test")
    assert accounts.domains() == ["example.test"]
    with pytest.raises(RelayDenied):
        accounts.resolve("x@other.test")
    with pytest.raises(AccountsError, match="No such domain"):
        accounts.remove_domain("other.test")
    for bad in ["", "-bad.test", "a..b", "a b.test", "under_score.test", "[127.0.0.1]"]:
        with pytest.raises(AccountsError, match="not a valid domain"):
            accounts.add_domain(bad)


# --- persistence -----------------------------------------------------------------


def test_missing_file_is_an_empty_database(tmp_path: Path) -> None:
    acc = make(tmp_path / "not-yet")
    assert acc.users() == [] and acc.domains() == [] and acc.aliases() == {}
    acc.add_domain("example.test")  # makes the directory
    assert (tmp_path / "not-yet" / "accounts.json").exists()


def test_second_instance_sees_changes_without_reopening(accounts: Accounts, tmp_path: Path) -> None:
    other = make(tmp_path)
    assert other.users() == [ALICE, BOB]
    accounts.add_alias("team@example.test", [ALICE, BOB])
    assert other.resolve("team@example.test") == (ALICE, BOB)
    accounts.remove_user(BOB)
    assert other.users() == [ALICE]


def test_same_size_changes_in_quick_succession_are_all_seen(
    accounts: Accounts, tmp_path: Path
) -> None:
    # Every version has the same size and may share an mtime tick; the
    # reader must still tell them apart.
    reader = make(tmp_path)
    for i in range(5):
        accounts.set_password(ALICE, f"password-{i}")
        assert reader.verify_password(ALICE, f"password-{i}")


def test_concurrent_changes_by_two_instances_lose_nothing(tmp_path: Path) -> None:
    first, second = make(tmp_path), make(tmp_path)
    first.add_user(ALICE, "pw")
    second.add_user(BOB, "pw")  # second's snapshot predates ALICE
    assert sorted(make(tmp_path).users()) == [ALICE, BOB]

    errors: list[BaseException] = []

    def add_many(acc: Accounts, prefix: str) -> None:
        try:
            for i in range(10):
                acc.add_user(f"{prefix}{i}@example.test", "pw")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=add_many, args=(make(tmp_path), prefix)) for prefix in "xyz"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(make(tmp_path).users()) == 2 + 30


def test_file_is_private_and_atomic(accounts: Accounts, tmp_path: Path) -> None:
    path = tmp_path / "accounts.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    leftovers = [p.name for p in tmp_path.iterdir() if ".tmp." in p.name]
    assert leftovers == []
    assert json.loads(path.read_text())["version"] == 1


def test_corrupt_file(accounts: Accounts, tmp_path: Path) -> None:
    path = tmp_path / "accounts.json"
    path.write_text("{ not json")
    # A running instance keeps its last good data rather than locking everyone out.
    assert accounts.users() == [ALICE, BOB]
    with pytest.raises(AccountsError, match="Cannot read"):
        make(tmp_path)
    # Nor is it overwritten by a change: it may hold every user.
    with pytest.raises(AccountsError, match="Cannot read"):
        accounts.add_domain("other.test")
    assert path.read_text() == "{ not json"
    # Once fixed, the new contents are picked up.
    path.write_text(json.dumps({"version": 1, "domains": ["fixed.test"]}))
    assert accounts.domains() == ["fixed.test"]


def test_failed_change_leaves_the_file_alone(accounts: Accounts, tmp_path: Path) -> None:
    before = (tmp_path / "accounts.json").read_bytes()
    with pytest.raises(AccountsError):
        accounts.add_user(ALICE, "again")
    assert (tmp_path / "accounts.json").read_bytes() == before


# --- passwords -------------------------------------------------------------------


def test_verify_password(accounts: Accounts) -> None:
    assert accounts.verify_password(ALICE, "alice-pw")
    assert not accounts.verify_password(ALICE, "bob-pw")
    assert not accounts.verify_password(ALICE, "")
    assert not accounts.verify_password("nobody@example.test", "alice-pw")


def test_unicode_passwords_match_in_either_normal_form(accounts: Accounts) -> None:
    password = "pässwörd-密码-🔑"
    accounts.set_password(ALICE, password)
    assert accounts.verify_password(ALICE, password)
    assert accounts.verify_password(ALICE, unicodedata.normalize("NFD", password))
    assert not accounts.verify_password(ALICE, "passwörd-密码-🔑")


def test_hash_format_is_self_describing_and_hides_the_password(
    accounts: Accounts, tmp_path: Path
) -> None:
    accounts.add_user("carol@example.test", "alice-pw")
    text = (tmp_path / "accounts.json").read_text()
    assert "alice-pw" not in text and "bob-pw" not in text
    stored = json.loads(text)["users"]
    alice, carol = stored[ALICE]["password"], stored["carol@example.test"]["password"]
    assert alice.startswith("scrypt$1024$8$1$")
    assert len(alice.split("$")) == 6
    assert alice != carol  # same password, different salt


def test_check_password_rejects_malformed_hashes() -> None:
    good = hash_password("pw", FAST)
    assert check_password(good, "pw")
    for bad in ["", "pw", "md5$x", good.replace("scrypt", "bcrypt"), "scrypt$3$8$1$AA==$AA=="]:
        assert not check_password(bad, "pw")
    assert not check_password("scrypt$1073741824$8$1$AA==$AA==", "pw")  # absurd cost


def test_other_cost_hashes_still_verify(tmp_path: Path) -> None:
    acc = Accounts.in_data_dir(str(tmp_path), scrypt_n=2**11)
    acc.add_user(ALICE, "pw")
    assert make(tmp_path).verify_password(ALICE, "pw")


# --- cred -----------------------------------------------------------------------


class CountingAccounts(Accounts):
    """Real Accounts that count scrypt verifications, to show the checker's cache."""

    calls = 0

    def verify_password(self, user: str, password: str) -> bool:
        self.calls += 1
        return super().verify_password(user, password)


@pytest.fixture
def counting(tmp_path: Path) -> CountingAccounts:
    acc = CountingAccounts.in_data_dir(str(tmp_path), scrypt_n=FAST)
    assert isinstance(acc, CountingAccounts)
    acc.add_user(ALICE, "pässword")
    return acc


def _reactor():  # type: ignore[no-untyped-def]
    from twisted.internet import reactor

    return reactor


def test_checker_and_realm_provide_their_interfaces(accounts: Accounts) -> None:
    verifyObject(ICredentialsChecker, AccountsChecker(accounts, _reactor()))
    verifyObject(IRealm, MailRealm(MemoryStore()))


@ensure_deferred
async def test_portal_login_gives_the_users_account(counting: CountingAccounts) -> None:
    portal = make_portal(counting, MemoryStore(), _reactor())
    creds = UsernamePassword(b"Alice@Example.TEST", "pässword".encode())
    interface, account, logout = await portal.login(creds, None, IMailAccount)
    assert interface is IMailAccount
    assert IMailAccount.providedBy(account)
    assert account.user == ALICE
    logout()


@ensure_deferred
async def test_checker_accepts_str_credentials(counting: CountingAccounts) -> None:
    checker = AccountsChecker(counting, _reactor())
    creds = UsernamePassword("alice@example.test", "pässword")  # type: ignore[arg-type]
    assert await checker.requestAvatarId(creds) == ALICE


@pytest.mark.parametrize(
    ("username", "password"),
    [
        (b"alice@example.test", b"wrong"),
        (b"nobody@example.test", "pässword".encode()),
        (b"alice@example.test", b"p\xe4ssword"),  # Latin-1, not UTF-8
        (b"alice", b"x"),
        (b"", b""),
    ],
)
@ensure_deferred
async def test_checker_refuses(
    counting: CountingAccounts, username: bytes, password: bytes
) -> None:
    portal = make_portal(counting, MemoryStore(), _reactor())
    with pytest.raises(UnauthorizedLogin):
        await portal.login(UsernamePassword(username, password), None, IMailAccount)


@ensure_deferred
async def test_repeat_login_skips_scrypt_until_the_hash_changes(
    counting: CountingAccounts, tmp_path: Path
) -> None:
    checker = AccountsChecker(counting, _reactor())
    good = UsernamePassword(b"alice@example.test", "pässword".encode())
    assert await checker.requestAvatarId(good) == ALICE
    assert counting.calls == 1
    assert await checker.requestAvatarId(good) == ALICE
    assert await checker.requestAvatarId(good) == ALICE
    assert counting.calls == 1

    # A wrong password is never answered from the cache.
    with pytest.raises(UnauthorizedLogin):
        await checker.requestAvatarId(UsernamePassword(b"alice@example.test", b"guess"))
    assert counting.calls == 2

    # A password change (here by another process) invalidates the entry.
    make(tmp_path).set_password(ALICE, "new")
    with pytest.raises(UnauthorizedLogin):
        await checker.requestAvatarId(good)
    assert counting.calls == 3
    assert await checker.requestAvatarId(UsernamePassword(b"alice@example.test", b"new")) == ALICE
    assert counting.calls == 4


@ensure_deferred
async def test_removed_user_cannot_log_in_with_a_cached_password(
    counting: CountingAccounts,
) -> None:
    checker = AccountsChecker(counting, _reactor())
    good = UsernamePassword(b"alice@example.test", "pässword".encode())
    assert await checker.requestAvatarId(good) == ALICE
    counting.remove_user(ALICE)
    with pytest.raises(UnauthorizedLogin):
        await checker.requestAvatarId(good)


@ensure_deferred
async def test_realm_only_provides_mail_accounts() -> None:
    class IOther(Interface):
        pass

    realm = MailRealm(MemoryStore())
    with pytest.raises(NotImplementedError):
        await realm.requestAvatar(ALICE, None, IOther)
    interface, account, _logout = await realm.requestAvatar(ALICE.encode(), None, IMailAccount)
    assert interface is IMailAccount and account.user == ALICE  # type: ignore[attr-defined]


def test_checker_without_threads_answers_inline(counting: CountingAccounts) -> None:
    # Protocol tests drive sessions with task.Clock: no thread pool, no waiting.
    checker = AccountsChecker(counting, Clock())
    results: list[object] = []
    good = UsernamePassword(b"alice@example.test", "pässword".encode())
    checker.requestAvatarId(good).addCallback(results.append)
    bad = UsernamePassword(b"alice@example.test", b"x")
    checker.requestAvatarId(bad).addErrback(lambda f: results.append(f.type))
    assert results == [ALICE, UnauthorizedLogin]
