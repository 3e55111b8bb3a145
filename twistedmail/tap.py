"""
``twistd twistedmail``: its options and the service it runs.

Options override the configuration file; anything without an option of its
own is reachable with ``--set SECTION.KEY=VALUE``.  A configuration mistake
ends ``twistd`` with one line naming the file, section and key, before
anything has been started (no pid file, no listener, no log file).
"""

from __future__ import annotations

import dataclasses

from twisted.application.service import IService
from twisted.python import usage

from twistedmail.config import SECTIONS, ConfigError, load_config

__all__ = ["Options", "makeService"]


def _default(section: str, key: str) -> str:
    for spec in dataclasses.fields(SECTIONS[section]):
        if spec.name == key:
            if spec.default is None:
                return "none"
            if spec.default is dataclasses.MISSING:
                return "this machine's name"
            return str(spec.default)
    raise KeyError(key)  # pragma: no cover - a typo in the table below


# Option name -> (dotted setting, help).  The default shown comes from config.py.
_OPTIONS: dict[str, tuple[str, str]] = {
    "data-dir": ("server.data_dir", "Directory for mail, accounts, queue and TLS keys."),
    "storage": ("server.storage", "Mailbox store: maildir, memory, or a store plugin's name."),
    "hostname": ("server.hostname", "Our name in greetings, Received: lines and bounces."),
    "smtp": ("listeners.smtp", "SMTP endpoint for incoming mail ('none' disables)."),
    "submission": ("listeners.submission", "Submission endpoint (STARTTLS + AUTH)."),
    "submissions": ("listeners.submissions", "Submission endpoint with implicit TLS."),
    "imap": ("listeners.imap", "IMAP endpoint (STARTTLS)."),
    "imaps": ("listeners.imaps", "IMAP endpoint with implicit TLS."),
    "http": ("listeners.http", "HTTP endpoint (JSON API and web mail)."),
    "https": ("listeners.https", "HTTP endpoint with implicit TLS."),
}


class Options(usage.Options):
    """The ``twistd twistedmail`` command line."""

    synopsis = "[options]"
    longdesc = (
        "Runs the twistedmail mail server.  Settings come from the TOML file given "
        "with --config (if any), then from these options.  Listeners are Twisted "
        "endpoint strings such as tcp:2525:interface=127.0.0.1, or 'none'."
    )
    # No defaults here: an option left out must not override the file.
    optParameters = [
        ["config", None, None, "TOML configuration file (default: built-in defaults only)."],
        *[
            [name, None, None, f"{text} [default: {_default(*dotted.split('.'))}]"]
            for name, (dotted, text) in _OPTIONS.items()
        ],
    ]

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self["set"] = []

    def opt_set(self, assignment: str) -> None:
        """Set any setting, SECTION.KEY=VALUE (repeatable): --set smtp.max_recipients=50"""
        dotted, equals, value = assignment.partition("=")
        if not equals or "." not in dotted:
            raise usage.UsageError(f"--set wants SECTION.KEY=VALUE, not {assignment!r}")
        self["set"].append((dotted.strip(), value))

    def overrides(self) -> dict[str, object]:
        """The settings given on the command line, as `load_config` takes them."""
        result: dict[str, object] = dict(self["set"])
        for name, (dotted, _text) in _OPTIONS.items():
            if self[name] is not None:
                result[dotted] = self[name]
        return result


def makeService(options: Options) -> IService:
    """
    Load the configuration and build the daemon.

    ``twistd`` calls this before it writes its pid file, opens its log or
    starts anything, so exiting here leaves nothing behind.  ``SystemExit``
    with a message prints that one line on stderr and exits with status 1;
    a `usage.UsageError` would instead end in a traceback, because twistd
    only catches those while parsing the command line.
    """
    from twisted.internet import reactor  # the command-line layer picks the reactor

    from twistedmail.service import make_service

    try:
        config = load_config(options["config"], options.overrides())
        return make_service(config, reactor)
    except ConfigError as e:
        raise SystemExit(f"twistedmail: {e}") from None
