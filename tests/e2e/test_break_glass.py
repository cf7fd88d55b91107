"""Issue 14 item 6 end to end: `dicom-agent launch --break-glass REASON` through both agents, the live
HIAL exchanging the token (RFC 8693) and deciding as PDP, Orthanc unchanged; the break-glass shown in
the decision log, the audit stream (rsyslog) and the HTML report. And an AI node acting for a
radiologist with an exchanged token (``act``): both named in the decision log and the audit."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
import requests
from pynetdicom import AE
from pynetdicom.pdu_primitives import UserIdentityNegotiation
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from agent import certs
from devtools.dicomdata import make_ct_study
from devtools.rsyslog import RSYSLOGD, Rsyslog
from devtools.site import DCMTK_BIN, Site

REASON = "trauma bay 2: unconscious patient, prior CT needed"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("btg")
    pki = root / "pki"
    certs.init_ca(pki)
    for name in ("gw1", "ws1", "audit"):
        certs.issue(pki, name, ["127.0.0.1"])
    repository = Rsyslog(root / "rsyslog", ca=pki / "ca.crt", certificate=pki / "audit.crt",
                         key=pki / "audit.key").start() if Path(RSYSLOGD).exists() else None
    site = Site(root, audit_port=repository.port if repository else None).start()
    site.repository = repository  # type: ignore[attr-defined]
    assert site.orthanc is not None
    site.orthanc.upload(make_ct_study(root / "data" / "PAT-OPTOUT", slices=1, patient_id="PAT-OPTOUT",
                                      accession="ACC-OPTOUT", seed=3))
    yield site
    site.stop()
    if repository is not None:
        repository.stop()


def find_optout(site: Site, user: str, *launch: str) -> subprocess.CompletedProcess[str]:
    return site.agent("launch", "--user", user, "--password-stdin", *launch, "--", str(DCMTK_BIN / "findscu"), "-v",
                      "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=PAT-OPTOUT", "-k", "StudyInstanceUID",
                      "-aec", "ORTHANC@GW1", "127.0.0.1", str(site.ports["agent"]), stdin=f"demo-{user}\n")


def answers(result: subprocess.CompletedProcess[str]) -> list[str]:
    return re.findall(r"\(0010,0020\) LO \[([^\]]*)\]", result.stderr.split("Find Response", 1)[-1])


def records(site: Site) -> list[dict]:
    return [json.loads(line) for line in site.decisions().splitlines()]


def audit_messages(site: Site, wanted: Callable[[ET.Element], bool]) -> list[ET.Element]:
    """The repository's messages that ``wanted`` picks, waiting up to 10 s for the first."""
    repository = site.repository  # type: ignore[attr-defined]
    if repository is None:
        pytest.skip("rsyslog is installed by `make test`")
    deadline = time.monotonic() + 10
    while True:
        found = [m for m in map(ET.fromstring, repository.messages()) if wanted(m)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_break_glass_opens_an_opted_out_patient_and_says_so_everywhere(site: Site) -> None:
    ordinary = find_optout(site, "erdoc")
    assert ordinary.returncode == 4 and answers(ordinary) == [], "the opt-out holds without break-glass"
    assert "dicom-agent: REFUSED FINDSCU C-FIND: the patient's consent does not allow this access" in ordinary.stderr

    result = find_optout(site, "erdoc", "--break-glass", REASON)
    assert result.returncode == 0, result.stderr
    assert "BREAK-GLASS access for erdoc" in result.stderr
    assert [a.strip() for a in answers(result)] == ["PAT-OPTOUT"]

    logins = [r for r in records(site) if r["event"] == "authentication" and r.get("user", {}).get("username") ==
              "erdoc" and r["decision"] == "permit"]
    alert = logins[-1]
    assert alert["user"]["purpose_of_use"] == "BTG" and alert["user"]["break_glass_reason"] == REASON
    assert alert["detail"] == f"break-glass: {REASON}"
    assert "purpose_of_use" not in logins[0]["user"], "the ordinary association before is not one"
    overrides = [r for r in records(site) if r["event"] == "authorization" and r.get("break_glass")]
    assert overrides and overrides[-1]["user"]["username"] == "erdoc"

    report = site.root / "report.html"
    subprocess.run([sys.executable, "-m", "audit.cli", "report", "--log", str(site.root / "decisions.jsonl"),
                    "--html", str(report)], check=True, capture_output=True, text=True)
    page = report.read_text()
    assert f"break-glass: {REASON}" in page and "erdoc" in page

    def emergency(message: ET.Element) -> bool:
        kind = message.find("EventIdentification/EventTypeCode")
        return kind is not None and kind.get("csd-code") == "110127"

    alert_message = audit_messages(site, emergency)[0]
    assert alert_message.find("EventIdentification/EventID").get("csd-code") == "110113"  # type: ignore[union-attr]
    requestor = alert_message.find("ActiveParticipant[@UserIsRequestor='true']")
    assert requestor is not None and requestor.get("UserID") == "erdoc"


def test_break_glass_is_refused_to_a_role_not_allowed_and_nothing_is_queried(site: Site) -> None:
    before = len(records(site))
    result = find_optout(site, "rad", "--break-glass", "curious")
    assert result.returncode == 3 and "Break-glass was refused: none of your roles may use break-glass" in result.stderr
    assert answers(result) == []
    assert len(records(site)) == before, "no association was opened"


def test_an_ai_node_acting_for_a_radiologist_is_named_beside_her(site: Site) -> None:
    assert site.hial is not None
    token = requests.post(f"{site.hial.issuer}/token", timeout=10, data={
        "grant_type": "password", "client_id": "workstation-agent", "username": "rad", "password": "demo-rad",
        "scope": "openid user/ImagingStudy.rs"}).json()["access_token"]
    exchange = {"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token": token,
                "subject_token_type": "urn:ietf:params:oauth:token-type:access_token"}
    refused = requests.post(f"{site.hial.issuer}/token", timeout=10, data=exchange, auth=("ai-node", "wrong"))
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    delegated = requests.post(f"{site.hial.issuer}/token", timeout=10, data=exchange,
                              auth=("ai-node", "demo-ai-node-secret")).json()["access_token"]
    ae = AE(ae_title="AINODE")
    ae.add_requested_context(Verification)
    identity = UserIdentityNegotiation()
    identity.user_identity_type = 5
    identity.primary_field = delegated.encode()
    assoc = ae.associate("127.0.0.1", site.ports["plain"], ae_title="ORTHANC", ext_neg=[identity])
    assert assoc.is_established and assoc.send_c_echo().Status == 0
    assoc.release()

    acting = [r for r in records(site) if r.get("user", {}).get("acting_client") == "ai-node"]
    assert {r["event"] for r in acting} >= {"authentication", "authorization"}
    assert all(r["user"]["username"] == "rad" and r["user"]["kind"] == "user" for r in acting)

    def by_the_node(message: ET.Element) -> bool:
        return message.find("ActiveParticipant[@UserID='ai-node']") is not None

    message = audit_messages(site, by_the_node)[0]
    requestors = [p.get("UserID") for p in message.findall("ActiveParticipant[@UserIsRequestor='true']")]
    assert requestors == ["rad", "ai-node"]
