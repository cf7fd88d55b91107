"""The HIAL's live state: issued tokens and their sessions, authorization codes, device codes.

In memory, each store behind its own lock, every table bounded: expired entries are swept as new ones
arrive and a hard cap drops the oldest. Dropping is safe here because it fails closed: a dropped token
is unknown, hence inactive (RFC 7662 2.2) and unusable; a dropped code or device code is invalid.
(Login failures are the exception: see :mod:`hial_mock.lockout`, whose entries are never dropped.)

Tokens are kept by a SHA-256 digest of their value, never the value: a memory dump yields nothing a
client could present. Every token of one login shares one :class:`~hial_mock.oauth.models.Session`
object, so revoking the session reaches all of them at once (RFC 7009 section 2.1); the session lives
exactly as long as a token that refers to it, so no revocation list can be flooded away.
"""

from __future__ import annotations

import hashlib
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from .oauth.models import Authenticated, AuthorizationCode, DeviceRecord, Session, TokenRecord

MAX_ENTRIES = 200_000  # per table; far above what a pilot issues within one token lifetime
V = TypeVar("V")


class _Expiring(Generic[V]):
    """Values by key with an expiry; the caller holds the lock."""

    def __init__(self, capacity: int = MAX_ENTRIES) -> None:
        self.items: OrderedDict[str, tuple[float, V]] = OrderedDict()
        self.capacity = capacity

    def put(self, key: str, value: V, expires_at: float) -> None:
        now = time.time()
        self.items[key] = (expires_at, value)
        self.items.move_to_end(key)
        # Sweep a few of the oldest entries on each insert: amortised O(1), and the cap bounds memory.
        for _ in range(4):
            if not self.items:
                break
            oldest_key, (oldest_expiry, _) = next(iter(self.items.items()))
            if oldest_expiry < now or len(self.items) > self.capacity:
                del self.items[oldest_key]
            else:
                break

    def get(self, key: str) -> V | None:
        entry = self.items.get(key)
        if entry is None or entry[0] < time.time():
            return None
        return entry[1]

    def pop(self, key: str) -> V | None:
        entry = self.items.pop(key, None)
        return None if entry is None or entry[0] < time.time() else entry[1]


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(slots=True)
class _Refresh:
    record: TokenRecord
    used: bool = False  # rotated away: presenting it again is a replay


class TokenStore:
    """Issued access and refresh tokens (the ``Tokens`` collaborator of the OAuth server)."""

    def __init__(self, capacity: int = MAX_ENTRIES) -> None:
        self._lock = threading.Lock()
        self._access: _Expiring[TokenRecord] = _Expiring(capacity)
        self._refresh: _Expiring[_Refresh] = _Expiring(capacity)
        self._sessions: weakref.WeakValueDictionary[str, Session] = weakref.WeakValueDictionary()
        # Told (sid, user) once per session that ends: the back-channel logout (hial_mock.backchannel).
        self.on_session_end: Callable[[str, str | None], None] = lambda sid, user: None

    def session(self, sid: str) -> Session:
        with self._lock:
            session = self._sessions.get(sid)
            if session is None:
                session = self._sessions[sid] = Session(sid)
            return session

    def save(self, token: str, record: TokenRecord) -> None:
        with self._lock:
            if record.kind == "access_token":
                self._access.put(digest(token), record, record.expires_at)
            else:
                self._refresh.put(digest(token), _Refresh(record), record.expires_at)

    def find(self, token: str, hint: str | None) -> TokenRecord | None:
        """The record of an access or refresh token, revoked or not (RFC 7662 and RFC 7009 decide); a
        refresh token already rotated away is no token any more."""
        key = digest(token)
        with self._lock:
            access = self._access.get(key) if hint != "refresh_token" else None
            if access is not None:
                return access
            refresh = self._refresh.get(key)
            if refresh is not None:
                return None if refresh.used else refresh.record
            return self._access.get(key) if hint == "refresh_token" else None

    def active_access(self, token: str) -> TokenRecord | None:
        record = self.find(token, "access_token")
        if record is None or record.kind != "access_token" or record.is_revoked() or record.is_expired():
            return None
        return record

    def refresh(self, value: str) -> TokenRecord | None:
        with self._lock:
            entry = self._refresh.get(digest(value))
            if entry is None:
                return None
            if entry.used:
                # RFC 9700 4.14.2: a rotated refresh token comes back, so two parties hold it; end the session.
                ended = not entry.record.session.revoked
                entry.record.session.revoked = True
            else:
                ended = False
            record = entry.record
        if ended:
            self.on_session_end(record.session.sid, record.username)
        return None if record.is_revoked() or record.is_expired() else record

    def rotate(self, value: str) -> bool:
        with self._lock:
            entry = self._refresh.get(digest(value))
            if entry is None or entry.used:
                return False
            entry.used = True
            return True

    def revoke(self, record: TokenRecord) -> None:
        with self._lock:
            ended = not record.session.revoked
            record.session.revoked = True
        if ended:  # outside the lock: the listener only queues, but must not hold the store
            self.on_session_end(record.session.sid, record.username)

    def sizes(self) -> tuple[int, int, int]:
        """(access tokens, refresh tokens, sessions) held now."""
        with self._lock:
            return len(self._access.items), len(self._refresh.items), len(self._sessions)


class CodeStore:
    """Authorization codes (single use, RFC 6749 4.1.2) and the nonces they carried (OIDC Core 3.1.2.1)."""

    def __init__(self, nonce_lifetime: float, capacity: int = MAX_ENTRIES) -> None:
        self._lock = threading.Lock()
        self._codes: _Expiring[AuthorizationCode] = _Expiring(capacity)
        self._nonces: _Expiring[bool] = _Expiring(capacity)
        self._nonce_lifetime = nonce_lifetime

    def save_code(self, code: AuthorizationCode) -> None:
        with self._lock:
            self._codes.put(code.code, code, code.expires_at)
            if code.nonce:
                self._nonces.put(f"{code.client_id} {code.nonce}", True, time.time() + self._nonce_lifetime)

    def code(self, value: str) -> AuthorizationCode | None:
        with self._lock:
            return self._codes.get(value)

    def take_code(self, value: str) -> bool:
        with self._lock:
            return self._codes.pop(value) is not None

    def nonce_seen(self, client_id: str, nonce: str) -> bool:
        with self._lock:
            return bool(self._nonces.get(f"{client_id} {nonce}"))


@dataclass(slots=True)
class _Device:
    record: DeviceRecord
    last_poll: float = 0.0
    decision: tuple[Authenticated, bool] | None = None


class DeviceStore:
    """RFC 8628 device codes by device code, reachable by user code from the verification page."""

    def __init__(self, capacity: int = MAX_ENTRIES) -> None:
        self._lock = threading.Lock()
        self._devices: _Expiring[_Device] = _Expiring(capacity)
        self._user_codes: _Expiring[str] = _Expiring(capacity)  # user code -> device code

    def save_device(self, record: DeviceRecord) -> None:
        with self._lock:
            self._devices.put(record.device_code, _Device(record), record.expires_at)
            self._user_codes.put(record.user_code, record.device_code, record.expires_at)

    def device(self, device_code: str) -> DeviceRecord | None:
        with self._lock:
            entry = self._devices.get(device_code)
            return None if entry is None else entry.record

    def too_fast(self, device_code: str) -> bool:
        now = time.time()
        with self._lock:
            entry = self._devices.get(device_code)
            if entry is None:
                return False
            too_fast = now - entry.last_poll < entry.record.interval
            entry.last_poll = now
            return too_fast

    def pending(self, user_code: str) -> DeviceRecord | None:
        """The device waiting for this user code's decision, for the verification page."""
        with self._lock:
            entry = self._by_user_code(user_code)
            return None if entry is None or entry.decision is not None else entry.record

    def decide(self, user_code: str, user: Authenticated, approved: bool) -> bool:
        with self._lock:
            entry = self._by_user_code(user_code)
            if entry is None or entry.decision is not None:
                return False
            entry.decision = (user, approved)
            return True

    def decision(self, user_code: str) -> tuple[Authenticated, bool] | None:
        with self._lock:
            entry = self._by_user_code(user_code)
            if entry is None or entry.decision is None:
                return None
            if entry.decision[1]:
                # Handed out once: a second poll with the same device code finds no device code.
                self._user_codes.pop(user_code)
                self._devices.pop(entry.record.device_code)
            return entry.decision

    def _by_user_code(self, user_code: str) -> _Device | None:
        device_code = self._user_codes.get(user_code)
        return None if device_code is None else self._devices.get(device_code)
