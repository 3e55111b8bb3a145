"""
Fixtures that run the store conformance suite against every backend.

Each test asks for ``backend`` (or ``store``/``account``) and runs once per
backend found through the store-maker plugins, exactly as the daemon finds
them.  A backend whose module cannot be imported yet is skipped with the
reason, not failed, so the suite can land before every backend does.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Iterator

import pytest
import pytest_twisted  # type: ignore[import-untyped]

from tests.store.maildir_harness import root, stores  # noqa: F401  (Maildir-only fixtures)
from twistedmail.interfaces import IMailAccount, IMailStore
from twistedmail.model import ChangeEvent
from twistedmail.store.makers import store_makers

#: The user every conformance test works as.
ALICE = "alice@example.test"

#: Backends and the module each needs; ``persistent`` ones keep data across reopen.
BACKENDS = {
    "memory": ("twistedmail.store.memory", False),
    "maildir": ("twistedmail.store.maildir", True),
}


class Backend:
    """One backend under test: builds stores on one data directory and closes them."""

    def __init__(self, name: str, data_dir: str, persistent: bool) -> None:
        self.name = name
        self.data_dir = data_dir
        self.persistent = persistent
        self.store = self.make_store()

    def make_store(self) -> IMailStore:
        from twisted.internet import reactor

        store: IMailStore = store_makers()[self.name].make_store(self.data_dir, reactor)
        return store

    async def reopen(self) -> IMailStore:
        """Close the store and open a new one on the same data, as after a restart."""
        await self.store.close()
        self.store = self.make_store()
        return self.store


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[Backend]:
    name = request.param
    module, persistent = BACKENDS[name]
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        # Only our own backend's files missing means "not written yet"; a
        # missing third-party dependency is a real failure and must show.
        if not (e.name or "").startswith("twistedmail.store"):
            raise
        pytest.skip(f"{name} backend not available yet ({module}: {e})")
    if name not in store_makers():
        pytest.skip(f"no store-maker plugin named {name!r} is installed")
    made = Backend(name, str(tmp_path), persistent)
    yield made
    pytest_twisted.blockon(made.store.close())


@pytest.fixture
def store(backend: Backend) -> IMailStore:
    return backend.store


@pytest.fixture
def account(backend: Backend) -> IMailAccount:
    found: IMailAccount = pytest_twisted.blockon(backend.store.account(ALICE))
    return found


@pytest.fixture
def reopen(backend: Backend) -> Callable[[], Awaitable[IMailAccount]]:
    """
    Close the store, open a new one on the same directory and return
    ALICE's account from it.  Tests that ask for this need persistence, so
    they are skipped for backends that keep nothing.
    """
    if not backend.persistent:
        pytest.skip(f"the {backend.name} store keeps nothing across a reopen")

    async def again() -> IMailAccount:
        store = await backend.reopen()
        found: IMailAccount = await store.account(ALICE)
        return found

    return again


@pytest.fixture
def events(account: IMailAccount) -> Iterator[list[ChangeEvent]]:
    """Every event ALICE's account emits during the test, in order."""
    seen: list[ChangeEvent] = []
    stop = account.listen(seen.append)
    yield seen
    stop()
