"""
Logging in and out over HTTP: tokens, the cookie, Basic, the throttle, CSRF,
and the security headers every response carries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet.threads import deferToThread

from tests.http.http_harness import ALICE, BOB, PASSWORDS, Server, call, start_server

#: pytest_twisted.ensureDeferred, typed (the package has no type hints).
ensure_deferred: Callable[[Callable[..., Any]], Callable[..., Any]] = pytest_twisted.ensureDeferred

SECURITY_HEADERS = (
    "content-security-policy",
    "x-content-type-options",
    "referrer-policy",
    "x-frame-options",
)


@ensure_deferred
async def test_login_answers_token_and_sets_strict_httponly_cookie(server: Server) -> None:
    client = server.client()
    r = await call(
        client, "POST", "/api/session", json_body={"address": ALICE, "password": PASSWORDS[ALICE]}
    )
    assert r.status == 201
    body = r.json()
    assert body["user"] == ALICE
    assert "al@example.test" in body["addresses"]
    assert len(body["token"]) >= 40
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("twistedmail_session=" + body["token"])
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower() and "Path=/" in cookie
    assert "Secure" not in cookie  # plain http: a Secure cookie would never come back
    # The cookie alone authenticates (the page's way).
    r = await call(client, "GET", "/api/session")
    assert r.status == 200 and r.json()["user"] == ALICE


@ensure_deferred
async def test_bearer_token_and_logout(memory_server: Server) -> None:
    client = await memory_server.login()
    assert (await call(client, "GET", "/api/mailboxes")).status == 200
    r = await call(client, "DELETE", "/api/session")
    assert r.status == 204
    r = await call(client, "GET", "/api/mailboxes")
    assert r.status == 401 and r.error_code == "unauthorized"
    assert "www-authenticate" in r.headers


@ensure_deferred
async def test_basic_auth_for_scripts(memory_server: Server) -> None:
    client = memory_server.client(basic=(BOB, PASSWORDS[BOB]))
    r = await call(client, "GET", "/api/session")
    assert r.status == 200 and r.json()["user"] == BOB
    wrong = memory_server.client(basic=(BOB, "nope"))
    r = await call(wrong, "GET", "/api/mailboxes")
    assert r.status == 401 and r.error_code == "bad_credentials"


@ensure_deferred
async def test_every_api_route_needs_credentials(memory_server: Server) -> None:
    client = memory_server.client()
    for method, path in [
        ("GET", "/api/mailboxes"),
        ("POST", "/api/mailboxes"),
        ("GET", "/api/mailboxes/INBOX/messages"),
        ("GET", "/api/mailboxes/INBOX/messages/1"),
        ("GET", "/api/mailboxes/INBOX/messages/1/raw"),
        ("DELETE", "/api/mailboxes/INBOX/messages/1"),
        ("POST", "/api/messages"),
        ("GET", "/api/events"),
    ]:
        r = await call(client, method, path, json_body={})
        assert r.status == 401, (method, path, r.status)
        assert r.error_code == "unauthorized"
    bogus = memory_server.client(token="not-a-token")
    assert (await call(bogus, "GET", "/api/mailboxes")).status == 401
    cookie = memory_server.client(cookie="twistedmail_session=forged")
    assert (await call(cookie, "GET", "/api/mailboxes")).status == 401


@ensure_deferred
async def test_bad_login_input_names_the_field(memory_server: Server) -> None:
    client = memory_server.client()
    r = await call(client, "POST", "/api/session", json_body={"password": "x"})
    assert r.status == 400 and r.json()["error"]["field"] == "address"
    r = await call(client, "POST", "/api/session", json_body={"address": ALICE})
    assert r.status == 400 and r.json()["error"]["field"] == "password"
    r = await call(
        client,
        "POST",
        "/api/session",
        body=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert r.status == 400 and r.json()["error"]["field"] == "body"
    r = await call(
        client,
        "POST",
        "/api/session",
        body=b"[" * 50_000,
        headers={"Content-Type": "application/json"},
    )
    assert r.status == 400 and r.json()["error"]["field"] == "body"
    # A cross-site HTML form cannot send JSON: form-encoded logins are refused.
    r = await call(
        client,
        "POST",
        "/api/session",
        body=b"address=a&password=b",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status == 415


@ensure_deferred
async def test_failed_logins_are_throttled_even_with_the_right_password(
    memory_server: Server,
) -> None:
    client = memory_server.client()
    for _ in range(5):
        r = await call(
            client, "POST", "/api/session", json_body={"address": ALICE, "password": "guess"}
        )
        assert r.status == 401
    r = await call(
        client, "POST", "/api/session", json_body={"address": ALICE, "password": PASSWORDS[ALICE]}
    )
    assert r.status == 429 and r.error_code == "too_many_attempts"
    assert int(r.headers["retry-after"]) > 0


@ensure_deferred
async def test_cookie_changes_need_json_or_custom_header(memory_server: Server) -> None:
    """CSRF: a cross-site form can send the cookie, but neither JSON nor our header."""
    client = memory_server.client()
    r = await call(
        client, "POST", "/api/session", json_body={"address": ALICE, "password": PASSWORDS[ALICE]}
    )
    assert client.cookie is not None
    r = await call(
        client,
        "POST",
        "/api/mailboxes",
        body=b"name=Evil",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status == 403 and r.error_code == "csrf"
    r = await call(client, "DELETE", "/api/mailboxes/Archive")
    assert r.status == 403 and r.error_code == "csrf"
    r = await call(
        client, "DELETE", "/api/mailboxes/Archive", headers={"X-Requested-With": "fetch"}
    )
    assert r.status == 204
    r = await call(client, "POST", "/api/mailboxes", json_body={"name": "Fine"})
    assert r.status == 201


@ensure_deferred
async def test_security_headers_on_every_response(memory_server: Server) -> None:
    client = memory_server.client()
    token_client = await memory_server.login()
    for who, method, path in [
        (client, "GET", "/"),
        (client, "GET", "/app.js"),
        (client, "GET", "/healthz"),
        (client, "GET", "/api/openapi.json"),
        (client, "GET", "/api/mailboxes"),  # 401
        (client, "GET", "/nope"),  # 404
        (token_client, "GET", "/api/mailboxes"),
        (token_client, "PUT", "/api/mailboxes"),  # 405
    ]:
        r = await call(who, method, path)
        for header in SECURITY_HEADERS:
            assert header in r.headers, (path, header)
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert r.headers["server"] == "twistedmail"
        if r.status >= 400:
            assert r.headers["content-type"].startswith("application/json")
            assert "Traceback" not in r.body.decode()
    page = await call(client, "GET", "/")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy


@ensure_deferred
async def test_unknown_route_and_wrong_method(memory_server: Server) -> None:
    client = await memory_server.login()
    r = await call(client, "GET", "/api/nothing")
    assert r.status == 404 and r.error_code == "not_found"
    r = await call(client, "PUT", "/api/mailboxes")
    assert r.status == 405 and "GET" in r.headers["allow"] and "POST" in r.headers["allow"]


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[Server]:
    yield from start_server("memory", tmp_path, tls=True)


@ensure_deferred
async def test_over_https_the_cookie_is_secure_and_hsts_is_sent(https_server: Server) -> None:
    client = https_server.client()
    login = {"address": ALICE, "password": PASSWORDS[ALICE]}
    r = await call(client, "POST", "/api/session", json_body=login)
    assert r.status == 201
    assert "Secure" in r.headers["set-cookie"].split("; ")
    assert r.headers["strict-transport-security"].startswith("max-age=")
    r = await call(client, "GET", "/api/mailboxes")
    assert r.status == 200


@ensure_deferred
async def test_head_answers_like_get_without_a_body(memory_server: Server) -> None:
    client = await memory_server.login()
    get = await call(client, "GET", "/api/mailboxes")
    head = await call(client, "HEAD", "/api/mailboxes")
    assert head.status == 200 and head.body == b""
    assert head.headers["content-length"] == get.headers["content-length"]


@ensure_deferred
async def test_password_change_or_removal_ends_sessions(memory_server: Server) -> None:
    alice = await memory_server.login(ALICE)
    bob = await memory_server.login(BOB)
    await deferToThread(memory_server.accounts.set_password, ALICE, "new secret")
    r = await call(alice, "GET", "/api/mailboxes")
    assert r.status == 401
    await deferToThread(memory_server.accounts.remove_user, BOB)
    assert (await call(bob, "GET", "/api/mailboxes")).status == 401
