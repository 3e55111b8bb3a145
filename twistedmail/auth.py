"""
Password hashes, and the one cred checker and realm every protocol shares.

SMTP AUTH, IMAP LOGIN/AUTHENTICATE and the HTTP API all log in through the
portal made by `make_portal`, so a user, a password change or a removal
means the same thing everywhere.  scrypt is deliberately slow, so it runs in
the reactor's thread pool (a login never pauses other sessions) and a
successful verification is remembered until the stored hash changes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import unicodedata
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import Interface, implementer

from twistedmail.interfaces import IMailAccount, IMailStore

if TYPE_CHECKING:  # pragma: no cover
    from twistedmail.accounts import Accounts

log = Logger()

# scrypt parameters (RFC 7914).  N = 2**14, r = 8 costs 16 MiB and about
# 50 ms per verification: expensive for an attacker holding the file, cheap
# enough for logins, and repeat logins are cached by the checker anyway.
DEFAULT_SCRYPT_N = 2**14
_SCRYPT_R = 8
_SCRYPT_P = 1
_SALT_BYTES = 16
_KEY_BYTES = 32
# A tampered or foreign file must not make us allocate gigabytes.
_MAX_SCRYPT_N = 2**20


# --- Passwords ------------------------------------------------------------------


def _password_bytes(password: str) -> bytes:
    # RFC 8265 §4.2 (OpaqueString) normalises to NFC, so a password typed on a
    # system that sends decomposed characters still matches.
    return unicodedata.normalize("NFC", password).encode("utf-8")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, n: int = DEFAULT_SCRYPT_N) -> str:
    """
    Hash ``password`` with scrypt and a fresh random salt.

    The result names its own parameters (``scrypt$n$r$p$salt$hash``), so the
    cost can be raised later without invalidating existing hashes.
    """
    salt = secrets.token_bytes(_SALT_BYTES)
    key = _scrypt(_password_bytes(password), salt, n, _SCRYPT_R, _SCRYPT_P)
    return f"scrypt${n}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(key)}"


def check_password(stored: str, password: str) -> bool:
    """True if ``password`` matches the ``stored`` hash; False for any malformed hash."""
    try:
        scheme, n_text, r_text, p_text, salt_text, key_text = stored.split("$")
        n, r, p = int(n_text), int(r_text), int(p_text)
        salt = base64.b64decode(salt_text, validate=True)
        expected = base64.b64decode(key_text, validate=True)
    except ValueError:
        return False
    if scheme != "scrypt" or not (1 < n <= _MAX_SCRYPT_N) or n & (n - 1) or not (0 < r <= 32):
        return False
    if not (0 < p <= 16) or not expected:
        return False
    key = _scrypt(_password_bytes(password), salt, n, r, p, len(expected))
    return hmac.compare_digest(key, expected)


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int, dklen: int = _KEY_BYTES) -> bytes:
    # scrypt needs 128 * r * n bytes (times p); OpenSSL's default cap is 32 MiB.
    maxmem = 128 * r * n * p + (1 << 20) + 128 * r * n
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=dklen)


# --- Cred --------------------------------------------------------------------

#: How many users' successful verifications the checker remembers.
_CACHE_SIZE = 10_000


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


@implementer(ICredentialsChecker)
class AccountsChecker:
    """
    Checks a user name and password against `Accounts`.

    The avatar id is the canonical user name (``alice@example.test``), a
    ``str``; any spelling of the login in another case is accepted.  The
    cache holds, per user, the stored hash it was verified against and an
    HMAC of the password under a key that lives only in this process, so a
    password change, or a changed file, forces scrypt again.

    ``reactor`` should provide ``IReactorThreads``; one that does not (a
    ``task.Clock`` in tests) gets its checks done inline, blocking.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, accounts: Accounts, reactor: Any) -> None:
        self._accounts = accounts
        self._reactor = reactor
        self._cache_key = secrets.token_bytes(32)
        self._cache: dict[str, tuple[str, bytes]] = {}
        self._dummy_hash: str | None = None

    def _digest(self, password: str) -> bytes:
        return hmac.digest(self._cache_key, _password_bytes(password), "sha256")

    # Twisted annotates avatar ids as bytes; ours are str user names by design.
    def requestAvatarId(self, credentials: Any) -> Deferred[str]:  # type: ignore[override]
        try:
            login = _text(credentials.username)
            password = _text(credentials.password)
        except UnicodeDecodeError:
            return fail(UnauthorizedLogin("credentials are not UTF-8"))
        user = self._accounts.canonical_user(login)
        if user is None:
            # As slow as a real check, so timing does not reveal who exists.
            d = self._in_thread(self._check_unknown, password)
            return d.addCallback(self._refused, login)
        stored = self._accounts.password_hash(user)
        cached = self._cache.get(user)
        if (
            stored is not None
            and cached is not None
            and cached[0] == stored
            and hmac.compare_digest(cached[1], self._digest(password))
        ):
            return succeed(user)
        d = self._in_thread(self._accounts.verify_password, user, password)
        return d.addCallback(self._verified, user, stored, password)

    def _in_thread(self, f: Callable[..., bool], *args: object) -> Deferred[bool]:
        if not IReactorThreads.providedBy(self._reactor):
            # task.Clock or MemoryReactor in protocol tests: answer inline, so
            # those tests stay synchronous.  A real reactor always has threads.
            return maybeDeferred(f, *args)
        pool = self._reactor.getThreadPool()
        result: Deferred[bool] = deferToThreadPool(self._reactor, pool, f, *args)
        return result

    def _verified(self, ok: bool, user: str, stored: str | None, password: str) -> str:
        if not ok:
            self._cache.pop(user, None)
            return self._refused(False, user)
        if stored is not None:
            self._cache.pop(user, None)
            if len(self._cache) >= _CACHE_SIZE:
                del self._cache[next(iter(self._cache))]  # the oldest entry
            self._cache[user] = (stored, self._digest(password))
        return user

    def _check_unknown(self, password: str) -> bool:
        if self._dummy_hash is None:
            self._dummy_hash = hash_password(secrets.token_urlsafe(16), self._accounts.scrypt_n)
        check_password(self._dummy_hash, password)
        return False

    def _refused(self, _ok: bool, login: str) -> str:
        log.info("Login refused for {login}", login=login)
        raise UnauthorizedLogin("bad user name or password")


@implementer(IRealm)
class MailRealm:
    """Turns a canonical user name into that user's `IMailAccount`."""

    def __init__(self, store: IMailStore) -> None:
        self._store = store

    def requestAvatar(
        self,
        avatarId: Any,
        mind: object,
        *interfaces: type[Interface],
    ) -> Deferred[tuple[type[Interface], object, Callable[[], None]]]:
        """Fire with ``(IMailAccount, store.account(user), logout)``."""
        if IMailAccount not in interfaces:
            return fail(NotImplementedError("MailRealm only provides IMailAccount"))
        d: Deferred[IMailAccount] = self._store.account(_text(avatarId))
        return d.addCallback(_avatar)


def _avatar(account: IMailAccount) -> tuple[type[Interface], object, Callable[[], None]]:
    return (IMailAccount, account, _logout)


def _logout() -> None:
    """Accounts are shared per process and need no per-login cleanup."""


def make_portal(accounts: Accounts, store: IMailStore, reactor: Any) -> Portal:
    """The portal every protocol logs in through."""
    return Portal(MailRealm(store), [AccountsChecker(accounts, reactor)])
