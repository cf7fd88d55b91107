"""Which OS user owns the other end of a loopback TCP connection (one implementation per OS).

Linux: ask the kernel with one sock_diag netlink request for the exact socket (source = our peer,
destination = our side), whose reply carries the owner's uid (``inet_diag_msg.idiag_uid``, see
linux/inet_diag.h). Reading ``/proc/net/tcp`` instead costs ~5 ms on a host with a thousand sockets
in TIME_WAIT (the kernel formats every one); it remains the fallback where netlink is refused.
Other systems have no implementation yet: the caller must deny (or be configured not to check).
"""

from __future__ import annotations

import ipaddress
import os
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


def _proc_hex(address: tuple[str, int]) -> list[str]:
    """The /proc/net/tcp* spellings of an address (IPv4 form, and IPv4-mapped IPv6 form)."""
    ip = ipaddress.ip_address(address[0])
    port = f"{address[1]:04X}"
    if isinstance(ip, ipaddress.IPv4Address):
        v4 = ip.packed[::-1].hex().upper()
        mapped = struct.pack("<4I", *struct.unpack(">4I", ipaddress.IPv6Address(f"::ffff:{ip}").packed)).hex().upper()
        return [f"{v4}:{port}", f"{mapped}:{port}"]
    words = struct.unpack(">4I", ip.packed)
    return [f"{struct.pack('<4I', *words).hex().upper()}:{port}"]


NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
INET_DIAG_NOCOOKIE = 0xFFFFFFFF
_NLMSG = struct.Struct("=IHHII")
_REQ = struct.Struct("=BBBBI")  # family, protocol, ext, pad, states
_SOCKID = struct.Struct(">HH16s16s")  # sport, dport, src, dst (network order)
_TAIL = struct.Struct("=III")  # interface, cookie[2]


def _diag_uid(peer: tuple[str, int], local: tuple[str, int]) -> int | None:
    found = _diag(peer, local)
    return found[0] if found else None


def _diag(peer: tuple[str, int], local: tuple[str, int]) -> tuple[int, int] | None:
    """(uid, inode) of the socket at ``peer`` connected to ``local`` (``inet_diag_msg.idiag_uid``, ``idiag_inode``)."""
    src, dst = ipaddress.ip_address(peer[0]), ipaddress.ip_address(local[0])
    family = socket.AF_INET if isinstance(src, ipaddress.IPv4Address) else socket.AF_INET6
    body = (_REQ.pack(family, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF)
            + _SOCKID.pack(peer[1], local[1], src.packed.ljust(16, b"\0"), dst.packed.ljust(16, b"\0"))
            + _TAIL.pack(0, INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE))
    message = _NLMSG.pack(_NLMSG.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, 1, 0) + body
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(1.0)
        nl.sendto(message, (0, 0))
        reply = nl.recv(8192)
    if len(reply) < _NLMSG.size + 72:
        return None
    _, kind, _, _, _ = _NLMSG.unpack_from(reply)
    if kind != SOCK_DIAG_BY_FAMILY:
        return None
    uid, inode = struct.unpack_from("=II", reply, _NLMSG.size + 64)  # inet_diag_msg.idiag_uid, idiag_inode
    return int(uid), int(inode)


def peer_uid(peer: tuple[str, int], local: tuple[str, int], proc: Path = Path("/proc/net")) -> int | None:
    """The uid owning the socket at ``peer`` connected to ``local``; None if it cannot be found."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        uid = _diag_uid(peer, local)
        if uid is not None:
            return uid
    except OSError:
        pass  # netlink refused (some sandboxes): read the tables instead
    return _proc_uid(peer, local, proc)


def _proc_uid(peer: tuple[str, int], local: tuple[str, int], proc: Path) -> int | None:
    """The same answer from /proc/net/tcp and tcp6: search the text for the exact address pair."""
    for name in ("tcp", "tcp6"):
        try:
            text = (proc / name).read_text()
        except OSError:
            continue
        for peer_hex in _proc_hex(peer):
            for local_hex in _proc_hex(local):
                needle = f" {peer_hex} {local_hex} "
                at = text.find(needle)
                while at >= 0:
                    line = text[at : text.find("\n", at)].split()
                    # Fields after the pair: st tx:rx tr:when retrnsmt uid ... ; 01 = ESTABLISHED.
                    if len(line) >= 7 and line[2] == "01":
                        return int(line[6])
                    at = text.find(needle, at + 1)
    return None


def peer_inode(peer: tuple[str, int], local: tuple[str, int]) -> int | None:
    """The inode of the socket at ``peer`` (the app's end of a loopback connection), to find its process."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        found = _diag(peer, local)
    except OSError:
        return None
    return found[1] if found and found[1] else None


def _children(pid: int, proc: Path) -> list[int]:
    """A process's children (``/proc/PID/task/TID/children``, Linux 3.5+)."""
    out: list[int] = []
    try:
        for task in (proc / str(pid) / "task").iterdir():
            out += [int(c) for c in (task / "children").read_text().split()]
    except (OSError, ValueError):
        pass
    return out


def holder(inode: int, roots: list[int], proc: Path = Path("/proc"), limit: int = 256) -> int | None:
    """Which of ``roots`` (the apps each ``dicom-agent launch`` started) has, itself or in its process
    tree, the socket ``inode`` open: the launch whose terminal a refusal on that socket belongs to.
    Bounded: at most ``limit`` processes looked at; None when not found."""
    needle = f"socket:[{inode}]"
    seen = 0
    for root in roots:
        queue = [root]
        while queue and seen < limit:
            pid = queue.pop()
            seen += 1
            try:
                if any(os.readlink(fd) == needle for fd in (proc / str(pid) / "fd").iterdir()):
                    return root
            except OSError:
                pass  # gone, or not ours
            queue += _children(pid, proc)
    return None


def unix_peer(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket, from the kernel (SO_PEERCRED, unix(7))."""
    pid, uid, gid = struct.unpack("=iII", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return int(pid), int(uid), int(gid)
