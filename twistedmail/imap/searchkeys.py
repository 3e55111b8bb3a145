"""
SEARCH keys (RFC 3501 §6.4.4): their parsed form and their grammar.

The tree is small on purpose: every RFC 3501 key maps onto one of a handful
of node types, so that `twistedmail.imap.search` has one evaluation rule per
node and can tell from the tree alone whether message content is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from twistedmail.imap.syntax import MAX_NUMBER64, ParseError, Reader, SeqSet
from twistedmail.model import ANSWERED, DELETED, DRAFT, FLAGGED, SEEN

#: Charsets SEARCH accepts (RFC 3501 §6.4.4: US-ASCII must be; UTF-8 by RFC 6855).
CHARSETS = ("US-ASCII", "UTF-8")

#: Deeper nesting than this is refused (a hostile client could exhaust the stack).
MAX_DEPTH = 40


class UnsupportedCharset(Exception):
    """SEARCH CHARSET named a charset we do not search in: ``NO [BADCHARSET]``."""


@dataclass(frozen=True, slots=True)
class All:
    pass


@dataclass(frozen=True, slots=True)
class And:
    keys: tuple[SearchKey, ...]


@dataclass(frozen=True, slots=True)
class Or:
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True, slots=True)
class Not:
    key: SearchKey


@dataclass(frozen=True, slots=True)
class HasFlag:
    """A flag (system flag or keyword) is set."""

    flag: str


@dataclass(frozen=True, slots=True)
class Recent:
    """``\\Recent`` for this session (RFC 3501 §2.3.2)."""


@dataclass(frozen=True, slots=True)
class InSeq:
    seqs: SeqSet


@dataclass(frozen=True, slots=True)
class InUid:
    uids: SeqSet


@dataclass(frozen=True, slots=True)
class DateKey:
    """
    ``sent`` compares the Date: header, else the internal date; both only by
    day, ignoring time and zone (RFC 3501 §6.4.4).  ``op`` is ``<``, ``=``, ``>=``.
    """

    op: str
    day: date
    sent: bool


@dataclass(frozen=True, slots=True)
class SizeKey:
    """``op`` ``>`` (LARGER) or ``<`` (SMALLER) on RFC822.SIZE."""

    op: str
    size: int


@dataclass(frozen=True, slots=True)
class HeaderKey:
    """Substring of a header's decoded value; an empty value matches presence."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class TextKey:
    """Substring of the body (``body_only``) or of headers and body (TEXT)."""

    value: str
    body_only: bool


@dataclass(frozen=True, slots=True)
class ModSeqKey:
    """RFC 7162 §3.1.5: MODSEQ at least ``modseq``."""

    modseq: int


SearchKey = (
    All
    | And
    | Or
    | Not
    | HasFlag
    | Recent
    | InSeq
    | InUid
    | DateKey
    | SizeKey
    | HeaderKey
    | TextKey
    | ModSeqKey
)

_FLAG_KEYS = {
    "ANSWERED": ANSWERED,
    "DELETED": DELETED,
    "DRAFT": DRAFT,
    "FLAGGED": FLAGGED,
    "SEEN": SEEN,
}
_ADDRESS_KEYS = {"BCC": "Bcc", "CC": "Cc", "FROM": "From", "TO": "To", "SUBJECT": "Subject"}
_DATE_KEYS = {
    "BEFORE": ("<", False),
    "ON": ("=", False),
    "SINCE": (">=", False),
    "SENTBEFORE": ("<", True),
    "SENTON": ("=", True),
    "SENTSINCE": (">=", True),
}


def parse_search_keys(r: Reader) -> SearchKey:
    """``1*(SP search-key)`` after the command (or CHARSET); an implicit AND."""
    keys = []
    while not r.at_end():
        r.sp()
        keys.append(search_key(r, 0))
    if not keys:
        raise ParseError("SEARCH needs at least one key")
    return keys[0] if len(keys) == 1 else And(tuple(keys))


def search_key(r: Reader, depth: int) -> SearchKey:
    if depth > MAX_DEPTH:
        raise ParseError("search keys nested too deeply")
    c = r.peek()
    if c == 0x28:  # "("
        r.open_paren()
        keys = [search_key(r, depth + 1)]
        while not r.close_paren():
            r.sp()
            keys.append(search_key(r, depth + 1))
        return keys[0] if len(keys) == 1 else And(tuple(keys))
    if c is not None and (0x30 <= c <= 0x39 or c in (0x2A, 0x24)):  # digit, "*", "$"
        return InSeq(r.seq_set())
    name = r.keyword()
    if name == "ALL":
        return All()
    if name in _FLAG_KEYS:
        return HasFlag(_FLAG_KEYS[name])
    if name.startswith("UN") and name[2:] in _FLAG_KEYS:
        return Not(HasFlag(_FLAG_KEYS[name[2:]]))
    if name == "KEYWORD" or name == "UNKEYWORD":
        r.sp()
        key: SearchKey = HasFlag(r.flag())
        return key if name == "KEYWORD" else Not(key)
    if name == "RECENT":
        return Recent()
    if name == "NEW":
        return And((Recent(), Not(HasFlag(SEEN))))
    if name == "OLD":
        return Not(Recent())
    if name in _ADDRESS_KEYS:
        r.sp()
        return HeaderKey(_ADDRESS_KEYS[name], _string(r))
    if name == "HEADER":
        r.sp()
        field = _string(r)
        r.sp()
        return HeaderKey(field, _string(r))
    if name in ("BODY", "TEXT"):
        r.sp()
        return TextKey(_string(r), body_only=name == "BODY")
    if name in _DATE_KEYS:
        r.sp()
        op, sent = _DATE_KEYS[name]
        return DateKey(op, r.date().date(), sent)
    if name in ("LARGER", "SMALLER"):
        r.sp()
        return SizeKey(">" if name == "LARGER" else "<", r.number())
    if name == "UID":
        r.sp()
        return InUid(r.seq_set())
    if name == "NOT":
        r.sp()
        return Not(search_key(r, depth + 1))
    if name == "OR":
        r.sp()
        left = search_key(r, depth + 1)
        r.sp()
        return Or(left, search_key(r, depth + 1))
    if name == "MODSEQ":
        r.sp()
        if r.peek() == 0x22:  # entry-name entry-type-req (RFC 7162 §3.1.5)
            r.quoted()
            r.sp()
            r.atom()
            r.sp()
        return ModSeqKey(r.number(MAX_NUMBER64))
    raise ParseError(f"unknown search key {name}")


def _string(r: Reader) -> str:
    return r.text(r.astring())


def parse_charset(r: Reader) -> None:
    """``CHARSET SP astring``; only `CHARSETS` are searched in."""
    charset = r.astring().decode("ascii", "replace").upper()
    if charset not in CHARSETS:
        raise UnsupportedCharset(charset)


def needs_content(key: SearchKey) -> bool:
    """Whether evaluating ``key`` needs the message itself, not only its MessageInfo."""
    if isinstance(key, HeaderKey | TextKey):
        return True
    if isinstance(key, DateKey):
        return key.sent
    if isinstance(key, And):
        return any(needs_content(k) for k in key.keys)
    if isinstance(key, Or):
        return needs_content(key.left) or needs_content(key.right)
    if isinstance(key, Not):
        return needs_content(key.key)
    return False


def needs_text(key: SearchKey) -> bool:
    """Whether ``key`` searches message text (BODY, TEXT), not only headers."""
    if isinstance(key, TextKey):
        return True
    if isinstance(key, And):
        return any(needs_text(k) for k in key.keys)
    if isinstance(key, Or):
        return needs_text(key.left) or needs_text(key.right)
    if isinstance(key, Not):
        return needs_text(key.key)
    return False


def uses_saved(key: SearchKey) -> bool:
    """Whether ``key`` refers to ``$`` (RFC 5182)."""
    if isinstance(key, InSeq):
        return key.seqs.saved
    if isinstance(key, InUid):
        return key.uids.saved
    if isinstance(key, And):
        return any(uses_saved(k) for k in key.keys)
    if isinstance(key, Or):
        return uses_saved(key.left) or uses_saved(key.right)
    if isinstance(key, Not):
        return uses_saved(key.key)
    return False
