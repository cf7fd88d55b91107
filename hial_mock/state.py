"""The HIAL's live state: issued tokens, sessions, authorization and device codes, login failures.

In memory, behind one lock, every table bounded: expired entries are swept as new ones arrive and a
hard cap evicts the oldest. A session ties an access token to the refresh tokens that rotate from
it: revoking either revokes the session, so its refresh tokens stop working (RFC 7009 section 2.1).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from .config import LockoutConfig

MAX_ENTRIES = 200_000  # per table; far above what a pilot issues within one token lifetime


@dataclass(slots=True)
class TokenRecord:
    """An issued access token (by its ``jti``) or refresh token; authlib's TokenMixin."""

    kind: str  # "access_token" | "refresh_token"
    value_id: str  # jti of an access token, the value of a refresh token
    client_id: str
    username: str | None
    scope: str
    issued_at: float
    expires_at: float
    session: str
    claims: dict[str, Any] = field(default_factory=dict)
    revoked: bool = False
    sessions: Any = None  # the SessionTable, to see a session revoked after this record was made

    def check_client(self, client: Any) -> bool:
        return bool(client.get_client_id() == self.client_id)

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return int(self.expires_at - self.issued_at)

    def is_expired(self) -> bool:
        return time.time() >= self.expires_at

    def is_revoked(self) -> bool:
        return self.revoked or (self.sessions is not None and self.sessions.is_revoked(self.session))

    def get_user(self) -> Any:
        return self.username

    def get_client_id(self) -> str:
        return self.client_id


class _Table:
    def __init__(self) -> None:
        self.items: OrderedDict[str, Any] = OrderedDict()

    def put(self, key: str, value: Any, expires_at: float) -> None:
        now = time.time()
        self.items[key] = (expires_at, value)
        # Sweep a few of the oldest entries on each insert: amortised O(1), and the cap bounds memory.
        for _ in range(4):
            if not self.items:
                break
            oldest_key, (oldest_expiry, _) = next(iter(self.items.items()))
            if oldest_expiry < now or len(self.items) > MAX_ENTRIES:
                del self.items[oldest_key]
            else:
                break

    def get(self, key: str) -> Any:
        entry = self.items.get(key)
        if entry is None or entry[0] < time.time():
            return None
        return entry[1]

    def pop(self, key: str) -> Any:
        entry = self.items.pop(key, None)
        return None if entry is None or entry[0] < time.time() else entry[1]


class SessionTable:
    def __init__(self) -> None:
        self._revoked: _Table = _Table()
        self._lock = threading.Lock()

    def new(self) -> str:
        return secrets.token_urlsafe(16)

    def revoke(self, session: str, until: float) -> None:
        with self._lock:
            self._revoked.put(session, True, until)

    def is_revoked(self, session: str) -> bool:
        with self._lock:
            return bool(self._revoked.get(session))


class State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.access = _Table()  # jti -> TokenRecord
        self.refresh = _Table()  # refresh token -> TokenRecord
        self.codes = _Table()  # authorization code -> dict
        self.devices = _Table()  # device code -> dict
        self.user_codes = _Table()  # user code -> device code
        self.sessions = SessionTable()


class Lockout:
    """Failed logins per key ("user:NAME", "client:ID"): slowed, then locked (issue 3, item 5)."""

    def __init__(self, config: LockoutConfig) -> None:
        self.config = config
        self._failures: dict[str, list[float]] = {}
        self._locked: dict[str, float] = {}
        self._lock = threading.Lock()

    def status(self, key: str) -> tuple[bool, float]:
        """(locked, delay in seconds to impose before answering)."""
        now = time.time()
        with self._lock:
            until = self._locked.get(key, 0.0)
            if until > now:
                return True, 0.0
            recent = [t for t in self._failures.get(key, []) if now - t < self.config.window]
            self._failures[key] = recent
            if len(recent) >= self.config.slow_after:
                # Exponential slow-down, bounded: each extra failure doubles the wait.
                extra = len(recent) - self.config.slow_after
                return False, min(self.config.slow_delay * (2**extra), 10.0)
            return False, 0.0

    def failure(self, key: str) -> bool:
        """Record a failure; True if the key is now locked."""
        now = time.time()
        with self._lock:
            recent = [t for t in self._failures.get(key, []) if now - t < self.config.window] + [now]
            if len(self._failures) > MAX_ENTRIES:
                self._failures.clear()  # bounded: under a flood, forget old counters first
            self._failures[key] = recent
            if len(recent) >= self.config.max_failures:
                self._locked[key] = now + self.config.lock_seconds
                self._failures[key] = []
                return True
            return False

    def success(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)
