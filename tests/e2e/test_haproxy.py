"""The server agent behind Debian's HAProxy (TCP mode, ``send-proxy-v2``): the client the load balancer
names is the one node policy decides on and the decision log records (issue 15 item 6). Clients use
distinct loopback addresses (127.0.0.5, 127.0.0.6) so that the real address differs from the proxy's."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from devtools.peers import PROJECT, free_port, wait_for_port
from devtools.site import Site
from server_agent.config import Node
from tomlconf import write

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
pytestmark = pytest.mark.skipif(not Path(HAPROXY).exists(), reason="haproxy missing: run `make test`")


@pytest.fixture(scope="module")
def behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, int, int, Path]]:
    """A site whose second server agent trusts PROXY headers from 127.0.0.1 only, HAProxy in front of it."""
    root = tmp_path_factory.mktemp("haproxy")
    site = Site(root).start()
    plain, returns, listen, front = free_port(), free_port(), free_port(), free_port()
    config = site.server_agent_config()
    config = config.replace(
        server=config.server.replace(listen=("127.0.0.1", listen), plain_listen=("127.0.0.1", plain),
                                     return_listen=("127.0.0.1", returns), proxy_protocol_from=("127.0.0.1",),
                                     decision_log=root / "behind.jsonl"),
        nodes={"CTSCANNER": Node(addresses=("127.0.0.5",), actions=("C-ECHO",))})
    path = write(root / "behind.toml", config)
    log = open(root / "behind.log", "a")  # noqa: SIM115 - kept open for the process
    agent = subprocess.Popen([sys.executable, "-m", "server_agent.cli", "serve", "--config", str(path)], cwd=PROJECT,
                             stdout=log, stderr=subprocess.STDOUT)
    haproxy_cfg = root / "haproxy.cfg"
    haproxy_cfg.write_text(f"""global
    log stderr format raw local0 warning
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend dicom
    bind 127.0.0.1:{front}
    default_backend agents
backend agents
    server gw1 127.0.0.1:{plain} send-proxy-v2
""")
    haproxy = subprocess.Popen([HAPROXY, "-db", "-f", str(haproxy_cfg)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(plain, 30, agent)  # type: ignore[arg-type]
        wait_for_port(front, 10, haproxy)  # type: ignore[arg-type]
        yield site, front, plain, root / "behind.jsonl"
    finally:
        for process in (haproxy, agent):
            process.terminate()
            process.wait(10)
        site.stop()


def _echo(port: int, source: str) -> bool:
    ae = AE(ae_title="CTSCANNER")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title="ORTHANC", bind_address=(source, 0))
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and status.Status == 0


def _records(log: Path) -> list[dict[str, object]]:
    time.sleep(1.0)  # the writer batches records
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_node_policy_and_the_log_see_the_client_the_load_balancer_names(behind: tuple[Site, int, int, Path]) -> None:
    _, front, _, log = behind
    assert _echo(front, "127.0.0.5")  # the node's address, though the agent's TCP peer is HAProxy's
    assert not _echo(front, "127.0.0.6")  # any other client through the same proxy is refused
    peers = {str(r["peer"]).rsplit(":", 1)[0] for r in _records(log) if r.get("event") == "authentication"}
    assert peers == {"127.0.0.5", "127.0.0.6"}  # the log names the clients, never the proxy


def test_the_proxy_address_without_a_header_gets_nothing_and_others_are_not_believed(
        behind: tuple[Site, int, int, Path]) -> None:
    _, _, plain, _ = behind
    assert not _echo(plain, "127.0.0.1")  # the trusted proxy's address, but no PROXY header: closed
    assert _echo(plain, "127.0.0.5")  # a direct client that is no proxy is itself, as before
