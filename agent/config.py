"""The workstation agent's configuration: one schema, the TOML file's shape: where apps connect, who the
identity provider is, which server agents the routes name, and the apps' own storage SCPs for C-MOVE.

Looked for in ``--config FILE``, else ``$DICOM_AGENT_CONFIG``, else
``~/.config/dicom-agent/workstation.toml``. See ``configs/demo/workstation.toml``. Each key is defined
once, below; :func:`load` validates a file once and names the file and the dotted key of any problem.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from tomlconf import ConfigError
from tomlconf import load as load_file
from tomlconf.admin import AdminSection
from tomlconf.limits import Limits
from tomlconf.schema import (
    AS_TUPLE,
    LOOPBACK,
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

DEFAULT_PATH = Path("~/.config/dicom-agent/workstation.toml")
IDENTITY_MODES = ("jwt", "password")
CONFIG_DIR = DEFAULT_PATH.expanduser().parent


class WorkstationSection(Schema):
    name: str  # this workstation's name: the WS of APP@WS
    listen: HostPort = ("127.0.0.1", 11112)
    identity: Literal["jwt", "password"] = "jwt"  # type 5 or type 2 (PS3.7 D.3.3.7)
    positive_response: bool = False
    default_route: str | None = None
    session_file: RelPath = Field(default=CONFIG_DIR / "session.json", validate_default=True)
    log_file: RelPath | None = None
    check_owner: bool = True
    refresh_margin: PositiveFloat = 60.0  # refresh the access token this many seconds before it expires
    max_associations: PositiveInt = 200  # beyond it, A-ASSOCIATE-RJ local-limit-exceeded (PS3.8 9.3.4)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        from dicomwire.pdu import ae_title_problem

        why = ae_title_problem(value.encode("ascii", "replace"))
        if why or "@" in value:
            raise ValueError(why or "must not contain '@'")
        return value

    @field_validator("listen")
    @classmethod
    def _loopback(cls, value: tuple[str, int]) -> tuple[str, int]:
        if value[0] not in LOOPBACK:
            raise ValueError("the workstation agent listens on loopback only")
        return value


class IdentityProvider(Schema):
    issuer: Issuer
    client_id: str
    scope: str = "openid offline_access user/ImagingStudy.rs user/ImagingStudy.c"
    ca_file: RelPath | None = None  # to trust an HTTPS issuer signed by a private CA
    timeout: PositiveFloat = 10.0
    # "auto": a terminal prompt, else the desktop dialog, else the device flow (RFC 8628); "device": always
    # the device flow in the browser (a provider whose sign-in is not a password, or single sign-on there)
    login: Literal["auto", "device"] = "auto"


class TlsFiles(Schema):
    """Mutual TLS to server agents and on the return listener: ours, and the site CA."""

    certificate: ExistingFile
    key: ExistingFile
    ca: ExistingFile


class Route(Schema):
    """A server agent: where to connect and the name its certificate must carry."""

    host: str
    port: int = Field(ge=0, le=65535)
    server_name: str = ""  # default: the route's name, lower case
    warm: int = Field(default=2, ge=0, le=16)  # TLS connections kept ready: no handshake in association set-up
    tls: bool = True  # False only on loopback, to measure what TLS costs (tokens would cross in clear)
    # More server agents of this route (instances of one site, each with a certificate naming
    # server_name), tried in order when host:port does not answer within connect_timeout; an address
    # that failed is tried last for a while (1 s, doubling to 60 s). docs/deployment-ha.md.
    addresses: Annotated[tuple[HostPort, ...], AS_TUPLE] = ()
    connect_timeout: PositiveFloat = 5.0
    name: str = derived("")

    @model_validator(mode="after")
    def _plain_on_loopback(self) -> Route:
        if not self.tls and self.host not in LOOPBACK:
            raise problem("tls", "plain TCP to a server agent is allowed on loopback only (to measure TLS's cost): "
                                 "tokens and images would cross the network in clear")
        return self


class ReturnSection(Schema):
    """C-STORE sub-operations of C-MOVE, from server agents (mutual TLS)."""

    listen: HostPort = ("127.0.0.1", 11115)
    allowed_server_agents: Strings | None = None  # certificate names; default: the routes' server names
    max_associations: PositiveInt = 200


class App(Schema):
    store_scp: HostPort  # the app's own storage SCP, for C-MOVE destination APP


class WorkstationConfig(Schema):
    workstation: WorkstationSection
    identity_provider: IdentityProvider
    tls: TlsFiles
    routes: Mapping[str, Route] = Field(default_factory=dict)
    return_: ReturnSection = Field(default=ReturnSection(), alias="return")
    apps: Mapping[str, App] = Field(default_factory=dict)
    limits: Limits = Limits()
    admin: AdminSection | None = None  # /healthz /readyz /metrics (agent/admin.py); off when absent
    path: Path = derived(Path("workstation.toml"))  # the file this was read from

    @model_validator(mode="after")
    def _derive(self, info: ValidationInfo) -> WorkstationConfig:
        if from_file(info):
            self._fill(path=info.context["path"])  # type: ignore[index]
        routes = {name: r.model_copy(update={"name": name, "server_name": r.server_name or name.lower()})
                  for name, r in self.routes.items()}
        self._fill(routes=routes)
        default = self.workstation.default_route
        if default is not None and default not in routes:
            raise problem("workstation.default_route", f"names {default!r}, which [routes] does not define")
        if self.return_.allowed_server_agents is None:
            self._fill(return_=self.return_.model_copy(update={
                "allowed_server_agents": tuple(r.server_name for r in routes.values())}))
        for app in self.apps:
            composed = f"{app}@{self.workstation.name}"
            if len(composed) > 16:
                raise problem(f"apps.{app}.store_scp", f"{composed!r} is longer than the 16 characters of an AE title")
        return self

    # -- what the code reads, named as it reads it (views of the keys above, not keys of their own) --
    @property
    def name(self) -> str:
        return self.workstation.name

    @property
    def listen(self) -> tuple[str, int]:
        return self.workstation.listen

    @property
    def identity(self) -> str:
        return self.workstation.identity

    @property
    def provider(self) -> IdentityProvider:
        return self.identity_provider

    @property
    def default_route(self) -> str | None:
        return self.workstation.default_route

    @property
    def return_listen(self) -> tuple[str, int]:
        return self.return_.listen

    @property
    def allowed_server_agents(self) -> tuple[str, ...]:
        return self.return_.allowed_server_agents or ()

    @property
    def session_file(self) -> Path:
        return self.workstation.session_file

    @property
    def log_file(self) -> Path | None:
        return self.workstation.log_file

    @property
    def check_owner(self) -> bool:
        return self.workstation.check_owner

    @property
    def positive_response(self) -> bool:
        return self.workstation.positive_response

    @property
    def refresh_margin(self) -> float:
        return self.workstation.refresh_margin

    @property
    def max_associations(self) -> int:
        return self.workstation.max_associations


def config_path(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    env = os.environ.get("DICOM_AGENT_CONFIG")
    return Path(env) if env else DEFAULT_PATH.expanduser()


def load(path: Path) -> WorkstationConfig:
    return load_file(path.expanduser().resolve(), WorkstationConfig)


__all__ = ["IDENTITY_MODES", "App", "ConfigError", "IdentityProvider", "ReturnSection", "Route", "TlsFiles",
           "WorkstationConfig", "WorkstationSection", "config_path", "load"]
