"""OpenID Connect Core 1.0 ID tokens, from authlib's own OpenID extensions.

* The authorization-code flow (section 3.1) is authlib's :class:`OpenIDCode`: it checks the
  authorization request's ``nonce`` (section 3.1.2.1; one seen before is refused as a replay) and adds
  the ID token to the token response (section 3.1.3.3) with that nonce (3.1.3.6 ``at_hash``).
* The password, device and refresh grants get the same ID token through authlib's
  :class:`OpenIDToken` (its ``after_create_token_response`` hook), whenever ``openid`` is in scope.

Either way the token is encoded by authlib's :func:`generate_id_token` (section 2: ``iss``, ``sub``,
``aud``, ``exp``, ``iat``, ``auth_time``, ``nonce``, ``amr``, ``at_hash``), signed with the key that
signs now and its ``kid``. The claims of section 5.1 (``name``, ``email``, ``preferred_username``)
and ours (``roles``, ``organization``, the session ``sid`` of OpenID Connect Back-Channel Logout 1.0
section 2.1) come from :meth:`IdTokens.generate_user_info`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode, OpenIDToken
from authlib.oidc.core.grants.util import generate_id_token

from ..config import ServerConfig
from ..keys import ALGORITHM
from .collaborators import Codes, Signer
from .models import Authenticated, AuthorizationCode

if TYPE_CHECKING:
    from .server import HialRequest


class IdTokens(OpenIDToken):  # type: ignore[misc]  # authlib is untyped
    """The ID token of every grant with a user and the ``openid`` scope."""

    def __init__(self, signer: Signer, settings: ServerConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.signer = signer
        self.settings = settings

    def generate_user_info(self, user: Authenticated, scope: str) -> UserInfo:
        info = UserInfo(sub=user.user.username, preferred_username=user.user.username, roles=list(user.user.roles),
                        organization=user.user.organization, sid=user.session)
        if user.user.name:
            info["name"] = user.user.name
        if user.user.email and "email" in scope.split():  # section 5.4: the email scope
            info["email"] = user.user.email
        return info

    def encode_id_token(self, token: dict[str, Any], request: HialRequest) -> str:
        user = request.known_user()
        code: AuthorizationCode | None = request.authorization_code
        key = self.signer.signing_key()
        encoded: str = generate_id_token(
            token, self.generate_user_info(user, token.get("scope", "")), key, iss=self.signer.issuer,
            aud=request.known_client().client_id, alg=ALGORITHM, exp=self.settings.id_token_lifetime,
            nonce=code.get_nonce() if code is not None else None, auth_time=user.auth_time, amr=list(user.amr),
            kid=key.kid)
        return encoded


class CodeFlowIdTokens(IdTokens, OpenIDCode):  # type: ignore[misc]
    """authlib's OpenIDCode (nonce checks, hooks) with our ID token."""

    def __init__(self, signer: Signer, settings: ServerConfig, codes: Codes) -> None:
        super().__init__(signer, settings, require_nonce=False)
        self.codes = codes

    def exists_nonce(self, nonce: str, request: HialRequest) -> bool:
        return self.codes.nonce_seen(request.payload.client_id or "", nonce)
