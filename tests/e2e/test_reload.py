"""Issue 15 item 1 end to end: SIGHUP re-reads the configuration of a running agent without dropping a
live association (real HIAL, Orthanc, DCMTK storescp, the agents as processes, pynetdicom clients).

Before the reload existed, SIGHUP's default action ended either agent at once: every test here fails
on that code at its first assertion after the signal (the association, or the process, is gone).
"""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import UserIdentityNegotiation
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from agent import certs
from agent.config import load as load_workstation
from devtools.dicomdata import make_ct_study
from devtools.peers import PROJECT, StoreSCP, free_port, wait_for_port
from devtools.site import Site
from dicomwire.tls import client_context
from tomlconf import write

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("reload")
    site = Site(root).start()
    assert site.orthanc is not None
    site.orthanc.upload(make_ct_study(root / "data", slices=2, patient_id="PAT-1", accession="ACC1", seed=1))
    yield site
    site.stop()


@pytest.fixture()
def original(site: Site) -> Iterator[str]:
    """The server agent's file as the site wrote it, put back (and reloaded) after the test."""
    path = site.root / "server-agent.toml"
    text = path.read_text()
    yield text
    if path.read_text() != text:
        path.write_text(text)
        hup(site)


def server_log(site: Site) -> str:
    return (site.root / "server-agent.log").read_text()


def wait_for(read: Callable[[], str], needle: str, count: int, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = read()
        if text.count(needle) >= count:
            return text
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} not seen {count} time(s) within {timeout} s")


def hup(site: Site) -> str:
    """SIGHUP to the server agent, and its log once it has answered (reloaded or refused)."""
    assert site.server is not None
    before = server_log(site).count("configuration reload")
    site.server.send_signal(signal.SIGHUP)
    return wait_for(lambda: server_log(site), "configuration reload", before + 1)


def token(site: Site, user: str, scope: str) -> bytes:
    assert site.hial is not None
    return requests.post(f"{site.hial.issuer}/token", timeout=10, data={
        "grant_type": "password", "client_id": "workstation-agent", "username": user, "password": f"demo-{user}",
        "scope": f"openid {scope}"}).json()["access_token"].encode()


def associate(site: Site, user: str, scope: str, *contexts: str, port: int | None = None,
              tls: ssl.SSLContext | None = None) -> Association:
    """An association straight to the server agent over TLS, as workstation WS1's agent would open it."""
    ae = AE(ae_title="VIEWER@WS1")
    for context in (Verification, *contexts):
        ae.add_requested_context(context)
    identity = UserIdentityNegotiation()
    identity.user_identity_type = 5
    identity.primary_field = token(site, user, scope)
    tls = tls or client_context(ca=site.pki / "ca.crt", certificate=site.pki / "ws1.crt", key=site.pki / "ws1.key")
    assoc = ae.associate("127.0.0.1", port or site.ports["server"], ae_title="ORTHANC@GW1", ext_neg=[identity],
                         tls_args=(tls, "gw1"))
    assert assoc.is_established
    return assoc


def find_studies(assoc: Association, patient: str) -> list[str]:
    from pydicom.dataset import Dataset

    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = patient
    query.StudyInstanceUID = ""
    found = []
    for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
        assert status is not None and status.Status in (0x0000, 0xFF00, 0xFF01), status
        if identifier is not None:
            found.append(str(identifier.StudyInstanceUID))
    return found


def records(site: Site, event: str) -> list[dict]:
    return [r for r in map(json.loads, site.decisions().splitlines()) if r.get("event") == event]


def test_a_live_find_and_store_survive_a_reload_that_moves_the_pacs_and_the_next_association_follows(
        site: Site, original: str, tmp_path: Path) -> None:
    assert site.orthanc is not None and site.server is not None
    other = StoreSCP(tmp_path / "other-pacs", aet="ORTHANC").start()  # where [pacs.ORTHANC] points after the HUP
    try:
        files = make_ct_study(tmp_path / "ct", slices=4, patient_id="PAT-HUP", seed=7)
        finder = associate(site, "rad", "user/ImagingStudy.rs", StudyRootQueryRetrieveInformationModelFind)
        storer = associate(site, "tech", "user/ImagingStudy.c", CTImageStorage)
        assert find_studies(finder, "PAT-1")
        before = set(site.orthanc.instances())
        assert storer.send_c_store(dcmread(files[0])).Status == 0

        config = site.server_agent_config()
        moved = config.replace(pacs={"ORTHANC": config.pacs["ORTHANC"].replace(port=other.port)})
        path = write(site.root / "server-agent.toml", moved)
        text = hup(site)
        assert site.server.poll() is None, "the server agent died on SIGHUP"
        assert "configuration reloaded: generation 2" in text and "changed pacs.ORTHANC.port" in text

        # The live associations finish on the configuration they began with: Orthanc still answers.
        assert find_studies(finder, "PAT-1")
        for file in files[1:3]:
            assert storer.send_c_store(dcmread(file)).Status == 0
        storer.release()
        finder.release()
        assert len(set(site.orthanc.instances()) - before) == 3
        assert other.received() == []

        # A new association takes the new route: the image lands in the other PACS, not in Orthanc.
        fresh = associate(site, "tech", "user/ImagingStudy.c", CTImageStorage)
        assert fresh.send_c_store(dcmread(files[3])).Status == 0
        fresh.release()
        time.sleep(0.3)
        assert len(other.received()) == 1 and len(set(site.orthanc.instances()) - before) == 3

        reload = records(site, "configuration-reload")[-1]
        assert reload["result"] == "applied" and reload["generation"] == 2
        assert reload["config_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert reload["changed"] == ["pacs.ORTHANC.port"]
        key, log = site.root / "decision-log.key.pub", site.root / "decisions.jsonl"
        verify = subprocess.run([sys.executable, "-m", "audit.cli", "verify", "--log", str(log), "--public-key",
                                 str(key)], capture_output=True, text=True, timeout=60)
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        other.stop()


def test_a_broken_file_is_refused_naming_file_and_key_and_the_agent_keeps_serving(
        site: Site, original: str) -> None:
    assert site.server is not None
    live = associate(site, "rad", "user/ImagingStudy.rs", StudyRootQueryRetrieveInformationModelFind)
    path = site.root / "server-agent.toml"
    path.write_text(original.replace('ae_title = "ORTHANC"', 'ae_title = "ORTHANC"\nport_typo = 104', 1))
    text = hup(site)
    assert site.server.poll() is None
    assert f"configuration reload refused: {path}: pacs.ORTHANC.port_typo: unknown key" in text
    assert find_studies(live, "PAT-1")  # the live one goes on
    live.release()
    fresh = associate(site, "rad", "user/ImagingStudy.rs", StudyRootQueryRetrieveInformationModelFind)
    assert find_studies(fresh, "PAT-1")  # and a new one gets the running configuration
    fresh.release()
    refused = records(site, "configuration-reload")[-1]
    assert refused["result"] == "refused" and refused["key"] == "pacs.ORTHANC.port_typo"

    # A certificate whose key is not its own: refused by name, the running TLS context stays.
    certs.issue(site.pki, "stranger", ["127.0.0.1"])
    path.write_text(original.replace("gw1.key", "stranger.key"))
    text = hup(site)
    assert f"configuration reload refused: {path}: tls.key: " in text and "is not the private key of" in text
    # A listener address cannot change without a restart: said so, by key.
    path.write_text(original.replace(str(site.ports["return"]), str(site.ports["return"] + 1)))
    text = hup(site)
    assert f"{path}: server.return_listen: cannot change while running: restart the agent" in text
    check = associate(site, "rad", "user/ImagingStudy.rs")
    assert check.send_c_echo().Status == 0
    check.release()


def presented(port: int, ca: Path) -> bytes:
    """The certificate a fresh TLS handshake on ``port`` presents (DER)."""
    context = client_context(ca=ca)
    context.check_hostname = False
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def test_a_replaced_certificate_is_presented_to_new_handshakes_while_the_live_one_continues(
        site: Site, original: str) -> None:
    ca = site.pki / "ca.crt"
    old = presented(site.ports["server"], ca)
    live = associate(site, "rad", "user/ImagingStudy.rs", StudyRootQueryRetrieveInformationModelFind)
    # The certificate renewed in place (same file names, as certbot or an ACME client would): only
    # the files' contents change, and the reload must see that.
    saved = {name: (site.pki / name).read_bytes() for name in ("gw1.crt", "gw1.key")}
    try:
        certs.issue(site.pki, "gw1", ["127.0.0.1"])
        assert (site.pki / "gw1.crt").read_bytes() != saved["gw1.crt"]
        text = hup(site)
        assert "tls.certificate (file)" in text and "tls.key (file)" in text
        new = presented(site.ports["server"], ca)
        assert new != old and new == ssl.PEM_cert_to_DER_cert((site.pki / "gw1.crt").read_text())
        assert find_studies(live, "PAT-1")  # the live association, on the old handshake, goes on
        live.release()
        fresh = associate(site, "rad", "user/ImagingStudy.rs")
        assert fresh.send_c_echo().Status == 0
        fresh.release()
    finally:
        for name, data in saved.items():
            (site.pki / name).write_bytes(data)
        hup(site)


# ---- the workstation agent -------------------------------------------------------------------------------
@pytest.fixture()
def workstation(site: Site) -> Iterator[subprocess.Popen[bytes]]:
    """``dicom-agent serve`` logged in as tech, its log in workstation-agent.log; its file put back after."""
    path = site.root / "workstation.toml"
    text = path.read_text()
    login = site.agent("login", "--user", "tech", "--password-stdin", stdin="demo-tech\n")
    assert login.returncode == 0, login.stderr
    with open(site.root / "workstation-agent.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "agent.cli", "--config", str(path), "--log-level", "INFO",
                                    "serve"], cwd=PROJECT, stderr=log)
    wait_for_port(site.ports["agent"], 20, process)  # type: ignore[arg-type]
    yield process
    process.terminate()
    process.wait(15)
    site.agent("logout")
    path.write_text(text)


def agent_log(site: Site) -> str:
    return (site.root / "workstation-agent.log").read_text()


def hup_agent(site: Site, process: subprocess.Popen[bytes]) -> str:
    before = agent_log(site).count("configuration reload")
    process.send_signal(signal.SIGHUP)
    return wait_for(lambda: agent_log(site), "configuration reload", before + 1)


def app_association(site: Site) -> Association:
    """An app on this workstation (plain DICOM to the agent on loopback), storing through route GW1."""
    ae = AE(ae_title="STORESCU")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", site.ports["agent"], ae_title="ORTHANC@GW1")
    assert assoc.is_established
    return assoc


def test_the_workstation_agent_moves_a_route_on_hup_while_an_apps_store_goes_on(
        site: Site, workstation: subprocess.Popen[bytes], tmp_path: Path) -> None:
    assert site.orthanc is not None
    other = StoreSCP(tmp_path / "elsewhere", aet="ORTHANC").start()  # where route GW1 leads after the HUP
    try:
        files = make_ct_study(tmp_path / "ct", slices=4, patient_id="PAT-WS-HUP", seed=9)
        before = set(site.orthanc.instances())
        app = app_association(site)
        assert app.send_c_store(dcmread(files[0])).Status == 0
        path = site.root / "workstation.toml"
        config = load_workstation(path)
        write(path, config.replace(routes={"GW1": config.routes["GW1"].replace(port=other.port, tls=False, warm=0)}))
        text = hup_agent(site, workstation)
        assert workstation.poll() is None, "the workstation agent died on SIGHUP"
        assert "configuration reloaded: generation 2" in text and "changed routes.GW1.port, routes.GW1.tls" in text
        for file in files[1:3]:  # the app's open association still goes to GW1's server agent, and Orthanc
            assert app.send_c_store(dcmread(file)).Status == 0
        app.release()
        assert len(set(site.orthanc.instances()) - before) == 3 and other.received() == []
        fresh = app_association(site)  # the next one takes the new route
        assert fresh.send_c_store(dcmread(files[3])).Status == 0
        fresh.release()
        time.sleep(0.3)
        assert len(other.received()) == 1 and len(set(site.orthanc.instances()) - before) == 3
    finally:
        other.stop()


def test_the_workstation_agent_presents_a_renewed_certificate_and_refuses_a_key_that_is_not_its_own(
        site: Site, workstation: subprocess.Popen[bytes]) -> None:
    ca, path = site.pki / "ca.crt", site.root / "workstation.toml"
    old = presented(site.ports["agent_return"], ca)
    app = app_association(site)
    assert app.send_c_echo().Status == 0
    saved = {name: (site.pki / name).read_bytes() for name in ("ws1.crt", "ws1.key")}
    try:
        certs.issue(site.pki, "ws1", ["127.0.0.1"])
        text = hup_agent(site, workstation)
        assert "generation 2" in text and "tls.certificate (file), tls.key (file)" in text
        new = presented(site.ports["agent_return"], ca)
        assert new != old and new == ssl.PEM_cert_to_DER_cert((site.pki / "ws1.crt").read_text())
        assert app.send_c_echo().Status == 0  # the app's association, on the old TLS session, goes on
        app.release()
        fresh = app_association(site)  # a new one reaches the server agent with the new certificate
        assert fresh.send_c_echo().Status == 0
        fresh.release()

        certs.issue(site.pki, "stranger", ["127.0.0.1"])
        original = path.read_text()
        path.write_text(original.replace("ws1.key", "stranger.key"))
        text = hup_agent(site, workstation)
        assert f"configuration reload refused: {path}: tls.key: " in text and "is not the private key of" in text
        assert presented(site.ports["agent_return"], ca) == new and workstation.poll() is None
        path.write_text(original.replace(str(site.ports["agent"]), str(free_port())))
        text = hup_agent(site, workstation)
        assert f"{path}: workstation.listen: cannot change while running: restart the agent" in text
        check = app_association(site)
        assert check.send_c_echo().Status == 0
        check.release()
    finally:
        for name, data in saved.items():
            (site.pki / name).write_bytes(data)


def test_a_move_in_flight_and_its_return_association_survive_a_reload(
        site: Site, original: str, workstation: subprocess.Popen[bytes]) -> None:
    """A C-MOVE outstanding across the HUP: its return association (Orthanc -> server agent -> workstation
    agent -> the app's SCP) was opened under the old generation and its permit is in the moves that
    outlive generations; every image arrives, and the association moves again after the reload."""
    from pydicom.dataset import Dataset
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove  # type: ignore[attr-defined]

    assert site.scp is not None and site.server is not None
    for old in site.scp.received():
        old.unlink()
    mover = associate(site, "rad", "user/ImagingStudy.rs", StudyRootQueryRetrieveInformationModelMove)
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientID = "PAT-1"
    config = site.server_agent_config()
    write(site.root / "server-agent.toml", config.replace(pdp=config.pdp.replace(cache_seconds=5.0)))
    statuses = []
    for status, _ in mover.send_c_move(query, "MOVESCP@WS1", StudyRootQueryRetrieveInformationModelMove):
        statuses.append(status.Status)
        if len(statuses) == 1:  # pending: one sub-operation done, the other to come
            assert "changed pdp.cache_seconds" in hup(site)
    assert statuses[0] == 0xFF00 and statuses[-1] == 0x0000 and site.server.poll() is None
    assert len(site.scp.received()) == 2
    again = list(mover.send_c_move(query, "MOVESCP@WS1", StudyRootQueryRetrieveInformationModelMove))
    assert again[-1][0].Status == 0x0000
    mover.release()
