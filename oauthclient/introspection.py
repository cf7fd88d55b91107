"""Token introspection (RFC 7662) and revocation (RFC 7009): the two questions about a token's life.

Introspection answers only with ``"active": true`` or ``false`` (section 2.2): anything else (a
string ``"false"``, a missing member) is malformed, and the caller fails closed. Revocation is
done when the server answers 200 (RFC 7009 section 2.2), whatever the body.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .clientauth import ClientAuth
from .discovery import ProviderMetadata
from .errors import ResponseError
from .http import Exchange, HttpResponse, error_response, form_request, success_object


@dataclass(frozen=True, slots=True, kw_only=True)
class Introspected:
    active: bool
    claims: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class IntrospectionRequest:
    """RFC 7662 section 2.1 (the client authenticates as the protected resource)."""

    token: str = field(repr=False)
    token_type_hint: str | None = "access_token"

    def exchange(self, metadata: ProviderMetadata, client: ClientAuth) -> Exchange[Introspected]:
        if metadata.introspection_endpoint is None:
            raise ResponseError("the provider has no introspection endpoint (RFC 7662)")
        form = [("token", self.token)] + ([("token_type_hint", self.token_type_hint)] if self.token_type_hint else [])
        body, headers = client.apply(form)
        return Exchange(request=form_request(metadata.introspection_endpoint, body, headers), parse=parse_introspection)


def parse_introspection(response: HttpResponse) -> Introspected:
    what = "introspection"
    data = success_object(response, what)
    active = data.get("active")
    if not isinstance(active, bool):  # section 2.2: REQUIRED, a boolean
        raise ResponseError(f"{what}: 'active' is not a JSON boolean")
    return Introspected(active=active, claims=MappingProxyType(data))


@dataclass(frozen=True, slots=True, kw_only=True)
class RevocationRequest:
    """RFC 7009 section 2.1."""

    token: str = field(repr=False)
    token_type_hint: str | None = None

    def exchange(self, metadata: ProviderMetadata, client: ClientAuth) -> Exchange[None]:
        if metadata.revocation_endpoint is None:
            raise ResponseError("the provider has no revocation endpoint (RFC 7009)")
        form = [("token", self.token)] + ([("token_type_hint", self.token_type_hint)] if self.token_type_hint else [])
        body, headers = client.apply(form)
        return Exchange(request=form_request(metadata.revocation_endpoint, body, headers), parse=parse_revocation)


def parse_revocation(response: HttpResponse) -> None:
    if response.status != 200:  # section 2.2.1: unsupported_token_type, 503 with Retry-After, RFC 6749 5.2
        raise error_response(response, "revocation")
