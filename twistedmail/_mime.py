"""
The MIME structure of a message as offsets into its raw bytes.

IMAP must serve every section byte-exact (RFC 3501 §6.4.5) and count sizes
and lines of the *encoded* data, so nothing here ever re-serialises: a
`Part` is a set of offsets into the one ``bytes`` object of the whole
message, header fields included.  The stdlib ``email`` package is used only
to interpret small header values (see `twistedmail.message`); its parsers
rebuild headers and copy bodies, which loses the exact bytes and costs time
and memory on big messages.

Parsing is lenient the way deployed servers are: a header line without a
colon is skipped, a multipart with a missing close delimiter ends at the end
of its body, a multipart without a usable boundary is treated as
``text/plain`` (RFC 2045 §5.2: an invalid Content-Type means the default).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

#: Nesting deeper than this (multiparts or message/rfc822) is not descended
#: into: the part is then treated as an opaque application/octet-stream, so
#: a hostile message cannot exhaust the stack.
MAX_DEPTH = 40

_WSP = b" \t"
_TSPECIALS = frozenset(b'()<>@,;:\\"/[]?=')
_TOKEN_CHARS = frozenset(c for c in range(0x21, 0x7F) if c not in _TSPECIALS)
# Deletion tables: ``value.translate(None, table)`` is empty exactly when all
# bytes of ``value`` are in the set (a C loop instead of a Python one).
_TOKEN_TABLE = bytes(sorted(_TOKEN_CHARS))
_FIELD_NAME_TABLE = bytes(range(33, 127))  # RFC 5322 §3.6.8 ftext, less ":"


@dataclass(frozen=True, slots=True)
class ContentType:
    """
    A parsed Content-Type: type and subtype as sent, parameters as sent.

    ``params`` keeps the names' and values' case and order, with quotes
    removed and quoted-pairs unescaped (RFC 2045 §5.1).  RFC 2231
    continuations (``name*0*=...``) are joined into one parameter but not
    decoded (see `merge_continuations`): IMAP clients decode them, as RFC
    3501 leaves it.  ``defaulted`` says the header was missing or unusable.
    """

    maintype: bytes
    subtype: bytes
    params: tuple[tuple[bytes, bytes], ...] = ()
    defaulted: bool = False

    @property
    def mime_type(self) -> str:
        """``type/subtype`` lower-cased, for decisions."""
        return (self.maintype + b"/" + self.subtype).decode("ascii", "replace").lower()

    def param(self, name: str) -> bytes | None:
        """The first parameter called ``name`` (case-insensitive)."""
        wanted = name.lower().encode("ascii")
        for key, value in self.params:
            if key.lower() == wanted:
                return value
        return None


# Defaults are spelt in lower case, as Dovecot sends them (case does not
# matter to clients; matching a real peer byte for byte makes it a usable
# test oracle).
TEXT_PLAIN = ContentType(b"text", b"plain", ((b"charset", b"us-ascii"),), defaulted=True)
MESSAGE_RFC822 = ContentType(b"message", b"rfc822", (), defaulted=True)
OCTET_STREAM = ContentType(b"application", b"octet-stream", (), defaulted=True)


class Field(NamedTuple):
    """
    One header field: its lower-cased name and offsets in the raw message.

    A named tuple rather than a frozen dataclass: a header has dozens of
    fields and a mailbox thousands of headers, and a frozen dataclass pays
    an ``object.__setattr__`` per attribute to build.
    """

    name: str
    start: int  # first byte of the field name
    value_start: int  # first byte after the colon
    end: int  # one past the field's last line terminator (or the header end)


class Part:
    """
    One MIME entity: a header block and a body, as offsets into ``raw``.

    ``children`` is set for a multipart, ``embedded`` for a message/rfc822
    part (the encapsulated message, itself a `Part`).  Both are parsed on
    first use: ENVELOPE, SEARCH on headers and the HTTP message list need
    only the top header, and skipping the body scan makes them several
    times cheaper.  `expand` parses everything at once (in a thread, for
    big messages).  ``path`` is the IMAP part number.
    """

    __slots__ = (
        "_children",
        "_depth",
        "_embedded",
        "_expanded",
        "body_start",
        "content_type",
        "end",
        "fields",
        "path",
        "raw",
        "start",
    )

    def __init__(
        self,
        raw: bytes,
        start: int,
        body_start: int,
        end: int,
        fields: list[Field],
        content_type: ContentType,
        path: tuple[int, ...] = (),
        depth: int = 0,
    ) -> None:
        self.raw = raw
        self.start = start
        self.body_start = body_start
        self.end = end
        self.fields = fields
        self.content_type = content_type
        self.path = path
        self._depth = depth
        self._children: list[Part] | None = None
        self._embedded: Part | None = None
        self._expanded = False

    @property
    def children(self) -> list[Part] | None:
        if not self._expanded:
            self._expand()
        return self._children

    @property
    def embedded(self) -> Part | None:
        if not self._expanded:
            self._expand()
        return self._embedded

    def _expand(self) -> None:
        # Results are stored before the flag, so a concurrent reader (the
        # reactor while a thread expands) never sees a half-built part.
        raw, kind, depth = self.raw, self.content_type.mime_type, self._depth
        if kind.startswith("multipart/"):
            boundary = self.content_type.param("boundary")
            child_default = MESSAGE_RFC822 if kind == "multipart/digest" else TEXT_PLAIN
            ranges = split_multipart(raw, self.body_start, self.end, boundary) if boundary else []
            if not ranges:
                # No boundary or no delimiter: one empty text/plain part keeps
                # the structure well formed (RFC 3501 body-type-mpart needs a
                # body), as Dovecot does.
                ranges, child_default = [(self.end, self.end)], TEXT_PLAIN
            self._children = [
                parse_entity(raw, s, e, child_default, depth + 1, (*self.path, n))
                for n, (s, e) in enumerate(ranges, 1)
            ]
        elif kind == "message/rfc822":
            self._embedded = parse_entity(
                raw, self.body_start, self.end, TEXT_PLAIN, depth + 1, self.path
            )
        self._expanded = True

    def expand(self) -> None:
        """Parse every part below this one now."""
        stack: list[Part] = [self]
        while stack:
            part = stack.pop()
            stack.extend(part.children or ())
            if part.embedded is not None:
                stack.append(part.embedded)

    @property
    def header_bytes(self) -> bytes:
        return self.raw[self.start : self.body_start]

    @property
    def body_bytes(self) -> bytes:
        return self.raw[self.body_start : self.end]

    @property
    def body_size(self) -> int:
        return self.end - self.body_start

    def body_lines(self) -> int:
        """
        Lines in the encoded body: its line feeds, as Dovecot counts them (a
        last line without one does not count).
        """
        return self.raw.count(b"\n", self.body_start, self.end)

    def values(self, name: str) -> list[bytes]:
        """Raw values (after the colon, still folded) of every ``name`` field."""
        name = name.lower()
        return [self.raw[f.value_start : f.end] for f in self.fields if f.name == name]

    def value(self, name: str) -> bytes | None:
        """The first ``name`` field's value, unfolded and stripped, or None."""
        name = name.lower()
        for f in self.fields:
            if f.name == name:
                return unfold(self.raw[f.value_start : f.end]).strip(b" \t")
        return None

    def field_lines(self, names: frozenset[str], keep: bool) -> bytes:
        """
        The fields whose names are (``keep``) or are not in ``names``, then
        the blank line: RFC 3501 HEADER.FIELDS and HEADER.FIELDS.NOT.
        """
        out = bytearray()
        for f in self.fields:
            if (f.name in names) == keep:
                line = self.raw[f.start : f.end]
                out += line
                if not line.endswith(b"\n"):
                    out += b"\r\n"
        out += b"\r\n"
        return bytes(out)

    @property
    def is_multipart(self) -> bool:
        return self.children is not None

    def walk(self) -> list[Part]:
        """This part and every part below it, depth first, embedded included."""
        out: list[Part] = []
        stack: list[Part] = [self]
        while stack:
            part = stack.pop()
            out.append(part)
            below = part.children or ([part.embedded] if part.embedded else [])
            stack.extend(reversed(below))
        return out


def unfold(value: bytes) -> bytes:
    """Remove the line breaks of folding (RFC 5322 §2.2.3), keep the blanks."""
    if b"\n" not in value:
        return value.rstrip(b"\r")
    return value.replace(b"\r\n", b"").replace(b"\n", b"").replace(b"\r", b"")


def _split_header(raw: bytes, start: int, end: int) -> tuple[list[Field], int]:
    """The fields of the header block at ``start`` and where the body starts."""
    fields: list[Field] = []
    pos = start
    current: list[int] | None = None  # [start, value_start, end] being built
    name = ""
    while pos < end:
        nl = raw.find(b"\n", pos, end)
        line_end = end if nl < 0 else nl + 1
        first = raw[pos]
        if first == 0x0A or (first == 0x0D and raw.startswith(b"\r\n", pos)):
            if current is not None:
                fields.append(Field(name, current[0], current[1], current[2]))
            return fields, line_end
        if first in _WSP:
            if current is not None:
                current[2] = line_end
        else:
            if current is not None:
                fields.append(Field(name, current[0], current[1], current[2]))
                current = None
            colon = raw.find(b":", pos, line_end)
            if colon > pos:
                raw_name = raw[pos:colon].rstrip(_WSP)
                if raw_name and not raw_name.translate(None, _FIELD_NAME_TABLE):
                    name = raw_name.decode("ascii").lower()
                    current = [pos, colon + 1, line_end]
            # A line that is neither a field nor a continuation (an mbox
            # "From " line, garbage) stays in the header block, unindexed.
        pos = line_end
    if current is not None:
        fields.append(Field(name, current[0], current[1], current[2]))
    return fields, end


def parse_params(data: bytes) -> list[tuple[bytes, bytes]]:
    """
    ``; name=value`` pairs of a structured MIME header (RFC 2045 §5.1).

    Values may be tokens or quoted strings; comments are skipped; malformed
    pieces are dropped rather than failing the whole header.  RFC 2231
    continuations are joined (see `merge_continuations`).
    """
    params: list[tuple[bytes, bytes]] = []
    i, n = 0, len(data)
    while i < n:
        i = _skip_cfws(data, i)
        if i >= n:
            break
        if data[i] == 0x3B:  # ";"
            i += 1
            continue
        j = i
        while j < n and data[j] not in b"=;" and data[j] not in b" \t(":
            j += 1
        name = data[i:j]
        j = _skip_cfws(data, j)
        if j >= n or data[j] != 0x3D or not name:  # "="
            # Not a parameter: skip to the next ";".
            k = data.find(b";", j)
            i = n if k < 0 else k + 1
            continue
        j = _skip_cfws(data, j + 1)
        if j < n and data[j] == 0x22:  # '"'
            value, j = _quoted_string(data, j)
        else:
            k = j
            while k < n and data[k] not in b"; \t(":
                k += 1
            value, j = data[j:k], k
        params.append((name, value))
        i = j
    return merge_continuations(params)


_CONTINUATION = re.compile(rb"(.+)\*([0-9]{1,4})(\*?)")


def merge_continuations(params: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """
    Join RFC 2231 §3 continuations (``name*0``, ``name*1*`` ...) into one.

    The joined parameter follows the plain ones.  If any segment is
    extended (``*N*``) the result is the extended ``name*`` and ``%`` in
    plain segments is escaped, so the value stays one valid RFC 2231
    extended value; charset decoding is left to the client, as RFC 3501
    leaves it.  This is what Dovecot sends.
    """
    plain: list[tuple[bytes, bytes]] = []
    segments: dict[bytes, list[tuple[int, bool, bytes]]] = {}
    for name, value in params:
        match = _CONTINUATION.fullmatch(name)
        if match is None:
            plain.append((name, value))
        else:
            base = match.group(1)
            segments.setdefault(base, []).append((int(match.group(2)), bool(match.group(3)), value))
    for base, parts in segments.items():
        parts.sort(key=lambda seg: seg[0])
        extended = any(ext for _, ext, _ in parts)
        value = b"".join(
            v if ext or not extended else v.replace(b"%", b"%25") for _, ext, v in parts
        )
        plain.append((base + b"*" if extended else base, value))
    return plain


def _skip_cfws(data: bytes, i: int) -> int:
    n = len(data)
    while i < n:
        c = data[i]
        if c in b" \t\r\n":
            i += 1
        elif c == 0x28:  # "(" comment, may nest
            depth = 0
            while i < n:
                c = data[i]
                if c == 0x5C:
                    i += 2
                    continue
                if c == 0x28:
                    depth += 1
                elif c == 0x29:
                    depth -= 1
                    if depth == 0:
                        i += 1
                        break
                i += 1
        else:
            break
    return i


def _quoted_string(data: bytes, i: int) -> tuple[bytes, int]:
    """The unescaped content of the quoted string at ``data[i]`` and the end."""
    out = bytearray()
    i += 1
    n = len(data)
    while i < n:
        c = data[i]
        if c == 0x5C and i + 1 < n:
            out.append(data[i + 1])
            i += 2
            continue
        if c == 0x22:
            return bytes(out), i + 1
        out.append(c)
        i += 1
    return bytes(out), n


def parse_content_type(value: bytes | None, default: ContentType) -> ContentType:
    """A Content-Type value (unfolded), or ``default`` when absent or invalid."""
    if value is None:
        return default
    semi = value.find(b";")
    head = value if semi < 0 else value[:semi]
    i = _skip_cfws(head, 0)
    head = head[i:]
    paren = head.find(b"(")
    if paren >= 0:
        head = head[:paren]
    maintype, slash, subtype = head.strip(b" \t").partition(b"/")
    maintype, subtype = maintype.strip(b" \t"), subtype.strip(b" \t")
    if (
        not slash
        or not maintype
        or not subtype
        or (maintype + subtype).translate(None, _TOKEN_TABLE)
    ):
        # RFC 2045 §5.2: a syntactically invalid Content-Type is text/plain.
        return TEXT_PLAIN
    params = parse_params(value[semi + 1 :]) if semi >= 0 else []
    return ContentType(maintype, subtype, tuple(params))


def parse_entity(
    raw: bytes,
    start: int,
    end: int,
    default: ContentType = TEXT_PLAIN,
    depth: int = 0,
    path: tuple[int, ...] = (),
) -> Part:
    """The MIME entity ``raw[start:end]``: its header now, its parts on use."""
    fields, body_start = _split_header(raw, start, end)
    part = Part(raw, start, body_start, end, fields, TEXT_PLAIN, path, depth)
    ctype = parse_content_type(part.value("content-type"), default)
    kind = ctype.mime_type
    if depth >= MAX_DEPTH and (kind.startswith("multipart/") or kind == "message/rfc822"):
        ctype = OCTET_STREAM
    part.content_type = ctype
    return part


def split_multipart(raw: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int]]:
    """
    The body parts of the multipart body ``raw[start:end]`` (RFC 2046 §5.1.1).

    A delimiter is a line that starts with ``--boundary`` ("it is sufficient
    that the boundary appear in its entirety following the CRLF", §5.1.1;
    Dovecot agrees); ``--boundary--`` closes.  The line break before a
    delimiter belongs to it, not to the part.  The preamble and epilogue are
    not parts.  A missing close delimiter ends the last part at the end of
    the body.
    """
    delim = b"--" + boundary
    ranges: list[tuple[int, int]] = []
    part_start: int | None = None
    pos = start
    while True:
        i = raw.find(delim, pos, end)
        if i < 0:
            break
        if i != start and raw[i - 1] != 0x0A:
            pos = i + 1
            continue
        after = i + len(delim)
        close = raw.startswith(b"--", after) and after + 2 <= end
        nl = raw.find(b"\n", after, end)
        line_end = end if nl < 0 else nl + 1
        if part_start is not None:
            part_end = i
            if part_end > part_start and raw[part_end - 1] == 0x0A:
                part_end -= 1
                if part_end > part_start and raw[part_end - 1] == 0x0D:
                    part_end -= 1
            ranges.append((part_start, part_end))
        if close:
            return ranges
        part_start = line_end
        pos = line_end
    if part_start is not None:
        ranges.append((part_start, end))
    return ranges
