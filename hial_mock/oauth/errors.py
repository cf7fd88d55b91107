"""Our refusals at the token endpoint, in RFC 6749 section 5.2's vocabulary (``invalid_grant``)."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from authlib.oauth2.rfc6749.errors import InvalidGrantError


class MfaRequiredError(InvalidGrantError):  # type: ignore[misc]  # authlib is untyped
    """invalid_grant with ``mfa_required: true``: ask the user for a TOTP code (RFC 6238)."""

    def get_body(self) -> list[tuple[str, Any]]:
        return [*super().get_body(), ("mfa_required", True)]


class LockedError(InvalidGrantError):  # type: ignore[misc]
    """invalid_grant while a lock holds; the description says why and until when (UTC)."""

    def __init__(self, why: str, until: float) -> None:
        self.until = until
        super().__init__(f"{why}: locked until {utc(until)}")


def utc(timestamp: float) -> str:
    """RFC 3339 in UTC to the second, e.g. ``2026-12-03T10:15:00Z``."""
    moment = dt.datetime.fromtimestamp(math.ceil(timestamp), dt.UTC)  # never before the end
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
