"""``dicom-server-agent check-config`` proves the chain a deployment depends on (issue 14 item 7), against a
real site (HIAL, Orthanc): each step named, a non-zero exit at the first broken link, no traceback."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.peers import PROJECT, free_port
from devtools.site import Site
from server_agent.config import ServerAgentConfig
from tomlconf import write


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    site = Site(tmp_path_factory.mktemp("check")).start()
    yield site
    site.stop()


def _elsewhere(site: Site) -> ServerAgentConfig:
    """The site's server agent configuration, listening where the running agent does not."""
    config = site.server_agent_config()
    return config.replace(server=config.server.replace(
        listen=("127.0.0.1", free_port()), plain_listen=None, return_listen=("127.0.0.1", free_port())))


def _check(site: Site, config: ServerAgentConfig, name: str) -> subprocess.CompletedProcess[str]:
    path = write(site.root / f"{name}.toml", config)
    return subprocess.run([sys.executable, "-m", "server_agent.cli", "check-config", "--config", str(path)],
                          capture_output=True, text=True, cwd=PROJECT, timeout=90)


def test_a_sound_configuration_passes_every_step(site: Site) -> None:
    run = _check(site, _elsewhere(site), "good")
    assert run.returncode == 0, run.stdout + run.stderr
    steps = [line for line in run.stdout.splitlines() if line.startswith("[")]
    names = ["listen addresses free", "certificate and key", f"identity provider {site.issuer}",
             f"PDP {site.issuer}: token and one evaluation", "PACS ORTHANC (ORTHANC at 127.0.0.1"]
    assert len(steps) == len(names) and all(s.startswith(f"[{n}/5] {name}") for n, (s, name) in
                                            enumerate(zip(steps, names, strict=True), 1)), run.stdout
    assert all(": ok" in s for s in steps) and "answered " in run.stdout and "status 0000H" in run.stdout


@pytest.mark.parametrize(("breaks", "step"), [
    ("port", "[1/5] listen addresses free: FAILED"),
    ("issuer", "[3/5] identity provider https://no-such-host.invalid: FAILED"),
    ("secret", "[4/5] PDP"),
    ("pacs", "[5/5] PACS ORTHANC"),
    ("key", "[2/5] certificate and key: FAILED"),
])
def test_the_first_broken_link_is_named_and_ends_the_check(site: Site, breaks: str, step: str) -> None:
    config = _elsewhere(site)
    if breaks == "port":  # the running agent's own TLS port
        config = config.replace(server=config.server.replace(listen=("127.0.0.1", site.ports["server"])))
    elif breaks == "issuer":
        config = config.replace(identity=config.identity.replace(issuer="https://no-such-host.invalid"))
    elif breaks == "secret":  # discovery works, the PDP token does not
        config = config.replace(identity=config.identity.replace(client_secret="not-the-secret"))
    elif breaks == "pacs":
        config = config.replace(pacs={"ORTHANC": config.pacs["ORTHANC"].replace(port=free_port())})
    elif breaks == "key":  # another certificate's key
        config = config.replace(tls=config.tls.replace(key=Path(site.pki / "ws1.key")))
    run = _check(site, config, breaks)
    assert run.returncode == 1, run.stdout + run.stderr
    failed = [line for line in run.stdout.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and failed[0].startswith(step), run.stdout
    assert "Traceback" not in run.stderr and "Traceback" not in run.stdout
    if not step.startswith("[5/5]"):
        assert "not run: PACS ORTHANC" in run.stdout  # nothing after the broken link was tried
