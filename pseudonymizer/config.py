"""The pseudonymisation service's configuration: one TOML file, read once into frozen values.

    [server]     host, port (loopback by default; plain HTTP only there), tls_certificate, tls_key,
                 state_dir (keys, reverse mapping), access_log
    [identity]   issuer (the HIAL), audience (this service's, in the tokens it accepts), algorithms,
                 leeway, min_refresh, timeout, ca (the HIAL's CA, for an https issuer)
    [access]     translate_clients: the OAuth clients whose own tokens (client credentials) may get
                 pseudonyms and translate them back (the server agents); reidentify_roles: the user
                 roles that may re-identify, one pseudonym at a time, with a reason
    [limits]     max_values per call, max_entries per scope (the reverse mapping's bound)
    [projects.ID] scope (the key and mapping it uses: projects sharing a scope share pseudonyms),
                 prefix of pseudonymous Patient IDs, uid_root ("2.25" or an organisation's root)

Every error names the file, the key and what is wrong (:mod:`tomlconf`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tomlconf import ConfigError, Table, read

from .keys import SCOPE
from .tokens import IdentitySettings

LOOPBACK = ("127.0.0.1", "::1", "localhost")
PREFIX = re.compile(r"[A-Z0-9]{1,16}")
UID_ROOT = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
SCOPE_TRANSLATE = "pseudonyms:translate"
SCOPE_REIDENTIFY = "pseudonyms:reidentify"


@dataclass(frozen=True, slots=True, kw_only=True)
class Project:
    project_id: str
    scope: str
    prefix: str
    uid_root: str = "2.25"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceConfig:
    path: Path
    host: str
    port: int
    state_dir: Path
    access_log: Path
    identity: IdentitySettings
    translate_clients: frozenset[str]
    reidentify_roles: frozenset[str]
    projects: Mapping[str, Project]
    tls_certificate: Path | None = None
    tls_key: Path | None = None
    max_values: int = 10_000  # a C-FIND of 10,000 matches in one call; bounds the request's memory
    max_entries: int = 10_000_000  # per scope: a large archive's instances


def load_config(path: Path | str) -> ServiceConfig:
    path = Path(path).resolve()
    root = Table(read(path), path).allow("server", "identity", "access", "limits", "projects")
    server = root.table("server").allow("host", "port", "state_dir", "access_log", "tls_certificate", "tls_key")
    host, port = server.get("host", str, "127.0.0.1"), server.get("port", int, 8810)
    certificate, key = server.path_value("tls_certificate", None), server.path_value("tls_key", None)
    if not 0 <= port <= 65535:
        raise server.error("port", "must be 0-65535")
    if (certificate is None) != (key is None):
        raise server.error("tls_certificate", "tls_certificate and tls_key go together")
    if certificate is None and host not in LOOPBACK:
        raise server.error("host", "plain HTTP is only allowed on loopback; configure tls_certificate")
    state_dir = server.path_value("state_dir")
    assert state_dir is not None
    access_log = server.path_value("access_log", str(state_dir / "access.jsonl"))
    assert access_log is not None
    access = root.table("access").allow("translate_clients", "reidentify_roles")
    limits = root.table("limits").allow("max_values", "max_entries")
    return ServiceConfig(
        path=path, host=host, port=port, state_dir=state_dir, access_log=access_log,
        tls_certificate=certificate, tls_key=key, identity=_identity(root.table("identity")),
        translate_clients=frozenset(access.strings("translate_clients")),
        reidentify_roles=frozenset(access.strings("reidentify_roles")),
        max_values=limits.positive("max_values", int, 10_000), max_entries=limits.positive("max_entries", int,
                                                                                         10_000_000),
        projects=_projects(root))


def _identity(t: Table) -> IdentitySettings:
    t.allow("issuer", "audience", "algorithms", "leeway", "min_refresh", "timeout", "ca")
    issuer = t.get("issuer", str)
    if not issuer.startswith(("https://", "http://")) or issuer.endswith("/"):
        raise t.error("issuer", "must be an http(s) URL without a trailing slash")
    algorithms = t.strings("algorithms", ("RS256", "ES256"))
    if any(a == "none" or a.startswith("HS") for a in algorithms):
        raise t.error("algorithms", "only asymmetric algorithms may verify tokens")
    return IdentitySettings(issuer=issuer, audience=t.get("audience", str, "pseudonymizer"), algorithms=algorithms,
                            leeway=t.get("leeway", float, 30.0), min_refresh=t.positive("min_refresh", float, 10.0),
                            timeout=t.positive("timeout", float, 5.0), ca_file=t.path_value("ca", None))


def _projects(root: Table) -> dict[str, Project]:
    projects: dict[str, Project] = {}
    for project_id in root.get("projects", dict, {}):
        t = root.table("projects").table(project_id).allow("scope", "prefix", "uid_root")
        if not SCOPE.fullmatch(project_id):
            raise t.error("", "a project id is letters, digits, '.', '_' and '-' (at most 64)")
        scope, prefix = t.get("scope", str, project_id), t.get("prefix", str)
        uid_root = t.get("uid_root", str, "2.25")
        if not SCOPE.fullmatch(scope):
            raise t.error("scope", "letters, digits, '.', '_' and '-' (at most 64)")
        if not PREFIX.fullmatch(prefix):
            raise t.error("prefix", "1-16 upper-case letters or digits")
        if not UID_ROOT.fullmatch(uid_root) or len(uid_root) > 34:
            raise t.error("uid_root", "a UID root of at most 34 characters (PS3.5 9.1), room for 96 bits")
        projects[project_id] = Project(project_id=project_id, scope=scope, prefix=prefix, uid_root=uid_root)
    if not projects:
        raise ConfigError(root.path, "projects", "at least one [projects.ID] is required")
    return projects
