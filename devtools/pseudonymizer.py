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
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlconf
from pseudonymizer.config import load_config

from .hial import DEMO
from .peers import PROJECT

TRANSLATE_CLIENT = "server-agent-pseudonyms"
TRANSLATE_SECRET = "demo-pseudonyms-secret"  # demo only: configs/demo/README.md


@dataclass
class PseudonymizerProcess:
    folder: Path
    issuer: str
    projects: dict[str, dict[str, str]] | None = None
    url: str = ""
    process: subprocess.Popen[str] | None = None
    lines: list[str] = field(default_factory=list)

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
        self.process = subprocess.Popen([sys.executable, "-m", "pseudonymizer.cli", "serve", "--config", str(config)],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=PROJECT)
        assert self.process.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError("pseudonymizer exited: " + "".join(self.lines))
            self.lines.append(line)
            if line.startswith("url: "):
                self.url = line.split(" ", 1)[1].strip()
                break
        else:
            raise TimeoutError("pseudonymizer did not print its url")
        threading.Thread(target=self._drain, daemon=True).start()
        return self

    def _drain(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def state(self) -> Path:
        return self.folder / "state"

    def access_log(self) -> list[dict[str, Any]]:
        path = self.state / "access.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
