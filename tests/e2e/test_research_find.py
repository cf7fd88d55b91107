"""Issue 16 items 1, 2 and 5 end to end for C-FIND: DCMTK ``findscu`` through ``dicom-agent launch``, the
live HIAL deciding (the researcher's permits carry the de-identify obligation), the pseudonymisation
service handing out pseudonyms, Orthanc unchanged.

A tee between findscu and the workstation agent keeps every byte the app received; the data sets are
put together from their PDVs (PS3.8 E.2), so that no value hides across a fragment boundary."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from pydicom import dcmread
from pydicom.filereader import read_dataset

from agent import certs
from devtools.dicomdata import make_ct_study
from devtools.peers import DCMTK_BIN, dcmtk_env, free_port
from devtools.rsyslog import RSYSLOGD, Rsyslog
from devtools.site import Site

# patient id -> (name, accession): PAT-RES-1 consented to STUDY-A, PAT-NORES refused research, PAT-NOCONSENT
# said nothing (configs/demo/policy.toml).
PATIENTS = {"PAT-RES-1": ("RESEARCH^ROSALIND", "ACCRES1"), "PAT-NORES": ("REFUSED^RUPERT", "ACCNORES"),
            "PAT-NOCONSENT": ("SILENT^SAM", "ACCSILENT")}
KEYS = ["QueryRetrieveLevel=STUDY", "PatientID", "PatientName", "PatientBirthDate", "StudyInstanceUID", "StudyDate",
        "AccessionNumber", "StudyDescription", "PatientSex"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("research")
    pki = root / "pki"
    certs.init_ca(pki)
    for name in ("gw1", "ws1", "audit"):
        certs.issue(pki, name, ["127.0.0.1"])
    repository = Rsyslog(root / "rsyslog", ca=pki / "ca.crt", certificate=pki / "audit.crt",
                         key=pki / "audit.key").start() if Path(RSYSLOGD).exists() else None
    site = Site(root, research=True, audit_port=repository.port if repository else None).start()
    site.repository = repository  # type: ignore[attr-defined]
    assert site.orthanc is not None
    for n, (patient, (name, accession)) in enumerate(PATIENTS.items()):
        site.orthanc.upload(make_ct_study(root / "data" / patient, slices=1, patient_id=patient, patient_name=name,
                                          accession=accession, seed=n + 7))
    site.real = {p: dcmread(next((root / "data" / p).iterdir())) for p in PATIENTS}  # type: ignore[attr-defined]
    yield site
    site.stop()
    if repository is not None:
        repository.stop()


class Tee:
    """A TCP relay on a free port to ``port`` that keeps what the far side sent back."""

    def __init__(self, port: int) -> None:
        self.port, self.target = free_port(), port
        self.received = bytearray()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pump, args=(client, upstream, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, self.received), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, keep: bytearray | None) -> None:
        try:
            while chunk := source.recv(65536):
                if keep is not None:
                    keep += chunk
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()


def data_sets(stream: bytes) -> list[bytes]:
    """Every data set in a P-DATA-TF stream (PS3.8 9.3.5, E.2), its PDVs joined."""
    out, current, pos = [], bytearray(), 0
    while pos + 6 <= len(stream):
        kind, length = stream[pos], int.from_bytes(stream[pos + 2:pos + 6], "big")
        body, pos = stream[pos + 6:pos + 6 + length], pos + 6 + length
        at = 0
        while kind == 0x04 and at + 6 <= len(body):
            size, control = int.from_bytes(body[at:at + 4], "big"), body[at + 5]
            value, at = body[at + 6:at + 4 + size], at + 4 + size
            if not control & 1:  # a data set fragment
                current += value
                if control & 2:
                    out.append(bytes(current))
                    current = bytearray()
    return out


def find(site: Site, user: str, *keys: str) -> tuple[list[bytes], subprocess.CompletedProcess[str]]:
    tee = Tee(site.ports["agent"])
    try:
        args = [a for k in (*KEYS, *keys) for a in ("-k", k)]
        result = site.launch(user, "findscu", "-v", "-S", *args, "-aec", "ORTHANC@GW1", "127.0.0.1", tee.port)
    finally:
        tee.close()
    site.last_stream = bytes(tee.received)  # type: ignore[attr-defined]
    return data_sets(bytes(tee.received)), result


def direct(site: Site, *keys: str) -> list[bytes]:
    assert site.orthanc is not None
    tee = Tee(site.orthanc.dicom_port)
    try:
        args = [a for k in (*KEYS, *keys) for a in ("-k", k)]
        subprocess.run([str(DCMTK_BIN / "findscu"), "-S", *args, "-aec", "ORTHANC", "127.0.0.1", str(tee.port)],
                       check=True, capture_output=True, env=dcmtk_env(), timeout=60)
    finally:
        tee.close()
    return data_sets(bytes(tee.received))


def value(data: bytes, keyword: str) -> str:
    ds = read_dataset(BytesIO(data), is_implicit_VR=False, is_little_endian=True)
    return str(ds.get(keyword, "")).strip()


def records(site: Site) -> list[dict]:
    return [json.loads(line) for line in site.decisions().splitlines()]


def identifying(site: Site, patient: str) -> list[bytes]:
    real = site.real[patient]  # type: ignore[attr-defined]
    name, accession = PATIENTS[patient]
    return [patient.encode(), *(part.encode() for part in name.split("^")), accession.encode(),
            real.StudyInstanceUID.encode(), real.SeriesInstanceUID.encode(), real.SOPInstanceUID.encode(),
            real.StudyDate.encode(), real.PatientBirthDate.encode()]


def test_a_researcher_sees_only_consented_patients_and_only_pseudonyms(site: Site) -> None:
    sets, result = find(site, "researcher")
    assert result.returncode == 0, result.stderr
    shown = [s for s in sets if value(s, "PatientID")]
    assert len(shown) == 1, f"only PAT-RES-1 has the research consent: {result.stderr}"
    match = shown[0]
    assert value(match, "PatientID").startswith("SA-") and value(match, "PatientName").startswith("SA^")
    real = site.real["PAT-RES-1"]  # type: ignore[attr-defined]
    assert value(match, "StudyInstanceUID") not in ("", real.StudyInstanceUID)
    assert "" < value(match, "StudyDate") < real.StudyDate, "dates moved back by the patient's offset"
    for patient in PATIENTS:
        for secret in identifying(site, patient):
            assert secret not in match, f"{secret!r} of {patient} in the researcher's match"
    stream = b"".join(sets)  # every data set the app received
    for patient in PATIENTS:
        assert not any(secret in stream for secret in identifying(site, patient)), patient

    log = records(site)
    disclosed = [r for r in log if r.get("de_identified") and r.get("post_filter")]
    assert disclosed, "each match shown is recorded as a de-identified disclosure"
    last = disclosed[-1]
    assert last["user"]["username"] == "researcher" and last["project"] == "STUDY-A"
    assert last["resource"]["patient_id"] == "PAT-RES-1", "the record names the real patient"
    assert value(match, "PatientID") in last["pseudonyms"] and value(match, "StudyInstanceUID") in last["pseudonyms"]
    assert last["profile"].startswith("basic+") and "retain-longitudinal-modified-dates" in last["profile"]
    withheld = {r["resource"].get("patient_id"): r["reason"] for r in log
                if r.get("post_filter") and r["decision"] == "deny"}
    assert withheld["PAT-NORES"] == "consent_denied" and withheld["PAT-NOCONSENT"] == "patient_not_decided"


def test_pseudonymous_keys_find_the_real_study(site: Site) -> None:
    sets, _ = find(site, "researcher")
    first = next(s for s in sets if value(s, "PatientID"))
    pseudonym, study = value(first, "PatientID"), value(first, "StudyInstanceUID")
    by_patient, result = find(site, "researcher", f"PatientID={pseudonym}")
    assert [value(s, "StudyInstanceUID") for s in by_patient if value(s, "PatientID")] == [study], result.stderr
    by_study, result = find(site, "researcher", f"StudyInstanceUID={study}")
    assert [value(s, "PatientID") for s in by_study if value(s, "PatientID")] == [pseudonym], result.stderr
    again, _ = find(site, "researcher")  # another association, another token: the same pseudonyms
    assert [value(s, "PatientID") for s in again if value(s, "PatientID")] == [pseudonym]


@pytest.mark.parametrize(("key", "named"), [
    ("PatientName=RESEARCH^ROSALIND", "PatientName"), ("PatientID=PAT-RES-1", "Patient ID"),
    ("PatientID=PAT-NORES", "Patient ID"),  # a real patient who refused research: told no more than any value
    ("PatientBirthDate=19700101", "PatientBirthDate"), ("AccessionNumber=ACCRES1", "AccessionNumber"),
])
def test_matching_on_what_identifies_a_patient_is_refused_with_a_reason(site: Site, key: str, named: str) -> None:
    assert site.orthanc is not None
    before = site.orthanc.log_text().count("DICOM C-Find request")
    sets, result = find(site, "researcher", key)
    assert re.search(r"0x0?124\b", result.stderr), result.stderr
    assert "Received Final Find Response (Unknown Status: 0x124)" in result.stderr, result.stderr
    comment = re.search(rb"RESEARCH-KEY: research view[^\x00]*", site.last_stream)  # type: ignore[attr-defined]
    assert comment and named.encode() in comment.group(), "the reason travels as the Error Comment (0000,0902)"
    assert not [s for s in sets if value(s, "PatientID")]
    assert site.orthanc.log_text().count("DICOM C-Find request") == before, "nothing reached the PACS"
    refused = [r for r in records(site) if r.get("reason") == "identifying_key"]
    assert refused and refused[-1]["user"]["username"] == "researcher" and named in refused[-1]["detail"]


def test_a_clinician_gets_byte_for_byte_what_orthanc_sent(site: Site) -> None:
    through, result = find(site, "rad", "PatientID=PAT-RES-1")
    assert result.returncode == 0, result.stderr
    sent = direct(site, "PatientID=PAT-RES-1")
    assert through == sent and len(sent) == 1 and b"PAT-RES-1" in sent[0]


def accounting(site: Site, patient: str) -> list[dict]:
    """``decision-log patient PATIENT --json``: one access per line."""
    result = subprocess.run([sys.executable, "-m", "audit.cli", "patient", patient, "--log",
                             str(site.root / "decisions.jsonl"), "--json"], capture_output=True, text=True)
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_the_patients_accounting_lists_the_research_disclosure(site: Site) -> None:
    find(site, "researcher")
    site.decisions()
    research = [a for a in accounting(site, "PAT-RES-1") if a["user"] == "researcher" and a["de_identified"]]
    assert research and "STUDY-A" in research[-1]["detail"] and research[-1]["decision"] == "permit"
    assert not [a for a in accounting(site, "PAT-NOCONSENT") if a["de_identified"]], \
        "a patient without the research consent was never disclosed"


def test_the_audit_stream_names_the_pseudonym_shown_beside_the_real_patient(site: Site) -> None:
    repository = site.repository  # type: ignore[attr-defined]
    if repository is None:
        pytest.skip("rsyslog is installed by `make test`")
    sets, _ = find(site, "researcher")
    pseudonym = next(value(s, "PatientID") for s in sets if value(s, "PatientID"))
    deadline = time.monotonic() + 10
    found: list[ET.Element] = []
    while not found and time.monotonic() < deadline:
        messages = [ET.fromstring(m) for m in repository.messages()]
        found = [m for m in messages if m.find(f"ParticipantObjectIdentification[@ParticipantObjectID='{pseudonym}']")
                 is not None]
        time.sleep(0.2)
    assert found, "a de-identified disclosure's audit message"
    message = found[-1]
    assert message.find("EventIdentification/EventID").get("csd-code") == "110112"  # type: ignore[union-attr]
    objects = message.findall("ParticipantObjectIdentification")
    assert objects[0].get("ParticipantObjectID") == "PAT-RES-1", "the real patient first, for the accounting"
    shown = objects[-1]
    assert shown.get("ParticipantObjectID") == pseudonym and shown.get("ParticipantObjectDataLifeCycle") == "7"
    details = {d.get("type"): base64.b64decode(d.get("value", "")).decode()
               for d in shown.findall("ParticipantObjectDetail")}
    assert details["ResearchProject"] == "STUDY-A" and details["DeidentificationProfile"].startswith("basic+")
    requestor = message.find("ActiveParticipant[@UserIsRequestor='true']")
    assert requestor is not None and requestor.get("UserID") == "researcher"


def test_matches_extracted_by_findscu_carry_pseudonyms(site: Site, tmp_path: Path) -> None:
    out = tmp_path / "rsp"
    out.mkdir()
    args = [a for k in KEYS for a in ("-k", k)]
    result = site.launch("researcher", "findscu", "-S", *args, "-X", "-od", out, "-aec", "ORTHANC@GW1", "127.0.0.1",
                         site.ports["agent"])
    assert result.returncode == 0, result.stderr
    files = sorted(out.iterdir())
    assert len(files) == 1
    ds = dcmread(files[0])
    assert ds.PatientID.startswith("SA-") and "ROSALIND" not in str(ds.PatientName)


def test_without_the_pseudonymisation_service_nothing_is_shown_and_the_researcher_is_told(site: Site) -> None:
    """Last in this module: it stops the service. A research view it cannot make is never made identified."""
    assert site.pseudonymizer is not None
    site.pseudonymizer.stop()
    sets, result = find(site, "researcher")
    assert not [s for s in sets if value(s, "PatientID")], "no match without its pseudonyms"
    assert "Received Final Find Response (Failed: UnableToProcess)" in result.stderr, result.stderr
    assert b"research view: 1 match(es) withheld: pseudonymisation service" in site.last_stream  # type: ignore
    refused, result = find(site, "researcher", "PatientID=SA-0000000000000000")
    assert refused == []
    assert re.search(rb"UNAVAILABLE: pseudonymisation service", site.last_stream), result.stderr  # type: ignore
    log = records(site)
    assert any(r.get("reason") == "pseudonymizer_unavailable" and r.get("post_filter") for r in log)
    assert any(r.get("reason") == "pseudonymizer_unavailable" and not r.get("post_filter") for r in log)
