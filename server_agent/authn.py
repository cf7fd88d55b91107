"""Authentication of the User Identity an association carries (PS3.7 D.3.3.7), with OpenID Connect.

* Type 5 (JWT): verified locally (RFC 9068 section 4): signature with a key from the provider's JWKS
  found by discovery, ``iss``, ``aud``, ``exp``, ``nbf``, an algorithm allow-list (never ``none`` or
  a shared secret), ``typ``; an unknown ``kid`` refreshes the JWKS at most every
  ``jwks_min_refresh`` seconds. Optionally RFC 7662 introspection for revocation.
* Type 2 (username + passcode): the OIDC password grant at the provider with the agent's own client,
  then the ID token (``aud`` = our client) and the access token are verified as above.
* Type 1 (username): only if configured, and only from a workstation agent whose certificate is listed.
* Types 3 and 4 (Kerberos, SAML): refused, no verifier is configured.

HTTP runs in worker threads (the event loop never waits on it) with named timeouts; any failure to
reach the provider is a failed authentication with that reason (fail closed).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
import requests

from dicomwire.identity import UserIdentity, UserIdentityType

from .config import IdentityConfig

log = logging.getLogger("server_agent.authn")


@dataclass(frozen=True, slots=True, kw_only=True)
class Subject:
    """Who is asking: a verified user, or a node (device without user identity)."""

    kind: str  # "user" | "node"
    id: str
    username: str
    roles: tuple[str, ...] = ()
    organization: str = ""
    scopes: frozenset[str] = frozenset()
    expires_at: float = float("inf")
    client_id: str = ""
    identity_type: int | None = None
    purpose_of_use: str = "TREAT"
    token: str = field(default="", repr=False)  # kept for introspection; never logged

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "sub": self.id, "username": self.username, "roles": list(self.roles),
                "organization": self.organization}


class AuthenticationFailed(Exception):
    """The identity was not accepted; the message says why (logged, never shown with secrets)."""


class JwksCache:
    """The provider's signing keys by ``kid``, refreshed on an unknown ``kid`` at a bounded rate."""

    def __init__(self, fetch: Any, min_refresh: float) -> None:
        self._fetch = fetch
        self._min_refresh = min_refresh
        self._keys: dict[str, Any] = {}
        self._fetched = 0.0
        self._lock = threading.Lock()

    def key(self, kid: str) -> Any:
        with self._lock:
            if kid in self._keys:
                return self._keys[kid]
            if time.monotonic() - self._fetched < self._min_refresh and self._fetched:
                raise AuthenticationFailed(f"unknown signing key {kid!r} (JWKS refreshed recently)")
            self._fetched = time.monotonic()
            jwks = self._fetch()
            self._keys = {}
            for entry in jwks.get("keys", []):
                if entry.get("use", "sig") != "sig" or "kid" not in entry:
                    continue
                try:
                    self._keys[entry["kid"]] = jwt.PyJWK(entry).key
                except jwt.PyJWTError:
                    continue
            if kid not in self._keys:
                raise AuthenticationFailed(f"signing key {kid!r} is not in the provider's JWKS")
            return self._keys[kid]


class Authenticator:
    def __init__(self, config: IdentityConfig) -> None:
        self.config = config
        self.http = requests.Session()
        if config.ca_file is not None:
            self.http.verify = str(config.ca_file)
        self._metadata: dict[str, Any] | None = None
        self._meta_lock = threading.Lock()
        self.jwks = JwksCache(self._fetch_jwks, config.jwks_min_refresh)
        self._introspected: dict[str, tuple[float, bool]] = {}

    # ---- provider metadata ------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        with self._meta_lock:
            if self._metadata is None:
                url = f"{self.config.issuer}/.well-known/openid-configuration"
                try:
                    response = self.http.get(url, timeout=self.config.timeout)
                    response.raise_for_status()
                    data = response.json()
                except (requests.RequestException, ValueError) as error:
                    raise AuthenticationFailed(f"identity provider unreachable ({url}): {error}") from None
                if data.get("issuer") != self.config.issuer:
                    raise AuthenticationFailed(f"discovery issuer {data.get('issuer')!r} != {self.config.issuer!r}")
                self._metadata = data
            return self._metadata

    def _fetch_jwks(self) -> dict[str, Any]:
        try:
            response = self.http.get(self.metadata()["jwks_uri"], timeout=self.config.timeout)
            response.raise_for_status()
            data: dict[str, Any] = response.json()
            return data
        except (requests.RequestException, ValueError) as error:
            raise AuthenticationFailed(f"JWKS unreachable: {error}") from None

    # ---- verification -----------------------------------------------------------------------------------
    def verify_jwt(self, token: str, *, audience: str | None = None, access_token: bool = True) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise AuthenticationFailed(f"not a JWT: {error}") from None
        alg = header.get("alg")
        if alg not in self.config.algorithms:
            raise AuthenticationFailed(f"algorithm {alg!r} is not allowed")
        if access_token and header.get("typ") not in self.config.token_types:
            raise AuthenticationFailed(f"token type {header.get('typ')!r} is not an access token")
        key = self.jwks.key(str(header.get("kid", "")))
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=list(self.config.algorithms), audience=audience or self.config.audience,
                issuer=self.config.issuer, leeway=self.config.leeway,
                options={"require": ["exp", "iat", "iss", "sub", "aud"]})
        except jwt.PyJWTError as error:
            raise AuthenticationFailed(f"token rejected: {error}") from None
        return claims

    def introspect_active(self, token: str) -> bool:
        """RFC 7662; answers cached for ``introspect_cache`` seconds (bounded)."""
        now = time.monotonic()
        cached = self._introspected.get(token)
        if cached is not None and now - cached[0] < self.config.introspect_cache:
            return cached[1]
        endpoint = self.metadata().get("introspection_endpoint")
        if not endpoint:
            raise AuthenticationFailed("the provider has no introspection endpoint")
        try:
            response = self.http.post(endpoint, data={"token": token, "token_type_hint": "access_token"},
                                      auth=(self.config.client_id, self.config.client_secret),
                                      timeout=self.config.timeout)
            active = bool(response.json().get("active"))
        except (requests.RequestException, ValueError) as error:
            raise AuthenticationFailed(f"introspection unreachable: {error}") from None
        if len(self._introspected) > 10000:
            self._introspected.clear()
        self._introspected[token] = (now, active)
        return active

    def _subject(self, claims: dict[str, Any], token: str, identity_type: int) -> Subject:
        purpose = claims.get("purpose_of_use", "TREAT")
        if isinstance(purpose, dict):
            purpose = purpose.get("code", "TREAT")
        roles = claims.get("roles", [])
        return Subject(kind="user", id=str(claims["sub"]), username=str(claims.get("preferred_username") or
                                                                         claims["sub"]),
                       roles=tuple(r for r in roles if isinstance(r, str)) if isinstance(roles, list) else (),
                       organization=str(claims.get("organization", "")),
                       scopes=frozenset(str(claims.get("scope", "")).split()), expires_at=float(claims["exp"]),
                       client_id=str(claims.get("client_id", "")), identity_type=identity_type,
                       purpose_of_use=str(purpose), token=token)

    def _authenticate(self, identity: UserIdentity, certificate_names: list[str]) -> Subject:
        kind = identity.type
        if kind == UserIdentityType.JWT:
            token = identity.primary.decode("ascii", "replace").strip()
            claims = self.verify_jwt(token)
            if self.config.introspect and not self.introspect_active(token):
                raise AuthenticationFailed("the token is not active (revoked)")
            return self._subject(claims, token, kind)
        if kind == UserIdentityType.USERNAME_AND_PASSCODE:
            return self._password(identity.primary.decode("utf-8", "replace"), identity.secondary.decode("utf-8",
                                                                                                          "replace"))
        if kind == UserIdentityType.USERNAME:
            if not self.config.username_only:
                raise AuthenticationFailed("identity type 1 (username only) is not accepted here")
            if not set(certificate_names) & set(self.config.username_only_workstations):
                raise AuthenticationFailed("identity type 1 only from a registered workstation certificate")
            name = identity.primary.decode("utf-8", "replace")
            return Subject(kind="user", id=name, username=name, identity_type=kind)
        if kind in (UserIdentityType.KERBEROS, UserIdentityType.SAML):
            raise AuthenticationFailed(f"identity type {kind} (Kerberos/SAML) has no verifier configured")
        raise AuthenticationFailed(f"unknown identity type {kind}")

    def _password(self, username: str, password: str) -> Subject:
        """The original paper's flow: a password grant with our client, then both tokens verified."""
        endpoint = self.metadata()["token_endpoint"]
        try:
            response = self.http.post(endpoint, data={"grant_type": "password", "username": username,
                                                      "password": password, "scope": "openid profile "
                                                      "user/ImagingStudy.rs user/ImagingStudy.c"},
                                      auth=(self.config.client_id, self.config.client_secret),
                                      timeout=self.config.timeout)
            body = response.json()
        except (requests.RequestException, ValueError) as error:
            raise AuthenticationFailed(f"identity provider unreachable: {error}") from None
        if response.status_code != 200:
            raise AuthenticationFailed(f"password grant refused: {body.get('error_description', body.get('error'))}")
        if "id_token" not in body:
            raise AuthenticationFailed("the provider returned no ID token")
        id_claims = self.verify_jwt(body["id_token"], audience=self.config.client_id, access_token=False)
        claims = self.verify_jwt(body["access_token"])
        if id_claims["sub"] != claims["sub"]:
            raise AuthenticationFailed("ID token and access token name different subjects")
        return self._subject(claims, body["access_token"], UserIdentityType.USERNAME_AND_PASSCODE)

    async def authenticate(self, identity: UserIdentity, certificate_names: list[str]) -> Subject:
        return await asyncio.to_thread(self._authenticate, identity, certificate_names)

    async def still_valid(self, subject: Subject) -> str | None:
        """Why ``subject`` may no longer act (expired, revoked), or None."""
        if subject.kind != "user":
            return None
        if time.time() >= subject.expires_at:
            return "the user's token has expired"
        if self.config.introspect and subject.token:
            try:
                active = await asyncio.to_thread(self.introspect_active, subject.token)
            except AuthenticationFailed as error:
                return f"token status unknown ({error})"
            if not active:
                return "the user's token was revoked"
        return None
