"""Foreign issuers the HIAL's PDP trusts for its callers (issue 14 item 1): a site whose identity
provider is not the HIAL still uses the HIAL as its AuthZEN PDP.

``[foreign.NAME]`` of the HIAL's file names an OpenID provider; a caller of the PDP may then present
that provider's access token instead of one the HIAL issued. It is accepted as RFC 9068 section 4
asks of a resource server: ``typ`` ``at+jwt``, a signature by a key of the issuer's JWKS (found by
OpenID Connect Discovery 1.0, section 4.3 issuer check), an algorithm listed here, ``iss`` exactly,
``aud`` naming this PDP, ``exp`` (with ``leeway``); then the caller must be one of ``clients`` (the
``client_id`` claim, RFC 9068 section 2.2) and hold ``scope`` (``scope`` or ``scp``). Which issuer
verifies is chosen by the unverified ``iss``; the signature then decides.

The JWKS is fetched on first use and again (at most once every ``jwks_min_refresh`` seconds, so
made-up ``kid`` values cannot make the HIAL a stream of requests) for an unknown ``kid`` or a failed
signature (a new key under an old ``kid``). A set with a single key is usable by tokens without ``kid``.
Every failure is "no caller" (HTTP 401 at the PDP): fail closed.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import Key, KeySet
from joserfc.jwt import JWTClaimsRegistry
from pydantic import Field, field_validator

from oauthclient import AuthMethod, ClientAuth, JwksRequest, OAuthClient, OAuthClientError, SyncExecutor, Timeouts
from oauthclient import TlsFiles as HttpTls
from tomlconf.schema import Issuer, PositiveFloat, RelPath, Schema, Strings, derived

log = logging.getLogger("hial_mock")

ACCESS_TOKEN_TYPES = ("at+jwt", "application/at+jwt")  # RFC 9068 section 4
MAX_TOKEN = 16 * 1024
MAX_KEYS = 32  # keys kept from one JWKS: more is no rotation, it is an attack on our memory


class ForeignIssuer(Schema):
    """``[foreign.NAME]``: an OpenID provider whose access tokens the PDP accepts from ``clients``."""

    name: str = derived("")  # the NAME
    issuer: Issuer
    audience: str  # the aud its tokens for this PDP carry (its resource indicator, RFC 8707)
    clients: Strings  # client_id values that may ask the PDP
    scope: str = "authzen:evaluate"  # required in scope/scp; "" requires none
    algorithms: Strings = ("RS256", "PS256", "ES256", "EdDSA")
    ca_file: RelPath | None = None
    timeout: PositiveFloat = 5.0
    jwks_min_refresh: PositiveFloat = 10.0
    leeway: float = Field(default=30.0, ge=0, le=300)

    @field_validator("clients")
    @classmethod
    def _some(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or not all(value):
            raise ValueError("name at least one client_id (any client of the provider is not a PDP caller)")
        return value

    @field_validator("algorithms")
    @classmethod
    def _asymmetric(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or any(a.lower() == "none" or a.startswith("HS") for a in value):
            raise ValueError("only asymmetric algorithms (RS*, PS*, ES*, EdDSA)")
        return value


@dataclass(frozen=True, slots=True, kw_only=True)
class ForeignCaller:
    issuer: str  # the [foreign.NAME]
    client_id: str


Fetch = Callable[[ForeignIssuer], tuple[Mapping[str, Any], ...]]


def fetch_jwks(issuer: ForeignIssuer, transport: httpx.BaseTransport | None = None) -> tuple[Mapping[str, Any], ...]:
    """Discovery, then the JWKS: one executor per fetch, since Flask serves each request on a thread."""
    with SyncExecutor(tls=HttpTls(ca_file=issuer.ca_file), timeouts=Timeouts.within(issuer.timeout),
                      transport=transport) as http:
        client = OAuthClient(issuer.issuer, ClientAuth(client_id="hial-pdp", method=AuthMethod.NONE), http)
        return client.run(JwksRequest())


class _Keys:
    """One issuer's keys, refreshed at most once every ``jwks_min_refresh`` seconds."""

    def __init__(self, issuer: ForeignIssuer, fetch: Fetch, clock: Callable[[], float]) -> None:
        self.issuer = issuer
        self._fetch = fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: tuple[Key, ...] = ()
        self._fetched: float | None = None

    def current(self) -> tuple[Key, ...]:
        if self._fetched is None:
            self.refresh()
        return self._keys

    def refresh(self) -> bool:
        """Fetch again unless fetched within the bound; True when a new set was read."""
        with self._lock:
            now = self._clock()
            if self._fetched is not None and now - self._fetched < self.issuer.jwks_min_refresh:
                return False
            self._fetched = now
            try:
                published = self._fetch(self.issuer)
            except OAuthClientError as error:
                log.warning("foreign issuer %s: signing keys unavailable: %s", self.issuer.name, error)
                return False
            keys = []
            for entry in published[:MAX_KEYS]:
                if entry.get("use", "sig") != "sig":
                    continue
                try:
                    keys.append(KeySet.import_key_set({"keys": [dict(entry)]}).keys[0])
                except (JoseError, ValueError, TypeError, KeyError):
                    continue
            self._keys = tuple(keys)  # a withdrawn key goes with the set that no longer has it
            return True


def _pick(keys: tuple[Key, ...], kid: Any) -> Key | None:
    if isinstance(kid, str):
        return next((k for k in keys if k.kid == kid), None)
    return keys[0] if len(keys) == 1 else None  # RFC 7515 4.1.4: kid is optional; one key is unambiguous


def _unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Header and claims, only to choose the verifier; nothing here is trusted."""
    parts = token.split(".")
    if len(token) > MAX_TOKEN or len(parts) != 3:
        return None
    try:
        header, claims = (json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))) for p in parts[:2])
    except ValueError:
        return None
    return (header, claims) if isinstance(header, dict) and isinstance(claims, dict) else None


class ForeignTokens:
    """The access tokens of every ``[foreign.NAME]``, checked for a PDP caller."""

    def __init__(self, issuers: Mapping[str, ForeignIssuer], fetch: Fetch = fetch_jwks,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._by_iss = {i.issuer: _Keys(i, fetch, clock) for i in issuers.values()}

    def caller(self, token: str) -> ForeignCaller | None:
        seen = _unverified(token)
        if seen is None:
            return None
        header, unverified = seen
        keys = self._by_iss.get(str(unverified.get("iss", "")))
        if keys is None or header.get("typ") not in ACCESS_TOKEN_TYPES:
            return None
        issuer = keys.issuer
        if header.get("alg") not in issuer.algorithms:
            return None
        for attempt in (1, 2):
            key = _pick(keys.current(), header.get("kid"))
            try:
                if key is None:
                    raise BadSignatureError()
                claims = jwt.decode(token, key, algorithms=list(issuer.algorithms)).claims
                break
            except BadSignatureError:  # unknown kid, or a new key under an old kid: one refresh, once
                if attempt == 2 or not keys.refresh():
                    return None
            except (JoseError, ValueError):
                return None
        return _authorized(issuer, claims)


def _authorized(issuer: ForeignIssuer, claims: Mapping[str, Any]) -> ForeignCaller | None:
    try:
        JWTClaimsRegistry(leeway=int(issuer.leeway), iss={"essential": True, "value": issuer.issuer},
                          exp={"essential": True}, aud={"essential": True, "value": issuer.audience},
                          client_id={"essential": True}).validate(dict(claims))
    except (JoseError, ValueError):
        return None
    client = claims.get("client_id")
    if client not in issuer.clients:
        return None
    raw = claims.get("scope", claims.get("scp", ""))
    scopes = raw.split() if isinstance(raw, str) else [s for s in raw if isinstance(s, str)] \
        if isinstance(raw, list) else []
    if issuer.scope and issuer.scope not in scopes:
        return None
    return ForeignCaller(issuer=issuer.name, client_id=str(client))
