"""
The SASL exchanges SMTP AUTH offers: PLAIN (RFC 4616) and LOGIN (the
de-facto mechanism of draft-murchison-sasl-login), as small state machines
that turn client responses into a user name and password.

They only decode; checking the password is the cred portal's job, and the
session turns `SaslError` into its reply.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from twistedmail.smtp import replies
from twistedmail.smtp.replies import Reply

MECHANISMS = ("PLAIN", "LOGIN")


class SaslError(Exception):
    """The exchange ends with ``reply``; ``counts`` if it is a failed login."""

    def __init__(self, reply: Reply, counts: bool = False) -> None:
        super().__init__(reply.lines[0])
        self.reply = reply
        self.counts = counts


@dataclass(frozen=True, slots=True)
class Challenge:
    """Send ``334 <text>`` (already base64) and wait for a response."""

    text: str


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str = ""

    def __repr__(self) -> str:  # never show a password in a log or traceback
        return f"Credentials({self.username!r}, <password>)"


def _decode(response: str) -> bytes:
    """RFC 4954 §4: ``*`` cancels, ``=`` is an empty response."""
    if response == "*":
        raise SaslError(replies.AUTH_CANCELLED)
    if response == "=":
        return b""
    try:
        return base64.b64decode(response.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise SaslError(replies.AUTH_BAD_BASE64) from None


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslError(replies.AUTH_BAD_BASE64) from None


class Plain:
    """``[authzid] NUL authcid NUL passwd`` in one response."""

    def step(self, response: str | None) -> Challenge | Credentials:
        if response is None:
            return Challenge("")
        parts = _decode(response).split(b"\0")
        if len(parts) != 3:
            raise SaslError(replies.AUTH_BAD_BASE64)
        authzid, authcid, password = (_text(p) for p in parts)
        # We support no proxy authorisation: an authzid must name the same user.
        if not authcid or (authzid and authzid.lower() != authcid.lower()):
            raise SaslError(replies.AUTH_FAILED, counts=True)
        return Credentials(authcid, password)


class Login:
    """``Username:`` then ``Password:``, each answered in base64."""

    def __init__(self) -> None:
        self._username: str | None = None

    def step(self, response: str | None) -> Challenge | Credentials:
        if response is None:
            return Challenge(base64.b64encode(b"Username:").decode())
        value = _text(_decode(response))
        if self._username is None:
            self._username = value
            return Challenge(base64.b64encode(b"Password:").decode())
        return Credentials(self._username, value)


Mechanism = Plain | Login


def start(name: str) -> Mechanism:
    """The exchange for ``name``; :raises SaslError: 504 for another mechanism."""
    upper = name.upper()
    if upper == "PLAIN":
        return Plain()
    if upper == "LOGIN":
        return Login()
    raise SaslError(replies.UNKNOWN_MECHANISM)
