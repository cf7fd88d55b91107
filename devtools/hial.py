"""Start a real ``hial-mock serve`` on a free loopback port, for tests, the demo and benchmarks."""

from __future__ import annotations

import shutil
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from hial_mock.config import Files, HialConfig, LockoutConfig, ServerConfig
from hial_mock.foreign import ForeignIssuer
from tomlconf import write

from .peers import PROJECT, AnnouncingProcess

DEMO = PROJECT / "configs" / "demo"


@dataclass
class HialProcess(AnnouncingProcess):
    """A HIAL with the demo's users, clients and policy, copied into ``folder`` so tests may edit them."""

    folder: Path
    server: dict[str, object] = field(default_factory=dict)
    foreign: dict[str, Any] = field(default_factory=dict)  # [foreign.NAME] tables: issuers the PDP trusts
    lockout: dict[str, object] = field(default_factory=dict)
    issuer: str = ""
    backchannel: dict[str, str] = field(default_factory=dict)  # client id -> its backchannel_logout_uri

    def config(self) -> HialConfig:
        """The HIAL's configuration (``server`` and ``lockout``: keys of those tables, over the defaults)."""
        files = Files(users=self.folder / "users.toml", clients=self.folder / "clients.toml",
                      policy=self.folder / "policy.toml")
        return HialConfig(server=ServerConfig(**{"host": "127.0.0.1", "port": 0, "state_dir": self.folder / "state",
                                                 **self.server}),
                          lockout=LockoutConfig(**{"slow_after": 50, "slow_delay": 0.1, **self.lockout}), files=files,
                          foreign={name: ForeignIssuer(**table) for name, table in self.foreign.items()})

    def write_config(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        for name in ("users.toml", "clients.toml", "policy.toml"):
            shutil.copy(DEMO / name, self.folder / name)
        if self.backchannel:
            clients = tomllib.loads((self.folder / "clients.toml").read_text())
            for client_id, uri in self.backchannel.items():
                clients["clients"][client_id]["backchannel_logout_uri"] = uri
            (self.folder / "clients.toml").write_text(tomli_w.dumps(clients))
        return write(self.folder / "hial.toml", self.config())

    def start(self) -> HialProcess:
        config = self.write_config()
        self.issuer = self.launch([sys.executable, "-m", "hial_mock.cli", "serve", "--config", str(config)], "issuer")
        return self

