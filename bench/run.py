"""``make bench``: wall-time ratios against a direct connection, measured side by side in one run.

Also the HIAL's decision and login rates (:mod:`bench.hial_bench`), and a legitimate user beside a
flood of anonymous connections (:mod:`bench.flood_bench`, its own chart ``flood-*.png``).

One hop: DCMTK ``storescu`` sends a generated 100 MB CT study (200 slices of 512x512) to DCMTK
``storescp --ignore``, directly and through ``dicom-relay``, alternating runs; we report the median
wall time of each path, min-max, the ratio relay/direct against the target (issue 2: <= 1.3x), and
the relay's peak RSS and CPU seconds. ``--quick`` uses fewer rounds.

Rules (issue 7): ratios come from the same run; a compared command that fails makes the benchmark
exit non-zero, so a broken path is never reported as fast.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import platform
import shutil
import ssl
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import (
    audit_bench,
    chart,
    flood_bench,
    hial_bench,
    idle_bench,
    server_bench,
    site_bench,
    workers_bench,
    workstation_bench,
)
from bench.stats import proc_usage
from devtools.dicomdata import make_ct_study
from devtools.peers import DCMTK_BIN, RelayProcess, StoreSCP, dcmtk_env, free_port, wait_for_port
from devtools.tunnels import Socat

ROOT = Path(__file__).resolve().parent
DATA = ROOT / "data"
RESULTS = ROOT / "results"


class BenchError(RuntimeError):
    pass


@dataclass
class Row:
    name: str
    runs: list[float] = field(default_factory=list)
    baseline: str | None = None
    target: float | None = None
    ratio: float | None = None
    met: bool | None = None
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.runs)


def study(slices: int, size: int) -> list[Path]:
    folder = DATA / f"ct-{slices}x{size}"
    files = sorted(folder.glob("*.dcm")) if folder.exists() else []
    if len(files) != slices:
        print(f"generating {slices} CT slices of {size}x{size} in {folder} ...", file=sys.stderr)
        files = make_ct_study(folder, slices=slices, size=size, patient_id="BENCH001", seed=42)
    return files


def storescu(port: int, files: list[Path], *, nodelay: bool = True) -> float:
    env = dcmtk_env()
    if not nodelay:
        env.pop("TCP_NODELAY", None)
    args = [str(DCMTK_BIN / "storescu"), "-aec", "STORESCP", "127.0.0.1", str(port), *map(str, files)]
    started = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise BenchError(f"storescu to port {port} failed ({result.returncode}): {result.stderr[-2000:]}")
    return elapsed


def machine() -> dict[str, object]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dcmtk_version = subprocess.run([str(DCMTK_BIN / "storescu"), "--version"], capture_output=True,
                                   text=True).stdout.splitlines()[:1]
    orthanc = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    orthanc_version = subprocess.run([orthanc, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    versions = {name: importlib.metadata.version(name) for name in ("uvloop", "pynetdicom", "pydicom", "authlib")}
    return {"cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "platform": platform.platform(), "dcmtk": dcmtk_version[0].strip("$ ") if dcmtk_version else "?",
            "orthanc": orthanc_version[0] if orthanc_version else "?", "openssl": ssl.OPENSSL_VERSION, **versions}


def one_hop(rounds: int, files: list[Path], work: Path) -> tuple[list[Row], dict[str, float]]:
    scp = StoreSCP(work / "scp", port=0, ignore=True).start()
    relay = RelayProcess(to=("127.0.0.1", scp.port), log_path=work / "relay.log").start()
    # A second relay in front of the first: two hops of the bare relay core (no TLS, no identity, no
    # decisions), the floor under any path through both agents (issue 5's 2x target).
    outer = RelayProcess(to=("127.0.0.1", relay.port), log_path=work / "relay-outer.log").start()
    socat = Socat(to=("127.0.0.1", scp.port)).start()
    assert relay.process is not None and outer.process is not None
    try:
        direct = Row("C-STORE 100 MB, direct (storescu -> storescp --ignore)")
        hop = Row("C-STORE 100 MB, one hop (dicom-relay)", baseline=direct.name, target=1.3)
        two = Row("C-STORE 100 MB, two hops (two dicom-relay in series)", baseline=direct.name,
                  note="the bare relay core twice: the floor under both agents")
        # The C baseline for one hop, in the same alternating rounds (the design note's 1.19x).
        c_relay = Row("C-STORE 100 MB, one hop (socat, C, 256 KiB buffers)", baseline=direct.name,
                      note="a plain TCP relay in C")
        storescu(scp.port, files[:2])  # warm the paths (page cache, first connections)
        storescu(outer.port, files[:2])
        for n in range(rounds):
            # Alternate the order so no path always runs on a warmer machine.
            order = [(direct, scp.port), (two, outer.port)]
            for row, port in order if n % 2 == 0 else reversed(order):
                row.runs.append(storescu(port, files))
                print(f"  {row.name}: {row.runs[-1]:.3f} s", file=sys.stderr)
        cpu_before, _ = proc_usage(relay.process.pid)
        for n in range(rounds):
            order = [(direct, scp.port), (hop, relay.port), (c_relay, socat.port)]
            for row, port in order if n % 2 == 0 else reversed(order):
                row.runs.append(storescu(port, files))
                print(f"  {row.name}: {row.runs[-1]:.3f} s", file=sys.stderr)
        cpu_after, peak = proc_usage(relay.process.pid)
        usage = {"relay_cpu_seconds_per_run": (cpu_after - cpu_before) / rounds, "relay_peak_rss_mib": peak / 2**20}
        rows = [direct, hop, c_relay, two]
        # Legacy senders with Nagle on (Debian's DCMTK default): TCP_QUICKACK on our side removes the stall.
        nagle_direct = Row("C-STORE 100 MB, Nagle on, direct", note="storescu without TCP_NODELAY=1")
        nagle_hop = Row("C-STORE 100 MB, Nagle on, one hop", baseline=nagle_direct.name,
                        note="the relay re-arms TCP_QUICKACK")
        for n in range(max(1, rounds // 2)):
            order = [(nagle_direct, scp.port), (nagle_hop, relay.port)]
            for row, port in order if n % 2 == 0 else reversed(order):
                row.runs.append(storescu(port, files, nodelay=False))
                print(f"  {row.name}: {row.runs[-1]:.3f} s", file=sys.stderr)
        rows += [nagle_direct, nagle_hop]
        # The do-it-yourself reference: a store-and-forward proxy written with pynetdicom.
        snf_port = free_port()
        snf = subprocess.Popen([sys.executable, "-m", "devtools.snf_proxy", "--listen", str(snf_port), "--to",
                                f"127.0.0.1:{scp.port}"], cwd=ROOT.parent, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(snf_port, 20, snf)  # type: ignore[arg-type]
            reference = Row("C-STORE 100 MB, pynetdicom store-and-forward proxy", baseline=direct.name,
                            note="the do-it-yourself reference")
            reference.runs.append(storescu(snf_port, files))
            print(f"  {reference.name}: {reference.runs[-1]:.3f} s", file=sys.stderr)
            rows.append(reference)
        finally:
            snf.terminate()
            snf.wait(10)
    finally:
        socat.stop()
        outer.stop()
        relay.stop()
        scp.stop()
    by_name = {r.name: r for r in rows}
    hop.note = f"{hop.median / c_relay.median:.2f}x socat"
    for row in rows:
        if row.baseline:
            row.ratio = row.median / by_name[row.baseline].median
            if row.target is not None:
                row.met = row.ratio <= row.target
    return rows, usage


def report(rows: list[Row], usage: dict[str, float], info: dict[str, object], quick: bool) -> str:
    lines = [
        f"# dicom-relay benchmark, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC{' (quick)' if quick else ''}",
        "",
        f"Machine: {info['cores']} cores, {info['cpu']}; Python {info['python']}; {info['dcmtk']}; "
        f"Orthanc {info['orthanc']}; {info['openssl']}; uvloop {info['uvloop']}, pynetdicom {info['pynetdicom']}",
        "",
        "| path | median s | min-max s | runs | x direct | target | met | note |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        ratio = f"{row.ratio:.2f}" if row.ratio is not None else "1.00" if not row.baseline else "-"
        target = f"<= {row.target:g}" if row.target is not None else "-"
        met = "-" if row.met is None else ("yes" if row.met else "**no**")
        lines.append(f"| {row.name} | {row.median:.3f} | {min(row.runs):.3f}-{max(row.runs):.3f} | {len(row.runs)} "
                     f"| {ratio} | {target} | {met} | {row.note} |")
    lines += ["", f"dicom-relay: {usage['relay_cpu_seconds_per_run']:.2f} CPU s per 100 MB run, "
                  f"peak RSS {usage['relay_peak_rss_mib']:.1f} MiB"]
    return "\n".join(lines)


def chart_ratios(rows: list[Row], ws_data: dict[str, Any], sa_data: dict[str, Any],
                 site_out: dict[str, Any]) -> list[tuple[str, float, float | None]]:
    """The chart's throughput rows: (name, x direct, target or None)."""
    ratios: list[tuple[str, float, float | None]] = [(r.name.replace("C-STORE 100 MB, ", ""), r.ratio, r.target)
                                                     for r in rows if r.ratio is not None]
    ratios.append(("workstation hop vs server side only (throughput)", 1 / float(ws_data["hop_share"]), 1.25))
    ratios.append(("both agents vs direct (storescp)", float(sa_data["store_ratio"]), 2.0))
    ratios.append(("both agents vs two stunnel (TLS 1.3, C)", float(sa_data["store_ratio_over_stunnel"]),
                   server_bench.STUNNEL_TARGET))
    cpu = sa_data["cpu_ratio_over_stunnel"]
    assert isinstance(cpu, dict)
    ratios += [("CPU per 100 MB: workstation agent vs stunnel client", float(cpu["workstation side"]),
                server_bench.CPU_TARGET),
               ("CPU per 100 MB: server agent vs stunnel server", float(cpu["server side"]), server_bench.CPU_TARGET)]
    store_s = sa_data["store"]
    assert isinstance(store_s, dict)
    plain_ratio = store_s["C-STORE 100 MB, through both agents, no TLS between them"] / store_s[
        "C-STORE 100 MB to storescp --ignore, direct"]
    ratios.append(("both agents, no TLS between them, vs direct (storescp)", plain_ratio, None))
    ratios.append(("one hop vs direct (into Orthanc)", float(site_out["into_orthanc_one_hop_ratio"]), None))
    ratios.append(("both agents vs direct (into Orthanc)", float(site_out["into_orthanc_ratio"]), 1.15))
    return ratios


def write_json(path: Path, results: dict[str, object]) -> Path:
    path.write_text(json.dumps(results, indent=2))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a short pass)")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 9)
    files = study(200, 512)
    work = DATA / "work"
    if work.exists():
        shutil.rmtree(work)  # every run starts from empty PACS databases and fresh certificates
    work.mkdir(parents=True, exist_ok=True)
    info = machine()
    try:
        rows, usage = one_hop(rounds, files, work)
        hial_rows = hial_bench.run(work, args.quick)
        ws_latency, ws_throughput = workstation_bench.run(work, files, args.quick)
        sa_latency, sa_store, sa_ratio = server_bench.run(work, files, args.quick)
        site_data = site_bench.run(work, files, args.quick)
        workers_data = workers_bench.run(work, files, args.quick)
        idle_data = idle_bench.run(work, args.quick)
        audit_rows = audit_bench.run(work, args.quick)
        flood_data = flood_bench.run(work, args.quick)
    except (BenchError, RuntimeError, OSError) as error:
        print(f"benchmark FAILED: {error}", file=sys.stderr)
        return 1
    ws_text, ws_data = workstation_bench.report(ws_latency, ws_throughput)
    sa_text, sa_data = server_bench.report(sa_latency, sa_store, sa_ratio)
    site_text, site_out = site_bench.report(site_data)
    workers_text, workers_out = workers_bench.report(workers_data)
    idle_text, idle_out = idle_bench.report(idle_data)
    flood_text, flood_out = flood_bench.report(flood_data)
    text = "\n\n".join((report(rows, usage, info, args.quick), hial_bench.report(hial_rows), ws_text, sa_text,
                         site_text, workers_text, idle_text, audit_bench.report(audit_rows), flood_text))
    print(text)
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = write_json(RESULTS / f"relay-{stamp}.json", {
        "date": stamp, "quick": args.quick, "machine": info, "usage": usage,
        "rows": [asdict(r) | {"median": r.median} for r in rows],
        "hial": [{"name": r.name, "p50_ms": r.p50, "p90_ms": r.pct(0.9), "p99_ms": r.pct(0.99),
                  "per_second": r.per_second, "target_p50_ms": r.target_p50_ms, "met": r.met} for r in hial_rows],
        "workstation": ws_data, "server_agent": sa_data, "site": site_out, "workers": workers_out,
        "idle_associations": idle_out,
        "decision_log": [{"name": n, "seconds": t, "target_s": g, "met": m} for n, t, g, m in audit_rows],
        "flood": flood_out})
    print(f"\nresults written to {out.relative_to(ROOT.parent)}", file=sys.stderr)
    ratios = chart_ratios(rows, ws_data, sa_data, site_out)
    latencies = [(f"{section}: {m.name.replace('association + C-ECHO + release, ', '').replace('... ', '')}",
                  m.p50, m.pct(0.99))
                 for section, measures in (("server agent", sa_latency), ("workstation hop", ws_latency))
                 for m in measures if "type-2" not in m.name]  # ~90 ms: in the table, off this scale
    latencies += flood_bench.chart_rows(flood_out)
    png = chart.draw(RESULTS / f"relay-{stamp}.png", ratios, latencies,
                     f"DICOM identity agents, {info['cores']} cores, {stamp}{' (quick)' if args.quick else ''}")
    flood_png = flood_bench.draw(RESULTS / f"flood-{stamp}.png", flood_data)
    print(f"charts written to {png.relative_to(ROOT.parent)} and {flood_png.relative_to(ROOT.parent)}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
