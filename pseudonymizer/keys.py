"""The HMAC keys, one per pseudonymisation scope, held by this service only.

A key is 32 random bytes (RFC 2104 section 3: at least the hash output length), created at first use
in ``<state_dir>/keys/<scope>.key`` with mode 0600 (the folder 0700), never logged, never returned by
any endpoint. Creation is exclusive (``O_EXCL``): two threads or processes asking at once end with the
one key that was written first. A key file that is not 32 bytes, or that others may read, stops the
service instead of being used or replaced (a replaced key would change every pseudonym).
"""

from __future__ import annotations

import os
import re
import secrets
import stat
import threading
from pathlib import Path

KEY_BYTES = 32
SCOPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class KeyFileError(RuntimeError):
    """A key file that must not be used (wrong size, readable by others)."""


class KeyRing:
    def __init__(self, state_dir: Path) -> None:
        self.folder = state_dir / "keys"
        self._keys: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never the keys
        return f"KeyRing({str(self.folder)!r}, {len(self._keys)} loaded)"

    def key(self, scope: str) -> bytes:
        if not SCOPE.fullmatch(scope):
            raise ValueError(f"scope {scope[:70]!r} is not a name")
        with self._lock:
            found = self._keys.get(scope)
            if found is None:
                found = self._keys[scope] = self._load_or_create(scope)
            return found

    def _load_or_create(self, scope: str) -> bytes:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.folder / f"{scope}.key"
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return _read(path)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(secrets.token_bytes(KEY_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
        return _read(path)


def _read(path: Path) -> bytes:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{path}: readable by others (mode {stat.S_IMODE(mode):o}); make it 0600")
    data = path.read_bytes()
    if len(data) != KEY_BYTES:
        raise KeyFileError(f"{path}: {len(data)} bytes, not a {KEY_BYTES}-byte key")
    return data
