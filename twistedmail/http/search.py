"""
Message search for the HTTP API, with IMAP's criteria and IMAP's evaluator.

Two spellings of the same RFC 3501 §6.4.4 criteria are accepted, ANDed
together: ``q=`` with IMAP SEARCH syntax verbatim (``q=UNSEEN FROM "bob"``),
parsed by the IMAP server's own grammar, and one query parameter per simple
key (``from=bob&unseen=true&since=2026-01-31``).  Both become the IMAP
search-key tree, evaluated by `twistedmail.imap.search.evaluate`, so a search
means exactly the same thing over HTTP as over IMAP.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from twistedmail.http.context import ApiContext
from twistedmail.http.errors import ApiError
from twistedmail.http.routing import Call, Param
from twistedmail.imap.search import evaluate
from twistedmail.imap.searchkeys import (
    All,
    And,
    DateKey,
    HasFlag,
    HeaderKey,
    InUid,
    Not,
    SearchKey,
    SizeKey,
    TextKey,
    parse_search_keys,
)
from twistedmail.imap.selected import SelectedMailbox
from twistedmail.imap.syntax import ParseError, Reader
from twistedmail.interfaces import IMailAccount, MailError
from twistedmail.message import ParsedMessage
from twistedmail.model import ANSWERED, DELETED, DRAFT, FLAGGED, SEEN, MessageInfo

_HEADERS = {"from": "From", "to": "To", "cc": "Cc", "bcc": "Bcc", "subject": "Subject"}
_TEXTS = {"body": True, "text": False}
_FLAGS = {
    "seen": SEEN,
    "answered": ANSWERED,
    "flagged": FLAGGED,
    "deleted": DELETED,
    "draft": DRAFT,
}
_DATES = {
    "before": ("<", False),
    "on": ("=", False),
    "since": (">=", False),
    "sentbefore": ("<", True),
    "senton": ("=", True),
    "sentsince": (">=", True),
}
_SIZES = {"larger": ">", "smaller": "<"}

#: The search parameters, for the route table and the OpenAPI document.
SEARCH_PARAMS: tuple[Param, ...] = (
    Param("q", "string", 'IMAP SEARCH criteria (RFC 3501 §6.4.4), e.g. UNSEEN FROM "bob".'),
    *(
        Param(n, "string", f"Substring of the {h} header (IMAP {n.upper()}).")
        for n, h in _HEADERS.items()
    ),
    Param("body", "string", "Substring of the body (IMAP BODY)."),
    Param("text", "string", "Substring of the headers or body (IMAP TEXT)."),
    Param("header", "string", "Name:value, substring of that header (IMAP HEADER)."),
    *(Param(n, "boolean", f"true: \\{n.title()} set; false: not set.") for n in _FLAGS),
    Param("keyword", "string", "This keyword is set (IMAP KEYWORD)."),
    *(Param(n, "string", f"YYYY-MM-DD (IMAP {n.upper()}).") for n in _DATES),
    *(Param(n, "integer", f"Size in octets (IMAP {n.upper()}).") for n in _SIZES),
    Param("uid", "string", "UID set, e.g. 1:5,9 (IMAP UID)."),
)


def search_key(call: Call) -> SearchKey | None:
    """The criteria of the request's query, or None when it has none."""
    keys: list[SearchKey] = []
    q = call.arg("q")
    if q:
        try:
            keys.append(parse_search_keys(Reader(b" " + q.encode("utf-8"))))
        except ParseError as e:
            raise ApiError.bad("q", f"q is not valid IMAP search criteria: {e}") from None
    for name, header_name in _HEADERS.items():
        value = call.arg(name)
        if value is not None:
            keys.append(HeaderKey(header_name, value))
    for name, body_only in _TEXTS.items():
        value = call.arg(name)
        if value is not None:
            keys.append(TextKey(value, body_only))
    header_arg = call.arg("header")
    if header_arg is not None:
        field, sep, wanted = header_arg.partition(":")
        if not sep or not field.strip():
            raise ApiError.bad("header", "header must be Name:value")
        keys.append(HeaderKey(field.strip(), wanted.strip()))
    for name, flag in _FLAGS.items():
        is_set = call.bool_arg(name)
        if is_set is not None:
            keys.append(HasFlag(flag) if is_set else Not(HasFlag(flag)))
    keyword = call.arg("keyword")
    if keyword is not None:
        keys.append(HasFlag(keyword))
    for name, (op, sent) in _DATES.items():
        value = call.arg(name)
        if value is not None:
            try:
                day = date.fromisoformat(value)
            except ValueError:
                raise ApiError.bad(name, f"{name} must be a date, YYYY-MM-DD") from None
            keys.append(DateKey(op, day, sent))
    for name, size_op in _SIZES.items():
        if call.arg(name) is not None:
            keys.append(SizeKey(size_op, call.int_arg(name, 0, 0, 2**63 - 1)))
    uid = call.arg("uid")
    if uid is not None:
        try:
            keys.append(InUid(Reader(uid.encode("ascii", "replace")).seq_set(allow_saved=False)))
        except ParseError:
            raise ApiError.bad("uid", "uid must be a UID set like 1:5,9") from None
    if not keys:
        return None
    return keys[0] if len(keys) == 1 else And(tuple(keys))


async def matching(
    ctx: ApiContext,
    account: IMailAccount,
    mailbox: str,
    uidvalidity: int,
    infos: Sequence[MessageInfo],
    key: SearchKey,
) -> set[int]:
    """The UIDs among ``infos`` that match ``key``."""
    if isinstance(key, All):
        return {i.uid for i in infos}
    # The evaluator works on an IMAP view; a detached one (never loaded, so
    # it listens to nothing) holding exactly these messages is that view.
    view = SelectedMailbox(account, mailbox, True, _ignore)
    view.uids = [i.uid for i in infos]
    view.infos = {i.uid: i for i in infos}

    async def load(uid: int) -> ParsedMessage | None:
        try:
            return await ctx.parsed(account, mailbox, uidvalidity, uid)
        except MailError:
            return None  # expunged meanwhile: it does not match

    return set(await evaluate(view, key, load))


def _ignore() -> None:
    """A detached view has no session to tell about changes."""
