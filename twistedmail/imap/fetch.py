"""
FETCH data items: what the parser produces and how one message is rendered.

The parser (``parser.py``) turns ``FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS
(SUBJECT)]<0.100>)`` into a sequence of `FetchAtt`; the session loads what
`needs_body` / `needs_parse` ask for and calls `render_fetch_items` once per
message.  Rendering is synchronous and pure so that the session alone decides
what runs in a thread (parsing a 20 MB message does; see
`twistedmail.message`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from twistedmail.imap import wire
from twistedmail.model import SYSTEM_FLAGS, MessageInfo


@dataclass(frozen=True, slots=True)
class Section:
    """
    A ``section-spec`` of RFC 3501 §6.4.5 / §9.

    ``part`` is the part number path (``()`` is the whole message, ``(1, 2)``
    is part 1.2); ``text`` is None (the whole part), ``HEADER``,
    ``HEADER.FIELDS``, ``HEADER.FIELDS.NOT``, ``TEXT`` or ``MIME``;
    ``fields`` holds the header names of ``HEADER.FIELDS(.NOT)`` as the
    client spelt them (they are echoed back in the response label).
    """

    part: tuple[int, ...] = ()
    text: str | None = None
    fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FetchAtt:
    """
    One FETCH data item.

    ``name`` is one of ``FLAGS``, ``UID``, ``INTERNALDATE``, ``RFC822.SIZE``,
    ``ENVELOPE``, ``BODY``, ``BODYSTRUCTURE``, ``RFC822``, ``RFC822.HEADER``,
    ``RFC822.TEXT``, ``MODSEQ``.  ``BODY`` with a ``section`` is
    ``BODY[...]`` (``BODY.PEEK[...]`` when ``peek``); without one it is the
    non-extensible body structure.  ``partial`` is ``<origin.count>``.
    """

    name: str
    section: Section | None = None
    peek: bool = False
    partial: tuple[int, int] | None = None


class FetchableMessage(Protocol):
    """What the renderer needs of a parsed message (`ParsedMessage` is one)."""

    def envelope(self) -> bytes: ...

    def bodystructure(self, extensible: bool) -> bytes: ...

    def section(self, section: Section) -> bytes: ...


_META = frozenset({"FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "MODSEQ"})


def needs_body(atts: Sequence[FetchAtt]) -> bool:
    """Whether rendering ``atts`` needs the message's raw bytes."""
    return any(att.name not in _META for att in atts)


def needs_parse(atts: Sequence[FetchAtt]) -> bool:
    """
    Whether rendering ``atts`` needs a parsed message, not just raw bytes.

    ``BODY[]`` and ``RFC822`` are slices of the raw bytes; everything else
    that touches content needs the MIME structure.
    """
    for att in atts:
        if att.name in _META or att.name == "RFC822":
            continue
        if att.name == "BODY" and att.section == Section():
            continue
        return True
    return False


_TOP = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"})


def header_only(atts: Sequence[FetchAtt]) -> bool:
    """
    Whether ``atts`` need nothing of a message's content but its top
    header (ENVELOPE, ``RFC822.HEADER``, ``BODY[HEADER]``,
    ``BODY[HEADER.FIELDS (...)]``), so a header-only parse will do.
    """
    for att in atts:
        name = att.name
        if name in _META or name in ("ENVELOPE", "RFC822.HEADER"):
            continue
        section = att.section
        if name == "BODY" and section is not None and not section.part and section.text in _TOP:
            continue
        return False
    return True


def sets_seen(atts: Sequence[FetchAtt]) -> bool:
    """
    Whether fetching ``atts`` sets ``\\Seen`` (RFC 3501 §6.4.5).

    ``BODY[...]`` without ``.PEEK``, ``RFC822`` and ``RFC822.TEXT`` do;
    ``RFC822.HEADER`` is defined as ``BODY.PEEK[HEADER]`` and does not.
    """
    for att in atts:
        if att.name == "BODY" and att.section is not None and not att.peek:
            return True
        if att.name in ("RFC822", "RFC822.TEXT"):
            return True
    return False


def section_label(section: Section) -> bytes:
    """The ``section`` as it appears between the brackets of ``BODY[...]``."""
    parts = [b".".join(b"%d" % n for n in section.part)] if section.part else []
    if section.text is not None:
        parts.append(section.text.encode("ascii"))
    label = b".".join(parts)
    if section.text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        names = (wire.astring(name.encode("utf-8")) for name in section.fields)
        label += b" " + wire.paren_list(names)
    return label


def flags_text(flags: frozenset[str]) -> bytes:
    """
    A flag list: system flags first in a fixed order, then keywords
    sorted; stable output makes protocol tests and client caches happy.
    """
    system = sorted(f for f in flags if f in SYSTEM_FLAGS)
    keywords = sorted(f for f in flags if f not in SYSTEM_FLAGS)
    return wire.paren_list(f.encode("utf-8") for f in system + keywords)


def _partial(data: bytes, partial: tuple[int, int] | None) -> tuple[bytes, bytes]:
    """The slice of ``data`` and the label suffix (``<origin>``, §7.4.2)."""
    if partial is None:
        return data, b""
    origin, count = partial
    return data[origin : origin + count], b"<%d>" % origin


def render_fetch_items(
    atts: Sequence[FetchAtt],
    info: MessageInfo,
    raw: bytes | None,
    parsed: FetchableMessage | None,
) -> bytes:
    """
    The inside of ``* n FETCH (...)`` for one message, items in ``atts`` order.

    ``info`` must already carry ``\\Seen`` if this fetch just set it.  ``raw``
    must be given when `needs_body` says so, ``parsed`` when `needs_parse`
    does; otherwise `ValueError`.  Content is always sent as a literal
    so 8-bit data cannot break framing.
    """
    return FetchRenderer(atts).render(info, info.flags, raw, parsed)


_Item = Callable[[MessageInfo, frozenset[str], "bytes | None", "FetchableMessage | None"], bytes]


class FetchRenderer:
    """
    `render_fetch_items` for one command: the items are looked at once,
    and each distinct flag set is spelt once, however many messages the
    FETCH (or STORE) answers for.
    """

    def __init__(self, atts: Sequence[FetchAtt]) -> None:
        self._flag_text: dict[frozenset[str], bytes] = {}
        self._items = [self._item(att) for att in atts]
        #: ``FETCH n (FLAGS)`` depends on the flags alone.
        self._flags_only = [att.name for att in atts] == ["FLAGS"]
        self._flags_item: dict[frozenset[str], bytes] = {}

    def flags(self, flags: frozenset[str]) -> bytes:
        """``flags`` as a parenthesised list (see `flags_text`)."""
        found = self._flag_text.get(flags)
        if found is None:
            found = self._flag_text[flags] = flags_text(flags)
        return found

    def render(
        self,
        info: MessageInfo,
        flags: frozenset[str],
        raw: bytes | None,
        parsed: FetchableMessage | None,
    ) -> bytes:
        """Like `render_fetch_items`, with the ``flags`` to report given apart."""
        if self._flags_only:
            found = self._flags_item.get(flags)
            if found is None:
                found = self._flags_item[flags] = b"FLAGS " + self.flags(flags)
            return found
        items = self._items
        if len(items) == 1:
            return items[0](info, flags, raw, parsed)
        return b" ".join([item(info, flags, raw, parsed) for item in items])

    def _item(self, att: FetchAtt) -> _Item:
        name = att.name
        if name == "FLAGS":
            return lambda i, f, r, p: b"FLAGS " + self.flags(f)
        if name == "UID":
            return lambda i, f, r, p: b"UID %d" % i.uid
        if name == "INTERNALDATE":
            return lambda i, f, r, p: b"INTERNALDATE " + wire.imap_date(i.internal_date)
        if name == "RFC822.SIZE":
            return lambda i, f, r, p: b"RFC822.SIZE %d" % i.size
        if name == "MODSEQ":
            return lambda i, f, r, p: b"MODSEQ (%d)" % i.modseq
        if name == "ENVELOPE":
            return lambda i, f, r, p: b"ENVELOPE " + _need_parsed(p).envelope()
        if name == "BODYSTRUCTURE":
            return lambda i, f, r, p: b"BODYSTRUCTURE " + _need_parsed(p).bodystructure(True)
        if name == "BODY" and att.section is None:
            return lambda i, f, r, p: b"BODY " + _need_parsed(p).bodystructure(False)
        if name == "BODY":
            section = att.section
            assert section is not None
            partial = att.partial
            label = b"BODY[" + section_label(section) + b"]"
            whole = section == Section()

            def body(
                i: MessageInfo, f: frozenset[str], r: bytes | None, p: FetchableMessage | None
            ) -> bytes:
                data = _need_raw(r) if whole else _need_parsed(p).section(section)
                data, suffix = _partial(data, partial)
                return label + suffix + b" " + _content(data)

            return body
        if name == "RFC822":
            return lambda i, f, r, p: b"RFC822 " + _content(_need_raw(r))
        if name == "RFC822.HEADER":
            header = Section(text="HEADER")
            return lambda i, f, r, p: b"RFC822.HEADER " + _content(_need_parsed(p).section(header))
        if name == "RFC822.TEXT":
            text = Section(text="TEXT")
            return lambda i, f, r, p: b"RFC822.TEXT " + _content(_need_parsed(p).section(text))
        raise ValueError(f"unknown FETCH item {name!r}")


def _content(data: bytes) -> bytes:
    # Message content always goes as a literal: 8-bit and CRLF are fine
    # there, and an empty one is {0} as Dovecot sends it.
    return wire.literal(data)


def _need_raw(raw: bytes | None) -> bytes:
    if raw is None:
        raise ValueError("this FETCH item needs the raw message")
    return raw


def _need_parsed(parsed: FetchableMessage | None) -> FetchableMessage:
    if parsed is None:
        raise ValueError("this FETCH item needs the parsed message")
    return parsed
