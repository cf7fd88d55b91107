"""Issue 4 end to end: real DCMTK apps, unchanged, launched through `dicom-agent launch`, against a
server-agent double over mutual TLS and an unchanged Orthanc; a live HIAL for the logins."""

from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
import requests
from pydicom import dcmread

from agent import certs
from devtools.dicomdata import make_ct_study
from devtools.hial import HialProcess
from devtools.peers import DCMTK_BIN, Orthanc, StoreSCP, dcmtk, dcmtk_env, free_port, wait_for_port
from devtools.server_double import ServerDouble
from devtools.site import write_workstation_config
from dicomwire.identity import identity_response
from dicomwire.pdu import decode_associate
from tests.support.wire import pynetdicom_rq

PROJECT = Path(__file__).resolve().parents[2]


class Site:
    def __init__(self, root: Path, hial: HialProcess, orthanc: Orthanc, double: ServerDouble, scp: StoreSCP,
                 agent_port: int, return_port: int, config: Path) -> None:
        self.root, self.hial, self.orthanc, self.double, self.scp = root, hial, orthanc, double, scp
        self.agent_port, self.return_port, self.config = agent_port, return_port, config

    def agent(self, *args: str, stdin: str = "", timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "agent.cli", "--config", str(self.config), *args],
                              input=stdin, capture_output=True, text=True, timeout=timeout, env=dcmtk_env(),
                              cwd=PROJECT)

    def launch(self, tool: str, *args: str | os.PathLike[str], user: str = "rad") -> subprocess.CompletedProcess[str]:
        return self.agent("launch", "--user", user, "--password-stdin", "--", str(DCMTK_BIN / tool),
                          *map(str, args), stdin=f"demo-{user}\n")

    def introspect(self, token: str) -> dict:
        return requests.post(f"{self.hial.issuer}/introspect", auth=("server-agent", "demo-server-agent-secret"),
                             data={"token": token}, timeout=10).json()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("site")
    pki = root / "pki"
    certs.init_ca(pki)
    certs.issue(pki, "gw1", ["127.0.0.1"])
    certs.issue(pki, "ws1", ["127.0.0.1"])
    hial = HialProcess(root / "hial").start()
    forward_port, double_return, agent_port, agent_return, scp_port = (free_port() for _ in range(5))
    orthanc = Orthanc(root / "orthanc", modalities={"ws1-movescp": ("MOVESCP@WS1", "127.0.0.1", double_return)})
    orthanc.start()
    orthanc.upload(make_ct_study(root / "study", slices=3, patient_id="WS001", accession="WSACC"))
    double = ServerDouble(pki, ("127.0.0.1", orthanc.dicom_port), forward_port, double_return,
                          ("127.0.0.1", agent_return)).start()
    scp = StoreSCP(root / "scp" / "in", aet="MOVESCP", port=scp_port).start()
    config = write_workstation_config(
        root / "workstation.toml", pki=pki, issuer=hial.issuer, listen=agent_port, route_port=forward_port,
        return_port=agent_return, apps={"MOVESCP": scp_port},
        identity="jwt", positive_response=True, log_file=root / "associations.jsonl")
    yield Site(root, hial, orthanc, double, scp, agent_port, agent_return, config)
    scp.stop()
    double.stop()
    orthanc.stop()
    hial.stop()


def _last_token(site: Site) -> str:
    identity = site.double.policy.seen[-1].identity
    assert identity is not None
    return identity.primary.decode()


def test_echo_through_launch_carries_a_verifiable_jwt_and_logs_out(site: Site) -> None:
    before = len(site.double.policy.seen)
    result = site.launch("echoscu", "-aec", "ORTHANC@GW1", "127.0.0.1", site.agent_port)
    assert result.returncode == 0, result.stderr
    assert len(site.double.policy.seen) == before + 1
    seen = site.double.policy.seen[-1]
    assert seen.identity is not None and seen.identity.type == 5 and seen.identity.positive_response_requested
    assert seen.calling == "ECHOSCU@WS1" and seen.called == "ORTHANC@GW1"
    token = seen.identity.primary.decode()
    jwks = jwt.PyJWKClient(f"{site.hial.issuer}/jwks")
    claims = jwt.decode(token, jwks.get_signing_key_from_jwt(token).key, algorithms=["RS256"],
                        audience="dicom-server-agent", issuer=site.hial.issuer)
    assert claims["sub"] == "rad"
    # `launch` logged out when the app exited: the token is revoked.
    assert site.introspect(token) == {"active": False}
    assert "demo-rad" not in result.stderr and token not in result.stderr


def test_find_through_launch_equals_direct(site: Site) -> None:
    keys = ["-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=WS001", "-k", "AccessionNumber"]
    direct = dcmtk("findscu", "-v", *keys, "-aec", "ORTHANC", "127.0.0.1", site.orthanc.dicom_port)
    relayed = site.launch("findscu", "-v", *keys, "-aec", "ORTHANC@GW1", "127.0.0.1", site.agent_port)
    assert relayed.returncode == 0, relayed.stderr

    def answers(text: str) -> list[str]:
        return [line.split(" ", 1)[1] for line in text.splitlines() if re.match(r"^I: \(\w{4},\w{4}\)", line)]

    assert answers(relayed.stderr) == answers(direct.stderr)
    assert any("WSACC" in line for line in answers(relayed.stderr))


def test_store_through_launch(site: Site, tmp_path: Path) -> None:
    files = make_ct_study(tmp_path / "new", slices=2, patient_id="WSSTORE", seed=3)
    before = set(site.orthanc.instances())
    result = site.launch("storescu", "-aec", "ORTHANC@GW1", "127.0.0.1", site.agent_port, *files, user="tech")
    assert result.returncode == 0, result.stderr
    assert len(set(site.orthanc.instances()) - before) == 2


def test_move_through_launch_delivers_to_the_apps_own_scp(site: Site) -> None:
    study = site.root / "study"
    uid = dcmread(next(study.iterdir())).StudyInstanceUID
    for old in site.scp.received():
        old.unlink()
    result = site.launch("movescu", "-v", "-S", "-aet", "MOVESCP", "-aem", "MOVESCP", "-k", "QueryRetrieveLevel=STUDY",
                         "-k", f"StudyInstanceUID={uid}", "-aec", "ORTHANC@GW1", "127.0.0.1", site.agent_port)
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 10
    while len(site.scp.received()) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert {str(dcmread(p).SOPInstanceUID) for p in site.scp.received()} == \
        {str(dcmread(p).SOPInstanceUID) for p in study.iterdir()}
    journal = (site.root / "associations.jsonl").read_text()
    assert '"direction": "return"' in journal and '"server_agent": ["gw1", "gw1"]' in journal


def test_get_through_launch(site: Site, tmp_path: Path) -> None:
    uid = dcmread(next((site.root / "study").iterdir())).StudyInstanceUID
    out = tmp_path / "got"
    out.mkdir()
    result = site.launch("getscu", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={uid}",
                         "-od", out, "-aec", "ORTHANC@GW1", "127.0.0.1", site.agent_port)
    assert result.returncode == 0, result.stderr
    assert len(list(out.iterdir())) == 3


def test_refused_association_reaches_the_app_unchanged(site: Site) -> None:
    result = site.launch("echoscu", "-aec", "NOSUCHPACS@GW1", "127.0.0.1", site.agent_port)
    assert result.returncode != 0
    assert "Association Rejected" in result.stderr and "Called AE Title Not Recognized" in result.stderr
    assert "Rejected Permanent" in result.stderr and "Service User" in result.stderr
    unknown_route = site.launch("echoscu", "-aec", "ORTHANC@NOWHERE", "127.0.0.1", site.agent_port)
    assert "Called AE Title Not Recognized" in unknown_route.stderr


def test_app_exit_code_is_ours_and_logout_happens_after_a_crash(site: Site) -> None:
    result = site.agent("launch", "--verbose", "--user", "rad", "--password-stdin", "--", "/bin/sh", "-c", "exit 7",
                        stdin="demo-rad\n")
    assert result.returncode == 7
    assert "rad logged out" in result.stderr


def test_login_serve_status_logout_and_the_identity_response_is_stripped(site: Site) -> None:
    login = site.agent("login", "--user", "rad", "--password-stdin", stdin="demo-rad\n")
    assert login.returncode == 0, login.stderr
    session = site.root / "session.json"
    assert oct(session.stat().st_mode & 0o777) == "0o600" and "demo-rad" not in session.read_text()
    assert "logged in as rad" in site.agent("status").stdout
    serve = subprocess.Popen([sys.executable, "-m", "agent.cli", "--config", str(site.config), "serve"],
                             cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_port(site.agent_port, 20, serve)  # type: ignore[arg-type]
        with socket.create_connection(("127.0.0.1", site.agent_port), timeout=10) as sock:
            sock.sendall(pynetdicom_rq(called="ORTHANC@GW1", calling="RAWAPP"))
            header = sock.recv(6, socket.MSG_WAITALL)
            body = sock.recv(struct.unpack(">I", header[2:])[0], socket.MSG_WAITALL)
        ac = decode_associate(header + body)
        assert identity_response(ac) is None  # the app never sees 0x59...
        assert site.double.policy.seen[-1].identity.positive_response_requested  # type: ignore[union-attr]
        # ...although the server side answered one (the double adds it when asked).
        if os.geteuid() == 0 and shutil.which("setpriv"):
            other = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                    str(DCMTK_BIN / "echoscu"), "-aec", "ORTHANC@GW1", "127.0.0.1",
                                    str(site.agent_port)], capture_output=True, text=True, timeout=30)
            assert other.returncode != 0 and "Association Rejected" in other.stderr
            journal = (site.root / "associations.jsonl").read_text()
            assert "not of the logged-in user" in journal
    finally:
        serve.terminate()
        serve.wait(10)
    token = _last_token(site)
    assert site.agent("logout").returncode == 0
    assert not session.exists()
    assert site.introspect(token) == {"active": False}


def test_login_with_mfa_code_on_stdin_and_with_the_device_flow(site: Site) -> None:
    import pyotp

    code = pyotp.TOTP("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP").now()
    mfa = site.agent("login", "--user", "mfarad", "--password-stdin", stdin=f"demo-mfarad\n{code}\n")
    assert mfa.returncode == 0, mfa.stderr
    assert "logged in as mfarad" in mfa.stdout
    assert site.agent("logout").returncode == 0
    device = subprocess.Popen([sys.executable, "-m", "agent.cli", "--config", str(site.config), "login", "--device"],
                              cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert device.stderr is not None
    line = device.stderr.readline()
    while "enter the code" not in line:
        line = device.stderr.readline()
        assert line, "no device code was shown"
    user_code = line.rsplit(" ", 1)[1].strip()
    approve = requests.post(f"{site.hial.issuer}/device", timeout=10, data={
        "user_code": user_code, "username": "rad", "password": "demo-rad", "action": "approve"})
    assert "Approved" in approve.text
    out, _ = device.communicate(timeout=60)
    assert device.returncode == 0 and "logged in as rad" in out
    assert site.agent("logout").returncode == 0
