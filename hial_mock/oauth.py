"""OAuth 2 / OpenID Connect on authlib: clients, grants, endpoints, JWT access and ID tokens.

* RFC 6749 grants: resource-owner password (with a TOTP ``otp`` parameter for users flagged for
  MFA), client credentials, authorization code with PKCE (RFC 7636, S256 required), refresh tokens
  that rotate (the old one dies when the new one is issued); RFC 8628 device authorization.
* RFC 9068 JWT access tokens (``typ`` ``at+jwt``) signed RS256 with the current key of the
  :class:`~hial_mock.keys.KeyStore` (``kid`` in the header, so rotation is seamless).
* OpenID Connect Core 1.0 section 2 ID tokens for every grant with a user and the ``openid`` scope.
* RFC 7662 introspection and RFC 7009 revocation: revoking either token of a session revokes the
  session, so its refresh tokens stop working at once.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jwt
import pyotp
from authlib.oauth2.rfc6749 import ClientMixin, grants
from authlib.oauth2.rfc6749.errors import InvalidGrantError, InvalidRequestError
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from authlib.oauth2.rfc8628 import DeviceAuthorizationEndpoint, DeviceCodeGrant, DeviceCredentialDict

from .config import ClientConfig, User
from .keys import ALGORITHM
from .passwords import DUMMY_HASH, verify_password
from .state import TokenRecord

if TYPE_CHECKING:
    from .app import Hial

log = logging.getLogger("hial_mock.auth")

ACCESS_TOKEN_TYPE = "at+jwt"  # RFC 9068 section 2.1


class MfaRequiredError(InvalidGrantError):  # type: ignore[misc]
    """invalid_grant (RFC 6749 5.2) with ``mfa_required: true``: ask the user for a TOTP code."""

    def get_body(self) -> list[tuple[str, Any]]:
        return [*super().get_body(), ("mfa_required", True)]


@dataclass(frozen=True, slots=True)
class Authenticated:
    """A user as authenticated for one grant: how (``amr``), when, in which session."""

    user: User
    amr: tuple[str, ...]
    auth_time: int
    session: str

    def get_user_id(self) -> str:
        return self.user.username


class Client(ClientMixin):  # type: ignore[misc]
    """authlib's ClientMixin over a :class:`ClientConfig`."""

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self.client_id = config.client_id

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.config.redirect_uris[0] if self.config.redirect_uris else None

    def get_allowed_scope(self, scope: str | None) -> str:
        if not scope:
            return ""
        allowed = set(self.config.scopes)
        return " ".join(s for s in scope.split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.config.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return self.config.secret_hash is not None and verify_password(client_secret, self.config.secret_hash)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.config.auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and "authorization_code" in self.config.grant_types

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.config.grant_types


# ---- tokens ----------------------------------------------------------------------------------------


class TokenGenerator:
    """authlib token generator: RFC 9068 access tokens, opaque rotating refresh tokens, ID tokens."""

    def __init__(self, hial: Hial) -> None:
        self.hial = hial

    def __call__(self, grant_type: str, client: Client, user: Authenticated | None = None,
                 scope: str | None = None, expires_in: int | None = None,
                 include_refresh_token: bool = True) -> dict[str, Any]:
        hial = self.hial
        server = hial.config.server
        now = int(time.time())
        lifetime = expires_in or server.access_token_lifetime
        jti = secrets.token_urlsafe(16)
        scope = scope or ""
        claims: dict[str, Any] = {
            "iss": hial.issuer,
            "sub": user.user.username if user else client.client_id,
            "aud": client.config.audience or server.default_audience,
            "exp": now + lifetime,
            "iat": now,
            "nbf": now,
            "jti": jti,
            "client_id": client.client_id,
            "scope": scope,
        }
        session = user.session if user else hial.state.sessions.new()
        if user is not None:
            claims.update({"preferred_username": user.user.username, "roles": list(user.user.roles),
                           "organization": user.user.organization, "auth_time": user.auth_time,
                           "amr": list(user.amr)})
            if user.user.name:
                claims["name"] = user.user.name
        kid, key = hial.keys.signing()
        access_token = jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": kid, "typ": ACCESS_TOKEN_TYPE})
        record = TokenRecord(kind="access_token", value_id=jti, client_id=client.client_id,
                             username=user.user.username if user else None, scope=scope, issued_at=now,
                             expires_at=now + lifetime, session=session, claims=claims,
                             sessions=hial.state.sessions)
        token: dict[str, Any] = {"token_type": "Bearer", "access_token": access_token, "expires_in": lifetime,
                                 "scope": scope}
        with hial.state.lock:
            hial.state.access.put(jti, record, record.expires_at)
            if include_refresh_token and user is not None:
                refresh = secrets.token_urlsafe(32)
                expires = now + server.refresh_token_lifetime
                hial.state.refresh.put(refresh, TokenRecord(
                    kind="refresh_token", value_id=refresh, client_id=client.client_id,
                    username=user.user.username, scope=scope, issued_at=now, expires_at=expires, session=session,
                    claims={"amr": list(user.amr), "auth_time": user.auth_time}, sessions=hial.state.sessions,
                ), expires)
                token["refresh_token"] = refresh
        if user is not None and "openid" in scope.split():
            token["id_token"] = self.id_token(client, user, access_token, nonce=None)
        return token

    def id_token(self, client: Client, user: Authenticated, access_token: str, nonce: str | None) -> str:
        """OpenID Connect Core 1.0 section 2 (and 3.1.3.6 ``at_hash``)."""
        hial = self.hial
        now = int(time.time())
        digest = hashlib.sha256(access_token.encode()).digest()
        claims: dict[str, Any] = {
            "iss": hial.issuer, "sub": user.user.username, "aud": client.client_id, "iat": now,
            "exp": now + hial.config.server.id_token_lifetime, "auth_time": user.auth_time,
            "amr": list(user.amr), "at_hash": base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode(),
            "preferred_username": user.user.username, "roles": list(user.user.roles),
            "organization": user.user.organization,
        }
        if user.user.name:
            claims["name"] = user.user.name
        if user.user.email:
            claims["email"] = user.user.email
        if nonce:
            claims["nonce"] = nonce
        kid, key = hial.keys.signing()
        return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": kid, "typ": "JWT"})


# ---- grants --------------------------------------------------------------------------------------------

_ALL_METHODS = ["client_secret_basic", "client_secret_post", "none"]


class PasswordGrant(grants.ResourceOwnerPasswordCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = _ALL_METHODS

    def authenticate_token_endpoint_client(self) -> Client:
        # authlib sets request.client only after authenticate_user; the lockout needs it before.
        client: Client = super().authenticate_token_endpoint_client()
        self._client = client
        return client

    def authenticate_user(self, username: str, password: str) -> Authenticated:
        hial = self.server.hial
        otp = self.request.payload.data.get("otp")
        user: Authenticated = hial.login(username, password, otp, client_id=self._client.client_id,
                                         how="password grant")
        return user


class ClientCredentialsGrant(grants.ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


@dataclass(frozen=True, slots=True)
class AuthorizationCode:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: Authenticated
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    expires_at: float

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def is_expired(self) -> bool:
        return time.time() >= self.expires_at

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.user.auth_time


class CodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = _ALL_METHODS

    def save_authorization_code(self, code: str, request: Any) -> None:
        hial = self.server.hial
        data = request.payload.data
        expires = time.time() + hial.config.server.authorization_code_lifetime
        hial.state.codes.put(code, AuthorizationCode(
            code=code, client_id=request.client.client_id, redirect_uri=request.payload.redirect_uri or "",
            scope=request.payload.scope or "", user=request.user, nonce=data.get("nonce"),
            code_challenge=data.get("code_challenge"), code_challenge_method=data.get("code_challenge_method"),
            expires_at=expires), expires)

    def query_authorization_code(self, code: str, client: Client) -> AuthorizationCode | None:
        item = self.server.hial.state.codes.get(code)
        return item if isinstance(item, AuthorizationCode) and item.client_id == client.client_id else None

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        self.server.hial.state.codes.pop(authorization_code.code)  # single use (RFC 6749 4.1.2)

    def authenticate_user(self, authorization_code: AuthorizationCode) -> Authenticated:
        return authorization_code.user


def _nonce_hook(grant: Any, response: Any) -> None:
    """Put the authorization request's nonce into the ID token of the code flow (OIDC Core 3.1.3.6)."""
    _, token, _ = response
    code = grant.request.authorization_code
    if "id_token" in token and code is not None and code.nonce:
        token["id_token"] = grant.server.hial.tokens.id_token(grant.request.client, code.user,
                                                             token["access_token"], nonce=code.nonce)


class RotatingRefreshGrant(grants.RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = _ALL_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True  # rotation: each use returns a new refresh token

    def authenticate_refresh_token(self, refresh_token: str) -> TokenRecord | None:
        record = self.server.hial.state.refresh.get(refresh_token)
        if not isinstance(record, TokenRecord) or record.is_revoked() or record.is_expired():
            return None
        return record

    def authenticate_user(self, credential: TokenRecord) -> Authenticated | None:
        hial = self.server.hial
        user = hial.config.users.get(credential.username or "")
        if user is None or user.disabled:
            return None
        return Authenticated(user, tuple(credential.claims.get("amr", ())), int(credential.claims.get("auth_time", 0)),
                             credential.session)

    def revoke_old_credential(self, refresh_token: TokenRecord) -> None:
        refresh_token.revoked = True


class DeviceAuthorization(DeviceAuthorizationEndpoint):  # type: ignore[misc]
    """RFC 8628 section 3.1-3.2."""

    CLIENT_AUTH_METHODS = _ALL_METHODS
    USER_CODE_TYPE = "string"

    def get_verification_uri(self) -> str:
        return f"{self.server.hial.issuer}/device"

    def save_device_credential(self, client_id: str, scope: str, data: dict[str, Any]) -> None:
        hial = self.server.hial
        lifetime = hial.config.server.device_code_lifetime
        self.EXPIRES_IN = lifetime
        self.INTERVAL = hial.config.server.device_poll_interval
        data = {**data, "expires_in": lifetime, "interval": self.INTERVAL}
        expires = time.time() + lifetime
        record = {**data, "client_id": client_id, "scope": scope, "expires_at": expires, "last_poll": 0.0}
        hial.state.devices.put(data["device_code"], record, expires)
        hial.state.user_codes.put(data["user_code"], {"device_code": data["device_code"], "grant": None}, expires)

    def create_endpoint_response(self, request: Any) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        hial = self.server.hial
        self.EXPIRES_IN = hial.config.server.device_code_lifetime
        self.INTERVAL = hial.config.server.device_poll_interval
        result: tuple[int, dict[str, Any], list[tuple[str, str]]] = super().create_endpoint_response(request)
        return result


class _DeviceCredential(DeviceCredentialDict):  # type: ignore[misc]
    def is_expired(self) -> bool:
        return bool(time.time() >= self["expires_at"])


class DeviceGrant(DeviceCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = _ALL_METHODS

    def query_device_credential(self, device_code: str) -> _DeviceCredential | None:
        record = self.server.hial.state.devices.get(device_code)
        return None if record is None else _DeviceCredential(record)

    def query_user_grant(self, user_code: str) -> tuple[Authenticated, bool] | None:
        entry = self.server.hial.state.user_codes.get(user_code)
        if entry is None or entry["grant"] is None:
            return None
        if entry["grant"][1]:
            # The grant is used once: a second poll with the same device code gets invalid_grant.
            self.server.hial.state.user_codes.pop(user_code)
            self.server.hial.state.devices.pop(entry["device_code"])
        result: tuple[Authenticated, bool] = entry["grant"]
        return result

    def should_slow_down(self, credential: _DeviceCredential) -> bool:
        """RFC 8628 3.5: polling faster than the interval gets slow_down."""
        record = self.server.hial.state.devices.get(credential["device_code"])
        if record is None:
            return False
        now = time.time()
        too_fast = now - record["last_poll"] < record["interval"]
        record["last_poll"] = now
        return bool(too_fast)


# ---- introspection and revocation --------------------------------------------------------------------


class _TokenLookup:
    def lookup(self, token_string: str, hint: str | None) -> TokenRecord | None:
        hial = self.server.hial  # type: ignore[attr-defined]
        if hint != "refresh_token" and token_string.count(".") == 2:
            claims = hial.decode_own_token(token_string, verify_exp=False)
            if claims is not None:
                record = hial.state.access.get(str(claims.get("jti", "")))
                if isinstance(record, TokenRecord):
                    return record
        record = hial.state.refresh.get(token_string)
        return record if isinstance(record, TokenRecord) else None


class Introspection(_TokenLookup, IntrospectionEndpoint):  # type: ignore[misc]
    """RFC 7662: only clients flagged ``may_introspect`` (the server agents) may ask."""

    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

    def query_token(self, token_string: str, token_type_hint: str | None) -> TokenRecord | None:
        return self.lookup(token_string, token_type_hint)

    def check_permission(self, token: TokenRecord, client: Client, request: Any) -> bool:
        return client.config.may_introspect

    def authenticate_token(self, request: Any, client: Client) -> TokenRecord | None:
        self.check_params(request, client)
        if not client.config.may_introspect:
            # RFC 7662 2.2: a caller that may not introspect learns nothing, not even an error code.
            return None
        return super().authenticate_token(request, client)  # type: ignore[no-any-return]

    def introspect_token(self, token: TokenRecord) -> dict[str, Any]:
        claims = token.claims
        payload: dict[str, Any] = {
            "active": True, "scope": token.scope, "client_id": token.client_id, "token_type": token.kind,
            "exp": int(token.expires_at), "iat": int(token.issued_at), "sub": claims.get("sub", token.username),
            "iss": self.server.hial.issuer,
        }
        if token.username:
            payload["username"] = token.username
        for key in ("aud", "jti", "nbf", "roles", "organization"):
            if key in claims:
                payload[key] = claims[key]
        return payload


class Revocation(_TokenLookup, RevocationEndpoint):  # type: ignore[misc]
    """RFC 7009: revoking an access or refresh token revokes its whole session."""

    CLIENT_AUTH_METHODS = _ALL_METHODS

    def query_token(self, token_string: str, token_type_hint: str | None) -> TokenRecord | None:
        return self.lookup(token_string, token_type_hint)

    def revoke_token(self, token: TokenRecord, request: Any) -> None:
        hial = self.server.hial
        token.revoked = True
        hial.state.sessions.revoke(token.session, time.time() + hial.config.server.refresh_token_lifetime + 60)
        log.info("revoked %s session of %s (client %s)", token.kind.replace("_", " "),
                 token.username or token.client_id, token.client_id)


class StrictPkce(CodeChallenge):  # type: ignore[misc]
    """RFC 7636 for every client, S256 only (RFC 9700 2.1.1: plain is not to be used).

    authlib requires PKCE only of public clients, at the token endpoint; we refuse the authorization
    request itself when it has no S256 challenge.
    """

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: missing 'code_challenge' (S256)")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("'code_challenge_method' must be S256")
        super().validate_code_challenge(grant, redirect_uri)


def pkce() -> CodeChallenge:
    return StrictPkce(required=True)


def verify_totp(secret: str, code: str) -> bool:
    return bool(pyotp.TOTP(secret).verify(code, valid_window=1))


__all__ = [
    "DUMMY_HASH",
    "Authenticated",
    "Client",
    "ClientCredentialsGrant",
    "CodeGrant",
    "DeviceAuthorization",
    "DeviceGrant",
    "Introspection",
    "InvalidRequestError",
    "MfaRequiredError",
    "PasswordGrant",
    "Revocation",
    "RotatingRefreshGrant",
    "TokenGenerator",
    "_nonce_hook",
    "pkce",
    "verify_totp",
]
