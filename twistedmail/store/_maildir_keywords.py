"""
Flags as Maildir file names carry them, and keywords as Dovecot maps them.

A message file is ``<base>:2,<letters>`` (http://cr.yp.to/proto/maildir.html):
uppercase letters are the standard flags, in ASCII order; Dovecot adds
lowercase ``a``..``z`` for keywords, letter *n* meaning line ``n <keyword>``
of the folder's ``dovecot-keywords`` file.  We use the same file so Dovecot
and we agree on what ``a`` means.  Letters we do not understand (``P``
"passed", a lowercase letter with no keyword) are kept as they are when we
rewrite a name.  Only 26 keywords have letters per folder; a message's
other keywords live in our index only (as Dovecot keeps them in its own
index), so other programs do not see those.
"""

from __future__ import annotations

import os
import string

from twistedmail.model import ANSWERED, DELETED, DRAFT, FLAGGED, SEEN

#: RFC 3501 system flag -> Maildir letter.
FLAG_LETTERS = {DRAFT: "D", FLAGGED: "F", ANSWERED: "R", SEEN: "S", DELETED: "T"}
_LETTER_FLAGS = {letter: flag for flag, letter in FLAG_LETTERS.items()}

KEYWORDS_FILE = "dovecot-keywords"
_MAX_KEYWORDS = 26


def split_name(filename: str) -> tuple[str, str]:
    """``base:2,FS`` -> (``base``, ``FS``); a name without ``:2,`` has no flags."""
    base, sep, info = filename.partition(":")
    if sep and info.startswith("2,"):
        return base, info[2:]
    return base, ""


def cur_name(base: str, letters: str) -> str:
    return f"{base}:2,{letters}"


class Keywords:
    """
    One folder's ``dovecot-keywords``: keyword <-> letter.

    Read again whenever the file changed (another process may have added a
    keyword); written atomically under the folder lock.
    """

    def __init__(self, folder: str) -> None:
        self._path = os.path.join(folder, KEYWORDS_FILE)
        self._stamp: tuple[int, int, int] | None = None
        self._names: dict[int, str] = {}
        self._letters: dict[str, str] = {}
        self._flags: dict[str, frozenset[str]] = {}

    def refresh(self) -> None:
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            self._stamp, self._names, self._letters, self._flags = None, {}, {}, {}
            return
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == self._stamp:
            return
        names: dict[int, str] = {}
        with open(self._path, encoding="utf-8", errors="replace") as f:
            for line in f:
                number, _, keyword = line.rstrip("\n").partition(" ")
                if number.isdigit() and int(number) < _MAX_KEYWORDS and keyword:
                    names[int(number)] = keyword
        self._stamp, self._names = stamp, names
        self._flags = {}
        self._letters = {kw: string.ascii_lowercase[n] for n, kw in names.items()}

    def flags_of(self, letters: str) -> frozenset[str]:
        """The flags ``letters`` stand for (memoised: a folder uses few combinations)."""
        found = self._flags.get(letters)
        if found is None:
            found = self._flags[letters] = self._decode(letters)
        return found

    def _decode(self, letters: str) -> frozenset[str]:
        flags = set()
        for letter in letters:
            if letter in _LETTER_FLAGS:
                flags.add(_LETTER_FLAGS[letter])
            elif "a" <= letter <= "z":
                keyword = self._names.get(ord(letter) - ord("a"))
                if keyword is not None:
                    flags.add(keyword)
        return frozenset(flags)

    def letters_of(self, flags: frozenset[str], old: str = "") -> tuple[str, frozenset[str]]:
        """
        The letters for ``flags``, keeping letters of ``old`` we do not own,
        and the keywords that got no letter (all 26 taken).

        Call under the folder lock: a keyword seen for the first time is
        given the next free letter and written to the file.
        """
        extra = set()
        kept = {c for c in old if c not in _LETTER_FLAGS and not self._owned(c)}
        letters = set(kept)
        for flag in sorted(flags):  # new letters in a reproducible order
            if flag in FLAG_LETTERS:
                letters.add(FLAG_LETTERS[flag])
            elif flag.startswith("\\"):
                continue
            else:
                letter = self._letters.get(flag) or self._allocate(flag)
                if letter is not None:
                    letters.add(letter)
                elif not any(c.isspace() for c in flag):
                    extra.add(flag)
        return "".join(sorted(letters)), frozenset(extra)

    def _owned(self, letter: str) -> bool:
        return "a" <= letter <= "z" and (ord(letter) - ord("a")) in self._names

    def _allocate(self, keyword: str) -> str | None:
        self.refresh()
        if keyword in self._letters:
            return self._letters[keyword]
        free = [n for n in range(_MAX_KEYWORDS) if n not in self._names]
        if not free or any(c.isspace() for c in keyword):
            return None
        self._names[free[0]] = keyword
        self._flags = {}
        self._letters[keyword] = string.ascii_lowercase[free[0]]
        text = "".join(f"{n} {kw}\n" for n, kw in sorted(self._names.items()))
        tmp = f"{self._path}.tmp.{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._path)
        st = os.stat(self._path)
        self._stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        return self._letters[keyword]
