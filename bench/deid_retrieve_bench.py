"""A de-identified C-GET and C-MOVE against the identified ones, through the same agents (issue 16:
<= 1.3x).

``python -m bench.deid_retrieve_bench [--quick]``. Orthanc holds a 100 MB CT study (200 slices of
512x512) of a patient in research project STUDY-A. DCMTK ``getscu`` retrieves it, alternating:

* direct: from Orthanc, no agent (for reference);
* identified: through ``dicom-agent serve`` logged in as a radiologist, and the server agent;
* de-identified: through a second ``dicom-agent serve`` logged in as the researcher, and the same
  server agent, by the study's pseudonymous UID: every instance's header rewritten in transit, its
  pixel data streamed on, its pseudonyms from the pseudonymisation service.

DCMTK ``movescu`` moves it the same two ways to ``storescp`` (MOVESCP, behind the workstation agent's
return listener): Orthanc's C-STOREs come back through the server agent's return path, de-identified
there for the researcher. (A direct C-MOVE has no row: Orthanc's move destination is the server
agent.) Both workstation agents run side by side (two configurations of workstation WS1; the return
path goes to the first one's return listener, as both are WS1), so no login falls inside a timed
run. Each ratio is the median de-identified time over the median identified time of the same run;
the server agent's CPU seconds per retrieval are read from /proc around each path's runs.
Writes ``bench/results/deid-retrieve-latest.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydicom import dcmread

from deid import Needs
from devtools.dicomdata import make_ct_study
from devtools.peers import DCMTK_BIN, PROJECT, dcmtk_env, free_port, wait_for_port
from devtools.pseudonymizer import TRANSLATE_CLIENT, TRANSLATE_SECRET
from devtools.site import Site, write_workstation_config
from oauthclient import AuthMethod, ClientAuth, OAuthClient, SyncExecutor
from pseudonymizer.client import PseudonymizerClient

from .stats import proc_usage

ROOT = Path(__file__).resolve().parent
TARGET = 1.3
PATIENT = "PAT-RES-1"  # consented to STUDY-A in the demo policy


class BenchError(RuntimeError):
    pass


def study(slices: int, size: int) -> list[Path]:
    folder = ROOT / "data" / f"ct-research-{slices}x{size}"
    files = sorted(folder.glob("*.dcm")) if folder.exists() else []
    if len(files) != slices:
        print(f"generating {slices} CT slices of {size}x{size} in {folder} ...", file=sys.stderr)
        files = make_ct_study(folder, slices=slices, size=size, patient_id=PATIENT, patient_name="RESEARCH^BENCH",
                              seed=43)
    return files


def serve(site: Site, user: str, config: Path, port: int) -> subprocess.Popen[bytes]:
    def agent(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "agent.cli", "--config", str(config), *args], input=stdin,
                              capture_output=True, text=True, timeout=120, env=dcmtk_env(), cwd=PROJECT)
    login = agent("login", "--user", user, "--password-stdin", stdin=f"demo-{user}\n")
    if login.returncode != 0:
        raise BenchError(f"login as {user} failed: {login.stderr[-500:]}")
    process = subprocess.Popen([sys.executable, "-m", "agent.cli", "--config", str(config), "--log-level", "WARNING",
                                "serve"], cwd=PROJECT)
    wait_for_port(port, 20, process)  # type: ignore[arg-type]
    return process


def pseudonymous_study(site: Site, uid: str) -> str:
    assert site.pseudonymizer is not None and site.hial is not None
    auth = ClientAuth(client_id=TRANSLATE_CLIENT, method=AuthMethod.CLIENT_SECRET_BASIC, secret=TRANSLATE_SECRET)
    with SyncExecutor() as executor:
        client = PseudonymizerClient(site.pseudonymizer.url, OAuthClient(site.hial.issuer, auth, executor), executor)
        return client.pseudonyms("STUDY-A", Needs(uids=frozenset({uid}))).uids[uid]


def check_view(files: list[Path], deid: bool) -> None:
    """The files are the view the row claims: de-identified (Patient Identity Removed YES, no real
    Patient ID) or Orthanc's own."""
    ds = dcmread(files[0], stop_before_pixels=True)
    if (ds.get("PatientIdentityRemoved") == "YES") != deid or (ds.PatientID == PATIENT) == deid:
        raise BenchError(f"{files[0]} is not the {'de-' if deid else ''}identified view")


def getscu(port: int, called: str, study_uid: str, out: Path, count: int, deid: bool = False) -> float:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    args = [str(DCMTK_BIN / "getscu"), "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
            "-od", str(out), "-aec", called, "127.0.0.1", str(port)]
    started = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, env=dcmtk_env(), timeout=600)
    elapsed = time.perf_counter() - started
    got = len(list(out.iterdir()))
    if result.returncode != 0 or got != count:
        raise BenchError(f"getscu via port {port} failed ({result.returncode}, {got} of {count} files): "
                         f"{result.stderr[-2000:]}")
    check_view(sorted(out.iterdir()), deid)
    return elapsed


def movescu(site: Site, port: int, study_uid: str, count: int, deid: bool = False) -> float:
    assert site.scp is not None
    for old in site.scp.received():
        old.unlink()
    args = [str(DCMTK_BIN / "movescu"), "-S", "-aet", "MOVESCP", "-aem", "MOVESCP", "-k", "QueryRetrieveLevel=STUDY",
            "-k", f"StudyInstanceUID={study_uid}", "-aec", "ORTHANC@GW1", "127.0.0.1", str(port)]
    started = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, env=dcmtk_env(), timeout=600)
    elapsed = time.perf_counter() - started
    got = len(site.scp.received())
    if result.returncode != 0 or got != count:
        raise BenchError(f"movescu via port {port} failed ({result.returncode}, {got} of {count} files): "
                         f"{result.stderr[-2000:]}")
    check_view(site.scp.received(), deid)
    for old in site.scp.received():
        old.unlink()
    return elapsed


GET_ROWS = ("identified, through both agents", "de-identified, through both agents")
MOVE_ROWS = ("C-MOVE identified, through both agents", "C-MOVE de-identified, through both agents")


def profiled(pid: int, output: Path, retrieve: Callable[[], float], times: int) -> None:
    """py-spy (in the venv, not a dependency: ``pip install py-spy``) on the server agent while
    ``retrieve`` runs ``times`` times: where its CPU goes, stacks collapsed to ``output``."""
    spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid),
                            "--rate", "1000", "--format", "raw", "--output", str(output)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached
    for _ in range(times):
        retrieve()
    spy.send_signal(signal.SIGINT)
    spy.wait(30)


def run(work: Path, quick: bool, profile: Path | None = None, rounds: int | None = None) -> dict[str, Any]:
    files = study(40 if quick else 200, 512)
    real_study = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    site = Site((work / "site").resolve(), hial_server={"access_token_lifetime": 3600}, research=True).start()
    agents: list[subprocess.Popen[bytes]] = []
    try:
        assert site.orthanc is not None and site.server is not None
        site.orthanc.upload(files)
        ports = {"researcher": free_port(), "researcher_return": free_port()}
        (site.root / "research-ws").mkdir()
        second = write_workstation_config(
            site.root / "research-ws" / "workstation.toml", pki=site.pki, issuer=site.issuer,
            listen=ports["researcher"], route_port=site.ports["server"], return_port=ports["researcher_return"],
            refresh_margin=2)
        agents.append(serve(site, "rad", site.root / "workstation.toml", site.ports["agent"]))
        agents.append(serve(site, "researcher", second, ports["researcher"]))
        shown = pseudonymous_study(site, real_study)
        count, out, pacs, agent, researcher = len(files), work / "out", site.orthanc.dicom_port, \
            site.ports["agent"], ports["researcher"]
        paths: list[tuple[str, int | None, Callable[[], float]]] = [
            ("direct", None, lambda: getscu(pacs, "ORTHANC", real_study, out, count)),
            (GET_ROWS[0], site.server.pid, lambda: getscu(agent, "ORTHANC@GW1", real_study, out, count)),
            (GET_ROWS[1], site.server.pid, lambda: getscu(researcher, "ORTHANC@GW1", shown, out, count, True)),
            (MOVE_ROWS[0], site.server.pid, lambda: movescu(site, agent, real_study, count)),
            (MOVE_ROWS[1], site.server.pid, lambda: movescu(site, researcher, shown, count, True))]
        samples: dict[str, list[float]] = {name: [] for name, *_ in paths}
        cpu: dict[str, float] = {name: 0.0 for name, *_ in paths}
        for _name, _, retrieve in paths:  # warm up every path once (PDP cache, TLS, pseudonyms)
            retrieve()
        if profile is not None:
            profile.mkdir(parents=True, exist_ok=True)
            for name, pid, retrieve in paths[1:]:
                assert pid is not None
                profiled(pid, profile / (name.replace(",", "").replace(" ", "-") + ".txt"), retrieve, 5)
        rounds = rounds or (3 if quick else 7)
        for n in range(rounds):
            for name, pid, retrieve in paths if n % 2 == 0 else list(reversed(paths)):
                before = proc_usage(pid)[0] if pid else 0.0
                samples[name].append(retrieve())
                cpu[name] += (proc_usage(pid)[0] - before) if pid else 0.0
                print(f"  {name}: {samples[name][-1]:.2f} s", file=sys.stderr)
        medians = {name: statistics.median(values) for name, values in samples.items()}
        ratios = {"C-GET": medians[GET_ROWS[1]] / medians[GET_ROWS[0]],
                  "C-MOVE": medians[MOVE_ROWS[1]] / medians[MOVE_ROWS[0]]}
        return {"slices": len(files), "megabytes": round(sum(f.stat().st_size for f in files) / 1e6, 1),
                "rounds": rounds, "samples": samples, "medians": medians,
                "server_agent_cpu_per_run": {name: cpu[name] / rounds for name in cpu}, "ratio": ratios["C-GET"],
                "ratios": ratios, "target": TARGET, "met": all(r <= TARGET for r in ratios.values()),
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    finally:
        for process in agents:
            process.terminate()
            process.wait(10)
        site.stop()


def report(data: dict[str, Any]) -> str:
    direct = data["medians"]["direct"]
    lines = [f"C-GET and C-MOVE of a {data['megabytes']} MB CT study ({data['slices']} slices), Orthanc as the PACS, "
             f"{data['rounds']} alternating rounds, {data['time']}", "",
             "| path | median s | min-max s | x direct | server agent CPU s per retrieval |", "|---|---|---|---|---|"]
    for name, values in data["samples"].items():
        lines.append(f"| {name} | {statistics.median(values):.2f} | {min(values):.2f}-{max(values):.2f} | "
                     f"{statistics.median(values) / direct:.2f} | {data['server_agent_cpu_per_run'][name]:.2f} |")
    lines.append("")
    for kind, ratio in data["ratios"].items():
        lines.append(f"{kind} de-identified / identified: **{ratio:.2f}x** (target <= {data['target']}x: "
                     f"{'met' if ratio <= data['target'] else 'NOT met'})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="40 slices, 3 rounds")
    parser.add_argument("--keep", action="store_true", help="keep the site's folder (logs) under bench/")
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 7, --quick 3)")
    parser.add_argument("--profile", type=Path, help="py-spy the server agent on each path, to this folder")
    args = parser.parse_args(argv)
    work = ROOT / "work-deid-retrieve"
    shutil.rmtree(work, ignore_errors=True)
    try:
        data = run(work, args.quick, args.profile, args.rounds)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    text = report(data)
    print(text)
    results = ROOT / "results"
    results.mkdir(exist_ok=True)
    (results / "deid-retrieve-latest.json").write_text(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
