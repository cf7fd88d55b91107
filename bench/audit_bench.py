"""Decision log benchmark (issue 6): verify and indexed search over many records.

Targets: ``verify`` checks 1 million records in under 10 s; ``search`` by user and time range answers
in under 1 s after indexing. (Quick mode: 100,000 records, the same per-record targets scaled.)
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from audit.chain import ChainWriter, verify
from devtools.peers import PROJECT

KEY = b"bench-key-0123456789abcdef012345"


def run(work: Path, quick: bool) -> list[tuple[str, float, float, bool]]:
    count = 100_000 if quick else 1_000_000
    folder = work / "audit"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "decisions.jsonl"
    started = time.perf_counter()
    writer = ChainWriter(path, KEY, checkpoint_interval=3600)
    for n in range(count):
        writer.write({"event": "authorization", "time": f"2026-{1 + n * 12 // count:02d}-15T{n % 24:02d}:00:00.000000",
                      "user": {"username": f"user{n % 500}"}, "action": "C-FIND",
                      "resource": {"patient_id": f"PAT-{n % 20000}"}, "decision": "permit" if n % 9 else "deny",
                      "reason": "permit", "rule_id": "role:radiologist", "workstation": f"WS{n % 40}"})
        if n % 10_000 == 9_999:
            writer.checkpoint()
    writer.close()
    written = time.perf_counter() - started
    started = time.perf_counter()
    report = verify(path, KEY)
    verified = time.perf_counter() - started
    if not report.ok:
        raise RuntimeError(f"verify failed on an untouched log: {report.damage}")
    cli = [sys.executable, "-m", "audit.cli"]
    started = time.perf_counter()
    subprocess.run([*cli, "index", "--log", str(path), "--quiet"], check=True, cwd=PROJECT)
    indexed = time.perf_counter() - started
    started = time.perf_counter()
    out = subprocess.run([*cli, "search", "--log", str(path), "--user", "user42", "--since", "2026-03-01",
                          "--until", "2026-04-30", "--json"], capture_output=True, text=True, check=True, cwd=PROJECT)
    searched = time.perf_counter() - started
    if not out.stdout.strip():
        raise RuntimeError("indexed search found nothing")
    scale = count / 1_000_000
    return [(f"write {count} chained records", written, 0, True),
            (f"verify {count} records", verified, 10 * scale, verified <= 10 * scale),
            (f"index {count} records", indexed, 0, True),
            (f"search by user and time range (indexed, {len(out.stdout.splitlines())} hits)", searched, 1.0,
             searched <= 1.0)]


def report(rows: list[tuple[str, float, float, bool]]) -> str:
    lines = ["| decision log | seconds | target | met |", "|---|---:|---:|---|"]
    for name, seconds, target, met in rows:
        lines.append(f"| {name} | {seconds:.2f} | {f'<= {target:g} s' if target else '-'} | "
                     f"{('yes' if met else '**no**') if target else '-'} |")
    return "\n".join(lines)
