"""Several instances behind HAProxy (issue 15 items 6 and 7): two server agents of one site share one
Redis, HAProxy (TCP mode, PROXY protocol v2, health checks on each agent's ``/readyz``) in front.

1. A C-MOVE permitted by instance A has its return association (Orthanc's C-STORE sub-operations)
   sent by HAProxy to instance B, which accepts and decides it from the shared state: the images arrive.
2. Failover under load: 20 clients (pynetdicom, TLS with the workstation certificate, a JWT each) do
   C-FIND, C-STORE and C-MOVE in a loop through HAProxy for ``FAILOVER_SECONDS`` (15 s in ``make test``;
   the issue's 60 s with ``FAILOVER_SECONDS=60``, as ``make bench`` runs it); instance A is killed with
   SIGKILL halfway. Nothing a client was told is stored is missing from Orthanc, only associations that
   were open on A when it died (or reached A before the health check noticed) fail, everything after
   succeeds, and both instances' decision logs verify (A's after a restart seals its chain).
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import requests
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.pdu_primitives import UserIdentityNegotiation
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

from devtools.cluster import CHECK_INTERVAL_MS, HAPROXY, Cluster, Instance
from devtools.dicomdata import make_ct_study
from devtools.peers import PROJECT
from devtools.redis_server import REDIS_SERVER, RedisServer
from devtools.site import Site

pytestmark = pytest.mark.skipif(not (Path(REDIS_SERVER).exists() and Path(HAPROXY).exists()),
                                reason="redis-server or haproxy missing: run `make test`")
SECONDS = float(os.environ.get("FAILOVER_SECONDS", "15"))
DETECTED = 2 * CHECK_INTERVAL_MS / 1000 + 1.5  # HAProxy marks a server down after 2 failed checks (+ slack)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, RedisServer]]:
    root = tmp_path_factory.mktemp("ha")
    redis = RedisServer(root / "redis").start()
    site = Site(root, max_associations=100).start()
    assert site.orthanc is not None
    site.orthanc.upload(make_ct_study(root / "data" / "PAT-1", slices=2, patient_id="PAT-1", accession="ACC1"))
    try:
        yield site, redis
    finally:
        site.stop()
        redis.stop()


def records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def verify(site: Site, log: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "audit.cli", "verify", "--log", str(log), "--public-key",
                           str(site.root / "decision-log.key.pub")], capture_output=True, text=True, cwd=PROJECT)


def test_a_move_allowed_by_one_instance_returns_through_the_other(site: tuple[Site, RedisServer]) -> None:
    gw, redis = site
    cluster = Cluster(gw, redis, order="cross", names=("a", "b")).start()
    try:
        assert gw.scp is not None
        study = gw.root / "data" / "PAT-1"
        uid = dcmread(next(study.iterdir())).StudyInstanceUID
        result = gw.launch("rad", "movescu", "-S", "-aet", "MOVESCP", "-aem", "MOVESCP",
                           "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=PAT-1", "-k", f"StudyInstanceUID={uid}",
                           "-aec", "ORTHANC@GW1", "127.0.0.1", gw.ports["agent"])
        assert result.returncode == 0, result.stderr
        deadline = time.monotonic() + 10
        while len(gw.scp.received()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert {str(dcmread(p).SOPInstanceUID) for p in gw.scp.received()} == \
            {str(dcmread(p).SOPInstanceUID) for p in study.iterdir()}
    finally:
        cluster.stop()
    a, b = (records(i.decision_log) for i in cluster.instances)

    def permits(log: list[dict[str, object]], sub_operation: bool) -> list[dict[str, object]]:
        return [r for r in log if r.get("event") == "authorization" and r.get("decision") == "permit"
                and r.get("action") == "C-MOVE" and ("sub_operation_of" in r) == sub_operation]

    assert permits(a, False) and not permits(b, False)  # the move: A
    assert len(permits(b, True)) == 2 and not permits(a, True)  # its images: B, decided as rad's move
    assert {r["user"]["username"] for r in permits(b, True)} == {"rad"}  # type: ignore[index]
    for instance in cluster.instances:
        checked = verify(gw, instance.decision_log)
        assert checked.returncode == 0, checked.stdout + checked.stderr


@dataclass
class Attempt:
    client: int
    op: str
    started: float
    ended: float
    ok: bool
    port: int = 0  # the client's own port: the peer HAProxy names to the agent (PROXY v2)
    wall: tuple[float, float] = (0.0, 0.0)  # when it began and ended, as the decision logs tell time
    sop: str = ""  # a C-STORE's instance
    detail: str = ""


def token(site: Site, user: str, scope: str) -> bytes:
    assert site.hial is not None
    return requests.post(f"{site.hial.issuer}/token", timeout=10, data={
        "grant_type": "password", "client_id": "workstation-agent", "username": user, "password": f"demo-{user}",
        "scope": scope}).json()["access_token"].encode()


class Client(threading.Thread):
    """One client: associations, one request each, until ``stop``; every attempt recorded."""

    def __init__(self, number: int, op: str, site: Site, jwt: bytes, context: ssl.SSLContext,
                 stop: threading.Event, images: list[Path], uid: str) -> None:
        super().__init__(daemon=True)
        self.number, self.op, self.site, self.jwt, self.context, self.stop = number, op, site, jwt, context, stop
        self.images, self.uid = images, uid
        self.attempts: list[Attempt] = []

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            started, began = time.monotonic(), time.time()
            attempt = Attempt(self.number, self.op, started, started, False)
            try:
                self.once(attempt, n)
            except Exception as error:  # a reset mid-request: pynetdicom raises or returns an empty status
                attempt.ok, attempt.detail = False, f"{type(error).__name__}: {error}"
            attempt.ended, attempt.wall = time.monotonic(), (began, time.time())
            self.attempts.append(attempt)

    def once(self, attempt: Attempt, n: int) -> None:
        identity = UserIdentityNegotiation()
        identity.user_identity_type = 5
        identity.primary_field = self.jwt
        ae = AE(ae_title=f"LOAD{self.number}@WS1")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
        ae.add_requested_context({"find": StudyRootQueryRetrieveInformationModelFind, "store": CTImageStorage,
                                  "move": StudyRootQueryRetrieveInformationModelMove}[self.op])
        assoc = ae.associate("127.0.0.1", self.site.ports["server"], ae_title="ORTHANC@GW1", ext_neg=[identity],
                             tls_args=(self.context, "gw1"))
        if not assoc.is_established:
            attempt.detail = "association not established"
            return
        attempt.port = assoc.dul.socket.socket.getsockname()[1]  # type: ignore[union-attr]
        try:
            attempt.ok, attempt.detail = self.request(assoc, attempt, n)
        finally:
            if assoc.is_established:
                assoc.release()

    def request(self, assoc, attempt: Attempt, n: int) -> tuple[bool, str]:  # type: ignore[no-untyped-def]
        if self.op == "store":
            data = dcmread(self.images[n % len(self.images)])
            data.SOPInstanceUID = attempt.sop = f"1.2.826.0.1.3680043.10.1024.{self.number}.{n}.{os.getpid()}"
            data.file_meta.MediaStorageSOPInstanceUID = data.SOPInstanceUID
            status = assoc.send_c_store(data)
            return bool(status) and status.Status == 0, f"status {getattr(status, 'Status', None)}"
        query = Dataset()
        query.QueryRetrieveLevel, query.PatientID, query.StudyInstanceUID = "STUDY", "PAT-1", \
            "" if self.op == "find" else self.uid
        if self.op == "find":
            statuses = [s.Status for s, _ in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
                        if s]
            return bool(statuses) and statuses[-1] == 0, f"statuses {statuses}"
        finals = [s for s, _ in assoc.send_c_move(query, "MOVESCP@WS1", StudyRootQueryRetrieveInformationModelMove)
                  if s]
        last = finals[-1] if finals else None
        good = last is not None and last.Status == 0 and int(getattr(last, "NumberOfFailedSuboperations", 0)) == 0
        return good, f"final {getattr(last, 'Status', None)}"


@pytest.mark.timeout(160 + 2 * SECONDS)
def test_failover_under_load_loses_nothing_acknowledged(site: tuple[Site, RedisServer], tmp_path: Path) -> None:
    gw, redis = site
    assert gw.orthanc is not None
    agent = gw.serve_agent("rad")  # the workstation agent: its return listener takes the moved images
    cluster = Cluster(gw, redis, order="roundrobin", names=("c", "d")).start()
    victim, survivor = cluster.instances
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(gw.pki / "ca.crt"))
    context.load_cert_chain(str(gw.pki / "ws1.crt"), str(gw.pki / "ws1.key"))
    images = make_ct_study(tmp_path / "load", slices=2, patient_id="PAT-LOAD", accession="LOAD1", seed=3)
    uid = str(dcmread(next((gw.root / "data" / "PAT-1").iterdir())).StudyInstanceUID)
    tokens = {"find": token(gw, "rad", "openid user/ImagingStudy.rs"),
              "move": token(gw, "rad", "openid user/ImagingStudy.rs"),
              "store": token(gw, "tech", "openid user/ImagingStudy.c")}
    stop = threading.Event()
    ops = ["store"] * 8 + ["find"] * 8 + ["move"] * 4
    clients = [Client(n, op, gw, tokens[op], context, stop, images, uid) for n, op in enumerate(ops)]
    try:
        for client in clients:
            client.start()
        time.sleep(SECONDS / 2)
        killed = time.monotonic()
        cluster.kill(victim)
        time.sleep(SECONDS / 2)
        # On a loaded machine one request can take seconds: go on (20 s at most) until every client has
        # begun one after the health check noticed, so that "every client goes on" is shown, not timed.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(
                any(a.started > killed + DETECTED for a in list(c.attempts)) for c in clients):
            time.sleep(0.2)
        stop.set()
        for client in clients:
            client.join(60)
        time.sleep(1.0)
        stored = set(gw.orthanc.instances())
        in_orthanc = {uid for uid in _sop_uids(gw)}
        cluster.start_instance(victim)  # back: its chain continues from the torn tail and is sealed on stop
    finally:
        cluster.stop()
        agent.terminate()
        agent.wait(10)
    attempts = [a for c in clients for a in c.attempts]
    failed = [a for a in attempts if not a.ok]
    last = [(c.number, round(c.attempts[-1].started - killed, 2), round(c.attempts[-1].ended - killed, 2))
            for c in clients if c.attempts]
    summary = (f"{len(attempts)} attempts, {len(failed)} failed: "
               f"{[(a.op, round(a.started - killed, 2), a.detail) for a in failed][:20]}; last of each client: {last}")
    assert len(attempts) >= 40, summary
    print(f"failover: {summary}")  # the figures, with -s
    # Only associations open when A died, or that reached it before the health check noticed, fail.
    assert all(a.started < killed + DETECTED and a.ended >= killed for a in failed), summary
    assert all(a.ended < killed + 10 for a in failed), summary  # they end for their clients, none hangs
    # The survivor's associations: the client port HAProxy named, and when (ports are reused over a run).
    survivor_peers = {(int(str(r["peer"]).rsplit(":", 1)[1]), datetime.fromisoformat(str(r["time"])).timestamp())
                      for r in records(survivor.decision_log) if r.get("event") == "authentication" and r.get("peer")}
    # None the survivor held, except a C-MOVE whose return association (Orthanc's C-STOREs, balanced on
    # their own) was on the killed instance: its sub-operations failed there, and its final status says so.
    held = [a for a in failed if any(port == a.port and a.wall[0] - 0.5 <= when <= a.wall[1] + 0.5
                                     for port, when in survivor_peers)]
    assert all(a.op == "move" and a.detail.startswith("final") for a in held), f"{summary}; survivor's: {held}"
    after = [a for a in attempts if a.started > killed + DETECTED]
    assert after and all(a.ok for a in after), summary
    assert {c.number for c in clients} == {a.client for a in after}  # every client goes on
    # Nothing acknowledged is lost; nothing is stored that no client sent.
    acknowledged = {a.sop for a in attempts if a.op == "store" and a.ok}
    attempted = {a.sop for a in attempts if a.op == "store" and a.sop}
    assert acknowledged and acknowledged <= in_orthanc, summary
    assert {s for s in in_orthanc if s.startswith("1.2.826.0.1.3680043.10.1024.")} <= attempted
    assert stored
    for instance in (victim, survivor):
        checked = verify(gw, instance.decision_log)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_without_redis_every_instance_refuses_and_is_not_ready_until_it_is_back(
        site: tuple[Site, RedisServer]) -> None:
    """Fail closed: Redis stopped, each agent's /readyz answers 503 naming the shared state, a new
    association is rejected (transient) and logged with why; Redis back, both are ready and serve."""
    gw, redis = site
    cluster = Cluster(gw, redis, order="roundrobin", names=("e", "f")).start()
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(gw.pki / "ca.crt"))
    context.load_cert_chain(str(gw.pki / "ws1.crt"), str(gw.pki / "ws1.key"))
    jwt = token(gw, "rad", "openid user/ImagingStudy.rs")

    def echo(port: int, source: str = "127.0.0.1") -> tuple[bool, bool]:
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        identity = UserIdentityNegotiation()
        identity.user_identity_type, identity.primary_field = 5, jwt
        ae = AE(ae_title="ECHO@WS1")
        ae.acse_timeout = ae.network_timeout = 10
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", port, ae_title="ORTHANC@GW1", ext_neg=[identity],
                             tls_args=(context, "gw1"), bind_address=(source, 0))
        ok = assoc.is_established and assoc.send_c_echo().Status == 0
        if assoc.is_established:
            assoc.release()
        return ok, assoc.is_rejected

    def ready(instance: Instance) -> tuple[int, dict[str, object]]:
        answer = requests.get(f"http://127.0.0.1:{instance.ports['admin']}/readyz", timeout=5)
        return answer.status_code, answer.json()

    try:
        assert echo(gw.ports["server"]) == (True, False)
        redis.stop()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(ready(i)[0] != 503 for i in cluster.instances):
            time.sleep(0.2)
        for instance in cluster.instances:
            status, body = ready(instance)
            assert status == 503 and "shared_state" in body["failed"], body  # type: ignore[operator]
        # Straight to an instance from an address that is no proxy (so no PROXY header is expected):
        assert echo(cluster.instances[0].ports["server"], source="127.0.0.2") == (False, True)
        time.sleep(1.0)  # the writer batches records
        refused = [r for r in records(cluster.instances[0].decision_log) if r.get("event") == "authentication"
                   and r.get("reason") == "shared_state_unavailable"]
        assert refused and "Redis unreachable" in str(refused[-1]["detail"])
        redis.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(ready(i)[0] != 200 for i in cluster.instances):
            time.sleep(0.2)
        assert [ready(i)[0] for i in cluster.instances] == [200, 200]
        time.sleep(2 * CHECK_INTERVAL_MS / 1000 + 0.5)  # HAProxy sees them up again
        # Serving again once Redis is back: within seconds (the shared store's client reconnects on its
        # next use, and readiness may say so a moment before a worker's own connection is back).
        deadline, served = time.monotonic() + 10, echo(gw.ports["server"])
        while served != (True, False) and time.monotonic() < deadline:
            time.sleep(0.5)
            served = echo(gw.ports["server"])
        assert served == (True, False)
    finally:
        cluster.stop()
        if redis.process is None:
            redis.start()


def _sop_uids(site: Site) -> set[str]:
    """Every SOP Instance UID Orthanc holds (its REST API)."""
    assert site.orthanc is not None
    expanded = site.orthanc.rest("/instances?expand")
    assert isinstance(expanded, list)
    return {str(i["MainDicomTags"]["SOPInstanceUID"]) for i in expanded}


__all__ = ["Instance"]
