"""RFC 8628 device authorization on authlib's own endpoint and grant.

Section 3.1-3.2: the device authorization endpoint hands out a device code and a user code; the user
approves or denies on the verification page (section 3.3, :mod:`hial_mock.pages`); the device polls
the token endpoint (section 3.4) and gets ``authorization_pending``, ``slow_down`` when it polls
sooner than the interval (section 3.5), ``access_denied``, ``expired_token``, or its tokens once.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from authlib.oauth2.rfc8628 import DeviceAuthorizationEndpoint, DeviceCodeGrant

from .models import Authenticated, DeviceRecord
from .rfc6749 import ALL_AUTH_METHODS

if TYPE_CHECKING:
    from .server import OAuthServer


class DeviceAuthorization(DeviceAuthorizationEndpoint):  # type: ignore[misc]  # authlib is untyped
    CLIENT_AUTH_METHODS = ALL_AUTH_METHODS
    USER_CODE_TYPE = "string"  # eight letters without vowels (section 6.1)
    server: OAuthServer

    def __init__(self, server: OAuthServer) -> None:
        super().__init__(server)
        self.EXPIRES_IN = server.settings.device_code_lifetime
        self.INTERVAL = server.settings.device_poll_interval

    def get_verification_uri(self) -> str:
        return f"{self.server.signer.issuer}/device"

    def save_device_credential(self, client_id: str, scope: str | None, data: dict[str, object]) -> None:
        self.server.devices.save_device(DeviceRecord(
            device_code=str(data["device_code"]), user_code=str(data["user_code"]), client_id=client_id,
            scope=scope or "", expires_at=time.time() + self.EXPIRES_IN, interval=self.INTERVAL))


class DeviceGrant(DeviceCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ALL_AUTH_METHODS
    server: OAuthServer

    def query_device_credential(self, device_code: str) -> DeviceRecord | None:
        return self.server.devices.device(device_code)

    def query_user_grant(self, user_code: str) -> tuple[Authenticated, bool] | None:
        return self.server.devices.decision(user_code)

    def should_slow_down(self, credential: DeviceRecord) -> bool:
        return self.server.devices.too_fast(credential.device_code)
