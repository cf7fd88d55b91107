"""Failed logins: locks that hurt the attacker, never the users (issue 13, item 4).

Three counters, none of them per OAuth client: a shared client (the server agent's, or the public
``workstation-agent``) locked by anyone's failures would lock everybody out.

* per (user, source), from ``max_failures``: that pair is locked for ``lock_seconds``. The guesser at
  that source stops; the user at their own workstation still logs in.
* per source across users, from ``source_max_failures``: the source is locked for ``lock_seconds``
  (password spraying from one address).
* per user across sources, from ``slow_after``: every attempt for that user first waits ``slow_delay``,
  doubling per failure, at most ``max_delay``. A distributed guess at one account is slowed, and nobody
  can lock a user out of their own account.

A source is an IPv4 address or an IPv6 /64 (one subscriber's prefix; per address, one host could use
a fresh address for every guess). A failure counts until ``window`` seconds pass with no further
failure for the same key. A success clears only its own pair: it proves that user's password at that
source, not that the source or the account is not under attack; a correct password that still needs
its one-time code clears nothing (else a guesser could reset its count between guesses of the code).

Bounded memory: each table holds at most ``max_entries`` keys, and an entry is never evicted or reset
before it expires, whatever else arrives, so a flood of fake names or addresses cannot free a guesser
from its lock or its count. An attempt reserves its three entries before its password is checked. When
a table is full of live entries an attempt that needs a new key there is refused unchecked (fail
closed: it would be a guess that nobody counts), with the time at which room is due; users and
sources already tracked carry on as before.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .config import LockoutConfig
from .forwarded import Address

Key = bytes
SWEEP_INTERVAL = 1.0  # a full table is swept at most this often: a sweep walks the whole table
MAX_DOUBLINGS = 30  # 2**30 * any slow_delay is far past max_delay; keeps the arithmetic small

PAIR = "too many failed logins for this user from this address"
SOURCE = "too many failed logins from this address"
FULL = "too many failed logins are being tracked"


@dataclass(slots=True)
class _Counter:
    failures: int = 0
    last: float = 0.0  # the latest failure (or the reservation that created the entry)
    locked_until: float = 0.0
    pending: int = 0  # attempts admitted and not concluded: the entry cannot go while they run

    def expires(self, window: float) -> float:
        return max(self.last + window, self.locked_until)


class _Table:
    """Counters by key, at most ``capacity``; live entries are never evicted (see the module doc)."""

    def __init__(self, capacity: int, window: float) -> None:
        self._items: dict[Key, _Counter] = {}
        self._capacity = capacity
        self._window = window
        self._next_sweep = 0.0

    def __len__(self) -> int:
        return len(self._items)

    def live(self, key: Key, now: float) -> _Counter | None:
        counter = self._items.get(key)
        if counter is None or counter.expires(self._window) > now:
            return counter
        if counter.pending:  # expired under a running attempt: the count starts again, the entry stays
            counter.failures, counter.locked_until = 0, 0.0
            return counter
        del self._items[key]
        return None

    def has_room(self, key: Key, now: float) -> bool:
        return self.live(key, now) is not None or len(self._items) < self._capacity or self._sweep(now)

    def reserve(self, key: Key, now: float) -> _Counter:
        """Only after :meth:`has_room` said yes, under the same lock."""
        counter = self.live(key, now)
        if counter is None:
            counter = self._items[key] = _Counter(last=now)
        counter.pending += 1
        return counter

    def release(self, key: Key, counter: _Counter) -> None:
        counter.pending -= 1
        if not counter.pending and not counter.failures and not counter.locked_until:
            self._items.pop(key, None)  # nothing to remember: give the room back now

    def room_at(self) -> float:
        return self._next_sweep

    def _sweep(self, now: float) -> bool:
        if now < self._next_sweep:
            return False
        window = self._window
        for key in [k for k, c in self._items.items() if not c.pending and c.expires(window) <= now]:
            del self._items[key]
        self._next_sweep = now + SWEEP_INTERVAL
        if len(self._items) < self._capacity:
            return True
        expiries = [c.expires(window) for c in self._items.values() if not c.pending]
        self._next_sweep = max(self._next_sweep, min(expiries, default=now + window))
        return False


@dataclass(frozen=True, slots=True, kw_only=True)
class Refusal:
    """No password check: ``why`` (one of :data:`PAIR`, :data:`SOURCE`, :data:`FULL`) until ``until``."""

    why: str
    until: float


@dataclass(slots=True, kw_only=True)
class Ticket:
    """An admitted attempt: its three reserved counters and the delay to impose before checking."""

    delay: float
    entries: tuple[tuple[_Table, Key, _Counter], ...] = field(repr=False)
    open: bool = True


class Lockout:
    """The three counters of the module doc, behind one lock; ``clock`` is wall time (UTC in messages)."""

    def __init__(self, config: LockoutConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._pairs = _Table(config.max_entries, config.window)
        self._sources = _Table(config.max_entries, config.window)
        self._users = _Table(config.max_entries, config.window)

    def admit(self, username: str, source: Address) -> Ticket | Refusal:
        """Before a password is checked: refused while locked or untrackable, else a ticket to conclude."""
        user, where = user_key(username), source_key(source)
        keyed = ((self._pairs, user + where), (self._sources, where), (self._users, user))
        with self._lock:
            now = self._clock()
            for table, key, why in ((self._sources, where, SOURCE), (self._pairs, user + where, PAIR)):
                counter = table.live(key, now)
                if counter is not None and counter.locked_until > now:
                    return Refusal(why=why, until=counter.locked_until)
            for table, key in keyed:
                if not table.has_room(key, now):
                    return Refusal(why=FULL, until=max(table.room_at(), now + SWEEP_INTERVAL))
            entries = tuple((table, key, table.reserve(key, now)) for table, key in keyed)
        return Ticket(delay=self._delay(entries[2][2].failures), entries=entries)

    def failed(self, ticket: Ticket) -> list[Refusal]:
        """Count a failure; the locks it started (pair, source), each with its end."""
        config = self.config
        started = []
        with self._lock:
            now = self._clock()
            (_, _, pair), (_, _, source), (_, _, user) = self._close(ticket)
            for counter, limit, why in ((pair, config.max_failures, PAIR),
                                        (source, config.source_max_failures, SOURCE)):
                counter.failures += 1
                counter.last = now
                if counter.failures >= limit and counter.locked_until <= now:
                    counter.locked_until = now + config.lock_seconds
                    counter.failures = 0
                    started.append(Refusal(why=why, until=counter.locked_until))
            user.failures = min(user.failures + 1, config.slow_after + MAX_DOUBLINGS)
            user.last = now
            self._release(ticket)
        return started

    def succeeded(self, ticket: Ticket) -> None:
        """The user proved who they are from this source: that pair starts again from zero."""
        with self._lock:
            self._close(ticket)[0][2].failures = 0
            self._release(ticket)

    def abandoned(self, ticket: Ticket) -> None:
        """Neither success nor failure (a one-time code is still needed, or an error): counts unchanged."""
        with self._lock:
            if ticket.open:
                self._close(ticket)
                self._release(ticket)

    def sizes(self) -> tuple[int, int, int]:
        """(pairs, sources, users) tracked now."""
        with self._lock:
            return len(self._pairs), len(self._sources), len(self._users)

    def _delay(self, failures: int) -> float:
        config = self.config
        if failures < config.slow_after:
            return 0.0
        doublings = min(failures - config.slow_after, MAX_DOUBLINGS)
        return float(min(config.slow_delay * 2**doublings, config.max_delay))

    @staticmethod
    def _close(ticket: Ticket) -> tuple[tuple[_Table, Key, _Counter], ...]:
        if not ticket.open:
            raise RuntimeError("a login attempt is concluded once")
        ticket.open = False
        return ticket.entries

    @staticmethod
    def _release(ticket: Ticket) -> None:
        for table, key, counter in ticket.entries:
            table.release(key, counter)


def user_key(username: str) -> Key:
    """A fixed-size key: a user name is the peer's choice, of any length."""
    return hashlib.blake2b(username.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def source_key(address: Address) -> Key:
    if address.version == 4:
        return b"4" + address.packed
    return b"6" + address.packed[:8]  # the /64
