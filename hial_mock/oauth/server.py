"""The typed authorization server: authlib's Flask :class:`AuthorizationServer` with its collaborators.

It serves RFC 6749 section 3 (the authorization and token endpoints, client authentication of
section 2.3), RFC 8693 token exchange, and the endpoints of RFC 7662, RFC 7009 and RFC 8628 section
3.1. The grants reach the rest of the HIAL only through the attributes declared here, each a ``typing.Protocol`` of
:mod:`~hial_mock.oauth.collaborators`; :mod:`hial_mock.app` wires the real ones.

``save_token`` is where authlib hands over every issued token (RFC 6749 section 5.1): it records the
access token (by a digest of its value, with the claims introspection may show) and the refresh token
in the session of the login they came from.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.integrations.flask_oauth2.requests import FlaskOAuth2Request
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from flask import Flask, Request
from flask import request as flask_request

from ..config import ServerConfig
from ..forwarded import ForwardedError, Source, login_source, peer_address
from .collaborators import Clients, Codes, Devices, Signer, Tokens, Users
from .models import Authenticated, AuthorizationCode, Client, TokenRecord, new_session
from .oidc import CodeFlowIdTokens, IdTokens
from .rfc6749 import ClientCredentialsGrant, CodeGrant, PasswordGrant, RotatingRefreshGrant
from .rfc7009 import Revocation
from .rfc7636 import StrictPkce
from .rfc7662 import COPIED_CLAIMS, Introspection
from .rfc8628 import DeviceAuthorization, DeviceGrant
from .rfc8693 import TokenExchangeGrant
from .rfc9068 import AccessTokens

log = logging.getLogger("hial_mock.auth")


class HialRequest(FlaskOAuth2Request):  # type: ignore[misc]  # authlib is untyped
    """authlib's Flask request, with the HTTP peer's address and the attributes grants fill in typed."""

    client: Client | None
    user: Authenticated | None
    authorization_code: AuthorizationCode | None

    def __init__(self, request: Request) -> None:
        super().__init__(request)
        self.peer = peer_address(request.remote_addr)

    def known_client(self) -> Client:
        """The client, once authlib has authenticated it (every caller runs after that)."""
        if self.client is None:
            raise RuntimeError("no authenticated client yet")
        return self.client

    def known_user(self) -> Authenticated:
        """The user, once a grant has authenticated one (every caller runs after that)."""
        if self.user is None:
            raise RuntimeError("no authenticated user yet")
        return self.user


class OAuthServer(AuthorizationServer):  # type: ignore[misc]
    """authlib's server with our grants, endpoints and token generator, and the collaborators they use."""

    def __init__(self, app: Flask, *, settings: ServerConfig, clients: Clients, users: Users, signer: Signer,
                 tokens: Tokens, codes: Codes, devices: Devices,
                 break_glass_roles: Callable[[], frozenset[str]] = frozenset) -> None:
        super().__init__(app)
        self.settings = settings
        self.clients = clients
        self.users = users
        self.signer = signer
        self.tokens = tokens
        self.codes = codes
        self.devices = devices
        self.break_glass_roles = break_glass_roles  # the policy's roles that may use BTG, as reloaded
        self.scopes_supported = None  # scopes are checked per client (Client.get_allowed_scope)
        self.register_token_generator("default", AccessTokens(signer, settings))
        id_tokens = IdTokens(signer, settings)
        self.register_grant(PasswordGrant, [id_tokens])
        self.register_grant(ClientCredentialsGrant)
        self.register_grant(CodeGrant, [StrictPkce(), CodeFlowIdTokens(signer, settings, codes)])
        self.register_grant(RotatingRefreshGrant, [id_tokens])
        self.register_grant(DeviceGrant, [id_tokens])
        self.register_grant(TokenExchangeGrant)
        self.register_endpoint(DeviceAuthorization(self))
        self.register_endpoint(Introspection(self))
        self.register_endpoint(Revocation(self))

    def create_oauth2_request(self, request: Any) -> HialRequest:
        return HialRequest(flask_request)

    def query_client(self, client_id: str) -> Client | None:
        return self.clients.client(client_id)

    def save_token(self, token: dict[str, Any], request: HialRequest) -> None:
        claims = self.signer.read_access_token(token["access_token"])
        if claims is None:  # we signed it a moment ago: a broken key store, not a client's error
            raise RuntimeError("an access token just issued does not verify")
        client = request.known_client()
        user = request.user
        session = self.tokens.session(user.session if user is not None else new_session())
        username = user.user.username if user is not None else None
        scope = str(token.get("scope", ""))
        kept = {key: claims[key] for key in ("sub", *COPIED_CLAIMS) if key in claims}
        self.tokens.save(token["access_token"], TokenRecord(
            kind="access_token", client_id=client.client_id, username=username, scope=scope,
            issued_at=claims["iat"], expires_at=claims["exp"], session=session, claims=kept))
        if user is not None and token.get("refresh_token"):
            self.tokens.save(token["refresh_token"], TokenRecord(
                kind="refresh_token", client_id=client.client_id, username=username, scope=scope,
                issued_at=claims["iat"], expires_at=claims["iat"] + self.settings.refresh_token_lifetime,
                session=session, claims={"sub": username, "amr": list(user.amr), "auth_time": user.auth_time,
                                         "sid": session.sid}))

    def login_source(self, request: HialRequest, client: Client) -> Source:
        """Where a password grant comes from (:mod:`hial_mock.forwarded`); a bad header is invalid_request."""
        headers: list[str] = request.headers.getlist("Forwarded")
        trusted = client.config.forwards_source
        if headers and not trusted:
            log.warning("ignored a Forwarded header from client %s at %s: not a trusted forwarder",
                        client.client_id, request.peer)
        try:
            return login_source(request.peer, headers, trusted=trusted)
        except ForwardedError as error:
            log.warning("refused a Forwarded header from client %s at %s: %s", client.client_id, request.peer,
                        error)
            raise InvalidRequestError(f"Forwarded header: {error}") from None
