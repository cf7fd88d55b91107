"""The server agent's configuration: one schema, the TOML file's shape; see ``configs/demo/server-agent.toml``.

Each table of the file is a model below and each key is defined once, here. What the code needs but
no file says (the name of a ``[pacs.NAME]``, defaults taken from another table) is derived while the
file is validated (:func:`tomlconf.schema.derived`). Loaded once by :func:`load`; every error names the
file and the dotted key.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, Self, TypeVar

from pydantic import Field, ValidationInfo, field_validator, model_validator

from audit.syslog import SyslogTarget
from oauthclient.http import secure_url
from tomlconf import ConfigError
from tomlconf import load as load_file
from tomlconf.admin import AdminSection
from tomlconf.limits import Limits
from tomlconf.schema import (
    AS_TUPLE,
    AeTitle,
    ExistingFile,
    HostPort,
    Issuer,
    PositiveFloat,
    PositiveInt,
    RelPath,
    Schema,
    Strings,
    derived,
    from_file,
    problem,
)

from .claims import ClaimMapping
from .shared_config import SharedSection

ACTIONS = ("C-ECHO", "C-FIND", "C-GET", "C-MOVE", "C-STORE")
Action = Literal["C-ECHO", "C-FIND", "C-GET", "C-MOVE", "C-STORE"]


class _Client(Protocol):
    """A table with a client of its own at an authorization server (:func:`client_secret`)."""

    client_secret: str
    client_secret_file: Path | None

    def _fill(self, **values: Any) -> Self: ...


C = TypeVar("C", bound=_Client)


def client_secret(table: C, info: ValidationInfo, *, required: bool) -> C:
    """A client's secret at an authorization server (RFC 6749 section 2.3.1), for every table that has
    one (``[identity]``, ``[pdp]``, ``[pseudonymizer]``): ``client_secret``, or what
    ``client_secret_file`` holds, surrounding white space dropped (so that the configuration file can be
    readable by more than the agent), never both. Each problem names its key, never the secret."""
    if table.client_secret_file is not None and from_file(info):
        if table.client_secret:
            raise problem("client_secret_file", "client_secret and client_secret_file exclude each other")
        try:
            table._fill(client_secret=table.client_secret_file.read_text().strip())
        except OSError as error:
            raise problem("client_secret_file", str(error)) from None
    if required and not table.client_secret:
        raise problem("client_secret", "client_secret or client_secret_file is required")
    return table


class ServerSection(Schema):
    name: str  # the ROUTE of NAME@ROUTE at the workstations
    site: str = ""  # the hospital or site, as the security officer's reports name it
    listen: HostPort = ("127.0.0.1", 2762)  # TLS, client certificates required
    plain_listen: HostPort | None = None
    return_listen: HostPort = ("127.0.0.1", 2763)
    default_pacs: str | None = None
    decision_log: RelPath = Field(default=Path("decisions.jsonl"), validate_default=True)
    max_associations: PositiveInt = 200
    move_timeout: PositiveFloat = 600.0  # seconds a permitted C-MOVE keeps the return path open
    # Load balancers (addresses or networks) in front of the listeners: a connection from one must begin
    # with a PROXY protocol v2 header naming the client (HAProxy ``send-proxy-v2``), and that client is
    # the peer for node policy, throttles and per-source bounds. Nobody else's header is believed.
    proxy_protocol_from: Strings = ()
    # Processes sharing the listeners (SO_REUSEPORT) under one supervisor (server_agent.supervisor);
    # more than one needs [shared] redis: the return path of a move may reach any of them.
    workers: PositiveInt = 1

    @field_validator("proxy_protocol_from")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an address or network") from None
        return value


class TlsFiles(Schema):
    """Our certificate and key, and the CA the workstation agents' certificates chain to."""

    certificate: ExistingFile
    key: ExistingFile
    ca: ExistingFile


class ThrottleConfig(Schema):
    """Failed identity type 2 logins per source (issue 13): ``max_failures`` within ``window``
    seconds refuse that source's type-2 logins for ``block_seconds``; at most ``max_sources``
    sources are counted and at most as many refused at once (bounded memory)."""

    max_failures: PositiveInt = 5
    window: PositiveFloat = 300.0
    block_seconds: PositiveFloat = 900.0
    max_sources: PositiveInt = 10_000


class IdentityConfig(Schema):
    issuer: Issuer
    audience: str = "dicom-server-agent"
    algorithms: Strings = ("RS256", "ES256")
    # RFC 9068 section 4: an access token says so in its header; other types only when listed.
    token_types: Strings = ("at+jwt", "application/at+jwt")
    client_id: str
    client_secret: str = Field(default="", repr=False)  # or read from client_secret_file
    client_secret_file: RelPath | None = None
    introspect: bool = False
    introspect_cache: float = 10.0
    username_only: bool = False  # identity type 1
    username_only_workstations: Strings = ()  # certificate names allowed to assert type 1
    jwks_min_refresh: PositiveFloat = 10.0
    jwks_max_age: PositiveFloat = 300.0  # a key withdrawn from the JWKS stops verifying within this
    timeout: PositiveFloat = 5.0
    ca_file: RelPath | None = None
    leeway: float = 30.0
    client_auth: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic"  # RFC 6749 2.3.1
    throttle: ThrottleConfig = ThrottleConfig()
    claims: ClaimMapping = ClaimMapping()  # where the token says who and what (server_agent/claims.py)
    node_clients: Mapping[str, str] = derived(default_factory=dict)  # client_id -> AE title of its [nodes.X]

    @field_validator("algorithms")
    @classmethod
    def _asymmetric(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(a.lower() == "none" or a.startswith("HS") for a in value):
            raise ValueError("only asymmetric algorithms (RS*, ES*, PS*, EdDSA) may verify tokens")
        return value

    @field_validator("leeway")
    @classmethod
    def _skew(cls, value: float) -> float:
        if not 0 <= value <= 300:
            raise ValueError("must be 0-300 seconds (clock skew, not a longer token life)")
        return value

    @model_validator(mode="after")
    def _secret(self, info: ValidationInfo) -> IdentityConfig:
        return client_secret(self, info, required=True)


class PdpConfig(Schema):
    """The AuthZEN PDP and how the agent proves itself to it (issue 14: a PDP need not be the identity
    provider). ``auth``: ``identity`` (the default) asks ``[identity]``'s issuer with ``[identity]``'s
    client; ``client_secret`` and ``tls_client_auth`` run client credentials (RFC 6749 section 4.4) at
    ``issuer``'s token endpoint with this table's client, by secret (section 2.3.1) or by the client
    certificate ``certificate``/``key`` (RFC 8705 section 2.1), which then also goes to the PDP;
    ``token_file`` sends the bearer token a file holds (re-read when it changes)."""

    url: str = ""  # AuthZEN PDP; default: the identity provider's issuer
    timeout: PositiveFloat = 2.0
    cache_seconds: float = 30.0
    cache_size: PositiveInt = 10000
    auth: Literal["identity", "client_secret", "tls_client_auth", "token_file"] = "identity"
    issuer: Issuer | None = None  # the PDP's authorization server; default: url
    client_id: str = ""
    client_secret: str = Field(default="", repr=False)  # or read from client_secret_file
    client_secret_file: RelPath | None = None
    client_auth: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic"
    scope: str = "authzen:evaluate"
    certificate: ExistingFile | None = None
    key: ExistingFile | None = None
    ca_file: RelPath | None = None  # the PDP's (and its issuer's) CA; default: [identity] ca_file
    token_file: RelPath | None = None

    @model_validator(mode="after")
    def _auth(self, info: ValidationInfo) -> PdpConfig:
        client_secret(self, info, required=False)  # required by auth = "client_secret" only, below
        for key in _PDP_KEYS[self.auth][0]:
            if not getattr(self, key):
                raise problem(key, f"required with auth = {self.auth!r}")
        for key in sorted(_PDP_OWN - _PDP_KEYS[self.auth][1]):
            if getattr(self, key):
                raise problem(key, f"not used with auth = {self.auth!r}")
        if (self.certificate is None) != (self.key is None):
            raise problem("certificate", "certificate and key go together")
        return self


# [pdp] auth -> (keys it requires, keys it may have) among the keys of its own client
_PDP_OWN = frozenset({"client_id", "client_secret", "client_secret_file", "issuer", "token_file"})
_PDP_KEYS: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {
    "identity": ((), frozenset()),
    "client_secret": (("client_id", "client_secret"), frozenset({"client_id", "client_secret", "client_secret_file",
                                                                "issuer"})),
    "tls_client_auth": (("client_id", "certificate"), frozenset({"client_id", "issuer"})),
    "token_file": (("token_file",), frozenset({"token_file"})),
}


class PseudonymizerSection(Schema):
    """``[pseudonymizer]``: the pseudonymisation service a research view's pseudonyms come from (issue 16
    item 4; ``pseudonymizer serve``). The agent gets its own token there by client credentials (RFC 6749
    section 4.4, scope ``pseudonyms:translate``) at ``[identity]``'s issuer, as this table's client (one of
    its own: the HIAL gives each client one audience). Without this table a ``de-identify`` obligation is
    refused ("pseudonymizer_unavailable"): the keys and the way back are the service's, never ours."""

    url: str  # its base URL: https, or http on loopback
    client_id: str
    client_secret: str = Field(default="", repr=False)  # or read from client_secret_file
    client_secret_file: RelPath | None = None
    client_auth: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic"
    timeout: PositiveFloat = 5.0  # seconds for one call (then: the request or the matches are refused)
    ca_file: RelPath | None = None  # its CA; default: [identity] ca_file

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        url = url.rstrip("/")
        if not secure_url(url, url):  # real values cross this link: TLS, or loopback
            raise ValueError("must be an https URL, or http on loopback")
        return url

    @model_validator(mode="after")
    def _secret(self, info: ValidationInfo) -> PseudonymizerSection:
        return client_secret(self, info, required=True)


class SessionsSection(Schema):
    """Associations bound to the user's OIDC session (:mod:`server_agent.sessions`): with
    ``logout_listen`` (OpenID Connect Back-Channel Logout 1.0 endpoint, path ``/backchannel-logout``)
    an association with a ``sid`` lives while the session lives, up to ``max_lifetime`` seconds."""

    logout_listen: HostPort | None = None  # None: no endpoint, token lifetimes govern (introspection fallback)
    max_lifetime: PositiveFloat = 8 * 3600.0  # a working day; the HIAL's refresh tokens live as long
    logout_max_age: PositiveFloat = 120.0  # seconds a logout token's iat may lie in the past
    # Logout tokens are addressed (aud) to [identity] client_id, or to one of these: providers tell only
    # the relying parties of a session, so register this endpoint as the workstation agent's
    # backchannel_logout_uri and list that client here.
    logout_audiences: Strings = ()
    remember: PositiveFloat = 3600.0  # an ended session is remembered: longer than any access token lives
    max_ended: PositiveInt = 100_000


class Pacs(Schema):
    """A PACS behind this agent (``[pacs.NAME]``).

    Outgoing DICOM over TLS (PS3.15 B.1) with ``tls``: its certificate must chain to ``ca`` and carry
    ``server_name``; ``certificate``/``key`` are ours (default: ``[tls]``). On the return path with
    ``[return] tls``: its C-MOVE sub-operations must come with a client certificate chaining to ``ca``
    and carrying one of ``certificate_names`` (default: ``server_name``).
    """

    host: str
    port: int = Field(ge=0, le=65535)
    ae_title: AeTitle = ""  # default: the table's name
    tls: bool = False
    ca: ExistingFile | None = None
    certificate: ExistingFile | None = None
    key: ExistingFile | None = None
    server_name: str | None = None
    certificate_names: Strings = ()
    name: str = derived("")  # the NAME of [pacs.NAME]

    @property
    def peer_names(self) -> tuple[str, ...]:
        """The names a return association's certificate may carry to be this PACS."""
        return self.certificate_names or ((self.server_name or self.host),)


class Workstation(Schema):
    """A workstation agent's return listener, for the C-STORE sub-operations of C-MOVE."""

    host: str
    port: int = Field(ge=0, le=65535)
    server_name: str = ""  # its certificate's name; default: the workstation's name, lower case
    name: str = derived("")


class Node(Schema):
    """A device without user identity (a modality): node policy by AE title and address.

    ``client_id``: the OAuth client whose own tokens (client credentials, RFC 6749 section 4.4)
    this node may present as identity type 5; any other client's own token is refused
    ``not_a_user``, since no person is behind it.
    """

    addresses: Strings = ()
    actions: Annotated[tuple[Action, ...], AS_TUPLE] = ("C-ECHO", "C-STORE")
    client_id: str | None = None
    ae_title: str = derived("")


class DecisionLogSection(Schema):
    enabled: bool = True
    key_file: RelPath | None = None  # default: decision-log.key beside the log
    max_bytes: PositiveInt = 64 * 1024 * 1024
    checkpoint_interval: PositiveFloat = 60.0
    on_failure: Literal["refuse", "continue"] = "refuse"


class AuditSection(Schema):
    """DICOM audit messages to the audit record repository (syslog, RFC 5425 / 5426)."""

    repository: HostPort
    transport: Literal["tls", "udp"] = "tls"
    ca: RelPath | None = None  # these three default to [tls]
    certificate: RelPath | None = None
    key: RelPath | None = None
    server_name: str | None = None
    spool: RelPath | None = None  # default: audit-spool beside the decision log

    def target(self) -> SyslogTarget:
        return SyslogTarget(host=self.repository[0], port=self.repository[1], transport=self.transport, ca=self.ca,
                            certificate=self.certificate, key=self.key, server_name=self.server_name)


class ReturnSection(Schema):
    """The C-MOVE return listener (``[server] return_listen``)."""

    # DICOM over TLS (PS3.15 B.12): the PACS must present a certificate from its [pacs.X] ``ca`` naming
    # it (``certificate_names``), and the source address is then not what is trusted.
    tls: bool = False
    max_associations: PositiveInt = 200


class ServerAgentConfig(Schema):
    server: ServerSection
    tls: TlsFiles
    identity: IdentityConfig
    pdp: PdpConfig = PdpConfig()
    sessions: SessionsSection = SessionsSection()
    pacs: Mapping[str, Pacs] = Field(default_factory=dict)
    workstations: Mapping[str, Workstation] = Field(default_factory=dict)
    nodes: Mapping[str, Node] = Field(default_factory=dict)
    limits: Limits = Limits()
    decision_log: DecisionLogSection = DecisionLogSection()
    audit: AuditSection | None = None
    pseudonymizer: PseudonymizerSection | None = None
    return_: ReturnSection = Field(default=ReturnSection(), alias="return")
    shared: SharedSection = SharedSection()
    admin: AdminSection | None = None  # /healthz /readyz /metrics (server_agent/monitoring.py); off when absent
    path: Path = derived(Path("server-agent.toml"))  # the file this was read from

    @model_validator(mode="after")
    def _derive(self, info: ValidationInfo) -> ServerAgentConfig:
        if from_file(info):
            self._fill(path=info.context["path"])  # type: ignore[index]
        self._fill(pacs={name: _pacs(name, p, self.tls) for name, p in self.pacs.items()},
                   workstations={name: w.model_copy(update={"name": name, "server_name": w.server_name
                                                            or name.lower()}) for name, w in self.workstations.items()},
                   nodes={title: n.model_copy(update={"ae_title": title}) for title, n in self.nodes.items()})
        if not self.pacs:
            raise problem("pacs", "at least one [pacs.NAME] is required")
        if self.server.default_pacs is not None and self.server.default_pacs not in self.pacs:
            raise problem("server.default_pacs", f"names {self.server.default_pacs!r}, which [pacs] does not define")
        _check_pacs_tls(self.pacs, self.return_.tls)
        if self.server.workers > 1 and self.shared.redis is None:
            raise problem("server.workers", "more than 1 worker needs [shared] redis (the outstanding C-MOVEs, "
                                            "login throttles and ended sessions every worker must see)")
        self._fill(identity=self.identity.model_copy(update={"node_clients": _node_clients(self.nodes,
                                                                                           self.identity.client_id)}),
                   pdp=_pdp(self.pdp, self.identity))
        log_folder = self.server.decision_log.parent
        self._fill(decision_log=self.decision_log.model_copy(update={
            "key_file": self.decision_log.key_file or log_folder / "decision-log.key"}))
        if self.audit is not None:
            if not self.decision_log.enabled:
                raise problem("decision_log.enabled", "the audit messages of [audit] are made from decision log "
                                                      "records: it cannot be disabled while [audit] names a repository")
            a = self.audit
            self._fill(audit=a.model_copy(update={
                "ca": a.ca or self.tls.ca, "certificate": a.certificate or self.tls.certificate,
                "key": a.key or self.tls.key, "spool": a.spool or log_folder / "audit-spool"}))
        return self

    # -- what the code reads, named as it reads it (views of the keys above, not keys of their own) --
    @property
    def name(self) -> str:
        return self.server.name

    @property
    def listen(self) -> tuple[str, int]:
        return self.server.listen

    @property
    def plain_listen(self) -> tuple[str, int] | None:
        return self.server.plain_listen

    @property
    def return_listen(self) -> tuple[str, int]:
        return self.server.return_listen

    @property
    def default_pacs(self) -> str | None:
        return self.server.default_pacs

    @property
    def max_associations(self) -> int:
        return self.server.max_associations

    @property
    def move_timeout(self) -> float:
        return self.server.move_timeout

    @property
    def certificate(self) -> Path:
        return self.tls.certificate

    @property
    def key(self) -> Path:
        return self.tls.key

    @property
    def ca(self) -> Path:
        return self.tls.ca

    @property
    def refuse_unlogged(self) -> bool:
        """A decision that cannot be logged is refused (``[decision_log] on_failure = "refuse"``)."""
        return self.decision_log.on_failure == "refuse"


def _pacs(name: str, pacs: Pacs, tls: TlsFiles) -> Pacs:
    update: dict[str, object] = {"name": name, "ae_title": pacs.ae_title or name}
    if pacs.tls:  # ours, for a PACS that requires client certificates: the agent's by default
        update |= {"certificate": pacs.certificate or tls.certificate, "key": pacs.key or tls.key,
                   "server_name": pacs.server_name or pacs.host}
    return pacs.model_copy(update=update)


def _pdp(pdp: PdpConfig, identity: IdentityConfig) -> PdpConfig:
    url = (pdp.url or identity.issuer).rstrip("/")
    if pdp.auth == "identity":
        return pdp.model_copy(update={"url": url, "ca_file": pdp.ca_file or identity.ca_file})
    return pdp.model_copy(update={"url": url, "issuer": pdp.issuer or url, "ca_file": pdp.ca_file or identity.ca_file})


def _check_pacs_tls(pacs: Mapping[str, Pacs], return_tls: bool) -> None:
    for name, entry in pacs.items():
        if (entry.tls or return_tls) and entry.ca is None:
            raise problem(f"pacs.{name}.ca", "required with tls = true or [return] tls = true (the CA the "
                                             "PACS's certificate chains to)")
        if not entry.tls:
            for key in ("certificate", "key", "server_name"):
                if getattr(entry, key) is not None:
                    raise problem(f"pacs.{name}.{key}", "only meaningful with tls = true")
        if entry.certificate_names and not return_tls:
            raise problem(f"pacs.{name}.certificate_names", "only meaningful with [return] tls = true")
        if not (entry.tls or return_tls) and entry.ca is not None:
            raise problem(f"pacs.{name}.ca", "only meaningful with tls = true or [return] tls = true")


def _node_clients(nodes: Mapping[str, Node], own_client: str) -> dict[str, str]:
    clients: dict[str, str] = {}
    for title, node in nodes.items():
        if node.client_id is None:
            continue
        if node.client_id == own_client:
            raise problem(f"nodes.{title}.client_id", "is the agent's own client: its tokens (for the PDP) would "
                                                      "pass as that node's identity")
        if node.client_id in clients:
            raise problem(f"nodes.{title}.client_id", f"is node {clients[node.client_id]}'s client already")
        clients[node.client_id] = title
    return clients


def load(path: Path) -> ServerAgentConfig:
    return load_file(path.expanduser().resolve(), ServerAgentConfig)


__all__ = ["ACTIONS", "AuditSection", "ConfigError", "DecisionLogSection", "IdentityConfig", "Node", "Pacs",
           "PdpConfig", "PseudonymizerSection", "ReturnSection", "ServerAgentConfig", "ServerSection", "ThrottleConfig",
           "TlsFiles", "Workstation", "load"]
