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
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .hial import DEMO, _toml
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
        demo = tomllib.loads((DEMO / "pseudonymizer.toml").read_text())
        demo["server"].update({"port": 0, "state_dir": "state", "access_log": "state/access.jsonl"})
        demo["identity"]["issuer"] = self.issuer
        if self.projects is not None:
            demo["projects"] = self.projects
        path = self.folder / "pseudonymizer.toml"
        path.write_text(_dump(demo))
        return path

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


def _dump(tables: dict[str, Any], prefix: str = "") -> str:
    """Tables of scalars and lists of strings (all this configuration has) as TOML."""
    text = ""
    for name, table in tables.items():
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
        nested = {k: v for k, v in table.items() if isinstance(v, dict)}
        if scalars:
            text += f"[{prefix}{name}]\n" + "".join(f"{k} = {_value(v)}\n" for k, v in scalars.items())
        if nested:
            text += _dump(nested, f"{prefix}{name}.")
    return text


def _value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return _toml(value)
