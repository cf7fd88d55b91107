"""1,000 concurrent associations doing C-FIND through both agents, then held open and idle (issue 15).

Each association (one asyncio connection of this process to the workstation agent, which carries it
over TLS to the server agent, which relays it to Orthanc) is set up, asks one C-FIND for a patient
Orthanc holds, and then stays open without traffic until every other one has done the same; then
all release. Reported: failures (set-up, C-FIND or release), p50/p99 from connect to the C-FIND's
final response, each agent's CPU over the burst, and **memory per idle association**: the agent's
resident set (VmRSS) with every association open and idle, less the resident set just before the
burst, over the number of associations (target <= 64 KiB each).

What the site must allow for it, configured here and nowhere else:

* the per-source bounds of issue 13: every connection to the workstation agent comes from 127.0.0.1,
  and so does every TLS connection from it to the server agent, so ``max_pending_per_source`` and
  ``max_pending_connections`` are raised over the burst on both agents (32 and 512 by default);
* ``max_associations`` over the burst on both agents (200 by default); each agent raises its own
  open-file limit to what that needs (``dicomwire.listener.open_files_for``);
* Orthanc's ``DicomThreadsCount`` (4 by default: one thread per open association), and its
  ``DicomScpTimeout`` over the time the burst takes, or it would close the first associations;
* this process's own open-file limit (one socket per association).
"""

from __future__ import annotations

import asyncio
import resource
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from devtools.dicomdata import make_ct_study
from devtools.site import Site
from dicomwire.pdu import RELEASE_RQ_BYTES
from tests.support.wire import pynetdicom_rq

from .site_bench import FIND_MODEL, _find_pdus
from .stats import tree_cpu

TARGET_KIB = 64  # issue 15: memory per idle association
IDLE_SETTLE = 1.0  # seconds between the last C-FIND's answer and the memory reading
SETUP_TIMEOUT = 120.0  # seconds an association may take to its C-FIND's answer (or its release) before it fails


def rss(pid: int) -> int:
    """Resident set size in bytes now (VmRSS; /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def raise_open_files(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        if wanted < needed:
            raise RuntimeError(f"open-file limit {hard} is below the {needed} this benchmark needs")


async def _read_pdu(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    header = await reader.readexactly(6)
    return header[0], await reader.readexactly(int.from_bytes(header[2:], "big"))


async def _hold(port: int, rq: bytes, find: bytes, answered: list[float], release: asyncio.Event) -> str:
    """One association: set up, one C-FIND to its final response (time appended to ``answered``), then
    idle until ``release``, then A-RELEASE. Returns "" or what failed."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(SETUP_TIMEOUT):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except (OSError, TimeoutError) as error:
        return f"connect: {error!r}"
    try:
        async with asyncio.timeout(SETUP_TIMEOUT):
            problem = await _find(reader, writer, rq, find)
        if problem:
            return problem
        answered.append(time.perf_counter() - started)
        await release.wait()
        writer.write(RELEASE_RQ_BYTES)
        async with asyncio.timeout(SETUP_TIMEOUT):
            kind, _ = await _read_pdu(reader)
        return "" if kind == 0x06 else f"PDU {kind:02X}H instead of A-RELEASE-RP"
    except (OSError, asyncio.IncompleteReadError, TimeoutError) as error:
        return f"{type(error).__name__}: {error}"
    finally:
        writer.close()


async def _find(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rq: bytes, find: bytes) -> str:
    """Association set-up and one C-FIND to its final response: "" or what failed."""
    writer.write(rq)
    kind, body = await _read_pdu(reader)
    if kind != 0x02:
        return f"association not accepted (PDU {kind:02X}H {body[:4].hex()})"
    writer.write(find)
    while True:
        kind, body = await _read_pdu(reader)
        if kind != 0x04:
            return f"PDU {kind:02X}H during the C-FIND"
        if body[5] & 0x03 == 0x03:  # the last fragment of a command set: a C-FIND-RSP
            at = body[6:].find(b"\x00\x00\x00\x09\x02\x00\x00\x00")  # (0000,0900) Status, length 2
            code = body[6 + at + 8: 6 + at + 10] if at >= 0 else b""
            if code == b"\x00\x00":
                break
            if code not in (b"\x00\xff", b"\x01\xff"):
                return f"C-FIND status {code.hex()}"
    return ""


async def _burst(port: int, count: int, pids: dict[str, int], route: str) -> dict[str, Any]:
    rq = pynetdicom_rq(called=f"ORTHANC@{route}", calling="LOAD", contexts=[(1, FIND_MODEL, ["1.2.840.10008.1.2"])])
    find = _find_pdus("Q00001")
    release = asyncio.Event()
    answered: list[float] = []
    before = {name: (rss(pid), tree_cpu(pid)) for name, pid in pids.items()}
    started = time.perf_counter()
    tasks = [asyncio.create_task(_hold(port, rq, find, answered, release)) for _ in range(count)]
    # Until every association has its answer or has failed (the two are apart until the release).
    while len(answered) + sum(1 for t in tasks if t.done()) < count:
        await asyncio.sleep(0.05)
    burst = time.perf_counter() - started
    await asyncio.sleep(IDLE_SETTLE)
    idle = {name: rss(pid) for name, pid in pids.items()}
    cpu = {name: tree_cpu(pid) - before[name][1] for name, pid in pids.items()}
    open_idle = len(answered) - sum(1 for t in tasks if t.done())  # answered and still holding
    release.set()
    results = await asyncio.gather(*tasks)
    failures = [r for r in results if r]
    return {"count": count, "times": answered, "failures": failures, "burst_s": burst, "open_idle": open_idle,
            "rss_before": {n: b[0] for n, b in before.items()}, "rss_idle": idle, "cpu_seconds": cpu}


ROUTES = {"GW1": "TLS between the agents", "GW1P": "plain TCP between the agents (loopback only)"}


def run(work: Path, quick: bool, count: int | None = None, routes: tuple[str, ...] = tuple(ROUTES)) -> dict[str, Any]:
    """A burst of ``count`` over each route in turn, each on freshly started agents (memory an earlier
    burst freed would be reused, and the later burst would read cheaper than it is)."""
    count = count or (200 if quick else 1000)
    margin = count + 100
    raise_open_files(count + 256)
    site = Site((work / "idle").resolve(), hial_server={"access_token_lifetime": 3600}, max_associations=margin,
                bench_routes=True, limits={"max_pending_per_source": margin, "max_pending_connections": margin},
                orthanc_options={"DicomThreadsCount": margin, "DicomScpTimeout": 300}).start()
    agent = None
    bursts: dict[str, dict[str, Any]] = {}
    try:
        assert site.orthanc is not None
        made = [make_ct_study(site.root / "q" / f"{n}", slices=1, size=8, patient_id=f"Q{n:05d}", seed=n)
                for n in range(10)]
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(site.orthanc.upload, made))
        for route in routes:
            if bursts:
                site.stop_server()
                site.start_server()
            agent = site.serve_agent("rad", previous=agent)
            time.sleep(0.5)
            assert site.server is not None
            pids = {"workstation agent": agent.pid, "server agent": site.server.pid}
            asyncio.run(_burst(site.ports["agent"], 20, pids, route))  # warm: JWKS, decision cache, code paths
            bursts[route] = asyncio.run(_burst(site.ports["agent"], count, pids, route))
            print(f"  {count} associations held ({ROUTES[route]}): {len(bursts[route]['failures'])} failures, "
                  f"burst {bursts[route]['burst_s']:.1f} s", file=sys.stderr)
        return {"count": count, "bursts": bursts}
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(10)
        site.stop()


def _row(data: dict[str, Any], label: str) -> tuple[str, dict[str, Any]]:
    count, times, failures = data["count"], sorted(data["times"]), data["failures"]
    p50 = statistics.median(times) * 1000 if times else float("nan")
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))] * 1000 if times else float("nan")
    names = ("workstation agent", "server agent")
    cpu, before, idle = data["cpu_seconds"], data["rss_before"], data["rss_idle"]
    per = {n: (idle[n] - before[n]) / count / 1024 for n in names}
    row = (f"| {count}, {label} (held {data['open_idle']}) | {len(failures)} | {p50:.0f} | {p99:.0f} | "
           + " / ".join(f"{cpu[n]:.2f}" for n in names) + " | "
           + " / ".join(f"{before[n] / 2**20:.0f} -> {idle[n] / 2**20:.0f}" for n in names) + " | "
           + " / ".join(f"{per[n]:.0f}" for n in names) + " |")
    return row, {"count": count, "failures": len(failures), "first_failure": failures[0] if failures else "",
                 "p50_ms": p50, "p99_ms": p99, "kib_per_idle_association": per, "cpu_seconds": cpu,
                 "burst_s": data["burst_s"], "open_idle": data["open_idle"],
                 "rss_before_mib": {n: before[n] / 2**20 for n in names},
                 "rss_idle_mib": {n: idle[n] / 2**20 for n in names}}


def report(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    lines = [f"| {data['count']} concurrent associations, C-FIND through both agents, then idle | failures | "
             "p50 ms | p99 ms | CPU s (workstation / server agent) | RSS MiB before -> idle (workstation / server "
             "agent) | KiB per idle association (workstation / server agent) |", "|---|---:|---:|---:|---:|---:|---:|"]
    out: dict[str, Any] = {}
    for route, burst in data["bursts"].items():
        row, out[route] = _row(burst, ROUTES[route])
        lines.append(row)
    failures = [o["first_failure"] for o in out.values() if o["failures"]]
    lines.append(f"\nTarget: 0 failures: {'met' if not failures else '**not met**'}"
                 + (f" (first: {failures[0]})" if failures else ""))
    if "GW1" in out:
        per = out["GW1"]["kib_per_idle_association"]
        met = all(v <= TARGET_KIB for v in per.values())
        lines[-1] += (f"; memory per idle association (TLS between the agents, as deployed) <= {TARGET_KIB} KiB: "
                      f"{'met' if met else '**not met**'}")
    return "\n".join(lines), out
