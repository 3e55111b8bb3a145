"""
The ``twistedmail`` admin command: users, aliases, domains (and, from other
modules, the queue and sending).

It resolves the configuration exactly as the daemon does (``--config`` file,
``--data-dir`` over it) and changes the same accounts file the running
daemon reads, which notices the change on its next lookup.

Command groups are registered explicitly: `COMMAND_GROUPS` names, for each
group, a module and a function ``register(subparsers)`` that adds its
sub-commands, usually with `add_group` and `add_command`: each sub-command
has a ``handler``, a function taking a `Context` and returning an exit
code.  Handlers
report bad input by raising `CommandError`, `AccountsError` or `ConfigError`:
`main` turns any of them into one line on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import getpass
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import IO, Any, NoReturn

from twistedmail.accounts import Accounts, normalize_address
from twistedmail.config import Config, ConfigError, load_config
from twistedmail.interfaces import MailError

PROG = "twistedmail"

#: (module, function) pairs; each function adds one command group's
#: sub-parsers.  Explicit, so what the command can do is read here.
COMMAND_GROUPS: tuple[tuple[str, str], ...] = (
    ("twistedmail.cli", "register_user_commands"),
    ("twistedmail.cli", "register_alias_commands"),
    ("twistedmail.cli", "register_domain_commands"),
    ("twistedmail.outbound.admin", "register"),
    ("twistedmail.outbound.compose", "register_send"),
)


class CommandError(Exception):
    """Bad input to a command; the text is the one line the user sees."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose mistakes are one line and exit code 1, via `main`."""

    def error(self, message: str) -> NoReturn:
        raise CommandError(f"{message} (see '{self.prog} --help')")


class Context:
    """What a command handler gets: its arguments, streams, config and accounts."""

    def __init__(self, args: argparse.Namespace, stdin: IO[str], stdout: IO[str]) -> None:
        self.args = args
        self.stdin = stdin
        self.stdout = stdout
        self._config: Config | None = None
        self._accounts: Accounts | None = None

    @property
    def config(self) -> Config:
        """The daemon's configuration: the ``--config`` file with ``--data-dir`` over it."""
        if self._config is None:
            overrides: dict[str, object] = {}
            if self.args.data_dir is not None:
                overrides["server.data_dir"] = self.args.data_dir
            self._config = load_config(self.args.config, overrides)
        return self._config

    @property
    def accounts(self) -> Accounts:
        if self._accounts is None:
            self._accounts = Accounts.in_data_dir(self.config.server.data_dir)
        return self._accounts

    def out(self, line: str) -> None:
        print(line, file=self.stdout)

    def read_password(self) -> str:
        """
        A new password: one line of stdin with ``--password-stdin`` (for
        scripts), otherwise typed twice at a prompt that does not echo.
        """
        if self.args.password_stdin:
            line = self.stdin.readline()
            password = line[:-1] if line.endswith("\n") else line
            return password.removesuffix("\r")
        try:
            first = getpass.getpass("Password: ")
            again = getpass.getpass("Password again: ")
        except EOFError:
            raise CommandError(
                "No password given (use --password-stdin to read it from standard input)."
            ) from None
        if again != first:
            raise CommandError("The passwords do not match.")
        return first

    def close(self) -> None:
        if self._accounts is not None:
            self._accounts.close()


Handler = Callable[[Context], int]


def add_command(
    subparsers: Any, name: str, handler: Handler, help_text: str
) -> argparse.ArgumentParser:
    """Add one sub-command that runs ``handler``; add its arguments to the result."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help_text, description=help_text
    )
    parser.set_defaults(handler=handler)
    return parser


def add_group(subparsers: Any, name: str, help_text: str) -> Any:
    """Add a command group (``user``, ``queue``...); returns its own subparsers."""
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    return parser.add_subparsers(title="commands", metavar="COMMAND", required=True)


def _password_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input instead of prompting",
    )


# --- user ------------------------------------------------------------------------


def register_user_commands(subparsers: Any) -> None:
    """``user add|list|remove|passwd``."""
    group = add_group(subparsers, "user", "manage users (mailbox owners who can log in)")
    add = add_command(group, "add", _user_add, "add a user; its domain becomes local")
    add.add_argument("email", metavar="EMAIL")
    _password_option(add)
    add_command(group, "list", _user_list, "list users")
    remove = add_command(group, "remove", _user_remove, "remove a user (their mail stays on disk)")
    remove.add_argument("email", metavar="EMAIL")
    passwd = add_command(group, "passwd", _user_passwd, "change a user's password")
    passwd.add_argument("email", metavar="EMAIL")
    _password_option(passwd)


def _user_add(ctx: Context) -> int:
    # Refuse what we can before asking for a password.
    user = normalize_address(ctx.args.email)
    if ctx.accounts.user_exists(user):
        raise CommandError(f"User {user} already exists.")
    ctx.accounts.add_user(user, ctx.read_password())
    ctx.out(f"Added user {user}.")
    return 0


def _user_list(ctx: Context) -> int:
    for user in ctx.accounts.users():
        ctx.out(user)
    return 0


def _user_remove(ctx: Context) -> int:
    ctx.accounts.remove_user(ctx.args.email)
    ctx.out(f"Removed user {ctx.args.email}.")
    return 0


def _user_passwd(ctx: Context) -> int:
    user = normalize_address(ctx.args.email)
    if not ctx.accounts.user_exists(user):
        raise CommandError(f"No such user: {user}.")
    ctx.accounts.set_password(user, ctx.read_password())
    ctx.out(f"Changed the password of {user}.")
    return 0


# --- alias -----------------------------------------------------------------------


def register_alias_commands(subparsers: Any) -> None:
    """``alias add|list|remove|catch-all``."""
    group = add_group(subparsers, "alias", "manage aliases and catch-alls")
    add = add_command(group, "add", _alias_add, "send mail for ALIAS to local TARGETs")
    add.add_argument("alias", metavar="ALIAS")
    add.add_argument("targets", metavar="TARGET", nargs="+")
    add_command(group, "list", _alias_list, "list aliases and catch-alls")
    remove = add_command(group, "remove", _alias_remove, "remove an alias")
    remove.add_argument("alias", metavar="ALIAS")
    catch_all = add_command(
        group, "catch-all", _alias_catch_all, "send mail for unknown addresses of DOMAIN to TARGET"
    )
    catch_all.add_argument("domain", metavar="DOMAIN")
    catch_all.add_argument("target", metavar="TARGET", nargs="?")
    catch_all.add_argument("--off", action="store_true", help="remove the domain's catch-all")


def _alias_add(ctx: Context) -> int:
    ctx.accounts.add_alias(ctx.args.alias, ctx.args.targets)
    ctx.out(f"{ctx.args.alias} -> {', '.join(ctx.args.targets)}")
    return 0


def _alias_list(ctx: Context) -> int:
    for alias, targets in ctx.accounts.aliases().items():
        ctx.out(f"{alias} -> {', '.join(targets)}")
    for domain, target in ctx.accounts.catch_alls().items():
        ctx.out(f"*@{domain} -> {target}")
    return 0


def _alias_remove(ctx: Context) -> int:
    ctx.accounts.remove_alias(ctx.args.alias)
    ctx.out(f"Removed alias {ctx.args.alias}.")
    return 0


def _alias_catch_all(ctx: Context) -> int:
    domain, target, off = ctx.args.domain, ctx.args.target, ctx.args.off
    if off == (target is not None):
        raise CommandError("Give either a TARGET or --off.")
    ctx.accounts.set_catch_all(domain, target)
    ctx.out(f"Catch-all of {domain} removed." if off else f"*@{domain} -> {target}")
    return 0


# --- domain ----------------------------------------------------------------------


def register_domain_commands(subparsers: Any) -> None:
    """``domain add|list|remove``."""
    group = add_group(subparsers, "domain", "manage the domains mail is accepted for")
    add = add_command(group, "add", _domain_add, "accept mail for DOMAIN")
    add.add_argument("domain", metavar="DOMAIN")
    add_command(group, "list", _domain_list, "list local domains")
    remove = add_command(group, "remove", _domain_remove, "stop accepting mail for DOMAIN")
    remove.add_argument("domain", metavar="DOMAIN")


def _domain_add(ctx: Context) -> int:
    ctx.accounts.add_domain(ctx.args.domain)
    ctx.out(f"Added domain {ctx.args.domain.lower()}.")
    return 0


def _domain_list(ctx: Context) -> int:
    for domain in ctx.accounts.domains():
        ctx.out(domain)
    return 0


def _domain_remove(ctx: Context) -> int:
    ctx.accounts.remove_domain(ctx.args.domain)
    ctx.out(f"Removed domain {ctx.args.domain.lower()}.")
    return 0


# --- entry point -----------------------------------------------------------------


def make_parser() -> argparse.ArgumentParser:
    """The full parser, with every group in `COMMAND_GROUPS`."""
    parser = _Parser(prog=PROG, description="Administer a twistedmail server.")
    parser.add_argument("--config", metavar="PATH", help="the daemon's TOML configuration file")
    parser.add_argument(
        "--data-dir", metavar="DIR", help="data directory (overrides [server] data_dir)"
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for module_name, function_name in COMMAND_GROUPS:
        register = getattr(importlib.import_module(module_name), function_name)
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; 0 on success, 1 with one line on stderr on bad input."""
    ctx: Context | None = None
    try:
        args = make_parser().parse_args(argv)
        ctx = Context(args, sys.stdin, sys.stdout)
        result: int = args.handler(ctx)
        return result
    except SystemExit as e:  # --help, or a handler that exits on purpose
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except (CommandError, MailError, ConfigError) as e:
        _fail(str(e))
    except OSError as e:
        _fail(f"{e.filename + ': ' if e.filename else ''}{e.strerror or e}")
    except (KeyboardInterrupt, EOFError):
        _fail("interrupted")
    finally:
        if ctx is not None:
            ctx.close()
    return 1


def _fail(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)
