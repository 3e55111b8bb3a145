"""
What the Maildir-only tests share: a store that counts its directory
listings, a factory fixture that closes what it made, the user's root, and
dropping a file in as another program (procmail, mutt) would.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import pytest_twisted  # type: ignore[import-untyped]

from twistedmail.store.maildir import MaildirStore

ALICE = "alice@example.test"


class CountingStore(MaildirStore):
    """A MaildirStore that records every directory listing of message files."""

    def __init__(self, data_dir: str) -> None:
        from twisted.internet import reactor

        super().__init__(data_dir, reactor)
        self.listed: list[str] = []

    def _listdir(self, path: str) -> list[str]:
        self.listed.append(path)
        return super()._listdir(path)


@pytest.fixture
def stores(tmp_path: Path):
    made: list[MaildirStore] = []

    def make() -> CountingStore:
        store = CountingStore(str(tmp_path))
        made.append(store)
        return store

    yield make
    for store in made:
        pytest_twisted.blockon(store.close())


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "mail" / ALICE


def files_in(path: Path) -> list[str]:
    return sorted(os.listdir(path))


def drop(root: Path, subdir: str, name: str, data: bytes, mtime: float | None = None) -> Path:
    """What another program (procmail, mutt) does: tmp/, then rename."""
    tmp = root / "tmp" / name.partition(":")[0]
    tmp.write_bytes(data)
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    target = root / subdir / name
    os.rename(tmp, target)
    return target
