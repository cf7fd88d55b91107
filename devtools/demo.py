"""``make demo``: the whole system on this machine, with the demo's users and patients.

Starts the HIAL (identity provider and policy decision point), Orthanc (unchanged; only its modality
list names the server agent's return port), the server agent GW1 in front of it, and the workstation
WS1 whose apps (DCMTK tools, unchanged) run through ``dicom-agent launch``. Then: the technologist
stores a study; the radiologist finds it and retrieves it to his viewer's SCP; the researcher sees
only the patients of her project STUDY-A, de-identified (pseudonyms from the pseudonymisation
service); the referring physician sees only his own patient. Last, what the decision log recorded,
and that its hash chain verifies.
Everything is stopped at the end.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from pathlib import Path

from audit.chain import verify
from audit.signing import read_public_key
from devtools.dicomdata import make_ct_study
from devtools.peers import dcmtk
from devtools.site import Site


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def answers(output: str) -> list[str]:
    return [a.strip() for a in re.findall(r"\(0010,0020\) LO \[([^\]]*)\]", output.split("Find Response", 1)[-1])]


def status(output: str) -> str:
    if re.search(r"0x0?124\b", output):
        return "REFUSED 0124H (Not authorized)"
    return "ok"


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="dicom-identity-demo-") as tmp:
        root = Path(tmp)
        print("starting the HIAL, Orthanc, the server agent GW1 and the workstation WS1 ...", flush=True)
        site = Site(root, research=True).start()
        try:
            scenario(site, root)
        finally:
            site.stop()
        show_decisions(site, root)
        print("demo finished: every part stopped.")
    return 0


def scenario(site: Site, root: Path) -> None:
    """The four users at work, through unchanged DCMTK tools and ``dicom-agent launch``."""
    assert site.orthanc is not None and site.scp is not None and site.hial is not None
    for n, patient in enumerate(("PAT-REF-1", "PAT-CONSENT-ORG", "PAT-OTHER", "PAT-RES-1")):
        site.orthanc.upload(make_ct_study(root / "existing" / patient, slices=2, patient_id=patient, seed=n))
    agent = site.ports["agent"]
    print(f"HIAL {site.hial.issuer} | Orthanc 127.0.0.1:{site.orthanc.dicom_port} | server agent GW1 "
          f"127.0.0.1:{site.ports['server']} (TLS) | apps call ORTHANC@GW1 at 127.0.0.1:{agent}")
    step("tech (technologist) stores a new CT study with storescu, through dicom-agent launch")
    files = make_ct_study(root / "new", slices=4, size=128, patient_id="PAT-DEMO", patient_name="DEMO^PATIENT",
                          accession="DEMO1")
    stored = site.launch("tech", "storescu", "-v", "-aec", "ORTHANC@GW1", "127.0.0.1", agent, *files)
    print(f"storescu: {status(stored.stderr) if stored.returncode == 0 else 'FAILED'}; "
          f"Orthanc now holds {len(site.orthanc.instances())} instances")
    step("rad (radiologist) queries PAT-DEMO with findscu")
    found = site.launch("rad", "findscu", "-v", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=PAT-DEMO",
                        "-k", "StudyInstanceUID", "-aec", "ORTHANC@GW1", "127.0.0.1", agent)
    print(f"findscu: {status(found.stderr)}; matches: {answers(found.stderr)}")
    step("rad retrieves it with movescu to his viewer's own storage SCP (VIEWER = MOVESCP)")
    moved = site.launch("rad", "movescu", "-S", "-aet", "MOVESCP", "-aem", "MOVESCP",
                        "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID=PAT-DEMO", "-aec", "ORTHANC@GW1",
                        "127.0.0.1", agent)
    deadline = time.monotonic() + 10
    while len(site.scp.received()) < len(files) and time.monotonic() < deadline:
        time.sleep(0.1)
    print(f"movescu: {status(moved.stderr)}; images arrived at the viewer: {len(site.scp.received())}")
    step("researcher (project STUDY-A) asks for every study; then by the real PatientID=PAT-DEMO")
    research = site.launch("researcher", "findscu", "-v", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID",
                           "-k", "PatientName", "-k", "StudyDate", "-aec", "ORTHANC@GW1", "127.0.0.1", agent)
    print(f"findscu: {status(research.stderr)}; matches: {answers(research.stderr)}  (pseudonyms of the patients "
          "with STUDY-A's research consent only)")
    refused = site.launch("researcher", "findscu", "-v", "-S", "-k", "QueryRetrieveLevel=STUDY",
                          "-k", "PatientID=PAT-DEMO", "-aec", "ORTHANC@GW1", "127.0.0.1", agent)
    print(f"findscu: {status(refused.stderr)}  (a real Patient ID is no pseudonym of STUDY-A)")
    step("refdoc (referring physician) asks for every patient (PatientID=*)")
    direct = dcmtk("findscu", "-v", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=*",
                   "-aec", "ORTHANC", "127.0.0.1", site.orthanc.dicom_port)
    ref = site.launch("refdoc", "findscu", "-v", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=*",
                      "-aec", "ORTHANC@GW1", "127.0.0.1", agent)
    print(f"Orthanc holds studies of: {sorted(answers(direct.stderr))}")
    print(f"refdoc sees:              {sorted(answers(ref.stderr))}  (his care relationship; the other "
          "patient in his care shares only within hospital-a)")


def show_decisions(site: Site, root: Path) -> None:
    """What the decision log recorded, and whether its hash chain verifies."""
    step("what the decision log recorded (decisions.jsonl)")
    print(f"{'time':<15} {'user':<10} {'action':<8} {'patient':<16} {'decision':<7} {'reason':<22} rule")
    for line in site.decisions().splitlines():
        record = json.loads(line)
        if record["event"] not in ("authorization", "authentication"):
            continue
        user = (record.get("user") or {}).get("username", "(PACS)" if record.get("path") == "return" else "-")
        action = record.get("action", "return" if record.get("path") == "return" else "login")
        action += "*" if record.get("post_filter") else "+" if record.get("sub_operation_of") else ""
        patient = (record.get("resource") or {}).get("patient_id", "")
        print(f"{record['time'][11:26]:<15} {user:<10} {action:<8} {patient:<16} {record['decision']:<7} "
              f"{record.get('reason', ''):<22} {record.get('rule_id', '')}")
    print("\n(* = a match of a query not pinned to one patient, checked before the user saw it;"
          "\n + = an image of a retrieval, checked on its way to the app)")
    # What anyone may check with: the public key the agent wrote next to its private key at first start.
    report = verify(root / "decisions.jsonl", read_public_key(root / "decision-log.key.pub"))
    print(f"decision-log verify --public-key decision-log.key.pub: {'ok' if report.ok else 'BROKEN'}: "
          f"{report.records} records, hash-chained, {report.checkpoints} checkpoint(s) signed with "
          f"{report.signature or 'nothing'} (key {report.key_id or '-'}){', closed cleanly' if report.final else ''}")


if __name__ == "__main__":
    sys.exit(main())
