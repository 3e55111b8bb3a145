"""
The HTTP server: one twisted.web resource that dispatches on the route
table, answers every error as JSON, and puts the security headers on every
response; and `make_http_site`, the factory the composition root calls.

Requests are handled as coroutines; a handler never writes to the request
itself (except the event stream), it returns a `Reply`, so an error half-way
can never leave a half-written response.  Anything unexpected is logged with
its traceback and answered with a bare 500: never a traceback to a client.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from io import BytesIO
from typing import Any

from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.resource import Resource

from twistedmail.accounts import Accounts
from twistedmail.delivery import Delivery
from twistedmail.http.api import routes
from twistedmail.http.auth import COOKIE, check_csrf, identify
from twistedmail.http.context import ApiContext, HttpSettings
from twistedmail.http.errors import ApiError, not_found
from twistedmail.http.pages import Pages
from twistedmail.http.routing import (
    STREAMING,
    Call,
    Reply,
    Route,
    WebRequest,
    decode_params,
    split_path,
)
from twistedmail.http.sessions import Sessions
from twistedmail.interfaces import IMailStore
from twistedmail.throttle import LoginThrottle

log = Logger()

#: The API's policy: an API response is data, never a document that runs.
API_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; sandbox"

_COMMON_HEADERS = (
    (b"Server", b"twistedmail"),  # not TwistedWeb's version: nothing to fingerprint
    (b"X-Content-Type-Options", b"nosniff"),
    (b"Referrer-Policy", b"no-referrer"),
    (b"X-Frame-Options", b"DENY"),
    (b"Cross-Origin-Opener-Policy", b"same-origin"),
    (b"Cross-Origin-Resource-Policy", b"same-origin"),
    (b"Permissions-Policy", b"camera=(), microphone=(), geolocation=(), interest-cohort=()"),
    (b"Cache-Control", b"no-store"),
    (b"Content-Security-Policy", API_POLICY.encode()),
)

_BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH", b"DELETE"})

#: Largest body of a request without credentials (a login is a few hundred octets).
ANONYMOUS_MAX_BODY = 64 * 1024


class ApiRequest(server.Request):
    """
    A request that stops buffering its body beyond the upload limit.

    twisted.web would otherwise keep any amount in a temporary file; past
    the limit we discard the rest and the resource answers 413.
    """

    too_large = False
    _received = 0

    def _limit(self) -> int:
        limit: int = self.channel.site.max_body  # type: ignore[attr-defined]
        # A request that carries no credentials at all (the login itself, or
        # a stranger) never needs a big body: cap it, so that anonymous
        # clients cannot make us spool max_upload_size each to disk.
        cookie = self.getCookie(COOKIE)  # type: ignore[no-untyped-call]
        if cookie is None and not self.requestHeaders.hasHeader(b"authorization"):
            return min(limit, ANONYMOUS_MAX_BODY)
        return limit

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self._limit():
            self.too_large = True
            self.content = BytesIO()
            return
        super().gotLength(length)  # type: ignore[no-untyped-call]

    def handleContentChunk(self, data: bytes) -> None:
        if self.too_large:
            return
        self._received += len(data)
        if self._received > self._limit():
            self.too_large = True
            self.content = BytesIO()
            return
        super().handleContentChunk(data)  # type: ignore[no-untyped-call]


class MailSite(server.Site):
    """A `Site` that knows its body limit and never shows tracebacks."""

    def __init__(self, resource: Resource, max_body: int) -> None:
        super().__init__(  # type: ignore[no-untyped-call]
            resource, requestFactory=ApiRequest, parsePOSTFormSubmission=False
        )
        self.max_body = max_body
        self.displayTracebacks = False


class ApiResource(Resource):
    """Every URL of the server, dispatched on the route table."""

    isLeaf = True

    def __init__(self, ctx: ApiContext, table: Sequence[Route]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.ctx = ctx
        self.table = tuple(table)

    def render(self, request: WebRequest) -> Any:
        for name, value in _COMMON_HEADERS:
            request.setHeader(name, value)
        if request.isSecure():
            request.setHeader(b"Strict-Transport-Security", b"max-age=31536000")
        gone: list[bool] = []
        request.notifyFinish().addBoth(lambda _: gone.append(True))
        d = Deferred.fromCoroutine(self._serve(request, gone))
        d.addErrback(self._crashed, request)
        return server.NOT_DONE_YET

    async def _serve(self, request: WebRequest, gone: list[bool]) -> None:
        try:
            reply = await self._dispatch(request)
        except ApiError as e:
            reply = Reply(e.status, e.body(), "application/json", e.headers)
        except Exception:
            log.failure("HTTP {method} {path} failed", method=request.method, path=request.path)
            reply = _internal_error()
        if reply is STREAMING or gone:
            return
        _write(request, reply)

    def _crashed(self, failure: Failure, request: WebRequest) -> None:
        log.failure("Writing the HTTP response failed", failure)
        if not request.finished and not request._disconnected:
            request.loseConnection()

    async def _dispatch(self, request: WebRequest) -> Reply:
        method = request.method.upper()
        lookup = b"GET" if method == b"HEAD" else method
        segments = split_path(request.path)
        allowed: list[str] = []
        for route in self.table:
            raw = route.match(segments)
            if raw is None:
                continue
            if route.method.encode() != lookup:
                allowed.append(route.method)
                continue
            return await self._run(route, raw, request)
        if allowed:
            if "GET" in allowed:
                allowed.append("HEAD")
            raise ApiError(
                405,
                "method_not_allowed",
                "That method is not allowed here.",
                headers=(("Allow", ", ".join(sorted(set(allowed)))),),
            )
        raise not_found()

    async def _run(self, route: Route, raw: Mapping[str, bytes], request: WebRequest) -> Reply:
        if getattr(request, "too_large", False):
            limit = self.ctx.settings.max_upload_size
            raise ApiError(413, "too_large", f"The request body is over {limit} octets.")
        call = Call(request, self.ctx, decode_params(raw), _query(request))
        if route.auth:
            caller = await identify(self.ctx, request)
            check_csrf(request, caller)
            call.user, call.account, call.session_token = caller.user, caller.account, caller.token
        if request.method.upper() in _BODY_METHODS and request.content is not None:
            request.content.seek(0)
            call.body_bytes = request.content.read()
        return await route.handler(call)


def _query(request: WebRequest) -> dict[str, list[str]]:
    query: dict[str, list[str]] = {}
    for key, values in (request.args or {}).items():
        try:
            name = key.decode("utf-8")
            query[name] = [v.decode("utf-8") for v in values]
        except UnicodeDecodeError:
            raise ApiError.bad("query", "query parameters must be UTF-8") from None
    return query


def _internal_error() -> Reply:
    error = ApiError(500, "internal_error", "An internal error occurred.")
    return Reply(500, error.body(), "application/json")


def _write(request: WebRequest, reply: Reply) -> None:
    request.setResponseCode(reply.status)
    for name, value in reply.headers:
        request.setHeader(name.encode("latin-1"), value.encode("latin-1"))
    if reply.status == 204:
        request.responseHeaders.removeHeader(b"content-type")
        request.finish()
        return
    request.setHeader(b"Content-Type", _with_charset(reply.content_type).encode("latin-1"))
    request.setHeader(b"Content-Length", str(len(reply.body)).encode())
    request.write(reply.body)
    request.finish()


def _with_charset(content_type: str) -> str:
    """Our JSON is always UTF-8; other types say their charset themselves."""
    return content_type + "; charset=utf-8" if content_type == "application/json" else content_type


def make_http_site(
    settings: HttpSettings,
    portal: Portal,
    accounts: Accounts,
    store: IMailStore,
    delivery: Delivery,
    clock: IReactorTime,
    reactor: Any,
    health: Callable[[], Mapping[str, bool]] | None = None,
    throttle: LoginThrottle | None = None,
) -> MailSite:
    """
    The HTTP site: JSON API under ``/api/``, the web page at ``/``.

    ``health`` (optional) reports each service's state for ``/healthz``;
    ``throttle`` (optional) is a `LoginThrottle` shared with the other
    protocols, so guesses over IMAP and HTTP count together;
    ``reactor`` is used only for its thread pool (parsing big messages).
    One site serves both the ``http`` and ``https`` listeners; the cookie
    gets ``Secure`` when the request came over TLS.
    """
    ctx = ApiContext(
        settings=settings,
        portal=portal,
        accounts=accounts,
        store=store,
        delivery=delivery,
        clock=clock,
        reactor=reactor,
        sessions=Sessions(
            clock, settings.session_lifetime, settings.session_idle, settings.max_sessions
        ),
        # ``is None``, not ``or``: a LoginThrottle with no entries is falsy.
        throttle=LoginThrottle(
            clock,
            max_failures=settings.max_login_failures,
            window=settings.login_window,
            lockout=settings.login_lockout,
            canonical=accounts.canonical_user,
        )
        if throttle is None
        else throttle,
        health=health,
        pages=Pages.load(),
        routes=routes(),
    )
    return MailSite(ApiResource(ctx, ctx.routes), settings.max_upload_size)
