"""
The configuration: one TOML file plus command-line overrides, turned into
frozen dataclasses, one per section.

This module only reads and validates.  Every mistake is one `ConfigError`
whose text names the file (or the command line), the section and the key, so
the daemon can refuse to start with one clear line instead of half-starting.
Every setting has a default chosen so that a bare ``twistd -n twistedmail``
listens on loopback only and is safe.

Each setting's meaning lives next to its default (the ``doc`` metadata), so
the README's reference and ``--help`` can be checked against the code.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from twisted.internet.endpoints import TCP4ServerEndpoint, clientFromString, serverFromString
from twisted.internet.testing import MemoryReactor

from twistedmail.model import Address

__all__ = [
    "Config",
    "ConfigError",
    "HTTPConfig",
    "IMAPConfig",
    "ListenersConfig",
    "OutboundConfig",
    "SMTPConfig",
    "ServerConfig",
    "TLSConfig",
    "load_config",
]

DISABLED = "none"
"""The listener / endpoint value that turns a listener or a relay off."""

COMMAND_LINE = "command line"
"""The origin named in errors about overrides."""


class ConfigError(Exception):
    """The configuration is unusable; the text is one line for the operator."""


class _Invalid(Exception):
    """A value failed a check; the caller adds where it came from."""


# --- Value checks -----------------------------------------------------------------
#
# Each check takes the raw value (from TOML, or a string from the command line
# when ``from_text`` is set) and returns the value to store, or raises _Invalid.


def _describe(value: object) -> str:
    kinds = {str: "a string", bool: "a boolean", int: "an integer", float: "a number"}
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    kind = kinds.get(type(value), f"a {type(value).__name__}")
    return f"{kind} ({value!r})"


def _string(value: object, from_text: bool) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"expected a string, got {_describe(value)}")
    return value


def _nonempty_string(value: object, from_text: bool) -> str:
    text = _string(value, from_text)
    if not text.strip():
        raise _Invalid("must not be empty")
    return text


def _optional_string(value: object, from_text: bool) -> str | None:
    text = _string(value, from_text)
    return None if text == "" else text


def _hostname(value: object, from_text: bool) -> str:
    text = _nonempty_string(value, from_text)
    if re.search(r"[\s\x00-\x1f\x7f]", text):
        raise _Invalid(f"not a host name: {text!r}")
    return text


def _optional_address(value: object, from_text: bool) -> str | None:
    text = _string(value, from_text).strip()
    if text == "":
        return None
    try:
        address = Address.parse(text)
    except ValueError as e:
        raise _Invalid(str(e)) from None
    if address.domain.startswith("["):
        raise _Invalid(f"{text!r}: an address literal cannot be a local address")
    return text


def _integer(value: object, from_text: bool) -> int:
    if from_text and isinstance(value, str):
        try:
            value = int(value.replace("_", ""))
        except ValueError:
            raise _Invalid(f"expected an integer, got {value!r}") from None
    # bool is an int subclass in Python, but ``true`` is not a size.
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Invalid(f"expected an integer, got {_describe(value)}")
    if value < 0:
        raise _Invalid(f"must not be negative, got {value}")
    return value


def _positive_integer(value: object, from_text: bool) -> int:
    number = _integer(value, from_text)
    if number == 0:
        raise _Invalid("must be greater than 0")
    return number


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _boolean(value: object, from_text: bool) -> bool:
    if from_text and isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    if not isinstance(value, bool):
        raise _Invalid(f"expected true or false, got {_describe(value)}")
    return value


def _list(value: object, from_text: bool) -> list[object]:
    if from_text and isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list | tuple):
        raise _Invalid(f"expected a list, got {_describe(value)}")
    return list(value)


def _retry_schedule(value: object, from_text: bool) -> tuple[int, ...]:
    items = _list(value, from_text)
    if not items:
        raise _Invalid("needs at least one interval")
    try:
        return tuple(_positive_integer(item, from_text) for item in items)
    except _Invalid as e:
        raise _Invalid(f"every interval (seconds) {e}") from None


_HOST_PORT = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^\s:\[\]]+))(?::(?P<port>\d+))?$"
)


def _split_host_port(text: str) -> tuple[str, int]:
    match = _HOST_PORT.match(text)
    if match is None:
        raise _Invalid(f"{text!r} is not host:port")
    host = match["v6"] or match["host"]
    if match["v6"]:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _Invalid(f"{text!r} has a malformed IPv6 address") from None
    port = int(match["port"]) if match["port"] else 53
    if not 0 < port < 65536:
        raise _Invalid(f"{text!r} has a port outside 1-65535")
    return host, port


def _nameservers(value: object, from_text: bool) -> tuple[str, ...]:
    servers = []
    for item in _list(value, from_text):
        text = _string(item, from_text)
        _split_host_port(text)
        servers.append(text)
    return tuple(servers)


def _server_endpoint(value: object, from_text: bool) -> str | None:
    text = _nonempty_string(value, from_text).strip()
    if text.lower() == DISABLED:
        return None
    try:
        # A MemoryReactor: parse and construct the endpoint, never listen.
        # Endpoint parsers (ours, Twisted's and plugins') raise all sorts.
        endpoint = serverFromString(MemoryReactor(), text)  # type: ignore[no-untyped-call]
    except Exception as e:
        raise _Invalid(f"bad endpoint {text!r}: {_reason(e)}") from None
    if isinstance(endpoint, TCP4ServerEndpoint) and not 0 <= endpoint._port < 65536:
        raise _Invalid(f"bad endpoint {text!r}: port {endpoint._port} is outside 0-65535")
    return text


def _client_endpoint(value: object, from_text: bool) -> str | None:
    text = _string(value, from_text).strip()
    if text.lower() in (DISABLED, ""):
        return None
    try:
        clientFromString(MemoryReactor(), text)  # type: ignore[no-untyped-call]
    except Exception as e:
        raise _Invalid(f"bad client endpoint {text!r}: {_reason(e)}") from None
    return text


def _readable_file(value: object, from_text: bool) -> str | None:
    text = _string(value, from_text)
    if text.lower() in (DISABLED, ""):
        return None
    if not os.path.isfile(text):
        raise _Invalid(f"no such file: {text}")
    if not os.access(text, os.R_OK):
        raise _Invalid(f"cannot read {text}: permission denied")
    return text


def _reason(error: Exception) -> str:
    text = str(error) or type(error).__name__
    return " ".join(text.split())


_Check = Callable[[object, bool], Any]


def _setting(default: object, check: _Check, doc: str) -> Any:
    """A dataclass field carrying its validator and its documentation."""
    return field(default=default, metadata={"check": check, "doc": doc})


def _this_host() -> str:
    return socket.getfqdn()


# --- Sections -----------------------------------------------------------------------


@dataclass(frozen=True)
class ServerConfig:
    """``[server]``: who we are and where the mail lives."""

    hostname: str = field(
        # At load time, not import time: the machine's name may change, and
        # importing must not do a DNS lookup (twisted.mail's DNSNAME mistake).
        default_factory=_this_host,
        metadata={
            "check": _hostname,
            "doc": "Our name in SMTP greetings, Received: lines, bounces and the "
            "self-signed certificate.",
        },
    )
    data_dir: str = _setting(
        "./twistedmail-data",
        _nonempty_string,
        "Directory for mail, accounts, the queue and generated TLS keys (made if missing).",
    )
    storage: str = _setting(
        "maildir",
        _nonempty_string,
        "Mailbox store backend: maildir, memory, or a third-party store plugin's name.",
    )
    postmaster: str | None = _setting(
        None,
        _optional_address,
        "Local user or alias that gets mail for postmaster@ every local domain without its "
        "own postmaster user or alias (RFC 5321 §4.5.1).  Unset: the domain's catch-all, "
        "else its first user (alphabetically).",
    )


@dataclass(frozen=True)
class ListenersConfig:
    """``[listeners]``: Twisted endpoint strings; ``none`` turns one off."""

    smtp: str | None = _setting(
        "tcp:2525:interface=127.0.0.1",
        _server_endpoint,
        "SMTP for incoming mail (the port 25 role): local recipients only, no AUTH needed.",
    )
    submission: str | None = _setting(
        "tcp:2587:interface=127.0.0.1",
        _server_endpoint,
        "Mail submission (the port 587 role): STARTTLS, AUTH required before MAIL.",
    )
    submissions: str | None = _setting(
        None,
        _server_endpoint,
        "Submission over implicit TLS (the port 465 role), e.g. tcp:465.",
    )
    imap: str | None = _setting(
        "tcp:1143:interface=127.0.0.1",
        _server_endpoint,
        "IMAP4rev1 with STARTTLS (the port 143 role).",
    )
    imaps: str | None = _setting(
        None, _server_endpoint, "IMAP over implicit TLS (the port 993 role), e.g. tcp:993."
    )
    http: str | None = _setting(
        "tcp:8080:interface=127.0.0.1", _server_endpoint, "The JSON API and the web mail page."
    )
    https: str | None = _setting(
        None, _server_endpoint, "The HTTP service over implicit TLS, e.g. tcp:8443."
    )


IMPLICIT_TLS_LISTENERS = frozenset({"submissions", "imaps", "https"})
"""Listeners whose connections start with a TLS handshake."""


@dataclass(frozen=True)
class TLSConfig:
    """``[tls]``: the certificate every TLS listener and STARTTLS present."""

    certificate: str | None = _setting(
        None,
        _readable_file,
        "PEM certificate chain (leaf first).  Unset: a self-signed certificate "
        "for the hostname is generated once into DATA_DIR/tls/ and reused.",
    )
    private_key: str | None = _setting(
        None,
        _readable_file,
        "PEM private key for the certificate (default: read from the certificate file).",
    )


@dataclass(frozen=True)
class SMTPConfig:
    """``[smtp]``: limits and policy of the SMTP and submission listeners."""

    max_message_size: int = _setting(
        25_000_000, _positive_integer, "Largest message accepted, in octets (EHLO SIZE)."
    )
    max_recipients: int = _setting(100, _positive_integer, "Recipients per message.")
    idle_timeout: int = _setting(
        300, _positive_integer, "Seconds a client may stay silent (RFC 5321 §4.5.3.2)."
    )
    max_connections: int = _setting(200, _positive_integer, "Simultaneous SMTP sessions in total.")
    max_connections_per_client: int = _setting(
        20, _positive_integer, "Simultaneous SMTP sessions from one client address."
    )
    max_auth_failures: int = _setting(
        5, _positive_integer, "Failed AUTH attempts before the client is disconnected (421)."
    )
    allow_plaintext_auth_on_loopback: bool = _setting(
        False, _boolean, "Offer AUTH without TLS to clients on 127.0.0.0/8 and ::1 (testing)."
    )
    enforce_sender_identity: bool = _setting(
        True,
        _boolean,
        "On submission, MAIL FROM must be an address of the authenticated user (their own, "
        "a +tag of it, an alias only they receive) or <> (553 5.7.1 otherwise).",
    )


@dataclass(frozen=True)
class IMAPConfig:
    """``[imap]``: limits and policy of the IMAP listeners."""

    idle_timeout: int = _setting(
        1800, _positive_integer, "Seconds before an idle session is logged out (RFC 3501 §5.4)."
    )
    max_literal_size: int = _setting(
        50_000_000, _positive_integer, "Largest literal (APPEND message) accepted, in octets."
    )
    max_connections_per_user: int = _setting(
        20, _positive_integer, "Simultaneous sessions of one user."
    )
    max_connections: int = _setting(
        500, _positive_integer, "Simultaneous IMAP sessions in total, logged in or not."
    )
    max_connections_per_client: int = _setting(
        50, _positive_integer, "Simultaneous IMAP sessions from one client address."
    )
    max_login_failures: int = _setting(
        5, _positive_integer, "Failed LOGIN/AUTHENTICATE attempts before disconnecting."
    )
    allow_plaintext_login_on_loopback: bool = _setting(
        False, _boolean, "Allow LOGIN without TLS from 127.0.0.0/8 and ::1 (testing)."
    )


@dataclass(frozen=True)
class OutboundConfig:
    """``[outbound]``: the queue, retries and how remote mail leaves."""

    retry_schedule: tuple[int, ...] = _setting(
        (60, 300, 900, 1800, 3600, 7200, 14400),
        _retry_schedule,
        "Seconds to wait before each retry; the last interval repeats until max_age.",
    )
    max_age: int = _setting(
        5 * 24 * 3600, _positive_integer, "Seconds after which undelivered mail bounces."
    )
    delay_warning: int = _setting(
        4 * 3600, _integer, "Seconds after which the sender is told of a delay; 0 disables."
    )
    max_concurrency: int = _setting(20, _positive_integer, "Outgoing SMTP sessions in total.")
    max_per_destination: int = _setting(
        4, _positive_integer, "Outgoing SMTP sessions to one destination."
    )
    relay_host: str | None = _setting(
        None,
        _client_endpoint,
        "Smart host for all remote mail, a client endpoint such as "
        "tcp:smtp.example.net:587 (default: deliver to each domain's MX).",
    )
    relay_username: str | None = _setting(
        None, _optional_string, "AUTH user name for the smart host."
    )
    relay_password: str | None = field(
        default=None,
        repr=False,  # never in logs or tracebacks
        metadata={"check": _optional_string, "doc": "AUTH password for the smart host."},
    )
    relay_require_tls: bool = _setting(
        False, _boolean, "Refuse to talk to the smart host without verified TLS."
    )
    nameservers: tuple[str, ...] = _setting(
        (),
        _nameservers,
        'DNS servers as "host:port" (port 53 if omitted); empty: the system\'s resolv.conf.',
    )

    @property
    def nameserver_addresses(self) -> tuple[tuple[str, int], ...]:
        """``nameservers`` as the ``(host, port)`` pairs twisted.names wants."""
        return tuple(_split_host_port(server) for server in self.nameservers)


@dataclass(frozen=True)
class HTTPConfig:
    """``[http]``: limits of the HTTP API."""

    max_upload_size: int = _setting(
        25_000_000, _positive_integer, "Largest request body accepted, in octets (413 beyond)."
    )
    max_connections: int = _setting(
        500, _positive_integer, "Simultaneous HTTP connections in total (http and https)."
    )
    max_connections_per_client: int = _setting(
        50, _positive_integer, "Simultaneous HTTP connections from one client address."
    )


def _no_routes() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True)
class Config:
    """The whole configuration; ``Config()`` is every default."""

    server: ServerConfig = field(default_factory=ServerConfig)
    listeners: ListenersConfig = field(default_factory=ListenersConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    smtp: SMTPConfig = field(default_factory=SMTPConfig)
    imap: IMAPConfig = field(default_factory=IMAPConfig)
    outbound: OutboundConfig = field(default_factory=OutboundConfig)
    routes: Mapping[str, str] = field(default_factory=_no_routes)
    """Domain (lower case) -> client endpoint string for its mail, before any MX lookup."""
    http: HTTPConfig = field(default_factory=HTTPConfig)
    source: str | None = None
    """The file this came from (for logs), or None for defaults only."""


SECTIONS: Mapping[str, type[Any]] = MappingProxyType(
    {
        "server": ServerConfig,
        "listeners": ListenersConfig,
        "tls": TLSConfig,
        "smtp": SMTPConfig,
        "imap": IMAPConfig,
        "outbound": OutboundConfig,
        "http": HTTPConfig,
    }
)
"""Every section with fixed keys, by name; ``[routes]`` is free-form."""


def settings(section: str) -> dict[str, str]:
    """The keys of a section and their documentation (for help texts and tests)."""
    return {f.name: f.metadata["doc"] for f in dataclasses.fields(SECTIONS[section])}


# --- Loading ------------------------------------------------------------------------


_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def _domain(name: str) -> str:
    domain = name.lower().rstrip(".")
    try:
        ascii_name = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise _Invalid(f"{name!r} is not a domain name") from None
    if not all(_LABEL.match(label) for label in ascii_name.split(".")):
        raise _Invalid(f"{name!r} is not a domain name")
    return domain


def _read_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None


# A value with where it came from: (value, origin, came_from_text).
_Sourced = tuple[object, str, bool]


def _gather(
    path: str | None, file_data: Mapping[str, Any], overrides: Mapping[str, object]
) -> dict[str, dict[str, _Sourced]]:
    """Merge the file and the overrides per section, refusing unknown names."""
    known = [*SECTIONS, "routes"]
    merged: dict[str, dict[str, _Sourced]] = {name: {} for name in known}
    origin = path or "<defaults>"
    for section, table in file_data.items():
        if section not in merged:
            raise ConfigError(f"{origin}: unknown section [{section}] (known: {', '.join(known)})")
        if not isinstance(table, dict):
            raise ConfigError(f"{origin}: {section} must be a table [{section}], not a value")
        for key, value in table.items():
            merged[section][key] = (value, origin, False)
    for dotted, value in overrides.items():
        section, dot, key = dotted.partition(".")
        if not dot or not key or section not in merged:
            raise ConfigError(
                f"{COMMAND_LINE}: unknown setting {dotted!r} "
                f"(expected SECTION.KEY with SECTION one of {', '.join(known)})"
            )
        merged[section][key] = (value, COMMAND_LINE, isinstance(value, str))
    return merged


def _build_section(cls: type[Any], name: str, values: Mapping[str, _Sourced]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, (value, origin, from_text) in values.items():
        spec = fields.get(key)
        if spec is None:
            raise ConfigError(
                f"{origin}: unknown key {key!r} in [{name}] (known keys: {', '.join(fields)})"
            )
        try:
            kwargs[key] = spec.metadata["check"](value, from_text)
        except _Invalid as e:
            raise ConfigError(f"{origin}: [{name}] {key}: {e}") from None
    return cls(**kwargs)


def _build_routes(values: Mapping[str, _Sourced]) -> Mapping[str, str]:
    routes: dict[str, str] = {}
    for key, (value, origin, from_text) in values.items():
        try:
            domain = _domain(key)
            endpoint = _client_endpoint(value, from_text)
        except _Invalid as e:
            raise ConfigError(f"{origin}: [routes] {key}: {e}") from None
        if endpoint is None:
            raise ConfigError(f"{origin}: [routes] {key}: needs a client endpoint, not 'none'")
        routes[domain] = endpoint
    return MappingProxyType(routes)


def _check_consistency(config: Config) -> None:
    origin = config.source or COMMAND_LINE
    if config.tls.private_key is not None and config.tls.certificate is None:
        raise ConfigError(f"{origin}: [tls] private_key is set but certificate is not")
    out = config.outbound
    if (out.relay_username is None) != (out.relay_password is None):
        raise ConfigError(
            f"{origin}: [outbound] relay_username and relay_password must be set together"
        )
    if out.relay_host is None and (out.relay_username is not None or out.relay_require_tls):
        raise ConfigError(f"{origin}: [outbound] relay_* settings need relay_host")


def load_config(path: str | None = None, overrides: Mapping[str, object] | None = None) -> Config:
    """
    Read ``path`` (if given) and apply ``overrides`` over it.

    :param overrides: dotted keys (``"server.data_dir"``, ``"listeners.smtp"``,
        ``"routes.example.com"``) to values.  String values are parsed as the
        key's type, so command-line text can set integers, booleans and lists
        (comma-separated).
    :raises ConfigError: with one line naming the file or the command line,
        the section and the key.
    """
    file_data = _read_file(path) if path is not None else {}
    merged = _gather(path, file_data, overrides or {})
    sections = {name: _build_section(cls, name, merged[name]) for name, cls in SECTIONS.items()}
    config = Config(**sections, routes=_build_routes(merged["routes"]), source=path)
    _check_consistency(config)
    return config
