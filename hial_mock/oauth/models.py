"""The objects authlib's grants and endpoints pass around (its ``models`` mixins), as our own values.

* :class:`Client`: RFC 6749 section 2 (client types, redirection URIs, authentication methods).
* :class:`Authenticated`: one user authentication (OpenID Connect Core 1.0 section 2: ``auth_time``,
  ``amr``) within one session (``sid``), the "user" of every grant.
* :class:`AuthorizationCode`: RFC 6749 section 4.1.2 with RFC 7636 section 4.4 (the challenge) and
  OpenID Connect Core 1.0 section 3.1.2.1 (``nonce``).
* :class:`TokenRecord`: an issued token as RFC 7662 section 2.2 and RFC 7009 section 2 see it.
* :class:`DeviceRecord`: RFC 8628 section 3.2.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from authlib.oauth2.rfc6749 import ClientMixin

from ..config import ClientConfig, User
from ..passwords import verify_password

TokenKind = Literal["access_token", "refresh_token"]


class Client(ClientMixin):  # type: ignore[misc]  # authlib is untyped
    """authlib's ClientMixin over a :class:`ClientConfig` (RFC 6749 sections 2.1-2.3, 3.3)."""

    def __init__(self, config: ClientConfig, check_password: Callable[[str, str], bool] = verify_password) -> None:
        self.config = config
        self.client_id = config.client_id
        self._check_password = check_password

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.config.redirect_uris[0] if self.config.redirect_uris else None

    def get_allowed_scope(self, scope: str | None) -> str:
        """RFC 6749 3.3: the granted scope is what was asked for and this client may have."""
        if not scope:
            return ""
        allowed = set(self.config.scopes)
        return " ".join(s for s in scope.split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.config.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return self.config.secret_hash is not None and self._check_password(client_secret, self.config.secret_hash)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.config.auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and "authorization_code" in self.config.grant_types

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.config.grant_types


def new_session() -> str:
    """A session id (``sid``): every token a login leads to carries it; revoking one token ends them all."""
    return secrets.token_urlsafe(16)


@dataclass(frozen=True, slots=True, kw_only=True)
class Authenticated:
    """A user as authenticated for one grant: how (``amr``), when, in which session."""

    user: User
    amr: tuple[str, ...]
    auth_time: int
    session: str
    # Set by an RFC 8693 exchange only (:mod:`~hial_mock.oauth.rfc8693`): what the new token carries.
    purpose_of_use: str | None = None
    reason: str = ""
    actor: str | None = None
    not_after: float | None = None  # the subject token's expiry: an exchanged token never outlives it

    def get_user_id(self) -> str:
        return self.user.username

    def with_exchange(self, *, purpose_of_use: str | None = None, reason: str = "",
                      actor: str | None = None) -> Authenticated:
        """The same user and session, for a token exchanged for break-glass or for an acting client."""
        return replace(self, purpose_of_use=purpose_of_use, reason=reason, actor=actor)


@dataclass(frozen=True, slots=True, kw_only=True)
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

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> list[str]:
        return list(self.user.amr)


@dataclass(slots=True, eq=False, weakref_slot=True)  # the token store maps ids to sessions weakly
class Session:
    """The revocation state every token of one session shares (RFC 7009 section 2.1)."""

    sid: str
    revoked: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenRecord:
    """An issued access token or refresh token (authlib's TokenMixin)."""

    kind: TokenKind
    client_id: str
    username: str | None
    scope: str
    issued_at: float
    expires_at: float
    session: Session = field(repr=False)
    claims: Mapping[str, Any] = field(default_factory=dict)  # what introspection may show (RFC 7662 2.2)

    def check_client(self, client: Client) -> bool:
        return client.get_client_id() == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return int(self.expires_at - self.issued_at)

    def is_expired(self) -> bool:
        return time.time() >= self.expires_at

    def is_revoked(self) -> bool:
        return self.session.revoked

    def get_user(self) -> str | None:
        return self.username

    def get_client_id(self) -> str:
        return self.client_id


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceRecord:
    """A device authorization (authlib's DeviceCredentialMixin)."""

    device_code: str
    user_code: str
    client_id: str
    scope: str
    expires_at: float
    interval: int

    def get_client_id(self) -> str:
        return self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_user_code(self) -> str:
        return self.user_code

    def is_expired(self) -> bool:
        return time.time() >= self.expires_at
