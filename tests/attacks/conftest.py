"""The attack ring's sites (issue 13): real HIAL, Orthanc, server agent and DCMTK storescp on loopback.

One site serves every attack that leaves it usable (``site``, shared by the package). The attacks
that, on today's code, break the site they run against (slots held forever, shared OAuth clients
locked for 15 minutes) start their own in their module, so that one hole left open cannot make
another test fail for a reason that is not its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.dicomdata import make_ct_study
from devtools.peers import DCMTK_BIN, ORTHANC, free_port
from devtools.site import Site

from .ring import PATIENTS, HoldingSCP, add_modality, workstation_agent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    missing = [p for p in (DCMTK_BIN / "storescp", Path(ORTHANC)) if not Path(p).exists()]
    for item in items:
        # `make test` installs them; a bare `pytest` on a machine without them says why it skips
        if missing and "attacks" in str(item.fspath):
            item.add_marker(pytest.mark.skip(reason=f"missing {', '.join(map(str, missing))}: run `make test`"))


def start_site(root: Path, **options: object) -> Site:
    """A site with the demo's four patients in Orthanc, two CT images each."""
    site = Site(root, **options)  # type: ignore[arg-type]
    try:
        site.start()
    except BaseException:
        site.stop()  # the parts already started (a HIAL, an Orthanc) must not outlive a failed start
        raise
    assert site.orthanc is not None
    for n, patient in enumerate(PATIENTS):
        site.orthanc.upload(make_ct_study(root / "data" / patient, slices=2, patient_id=patient,
                                          accession=f"ACC{n}", seed=n))
    return site


def stop_site(site: Site) -> None:
    """Stop a site that is thrown away. The server agent is killed rather than asked to stop: on today's
    code its graceful shutdown waits its full 10 s deadline for the slots that case 3 leaks (the start-up
    probe of its TLS port alone leaks one), which would be most of the ring's run time."""
    if site.server is not None and site.server.poll() is None:
        site.server.kill()
        site.server.wait(10)
    site.stop()


@pytest.fixture(scope="package")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    started = start_site(tmp_path_factory.mktemp("ring"))
    yield started
    stop_site(started)


@pytest.fixture(scope="package")
def hold_scp() -> Iterator[HoldingSCP]:
    """App ``HOLDSCP`` of workstation WS1: a storage SCP that can hold a C-MOVE open."""
    scp = HoldingSCP(free_port()).start()
    yield scp
    scp.stop()


@pytest.fixture(scope="package")
def workstation(site: Site, hold_scp: HoldingSCP) -> Iterator[None]:
    """WS1's agent kept running (logged in as rad): its return listener relays C-MOVE sub-operations
    to the apps MOVESCP (the site's DCMTK storescp) and HOLDSCP. Orthanc learns HOLDSCP@WS1 as a
    modality at the server agent's return port."""
    add_modality(site, "ws1-hold", "HOLDSCP@WS1", site.ports["return"])
    with workstation_agent(site, "rad", {"HOLDSCP": hold_scp.port}):
        yield
