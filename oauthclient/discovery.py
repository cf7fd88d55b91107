"""OpenID Connect Discovery 1.0 and the provider's JWK Set (RFC 7517 section 5).

The document is fetched from ``ISSUER/.well-known/openid-configuration`` (section 4.1) and must name
exactly the issuer it was fetched for (section 4.3), else an attacker who can serve that one URL
could name another issuer. Its members are checked with authlib's
``OpenIDProviderMetadata.validate`` (OIDC Discovery section 3 and RFC 8414 section 2: required
members, JSON types, no ``none`` signing algorithm): upstream keeps that table complete, which a
copy here would not. Every endpoint this client will send credentials to must then also pass
:func:`oauthclient.http.secure_url`, which, unlike authlib's check, no environment variable turns off.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from authlib.oidc.discovery import OpenIDProviderMetadata

from .clientauth import ClientAuth
from .errors import ResponseError, printable
from .http import Exchange, HttpResponse, get_request, json_object, secure_url, string

WELL_KNOWN = "/.well-known/openid-configuration"
# The endpoints this client may use; each is checked when present.
_ENDPOINTS = ("token_endpoint", "jwks_uri", "device_authorization_endpoint", "introspection_endpoint",
              "revocation_endpoint", "userinfo_endpoint")


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderMetadata:
    issuer: str
    token_endpoint: str
    jwks_uri: str
    device_authorization_endpoint: str | None = None
    introspection_endpoint: str | None = None
    revocation_endpoint: str | None = None
    userinfo_endpoint: str | None = None
    document: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), repr=False, compare=False)


def discovery(issuer: str) -> Exchange[ProviderMetadata]:
    """OIDC Discovery 1.0 section 4: the request, and the reading that checks section 4.3."""
    url = issuer.rstrip("/") + WELL_KNOWN
    return Exchange(request=get_request(url), parse=lambda response: parse_metadata(issuer, response))


def parse_metadata(issuer: str, response: HttpResponse) -> ProviderMetadata:
    what = "discovery"
    if response.status != 200:
        raise ResponseError(f"{what}: HTTP {response.status}", status=response.status)
    data = json_object(response, what)
    if data.get("issuer") != issuer:  # OIDC Discovery 1.0 section 4.3: exactly, no normalisation
        raise ResponseError(f"{what}: the document names issuer {printable(str(data.get('issuer')), 100)!r}, "
                            f"not {issuer!r}")
    try:
        OpenIDProviderMetadata(data).validate()
    except (ValueError, TypeError, AttributeError) as error:
        raise ResponseError(f"{what}: {printable(str(error), 120)}") from None
    endpoints: dict[str, str | None] = {}
    for key in _ENDPOINTS:
        url = string(data, key, what, required=key in ("token_endpoint", "jwks_uri"))
        if url is not None and not secure_url(url, issuer):
            raise ResponseError(f"{what}: {key} {printable(url, 100)!r} may not be used (https without user "
                                "info; plain http only on loopback)")
        endpoints[key] = url
    return ProviderMetadata(
        issuer=issuer, token_endpoint=str(endpoints["token_endpoint"]), jwks_uri=str(endpoints["jwks_uri"]),
        device_authorization_endpoint=endpoints["device_authorization_endpoint"],
        introspection_endpoint=endpoints["introspection_endpoint"],
        revocation_endpoint=endpoints["revocation_endpoint"], userinfo_endpoint=endpoints["userinfo_endpoint"],
        document=MappingProxyType(data))


@dataclass(frozen=True, slots=True, kw_only=True)
class JwksRequest:
    """The provider's signing keys (RFC 7517 section 5): the JWK objects as published, for the verifier."""

    def exchange(self, metadata: ProviderMetadata, client: ClientAuth) -> Exchange[tuple[Mapping[str, Any], ...]]:
        return Exchange(request=get_request(metadata.jwks_uri), parse=parse_jwks)


def parse_jwks(response: HttpResponse) -> tuple[Mapping[str, Any], ...]:
    what = "JWKS"
    if response.status != 200:
        raise ResponseError(f"{what}: HTTP {response.status}", status=response.status)
    keys = json_object(response, what).get("keys")
    if not isinstance(keys, list):
        raise ResponseError(f"{what}: 'keys' is not an array (RFC 7517 section 5)")
    return tuple(MappingProxyType(key) for key in keys if isinstance(key, dict))
