"""Issue 15 item 3 end to end: the admin listeners of both agents in front of a live HIAL and Orthanc.

What a monitoring system sees: /metrics parsed with prometheus_client's own parser moves as the user's
DICOM work did; /readyz names the PDP when the HIAL is gone and recovers with it, and names the
decision log when its directory takes no new file; a flood of the admin port leaves DICOM alone.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from devtools.dicomdata import make_ct_study
from devtools.peers import dcmtk, free_port, wait_for_port
from devtools.site import Site, workstation_config
from dicomwire.listener import open_files_for
from tomlconf import write
from tomlconf.admin import AdminSection

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("admin")
    site = Site(root, pdp_cache=0).start()
    assert site.orthanc is not None and site.hial is not None
    for n, patient in enumerate(("PAT-1", "PAT-OPTOUT")):
        site.orthanc.upload(make_ct_study(root / "data" / patient, slices=1, patient_id=patient,
                                          accession=f"ADM{n}", seed=n))
    site.ports["admin"], site.ports["ws_admin"] = free_port(), free_port()
    site.stop_server()
    write(root / "server-agent.toml", site.server_agent_config().replace(
        admin=AdminSection(listen=("127.0.0.1", site.ports["admin"]), check_interval=0.5)))
    site.start_server()
    wait_for_port(site.ports["admin"], 20)
    yield site
    site.stop()


@pytest.fixture(scope="module")
def workstation(site: Site) -> Iterator[subprocess.Popen[bytes]]:
    """`dicom-agent serve` logged in as the radiologist, with its own admin listener."""
    p = site.ports
    config = workstation_config(pki=site.pki, issuer=site.issuer, listen=p["agent"], route_port=p["server"],
                                return_port=p["agent_return"], apps={"MOVESCP": p["scp"]},
                                session_file=site.root / "session.json", log_file=site.root / "associations.jsonl")
    write(site.root / "workstation.toml", config.replace(admin=AdminSection(listen=("127.0.0.1", p["ws_admin"]))))
    process = site.serve_agent("rad")
    wait_for_port(p["ws_admin"], 20)
    yield process
    process.terminate()
    process.wait(10)


def scrape(port: int) -> Samples:
    """Every sample of /metrics, read with the client library's own parser."""
    answer = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def ready(port: int) -> tuple[int, dict]:
    answer = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=15)
    return answer.status_code, answer.json()


def until(predicate, timeout: float = 15.0, every: float = 0.3):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(every)


def find(site: Site, patient: str) -> str:
    result = dcmtk("findscu", "-v", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", f"PatientID={patient}", "-k",
                   "StudyInstanceUID", "-aec", "ORTHANC@GW1", "127.0.0.1", str(site.ports["agent"]))
    return result.stderr


def test_metrics_move_as_the_user_worked(site: Site, workstation: subprocess.Popen[bytes]) -> None:
    server, ws = site.ports["admin"], site.ports["ws_admin"]
    before, ws_before = scrape(server), scrape(ws)

    echo = dcmtk("echoscu", "-aec", "ORTHANC@GW1", "127.0.0.1", str(site.ports["agent"]))
    assert echo.returncode == 0, echo.stderr
    permitted = find(site, "PAT-1")
    assert "(0010,0020) LO [PAT-1" in permitted, permitted
    refused = find(site, "PAT-OPTOUT")
    assert re.search(r"0x0?124\b", refused), refused

    def moved() -> Samples | None:
        after = scrape(server)
        ended = value(after, "dicom_agent_associations_total", listener="main", result="accepted", reason="none")
        return after if ended - value(before, "dicom_agent_associations_total", listener="main",
                                      result="accepted", reason="none") >= 3 else None

    after = until(moved)
    assert after is not None, "three associations through the server agent were not counted"

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # Each decision counted by action, decision and the agent's reason: the PDP decided the C-FINDs.
    assert delta("dicom_agent_decisions_total", action="C-ECHO", decision="permit", reason="pdp",
                 stage="request") == 1
    assert delta("dicom_agent_decisions_total", action="C-FIND", decision="permit", reason="pdp",
                 stage="request") == 1
    assert delta("dicom_agent_decisions_total", action="C-FIND", decision="deny", reason="pdp",
                 stage="request") == 1
    assert delta("dicom_agent_requests_total", listener="main", command="C-FIND", verdict="refuse") == 1
    assert delta("dicom_agent_requests_total", listener="main", command="C-ECHO", verdict="permit") == 1
    assert delta("dicom_agent_authentications_total", path="association", decision="permit",
                 reason="authenticated") == 3
    assert delta("dicom_agent_relayed_bytes_total", listener="main", direction="from_client") > 0
    assert delta("dicom_agent_relayed_bytes_total", listener="main", direction="from_server") > 0
    assert delta("dicom_agent_pdp_request_seconds_count", outcome="ok") >= 3  # no PDP cache in this site
    assert value(after, "dicom_agent_associations_live", listener="main") == 0
    assert value(after, "dicom_agent_decision_log_healthy") == 1
    assert 300 < value(after, "dicom_agent_certificate_expiry_days", certificate="tls.certificate") < 4000
    assert value(after, "dicom_agent_check_ok", check="pdp") == 1

    # The workstation agent counted the same three associations, and nothing a peer chose is a label.
    def counted() -> Samples | None:
        now = scrape(ws)
        accepted = {"listener": "apps", "result": "accepted", "reason": "none"}
        return now if value(now, "dicom_agent_associations_total", **accepted) - value(
            ws_before, "dicom_agent_associations_total", **accepted) >= 3 else None

    ws_after = until(counted)
    assert ws_after is not None, "the workstation agent did not count three associations"
    assert value(ws_after, "dicom_agent_session_token_seconds") > 0
    status, body = ready(ws)
    assert status == 200 and set(body["checks"]) == {"listeners", "session", "identity_provider", "routes"}, body
    for samples in (after, ws_after):
        labels = {v for _, pairs in samples for _, v in pairs}
        assert not labels & {"rad", "PAT-1", "PAT-OPTOUT", "ORTHANC@GW1", "ECHOSCU", "FINDSCU"}, labels


def test_readyz_names_the_pdp_while_the_hial_is_away(site: Site) -> None:
    port = site.ports["admin"]
    status, body = ready(port)
    assert status == 200, body
    assert body["failed"] == [] and set(body["checks"]) >= {"listeners", "identity_provider", "pdp", "decision_log",
                                                            "audit_spool"}
    hial = site.hial
    assert hial is not None
    hial.server = {**hial.server, "port": urlsplit(hial.issuer).port}  # back where the agents look for it
    hial.stop()
    try:
        down = until(lambda: (r := ready(port))[0] == 503 and "pdp" in r[1]["failed"] and r)
        assert down, ready(port)
        assert down[1]["checks"]["pdp"]["ok"] is False and down[1]["status"] == "not ready"
        assert "identity_provider" in down[1]["failed"]  # the HIAL is both
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200  # alive all along
    finally:
        hial.start()
    back = until(lambda: ready(port)[0] == 200)
    assert back, ready(port)


def test_readyz_names_the_decision_log_when_its_folder_is_read_only(site: Site) -> None:
    port, folder = site.ports["admin"], site.root
    assert ready(port)[0] == 200
    lock_down(folder, True)
    try:
        down = until(lambda: (r := ready(port))[0] == 503 and r)  # within a second (the check's own period)
        assert down, ready(port)
        assert down[1]["failed"] == ["decision_log"], down
        assert "takes no new file" in down[1]["checks"]["decision_log"]["detail"]
    finally:
        lock_down(folder, False)
    assert until(lambda: ready(port)[0] == 200)


def lock_down(folder: Path, on: bool) -> None:
    """A folder no new file can be made in, for root too (the immutable attribute; mode bits otherwise)."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i" if on else "-i", str(folder)], check=True)
    else:
        folder.chmod(0o555 if on else 0o755)


def test_a_flood_of_the_admin_port_does_not_stop_dicom(site: Site, workstation: subprocess.Popen[bytes]) -> None:
    port = site.ports["admin"]
    open_files_for(1200)  # this test process holds the thousand sockets (Debian's soft limit is 1024)
    flood = []
    for _ in range(1000):
        try:
            flood.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        except OSError:
            break  # the backlog is full: the flood has done what it can
    try:
        echo = dcmtk("echoscu", "-aec", "ORTHANC@GW1", "127.0.0.1", str(site.ports["agent"]))
        assert echo.returncode == 0, echo.stderr
        found = find(site, "PAT-1")
        assert "(0010,0020) LO [PAT-1" in found, found
    finally:
        for conn in flood:
            conn.close()
    assert len(flood) == 1000, f"only {len(flood)} connections were made"
    assert until(lambda: ready(port)[0] == 200), "the admin listener did not recover from the flood"


def test_only_get_and_head_and_no_secret_in_any_answer(site: Site) -> None:
    port = site.ports["admin"]
    base = f"http://127.0.0.1:{port}"
    assert requests.post(f"{base}/readyz", data=b"x", timeout=5).status_code == 405
    assert requests.get(f"{base}/nothing", timeout=5).status_code == 404
    head = requests.head(f"{base}/metrics", timeout=5)
    assert head.status_code == 200 and head.content == b""
    answers = "".join(requests.get(f"{base}{path}", timeout=10).text for path in ("/healthz", "/readyz", "/metrics"))
    assert "demo-server-agent-secret" not in answers
    assert json.loads(requests.get(f"{base}/healthz", timeout=5).text) == {"status": "alive"}
    # A head too large for the listener ends the connection instead of filling memory.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        try:
            conn.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nX-Filler: " + b"a" * 64 * 1024 + b"\r\n\r\n")
            answer = conn.recv(100)
        except ConnectionError:
            answer = b""
    assert answer == b"", answer


DOCS = Path(__file__).resolve().parents[2] / "docs"
PROMTOOL = Path("/usr/bin/promtool")  # Debian's prometheus package (Makefile APT_PACKAGES)


@pytest.mark.skipif(not PROMTOOL.exists(), reason="promtool missing: run `make test` (Debian package prometheus)")
def test_the_alert_rules_pass_promtool_and_their_unit_tests() -> None:
    check = subprocess.run([str(PROMTOOL), "check", "rules", "alerts.yml"], cwd=DOCS / "prometheus",
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and "SUCCESS: 10 rules found" in check.stdout, check.stdout + check.stderr
    tested = subprocess.run([str(PROMTOOL), "test", "rules", "alerts.test.yml"], cwd=DOCS / "prometheus",
                            capture_output=True, text=True, timeout=60)
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def test_every_metric_the_rules_and_the_dashboard_name_is_in_a_real_scrape(
        site: Site, workstation: subprocess.Popen[bytes]) -> None:
    families: set[str] = set()  # as the parser names them: a counter without _total
    samples: set[str] = set()
    for port in (site.ports["admin"], site.ports["ws_admin"]):
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            families.add(family.name)
            samples |= {s.name for s in family.samples}
    dashboard = json.loads((DOCS / "grafana" / "dicom-agents.json").read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    named = set(re.findall(r"\bdicom_agent_[a-z_]+", "\n".join(expressions)))
    named |= set(re.findall(r"\bdicom_agent_[a-z_]+", (DOCS / "prometheus" / "alerts.yml").read_text()))
    assert len(named) >= 12
    # A family with no sample yet (a counter no label set has moved) is still described: its name counts.
    missing = {name for name in named if name not in samples and name.removesuffix("_total") not in families
               and re.sub(r"_(bucket|count|sum)$", "", name) not in families}
    assert not missing, missing
    documented = (DOCS / "monitoring.md").read_text()
    assert {f for f in families if f.startswith("dicom_agent_") and not f.endswith("_created")
            and f not in documented} == set()
