"""What can go wrong talking to an authorization server, kept apart by what the caller does about it.

* :class:`OAuthError`: the server answered with an error response (RFC 6749 section 5.2, RFC 8628
  section 3.5, RFC 7009 section 2.2.1): its ``error`` code, description, HTTP status and any extra
  members (``mfa_required``) travel up unchanged, so callers decide on codes, never on prose.
* :class:`ResponseError`: the server answered something no specification allows (not JSON, a member
  of the wrong type, a discovery document naming another issuer): the caller fails closed.
* :class:`TransportError`: no answer at all (refused, timed out, TLS failed, too large).

Every text here may end up in a log: a description is the server's (sanitised, bounded), never a
token, password or client secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

# A description longer than this is cut: it is hostile input that ends up in logs and on screens.
MAX_TEXT = 300


def printable(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` with every control character replaced and its length bounded (for logs and terminals)."""
    cleaned = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return cleaned + ("..." if len(text) > limit else "")


class OAuthClientError(Exception):
    """Any failure of an exchange with the authorization server."""


class TransportError(OAuthClientError):
    """The server could not be reached or did not answer in time (fail closed)."""


class ResponseError(OAuthClientError):
    """The server answered, but not as the specification says it must (fail closed)."""

    def __init__(self, problem: str, *, status: int = 0) -> None:
        super().__init__(problem)
        self.status = status


class OAuthError(OAuthClientError):
    """An error response (RFC 6749 section 5.2): the ``error`` code decides, the rest informs.

    ``status`` is the HTTP status of the response, or 0 when the client decided locally (a device
    code that expired before the server said so).
    """

    def __init__(self, *, error: str, description: str = "", uri: str = "", status: int = 0,
                 extra: Mapping[str, object] | None = None) -> None:
        self.error = error
        self.description = description
        self.uri = uri
        self.status = status
        self.extra: Mapping[str, object] = MappingProxyType(dict(extra or {}))
        super().__init__(f"{error}: {description}" if description else error)

    @property
    def mfa_required(self) -> bool:
        """The provider wants a one-time password as well (an ``invalid_grant`` with ``mfa_required``)."""
        return self.extra.get("mfa_required") is True
