"""Every core (issue 15 item 5): ``[server] workers = 2`` under one supervisor, sharing the listeners
(SO_REUSEPORT) and one Redis. A C-MOVE permitted by one worker has its return association (Orthanc's
C-STORE sub-operations) accepted and decided by the other, and the images arrive; each worker's
decision log verifies; a killed worker is restarted; SIGTERM stops them all."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread

from agent.config import Route
from devtools.dicomdata import make_ct_study
from devtools.peers import PROJECT
from devtools.redis_server import REDIS_SERVER, RedisServer
from devtools.site import Site, write_workstation_config
from server_agent.shared_config import SharedSection
from server_agent.supervisor import worker_log
from tomlconf import write

pytestmark = pytest.mark.skipif(not Path(REDIS_SERVER).exists(), reason="redis-server missing: run `make test`")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, RedisServer]]:
    root = tmp_path_factory.mktemp("scale")
    redis = RedisServer(root / "redis").start()
    site = Site(root).start()
    assert site.orthanc is not None
    site.orthanc.upload(make_ct_study(root / "data" / "PAT-1", slices=2, patient_id="PAT-1", accession="ACC1"))
    site.stop_server()
    config = site.server_agent_config()
    config = config.replace(server=config.server.replace(workers=2), shared=SharedSection(redis=redis.url))
    write(root / "server-agent.toml", config)
    site.start_server()
    try:
        yield site, redis
    finally:
        site.stop()
        redis.stop()


def records(root: Path, worker: int) -> list[dict[str, object]]:
    path = worker_log(root / "decisions.jsonl", worker)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def side_of_last_move(root: Path, before: dict[int, int]) -> tuple[set[int], set[int]]:
    """Which workers logged the C-MOVE permitted since ``before``, and which its sub-operations."""
    time.sleep(1.0)  # the writers batch records
    moved, stored = set(), set()
    for worker in (1, 2):
        for record in records(root, worker)[before[worker]:]:
            if record.get("event") == "authorization" and record.get("decision") == "permit":
                if record.get("sub_operation_of") == "C-MOVE":
                    stored.add(worker)
                elif record.get("action") == "C-MOVE":
                    moved.add(worker)
    return moved, stored


def test_a_move_whose_return_association_lands_on_the_other_worker_delivers(
        site: tuple[Site, RedisServer]) -> None:
    gw, _ = site
    assert gw.scp is not None
    study = gw.root / "data" / "PAT-1"
    uid = dcmread(next(study.iterdir())).StudyInstanceUID
    expected = {str(dcmread(p).SOPInstanceUID) for p in study.iterdir()}
    crossed = []
    for _ in range(12):  # the kernel spreads connections by their addresses: until one crosses
        for old in gw.scp.received():
            old.unlink()
        before = {w: len(records(gw.root, w)) for w in (1, 2)}
        result = gw.launch("rad", "movescu", "-S", "-aet", "MOVESCP", "-aem", "MOVESCP",
                           "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=PAT-1", "-k", f"StudyInstanceUID={uid}",
                           "-aec", "ORTHANC@GW1", "127.0.0.1", gw.ports["agent"])
        assert result.returncode == 0, result.stderr
        deadline = time.monotonic() + 10
        while len(gw.scp.received()) < len(expected) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert {str(dcmread(p).SOPInstanceUID) for p in gw.scp.received()} == expected
        moved, stored = side_of_last_move(gw.root, before)
        assert len(moved) == 1 and len(stored) == 1, (moved, stored)
        if moved != stored:
            crossed.append((moved, stored))
            break
    assert crossed, "in 12 moves no return association reached the other worker"
    # decision-log verify of the configured log checks every worker's chain (each one whole)
    verify = subprocess.run([sys.executable, "-m", "audit.cli", "verify", "--log", str(gw.root / "decisions.jsonl"),
                             "--public-key", str(gw.root / "decision-log.key.pub")], capture_output=True, text=True,
                            cwd=PROJECT)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    for worker in (1, 2):
        assert f"{worker_log(gw.root / 'decisions.jsonl', worker)}:\nok: " in verify.stdout, verify.stdout


def test_a_workstation_route_fails_over_to_its_next_server_agent(site: tuple[Site, RedisServer]) -> None:
    """Route GW2 names a dead address first, then the site's server agent: the association succeeds."""
    gw, _ = site
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    route = Route(host="127.0.0.1", port=dead, server_name="gw1", warm=0, connect_timeout=2.0,
                  addresses=(("127.0.0.1", gw.ports["server"]),))
    write_workstation_config(gw.root / "workstation.toml", pki=gw.pki, issuer=gw.issuer, listen=gw.ports["agent"],
                             route_port=gw.ports["server"], return_port=gw.ports["agent_return"],
                             apps={"MOVESCP": gw.ports["scp"]}, routes={"GW2": route},
                             log_file=gw.root / "associations.jsonl")
    echo = gw.launch("rad", "echoscu", "-v", "-aec", "ORTHANC@GW2", "127.0.0.1", gw.ports["agent"], verbose=True)
    assert echo.returncode == 0, echo.stdout + echo.stderr
    assert f"127.0.0.1:{dead} failed" in echo.stderr  # said, and the next address tried


def worker_pids(supervisor: int) -> set[int]:
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children")
    return {int(pid) for pid in children.read_text().split()} if children.exists() else set()


def test_a_killed_worker_is_restarted_and_sigterm_stops_everything(site: tuple[Site, RedisServer]) -> None:
    gw, _ = site
    assert gw.server is not None
    supervisor = gw.server.pid
    deadline = time.monotonic() + 10
    while len(worker_pids(supervisor)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    first = worker_pids(supervisor)
    assert len(first) == 2
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (len(worker_pids(supervisor)) < 2 or victim in worker_pids(supervisor)):
        time.sleep(0.2)
    now = worker_pids(supervisor)
    assert len(now) == 2 and victim not in now
    assert "exited with -9: restarting" in (gw.root / "server-agent.log").read_text()
    echo = gw.launch("rad", "echoscu", "-aec", "ORTHANC@GW1", "127.0.0.1", gw.ports["agent"])
    assert echo.returncode == 0, echo.stderr
    gw.server.send_signal(signal.SIGTERM)
    assert gw.server.wait(40) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in now)
