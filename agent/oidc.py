"""The wrapper's OpenID Connect client: any conformant provider, found by discovery.

OpenID Connect Discovery 1.0 (issuer must match exactly), RFC 6749 password grant (with an ``otp``
parameter when the provider answers ``mfa_required``), RFC 8628 device flow, refresh (RFC 6749 6)
and revocation on logout (RFC 7009). Tokens never appear in ``repr`` or logs.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jwt
import requests

from .config import IdentityProvider

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


class LoginError(Exception):
    """Login failed; the message is the provider's description, safe to show the user."""


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

    @property
    def remaining(self) -> float:
        return self.expires_at - time.time()


@dataclass(frozen=True, slots=True)
class DeviceStart:
    device_code: str = field(repr=False)
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_at: float
    interval: float


class OidcClient:
    def __init__(self, provider: IdentityProvider) -> None:
        self.provider = provider
        self.http = requests.Session()
        if provider.ca_file is not None:
            self.http.verify = str(provider.ca_file)
        self._metadata: dict[str, Any] | None = None

    def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            url = f"{self.provider.issuer}/.well-known/openid-configuration"
            try:
                response = self.http.get(url, timeout=self.provider.timeout)
                response.raise_for_status()
                data = response.json()
            except (requests.RequestException, ValueError) as error:
                raise LoginError(f"identity provider unreachable ({url}): {error}") from None
            if data.get("issuer") != self.provider.issuer:  # OIDC Discovery 1.0 section 4.3
                raise LoginError(f"discovery issuer {data.get('issuer')!r} is not {self.provider.issuer!r}")
            self._metadata = data
        return self._metadata

    def _token_request(self, data: dict[str, str]) -> dict[str, Any]:
        endpoint = self.metadata()["token_endpoint"]
        try:
            response = self.http.post(endpoint, data={**data, "client_id": self.provider.client_id},
                                      timeout=self.provider.timeout)
        except requests.RequestException as error:
            raise LoginError(f"identity provider unreachable: {error}") from None
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            raise LoginError(f"identity provider answered HTTP {response.status_code} without JSON") from None
        if response.status_code != 200:
            if body.get("mfa_required"):
                raise MfaRequired(str(body.get("error_description", "one-time password required")))
            raise LoginError(str(body.get("error_description") or body.get("error") or response.status_code))
        return body

    def _tokens(self, body: dict[str, Any], username: str | None) -> Tokens:
        if not username:
            claims = jwt.decode(body.get("id_token") or body["access_token"], options={"verify_signature": False})
            username = str(claims.get("preferred_username") or claims.get("sub") or "?")
        return Tokens(access_token=body["access_token"], refresh_token=body.get("refresh_token"),
                      expires_at=time.time() + float(body.get("expires_in", 300)), username=username,
                      scope=str(body.get("scope", "")), id_token=body.get("id_token"))

    def password_login(self, username: str, password: str, otp: str | None = None) -> Tokens:
        data = {"grant_type": "password", "username": username, "password": password, "scope": self.provider.scope}
        if otp:
            data["otp"] = otp
        return self._tokens(self._token_request(data), username)

    def device_start(self) -> DeviceStart:
        endpoint = self.metadata().get("device_authorization_endpoint")
        if not endpoint:
            raise LoginError("the identity provider offers no device authorization (RFC 8628)")
        try:
            response = self.http.post(endpoint, data={"client_id": self.provider.client_id,
                                                      "scope": self.provider.scope}, timeout=self.provider.timeout)
            body = response.json()
        except (requests.RequestException, ValueError) as error:
            raise LoginError(f"device authorization failed: {error}") from None
        if response.status_code != 200:
            raise LoginError(str(body.get("error_description") or body.get("error")))
        return DeviceStart(device_code=body["device_code"], user_code=body["user_code"],
                           verification_uri=body["verification_uri"],
                           verification_uri_complete=body.get("verification_uri_complete"),
                           expires_at=time.time() + float(body.get("expires_in", 600)),
                           interval=float(body.get("interval", 5)))

    def device_poll(self, start: DeviceStart) -> Tokens:
        interval = start.interval
        while time.time() < start.expires_at:
            time.sleep(interval)
            try:
                return self._tokens(self._token_request({"grant_type": DEVICE_GRANT,
                                                         "device_code": start.device_code}), None)
            except LoginError as error:
                text = str(error)
                if "slow" in text.lower():
                    interval += 5  # RFC 8628 3.5
                elif "pending" not in text.lower() and "authorization_pending" not in text:
                    raise
        raise LoginError("the device code expired before the login was approved")

    def refresh(self, tokens: Tokens) -> Tokens:
        if not tokens.refresh_token:
            raise LoginError("no refresh token")
        body = self._token_request({"grant_type": "refresh_token", "refresh_token": tokens.refresh_token})
        return self._tokens(body, tokens.username)

    def revoke(self, tokens: Tokens) -> None:
        """RFC 7009: revoke the refresh token (the session) and the access token."""
        endpoint = self.metadata().get("revocation_endpoint")
        if not endpoint:
            return
        for token, hint in ((tokens.refresh_token, "refresh_token"), (tokens.access_token, "access_token")):
            if not token:
                continue
            # Best effort: a token we could not revoke still expires on its own.
            with contextlib.suppress(requests.RequestException):
                self.http.post(endpoint, data={"token": token, "token_type_hint": hint,
                                               "client_id": self.provider.client_id}, timeout=self.provider.timeout)


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
