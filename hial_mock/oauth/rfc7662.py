"""RFC 7662 token introspection on authlib's :class:`IntrospectionEndpoint`.

Only clients flagged ``may_introspect`` (the server agents) may ask (section 2.1: the caller is
authenticated and authorized); any other caller learns nothing, not even an error code: section 2.2
answers ``{"active": false}``. An expired, revoked or unknown token is inactive the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from authlib.oauth2.rfc7662 import IntrospectionEndpoint

from .models import Client, TokenRecord
from .rfc6749 import SECRET_AUTH_METHODS

if TYPE_CHECKING:
    from .server import HialRequest, OAuthServer

# Section 2.2's optional members we copy from the token's own claims when it has them.
COPIED_CLAIMS = ("aud", "jti", "roles", "organization", "sid", "act", "purpose_of_use")  # RFC 8693 4.1: act


class Introspection(IntrospectionEndpoint):  # type: ignore[misc]  # authlib is untyped
    CLIENT_AUTH_METHODS = SECRET_AUTH_METHODS
    server: OAuthServer

    def query_token(self, token_string: str, token_type_hint: str | None) -> TokenRecord | None:
        return self.server.tokens.find(token_string, token_type_hint)

    def check_permission(self, token: TokenRecord, client: Client, request: HialRequest) -> bool:
        return client.config.may_introspect

    def authenticate_token(self, request: HialRequest, client: Client) -> TokenRecord | None:
        self.check_params(request, client)
        if not client.config.may_introspect:
            return None  # checked before the lookup: a caller that may not ask cannot probe by timing
        found: TokenRecord | None = super().authenticate_token(request, client)
        return found

    def introspect_token(self, token: TokenRecord) -> dict[str, Any]:
        claims = token.claims
        payload: dict[str, Any] = {
            "active": True, "scope": token.scope, "client_id": token.client_id, "token_type": token.kind,
            "exp": int(token.expires_at), "iat": int(token.issued_at), "sub": claims.get("sub", token.username),
            "iss": self.server.signer.issuer,
        }
        if token.username:
            payload["username"] = token.username
        payload.update((key, claims[key]) for key in COPIED_CLAIMS if key in claims)
        return payload
