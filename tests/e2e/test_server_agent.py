"""Issue 5 end to end: the server agent in front of an unchanged Orthanc, real DCMTK apps through
the workstation agent, DCMTK and pynetdicom sending identities straight to the server agent, a live
HIAL as identity provider and policy decision point."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.pdu_primitives import UserIdentityNegotiation
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from agent import certs
from devtools.dicomdata import make_ct_study
from devtools.peers import dcmtk
from devtools.rsyslog import RSYSLOGD, Rsyslog
from devtools.site import Site
from dicomwire.tls import client_context

PATIENTS = ("PAT-1", "PAT-REF-1", "PAT-OPTOUT", "PAT-CONSENT-ORG")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("gw")
    pki = root / "pki"
    certs.init_ca(pki)
    for name in ("gw1", "ws1", "audit"):
        certs.issue(pki, name, ["127.0.0.1"])
    repository = Rsyslog(root / "rsyslog", ca=pki / "ca.crt", certificate=pki / "audit.crt",
                         key=pki / "audit.key").start() if Path(RSYSLOGD).exists() else None
    site = Site(root, hial_server={"access_token_lifetime": 10}, leeway=0,
                audit_port=repository.port if repository else None).start()
    site.repository = repository  # type: ignore[attr-defined]
    assert site.orthanc is not None
    for n, patient in enumerate(PATIENTS):
        site.orthanc.upload(make_ct_study(root / "data" / patient, slices=2, patient_id=patient,
                                          accession=f"ACC{n}", seed=n))
    yield site
    site.stop()
    if repository is not None:
        repository.stop()


def refused(output: str) -> bool:
    """DCMTK prints status 0124H ("Refused: Not authorized") as 0x124 (or 0x0124)."""
    return re.search(r"0x0?124\b", output) is not None


def find_patients(site: Site, user: str, patient: str) -> tuple[list[str], str]:
    result = site.launch(user, "findscu", "-v", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", f"PatientID={patient}",
                         "-k", "StudyInstanceUID", "-aec", "ORTHANC@GW1", "127.0.0.1", site.ports["agent"])
    answers = re.findall(r"\(0010,0020\) LO \[([^\]]*)\]", result.stderr.split("Find Response", 1)[-1])
    return sorted(a.strip() for a in answers), result.stderr


def direct_patients(site: Site, patient: str) -> list[str]:
    assert site.orthanc is not None
    result = dcmtk("findscu", "-v", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", f"PatientID={patient}",
                   "-k", "StudyInstanceUID", "-aec", "ORTHANC", "127.0.0.1", site.orthanc.dicom_port)
    return sorted(a.strip() for a in re.findall(r"\(0010,0020\) LO \[([^\]]*)\]",
                                                 result.stderr.split("Find Response", 1)[-1]))


def orthanc_finds(site: Site) -> int:
    assert site.orthanc is not None
    return site.orthanc.log_text().count("DICOM C-Find request")


def events(site: Site, **match: object) -> list[dict]:
    out = []
    for line in site.decisions().splitlines():
        record = json.loads(line)
        if all(record.get(k) == v for k, v in match.items()):
            out.append(record)
    return out


def test_radiologist_gets_what_a_direct_query_returns(site: Site) -> None:
    got, _ = find_patients(site, "rad", "PAT-1")
    assert got == direct_patients(site, "PAT-1") == ["PAT-1"]


def test_researcher_is_refused_with_0124_and_nothing_reaches_orthanc(site: Site) -> None:
    before = orthanc_finds(site)
    got, output = find_patients(site, "researcher", "PAT-1")
    assert got == []
    assert refused(output), output
    time.sleep(0.3)
    assert orthanc_finds(site) == before
    denied = events(site, event="authorization", action="C-FIND", decision="deny")
    assert denied and denied[-1]["user"]["username"] == "researcher"
    # The PDP permits the research view (de-identify); this agent has no pseudonymisation service: deny.
    assert denied[-1]["reason"] == "pseudonymizer_unavailable" and denied[-1]["policy_version"] == "demo-2026-11-22"
    assert denied[-1]["obligations"] == ["filter-results", "de-identify"]


def test_referring_physician_sees_only_his_patient(site: Site) -> None:
    everything = direct_patients(site, "*")
    assert set(PATIENTS) <= set(everything)
    got, _ = find_patients(site, "refdoc", "*")
    assert got == ["PAT-REF-1"]  # PAT-CONSENT-ORG is in his care, but its consent denies other organizations
    pinned, output = find_patients(site, "refdoc", "PAT-1")
    assert pinned == [] and refused(output)
    filtered = events(site, event="authorization", post_filter=True)
    assert {e["resource"].get("patient_id") for e in filtered if e["decision"] == "deny"} >= {"PAT-1", "PAT-OPTOUT"}


def test_a_query_without_patient_id_is_filtered_and_answered_as_asked(site: Site) -> None:
    """The agent adds the Patient ID return key to check each match, and takes it out again."""
    assert site.orthanc is not None
    keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", "AccessionNumber", "-k", "StudyInstanceUID"]

    def answers(output: str) -> tuple[list[str], bool]:
        responses = output.split("Find Response", 1)[-1]
        found = sorted(a.strip() for a in re.findall(r"\(0008,0050\) SH \[([^\]]*)\]", responses))
        return found, "(0010,0020)" in responses

    direct = dcmtk("findscu", "-v", "-S", *keys, "-aec", "ORTHANC", "127.0.0.1", site.orthanc.dicom_port)
    everything, _ = answers(direct.stderr)
    assert {f"ACC{n}" for n in range(len(PATIENTS))} <= set(everything)
    for user, expected in (("rad", [a for a in everything if a != f"ACC{PATIENTS.index('PAT-OPTOUT')}"]),
                           ("refdoc", [f"ACC{PATIENTS.index('PAT-REF-1')}"])):
        result = site.launch(user, "findscu", "-v", "-S", *keys, "-aec", "ORTHANC@GW1", "127.0.0.1",
                             site.ports["agent"])
        assert result.returncode == 0, result.stderr
        got, patient_id_shown = answers(result.stderr)
        assert got == expected and not patient_id_shown, (user, got)


def test_consent_opt_out_refuses_even_the_radiologist(site: Site) -> None:
    got, output = find_patients(site, "rad", "PAT-OPTOUT")
    assert got == [] and refused(output)
    assert events(site, event="authorization", decision="deny", reason="consent_denied")


def test_store_as_technologist_but_not_as_radiologist(site: Site, tmp_path: Path) -> None:
    assert site.orthanc is not None
    files = make_ct_study(tmp_path / "tech", slices=2, patient_id="PAT-NEW", seed=11)
    before = set(site.orthanc.instances())
    denied = site.launch("rad", "storescu", "-v", "-aec", "ORTHANC@GW1", "127.0.0.1", site.ports["agent"], *files)
    assert refused(denied.stderr), denied.stderr
    assert set(site.orthanc.instances()) == before
    stored = site.launch("tech", "storescu", "-aec", "ORTHANC@GW1", "127.0.0.1", site.ports["agent"], *files)
    assert stored.returncode == 0, stored.stderr
    assert len(set(site.orthanc.instances()) - before) == 2
    permits = events(site, event="authorization", action="C-STORE", decision="permit")
    assert permits[-1]["resource"]["patient_id"] == "PAT-NEW"


def test_move_through_both_agents_delivers_to_the_apps_scp(site: Site) -> None:
    assert site.scp is not None
    for old in site.scp.received():
        old.unlink()
    study = site.root / "data" / "PAT-1"
    uid = dcmread(next(study.iterdir())).StudyInstanceUID
    result = site.launch("rad", "movescu", "-v", "-S", "-aet", "MOVESCP", "-aem", "MOVESCP",
                         "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=PAT-1", "-k", f"StudyInstanceUID={uid}",
                         "-aec", "ORTHANC@GW1", "127.0.0.1", site.ports["agent"])
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 10
    while len(site.scp.received()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert {str(dcmread(p).SOPInstanceUID) for p in site.scp.received()} == \
        {str(dcmread(p).SOPInstanceUID) for p in study.iterdir()}
    subops = events(site, event="authorization", sub_operation_of="C-MOVE", decision="permit")
    assert len(subops) >= 2 and subops[-1]["user"]["username"] == "rad"  # each image decided as rad's C-MOVE
    assert subops[-1]["resource"]["patient_id"] == "PAT-1"
    move = [e for e in events(site, event="authorization", action="C-MOVE", decision="permit")
            if "sub_operation_of" not in e][-1]
    assert move["move_destination"] == "MOVESCP@WS1" and subops[-1]["move_destination"] == "MOVESCP@WS1"
    time.sleep(0.5)
    summary = events(site, event="transfer-summary", action="C-MOVE")[-1]
    assert summary["sub_operations"] == 2 and summary["move_destination"] == "MOVESCP@WS1"
    assert summary["user"]["username"] == "rad" and summary["resource"]["patient_id"] == "PAT-1"


def test_move_of_a_forbidden_patient_is_refused(site: Site) -> None:
    result = site.launch("refdoc", "movescu", "-S", "-aet", "MOVESCP", "-aem", "MOVESCP",
                         "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID=PAT-1",
                         "-aec", "ORTHANC@GW1", "127.0.0.1", site.ports["agent"])
    assert refused(result.stderr), result.stderr


def test_unsolicited_store_to_the_return_port_is_refused(site: Site, tmp_path: Path) -> None:
    files = make_ct_study(tmp_path / "x", slices=1, patient_id="PAT-X", seed=5)
    result = dcmtk("storescu", "-aec", "MOVESCP@WS1", "127.0.0.1", site.ports["return"], *files)
    assert result.returncode != 0 and "Association Rejected" in result.stderr
    assert events(site, event="authentication", path="return", decision="deny")


def test_get_through_the_agents(site: Site, tmp_path: Path) -> None:
    out = tmp_path / "got"
    out.mkdir()
    result = site.launch("rad", "getscu", "-S", "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID=PAT-REF-1",
                         "-od", out, "-aec", "ORTHANC@GW1", "127.0.0.1", site.ports["agent"])
    assert result.returncode == 0, result.stderr
    assert len(list(out.iterdir())) == 2
    assert len(events(site, event="authorization", action="C-GET", decision="permit")) >= 3  # request + 2 sub-ops
    time.sleep(0.5)
    assert events(site, event="transfer-summary", action="C-GET")[-1]["sub_operations"] == 2


def test_dcmtk_user_password_and_jwt_straight_to_the_server_agent(site: Site, tmp_path: Path) -> None:
    assert site.orthanc is not None and site.hial is not None
    files = make_ct_study(tmp_path / "d", slices=1, patient_id="PAT-DIRECT", seed=9)
    before = set(site.orthanc.instances())
    typed = dcmtk("storescu", "--user", "tech", "--password", "demo-tech", "-aec", "ORTHANC", "127.0.0.1",
                  site.ports["plain"], *files)
    assert typed.returncode == 0, typed.stderr
    token = requests.post(f"{site.hial.issuer}/token", timeout=10, data={
        "grant_type": "password", "client_id": "workstation-agent", "username": "tech", "password": "demo-tech",
        "scope": "openid user/ImagingStudy.c"}).json()["access_token"]
    jwt_file = tmp_path / "token.jwt"
    jwt_file.write_text(token)
    with_jwt = dcmtk("storescu", "--jwt", jwt_file, "-aec", "ORTHANC", "127.0.0.1", site.ports["plain"], *files)
    assert with_jwt.returncode == 0, with_jwt.stderr
    assert len(set(site.orthanc.instances()) - before) == 1
    wrong = dcmtk("storescu", "--user", "tech", "--password", "guess", "-aec", "ORTHANC", "127.0.0.1",
                  site.ports["plain"], *files)
    assert wrong.returncode != 0 and "Association Rejected" in wrong.stderr
    assert "Rejected Permanent" in wrong.stderr
    assert "guess" not in site.decisions() and token not in site.decisions()


def _pynetdicom_echo(site: Site, kind: int, primary: bytes, secondary: bytes = b"", wait: float = 0):
    ae = AE(ae_title="PYNET")
    ae.add_requested_context(Verification)
    identity = UserIdentityNegotiation()
    identity.user_identity_type = kind
    identity.primary_field = primary
    if kind == 2:
        identity.secondary_field = secondary
    identity.positive_response_requested = True
    assoc = ae.associate("127.0.0.1", site.ports["plain"], ae_title="ORTHANC", ext_neg=[identity])
    return ae, assoc


def test_pynetdicom_identity_types_1_2_and_5(site: Site) -> None:
    assert site.hial is not None
    _, type1 = _pynetdicom_echo(site, 1, b"rad")
    assert type1.is_rejected
    _, type2 = _pynetdicom_echo(site, 2, b"rad", b"demo-rad")
    assert type2.is_established and type2.send_c_echo().Status == 0
    type2.release()
    token = requests.post(f"{site.hial.issuer}/token", timeout=10, data={
        "grant_type": "password", "client_id": "workstation-agent", "username": "rad", "password": "demo-rad"}
    ).json()["access_token"]
    _, type5 = _pynetdicom_echo(site, 5, token.encode())
    assert type5.is_established and type5.send_c_echo().Status == 0
    type5.release()


def test_token_expiry_mid_association_refuses_later_requests(site: Site) -> None:
    assert site.hial is not None
    token = requests.post(f"{site.hial.issuer}/token", timeout=10, data={
        "grant_type": "password", "client_id": "workstation-agent", "username": "rad", "password": "demo-rad"}
    ).json()
    _, assoc = _pynetdicom_echo(site, 5, token["access_token"].encode())
    assert assoc.is_established and assoc.send_c_echo().Status == 0
    expires = time.time() + token["expires_in"]
    statuses = []
    while time.time() < expires + 1.5:  # keep the association busy (Orthanc closes idle ones)
        statuses.append(assoc.send_c_echo().Status)
        time.sleep(1)
    assert statuses[0] == 0 and statuses[-1] == 0x0124, statuses
    refused_from = statuses.index(0x0124)
    assert all(s == 0x0124 for s in statuses[refused_from:]), statuses  # refused from expiry on
    assoc.release()
    assert events(site, event="authorization", reason="token_invalid")


def test_node_policy_for_a_modality_without_identity(site: Site, tmp_path: Path) -> None:
    files = make_ct_study(tmp_path / "ct", slices=1, patient_id="PAT-CT", seed=4)
    stored = dcmtk("storescu", "-aet", "CTSCANNER", "-aec", "ORTHANC", "127.0.0.1", site.ports["plain"], *files)
    assert stored.returncode == 0, stored.stderr
    stranger = dcmtk("storescu", "-aet", "STRANGER", "-aec", "ORTHANC", "127.0.0.1", site.ports["plain"], *files)
    assert stranger.returncode != 0 and "Association Rejected" in stranger.stderr


def test_idp_key_rotation_is_followed(site: Site) -> None:
    assert site.hial is not None
    site.hial.signal(signal.SIGUSR1)
    time.sleep(0.5)
    got, _ = find_patients(site, "rad", "PAT-1")  # a token signed with the new key
    assert got == ["PAT-1"]


def test_unknown_pacs_is_rejected_called_ae_not_recognized(site: Site) -> None:
    result = site.launch("rad", "echoscu", "-aec", "NOSUCH@GW1", "127.0.0.1", site.ports["agent"])
    assert "Called AE Title Not Recognized" in result.stderr


def test_idp_and_pdp_down_denies_then_recovers(tmp_path: Path) -> None:
    from devtools.hial import HialProcess

    site = Site(tmp_path / "outage", pdp_cache=0).start()
    try:
        assert site.hial is not None
        token = requests.post(f"{site.hial.issuer}/token", timeout=10, data={
            "grant_type": "password", "client_id": "workstation-agent", "username": "rad", "password": "demo-rad"}
        ).json()["access_token"]
        _, before = _pynetdicom_echo(site, 5, token.encode())
        assert before.is_established and before.send_c_echo().Status == 0
        before.release()
        port = int(site.hial.issuer.rsplit(":", 1)[1])
        site.hial.stop()  # the HIAL (identity provider and PDP) goes down
        _, during = _pynetdicom_echo(site, 5, token.encode())
        assert during.is_established  # the token is still verified locally with the cached keys
        started = time.monotonic()
        assert during.send_c_echo().Status == 0x0124  # fail closed
        assert time.monotonic() - started < 5
        during.release()
        assert events(site, event="authorization", reason="pdp_unavailable")
        _, password = _pynetdicom_echo(site, 2, b"rad", b"demo-rad")
        assert password.is_rejected  # a password cannot be checked without the provider
        site.hial = HialProcess(site.root / "hial", server={"port": port}).start()  # back, same keys
        _, after = _pynetdicom_echo(site, 5, token.encode())
        assert after.is_established and after.send_c_echo().Status == 0  # recovered by itself
        after.release()
    finally:
        site.stop()


def test_store_without_a_patient_id_is_refused(site: Site, tmp_path: Path) -> None:
    assert site.orthanc is not None
    (path,) = make_ct_study(tmp_path / "anon", slices=1, patient_id="PAT-ANON", seed=21)
    ds = dcmread(path)
    del ds.PatientID
    ds.save_as(path)
    before = set(site.orthanc.instances())
    result = site.launch("tech", "storescu", "-v", "-aec", "ORTHANC@GW1", "127.0.0.1", site.ports["agent"], path)
    assert refused(result.stderr), result.stderr
    assert set(site.orthanc.instances()) == before
    assert events(site, event="authorization", reason="patient_unknown")


def test_each_decision_is_logged_once_and_the_chain_verifies(site: Site) -> None:
    import subprocess
    import sys

    before = len(events(site, event="authorization"))
    got, _ = find_patients(site, "rad", "PAT-REF-1")
    assert got == ["PAT-REF-1"]
    time.sleep(0.5)  # the writer thread appends asynchronously
    new = events(site, event="authorization")[before:]
    assert len(new) == 1  # one C-FIND, one decision
    record = new[0]
    assert (record["action"], record["decision"], record["user"]["username"]) == ("C-FIND", "permit", "rad")
    assert record["resource"]["patient_id"] == "PAT-REF-1" and record["workstation"] == "WS1"
    assert record["calling_ae"] == "FINDSCU@WS1" and record["pacs"] == "ORTHANC"
    assert record["rule_id"] == "role:radiologist" and record["policy_version"] == "demo-2026-11-22"
    assert isinstance(record["latency_ms"], float) and record["association"]
    key = site.root / "decision-log.key"
    result = subprocess.run([sys.executable, "-m", "audit.cli", "verify", "--log", str(site.root / "decisions.jsonl"),
                             "--public-key", f"{key}.pub"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    assert key.stat().st_mode & 0o077 == 0  # the private key; the public one is for anyone to read
    assert Path(f"{key}.pub").stat().st_mode & 0o777 == 0o644 and b"PUBLIC KEY" in Path(f"{key}.pub").read_bytes()


def test_audit_messages_reach_the_repository(site: Site) -> None:
    from xml.etree import ElementTree as ET

    repository = site.repository  # type: ignore[attr-defined]
    if repository is None:
        pytest.skip("rsyslog is installed by `make test`")
    got, _ = find_patients(site, "rad", "PAT-1")
    assert got == ["PAT-1"]
    deadline = time.monotonic() + 10

    def queries() -> list[ET.Element]:
        found = []
        for text in repository.messages():
            message = ET.fromstring(text)
            event = message.find("EventIdentification/EventID")
            objects = [o.get("ParticipantObjectID") for o in message.findall("ParticipantObjectIdentification")]
            if event is not None and event.get("csd-code") == "110112" and "PAT-1" in objects:
                found.append(message)
        return found

    while not queries() and time.monotonic() < deadline:
        time.sleep(0.2)
    message = queries()[-1]
    requestor = message.find("ActiveParticipant[@UserIsRequestor='true']")
    assert requestor is not None and requestor.get("UserID") == "rad"
    assert message.find("ActiveParticipant[@UserID='FINDSCU@WS1']") is not None
    assert message.find("AuditSourceIdentification").get("AuditSourceID") == "GW1"  # type: ignore[union-attr]
    kinds = {ET.fromstring(t).find("EventIdentification/EventID").get("csd-code")  # type: ignore[union-attr]
             for t in repository.messages()}
    assert {"110114", "110112", "110113"} <= kinds  # logins, queries, and the refusals as security alerts


def test_a_service_the_agent_does_not_decide_is_refused_not_forwarded(site: Site) -> None:
    """Deny by default: a DIMSE request outside C-ECHO/C-FIND/C-GET/C-MOVE/C-STORE (here N-ACTION,
    Storage Commitment, which Orthanc implements) gets 0124H with a reason and never reaches the PACS."""
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    commitment, instance = "1.2.840.10008.1.20.1", "1.2.840.10008.1.20.1.1"  # PS3.4 J.3, well-known instance
    ae = AE(ae_title="PYNET")
    ae.add_requested_context(commitment)
    ae.add_requested_context(Verification)
    identity = UserIdentityNegotiation()
    identity.user_identity_type = 2
    identity.primary_field, identity.secondary_field = b"tech", b"demo-tech"
    request = Dataset()
    request.TransactionUID = generate_uid()
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", generate_uid()
    request.ReferencedSOPSequence = [item]
    assert site.orthanc is not None

    def n_actions() -> int:
        assert site.orthanc is not None
        return site.orthanc.log_text().count("Incoming N-ACTION request")

    # Straight to Orthanc the request arrives (Orthanc then refuses an AE it does not list): the
    # count below can see one.
    before = n_actions()
    direct = ae.associate("127.0.0.1", site.orthanc.dicom_port, ae_title="ORTHANC")
    assert direct.is_established
    direct.send_n_action(request, 1, commitment, instance)
    direct.release()
    time.sleep(0.3)
    assert n_actions() == before + 1
    assoc = ae.associate("127.0.0.1", site.ports["plain"], ae_title="ORTHANC", ext_neg=[identity])
    assert assoc.is_established
    status, _ = assoc.send_n_action(request, 1, commitment, instance)
    assert status.Status == 0x0124 and "not supported" in status.ErrorComment
    assert assoc.send_c_echo().Status == 0  # the association stays usable
    assoc.release()
    time.sleep(0.3)
    assert n_actions() == before + 1  # nothing more reached Orthanc
    denied = events(site, event="authorization", reason="unsupported_service")
    assert denied and denied[-1]["user"]["username"] == "tech"


def _rad_token(site: Site) -> bytes:
    assert site.hial is not None
    return requests.post(f"{site.hial.issuer}/token", timeout=10, data={
        "grant_type": "password", "client_id": "workstation-agent", "username": "rad", "password": "demo-rad",
        "scope": "openid user/ImagingStudy.rs"}).json()["access_token"].encode()


def test_a_calling_ae_naming_another_workstation_than_the_certificate_is_rejected(site: Site) -> None:
    """The workstation in APP@WS decides where C-MOVE images go and what the log says: over TLS the
    client certificate must prove it (ws1's certificate cannot speak for WS2)."""
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove  # type: ignore[attr-defined]

    assert site.orthanc is not None
    context = client_context(ca=site.pki / "ca.crt", certificate=site.pki / "ws1.crt", key=site.pki / "ws1.key")
    identity = UserIdentityNegotiation()
    identity.user_identity_type = 5
    identity.primary_field = _rad_token(site)

    def associate(calling: str):  # type: ignore[no-untyped-def]
        ae = AE(ae_title=calling)
        ae.add_requested_context(Verification)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        return ae.associate("127.0.0.1", site.ports["server"], ae_title="ORTHANC@GW1", ext_neg=[identity],
                            tls_args=(context, "gw1"))

    own = associate("VIEWER@WS1")
    assert own.is_established and own.send_c_echo().Status == 0
    own.release()
    seen = site.orthanc.log_text().count("from AET VIEWER@WS2")
    other = associate("VIEWER@WS2")
    assert other.is_rejected
    assert (other.acceptor.primitive.result, other.acceptor.primitive.result_source,
            other.acceptor.primitive.diagnostic) == (1, 1, 3)  # permanent, service user, calling AE not recognized
    denied = events(site, event="authentication", calling_ae="VIEWER@WS2", decision="deny")
    assert denied and denied[-1]["reason"] == "workstation_unproven" and "ws1" in denied[-1]["certificate"]
    assert "does not prove" in denied[-1]["detail"]
    time.sleep(0.3)
    assert site.orthanc.log_text().count("from AET VIEWER@WS2") == seen


def test_a_workstation_claimed_without_a_certificate_gets_no_move_to_it(site: Site) -> None:
    """On the plain listener nothing proves APP@WS1: the association works, but a C-MOVE to WS1 is
    refused, and the log keeps the claim apart from the (empty) workstation."""
    from pydicom.dataset import Dataset
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove  # type: ignore[attr-defined]

    identity = UserIdentityNegotiation()
    identity.user_identity_type = 5
    identity.primary_field = _rad_token(site)
    ae = AE(ae_title="VIEWER@WS1")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", site.ports["plain"], ae_title="ORTHANC", ext_neg=[identity])
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel, query.PatientID = "PATIENT", "PAT-1"
    statuses = [status.Status for status, _ in assoc.send_c_move(query, "MOVESCP@WS1",
                                                                 StudyRootQueryRetrieveInformationModelMove)]
    assoc.release()
    assert statuses == [0x0124]
    move = events(site, event="authorization", action="C-MOVE", calling_ae="VIEWER@WS1")[-1]
    assert move["decision"] == "deny" and move["reason"] == "move_destination_not_allowed"
    assert move.get("workstation", "") == ""  # no workstation proven (an absent field is empty)
    login = events(site, event="authentication", calling_ae="VIEWER@WS1", decision="permit")[-1]
    assert login["claimed_workstation"] == "WS1"


def test_a_move_by_study_uid_alone_cannot_bypass_a_patients_consent(site: Site) -> None:
    """A Study Root C-MOVE names the study only (PS3.4 C.4.2.1.4: the Patient ID is not required),
    so the decision on the request cannot see the patient's consent. Each C-STORE sub-operation
    carries the Patient ID and is decided as the requester's retrieval: PAT-OPTOUT's images never
    reach the app, while the same move of PAT-1's study delivers."""
    assert site.scp is not None
    for name, expected in (("PAT-OPTOUT", 0), ("PAT-1", 2)):
        for old in site.scp.received():
            old.unlink()
        uid = dcmread(next((site.root / "data" / name).iterdir())).StudyInstanceUID
        result = site.launch("rad", "movescu", "-v", "-S", "-aet", "MOVESCP", "-aem", "MOVESCP",
                             "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={uid}",
                             "-aec", "ORTHANC@GW1", "127.0.0.1", site.ports["agent"])
        time.sleep(1.0)
        assert len(site.scp.received()) == expected, (name, result.stderr)
    denied = events(site, event="authorization", sub_operation_of="C-MOVE", decision="deny")
    assert denied and denied[-1]["reason"] == "consent_denied"
    assert denied[-1]["resource"]["patient_id"] == "PAT-OPTOUT" and denied[-1]["user"]["username"] == "rad"


def test_a_moved_image_without_a_patient_id_is_refused(site: Site, tmp_path: Path) -> None:
    """An image whose head names no patient cannot be checked against anyone's consent: refused on
    the return path like a C-STORE without one, even though the move itself was allowed."""
    assert site.scp is not None and site.orthanc is not None
    files = make_ct_study(tmp_path / "anon", slices=1, patient_id="", accession="ACCX", seed=9)
    site.orthanc.upload(files)
    for old in site.scp.received():
        old.unlink()
    uid = dcmread(files[0]).StudyInstanceUID
    site.launch("rad", "movescu", "-S", "-aet", "MOVESCP", "-aem", "MOVESCP", "-k", "QueryRetrieveLevel=STUDY",
                "-k", f"StudyInstanceUID={uid}", "-aec", "ORTHANC@GW1", "127.0.0.1", site.ports["agent"])
    time.sleep(1.0)
    assert site.scp.received() == []
    denied = events(site, event="authorization", sub_operation_of="C-MOVE", decision="deny")
    assert denied and denied[-1]["reason"] == "patient_unknown"


def _token(site: Site, user: str) -> bytes:
    assert site.hial is not None
    return requests.post(f"{site.hial.issuer}/token", timeout=10, data={
        "grant_type": "password", "client_id": "workstation-agent", "username": user, "password": f"demo-{user}",
        "scope": "openid user/ImagingStudy.rs"}).json()["access_token"].encode()


def test_overlapping_associations_on_two_listeners_are_each_decided_for_their_own_user(site: Site) -> None:
    """Issue 12: association ids restarted at 1 in each listener and one policy kept per-association facts
    by that id, so rad's association on the TLS listener, overlapping refdoc's first association on the
    plain listener, was decided and logged as refdoc (and the end of either wiped the other's state).
    Each association now has a policy object of its own, and its records carry its own user."""
    import ssl

    from pydicom.dataset import Dataset
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(site.pki / "ca.crt"))
    context.load_cert_chain(str(site.pki / "ws1.crt"), str(site.pki / "ws1.key"))

    def associate(user: str, calling: str, port: int, tls: bool):  # type: ignore[no-untyped-def]
        identity = UserIdentityNegotiation()
        identity.user_identity_type = 5
        identity.primary_field = _token(site, user)
        ae = AE(ae_title=calling)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = ae.associate("127.0.0.1", port, ae_title="ORTHANC@GW1", ext_neg=[identity],
                             tls_args=(context, "gw1") if tls else None)
        assert assoc.is_established
        return assoc

    def find(assoc, patient: str) -> list[int]:  # type: ignore[no-untyped-def]
        query = Dataset()
        query.QueryRetrieveLevel, query.PatientID, query.StudyInstanceUID = "STUDY", patient, ""
        return [status.Status for status, _ in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)]

    rad = associate("rad", "RADVIEW@WS1", site.ports["server"], tls=True)
    # Several of refdoc's, all overlapping rad's: whatever number rad's got on its listener, one of these
    # got the same on theirs (before the fix, every listener counted from 1).
    refdocs = [associate("refdoc", "REFVIEW@WS1", site.ports["plain"], tls=False) for _ in range(6)]
    assert find(rad, "PAT-1")[-1] == 0x0000  # a radiologist may see PAT-1 ...
    assert all(find(refdoc, "PAT-1") == [0x0124] for refdoc in refdocs)  # ... refdoc (no care relationship) not
    for refdoc in refdocs:
        refdoc.release()  # the end of refdoc's associations leaves rad's untouched
    assert find(rad, "PAT-1")[-1] == 0x0000
    rad.release()
    for calling, user in (("RADVIEW@WS1", "rad"), ("REFVIEW@WS1", "refdoc")):
        records = events(site, calling_ae=calling)
        decided = [r for r in records if r["event"] in ("authentication", "authorization")]
        assert decided and {r["user"]["username"] for r in decided} == {user}, (calling, decided)
    rad_ids = {r["association"] for r in events(site, calling_ae="RADVIEW@WS1")}
    assert rad_ids.isdisjoint({r["association"] for r in events(site, calling_ae="REFVIEW@WS1")})
