"""Flood benchmark (issue 13, "Done when"): a site under anonymous connections keeps serving a user.

A site (HIAL, Orthanc, the server agent with its default bounds) takes, for 60 s (``--quick``: 15 s),
1,200 connections a minute (the issue's 1,000 with a margin) of six anonymous kinds
(:mod:`bench.flood_load`: TCP checks, abandoned TLS handshakes, silent TLS, trickled partial
A-ASSOCIATE-RQs, garbage, TLS scanners) against its TLS listener, run by a process of their own. Meanwhile
a legitimate user on 127.0.0.1 (workstation WS1's certificate, a type-5 JWT, PS3.7 D.3.3.7) sets up an
association, does a C-ECHO and releases, again and again, 50 ms apart, from this process.

Phases, in one run on the same site: the user alone (the baseline); the flood from 127.0.0.2, as the
issue puts it (one address: the per-source bound of pending connections meets it); the same flood
spread over 32 addresses 127.0.0.2-33 (a botnet: the totals are what bound it). Each flood phase
lasts until every anonymous connection has ended, so that how each ended is known.

Reported per phase: the user's association set-up time (TCP connect + TLS handshake + A-ASSOCIATE-RQ
until the A-ASSOCIATE-AC: p50, p95, p99, max, count, failures) and set-up + C-ECHO + release; the
server agent's RSS (``/proc/PID/status`` VmRSS: at the start, the highest sampled every 100 ms, at
the end), its CPU, its open descriptors, the log lines it wrote; and for each anonymous kind, how its
connections ended. The issue's targets (set-up p99 < 1 s, RSS < 256 MiB) are shown beside the
figures, never asserted: speed is measured here, not in tests.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from agent import certs
from devtools.capture import read_pdu
from devtools.peers import PROJECT
from devtools.site import Site
from dicomwire.identity import UserIdentity, insert_user_identity
from dicomwire.pdu import RELEASE_RQ_BYTES, decode_associate
from tests.support.wire import pynetdicom_rq

from .flood_load import HOLD_CAP
from .stats import proc_usage
from .workstation_bench import ECHO

TARGET_P99_MS = 1000.0  # issue 13: association set-up p99 under 1 s
TARGET_RSS_MIB = 256.0  # issue 13: memory under 256 MiB
RATE = 20.0  # anonymous connections a second: 1,200 a minute
PAUSE = 0.05  # seconds between two of the user's associations
USER_TIMEOUT = 10.0  # a user's read that takes longer is a failure
SPREAD = 32  # source addresses of the distributed phase
ATTACKER = "127.0.0.2"


@dataclass(frozen=True, kw_only=True)
class Phase:
    name: str
    seconds: float
    sources: tuple[str, ...] = ()  # no flood when empty
    kinds: tuple[str, ...] = ()  # the whole mix when empty
    rate: float = RATE


@dataclass(frozen=True, kw_only=True)
class Attempt:
    """One of the user's associations: when (seconds into the run), its set-up and whole-round times,
    or why it failed."""

    at: float
    setup: float | None = None
    total: float | None = None
    error: str | None = None


def phases(quick: bool, worst_case: bool = False) -> list[Phase]:
    """The baseline and the issue's two floods; with ``worst_case``, two floods of one holding kind
    each from 32 addresses, which only the agent's totals (association slots, pending connections)
    bound: silent TLS with a site certificate at the issue's rate, and abandoned handshakes (no
    certificate) at three times it."""
    window = 15.0 if quick else 60.0
    spread = tuple(f"127.0.0.{n}" for n in range(2, 2 + SPREAD))
    out = [Phase(name="no flood (baseline)", seconds=10.0 if quick else 30.0),
           Phase(name=f"flood from {ATTACKER}", seconds=window, sources=(ATTACKER,)),
           Phase(name=f"flood from {SPREAD} addresses", seconds=window, sources=spread)]
    if worst_case:  # 60 s even when quick: silent TLS fills the 200 slots in 10 s, the 512 pending in 26 s
        out += [Phase(name=f"worst case: silent TLS only, {SPREAD} addresses", seconds=60.0, sources=spread,
                      kinds=("tls-silent",)),
                Phase(name=f"worst case: abandoned handshakes only at {3 * RATE * 60:,.0f}/min, {SPREAD} addresses",
                      seconds=60.0, sources=spread, kinds=("tls-abandoned",), rate=3 * RATE)]
    return out


@dataclass
class Sampler:
    """The server agent's VmRSS and open descriptors, every 100 ms, on a thread of its own."""

    pid: int
    origin: float
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (at, rss bytes, descriptors)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> tuple[float, int, int]:
        rss = 0
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
        taken = (time.monotonic() - self.origin, rss, len(os.listdir(f"/proc/{self.pid}/fd")))
        self.samples.append(taken)
        return taken

    def start(self) -> Sampler:
        def loop() -> None:
            while not self._stop.wait(0.1):
                self.sample()

        self._thread = threading.Thread(target=loop, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


@dataclass(frozen=True, kw_only=True)
class User:
    """The legitimate user: WS1's certificate, an association request carrying its JWT."""

    port: int
    context: ssl.SSLContext
    rq: bytes

    def once(self) -> tuple[float, float]:
        """(set-up, set-up + C-ECHO + release) in seconds; RuntimeError or OSError on a failure."""
        started = time.perf_counter()
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=USER_TIMEOUT)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.context.wrap_socket(raw, server_hostname="gw1") as sock:
            sock.sendall(self.rq)
            answer = read_pdu(sock)
            setup = time.perf_counter() - started
            if answer[0] != 0x02:
                raise RuntimeError({3: "A-ASSOCIATE-RJ", 7: "A-ABORT"}.get(answer[0], f"PDU type {answer[0]}")
                                   + f" {answer[6:10].hex()}")
            sock.sendall(ECHO)
            if read_pdu(sock)[0] != 0x04:
                raise RuntimeError("no C-ECHO response")
            sock.sendall(RELEASE_RQ_BYTES)
            if read_pdu(sock)[0] != 0x06:
                raise RuntimeError("no A-RELEASE-RP")
        return setup, time.perf_counter() - started

    def loop(self, seconds: float, origin: float) -> list[Attempt]:
        attempts = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            at = time.monotonic() - origin
            try:
                setup, total = self.once()
                attempts.append(Attempt(at=at, setup=setup, total=total))
            except (OSError, RuntimeError, EOFError) as error:
                attempts.append(Attempt(at=at, error=f"{type(error).__name__}: {error}"[:120]))
            time.sleep(PAUSE)
        return attempts


def _load_process(site: Site, phase: Phase, out: Path) -> subprocess.Popen[str]:
    rq = site.root / "partial-rq.bin"  # a real request, anonymous: trickled, never finished
    rq.write_bytes(pynetdicom_rq(called="ORTHANC@GW1", calling="INTRUDER@WS1"))
    with open(site.root / "flood-load.log", "a") as log:  # the child keeps its own descriptor
        return subprocess.Popen([sys.executable, "-m", "bench.flood_load", "--port", str(site.ports["server"]),
                                 "--pki", str(site.pki), "--rq", str(rq), "--rate", str(phase.rate),
                                 "--kinds", ",".join(phase.kinds), "--sources", ",".join(phase.sources),
                                 "--seconds", str(phase.seconds), "--out", str(out)],
                                cwd=PROJECT, stdout=subprocess.PIPE, stderr=log, text=True)


def _log_lines(site: Site) -> int:
    with open(site.root / "server-agent.log", "rb") as log:
        return sum(1 for _ in log)


def _finish(load: subprocess.Popen[str], phase: Phase, out: Path) -> dict[str, Any]:
    """What the flood reported, once its last connection has ended."""
    try:
        code = load.wait(phase.seconds + HOLD_CAP + 60)
    except subprocess.TimeoutExpired:
        code = -1
    if code != 0:
        raise RuntimeError(f"the flood failed ({code}): see {out.parent / 'flood-load.log'}")
    return dict(json.loads(out.read_text()))


def run_phase(site: Site, user: User, phase: Phase, origin: float) -> dict[str, Any]:
    """One phase: the user for ``phase.seconds`` (beside the flood, if any, until it has ended)."""
    assert site.server is not None
    pid = site.server.pid
    sampler = Sampler(pid, origin)
    start = sampler.sample()
    sampler.start()
    lines, cpu_start = _log_lines(site), proc_usage(pid)[0]
    load, out, flood = None, site.root / f"flood-{phase.name.replace(' ', '-').replace('/', '')}.json", None
    try:
        if phase.sources:
            load = _load_process(site, phase, out)
            assert load.stdout is not None
            if load.stdout.readline().strip() != "started":
                raise RuntimeError(f"the flood did not start: see {site.root / 'flood-load.log'}")
        window_start = time.monotonic() - origin
        attempts = user.loop(phase.seconds, origin)
        window = (window_start, time.monotonic() - origin)
        cpu_window, machine_load = proc_usage(pid)[0] - cpu_start, os.getloadavg()[0]
        if load is not None:
            flood = _finish(load, phase, out)
            time.sleep(2.0)  # let the agent let go of what the flood's last connections left
    finally:
        if load is not None and load.poll() is None:
            load.kill()  # the run failed: its flood must not outlive it
            load.wait(10)
        sampler.stop()
    end = sampler.sample()
    print(f"  {phase.name}: {sum(a.error is None for a in attempts)} associations, "
          f"{sum(a.error is not None for a in attempts)} failures", file=sys.stderr)
    return {"phase": phase, "attempts": attempts, "samples": sampler.samples, "window": window,
            "rss": {"start": start[1], "peak": max(s[1] for s in sampler.samples), "end": end[1]},
            "descriptors": {"start": start[2], "peak": max(s[2] for s in sampler.samples), "end": end[2]},
            "cpu_window": cpu_window, "cpu_phase": proc_usage(pid)[0] - cpu_start,
            "log_lines": _log_lines(site) - lines, "flood": flood, "loadavg": machine_load}


def open_files(pid: int) -> int:
    """A process's soft RLIMIT_NOFILE (``/proc/PID/limits``): what its descriptors may reach. The agent
    raises it only when ``max_associations`` needs more, so a flood meets whatever it started with."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    return -1


def _user(site: Site) -> User:
    assert site.hial is not None
    token = httpx.post(f"{site.hial.issuer}/token", timeout=10, data={
        "grant_type": "password", "client_id": "workstation-agent", "username": "rad", "password": "demo-rad",
        "scope": "openid user/ImagingStudy.rs"}).json()["access_token"]
    rq = insert_user_identity(decode_associate(pynetdicom_rq(called="ORTHANC@GW1", calling="BENCH@WS1")),
                              UserIdentity(type=5, primary=token.encode())).encode()
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(site.pki / "ca.crt"))
    context.load_cert_chain(str(site.pki / "ws1.crt"), str(site.pki / "ws1.key"))
    return User(port=site.ports["server"], context=context, rq=rq)


def run(work: Path, quick: bool, worst_case: bool = False) -> dict[str, Any]:
    """Start a site, run the phases, stop the site; the raw figures (:func:`report` sums them up)."""
    site = Site((work / "flood").resolve(), hial_server={"access_token_lifetime": 3600}).start()
    try:
        assert site.server is not None
        certs.issue(site.pki, "intruder", [ATTACKER])  # a site certificate in an attacker's hands
        user = _user(site)
        for _ in range(20):
            user.once()  # warm the JWKS, the decision cache, the warm pool towards Orthanc
        origin = time.monotonic()
        results = [run_phase(site, user, phase, origin) for phase in phases(quick, worst_case)]
        return {"quick": quick, "rate_per_minute": RATE * 60, "phases": results,
                "vmhwm": proc_usage(site.server.pid)[1], "open_files": open_files(site.server.pid)}
    finally:
        site.stop()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def user_figures(attempts: list[Attempt]) -> dict[str, Any]:
    """Percentiles in ms over every attempt, a failed set-up counting as slower than any (inf)."""
    setups = [a.setup * 1000 if a.setup is not None else float("inf") for a in attempts]
    totals = [a.total * 1000 if a.total is not None else float("inf") for a in attempts]
    errors: dict[str, int] = {}
    for attempt in attempts:
        if attempt.error is not None:
            errors[attempt.error] = errors.get(attempt.error, 0) + 1
    return {"count": len(attempts), "failures": sum(errors.values()), "errors": errors,
            "setup_ms": {"p50": _pct(setups, 0.5), "p95": _pct(setups, 0.95), "p99": _pct(setups, 0.99),
                         "max": max(setups)},
            "round_ms": {"p50": _pct(totals, 0.5), "p99": _pct(totals, 0.99)}}


def _finite(figures: dict[str, float]) -> dict[str, float | None]:
    """JSON has no infinity: a percentile that fell on a failure is null."""
    return {key: None if value == float("inf") else value for key, value in figures.items()}


def _ms(value: float) -> str:
    return "failed" if value == float("inf") else f"{value:,.1f}"


def _flood_table(flood: dict[str, Any]) -> list[str]:
    lines = [f"{flood['launched']:,} connections in {flood['launch_seconds']:.0f} s ({flood['per_minute']:,.0f} a "
             f"minute); at most {flood['peak_open']} open at once; the load's own CPU {flood['cpu_seconds']:.1f} s",
             "", "| kind | share | launched | how it ended (what the anonymous client saw) | count | median s | "
             "max s | close_notify at, median s |", "|---|---:|---:|---|---:|---:|---:|---:|"]
    for name, kind in flood["kinds"].items():
        first = True
        for outcome, o in kind["outcomes"].items():
            head = f"| {name} | {kind['share']:.0%} | {kind['launched']} |" if first else "| | | |"
            notified = "-" if o["close_notify_median_s"] is None else f"{o['close_notify_median_s']:.1f}"
            lines.append(f"{head} {outcome} | {o['count']} | {o['median_s']:.3f} | {o['max_s']:.3f} | {notified} |")
            first = False
    return lines


def report(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    mib = 2**20
    lines = [f"Flood (issue 13): a user on 127.0.0.1 beside {data['rate_per_minute']:,.0f} anonymous connections a "
             "minute to the server agent's TLS listener", "",
             "| phase | user associations | failures | set-up p50 ms | p95 | p99 | max | set-up + C-ECHO + release "
             "p50 / p99 ms | target p99 | met |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    out: dict[str, Any] = {"rate_per_minute": data["rate_per_minute"], "target_setup_p99_ms": TARGET_P99_MS,
                           "target_rss_mib": TARGET_RSS_MIB, "vmhwm_mib": data["vmhwm"] / mib,
                           "open_files_limit": data["open_files"], "phases": []}
    for result in data["phases"]:
        phase, user = result["phase"], user_figures(result["attempts"])
        s, r = user["setup_ms"], user["round_ms"]
        lines.append(f"| {phase.name} | {user['count']} | {user['failures']} | {_ms(s['p50'])} | {_ms(s['p95'])} | "
                     f"{_ms(s['p99'])} | {_ms(s['max'])} | {_ms(r['p50'])} / {_ms(r['p99'])} | < {TARGET_P99_MS:g} | "
                     f"{'yes' if s['p99'] < TARGET_P99_MS else '**no**'} |")
        rss = {k: v / mib for k, v in result["rss"].items()}
        window = result["window"][1] - result["window"][0]
        out["phases"].append({"name": phase.name, "seconds": phase.seconds, "sources": len(phase.sources),
                              "kinds": list(phase.kinds) or "all", "rate_per_minute": phase.rate * 60,
                              "user": user | {"setup_ms": _finite(s), "round_ms": _finite(r)},
                              "rss_mib": rss, "rss_met": rss["peak"] < TARGET_RSS_MIB,
                              "setup_p99_met": s["p99"] < TARGET_P99_MS, "cpu_seconds_window": result["cpu_window"],
                              "cpu_share_window": result["cpu_window"] / window,
                              "cpu_seconds_phase": result["cpu_phase"], "descriptors": result["descriptors"],
                              "log_lines": result["log_lines"], "flood": result["flood"],
                              "loadavg_1min": result["loadavg"]})
    lines += ["", f"| phase | server agent RSS start / peak / end MiB | target | met | CPU s in the window (share "
              f"of one core) | descriptors open, start / peak / end (limit {data['open_files']:,}) | log lines written "
              "| machine load (1 min) |", "|---|---:|---:|---|---:|---:|---:|---:|"]
    for p in out["phases"]:
        rss = p["rss_mib"]
        lines.append(f"| {p['name']} | {rss['start']:.0f} / {rss['peak']:.0f} / {rss['end']:.0f} | "
                     f"< {TARGET_RSS_MIB:g} | {'yes' if p['rss_met'] else '**no**'} | {p['cpu_seconds_window']:.1f} "
                     f"({p['cpu_share_window']:.0%}) | {' / '.join(str(n) for n in p['descriptors'].values())} | "
                     f"{p['log_lines']:,} | "
                     f"{p['loadavg_1min']:.1f} |")
    for p in out["phases"]:
        if p["user"]["errors"]:
            lines.append(f"\nThe user's failures {p['name']}: " + "; ".join(
                f"{count} x {error}" for error, count in p["user"]["errors"].items()))
    for p in out["phases"]:
        if p["flood"] is not None:
            lines += ["", f"{p['name']}:", "", *_flood_table(p["flood"])]
    return "\n".join(lines), out


def chart_rows(out: dict[str, Any]) -> list[tuple[str, float, float]]:
    """The user's set-up + C-ECHO + release per phase for the main chart, (name, p50 ms, p99 ms); a
    percentile that fell on a failure is drawn at the user's timeout."""
    return [("flood: user alone (TLS, JWT)" if not p["sources"] else f"flood: user beside the {p['name']}",
             p["user"]["round_ms"]["p50"] or USER_TIMEOUT * 1000, p["user"]["round_ms"]["p99"] or USER_TIMEOUT * 1000)
            for p in out["phases"]]


def draw(path: Path, data: dict[str, Any]) -> Path:
    """The user's set-up times and the server agent's RSS over the run, phases shaded, targets drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 5.5))
    colours = ["#3b6ea8", "#b5472f", "#7a4fa0", "#2e8b57", "#c08a1e"]
    for result, colour in zip(data["phases"], colours, strict=False):
        ok = [a for a in result["attempts"] if a.setup is not None]
        left.scatter([a.at for a in ok], [a.setup * 1000 for a in ok], s=4, color=colour, label=result["phase"].name)
        failed = [a.at for a in result["attempts"] if a.setup is None]
        if failed:
            left.scatter(failed, [USER_TIMEOUT * 1000] * len(failed), s=12, marker="x", color="#000")
        right.plot([s[0] for s in result["samples"]], [s[1] / 2**20 for s in result["samples"]], color=colour,
                   label=result["phase"].name)
        for axis in (left, right):
            axis.axvspan(*result["window"], color=colour, alpha=0.06)
    left.axhline(TARGET_P99_MS, color="#222", linestyle="--", linewidth=1, label="target p99 (1 s)")
    left.set_yscale("log")
    left.set_ylim(top=USER_TIMEOUT * 1000 * 5)  # room above the failures for the legend
    left.set_xlabel("seconds into the run (shaded: the user's measuring windows)")
    left.set_ylabel("association set-up, ms (x: failed)")
    left.legend(fontsize=7, loc="upper left", ncol=2)
    right.axhline(TARGET_RSS_MIB, color="#222", linestyle="--", linewidth=1, label="target (256 MiB)")
    right.set_ylim(0, TARGET_RSS_MIB * 1.15)
    right.set_xlabel("seconds into the run (after a window: the flood's held connections ending)")
    right.set_ylabel("server agent VmRSS, MiB")
    right.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Server agent under {data['rate_per_minute']:,.0f} anonymous connections a minute"
                 f"{' (quick)' if data['quick'] else ''}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    """This section alone: ``python -m bench.flood_bench [--quick]``; JSON and PNG in bench/results/."""
    parser = argparse.ArgumentParser(prog="bench.flood_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="15 s windows instead of 60 s")
    parser.add_argument("--worst-case", action="store_true", help="also two floods of one holding kind each")
    args = parser.parse_args(argv)
    results = Path(__file__).resolve().parent / "results"
    work = Path(__file__).resolve().parent / "data" / "work-flood"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    data = run(work, args.quick, args.worst_case)
    text, out = report(data)
    print(text)
    results.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    (results / f"flood-{stamp}.json").write_text(json.dumps({"date": stamp, "quick": args.quick, **out}, indent=2))
    draw(results / f"flood-{stamp}.png", data)
    print(f"\nresults written to bench/results/flood-{stamp}.json and .png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
