"""Real DICOM peers on loopback for tests, the demo and the benchmarks.

Orthanc (the unchanged PACS), DCMTK's tools (the legacy apps) and ``dicom-relay`` run as separate
processes on free ports of 127.0.0.1 and are stopped afterwards. DCMTK is called by absolute path:
pynetdicom installs console scripts of the same names that would shadow it inside a virtualenv.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

DCMTK_BIN = Path(os.environ.get("DCMTK_BIN", "/usr/bin"))
ORTHANC = shutil.which("Orthanc", path="/usr/sbin:/usr/bin:" + os.environ.get("PATH", "")) or "/usr/sbin/Orthanc"
PROJECT = Path(__file__).resolve().parent.parent


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out to outgoing connections (Linux; IANA's 49152 elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 49152


def free_port() -> int:
    """A port nothing listens on, for a server about to be started.

    Taken below the ephemeral range: a port that ``bind(0)`` hands out lies inside it, and until the
    server binds it any outgoing connection on the machine may take it as its source port (parallel
    test runs open thousands), which made Orthanc fail with "port already in use". Checked on all
    interfaces, since Orthanc listens on 0.0.0.0.
    """
    high = _ephemeral_low() - 1
    for _ in range(200):
        port = random.randint(min(10000, high - 1000), high)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port below {high + 1}")


def wait_for_port(port: int, timeout: float = 20.0, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process {process.args!r} exited with {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def dcmtk_env() -> dict[str, str]:
    # Debian's DCMTK leaves Nagle's algorithm on unless TCP_NODELAY=1 is set (each C-STORE stalls ~40 ms).
    return {**os.environ, "TCP_NODELAY": "1"}


def dcmtk(tool: str, *args: str | os.PathLike[str], timeout: float = 120.0,
          check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a DCMTK tool by absolute path, capturing its output."""
    result = subprocess.run(
        [str(DCMTK_BIN / tool), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=dcmtk_env()
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"{tool} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def _stop(process: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


@dataclass
class Orthanc:
    """An Orthanc server with a configuration of its own in ``folder``; only its modality list is set."""

    folder: Path
    aet: str = "ORTHANC"
    modalities: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    dicom_port: int = 0
    http_port: int = 0
    # DICOM over TLS (Orthanc >= 1.9): (its certificate, its key, the CA its peers' certificates chain to)
    tls: tuple[Path, Path, Path] | None = None
    # Modalities Orthanc reaches with DICOM TLS ("UseDicomTls"), presenting its certificate: C-MOVE
    # sub-operations to a return listener that requires it.
    tls_modalities: frozenset[str] = frozenset()
    options: dict[str, object] = field(default_factory=dict)  # more configuration keys, over these
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Orthanc:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dicom_port = self.dicom_port or free_port()
        self.http_port = self.http_port or free_port()
        config = {
            "Name": "dicom-identity-agents-test",
            "StorageDirectory": str(self.folder / "db"),
            "IndexDirectory": str(self.folder / "db"),
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "Plugins": [],
            "SaveJobs": False,
            "DicomModalities": {name: self._modality(name, entry) for name, entry in self.modalities.items()},
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowGet": True,
            "DicomAlwaysAllowMove": True,
            "DicomScpTimeout": 30,
        }
        if self.tls is not None:
            certificate, key, trusted = self.tls
            config |= {"DicomTlsEnabled": True, "DicomTlsCertificate": str(certificate),
                       "DicomTlsPrivateKey": str(key), "DicomTlsTrustedCertificates": str(trusted),
                       "DicomTlsRemoteCertificateRequired": True}
        path = self.folder / "orthanc.json"
        path.write_text(json.dumps(config | self.options, indent=2))
        log = open(self.folder / "orthanc.log", "wb")  # noqa: SIM115 - kept open for the process
        self.process = subprocess.Popen([ORTHANC, "--verbose", str(path)], stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(self.http_port, 30, self.process)
        wait_for_port(self.dicom_port, 30, self.process)
        return self

    def _modality(self, name: str, entry: tuple[str, str, int]) -> object:
        if name not in self.tls_modalities:
            return list(entry)
        aet, host, port = entry
        return {"AET": aet, "Host": host, "Port": port, "UseDicomTls": True}

    def stop(self) -> None:
        _stop(self.process)

    def rest(self, path: str, body: bytes | None = None) -> object:
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=body,
                                         method="POST" if body is not None else "GET")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def delete_patient(self, patient_id: str) -> None:
        """Remove a patient and its studies (so the next store writes them anew)."""
        ids = self.rest("/tools/lookup", patient_id.encode())
        for entry in ids if isinstance(ids, list) else []:
            if entry.get("Type") == "Patient":
                request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{entry['Path']}",
                                                 method="DELETE")
                urllib.request.urlopen(request, timeout=30).close()

    def upload(self, paths: Sequence[Path]) -> None:
        for path in paths:
            self.rest("/instances", path.read_bytes())

    def instances(self) -> list[str]:
        result = self.rest("/instances")
        assert isinstance(result, list)
        return result

    def log_text(self) -> str:
        return (self.folder / "orthanc.log").read_text(errors="replace")


@dataclass
class StoreSCP:
    """DCMTK ``storescp`` writing what it receives to ``folder`` (or discarding it with ``ignore``)."""

    folder: Path
    aet: str = "STORESCP"
    port: int = 0
    ignore: bool = False
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> StoreSCP:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        args = [str(DCMTK_BIN / "storescp"), "-aet", self.aet, "--output-directory", str(self.folder)]
        if self.ignore:
            args.append("--ignore")
        args.append(str(self.port))
        log = open(self.folder.parent / f"storescp-{self.port}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=dcmtk_env())
        wait_for_port(self.port, 20, self.process)
        return self

    def stop(self) -> None:
        _stop(self.process)

    def received(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.is_file())


@dataclass
class RelayProcess:
    """``dicom-relay`` as its users run it: a separate process."""

    to: tuple[str, int]
    port: int = 0
    trace: bool = False
    extra: Sequence[str] = ()
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> RelayProcess:
        self.port = self.port or free_port()
        args = [sys.executable, "-m", "dicomwire.relay_cli", "--listen", f"127.0.0.1:{self.port}",
                "--to", f"{self.to[0]}:{self.to[1]}", *self.extra]
        if self.trace:
            args.append("--trace")
        out = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=PROJECT)
        wait_for_port(self.port, 20, self.process)
        return self

    def stop(self) -> int | None:
        _stop(self.process)
        return None if self.process is None else self.process.returncode


@contextlib.contextmanager
def running(*peers: Orthanc | StoreSCP | RelayProcess) -> Iterator[None]:
    started = []
    try:
        for peer in peers:
            peer.start()
            started.append(peer)
        yield
    finally:
        for peer in reversed(started):
            peer.stop()


@dataclass
class AnnouncingProcess:
    """A service of ours started as a child that prints ``PREFIX: VALUE`` once it listens (the HIAL its
    issuer, the pseudonymizer its URL); its output kept in ``lines``."""

    process: subprocess.Popen[str] | None = field(default=None, init=False)
    lines: list[str] = field(default_factory=list, init=False)

    def launch(self, argv: list[str], prefix: str, timeout: float = 30.0) -> str:
        """Start ``argv`` and return the VALUE of its first ``prefix: VALUE`` line (what it announces)."""
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=PROJECT)
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"{argv[2]} exited: " + "".join(self.lines))
            self.lines.append(line)
            if line.startswith(prefix + ": "):
                threading.Thread(target=self._drain, daemon=True).start()
                return line.split(" ", 1)[1].strip()
        raise TimeoutError(f"{argv[2]} did not print its {prefix}")

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
