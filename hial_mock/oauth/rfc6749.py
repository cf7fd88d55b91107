"""RFC 6749 grants on authlib's own classes: what each needs from the HIAL comes through its server.

* Resource-owner password credentials (section 4.3), with a TOTP ``otp`` parameter for users flagged
  for MFA and failed logins counted per user and source (see :mod:`hial_mock.lockout`).
* Client credentials (section 4.4): confidential clients only.
* Authorization code (section 4.1), with PKCE (:mod:`~hial_mock.oauth.rfc7636`) and the OpenID
  Connect code flow (:mod:`~hial_mock.oauth.oidc`); a code is redeemed once (section 4.1.2), atomically.
* Refresh token (section 6) that rotates: each use returns a new refresh token and the old one dies
  at once, atomically; one presented again after rotation revokes its session (RFC 9700 4.14.2).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import InvalidGrantError

from .models import Authenticated, AuthorizationCode, Client, TokenRecord

if TYPE_CHECKING:
    from .server import HialRequest, OAuthServer

# RFC 6749 2.3.1 for confidential clients; "none" for the public workstation client (RFC 8252 8.4).
ALL_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
SECRET_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


class PasswordGrant(grants.ResourceOwnerPasswordCredentialsGrant):  # type: ignore[misc]  # authlib is untyped
    """Section 4.3, the login of the apps wrapper and of the server agent's identity type 2."""

    TOKEN_ENDPOINT_AUTH_METHODS = ALL_AUTH_METHODS
    server: OAuthServer
    request: HialRequest

    def authenticate_token_endpoint_client(self) -> Client:
        # authlib sets request.client only after authenticate_user; the login needs it before.
        client: Client = super().authenticate_token_endpoint_client()
        self._client = client
        return client

    def authenticate_user(self, username: str, password: str) -> Authenticated:
        client = self._client
        source = self.server.login_source(self.request, client)
        otp = self.request.form.get("otp") or None
        return self.server.users.login(username, password, otp, client=client.config, source=source,
                                       how="password grant")

    def generate_token(self, user: Authenticated | None = None, scope: str | None = None,
                       grant_type: str | None = None, expires_in: int | None = None,
                       include_refresh_token: bool = True) -> dict[str, Any]:
        # Section 4.3.3: a refresh token is optional; only a client that may use one gets one.
        include = include_refresh_token and self.request.known_client().check_grant_type("refresh_token")
        token: dict[str, Any] = super().generate_token(user, scope, grant_type, expires_in, include)
        return token


class ClientCredentialsGrant(grants.ClientCredentialsGrant):  # type: ignore[misc]
    """Section 4.4: the server agent's own token for the PDP and introspection."""

    TOKEN_ENDPOINT_AUTH_METHODS = SECRET_AUTH_METHODS


class CodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
    """Section 4.1; the codes live in the server's :class:`~hial_mock.oauth.collaborators.Codes`."""

    TOKEN_ENDPOINT_AUTH_METHODS = ALL_AUTH_METHODS
    server: OAuthServer
    request: HialRequest

    def save_authorization_code(self, code: str, request: HialRequest) -> None:
        data = request.payload.data
        self.server.codes.save_code(AuthorizationCode(
            code=code, client_id=request.known_client().client_id, redirect_uri=request.payload.redirect_uri or "",
            scope=request.scope or "", user=request.known_user(), nonce=data.get("nonce"),
            code_challenge=data.get("code_challenge"), code_challenge_method=data.get("code_challenge_method"),
            expires_at=time.time() + self.server.settings.authorization_code_lifetime))

    def query_authorization_code(self, code: str, client: Client) -> AuthorizationCode | None:
        found = self.server.codes.code(code)
        return found if found is not None and found.client_id == client.client_id else None

    def authenticate_user(self, authorization_code: AuthorizationCode) -> Authenticated:
        # Redeemed here, after every check and before any token exists: of two requests racing with
        # one code, exactly one gets tokens.
        if not self.server.codes.take_code(authorization_code.code):
            raise InvalidGrantError("the authorization code was already used")
        return authorization_code.user

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        """Already taken in :meth:`authenticate_user`."""


class RotatingRefreshGrant(grants.RefreshTokenGrant):  # type: ignore[misc]
    """Section 6 with rotation."""

    TOKEN_ENDPOINT_AUTH_METHODS = ALL_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True
    server: OAuthServer
    request: HialRequest

    def authenticate_refresh_token(self, refresh_token: str) -> TokenRecord | None:
        return self.server.tokens.refresh(refresh_token)

    def authenticate_user(self, credential: TokenRecord) -> Authenticated:
        user = self.server.users.active(credential.username or "")
        if user is None:
            raise InvalidGrantError("the user of this refresh token may no longer log in")
        # Rotated here, after every check and before the new tokens exist (see CodeGrant).
        if not self.server.tokens.rotate(self.request.form["refresh_token"]):
            raise InvalidGrantError("the refresh token was already used")
        claims = credential.claims
        return Authenticated(user=user, amr=tuple(claims.get("amr", ())), auth_time=int(claims.get("auth_time", 0)),
                             session=credential.session.sid)

    def revoke_old_credential(self, refresh_token: TokenRecord) -> None:
        """Already rotated in :meth:`authenticate_user`."""
