"""Authentication of the User Identity an association carries (PS3.7 D.3.3.7), with OpenID Connect.

* Type 5 (JWT): verified locally (RFC 9068 section 4): signature with a key from the provider's JWKS
  found by discovery, ``iss``, ``aud``, ``exp``, ``nbf``, an algorithm allow-list (never ``none`` or
  a shared secret), ``typ`` (``at+jwt`` unless ``[identity] token_types`` lists more); keys and
  their rotation in :mod:`.jwks` (a signature failing under a known ``kid`` gets one rate-limited
  refresh and one retry). Who and what the token says is read where ``[identity.claims]`` says
  (:mod:`.claims`). A client's own token (client credentials: no person behind it, RFC 9068
  section 2.2) is ``not_a_user`` unless that client is a configured node. Optionally RFC 7662
  introspection for revocation (:mod:`.introspection`).
* Type 2 (username + passcode): the OIDC password grant at the provider with the agent's own client,
  the peer's address sent as RFC 7239 ``Forwarded``, then the ID token (``aud`` = our client) and the
  access token verified as above; failures throttled per source (:mod:`.throttle`).
* Type 1 (username): only if configured, and only from a workstation agent whose certificate is listed.
* Types 3 and 4 (Kerberos, SAML): refused, no verifier is configured.

All HTTP runs on the agent's event loop (:mod:`oauthclient`, named timeouts); any failure to reach the
provider is a failed authentication with that reason (fail closed). Every failure is an
:class:`AuthenticationFailed` with a :class:`audit.events.Reason` and prose that holds no secret.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt

from audit.events import Reason
from dicomwire.identity import UserIdentity, UserIdentityType
from oauthclient import AsyncOAuthClient, OAuthClientError, OAuthError, PasswordGrant

from .claims import read_claims
from .config import IdentityConfig
from .exchanged import exchanged
from .failures import AuthenticationFailed
from .introspection import IntrospectionCache
from .jwks import JwksCache
from .shared import SharedState, SharedUnavailable
from .throttle import LoginThrottle

log = logging.getLogger("server_agent.throttle")
PASSWORD_SCOPE = "openid profile user/ImagingStudy.rs user/ImagingStudy.c"
# Markers of a client acting for itself that providers put in their tokens (Auth0 ``gty``, Entra ID
# ``idtyp``); the RFC 9068 section 2.2 form, ``sub`` = the client's id, is checked as well.
_CLIENT_GRANTS = frozenset({"client-credentials", "client_credentials"})
# Password grant answers that mean "these credentials were wrong": counted against the source.
_REFUSED_LOGIN = frozenset({"invalid_grant", "invalid_request"})


@dataclass(frozen=True, slots=True, kw_only=True)
class NoLongerValid:
    """Why a subject accepted at association time may not make its next request: the refusal's reason
    code (``token_invalid`` expired, ``token_inactive`` revoked, ``introspection_failed``) and prose."""

    reason: Reason
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Subject:
    """Who is asking: a verified user, or a node (device without user identity).

    ``expires_at`` is when the agent stops accepting the token: its ``exp`` plus the configured
    leeway, the same instant at association time and for each request (RFC 7519 section 4.1.4).
    """

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
    break_glass_reason: str = ""  # the user's words with purpose of use BTG (RFC 8693 exchange at the HIAL)
    acting_client: str = ""  # RFC 8693 section 4.1 ``act`` ``sub``: a client acting for this user
    token: str = field(default="", repr=False)  # kept for introspection; never logged

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "sub": self.id, "username": self.username, "roles": list(self.roles),
                "organization": self.organization}


def acting_client(claims: dict[str, Any], client: str, *, marked: bool = False) -> str | None:
    """The client id, if this token is a client's own (no person behind it), else None.

    ``client``: the token's client as ``[identity.claims] client_id`` finds it (Okta ``cid``);
    ``marked``: a claim of ``[identity.claims] client_token`` is present (Keycloak service accounts).
    """
    sub = claims.get("sub")
    markers = {str(claims.get(name)) for name in ("gty", "grant_type")}
    if marked or markers & _CLIENT_GRANTS or claims.get("idtyp") == "app":
        return str(client or sub)
    if client and sub in (client, f"{client}@clients"):
        return client
    return None


class Authenticator:
    def __init__(self, config: IdentityConfig, oauth: AsyncOAuthClient, *, throttle: LoginThrottle | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.oauth = oauth
        self.throttle = throttle or LoginThrottle(config.throttle)
        # The failed-login counts every worker and instance shares (server_agent.shared); None: this
        # process's own throttle above.
        self.logins: SharedState | None = None
        self._clock = clock
        self.jwks = JwksCache(oauth, config.jwks_min_refresh, config.jwks_max_age)
        self.introspection = IntrospectionCache(oauth, config.introspect_cache)

    # ---- verification -----------------------------------------------------------------------------------
    async def verify_jwt(self, token: str, *, audience: str | None = None, access_token: bool = True) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise AuthenticationFailed(Reason.TOKEN_REJECTED, f"not a JWT: {error}") from None
        alg = header.get("alg")
        if alg not in self.config.algorithms:
            raise AuthenticationFailed(Reason.TOKEN_REJECTED, f"algorithm {str(alg)[:20]!r} is not allowed")
        typ = str(header.get("typ", "")).lower()
        if access_token and typ not in {t.lower() for t in self.config.token_types}:
            raise AuthenticationFailed(Reason.TOKEN_REJECTED, f"token type {typ[:30]!r} is not an access token "
                                       f"(RFC 9068 section 4; [identity] token_types)")
        if not access_token and typ in ("at+jwt", "application/at+jwt"):  # RFC 8725 3.11: no type confusion
            raise AuthenticationFailed(Reason.TOKEN_REJECTED, "an access token where an ID token belongs")
        kid = header.get("kid", "")
        if not isinstance(kid, str):
            raise AuthenticationFailed(Reason.TOKEN_REJECTED, "the token's 'kid' is not a string")
        key = await self.jwks.key(kid, alg)
        for retry in (True, False):
            try:
                return self._decode(token, key.key, audience)
            except jwt.InvalidSignatureError:
                # The provider may have replaced the key under this kid: one rate-limited refresh, one retry.
                if not (retry and await self.jwks.rotated(key, alg)):
                    break
                key = await self.jwks.key(kid, alg)
        raise AuthenticationFailed(Reason.TOKEN_REJECTED, "token rejected: Signature verification failed")

    def _decode(self, token: str, key: Any, audience: str | None) -> dict[str, Any]:
        """RFC 9068 section 4 checks after the signature; only a bad signature escapes, to try a fresh key."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=list(self.config.algorithms), audience=audience or self.config.audience,
                issuer=self.config.issuer, leeway=self.config.leeway,
                options={"require": ["exp", "iat", "iss", "sub", "aud"]})
        except jwt.InvalidSignatureError:
            raise
        except jwt.PyJWTError as error:
            raise AuthenticationFailed(Reason.TOKEN_REJECTED, f"token rejected: {error}") from None
        return claims

    def _subject(self, claims: dict[str, Any], token: str, identity_type: int) -> Subject:
        mapped = read_claims(claims, self.config.claims)
        user = Subject(kind="user", id=str(claims["sub"]), username=mapped.username, roles=mapped.roles,
                       organization=mapped.organization, scopes=mapped.scopes,
                       expires_at=float(claims["exp"]) + self.config.leeway, client_id=mapped.client_id,
                       identity_type=identity_type, purpose_of_use=mapped.purpose_of_use, token=token,
                       **exchanged(claims))
        client = acting_client(claims, mapped.client_id, marked=mapped.client_token)
        if client is None:
            return user
        node = self.config.node_clients.get(client)
        if node is None:
            raise AuthenticationFailed(Reason.NOT_A_USER, f"a token of client {client[:64]!r} acting for itself (no "
                                       "user behind it), and no [nodes.X] client_id names that client")
        return dataclasses.replace(user, kind="node", id=node, username=node, roles=(), organization="")

    # ---- the identity types -------------------------------------------------------------------------------
    async def authenticate(self, identity: UserIdentity, certificate_names: list[str], source: str) -> Subject:
        """The verified subject, or :class:`AuthenticationFailed`.

        ``source``: the peer address the agent saw; type-2 logins are throttled per source and the
        provider is told it (RFC 7239), so that lockouts there count the attacker, not this agent.
        """
        kind = identity.type
        if kind == UserIdentityType.JWT:
            token = identity.primary.decode("ascii", "replace").strip()
            subject = self._subject(await self.verify_jwt(token), token, kind)
            if self.config.introspect and not await self.introspection.active(token):
                raise AuthenticationFailed(Reason.TOKEN_INACTIVE, "the token is not active (revoked)")
            return subject
        if kind == UserIdentityType.USERNAME_AND_PASSCODE:
            return await self._password(identity.primary.decode("utf-8", "replace"),
                                        identity.secondary.decode("utf-8", "replace"), source)
        if kind == UserIdentityType.USERNAME:
            if not self.config.username_only:
                raise AuthenticationFailed(Reason.IDENTITY_TYPE_REFUSED, "identity type 1 (username only) is not "
                                                                         "accepted here")
            if not set(certificate_names) & set(self.config.username_only_workstations):
                raise AuthenticationFailed(Reason.IDENTITY_TYPE_REFUSED, "identity type 1 only from a registered "
                                                                         "workstation certificate")
            name = identity.primary.decode("utf-8", "replace")
            return Subject(kind="user", id=name, username=name, identity_type=kind)
        if kind in (UserIdentityType.KERBEROS, UserIdentityType.SAML):
            raise AuthenticationFailed(Reason.IDENTITY_TYPE_REFUSED, f"identity type {kind} (Kerberos/SAML) has no "
                                                                     "verifier configured")
        raise AuthenticationFailed(Reason.IDENTITY_TYPE_REFUSED, f"unknown identity type {kind}")

    async def _password(self, username: str, password: str, source: str) -> Subject:
        """The original paper's flow: a password grant with our client, then both tokens verified."""
        wait = await self._admit(source)
        if wait is not None:
            raise AuthenticationFailed(Reason.THROTTLED, f"too many failed logins from {source}: type-2 logins "
                                       f"refused for {wait:.0f} s more")
        failed = False
        try:
            response = await self.oauth.run(PasswordGrant(username=username, password=password, scope=PASSWORD_SCOPE,
                                                          forwarded_for=source))
        except OAuthError as error:
            failed = error.error in _REFUSED_LOGIN
            raise AuthenticationFailed(Reason.PASSWORD_REFUSED if failed else Reason.PROVIDER_UNAVAILABLE,
                                       f"password grant refused ({error.error}"
                                       f"{', one-time password required' if error.mfa_required else ''}): "
                                       f"{error.description}") from None
        except OAuthClientError as error:
            raise AuthenticationFailed(Reason.PROVIDER_UNAVAILABLE, f"identity provider: {error}") from None
        finally:
            await self._settle(source, failed)
        if response.id_token is None:
            raise AuthenticationFailed(Reason.TOKEN_REJECTED, "the provider returned no ID token")
        id_claims = await self.verify_jwt(response.id_token, audience=self.config.client_id, access_token=False)
        claims = await self.verify_jwt(response.access_token)
        if id_claims["sub"] != claims["sub"]:
            raise AuthenticationFailed(Reason.TOKEN_REJECTED, "ID token and access token name different subjects")
        return self._subject(claims, response.access_token, UserIdentityType.USERNAME_AND_PASSCODE)

    async def _admit(self, source: str) -> float | None:
        if self.logins is None:
            return self.throttle.admit(source)
        try:
            return await self.logins.admit_login(source)
        except SharedUnavailable as error:  # fail closed: no count, no guess
            raise AuthenticationFailed(error.reason, f"login refused: shared state unavailable ({error})") from None

    async def _settle(self, source: str, failed: bool) -> None:
        if self.logins is None:
            self.throttle.settle(source, failed=failed)
            return
        try:
            if await self.logins.settle_login(source, failed=failed):
                log.warning("identity type 2: %d failed logins from %s: refused for %.0f s (shared)",
                            self.config.throttle.max_failures, source, self.config.throttle.block_seconds)
        except SharedUnavailable as error:  # the count is lost; its key expires (2 windows at most)
            log.error("identity type 2: outcome of a login from %s not counted: %s", source, error)

    async def still_valid(self, subject: Subject) -> NoLongerValid | None:
        """Why ``subject`` may no longer act, or None: the same leeway as at association.

        With ``introspect``, RFC 7662 section 2.2 decides revocation: ``"active": false`` is
        ``token_inactive``; an answer that is no answer (an HTTP or OAuth error, a malformed body, no
        reply) is ``introspection_failed`` and denies as well (fail closed), but is never called a
        revocation: a provider that cannot introspect must not look like one that revoked everything.
        """
        if not subject.token:
            return None  # a node by address, or a type-1 user: nothing that expires
        if self._clock() >= subject.expires_at:
            return NoLongerValid(reason=Reason.TOKEN_INVALID, text="the token has expired")
        if self.config.introspect:
            try:
                active = await self.introspection.active(subject.token)
            except AuthenticationFailed as error:
                return NoLongerValid(reason=error.reason, text=f"token status unknown ({error})")
            if not active:
                return NoLongerValid(reason=Reason.TOKEN_INACTIVE, text="the token was revoked")
        return None

__all__ = ["AuthenticationFailed", "Authenticator", "NoLongerValid", "Subject", "acting_client"]
