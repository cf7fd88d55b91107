"""Token endpoint requests (RFC 6749 sections 4.3, 4.4 and 6; RFC 8693 later) and their responses.

Requests are form posts with the client's authentication (:mod:`oauthclient.clientauth`); a success
is read by :func:`parse_token_response` (RFC 6749 section 5.1), an error raised as
:class:`oauthclient.errors.OAuthError` with its section 5.2 code. Values holding secrets (passwords,
tokens) stay out of ``repr``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .clientauth import ClientAuth
from .discovery import ProviderMetadata
from .errors import ResponseError, printable
from .http import Exchange, HttpResponse, form_request, forwarded_for, seconds, string, success_object

GRANT_PASSWORD = "password"
GRANT_REFRESH = "refresh_token"
GRANT_CLIENT_CREDENTIALS = "client_credentials"


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenResponse:
    """RFC 6749 section 5.1 (and OIDC Core 3.1.3.3 ``id_token``)."""

    access_token: str = field(repr=False)
    token_type: str
    expires_in: float | None = None
    refresh_token: str | None = field(default=None, repr=False)
    scope: str | None = None
    id_token: str | None = field(default=None, repr=False)


def parse_token_response(response: HttpResponse) -> TokenResponse:
    what = "token response"
    data = success_object(response, what)
    token_type = str(string(data, "token_type", what))
    # RFC 6749 section 7.1: a client must not use a token whose type it does not understand; ours is
    # RFC 6750 Bearer (compared without case, as section 5.1 says).
    if token_type.lower() != "bearer":
        raise ResponseError(f"{what}: token_type {printable(token_type, 40)!r} is not Bearer")
    return TokenResponse(access_token=str(string(data, "access_token", what)), token_type="Bearer",
                         expires_in=seconds(data, "expires_in", what, None),
                         refresh_token=string(data, "refresh_token", what, required=False),
                         scope=_scope(data, what), id_token=string(data, "id_token", what, required=False))


def _scope(data: dict[str, object], what: str) -> str | None:
    scope = data.get("scope")
    if scope is None or isinstance(scope, str):
        return scope
    raise ResponseError(f"{what}: 'scope' is not a string")


def token_request(metadata: ProviderMetadata, client: ClientAuth, form: list[tuple[str, str]],
                  headers: tuple[tuple[str, str], ...] = ()) -> Exchange[TokenResponse]:
    body, auth = client.apply(form)
    return Exchange(request=form_request(metadata.token_endpoint, body, (*auth, *headers)),
                    parse=parse_token_response)


@dataclass(frozen=True, slots=True, kw_only=True)
class PasswordGrant:
    """RFC 6749 section 4.3, with ``otp`` when the provider answered ``mfa_required``.

    ``forwarded_for``: the address of the person's machine when we log in on their behalf (the
    server agent's type-2 logins), sent as RFC 7239 ``Forwarded`` so the provider counts failures
    per source, not per our shared client.
    """

    username: str
    password: str = field(repr=False)
    scope: str
    otp: str | None = field(default=None, repr=False)
    forwarded_for: str | None = None

    def exchange(self, metadata: ProviderMetadata, client: ClientAuth) -> Exchange[TokenResponse]:
        form = [("grant_type", GRANT_PASSWORD), ("username", self.username), ("password", self.password),
                ("scope", self.scope)]
        if self.otp:
            form.append(("otp", self.otp))
        headers = (("Forwarded", forwarded_for(self.forwarded_for)),) if self.forwarded_for is not None else ()
        return token_request(metadata, client, form, headers)


@dataclass(frozen=True, slots=True, kw_only=True)
class RefreshGrant:
    """RFC 6749 section 6; ``scope`` omitted asks for the scope first granted."""

    refresh_token: str = field(repr=False)
    scope: str | None = None

    def exchange(self, metadata: ProviderMetadata, client: ClientAuth) -> Exchange[TokenResponse]:
        form = [("grant_type", GRANT_REFRESH), ("refresh_token", self.refresh_token)]
        if self.scope:
            form.append(("scope", self.scope))
        return token_request(metadata, client, form)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientCredentialsGrant:
    """RFC 6749 section 4.4: a token for the client itself (the server agent's own, for the PDP)."""

    scope: str

    def exchange(self, metadata: ProviderMetadata, client: ClientAuth) -> Exchange[TokenResponse]:
        return token_request(metadata, client, [("grant_type", GRANT_CLIENT_CREDENTIALS), ("scope", self.scope)])
