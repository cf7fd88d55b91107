"""decision-log patient: every access to one patient's data, the accounting a patient can ask for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from audit.chain import ChainWriter
from devtools.peers import PROJECT
from tests.audit.sample_log import STUDY, write_sample

KEY = b"k" * 32


def patient(path: Path, *args: str) -> list[dict[str, object]]:
    done = subprocess.run([sys.executable, "-m", "audit.cli", "patient", *args, "--log", str(path), "--json"],
                          capture_output=True, text=True, cwd=PROJECT, timeout=60)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_an_emergency_access_at_night_is_accounted_for_in_full(tmp_path: Path) -> None:
    found = patient(write_sample(tmp_path), "PAT-OPTOUT")
    assert [(a["time"][11:19], a["user"], a["workstation"], a["action"], a["kind"], a["decision"], a["reason"],
             a["break_glass"]) for a in found] == [
        ("02:14:05", "erdoc", "WS2", "C-FIND", "request", "deny", "consent_denied", False),
        ("02:14:40", "erdoc", "WS2", "C-FIND", "request", "permit", "break_glass", True),
        ("02:15:00", "erdoc", "WS2", "C-MOVE", "request", "permit", "permit", True),
        ("02:15:01", "erdoc", "WS2", "C-STORE", "image of C-MOVE", "permit", "permit", True),
        ("02:15:02", "erdoc", "WS2", "C-STORE", "image of C-MOVE", "permit", "permit", True),
        ("02:15:03", "erdoc", "WS2", "C-STORE", "image of C-MOVE", "permit", "permit", True),
        ("02:15:04", "erdoc", "WS2", "C-MOVE", "transfer", "", "", False),
    ]
    assert found[0]["roles"] == "emergency_physician, hospital-a" and found[-1]["detail"] == "3 image(s) sent"
    assert found[3]["what"] == f"STUDY level, instance {STUDY['PAT-OPTOUT']}.1"
    assert found[2]["what"] == "STUDY level, to VIEWER1@WS1"


def test_query_matches_withheld_and_shown_and_a_de_identified_disclosure(tmp_path: Path) -> None:
    found = patient(write_sample(tmp_path), "PAT-DEMO", "--since", "2026-12-02")
    by_kind = {(a["user"], a["kind"], a["decision"]) for a in found}
    assert ("refdoc", "query match", "deny") in by_kind  # withheld from his wildcard query: accounted for
    assert ("tech", "request", "permit") in by_kind and ("rad", "image of C-MOVE", "permit") in by_kind
    disclosed = [a for a in found if a["de_identified"]]
    assert [(a["user"], a["detail"]) for a in disclosed] == [("researcher", "de-identify")]
    assert all(a["time"] >= "2026-12-02" for a in found)
    assert not [a for a in found if a["user"] == "nobody"]  # nobody's refusals were on Dec 1


def test_records_naming_the_study_alone_and_kinds_of_later_versions_are_listed(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    writer = ChainWriter(path, KEY)
    user = {"kind": "user", "sub": "u", "username": "rad", "roles": ["radiologist"], "organization": "hospital-a"}
    writer.write({"time": "2026-12-01T10:00:00.000000+00:00", "event": "authorization", "action": "C-FIND",
                  "decision": "permit", "reason": "permit", "decided_by": "pdp", "user": user, "workstation": "WS1",
                  "resource": {"patient_id": "PAT-9", "patient_id_issuer": "HOSP-A", "study_instance_uid": "1.2.3"}})
    writer.write({"time": "2026-12-01T10:01:00.000000+00:00", "event": "authorization", "action": "C-MOVE",
                  "decision": "permit", "reason": "permit", "decided_by": "pdp", "user": user, "workstation": "WS1",
                  "resource": {"level": "STUDY", "study_instance_uid": "1.2.3"}})  # no Patient ID: its study
    writer.write({"time": "2026-12-01T10:02:00.000000+00:00", "event": "authorization", "action": "C-FIND",
                  "decision": "permit", "reason": "permit", "decided_by": "pdp", "user": user, "workstation": "WS1",
                  "resource": {"patient_id": "PAT-9", "patient_id_issuer": "HOSP-B"}})  # another hospital's PAT-9
    writer.write({"time": "2026-12-01T11:00:00.000000+00:00", "event": "research-disclosure",  # a later kind
                  "user": {**user, "username": "researcher"}, "action": "C-MOVE", "de_identified": True,
                  "project": "STUDY-A", "profile": "113100/113107", "resource": {"patient_id": "PAT-9"}})
    writer.write({"time": "2026-12-01T12:00:00.000000+00:00", "event": "authorization", "action": "C-FIND",
                  "decision": "permit", "reason": "permit", "user": user, "resource": {"patient_id": "PAT-9*"}})
    writer.close()
    found = patient(path, "PAT-9", "--issuer", "HOSP-A")
    assert [(a["action"], a["kind"], a["matched_by"], a["de_identified"]) for a in found] == [
        ("C-FIND", "request", "patient", False),
        ("C-MOVE", "request", "study", False),
        ("C-MOVE", "research-disclosure", "patient", True),
    ]
    assert found[2]["user"] == "researcher" and found[2]["detail"] == "project STUDY-A; profile 113100/113107"
    assert len(patient(path, "PAT-9")) == 4  # without an issuer: both hospitals' PAT-9
    text = subprocess.run([sys.executable, "-m", "audit.cli", "patient", "PAT-9", "--log", str(path)],
                          capture_output=True, text=True, cwd=PROJECT, timeout=60).stdout
    assert text.startswith("accesses to patient PAT-9: 4 (3 permitted, 0 refused) by 2 user(s); break-glass 0; "
                           "de-identified disclosures 1")
    assert "integrity: Integrity not checked: no key given" in text
