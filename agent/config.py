"""The workstation agent's configuration (TOML): where apps connect, who the identity provider is,
which server agents the routes name, and the apps' own storage SCPs for C-MOVE.

Looked for in ``--config FILE``, else ``$DICOM_AGENT_CONFIG``, else
``~/.config/dicom-agent/workstation.toml``. See ``configs/demo/workstation.toml``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dicomwire.pdu import ae_title_problem
from tomlconf import ConfigError, Table, read

DEFAULT_PATH = Path("~/.config/dicom-agent/workstation.toml")
IDENTITY_MODES = ("jwt", "password")
LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """A server agent: where to connect and the name its certificate must carry."""

    name: str
    host: str
    port: int
    server_name: str
    warm: int = 2  # TLS connections kept ready, so no handshake waits in an association's set-up
    tls: bool = True  # False only on loopback, to measure what TLS costs (tokens would cross in clear)


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsFiles:
    certificate: Path
    key: Path
    ca: Path


@dataclass(frozen=True, slots=True, kw_only=True)
class IdentityProvider:
    issuer: str
    client_id: str
    scope: str
    ca_file: Path | None = None  # to trust an HTTPS issuer signed by a private CA
    timeout: float = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkstationConfig:
    path: Path
    name: str  # this workstation's name: the WS of APP@WS
    listen: tuple[str, int]
    identity: str  # "jwt" (type 5) or "password" (type 2)
    positive_response: bool
    provider: IdentityProvider
    tls: TlsFiles
    routes: Mapping[str, Route]
    default_route: str | None
    return_listen: tuple[str, int]
    allowed_server_agents: tuple[str, ...]
    apps: Mapping[str, tuple[str, int]]  # app AE title -> its storage SCP
    session_file: Path
    log_file: Path | None
    check_owner: bool
    refresh_margin: float  # refresh the access token this many seconds before it expires
    max_associations: int = 200  # beyond it, A-ASSOCIATE-RJ local-limit-exceeded (PS3.8 9.3.4)


def config_path(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    env = os.environ.get("DICOM_AGENT_CONFIG")
    return Path(env) if env else DEFAULT_PATH.expanduser()


def load(path: Path) -> WorkstationConfig:
    path = path.expanduser().resolve()
    root = Table(read(path), path).allow("workstation", "identity_provider", "tls", "routes", "return", "apps")
    ws = root.table("workstation").allow("name", "listen", "identity", "positive_response", "default_route",
                                         "session_file", "log_file", "check_owner", "refresh_margin",
                                         "max_associations")
    name = ws.get("name", str)
    problem = ae_title_problem(name.encode("ascii", "replace"))
    if problem or "@" in name:
        raise ws.error("name", problem or "must not contain '@'")
    listen = ws.host_port("listen", "127.0.0.1:11112")
    if listen[0] not in LOOPBACK:
        raise ws.error("listen", "the workstation agent listens on loopback only")
    identity = ws.get("identity", str, "jwt")
    if identity not in IDENTITY_MODES:
        raise ws.error("identity", f"must be one of {', '.join(IDENTITY_MODES)}")
    idp = root.table("identity_provider").allow("issuer", "client_id", "scope", "ca_file", "timeout")
    issuer = idp.get("issuer", str)
    if not issuer.startswith(("https://", "http://127.0.0.1", "http://localhost", "http://[::1]")):
        raise idp.error("issuer", "must be https (plain http only on loopback)")
    provider = IdentityProvider(
        issuer=issuer.rstrip("/"), client_id=idp.get("client_id", str),
        scope=idp.get("scope", str, "openid offline_access user/ImagingStudy.rs user/ImagingStudy.c"),
        ca_file=idp.path_value("ca_file", None), timeout=idp.positive("timeout", float, 10.0))
    tls_table = root.table("tls").allow("certificate", "key", "ca")
    tls_paths = {k: tls_table.path_value(k) for k in ("certificate", "key", "ca")}
    for key, value in tls_paths.items():
        if value is None or not value.exists():
            raise tls_table.error(key, f"file {value} not found")
    tls = TlsFiles(certificate=tls_paths["certificate"], key=tls_paths["key"], ca=tls_paths["ca"])  # type: ignore[arg-type]
    routes: dict[str, Route] = {}
    routes_table = root.table("routes")
    for route_name in routes_table.data:
        rt = routes_table.table(route_name).allow("host", "port", "server_name", "warm", "tls")
        warm = rt.get("warm", int, 2)
        if not 0 <= warm <= 16:
            raise rt.error("warm", "must be 0-16")
        host, use_tls = rt.get("host", str), rt.get("tls", bool, True)
        if not use_tls and host not in LOOPBACK:
            raise rt.error("tls", "plain TCP to a server agent is allowed on loopback only (to measure TLS's cost): "
                                  "tokens and images would cross the network in clear")
        routes[route_name] = Route(name=route_name, host=host, port=rt.get("port", int),
                                   server_name=rt.get("server_name", str, route_name.lower()), warm=warm, tls=use_tls)
    default_route = ws.get("default_route", str, None)
    if default_route is not None and default_route not in routes:
        raise ws.error("default_route", f"names {default_route!r}, which [routes] does not define")
    ret = root.table("return").allow("listen", "allowed_server_agents")
    apps: dict[str, tuple[str, int]] = {}
    apps_table = root.table("apps")
    for app in apps_table.data:
        at = apps_table.table(app).allow("store_scp")
        composed = f"{app}@{name}"
        if len(composed) > 16:
            raise at.error("store_scp", f"{composed!r} is longer than the 16 characters of an AE title")
        apps[app] = at.host_port("store_scp")
    config_dir = DEFAULT_PATH.expanduser().parent
    return WorkstationConfig(
        path=path, name=name, listen=listen, identity=identity,
        positive_response=ws.get("positive_response", bool, False), provider=provider, tls=tls, routes=routes,
        default_route=default_route, return_listen=ret.host_port("listen", "127.0.0.1:11115"),
        allowed_server_agents=ret.strings("allowed_server_agents", tuple(r.server_name for r in routes.values())),
        apps=apps, session_file=ws.path_value("session_file", str(config_dir / "session.json")) or config_dir,
        log_file=ws.path_value("log_file", None), check_owner=ws.get("check_owner", bool, True),
        refresh_margin=ws.positive("refresh_margin", float, 60.0),
        max_associations=ws.positive("max_associations", int, 200),
    )


__all__ = ["ConfigError", "IdentityProvider", "Route", "TlsFiles", "WorkstationConfig", "config_path", "load"]
