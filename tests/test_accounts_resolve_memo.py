"""
`Accounts.resolve` remembers its answers per version of the accounts file:
a repeated RCPT TO costs a stat, yet a change made by the admin command (here
another `Accounts` on the same file, as the CLI is another process) is seen
by the next query, without a restart.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from twistedmail import accounts as accounts_module
from twistedmail.accounts import Accounts
from twistedmail.interfaces import NoSuchUser, RelayDenied

FAST = 2**10
ALICE = "alice@example.test"


def make(path: Path) -> Accounts:
    return Accounts.in_data_dir(str(path), scrypt_n=FAST)


@pytest.fixture
def daemon(tmp_path: Path) -> Accounts:
    make(tmp_path).add_user(ALICE, "pw")
    return make(tmp_path)


def test_unchanged_file_is_not_read_again(daemon: Accounts) -> None:
    daemon.resolve(ALICE)
    snapshot = daemon._refresh()
    for _ in range(3):
        assert daemon.resolve(ALICE) == (ALICE,)
    assert daemon._refresh() is snapshot


def test_admin_changes_are_seen_by_the_next_query(tmp_path: Path, daemon: Accounts) -> None:
    admin = make(tmp_path)
    with pytest.raises(NoSuchUser):
        daemon.resolve("bob@example.test")
    admin.add_user("bob@example.test", "pw")
    assert daemon.resolve("bob@example.test") == ("bob@example.test",)
    admin.add_alias("team@example.test", [ALICE, "bob@example.test"])
    assert daemon.resolve("team@example.test") == (ALICE, "bob@example.test")
    admin.remove_alias("team@example.test")
    admin.remove_user("bob@example.test")
    with pytest.raises(NoSuchUser):
        daemon.resolve("bob@example.test")
    with pytest.raises(NoSuchUser):
        daemon.resolve("team@example.test")
    with pytest.raises(RelayDenied):
        daemon.resolve("x@other.test")
    admin.add_domain("other.test")
    admin.set_catch_all("other.test", ALICE)
    assert daemon.resolve("x@other.test") == (ALICE,)


def test_a_file_replaced_by_another_program_is_seen(tmp_path: Path, daemon: Accounts) -> None:
    assert daemon.resolve(ALICE) == (ALICE,)
    path = tmp_path / "accounts.json"
    raw = json.loads(path.read_text())
    raw["users"] = {"carol@example.test": raw["users"][ALICE]}
    tmp = tmp_path / "new.json"
    tmp.write_text(json.dumps(raw))
    os.replace(tmp, path)
    with pytest.raises(NoSuchUser):
        daemon.resolve(ALICE)
    assert daemon.resolve("carol@example.test") == ("carol@example.test",)


@pytest.mark.parametrize(
    ("address", "error"),
    [
        ("nobody@example.test", NoSuchUser),
        ("a@elsewhere.test", RelayDenied),
        ("not an address", ValueError),
        ("\ud800@example.test", ValueError),  # UTF-8 cannot encode it
    ],
)
def test_remembered_refusals_are_raised_afresh(
    daemon: Accounts, address: str, error: type[Exception]
) -> None:
    raised = []
    for _ in range(2):
        with pytest.raises(error) as info:
            daemon.resolve(address)
        raised.append(info.value)
    first, second = raised
    assert first is not second
    assert type(first) is type(second)
    assert str(first) == str(second)


def test_memory_stays_bounded(daemon: Accounts, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accounts_module, "_MAX_RESOLVED", 8)
    for i in range(30):
        with pytest.raises(NoSuchUser):
            daemon.resolve(f"user{i}@example.test")
        assert len(daemon._refresh().resolved) <= 8
    assert daemon.resolve(ALICE) == (ALICE,)


def test_postmaster_answers_follow_changes(tmp_path: Path, daemon: Accounts) -> None:
    assert daemon.resolve("postmaster") == (ALICE,)
    make(tmp_path).add_user("postmaster@example.test", "pw")
    assert daemon.resolve("postmaster") == ("postmaster@example.test",)
    assert daemon.resolve("Postmaster+x@example.test") == ("postmaster@example.test",)
