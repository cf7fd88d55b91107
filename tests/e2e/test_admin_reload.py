"""Issue 15 items 1 and 3 together: after SIGHUP, each agent's admin listener speaks about the configuration
now running, not the one it started with (real HIAL, the agents as processes, a DCMTK storescp as PACS).

The server agent's ``/readyz`` asks the new file's identity provider and PDP (at once: nothing the old
ones said is given again) and ``/metrics`` measures the new certificate; the workstation agent's
``/readyz`` checks the new routes and its ``/metrics`` the new certificate. Before, both kept asking
and measuring what they started with: a reload to an unreachable provider left ``/readyz`` at 200.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from agent import certs
from agent.config import load as load_workstation
from devtools.peers import PROJECT, free_port, wait_for_port
from devtools.site import Site, workstation_config
from tomlconf import write
from tomlconf.admin import AdminSection

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("admin-reload")
    site = Site(root, pacs_scp=True).start()
    site.ports["admin"], site.ports["ws_admin"] = free_port(), free_port()
    site.stop_server()
    write(root / "server-agent.toml", site.server_agent_config().replace(
        admin=AdminSection(listen=("127.0.0.1", site.ports["admin"]), check_interval=60)))
    site.start_server()
    wait_for_port(site.ports["admin"], 20)
    yield site
    site.stop()


@pytest.fixture(scope="module")
def workstation(site: Site) -> Iterator[subprocess.Popen[bytes]]:
    """``dicom-agent serve`` logged in as the radiologist, with an admin listener; its log in a file."""
    p = site.ports
    config = workstation_config(pki=site.pki, issuer=site.issuer, listen=p["agent"], route_port=p["server"],
                                return_port=p["agent_return"], session_file=site.root / "session.json",
                                log_file=site.root / "associations.jsonl")
    path = write(site.root / "workstation.toml", config.replace(
        admin=AdminSection(listen=("127.0.0.1", p["ws_admin"]), check_interval=60)))
    login = site.agent("login", "--user", "rad", "--password-stdin", stdin="demo-rad\n")
    assert login.returncode == 0, login.stderr
    with open(site.root / "workstation-agent.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "agent.cli", "--config", str(path), "--log-level", "INFO",
                                    "serve"], cwd=PROJECT, stderr=log)
    wait_for_port(p["ws_admin"], 20, process)  # type: ignore[arg-type]
    yield process
    process.terminate()
    process.wait(10)
    site.agent("logout")


def ready(port: int) -> tuple[int, dict]:
    answer = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=15)
    return answer.status_code, answer.json()


def expiry_days(port: int) -> float:
    """``dicom_agent_certificate_expiry_days{certificate="tls.certificate"}``, read with the library's parser."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return next(s.value for family in text_string_to_metric_families(text) for s in family.samples
                if s.name == "dicom_agent_certificate_expiry_days" and s.labels == {"certificate": "tls.certificate"})


def wait_for(read: Callable[[], str], needle: str, count: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while read().count(needle) < count:
        assert time.monotonic() < deadline, f"{needle!r} not seen {count} time(s) within {timeout} s"
        time.sleep(0.05)


def hup(site: Site) -> None:
    """SIGHUP to the server agent, back once it logged that the new generation runs."""
    assert site.server is not None
    log = site.root / "server-agent.log"
    before = log.read_text().count("configuration reloaded")
    site.server.send_signal(signal.SIGHUP)
    wait_for(log.read_text, "configuration reloaded", before + 1)


def test_the_server_agents_readyz_asks_the_reloaded_provider_and_pdp_and_metrics_the_new_certificate(
        site: Site) -> None:
    port, path = site.ports["admin"], site.root / "server-agent.toml"
    original = path.read_text()
    hial = site.issuer.removesuffix("/")
    status, body = ready(port)  # the result is now kept 60 s: only a reload may make it go
    assert status == 200, body
    assert 800 < expiry_days(port) < 830  # certs.LEAF_DAYS
    config = site.server_agent_config().replace(admin=AdminSection(listen=("127.0.0.1", port), check_interval=60))
    try:
        nowhere = f"http://127.0.0.1:{free_port()}"
        write(path, config.replace(identity=config.identity.replace(issuer=nowhere)))
        hup(site)
        status, body = ready(port)
        assert status == 503 and body["failed"] == ["identity_provider"], body
        assert body["checks"]["identity_provider"]["detail"] == f"identity provider {nowhere} unreachable " \
                                                                 "(discovery or JWKS; see the log)"

        nowhere = f"http://127.0.0.1:{free_port()}"
        write(path, config.replace(pdp=config.pdp.replace(url=nowhere)))
        hup(site)
        status, body = ready(port)
        assert status == 503 and body["failed"] == ["pdp"], body
        assert body["checks"]["pdp"]["detail"] == f"PDP {nowhere} unreachable (see the log)"

        certs.issue(site.pki, "gw1-renewed", ["127.0.0.1"], days=30)
        write(path, config.replace(tls=config.tls.replace(certificate=site.pki / "gw1-renewed.crt",
                                                          key=site.pki / "gw1-renewed.key")))
        hup(site)
        assert ready(port)[0] == 200  # back to the HIAL: ready at once, not a minute later
        assert 29 < expiry_days(port) < 30.01
    finally:
        path.write_text(original)
        hup(site)
    status, body = ready(port)
    assert status == 200 and all(hial in body["checks"][name]["detail"] for name in ("identity_provider", "pdp")), body
    assert site.server is not None and site.server.poll() is None


def test_the_workstation_agents_readyz_checks_the_reloaded_routes_and_metrics_the_new_certificate(
        site: Site, workstation: subprocess.Popen[bytes]) -> None:
    port, path, log = site.ports["ws_admin"], site.root / "workstation.toml", site.root / "workstation-agent.log"
    original = path.read_text()
    config = load_workstation(path)

    def hup_agent() -> None:
        before = log.read_text().count("configuration reloaded")
        workstation.send_signal(signal.SIGHUP)
        wait_for(log.read_text, "configuration reloaded", before + 1)

    status, body = ready(port)
    assert status == 200, body
    assert 800 < expiry_days(port) < 830
    try:
        down = config.routes["GW1"].replace(port=free_port(), warm=0)
        write(path, config.replace(routes={"GW1": down}))
        hup_agent()
        status, body = ready(port)
        assert status == 503 and body["failed"] == ["routes"], body
        assert body["checks"]["routes"]["detail"] == "server agent not reachable: GW1"

        certs.issue(site.pki, "ws1-renewed", ["127.0.0.1"], days=30)
        write(path, config.replace(tls=config.tls.replace(certificate=site.pki / "ws1-renewed.crt",
                                                          key=site.pki / "ws1-renewed.key")))
        hup_agent()
        assert ready(port)[0] == 200
        assert 29 < expiry_days(port) < 30.01
    finally:
        path.write_text(original)
        hup_agent()
    assert ready(port)[0] == 200 and workstation.poll() is None
