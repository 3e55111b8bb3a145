"""
The lookup key of an address: how ``Alice@EXAMPLE.test``, ``"alice"@…``,
full-width letters and ``xn--`` domains all come to name one account.

Pure functions, split from `twistedmail.accounts` (which re-exports them)
so the accounts database stays about the file and its queries.
"""

from __future__ import annotations

import re
import unicodedata

from twistedmail.interfaces import AccountsError
from twistedmail.model import Address

# RFC 5322 §3.2.3 dot-atom, with RFC 6531 §3.3's UTF-8 characters.
_DOT_ATOM = re.compile(r"[\w!#$%&'*+/=?^`{|}~-]+(?:\.[\w!#$%&'*+/=?^`{|}~-]+)*\Z")

# RFC 1035 §2.3.1 labels, allowing Unicode letters for IDNs (RFC 6531).
_LABEL = re.compile(r"[^\W_](?:(?:[^\W_]|-){0,61}[^\W_])?\Z")


def normalize_domain(domain: str) -> str:
    """
    Lower-case and check a domain name; raise `AccountsError` if it is not one.

    A-labels (``xn--...``) become U-labels, so a client without SMTPUTF8,
    which must spell an internationalised domain in ASCII (RFC 6531 §3.2,
    RFC 5890), reaches the same domain as one that sends UTF-8.
    """
    text = domain.strip().rstrip(".").lower()
    try:
        labels = [_u_label(label) for label in text.split(".")]
    except UnicodeError:
        raise AccountsError(f"{domain!r} is not a valid domain name.") from None
    text = ".".join(labels)
    if not text or len(text.encode()) > 253 or not all(_LABEL.match(lb) for lb in labels):
        raise AccountsError(f"{domain!r} is not a valid domain name.")
    return text


def _u_label(label: str) -> str:
    if label.startswith("xn--"):
        return label.encode("ascii").decode("idna").lower()
    return label


def _unquote(local: str) -> str:
    """
    ``"alice"`` -> ``alice``: RFC 5321 §4.1.2 makes a quoted local part that
    needs no quoting the same mailbox as the unquoted one.
    """
    if len(local) >= 2 and local[0] == local[-1] == '"':
        inner = re.sub(r"\\(.)", r"\1", local[1:-1])
        if _DOT_ATOM.match(inner):
            return inner
    return local


def parse_address(address: str) -> tuple[str, str]:
    """
    The lookup key of an address as ``(local, domain)``, both lower-cased.

    RFC 5321 §2.4 lets a server treat local parts case-sensitively; we fold
    them, as nearly every mail server does, so ``Alice@`` reaches ``alice@``.
    :raises ValueError: the address is malformed.
    """
    parsed = Address.parse(address)
    # One user per name however it is typed: compatibility forms (full-width
    # letters, the Kelvin sign) and decomposed accents fold to one spelling,
    # as the PRECIS username profile (RFC 8265 §3.4) and UTS #46 do.
    local = _unquote(unicodedata.normalize("NFKC", parsed.local))
    # RFC 5321 §4.1.2: "@" is not atext, so only a quoted local part has one.
    if "@" in local and not (local.startswith('"') and local.endswith('"')):
        raise ValueError(f"bad local part in address: {address!r}")
    if parsed.domain.startswith("[") and parsed.domain.endswith("]"):
        # An address literal (RFC 5321 §4.1.3): valid, but never a local domain.
        return local.lower(), parsed.domain
    try:
        domain = normalize_domain(unicodedata.normalize("NFKC", parsed.domain))
    except AccountsError:
        raise ValueError(f"bad domain in address: {address!r}") from None
    return unicodedata.normalize("NFC", local.lower()), domain


def normalize_address(address: str) -> str:
    """``local@domain`` lower-cased; raise `AccountsError` if it is malformed."""
    try:
        local, domain = parse_address(address)
        if domain.startswith("["):
            raise ValueError("an address literal cannot be local")
    except ValueError:
        raise AccountsError(f"{address!r} is not a valid email address.") from None
    return f"{local}@{domain}"
