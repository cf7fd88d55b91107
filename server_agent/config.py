"""The server agent's configuration (TOML), validated once; see ``configs/demo/server-agent.toml``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from audit.syslog import SyslogTarget
from dicomwire.limits import RelayLimits
from dicomwire.pdu import ae_title_problem
from tomlconf import ConfigError, Table, read

ACTIONS = ("C-ECHO", "C-FIND", "C-GET", "C-MOVE", "C-STORE")


@dataclass(frozen=True, slots=True, kw_only=True)
class Pacs:
    name: str
    host: str
    port: int
    ae_title: str
    tls: PacsTls | None = None  # DICOM over TLS to this PACS (PS3.15 B.1), when it offers it


@dataclass(frozen=True, slots=True, kw_only=True)
class PacsTls:
    ca: Path  # what the PACS's certificate must chain to
    certificate: Path  # ours, for a PACS that requires client certificates (the agent's by default)
    key: Path
    server_name: str  # the name the PACS's certificate must carry


@dataclass(frozen=True, slots=True, kw_only=True)
class Workstation:
    """A workstation agent's return listener, for the C-STORE sub-operations of C-MOVE."""

    name: str
    host: str
    port: int
    server_name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    """A device without user identity (a modality): node policy by AE title and address.

    ``client_id``: the OAuth client whose own tokens (client credentials, RFC 6749 section 4.4)
    this node may present as identity type 5; any other client's own token is refused
    ``not_a_user``, since no person is behind it.
    """

    ae_title: str
    addresses: tuple[str, ...]
    actions: tuple[str, ...]
    client_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ThrottleConfig:
    """Failed identity type 2 logins per source (issue 13): ``max_failures`` within ``window``
    seconds refuse that source's type-2 logins for ``block_seconds``; at most ``max_sources``
    sources are counted and at most as many refused at once (bounded memory)."""

    max_failures: int = 5
    window: float = 300.0
    block_seconds: float = 900.0
    max_sources: int = 10_000


@dataclass(frozen=True, slots=True, kw_only=True)
class IdentityConfig:
    issuer: str
    audience: str
    algorithms: tuple[str, ...]
    token_types: tuple[str, ...]
    client_id: str
    client_secret: str
    introspect: bool
    introspect_cache: float
    username_only: bool  # identity type 1
    username_only_workstations: tuple[str, ...]  # certificate names allowed to assert type 1
    jwks_min_refresh: float
    timeout: float
    ca_file: Path | None
    leeway: float
    client_auth: str = "client_secret_basic"  # how our client authenticates (RFC 6749 2.3.1)
    node_clients: Mapping[str, str] = field(default_factory=dict)  # client_id -> AE title of its [nodes.X]
    throttle: ThrottleConfig = field(default_factory=ThrottleConfig)


@dataclass(frozen=True, slots=True, kw_only=True)
class PdpConfig:
    url: str
    timeout: float
    cache_seconds: float
    cache_size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerAgentConfig:
    path: Path
    name: str
    listen: tuple[str, int]
    plain_listen: tuple[str, int] | None
    return_listen: tuple[str, int]
    certificate: Path
    key: Path
    ca: Path
    identity: IdentityConfig
    pdp: PdpConfig
    pacs: Mapping[str, Pacs]
    default_pacs: str | None
    workstations: Mapping[str, Workstation]
    nodes: Mapping[str, Node]
    decision_log: Path
    decision_log_enabled: bool
    decision_log_key: Path
    decision_log_max_bytes: int
    checkpoint_interval: float
    refuse_unlogged: bool
    audit: SyslogTarget | None
    audit_spool: Path
    max_associations: int
    move_timeout: float
    limits: RelayLimits


def load(path: Path) -> ServerAgentConfig:
    path = path.expanduser().resolve()
    root = Table(read(path), path).allow("server", "tls", "identity", "pdp", "pacs", "workstations", "nodes",
                                         "limits", "decision_log", "audit")
    s = root.table("server").allow("name", "listen", "plain_listen", "return_listen", "default_pacs",
                                   "decision_log", "max_associations", "move_timeout")
    tls = root.table("tls").allow("certificate", "key", "ca")
    files = {}
    for key in ("certificate", "key", "ca"):
        value = tls.path_value(key)
        if value is None or not value.exists():
            raise tls.error(key, f"file {value} not found")
        files[key] = value
    nodes = _nodes(root)
    identity = _identity(root, nodes)
    issuer = identity.issuer
    p = root.table("pdp").allow("url", "timeout", "cache_seconds", "cache_size")
    pdp = PdpConfig(url=p.get("url", str, issuer).rstrip("/"), timeout=p.positive("timeout", float, 2.0),
                    cache_seconds=p.get("cache_seconds", float, 30.0), cache_size=p.positive("cache_size", int, 10000))
    pacs: dict[str, Pacs] = {}
    for name in root.get("pacs", dict, {}):
        t = root.table("pacs").table(name).allow("host", "port", "ae_title", "tls", "ca", "certificate", "key",
                                                 "server_name")
        title = t.get("ae_title", str, name)
        if ae_title_problem(title.encode("ascii", "replace")):
            raise t.error("ae_title", f"{title!r} is not a valid AE title")
        host = t.get("host", str)
        pacs_tls = None
        if t.get("tls", bool, False):
            tls_files = {}
            for key in ("ca", "certificate", "key"):
                value = t.path_value(key, None) or (files[key] if key != "ca" else None)
                if value is None:
                    raise t.error(key, "required with tls = true (the CA the PACS's certificate chains to)")
                if not value.exists():
                    raise t.error(key, f"file {value} not found")
                tls_files[key] = value
            pacs_tls = PacsTls(ca=tls_files["ca"], certificate=tls_files["certificate"], key=tls_files["key"],
                               server_name=t.get("server_name", str, host))
        else:
            for key in ("ca", "certificate", "key", "server_name"):
                if key in t.data:
                    raise t.error(key, "only meaningful with tls = true")
        pacs[name] = Pacs(name=name, host=host, port=t.get("port", int), ae_title=title, tls=pacs_tls)
    if not pacs:
        raise root.error("pacs", "at least one [pacs.NAME] is required")
    default_pacs = s.get("default_pacs", str, None)
    if default_pacs is not None and default_pacs not in pacs:
        raise s.error("default_pacs", f"names {default_pacs!r}, which [pacs] does not define")
    workstations: dict[str, Workstation] = {}
    for name in root.get("workstations", dict, {}):
        t = root.table("workstations").table(name).allow("host", "port", "server_name")
        workstations[name] = Workstation(name=name, host=t.get("host", str), port=t.get("port", int),
                                         server_name=t.get("server_name", str, name.lower()))
    lim = root.table("limits").allow("max_pdu_length", "artim_timeout", "connect_timeout", "idle_timeout",
                                     "decision_timeout", "store_head_length")
    defaults = RelayLimits()
    limits = RelayLimits(
        max_pdu_length=lim.positive("max_pdu_length", int, defaults.max_pdu_length),
        artim_timeout=lim.positive("artim_timeout", float, defaults.artim_timeout),
        connect_timeout=lim.positive("connect_timeout", float, defaults.connect_timeout),
        idle_timeout=lim.positive("idle_timeout", float, defaults.idle_timeout),
        decision_timeout=lim.positive("decision_timeout", float, defaults.decision_timeout),
        store_head_length=lim.positive("store_head_length", int, defaults.store_head_length))
    dl = root.table("decision_log").allow("enabled", "key_file", "max_bytes", "checkpoint_interval", "on_failure")
    logging_enabled = dl.get("enabled", bool, True)
    on_failure = dl.get("on_failure", str, "refuse")
    if on_failure not in ("refuse", "continue"):
        raise dl.error("on_failure", "must be 'refuse' or 'continue'")
    decision_log = s.path_value("decision_log", "decisions.jsonl") or path.parent / "decisions.jsonl"
    a = root.table("audit").allow("repository", "transport", "ca", "certificate", "key", "server_name", "spool")
    audit = None
    if "repository" in a.data:
        transport = a.get("transport", str, "tls")
        if transport not in ("tls", "udp"):
            raise a.error("transport", "must be 'tls' (RFC 5425) or 'udp' (RFC 5426)")
        host, port = a.host_port("repository")
        audit = SyslogTarget(host=host, port=port, transport=transport,
                             ca=a.path_value("ca", None) or files["ca"],
                             certificate=a.path_value("certificate", None) or files["certificate"],
                             key=a.path_value("key", None) or files["key"], server_name=a.get("server_name", str, None))
        if not logging_enabled:
            raise dl.error("enabled", "the audit messages of [audit] are made from decision log records: "
                                      "it cannot be disabled while [audit] names a repository")
    plain = s.get("plain_listen", str, None)
    return ServerAgentConfig(
        path=path, name=s.get("name", str), listen=s.host_port("listen", "127.0.0.1:2762"),
        plain_listen=s.host_port("plain_listen") if plain else None,
        return_listen=s.host_port("return_listen", "127.0.0.1:2763"),
        certificate=files["certificate"], key=files["key"], ca=files["ca"], identity=identity, pdp=pdp, pacs=pacs,
        default_pacs=default_pacs, workstations=workstations, nodes=nodes,
        decision_log=decision_log, decision_log_enabled=logging_enabled,
        decision_log_key=dl.path_value("key_file", str(decision_log.parent / "decision-log.key")) or decision_log,
        decision_log_max_bytes=dl.positive("max_bytes", int, 64 * 1024 * 1024),
        checkpoint_interval=dl.positive("checkpoint_interval", float, 60.0), refuse_unlogged=on_failure == "refuse",
        audit=audit, audit_spool=a.path_value("spool", str(decision_log.parent / "audit-spool")) or decision_log,
        max_associations=s.positive("max_associations", int, 200), move_timeout=s.positive("move_timeout", float,
                                                                                         600.0),
        limits=limits)


def _identity(root: Table, nodes: Mapping[str, Node]) -> IdentityConfig:
    i = root.table("identity").allow(
        "issuer", "audience", "algorithms", "token_types", "client_id", "client_secret", "client_secret_file",
        "introspect", "introspect_cache", "username_only", "username_only_workstations", "jwks_min_refresh",
        "timeout", "ca_file", "leeway", "client_auth", "throttle")
    issuer = i.get("issuer", str).rstrip("/")
    if not issuer.startswith(("https://", "http://127.0.0.1", "http://localhost", "http://[::1]")):
        raise i.error("issuer", "must be https (plain http only on loopback)")
    secret = i.get("client_secret", str, None)
    secret_file = i.path_value("client_secret_file", None)
    if secret_file is not None:
        try:
            secret = secret_file.read_text().strip()
        except OSError as error:
            raise i.error("client_secret_file", str(error)) from None
    if not secret:
        raise i.error("client_secret", "client_secret or client_secret_file is required")
    algorithms = i.strings("algorithms", ("RS256", "ES256"))
    if any(a.lower() == "none" or a.startswith("HS") for a in algorithms):
        raise i.error("algorithms", "only asymmetric algorithms (RS*, ES*, PS*, EdDSA) may verify tokens")
    client_id = i.get("client_id", str)
    node_clients = {node.client_id: node.ae_title for node in nodes.values() if node.client_id}
    if client_id in node_clients:
        raise root.error(f"nodes.{node_clients[client_id]}.client_id", "is the agent's own client: its tokens "
                         "(for the PDP) would pass as that node's identity")
    client_auth = i.get("client_auth", str, "client_secret_basic")
    if client_auth not in ("client_secret_basic", "client_secret_post"):
        raise i.error("client_auth", "must be client_secret_basic or client_secret_post")
    return IdentityConfig(
        issuer=issuer, audience=i.get("audience", str, "dicom-server-agent"), algorithms=algorithms,
        # RFC 9068 section 4: an access token says so in its header; other types only when listed.
        token_types=i.strings("token_types", ("at+jwt", "application/at+jwt")),
        client_id=client_id, client_secret=secret, introspect=i.get("introspect", bool, False),
        introspect_cache=i.get("introspect_cache", float, 10.0), username_only=i.get("username_only", bool, False),
        username_only_workstations=i.strings("username_only_workstations"),
        jwks_min_refresh=i.positive("jwks_min_refresh", float, 10.0), timeout=i.positive("timeout", float, 5.0),
        ca_file=i.path_value("ca_file", None), leeway=_leeway(i), client_auth=client_auth,
        node_clients=node_clients, throttle=_throttle(i.table("throttle")))


def _nodes(root: Table) -> dict[str, Node]:
    nodes: dict[str, Node] = {}
    clients: dict[str, str] = {}
    for title in root.get("nodes", dict, {}):
        t = root.table("nodes").table(title).allow("addresses", "actions", "client_id")
        actions = t.strings("actions", ("C-ECHO", "C-STORE"))
        for action in actions:
            if action not in ACTIONS:
                raise t.error("actions", f"unknown action {action!r}")
        client = t.get("client_id", str, None)
        if client is not None and client in clients:
            raise t.error("client_id", f"is node {clients[client]}'s client already")
        if client is not None:
            clients[client] = title
        nodes[title] = Node(ae_title=title, addresses=t.strings("addresses"), actions=actions, client_id=client)
    return nodes


def _leeway(i: Table) -> float:
    leeway: float = i.get("leeway", float, 30.0)
    if not 0 <= leeway <= 300:
        raise i.error("leeway", "must be 0-300 seconds (clock skew, not a longer token life)")
    return leeway


def _throttle(t: Table) -> ThrottleConfig:
    t.allow("max_failures", "window", "block_seconds", "max_sources")
    d = ThrottleConfig()
    return ThrottleConfig(max_failures=t.positive("max_failures", int, d.max_failures),
                          window=t.positive("window", float, d.window),
                          block_seconds=t.positive("block_seconds", float, d.block_seconds),
                          max_sources=t.positive("max_sources", int, d.max_sources))


__all__ = ["ConfigError", "IdentityConfig", "Node", "Pacs", "PacsTls", "PdpConfig", "ServerAgentConfig",
           "ThrottleConfig", "Workstation", "load"]
