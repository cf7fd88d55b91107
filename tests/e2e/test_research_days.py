"""Issue 16: pseudonyms are stable across days and differ between projects, on real parts.

The whole site (HIAL, pseudonymisation service, server agent, the workstation agent of each launch,
Orthanc) runs with libfaketime preloaded, reading its offset from a file: the test moves every part's
clock (and monotonic clock, as a day's wait moves both) a day ahead at once, while they run. The
researcher's second session is then a day later for everyone: a new login at the HIAL, tokens checked by
the server agent and the service against the later clock, the agent's cached tokens for the PDP and the
service a day old. It must show the same pseudonymous Patient ID,
Study, Series and SOP Instance UIDs and the same date shift as the first; STUDY-B's researcher sees
the same patient under pseudonyms of its own."""

from __future__ import annotations

import datetime as dt
import glob
import json
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.filereader import read_dataset

from devtools.dicomdata import identified_header
from devtools.site import Site
from tests.e2e.test_research_find import Tee, data_sets
from tests.e2e.test_research_retrieve import CT_INSTANCES, PATIENT, STUDY, write

LIBFAKETIME = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))  # Debian package faketime
REAL_STUDY_DATE = dt.date(2026, 1, 14)  # devtools.dicomdata.identified_header's
KEYS = ("QueryRetrieveLevel=IMAGE", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
        "StudyDate")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    if not LIBFAKETIME:
        pytest.skip("libfaketime is installed by `make venv` (APT_PACKAGES: faketime)")
    root = tmp_path_factory.mktemp("days")
    clock = root / "clock"
    clock.write_text("+0d\n")
    with pytest.MonkeyPatch.context() as env:  # every process the site starts inherits it
        env.setenv("LD_PRELOAD", LIBFAKETIME[0])
        env.setenv("FAKETIME_TIMESTAMP_FILE", str(clock))
        env.setenv("FAKETIME_CACHE_DURATION", "1")  # the file is read again at most every second
        site = Site(root, research=True).start()
        site.clock = clock  # type: ignore[attr-defined]
        try:
            assert site.orthanc is not None
            data = root / "data"
            data.mkdir()
            site.orthanc.upload([write(identified_header(patient_id=PATIENT, instance=n), data / f"ct{n}.dcm")
                                 for n in range(1, CT_INSTANCES + 1)])
            yield site
        finally:
            site.stop()


def view(site: Site, user: str) -> dict[str, frozenset[str]]:
    """What ``user``'s de-identified C-FIND (findscu through launch, IMAGE level) shows of the CT study."""
    tee = Tee(site.ports["agent"])
    try:
        result = site.launch(user, "findscu", "-S", *[a for k in KEYS for a in ("-k", k)], "-k",
                             "SOPClassUID=1.2.840.10008.5.1.4.1.1.2", "-aec", "ORTHANC@GW1", "127.0.0.1", tee.port)
    finally:
        tee.close()
    assert result.returncode == 0, result.stderr[-2000:]
    matches = [read_dataset(BytesIO(d), is_implicit_VR=False, is_little_endian=True)
               for d in data_sets(bytes(tee.received))]
    matches = [m for m in matches if m.get("PatientID")]
    assert len(matches) == CT_INSTANCES, result.stderr[-2000:]
    return {keyword: frozenset(str(m.get(keyword, "")) for m in matches)
            for keyword in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "StudyDate")}


def shift(shown: dict[str, frozenset[str]]) -> int:
    (date,) = shown["StudyDate"]
    return (dt.datetime.strptime(date, "%Y%m%d").date() - REAL_STUDY_DATE).days


def server_clock(site: Site) -> dt.datetime:
    """The server agent's wall clock, as its last decision record says."""
    last = json.loads(site.decisions().splitlines()[-1])
    return dt.datetime.fromisoformat(last["time"])


def test_pseudonyms_are_the_same_a_day_later_and_another_projects_differ(site: Site, tmp_path: Path) -> None:
    today, other = view(site, "researcher"), view(site, "researcherb")
    assert all(len(values) == 1 for key, values in today.items() if key != "SOPInstanceUID")
    assert len(today["SOPInstanceUID"]) == CT_INSTANCES
    assert next(iter(today["PatientID"])).startswith("SA-") and next(iter(other["PatientID"])).startswith("SB-")
    assert -365 <= shift(today) <= -1 and -365 <= shift(other) <= -1
    for key in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        assert not today[key] & other[key], f"{key}: one value in two projects"
        assert STUDY not in "".join(today[key] | other[key]), "a real UID"
    before = server_clock(site)
    assert abs(before - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)

    site.clock.write_text("+1d\n")  # type: ignore[attr-defined]
    time.sleep(2.5)  # every part reads the file again within its cache duration (1 s)

    later = view(site, "researcher")
    assert server_clock(site) - before > dt.timedelta(hours=23), "the parts' clocks moved a day"
    assert later == today and shift(later) == shift(today)
    assert view(site, "researcherb") == other
    # The day-later researcher retrieves by what the day-before C-FIND showed: the same instances.
    out = tmp_path / "got"
    out.mkdir()
    (study,) = today["StudyInstanceUID"]
    result = site.launch("researcher", "getscu", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k",
                         f"StudyInstanceUID={study}", "-od", out, "-aec", "ORTHANC@GW1", "127.0.0.1",
                         site.ports["agent"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert {dcmread(p).SOPInstanceUID for p in out.iterdir()} == today["SOPInstanceUID"]
