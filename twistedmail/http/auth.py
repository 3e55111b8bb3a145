"""
Who is calling: session tokens (cookie or ``Authorization: Bearer``), HTTP
Basic for scripts, and the login/logout routes.

Every login goes through the same cred portal as SMTP AUTH and IMAP, and
through the same `LoginThrottle` policy (per client address, and per account
except from addresses the account logs in from), so guessing a password over
HTTP is as slow as over IMAP, and failing on purpose cannot lock the owner out.

CSRF: the session cookie is ``HttpOnly; SameSite=Strict``, and a request
authenticated by that cookie that changes anything must also carry either a
JSON content type or an ``X-Requested-With`` header, neither of which a
cross-site HTML form can send (a cross-site script cannot either without a
CORS preflight, which we never grant).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.logger import Logger

from twistedmail.http.context import ApiContext
from twistedmail.http.errors import ApiError, unauthorized
from twistedmail.http.routing import Call, Reply, WebRequest, json_reply
from twistedmail.interfaces import IMailAccount

log = Logger()

COOKIE = b"twistedmail_session"
SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS"})


@dataclass(frozen=True)
class Caller:
    user: str
    account: IMailAccount
    token: str | None
    by_cookie: bool


def client_ip(request: WebRequest) -> str:
    address = request.getClientAddress()
    return str(getattr(address, "host", "unknown"))


def _header(request: WebRequest, name: bytes) -> str | None:
    value = request.getHeader(name)
    return value.decode("latin-1") if value is not None else None


async def identify(ctx: ApiContext, request: WebRequest) -> Caller:
    """The caller of ``request``, or `ApiError` 401 / 429."""
    authorization = _header(request, b"authorization")
    if authorization is not None:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer":
            return _from_token(ctx, value.strip(), by_cookie=False)
        if scheme.lower() == "basic":
            login, password = _basic(value.strip())
            user, account = await log_in(ctx, request, login, password)
            return Caller(user, account, None, by_cookie=False)
        raise unauthorized()
    cookie = request.getCookie(COOKIE)
    if cookie:
        return _from_token(ctx, cookie.decode("latin-1"), by_cookie=True)
    raise unauthorized()


def _from_token(ctx: ApiContext, token: str, by_cookie: bool) -> Caller:
    session = ctx.sessions.get(token)
    if session is None:
        raise unauthorized()
    if ctx.accounts.password_hash(session.user) != session.credential:
        # The user was removed or their password changed (perhaps because it
        # leaked): every session opened with the old one ends, as a new
        # IMAP login with it would fail.
        ctx.sessions.end(token)
        raise unauthorized()
    return Caller(session.user, session.account, token, by_cookie)


def _basic(value: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise unauthorized() from None
    login, sep, password = decoded.partition(":")
    if not sep:
        raise unauthorized()
    return login, password


async def log_in(
    ctx: ApiContext, request: WebRequest, login: str, password: str
) -> tuple[str, IMailAccount]:
    """
    Check a password through the shared portal, under the throttle.

    A locked-out address, or a locked account from an address it has not
    logged in from, is refused before the password is even looked at, right
    or wrong, so a guesser learns nothing more.
    """
    # The throttle counts by address and by canonical user, so spellings of
    # one name (case, full-width letters, decomposed accents) share a count.
    address = client_ip(request)
    if not ctx.throttle.allowed(address, login):
        raise ApiError(
            429,
            "too_many_attempts",
            "Too many failed logins; try again later.",
            headers=(("Retry-After", str(int(ctx.settings.login_lockout))),),
        )
    try:
        _iface, avatar, _logout = await ctx.portal.login(
            UsernamePassword(login.encode("utf-8"), password.encode("utf-8")), None, IMailAccount
        )
    except UnauthorizedLogin:
        ctx.throttle.failed(address, login)
        log.info("HTTP login failed from {client}", client=address)
        raise ApiError(401, "bad_credentials", "Wrong address or password.") from None
    ctx.throttle.succeeded(address, login)
    account = IMailAccount(avatar)
    return str(account.user), account


def check_csrf(request: WebRequest, caller: Caller) -> None:
    """Refuse a cookie-authenticated change that a cross-site form could forge."""
    if not caller.by_cookie or request.method in SAFE_METHODS:
        return
    if request.getHeader(b"x-requested-with") is not None:
        return
    content_type = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
    if content_type == b"application/json":
        return
    raise ApiError(
        403,
        "csrf",
        "A cookie-authenticated change needs a JSON body or an X-Requested-With header.",
    )


def _cookie(request: WebRequest, value: str, max_age: int) -> None:
    request.addCookie(
        COOKIE,
        value.encode("ascii"),
        path=b"/",
        max_age=str(max_age).encode(),
        secure=request.isSecure(),
        httpOnly=True,
        sameSite="strict",
    )


# --- Routes ------------------------------------------------------------------


async def create_session(call: Call) -> Reply:
    """``POST /api/session``: log in, answer the token and set the cookie."""
    request = call.request
    content_type = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
    if content_type != b"application/json" and request.getHeader(b"x-requested-with") is None:
        # Login CSRF: a cross-site form must not log a victim into our account.
        raise ApiError(415, "json_required", "Send the credentials as application/json.")
    body = call.json()
    login = body.get("address", body.get("user"))
    password = body.get("password")
    if not isinstance(login, str) or not login:
        raise ApiError.bad("address", "address is required")
    if not isinstance(password, str):
        raise ApiError.bad("password", "password is required")
    user, account = await log_in(call.ctx, request, login, password)
    token = call.ctx.sessions.create(user, account, call.ctx.accounts.password_hash(user))
    lifetime = int(call.ctx.settings.session_lifetime)
    _cookie(request, token, lifetime)
    return json_reply(
        {"token": token, "user": user, "expires_in": lifetime, "addresses": _addresses(call, user)},
        201,
    )


async def get_session(call: Call) -> Reply:
    """``GET /api/session``: who the caller is and which From addresses are theirs."""
    assert call.user is not None
    return json_reply({"user": call.user, "addresses": _addresses(call, call.user)})


async def delete_session(call: Call) -> Reply:
    """``DELETE /api/session``: end the session (Basic callers have none to end)."""
    if call.session_token is not None:
        call.ctx.sessions.end(call.session_token)
    _cookie(call.request, "", 0)
    return Reply(204, b"")


def _addresses(call: Call, user: str) -> list[str]:
    return sorted(call.ctx.accounts.addresses_of(user))
