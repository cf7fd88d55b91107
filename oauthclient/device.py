"""The device authorization grant (RFC 8628): start (section 3.1-3.2), then poll (sections 3.4-3.5).

Polling decides on the ``error`` code only: ``authorization_pending`` polls again after the
interval, ``slow_down`` adds 5 seconds to it for this and every later poll, anything else
(``access_denied``, ``expired_token``, ...) ends the flow with that code. :class:`DevicePolling`
keeps the interval and the deadline; the executors only sleep what it says.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .clientauth import ClientAuth
from .discovery import ProviderMetadata
from .errors import OAuthError, ResponseError
from .http import Exchange, HttpResponse, form_request, seconds, string, success_object
from .token import TokenResponse, parse_token_response, token_request

GRANT_DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_INTERVAL = 5.0  # RFC 8628 section 3.2: "If no value is provided, clients MUST use 5"
SLOW_DOWN_STEP = 5.0  # RFC 8628 section 3.5: "the interval MUST be increased by 5 seconds"
# A user code and the addresses are shown on the user's terminal: printable, no spaces in a URI, bounded.
_MAX_SHOWN = 512


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceAuthorization:
    """RFC 8628 section 3.2."""

    device_code: str = field(repr=False)
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: float
    interval: float


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceAuthorizationRequest:
    """RFC 8628 section 3.1."""

    scope: str

    def exchange(self, metadata: ProviderMetadata, client: ClientAuth) -> Exchange[DeviceAuthorization]:
        if metadata.device_authorization_endpoint is None:
            raise ResponseError("the provider offers no device authorization endpoint (RFC 8628)")
        form, headers = client.apply([("scope", self.scope)])
        return Exchange(request=form_request(metadata.device_authorization_endpoint, form, headers),
                        parse=parse_device_authorization)


def _shown(value: str | None, key: str, what: str, *, uri: bool) -> str | None:
    if value is not None and (len(value) > _MAX_SHOWN or not value.isprintable() or (uri and (
            " " in value or not value.startswith(("https://", "http://"))))):
        raise ResponseError(f"{what}: {key!r} is not something to show the user")
    return value


def parse_device_authorization(response: HttpResponse) -> DeviceAuthorization:
    what = "device authorization"
    data = success_object(response, what)
    expires_in = seconds(data, "expires_in", what, None)
    if expires_in is None:
        raise ResponseError(f"{what}: 'expires_in' is missing")
    return DeviceAuthorization(
        device_code=str(string(data, "device_code", what)),
        user_code=str(_shown(string(data, "user_code", what), "user_code", what, uri=False)),
        verification_uri=str(_shown(string(data, "verification_uri", what), "verification_uri", what, uri=True)),
        verification_uri_complete=_shown(string(data, "verification_uri_complete", what, required=False),
                                         "verification_uri_complete", what, uri=True),
        expires_in=expires_in, interval=seconds(data, "interval", what, DEFAULT_INTERVAL) or DEFAULT_INTERVAL)


class Pending(enum.Enum):
    """Not yet: poll again (RFC 8628 section 3.5)."""

    AUTHORIZATION_PENDING = "authorization_pending"
    SLOW_DOWN = "slow_down"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceCodeGrant:
    """One poll of the token endpoint (RFC 8628 section 3.4)."""

    device_code: str = field(repr=False)

    def exchange(self, metadata: ProviderMetadata, client: ClientAuth) -> Exchange[TokenResponse | Pending]:
        ask = token_request(metadata, client, [("grant_type", GRANT_DEVICE_CODE), ("device_code", self.device_code)])
        return Exchange(request=ask.request, parse=parse_poll)


def parse_poll(response: HttpResponse) -> TokenResponse | Pending:
    try:
        return parse_token_response(response)
    except OAuthError as error:
        if error.error == Pending.AUTHORIZATION_PENDING.value:
            return Pending.AUTHORIZATION_PENDING
        if error.error == Pending.SLOW_DOWN.value:
            return Pending.SLOW_DOWN
        raise


class DevicePolling:
    """When to poll next, by the codes the provider answered; ``now`` is a monotonic clock's reading."""

    def __init__(self, authorization: DeviceAuthorization, now: float) -> None:
        self.grant = DeviceCodeGrant(device_code=authorization.device_code)
        self.interval = authorization.interval
        self.deadline = now + authorization.expires_in

    def delay(self, now: float) -> float:
        """Seconds to wait before the next poll; raises ``expired_token`` if it would come too late."""
        if now + self.interval >= self.deadline:
            raise OAuthError(error="expired_token", description="the device code expired before the login "
                             "was approved")
        return self.interval

    def answered(self, result: TokenResponse | Pending) -> TokenResponse | None:
        """The tokens, or None to poll again (after a longer interval for ``slow_down``)."""
        if result is Pending.SLOW_DOWN:
            self.interval += SLOW_DOWN_STEP
        return result if isinstance(result, TokenResponse) else None
