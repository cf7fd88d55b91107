"""A real rsyslog (Debian's) as the audit record repository: TLS (RFC 5425) on a free loopback port,
client certificates from the site CA required, every message's MSG part written to a file."""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .peers import free_port, wait_for_port

RSYSLOGD = "/usr/sbin/rsyslogd"


@dataclass
class Rsyslog:
    folder: Path
    ca: Path
    certificate: Path
    key: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    starts: list[float] = field(default_factory=list)

    @property
    def output(self) -> Path:
        return self.folder / "audit.log"

    def start(self) -> Rsyslog:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "work").mkdir(exist_ok=True)
        self.port = self.port or free_port()
        conf = self.folder / "rsyslog.conf"
        conf.write_text(f"""
global(workDirectory="{self.folder / 'work'}"
       DefaultNetstreamDriver="gtls"
       DefaultNetstreamDriverCAFile="{self.ca}"
       DefaultNetstreamDriverCertFile="{self.certificate}"
       DefaultNetstreamDriverKeyFile="{self.key}")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="x509/certvalid"
       MaxSessions="20")
input(type="imtcp" port="{self.port}" address="127.0.0.1")
template(name="msgonly" type="string" string="%msg%\\n")
action(type="omfile" file="{self.output}" template="msgonly")
""")
        log = open(self.folder / "rsyslogd.log", "ab")  # noqa: SIM115 - kept open for the process
        self.process = subprocess.Popen([RSYSLOGD, "-n", "-f", str(conf), "-i", str(self.folder / "rsyslogd.pid")],
                                        stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, 20, self.process)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(10)

    def messages(self) -> list[str]:
        if not self.output.exists():
            return []
        return [line.lstrip("\ufeff").strip() for line in self.output.read_text(encoding="utf-8").splitlines()
                if line.strip()]
