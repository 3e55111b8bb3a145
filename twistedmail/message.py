"""
A parsed message: what IMAP FETCH/SEARCH and the HTTP API need to know.

`ParsedMessage.parse` builds the MIME tree as offsets into the original
bytes (`twistedmail._mime`), so every IMAP section is an exact slice, header
case and duplicate fields survive, and raw 8-bit headers are served as they
came.  Decoded views (RFC 2047 headers, transfer-decoded and charset-decoded
text, RFC 2231 filenames) are computed on demand (with the stdlib for dates)
and never feed back into what IMAP serves.

Cost: parsing is linear in the message size (a few ``bytes.find`` passes
per nesting level over the body; only header blocks are walked line by
line); nothing big is copied until a section or attachment is asked for.
A 20 MB message still takes tens of milliseconds, so callers parse
messages of `EAGER_BYTES` or more in a thread (``deferToThread``) and keep
the result in a `ParsedCache` they own.  Messages are immutable, so the
ENVELOPE and BODYSTRUCTURE of a parse are computed once and kept with it;
what needs only the top header (ENVELOPE, header sections, SEARCH on
header fields) can use `ParsedMessage.parse_header` on the first bytes of
a message instead of reading all of it.  Everything here is synchronous
and free of I/O.
"""

from __future__ import annotations

import binascii
import codecs
import email.utils
import re
import urllib.parse
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import UTC, datetime

from twistedmail._mime import Part, parse_entity, parse_params
from twistedmail.imap import structure
from twistedmail.imap.fetch import Section

#: Messages this big are parsed completely by `ParsedMessage.parse`; callers
#: should run parse for them in a thread (``deferToThread``).
EAGER_BYTES = 256 * 1024

#: What a cache entry costs besides its raw bytes: the `Part` and its
#: lists (measured with tracemalloc at about 250 bytes plus 200 per header
#: field on CPython 3.11), and room for what is memoised: the ENVELOPE and
#: BODYSTRUCTURE, about as long as the header, and the case-folded values
#: of up to `_FOLDED_NAMES` header fields SEARCH looked at (a small dict,
#: and at most the header's length again).
_ENTRY_BYTES = 512
_FIELD_BYTES = 200
_FOLDED_NAMES = 4


@dataclass(frozen=True, slots=True)
class Attachment:
    """
    One attachment as the HTTP API lists it.

    ``index`` counts from 0 in document order; ``filename`` is decoded (RFC
    2231 and RFC 2047), None when the part has none; ``content_type`` is the
    lower-cased ``type/subtype``; ``size`` is the decoded size (exact for
    base64, the encoded size otherwise); ``part`` is the IMAP part number.
    """

    index: int
    filename: str | None
    content_type: str
    size: int
    part: tuple[int, ...]


class ParsedMessage:
    """
    The MIME structure of one message plus decoded views of it.

    ``complete`` is False for a header-only parse (`parse_header`): then
    ``raw`` is just the header section, and only `envelope`, the top-level
    ``HEADER``/``HEADER.FIELDS`` sections and the header views (`header`,
    `headers`, `addresses`, `date`) may be used.
    """

    __slots__ = (
        "_attachments",
        "_body",
        "_bodystructure",
        "_envelope",
        "_folded",
        "complete",
        "raw",
        "root",
    )

    def __init__(self, raw: bytes, root: Part, complete: bool = True) -> None:
        self.raw = raw
        self.root = root
        self.complete = complete
        self._attachments: list[tuple[Attachment, Part]] | None = None
        self._envelope: bytes | None = None
        self._bodystructure: bytes | None = None
        self._body: bytes | None = None
        self._folded: dict[str, tuple[bytes | str, ...]] | None = None

    @classmethod
    def parse(cls, raw: bytes) -> ParsedMessage:
        """
        Parse ``raw``; never fails, however malformed the message.

        Below `EAGER_BYTES` only the top header is parsed now and the parts
        on first use; from `EAGER_BYTES` up everything is parsed at once, so
        a caller that runs this in a thread for a big message leaves no
        heavy work for the reactor thread.
        """
        root = parse_entity(raw, 0, len(raw))
        if len(raw) >= EAGER_BYTES:
            root.expand()
        return cls(raw, root)

    @classmethod
    def parse_header(cls, prefix: bytes) -> ParsedMessage | None:
        """
        A header-only parse (``complete`` False) from the first bytes of a
        message, or None when its header section does not end inside
        ``prefix`` (the caller then reads and parses the whole message).

        The header is cut exactly where `parse` would end it (the first
        empty line), so every header field, ENVELOPE and HEADER section is
        byte for byte what the whole message gives.  An empty line that
        ends right at the end of ``prefix`` is not trusted (the prefix may
        have cut a CRLF in two), nor is a header that never ends.
        """
        found = parse_entity(prefix, 0, len(prefix))
        end = found.body_start
        if end >= len(prefix):
            return None
        head = prefix[:end]
        root = Part(head, 0, end, end, found.fields, found.content_type)
        return cls(head, root, complete=False)

    @property
    def size(self) -> int:
        """Octets of ``raw`` (only the header for a header-only parse)."""
        return len(self.raw)

    @property
    def cost(self) -> int:
        """
        Roughly what keeping this parse costs in memory, in bytes: what a
        `ParsedCache` counts.  Small messages cost mostly their structure.
        """
        root = self.root
        memoised = 2 * (root.body_start - root.start)
        return len(self.raw) + _ENTRY_BYTES + _FIELD_BYTES * len(root.fields) + memoised

    def _need_complete(self) -> None:
        if not self.complete:
            raise ValueError("a header-only parse has no body")

    # --- IMAP -------------------------------------------------------------------

    def envelope(self) -> bytes:
        """The IMAP ENVELOPE (RFC 3501 §7.4.2), computed once."""
        found = self._envelope
        if found is None:
            found = self._envelope = structure.envelope(self.root)
        return found

    def bodystructure(self, extensible: bool) -> bytes:
        """BODYSTRUCTURE when ``extensible``, else BODY (RFC 3501 §7.4.2); computed once."""
        self._need_complete()
        if extensible:
            found = self._bodystructure
            if found is None:
                found = self._bodystructure = structure.bodystructure(self.root, True)
        else:
            found = self._body
            if found is None:
                found = self._body = structure.bodystructure(self.root, False)
        return found

    def section(self, section: Section) -> bytes:
        """
        The octets of ``BODY[section]`` (RFC 3501 §6.4.5).

        A part that does not exist, or HEADER/TEXT of a part that is not a
        message/rfc822, gives empty bytes, as Dovecot does.
        """
        if section.part or section.text not in _HEADER_TEXTS:
            self._need_complete()
        found = self._resolve(section.part)
        if found is None:
            return b""
        part, is_message = found
        text = section.text
        if text is None:
            if not section.part:
                return self.raw
            return part.body_bytes
        if text == "MIME":
            return part.header_bytes if section.part else b""
        if not is_message:
            if part.embedded is None:
                return b""
            part = part.embedded
        if text == "HEADER":
            return part.header_bytes
        if text == "TEXT":
            return part.body_bytes
        names = frozenset(name.lower() for name in section.fields)
        if text == "HEADER.FIELDS":
            return part.field_lines(names, keep=True)
        if text == "HEADER.FIELDS.NOT":
            return part.field_lines(names, keep=False)
        raise ValueError(f"unknown section text {text!r}")

    def _resolve(self, path: tuple[int, ...]) -> tuple[Part, bool] | None:
        """
        The part a part number names, and whether it is still a message.

        RFC 3501 §6.4.5: a non-multipart message has only part 1, its body;
        the parts of a message/rfc822 part are those of the message inside.
        Like Dovecot, a leaf part of a multipart answers to ``.1`` as itself
        (once: ``2.1`` is part 2, ``2.1.1`` is nothing).
        """
        part, is_message, one_left = self.root, True, True
        steps = list(path)
        while steps:
            k = steps[0]
            if part.children is not None:
                if not 1 <= k <= len(part.children):
                    return None
                part, is_message, one_left = part.children[k - 1], False, True
            elif part.embedded is not None and not is_message:
                part, is_message, one_left = part.embedded, True, True
                continue  # apply the same number inside the message
            elif one_left and k == 1:
                is_message, one_left = False, False
            else:
                return None
            steps.pop(0)
        return part, is_message

    # --- Decoded views (SEARCH, HTTP) --------------------------------------------

    def header(self, name: str) -> list[str]:
        """Every top-level ``name`` field, unfolded and RFC 2047-decoded."""
        return [decode_header_value(v) for v in self.root.values(name)]

    def header_contains(self, name: str, needle: str) -> bool:
        """
        Whether a top-level ``name`` field, decoded as `header` decodes it,
        contains ``needle`` (already case-folded) ignoring case.

        The same answer as searching `header`, faster: each field's value
        is case-folded once and kept (for a few field names), and a plain
        ASCII value is kept and compared as bytes, where case-folding is
        lower-casing and nothing needs decoding.
        """
        name = name.lower()
        folded = self._folded
        if folded is None:
            folded = self._folded = {}
        values = folded.get(name)
        if values is None:
            values = tuple(_folded(raw) for raw in self.root.values(name))
            if len(folded) < _FOLDED_NAMES:
                folded[name] = values
        plain = needle.encode("ascii") if needle.isascii() else None
        for value in values:
            if isinstance(value, bytes):
                # ASCII text cannot hold a non-ASCII needle.
                if plain is not None and plain in value:
                    return True
            elif needle in value:
                return True
        return False

    def headers(self) -> list[tuple[str, str]]:
        """Every top-level field as (lower-cased name, decoded value)."""
        raw = self.raw
        return [(f.name, decode_header_value(raw[f.value_start : f.end])) for f in self.root.fields]

    def addresses(self, name: str) -> list[tuple[str, str]]:
        """``(display name, address)`` of every mailbox in the first ``name`` field."""
        value = self.root.value(name)
        if value is None:
            return []
        out: list[tuple[str, str]] = []
        for display, _adl, local, host in structure.parse_address_list(value):
            if host is None:
                continue  # group markers
            addr = _text(local or b"") + ("@" + _text(host) if host else "")
            out.append((decode_words(_text(display)) if display else "", addr))
        return out

    def date(self) -> datetime | None:
        """The Date field as an aware datetime, None when absent or unparsable."""
        value = self.root.value("date")
        if not value:
            return None
        try:
            when = email.utils.parsedate_to_datetime(_text(value))
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        return when if when.tzinfo is not None else when.replace(tzinfo=UTC)

    def body_text(self) -> str:
        """All text/* leaves, decoded, joined by newlines (SEARCH BODY, previews)."""
        self._need_complete()
        return "\n".join(
            decoded_text(p)
            for p in self.root.walk()
            if p.children is None and p.embedded is None
            if p.content_type.mime_type.startswith("text/")
        )

    def text_and_html(self) -> tuple[str | None, str | None]:
        """The first inline text/plain and text/html bodies, decoded."""
        self._need_complete()
        text: str | None = None
        html: str | None = None
        for part in _leaves(self.root):
            if _is_attachment(part):
                continue
            kind = part.content_type.mime_type
            if kind == "text/plain" and text is None:
                text = decoded_text(part)
            elif kind == "text/html" and html is None:
                html = decoded_text(part)
        return text, html

    def attachments(self) -> list[Attachment]:
        """The attachments, in document order (see `Attachment`)."""
        return [a for a, _ in self._attachment_parts()]

    @property
    def has_attachments(self) -> bool:
        return bool(self._attachment_parts())

    def attachment_bytes(self, index: int) -> bytes:
        """
        The decoded content of attachment ``index``.

        :raises IndexError: there is no such attachment.
        """
        parts = self._attachment_parts()
        if not 0 <= index < len(parts):
            raise IndexError(index)
        return transfer_decoded(parts[index][1])

    def _attachment_parts(self) -> list[tuple[Attachment, Part]]:
        if self._attachments is None:
            self._need_complete()
            found = [p for p in _leaves(self.root) if _is_attachment(p)]
            self._attachments = [
                (
                    Attachment(
                        n, filename(p), p.content_type.mime_type, _decoded_size(p), p.path or (1,)
                    ),
                    p,
                )
                for n, p in enumerate(found)
            ]
        return self._attachments


#: Sections of the top-level message a header-only parse can serve.
_HEADER_TEXTS = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"})


def _folded(raw: bytes) -> bytes | str:
    """
    A raw header value as `decode_header_value` reads it, case-folded:
    lower-cased bytes when it is plain ASCII without encoded words (the
    same text, cheaper), else the decoded text case-folded.
    """
    value = raw.replace(b"\r\n", b"").replace(b"\n", b"").replace(b"\r", b"").strip(b" \t")
    if value.isascii() and b"=?" not in value:
        return value.lower()
    return decode_words(_text(value)).casefold()


def _leaves(root: Part) -> list[Part]:
    """Leaves in document order, an embedded message counting as one leaf."""
    out: list[Part] = []
    stack = [root]
    while stack:
        part = stack.pop()
        if part.children is not None:
            stack.extend(reversed(part.children))
        else:
            out.append(part)
    return out


def _disposition(part: Part) -> tuple[str, list[tuple[bytes, bytes]]]:
    value = part.value("content-disposition")
    if not value:
        return "", []
    kind, _, rest = value.partition(b";")
    return kind.strip(b" \t").decode("ascii", "replace").lower(), parse_params(rest)


def _is_attachment(part: Part) -> bool:
    """
    Whether a leaf is an attachment rather than the message text.

    ``attachment`` dispositions are; text/plain and text/html are body
    unless they carry a filename without an explicit ``inline``; any other
    type (images, documents, forwarded messages) is an attachment.
    """
    kind, params = _disposition(part)
    if kind == "attachment":
        return True
    mime = part.content_type.mime_type
    if mime in ("text/plain", "text/html"):
        named = any(k.lower() == b"filename" for k, _ in params) or part.content_type.param("name")
        return bool(named) and kind != "inline"
    return True


def filename(part: Part) -> str | None:
    """
    The part's file name, decoded.

    Content-Disposition ``filename`` first, then Content-Type ``name``
    (RFC 2183 §2.3; the latter is what old mailers send).  RFC 2231 values
    (continuations already joined by `twistedmail._mime.parse_params`) are
    percent- and charset-decoded; plain ones may hold RFC 2047 words (not
    standard, but common) or raw UTF-8.  The stdlib's ``get_filename`` is
    not used: it turns raw 8-bit names into replacement characters.
    """
    _, disposition = _disposition(part)
    for params, key in ((disposition, b"filename"), (list(part.content_type.params), b"name")):
        for name, value in params:
            if name.lower() == key + b"*":
                return _rfc2231_value(value)
        for name, value in params:
            if name.lower() == key:
                return decode_words(_text(value))
    return None


def _rfc2231_value(value: bytes) -> str:
    """``charset'language'percent-encoded`` (RFC 2231 §4) as text."""
    charset, data = b"", value
    if value.count(b"'") >= 2:
        charset, _language, data = value.split(b"'", 2)
    return _text(urllib.parse.unquote_to_bytes(data), charset or None)


def _decoded_size(part: Part) -> int:
    cte = (part.value("content-transfer-encoding") or b"").strip().lower()
    if cte != b"base64":
        return part.body_size
    raw, s, e = part.raw, part.body_start, part.end
    blanks = sum(raw.count(c, s, e) for c in (b"\r", b"\n", b" ", b"\t"))
    chars = part.body_size - blanks
    pad = raw.count(b"=", max(s, e - 4), e)
    return max(0, chars * 3 // 4 - pad)


_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")


def transfer_decoded(part: Part) -> bytes:
    """The body with its Content-Transfer-Encoding undone (RFC 2045 §6)."""
    cte = (part.value("content-transfer-encoding") or b"").strip().lower()
    body = part.body_bytes
    if cte == b"base64":
        try:
            return binascii.a2b_base64(body)
        except binascii.Error:
            clean = _B64_JUNK.sub(b"", body)
            clean = clean[: len(clean) - (len(clean) % 4 == 1)]
            return binascii.a2b_base64(clean + b"=" * (-len(clean) % 4))
    if cte == b"quoted-printable":
        return binascii.a2b_qp(body)
    return body


def decoded_text(part: Part) -> str:
    """A text part's body as text: transfer decoding, then its charset."""
    return _text(transfer_decoded(part), part.content_type.param("charset"))


def _text(data: bytes, charset: bytes | None = None) -> str:
    """
    Bytes to text: the declared charset if known, else UTF-8, else cp1252.

    Undeclared 8-bit headers in the wild are mostly UTF-8 (RFC 6532) or
    Windows-1252; nothing here ever raises.
    """
    if charset:
        try:
            codec = codecs.lookup(charset.decode("ascii", "replace").strip())
        except LookupError:
            codec = None
        if codec is not None and codec.name not in ("ascii", "us-ascii"):
            return data.decode(codec.name, "replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


def decode_header_value(raw: bytes) -> str:
    """A raw header value unfolded, stripped and RFC 2047-decoded."""
    value = raw.replace(b"\r\n", b"").replace(b"\n", b"").replace(b"\r", b"")
    return decode_words(_text(value.strip(b" \t")))


_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")


def decode_words(text: str) -> str:
    """
    Decode RFC 2047 encoded words in ``text``.

    Blanks between adjacent encoded words are dropped (§6.2) and adjacent
    words in one charset are joined before decoding, so a multi-byte
    character split across words survives.  Undecodable words stay as they
    are.
    """
    if "=?" not in text:
        return text
    out: list[str] = []
    pending = bytearray()
    pending_charset = ""
    pos = 0
    after_word = False

    def flush() -> None:
        nonlocal pending_charset
        if pending:
            out.append(_text(bytes(pending), pending_charset.encode("ascii", "replace")))
            pending.clear()
        pending_charset = ""

    for match in _ENCODED_WORD.finditer(text):
        gap = text[pos : match.start()]
        charset = match.group(1).split("*")[0]
        data = _decode_word(match.group(2), match.group(3))
        if data is None:
            continue  # left in the text, copied with the next gap
        if not (after_word and gap.strip(" \t") == ""):
            flush()
            out.append(gap)
        if pending and charset.lower() != pending_charset.lower():
            flush()
        pending_charset = charset
        pending.extend(data)
        pos = match.end()
        after_word = True
    flush()
    out.append(text[pos:])
    return "".join(out)


def _decode_word(encoding: str, payload: str) -> bytes | None:
    try:
        data = payload.encode("ascii")
    except UnicodeEncodeError:
        return None
    try:
        if encoding in "qQ":
            return binascii.a2b_qp(data, header=True)
        return binascii.a2b_base64(data + b"=" * (-len(data) % 4), strict_mode=True)
    except binascii.Error:
        return None


class ParsedCache:
    """
    Recently parsed messages, least recently used dropped first.

    Bounded by the estimated memory the entries hold (`ParsedMessage.cost`:
    the raw bytes each entry keeps alive plus its structure), so that a
    cache full of small messages or header-only parses stays as small as
    one full of big messages.  Keys are the caller's, e.g. ``(user,
    mailbox, uidvalidity, uid)``: a UID is never reused within a
    UIDVALIDITY, so an entry never goes stale.  A header-only parse is
    only returned to callers that ask for one, and a complete parse
    replaces it.  One instance per server, no global state.
    """

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self.total_bytes = 0
        self._entries: OrderedDict[Hashable, tuple[ParsedMessage, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable, header_only: bool = False) -> ParsedMessage | None:
        """
        The complete parse kept under ``key``; with ``header_only``, a
        header-only parse will do as well.
        """
        entry = self._entries.get(key)
        if entry is None:
            return None
        parsed = entry[0]
        if not (header_only or parsed.complete):
            return None
        self._entries.move_to_end(key)
        return parsed

    def put(self, key: Hashable, parsed: ParsedMessage) -> None:
        """Keep ``parsed``; one costing more than the whole cache is not kept."""
        self.discard(key)
        cost = parsed.cost
        if cost > self.max_bytes:
            return
        self._entries[key] = (parsed, cost)
        self.total_bytes += cost
        while self.total_bytes > self.max_bytes:
            _, (_, old) = self._entries.popitem(last=False)
            self.total_bytes -= old

    def get_or_parse(self, key: Hashable, raw: bytes) -> ParsedMessage:
        """The cached parse of ``key``, parsing ``raw`` (synchronously) if missing."""
        parsed = self.get(key)
        if parsed is None:
            parsed = ParsedMessage.parse(raw)
            self.put(key, parsed)
        return parsed

    def discard(self, key: Hashable) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self.total_bytes -= old[1]

    def clear(self) -> None:
        self._entries.clear()
        self.total_bytes = 0
