"""
The grammar of each IMAP command (RFC 3501 §6 and §9, plus the extensions
we offer), turning one complete command into a `Command` with typed
arguments.

A `ParseError` after the tag becomes ``tag BAD``; one before it (no tag at
all) an untagged ``* BAD``.  Nothing here touches the session or the store:
whether a command is allowed in the current state is the session's call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from twistedmail.imap import wire
from twistedmail.imap.fetch import FetchAtt, Section
from twistedmail.imap.searchkeys import SearchKey, parse_charset, parse_search_keys
from twistedmail.imap.syntax import MAX_NUMBER64, ParseError, Reader, SeqSet
from twistedmail.model import INBOX, FlagMode

# --- Arguments ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NoArgs:
    pass


@dataclass(frozen=True, slots=True)
class LoginArgs:
    user: str
    password: str


@dataclass(frozen=True, slots=True)
class AuthenticateArgs:
    mechanism: str
    #: RFC 4959 SASL-IR initial response: base64 text, or b"=" for empty.
    initial: bytes | None


@dataclass(frozen=True, slots=True)
class MailboxArgs:
    """SELECT, EXAMINE, DELETE, SUBSCRIBE, UNSUBSCRIBE."""

    mailbox: str
    condstore: bool = False
    #: RFC 7162 §3.2.5 QRESYNC (uidvalidity, modseq, known UIDs or None).
    qresync: tuple[int, int, SeqSet | None] | None = None


@dataclass(frozen=True, slots=True)
class CreateArgs:
    mailbox: str
    #: RFC 6154 §3 CREATE ... (USE (\Sent)).
    special_use: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RenameArgs:
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class ListArgs:
    """LIST and LSUB, with RFC 5258 LIST-EXTENDED options when given."""

    reference: str
    patterns: tuple[str, ...]
    select_opts: frozenset[str] = frozenset()
    return_opts: frozenset[str] = frozenset()
    status_atts: tuple[str, ...] = ()
    extended: bool = False


@dataclass(frozen=True, slots=True)
class StatusArgs:
    mailbox: str
    atts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AppendArgs:
    mailbox: str
    flags: tuple[str, ...]
    date: datetime | None
    message: bytes


@dataclass(frozen=True, slots=True)
class SearchArgs:
    key: SearchKey
    #: RFC 4731 ESEARCH RETURN options; None for a plain RFC 3501 SEARCH.
    returns: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class FetchArgs:
    seqs: SeqSet
    atts: tuple[FetchAtt, ...]
    #: RFC 7162 §3.1.4 CHANGEDSINCE.
    changed_since: int | None = None
    #: RFC 7162 §3.2.6 VANISHED (UID FETCH with QRESYNC).
    vanished: bool = False


@dataclass(frozen=True, slots=True)
class StoreArgs:
    seqs: SeqSet
    mode: FlagMode
    silent: bool
    flags: tuple[str, ...]
    #: RFC 7162 §3.1.3 UNCHANGEDSINCE.
    unchanged_since: int | None = None


@dataclass(frozen=True, slots=True)
class CopyArgs:
    """COPY and MOVE (RFC 6851)."""

    seqs: SeqSet
    mailbox: str


@dataclass(frozen=True, slots=True)
class SeqArgs:
    """UID EXPUNGE (RFC 4315 §2.1)."""

    seqs: SeqSet


@dataclass(frozen=True, slots=True)
class IdArgs:
    params: tuple[tuple[str, str | None], ...] | None


@dataclass(frozen=True, slots=True)
class EnableArgs:
    capabilities: tuple[str, ...]


Args = (
    NoArgs
    | LoginArgs
    | AuthenticateArgs
    | MailboxArgs
    | CreateArgs
    | RenameArgs
    | ListArgs
    | StatusArgs
    | AppendArgs
    | SearchArgs
    | FetchArgs
    | StoreArgs
    | CopyArgs
    | SeqArgs
    | IdArgs
    | EnableArgs
)


@dataclass(frozen=True, slots=True)
class Command:
    """``name`` is upper-case; UID commands are spelt ``UID FETCH`` etc."""

    tag: bytes
    name: str
    args: Args = field(default_factory=NoArgs)

    @property
    def uid(self) -> bool:
        return self.name.startswith("UID ")


class CommandError(ParseError):
    """A parse error after the tag was read: answered ``tag BAD``."""

    def __init__(self, tag: bytes, name: str, reason: str) -> None:
        super().__init__(reason)
        self.tag = tag
        self.name = name
        self.reason = reason


# --- Shared pieces --------------------------------------------------------------


def mailbox_name(value: bytes) -> str:
    """
    A mailbox argument as a name: modified UTF-7 decoded (RFC 3501 §5.1.3),
    ``INBOX`` in any case folded to ``INBOX`` (§5.1).

    Raw UTF-8 names (sent by clients that assume RFC 6855) are accepted too.
    """
    if any(c > 0x7F for c in value):
        try:
            name = value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ParseError("mailbox name is not valid UTF-8") from e
    else:
        try:
            name = wire.decode_mailbox(value)
        except ValueError as e:
            raise ParseError("bad modified UTF-7 in mailbox name") from e
    if name.upper() == INBOX:
        return INBOX
    if name[:6].upper() == "INBOX/":
        return INBOX + name[5:]
    return name


def _mailbox(r: Reader) -> str:
    return mailbox_name(r.astring())


def _pattern(r: Reader) -> str:
    return _name(r.list_mailbox())


def _name(value: bytes) -> str:
    """A LIST reference or pattern: modified UTF-7 (or raw UTF-8), not folded."""
    if any(c > 0x7F for c in value):
        return Reader(value).text(value)
    try:
        return wire.decode_mailbox(value)
    except ValueError as e:
        raise ParseError("bad modified UTF-7 in name") from e


def _atoms_in_parens(r: Reader) -> list[str]:
    r.open_paren()
    out: list[str] = []
    if r.close_paren():
        return out
    while True:
        out.append(r.keyword())
        if r.close_paren():
            return out
        r.sp()


# --- Per-command grammar --------------------------------------------------------


def _no_args(r: Reader) -> Args:
    return NoArgs()


def _login(r: Reader) -> Args:
    r.sp()
    user = r.astring_text()
    r.sp()
    return LoginArgs(user, r.astring_text())


def _authenticate(r: Reader) -> Args:
    r.sp()
    mechanism = r.keyword()
    initial = None
    if r.accept(b" "):
        initial = r.atom()  # base64 and "=" are atom characters
    return AuthenticateArgs(mechanism, initial)


def _select(r: Reader) -> Args:
    r.sp()
    mailbox = _mailbox(r)
    condstore = False
    qresync = None
    if r.accept(b" "):
        # RFC 4466 select-params; RFC 7162 §3.1.8 CONDSTORE, §3.2.5 QRESYNC.
        r.open_paren()
        while True:
            param = r.keyword()
            if param == "CONDSTORE":
                condstore = True
            elif param == "QRESYNC":
                r.sp()
                qresync = _qresync_params(r)
            else:
                raise ParseError(f"unknown SELECT parameter {param}")
            if r.close_paren():
                break
            r.sp()
    return MailboxArgs(mailbox, condstore, qresync)


def _qresync_params(r: Reader) -> tuple[int, int, SeqSet | None]:
    """``"(" uidvalidity SP mod-sequence-value [SP known-uids] [SP seq-match-data] ")"``."""
    r.open_paren()
    uidvalidity = r.nz_number()
    r.sp()
    modseq = r.number(MAX_NUMBER64)
    known = None
    if r.accept(b" ") and r.peek() != 0x28:
        known = r.seq_set(allow_saved=False)
        if any(0 in pair for pair in known.ranges):
            raise ParseError("known-uids must not use *")
        r.accept(b" ")
    if r.peek() == 0x28:
        # seq-match-data only saves a round trip; we can answer without it.
        r.open_paren()
        r.seq_set(allow_saved=False)
        r.sp()
        r.seq_set(allow_saved=False)
        r.expect(b")")
    r.expect(b")")
    return uidvalidity, modseq, known


def _mailbox_only(r: Reader) -> Args:
    r.sp()
    return MailboxArgs(_mailbox(r))


def _create(r: Reader) -> Args:
    r.sp()
    mailbox = _mailbox(r)
    uses: list[str] = []
    if r.accept(b" "):
        r.open_paren()
        r.expect(b"USE")
        r.sp()
        uses = r.flag_list()
        r.expect(b")")
    return CreateArgs(mailbox, tuple(uses))


def _rename(r: Reader) -> Args:
    r.sp()
    old = _mailbox(r)
    r.sp()
    return RenameArgs(old, _mailbox(r))


_LIST_SELECT = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
_LIST_RETURN = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS"})


def _list(r: Reader) -> Args:
    """RFC 3501 §6.3.8 LIST, extended by RFC 5258 §3 and RFC 5819."""
    r.sp()
    select_opts: frozenset[str] = frozenset()
    extended = False
    if r.peek() == 0x28:
        extended = True
        select_opts = frozenset(_atoms_in_parens(r))
        if not select_opts <= _LIST_SELECT:
            raise ParseError("unknown LIST selection option")
        if "RECURSIVEMATCH" in select_opts and len(select_opts) == 1:
            raise ParseError("RECURSIVEMATCH needs another selection option")
        r.sp()
    reference = _name(r.astring())
    r.sp()
    patterns: list[str] = []
    if r.peek() == 0x28:
        extended = True
        r.open_paren()
        patterns.append(_pattern(r))
        while not r.close_paren():
            r.sp()
            patterns.append(_pattern(r))
    else:
        patterns.append(_pattern(r))
    return_opts: set[str] = set()
    status_atts: tuple[str, ...] = ()
    if r.accept(b" "):
        extended = True
        r.expect(b"RETURN")
        r.sp()
        r.open_paren()
        if not r.close_paren():
            while True:
                opt = r.keyword()
                if opt not in _LIST_RETURN:
                    raise ParseError(f"unknown LIST return option {opt}")
                return_opts.add(opt)
                if opt == "STATUS":
                    r.sp()
                    status_atts = _status_atts(r)
                if r.close_paren():
                    break
                r.sp()
    return ListArgs(
        reference, tuple(patterns), select_opts, frozenset(return_opts), status_atts, extended
    )


def _lsub(r: Reader) -> Args:
    r.sp()
    reference = _name(r.astring())
    r.sp()
    return ListArgs(reference, (_pattern(r),))


STATUS_ATTS = frozenset(
    {"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ", "SIZE"}
)


def _status_atts(r: Reader) -> tuple[str, ...]:
    atts = _atoms_in_parens(r)
    if not atts or not set(atts) <= STATUS_ATTS:
        raise ParseError("bad STATUS attributes")
    return tuple(atts)


def _status(r: Reader) -> Args:
    r.sp()
    mailbox = _mailbox(r)
    r.sp()
    return StatusArgs(mailbox, _status_atts(r))


def _append(r: Reader) -> Args:
    r.sp()
    mailbox = _mailbox(r)
    r.sp()
    flags: list[str] = []
    date = None
    if r.peek() == 0x28:
        flags = r.flag_list()
        r.sp()
    if r.peek() == 0x22:
        date = r.date_time()
        r.sp()
    return AppendArgs(mailbox, tuple(flags), date, r.literal())


_ESEARCH_RETURNS = frozenset({"MIN", "MAX", "ALL", "COUNT", "SAVE"})


def _search(r: Reader) -> Args:
    returns: tuple[str, ...] | None = None
    if r.peek_is(b" RETURN "):
        r.expect(b" RETURN ")
        opts = _atoms_in_parens(r)
        if not set(opts) <= _ESEARCH_RETURNS:
            raise ParseError("unknown SEARCH return option")
        returns = tuple(opts) if opts else ("ALL",)
    if r.peek_is(b" CHARSET "):
        r.expect(b" CHARSET ")
        parse_charset(r)
    return SearchArgs(parse_search_keys(r), returns)


_FETCH_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_SIMPLE_ATTS = frozenset(
    {
        "ENVELOPE",
        "FLAGS",
        "INTERNALDATE",
        "RFC822",
        "RFC822.HEADER",
        "RFC822.SIZE",
        "RFC822.TEXT",
        "BODYSTRUCTURE",
        "UID",
        "MODSEQ",
        "BODY",
    }
)
_NAME_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-")
_SECTION_TEXTS = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"})


def _att_name(r: Reader) -> str:
    start = r.pos
    while not r.at_end() and r.data[r.pos] in _NAME_CHARS:
        r.pos += 1
    if r.pos == start:
        raise ParseError("expected a FETCH item")
    return r.data[start : r.pos].decode("ascii").upper()


def _section(r: Reader) -> Section:
    """``section`` of RFC 3501 §9, after the ``[``, through the ``]``."""
    if r.accept(b"]"):
        return Section()
    spec = _att_name(r)
    words = spec.split(".")
    part: list[int] = []
    # An nz-number (RFC 3501 §9) fits 32 bits; int() of thousands of digits
    # would raise (Python's 4,300-digit limit) and end the session.
    while words and words[0].isascii() and words[0].isdigit():
        if len(words[0]) > 10 or int(words[0]) >= 2**32:
            raise ParseError("part number too large")
        number = int(words.pop(0))
        if number == 0:
            raise ParseError("part numbers start at 1")
        part.append(number)
    text = ".".join(words) or None
    if text is not None and text not in _SECTION_TEXTS:
        raise ParseError("bad section")
    if text == "MIME" and not part:
        raise ParseError("MIME needs a part number")
    fields: list[str] = []
    if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        r.sp()
        r.open_paren()
        fields.append(r.astring_text())
        while not r.close_paren():
            r.sp()
            fields.append(r.astring_text())
    r.expect(b"]")
    return Section(tuple(part), text, tuple(fields))


def _fetch_att(r: Reader) -> FetchAtt:
    name = _att_name(r)
    if name in ("BODY", "BODY.PEEK") and r.accept(b"["):
        section = _section(r)
        partial = None
        if r.accept(b"<"):
            origin = r.number()
            r.expect(b".")
            partial = (origin, r.nz_number())
            r.expect(b">")
        return FetchAtt("BODY", section, peek=name == "BODY.PEEK", partial=partial)
    if name not in _SIMPLE_ATTS:
        raise ParseError(f"unknown FETCH item {name}")
    return FetchAtt(name)


def _fetch_atts(r: Reader) -> tuple[FetchAtt, ...]:
    if r.accept(b"("):
        atts = [_fetch_att(r)]
        while not r.close_paren():
            r.sp()
            atts.append(_fetch_att(r))
        return tuple(atts)
    start = r.pos
    name = _att_name(r)
    if name in _FETCH_MACROS:
        return tuple(FetchAtt(n) for n in _FETCH_MACROS[name])
    r.pos = start
    return (_fetch_att(r),)


def _fetch(r: Reader) -> Args:
    r.sp()
    seqs = r.seq_set()
    r.sp()
    atts = _fetch_atts(r)
    changed_since = None
    vanished = False
    if r.accept(b" "):
        # RFC 4466 fetch-modifiers; RFC 7162 §3.1.4 CHANGEDSINCE, §3.2.6 VANISHED.
        r.open_paren()
        r.expect(b"CHANGEDSINCE")
        r.sp()
        changed_since = r.number(MAX_NUMBER64)
        vanished = r.accept(b" VANISHED")
        r.expect(b")")
        if not any(a.name == "MODSEQ" for a in atts):
            atts = (*atts, FetchAtt("MODSEQ"))
    return FetchArgs(seqs, atts, changed_since, vanished)


def _store(r: Reader) -> Args:
    r.sp()
    seqs = r.seq_set()
    r.sp()
    unchanged_since = None
    if r.accept(b"("):
        r.expect(b"UNCHANGEDSINCE")
        r.sp()
        unchanged_since = r.number(MAX_NUMBER64)
        r.expect(b")")
        r.sp()
    mode = FlagMode.REPLACE
    if r.accept(b"+"):
        mode = FlagMode.ADD
    elif r.accept(b"-"):
        mode = FlagMode.REMOVE
    r.expect(b"FLAGS")
    silent = r.accept(b".SILENT")
    r.sp()
    if r.peek() == 0x28:
        flags = r.flag_list()
    else:
        flags = [r.flag()]
        while r.accept(b" "):
            flags.append(r.flag())
    return StoreArgs(seqs, mode, silent, tuple(flags), unchanged_since)


def _copy(r: Reader) -> Args:
    r.sp()
    seqs = r.seq_set()
    r.sp()
    return CopyArgs(seqs, _mailbox(r))


def _seqs(r: Reader) -> Args:
    r.sp()
    return SeqArgs(r.seq_set())


def _id(r: Reader) -> Args:
    """RFC 2971 §4: ``ID SP (id-params-list / nil)``."""
    r.sp()
    if r.accept(b"NIL"):
        return IdArgs(None)
    r.open_paren()
    params: list[tuple[str, str | None]] = []
    if not r.close_paren():
        while True:
            key = r.text(r.string())
            r.sp()
            value = r.nstring()
            params.append((key, None if value is None else r.text(value)))
            if r.close_paren():
                break
            r.sp()
    if len(params) > 30:
        raise ParseError("too many ID parameters")
    return IdArgs(tuple(params))


def _enable(r: Reader) -> Args:
    caps = []
    while r.accept(b" "):
        caps.append(r.keyword())
    if not caps:
        raise ParseError("ENABLE needs a capability")
    return EnableArgs(tuple(caps))


_GRAMMAR: dict[str, Callable[[Reader], Args]] = {
    "CAPABILITY": _no_args,
    "NOOP": _no_args,
    "LOGOUT": _no_args,
    "STARTTLS": _no_args,
    "AUTHENTICATE": _authenticate,
    "LOGIN": _login,
    "SELECT": _select,
    "EXAMINE": _select,
    "CREATE": _create,
    "DELETE": _mailbox_only,
    "RENAME": _rename,
    "SUBSCRIBE": _mailbox_only,
    "UNSUBSCRIBE": _mailbox_only,
    "LIST": _list,
    "LSUB": _lsub,
    "STATUS": _status,
    "APPEND": _append,
    "CHECK": _no_args,
    "CLOSE": _no_args,
    "UNSELECT": _no_args,
    "EXPUNGE": _no_args,
    "SEARCH": _search,
    "FETCH": _fetch,
    "STORE": _store,
    "COPY": _copy,
    "MOVE": _copy,
    "NAMESPACE": _no_args,
    "ID": _id,
    "ENABLE": _enable,
    "IDLE": _no_args,
    "UID COPY": _copy,
    "UID MOVE": _copy,
    "UID FETCH": _fetch,
    "UID SEARCH": _search,
    "UID STORE": _store,
    "UID EXPUNGE": _seqs,
}

#: Every command name the parser knows.
COMMANDS = frozenset(_GRAMMAR)


def parse_tag(data: bytes) -> bytes | None:
    """The tag of a command, or None when it has none (an untagged ``* BAD``)."""
    r = Reader(data)
    try:
        tag = r.tag()
    except ParseError:
        return None
    return tag if r.peek() == 0x20 else None


def parse_command(data: bytes) -> Command:
    """
    Parse one complete command (without its final CRLF).

    :raises ParseError: there is no usable tag.
    :raises CommandError: the tag is there but the rest is wrong.
    :raises UnsupportedCharset: SEARCH CHARSET is not one we search in.
    """
    r = Reader(data)
    tag = r.tag()
    r.sp()
    name = ""
    try:
        name = r.keyword()
        if name == "UID":
            r.sp()
            name = "UID " + r.keyword()
        grammar = _GRAMMAR.get(name)
        if grammar is None:
            raise ParseError("unknown command")
        args = grammar(r)
        r.end()
    except ParseError as e:
        raise CommandError(tag, name, str(e)) from e
    return Command(tag, name, args)
