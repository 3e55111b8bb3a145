"""
The route table's building blocks: what a route is, what a handler gets and
what it returns.

The server dispatches on these records and `twistedmail.http.openapi`
describes them, so the published contract and the real behaviour come from
one table and cannot drift apart.  Matching works on the raw path split at
``/`` *before* percent-decoding, so a mailbox name containing the hierarchy
delimiter travels as one ``%2F``-encoded segment (``/api/mailboxes/a%2Fb``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from twistedmail.http.errors import ApiError

if TYPE_CHECKING:  # pragma: no cover
    from twistedmail.http.context import ApiContext
    from twistedmail.interfaces import IMailAccount


#: A `twisted.web.server.Request`.  Twisted 26.10 ships it without type
#: annotations, so strict mypy would flag every call; we name it for readers.
WebRequest = Any


@dataclass(frozen=True, slots=True)
class Param:
    """A query parameter, for validation messages and the OpenAPI document."""

    name: str
    kind: str  # "string", "integer" or "boolean" (JSON Schema type names)
    description: str
    required: bool = False


@dataclass(frozen=True, slots=True)
class Reply:
    """A complete response: status, body and content type."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


#: Returned by a handler that has taken the request over (Server-Sent Events).
STREAMING = Reply(0, b"")


def json_reply(
    value: object, status: int = 200, headers: tuple[tuple[str, str], ...] = ()
) -> Reply:
    body = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Reply(status, body, "application/json", headers)


@dataclass
class Call:
    """One request as a handler sees it: decoded parameters and the caller."""

    request: WebRequest
    ctx: ApiContext
    path: Mapping[str, str]
    query: Mapping[str, list[str]]
    user: str | None = None
    account: IMailAccount | None = None
    session_token: str | None = None
    body_bytes: bytes = b""

    @property
    def me(self) -> IMailAccount:
        """The caller's account; only routes with ``auth=True`` use it."""
        assert self.account is not None
        return self.account

    def arg(self, name: str) -> str | None:
        """The last value of a query parameter, or None."""
        values = self.query.get(name)
        return values[-1] if values else None

    def int_arg(self, name: str, default: int, low: int, high: int) -> int:
        text = self.arg(name)
        if text is None or text == "":
            return default
        try:
            value = int(text)
        except ValueError:
            raise ApiError.bad(name, f"{name} must be an integer") from None
        if not low <= value <= high:
            raise ApiError.bad(name, f"{name} must be between {low} and {high}")
        return value

    def bool_arg(self, name: str) -> bool | None:
        text = self.arg(name)
        if text is None:
            return None
        lowered = text.lower()
        if lowered in ("1", "true", "yes", ""):
            return True
        if lowered in ("0", "false", "no"):
            return False
        raise ApiError.bad(name, f"{name} must be true or false")

    def json(self) -> dict[str, Any]:
        """The body as a JSON object; 400 naming ``body`` if it is not one."""
        try:
            value = json.loads(self.body_bytes.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            # RecursionError: "[[[[..." nested beyond the parser's stack.
            raise ApiError.bad("body", "the request body is not valid JSON") from None
        if not isinstance(value, dict):
            raise ApiError.bad("body", "the request body must be a JSON object")
        return value

    def uid(self) -> int:
        """The ``{uid}`` path parameter as a positive integer."""
        text = self.path["uid"]
        # ASCII digits only: str.isdigit() also takes superscripts, and int()
        # refuses the first and numbers of over 4,300 digits (a 500, not a 400).
        if not (text.isascii() and text.isdigit() and len(text) <= 10) or not 0 < int(text) < 2**32:
            raise ApiError.bad("uid", "uid must be a positive integer")
        return int(text)


Handler = Callable[[Call], Awaitable[Reply]]


@dataclass(frozen=True)
class Route:
    """
    One method on one path template.

    ``body`` names the request schema (see `twistedmail.http.openapi`);
    ``responses`` maps status codes to what they mean for this route.
    """

    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    auth: bool = True
    query: tuple[Param, ...] = ()
    body: str | None = None
    responses: Mapping[int, str] = field(default_factory=dict)
    produces: str = "application/json"
    documented: bool = True

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.strip("/").split("/")) if self.path != "/" else ("",)

    def match(self, raw_segments: tuple[bytes, ...]) -> dict[str, bytes] | None:
        """The raw path parameters, if the path fits the template."""
        mine = self.segments
        if len(mine) != len(raw_segments):
            return None
        found: dict[str, bytes] = {}
        for pattern, raw in zip(mine, raw_segments, strict=True):
            if pattern.startswith("{") and pattern.endswith("}"):
                found[pattern[1:-1]] = raw
            elif pattern.encode() != raw:
                return None
        return found


def decode_params(raw: Mapping[str, bytes]) -> dict[str, str]:
    """Percent-decode matched path parameters; 400 naming a bad one."""
    return {name: _decode_segment(name, value) for name, value in raw.items()}


def _decode_segment(name: str, raw: bytes) -> str:
    try:
        text = unquote(raw.decode("ascii"), errors="strict")
    except UnicodeError:
        raise ApiError.bad(name, f"{name} is not valid percent-encoded UTF-8") from None
    if not text:
        raise ApiError.bad(name, f"{name} must not be empty")
    return text


def split_path(path: bytes) -> tuple[bytes, ...]:
    """The raw segments of a request path, without the leading slash."""
    return tuple(path.lstrip(b"/").split(b"/")) if path not in (b"", b"/") else (b"",)
