"""Start a real ``pseudonymizer serve`` on a free loopback port, for tests, the demo and benchmarks.

    hial = HialProcess(tmp / "hial").start()
    service = PseudonymizerProcess(tmp / "pseudo", issuer=hial.issuer).start()
    ... service.url ... service.access_log() ...
    service.stop(); hial.stop()

The demo's projects and access rules (configs/demo/pseudonymizer.toml) with ``issuer`` pointing at
the given HIAL and a state folder of its own; ``projects`` replaces the projects when given.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlconf
from pseudonymizer.config import load_config

from .hial import DEMO
from .peers import AnnouncingProcess

TRANSLATE_CLIENT = "server-agent-pseudonyms"
TRANSLATE_SECRET = "demo-pseudonyms-secret"  # demo only: configs/demo/README.md


@dataclass
class PseudonymizerProcess(AnnouncingProcess):
    folder: Path
    issuer: str
    projects: dict[str, dict[str, str]] | None = None
    url: str = ""

    def write_config(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        demo = load_config(DEMO / "pseudonymizer.toml")
        state = self.folder / "state"
        config = demo.replace(server=demo.server.replace(port=0, state_dir=state, access_log=state / "access.jsonl"),
                              identity=demo.identity.replace(issuer=self.issuer),
                              projects=demo.projects if self.projects is None else self.projects)
        return tomlconf.write(self.folder / "pseudonymizer.toml", config)

    def start(self) -> PseudonymizerProcess:
        config = self.write_config()
        self.url = self.launch([sys.executable, "-m", "pseudonymizer.cli", "serve", "--config", str(config)], "url")
        return self

    @property
    def state(self) -> Path:
        return self.folder / "state"

    def access_log(self) -> list[dict[str, Any]]:
        path = self.state / "access.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
