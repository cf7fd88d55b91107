"""Issue 17's attacker review, low finding 1: a PACS's Error Comment that looks like one of our codes
(``SESSION-ENDED: call x4444 ...``) was worded by the wrapper as the agent's own refusal. The PACS here
is a pynetdicom SCP that answers with exactly such comments (Orthanc cannot be made to); everything
else is real: the HIAL, the server agent, `dicom-agent launch` and DCMTK's apps."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset

from devtools.dicomdata import make_ct_study
from devtools.site import DCMTK_BIN, PROJECT, Site
from server_agent.config import Pacs
from tomlconf import write

FIND_COMMENT = "SESSION-ENDED: call x4444 to unlock your login"
ECHO_COMMENT = 'NOT-IN-CARE: call x4444"). Next step: call x4444'
STORE_COMMENT = "ROLE: ask x4444 for the technologist role"


def _status(status: int, comment: str) -> Dataset:
    answer = Dataset()
    answer.Status = status
    answer.ErrorComment = comment
    return answer


class LyingPacs:
    """A PACS (pynetdicom) whose every answer is a failure with a code-looking Error Comment."""

    def __init__(self) -> None:
        from pynetdicom import AE, evt
        from pynetdicom.sop_class import (  # type: ignore[attr-defined]
            CTImageStorage,
            PatientRootQueryRetrieveInformationModelFind,
            StudyRootQueryRetrieveInformationModelFind,
            Verification,
        )

        ae = AE(ae_title="ORTHANC")
        for context in (Verification, CTImageStorage, StudyRootQueryRetrieveInformationModelFind,
                        PatientRootQueryRetrieveInformationModelFind):
            ae.add_supported_context(context)
        self.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[
            (evt.EVT_C_ECHO, lambda event: _status(0x0122, ECHO_COMMENT)),
            (evt.EVT_C_FIND, self._find),
            (evt.EVT_C_STORE, lambda event: _status(0xA700, STORE_COMMENT)),
        ])
        self.port = int(self.server.server_address[1])

    @staticmethod
    def _find(event: Any) -> Iterator[tuple[Dataset, None]]:
        yield _status(0xC000, FIND_COMMENT), None

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("pacswords")
    site = Site(root, pacs_scp=True).start()  # a storescp first; the server agent is then sent to the liar
    pacs = LyingPacs()
    try:
        site.stop_server()
        config = site.server_agent_config()
        write(root / "server-agent.toml", config.replace(
            pacs={"ORTHANC": Pacs(host="127.0.0.1", port=pacs.port, ae_title="ORTHANC")}))
        site.start_server()
        yield site
    finally:
        pacs.stop()
        site.stop()


def launch(site: Site, user: str, tool: str, *args: str, files: tuple[str, ...] = ()) -> \
        subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", "--config", str(site.root / "workstation.toml"),
                           "launch", "--user", user, "--password-stdin", "--", str(DCMTK_BIN / tool), *args,
                           "-aec", "ORTHANC@GW1", "127.0.0.1", str(site.ports["agent"]), *files],
                          input=f"demo-{user}\n", capture_output=True, text=True, timeout=120, cwd=PROJECT,
                          env={**os.environ, "TCP_NODELAY": "1"})


def test_a_pacs_comment_that_looks_like_ours_is_told_as_the_pacss(site: Site) -> None:
    result = launch(site, "rad", "findscu", "-d", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=PW-1")
    told = [line for line in result.stderr.splitlines() if line.startswith("dicom-agent:")]
    assert told == [
        "dicom-agent: REFUSED FINDSCU C-FIND: the PACS could not do it (status C000H) (the PACS said: "
        f'"{FIND_COMMENT}"). Next step: try again; if it persists, call the help desk.']
    assert "your login is no longer valid" not in result.stderr
    # The app itself reads the PACS's words under the PACS's name: no code of ours starts them.
    comments = re.findall(r"\(0000,0902\) LO \[([^\]]*)\]", result.stdout + result.stderr)
    assert comments == [f"PACS: {FIND_COMMENT}"]


def test_a_pacs_refusal_of_an_echo_is_the_pacss_and_cannot_close_our_quote(site: Site) -> None:
    result = launch(site, "rad", "echoscu")
    told = [line for line in result.stderr.splitlines() if line.startswith("dicom-agent:")]
    assert told == [
        "dicom-agent: REFUSED ECHOSCU C-ECHO: the PACS refused it (the PACS said: \"NOT-IN-CARE: call x4444'). Next "
        "step: call x4444\"). Next step: if you need this access, call the help desk."]
    assert "not in your care" not in result.stderr


def test_a_stores_pacs_comment_is_the_pacss_too(site: Site, tmp_path: Path) -> None:
    """A C-STORE is permitted without a review of its own: its response is read all the same."""
    files = make_ct_study(tmp_path / "new", slices=1, patient_id="PW-2", accession="PWACC2", seed=3)
    result = launch(site, "tech", "storescu", files=tuple(map(str, files)))
    told = [line for line in result.stderr.splitlines() if line.startswith("dicom-agent:")]
    assert told == [
        "dicom-agent: REFUSED STORESCU C-STORE: the PACS could not do it (status A700H) (the PACS said: "
        f'"{STORE_COMMENT}"). Next step: try again; if it persists, call the help desk.']
    assert "your role does not allow this" not in result.stderr
