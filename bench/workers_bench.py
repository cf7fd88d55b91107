"""One server-agent host with ``[server] workers = 2`` against ``workers = 1`` (issue 15 item 5).

Several DCMTK ``storescu`` clients at once, each sending the 100 MB study over TLS (the site's
workstation certificate, as modality node CTSCANNER, so no login is timed) straight to the server
agent's TLS listener, which relays to one DCMTK ``storescp --fork --ignore``; the two agents (one of
each kind, the same configuration but ``workers``, both with ``[shared] redis``) run side by side and
the rounds alternate between them, beside a row straight to storescp (plain TCP) that shows what the
machine does without an agent. Aggregate throughput is the bytes of every client over the wall time
of the round (from the first start to the last exit); the CPU seconds of every process are read per
round from /proc (each process tree), and the share of the machine's cores they add up to says what
limits the scaling: on this 2-core machine the clients and storescp run on the same cores as the
agent, so a second worker can only take CPU the others leave.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools.peers import DCMTK_BIN, PROJECT, _stop, dcmtk_env, free_port, wait_for_port
from devtools.redis_server import RedisServer
from devtools.site import Site
from server_agent.config import Node, Pacs
from server_agent.shared_config import SharedSection
from tomlconf import write

from .stats import children, cpu_times, tree_cpu

CLIENTS = 4  # concurrent storescu, each with the whole study


@dataclass
class Round:
    seconds: float
    cpu: dict[str, float]  # CPU seconds of the round: storescu (all clients), server agent, storescp
    machine: float  # share of every core busy during the round, any process's work (other sessions' too)
    workers: list[float] = field(default_factory=list)  # CPU seconds of each worker (workers > 1)


@dataclass
class Target:
    name: str
    port: int
    tls: bool
    agent: subprocess.Popen[bytes] | None = None
    rounds: list[Round] = field(default_factory=list)


def _storescp(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    """storescp --fork --ignore: one child per association, so concurrent clients are served at once."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = open(folder / "storescp.log", "wb")  # noqa: SIM115 - kept open for the process
    process = subprocess.Popen([str(DCMTK_BIN / "storescp"), "--fork", "--ignore", "-aet", "ORTHANC",
                                "--output-directory", str(folder), str(port)], stdout=log,
                               stderr=subprocess.STDOUT, env=dcmtk_env())
    wait_for_port(port, 20, process)
    return process, port


def _agent(site: Site, workers: int, pacs_port: int, redis: str) -> tuple[subprocess.Popen[bytes], int]:
    """A server agent like the site's, with ``workers`` processes, in front of ``pacs_port``."""
    config = site.server_agent_config()
    port = free_port()
    config = config.replace(
        server=config.server.replace(listen=("127.0.0.1", port), plain_listen=None,
                                     return_listen=("127.0.0.1", free_port()), workers=workers,
                                     decision_log=site.root / f"decisions-{workers}w.jsonl"),
        pacs={"ORTHANC": Pacs(host="127.0.0.1", port=pacs_port, ae_title="ORTHANC")},
        nodes={"CTSCANNER": Node(addresses=("127.0.0.1",), actions=("C-ECHO", "C-STORE"))},
        shared=SharedSection(redis=redis))
    path = write(site.root / f"server-agent-{workers}w.toml", config)
    log = open(site.root / f"server-agent-{workers}w.log", "ab")  # noqa: SIM115 - kept open for the process
    process = subprocess.Popen([sys.executable, "-m", "server_agent.cli", "serve", "--config", str(path),
                                "--log-level", "WARNING"], cwd=PROJECT, stdout=log, stderr=subprocess.STDOUT)
    wait_for_port(port, 30, process)
    return process, port


def _round(path: Target, files: list[Path], pki: Path, scp: int) -> Round:
    tls = ["+tls", str(pki / "ws1.key"), str(pki / "ws1.crt"), "+cf", str(pki / "ca.crt")] if path.tls else []
    args = [str(DCMTK_BIN / "storescu"), *tls, "-aet", "CTSCANNER", "-aec", "ORTHANC", "127.0.0.1", str(path.port),
            *map(str, files)]
    agent = path.agent.pid if path.agent is not None else None
    workers = sorted(children(agent)) if agent else []
    before = {"server agent": tree_cpu(agent) if agent else 0.0, "storescp": tree_cpu(scp)}
    own = [tree_cpu(w) for w in workers]
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    machine = cpu_times()
    started = time.perf_counter()
    clients = [subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dcmtk_env())
               for _ in range(CLIENTS)]
    failed = [c.stderr.read().decode(errors="replace")[-800:] for c in clients  # type: ignore[union-attr]
              if c.wait(600) != 0]
    seconds = time.perf_counter() - started
    busy, total = (b - a for a, b in zip(machine, cpu_times(), strict=True))
    if failed:
        raise RuntimeError(f"storescu to {path.name} failed: {failed[0]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    time.sleep(0.2)  # storescp reaps its children when it next looks
    cpu = {"storescu": after.ru_utime + after.ru_stime - reaped.ru_utime - reaped.ru_stime,
           "server agent": (tree_cpu(agent) if agent else 0.0) - before["server agent"],
           "storescp": tree_cpu(scp) - before["storescp"]}
    split = [tree_cpu(w) - o for w, o in zip(workers, own, strict=True)] if len(workers) > 1 else []
    return Round(seconds, cpu, busy / total, split)


def run(work: Path, files: list[Path], quick: bool) -> dict[str, Any]:
    site = Site((work / "workers").resolve(), pacs_scp=True, hial_server={"access_token_lifetime": 3600}).start()
    site.stop_server()  # only its HIAL, certificates and configuration are used
    redis = RedisServer(site.root / "redis").start()
    scp, scp_port = _storescp(site.root / "scp")
    paths = [Target(f"direct to storescp, {CLIENTS} clients (plain TCP)", scp_port, tls=False)]
    try:
        for workers in (1, 2):
            process, port = _agent(site, workers, scp_port, redis.url)
            paths.append(Target(f"server agent, workers = {workers}, {CLIENTS} clients (TLS)", port, True, process))
        time.sleep(1.0)  # the workers of the second agent are up (the port answers once one is)
        for path in paths:
            _round(path, files[:4], site.pki, scp.pid)  # warm: page cache, first handshakes, the decision cache
        for n in range(2 if quick else 5):
            for path in paths if n % 2 == 0 else reversed(paths):
                path.rounds.append(_round(path, files, site.pki, scp.pid))
                print(f"  {path.name}: {path.rounds[-1].seconds:.2f} s", file=sys.stderr)
        size = sum(f.stat().st_size for f in files) * CLIENTS
        return {"paths": paths, "bytes": size, "cores": os.cpu_count() or 1}
    finally:
        for path in paths:
            _stop(path.agent, timeout=40)
        _stop(scp)
        redis.stop()
        site.stop()


def report(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    paths: list[Target] = data["paths"]
    size, cores = data["bytes"], data["cores"]
    lines = [f"| {CLIENTS} concurrent storescu, {size / CLIENTS / 2**20:.0f} MiB each | median s | aggregate MB/s | "
             "CPU s per round: storescu / server agent / storescp | cores busy: these / all processes | "
             "worker CPU split |", "|---|---:|---:|---:|---:|---|"]
    out: dict[str, Any] = {}
    for path in paths:
        seconds = statistics.median(r.seconds for r in path.rounds)
        cpu = {k: statistics.median(r.cpu[k] for r in path.rounds) for k in path.rounds[0].cpu}
        busy = statistics.median(sum(r.cpu.values()) / r.seconds for r in path.rounds) / cores
        machine = statistics.median(r.machine for r in path.rounds)
        split = ""
        if path.rounds[0].workers:
            shares = [statistics.median(r.workers[i] / max(sum(r.workers), 1e-9) for r in path.rounds)
                      for i in range(len(path.rounds[0].workers))]
            split = " / ".join(f"{100 * s:.0f}%" for s in shares)
        throughput = size / seconds / 1e6
        lines.append(f"| {path.name} | {seconds:.2f} | {throughput:.0f} | {cpu['storescu']:.2f} / "
                     f"{cpu['server agent']:.2f} / {cpu['storescp']:.2f} | {100 * busy:.0f}% / {100 * machine:.0f}% | "
                     f"{split or '-'} |")
        out[path.name] = {"median_s": seconds, "mb_per_s": throughput, "cpu_seconds": cpu, "cores_busy": busy,
                          "machine_busy": machine, "worker_split": split}
    one, two = (out[p.name]["mb_per_s"] for p in paths[1:3])
    scaling = two / one
    lines.append(f"\nScaling, workers = 2 against workers = 1 (aggregate throughput): {scaling:.2f}x on "
                 f"{cores} cores shared with the {CLIENTS} clients and storescp (report)")
    return "\n".join(lines), {"paths": out, "scaling": scaling, "clients": CLIENTS}
