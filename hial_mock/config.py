"""The HIAL's configuration: one TOML file naming the users, clients and policy files.

Loaded and validated once, at the edge, into frozen objects (house rule 7). Every error names the
file, the key and what is wrong. Paths are relative to the file that names them.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
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

    def __repr__(self) -> str:
        return f"ClientConfig({self.client_id!r}, grants={self.grant_types})"


@dataclass(frozen=True, slots=True, kw_only=True)
class LockoutConfig:
    """Failed logins per user and per client: slowed after ``slow_after``, locked after ``max_failures``."""

    max_failures: int = 5
    window: float = 300.0
    lock_seconds: float = 900.0
    slow_after: int = 3
    slow_delay: float = 1.0


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


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(path, "(file)", "not found") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(path, "(syntax)", str(error)) from None


def _get(table: Mapping[str, Any], key: str, kind: type | tuple[type, ...], path: Path, prefix: str,
         default: Any = ..., ) -> Any:
    if key not in table:
        if default is ...:
            raise ConfigError(path, f"{prefix}{key}", "is required")
        return default
    value = table[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(path, f"{prefix}{key}", f"must be {names}, not {type(value).__name__}")
    return value


def _strings(table: Mapping[str, Any], key: str, path: Path, prefix: str) -> tuple[str, ...]:
    value = _get(table, key, list, path, prefix, [])
    if not all(isinstance(v, str) for v in value):
        raise ConfigError(path, f"{prefix}{key}", "must be a list of strings")
    return tuple(value)


def _unknown(table: Mapping[str, Any], allowed: set[str], path: Path, prefix: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(path, f"{prefix}{key}", f"unknown key (known: {', '.join(sorted(allowed))})")


def _positive(value: float, path: Path, key: str) -> None:
    if value <= 0:
        raise ConfigError(path, key, "must be above 0")


def load_users(path: Path) -> dict[str, User]:
    data = _read(path)
    _unknown(data, {"users"}, path, "")
    users: dict[str, User] = {}
    for username, table in _get(data, "users", dict, path, "").items():
        prefix = f"users.{username}."
        if not isinstance(table, dict):
            raise ConfigError(path, f"users.{username}", "must be a table")
        _unknown(table, {"password_hash", "name", "email", "roles", "organization", "totp_secret", "disabled"},
                 path, prefix)
        password_hash = _get(table, "password_hash", str, path, prefix)
        if not is_password_hash(password_hash):
            raise ConfigError(path, f"{prefix}password_hash",
                              "is not a scrypt hash (make one with `hial-mock hash-password`)")
        totp = _get(table, "totp_secret", str, path, prefix, None)
        if totp is not None:
            import base64

            try:
                base64.b32decode(totp.upper() + "=" * (-len(totp) % 8))
            except ValueError:
                raise ConfigError(path, f"{prefix}totp_secret", "is not base32") from None
        users[username] = User(
            username=username, password_hash=password_hash, name=_get(table, "name", str, path, prefix, ""),
            email=_get(table, "email", str, path, prefix, ""), roles=_strings(table, "roles", path, prefix),
            organization=_get(table, "organization", str, path, prefix, ""), totp_secret=totp,
            disabled=_get(table, "disabled", bool, path, prefix, False),
        )
    return users


def load_clients(path: Path) -> dict[str, ClientConfig]:
    data = _read(path)
    _unknown(data, {"clients"}, path, "")
    clients: dict[str, ClientConfig] = {}
    for client_id, table in _get(data, "clients", dict, path, "").items():
        prefix = f"clients.{client_id}."
        _unknown(table, {"secret_hash", "grant_types", "scopes", "redirect_uris", "token_endpoint_auth_method",
                         "audience", "name", "may_evaluate", "may_introspect"}, path, prefix)
        method = _get(table, "token_endpoint_auth_method", str, path, prefix, "client_secret_basic")
        if method not in AUTH_METHODS:
            raise ConfigError(path, f"{prefix}token_endpoint_auth_method", f"must be one of {sorted(AUTH_METHODS)}")
        secret = _get(table, "secret_hash", str, path, prefix, None)
        if method != "none" and (secret is None or not is_password_hash(secret)):
            raise ConfigError(path, f"{prefix}secret_hash", "a confidential client needs a scrypt secret hash")
        grants = _strings(table, "grant_types", path, prefix)
        for grant in grants:
            if grant not in GRANT_TYPES:
                raise ConfigError(path, f"{prefix}grant_types", f"unknown grant type {grant!r}")
        if method == "none" and GRANT_CLIENT_CREDENTIALS in grants:
            raise ConfigError(path, f"{prefix}grant_types", "a public client cannot use client_credentials")
        clients[client_id] = ClientConfig(
            client_id=client_id, secret_hash=secret, grant_types=grants, scopes=_strings(table, "scopes", path, prefix),
            redirect_uris=_strings(table, "redirect_uris", path, prefix), auth_method=method,
            audience=_get(table, "audience", str, path, prefix, None), name=_get(table, "name", str, path, prefix, ""),
            may_evaluate=_get(table, "may_evaluate", bool, path, prefix, False),
            may_introspect=_get(table, "may_introspect", bool, path, prefix, False),
        )
    return clients


def load_config(path: Path | str) -> HialConfig:
    path = Path(path).resolve()
    data = _read(path)
    _unknown(data, {"server", "lockout", "files"}, path, "")
    base = path.parent
    server_table = _get(data, "server", dict, path, "", {})
    _unknown(server_table, set(ServerConfig.__dataclass_fields__) , path, "server.")
    p = "server."

    def opt_path(key: str) -> Path | None:
        value = _get(server_table, key, str, path, p, None)
        return None if value is None else (base / value).resolve()

    issuer = _get(server_table, "issuer", str, path, p, None)
    if issuer is not None and (not issuer.startswith(("https://", "http://")) or issuer.endswith("/")):
        raise ConfigError(path, "server.issuer", "must be an http(s) URL without a trailing slash")
    server = ServerConfig(
        issuer=issuer,
        host=_get(server_table, "host", str, path, p, "127.0.0.1"),
        port=_get(server_table, "port", int, path, p, 8800),
        tls_certificate=opt_path("tls_certificate"),
        tls_key=opt_path("tls_key"),
        state_dir=opt_path("state_dir"),
        access_token_lifetime=_get(server_table, "access_token_lifetime", int, path, p, 300),
        refresh_token_lifetime=_get(server_table, "refresh_token_lifetime", int, path, p, 8 * 3600),
        id_token_lifetime=_get(server_table, "id_token_lifetime", int, path, p, 300),
        authorization_code_lifetime=_get(server_table, "authorization_code_lifetime", int, path, p, 300),
        device_code_lifetime=_get(server_table, "device_code_lifetime", int, path, p, 600),
        device_poll_interval=_get(server_table, "device_poll_interval", int, path, p, 5),
        key_rotation_interval=_get(server_table, "key_rotation_interval", float, path, p, 0.0),
        default_audience=_get(server_table, "default_audience", str, path, p, "dicom-server-agent"),
    )
    for key in ("access_token_lifetime", "refresh_token_lifetime", "id_token_lifetime",
                "authorization_code_lifetime", "device_code_lifetime", "device_poll_interval"):
        _positive(getattr(server, key), path, f"server.{key}")
    if not 0 <= server.port <= 65535:
        raise ConfigError(path, "server.port", "must be 0-65535")
    if (server.tls_certificate is None) != (server.tls_key is None):
        raise ConfigError(path, "server.tls_certificate", "tls_certificate and tls_key go together")
    if server.tls_certificate is None and server.host not in ("127.0.0.1", "::1", "localhost"):
        raise ConfigError(path, "server.host", "plain HTTP is only allowed on loopback; configure tls_certificate")
    lock_table = _get(data, "lockout", dict, path, "", {})
    _unknown(lock_table, set(LockoutConfig.__dataclass_fields__), path, "lockout.")
    lockout = LockoutConfig(
        max_failures=_get(lock_table, "max_failures", int, path, "lockout.", 5),
        window=_get(lock_table, "window", float, path, "lockout.", 300.0),
        lock_seconds=_get(lock_table, "lock_seconds", float, path, "lockout.", 900.0),
        slow_after=_get(lock_table, "slow_after", int, path, "lockout.", 3),
        slow_delay=_get(lock_table, "slow_delay", float, path, "lockout.", 1.0),
    )
    files = _get(data, "files", dict, path, "", {})
    _unknown(files, {"users", "clients", "policy"}, path, "files.")
    users_path = base / _get(files, "users", str, path, "files.")
    clients_path = base / _get(files, "clients", str, path, "files.")
    policy_path = base / _get(files, "policy", str, path, "files.")
    users = load_users(users_path)
    clients = load_clients(clients_path)
    policy = load_policy(policy_path)
    return HialConfig(path=path, server=server, lockout=lockout, users=users, clients=clients, policy=policy,
                      files=(path, users_path, clients_path, policy_path))
