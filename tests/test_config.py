"""
The configuration loader: defaults, file + overrides, and one clear error
(naming the file or command line, the section and the key) per mistake.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
from pathlib import Path

import pytest

from twistedmail.config import (
    COMMAND_LINE,
    SECTIONS,
    Config,
    ConfigError,
    load_config,
    settings,
)

README = Path(__file__).resolve().parent.parent / "README.md"


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "twistedmail.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def error_of(path: str | None = None, overrides: dict[str, object] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides or {})
    message = str(info.value)
    assert "\n" not in message, "an error is one line"
    return message


# --- Defaults --------------------------------------------------------------------


def test_defaults_are_safe_and_loopback_only():
    config = load_config(None, {})
    assert config.server.data_dir == "./twistedmail-data"
    assert config.server.storage == "maildir"
    assert config.listeners.smtp == "tcp:2525:interface=127.0.0.1"
    assert config.listeners.submission == "tcp:2587:interface=127.0.0.1"
    assert config.listeners.imap == "tcp:1143:interface=127.0.0.1"
    assert config.listeners.http == "tcp:8080:interface=127.0.0.1"
    for role in ("submissions", "imaps", "https"):
        assert getattr(config.listeners, role) is None
    for role in ("smtp", "submission", "imap", "http"):
        assert "interface=127.0.0.1" in getattr(config.listeners, role)
    assert config.tls.certificate is None and config.tls.private_key is None
    assert config.smtp.max_message_size == 25_000_000
    assert config.smtp.max_recipients == 100
    assert config.smtp.idle_timeout == 300
    assert config.smtp.allow_plaintext_auth_on_loopback is False
    assert config.imap.idle_timeout == 1800
    assert config.imap.allow_plaintext_login_on_loopback is False
    assert config.outbound.retry_schedule[0] == 60
    assert config.outbound.max_age == 5 * 24 * 3600
    assert config.outbound.delay_warning == 4 * 3600
    assert config.outbound.relay_host is None
    assert config.outbound.nameservers == ()
    assert dict(config.routes) == {}
    assert config.http.max_upload_size == 25_000_000
    assert config.source is None


def test_defaults_equal_the_bare_dataclasses():
    """``Config()`` is what other parts' tests build; it must match load_config."""
    loaded = load_config(None, {})
    built = Config()
    assert dataclasses.replace(loaded, server=built.server) == built


def test_hostname_defaults_to_fqdn_at_load_time(monkeypatch):
    monkeypatch.setattr(socket, "getfqdn", lambda: "loaded.example.test")
    assert load_config(None, {}).server.hostname == "loaded.example.test"


def test_every_setting_has_documentation():
    for section in SECTIONS:
        for key, doc in settings(section).items():
            assert len(doc) > 10, f"[{section}] {key} needs a doc"


def test_readme_documents_every_setting():
    text = README.read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f"[{section}]" in text
        for key in settings(section):
            assert re.search(rf"`{key}`", text), f"README lacks [{section}] {key}"
    assert "[routes]" in text


def test_config_is_frozen():
    config = load_config(None, {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.server.storage = "memory"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.routes["x.test"] = "tcp:1.2.3.4:25"  # type: ignore[index]


def test_relay_password_is_not_in_repr():
    config = load_config(
        None,
        {
            "outbound.relay_host": "tcp:smarthost.example.test:587",
            "outbound.relay_username": "me",
            "outbound.relay_password": "hunter2",
        },
    )
    assert config.outbound.relay_password == "hunter2"
    assert "hunter2" not in repr(config)


# --- File and overrides ------------------------------------------------------------


FULL = """
[server]
hostname = "mail.crepes.fr"
data_dir = "/var/lib/twistedmail"
storage = "memory"

[listeners]
smtp = "tcp:25"
submission = "none"
submissions = "tcp:465"
imap = 'tcp6:143:interface=\\:\\:1'  # colons escaped, as endpoint strings want
imaps = "tcp:993"
http = "unix:/tmp/twistedmail-test.sock"
https = "none"

[smtp]
max_message_size = 1_000_000
max_recipients = 7
idle_timeout = 60
max_connections = 10
max_connections_per_client = 2
max_auth_failures = 3
allow_plaintext_auth_on_loopback = true

[imap]
idle_timeout = 3600
max_literal_size = 1000
max_connections_per_user = 4
max_login_failures = 2
allow_plaintext_login_on_loopback = true

[outbound]
retry_schedule = [1, 2, 3]
max_age = 100
delay_warning = 0
max_concurrency = 5
max_per_destination = 1
relay_host = "tcp:smarthost.example.test:587"
relay_username = "crepes"
relay_password = "secret"
relay_require_tls = true
nameservers = ["127.0.0.1:5353", "[::1]:53", "192.0.2.1"]

[routes]
"hamburger.edu" = "tcp:127.0.0.1:2626"
"Example.TEST." = "tcp:host=127.0.0.1:port=2727"

[http]
max_upload_size = 12345
"""


def test_a_full_file_is_read(tmp_path):
    path = write(tmp_path, FULL)
    config = load_config(path, {})
    assert config.source == path
    assert config.server == type(config.server)(
        hostname="mail.crepes.fr", data_dir="/var/lib/twistedmail", storage="memory"
    )
    assert config.listeners.smtp == "tcp:25"
    assert config.listeners.submission is None
    assert config.listeners.submissions == "tcp:465"
    assert config.listeners.imap == r"tcp6:143:interface=\:\:1"
    assert config.listeners.http == "unix:/tmp/twistedmail-test.sock"
    assert config.listeners.https is None
    assert config.smtp.max_message_size == 1_000_000
    assert config.smtp.allow_plaintext_auth_on_loopback is True
    assert config.imap.max_literal_size == 1000
    assert config.outbound.retry_schedule == (1, 2, 3)
    assert config.outbound.delay_warning == 0
    assert config.outbound.relay_require_tls is True
    assert config.outbound.nameserver_addresses == (
        ("127.0.0.1", 5353),
        ("::1", 53),
        ("192.0.2.1", 53),
    )
    assert dict(config.routes) == {
        "hamburger.edu": "tcp:127.0.0.1:2626",
        "example.test": "tcp:host=127.0.0.1:port=2727",
    }
    assert config.http.max_upload_size == 12345


def test_overrides_win_over_the_file(tmp_path):
    path = write(tmp_path, FULL)
    config = load_config(
        path,
        {
            "server.data_dir": "D",
            "listeners.smtp": "none",
            "listeners.imaps": "tcp:0:interface=127.0.0.1",
            "routes.hamburger.edu": "tcp:127.0.0.1:1",
        },
    )
    assert config.server.data_dir == "D"
    assert config.server.hostname == "mail.crepes.fr"  # untouched keys keep the file's value
    assert config.listeners.smtp is None
    assert config.listeners.imaps == "tcp:0:interface=127.0.0.1"
    assert config.routes["hamburger.edu"] == "tcp:127.0.0.1:1"


def test_text_overrides_are_parsed_as_the_keys_type():
    config = load_config(
        None,
        {
            "smtp.max_message_size": "10_000",
            "smtp.allow_plaintext_auth_on_loopback": "yes",
            "outbound.retry_schedule": "5, 10,20",
            "outbound.nameservers": "127.0.0.1:53,[::1]:5300",
        },
    )
    assert config.smtp.max_message_size == 10_000
    assert config.smtp.allow_plaintext_auth_on_loopback is True
    assert config.outbound.retry_schedule == (5, 10, 20)
    assert config.outbound.nameservers == ("127.0.0.1:53", "[::1]:5300")


def test_typed_overrides_are_taken_as_they_are():
    config = load_config(
        None, {"smtp.max_recipients": 3, "imap.allow_plaintext_login_on_loopback": True}
    )
    assert config.smtp.max_recipients == 3
    assert config.imap.allow_plaintext_login_on_loopback is True


def test_listener_none_is_case_insensitive():
    assert load_config(None, {"listeners.http": "None"}).listeners.http is None


def test_tls_files_are_taken_when_readable(tmp_path):
    cert = tmp_path / "cert.pem"
    key = tmp_path / "key.pem"
    cert.write_text("x")
    key.write_text("y")
    config = load_config(None, {"tls.certificate": str(cert), "tls.private_key": str(key)})
    assert (config.tls.certificate, config.tls.private_key) == (str(cert), str(key))


# --- Errors --------------------------------------------------------------------------


def test_unknown_key_names_the_file_and_the_key(tmp_path):
    path = write(tmp_path, "[smtp]\nmax_mesage_size = 10\n")
    message = error_of(path)
    assert path in message
    assert "max_mesage_size" in message
    assert "[smtp]" in message
    assert "max_message_size" in message  # the known keys help spot the typo


def test_unknown_section_names_the_file_and_the_section(tmp_path):
    path = write(tmp_path, "[smpt]\nmax_message_size = 10\n")
    message = error_of(path)
    assert path in message and "[smpt]" in message


def test_a_value_where_a_section_belongs(tmp_path):
    path = write(tmp_path, 'server = "x"\n')
    message = error_of(path)
    assert path in message and "server" in message


def test_unknown_override_names_the_command_line():
    message = error_of(None, {"smtp.nonsense": "1"})
    assert message.startswith(COMMAND_LINE)
    assert "nonsense" in message
    message = error_of(None, {"nosection": "1"})
    assert "'nosection'" in message


@pytest.mark.parametrize(
    ("toml", "words"),
    [
        ('[smtp]\nmax_message_size = "25MB"\n', ["max_message_size", "integer", "25MB"]),
        ("[smtp]\nmax_recipients = true\n", ["max_recipients", "integer", "boolean"]),
        ("[smtp]\nmax_recipients = 0\n", ["max_recipients", "greater than 0"]),
        ("[smtp]\nidle_timeout = -5\n", ["idle_timeout", "negative"]),
        ("[smtp]\nidle_timeout = 1.5\n", ["idle_timeout", "integer"]),
        (
            '[imap]\nallow_plaintext_login_on_loopback = "yes"\n',
            ["allow_plaintext", "true or false"],
        ),
        ("[server]\nstorage = 3\n", ["storage", "string"]),
        ('[server]\ndata_dir = ""\n', ["data_dir", "empty"]),
        ('[server]\nhostname = "a b"\n', ["hostname"]),
        ("[outbound]\nretry_schedule = []\n", ["retry_schedule", "at least one"]),
        ("[outbound]\nretry_schedule = [60, 0]\n", ["retry_schedule"]),
        ('[outbound]\nretry_schedule = "60"\n', ["retry_schedule", "list"]),
        ('[outbound]\nnameservers = ["127.0.0.1:99999"]\n', ["nameservers", "port"]),
        ('[outbound]\nnameservers = ["a b:53"]\n', ["nameservers", "host:port"]),
        ("[listeners]\nsmtp = 25\n", ["[listeners] smtp", "string"]),
        ("[listeners]\nimap = []\n", ["[listeners] imap", "list"]),
        (
            '[tls]\ncertificate = "/nonexistent/cert.pem"\n',
            ["certificate", "/nonexistent/cert.pem"],
        ),
    ],
)
def test_bad_values_name_file_section_and_key(tmp_path, toml, words):
    path = write(tmp_path, toml)
    message = error_of(path)
    assert message.startswith(path + ": ")
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    "endpoint",
    [
        "tcp:abc",
        "tcp",
        "tcp:25:bogus=1",
        "nosuchtype:25",
        "tcp:70000",
        "",
        "ssl:993:privateKey=/nonexistent/key.pem",
    ],
)
def test_bad_endpoint_is_a_clear_error_naming_the_key(tmp_path, endpoint):
    path = write(tmp_path, f'[listeners]\nsubmission = "{endpoint}"\n')
    message = error_of(path)
    assert message.startswith(f"{path}: [listeners] submission: ")


def test_bad_endpoint_on_the_command_line():
    message = error_of(None, {"listeners.imap": "tcp:port"})
    assert message.startswith(f"{COMMAND_LINE}: [listeners] imap: bad endpoint 'tcp:port'")


def test_endpoints_of_other_types_are_accepted(tmp_path):
    sock = tmp_path / "mail.sock"
    config = load_config(None, {"listeners.http": f"unix:{sock}", "listeners.imap": "tcp6:0"})
    assert config.listeners.http == f"unix:{sock}"


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("routes.bad_domain", "tcp:127.0.0.1:25", ["[routes] bad_domain", "domain"]),
        ("routes.example.test", "tcp:127.0.0.1", ["[routes] example.test", "client endpoint"]),
        ("routes.example.test", "none", ["[routes] example.test"]),
        ("outbound.relay_host", "bogus:1", ["relay_host"]),
    ],
)
def test_bad_routes_and_relay(key, value, words):
    message = error_of(None, {key: value})
    for word in words:
        assert word in message


def test_relay_credentials_go_together():
    assert "relay_username" in error_of(
        None, {"outbound.relay_host": "tcp:h.example.test:25", "outbound.relay_username": "u"}
    )
    assert "relay_host" in error_of(None, {"outbound.relay_require_tls": "true"})


def test_private_key_needs_a_certificate(tmp_path):
    key = tmp_path / "key.pem"
    key.write_text("x")
    assert "certificate" in error_of(None, {"tls.private_key": str(key)})


def test_missing_file_is_a_clear_error(tmp_path):
    path = str(tmp_path / "missing.toml")
    message = error_of(path)
    assert message == f"cannot read config file {path}: No such file or directory"


def test_a_directory_is_not_a_config_file(tmp_path):
    message = error_of(str(tmp_path))
    assert message.startswith(f"cannot read config file {tmp_path}: ")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_a_clear_error(tmp_path):
    path = write(tmp_path, "")
    os.chmod(path, 0)
    message = error_of(path)
    assert message == f"cannot read config file {path}: Permission denied"


def test_unreadable_certificate_is_named(tmp_path):
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    os.chmod(cert, 0)
    if os.access(cert, os.R_OK):  # root
        pytest.skip("root reads files whatever their mode")
    assert "certificate" in error_of(None, {"tls.certificate": str(cert)})


def test_invalid_toml_names_the_file_and_line(tmp_path):
    path = write(tmp_path, "[server]\nhostname = \n")
    message = error_of(path)
    assert message.startswith(f"{path}: invalid TOML: ")
    assert "line 2" in message


# --- Postmaster and sender identity ----------------------------------------------------


def test_postmaster_and_sender_identity_defaults():
    config = load_config(None, {})
    assert config.server.postmaster is None
    assert config.smtp.enforce_sender_identity is True


def test_postmaster_and_sender_identity_are_read(tmp_path):
    path = write(
        tmp_path,
        '[server]\npostmaster = "Carol@hamburger.edu"\n[smtp]\nenforce_sender_identity = false\n',
    )
    config = load_config(path)
    assert config.server.postmaster == "Carol@hamburger.edu"
    assert config.smtp.enforce_sender_identity is False
    overridden = load_config(path, {"server.postmaster": "", "smtp.enforce_sender_identity": "yes"})
    assert overridden.server.postmaster is None  # empty: unset
    assert overridden.smtp.enforce_sender_identity is True


@pytest.mark.parametrize(
    ("toml", "words"),
    [
        ('[server]\npostmaster = "nobody"\n', ["[server] postmaster", "nobody"]),
        ('[server]\npostmaster = "a b@c.test"\n', ["[server] postmaster"]),
        ('[server]\npostmaster = "root@[127.0.0.1]"\n', ["[server] postmaster", "literal"]),
        ("[server]\npostmaster = 5\n", ["[server] postmaster", "string"]),
        ('[smtp]\nenforce_sender_identity = "no"\n', ["enforce_sender_identity", "true or false"]),
    ],
)
def test_bad_postmaster_and_sender_identity(tmp_path, toml, words):
    path = write(tmp_path, toml)
    message = error_of(path)
    assert message.startswith(path + ": ")
    for word in words:
        assert word in message
