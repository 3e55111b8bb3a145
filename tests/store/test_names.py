"""Unit tests of the helpers every backend shares: name rules and the listener registry."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import cast

import pytest
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher

from twistedmail.interfaces import InvalidMailboxName
from twistedmail.model import ChangeEvent, MailboxCreated, MailboxDeleted
from twistedmail.store._events import Listeners
from twistedmail.store._names import (
    is_inside,
    parents,
    renamed,
    sort_key,
    validate_mailbox_name,
    validate_user_key,
)


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("INBOX", "INBOX"),
        ("inbox", "INBOX"),
        ("iNbOx/Lists/py", "INBOX/Lists/py"),
        ("Inboxes", "Inboxes"),
        ("Lists/inbox", "Lists/inbox"),
        ("Entwürfe/Ärger", "Entwürfe/Ärger"),
        ("日本語", "日本語"),
        ("a.b/c d", "a.b/c d"),
        ("x" * 255, "x" * 255),
        ("ä" * 127, "ä" * 127),
    ],
)
def test_valid_names_and_their_canonical_spelling(given, canonical):
    assert validate_mailbox_name(given) == canonical


@pytest.mark.parametrize(
    "bad",
    [
        "",
        ".",
        "..",
        "a/../b",
        "../x",
        "/abs",
        "a/",
        "a//b",
        "a\\b",
        "x\x00y",
        "\n",
        "\x1b[31m",
        "del\x7f",
        "c1\x9b",
        "lone\ud800surrogate",
        "x" * 256,
        "ä" * 128,
        b"INBOX",
        None,
    ],
    ids=repr,
)
def test_invalid_names(bad):
    with pytest.raises(InvalidMailboxName):
        validate_mailbox_name(bad)


@pytest.mark.parametrize(
    "bad", ["", ".", "..", "a/b", "a\\b", "x\x00y", "tab\t", "é" * 128, None], ids=repr
)
def test_invalid_user_keys(bad):
    with pytest.raises(InvalidMailboxName):
        validate_user_key(bad)


def test_user_keys_are_kept_as_given():
    assert validate_user_key("Alice+tag@Example.test") == "Alice+tag@Example.test"
    assert validate_user_key("jürgen@例え.jp") == "jürgen@例え.jp"


def test_hierarchy_helpers():
    assert parents("a/b/c") == ["a", "a/b"]
    assert parents("a") == []
    assert is_inside("a/b", "a") and is_inside("a/b/c", "a")
    assert not is_inside("a", "a") and not is_inside("ab", "a") and not is_inside("a", "a/b")
    assert renamed("a", "a", "x") == "x"
    assert renamed("a/b/c", "a/b", "x/y") == "x/y/c"
    assert renamed("a/bc", "a/b", "x") == "a/bc"
    assert renamed("b", "a", "x") == "b"


def test_sort_key_puts_inbox_first_and_children_after_parents():
    names = ["b", "a b", "a/b", "a", "INBOX/z", "Sent", "INBOX"]
    assert sorted(names, key=sort_key) == ["INBOX", "INBOX/z", "Sent", "a", "a/b", "a b", "b"]


@pytest.fixture
def logged() -> Iterator[list[LogEvent]]:
    seen: list[LogEvent] = []
    observer = cast(ILogObserver, seen.append)
    globalLogPublisher.addObserver(observer)
    yield seen
    globalLogPublisher.removeObserver(observer)


def test_listeners_each_registration_is_separate():
    listeners = Listeners("alice@example.test")
    seen: list[ChangeEvent] = []
    stop_one = listeners.add(seen.append)
    stop_two = listeners.add(seen.append)
    listeners.emit(MailboxCreated("x"))
    assert seen == [MailboxCreated("x")] * 2
    stop_one()
    stop_one()
    listeners.emit(MailboxDeleted("x"))
    assert seen[2:] == [MailboxDeleted("x")]
    stop_two()
    assert len(listeners) == 0


def test_listener_removed_during_emit_is_not_called():
    listeners = Listeners("alice@example.test")
    seen: list[str] = []
    stops: list[Callable[[], None]] = []

    def first(event: ChangeEvent) -> None:
        seen.append("first")
        stops[1]()

    def second(event: ChangeEvent) -> None:
        seen.append("second")

    stops.append(listeners.add(first))
    stops.append(listeners.add(second))
    listeners.emit(MailboxCreated("x"))
    assert seen == ["first"]


def test_raising_listener_is_logged_without_the_event_payload(logged):
    listeners = Listeners("alice@example.test")
    seen: list[ChangeEvent] = []

    def broken(event: ChangeEvent) -> None:
        raise ValueError("boom")

    listeners.add(broken)
    listeners.add(seen.append)
    listeners.emit_all([MailboxCreated("a"), MailboxCreated("b")])
    assert seen == [MailboxCreated("a"), MailboxCreated("b")]
    failures = [e for e in logged if "log_failure" in e]
    assert len(failures) == 2
    assert failures[0]["user"] == "alice@example.test"
    assert failures[0]["event_type"] == "MailboxCreated"
    assert failures[0]["log_failure"].check(ValueError)
