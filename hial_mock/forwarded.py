"""Where a login comes from: the HTTP peer, or the address a trusted forwarder names (RFC 7239).

Failed logins are counted per source (see :mod:`hial_mock.lockout`). The source is the TCP peer of
the HTTP request, except for a confidential client configured with ``forwards_source = true`` (the
server agent, which logs DICOM users in with identity type 2 on their behalf): its password grants
may carry exactly one RFC 7239 element naming the user's own address::

    Forwarded: for="203.0.113.7"
    Forwarded: for="[2001:db8::1]:4711";proto=https

Trust comes from the client's authentication (its secret), never from the peer address. A header
from any other client is ignored (the caller logs it): anyone can send one. From a trusted forwarder,
anything that could be read two ways (two header lines, two elements, a repeated parameter, no
``for``, an obfuscated or ``unknown`` node, RFC 7239 section 6) is refused rather than guessed.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# RFC 7239 section 4 allows any length; one element naming one node needs far less than this.
MAX_HEADER = 256
UNKNOWN_PEER = ipaddress.IPv4Address("0.0.0.0")  # a peer we cannot read: all such peers share one source
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")  # RFC 7230 3.2.6


class ForwardedError(ValueError):
    """A trusted forwarder's ``Forwarded`` header that does not name exactly one address (invalid_request)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Source:
    """The address failures are counted against, and the HTTP peer that told us."""

    address: Address
    peer: Address

    def __str__(self) -> str:
        return str(self.address) if self.address == self.peer else f"{self.address} (forwarded by {self.peer})"


def peer_address(remote_addr: str | None) -> Address:
    """The HTTP peer as an address; an IPv4-mapped IPv6 peer is its IPv4 address (one host, one source)."""
    try:
        address = ipaddress.ip_address(remote_addr or "")
    except ValueError:
        return UNKNOWN_PEER
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        return ipaddress.IPv6Address(address.packed)  # without a %scope: one address, one spelling
    return address


def login_source(peer: Address, headers: list[str], *, trusted: bool) -> Source:
    """The source of a password grant: the peer, or the one address a trusted forwarder names.

    ``headers`` are the request's ``Forwarded`` header lines. A forwarder that sends none is itself the
    source (its own address then bears the failures of everyone it forwards: fail closed).
    """
    if not trusted or not headers:
        return Source(address=peer, peer=peer)
    if len(headers) != 1:
        raise ForwardedError("more than one Forwarded header line")
    return Source(address=parse_for(headers[0]), peer=peer)


def parse_for(header: str) -> Address:
    """The ``for`` node of a single-element ``Forwarded`` header (RFC 7239 sections 4, 5.2 and 6)."""
    if len(header) > MAX_HEADER:
        raise ForwardedError(f"Forwarded header longer than {MAX_HEADER} characters")
    elements = _split(header, ",")
    if len(elements) != 1:
        raise ForwardedError("the Forwarded header must hold exactly one element")
    pairs: dict[str, str] = {}
    for pair in _split(elements[0], ";"):
        name, equals, value = pair.strip().partition("=")
        name = name.strip().lower()
        if not equals or not name or not set(name) <= _TCHAR:
            raise ForwardedError("malformed forwarded-pair")
        if name in pairs:
            raise ForwardedError(f"parameter {name!r} given twice")  # RFC 7239 section 4
        pairs[name] = _value(value.strip())
    if "for" not in pairs:
        raise ForwardedError("no 'for' parameter")
    return _node(pairs["for"])


def _split(text: str, separator: str) -> list[str]:
    """Split on ``separator`` outside quoted strings (RFC 7230 3.2.6)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if quoted or escaped:
        raise ForwardedError("unterminated quoted string")
    parts.append("".join(current))
    return [part for part in parts if part.strip()] if separator == "," else parts


def _value(raw: str) -> str:
    if raw.startswith('"'):
        if len(raw) < 2 or not raw.endswith('"'):
            raise ForwardedError("malformed quoted string")
        out, escaped = [], False
        for char in raw[1:-1]:
            if escaped or char != "\\":
                out.append(char)
                escaped = False
            else:
                escaped = True
        return "".join(out)
    if not raw or not set(raw) <= _TCHAR:
        raise ForwardedError("malformed token value")
    return raw


def _node(node: str) -> Address:
    """RFC 7239 section 6: ``nodename [":" node-port]``; only an IP address names a source."""
    try:
        if node.startswith("["):
            host, bracket, rest = node[1:].partition("]")
            if not bracket or (rest and not _is_port(rest)):
                raise ValueError(node)
            address: Address = ipaddress.IPv6Address(host)
        else:
            host, colon, port = node.partition(":")
            if colon and not _is_port(":" + port):
                raise ValueError(node)
            address = ipaddress.IPv4Address(host)
    except ValueError:
        raise ForwardedError("'for' must name an IPv4 address or a bracketed IPv6 address") from None
    return peer_address(str(address))


def _is_port(text: str) -> bool:
    port = text[1:]
    return text.startswith(":") and port.isascii() and port.isdigit() and len(port) <= 5
