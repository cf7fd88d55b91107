"""The provider's signing keys (RFC 7517 section 5, found by OIDC Discovery ``jwks_uri``), kept fresh.

* A token's ``kid`` (RFC 7515 section 4.1.4) selects its key; a token without ``kid`` may use the
  set's key only when the set holds exactly one signing key, with or without a ``kid`` (RFC 7517
  section 4.5 makes ``kid`` optional; with two keys, guessing is refused).
* An unknown ``kid`` refetches the set (the provider rotated), and so does a signature that fails
  under a known ``kid`` (a new key published under an old ``kid``): :meth:`JwksCache.rotated`, after
  which the caller verifies once more. Both at most once every ``min_refresh`` seconds, so tokens
  with made-up ``kid`` values or forged signatures cannot turn the agent into a stream of JWKS
  requests. Concurrent lookups wait for one fetch.
* The set is used at most ``max_age`` seconds after it was fetched: a key the provider withdrew
  stops verifying within that bound. A set that cannot be fetched again is not used past it
  (fail closed: ``provider_unavailable``).
* Only signing keys (``use`` absent or ``sig``) are kept; a key's ``alg`` (section 4.4), when
  given, must be the token's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

from audit.events import Reason
from oauthclient import AsyncOAuthClient, JwksRequest, OAuthClientError

from .failures import AuthenticationFailed

MAX_KEYS = 32  # a provider publishes a handful (current, next, previous); more is refused, not held


@dataclass(frozen=True, slots=True, kw_only=True)
class SigningKey:
    kid: str
    alg: str | None  # the JWK's own ``alg``, if it names one
    key: Any = field(repr=False)
    published: str = field(repr=False)  # the JWK's public members as published: tells a replaced key


class JwksCache:
    def __init__(self, oauth: AsyncOAuthClient, min_refresh: float, max_age: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._oauth = oauth
        self._min_refresh = min_refresh
        self._max_age = max(max_age, min_refresh)
        self._clock = clock
        self._keys: list[SigningKey] = []
        self._fetched: float | None = None  # when the set was last asked for (success or not)
        self._valid_until = float("-inf")  # the fetched set is not used after this
        self._unreachable = ""  # why the last fetch failed, while within min_refresh of it
        self._lock = asyncio.Lock()

    async def key(self, kid: str, alg: str) -> SigningKey:
        """The key a token with header ``kid`` (``""``: none) and ``alg`` is verified with."""
        found = self._find(kid, alg) if self._clock() < self._valid_until else None
        if found is not None:
            return found
        async with self._lock:
            if self._clock() >= self._valid_until or self._find(kid, alg) is None:
                await self._refresh(kid)
        found = self._find(kid, alg)
        if found is None:
            what = f"signing key {kid[:64]!r}" if kid else "a token without 'kid' (the JWKS holds more than one key)"
            raise AuthenticationFailed(Reason.TOKEN_REJECTED, f"{what} is not in the provider's JWKS for {alg[:20]}")
        return found

    async def rotated(self, used: SigningKey, alg: str) -> bool:
        """After a signature failed under ``used``: refetch (rate limited) and say whether the key changed."""
        async with self._lock:
            current = self._find(used.kid, alg)
            if current is None or current.published == used.published:
                try:
                    await self._refresh(used.kid)
                except AuthenticationFailed:
                    return False  # refreshed recently, or unreachable: the signature failure stands
        current = self._find(used.kid, alg)
        return current is not None and current.published != used.published

    def _find(self, kid: str, alg: str) -> SigningKey | None:
        # One reading: two keys that could both be meant (same kid, or no kid and two keys) select none.
        candidates = [k for k in self._keys if k.kid == kid] if kid else self._keys
        if len(candidates) != 1 or (candidates[0].alg is not None and candidates[0].alg != alg):
            return None
        return candidates[0]

    async def _refresh(self, kid: str) -> None:
        now = self._clock()
        if self._fetched is not None and now - self._fetched < self._min_refresh:
            if self._unreachable:
                raise AuthenticationFailed(Reason.PROVIDER_UNAVAILABLE,
                                           f"signing keys unavailable: {self._unreachable}")
            if now >= self._valid_until:
                raise AuthenticationFailed(Reason.PROVIDER_UNAVAILABLE, "signing keys out of date")
            raise AuthenticationFailed(Reason.TOKEN_REJECTED, f"unknown signing key {kid[:64]!r} (JWKS refreshed "
                                       "recently)")
        self._fetched = now
        try:
            published = await self._oauth.run(JwksRequest())
        except OAuthClientError as error:
            self._unreachable = str(error)
            if now >= self._valid_until:
                self._keys = []  # past max_age: the old set is not used any more (fail closed)
            raise AuthenticationFailed(Reason.PROVIDER_UNAVAILABLE, f"signing keys unavailable: {error}") from None
        self._unreachable = ""
        self._keys = _signing_keys(published)
        self._valid_until = now + self._max_age


def _signing_keys(published: tuple[Mapping[str, Any], ...]) -> list[SigningKey]:
    keys: list[SigningKey] = []
    for entry in published[:MAX_KEYS]:
        if entry.get("use", "sig") != "sig":
            continue
        kid, alg = entry.get("kid", ""), entry.get("alg")
        if not isinstance(kid, str) or not (alg is None or isinstance(alg, str)):
            continue
        try:
            key = jwt.PyJWK(dict(entry)).key
        except (jwt.PyJWTError, ValueError, TypeError):
            continue
        public = {k: v for k, v in sorted(entry.items()) if k not in ("d", "p", "q", "dp", "dq", "qi")}
        keys.append(SigningKey(kid=kid, alg=alg, key=key, published=repr(public)))
    return keys
