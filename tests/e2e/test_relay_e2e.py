"""dicom-relay between real DCMTK tools / pynetdicom and an unchanged Orthanc: same results as direct."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from devtools.capture import read_pdu
from devtools.peers import Orthanc, RelayProcess, StoreSCP, dcmtk, free_port
from tests.support.wire import pynetdicom_rq

FIND_KEYS = ["-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=E2E001", "-k", "StudyInstanceUID",
             "-k", "AccessionNumber", "-k", "PatientName"]


def _answers(output: str) -> list[str]:
    """The data set lines of findscu's answers, in order, without timestamps or log prefixes."""
    return [line.split(" ", 1)[1] for line in output.splitlines() if re.match(r"^I: \(\w{4},\w{4}\)", line)]


def test_echo_through_relay(relay: RelayProcess) -> None:
    result = dcmtk("echoscu", "-v", "-aec", "ORTHANC", "127.0.0.1", relay.port)
    assert result.returncode == 0, result.stderr


def test_find_through_relay_equals_direct(relay: RelayProcess, orthanc: Orthanc) -> None:
    direct = dcmtk("findscu", "-v", *FIND_KEYS, "-aec", "ORTHANC", "127.0.0.1", orthanc.dicom_port)
    relayed = dcmtk("findscu", "-v", *FIND_KEYS, "-aec", "ORTHANC", "127.0.0.1", relay.port)
    assert direct.returncode == relayed.returncode == 0, relayed.stderr
    assert _answers(relayed.stderr) == _answers(direct.stderr)
    assert any("E2EACC1" in line for line in _answers(relayed.stderr))


def test_store_through_relay(relay: RelayProcess, orthanc: Orthanc, tmp_path: Path) -> None:
    from devtools.dicomdata import make_ct_study

    files = make_ct_study(tmp_path / "new", slices=3, patient_id="E2ESTORE", seed=7)
    before = set(orthanc.instances())
    result = dcmtk("storescu", "-aec", "ORTHANC", "127.0.0.1", relay.port, *files)
    assert result.returncode == 0, result.stderr
    added = set(orthanc.instances()) - before
    assert len(added) == 3
    stored = {orthanc.rest(f"/instances/{i}/simplified-tags")["SOPInstanceUID"] for i in added}  # type: ignore[index]
    assert stored == {str(dcmread(f).SOPInstanceUID) for f in files}


def test_move_through_relay_delivers_images(relay: RelayProcess, storescp: StoreSCP, study: list[Path]) -> None:
    result = dcmtk("movescu", "-v", "-S", "-aem", "MOVESCP", "-k", "QueryRetrieveLevel=STUDY",
                   "-k", f"StudyInstanceUID={dcmread(study[0]).StudyInstanceUID}",
                   "-aec", "ORTHANC", "127.0.0.1", relay.port)
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 10
    while len(storescp.received()) < len(study) and time.monotonic() < deadline:
        time.sleep(0.1)
    received = {str(dcmread(p).SOPInstanceUID) for p in storescp.received()}
    assert received == {str(dcmread(p).SOPInstanceUID) for p in study}


def test_get_through_relay_delivers_images(relay: RelayProcess, study: list[Path], workdir: Path) -> None:
    result = dcmtk("getscu", "-v", "-S", "-k", "QueryRetrieveLevel=STUDY",
                   "-k", f"StudyInstanceUID={dcmread(study[0]).StudyInstanceUID}",
                   "-od", workdir, "-aec", "ORTHANC", "127.0.0.1", relay.port)
    assert result.returncode == 0, result.stderr
    received = {str(dcmread(p).SOPInstanceUID) for p in workdir.iterdir()}
    assert received == {str(dcmread(p).SOPInstanceUID) for p in study}
    # A C-GET carries C-STORE sub-operations on the same association, server to client.
    trace = relay.log_path.read_text() if relay.log_path else ""
    assert re.search(r"S>C DIMSE C-STORE-RQ", trace) and re.search(r"C>S DIMSE C-STORE-RSP", trace)


def test_pynetdicom_client_through_relay(relay: RelayProcess, orthanc: Orthanc) -> None:
    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(Verification)
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    from pydicom.dataset import Dataset

    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientID = "E2E001"
    query.PatientName = ""

    def results(port: int) -> list[tuple[int, str | None]]:
        assoc = ae.associate("127.0.0.1", port, ae_title="ORTHANC")
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0
        out = [(status.Status, str(ds.PatientName) if ds else None)
               for status, ds in assoc.send_c_find(query, PatientRootQueryRetrieveInformationModelFind)]
        assoc.release()
        return out

    assert results(relay.port) == results(orthanc.dicom_port) == [(0xFF00, "RELAY^TEST"), (0, None)]


def test_trace_prints_pdus_and_dimse_messages(relay: RelayProcess) -> None:
    dcmtk("echoscu", "-aec", "ORTHANC", "127.0.0.1", relay.port, check=True)
    time.sleep(0.2)
    trace = relay.log_path.read_text() if relay.log_path else ""
    assert re.search(r"C>S A-ASSOCIATE-RQ \d+ bytes called='ORTHANC' calling='ECHOSCU'", trace)
    assert re.search(r"S>C A-ASSOCIATE-AC \d+ bytes", trace)
    assert re.search(r"C>S DIMSE C-ECHO-RQ id=\d+ sop=1\.2\.840\.10008\.1\.1 ctx=1", trace)
    assert re.search(r"S>C DIMSE C-ECHO-RSP re=\d+ status=0x0000", trace)
    assert re.search(r"C>S A-RELEASE-RQ 10 bytes", trace) and re.search(r"S>C A-RELEASE-RP 10 bytes", trace)


# ---- bad input ---------------------------------------------------------------------------------


def test_unknown_pdu_type_gets_abort_and_log_line(relay: RelayProcess) -> None:
    with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as sock:
        sock.sendall(bytes.fromhex("09 00 00000004 00000000".replace(" ", "")))
        assert read_pdu(sock) == bytes.fromhex("07 00 00000004 0000 02 01".replace(" ", ""))
        assert sock.recv(1) == b""  # and the connection is closed
    time.sleep(0.2)
    log = relay.log_path.read_text() if relay.log_path else ""
    assert "unknown PDU type 0x09" in log


def test_four_gib_length_is_refused_at_once(relay: RelayProcess) -> None:
    with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as sock:
        sock.sendall(bytes.fromhex("04 00 ffffffff 0000".replace(" ", "")))
        assert read_pdu(sock) == bytes.fromhex("07 00 00000004 0000 02 06".replace(" ", ""))


def test_bad_called_ae_title_is_rejected(relay: RelayProcess) -> None:
    data = bytearray(pynetdicom_rq(called="ORTHANC"))
    data[10:26] = b"ORTH\x07ANC".ljust(16, b" ")
    with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as sock:
        sock.sendall(bytes(data))
        assert read_pdu(sock) == bytes.fromhex("03 00 00000004 00 01 01 07".replace(" ", ""))


def test_malformed_pdu_mid_association_never_reaches_upstream(orthanc: Orthanc, tmp_path: Path) -> None:
    # Two relays in a row: the second one's trace is what "upstream" saw.
    inner_log = tmp_path / "inner.log"
    inner = RelayProcess(to=("127.0.0.1", orthanc.dicom_port), trace=True, log_path=inner_log).start()
    outer = RelayProcess(to=("127.0.0.1", inner.port), log_path=tmp_path / "outer.log").start()
    try:
        with socket.create_connection(("127.0.0.1", outer.port), timeout=5) as sock:
            sock.sendall(pynetdicom_rq(called="ORTHANC"))
            assert read_pdu(sock)[0] == 0x02  # A-ASSOCIATE-AC
            sock.sendall(bytes.fromhex("04 00 0000000c 000000ff 01 03 deadbeef0001".replace(" ", "")))
            assert read_pdu(sock) == bytes.fromhex("07 00 00000004 0000 02 06".replace(" ", ""))
        time.sleep(0.3)
    finally:
        outer.stop()
        inner.stop()
    upstream_saw = inner_log.read_text()
    assert "C>S A-ABORT 10 bytes (source 2, reason 0)" in upstream_saw
    assert "P-DATA-TF" not in upstream_saw
    assert "malformed data from the client: PDV item length 255 overruns" in (tmp_path / "outer.log").read_text()


# ---- limits, timeouts and shutdown ---------------------------------------------------------------


def test_max_associations_rejects_the_next_one(orthanc: Orthanc, tmp_path: Path) -> None:
    relay = RelayProcess(to=("127.0.0.1", orthanc.dicom_port), extra=["--max-associations", "1"],
                         log_path=tmp_path / "relay.log").start()
    try:
        ae = AE(ae_title="HOLDER")
        ae.add_requested_context(Verification)
        held = ae.associate("127.0.0.1", relay.port, ae_title="ORTHANC")
        assert held.is_established
        second = dcmtk("echoscu", "-aec", "ORTHANC", "127.0.0.1", relay.port)
        assert second.returncode != 0
        assert "Association Rejected" in second.stderr and "Transient" in second.stderr
        assert "Local Limit Exceeded" in second.stderr
        held.release()
        # The slot frees once the relay has seen both connections close: allow it a moment.
        deadline = time.monotonic() + 5
        while dcmtk("echoscu", "-aec", "ORTHANC", "127.0.0.1", relay.port).returncode != 0:
            assert time.monotonic() < deadline, "the association slot was never freed"
            time.sleep(0.1)
    finally:
        relay.stop()


def test_artim_closes_a_connection_that_never_asks(orthanc: Orthanc, tmp_path: Path) -> None:
    relay = RelayProcess(to=("127.0.0.1", orthanc.dicom_port), extra=["--artim-timeout", "0.5"],
                         log_path=tmp_path / "relay.log").start()
    try:
        with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as sock:
            started = time.monotonic()
            assert sock.recv(1) == b""
            assert time.monotonic() - started < 4
    finally:
        relay.stop()
    assert "no A-ASSOCIATE-RQ within 0.5 s" in (tmp_path / "relay.log").read_text()


def test_idle_association_is_aborted(orthanc: Orthanc, tmp_path: Path) -> None:
    relay = RelayProcess(to=("127.0.0.1", orthanc.dicom_port), extra=["--idle-timeout", "0.5"],
                         log_path=tmp_path / "relay.log").start()
    try:
        aborted: list[bool] = []
        ae = AE(ae_title="IDLER")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", relay.port, ae_title="ORTHANC",
                             evt_handlers=[(evt.EVT_ABORTED, lambda event: aborted.append(True))])
        assert assoc.is_established
        deadline = time.monotonic() + 5
        while assoc.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert assoc.is_aborted and aborted
    finally:
        relay.stop()


def test_graceful_shutdown_waits_then_aborts(orthanc: Orthanc, tmp_path: Path) -> None:
    relay = RelayProcess(to=("127.0.0.1", orthanc.dicom_port), extra=["--shutdown-grace", "1"],
                         log_path=tmp_path / "relay.log").start()
    ae = AE(ae_title="LINGER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", relay.port, ae_title="ORTHANC")
    assert assoc.is_established
    started = time.monotonic()
    assert relay.stop() == 0
    assert time.monotonic() - started < 5
    deadline = time.monotonic() + 3
    while assoc.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert assoc.is_aborted
    # New connections are refused once shutdown started.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", relay.port), timeout=1).close()


def test_unreachable_upstream_is_rejected_transient(tmp_path: Path) -> None:
    relay = RelayProcess(to=("127.0.0.1", free_port()), log_path=tmp_path / "relay.log").start()
    try:
        result = dcmtk("echoscu", "-aec", "ORTHANC", "127.0.0.1", relay.port)
        assert result.returncode != 0 and "Association Rejected" in result.stderr
        assert "Transient" in result.stderr
    finally:
        relay.stop()


def test_ct_files_arrive_intact(relay: RelayProcess, storescp: StoreSCP, study: list[Path]) -> None:
    """Pixel data through the relay and back out of Orthanc is byte-identical to what was stored."""
    result = dcmtk("movescu", "-S", "-aem", "MOVESCP", "-k", "QueryRetrieveLevel=STUDY",
                   "-k", f"StudyInstanceUID={dcmread(study[0]).StudyInstanceUID}",
                   "-aec", "ORTHANC", "127.0.0.1", relay.port)
    assert result.returncode == 0
    deadline = time.monotonic() + 10
    while len(storescp.received()) < len(study) and time.monotonic() < deadline:
        time.sleep(0.1)
    by_uid = {str(dcmread(p).SOPInstanceUID): dcmread(p).PixelData for p in study}
    for path in storescp.received():
        ds = dcmread(path)
        assert ds.PixelData == by_uid[str(ds.SOPInstanceUID)]


__all__ = ["CTImageStorage"]
