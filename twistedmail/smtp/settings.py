"""
The listener roles and the limits an SMTP session enforces.

Protocol code never reads the configuration file: `twistedmail.service`
maps the ``[smtp]`` section onto `SmtpSettings`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(enum.Enum):
    """Which listener a session came in on."""

    MX = "smtp"
    SUBMISSION = "submission"
    SUBMISSIONS = "submissions"


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """Limits and policy; `twistedmail.service` maps the ``[smtp]`` config here."""

    max_message_size: int = 25_000_000
    max_recipients: int = 100
    idle_timeout: float = 300.0  # RFC 5321 §4.5.3.2.7: at least 5 minutes
    max_connections: int = 200
    max_connections_per_client: int = 20
    max_auth_failures: int = 5
    allow_plaintext_auth_on_loopback: bool = False
    # RFC 5321 §4.5.3.1.4 allows 512; extensions (DSN ORCPT/ENVID, UTF-8
    # addresses) lengthen MAIL/RCPT, so allow as much as Postfix does.
    max_command_line: int = 2048
    # RFC 5321 §4.5.3.1.6, including the CRLF.
    max_text_line: int = 1000
    # Protocol errors (500-504) before the session is dropped with 421.
    max_errors: int = 20
    # RFC 6409 §6.1: authenticated users send only as their own addresses.
    enforce_sender_identity: bool = True


#: RFC 4954 §4: an AUTH command or SASL response may be 12288 octets.
