"""One OAuth 2 / OpenID Connect client for both agents, sans-I/O with two thin executors on httpx.

| module | specification |
|---|---|
| :mod:`.http` | the request/response values; RFC 6749 section 5.2 errors; RFC 7239 ``Forwarded`` |
| :mod:`.clientauth` | RFC 6749 section 2.3 client authentication; RFC 8705 ``tls_client_auth`` |
| :mod:`.discovery` | OpenID Connect Discovery 1.0 (section 4.3 issuer check); RFC 7517 JWK Set |
| :mod:`.token` | RFC 6749 sections 4.3, 4.4, 5.1, 6 |
| :mod:`.device` | RFC 8628 |
| :mod:`.exchange` | RFC 8693 token exchange |
| :mod:`.introspection` | RFC 7662, RFC 7009 |
| :mod:`.executors` | httpx, sync and async; timeouts, bounds, TLS |
| :mod:`.client` | discovery once per client, operations run on it |

Every operation is a frozen value whose ``exchange(metadata, client)`` gives the request to send and
the function that reads its response; tests check both as tables, without a network.
"""

from .client import AsyncOAuthClient, OAuthClient
from .clientauth import AuthMethod, ClientAuth
from .device import DeviceAuthorization, DeviceAuthorizationRequest, DeviceCodeGrant, DevicePolling, Pending
from .discovery import JwksRequest, ProviderMetadata, discovery
from .errors import OAuthClientError, OAuthError, ResponseError, TransportError
from .exchange import TokenExchangeGrant
from .executors import AsyncExecutor, SyncExecutor, Timeouts, TlsFiles
from .http import Exchange, HttpRequest, HttpResponse, forwarded_for
from .introspection import Introspected, IntrospectionRequest, RevocationRequest
from .operation import Operation
from .token import ClientCredentialsGrant, PasswordGrant, RefreshGrant, TokenResponse

__all__ = [
    "AsyncExecutor", "AsyncOAuthClient", "AuthMethod", "ClientAuth", "ClientCredentialsGrant", "DeviceAuthorization",
    "DeviceAuthorizationRequest", "DeviceCodeGrant", "DevicePolling", "Exchange", "HttpRequest", "HttpResponse",
    "Introspected", "IntrospectionRequest", "JwksRequest", "OAuthClient", "OAuthClientError", "OAuthError",
    "Operation", "PasswordGrant", "Pending", "ProviderMetadata", "RefreshGrant", "ResponseError", "RevocationRequest",
    "SyncExecutor", "Timeouts", "TlsFiles", "TokenExchangeGrant", "TokenResponse", "TransportError", "discovery",
    "forwarded_for",
]
