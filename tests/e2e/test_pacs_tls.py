"""A PACS that speaks DICOM over TLS (PS3.15 B.1): the server agent reaches it with TLS, verifying its
certificate and presenting its own, with Orthanc (DicomTlsEnabled, client certificates required)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.dicomdata import make_ct_study
from devtools.peers import PROJECT, dcmtk, free_port
from devtools.site import Site
from tomlconf import write


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    site = Site(tmp_path_factory.mktemp("tls-pacs"), pacs_tls=True).start()
    yield site
    site.stop()


def test_plain_dicom_to_the_pacs_is_refused_by_it(site: Site) -> None:
    assert site.orthanc is not None
    echo = dcmtk("echoscu", "-aec", "ORTHANC", "127.0.0.1", site.orthanc.dicom_port)
    assert echo.returncode != 0  # Orthanc listens with TLS only


def test_store_and_find_through_both_agents_to_a_tls_pacs(site: Site, tmp_path: Path) -> None:
    assert site.orthanc is not None
    files = make_ct_study(tmp_path / "s", slices=2, patient_id="PAT-TLS", seed=3)
    stored = site.launch("tech", "storescu", "-aec", "ORTHANC@GW1", "127.0.0.1", site.ports["agent"], *files)
    assert stored.returncode == 0, stored.stderr
    assert len(site.orthanc.instances()) == 2
    found = site.launch("rad", "findscu", "-v", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=PAT-TLS",
                        "-k", "StudyInstanceUID", "-aec", "ORTHANC@GW1", "127.0.0.1", site.ports["agent"])
    assert found.returncode == 0 and "PAT-TLS" in found.stderr.split("Find Response", 1)[-1]


def test_check_config_echoes_the_pacs_over_tls_and_names_a_wrong_name(site: Site) -> None:
    # The running agent holds the site's ports: the checked configuration listens elsewhere.
    good_config = site.server_agent_config()
    good_config = good_config.replace(server=good_config.server.replace(
        listen=("127.0.0.1", free_port()), plain_listen=None, return_listen=("127.0.0.1", free_port())))
    config = write(site.root / "checked.toml", good_config)
    run = [sys.executable, "-m", "server_agent.cli", "check-config", "--config"]
    good = subprocess.run([*run, str(config)], capture_output=True, text=True, cwd=PROJECT, timeout=60)
    assert good.returncode == 0 and "(ORTHANC at 127.0.0.1" in good.stdout, good.stdout + good.stderr
    assert "C-ECHO: ok: status 0000H (TLS)" in good.stdout, good.stdout
    pacs = good_config.pacs["ORTHANC"].replace(server_name="pacs.example.org")
    wrong = write(site.root / "wrong-name.toml", good_config.replace(pacs={"ORTHANC": pacs}))
    bad = subprocess.run([*run, str(wrong)], capture_output=True, text=True, cwd=PROJECT, timeout=60)
    assert bad.returncode != 0 and "C-ECHO: FAILED: TLS: " in bad.stdout, bad.stdout + bad.stderr
