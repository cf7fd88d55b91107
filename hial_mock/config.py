"""The HIAL's configuration: one TOML file naming the users, clients and policy files.

Loaded and validated once, at the edge, into frozen objects (house rule 7). Every error names the
file, the key and what is wrong. Paths are relative to the file that names them.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tomlconf import Table, read

from .passwords import is_password_hash
from .policy import Policy, load_policy

GRANT_PASSWORD = "password"
GRANT_CLIENT_CREDENTIALS = "client_credentials"
GRANT_AUTHORIZATION_CODE = "authorization_code"
GRANT_REFRESH_TOKEN = "refresh_token"
GRANT_DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
GRANT_TYPES = frozenset({GRANT_PASSWORD, GRANT_CLIENT_CREDENTIALS, GRANT_AUTHORIZATION_CODE, GRANT_REFRESH_TOKEN,
                         GRANT_DEVICE_CODE})
AUTH_METHODS = frozenset({"client_secret_basic", "client_secret_post", "none"})


@dataclass(frozen=True, slots=True, kw_only=True)
class User:
    username: str
    password_hash: str
    name: str = ""
    email: str = ""
    roles: tuple[str, ...] = ()
    organization: str = ""
    totp_secret: str | None = None
    disabled: bool = False

    def get_user_id(self) -> str:  # authlib's UserMixin
        return self.username

    def __repr__(self) -> str:  # never show the hash or the TOTP secret
        return f"User({self.username!r}, roles={self.roles}, organization={self.organization!r})"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientConfig:
    client_id: str
    secret_hash: str | None
    grant_types: tuple[str, ...]
    scopes: tuple[str, ...]
    redirect_uris: tuple[str, ...] = ()
    auth_method: str = "client_secret_basic"
    audience: str | None = None
    name: str = ""
    may_evaluate: bool = False  # may call the AuthZEN PDP
    may_introspect: bool = False
    # A trusted forwarder (the server agent) logs users in on their behalf and may name the user's own
    # address with an RFC 7239 ``Forwarded`` header, so that failed logins count against that address.
    forwards_source: bool = False

    def __repr__(self) -> str:
        return f"ClientConfig({self.client_id!r}, grants={self.grant_types})"


@dataclass(frozen=True, slots=True, kw_only=True)
class LockoutConfig:
    """Failed logins, counted so that a lock hurts the attacker, never the users (see :mod:`hial_mock.lockout`).

    A failure counts until ``window`` seconds pass without another one for the same key.
    """

    max_failures: int = 5  # per (user, source): that pair is locked for lock_seconds
    source_max_failures: int = 20  # per source across users (password spraying): the source is locked
    window: float = 300.0
    lock_seconds: float = 900.0
    slow_after: int = 3  # per user across sources: from this many failures each attempt waits...
    slow_delay: float = 1.0  # ...this long, doubling with each further failure...
    max_delay: float = 4.0  # ...up to this (below the agents' HTTP timeouts): a delay, never a lock
    max_entries: int = 100_000  # per counter table; when full, new keys are refused (fail closed)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    issuer: str | None  # None: http(s)://host:port of the listener, known once it is bound
    host: str = "127.0.0.1"
    port: int = 8800
    tls_certificate: Path | None = None
    tls_key: Path | None = None
    state_dir: Path | None = None
    access_token_lifetime: int = 300
    refresh_token_lifetime: int = 8 * 3600
    id_token_lifetime: int = 300
    authorization_code_lifetime: int = 300
    device_code_lifetime: int = 600
    device_poll_interval: int = 5
    key_rotation_interval: float = 0.0  # 0: rotate only on SIGUSR1
    default_audience: str = "dicom-server-agent"


@dataclass(frozen=True, slots=True, kw_only=True)
class HialConfig:
    path: Path
    server: ServerConfig
    lockout: LockoutConfig
    users: Mapping[str, User]
    clients: Mapping[str, ClientConfig]
    policy: Policy
    files: tuple[Path, ...] = field(default=())


def load_users(path: Path) -> dict[str, User]:
    root = Table(read(path), path).allow("users")
    users: dict[str, User] = {}
    for username in root.get("users", dict):
        t = root.table("users").table(username).allow(
            "password_hash", "name", "email", "roles", "organization", "totp_secret", "disabled")
        password_hash = t.get("password_hash", str)
        if not is_password_hash(password_hash):
            raise t.error("password_hash", "is not a scrypt hash (make one with `hial-mock hash-password`)")
        totp = t.get("totp_secret", str, None)
        if totp is not None:
            try:
                base64.b32decode(totp.upper() + "=" * (-len(totp) % 8))
            except ValueError:
                raise t.error("totp_secret", "is not base32") from None
        users[username] = User(
            username=username, password_hash=password_hash, name=t.get("name", str, ""),
            email=t.get("email", str, ""), roles=t.strings("roles"), organization=t.get("organization", str, ""),
            totp_secret=totp, disabled=t.get("disabled", bool, False),
        )
    return users


def load_clients(path: Path) -> dict[str, ClientConfig]:
    root = Table(read(path), path).allow("clients")
    clients: dict[str, ClientConfig] = {}
    for client_id in root.get("clients", dict):
        t = root.table("clients").table(client_id).allow(
            "secret_hash", "grant_types", "scopes", "redirect_uris", "token_endpoint_auth_method", "audience",
            "name", "may_evaluate", "may_introspect", "forwards_source")
        method = t.get("token_endpoint_auth_method", str, "client_secret_basic")
        if method not in AUTH_METHODS:
            raise t.error("token_endpoint_auth_method", f"must be one of {sorted(AUTH_METHODS)}")
        secret = t.get("secret_hash", str, None)
        if method != "none" and (secret is None or not is_password_hash(secret)):
            raise t.error("secret_hash", "a confidential client needs a scrypt secret hash")
        grants = t.strings("grant_types")
        for grant in grants:
            if grant not in GRANT_TYPES:
                raise t.error("grant_types", f"unknown grant type {grant!r}")
        if method == "none" and GRANT_CLIENT_CREDENTIALS in grants:
            raise t.error("grant_types", "a public client cannot use client_credentials")
        forwards = t.get("forwards_source", bool, False)
        if forwards and method == "none":
            # Anyone can act as a public client: trusting its Forwarded header would let anyone choose
            # the address its failures count against.
            raise t.error("forwards_source", "only a confidential client may name its users' addresses")
        clients[client_id] = ClientConfig(
            client_id=client_id, secret_hash=secret, grant_types=grants, scopes=t.strings("scopes"),
            redirect_uris=t.strings("redirect_uris"), auth_method=method, audience=t.get("audience", str, None),
            name=t.get("name", str, ""), may_evaluate=t.get("may_evaluate", bool, False),
            may_introspect=t.get("may_introspect", bool, False), forwards_source=forwards,
        )
    return clients


def load_config(path: Path | str) -> HialConfig:
    path = Path(path).resolve()
    root = Table(read(path), path).allow("server", "lockout", "files")
    t = root.table("server").allow(*ServerConfig.__dataclass_fields__)
    issuer = t.get("issuer", str, None)
    if issuer is not None and (not issuer.startswith(("https://", "http://")) or issuer.endswith("/")):
        raise t.error("issuer", "must be an http(s) URL without a trailing slash")
    server = ServerConfig(
        issuer=issuer, host=t.get("host", str, "127.0.0.1"), port=t.get("port", int, 8800),
        tls_certificate=t.path_value("tls_certificate", None), tls_key=t.path_value("tls_key", None),
        state_dir=t.path_value("state_dir", None),
        access_token_lifetime=t.positive("access_token_lifetime", int, 300),
        refresh_token_lifetime=t.positive("refresh_token_lifetime", int, 8 * 3600),
        id_token_lifetime=t.positive("id_token_lifetime", int, 300),
        authorization_code_lifetime=t.positive("authorization_code_lifetime", int, 300),
        device_code_lifetime=t.positive("device_code_lifetime", int, 600),
        device_poll_interval=t.positive("device_poll_interval", int, 5),
        key_rotation_interval=t.get("key_rotation_interval", float, 0.0),
        default_audience=t.get("default_audience", str, "dicom-server-agent"),
    )
    if not 0 <= server.port <= 65535:
        raise t.error("port", "must be 0-65535")
    if (server.tls_certificate is None) != (server.tls_key is None):
        raise t.error("tls_certificate", "tls_certificate and tls_key go together")
    if server.tls_certificate is None and server.host not in ("127.0.0.1", "::1", "localhost"):
        raise t.error("host", "plain HTTP is only allowed on loopback; configure tls_certificate")
    lt = root.table("lockout").allow(*LockoutConfig.__dataclass_fields__)
    lockout = LockoutConfig(
        max_failures=lt.positive("max_failures", int, 5),
        source_max_failures=lt.positive("source_max_failures", int, 20),
        window=lt.positive("window", float, 300.0), lock_seconds=lt.positive("lock_seconds", float, 900.0),
        slow_after=lt.positive("slow_after", int, 3), slow_delay=lt.get("slow_delay", float, 1.0),
        max_delay=lt.get("max_delay", float, 4.0), max_entries=lt.positive("max_entries", int, 100_000),
    )
    if not 0 <= lockout.slow_delay <= lockout.max_delay <= 60:
        raise lt.error("max_delay", "needs 0 <= slow_delay <= max_delay <= 60 seconds")
    files = root.table("files").allow("users", "clients", "policy")
    users_path, clients_path, policy_path = (files.path_value(k) for k in ("users", "clients", "policy"))
    assert users_path and clients_path and policy_path
    return HialConfig(path=path, server=server, lockout=lockout, users=load_users(users_path),
                      clients=load_clients(clients_path), policy=load_policy(policy_path),
                      files=(path, users_path, clients_path, policy_path))
