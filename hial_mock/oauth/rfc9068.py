"""RFC 9068 JWT access tokens, from authlib's own :class:`JWTBearerTokenGenerator`.

authlib writes the header (``typ`` ``at+jwt``, section 2.1) and the required claims of section 2.2
(``iss``, ``exp``, ``aud``, ``sub``, ``client_id``, ``iat``, ``jti``, ``scope``; ``auth_time`` and
``amr`` of section 2.2.1). We add, as section 2.2.3 allows, what the server agent and the PDP decide on:
``preferred_username``, ``roles`` (section 2.2.3.1), ``organization``, ``name`` and the session
``sid``; after an RFC 8693 exchange, ``purpose_of_use`` with ``btg_reason``, or ``act``. The signing
key is one object carrying its ``kid``; joserfc writes that ``kid`` into the header, so a verifier
finds the key in our JWKS, and a key rotation mid-request cannot mismatch them.

Refresh tokens (RFC 6749 section 1.5) are opaque random strings; the token endpoint's ``save_token``
records both (see :class:`~hial_mock.oauth.server.OAuthServer`).
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from joserfc.jwk import KeySet

from ..config import ServerConfig
from ..keys import ALGORITHM
from .collaborators import Signer
from .models import Authenticated, Client

REFRESH_TOKEN_BYTES = 32  # RFC 6749 10.10: at least 128 bits of entropy; 256 here


class AccessTokens(JWTBearerTokenGenerator):  # type: ignore[misc]  # authlib is untyped
    """authlib's RFC 9068 generator with our claims, audience, lifetime and key."""

    def __init__(self, signer: Signer, settings: ServerConfig) -> None:
        super().__init__(issuer=signer.issuer, alg=ALGORITHM, refresh_token_generator=_refresh_token,
                         expires_generator=settings.access_token_lifetime)
        self.signer = signer
        self.settings = settings

    def get_jwks(self) -> KeySet:
        return KeySet([self.signer.signing_key()])

    def get_audiences(self, client: Client, user: Authenticated | None, scope: str) -> str:
        return client.config.audience or self.settings.default_audience

    def get_auth_time(self, user: Authenticated | None) -> int | None:
        return user.auth_time if user else None

    def get_amr(self, user: Authenticated | None) -> list[str] | None:
        return list(user.amr) if user else None

    def get_jti(self, client: Client, grant_type: str, user: Authenticated | None, scope: str) -> str:
        return secrets.token_urlsafe(16)

    def get_extra_claims(self, client: Client, grant_type: str, user: Authenticated | None,
                         scope: str) -> dict[str, Any]:
        if user is None:
            return {}
        claims: dict[str, Any] = {"preferred_username": user.user.username, "roles": list(user.user.roles),
                                  "organization": user.user.organization, "sid": user.session}
        if user.user.name:
            claims["name"] = user.user.name
        if user.purpose_of_use:  # RFC 8693 break-glass (IHE IUA's purpose_of_use claim)
            claims["purpose_of_use"] = user.purpose_of_use
            claims["btg_reason"] = user.reason
        if user.actor:  # RFC 8693 section 4.1: the acting party
            claims["act"] = {"sub": user.actor}
        if user.not_after is not None:  # exchanged: no longer than the token it was exchanged for
            claims["exp"] = min(int(time.time()) + self.settings.access_token_lifetime, int(user.not_after))
        return claims


def _refresh_token(**_: Any) -> str:
    return secrets.token_urlsafe(REFRESH_TOKEN_BYTES)
