"""Which OS user owns the other end of a loopback TCP connection (one implementation per OS).

Linux: the connecting socket appears in ``/proc/net/tcp`` (or ``tcp6``) with its local address =
our peer and its remote address = our listening side, and the ``uid`` column is its owner. Other
systems have no implementation yet: the caller must deny (or be configured not to check).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import sys
from pathlib import Path


def _proc_address(text: str) -> tuple[str, int]:
    """Decode ``0100007F:1F90`` (IPv4) or the 32-hex-digit IPv6 form of /proc/net/tcp*."""
    addr_hex, port_hex = text.split(":")
    raw = bytes.fromhex(addr_hex)
    if len(raw) == 4:
        address = socket.inet_ntop(socket.AF_INET, raw[::-1])
    else:
        # Four 32-bit words, each in host (little-endian) order.
        words = struct.unpack("<4I", raw)
        address = socket.inet_ntop(socket.AF_INET6, struct.pack(">4I", *words))
        mapped = ipaddress.IPv6Address(address).ipv4_mapped
        if mapped is not None:
            address = str(mapped)
    return address, int(port_hex, 16)


def peer_uid(peer: tuple[str, int], local: tuple[str, int], proc: Path = Path("/proc/net")) -> int | None:
    """The uid owning the socket at ``peer`` connected to ``local``; None if it cannot be found."""
    if not sys.platform.startswith("linux"):
        return None
    wanted_peer = (str(ipaddress.ip_address(peer[0])), peer[1])
    wanted_local = (str(ipaddress.ip_address(local[0])), local[1])
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 8:
                continue
            try:
                if _proc_address(fields[1]) == wanted_peer and _proc_address(fields[2]) == wanted_local:
                    return int(fields[7])
            except ValueError:
                continue
    return None
