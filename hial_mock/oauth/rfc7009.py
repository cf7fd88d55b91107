"""RFC 7009 token revocation on authlib's :class:`RevocationEndpoint`.

Revoking either token of a session revokes the session (section 2.1: the server MAY, and SHOULD for a
refresh token, also invalidate the related tokens): every access and refresh token that login led to
stops working at once, which is what logging out means. An unknown token is still answered 200
(section 2.2).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from authlib.oauth2.rfc7009 import RevocationEndpoint

from .models import TokenRecord
from .rfc6749 import ALL_AUTH_METHODS

if TYPE_CHECKING:
    from .server import HialRequest, OAuthServer

log = logging.getLogger("hial_mock.auth")


class Revocation(RevocationEndpoint):  # type: ignore[misc]  # authlib is untyped
    CLIENT_AUTH_METHODS = ALL_AUTH_METHODS
    server: OAuthServer

    def query_token(self, token_string: str, token_type_hint: str | None) -> TokenRecord | None:
        return self.server.tokens.find(token_string, token_type_hint)

    def revoke_token(self, token: TokenRecord, request: HialRequest) -> None:
        self.server.tokens.revoke(token)
        log.info("revoked the session of %s's %s (client %s)", token.username or token.client_id,
                 token.kind.replace("_", " "), token.client_id)
