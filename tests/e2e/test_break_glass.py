"""Issue 14 item 6 end to end: `dicom-agent launch --break-glass REASON` through both agents, the live
HIAL exchanging the token (RFC 8693) and deciding as PDP, Orthanc unchanged; the break-glass shown in
the decision log, the audit stream (rsyslog) and the HTML report."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

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


def test_break_glass_opens_an_opted_out_patient_and_says_so_everywhere(site: Site) -> None:
    ordinary = find_optout(site, "erdoc")
    assert ordinary.returncode == 0 and answers(ordinary) == [], "the opt-out holds without break-glass"

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

    repository = site.repository  # type: ignore[attr-defined]
    if repository is None:
        pytest.skip("rsyslog is installed by `make test`")

    def emergency() -> list[ET.Element]:
        found = []
        for text in repository.messages():
            message = ET.fromstring(text)
            kind = message.find("EventIdentification/EventTypeCode")
            if kind is not None and kind.get("csd-code") == "110127":
                found.append(message)
        return found

    deadline = time.monotonic() + 10
    while not emergency() and time.monotonic() < deadline:
        time.sleep(0.2)
    alert_message = emergency()[0]
    assert alert_message.find("EventIdentification/EventID").get("csd-code") == "110113"  # type: ignore[union-attr]
    requestor = alert_message.find("ActiveParticipant[@UserIsRequestor='true']")
    assert requestor is not None and requestor.get("UserID") == "erdoc"


def test_break_glass_is_refused_to_a_role_not_allowed_and_nothing_is_queried(site: Site) -> None:
    before = len(records(site))
    result = find_optout(site, "rad", "--break-glass", "curious")
    assert result.returncode == 3 and "break-glass refused: none of your roles may use break-glass" in result.stderr
    assert answers(result) == []
    assert len(records(site)) == before, "no association was opened"
