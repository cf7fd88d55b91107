"""The PROXY protocol, version 2 (HAProxy's proxy-protocol.txt, section 2.2): the client's real address,
sent by a load balancer in front of a listener before the first byte of the client's own stream.

Sans-I/O, like the rest of the codec: :func:`header_length` reads the fixed 16 bytes and says how many
follow; :func:`parse` reads the whole header. A header is believed only from a configured proxy
(anyone else could name any address: the listener never parses one from another peer), and a
configured proxy must send one (a connection without it is closed: its first bytes would otherwise be
read as the client's). ``LOCAL`` (the proxy's own health check) and ``UNSPEC`` carry no client: the
connection is the proxy's. TLVs (section 2.2.7) are skipped; the header is bounded.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
FIXED_LENGTH = 16  # signature, version and command, family and protocol, length
# The addresses (36 bytes for IPv6) and TLVs HAProxy sends (ALPN, authority, SSL details, unique id):
# a few hundred bytes; anything longer is no header of a proxy we configured.
MAX_LENGTH = 1024

_VERSION_2 = 0x2
_LOCAL, _PROXY = 0x0, 0x1
_TCP4, _TCP6 = 0x11, 0x21
_UNSPEC = 0x00


class ProxyHeaderError(ValueError):
    """Not a PROXY v2 header we accept: the connection is closed."""


@dataclass(frozen=True, slots=True)
class Proxied:
    """What the header said: the client's address, or None for a LOCAL/UNSPEC connection (the proxy's own)."""

    source: tuple[str, int] | None
    destination: tuple[str, int] | None = None


def header_length(fixed: bytes) -> int:
    """How many bytes follow the 16 fixed ones (section 2.2: signature, version 2, a command we know)."""
    if len(fixed) != FIXED_LENGTH or fixed[:12] != SIGNATURE:
        raise ProxyHeaderError("no PROXY protocol v2 signature")
    if fixed[12] >> 4 != _VERSION_2 or fixed[12] & 0x0F not in (_LOCAL, _PROXY):
        raise ProxyHeaderError(f"PROXY version/command 0x{fixed[12]:02X} not supported")
    length = int.from_bytes(fixed[14:16], "big")
    if length > MAX_LENGTH:
        raise ProxyHeaderError(f"PROXY header of {length} bytes (at most {MAX_LENGTH})")
    return length


def parse(fixed: bytes, rest: bytes) -> Proxied:
    """The header's meaning (section 2.2.3-2.2.6): TCP over IPv4 or IPv6 with a ``PROXY`` command names
    the client; ``LOCAL`` and ``UNSPEC`` name none; any other family or protocol (UDP, UNIX) is refused."""
    length = header_length(fixed)
    if len(rest) != length:
        raise ProxyHeaderError("PROXY header cut short")
    if fixed[12] & 0x0F == _LOCAL or fixed[13] == _UNSPEC:
        return Proxied(None)
    if fixed[13] == _TCP4 and length >= 12:
        source, destination, sport, dport = struct.unpack_from("!4s4sHH", rest)
    elif fixed[13] == _TCP6 and length >= 36:
        source, destination, sport, dport = struct.unpack_from("!16s16sHH", rest)
    else:
        raise ProxyHeaderError(f"PROXY family/protocol 0x{fixed[13]:02X} not supported (TCP over IPv4/IPv6 only)")
    return Proxied((str(ipaddress.ip_address(source)), sport), (str(ipaddress.ip_address(destination)), dport))


def encode(source: tuple[str, int] | None, destination: tuple[str, int] | None = None) -> bytes:
    """A PROXY v2 header as HAProxy's ``send-proxy-v2`` writes it (``source`` None: a LOCAL one)."""
    if source is None:
        return SIGNATURE + bytes([_VERSION_2 << 4 | _LOCAL, _UNSPEC]) + b"\x00\x00"
    client = ipaddress.ip_address(source[0])
    destination = destination or (("::" if client.version == 6 else "0.0.0.0"), 0)
    server = ipaddress.ip_address(destination[0])
    body = client.packed + server.packed + struct.pack("!HH", source[1], destination[1])
    family = _TCP6 if client.version == 6 else _TCP4
    return SIGNATURE + bytes([_VERSION_2 << 4 | _PROXY, family]) + len(body).to_bytes(2, "big") + body


def networks(entries: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """The proxies a listener believes: addresses or networks (``10.0.0.5``, ``10.0.0.0/29``)."""
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def trusted(source: str, proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        address = ipaddress.ip_address(source)
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped is not None:  # a dual-stack listener's view of IPv4
        address = address.ipv4_mapped
    return any(address in network for network in proxies)


__all__ = [
    "FIXED_LENGTH",
    "MAX_LENGTH",
    "Proxied",
    "ProxyHeaderError",
    "encode",
    "header_length",
    "networks",
    "parse",
    "trusted",
]
