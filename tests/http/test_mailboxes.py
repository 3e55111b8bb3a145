"""``/api/mailboxes``: list with counters, create, rename, delete, and their errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest_twisted  # type: ignore[import-untyped]

from tests.http.http_harness import ALICE, BOB, Server, call, message

#: pytest_twisted.ensureDeferred, typed (the package has no type hints).
ensure_deferred: Callable[[Callable[..., Any]], Callable[..., Any]] = pytest_twisted.ensureDeferred


def by_name(listing: dict[str, Any]) -> dict[str, Any]:
    return {m["name"]: m for m in listing["mailboxes"]}


@ensure_deferred
async def test_list_has_special_use_and_counters(server: Server) -> None:
    await server.deliver(ALICE, message("one"))
    await server.deliver(ALICE, message("two"))
    client = await server.login()
    r = await call(client, "GET", "/api/mailboxes")
    assert r.status == 200
    boxes = by_name(r.json())
    assert next(iter(boxes)) == "INBOX"
    assert boxes["INBOX"]["total"] == 2 and boxes["INBOX"]["unseen"] == 2
    assert boxes["INBOX"]["size"] == len(message("one")) + len(message("two"))
    assert boxes["Sent"]["special_use"] == "sent"
    assert boxes["Trash"]["special_use"] == "trash"
    assert boxes["INBOX"]["special_use"] is None


@ensure_deferred
async def test_create_rename_delete_with_hierarchy(server: Server) -> None:
    client = await server.login()
    r = await call(client, "POST", "/api/mailboxes", json_body={"name": "Work/Projects"})
    assert r.status == 201 and r.json()["name"] == "Work/Projects"
    assert r.json()["total"] == 0
    # A name with the delimiter travels as one %2F-encoded path segment.
    r = await call(
        client, "PATCH", "/api/mailboxes/Work%2FProjects", json_body={"name": "Work/Done"}
    )
    assert r.status == 200 and r.json()["name"] == "Work/Done"
    names = by_name((await call(client, "GET", "/api/mailboxes")).json())
    assert "Work/Done" in names and "Work/Projects" not in names
    assert names["Work/Done"]["subscribed"]
    r = await call(client, "PATCH", "/api/mailboxes/Work%2FDone", json_body={"subscribed": False})
    assert r.status == 200 and r.json()["subscribed"] is False
    r = await call(client, "PATCH", "/api/mailboxes/Work%2FDone", json_body={"subscribed": "no"})
    assert r.status == 400 and r.json()["error"]["field"] == "subscribed"
    r = await call(client, "DELETE", "/api/mailboxes/Work")
    assert r.status == 409 and r.error_code == "mailbox_has_children"
    r = await call(client, "DELETE", "/api/mailboxes/Work%2FDone")
    assert r.status == 204 and r.body == b""
    r = await call(client, "DELETE", "/api/mailboxes/Work%2FDone")
    assert r.status == 404 and r.error_code == "no_such_mailbox"


@ensure_deferred
async def test_utf8_mailbox_names(server: Server) -> None:
    client = await server.login()
    r = await call(client, "POST", "/api/mailboxes", json_body={"name": "Rechnungen/Übersicht"})
    assert r.status == 201
    r = await call(client, "GET", "/api/mailboxes/Rechnungen%2F%C3%9Cbersicht/messages")
    assert r.status == 200 and r.json()["mailbox"] == "Rechnungen/Übersicht"


@ensure_deferred
async def test_mailbox_errors(server: Server) -> None:
    client = await server.login()
    r = await call(client, "POST", "/api/mailboxes", json_body={"name": "Sent"})
    assert r.status == 409 and r.error_code == "mailbox_exists"
    r = await call(client, "POST", "/api/mailboxes", json_body={"name": "a//b"})
    assert r.status == 400 and r.json()["error"]["field"] == "name"
    r = await call(client, "POST", "/api/mailboxes", json_body={"name": "../../etc"})
    assert r.status == 400
    r = await call(client, "POST", "/api/mailboxes", json_body={"nom": "x"})
    assert r.status == 400 and r.json()["error"]["field"] == "name"
    r = await call(
        client, "POST", "/api/mailboxes", json_body={"name": "X", "special_use": "bogus"}
    )
    assert r.status == 400 and r.json()["error"]["field"] == "special_use"
    r = await call(client, "DELETE", "/api/mailboxes/INBOX")
    assert r.status == 403 and r.error_code == "not_allowed"
    r = await call(client, "PATCH", "/api/mailboxes/Nope", json_body={"name": "Other"})
    assert r.status == 404
    r = await call(client, "PATCH", "/api/mailboxes/Archive", json_body={"name": "Sent"})
    assert r.status == 409
    r = await call(client, "GET", "/api/mailboxes/%FF/messages")
    assert r.status == 400 and r.json()["error"]["field"] == "mailbox"


@ensure_deferred
async def test_each_user_sees_only_their_own_mailboxes(server: Server) -> None:
    alice = await server.login(ALICE)
    bob = await server.login(BOB)
    await call(alice, "POST", "/api/mailboxes", json_body={"name": "Secret"})
    names = by_name((await call(bob, "GET", "/api/mailboxes")).json())
    assert "Secret" not in names
    r = await call(bob, "GET", "/api/mailboxes/Secret/messages")
    assert r.status == 404
    r = await call(bob, "DELETE", "/api/mailboxes/Secret")
    assert r.status == 404
    assert "Secret" in by_name((await call(alice, "GET", "/api/mailboxes")).json())
