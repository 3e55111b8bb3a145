"""
ENVELOPE and BODYSTRUCTURE of a parsed message (RFC 3501 §7.4.2, §9).

Both are built from the raw header bytes, never from decoded text: RFC 3501
passes header values through as they were sent (encoded words and all), and
raw 8-bit values simply become literals.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from twistedmail._mime import Part, parse_params, unfold
from twistedmail.imap import wire

NIL = wire.NIL


def _nstring(value: bytes | None) -> bytes:
    return wire.nstring(value)


# --- ENVELOPE -------------------------------------------------------------------------


_ENVELOPE_FIELDS = frozenset(
    {
        "date",
        "subject",
        "from",
        "sender",
        "reply-to",
        "to",
        "cc",
        "bcc",
        "in-reply-to",
        "message-id",
    }
)


def envelope(part: Part) -> bytes:
    """
    The ENVELOPE of the message whose header is ``part``'s.

    Sender and Reply-To default to From when absent or empty (RFC 3501
    §7.4.2); the first of repeated fields wins.
    """
    # The first of each field, unfolded, from one pass over the header.
    raw = part.raw
    first: dict[str, bytes] = {}
    for f in part.fields:
        if f.name in _ENVELOPE_FIELDS and f.name not in first:
            first[f.name] = unfold(raw[f.value_start : f.end])
    frm = _addresses(first.get("from"))
    sender = _addresses(first.get("sender")) or frm
    reply_to = _addresses(first.get("reply-to")) or frm
    items = [
        _nstring(_text(first.get("date"))),
        _nstring(_text(first.get("subject"))),
        frm or NIL,
        sender or NIL,
        reply_to or NIL,
        _addresses(first.get("to")) or NIL,
        _addresses(first.get("cc")) or NIL,
        _addresses(first.get("bcc")) or NIL,
        _nstring(_text(first.get("in-reply-to"))),
        _nstring(_text(first.get("message-id"))),
    ]
    return wire.paren_list(items)


def _text(value: bytes | None) -> bytes | None:
    """An unfolded value, leading blanks off, trailing kept (Dovecot)."""
    return None if value is None else value.lstrip(b" \t")


def _addresses(value: bytes | None) -> bytes:
    if value is None:
        return b""
    entries = parse_address_list(value.strip(b" \t"))
    if not entries:
        return b""
    # RFC 3501 §9: env-from = "(" 1*address ")", no blanks between.
    return b"(" + b"".join(_address(entry) for entry in entries) + b")"


def _address(entry: AddressEntry) -> bytes:
    name, adl, mailbox, host = entry
    if mailbox is not None and host is not None:  # not a group marker
        mailbox = mailbox or b"MISSING_MAILBOX"
        host = host or b"MISSING_DOMAIN"
    return wire.paren_list([_nstring(name), _nstring(adl), _nstring(mailbox), _nstring(host)])


AddressEntry = tuple[bytes | None, bytes | None, bytes | None, bytes | None]

_SPECIALS = b'()<>[]:;@\\,."'
# Regular expressions keep the long runs (atoms, quoted strings) in C.
_ATOM = re.compile(rb'[^()<>\[\]:;@\\,." \t\r\n]+')
_QUOTED = re.compile(rb'"((?:[^"\\]|\\.)*)(?:"|\\?\Z)', re.S)
_QUOTED_PAIR = re.compile(rb"\\(.)", re.S)


def _tokens(value: bytes) -> Iterator[tuple[str, bytes]]:
    """RFC 5322 §3.2 lexical tokens: ``atom``, ``quoted``, ``comment``, specials."""
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if c in b" \t\r\n":
            i += 1
        elif c == 0x22:  # '"'
            match = _QUOTED.match(value, i)
            assert match is not None  # the pattern matches any '"'
            yield "quoted", _QUOTED_PAIR.sub(rb"\1", match.group(1))
            i = match.end()
        elif c == 0x28:  # "(" comment, nested
            depth, j, out = 0, i, bytearray()
            while j < n:
                d = value[j]
                if d == 0x5C and j + 1 < n:
                    out.append(value[j + 1])
                    j += 2
                    continue
                if d == 0x28:
                    depth += 1
                    if depth > 1:
                        out.append(d)
                elif d == 0x29:
                    depth -= 1
                    if depth == 0:
                        break
                    out.append(d)
                else:
                    out.append(d)
                j += 1
            yield "comment", bytes(out)
            i = j + 1
        elif c == 0x5B:  # "[" domain literal, kept with its brackets
            j = value.find(b"]", i)
            j = n - 1 if j < 0 else j
            yield "atom", value[i : j + 1]
            i = j + 1
        elif c in _SPECIALS:
            yield "special", value[i : i + 1]
            i += 1
        else:
            match = _ATOM.match(value, i)
            assert match is not None  # c is an atom byte
            yield "atom", match.group()
            i = match.end()


def _join_words(words: list[tuple[str, bytes]]) -> bytes:
    out = b""
    for kind, w in words:
        if kind == "comment":
            continue
        # "John Q. Public": blanks between words, none before a dot.
        if out and not (kind == "special" and w == b"."):
            out += b" "
        out += w
    return out


def _addr_spec(tokens: list[tuple[str, bytes]]) -> tuple[bytes | None, bytes | None]:
    """Local part and domain of an addr-spec's tokens (quotes kept off)."""
    local = b""
    domain: bytes | None = None
    for kind, w in tokens:
        if kind == "comment":
            continue
        if kind == "special" and w == b"@" and domain is None:
            domain = b""
            continue
        piece = w
        if domain is None:
            local += piece
        else:
            domain += piece
    return local, domain


# The everyday shapes of a list element, ``Display Name <local@domain>`` and
# ``local@domain``, without quotes, comments, groups, routes or domain
# literals.  Words of the name are atoms separated by blanks; the local
# part and the domain are atoms and dots without blanks.  (Written so that
# no two quantifiers can share a character: linear, whatever the input.)
_WORD = rb'[^()<>\[\]:;@\\,." \t\r\n]+'
_DOTTED = rb'[^()<>\[\]:;@\\," \t\r\n]+'
_SIMPLE = re.compile(
    rb"[ \t]*(?:(%s(?:[ \t]+%s)*)?[ \t]*<(%s)@(%s)>|(%s)@(%s))[ \t]*"
    % (_WORD, _WORD, _DOTTED, _DOTTED, _DOTTED, _DOTTED)
)


def _simple_address_list(value: bytes) -> list[AddressEntry] | None:
    """
    The entries of a list made only of everyday elements, or None.

    What `parse_address_list` would give for them, without the tokenizer:
    the name's words joined by single blanks, local part and domain as
    sent.  Anything else (an empty element included) is left to it.
    """
    entries: list[AddressEntry] = []
    for element in value.split(b","):
        m = _SIMPLE.fullmatch(element)
        if m is None:
            return None
        name, local, host, bare_local, bare_host = m.groups()
        if local is None:
            entries.append((None, None, bare_local, bare_host))
        else:
            # Blanks are space and tab only (bytes.split() would also cut at
            # VT and FF, which are atom characters here).
            words = None
            if name:
                words = b" ".join(w for w in name.replace(b"\t", b" ").split(b" ") if w)
            entries.append((words, None, local, host))
    return entries


def parse_address_list(value: bytes) -> list[AddressEntry]:
    """
    The ENVELOPE address entries of an RFC 5322 address-list.

    Each entry is ``(name, adl, mailbox, host)``; a group is bracketed by
    ``(NIL NIL group NIL)`` and ``(NIL NIL NIL NIL)`` as RFC 3501 §7.4.2
    says.  A name is the display phrase (or, failing that, a comment), as
    sent; a quoted local part is unquoted.  A missing local part or domain
    is ``b""`` (never None: a None host marks a group); `envelope` sends
    them as ``MISSING_MAILBOX`` / ``MISSING_DOMAIN`` like Dovecot.
    """
    simple = _simple_address_list(value)
    if simple is not None:
        return simple
    return _parse_address_list(value)


def _parse_address_list(value: bytes) -> list[AddressEntry]:
    """`parse_address_list` for any input: RFC 5322 tokens, then the grammar."""
    entries: list[AddressEntry] = []
    words: list[tuple[str, bytes]] = []
    angle: list[tuple[str, bytes]] | None = None
    in_angle = False
    in_group = False

    before = b""

    def finish(on_comma: bool = False) -> None:
        nonlocal words, angle
        comments = [w for k, w in words if k == "comment"]
        if angle is not None:
            name_words = [(k, w) for k, w in words if k != "comment"]
            name = _join_words(name_words) if name_words else None
            if name is None and comments:
                name = comments[-1]
            route = b""
            spec = angle
            colon = next((i for i, (k, w) in enumerate(angle) if w == b":" and k == "special"), -1)
            if colon >= 0:
                route = b"".join(w for k, w in angle[:colon] if k != "comment")
                spec = angle[colon + 1 :]
            local, host = _addr_spec(spec)
            entries.append((name, route or None, local, host or b""))
        elif any(k != "comment" for k, _ in words):
            local, host = _addr_spec(words)
            name = comments[-1] if comments else None
            entries.append((name, None, local, host or b""))
        elif on_comma and before == b",":
            # An empty list element: Dovecot reports it, so clients see that
            # the header was odd; `_address` renders it MISSING_*.
            entries.append((None, None, b"", b""))
        words, angle = [], None

    previous = b""  # the token before this one, for spotting empty elements
    for kind, tok in _tokens(value):
        if kind != "comment":
            before, previous = previous, tok if kind == "special" else b"w"
        if in_angle:
            if kind == "special" and tok == b">":
                in_angle = False
            else:
                assert angle is not None
                angle.append((kind, tok))
            continue
        if kind == "special" and tok == b"<":
            in_angle = True
            angle = []
        elif kind == "special" and tok == b",":
            finish(on_comma=True)
        elif kind == "special" and tok == b":" and not in_group and angle is None:
            name_words = [(k, w) for k, w in words if k != "comment"]
            entries.append((None, None, _join_words(name_words), None))
            in_group = True
            words = []
        elif kind == "special" and tok == b";" and in_group:
            finish()
            entries.append((None, None, None, None))
            in_group = False
        elif angle is None or kind == "comment":
            words.append((kind, tok))
    finish()
    if in_group:
        entries.append((None, None, None, None))
    return entries


# --- BODYSTRUCTURE --------------------------------------------------------------------


def _params(params: tuple[tuple[bytes, bytes], ...] | list[tuple[bytes, bytes]]) -> bytes:
    if not params:
        return NIL
    return wire.paren_list(wire.string(x) for pair in params for x in pair)


def _disposition(part: Part) -> bytes:
    value = part.value("content-disposition")
    if not value:
        return NIL
    semi = value.find(b";")
    kind = (value if semi < 0 else value[:semi]).strip(b" \t")
    if not kind:
        return NIL
    params = parse_params(value[semi + 1 :]) if semi >= 0 else []
    return wire.paren_list([wire.string(kind), _params(params)])


def _language(part: Part) -> bytes:
    value = part.value("content-language")
    if not value:
        return NIL
    tags = [t.strip(b" \t") for t in value.split(b",") if t.strip(b" \t")]
    if not tags:
        return NIL
    # Always the list form, even for one tag, as Dovecot sends it.
    return wire.paren_list(wire.string(t) for t in tags)


def _extension(part: Part) -> list[bytes]:
    """body-fld-dsp, body-fld-lang, body-fld-loc (shared by both forms)."""
    return [_disposition(part), _language(part), _nstring(part.value("content-location"))]


def _encoding(value: bytes | None) -> bytes:
    if value:
        value = value.split(b"(")[0].strip(b" \t")
    return value or b"7bit"


def bodystructure(part: Part, extensible: bool) -> bytes:
    """
    BODYSTRUCTURE (``extensible``) or BODY of ``part`` (RFC 3501 §7.4.2).

    Sizes are octets of the encoded body; text/* and message/rfc822 parts
    carry their line count.  Every extension field is sent (as NIL when
    missing), as Dovecot does, so clients see a constant shape.
    """
    ctype = part.content_type
    if part.children is not None:
        items = [b"".join(bodystructure(child, extensible) for child in part.children)]
        items.append(wire.string(ctype.subtype))
        if extensible:
            params = [(k, v) for k, v in ctype.params]
            items.append(_params(params))
            items.extend(_extension(part))
        return b"(" + b" ".join(items) + b")"
    encoding = part.value("content-transfer-encoding")
    kind = ctype.mime_type
    params = list(ctype.params)
    if kind.startswith("text/") and ctype.param("charset") is None:
        # RFC 2045 §5.2 default charset, made explicit as Dovecot does.
        params.append((b"charset", b"us-ascii"))
    fields = [
        wire.string(ctype.maintype),
        wire.string(ctype.subtype),
        _params(params),
        _nstring(part.value("content-id")),
        _nstring(part.value("content-description")),
        wire.string(_encoding(encoding)),
        b"%d" % part.body_size,
    ]
    if part.embedded is not None:
        fields.append(envelope(part.embedded))
        fields.append(bodystructure(part.embedded, extensible))
        fields.append(b"%d" % part.body_lines())
    elif kind.startswith("text/"):
        fields.append(b"%d" % part.body_lines())
    if extensible:
        fields.append(_nstring(part.value("content-md5")))
        fields.extend(_extension(part))
    return wire.paren_list(fields)
