"""
``/api/events`` (Server-Sent Events from the store's change events),
``/healthz``, and the OpenAPI document checked against the live server.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread

from tests.http.http_harness import (
    ALICE,
    BOB,
    SETTINGS,
    Server,
    call,
    message,
    start_server,
)
from twistedmail.model import SEEN, FlagMode

#: pytest_twisted.ensureDeferred, typed (the package has no type hints).
ensure_deferred: Callable[[Callable[..., Any]], Callable[..., Any]] = pytest_twisted.ensureDeferred


def read_events(
    port: int, token: str | None, wanted: int, ready: Deferred[None]
) -> list[tuple[str, dict[str, Any]]]:
    """Connect, fire ``ready`` (from the reactor) on the ready event, then collect ``wanted``."""
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/api/events", headers={"Authorization": f"Bearer {token}"})
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type", "").startswith("text/event-stream")
    events: list[tuple[str, dict[str, Any]]] = []
    name = None
    try:
        while len(events) < wanted + 1:
            line = response.fp.readline().decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: ") and name is not None:
                events.append((name, json.loads(line[6:])))
                if name == "ready":
                    reactor.callFromThread(ready.callback, None)
                name = None
    finally:
        conn.close()
    return events[1:]


@ensure_deferred
async def test_event_stream_reports_store_changes(server: Server) -> None:
    client = await server.login()
    ready: Deferred[None] = Deferred()
    reading = deferToThread(read_events, server.port, client.token, 4, ready)
    await ready
    uid = await server.deliver(ALICE, message("live"))
    account = await server.account(ALICE)
    await account.set_flags("INBOX", [uid], [SEEN], FlagMode.ADD)
    await account.create_mailbox("Later")
    # Another user's mail is not on Alice's stream.
    await server.deliver(BOB, message("for bob", to=BOB))
    r = await call(client, "DELETE", f"/api/mailboxes/INBOX/messages/{uid}?permanent=1")
    assert r.status == 200
    events = await reading
    assert events[0] == (
        "message_added",
        {"mailbox": "INBOX", "uidvalidity": events[0][1]["uidvalidity"], "uids": [uid]},
    )
    assert events[1][0] == "flags_changed"
    assert events[1][1]["messages"] == [{"uid": uid, "flags": ["\\Seen"]}]
    assert events[2] == ("mailbox_created", {"mailbox": "Later"})
    # The API's own delete arrives as the same event IMAP IDLE would see.
    assert events[3][0] in ("flags_changed", "messages_expunged")


@ensure_deferred
async def test_healthz_needs_no_login(memory_server: Server) -> None:
    r = await call(memory_server.client(), "GET", "/healthz")
    assert r.status == 200 and r.json()["status"] == "ok"


def _fill(path: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    return path


@ensure_deferred
async def test_openapi_documents_exactly_the_routes_that_answer(memory_server: Server) -> None:
    """Every documented method and path is served (never 404 no-route or 405)."""
    uid = await memory_server.deliver(ALICE, message("doc"))
    client = await memory_server.login()
    r = await call(memory_server.client(), "GET", "/api/openapi.json")
    assert r.status == 200
    document = r.json()
    assert document["openapi"].startswith("3.1")
    values = {"mailbox": "Archive", "uid": str(uid), "n": "0"}
    operations = [
        (method.upper(), path, operation)
        for path, by_method in document["paths"].items()
        for method, operation in by_method.items()
    ]
    # Destructive calls last, logging out very last, so the others see live data.
    operations.sort(key=lambda o: (o[1] == "/api/session" and o[0] == "DELETE", o[0] == "DELETE"))
    seen = 0
    for method, path, operation in operations:
        assert operation["responses"], (method, path)
        in_path = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
        assert in_path == {s[1:-1] for s in path.split("/") if s.startswith("{")}
        if method == "GET" and path.endswith("/events"):
            continue  # a stream: its test is above
        target = _fill(path, {**values, "mailbox": "INBOX"} if "{uid}" in path else values)
        r = await call(client, method, target, json_body={})
        assert r.status != 405, (method, path)
        assert r.error_code != "not_found", (method, path, r.body)
        assert str(r.status) in operation["responses"], (method, path, r.status, r.body)
        seen += 1
    assert seen == len(operations) - 1
    # And every served route is documented (the page's files excepted).
    from twistedmail.http.api import routes

    served = {(r.method.lower(), r.path) for r in routes() if r.documented}
    documented = {(m, p) for p, ops in document["paths"].items() for m in ops}
    assert served == documented


def open_stream(port: int, token: str | None) -> http.client.HTTPConnection:
    """An event stream, connected and past its ready event; the caller closes it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/api/events", headers={"Authorization": f"Bearer {token}"})
    response = conn.getresponse()
    assert response.status == 200
    while not response.fp.readline().startswith(b"data: "):
        pass
    return conn


@pytest.fixture
def one_stream_server(tmp_path: Path) -> Iterator[Server]:
    yield from start_server("memory", tmp_path, replace(SETTINGS, max_event_streams=1))


@ensure_deferred
async def test_event_streams_per_user_are_bounded(one_stream_server: Server) -> None:
    server = one_stream_server
    client = await server.login()
    first = await deferToThread(open_stream, server.port, client.token)
    try:
        r = await call(client, "GET", "/api/events")
        assert r.status == 429 and r.error_code == "too_many_streams"
        # The bound is per user: Bob still gets his.
        bob = await server.login(BOB)
        other = await deferToThread(open_stream, server.port, bob.token)
        other.close()
    finally:
        first.close()
