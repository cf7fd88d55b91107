"""The sans-I/O vocabulary: an HTTP request to send, the response that came back, and the readings of
a response that every OAuth endpoint shares.

Nothing here does I/O: :mod:`oauthclient.executors` sends an :class:`HttpRequest` and returns an
:class:`HttpResponse`; the modules per specification build the one and read the other, so each can
be tested as a table of bytes in and values out.
"""

from __future__ import annotations

import ipaddress
import json
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .errors import OAuthError, ResponseError, printable

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

# Responses of an authorization server are small: a discovery document or a JWKS of a few keys is a
# few KiB, a token response under 16 KiB. Anything larger is refused before it is held in memory.
MAX_RESPONSE = 256 * 1024
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
# RFC 6749 section 5.2: the characters an ``error`` code may use (%x20-21 / %x23-5B / %x5D-7E).
_ERROR_CHARS = frozenset(chr(c) for c in range(0x20, 0x7F)) - {'"', "\\"}
# Extra members of an error response kept for the caller (``mfa_required`` and the like): scalars only.
_MAX_EXTRA = 16


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpRequest:
    """One request; ``headers`` and ``body`` may hold credentials, so neither is in ``repr``."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    body: bytes = field(default=b"", repr=False)
    max_response: int = MAX_RESPONSE  # bytes of response body accepted (bounded memory)

    def header(self, name: str) -> str | None:
        return _find(self.headers, name)


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpResponse:
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = field(default=b"", repr=False)

    def header(self, name: str) -> str | None:
        return _find(self.headers, name)


@dataclass(frozen=True, slots=True, kw_only=True)
class Exchange(Generic[T_co]):
    """A request and how to read its response: what the executors run."""

    request: HttpRequest
    parse: Callable[[HttpResponse], T_co]


def _find(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    name = name.lower()
    return next((value for key, value in headers if key.lower() == name), None)


def form_request(url: str, form: Iterable[tuple[str, str]], headers: Iterable[tuple[str, str]] = ()) -> HttpRequest:
    """A POST of ``application/x-www-form-urlencoded`` parameters (RFC 6749 appendix B), answered in JSON."""
    body = urllib.parse.urlencode(list(form)).encode("ascii")
    return HttpRequest(method="POST", url=url, body=body,
                       headers=(("Content-Type", FORM), ("Accept", JSON), *headers))


def get_request(url: str, headers: Iterable[tuple[str, str]] = ()) -> HttpRequest:
    return HttpRequest(method="GET", url=url, headers=(("Accept", JSON), *headers))


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # One reading: {"active": false, "active": true} means whatever the reader picks. Refuse it.
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"member {printable(key, 40)!r} appears twice")
        seen[key] = value
    return seen


def json_object(response: HttpResponse, what: str) -> dict[str, Any]:
    """The response body as one JSON object (RFC 8259), strictly: no duplicate members, no NaN."""
    try:
        data = json.loads(response.body, object_pairs_hook=_no_duplicates, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as error:
        raise ResponseError(f"{what}: HTTP {response.status} without a JSON object ({printable(str(error), 80)})",
                            status=response.status) from None
    if not isinstance(data, dict):
        raise ResponseError(f"{what}: HTTP {response.status} with JSON that is not an object", status=response.status)
    return data


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def error_response(response: HttpResponse, what: str) -> OAuthError | ResponseError:
    """The error a non-success response carries: RFC 6749 section 5.2 if it is one, else malformed."""
    try:
        data = json_object(response, what)
    except ResponseError as error:
        return error
    code = data.get("error")
    if not isinstance(code, str) or not code or not set(code) <= _ERROR_CHARS:
        return ResponseError(f"{what}: HTTP {response.status} without an RFC 6749 error code", status=response.status)
    description = data.get("error_description", "")
    uri = data.get("error_uri", "")
    extra = {k: v for k, v in data.items() if k not in ("error", "error_description", "error_uri")
             and isinstance(v, bool | int | float | str)}
    return OAuthError(error=printable(code, 64), description=printable(description) if isinstance(description, str)
                      else "", uri=printable(uri) if isinstance(uri, str) else "", status=response.status,
                      extra={printable(k, 40): printable(v) if isinstance(v, str) else v
                             for k, v in list(extra.items())[:_MAX_EXTRA]})


def success_object(response: HttpResponse, what: str) -> dict[str, Any]:
    """The JSON object of a 200 response, or the error the response carries raised."""
    if response.status != 200:
        raise error_response(response, what)
    return json_object(response, what)


def string(data: dict[str, Any], key: str, what: str, *, required: bool = True) -> str | None:
    """Member ``key`` as a non-empty string (or None when optional and absent); a wrong type is malformed."""
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ResponseError(f"{what}: {key!r} is {'missing' if value is None else 'not a non-empty string'}")
    return value


def seconds(data: dict[str, Any], key: str, what: str, default: float | None) -> float | None:
    """Member ``key`` as a positive number of seconds (JSON booleans are not numbers here)."""
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 10**9:
        raise ResponseError(f"{what}: {key!r} is not a positive number of seconds")
    return float(value)


def secure_url(url: str, issuer: str) -> bool:
    """An endpoint may be used: https, or plain http on loopback only when the issuer is on loopback too.

    RFC 6749 sections 3.1 and 3.2 require TLS at every endpoint that sees credentials; the
    configuration allows a plain-http issuer on loopback (tests, the demo), and then only there.
    """
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname or parts.username or parts.password or parts.fragment:
        return False
    if parts.scheme == "https":
        return True
    return parts.scheme == "http" and _loopback(parts.hostname) and _loopback(urllib.parse.urlsplit(issuer).hostname)


def _loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def forwarded_for(address: str) -> str:
    """The RFC 7239 ``Forwarded`` value naming the client we saw: ``for="192.0.2.43"``, ``for="[2001:db8::17]"``.

    Section 6: an IPv6 address in brackets, quoted; an IPv4-mapped address as the IPv4 address it is
    (the provider counts one source the same way whichever socket family saw it); a zone index
    dropped; anything that is not an IP address is ``for=unknown`` (section 6.2).
    """
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return "for=unknown"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return f'for="[{ip}]"' if ip.version == 6 else f'for="{ip}"'
