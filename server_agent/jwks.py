"""The provider's signing keys by ``kid`` (RFC 7517 section 5, found by OIDC Discovery ``jwks_uri``).

An unknown ``kid`` refetches the set (the provider rotated its keys), at most once every
``min_refresh`` seconds, so tokens with made-up ``kid`` values cannot turn the agent into a
stream of JWKS requests. Concurrent lookups wait for one fetch. Only signing keys (``use`` absent
or ``sig``) with a ``kid`` are kept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import jwt

from audit.events import Reason
from oauthclient import AsyncOAuthClient, JwksRequest, OAuthClientError

from .failures import AuthenticationFailed


class JwksCache:
    def __init__(self, oauth: AsyncOAuthClient, min_refresh: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._oauth = oauth
        self._min_refresh = min_refresh
        self._clock = clock
        self._keys: dict[str, Any] = {}
        self._fetched: float | None = None
        self._unreachable = ""  # why the last fetch failed, while within min_refresh of it
        self._lock: asyncio.Lock | None = None

    async def key(self, kid: str) -> Any:
        if kid in self._keys:
            return self._keys[kid]
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if kid not in self._keys:
                await self._refresh(kid)
        if kid not in self._keys:
            raise AuthenticationFailed(Reason.TOKEN_REJECTED, f"signing key {kid[:64]!r} is not in the provider's JWKS")
        return self._keys[kid]

    async def _refresh(self, kid: str) -> None:
        now = self._clock()
        if self._fetched is not None and now - self._fetched < self._min_refresh:
            if self._unreachable:
                raise AuthenticationFailed(Reason.PROVIDER_UNAVAILABLE,
                                           f"signing keys unavailable: {self._unreachable}")
            raise AuthenticationFailed(Reason.TOKEN_REJECTED, f"unknown signing key {kid[:64]!r} (JWKS refreshed "
                                       "recently)")
        self._fetched = now
        try:
            published = await self._oauth.run(JwksRequest())
        except OAuthClientError as error:
            self._unreachable = str(error)
            raise AuthenticationFailed(Reason.PROVIDER_UNAVAILABLE, f"signing keys unavailable: {error}") from None
        self._unreachable = ""
        keys: dict[str, Any] = {}
        for entry in published:
            if entry.get("use", "sig") != "sig" or not isinstance(entry.get("kid"), str):
                continue
            try:
                keys[entry["kid"]] = jwt.PyJWK(dict(entry)).key
            except jwt.PyJWTError:
                continue
        self._keys = keys
