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
                 prefix of pseudonymous Patient IDs, uid_root ("2.25" or an organisation's root),
                 reidentify_roles (this project's trustees, in place of [access]'s for it)

Every error names the file, the key and what is wrong (:mod:`tomlconf`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator, model_validator

from tomlconf import load
from tomlconf.schema import AS_FROZENSET, LOOPBACK, PositiveInt, RelPath, Schema, derived, from_file, problem

from .keys import SCOPE
from .tokens import IdentitySettings

PREFIX = re.compile(r"[A-Z0-9]{1,16}")
UID_ROOT = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
SCOPE_TRANSLATE = "pseudonyms:translate"
SCOPE_REIDENTIFY = "pseudonyms:reidentify"
_SCOPE_TEXT = "letters, digits, '.', '_' and '-' (at most 64)"


class Project(Schema):
    """``[projects.ID]``: the key scope it uses (projects sharing a scope share pseudonyms), the prefix of
    its pseudonymous Patient IDs and the root of its UIDs."""

    project_id: str = derived("")  # the ID
    scope: str = ""  # the ID unless the file says
    prefix: str
    uid_root: str = "2.25"
    # Who may re-identify this project's pseudonyms (its own trustees); empty: [access] reidentify_roles.
    reidentify_roles: Annotated[frozenset[str], AS_FROZENSET] = frozenset()

    @field_validator("scope")
    @classmethod
    def _scope(cls, value: str) -> str:
        if value and not SCOPE.fullmatch(value):
            raise ValueError(_SCOPE_TEXT)
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not PREFIX.fullmatch(value):
            raise ValueError("1-16 upper-case letters or digits")
        return value

    @field_validator("uid_root")
    @classmethod
    def _uid_root(cls, value: str) -> str:
        if not UID_ROOT.fullmatch(value) or len(value) > 34:
            raise ValueError("a UID root of at most 34 characters (PS3.5 9.1), room for 96 bits")
        return value


class Server(Schema):
    host: str = "127.0.0.1"
    port: int = Field(default=8810, ge=0, le=65535)
    state_dir: RelPath  # keys and the reverse mapping
    access_log: RelPath | None = None  # state_dir/access.jsonl unless the file says
    tls_certificate: RelPath | None = None
    tls_key: RelPath | None = None

    @model_validator(mode="after")
    def _transport(self) -> Server:
        if (self.tls_certificate is None) != (self.tls_key is None):
            raise problem("tls_certificate", "tls_certificate and tls_key go together")
        if self.tls_certificate is None and self.host not in LOOPBACK:
            raise problem("host", "plain HTTP is only allowed on loopback; configure tls_certificate")
        return self

    @property
    def access_log_path(self) -> Path:
        return self.access_log or self.state_dir / "access.jsonl"


class Access(Schema):
    # The OAuth clients whose own tokens (client credentials) may get pseudonyms and translate them
    # back (the server agents); the user roles that may re-identify, one pseudonym at a time.
    translate_clients: Annotated[frozenset[str], AS_FROZENSET] = frozenset()
    reidentify_roles: Annotated[frozenset[str], AS_FROZENSET] = frozenset()


class Limits(Schema):
    max_values: PositiveInt = 10_000  # per call: a C-FIND of 10,000 matches; bounds a request's memory
    max_entries: PositiveInt = 10_000_000  # per scope: a large archive's instances


class ServiceConfig(Schema):
    """The whole file, validated once; the flat names the service reads are properties over its keys."""

    path: Path = derived(Path("pseudonymizer.toml"))  # the file this was read from
    server: Server
    identity: IdentitySettings
    access: Access = Access()
    limits: Limits = Limits()
    projects: Mapping[str, Project]

    @model_validator(mode="after")
    def _derive(self, info: ValidationInfo) -> ServiceConfig:
        if from_file(info):
            self._fill(path=info.context["path"])  # type: ignore[index]
        for project_id in self.projects:
            if not SCOPE.fullmatch(project_id):
                raise problem(("projects", project_id), f"a project id is {_SCOPE_TEXT}")
        if not self.projects:
            raise problem("projects", "at least one [projects.ID] is required")
        self._fill(projects={pid: p.model_copy(update={"project_id": pid, "scope": p.scope or pid})
                             for pid, p in self.projects.items()})
        return self


def load_config(path: Path | str) -> ServiceConfig:
    """The file at ``path``; every error names the file, the dotted key and what is wrong."""
    return load(Path(path).resolve(), ServiceConfig)
