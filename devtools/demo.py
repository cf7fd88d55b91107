"""``make demo``: the relay between real DICOM apps and an unchanged PACS, on this machine.

Starts Orthanc (the PACS), a DCMTK storescp (a viewer's storage SCP) and ``dicom-relay --trace``
on free loopback ports, then stores a generated CT study through the relay, queries it, moves it to
the storescp and gets it back with C-GET, and prints what the relay saw. Everything is stopped at
the end. (The identity agents and the HIAL join this demo as their issues land.)
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from pathlib import Path

from devtools.dicomdata import make_ct_study
from devtools.peers import Orthanc, RelayProcess, StoreSCP, dcmtk, free_port


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="dicom-demo-") as tmp:
        root = Path(tmp)
        scp_port = free_port()
        orthanc = Orthanc(root / "orthanc", modalities={"viewer": ("VIEWER1", "127.0.0.1", scp_port)})
        viewer = StoreSCP(root / "viewer", aet="VIEWER1", port=scp_port)
        orthanc.start()
        viewer.start()
        relay = RelayProcess(to=("127.0.0.1", orthanc.dicom_port), trace=True, log_path=root / "relay.log").start()
        try:
            files = make_ct_study(root / "study", slices=4, size=128, patient_id="DEMO001",
                                  patient_name="DEMO^PATIENT", accession="DEMOACC")
            study_uid = re.sub(r"\s", "", str(__import__("pydicom").dcmread(files[0]).StudyInstanceUID))
            print(f"PACS: Orthanc on 127.0.0.1:{orthanc.dicom_port}; relay on 127.0.0.1:{relay.port}; "
                  f"viewer SCP on 127.0.0.1:{scp_port}")

            step("C-ECHO through the relay (echoscu)")
            print(_outcome(dcmtk("echoscu", "-aec", "ORTHANC", "127.0.0.1", relay.port)))

            step(f"C-STORE of {len(files)} CT images through the relay (storescu)")
            print(_outcome(dcmtk("storescu", "-aec", "ORTHANC", "127.0.0.1", relay.port, *files)))
            print(f"Orthanc now holds {len(orthanc.instances())} instance(s)")

            step("C-FIND through the relay (findscu)")
            found = dcmtk("findscu", "-v", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=DEMO001",
                          "-k", "PatientName", "-k", "AccessionNumber", "-k", "StudyInstanceUID",
                          "-aec", "ORTHANC", "127.0.0.1", relay.port)
            answers = found.stderr.split("Find Response", 1)[-1]  # skip the echo of the request
            for line in answers.splitlines():
                if re.match(r"^I: \((0010|0008,0050|0020,000d)", line):
                    print("  " + line[3:])
            print(_outcome(found))

            step("C-MOVE to the viewer through the relay (movescu)")
            moved = dcmtk("movescu", "-S", "-aem", "VIEWER1", "-k", "QueryRetrieveLevel=STUDY",
                          "-k", f"StudyInstanceUID={study_uid}", "-aec", "ORTHANC", "127.0.0.1", relay.port)
            deadline = time.monotonic() + 10
            while len(viewer.received()) < len(files) and time.monotonic() < deadline:
                time.sleep(0.1)
            print(_outcome(moved), f"- the viewer received {len(viewer.received())} image(s)")

            step("C-GET through the relay (getscu)")
            got_dir = root / "got"
            got_dir.mkdir()
            got = dcmtk("getscu", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
                        "-od", got_dir, "-aec", "ORTHANC", "127.0.0.1", relay.port)
            print(_outcome(got), f"- {len(list(got_dir.iterdir()))} image(s) written")
        finally:
            relay.stop()
            viewer.stop()
            orthanc.stop()
        step("what dicom-relay --trace printed for the C-FIND association")
        trace = (root / "relay.log").read_text().splitlines()
        ids = [m.group(1) for line in trace if (m := re.search(r" #(\d+) C>S DIMSE C-FIND-RQ", line))]
        for line in trace:
            if ids and f" #{ids[0]} " in line:
                print("  " + line)
        print("\ndemo finished: every part stopped.")
    return 0


def _outcome(result: object) -> str:
    code = getattr(result, "returncode", 1)
    return "ok" if code == 0 else f"FAILED ({code}): {getattr(result, 'stderr', '')[-500:]}"


if __name__ == "__main__":
    sys.exit(main())
