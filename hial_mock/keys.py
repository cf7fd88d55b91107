"""Signing keys and the published JWKS (RFC 7517), with rotation.

The newest key signs; a retired key stays in the JWKS until every token it signed has expired
(retired time + the longest token lifetime), so verifiers that cache the JWKS never meet a token
they cannot check. Keys persist in ``state_dir/signing-keys.json`` (mode 0600) so tokens survive a
restart; with no state dir they live in memory only.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

ALGORITHM = "RS256"  # IUA (ITI-71) and RFC 9068 verifiers must support RS256


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    pem: bytes
    created: float
    retired: float | None = None

    def private_key(self) -> Any:
        return serialization.load_pem_private_key(self.pem, password=None)

    def public_jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(self.private_key().public_key()))
        jwk.update({"kid": self.kid, "use": "sig", "alg": ALGORITHM})
        return jwk


def _new_key() -> SigningKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    now = time.time()
    return SigningKey(kid=f"k{int(now * 1000):x}{os.urandom(3).hex()}", pem=pem, created=now)


class KeyStore:
    def __init__(self, state_dir: Path | None, keep_retired_for: float) -> None:
        self._lock = threading.Lock()
        self._path = state_dir / "signing-keys.json" if state_dir else None
        self._keep = keep_retired_for
        self._keys: list[SigningKey] = self._load()
        if not self._keys:
            self._keys = [_new_key()]
            self._save()
        self._cached_private: tuple[str, Any] | None = None
        self._public: dict[str, Any] = {}
        self._jwks: tuple[tuple[str, ...], dict[str, Any]] | None = None

    def _load(self) -> list[SigningKey]:
        if self._path is None or not self._path.exists():
            return []
        data = json.loads(self._path.read_text())
        return [SigningKey(kid=k["kid"], pem=k["pem"].encode(), created=k["created"], retired=k.get("retired"))
                for k in data["keys"]]

    def _save(self) -> None:
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"keys": [{"kid": k.kid, "pem": k.pem.decode(), "created": k.created, "retired": k.retired}
                                for k in self._keys]}, out)
        os.replace(tmp, self._path)

    @property
    def current(self) -> SigningKey:
        return self._keys[-1]

    def signing(self) -> tuple[str, Any]:
        """(kid, private key) of the key that signs now."""
        key = self.current
        cached = self._cached_private
        if cached is None or cached[0] != key.kid:
            cached = (key.kid, key.private_key())
            self._cached_private = cached
        return cached

    def rotate(self) -> SigningKey:
        """Start signing with a new key; the old one is kept for verification (see module doc)."""
        with self._lock:
            now = time.time()
            self._keys = [k if k.retired else SigningKey(k.kid, k.pem, k.created, now) for k in self._keys]
            self._keys.append(_new_key())
            self._prune(now)
            self._save()
            return self.current

    def _prune(self, now: float) -> None:
        self._keys = [k for k in self._keys if k.retired is None or now - k.retired < self._keep]

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            self._prune(time.time())
            kids = tuple(k.kid for k in self._keys)
            if self._jwks is None or self._jwks[0] != kids:
                self._jwks = (kids, {"keys": [k.public_jwk() for k in self._keys]})
            return self._jwks[1]

    def public_key(self, kid: str) -> Any:
        """The public key of ``kid`` if it is still published. Cached: loading a PEM private key
        validates the RSA key, which costs tens of milliseconds per call."""
        cached = self._public.get(kid)
        if cached is not None and any(k.kid == kid for k in self._keys):
            return cached
        for key in self._keys:
            if key.kid == kid:
                public = key.private_key().public_key()
                self._public[kid] = public
                return public
        return None
