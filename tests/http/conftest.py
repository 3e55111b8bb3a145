"""
Fixtures: an HTTP server on a loopback port for every store backend.

A backend whose module is not importable yet is skipped with the reason,
like the store conformance suite does.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.http.http_harness import Server, start_server
from twistedmail.store.makers import store_makers

BACKENDS = {"memory": "twistedmail.store.memory", "maildir": "twistedmail.store.maildir"}


def _available(name: str) -> None:
    module = BACKENDS[name]
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        if not (e.name or "").startswith("twistedmail.store"):
            raise
        pytest.skip(f"{name} backend not available yet ({module}: {e})")
    if name not in store_makers():
        pytest.skip(f"no store-maker plugin named {name!r} is installed")


@pytest.fixture(params=list(BACKENDS))
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    _available(request.param)
    yield from start_server(request.param, tmp_path)


@pytest.fixture
def memory_server(tmp_path: Path) -> Iterator[Server]:
    """Only the memory store: for tests of HTTP mechanics, not of storage."""
    yield from start_server("memory", tmp_path)
