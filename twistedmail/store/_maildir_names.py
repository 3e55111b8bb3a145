"""
How Maildir++ spells mailbox names and users on disk.

Maildir++ keeps INBOX in the user's root ``cur/new/tmp`` and every other
mailbox in a root directory named ``.`` + its parts joined by ``.``: ``a/b``
is ``.a.b``.  Each part is stored in modified UTF-7 (RFC 3501 §5.1.3), which
is what Dovecot writes, so Dovecot, Courier and mutt show the same names.

Because ``.`` is the on-disk separator, a ``.`` inside a part has to be
written differently.  Dovecot with its default ``LAYOUT=maildir++`` refuses
such names ("Character not allowed in mailbox name: '.'"); its ``listescape``
plugin instead writes ``\\2e``.  We escape the same way: the contract forbids
``\\`` in names, so ``\\2e`` on disk can only mean ``.``, no name is refused
that the in-memory store accepts, and Dovecot with ``listescape`` reads the
same names back (without it, Dovecot shows the folder as ``a\\2eb``).
"""

from __future__ import annotations

import base64

from twistedmail.interfaces import InvalidMailboxName
from twistedmail.model import HIERARCHY_DELIMITER, INBOX
from twistedmail.store._names import validate_mailbox_name, validate_user_key

#: Longest directory name the common filesystems accept, in bytes.
_MAX_DIR_BYTES = 255

_DOT_ESCAPE = "\\2e"


def encode_mutf7(text: str) -> str:
    """RFC 3501 §5.1.3 modified UTF-7: printable ASCII stays, ``&`` is ``&-``."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            encoded = base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",")
            out.append("&" + encoded + "-")
            pending.clear()

    for char in text:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def decode_mutf7(text: str) -> str:
    """The inverse of `encode_mutf7`; `ValueError` for anything malformed."""
    out: list[str] = []
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char != "&":
            if not 0x20 <= ord(char) <= 0x7E:
                raise ValueError(f"not modified UTF-7: {text!r}")
            out.append(char)
            pos += 1
            continue
        end = text.find("-", pos)
        if end < 0:
            raise ValueError(f"unterminated shift in {text!r}")
        chunk = text[pos + 1 : end]
        if not chunk:
            out.append("&")
        else:
            chunk = chunk.replace(",", "/")
            chunk += "=" * (-len(chunk) % 4)
            try:
                out.append(base64.b64decode(chunk, validate=True).decode("utf-16-be"))
            except (ValueError, UnicodeDecodeError) as e:
                raise ValueError(f"bad modified UTF-7 in {text!r}") from e
        pos = end + 1
    return "".join(out)


def _escape_part(part: str) -> str:
    return encode_mutf7(part).replace(".", _DOT_ESCAPE)


def _unescape_part(part: str) -> str:
    return decode_mutf7(part.replace(_DOT_ESCAPE, "."))


def folder_dir(name: str) -> str | None:
    """
    The root-relative directory of a canonical mailbox name (None for INBOX).

    :raises InvalidMailboxName: the directory name would be too long.
    """
    if name == INBOX:
        return None
    directory = "." + ".".join(_escape_part(p) for p in name.split(HIERARCHY_DELIMITER))
    if len(directory.encode("ascii")) > _MAX_DIR_BYTES:
        raise InvalidMailboxName(f"mailbox name too long for Maildir++: {name!r}")
    return directory


def name_of_dir(directory: str) -> str | None:
    """
    The mailbox a root entry is, or None if it is not one of ours to show.

    A directory another program made that does not decode, or that does not
    spell its name exactly the way we would (``.inbox``, a stray ``\\``),
    is left alone rather than shown under a name that points elsewhere.
    """
    if not directory.startswith(".") or directory in (".", ".."):
        return None
    try:
        name = HIERARCHY_DELIMITER.join(_unescape_part(p) for p in directory[1:].split("."))
        name = validate_mailbox_name(name)
        if name == INBOX or folder_dir(name) != directory:
            return None
    except (ValueError, InvalidMailboxName):
        return None
    return name


def check_user(user: object) -> str:
    """
    The shared user-key rules plus what a directory under ``mail/`` needs:
    no leading ``.`` (hidden, and ``..``-like) and no whitespace, so that a
    user directory is always one plain, visible path component.
    """
    key = validate_user_key(user)
    if key.startswith(".") or any(c.isspace() for c in key) or "\x00" in key:
        raise InvalidMailboxName(f"user name not usable as a Maildir: {key!r}")
    return key
