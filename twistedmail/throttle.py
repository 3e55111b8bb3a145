"""
Failed-login limiting, one policy shared by SMTP AUTH, IMAP and HTTP.

Two limits, both counted on every failed login:

- Per client address: ``max_failures`` failures in ``window`` seconds lock
  the address out for ``lockout`` seconds, right password or wrong, so one
  guesser stays slow however many connections it opens.
- Per account: a guesser with many addresses is not slowed by that, so the
  account has its own count, with a higher threshold (``ACCOUNT_FACTOR`` x
  ``max_failures`` in the same window, so a user mistyping on a few devices
  does not trip it), which locks the account for ``lockout`` seconds.  A
  per-account lock would let anyone lock the owner out (a denial of
  service), so it does not apply to an address that recently logged in to
  that account successfully: the owner's usual clients keep working while a
  distributed guesser is refused.  A wrong password from such an address
  still counts, against both the address and the account.

The account is the canonical user (``canonical(login)``, normally
`Accounts.canonical_user`), or for a name that is no user the same folding
the accounts file uses (case, full-width letters, quoting, ``xn--``
domains), so every spelling of a name shares one count, and guesses at names
that do not exist are counted and refused like real ones (a lockout must not
tell a guesser which users exist).

The daemon gives every protocol's throttle one `AccountLimit`
(service.py), so the per-account count adds up over SMTP, IMAP and HTTP;
the per-address counts stay per protocol.

Protocols call `allowed` before checking a password (and again once a SASL
exchange has revealed the user, before the password is checked), then report
the outcome with `failed` or `succeeded`.  Memory is bounded: each table
(addresses, accounts, known addresses) holds at most ``max_keys`` keys,
forgetting the least recently touched first, and each user remembers at most
``known_per_user`` addresses.  State is in memory only: a restart forgets it.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twistedmail._addresses import normalize_address
from twistedmail.interfaces import AccountsError

log = Logger()

#: The per-account threshold is this many times the per-address one.
ACCOUNT_FACTOR = 4
#: How long a successful login makes its address "known" for the user.
KNOWN_FOR = 30 * 24 * 3600.0
#: How many known addresses each user keeps (the most recent ones).
KNOWN_PER_USER = 8
#: RFC 5321 §4.5.3.1: no address is longer, so no user name is; longer
#: names are cut before they become keys, so one key stays small.
_MAX_NAME = 320


@dataclass
class _Entry:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0


class _Counter:
    """Failures per key in a sliding window, locking a key at ``limit``; an LRU table."""

    def __init__(self, limit: int, window: float, lockout: float, max_keys: int) -> None:
        if limit < 1 or window <= 0 or lockout < 0 or max_keys < 1:
            raise ValueError("max_failures, window and max_keys must be positive")
        self.limit = limit
        self._window = window
        self._lockout = lockout
        self._max_keys = max_keys
        # Least recently touched first, so eviction forgets the stalest key.
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def locked(self, key: str, now: float) -> bool:
        entry = self._entries.get(key)
        if entry is None:
            return False
        if entry.locked_until > now:
            return True
        self._expire(entry, now)
        if not entry.failures:
            del self._entries[key]
        return False

    def fail(self, key: str, now: float) -> bool:
        """Count a failure; True if it locked the key."""
        entry = self._entries.pop(key, None) or _Entry()
        self._expire(entry, now)
        entry.failures.append(now)
        locked = len(entry.failures) >= self.limit
        if locked:
            entry.locked_until = now + self._lockout
            entry.failures.clear()
        self._entries[key] = entry
        if len(self._entries) > self._max_keys:
            self._evict(now)
        return locked

    def forget(self, key: str, now: float) -> None:
        """Drop the key's failures, but never a lockout in force."""
        entry = self._entries.get(key)
        if entry is not None and entry.locked_until <= now:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self, entry: _Entry, now: float) -> None:
        while entry.failures and entry.failures[0] <= now - self._window:
            entry.failures.popleft()

    def _evict(self, now: float) -> None:
        for key in [k for k, e in self._entries.items() if self._idle(e, now)]:
            del self._entries[key]
        # Make room for a tenth more, so a flood of new keys does not rescan
        # every entry on every failure.  Lockouts in force go last, so a
        # flood of junk names cannot cheaply buy a locked account more tries.
        target = self._max_keys - self._max_keys // 10
        if len(self._entries) > target:
            unlocked = [k for k, e in self._entries.items() if e.locked_until <= now]
            for key in unlocked[: len(self._entries) - target]:
                del self._entries[key]
        while len(self._entries) > target:
            self._entries.popitem(last=False)

    def _idle(self, entry: _Entry, now: float) -> bool:
        self._expire(entry, now)
        return not entry.failures and entry.locked_until <= now


def fold_login(login: str) -> str:
    """
    The account key of a login that names no user: folded as the accounts
    file folds addresses, else just stripped and lower-cased.
    """
    name = login.strip()[:_MAX_NAME]
    try:
        return normalize_address(name)
    except AccountsError:
        return name.lower()


class AccountLimit:
    """
    The per-account half of the policy: failures per account and the
    addresses each account recently logged in from.

    One is shared by every protocol's `LoginThrottle` (service.py does), so
    a guesser cannot add SMTP's, IMAP's and HTTP's allowances together.
    """

    def __init__(
        self,
        max_failures: int,
        window: float = 300.0,
        lockout: float = 300.0,
        max_keys: int = 10_000,
        known_for: float = KNOWN_FOR,
        known_per_user: int = KNOWN_PER_USER,
    ) -> None:
        if known_per_user < 1:
            raise ValueError("known_per_user must be positive")
        self._known_for = known_for
        self._known_per_user = known_per_user
        self._max_keys = max_keys
        self._accounts = _Counter(max_failures, window, lockout, max_keys)
        # user -> {address: time of its last successful login}, oldest first
        # at both levels.
        self._known: OrderedDict[str, OrderedDict[str, float]] = OrderedDict()

    @property
    def limit(self) -> int:
        return self._accounts.limit

    def allowed(self, user: str, address: str, now: float) -> bool:
        """False while ``user`` is locked and ``address`` has not logged in to it recently."""
        return not self._accounts.locked(user, now) or self._is_known(user, address, now)

    def failed(self, user: str, now: float) -> bool:
        """Count a failure; True if it locked the account."""
        return self._accounts.fail(user, now)

    def succeeded(self, user: str, address: str, now: float) -> None:
        """Remember ``address`` as one ``user`` logs in from (the failure count stays)."""
        known = self._known.pop(user, None) or OrderedDict()
        known.pop(address, None)
        known[address] = now
        while len(known) > self._known_per_user:
            known.popitem(last=False)
        self._known[user] = known
        while len(self._known) > self._max_keys:
            self._known.popitem(last=False)

    def __len__(self) -> int:
        return len(self._accounts) + len(self._known)

    def _is_known(self, user: str, address: str, now: float) -> bool:
        known = self._known.get(user)
        if known is None:
            return False
        when = known.get(address)
        return when is not None and when > now - self._known_for


class LoginThrottle:
    """Failed-login limiting per client address and per account (see the module docstring)."""

    def __init__(
        self,
        clock: IReactorTime,
        max_failures: int = 5,
        window: float = 300.0,
        lockout: float = 300.0,
        max_keys: int = 10_000,
        canonical: Callable[[str], str | None] | None = None,
        known_for: float = KNOWN_FOR,
        known_per_user: int = KNOWN_PER_USER,
        accounts: AccountLimit | None = None,
    ) -> None:
        self._clock = clock
        self._canonical = canonical
        self._addresses = _Counter(max_failures, window, lockout, max_keys)
        #: Shared with the other protocols' throttles when given.
        self.accounts = (
            AccountLimit(
                ACCOUNT_FACTOR * max_failures, window, lockout, max_keys, known_for, known_per_user
            )
            if accounts is None
            else accounts
        )

    def account(self, login: str) -> str:
        """The key ``login``'s failures are counted under."""
        name = login.strip()[:_MAX_NAME]
        if self._canonical is not None:
            user = self._canonical(name)
            if user is not None:
                return user
        return fold_login(name)

    def allowed(self, address: str, login: str | None = None) -> bool:
        """
        False while ``address`` is locked out, or while ``login``'s account is
        locked and ``address`` has not logged in to it recently.
        """
        now = self._clock.seconds()
        if self._addresses.locked(address, now):
            return False
        if login is None:
            return True
        return self.accounts.allowed(self.account(login), address, now)

    def failed(self, address: str, login: str | None = None) -> None:
        """Count a failed login against the address and, if named, the account."""
        now = self._clock.seconds()
        self._addresses.fail(address, now)
        if login is not None:
            user = self.account(login)
            if self.accounts.failed(user, now):
                log.warn(
                    "{failures} failed logins for {user} in a row; locking it for addresses"
                    " it has not logged in from",
                    failures=self.accounts.limit,
                    user=user,
                )

    def succeeded(self, address: str, login: str | None = None) -> None:
        """
        Forget the address's failures (a user who finally types it right
        starts afresh) and remember it as one the account logs in from.  The
        account's own count stays: the owner logging in must not give a
        distributed guesser a fresh set of tries.
        """
        now = self._clock.seconds()
        self._addresses.forget(address, now)
        if login is None:
            return
        self.accounts.succeeded(self.account(login), address, now)

    def __len__(self) -> int:
        """How many keys are tracked in all tables (for tests and metrics)."""
        return len(self._addresses) + len(self.accounts)
