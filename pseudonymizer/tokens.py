"""Who is calling: an RFC 6750 bearer token, an RFC 9068 JWT access token of the HIAL, verified here.

Checks (RFC 9068 section 4, RFC 8725): the ``typ`` header (``at+jwt``), an algorithm on the allow-list
(never ``none`` or a shared secret), the signature with the provider's key named by ``kid`` (its JWKS,
found by OpenID Connect Discovery), ``iss``, ``aud`` (this service's own audience, so a token made
for the server agent or the PACS is refused), ``exp``/``iat`` with a small leeway. A client's own
token (client credentials, RFC 9068 section 2.2: ``sub`` is the client id, no user) is a *client*
caller; any other is a *user* caller, with the roles the HIAL put in it.

An unknown ``kid`` refetches the JWKS at most every ``min_refresh`` seconds, so made-up ``kid`` values
cannot turn the service into a stream of requests to the HIAL. The HIAL unreachable: 503, never a
guess (fail closed).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import jwt
from pydantic import Field, field_validator

from oauthclient import ClientAuth, JwksRequest, OAuthClient, OAuthClientError, SyncExecutor, Timeouts, TlsFiles
from oauthclient.clientauth import AuthMethod
from tomlconf.schema import Issuer, PositiveFloat, RelPath, Schema, Strings

TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})


class AuthError(Exception):
    """A refused call, as RFC 6750 section 3.1 names it: ``status`` and ``error`` for the answer."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


def unauthorized(description: str) -> AuthError:
    return AuthError(401, "invalid_token", description)


def forbidden(description: str) -> AuthError:
    return AuthError(403, "insufficient_scope", description)


@dataclass(frozen=True, slots=True, kw_only=True)
class Caller:
    sub: str
    client_id: str
    username: str = ""
    roles: tuple[str, ...] = ()
    scopes: frozenset[str] = frozenset()
    is_user: bool = True

    def describe(self) -> dict[str, Any]:
        return {"sub": self.sub, "client_id": self.client_id, "username": self.username, "roles": list(self.roles),
                "kind": "user" if self.is_user else "client"}


class IdentitySettings(Schema):
    """``[identity]``: the provider whose tokens are accepted, and how they are checked."""

    issuer: Issuer
    audience: str = "pseudonymizer"  # this service's own, in the tokens it accepts
    algorithms: Strings = ("RS256", "ES256")
    leeway: float = Field(default=30.0, ge=0, le=300)
    min_refresh: PositiveFloat = 10.0  # seconds between JWKS fetches for unknown kids
    timeout: PositiveFloat = 5.0
    ca_file: RelPath | None = Field(default=None, alias="ca")  # the provider's CA, for an https issuer

    @field_validator("algorithms")
    @classmethod
    def _asymmetric(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(a == "none" or a.startswith("HS") for a in value):
            raise ValueError("only asymmetric algorithms may verify tokens")
        return value


class KeySource(Protocol):
    def key(self, kid: str) -> Any: ...


class ProviderKeys:
    """The provider's signing keys by ``kid``, fetched on demand (thread-safe, rate-limited)."""

    def __init__(self, settings: IdentitySettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, Any] = {}
        self._fetched: float | None = None

    def key(self, kid: str) -> Any:
        with self._lock:
            if kid not in self._keys:
                self._refresh(kid)
            return self._keys[kid]

    def _refresh(self, kid: str) -> None:
        now = self._clock()
        if self._fetched is not None and now - self._fetched < self.settings.min_refresh:
            raise unauthorized(f"unknown signing key {kid[:64]!r}")
        self._fetched = now
        tls = TlsFiles(ca_file=self.settings.ca_file)
        try:  # an executor per fetch: it belongs to the thread that made it, and fetches are rare
            with SyncExecutor(tls=tls, timeouts=Timeouts.within(self.settings.timeout)) as executor:
                anonymous = ClientAuth(client_id="pseudonymizer", method=AuthMethod.NONE)  # discovery, JWKS: public
                client = OAuthClient(self.settings.issuer, anonymous, executor)
                published = client.run(JwksRequest())
        except OAuthClientError as error:
            raise AuthError(503, "temporarily_unavailable", f"the identity provider's keys: {error}") from None
        keys: dict[str, Any] = {}
        for entry in published:
            if entry.get("use", "sig") == "sig" and isinstance(entry.get("kid"), str):
                try:
                    keys[entry["kid"]] = jwt.PyJWK(dict(entry)).key
                except jwt.PyJWTError:
                    continue
        self._keys = keys
        if kid not in keys:
            raise unauthorized(f"signing key {kid[:64]!r} is not in the provider's JWKS")


class Verifier:
    def __init__(self, settings: IdentitySettings, keys: KeySource) -> None:
        self.settings = settings
        self.keys = keys

    def caller(self, authorization: str | None) -> Caller:
        """The verified caller of a request's ``Authorization`` header (RFC 6750 section 2.1)."""
        if not authorization or not authorization.startswith("Bearer ") or len(authorization) > 16384:
            raise unauthorized("a bearer token is required")
        token = authorization[7:].strip()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise unauthorized("not a JWT") from None
        if header.get("alg") not in self.settings.algorithms:
            raise unauthorized(f"algorithm {str(header.get('alg'))[:20]!r} is not allowed")
        if str(header.get("typ", "")).lower() not in TOKEN_TYPES:
            raise unauthorized("not an access token (RFC 9068 section 2.1 typ)")
        key = self.keys.key(str(header.get("kid", "")))
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=list(self.settings.algorithms), audience=self.settings.audience,
                issuer=self.settings.issuer, leeway=self.settings.leeway,
                options={"require": ["exp", "iat", "iss", "sub", "aud"]})
        except jwt.PyJWTError as error:
            raise unauthorized(f"token rejected: {str(error)[:100]}") from None
        return _caller(claims)


def _caller(claims: dict[str, Any]) -> Caller:
    sub = str(claims["sub"])
    client = str(claims.get("client_id") or claims.get("azp") or "")
    roles = claims.get("roles")
    return Caller(sub=sub, client_id=client, username=str(claims.get("preferred_username") or ""),
                  roles=tuple(r for r in roles if isinstance(r, str)) if isinstance(roles, list) else (),
                  scopes=frozenset(str(claims.get("scope", "")).split()),
                  is_user=not (client and sub in (client, f"{client}@clients")))
