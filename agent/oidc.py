"""The wrapper's OpenID Connect client: any conformant provider, found by discovery, on :mod:`oauthclient`.

OpenID Connect Discovery 1.0 (issuer must match exactly), RFC 6749 password grant (with an ``otp``
parameter when the provider answers ``mfa_required``), RFC 8628 device flow (decided on its error
codes), refresh (RFC 6749 section 6), break-glass by token exchange (RFC 8693) and revocation on
logout (RFC 7009), as a public client (``none``). :class:`OidcClient` is the CLI's (one thread,
sync); :class:`AsyncOidcClient` refreshes on the workstation agent's event loop. Tokens never
appear in ``repr`` or logs.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import httpx
import jwt

from oauthclient import (
    AsyncExecutor,
    AsyncOAuthClient,
    AuthMethod,
    ClientAuth,
    DeviceAuthorization,
    DeviceAuthorizationRequest,
    OAuthClient,
    OAuthClientError,
    OAuthError,
    PasswordGrant,
    ProviderMetadata,
    RefreshGrant,
    RevocationRequest,
    SyncExecutor,
    Timeouts,
    TlsFiles,
    TokenExchangeGrant,
    TokenResponse,
    TransportError,
)
from oauthclient.exchange import advertised

from .config import IdentityProvider
from .messages import printable

DeviceStart = DeviceAuthorization  # what `login --device` shows the user, and polls with
BREAK_GLASS = "BTG"  # HL7 v3 ActReason "break the glass", the purpose of use the policy knows
DEFAULT_LIFETIME = 300.0  # seconds, when a token response names no expires_in (RFC 6749 5.1: RECOMMENDED)


class LoginError(Exception):
    """Login failed; the message is the provider's description, safe to show the user.

    ``code`` is the RFC 6749 section 5.2 / RFC 8628 section 3.5 ``error`` code when the provider
    answered one (``invalid_grant``, ``access_denied``, ``expired_token``, ...), else empty.
    """

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class MfaRequired(LoginError):
    """The provider wants a one-time password as well (``mfa_required`` in an invalid_grant)."""


@dataclass(frozen=True, slots=True)
class Tokens:
    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_at: float
    username: str
    scope: str = ""
    id_token: str | None = field(default=None, repr=False)
    purpose_of_use: str = ""  # "BTG" while the access token is a break-glass one (RFC 8693 exchange)

    @property
    def remaining(self) -> float:
        return self.expires_at - time.time()


def login_error(error: OAuthClientError) -> LoginError:
    """What the user is told: the provider's description, with the code kept for the caller."""
    if isinstance(error, OAuthError):
        message = error.description or error.error
        if error.mfa_required:
            return MfaRequired(message or "one-time password required", code=error.error)
        return LoginError(message, code=error.error)
    if isinstance(error, TransportError):
        return LoginError(f"identity provider unreachable: {error}")
    return LoginError(f"identity provider's answer refused: {error}")


def tokens_from(response: TokenResponse, username: str | None) -> Tokens:
    """The session's tokens; the user name shown is read from the tokens when the login named none
    (the device flow), for display only: the server agent verifies what it is given."""
    if not username:
        try:
            claims = jwt.decode(response.id_token or response.access_token, options={"verify_signature": False})
            # The provider's words reach the terminal: no control characters, bounded (issue 17).
            username = printable(str(claims.get("preferred_username") or claims.get("sub") or "?"), 64)
        except jwt.PyJWTError:
            username = "?"
    return Tokens(access_token=response.access_token, refresh_token=response.refresh_token,
                  expires_at=time.time() + (response.expires_in or DEFAULT_LIFETIME), username=username,
                  scope=response.scope or "", id_token=response.id_token)


def _client(provider: IdentityProvider) -> ClientAuth:
    return ClientAuth(client_id=provider.client_id, method=AuthMethod.NONE)  # a public client (RFC 6749 2.1)


class OidcClient:
    """The CLI's client: login, device flow, revoke; used by the thread that made it only."""

    def __init__(self, provider: IdentityProvider, *, transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> None:
        self.provider = provider
        self._executor = SyncExecutor(tls=TlsFiles(ca_file=provider.ca_file),
                                      timeouts=Timeouts.within(provider.timeout), transport=transport)
        self._oauth = OAuthClient(provider.issuer, _client(provider), self._executor, sleep=sleep, clock=clock)

    def metadata(self) -> ProviderMetadata:
        try:
            return self._oauth.metadata()
        except OAuthClientError as error:
            raise login_error(error) from None

    def password_login(self, username: str, password: str, otp: str | None = None) -> Tokens:
        grant = PasswordGrant(username=username, password=password, scope=self.provider.scope, otp=otp or None)
        try:
            return tokens_from(self._oauth.run(grant), username)
        except OAuthClientError as error:
            raise login_error(error) from None

    def device_start(self) -> DeviceStart:
        try:
            return self._oauth.run(DeviceAuthorizationRequest(scope=self.provider.scope))
        except OAuthClientError as error:
            raise login_error(error) from None

    def device_poll(self, start: DeviceStart) -> Tokens:
        """RFC 8628 section 3.4: until approved (tokens), or denied or expired (LoginError with that code)."""
        try:
            return tokens_from(self._oauth.device_login(start), None)
        except OAuthClientError as error:
            raise login_error(error) from None

    def refresh(self, tokens: Tokens) -> Tokens:
        if not tokens.refresh_token:
            raise LoginError("no refresh token")
        try:
            return tokens_from(self._oauth.run(RefreshGrant(refresh_token=tokens.refresh_token)), tokens.username)
        except OAuthClientError as error:
            raise login_error(error) from None

    def break_glass(self, tokens: Tokens, reason: str) -> Tokens:
        """RFC 8693 section 2.1: exchange the user's access token for one with purpose of use BTG.

        The provider decides whether the user's roles allow it. The break-glass token lasts at most one
        access-token lifetime: the refresh token kept is the login's, so a refresh returns to the ordinary
        purpose of use (break-glass is asked for again, never carried on silently), and logout still
        revokes the session.
        """
        grant = TokenExchangeGrant(subject_token=tokens.access_token, purpose_of_use=BREAK_GLASS, reason=reason)
        try:
            response = self._oauth.run(grant)
        except OAuthClientError as error:
            raise login_error(error) from None
        exchanged = tokens_from(response, tokens.username)
        return replace(exchanged, refresh_token=tokens.refresh_token, id_token=tokens.id_token,
                       purpose_of_use=BREAK_GLASS)

    def break_glass_problem(self) -> str | None:
        """For ``check-config``: why ``--break-glass`` cannot work with this provider, or None. Only
        what discovery shows (RFC 8414 ``grant_types_supported``); whether a user's roles allow it is
        the provider's decision at the time."""
        metadata = self.metadata()
        if not advertised(metadata):
            return (f"the identity provider {metadata.issuer} does not list RFC 8693 token exchange in "
                    "grant_types_supported: --break-glass cannot be asked for")
        return None

    def revoke(self, tokens: Tokens) -> None:
        """RFC 7009: revoke the refresh token (the session) and the access token; best effort."""
        for token, hint in ((tokens.refresh_token, "refresh_token"), (tokens.access_token, "access_token")):
            if token:
                # A token we could not revoke still expires on its own.
                with contextlib.suppress(OAuthClientError):
                    self._oauth.run(RevocationRequest(token=token, token_type_hint=hint))

    def close(self) -> None:
        self._executor.close()

    def __enter__(self) -> OidcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncOidcClient:
    """The workstation agent's refresh, on its event loop (one per loop)."""

    def __init__(self, provider: IdentityProvider, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._executor = AsyncExecutor(tls=TlsFiles(ca_file=provider.ca_file),
                                       timeouts=Timeouts.within(provider.timeout), transport=transport)
        self._oauth = AsyncOAuthClient(provider.issuer, _client(provider), self._executor)

    async def refresh(self, tokens: Tokens) -> Tokens:
        if not tokens.refresh_token:
            raise LoginError("no refresh token")
        try:
            response = await self._oauth.run(RefreshGrant(refresh_token=tokens.refresh_token))
        except OAuthClientError as error:
            raise login_error(error) from None
        return tokens_from(response, tokens.username)

    async def aclose(self) -> None:
        await self._executor.aclose()

    async def __aenter__(self) -> AsyncOidcClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


# ---- the session file (between `login` and `serve`): tokens only, never the password ---------------


def save_session(path: Path, tokens: Tokens) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(asdict(tokens), out)
    os.replace(tmp, path)


def load_session(path: Path) -> Tokens | None:
    try:
        if path.stat().st_mode & 0o077:
            raise LoginError(f"{path} is readable by others: refusing to use it (chmod 600)")
        data = json.loads(path.read_text())
        return Tokens(**data)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as error:
        raise LoginError(f"{path} is not a session file: {error}") from None


def delete_session(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
