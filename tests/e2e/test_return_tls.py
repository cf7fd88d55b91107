"""The C-MOVE return path over DICOM TLS (PS3.15 B.12; issue 13: "the return listener accepts DICOM TLS
with the PACS's certificate where the PACS supports it, so a deployment need not trust a source
address"): Orthanc sends its C-STORE sub-operations over TLS with its own certificate ("UseDicomTls"),
and the server agent's return listener (``[return] tls = true``) accepts nothing else."""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread

from agent import certs
from devtools.dicomdata import make_ct_study
from devtools.site import Site
from dicomwire.tls import client_context
from tests.attacks.ring import events
from tests.attacks.support import CT_IMAGE_STORAGE, Ended, Peer, Proposal, associate_rq, tls_client

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("return-tls")
    site = Site(root, return_tls=True)
    try:
        site.start()
    except BaseException:
        site.stop()
        raise
    assert site.orthanc is not None
    site.orthanc.upload(make_ct_study(root / "data" / "PAT-1", slices=2, patient_id="PAT-1", seed=7))
    yield site
    site.stop()


def test_a_move_through_both_agents_returns_over_tls_with_the_pacs_certificate(site: Site) -> None:
    assert site.orthanc is not None and site.scp is not None
    study = site.root / "data" / "PAT-1"
    uid = dcmread(next(study.iterdir())).StudyInstanceUID
    result = site.launch("rad", "movescu", "-v", "-S", "-aet", "MOVESCP", "-aem", "MOVESCP",
                         "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={uid}",
                         "-aec", "ORTHANC@GW1", "127.0.0.1", site.ports["agent"])
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 10
    while len(site.scp.received()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert {str(dcmread(p).SOPInstanceUID) for p in site.scp.received()} == \
        {str(dcmread(p).SOPInstanceUID) for p in study.iterdir()}
    assert "Opening a DICOM SCU connection using DICOM TLS" in site.orthanc.log_text()  # Orthanc sent over TLS
    accepted = events(site, event="authentication", path="return", decision="permit")
    assert accepted and accepted[-1]["pacs"] == "ORTHANC" and accepted[-1]["certificate"][0] == "pacs"
    stored = events(site, event="authorization", sub_operation_of="C-MOVE", decision="permit")
    assert len(stored) >= 2 and stored[-1]["user"]["username"] == "rad"


def test_plain_dicom_to_the_return_listener_is_refused(site: Site) -> None:
    before = len(events(site, path="return"))
    with Peer.connect(site.ports["return"], timeout=5) as peer:
        got = peer.associate(associate_rq(called="MOVESCP@WS1", calling="ORTHANC", proposals=(
            Proposal(id=1, abstract=CT_IMAGE_STORAGE),)))
    assert isinstance(got, Ended) and got.kind in ("eof", "reset")  # no TLS, no DICOM: closed unanswered
    assert len(events(site, path="return")) == before  # never became an association


def test_a_certificate_naming_another_peer_is_rejected(site: Site) -> None:
    """ws1's certificate chains to the site CA like the PACS's, but names no PACS: rejected (PS3.8 9.3.4
    source 1, reason 3: calling AE title not recognized), logged not_a_pacs, whatever its address."""
    with Peer.connect(site.ports["return"], tls=tls_client(site.pki, "ws1"), timeout=5) as peer:
        got = peer.associate(associate_rq(called="MOVESCP@WS1", calling="ORTHANC", proposals=(
            Proposal(id=1, abstract=CT_IMAGE_STORAGE),)))
    assert isinstance(got, Ended) and got.kind == "reject" and got.detail == (1, 1, 3)
    refused = events(site, event="authentication", path="return", decision="deny")
    assert refused and refused[-1]["reason"] == "not_a_pacs" and "ws1" in refused[-1]["detail"]


def test_a_certificate_from_another_ca_fails_the_handshake(site: Site, tmp_path: Path) -> None:
    certs.init_ca(tmp_path)
    certs.issue(tmp_path, "pacs", ["127.0.0.1"])  # the right name, the wrong issuer
    forged = client_context(ca=site.pki / "ca.crt", certificate=tmp_path / "pacs.crt", key=tmp_path / "pacs.key")
    before = len(events(site, path="return"))
    with contextlib.suppress(ssl.SSLError, OSError), \
            socket.create_connection(("127.0.0.1", site.ports["return"]), timeout=5) as raw, \
            forged.wrap_socket(raw, server_hostname="gw1") as tls:
        tls.sendall(b"\x01")
        assert tls.recv(1) == b""  # TLS 1.3: the refusal arrives after the client's handshake
    assert len(events(site, path="return")) == before  # refused by the handshake: no association to decide
