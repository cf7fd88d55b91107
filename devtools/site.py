"""A whole site on loopback, for the end-to-end tests and ``make demo``.

HIAL (OIDC provider + PDP), Orthanc (the unchanged PACS, only its modality list set), the server
agent ``GW1`` in front of it, the workstation ``WS1`` (its agent is run per command by
``dicom-agent launch``, or kept running with ``serve``), and a DCMTK storescp as the app's own SCP.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import certs
from agent.config import App, IdentityProvider, Route, WorkstationConfig, WorkstationSection
from agent.config import ReturnSection as WorkstationReturn
from agent.config import TlsFiles as WorkstationTls
from server_agent.config import (
    AuditSection,
    IdentityConfig,
    Node,
    Pacs,
    PdpConfig,
    PseudonymizerSection,
    ServerAgentConfig,
    ServerSection,
    SessionsSection,
    Workstation,
)
from server_agent.config import ReturnSection as ServerReturn
from server_agent.config import TlsFiles as ServerTls
from tomlconf import write
from tomlconf.limits import Limits

from .hial import HialProcess
from .peers import DCMTK_BIN, PROJECT, Orthanc, StoreSCP, dcmtk_env, free_port, wait_for_port
from .pseudonymizer import TRANSLATE_CLIENT, TRANSLATE_SECRET, PseudonymizerProcess


@dataclass
class Site:
    root: Path
    hial_server: dict[str, object] = field(default_factory=dict)
    identity: dict[str, Any] = field(default_factory=dict)  # more keys of the server agent's [identity]
    # The server agent's [sessions] (keys over the defaults); given, it listens for back-channel logout
    # and the HIAL registers that endpoint for client server-agent.
    sessions: dict[str, Any] | None = None
    pdp_url: str | None = None
    pdp: dict[str, Any] = field(default_factory=dict)  # more keys of the server agent's [pdp]
    identity_issuer: str | None = None  # another OpenID provider than the HIAL (issue 14)
    hial_foreign: dict[str, Any] = field(default_factory=dict)  # the HIAL's [foreign.NAME] tables
    pdp_cache: float = 30.0
    leeway: float = 30.0
    pacs_scp: bool = False  # the PACS is a DCMTK storescp --ignore (benchmarks) instead of Orthanc
    audit_port: int | None = None  # an audit record repository (rsyslog, TLS) to send audit messages to
    max_associations: int = 200  # of each agent
    limits: dict[str, Any] = field(default_factory=dict)  # both agents' [limits] (keys over the defaults)
    orthanc_options: dict[str, Any] = field(default_factory=dict)  # more keys of Orthanc's configuration
    pacs_tls: bool = False  # Orthanc speaks DICOM over TLS (client certificates required); the agent uses it
    # The server agent's return listener requires DICOM over TLS with the PACS's certificate, and Orthanc
    # sends its C-MOVE sub-operations that way (the PACS is then Orthanc with DICOM TLS as well).
    return_tls: bool = False
    # Benchmarks: route GW1P (no TLS between the agents, to the server agent's plain listener) and
    # route GW1N (to a second server agent that logs nothing: start_unlogged_server()).
    bench_routes: bool = False
    # The research view (issue 16): a pseudonymisation service, and the server agent's [pseudonymizer].
    research: bool = False
    pseudonymizer: PseudonymizerProcess | None = None
    unlogged: subprocess.Popen[str] | None = None
    pacs: StoreSCP | None = None
    hial: HialProcess | None = None
    orthanc: Orthanc | None = None
    scp: StoreSCP | None = None
    server: subprocess.Popen[str] | None = None
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    def start(self) -> Site:
        self.root.mkdir(parents=True, exist_ok=True)
        if not (self.pki / "ca.crt").exists():
            certs.init_ca(self.pki)
            certs.issue(self.pki, "gw1", ["127.0.0.1"])
            certs.issue(self.pki, "ws1", ["127.0.0.1"])
            certs.issue(self.pki, "pacs", ["127.0.0.1"])
        names = ["server", "plain", "return", "agent", "agent_return", "scp"]
        if self.bench_routes:
            names += ["unlogged", "unlogged_plain", "unlogged_return"]
        if self.sessions is not None:
            names.append("logout")
        self.ports = {name: free_port() for name in names}
        backchannel = {"server-agent": f"http://127.0.0.1:{self.ports['logout']}/backchannel-logout"} \
            if self.sessions is not None else {}
        self.hial = HialProcess(self.root / "hial", server=self.hial_server, backchannel=backchannel,
                                 foreign=self.hial_foreign).start()
        if self.research:
            self.pseudonymizer = PseudonymizerProcess(self.root / "pseudonymizer", issuer=self.hial.issuer).start()
        if self.pacs_scp:
            self.pacs = StoreSCP(self.root / "pacs" / "in", aet="ORTHANC", ignore=True).start()
        else:
            tls = (self.pki / "pacs.crt", self.pki / "pacs.key", self.pki / "ca.crt") if self.orthanc_tls else None
            self.orthanc = Orthanc(self.root / "orthanc", tls=tls,
                                   modalities={"ws1-app": ("MOVESCP@WS1", "127.0.0.1", self.ports["return"])},
                                   tls_modalities=frozenset({"ws1-app"} if self.return_tls else ()),
                                   options=self.orthanc_options).start()
        self.scp = StoreSCP(self.root / "scp" / "in", aet="MOVESCP", port=self.ports["scp"]).start()
        self._write_configs()
        self.start_server()
        return self

    @property
    def orthanc_tls(self) -> bool:
        """Orthanc's DICOM TLS serves both directions: with it on, it listens with TLS only."""
        return self.pacs_tls or self.return_tls

    @property
    def pacs_port(self) -> int:
        port = self.pacs.port if self.pacs is not None else self.orthanc.dicom_port if self.orthanc else 0
        return port

    def _write_configs(self) -> None:
        write(self.root / "server-agent.toml", self.server_agent_config())
        routes = {}
        if self.bench_routes:
            routes = {"GW1P": Route(host="127.0.0.1", port=self.ports["plain"], tls=False),
                      "GW1N": Route(host="127.0.0.1", port=self.ports["unlogged"], server_name="gw1")}
        workstation = workstation_config(pki=self.pki, issuer=self.issuer, listen=self.ports["agent"],
                                         route_port=self.ports["server"], return_port=self.ports["agent_return"],
                                         session_file=self.root / "session.json", apps={"MOVESCP": self.ports["scp"]},
                                         routes=routes, log_file=self.root / "associations.jsonl", refresh_margin=2,
                                         max_associations=self.max_associations)
        write(self.root / "workstation.toml", workstation.replace(limits=Limits(**self.limits)))

    @property
    def issuer(self) -> str:
        assert self.hial is not None
        return self.identity_issuer or self.hial.issuer

    def server_agent_config(self) -> ServerAgentConfig:
        """Server agent GW1 in front of ORTHANC, returning to WS1, with node CTSCANNER."""
        p, pki = self.ports, self.pki
        pacs = Pacs(host="127.0.0.1", port=self.pacs_port, ae_title="ORTHANC", ca=pki / "ca.crt",
                    server_name="127.0.0.1", tls=True) if self.orthanc_tls else \
            Pacs(host="127.0.0.1", port=self.pacs_port, ae_title="ORTHANC")
        if self.return_tls:  # the PACS's certificate (pki/pacs.crt, CN "pacs") on the return path
            pacs = pacs.replace(certificate_names=("pacs",))
        audit = None if self.audit_port is None else \
            AuditSection(repository=("127.0.0.1", self.audit_port), server_name="audit")
        return ServerAgentConfig(
            server=ServerSection(name="GW1", listen=("127.0.0.1", p["server"]), plain_listen=("127.0.0.1", p["plain"]),
                                 return_listen=("127.0.0.1", p["return"]), default_pacs="ORTHANC",
                                 decision_log=self.root / "decisions.jsonl", max_associations=self.max_associations),
            tls=ServerTls(certificate=pki / "gw1.crt", key=pki / "gw1.key", ca=pki / "ca.crt"),
            identity=IdentityConfig(issuer=self.issuer, client_id="server-agent", leeway=self.leeway,
                                    client_secret="demo-server-agent-secret", **self.identity),
            pdp=PdpConfig(url=self.pdp_url or (self.hial.issuer if self.hial else self.issuer), timeout=2.0,
                          cache_seconds=self.pdp_cache, **self.pdp),
            pacs={"ORTHANC": pacs},
            workstations={"WS1": Workstation(host="127.0.0.1", port=p["agent_return"], server_name="ws1")},
            nodes={"CTSCANNER": Node(addresses=("127.0.0.1",), actions=("C-ECHO", "C-STORE"))},
            audit=audit, return_=ServerReturn(tls=self.return_tls), limits=Limits(**self.limits),
            pseudonymizer=None if self.pseudonymizer is None else PseudonymizerSection(
                url=self.pseudonymizer.url, client_id=TRANSLATE_CLIENT, client_secret=TRANSLATE_SECRET),
            sessions=SessionsSection() if self.sessions is None else
            SessionsSection(logout_listen=("127.0.0.1", p["logout"]), **self.sessions))

    def start_unlogged_server(self) -> None:
        """A second server agent, the same but with ``[decision_log] enabled = false``, behind route GW1N."""
        p = self.ports
        config = self.server_agent_config()
        unlogged = config.replace(
            server=config.server.replace(listen=("127.0.0.1", p["unlogged"]), plain_listen=("127.0.0.1", p[
                "unlogged_plain"]), return_listen=("127.0.0.1", p["unlogged_return"])),
            decision_log=config.decision_log.replace(enabled=False))
        path = write(self.root / "server-agent-unlogged.toml", unlogged)
        log = open(self.root / "server-agent-unlogged.log", "a")  # noqa: SIM115 - kept open for the process
        self.unlogged = subprocess.Popen([sys.executable, "-m", "server_agent.cli", "serve", "--config", str(path)],
                                         cwd=PROJECT, stdout=log, stderr=subprocess.STDOUT, text=True)
        wait_for_port(p["unlogged"], 30, self.unlogged)  # type: ignore[arg-type]

    def serve_agent(self, user: str, previous: subprocess.Popen[bytes] | None = None) -> subprocess.Popen[bytes]:
        """`dicom-agent serve` logged in as ``user`` (stopping and logging out ``previous`` first)."""
        config = str(self.root / "workstation.toml")
        if previous is not None:
            previous.terminate()
            previous.wait(10)
            self.agent("logout")
        login = self.agent("login", "--user", user, "--password-stdin", stdin=f"demo-{user}\n")
        if login.returncode != 0:
            raise RuntimeError(f"dicom-agent login as {user} failed: {login.stderr}")
        process = subprocess.Popen([sys.executable, "-m", "agent.cli", "--config", config, "--log-level", "WARNING",
                                    "serve"], cwd=PROJECT)
        wait_for_port(self.ports["agent"], 20, process)  # type: ignore[arg-type]
        return process

    def start_server(self) -> None:
        log = open(self.root / "server-agent.log", "a")  # noqa: SIM115 - kept open for the process
        self.server = subprocess.Popen([sys.executable, "-m", "server_agent.cli", "serve", "--config",
                                        str(self.root / "server-agent.toml")], cwd=PROJECT, stdout=log,
                                       stderr=subprocess.STDOUT, text=True)
        wait_for_port(self.ports["server"], 30, self.server)  # type: ignore[arg-type]
        wait_for_port(self.ports["return"], 30, self.server)  # type: ignore[arg-type]

    def stop_server(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            self.server.wait(15)

    def agent(self, *args: str, stdin: str = "", timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "agent.cli", "--config", str(self.root / "workstation.toml"),
                               *args], input=stdin, capture_output=True, text=True, timeout=timeout,
                              env=dcmtk_env(), cwd=PROJECT)

    def launch(self, user: str, tool: str, *args: object, verbose: bool = False) -> subprocess.CompletedProcess[str]:
        """Run a DCMTK app through `dicom-agent launch` as ``user`` (demo password); ``verbose``: with the
        relay's log lines on stderr (quiet by default, as a clinician sees it)."""
        return self.agent("launch", *(["--verbose"] if verbose else []), "--user", user, "--password-stdin", "--",
                          str(DCMTK_BIN / tool), *map(str, args), stdin=f"demo-{user}\n")

    def decisions(self, settle: float = 0.05) -> str:
        """The decision log once its writer has caught up: records are written in batches (at most
        ``server_agent.decisions.LINGER`` apart), so wait until the file stops growing."""
        path = self.root / "decisions.jsonl"
        size, deadline = -1, time.monotonic() + 5
        while time.monotonic() < deadline:
            now = path.stat().st_size if path.exists() else 0
            if now == size:
                break
            size = now
            time.sleep(settle)
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        self.stop_server()
        if self.unlogged is not None and self.unlogged.poll() is None:
            self.unlogged.terminate()
            self.unlogged.wait(15)
        for part in (self.scp, self.pacs, self.orthanc, self.pseudonymizer, self.hial):
            if part is not None:
                part.stop()


def workstation_config(*, pki: Path, issuer: str, listen: int, route_port: int, return_port: int,
                       session_file: Path, apps: dict[str, int] | None = None, routes: dict[str, Route] | None = None,
                       **workstation: Any) -> WorkstationConfig:
    """Workstation WS1 whose route GW1 leads to a server agent on ``route_port`` (``workstation``: more
    keys of its ``[workstation]`` table, ``routes``: more routes)."""
    return WorkstationConfig(
        workstation=WorkstationSection(name="WS1", listen=("127.0.0.1", listen), default_route="GW1",
                                       session_file=session_file, **workstation),
        identity_provider=IdentityProvider(issuer=issuer, client_id="workstation-agent"),
        tls=WorkstationTls(certificate=pki / "ws1.crt", key=pki / "ws1.key", ca=pki / "ca.crt"),
        routes={"GW1": Route(host="127.0.0.1", port=route_port, server_name="gw1"), **(routes or {})},
        return_=WorkstationReturn(listen=("127.0.0.1", return_port), allowed_server_agents=("gw1",)),
        apps={name: App(store_scp=("127.0.0.1", port)) for name, port in (apps or {}).items()})


def write_workstation_config(path: Path, **options: Any) -> Path:
    """:func:`workstation_config` written to ``path``, its session kept beside it."""
    return write(path, workstation_config(session_file=path.parent / "session.json", **options))
