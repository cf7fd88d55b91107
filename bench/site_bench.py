"""Server agent in front of Orthanc (issue 5): storing into Orthanc, a C-FIND with 1,000 matches under
post-filtering, and 200 concurrent associations, all through both agents, against direct in one run."""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from devtools.dicomdata import make_ct_study
from devtools.peers import dcmtk
from devtools.site import Site
from dicomwire.dimse import Tag, encode_command
from dicomwire.pdu import RELEASE_RQ_BYTES, Pdv, encode_p_data
from tests.support.wire import pynetdicom_rq

from .stats import Measure
from .workstation_bench import storescu

FIND_MODEL = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Query/Retrieve Information Model - FIND


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _find_pdus(patient: str) -> bytes:
    from pydicom.dataset import Dataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientID = patient
    ds.StudyInstanceUID = ""
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, True
    write_dataset(fp, ds)
    command = encode_command({Tag.COMMAND_FIELD: 0x0020, Tag.MESSAGE_ID: 1, Tag.PRIORITY: 0,
                              Tag.AFFECTED_SOP_CLASS_UID: FIND_MODEL, Tag.COMMAND_DATA_SET_TYPE: 1})
    return encode_p_data([Pdv(1, 0x03, command)]) + encode_p_data([Pdv(1, 0x02, fp.getvalue())])


async def _one_find(port: int, rq: bytes, find: bytes) -> float:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(rq)
        header = await reader.readexactly(6)
        body = await reader.readexactly(int.from_bytes(header[2:], "big"))
        if header[0] != 0x02:
            raise RuntimeError(f"association not accepted: {header.hex()} {body[:8].hex()}")
        writer.write(find)
        while True:  # responses until the final one (status 0x0000 or a failure)
            header = await reader.readexactly(6)
            body = await reader.readexactly(int.from_bytes(header[2:], "big"))
            if header[0] != 0x04:
                raise RuntimeError("association ended during the query")
            if body[5] & 0x01 and body[5] & 0x02:  # a whole command set in this PDV
                status = body[6:].find(b"\x00\x00\x00\x09\x02\x00\x00\x00")
                if status >= 0 and body[6 + status + 8 : 6 + status + 10] not in (b"\x00\xff", b"\x01\xff"):
                    break
        writer.write(RELEASE_RQ_BYTES)
        await reader.readexactly(10)
    finally:
        writer.close()
    return time.perf_counter() - started


async def _concurrent(port: int, rq: bytes, find: bytes, count: int) -> tuple[list[float], int]:
    results = await asyncio.gather(*(_one_find(port, rq, find) for _ in range(count)), return_exceptions=True)
    times = [r for r in results if isinstance(r, float)]
    return times, count - len(times)


def run(work: Path, files: list[Path], quick: bool) -> dict[str, Any]:
    site = Site((work / "site").resolve(), hial_server={"access_token_lifetime": 3600}).start()
    agent = None
    try:
        assert site.orthanc is not None
        matches = 100 if quick else 1000
        print(f"  loading {matches} studies into Orthanc ...", file=sys.stderr)
        for n in range(matches):
            site.orthanc.upload(make_ct_study(site.root / "q" / f"{n}", slices=1, size=8, patient_id=f"Q{n:05d}",
                                              seed=n))
        agent = site.serve_agent("tech")
        time.sleep(0.5)
        into = [Measure("C-STORE 100 MB into Orthanc, direct", []), Measure("... through both agents", [])]
        for n in range(1 if quick else 4):
            order = [(into[0], site.orthanc.dicom_port, "ORTHANC"), (into[1], site.ports["agent"], "ORTHANC@GW1")]
            for measure, port, called in order if n % 2 == 0 else reversed(order):
                site.orthanc.delete_patient("BENCH001")  # every run stores the study anew
                measure.samples.append(storescu(port, files, called))
                print(f"  {measure.name}: {measure.samples[-1]:.2f} s", file=sys.stderr)
        agent = site.serve_agent("rad", previous=agent)
        time.sleep(0.5)
        keys = ["-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=Q*", "-k", "StudyInstanceUID"]
        find = [Measure(f"C-FIND with {matches} matches, direct", []),
                Measure("... through both agents, every match post-filtered", [])]
        counts: dict[str, int] = {}
        for _ in range(2 if quick else 5):
            for measure, port, called in ((find[0], site.orthanc.dicom_port, "ORTHANC"),
                                          (find[1], site.ports["agent"], "ORTHANC@GW1")):
                started = time.perf_counter()
                result = dcmtk("findscu", *keys, "-aec", called, "127.0.0.1", port, "-v")
                measure.samples.append(time.perf_counter() - started)
                counts[measure.name] = result.stderr.count("Find Response:") - 1
        rq = pynetdicom_rq(called="ORTHANC@GW1", calling="LOAD", contexts=[(1, FIND_MODEL, ["1.2.840.10008.1.2"])])
        concurrent = 50 if quick else 200
        times, failures = asyncio.run(_concurrent(site.ports["agent"], rq, _find_pdus("Q00001"), concurrent))
        server_pid = site.server.pid if site.server else 0
        return {"into": into, "find": find, "find_counts": counts, "concurrent": concurrent,
                "concurrent_times": times, "concurrent_failures": failures,
                "rss": {"workstation agent": _peak_rss_mib(agent.pid), "server agent": _peak_rss_mib(server_pid)}}
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(10)
        site.stop()


def report(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    into, find = data["into"], data["find"]
    ratio = statistics.median(into[1].samples) / statistics.median(into[0].samples)
    lines = ["| into Orthanc | median s | x direct |", "|---|---:|---:|"]
    lines += [f"| {m.name} | {statistics.median(m.samples):.2f} | "
              f"{statistics.median(m.samples) / statistics.median(into[0].samples):.2f} |" for m in into]
    lines.append(f"\nTarget: <= 1.15x direct-to-Orthanc: {'met' if ratio <= 1.15 else '**not met**'} ({ratio:.2f}x)\n")
    added = (statistics.median(find[1].samples) - statistics.median(find[0].samples)) * 1000
    lines += ["| C-FIND | median ms | matches seen |", "|---|---:|---:|"]
    lines += [f"| {m.name} | {statistics.median(m.samples) * 1000:.0f} | {data['find_counts'].get(m.name)} |"
              for m in find]
    lines.append(f"\nAdded by post-filtering every match through both agents: {added:.0f} ms\n")
    times = data["concurrent_times"]
    p99 = sorted(times)[int(len(times) * 0.99) - 1] * 1000 if times else float("nan")
    lines.append(f"{data['concurrent']} concurrent associations doing C-FIND through both agents: "
                 f"{data['concurrent_failures']} failures (target 0), p50 {statistics.median(times) * 1000:.0f} ms, "
                 f"p99 {p99:.0f} ms; peak RSS: " + ", ".join(f"{k} {v:.0f} MiB" for k, v in data["rss"].items()))
    out = {"into_orthanc_ratio": ratio, "find_added_ms": added, "find_counts": data["find_counts"],
           "concurrent": data["concurrent"], "concurrent_failures": data["concurrent_failures"],
           "concurrent_p99_ms": p99, "peak_rss_mib": data["rss"]}
    return "\n".join(lines), out
