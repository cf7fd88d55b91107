"""What connections without an association may hold, per listener (anonymous peers are bounded).

A connection is *pending* from the moment it is accepted until its association request has been
decided (or it ends): a port scan, a load balancer's TCP check, a TLS scanner, a client that never
finishes its TLS handshake or its A-ASSOCIATE-RQ. Pending connections are counted in all and per
source address, and the bytes they make us hold (partial requests) are counted in all; a connection
beyond a bound is closed at once, before any TLS work, and one whose bytes would exceed the budget is
refused. A source is an address as :func:`source_key` counts it (an IPv6 subscriber's /64 is one).
A slot (``max_associations``) is taken only by a connection whose transport is up and whose
A-ASSOCIATE-RQ is whole and checked: a silent or trickling connection holds a pending share, never a slot.
"""

from __future__ import annotations

import ipaddress

from .limits import RelayLimits

# An IPv6 host is given a /64 (RFC 6177) and may use any of its addresses: holding 2^64 of them must not
# buy 2^64 shares of a bound kept per source.
IPV6_PREFIX = 64


def source_key(address: str) -> str:
    """The source an address counts as: an IPv4 address; an IPv6 address's /64; an IPv4-mapped IPv6
    address as its IPv4 address; anything else (a Unix socket, a test's name) as given, bounded."""
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))
    return str(ip)


class Admission:
    """The pending connections of one listener."""

    __slots__ = ("bytes", "limits", "per_source", "total")

    def __init__(self, limits: RelayLimits) -> None:
        self.limits = limits
        self.per_source: dict[str, int] = {}  # at most max_pending_connections keys, each counting >= 1
        self.total = 0
        self.bytes = 0

    def admit(self, source: str, *, per_source: bool = True) -> Pending | None:
        """A new connection from ``source``; None when a bound is reached (close it at once). A trusted
        proxy's connection is counted per source only once it names its client (:meth:`Pending.move`)."""
        limits = self.limits
        source = source_key(source)
        if self.total >= limits.max_pending_connections or \
                (per_source and self.per_source.get(source, 0) >= limits.max_pending_per_source):
            return None
        self.total += 1
        self.per_source[source] = self.per_source.get(source, 0) + 1
        return Pending(self, source)


class Pending:
    """One pending connection's share: released exactly once (:meth:`leave`), however it ends."""

    __slots__ = ("admission", "held", "source")

    def __init__(self, admission: Admission, source: str) -> None:
        self.admission = admission
        self.source: str | None = source
        self.held = 0

    def charge(self, count: int) -> bool:
        """Account for ``count`` more bytes held for this connection; False if the budget is spent."""
        admission = self.admission
        if admission.bytes + count > admission.limits.max_pending_bytes:
            return False
        admission.bytes += count
        self.held += count
        return True

    def move(self, source: str) -> bool:
        """Count this connection against ``source`` instead (the client a trusted proxy named, PROXY
        protocol); False, and still counted where it was, when that source is at its bound."""
        admission = self.admission
        source = source_key(source)
        if self.source is None or admission.per_source.get(source, 0) >= admission.limits.max_pending_per_source:
            return False
        self._uncount()
        admission.per_source[source] = admission.per_source.get(source, 0) + 1
        self.source = source
        return True

    def _uncount(self) -> None:
        assert self.source is not None
        per_source = self.admission.per_source
        left = per_source[self.source] - 1
        if left:
            per_source[self.source] = left
        else:
            del per_source[self.source]

    def leave(self) -> None:
        """No longer pending (its association was decided, or it ended)."""
        if self.source is None:
            return
        admission = self.admission
        admission.bytes -= self.held
        self.held = 0
        admission.total -= 1
        self._uncount()
        self.source = None


__all__ = ["IPV6_PREFIX", "Admission", "Pending", "source_key"]
