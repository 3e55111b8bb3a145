"""
Users, local domains, aliases and catch-alls, and the password hashes.

One JSON file in the data directory holds everything, so the ``twistedmail``
admin command and a running daemon share it: every change is made under an
``fcntl`` lock after re-reading the file, and written atomically (temporary
file, fsync, rename, fsync of the directory), so neither loses the other's
changes; every query first checks whether the file changed on disk and
reloads it, so the daemon sees the admin's changes without a restart.

Password hashing and the cred checker and realm that SMTP AUTH, IMAP and
HTTP share live in `twistedmail.auth`, and how an address becomes a lookup
key in `twistedmail._addresses`; both are re-exported here.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import unicodedata
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from twisted.logger import Logger

from twistedmail._addresses import normalize_address, normalize_domain, parse_address
from twistedmail.auth import (
    DEFAULT_SCRYPT_N,
    AccountsChecker,
    MailRealm,
    check_password,
    hash_password,
    make_portal,
)
from twistedmail.interfaces import AccountsError, NoSuchUser, RelayDenied

log = Logger()

__all__ = [
    "ACCOUNTS_FILE",
    "DEFAULT_SCRYPT_N",
    "Accounts",
    "AccountsChecker",
    "MailRealm",
    "check_password",
    "hash_password",
    "make_portal",
    "normalize_address",
    "normalize_domain",
    "parse_address",
]

#: The name of the accounts file inside the data directory.
ACCOUNTS_FILE = "accounts.json"

_FORMAT_VERSION = 1

# RFC 5321 §4.5.1, case-insensitive (§4.1.1.3): parse_address folds local parts.
_POSTMASTER = "postmaster"

# Recursion limit for alias chains; loops are refused when an alias is added
# and ignored (visited set) when resolving, this only bounds a silly chain.
_MAX_ALIAS_DEPTH = 20

# How many `Accounts.resolve` answers one version of the file remembers: a
# repeated RCPT TO then costs a stat and a dict lookup, and a client trying
# many addresses cannot grow the daemon.
_MAX_RESOLVED = 4096


def _split(address: str) -> tuple[str, str]:
    local, _, domain = address.rpartition("@")
    return local, domain


# --- The database ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Refused:
    """A remembered refusal of `Accounts.resolve`, raised afresh each time."""

    error: type[ValueError | RelayDenied | NoSuchUser]
    text: str


@dataclass(frozen=True)
class _Data:
    """
    One immutable snapshot of the file; swapped whole, never changed in place.

    ``resolved`` remembers `Accounts.resolve`'s answers for this snapshot
    only: a reload makes a new snapshot, so no answer outlives the version of
    the file it was computed from, even when another thread reloads midway.
    """

    domains: frozenset[str] = frozenset()
    users: Mapping[str, str] = field(default_factory=dict)  # user -> password hash
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    catch_all: Mapping[str, str] = field(default_factory=dict)  # domain -> address
    resolved: dict[str, tuple[str, ...] | _Refused] = field(
        default_factory=dict, compare=False, repr=False
    )

    def to_json(self) -> dict[str, Any]:
        return {
            "version": _FORMAT_VERSION,
            "domains": sorted(self.domains),
            "users": {u: {"password": h} for u, h in sorted(self.users.items())},
            "aliases": {a: list(t) for a, t in sorted(self.aliases.items())},
            "catch_all": dict(sorted(self.catch_all.items())),
        }

    @classmethod
    def from_json(cls, raw: object) -> _Data:
        if not isinstance(raw, dict) or raw.get("version") != _FORMAT_VERSION:
            raise ValueError("not a twistedmail accounts file (version 1)")
        return cls(
            domains=frozenset(str(d) for d in raw.get("domains", ())),
            users={str(u): str(v["password"]) for u, v in raw.get("users", {}).items()},
            aliases={str(a): tuple(map(str, t)) for a, t in raw.get("aliases", {}).items()},
            catch_all={str(d): str(a) for d, a in raw.get("catch_all", {}).items()},
        )


class _Draft:
    """A mutable copy of `_Data` that a change edits before it is written."""

    def __init__(self, data: _Data) -> None:
        self.domains = set(data.domains)
        self.users = dict(data.users)
        self.aliases = dict(data.aliases)
        self.catch_all = dict(data.catch_all)

    def freeze(self) -> _Data:
        return _Data(frozenset(self.domains), self.users, self.aliases, self.catch_all)


_StatKey = tuple[int, int, int, int]


# The "version" of a file that cannot even be stat'ed.
_UNREADABLE: _StatKey = (-1, -1, -1, -1)


def _stat_key(st: os.stat_result) -> _StatKey:
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def _close_fd(holder: list[int]) -> None:
    for fd in holder:
        os.close(fd)
    holder.clear()


class Accounts:
    """
    Users, local domains, aliases and catch-alls, persisted as JSON in
    ``<data_dir>/accounts.json``.

    Queries are synchronous and cheap: one ``stat`` to notice a change made
    by another process (and `resolve` remembers its answers per version).
    The file we last read is kept open, so its inode cannot be reused by a
    later version of the file: (device, inode, mtime, size) then reliably
    tells versions apart even when two writes land in the same clock tick.
    Changes are synchronous too (they are rare admin actions);
    `verify_password` is the one blocking call and belongs in a thread (see
    `twistedmail.auth`).  Safe to query from several threads.
    """

    def __init__(
        self,
        path: str,
        *,
        scrypt_n: int = DEFAULT_SCRYPT_N,
        postmaster: str | None = None,
        hostname: str | None = None,
    ) -> None:
        """
        ``postmaster`` and ``hostname`` are ``[server]``'s; see `resolve`.
        :raises AccountsError: ``postmaster`` is not an address, or the file
            cannot be read.
        """
        self.path = os.path.abspath(path)
        self.scrypt_n = scrypt_n
        self.postmaster = None if postmaster is None else normalize_address(postmaster)
        self._hostname: str | None = None
        # An address literal or junk as host name is simply never a local domain.
        with suppress(AccountsError):
            self._hostname = None if hostname is None else normalize_domain(hostname)
        self._lock_path = self.path + ".lock"
        self._mutex = threading.Lock()
        self._data = _Data()
        self._key: _StatKey | None = None
        self._bad_key: _StatKey | None = None
        self._fd_holder: list[int] = []
        self._finalizer = weakref.finalize(self, _close_fd, self._fd_holder)
        try:
            self._refresh(strict=True)
        except ValueError as e:
            raise AccountsError(f"Cannot read {self.path}: {e}.") from None

    @classmethod
    def in_data_dir(cls, data_dir: str, **kw: Any) -> Accounts:
        """The accounts of a data directory (``<data_dir>/accounts.json``)."""
        return cls(os.path.join(data_dir, ACCOUNTS_FILE), **kw)

    def close(self) -> None:
        """Release the file descriptor kept open on the current version."""
        with self._mutex:
            _close_fd(self._fd_holder)
            self._key = None

    # --- loading -------------------------------------------------------------

    def _refresh(self, strict: bool = False) -> _Data:
        """
        The current snapshot, reloaded first if the file changed.

        A file that turns unreadable or corrupt while the daemon runs keeps
        the last good snapshot (and is logged), rather than locking everyone
        out; at start-up (``strict``) it is an error.
        """
        with self._mutex:
            key: _StatKey | None = _UNREADABLE
            try:
                try:
                    key = _stat_key(os.stat(self.path))
                except FileNotFoundError:
                    key = None
                if key == self._key or (key == self._bad_key and key is not None):
                    return self._data
                self._load()
                self._bad_key = None
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                if strict:
                    raise ValueError(reason) from None
                if key != self._bad_key:  # once per bad version, not per query
                    log.error(
                        "Keeping the old accounts; cannot reload {path}: {error}",
                        path=self.path,
                        error=reason,
                    )
                self._bad_key = key
            return self._data

    def _load(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            _close_fd(self._fd_holder)
            self._data, self._key = _Data(), None
            return
        try:
            key = _stat_key(os.fstat(fd))
            with os.fdopen(os.dup(fd), "rb") as f:
                data = _Data.from_json(json.loads(f.read()))
        except BaseException:
            os.close(fd)
            raise
        _close_fd(self._fd_holder)
        self._fd_holder.append(fd)
        self._data, self._key = data, key

    # --- queries -------------------------------------------------------------

    def is_local_domain(self, domain: str) -> bool:
        try:
            return normalize_domain(domain) in self._refresh().domains
        except AccountsError:
            return False  # an address literal, or not a domain at all

    def resolve(self, address: str) -> tuple[str, ...]:
        """
        The canonical users that mail to ``address`` goes to, sorted.

        Tried in order: a user; an alias (followed recursively); the same two
        without a ``+tag`` (plus-addressing); the domain's catch-all.

        ``postmaster`` (any case, any ``+tag``) of every local domain, and a
        bare ``postmaster`` with no domain, always reach somebody: RFC 5321
        §4.5.1 requires accepting them, so mail about mail problems is never
        refused: see `_postmaster_of` for who gets it, and
        `_postmaster_domain` for whose a bare ``postmaster`` is.
        :raises ValueError: the address is malformed.
        :raises RelayDenied: the domain is not local.
        :raises NoSuchUser: the domain is local but nothing matches (for
            postmaster: there is no user at all).
        """
        data = self._refresh()
        memo = data.resolved
        known = memo.get(address)
        if known is None:
            try:
                known = self._resolve(data, address)
            except RelayDenied as e:
                known = _Refused(RelayDenied, str(e))
            except NoSuchUser as e:
                known = _Refused(NoSuchUser, str(e))
            except ValueError as e:  # UnicodeError too: raised again as plain ValueError
                known = _Refused(ValueError, str(e))
            if len(memo) >= _MAX_RESOLVED:
                memo.clear()  # many distinct addresses: start again, stay bounded
            memo[address] = known
        if isinstance(known, _Refused):
            raise known.error(known.text)
        return known

    def _resolve(self, data: _Data, address: str) -> tuple[str, ...]:
        if address.strip().lower() == _POSTMASTER:  # RFC 5321 §4.1.1.3
            return self._postmaster_of(data, self._postmaster_domain(data))
        local, domain = parse_address(address)
        if domain not in data.domains:
            raise RelayDenied(f"{domain} is not a local domain")
        found = self._named(data, local, domain)
        if found:
            return found
        catch_all = data.catch_all.get(domain)
        if catch_all is not None:
            found = _expand(data, catch_all)
            if found:
                return found
        raise NoSuchUser(f"no user or alias {local}@{domain}")

    def named_users(self, address: str) -> tuple[str, ...]:
        """`resolve` without catch-all and postmaster rules; ``()`` for nobody."""
        try:
            local, domain = parse_address(address)
        except ValueError:
            return ()
        return _lookup(self._refresh(), local, domain)

    def postmasters(self) -> dict[str, tuple[str, ...]]:
        """Who gets each local domain's postmaster mail (``()``: nobody yet), for the log."""
        found: dict[str, tuple[str, ...]] = {}
        for domain in self.domains():
            try:
                found[domain] = self.resolve(f"{_POSTMASTER}@{domain}")
            except (NoSuchUser, RelayDenied, ValueError):
                found[domain] = ()
        return found

    def _postmaster_domain(self, data: _Data) -> str | None:
        """
        Whose postmaster a bare ``<postmaster>`` is: the host name's domain
        if it is local; else the first local domain (alphabetically) with a
        postmaster user or alias; else the first local domain.
        """
        if self._hostname is not None and self._hostname in data.domains:
            return self._hostname
        domains = sorted(data.domains)
        for domain in domains:
            if _lookup(data, _POSTMASTER, domain):
                return domain
        return domains[0] if domains else None

    def _postmaster_of(self, data: _Data, domain: str | None) -> tuple[str, ...]:
        """
        Who mail to ``postmaster@domain`` reaches: a user or alias of that
        name; else the configured ``postmaster`` if it is a local user or
        alias; else the domain's catch-all; else the domain's first user
        (alphabetically); else the first user of all.  The administrator's
        explicit choices come before guesses, and while any user exists the
        mail is neither lost nor refused.
        :raises NoSuchUser: there is no user at all.
        """
        if domain is not None and domain in data.domains:
            explicit = _lookup(data, _POSTMASTER, domain)
            if explicit:
                return explicit
        if self.postmaster is not None:
            configured = _lookup(data, *_split(self.postmaster))
            if configured:
                return configured
        catch_all = data.catch_all.get(domain or "")
        if catch_all is not None:
            found = _expand(data, catch_all)
            if found:
                return found
        users = sorted(data.users)
        of_domain = [u for u in users if _split(u)[1] == domain]
        if of_domain or users:
            return ((of_domain or users)[0],)
        raise NoSuchUser("no user at all to receive postmaster mail")

    def may_send_as(self, user: str, address: str) -> bool:
        """
        Whether ``user`` owns ``address`` as a sender (RFC 6409 §6.1): mail
        to it reaches ``user`` alone, through their own address, a ``+tag``
        of it, an alias of theirs (what `addresses_of` lists) or being the
        postmaster of a domain.  A catch-all does not make every address of
        a domain its target's, nor does an alias shared with others, nor
        any address of a domain that is not ours.
        """
        data = self._refresh()
        try:
            local, domain = parse_address(address)
        except ValueError:
            return False
        if domain not in data.domains:
            return False
        try:
            return self._named(data, local, domain) == (user,)
        except NoSuchUser:
            return False

    def _named(self, data: _Data, local: str, domain: str) -> tuple[str, ...]:
        """`_lookup`, and for a postmaster nobody named, `_postmaster_of`."""
        found = _lookup(data, local, domain)
        if not found and local.partition("+")[0] == _POSTMASTER:
            return self._postmaster_of(data, domain)
        return found

    def user_exists(self, user: str) -> bool:
        return self.canonical_user(user) is not None

    def canonical_user(self, login: str) -> str | None:
        """The canonical user name for a login name in any case, or None."""
        users = self._refresh().users
        key = login.strip().lower()
        if key in users:
            return key
        try:  # the slower path: A-label domains, needless quotes
            key = normalize_address(login)
        except AccountsError:
            return None
        return key if key in users else None

    def password_hash(self, user: str) -> str | None:
        """The stored hash of a canonical user (lets the checker notice changes)."""
        return self._refresh().users.get(user)

    def addresses_of(self, user: str) -> frozenset[str]:
        """The user's own address and every alias that delivers only to them."""
        data = self._refresh()
        if user not in data.users:
            return frozenset()
        mine = {user}
        for alias in data.aliases:
            if _expand(data, alias) == (user,):
                mine.add(alias)
        return frozenset(mine)

    def users(self) -> list[str]:
        return sorted(self._refresh().users)

    def domains(self) -> list[str]:
        return sorted(self._refresh().domains)

    def aliases(self) -> dict[str, tuple[str, ...]]:
        return dict(sorted(self._refresh().aliases.items()))

    def catch_alls(self) -> dict[str, str]:
        """Domain -> catch-all target."""
        return dict(sorted(self._refresh().catch_all.items()))

    def verify_password(self, user: str, password: str) -> bool:
        """
        True if ``password`` is ``user``'s.  BLOCKING: runs scrypt, so call
        it in a thread; the comparison is constant-time.
        """
        stored = self._refresh().users.get(user)
        if stored is None:
            return False
        return check_password(stored, password)

    # --- changes -------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def _change(self, edit: Callable[[_Draft], None]) -> None:
        """
        Apply ``edit`` to the freshest data and write the result atomically.

        The re-read happens under the lock, so a change made by another
        process a moment ago is the base of ours, never overwritten.
        """
        directory = os.path.dirname(self.path)
        # The first ``user add`` may make the data directory: owner only,
        # as the daemon makes it (it holds every password hash).
        os.makedirs(directory, mode=0o700, exist_ok=True)
        with self._locked():
            with self._mutex:
                try:
                    self._load()
                except (ValueError, KeyError, TypeError, AttributeError) as e:
                    # Never overwrite a file we cannot read: it may hold every user.
                    raise AccountsError(
                        f"Cannot read {self.path}: {e}; fix or restore it."
                    ) from None
                draft = _Draft(self._data)
            edit(draft)
            data = draft.freeze()
            tmp = f"{self.path}.tmp.{os.getpid()}.{threading.get_ident()}"
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(data.to_json(), f, indent=2, ensure_ascii=False)
                    f.write("\n")
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
            dir_fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            with self._mutex:
                self._load()

    def add_user(self, email: str, password: str) -> None:
        """Add a user (and its domain as a local domain)."""
        user = normalize_address(email)
        _check_user_name(user)
        _check_password_text(password)
        hashed = hash_password(password, self.scrypt_n)

        def edit(d: _Draft) -> None:
            if user in d.users:
                raise AccountsError(f"User {user} already exists.")
            if user in d.aliases:
                raise AccountsError(f"{user} is already an alias; remove the alias first.")
            d.users[user] = hashed
            d.domains.add(_split(user)[1])

        self._change(edit)
        log.info("Added user {user}", user=user)

    def remove_user(self, email: str) -> None:
        """
        Remove a user.  Aliases and catch-alls that pointed at them lose that
        target, and go away if nothing is left, so nothing dangles.
        """
        user = normalize_address(email)

        def edit(d: _Draft) -> None:
            if user not in d.users:
                raise AccountsError(f"No such user: {user}.")
            del d.users[user]
            _prune(d)

        self._change(edit)
        log.info("Removed user {user}", user=user)

    def set_password(self, email: str, password: str) -> None:
        user = normalize_address(email)
        _check_password_text(password)
        hashed = hash_password(password, self.scrypt_n)

        def edit(d: _Draft) -> None:
            if user not in d.users:
                raise AccountsError(f"No such user: {user}.")
            d.users[user] = hashed

        self._change(edit)
        log.info("Changed the password of {user}", user=user)

    def add_alias(self, alias: str, targets: Sequence[str]) -> None:
        """
        Make mail to ``alias`` go to ``targets`` (local users or aliases).

        Adding targets to an existing alias extends it.  The alias's domain
        becomes local.  A target that would make a loop is refused.
        """
        name = normalize_address(alias)
        if any(unicodedata.category(c) == "Cc" for c in name):
            raise AccountsError(f"{name!r} cannot be an alias: it has a control character.")
        wanted = [normalize_address(t) for t in targets]
        if not wanted:
            raise AccountsError(f"Alias {name} needs at least one target.")

        def edit(d: _Draft) -> None:
            if name in d.users:
                raise AccountsError(f"{name} is a user; an alias cannot have the same address.")
            for target in wanted:
                if target == name:
                    raise AccountsError(f"Alias {name} cannot point to itself.")
                if _split(target)[1] not in d.domains:
                    raise AccountsError(f"Alias target {target} is not in a local domain.")
                if target not in d.users and target not in d.aliases:
                    raise AccountsError(f"Alias target {target} is not a user or an alias.")
                if name in _reachable(d.aliases, target):
                    raise AccountsError(f"Alias {name} -> {target} would make a loop.")
            current = list(d.aliases.get(name, ()))
            d.aliases[name] = tuple(
                current + [t for t in dict.fromkeys(wanted) if t not in current]
            )
            d.domains.add(_split(name)[1])

        self._change(edit)
        log.info("Added alias {alias}", alias=name)

    def remove_alias(self, alias: str) -> None:
        name = normalize_address(alias)

        def edit(d: _Draft) -> None:
            if name not in d.aliases:
                raise AccountsError(f"No such alias: {name}.")
            del d.aliases[name]
            _prune(d)

        self._change(edit)
        log.info("Removed alias {alias}", alias=name)

    def add_domain(self, domain: str) -> None:
        name = normalize_domain(domain)

        def edit(d: _Draft) -> None:
            if name in d.domains:
                raise AccountsError(f"Domain {name} is already local.")
            d.domains.add(name)

        self._change(edit)
        log.info("Added domain {domain}", domain=name)

    def remove_domain(self, domain: str) -> None:
        """Stop accepting mail for a domain; refused while it has users or aliases."""
        name = normalize_domain(domain)

        def edit(d: _Draft) -> None:
            if name not in d.domains:
                raise AccountsError(f"No such domain: {name}.")
            users = [u for u in d.users if _split(u)[1] == name]
            aliases = [a for a in d.aliases if _split(a)[1] == name]
            if users or aliases:
                raise AccountsError(
                    f"Domain {name} still has {len(users)} user(s) and {len(aliases)} "
                    "alias(es); remove them first."
                )
            d.domains.discard(name)
            d.catch_all.pop(name, None)
            _prune(d)

        self._change(edit)
        log.info("Removed domain {domain}", domain=name)

    def set_catch_all(self, domain: str, target: str | None) -> None:
        """Send mail for unknown addresses of ``domain`` to ``target`` (None: stop)."""
        name = normalize_domain(domain)
        wanted = None if target is None else normalize_address(target)

        def edit(d: _Draft) -> None:
            if name not in d.domains:
                raise AccountsError(f"No such domain: {name}.")
            if wanted is None:
                d.catch_all.pop(name, None)
                return
            if wanted not in d.users and wanted not in d.aliases:
                raise AccountsError(f"Catch-all target {wanted} is not a user or an alias.")
            d.catch_all[name] = wanted

        self._change(edit)
        log.info("Set the catch-all of {domain}", domain=name)


def _check_user_name(user: str) -> None:
    """
    A user's name becomes a directory under ``mail/`` and appears in logs and
    protocol replies: no path separator (``/``, ``\\``), no blank (the
    Maildir store refuses them in directory names), no control character,
    whatever quoting the address used (RFC 5321 §4.1.2 lets a quoted local
    part hold them), so no user exists that a store would have to refuse.
    """
    local = _split(user)[0]
    if any(c in "/\\" or c.isspace() or unicodedata.category(c) == "Cc" for c in local):
        raise AccountsError(
            f"{user!r} cannot be a user: no '/', '\\', blanks or control characters in its"
            " name (an alias may have them)."
        )


def _check_password_text(password: str) -> None:
    if not password:
        raise AccountsError("The password must not be empty.")
    if any(unicodedata.category(c) == "Cc" for c in password):
        raise AccountsError("The password must not contain control characters.")


def _reachable(aliases: Mapping[str, tuple[str, ...]], start: str) -> set[str]:
    """Every address reachable from ``start`` through aliases (including it)."""
    seen: set[str] = set()
    stack = [start]
    while stack:
        address = stack.pop()
        if address not in seen:
            seen.add(address)
            stack.extend(aliases.get(address, ()))
    return seen


def _lookup(data: _Data, local: str, domain: str) -> tuple[str, ...]:
    """
    The users behind ``local@domain`` as a user or alias, or without its
    ``+tag``: what the address itself names, before any catch-all or
    postmaster rule; ``()`` if nothing.
    """
    candidates = [f"{local}@{domain}"]
    base, plus, _tag = local.partition("+")
    if plus and base:
        candidates.append(f"{base}@{domain}")
    for candidate in candidates:
        if candidate in data.users or candidate in data.aliases:
            found = _expand(data, candidate)
            if found:
                return found
    return ()


def _expand(data: _Data, address: str) -> tuple[str, ...]:
    """The users ``address`` delivers to, following aliases; loops are harmless."""
    found: set[str] = set()
    seen: set[str] = set()

    def walk(addr: str, depth: int) -> None:
        if addr in seen or depth > _MAX_ALIAS_DEPTH:
            return
        seen.add(addr)
        if addr in data.users:
            found.add(addr)
        for target in data.aliases.get(addr, ()):
            walk(target, depth + 1)

    walk(address, 0)
    return tuple(sorted(found))


def _prune(d: _Draft) -> None:
    """Drop alias targets and catch-alls that no longer exist, until stable."""
    changed = True
    while changed:
        changed = False
        for alias, targets in list(d.aliases.items()):
            kept = tuple(t for t in targets if t in d.users or t in d.aliases)
            if kept != targets:
                changed = True
                if kept:
                    d.aliases[alias] = kept
                else:
                    del d.aliases[alias]
    for domain, target in list(d.catch_all.items()):
        if target not in d.users and target not in d.aliases:
            del d.catch_all[domain]
