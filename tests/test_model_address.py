"""
`Address.parse` against the character-by-character implementation it
replaced: the fast one must accept and refuse exactly the same strings, with
the same reason, since SMTP replies and account keys depend on it.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from twistedmail.model import Address


def reference_parse(text: str) -> Address:
    """The original `Address.parse`, kept verbatim as the oracle."""
    text = text.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    local, sep, domain = text.rpartition("@")
    if not sep or not local or not domain:
        raise ValueError(f"not an address: {text!r}")
    if any(ord(c) < 33 or 127 <= ord(c) < 160 for c in domain) or ".." in domain:
        raise ValueError(f"bad domain in address: {text!r}")
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in local):
        raise ValueError(f"bad local part in address: {text!r}")
    if not (local.startswith('"') and local.endswith('"') and len(local) >= 2):
        if any(ord(c) < 33 or ord(c) == 127 or c in '()<>[]\\,;:"@' for c in local):
            raise ValueError(f"bad local part in address: {text!r}")
        if local.startswith(".") or local.endswith(".") or ".." in local:
            raise ValueError(f"bad local part in address: {text!r}")
    if len(local.encode()) > 64 or len(domain.encode()) > 255:
        raise ValueError(f"address too long: {text!r}")
    return Address(local, domain.lower())


def outcome(parse: object, text: str) -> tuple[str, object]:
    """What a parse does with ``text``: its result, or its error's type and text."""
    assert callable(parse)
    try:
        return ("ok", parse(text))
    except ValueError as e:
        return (type(e).__name__, str(e))


# Characters that decide the parse, weighted in: every class boundary of the
# old checks (32/33, 126/127, 159/160), the specials, quotes, Unicode blanks
# that str.strip() removes, UTF-8 letters and a lone surrogate (which
# str.encode() refuses).
_INTERESTING = list(
    '@."<>()[]\\,;: \t\r\n\x00\x1f\x20\x21\x7e\x7f\x80\x85\x9f\xa0\xa1'
    "\u2028\u3000\ufeffaZ09+-_é日\U0001f600\ud800"
)
_chars = st.one_of(st.sampled_from(_INTERESTING), st.characters())
_texts = st.one_of(
    st.text(_chars, max_size=30),
    # Shapes close to a real address, so the later checks are reached too.
    st.builds(
        lambda q, local, domain, b, pad: f"{pad}{b[0]}{q}{local}{q}@{domain}{b[1]}{pad}",
        st.sampled_from(["", '"']),
        st.text(_chars, max_size=20),
        st.text(_chars, max_size=20),
        st.sampled_from([("", ""), ("<", ">"), ("<", ""), ("", ">")]),
        st.sampled_from(["", " ", "\t", "\u3000"]),
    ),
    # Long parts: the 64/255 octet limits, in ASCII and in UTF-8.
    st.builds(
        lambda c, n, d, m: c * n + "@" + d * m,
        st.sampled_from(["a", "é", '"']),
        st.integers(0, 70),
        st.sampled_from(["b", "é", "."]),
        st.integers(0, 260),
    ),
)


@settings(max_examples=3000, deadline=None)
@given(_texts)
@example("")
@example("<>")
@example("<")
@example("@")
@example("a@b")
@example("<a@b>")
@example('"a b"@example.com')
@example('"@example.com')
@example('""@example.com')
@example('"a\x1fb"@example.com')
@example("a.@example.com")
@example(".a@example.com")
@example("a..b@example.com")
@example("a@example..com")
@example("a@[127.0.0.1]")
@example("a\x7f@example.com")
@example("a\x85@example.com")
@example("a\xa0@example.com")
@example("a@exa mple.com")
@example("\ud800@example.com")
@example("a@\ud800")
@example("a" * 64 + "@b")
@example("a" * 65 + "@b")
@example("é" * 32 + "@b")
@example("é" * 33 + "@b")
@example("a@" + "b" * 255)
@example("a@" + "b" * 256)
@example("Alice@EXAMPLE.Com")
def test_same_outcome_as_reference(text: str) -> None:
    assert outcome(Address.parse, text) == outcome(reference_parse, text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Alice@EXAMPLE.com", Address("Alice", "example.com")),
        (" <b.c@d> ", Address("b.c", "d")),
        ('"a b"@x', Address('"a b"', "x")),
        ("jörg@bücher.de", Address("jörg", "bücher.de")),
    ],
)
def test_accepts(text: str, expected: Address) -> None:
    assert Address.parse(text) == expected


@pytest.mark.parametrize(
    "text", ["", "a", "@b", "a@", "a b@c", "a@b..c", "a\r@b", '"a\r"@b', "a@b\x00"]
)
def test_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        Address.parse(text)
