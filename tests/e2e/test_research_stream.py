"""Issue 16 end to end: a large instance that streams through the research view (its header replaced,
its Pixel Data forwarded as read) carries elements after its Pixel Data in Orthanc: a retired
(7FE0,0020), a private group (7FE1) and Digital Signatures (FFFA,FFFA), naming the patient (the Data
Set Trailing Padding (FFFC,FFFC) is uploaded too; Orthanc does not send it). A researcher's
``getscu`` and ``movescu`` get the instance cut after its Pixel Data, the pixels Orthanc's; a
clinician's ``getscu`` gets Orthanc's bytes, trailing elements included."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from devtools.dicomdata import identified_header
from devtools.site import Site
from tests.deid.support import elements
from tests.e2e.test_research_retrieve import REAL, data_set, getscu, movescu, pseudonyms, write

PATIENT = "PAT-RES-1"  # in STUDY-A (configs/demo/policy.toml)
STUDY = "1.2.826.0.1.3680043.10.1447.77.5"
INSTANCE = f"{STUDY}.1.1"
ROWS, COLUMNS = 1280, 2048  # 5 MiB of Pixel Data: beyond the 4 MiB a header may be held to
PIXELS = bytes(range(256)) * (ROWS * COLUMNS * 2 // 256)
# What Orthanc 1.10 sends after the pixels (it leaves out the Data Set Trailing Padding itself).
TRAILING = (0x7FE00020, 0x7FE10010, 0x7FE11001, 0xFFFAFFFA)


def large_instance() -> Dataset:
    ds = identified_header(patient_id=PATIENT, study_uid=STUDY)
    ds.Rows, ds.Columns = ROWS, COLUMNS
    ds.PixelData = PIXELS
    ds.add_new(0x7FE00020, "OW", b"\x01\x00\x02\x00")  # Coefficients SDVN (retired), after the pixels
    ds.add_new(0x7FE10010, "LO", "ACME CINE")
    ds.add_new(0x7FE11001, "LO", "DOE^JANE PAT-RES-1")
    signature = Dataset()
    signature.DigitalSignatureUID = f"{STUDY}.77"
    signature.add_new(0x04000120, "OB", b"SIGNED FOR DOE^JANE ")  # Signature
    ds.DigitalSignaturesSequence = [signature]
    ds.add_new(0xFFFCFFFC, "OB", b"PAT-RES-1 SAINT ELSEWHERE ")  # Data Set Trailing Padding
    return ds


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("research-stream")
    site = Site(root, research=True).start()
    assert site.orthanc is not None
    data = root / "data"
    data.mkdir()
    site.orthanc.upload([write(large_instance(), data / "large.dcm")])
    yield site
    site.stop()


def check_cut_after_pixels(path: Path, site: Site) -> None:
    """The researcher's file: no real value in its raw bytes (file meta included) nor in any element
    of any item; nothing after its Pixel Data; the pixels Orthanc's; the pseudonyms the project's."""
    raw = path.read_bytes()
    assert [value for value in REAL if value.encode() in raw] == [], path
    ds = dcmread(path)
    found = [f"{tag} {vr}" for tag, vr, value in elements(ds)
             if vr not in ("OB", "OW") and any(real in str(value) for real in REAL)]
    assert found == [], path
    assert [f"{int(e.tag):08X}" for e in ds if int(e.tag) > 0x7FE00010] == []
    assert data_set(path).endswith(PIXELS)  # the data set ends with the Pixel Data's value
    assert ds.PixelData == PIXELS and ds.PatientIdentityRemoved == "YES"
    shown = pseudonyms(site, {STUDY, INSTANCE})
    assert ds.StudyInstanceUID == shown[STUDY] and ds.SOPInstanceUID == shown[INSTANCE]


def test_a_clinicians_copy_is_orthanc_s_trailing_elements_included(site: Site, tmp_path: Path) -> None:
    direct = getscu(site, "", STUDY, tmp_path / "direct", direct=True)
    relayed = getscu(site, "rad", STUDY, tmp_path / "relayed")
    assert direct.returncode == 0 and relayed.returncode == 0, relayed.stderr[-3000:]
    (original,) = (tmp_path / "direct").iterdir()
    (copy,) = (tmp_path / "relayed").iterdir()
    assert data_set(copy) == data_set(original)
    present = {int(e.tag) for e in dcmread(original)}
    assert present >= set(TRAILING)  # what Orthanc sends: the cut below is the relay's


def test_a_researchers_get_of_a_streamed_instance_ends_with_its_pixels(site: Site, tmp_path: Path) -> None:
    shown = pseudonyms(site, {STUDY})[STUDY]
    result = getscu(site, "researcher", shown, tmp_path / "got")
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = (tmp_path / "got").iterdir()
    check_cut_after_pixels(path, site)


def test_a_researchers_move_of_a_streamed_instance_ends_with_its_pixels(site: Site) -> None:
    assert site.scp is not None
    for old in site.scp.received():
        old.unlink()
    shown = pseudonyms(site, {STUDY, f"{STUDY}.1"})
    result = movescu(site, "researcher", f"StudyInstanceUID={shown[STUDY]}", f"SeriesInstanceUID={shown[STUDY + '.1']}")
    assert result.returncode == 0, result.stderr[-3000:]
    deadline = time.monotonic() + 10
    while not site.scp.received() and time.monotonic() < deadline:
        time.sleep(0.1)
    (path,) = site.scp.received()
    check_cut_after_pixels(path, site)
