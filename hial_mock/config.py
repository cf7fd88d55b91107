"""The HIAL's configuration: one TOML file naming the users, clients and policy files, each a schema.

Loaded and validated once, at the edge, into frozen objects (house rule 7). Every error names the
file, the dotted key and what is wrong; unknown keys are errors. Paths are relative to the file that
names them. Each key is defined once, in the models below (the policy file's in :mod:`.policy`).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from tomlconf import load as load_file
from tomlconf.schema import (
    AS_TUPLE,
    LOOPBACK,
    PositiveFloat,
    PositiveInt,
    RelPath,
    Schema,
    Strings,
    derived,
    from_file,
    problem,
)

from .foreign import ForeignIssuer
from .passwords import is_password_hash
from .policy import Policy, load_policy

GRANT_PASSWORD = "password"
GRANT_CLIENT_CREDENTIALS = "client_credentials"
GRANT_AUTHORIZATION_CODE = "authorization_code"
GRANT_REFRESH_TOKEN = "refresh_token"
GRANT_DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
GRANT_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # RFC 8693: break-glass, delegation
GRANT_TYPES = frozenset({GRANT_PASSWORD, GRANT_CLIENT_CREDENTIALS, GRANT_AUTHORIZATION_CODE, GRANT_REFRESH_TOKEN,
                         GRANT_DEVICE_CODE, GRANT_TOKEN_EXCHANGE})
AUTH_METHODS = frozenset({"client_secret_basic", "client_secret_post", "none"})
GrantType = Literal["password", "client_credentials", "authorization_code", "refresh_token",
                    "urn:ietf:params:oauth:grant-type:device_code", "urn:ietf:params:oauth:grant-type:token-exchange"]


class User(Schema):
    """``[users.NAME]`` of the users file."""

    username: str = derived("")  # the NAME
    password_hash: str = Field(repr=False)
    name: str = ""
    email: str = ""
    roles: Strings = ()
    organization: str = ""
    totp_secret: str | None = Field(default=None, repr=False)
    disabled: bool = False

    @field_validator("password_hash")
    @classmethod
    def _scrypt(cls, value: str, info: ValidationInfo) -> str:
        if from_file(info) and not is_password_hash(value):
            raise ValueError("is not a scrypt hash (make one with `hial-mock hash-password`)")
        return value

    @field_validator("totp_secret")
    @classmethod
    def _base32(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                base64.b32decode(value.upper() + "=" * (-len(value) % 8))
            except ValueError:
                raise ValueError("is not base32") from None
        return value

    def get_user_id(self) -> str:  # authlib's UserMixin
        return self.username

    def __repr__(self) -> str:  # never show the hash or the TOTP secret
        return f"User({self.username!r}, roles={self.roles}, organization={self.organization!r})"


class ClientConfig(Schema):
    """``[clients.ID]`` of the clients file (RFC 7591 section 2 metadata names where there is one)."""

    client_id: str = derived("")  # the ID
    secret_hash: str | None = Field(default=None, repr=False)
    grant_types: Annotated[tuple[GrantType, ...], AS_TUPLE] = ()
    scopes: Strings = ()
    redirect_uris: Strings = ()
    auth_method: Literal["client_secret_basic", "client_secret_post", "none"] = Field(
        default="client_secret_basic", alias="token_endpoint_auth_method")
    audience: str | None = None
    name: str = ""
    may_evaluate: bool = False  # may call the AuthZEN PDP
    may_introspect: bool = False
    # A trusted forwarder (the server agent) logs users in on their behalf and may name the user's own
    # address with an RFC 7239 ``Forwarded`` header, so that failed logins count against that address.
    forwards_source: bool = False
    # OpenID Connect Back-Channel Logout 1.0 section 2.2: where this client (an agent) is told of every
    # session that ends here (hial_mock.backchannel).
    backchannel_logout_uri: str | None = None

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> ClientConfig:
        public = self.auth_method == "none"
        if not public and from_file(info) and (self.secret_hash is None or not is_password_hash(self.secret_hash)):
            raise problem("secret_hash", "a confidential client needs a scrypt secret hash")
        if public and GRANT_CLIENT_CREDENTIALS in self.grant_types:
            raise problem("grant_types", "a public client cannot use client_credentials")
        if public and self.forwards_source:
            # Anyone can act as a public client: trusting its Forwarded header would let anyone choose
            # the address its failures count against.
            raise problem("forwards_source", "only a confidential client may name its users' addresses")
        return self

    def __repr__(self) -> str:
        return f"ClientConfig({self.client_id!r}, grants={self.grant_types})"


class LockoutConfig(Schema):
    """Failed logins, counted so that a lock hurts the attacker, never the users (see :mod:`hial_mock.lockout`).

    A failure counts until ``window`` seconds pass without another one for the same key.
    """

    max_failures: PositiveInt = 5  # per (user, source): that pair is locked for lock_seconds
    source_max_failures: PositiveInt = 20  # per source across users (password spraying): the source is locked
    window: PositiveFloat = 300.0
    lock_seconds: PositiveFloat = 900.0
    slow_after: PositiveInt = 3  # per user across sources: from this many failures each attempt waits...
    slow_delay: float = 1.0  # ...this long, doubling with each further failure...
    max_delay: float = 4.0  # ...up to this (below the agents' HTTP timeouts): a delay, never a lock
    max_entries: PositiveInt = 100_000  # per counter table; when full, new keys are refused (fail closed)

    @model_validator(mode="after")
    def _delays(self) -> LockoutConfig:
        if not 0 <= self.slow_delay <= self.max_delay <= 60:
            raise problem("max_delay", "needs 0 <= slow_delay <= max_delay <= 60 seconds")
        return self


class ServerConfig(Schema):
    issuer: str | None = None  # None: http(s)://host:port of the listener, known once it is bound
    host: str = "127.0.0.1"
    port: int = Field(default=8800, ge=0, le=65535)
    tls_certificate: RelPath | None = None
    tls_key: RelPath | None = None
    state_dir: RelPath | None = None
    access_token_lifetime: PositiveInt = 300
    refresh_token_lifetime: PositiveInt = 8 * 3600
    id_token_lifetime: PositiveInt = 300
    authorization_code_lifetime: PositiveInt = 300
    device_code_lifetime: PositiveInt = 600
    device_poll_interval: PositiveInt = 5
    key_rotation_interval: float = 0.0  # 0: rotate only on SIGUSR1
    default_audience: str = "dicom-server-agent"

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith(("https://", "http://")) or value.endswith("/")):
            raise ValueError("must be an http(s) URL without a trailing slash")
        return value

    @model_validator(mode="after")
    def _tls(self) -> ServerConfig:
        if (self.tls_certificate is None) != (self.tls_key is None):
            raise problem("tls_certificate", "tls_certificate and tls_key go together")
        if self.tls_certificate is None and self.host not in LOOPBACK:
            raise problem("host", "plain HTTP is only allowed on loopback; configure tls_certificate")
        return self


class Files(Schema):
    users: RelPath
    clients: RelPath
    policy: RelPath


class UsersFile(Schema):
    users: Mapping[str, User]


class ClientsFile(Schema):
    clients: Mapping[str, ClientConfig]


class HialConfig(Schema):
    server: ServerConfig = ServerConfig()
    lockout: LockoutConfig = LockoutConfig()
    files: Files
    foreign: Mapping[str, ForeignIssuer] = Field(default_factory=dict)  # issuers the PDP trusts for its callers
    path: Path = derived(Path("hial.toml"))
    users: Mapping[str, User] = derived(default_factory=dict)  # from files.users
    clients: Mapping[str, ClientConfig] = derived(default_factory=dict)  # from files.clients
    policy: Policy = derived(default_factory=lambda: Policy(version="none"))  # from files.policy (none: deny all)


def load_users(path: Path) -> dict[str, User]:
    users = load_file(path, UsersFile).users
    return {name: user.model_copy(update={"username": name}) for name, user in users.items()}


def load_clients(path: Path) -> dict[str, ClientConfig]:
    clients = load_file(path, ClientsFile).clients
    return {client_id: c.model_copy(update={"client_id": client_id}) for client_id, c in clients.items()}


def load_config(path: Path | str) -> HialConfig:
    path = Path(path).resolve()
    config = load_file(path, HialConfig)
    files = config.files
    foreign = {name: issuer.model_copy(update={"name": name}) for name, issuer in config.foreign.items()}
    return config.model_copy(update={"path": path, "users": load_users(files.users), "foreign": foreign,
                                     "clients": load_clients(files.clients), "policy": load_policy(files.policy)})
