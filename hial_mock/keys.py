"""Signing keys, the published JWKS (RFC 7517) with rotation, and checks of our own access tokens.

The newest key signs; a retired key stays in the JWKS until every token it signed has expired
(retired time + the longest token lifetime), so verifiers that cache the JWKS never meet a token
they cannot check. Keys persist in ``state_dir/signing-keys.json`` (mode 0600) so tokens survive a
restart; with no state dir they live in memory only. JOSE is joserfc's, the library authlib signs with.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import Key, KeySet, RSAKey
from joserfc.jwt import JWTClaimsRegistry

ALGORITHM = "RS256"  # IUA (ITI-71) and RFC 9068 verifiers must support RS256
ACCESS_TOKEN_TYPE = "at+jwt"  # RFC 9068 section 2.1
KEY_BITS = 2048


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    pem: bytes
    created: float
    retired: float | None = None

    def private_key(self) -> RSAKey:
        return RSAKey.import_key(self.pem, parameters={"kid": self.kid, "use": "sig", "alg": ALGORITHM})


def _new_key() -> SigningKey:
    now = time.time()
    kid = f"k{int(now * 1000):x}{os.urandom(3).hex()}"
    key = RSAKey.generate_key(KEY_BITS, parameters={"kid": kid}, private=True)
    return SigningKey(kid=kid, pem=key.as_pem(private=True), created=now)


class KeyStore:
    def __init__(self, state_dir: Path | None, keep_retired_for: float) -> None:
        self._lock = threading.Lock()
        self._path = state_dir / "signing-keys.json" if state_dir else None
        self._keep = keep_retired_for
        self._keys: list[SigningKey] = self._load()
        if not self._keys:
            self._keys = [_new_key()]
            self._save()
        # Loading a PEM validates the RSA key (tens of milliseconds): each key is loaded once.
        self._loaded: dict[str, RSAKey] = {}
        self._jwks: tuple[tuple[str, ...], dict[str, Any], KeySet] | None = None

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

    def _key(self, key: SigningKey) -> RSAKey:
        loaded = self._loaded.get(key.kid)
        if loaded is None:
            loaded = self._loaded[key.kid] = key.private_key()
        return loaded

    def signing_key(self) -> RSAKey:
        """The private key that signs now, carrying its ``kid``."""
        with self._lock:
            return self._key(self._keys[-1])

    def rotate(self) -> str:
        """Start signing with a new key; the old one is kept for verification (see module doc). Its kid."""
        with self._lock:
            now = time.time()
            self._keys = [k if k.retired else SigningKey(k.kid, k.pem, k.created, now) for k in self._keys]
            self._keys.append(_new_key())
            self._prune(now)
            self._save()
            return self._keys[-1].kid

    def _prune(self, now: float) -> None:
        self._keys = [k for k in self._keys if k.retired is None or now - k.retired < self._keep]
        kids = {k.kid for k in self._keys}
        self._loaded = {kid: key for kid, key in self._loaded.items() if kid in kids}

    def _published(self) -> tuple[dict[str, Any], KeySet]:
        with self._lock:
            self._prune(time.time())
            kids = tuple(k.kid for k in self._keys)
            if self._jwks is None or self._jwks[0] != kids:
                public: list[Key] = [RSAKey.import_key(self._key(k).as_dict(private=False)) for k in self._keys]
                self._jwks = (kids, {"keys": [key.as_dict(private=False) for key in public]}, KeySet(public))
            return self._jwks[1], self._jwks[2]

    def jwks(self) -> dict[str, Any]:
        """RFC 7517 section 5: every key a token we issued may still be signed with, public parts only."""
        return self._published()[0]

    def public_keys(self) -> KeySet:
        return self._published()[1]


class Issuer:
    """The issuer identifier with its keys: signs (through authlib) and reads back our own access tokens."""

    def __init__(self, issuer: str, keys: KeyStore) -> None:
        self._issuer = issuer
        self.keys = keys

    @property
    def issuer(self) -> str:
        return self._issuer

    def signing_key(self) -> RSAKey:
        return self.keys.signing_key()

    def read_access_token(self, token: str) -> dict[str, Any] | None:
        """RFC 9068 section 4, for our own resource endpoints: signature by a published key, RS256 only,
        ``typ`` at+jwt (an ID token is not an access token), our ``iss``, not expired."""
        try:
            decoded = jwt.decode(token, self.keys.public_keys(), algorithms=[ALGORITHM])
            if decoded.header.get("typ") != ACCESS_TOKEN_TYPE:
                return None
            registry = JWTClaimsRegistry(iss={"essential": True, "value": self._issuer}, exp={"essential": True},
                                         iat={"essential": True}, jti={"essential": True},
                                         sub={"essential": True})
            registry.validate(decoded.claims)
        except (JoseError, ValueError):
            return None
        return dict(decoded.claims)
