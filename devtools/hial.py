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
from typing import Any

from hial_mock.config import Files, HialConfig, LockoutConfig, ServerConfig
from hial_mock.foreign import ForeignIssuer
from tomlconf import write

from .peers import PROJECT

DEMO = PROJECT / "configs" / "demo"


@dataclass
class HialProcess:
    """A HIAL with the demo's users, clients and policy, copied into ``folder`` so tests may edit them."""

    folder: Path
    server: dict[str, object] = field(default_factory=dict)
    foreign: dict[str, Any] = field(default_factory=dict)  # [foreign.NAME] tables: issuers the PDP trusts
    lockout: dict[str, object] = field(default_factory=dict)
    issuer: str = ""
    process: subprocess.Popen[str] | None = None
    lines: list[str] = field(default_factory=list)

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
        return write(self.folder / "hial.toml", self.config())

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

