"""The C baselines the benchmarks measure our relays against, in the same run: socat (a plain TCP
relay) and a pair of stunnel processes (plain -> TLS 1.3 with client certificates -> plain), the
transport our two agents replace when identity and decisions are left out.

Both run as separate processes on free ports of 127.0.0.1, like :class:`devtools.peers.RelayProcess`,
with ``TCP_NODELAY`` on every socket as our agents set it, so that the rows compare relays, not
Nagle's algorithm.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from devtools.peers import _stop, free_port, wait_for_port

STUNNEL = shutil.which("stunnel") or shutil.which("stunnel4") or "/usr/bin/stunnel"
SOCAT = shutil.which("socat") or "/usr/bin/socat"
BUFFER = 256 * 1024  # socat's transfer block: the size the design note measured (style.md)


@dataclass
class Socat:
    """``socat`` relaying 127.0.0.1:port to ``to``, one child per connection."""

    to: tuple[str, int]
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Socat:
        self.port = self.port or free_port()
        self.process = subprocess.Popen(
            [SOCAT, f"-b{BUFFER}", f"TCP-LISTEN:{self.port},bind=127.0.0.1,reuseaddr,fork,nodelay",
             f"TCP:{self.to[0]}:{self.to[1]},nodelay"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, 20, self.process)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def stop(self) -> None:
        _stop(self.process)


@dataclass
class Stunnel:
    """One stunnel process: ``client`` accepts plain TCP and connects with TLS, the server side the
    reverse. TLS 1.3 only, both ends presenting certificates of one CA and verifying the other's chain,
    as the workstation and server agents do (PS3.15 B.12)."""

    folder: Path
    to: tuple[str, int]
    certificate: Path
    key: Path
    ca: Path
    client: bool
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Stunnel:
        self.port = self.port or free_port()
        self.folder.mkdir(parents=True, exist_ok=True)
        name = "client" if self.client else "server"
        config = self.folder / f"stunnel-{name}-{self.port}.conf"
        config.write_text("\n".join((
            "foreground = yes", "pid =", "debug = 3", f"output = {self.folder / f'stunnel-{name}.log'}",
            "socket = l:TCP_NODELAY=1", "socket = r:TCP_NODELAY=1",
            f"[{name}]", f"client = {'yes' if self.client else 'no'}",
            f"accept = 127.0.0.1:{self.port}", f"connect = {self.to[0]}:{self.to[1]}",
            f"cert = {self.certificate}", f"key = {self.key}", f"CAfile = {self.ca}",
            "verifyChain = yes", "sslVersionMin = TLSv1.3", "")))
        self.process = subprocess.Popen([STUNNEL, str(config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        wait_for_port(self.port, 20, self.process)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def stop(self) -> None:
        _stop(self.process)


def stunnel_pair(folder: Path, to: tuple[str, int], pki: Path) -> tuple[Stunnel, Stunnel]:
    """Two stunnel processes in series in front of ``to``: (client side, server side), started; the
    client side's port is the one to connect to. ``pki``: the site's CA with ws1 and gw1 certificates."""
    server = Stunnel(folder, to, pki / "gw1.crt", pki / "gw1.key", pki / "ca.crt", client=False).start()
    try:
        client = Stunnel(folder, ("127.0.0.1", server.port), pki / "ws1.crt", pki / "ws1.key", pki / "ca.crt",
                         client=True).start()
    except BaseException:
        server.stop()
        raise
    return client, server
