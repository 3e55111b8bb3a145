"""
Parsing of the MAIL FROM and RCPT TO arguments: the path and the ESMTP
parameters (RFC 5321 §4.1.2, RFC 1870 SIZE, RFC 6152 BODY, RFC 6531
SMTPUTF8, RFC 3461 DSN, RFC 4954 §5 AUTH=).

Pure functions: text in, an immutable result or a `ParamError` carrying
the reply out, so the session code holds no parsing and hostile input can be
fuzzed here directly.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from twistedmail.model import Address
from twistedmail.smtp import replies
from twistedmail.smtp.replies import Reply


class ParamError(Exception):
    """The argument is refused with ``reply``."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.lines[0])
        self.reply = reply


# The results are NamedTuples, not frozen dataclasses: one of each is built
# per message, and a frozen dataclass costs three times as much to build.


class MailFrom(NamedTuple):
    """A parsed ``MAIL FROM``; ``sender`` is ``""`` for the null path ``<>``."""

    sender: str
    size: int | None = None
    body: str | None = None
    smtputf8: bool = False
    ret: str | None = None
    envid: str | None = None

    @property
    def has_parameters(self) -> bool:
        """Whether an ESMTP parameter we keep was given (they need EHLO)."""
        return (
            self.size is not None
            or self.body is not None
            or self.smtputf8
            or self.ret is not None
            or self.envid is not None
        )


class RcptTo(NamedTuple):
    """A parsed ``RCPT TO`` with its RFC 3461 parameters, kept as sent."""

    address: str
    notify: tuple[str, ...] = ()
    orcpt: str | None = None


_NOTIFY_VALUES = frozenset({"SUCCESS", "FAILURE", "DELAY"})
# RFC 3461 §4: xtext is printable ASCII but "+" and "=", with "+XX" escapes.
_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})*\Z")
# RFC 3461 §4.2: ORCPT=addr-type ";" xtext; addr-type is an atom.
_ADDR_TYPE = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+\Z")
# RFC 3461 §4.4: ENVID is at most 100 characters.
_MAX_ENVID = 100
# RFC 3461 §4.2: ORCPT's address is at most 500 characters.
_MAX_ORCPT = 500


def _split_keyword(arg: str, keyword: str, syntax: Reply) -> str:
    """Strip ``FROM:``/``TO:`` (any case, spaces after the colon tolerated)."""
    head, colon, rest = arg.partition(":")
    if not colon or head.strip().upper() != keyword:
        raise ParamError(syntax)
    return rest.lstrip(" ")


def _split_path(text: str, syntax: Reply) -> tuple[str, str]:
    """
    Split ``<path> params`` into the path (without brackets) and the rest.

    A ``>`` inside a quoted local part does not end the path.  A path
    without brackets (``MAIL FROM:a@b``) is accepted, as most servers do.
    """
    if not text.startswith("<"):
        path, _, rest = text.partition(" ")
        if not path:
            raise ParamError(syntax)
        return path, rest
    if '"' not in text:  # no quoted local part: the first ">" ends the path
        end = text.find(">")
        if end < 0 or (end + 1 < len(text) and text[end + 1] != " "):
            raise ParamError(syntax)
        return text[1:end], text[end + 1 :]
    quoted = escaped = False
    for i in range(1, len(text)):
        c = text[i]
        if escaped:
            escaped = False
        elif c == "\\" and quoted:
            escaped = True
        elif c == '"':
            quoted = not quoted
        elif c == ">" and not quoted:
            rest = text[i + 1 :]
            if rest and not rest.startswith(" "):
                raise ParamError(syntax)
            return text[1:i], rest
    raise ParamError(syntax)


def _strip_source_route(path: str) -> str:
    """RFC 5321 §4.1.1.3: accept and ignore ``@a,@b:`` source routes."""
    if path.startswith("@"):
        _, colon, rest = path.partition(":")
        if colon:
            return rest
    return path


def _check_address(path: str, smtputf8: bool, bad: Reply) -> str:
    try:
        parsed = Address.parse(path)
    except ValueError:
        raise ParamError(bad) from None
    if not path.isascii() and not smtputf8:
        raise ParamError(replies.NON_ASCII_ADDRESS)
    return str(parsed)


def _parameters(text: str) -> dict[str, str | None]:
    """``KEY=VALUE KEY ...`` -> {KEY: VALUE}; keywords are case-insensitive."""
    params: dict[str, str | None] = {}
    for item in text.split():
        key, eq, value = item.partition("=")
        key = key.upper()
        if not key or key in params or not key.isascii() or not key.replace("-", "").isalnum():
            raise ParamError(replies.BAD_PARAMETER)
        if eq and not value:
            raise ParamError(replies.BAD_PARAMETER)
        params[key] = value if eq else None
    return params


def _xtext(value: str | None, smtputf8: bool) -> str:
    if value is None or not (_XTEXT.match(value) or (smtputf8 and value.isprintable())):
        raise ParamError(replies.BAD_PARAMETER)
    return value


def parse_mail_from(arg: str, max_size: int) -> MailFrom:
    """
    Parse what follows ``MAIL``.

    :raises ParamError: with 501 for syntax, 552 for a SIZE over
        ``max_size`` (RFC 1870 §6.1), 555 for an unknown parameter, 553 for
        a UTF-8 sender without SMTPUTF8.
    """
    rest = _split_keyword(arg, "FROM", replies.MAIL_SYNTAX)
    path, param_text = _split_path(rest, replies.MAIL_SYNTAX)
    params = _parameters(param_text)
    smtputf8 = "SMTPUTF8" in params
    if smtputf8 and params["SMTPUTF8"] is not None:
        raise ParamError(replies.BAD_PARAMETER)
    size: int | None = None
    body = ret = envid = None
    for key, value in params.items():
        if key == "SIZE":
            if value is None or not value.isdigit() or not value.isascii() or len(value) > 20:
                raise ParamError(replies.BAD_PARAMETER)
            size = int(value)
            if size > max_size:
                raise ParamError(replies.MESSAGE_TOO_BIG)
        elif key == "BODY":
            body = (value or "").upper()
            if body not in ("7BIT", "8BITMIME"):
                # BINARYMIME is not advertised (RFC 3030 §3).
                raise ParamError(replies.UNKNOWN_PARAMETER)
        elif key == "RET":
            ret = (value or "").upper()
            if ret not in ("FULL", "HDRS"):
                raise ParamError(replies.BAD_PARAMETER)
        elif key == "ENVID":
            envid = _xtext(value, smtputf8)
            if len(envid) > _MAX_ENVID:
                raise ParamError(replies.BAD_PARAMETER)
        elif key == "AUTH":
            # RFC 4954 §5: accepted; we never trust a client's AUTH= claim.
            _xtext(value, smtputf8)
        elif key != "SMTPUTF8":
            raise ParamError(replies.UNKNOWN_PARAMETER)
    path = _strip_source_route(path)
    sender = "" if path == "" else _check_address(path, smtputf8, replies.BAD_SENDER)
    return MailFrom(sender, size, body, smtputf8, ret, envid)


def parse_rcpt_to(arg: str, smtputf8: bool) -> RcptTo:
    """
    Parse what follows ``RCPT``.

    ``<postmaster>`` without a domain is returned as ``postmaster``: RFC
    5321 §4.1.1.3 requires accepting it; the caller knows which domain.

    :raises ParamError: 501 syntax, 555 unknown parameter, 553 UTF-8
        address without SMTPUTF8.
    """
    rest = _split_keyword(arg, "TO", replies.RCPT_SYNTAX)
    path, param_text = _split_path(rest, replies.RCPT_SYNTAX)
    params = _parameters(param_text)
    notify: tuple[str, ...] = ()
    orcpt = None
    for key, value in params.items():
        if key == "NOTIFY":
            items = tuple((value or "").upper().split(","))
            if items == ("NEVER",):
                notify = items
            elif not items or not set(items) <= _NOTIFY_VALUES or len(set(items)) != len(items):
                raise ParamError(replies.BAD_PARAMETER)
            else:
                notify = items
        elif key == "ORCPT":
            addr_type, semi, xtext = (value or "").partition(";")
            if not semi or not _ADDR_TYPE.match(addr_type) or len(xtext) > _MAX_ORCPT:
                raise ParamError(replies.BAD_PARAMETER)
            _xtext(xtext, smtputf8)
            orcpt = value
        else:
            raise ParamError(replies.UNKNOWN_PARAMETER)
    path = _strip_source_route(path)
    if path.lower() == "postmaster":
        return RcptTo("postmaster", notify, orcpt)
    return RcptTo(_check_address(path, smtputf8, replies.BAD_RECIPIENT), notify, orcpt)
