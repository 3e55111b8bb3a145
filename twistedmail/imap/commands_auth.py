"""
Commands valid in any state, and those that log in (RFC 3501 §6.1, §6.2),
plus the session-level extensions ID (RFC 2971), ENABLE (RFC 5161) and
NAMESPACE (RFC 2342).
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin

from twistedmail import __version__
from twistedmail.imap import wire
from twistedmail.imap.dispatch import ANY, AUTH, NOT_AUTH, CommandSpec, State
from twistedmail.imap.errors import Reply, bad, no, ok
from twistedmail.imap.parser import AuthenticateArgs, Command, EnableArgs, LoginArgs
from twistedmail.interfaces import IMailAccount

if TYPE_CHECKING:  # pragma: no cover
    from twistedmail.imap.session import IMAPSession

#: What we offer once logged in; each is advertised only because it is
#: complete (the issue's rule).
EXTENSIONS = (
    "IMAP4rev1",
    "LITERAL+",
    "SASL-IR",
    "ID",
    "ENABLE",
    "IDLE",
    "NAMESPACE",
    "UNSELECT",
    "CHILDREN",
    "SPECIAL-USE",
    "CREATE-SPECIAL-USE",
    "LIST-EXTENDED",
    "LIST-STATUS",
    "UIDPLUS",
    "MOVE",
    "ESEARCH",
    "SEARCHRES",
    "CONDSTORE",
    "QRESYNC",
    "STATUS=SIZE",
)


def capabilities(session: IMAPSession) -> list[str]:
    caps = list(EXTENSIONS)
    caps.append(f"APPENDLIMIT={session.settings.max_literal_size}")
    if session.state is State.NOT_AUTHENTICATED:
        if session.server.tls_options is not None and not session.secure:
            caps.append("STARTTLS")
        if session.plaintext_allowed():
            caps += ["AUTH=PLAIN", "AUTH=LOGIN"]
        else:
            # RFC 3501 §6.2.3: LOGIN is refused until TLS is up.
            caps.append("LOGINDISABLED")
    return caps


async def capability(session: IMAPSession, command: Command) -> Reply:
    session.untagged(b"CAPABILITY " + " ".join(capabilities(session)).encode())
    return ok("CAPABILITY completed")


async def noop(session: IMAPSession, command: Command) -> Reply:
    # The pending updates go out before the tagged reply (RFC 3501 §6.1.2).
    return ok("NOOP completed")


async def logout(session: IMAPSession, command: Command) -> Reply:
    session.untagged(b"BYE Logging out")
    session.state = State.LOGOUT
    return ok("LOGOUT completed")


async def starttls(session: IMAPSession, command: Command) -> Reply:
    if session.server.tls_options is None or session.secure:
        return bad("STARTTLS not available")
    session.after_reply(session.start_tls)
    return ok("Begin TLS negotiation now")


async def login(session: IMAPSession, command: Command) -> Reply:
    args = command.args
    assert isinstance(args, LoginArgs)
    if not session.plaintext_allowed():
        return no("Use STARTTLS first", "PRIVACYREQUIRED")
    return await _login(session, args.user, args.password)


async def authenticate(session: IMAPSession, command: Command) -> Reply:
    """RFC 3501 §6.2.2 with RFC 4959 initial responses; PLAIN (RFC 4616) and LOGIN."""
    args = command.args
    assert isinstance(args, AuthenticateArgs)
    if args.mechanism not in ("PLAIN", "LOGIN"):
        return no("Unsupported authentication mechanism", "CANNOT")
    if not session.plaintext_allowed():
        return no("Use STARTTLS first", "PRIVACYREQUIRED")
    if args.mechanism == "PLAIN":
        response = await _response(session, args.initial, b"")
        if isinstance(response, Reply):
            return response
        fields = response.split(b"\x00")
        if len(fields) != 3:
            return bad("Malformed PLAIN response")
        authzid, user, password = fields
        if authzid and authzid != user:
            return no("Cannot log in as another user", "AUTHORIZATIONFAILED")
    else:
        response = await _response(session, args.initial, base64.b64encode(b"Username:"))
        if isinstance(response, Reply):
            return response
        user = response
        response = await _response(session, None, base64.b64encode(b"Password:"))
        if isinstance(response, Reply):
            return response
        password = response
    try:
        return await _login(session, user.decode("utf-8"), password.decode("utf-8"))
    except UnicodeDecodeError:
        return no("Authentication failed", "AUTHENTICATIONFAILED")


async def _response(session: IMAPSession, initial: bytes | None, challenge: bytes) -> bytes | Reply:
    """One SASL client response, decoded; a `Reply` if cancelled or malformed."""
    if initial is None:
        session.continuation(challenge)
        line = await session.read_line()
    else:
        line = b"" if initial == b"=" else initial
    if line.strip() == b"*":
        return bad("Authentication cancelled")
    try:
        return base64.b64decode(line.strip(), validate=True)
    except (binascii.Error, ValueError):
        return bad("Invalid base64")


async def _login(session: IMAPSession, user: str, password: str) -> Reply:
    server = session.server
    key = session.peer_host
    # Before the password is checked: a locked address, or a locked account
    # from an address that has not logged in to it before, learns nothing.
    if not server.throttle.allowed(key, user):
        return no("Too many failed logins; try again later", "UNAVAILABLE")
    credentials = UsernamePassword(user.encode("utf-8"), password.encode("utf-8"))
    try:
        _, avatar, logout_avatar = await server.portal.login(credentials, None, IMailAccount)
    except UnauthorizedLogin:
        server.throttle.failed(key, user)
        return no("Authentication failed", "AUTHENTICATIONFAILED")
    if session.state is not State.NOT_AUTHENTICATED:
        logout_avatar()  # the client went away meanwhile
        return no("Connection closed")
    assert IMailAccount.providedBy(avatar)
    refused = session.logged_in(avatar, logout_avatar)
    if refused is not None:
        return refused
    server.throttle.succeeded(key, user)
    return ok("Logged in", "CAPABILITY " + " ".join(capabilities(session)))


async def id_(session: IMAPSession, command: Command) -> Reply:
    """RFC 2971: say who we are; what the client says is not needed."""
    fields = [b'"name"', b'"twistedmail"', b'"version"', wire.quoted(__version__.encode())]
    session.untagged(b"ID " + wire.paren_list(fields))
    return ok("ID completed")


async def enable(session: IMAPSession, command: Command) -> Reply:
    """RFC 5161: CONDSTORE and QRESYNC are the extensions here that need enabling."""
    args = command.args
    assert isinstance(args, EnableArgs)
    enabled = []
    if "CONDSTORE" in args.capabilities:
        session.condstore = True
        enabled.append(b"CONDSTORE")
    if "QRESYNC" in args.capabilities:
        # RFC 7162 §3.2.3: QRESYNC implies CONDSTORE.
        session.condstore = session.qresync = True
        enabled.append(b"QRESYNC")
    session.untagged(b" ".join([b"ENABLED", *enabled]))
    return ok("ENABLE completed")


async def namespace(session: IMAPSession, command: Command) -> Reply:
    """RFC 2342: one personal namespace, no prefix, ``/`` as delimiter."""
    session.untagged(b'NAMESPACE (("" "/")) NIL NIL')
    return ok("NAMESPACE completed")


COMMANDS = {
    "CAPABILITY": CommandSpec(capability, ANY),
    "NOOP": CommandSpec(noop, ANY),
    "LOGOUT": CommandSpec(logout, ANY),
    "ID": CommandSpec(id_, ANY),
    "STARTTLS": CommandSpec(starttls, NOT_AUTH),
    "LOGIN": CommandSpec(login, NOT_AUTH),
    "AUTHENTICATE": CommandSpec(authenticate, NOT_AUTH),
    "ENABLE": CommandSpec(enable, AUTH),
    "NAMESPACE": CommandSpec(namespace, AUTH),
}
