"""RFC 8693 token exchange (section 2.1): a user's access token for a new one, read as section 2.2.1.

The workstation agent uses it for break-glass: ``purpose_of_use`` ``BTG`` and a ``reason`` (parameters
of ours, as section 2.1 allows a server to define; IHE IUA names the claim ``purpose_of_use``). An
automated client uses it to act for a user (its own client authentication makes it the actor).
Only access tokens are exchanged and asked for; the answer must be an RFC 6750 Bearer token, as for
every grant (:func:`oauthclient.token.parse_token_response`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .clientauth import ClientAuth
from .discovery import ProviderMetadata
from .http import Exchange
from .token import TokenResponse, token_request

GRANT_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # section 3


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenExchangeGrant:
    """Section 2.1 with ``subject_token_type`` and ``requested_token_type`` both access tokens."""

    subject_token: str = field(repr=False)
    scope: str | None = None
    purpose_of_use: str | None = None
    reason: str | None = None

    def exchange(self, metadata: ProviderMetadata, client: ClientAuth) -> Exchange[TokenResponse]:
        form = [("grant_type", GRANT_TOKEN_EXCHANGE), ("subject_token", self.subject_token),
                ("subject_token_type", ACCESS_TOKEN_TYPE), ("requested_token_type", ACCESS_TOKEN_TYPE)]
        for name, value in (("scope", self.scope), ("purpose_of_use", self.purpose_of_use), ("reason", self.reason)):
            if value is not None:
                form.append((name, value))
        return token_request(metadata, client, form)


def advertised(metadata: ProviderMetadata) -> bool:
    """Whether the provider lists token exchange in ``grant_types_supported`` (RFC 8414 section 2:
    absent means authorization_code and implicit only). A provider may still refuse a given client."""
    grants = metadata.document.get("grant_types_supported")
    return isinstance(grants, Sequence) and not isinstance(grants, str) and GRANT_TOKEN_EXCHANGE in grants
