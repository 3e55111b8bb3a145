"""The ``twistedmail`` admin command, through main() and as the installed console script."""

from __future__ import annotations

import getpass
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from twistedmail.accounts import Accounts
from twistedmail.cli import COMMAND_GROUPS, main


class Run:
    """Runs main() on one data directory and captures what it printed."""

    def __init__(
        self, data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        self.data_dir = data_dir
        self.capsys = capsys
        self.monkeypatch = monkeypatch

    def __call__(self, *argv: str, stdin: str = "") -> tuple[int, str, str]:
        self.monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(["--data-dir", str(self.data_dir), *argv])
        out, err = self.capsys.readouterr()
        return code, out, err

    def ok(self, *argv: str, stdin: str = "") -> list[str]:
        code, out, err = self(*argv, stdin=stdin)
        assert (code, err) == (0, "")
        return out.splitlines()

    def error(self, *argv: str, stdin: str = "") -> str:
        """The one line of a refused command."""
        code, out, err = self(*argv, stdin=stdin)
        assert code == 1
        assert out == ""
        lines = err.splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith("twistedmail: error: ")
        return lines[0]

    @property
    def accounts(self) -> Accounts:
        return Accounts.in_data_dir(str(self.data_dir))


@pytest.fixture
def run(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    return Run(tmp_path / "data", capsys, monkeypatch)


@pytest.fixture
def prompts(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Answers for getpass, the terminal prompt, in order."""
    answers: list[str] = []

    def fake_getpass(prompt: str = "Password: ", stream: object = None) -> str:
        if not answers:
            raise EOFError
        return answers.pop(0)

    monkeypatch.setattr(getpass, "getpass", fake_getpass)
    yield answers


# --- users -----------------------------------------------------------------------


def test_user_add_with_password_from_stdin(run: Run) -> None:
    assert run.ok("user", "add", "Alice@Example.TEST", "--password-stdin", stdin="s3cret ü\n") == [
        "Added user alice@example.test."
    ]
    assert run.accounts.verify_password("alice@example.test", "s3cret ü")
    assert run.ok("user", "list") == ["alice@example.test"]
    assert run.ok("domain", "list") == ["example.test"]


def test_user_add_with_prompt(run: Run, prompts: list[str]) -> None:
    prompts.extend(["pw-typed", "pw-typed"])
    run.ok("user", "add", "bob@example.test")
    assert run.accounts.verify_password("bob@example.test", "pw-typed")


def test_user_add_prompt_mismatch(run: Run, prompts: list[str]) -> None:
    prompts.extend(["one", "two"])
    assert "do not match" in run.error("user", "add", "bob@example.test")
    assert run.accounts.users() == []


def test_user_add_without_a_terminal_says_how(run: Run, prompts: list[str]) -> None:
    assert "--password-stdin" in run.error("user", "add", "bob@example.test")


def test_user_add_refusals(run: Run) -> None:
    run.ok("user", "add", "alice@example.test", "--password-stdin", stdin="pw\n")
    assert "already exists" in run.error(
        "user", "add", "ALICE@example.test", "--password-stdin", stdin="pw\n"
    )
    assert "not a valid email address" in run.error(
        "user", "add", "alice", "--password-stdin", stdin="pw\n"
    )
    assert "empty" in run.error("user", "add", "bob@example.test", "--password-stdin", stdin="\n")


def test_user_passwd(run: Run, prompts: list[str]) -> None:
    run.ok("user", "add", "alice@example.test", "--password-stdin", stdin="old\n")
    prompts.extend(["new", "new"])
    assert run.ok("user", "passwd", "Alice@example.test") == [
        "Changed the password of alice@example.test."
    ]
    assert run.accounts.verify_password("alice@example.test", "new")
    run.ok("user", "passwd", "alice@example.test", "--password-stdin", stdin="newer\r\n")
    assert run.accounts.verify_password("alice@example.test", "newer")
    assert "No such user" in run.error(
        "user", "passwd", "bob@example.test", "--password-stdin", stdin="x\n"
    )


def test_user_remove(run: Run) -> None:
    run.ok("user", "add", "alice@example.test", "--password-stdin", stdin="pw\n")
    assert run.ok("user", "remove", "alice@example.test") == ["Removed user alice@example.test."]
    assert run.ok("user", "list") == []
    assert "No such user" in run.error("user", "remove", "alice@example.test")


# --- aliases and domains ------------------------------------------------------------


def test_aliases(run: Run) -> None:
    run.ok("user", "add", "alice@example.test", "--password-stdin", stdin="pw\n")
    run.ok("user", "add", "bob@example.test", "--password-stdin", stdin="pw\n")
    run.ok("alias", "add", "team@example.test", "alice@example.test", "bob@example.test")
    run.ok("alias", "catch-all", "example.test", "alice@example.test")
    assert run.ok("alias", "list") == [
        "team@example.test -> alice@example.test, bob@example.test",
        "*@example.test -> alice@example.test",
    ]
    assert run.accounts.resolve("team@example.test") == ("alice@example.test", "bob@example.test")
    assert run.accounts.resolve("anyone@example.test") == ("alice@example.test",)
    run.ok("alias", "catch-all", "example.test", "--off")
    run.ok("alias", "remove", "team@example.test")
    assert run.ok("alias", "list") == []


def test_alias_refusals(run: Run) -> None:
    run.ok("user", "add", "alice@example.test", "--password-stdin", stdin="pw\n")
    assert "not in a local domain" in run.error(
        "alias", "add", "x@example.test", "someone@remote.test"
    )
    assert "not a user or an alias" in run.error(
        "alias", "add", "x@example.test", "nobody@example.test"
    )
    assert "No such alias" in run.error("alias", "remove", "x@example.test")
    assert "TARGET or --off" in run.error("alias", "catch-all", "example.test")
    assert "required" in run.error("alias", "add", "x@example.test")


def test_domains(run: Run) -> None:
    run.ok("domain", "add", "Example.TEST")
    assert run.ok("domain", "list") == ["example.test"]
    assert "already local" in run.error("domain", "add", "example.test")
    assert "not a valid domain" in run.error("domain", "add", "bad_domain")
    run.ok("user", "add", "alice@example.test", "--password-stdin", stdin="pw\n")
    assert "remove them first" in run.error("domain", "remove", "example.test")
    run.ok("user", "remove", "alice@example.test")
    run.ok("domain", "remove", "example.test")
    assert run.ok("domain", "list") == []


# --- the command line itself ---------------------------------------------------------


def test_usage_mistakes_are_one_line(run: Run) -> None:
    assert "required" in run.error()
    assert "invalid choice" in run.error("frobnicate")
    assert "required" in run.error("user")
    assert "unrecognized arguments" in run.error("user", "list", "extra")


def test_help_exits_zero(run: Run) -> None:
    code, out, _err = run("--help")
    assert code == 0
    assert "user" in out and "alias" in out and "domain" in out


def test_command_groups_are_explicit() -> None:
    assert ("twistedmail.cli", "register_user_commands") in COMMAND_GROUPS


def test_config_file_gives_the_data_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "from-config"
    config = tmp_path / "twistedmail.toml"
    config.write_text(f'[server]\ndata_dir = "{data_dir}"\n')
    monkeypatch.setattr(sys, "stdin", io.StringIO("pw\n"))
    assert main(["--config", str(config), "user", "add", "a@example.test", "--password-stdin"]) == 0
    assert Accounts.in_data_dir(str(data_dir)).users() == ["a@example.test"]
    # --data-dir overrides the file, as for the daemon.
    other = tmp_path / "override"
    assert main(["--config", str(config), "--data-dir", str(other), "user", "list"]) == 0
    assert capsys.readouterr().out.splitlines() == ["Added user a@example.test."]


def test_bad_config_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "twistedmail.toml"
    config.write_text("[server]\nno_such_key = 1\n")
    assert main(["--config", str(config), "user", "list"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "no_such_key" in err[0]
    assert main(["--config", str(tmp_path / "missing.toml"), "user", "list"]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_unwritable_data_dir_is_one_line(tmp_path: Path, run: Run) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    run.data_dir = blocker / "data"  # a directory inside a regular file
    assert run.error("domain", "add", "example.test")


def test_a_running_daemon_sees_cli_changes(run: Run) -> None:
    daemon_view = Accounts.in_data_dir(str(run.data_dir))
    assert daemon_view.users() == []
    run.ok("user", "add", "alice@example.test", "--password-stdin", stdin="pw\n")
    assert daemon_view.resolve("alice@example.test") == ("alice@example.test",)


# --- the installed console script ------------------------------------------------------


def _script() -> str:
    path = os.path.join(os.path.dirname(sys.executable), "twistedmail")
    if not os.path.exists(path):  # pragma: no cover - depends on the install
        pytest.skip("the twistedmail console script is not installed next to python")
    return path


def test_console_script_happy_path(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "data")
    added = subprocess.run(
        [
            _script(),
            "--data-dir",
            data_dir,
            "user",
            "add",
            "alice@example.test",
            "--password-stdin",
        ],
        input="pw\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (added.returncode, added.stderr) == (0, "")
    listed = subprocess.run(
        [_script(), "--data-dir", data_dir, "user", "list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (listed.returncode, listed.stdout, listed.stderr) == (0, "alice@example.test\n", "")


def test_console_script_error_is_one_line_and_exit_1(tmp_path: Path) -> None:
    result = subprocess.run(
        [_script(), "--data-dir", str(tmp_path), "user", "remove", "nobody@example.test"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == "twistedmail: error: No such user: nobody@example.test.\n"
