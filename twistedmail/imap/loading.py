"""
Message content for FETCH and SEARCH: from the parse cache when it can be,
from the store when it must, reading no more than the command needs.

A FETCH of ENVELOPE or header sections, and a SEARCH on header fields,
need only the top header: for a message bigger than `HEADER_PREFIX` only
its first `HEADER_PREFIX` bytes are read and parsed (`ParsedMessage.
parse_header`), and that header-only parse is cached too, so the next
``FETCH 1:* (ENVELOPE)`` or header SEARCH reads nothing at all.  Anything
that needs the body asks for a complete parse, which replaces a
header-only one in the cache.

A message another session expunged, not yet announced to this one (RFC
3501 §7.4.1 keeps its number alive), is never served from the cache: the
store no longer has it, and the command says so (``NO [EXPUNGEISSUED]``)
just as it would without a cache.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet import threads

from twistedmail.imap.selected import SelectedMailbox
from twistedmail.interfaces import IMailAccount
from twistedmail.message import ParsedMessage

if TYPE_CHECKING:  # pragma: no cover
    from twistedmail.imap.session import IMAPSession

#: How much of a message is read hoping to find its whole header.
HEADER_PREFIX = 32 * 1024


class Loader:
    """Loads the messages of one selected mailbox for one command."""

    def __init__(self, session: IMAPSession, view: SelectedMailbox, account: IMailAccount) -> None:
        self.session = session
        self.view = view
        self.account = account
        self.cache = session.server.parsed_cache
        self._key = (session.user, view.name, view.uidvalidity)

    def cached(self, uid: int, header_only: bool) -> ParsedMessage | None:
        """The cached parse of ``uid``, if any and if it may be served."""
        parsed = self.cache.get((*self._key, uid), header_only)
        if parsed is None or self.view.expunge_pending(uid):
            return None
        return parsed

    def cached_content(
        self, uid: int, parse: bool, header: bool
    ) -> tuple[bytes | None, ParsedMessage | None] | None:
        """
        What `content` would give, if the cache has it: no await, so a
        FETCH of cached messages costs no trip through a Deferred each.
        """
        parsed = self.cached(uid, header and parse)
        if parsed is None:
            return None
        if not parse:
            return parsed.raw, None
        return (parsed.raw if parsed.complete else None), parsed

    async def content(
        self, uid: int, parse: bool, header: bool
    ) -> tuple[bytes | None, ParsedMessage | None]:
        """
        The raw bytes and the parse a FETCH needs: the raw message alone
        without ``parse``; a header-only parse (no raw bytes) with
        ``header``; else both.

        :raises NoSuchMessage: it is gone.
        """
        if not parse:
            return await self.raw(uid), None
        if header:
            found = await self.header(uid)
            return (found.raw if found.complete else None), found
        found = await self.parsed(uid)
        return found.raw, found

    async def raw(self, uid: int) -> bytes:
        """
        The whole message.

        :raises NoSuchMessage: it is gone.
        """
        parsed = self.cached(uid, False)
        if parsed is not None:
            return parsed.raw
        data: bytes = await self.account.fetch(self.view.name, uid)
        return data

    async def header(self, uid: int) -> ParsedMessage:
        """
        A parse good for the top header, complete or not.

        :raises NoSuchMessage: it is gone.
        """
        parsed = self.cached(uid, True)
        if parsed is not None:
            return parsed
        info = self.view.infos.get(uid)
        if info is not None and info.size > HEADER_PREFIX:
            head: bytes = await self.account.fetch(self.view.name, uid, 0, HEADER_PREFIX)
            parsed = ParsedMessage.parse_header(head)
            if parsed is not None:
                self.cache.put((*self._key, uid), parsed)
                return parsed
        return await self.parsed(uid)

    async def parsed(self, uid: int) -> ParsedMessage:
        """
        The complete parse; big messages are parsed in a thread so others
        carry on.

        :raises NoSuchMessage: it is gone.
        """
        parsed = self.cached(uid, False)
        if parsed is not None:
            return parsed
        raw: bytes = await self.account.fetch(self.view.name, uid)
        session = self.session
        if len(raw) > session.settings.parse_in_thread_above:
            reactor = session.server.reactor
            parsed = await threads.deferToThreadPool(
                reactor, reactor.getThreadPool(), ParsedMessage.parse, raw
            )
        else:
            parsed = ParsedMessage.parse(raw)
        self.cache.put((*self._key, uid), parsed)
        return parsed
