"""Real peers on loopback: Orthanc (unchanged PACS), DCMTK storescp, dicom-relay processes."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.dicomdata import make_ct_study
from devtools.peers import DCMTK_BIN, ORTHANC, Orthanc, RelayProcess, StoreSCP, free_port

pytestmark = pytest.mark.e2e


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    missing = [p for p in (DCMTK_BIN / "storescu", Path(ORTHANC)) if not Path(p).exists()]
    if missing:  # `make test` installs them; a bare `pytest` on a machine without them says why it skips
        for item in items:
            if "e2e" in str(item.fspath):
                item.add_marker(pytest.mark.skip(reason=f"missing {', '.join(map(str, missing))}: run `make test`"))


@pytest.fixture(scope="session")
def study(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_ct_study(tmp_path_factory.mktemp("study"), slices=5, size=64, patient_id="E2E001",
                         patient_name="RELAY^TEST", accession="E2EACC1")


@pytest.fixture(scope="session")
def scp_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory, study: list[Path], scp_port: int) -> Iterator[Orthanc]:
    server = Orthanc(tmp_path_factory.mktemp("orthanc"), modalities={"scp": ("MOVESCP", "127.0.0.1", scp_port)})
    server.start()
    server.upload(study)
    yield server
    server.stop()


@pytest.fixture()
def storescp(tmp_path: Path, scp_port: int) -> Iterator[StoreSCP]:
    scp = StoreSCP(tmp_path / "received", aet="MOVESCP", port=scp_port).start()
    yield scp
    scp.stop()


@pytest.fixture(scope="session")
def relay(orthanc: Orthanc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    log = tmp_path_factory.mktemp("relay") / "relay.log"
    process = RelayProcess(to=("127.0.0.1", orthanc.dicom_port), trace=True, log_path=log).start()
    yield process
    assert process.stop() == 0, "dicom-relay did not shut down cleanly on SIGTERM"


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


__all__ = ["shutil"]
