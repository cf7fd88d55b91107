"""Two server-agent instances of one site behind Debian's HAProxy, sharing one Redis (issue 15 item 6).

The site's own ports keep their meaning: the workstation agent's route and Orthanc's move destination
``MOVESCP@WS1`` name ``site.ports["server"]`` and ``site.ports["return"]``, which become HAProxy's
frontends; each instance listens on ports of its own, takes a PROXY protocol v2 header from HAProxy
(``send-proxy-v2``: the agents see the workstation's and the PACS's own addresses), and is health
checked on its admin listener's ``/readyz``. ``order`` chooses the backends' balancing: ``"cross"``
sends every association to instance A while it is up and every return association to B (so a move
permitted by A always has its images come back through B); ``"roundrobin"`` spreads both.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from server_agent.shared_config import SharedSection
from tomlconf import write
from tomlconf.admin import AdminSection

from .peers import PROJECT, free_port, wait_for_port
from .redis_server import RedisServer
from .site import Site

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
CHECK_INTERVAL_MS = 500  # HAProxy's health check period; down after 2 failures in a row


@dataclass
class Instance:
    name: str
    ports: dict[str, int]
    root: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def decision_log(self) -> Path:
        return self.root / f"decisions-{self.name}.jsonl"


@dataclass
class Cluster:
    site: Site
    redis: RedisServer
    order: str = "cross"
    names: tuple[str, str] = ("a", "b")  # of the instances: their configuration and decision log files
    instances: list[Instance] = field(default_factory=list)
    haproxy: subprocess.Popen[bytes] | None = None

    def start(self) -> Cluster:
        self.site.stop_server()  # its ports now belong to HAProxy
        for name in self.names:
            ports = {key: free_port() for key in ("server", "plain", "return", "admin")}
            instance = Instance(name, ports, self.site.root)
            self._configure(instance)
            self.instances.append(instance)
            self.start_instance(instance)
        self._start_haproxy()
        return self

    def _configure(self, instance: Instance) -> None:
        config = self.site.server_agent_config()
        p = instance.ports
        config = config.replace(
            server=config.server.replace(listen=("127.0.0.1", p["server"]), plain_listen=("127.0.0.1", p["plain"]),
                                         return_listen=("127.0.0.1", p["return"]),
                                         proxy_protocol_from=("127.0.0.1",), decision_log=instance.decision_log),
            shared=SharedSection(redis=self.redis.url), admin=AdminSection(listen=("127.0.0.1", p["admin"]),
                                                                           check_interval=1.0))
        write(self.site.root / f"server-agent-{instance.name}.toml", config)

    def start_instance(self, instance: Instance) -> None:
        log = open(self.site.root / f"server-agent-{instance.name}.log", "a")  # noqa: SIM115 - kept open
        instance.process = subprocess.Popen(
            [sys.executable, "-m", "server_agent.cli", "serve", "--config",
             str(self.site.root / f"server-agent-{instance.name}.toml")], cwd=PROJECT, stdout=log,
            stderr=subprocess.STDOUT)
        wait_for_port(instance.ports["admin"], 30, instance.process)

    def _backend(self, name: str, listener: str, first: Instance, second: Instance) -> str:
        balance = "first" if self.order == "cross" else "roundrobin"
        servers = "\n".join(
            f"    server {i.name} 127.0.0.1:{i.ports[listener]} send-proxy-v2 check port {i.ports['admin']} "
            f"inter {CHECK_INTERVAL_MS} fall 2 rise 1" for i in (first, second))
        return f"""backend {name}
    balance {balance}
    option httpchk GET /readyz
    http-check expect status 200
    retries 2
    option redispatch
{servers}
"""

    def _start_haproxy(self) -> None:
        a, b = self.instances
        p = self.site.ports
        config = self.site.root / "haproxy.cfg"
        config.write_text(f"""global
    log stderr format raw local0 warning
defaults
    mode tcp
    log global
    timeout connect 2s
    timeout client 120s
    timeout server 120s
frontend dicom
    bind 127.0.0.1:{p['server']}
    default_backend agents
frontend returns
    bind 127.0.0.1:{p['return']}
    default_backend returns
{self._backend('agents', 'server', a, b)}
{self._backend('returns', 'return', b, a)}""")
        log = open(self.site.root / "haproxy.log", "a")  # noqa: SIM115 - kept open for the process
        self.haproxy = subprocess.Popen([HAPROXY, "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(p["server"], 10, self.haproxy)

    def kill(self, instance: Instance) -> None:
        """``kill -9``: no closing record, no A-RELEASE, its sockets reset by the kernel."""
        assert instance.process is not None
        os.kill(instance.process.pid, signal.SIGKILL)
        instance.process.wait(10)

    def stop(self) -> None:
        processes = [self.haproxy, *(i.process for i in self.instances)]
        for process in processes:
            if process is not None and process.poll() is None:
                process.terminate()
        for process in processes:
            if process is not None:
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()


__all__ = ["CHECK_INTERVAL_MS", "HAPROXY", "Cluster", "Instance"]
