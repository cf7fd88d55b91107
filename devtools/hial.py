"""Start a real ``hial-mock serve`` on a free loopback port, for tests, the demo and benchmarks."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .peers import PROJECT

DEMO = PROJECT / "configs" / "demo"


@dataclass
class HialProcess:
    """A HIAL with the demo's users, clients and policy, copied into ``folder`` so tests may edit them."""

    folder: Path
    server: dict[str, object] = field(default_factory=dict)
    lockout: dict[str, object] = field(default_factory=dict)
    issuer: str = ""
    process: subprocess.Popen[str] | None = None
    lines: list[str] = field(default_factory=list)

    def write_config(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        for name in ("users.toml", "clients.toml", "policy.toml"):
            shutil.copy(DEMO / name, self.folder / name)
        server = {"host": "127.0.0.1", "port": 0, "state_dir": "state", **self.server}
        lockout = {"max_failures": 5, "window": 300, "lock_seconds": 900, "slow_after": 50, "slow_delay": 0.1,
                   **self.lockout}
        text = "[server]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in server.items())
        text += "[lockout]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in lockout.items())
        text += '[files]\nusers = "users.toml"\nclients = "clients.toml"\npolicy = "policy.toml"\n'
        path = self.folder / "hial.toml"
        path.write_text(text)
        return path

    def start(self) -> HialProcess:
        config = self.write_config()
        self.process = subprocess.Popen([sys.executable, "-m", "hial_mock.cli", "serve", "--config", str(config)],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=PROJECT)
        assert self.process.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError("hial-mock exited: " + "".join(self.lines))
            self.lines.append(line)
            if line.startswith("issuer: "):
                self.issuer = line.split(" ", 1)[1].strip()
                break
        else:
            raise TimeoutError("hial-mock did not print its issuer")
        threading.Thread(target=self._drain, daemon=True).start()
        return self

    def _drain(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)
