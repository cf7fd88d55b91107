"""RFC 7636 PKCE for every client, S256 only (RFC 9700 section 2.1.1: ``plain`` is not to be used).

authlib's :class:`CodeChallenge` requires PKCE only of public clients, and only at the token endpoint
(section 4.5); we refuse the authorization request itself (section 4.4.1) when it has no S256
challenge, whoever the client is.
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc7636 import CodeChallenge


class StrictPkce(CodeChallenge):  # type: ignore[misc]  # authlib is untyped
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def __init__(self) -> None:
        super().__init__(required=True)

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: missing 'code_challenge' (S256)")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("'code_challenge_method' must be S256")
        super().validate_code_challenge(grant, redirect_uri)
