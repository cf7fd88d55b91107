"""Why an identity was not accepted: a reason code to count and filter on, and prose for people."""

from __future__ import annotations

from audit.events import Reason


class AuthenticationFailed(Exception):
    """The identity was not accepted: ``reason`` (the decision log's code), ``detail`` (no secret in it).

    ``str(error)`` is the detail, so a caller that only logs the message keeps working.
    """

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
