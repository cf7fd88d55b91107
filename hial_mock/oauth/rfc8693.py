"""RFC 8693 token exchange at the token endpoint: break-glass and delegation, nothing else.

A client presents a user's access token (``subject_token``, section 2.1) and gets a new access
token for the same user and the same session (``sid``: revoking or logging out the session ends the
new token too). Two exchanges exist, and a request is exactly one of them:

* **Break-glass**: ``purpose_of_use=BTG`` with a ``reason``. The client must be the one the subject
  token was issued to (the clinician's own workstation, not a third party), and one of the user's
  roles must have ``break_glass`` in the policy file. The new token carries ``purpose_of_use`` ``BTG``
  and the reason (``btg_reason``); the server agent raises a Security Alert for it.
* **Delegation** (section 1.1, section 4.1): a confidential client other than the subject token's
  exchanges it to act for the user; the new token carries ``act`` ``{"sub": client_id}`` and the
  acting client as ``client_id`` (RFC 9068 section 2.2).

Refused with section 2.2.2 errors (RFC 6749 section 5.2 vocabulary): a subject token that is not our
live access token of a still-active user, one already exchanged (no chains: one ``act`` level, no
break-glass of a break-glass token), an ``actor_token`` (the authenticated client is the actor), a
``requested_token_type`` other than an access token, a scope wider than the subject token's. No
refresh token is issued (section 2.2.1: optional), and the new token expires no later than the
subject token: break-glass and delegation last at most what remains of the login's access token.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import (
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    UnauthorizedClientError,
)
from authlib.oauth2.rfc6749.hooks import hooked

from .models import Authenticated, Client, TokenRecord
from .rfc6749 import ALL_AUTH_METHODS

if TYPE_CHECKING:
    from .server import HialRequest, OAuthServer

log = logging.getLogger("hial_mock.auth")

GRANT_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # RFC 8693 section 3
BREAK_GLASS = "BTG"  # HL7 v3 ActReason "break the glass", as the policy names it
MAX_REASON = 200  # characters: a sentence for the audit trail, not a document


class TokenExchangeGrant(grants.BaseGrant, grants.TokenEndpointMixin):  # type: ignore[misc]  # authlib is untyped
    """RFC 8693 section 2: the request, checked as described in the module docstring."""

    GRANT_TYPE = GRANT_TOKEN_EXCHANGE
    TOKEN_ENDPOINT_AUTH_METHODS = ALL_AUTH_METHODS  # a public workstation may ask for break-glass
    server: OAuthServer
    request: HialRequest

    def validate_token_request(self) -> None:
        client: Client = self.authenticate_token_endpoint_client()
        if not client.check_grant_type(self.GRANT_TYPE):
            raise UnauthorizedClientError(f"the client may not use grant_type={self.GRANT_TYPE}")
        self.request.client = client
        form = self.request.form
        if form.get("actor_token"):
            raise InvalidRequestError("actor_token is not supported: the authenticated client is the actor")
        if form.get("requested_token_type", ACCESS_TOKEN_TYPE) != ACCESS_TOKEN_TYPE:
            raise InvalidRequestError("only an access token can be requested")
        if form.get("subject_token_type") != ACCESS_TOKEN_TYPE:
            raise InvalidRequestError(f"subject_token_type must be {ACCESS_TOKEN_TYPE}")
        record, claims = self._subject_token(str(form.get("subject_token", "")))
        user = self.server.users.active(record.username or "")
        if user is None:
            raise InvalidGrantError("the subject token's user may no longer log in")
        authenticated = Authenticated(user=user, amr=tuple(claims.get("amr", ())),
                                      auth_time=int(claims.get("auth_time", 0)), session=record.session.sid,
                                      not_after=record.expires_at)
        purpose = form.get("purpose_of_use")
        if purpose is not None:
            authenticated = self._break_glass(client, record, authenticated, purpose, form.get("reason", ""))
        else:
            authenticated = self._delegation(client, record, authenticated)
        self.request.user = authenticated
        self._scope = self._narrowed(client, record.scope, form.get("scope"))

    def _subject_token(self, token: str) -> tuple[TokenRecord, dict[str, Any]]:
        claims = self.server.signer.read_access_token(token) if token else None
        record = self.server.tokens.find(token, "access_token") if claims is not None else None
        if claims is None or record is None or record.kind != "access_token" or record.is_revoked() \
                or record.is_expired() or record.username is None:
            raise InvalidGrantError("the subject token is not a live user access token of this issuer")
        if "act" in claims or claims.get("purpose_of_use") == BREAK_GLASS:
            raise InvalidGrantError("the subject token was already exchanged: exchange the original token")
        return record, claims

    def _break_glass(self, client: Client, record: TokenRecord, user: Authenticated, purpose: str,
                     reason: str) -> Authenticated:
        if purpose != BREAK_GLASS:
            raise InvalidRequestError(f"purpose_of_use may only be {BREAK_GLASS}")
        reason = " ".join(reason.split())  # one line in every log and report it reaches
        if not reason or len(reason) > MAX_REASON or not reason.isprintable():
            raise InvalidRequestError(f"break-glass needs a reason of 1 to {MAX_REASON} printable characters")
        if record.client_id != client.client_id:
            raise InvalidGrantError("break-glass is asked for by the client the user logged in with")
        allowed = self.server.break_glass_roles()
        if not allowed.intersection(user.user.roles):
            log.warning("refused break-glass for %s (roles %s): no role may break the glass",
                        user.user.username, ",".join(user.user.roles) or "-")
            raise InvalidGrantError("none of your roles may use break-glass")
        log.warning("break-glass token for %s through client %s, session %s: %r", user.user.username,
                    client.client_id, user.session, reason)
        return user.with_exchange(purpose_of_use=BREAK_GLASS, reason=reason)

    def _delegation(self, client: Client, record: TokenRecord, user: Authenticated) -> Authenticated:
        if client.config.auth_method == "none":
            raise UnauthorizedClientError("a public client cannot prove it is the actor")
        if record.client_id == client.client_id:
            raise InvalidRequestError("a client does not act for a user through its own token")
        log.info("delegation: client %s acts for %s (session %s)", client.client_id, user.user.username,
                 user.session)
        return user.with_exchange(actor=client.client_id)

    def _narrowed(self, client: Client, granted: str, asked: str | None) -> str:
        """Section 2.1 ``scope``: at most the subject token's scope, and what this client may have."""
        if asked is None:
            return client.get_allowed_scope(granted)
        wanted, held = asked.split(), set(granted.split())
        if not set(wanted) <= held:
            raise InvalidScopeError("the requested scope is wider than the subject token's")
        return client.get_allowed_scope(asked)

    @hooked  # type: ignore[untyped-decorator]  # authlib is untyped
    def create_token_response(self) -> tuple[int, dict[str, object], list[tuple[str, str]]]:
        user = self.request.known_user()
        token = self.generate_token(user=user, scope=self._scope, include_refresh_token=False)
        if user.not_after is not None:  # the exp the token carries (rfc9068: capped at the subject token's)
            token["expires_in"] = max(0, min(int(token["expires_in"]), int(user.not_after - time.time())))
        self.save_token(token)
        body = {**token, "issued_token_type": ACCESS_TOKEN_TYPE}  # section 2.2.1: REQUIRED
        return 200, body, self.TOKEN_RESPONSE_HEADER
