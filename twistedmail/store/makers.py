"""
The store-maker plugins for the backends twistedmail ships, and the lookup
that finds any backend (ours or a third party's dropin) by name.

The makers import their backend only when asked to build a store, so that
listing plugins (``twistd --help``) stays cheap.
"""

from __future__ import annotations

from twisted.plugin import IPlugin, getPlugins
from zope.interface import implementer

from twistedmail.interfaces import IMailStore, IStoreMaker


@implementer(IPlugin, IStoreMaker)
class MemoryStoreMaker:
    name = "memory"
    description = "Everything in memory; lost when the daemon stops (tests, throwaway servers)."

    def make_store(self, data_dir: str, reactor: object) -> IMailStore:
        from twistedmail.store.memory import MemoryStore

        return MemoryStore()


@implementer(IPlugin, IStoreMaker)
class MaildirStoreMaker:
    name = "maildir"
    description = "Maildir++ folders under the data directory (Dovecot/Courier/mutt compatible)."

    def make_store(self, data_dir: str, reactor: object) -> IMailStore:
        from twistedmail.store.maildir import MaildirStore

        return MaildirStore(data_dir, reactor)


def store_makers() -> dict[str, IStoreMaker]:
    """Every installed store maker by name (ours and third parties' dropins)."""
    import twisted.plugins

    return {maker.name: maker for maker in getPlugins(IStoreMaker, twisted.plugins)}
