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

from collections.abc import Sequence
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


def _flags(flags: frozenset[str]) -> bytes:
    # System flags first in a fixed order, then keywords sorted: stable output
    # makes protocol tests and client caches happy.
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
    out: list[bytes] = []
    for att in atts:
        name = att.name
        if name == "FLAGS":
            out.append(b"FLAGS " + _flags(info.flags))
        elif name == "UID":
            out.append(b"UID %d" % info.uid)
        elif name == "INTERNALDATE":
            out.append(b"INTERNALDATE " + wire.imap_date(info.internal_date))
        elif name == "RFC822.SIZE":
            out.append(b"RFC822.SIZE %d" % info.size)
        elif name == "MODSEQ":
            out.append(b"MODSEQ (%d)" % info.modseq)
        elif name == "ENVELOPE":
            out.append(b"ENVELOPE " + _need_parsed(parsed).envelope())
        elif name == "BODYSTRUCTURE":
            out.append(b"BODYSTRUCTURE " + _need_parsed(parsed).bodystructure(True))
        elif name == "BODY" and att.section is None:
            out.append(b"BODY " + _need_parsed(parsed).bodystructure(False))
        elif name == "BODY":
            assert att.section is not None
            if att.section == Section():
                data = _need_raw(raw)
            else:
                data = _need_parsed(parsed).section(att.section)
            data, suffix = _partial(data, att.partial)
            label = b"BODY[" + section_label(att.section) + b"]" + suffix
            out.append(label + b" " + _content(data))
        elif name == "RFC822":
            out.append(b"RFC822 " + _content(_need_raw(raw)))
        elif name == "RFC822.HEADER":
            data = _need_parsed(parsed).section(Section(text="HEADER"))
            out.append(b"RFC822.HEADER " + _content(data))
        elif name == "RFC822.TEXT":
            data = _need_parsed(parsed).section(Section(text="TEXT"))
            out.append(b"RFC822.TEXT " + _content(data))
        else:
            raise ValueError(f"unknown FETCH item {name!r}")
    return b" ".join(out)


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
