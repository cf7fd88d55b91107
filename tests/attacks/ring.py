"""The site side of the attack ring: tokens from the HIAL, the decision log, Orthanc's log, the
server agent's memory, a workstation agent kept running, and an app SCP that can hold a C-MOVE open.

The wire side (hand-made PDUs, the raw client) is in :mod:`tests.attacks.support`.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from devtools.dicomdata import make_ct_study
from devtools.peers import PROJECT, wait_for_port
from devtools.site import Site, write_workstation_config

from .support import Peer, Proposal, associate_rq, jwt_identity, tls_client

FULL_SCOPE = "openid user/ImagingStudy.rs user/ImagingStudy.c"
PATIENTS = ("PAT-1", "PAT-REF-1", "PAT-OPTOUT", "PAT-CONSENT-ORG")
REFDOC_MAY_SEE = frozenset({"PAT-REF-1"})  # care: PAT-REF-1 and PAT-CONSENT-ORG, whose consent denies clinic-b


def user_token(site: Site, user: str, scope: str = FULL_SCOPE) -> str:
    """An access token for ``user`` from the password grant of the public ``workstation-agent`` client,
    exactly what `dicom-agent login` obtains (RFC 6749 4.3)."""
    assert site.hial is not None
    response = requests.post(f"{site.hial.issuer}/token", timeout=10, data={
        "grant_type": "password", "client_id": "workstation-agent", "username": user, "password": f"demo-{user}",
        "scope": scope})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def user_association(site: Site, token: str, calling: str, *proposals: Proposal, max_length: int = 16384) -> Peer:
    """A TLS connection to the server agent with workstation WS1's certificate, associated as the user
    whose JWT is ``token`` (asserts that the association is accepted)."""
    peer = Peer.connect(site.ports["server"], tls=tls_client(site.pki))
    accepted = peer.associate(associate_rq(called="ORTHANC@GW1", calling=calling, proposals=proposals,
                                           identity=jwt_identity(token), max_length=max_length))
    if not hasattr(accepted, "results"):
        peer.close()
        raise AssertionError(f"the legitimate association as {calling} was not accepted: {accepted}")
    return peer


def events(site: Site, **match: object) -> list[dict[str, Any]]:
    """Decision-log records whose top-level fields equal ``match``."""
    out = []
    for line in site.decisions().splitlines():
        record = json.loads(line)
        if all(record.get(key) == value for key, value in match.items()):
            out.append(record)
    return out


@dataclass
class OrthancLog:
    """What Orthanc logged since this mark (Orthanc runs with --verbose: every request it handles)."""

    site: Site
    start: int = 0

    def __post_init__(self) -> None:
        assert self.site.orthanc is not None
        self.start = len(self.site.orthanc.log_text())

    def since(self, settle: float = 0.3) -> str:
        assert self.site.orthanc is not None
        time.sleep(settle)  # Orthanc writes its log asynchronously
        return self.site.orthanc.log_text()[self.start :]


def add_modality(site: Site, name: str, ae_title: str, port: int) -> None:
    """Declare a DICOM modality to Orthanc through its REST API (PUT /modalities/NAME)."""
    assert site.orthanc is not None
    body = json.dumps({"AET": ae_title, "Host": "127.0.0.1", "Port": port}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{site.orthanc.http_port}/modalities/{name}", data=body,
                                     method="PUT")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def implicit_le(dataset: Dataset) -> bytes:
    """A data set encoded in Implicit VR Little Endian, as a C-STORE sends it on such a context."""
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, True
    write_dataset(out, dataset)
    return out.getvalue()


def ct_image(folder: Path, patient_id: str, seed: int) -> Dataset:
    """A made-up CT image of ``patient_id`` (a study of its own, a fresh SOP Instance UID)."""
    (path,) = make_ct_study(folder, slices=1, patient_id=patient_id, seed=seed)
    image = Dataset()
    image.update(dcmread(path))  # without its file meta information: a C-STORE carries the data set alone
    return image


def vm_rss(pid: int) -> int:
    """Resident set size of a process in bytes (Linux ``/proc/PID/status``, VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


@dataclass
class HoldingSCP:
    """An app's storage SCP (pynetdicom) that answers the C-STOREs of instances in ``hold`` only once
    ``release`` is set: a C-MOVE to it stays outstanding as long as the test wants. Every SOP Instance
    UID it receives is recorded, forged or not."""

    port: int
    ae_title: str = "HOLDSCP"
    hold: set[str] = field(default_factory=set)
    received: list[str] = field(default_factory=list)
    held: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    server: Any = None

    def start(self) -> HoldingSCP:
        from pynetdicom import AE, evt
        from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

        ae = AE(ae_title=self.ae_title)
        ae.add_supported_context(CTImageStorage)
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        return self

    def _on_store(self, event: Any) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        self.received.append(uid)
        if uid in self.hold:
            self.held.set()
            self.release.wait(10)  # below Orthanc's 10 s SCU timeout only if the test forgets to release
        return 0x0000

    def stop(self) -> None:
        self.release.set()
        if self.server is not None:
            self.server.shutdown()


@contextlib.contextmanager
def workstation_agent(site: Site, user: str, apps: dict[str, int]) -> Iterator[subprocess.Popen[bytes]]:
    """`dicom-agent serve` for WS1, logged in as ``user``, with ``apps`` (name -> storage SCP port) besides
    the site's own, on the site's agent and return ports. Its configuration and session live in a
    folder of their own, so that the site's `dicom-agent launch` is not disturbed."""
    assert site.hial is not None
    folder = site.root / "ws-ring"
    folder.mkdir(exist_ok=True)
    config = write_workstation_config(folder / "workstation.toml", pki=site.pki, issuer=site.hial.issuer,
                                      listen=site.ports["agent"], route_port=site.ports["server"],
                                      return_port=site.ports["agent_return"],
                                      apps={"MOVESCP": site.ports["scp"], **apps})
    base = [sys.executable, "-m", "agent.cli", "--config", str(config)]
    login = subprocess.run([*base, "login", "--user", user, "--password-stdin"], input=f"demo-{user}\n",
                           capture_output=True, text=True, timeout=30, cwd=PROJECT)
    assert login.returncode == 0, login.stderr
    process = subprocess.Popen([*base, "--log-level", "WARNING", "serve"], cwd=PROJECT)
    try:
        wait_for_port(site.ports["agent_return"], 20, process)
        yield process
    finally:
        process.terminate()
        try:  # on today's code its shutdown waits 10 s for the slot that wait_for_port leaked (case 3)
            process.wait(2)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        subprocess.run([*base, "logout"], capture_output=True, timeout=30, cwd=PROJECT)
