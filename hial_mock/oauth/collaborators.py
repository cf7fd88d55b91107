"""What the grants and endpoints need from the rest of the HIAL, and nothing more (house rule 8).

Each is a ``typing.Protocol``: the composition root (:mod:`hial_mock.app`) wires the real ones into
:class:`~hial_mock.oauth.server.OAuthServer`; tests may pass fakes through the same constructor.
"""

from __future__ import annotations

from typing import Any, Protocol

from joserfc.jwk import RSAKey

from ..config import ClientConfig, User
from ..forwarded import Source
from .models import Authenticated, AuthorizationCode, Client, DeviceRecord, Session, TokenRecord


class Clients(Protocol):
    """The registered clients (RFC 6749 section 2), as configured now (SIGHUP reloads them)."""

    def client(self, client_id: str) -> Client | None: ...


class Users(Protocol):
    """Resource owners: who may log in, and the login itself (password, one-time code, lockout)."""

    def login(self, username: str, password: str, otp: str | None, *, client: ClientConfig, source: Source,
              how: str) -> Authenticated:
        """The user, authenticated; or an OAuth2Error (invalid_grant, mfa_required, locked)."""
        ...

    def active(self, username: str) -> User | None:
        """The user if they still exist and are not disabled (a refresh token outlives a change)."""
        ...


class Signer(Protocol):
    """The issuer identifier and its current signing key (RFC 7517 ``kid``), and checks of our own tokens."""

    @property
    def issuer(self) -> str: ...

    def signing_key(self) -> RSAKey:
        """The key that signs now, with its ``kid``; one object, so key and ``kid`` always agree."""
        ...

    def read_access_token(self, token: str) -> dict[str, Any] | None:
        """The claims of an RFC 9068 access token we signed (signature, ``typ``, ``iss``, ``exp``), or None."""
        ...


class Tokens(Protocol):
    """Issued tokens by value, their sessions, rotation and revocation."""

    def session(self, sid: str) -> Session: ...

    def save(self, token: str, record: TokenRecord) -> None: ...

    def find(self, token: str, hint: str | None) -> TokenRecord | None: ...

    def refresh(self, value: str) -> TokenRecord | None:
        """A refresh token that may be used; one already rotated away revokes its session (RFC 9700 4.14.2)."""
        ...

    def rotate(self, value: str) -> bool:
        """Mark a refresh token used, once: False if another request used it first."""
        ...

    def revoke(self, record: TokenRecord) -> None: ...


class Codes(Protocol):
    """Authorization codes (RFC 6749 section 4.1.2: single use) and the nonces they carried."""

    def save_code(self, code: AuthorizationCode) -> None: ...

    def code(self, value: str) -> AuthorizationCode | None: ...

    def take_code(self, value: str) -> bool:
        """Delete a code, once: False if another request redeemed it first."""
        ...

    def nonce_seen(self, client_id: str, nonce: str) -> bool: ...


class Devices(Protocol):
    """RFC 8628 device codes and the decisions users make on the verification page."""

    def save_device(self, record: DeviceRecord) -> None: ...

    def device(self, device_code: str) -> DeviceRecord | None: ...

    def too_fast(self, device_code: str) -> bool:
        """RFC 8628 3.5: this poll came sooner than the interval after the previous one."""
        ...

    def decision(self, user_code: str) -> tuple[Authenticated, bool] | None:
        """The user's decision, if made; an approval is handed out once."""
        ...
