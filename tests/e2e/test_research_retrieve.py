"""Issue 16 item 3 end to end: a researcher's DCMTK ``getscu`` and ``movescu``, unchanged, through
``dicom-agent launch`` and both agents, against an unchanged Orthanc; the HIAL's PDP permits project
STUDY-A's patient de-identified and the pseudonymisation service hands out the pseudonyms.

Every file the researcher's apps write is read raw, byte for byte, for each real value (names, IDs,
UIDs, dates, places) and must hold none; its Pixel Data is Orthanc's; its UIDs are the pseudonyms the
service hands out for the project (those a de-identified C-FIND shows). An ultrasound instance without
Burned In Annotation is refused and counted as failed. A radiologist's retrieval of the same study
is byte for byte what Orthanc sends to ``getscu`` directly."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.uid import ExplicitVRLittleEndian

from deid import Needs
from devtools.dicomdata import identified_header
from devtools.peers import DCMTK_BIN, dcmtk_env, free_port
from devtools.pseudonymizer import TRANSLATE_CLIENT, TRANSLATE_SECRET
from devtools.site import Site
from oauthclient import AuthMethod, ClientAuth, OAuthClient, SyncExecutor
from pseudonymizer.client import PseudonymizerClient
from server_agent.config import Pacs
from server_agent.deidprefetch import members
from tests.e2e.test_research_find import Tee
from tests.e2e.test_research_find import data_sets as received_sets

STUDY = "1.2.826.0.1.3680043.10.1447.77.1"
PATIENT = "PAT-RES-1"  # in STUDY-A (configs/demo/policy.toml)
CT_INSTANCES = 3
# What must never reach the researcher: the patient's names and IDs, every real UID (they all start
# with the study's root), unshifted dates, institution, operator and physician names. Station name and
# device serial stay (the project retains device identity, PS3.15 E.3.4).
REAL = ("PAT-RES-1", "DOE", "JANE", "WELBY", "MARCUS", "HOUSE^GREGORY", "RATCHED", "KILDARE", "ANNA",
        "ACC-99812", "SSN-078", "S-1234", "RP-5521", "SPS-5521", "20260114", "19610704", "SAINT ELSEWHERE",
        "HOSPITAL ROAD", "RADIOLOGY WEST", "EVERGREEN", "IODINE", "SPRINGFIELD GENERAL",
        "1.2.826.0.1.3680043.10.1447.77")


def write(ds: object, path: Path) -> Path:
    ds.file_meta = FileMetaDataset()  # type: ignore[attr-defined]
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID  # type: ignore[attr-defined]
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID  # type: ignore[attr-defined]
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian  # type: ignore[attr-defined]
    ds.save_as(path, enforce_file_format=True)  # type: ignore[attr-defined]
    return path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("research")
    site = Site(root, research=True).start()
    assert site.orthanc is not None
    data = root / "data"
    data.mkdir()
    files = [write(identified_header(patient_id=PATIENT, instance=n), data / f"ct{n}.dcm")
             for n in range(1, CT_INSTANCES + 1)]
    files.append(write(identified_header("US", patient_id=PATIENT, series=2, instance=1), data / "us.dcm"))
    site.orthanc.upload(files)
    yield site
    site.stop()


def pseudonyms(site: Site, uids: set[str]) -> dict[str, str]:
    """What the pseudonymisation service hands out for STUDY-A: the values a de-identified C-FIND shows."""
    assert site.pseudonymizer is not None and site.hial is not None
    auth = ClientAuth(client_id=TRANSLATE_CLIENT, method=AuthMethod.CLIENT_SECRET_BASIC, secret=TRANSLATE_SECRET)
    with SyncExecutor() as executor:
        client = PseudonymizerClient(site.pseudonymizer.url, OAuthClient(site.hial.issuer, auth, executor), executor)
        return dict(client.pseudonyms("STUDY-A", Needs(uids=frozenset(uids))).uids)


def shown_by_find(site: Site, level: str, *keys: str) -> list[str]:
    """The researcher's own de-identified C-FIND (findscu through launch): the UIDs of ``level`` it shows."""
    tag = {"STUDY": "0020,000d", "SERIES": "0020,000e"}[level]
    args = [arg for key in (f"QueryRetrieveLevel={level}", *keys, "StudyInstanceUID", "SeriesInstanceUID")
            for arg in ("-k", key)]
    result = site.launch("researcher", "findscu", "-v", "-S", *args, "-aec", "ORTHANC@GW1", "127.0.0.1",
                         site.ports["agent"])
    assert result.returncode == 0, result.stderr[-2000:]
    found = re.findall(rf"\({tag}\) UI \[([^\]]*)\]", result.stderr.split("Find Response", 1)[-1])
    # DCMTK 3.6.7's findscu prints an odd-length UI value's trailing NUL pad (PS3.5 6.2), from any SCP
    # (a pynetdicom one too): no part of the UID. The bytes are checked by the padding test below.
    return [uid.rstrip("\x00") for uid in found]


def real_uids() -> dict[str, str]:
    """Instance UID -> series UID of the study's CT images."""
    return {f"{STUDY}.1.{n}": f"{STUDY}.1" for n in range(1, CT_INSTANCES + 1)}


def data_set(path: Path) -> bytes:
    """A Part 10 file's data set: what follows the preamble, DICM and the file meta group (PS3.10 7.1)."""
    raw = path.read_bytes()
    assert raw[128:132] == b"DICM" and raw[132:136] == b"\x02\x00\x00\x00"
    meta_length = int.from_bytes(raw[140:144], "little")
    return raw[144 + meta_length:]


def getscu(site: Site, user: str, study: str, out: Path, *, direct: bool = False) -> subprocess.CompletedProcess[str]:
    out.mkdir(parents=True, exist_ok=True)
    args = ["-d", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}", "-od", str(out)]
    if direct:
        assert site.orthanc is not None
        return subprocess.run([str(DCMTK_BIN / "getscu"), *args, "-aec", "ORTHANC", "127.0.0.1",
                               str(site.orthanc.dicom_port)], capture_output=True, text=True, env=dcmtk_env(),
                              timeout=60)
    return site.launch(user, "getscu", *args, "-aec", "ORTHANC@GW1", "127.0.0.1", site.ports["agent"])


def failed_count(output: str) -> int:
    """Number of Failed Suboperations in the final C-GET/C-MOVE response, as DCMTK's debug output shows it."""
    found = re.findall(r"(?:Number of )?Failed Sub-?operations\s*:\s*(\d+|none)", output)
    assert found, output[-2000:]
    return 0 if found[-1] == "none" else int(found[-1])


def check_researchers_copy(files: list[Path], shown_study: str, site: Site) -> None:
    shown = pseudonyms(site, set(real_uids()) | {STUDY, f"{STUDY}.1"})
    originals = {dcmread(p).SOPInstanceUID: dcmread(p) for p in (site.root / "data").glob("ct*.dcm")}
    assert len(files) == CT_INSTANCES
    instances = set()
    for path in files:
        raw = path.read_bytes()
        assert [value for value in REAL if value.encode() in raw] == [], path  # the raw file, meta included
        ds = dcmread(path)
        assert ds.PatientIdentityRemoved == "YES" and ds.StudyInstanceUID == shown_study
        assert "113100" in [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
        real = next(uid for uid, pseudonym in shown.items() if pseudonym == ds.SOPInstanceUID)
        assert ds.SeriesInstanceUID == shown[real_uids()[real]]
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID  # the command's UID, as shown
        assert ds.PixelData == originals[real].PixelData  # the pixels as Orthanc sent them
        assert ds.PatientID.startswith("SA-") and ds.PatientName == ds.PatientID.replace("-", "^")
        instances.add(real)
    assert instances == set(real_uids())


def records(site: Site) -> list[dict]:
    return [json.loads(line) for line in site.decisions().splitlines()]


def test_a_researchers_get_is_de_identified_in_transit(site: Site, tmp_path: Path) -> None:
    (shown_study,) = shown_by_find(site, "STUDY")  # what the researcher's C-FIND showed
    assert shown_study == pseudonyms(site, {STUDY})[STUDY]
    result = getscu(site, "researcher", shown_study, tmp_path / "got")
    # The ultrasound was refused: the person is told, and the launch says so (exit 4, a refusal).
    assert result.returncode == 4, result.stderr[-3000:]
    assert "1 image(s) of it were not delivered" in result.stderr, result.stderr[-3000:]
    check_researchers_copy(sorted((tmp_path / "got").iterdir()), shown_study, site)
    assert failed_count(result.stderr + result.stdout) == 1  # the ultrasound: Burned In Annotation absent
    disclosed = [r for r in records(site) if r.get("de_identified") and r.get("sub_operation_of") == "C-GET"]
    assert len(disclosed) == CT_INSTANCES
    for record in disclosed:
        assert record["user"]["username"] == "researcher" and record["project"] == "STUDY-A"
        assert record["resource"]["patient_id"] == PATIENT and record["profile"].startswith("basic+")
        assert shown_study in record["pseudonyms"] and PATIENT not in record["pseudonyms"]
    refused = [r for r in records(site) if r.get("reason") == "not_deidentifiable"]
    assert refused and "Burned In Annotation" in refused[-1]["detail"]


def movescu(site: Site, user: str, *keys: str) -> subprocess.CompletedProcess[str]:
    args = [arg for key in ("QueryRetrieveLevel=SERIES", *keys) for arg in ("-k", key)]
    return site.launch(user, "movescu", "-d", "-S", "-aet", "MOVESCP", "-aem", "MOVESCP", *args, "-aec", "ORTHANC@GW1",
                       "127.0.0.1", site.ports["agent"])


def test_a_researchers_move_is_de_identified_on_the_return_path(site: Site) -> None:
    assert site.scp is not None
    for old in site.scp.received():
        old.unlink()
    shown = pseudonyms(site, {STUDY, f"{STUDY}.1", f"{STUDY}.2"})
    assert sorted(shown_by_find(site, "SERIES", f"StudyInstanceUID={shown[STUDY]}")) == sorted(
        [shown[f"{STUDY}.1"], shown[f"{STUDY}.2"]])  # the series the researcher's C-FIND shows
    result = movescu(site, "researcher", f"StudyInstanceUID={shown[STUDY]}", f"SeriesInstanceUID={shown[STUDY + '.1']}")
    assert result.returncode == 0, result.stderr[-3000:]
    deadline = time.monotonic() + 10
    while len(site.scp.received()) < CT_INSTANCES and time.monotonic() < deadline:
        time.sleep(0.1)
    check_researchers_copy(sorted(site.scp.received()), shown[STUDY], site)
    assert failed_count(result.stderr + result.stdout) == 0
    disclosed = [r for r in records(site) if r.get("de_identified") and r.get("sub_operation_of") == "C-MOVE"]
    assert len(disclosed) == CT_INSTANCES and all(r["resource"]["patient_id"] == PATIENT for r in disclosed)


def test_a_burned_in_risk_is_never_moved(site: Site) -> None:
    """The ultrasound series: refused on the return path. Orthanc (1.10) ends a C-MOVE at its first
    failed sub-operation and answers C000H with no counts, so that is what the researcher sees."""
    assert site.scp is not None
    for old in site.scp.received():
        old.unlink()
    shown = pseudonyms(site, {STUDY, f"{STUDY}.2"})
    result = movescu(site, "researcher", f"StudyInstanceUID={shown[STUDY]}", f"SeriesInstanceUID={shown[STUDY + '.2']}")
    time.sleep(0.5)
    assert site.scp.received() == []
    assert "0xc000" in (result.stderr + result.stdout).lower() or failed_count(result.stderr + result.stdout) == 1
    refused = [r for r in records(site) if r.get("reason") == "not_deidentifiable"
               and r.get("sub_operation_of") == "C-MOVE"]
    assert refused and "Burned In Annotation is absent for Ultrasound Image Storage" in refused[-1]["detail"]
    assert refused[-1]["resource"]["patient_id"] == PATIENT


def test_a_researcher_cannot_retrieve_by_the_real_uid(site: Site, tmp_path: Path) -> None:
    result = getscu(site, "researcher", STUDY, tmp_path / "got")
    assert list((tmp_path / "got").iterdir()) == []
    assert ": a key names no pseudonym of this project" in result.stderr  # after the refusal's code
    denied = [r for r in records(site) if r.get("action") == "C-GET" and r.get("decision") == "deny"]
    assert denied[-1]["reason"] == "identifying_key" and denied[-1]["user"]["username"] == "researcher"


def test_a_clinicians_get_is_what_orthanc_sends(site: Site, tmp_path: Path) -> None:
    direct = getscu(site, "", STUDY, tmp_path / "direct", direct=True)
    relayed = getscu(site, "rad", STUDY, tmp_path / "relayed")
    assert direct.returncode == 0 and relayed.returncode == 0, relayed.stderr[-3000:]
    names = sorted(p.name for p in (tmp_path / "direct").iterdir())
    assert len(names) == CT_INSTANCES + 1 and names == sorted(p.name for p in (tmp_path / "relayed").iterdir())
    for name in names:
        assert data_set(tmp_path / "relayed" / name) == data_set(tmp_path / "direct" / name), name
    assert b"PAT-RES-1" in data_set(tmp_path / "relayed" / names[0])  # identified: the clinician's view


def test_what_a_retrieval_will_bring_is_asked_of_orthanc_ahead(site: Site) -> None:
    """server_agent.deidprefetch: the C-FIND that lets a retrieval's pseudonyms come in one call."""
    assert site.orthanc is not None
    pacs = Pacs(host="127.0.0.1", port=site.orthanc.dicom_port, ae_title="ORTHANC")
    study = members(pacs, None, "GETSCU@WS1", {"level": "STUDY", "study_instance_uid": STUDY})
    assert study == Needs(patient_ids=frozenset({PATIENT}), uids=frozenset(
        {STUDY, f"{STUDY}.1", f"{STUDY}.2", f"{STUDY}.2.1", *real_uids()}))
    series = members(pacs, None, "GETSCU@WS1", {"level": "SERIES", "study_instance_uid": STUDY,
                                                 "series_instance_uid": f"{STUDY}.2"})
    assert series is not None and series.uids == {STUDY, f"{STUDY}.2", f"{STUDY}.2.1"}
    assert members(pacs, None, "GETSCU@WS1", {"study_instance_uid": "1.2.3.4"}) == Needs()
    closed = Pacs(host="127.0.0.1", port=free_port(), ae_title="ORTHANC")
    assert members(closed, None, "GETSCU@WS1", {"study_instance_uid": STUDY}) is None


# ---- retrieval by the pseudonymous Patient ID (server_agent.deidpatient) ----------------------------------------
def shown_patient_id(site: Site) -> str:
    """The pseudonymous Patient ID the researcher's own de-identified C-FIND shows."""
    result = site.launch("researcher", "findscu", "-v", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID",
                         "-aec", "ORTHANC@GW1", "127.0.0.1", site.ports["agent"])
    assert result.returncode == 0, result.stderr[-2000:]
    (shown,) = set(re.findall(r"\(0010,0020\) LO \[([^\]]+)\]", result.stderr.split("Find Response", 1)[-1]))
    return shown.strip()


def test_a_researcher_gets_by_the_pseudonymous_patient_id(site: Site, tmp_path: Path) -> None:
    """getscu, Patient Root, PATIENT level, naming only the Patient ID the C-FIND showed: the PDP decides
    the real patient (its consent), the PACS gets the real Patient ID, the images arrive de-identified."""
    patient = shown_patient_id(site)
    assert patient.startswith("SA-")
    out = tmp_path / "got"
    out.mkdir()
    result = site.launch("researcher", "getscu", "-d", "-P", "-k", "QueryRetrieveLevel=PATIENT", "-k",
                         f"PatientID={patient}", "-od", out, "-aec", "ORTHANC@GW1", "127.0.0.1", site.ports["agent"])
    assert result.returncode == 4, result.stderr[-3000:]  # the ultrasound: refused, the person is told
    (shown_study,) = {dcmread(p).StudyInstanceUID for p in out.iterdir()}
    check_researchers_copy(sorted(out.iterdir()), shown_study, site)
    assert {dcmread(p).PatientID for p in out.iterdir()} == {patient}
    log = records(site)
    (asked,) = [r for r in log if r["event"] == "authorization" and r.get("resource", {}).get("level") == "PATIENT"
                and r["resource"].get("patient_id") == patient]  # the request's record keeps the key as asked
    assert asked["decision"] == "permit" and asked["reason"] == "permit_deidentified", asked
    images = [r for r in log if r.get("sub_operation_of") == "C-GET" and r.get("de_identified")]
    assert images and images[-1]["resource"]["patient_id"] == PATIENT


def test_a_researcher_moves_a_series_naming_the_pseudonymous_patient_id(site: Site) -> None:
    assert site.scp is not None
    for old in site.scp.received():
        old.unlink()
    patient = shown_patient_id(site)
    shown = pseudonyms(site, {STUDY, f"{STUDY}.1"})
    result = movescu(site, "researcher", f"PatientID={patient}", f"StudyInstanceUID={shown[STUDY]}",
                     f"SeriesInstanceUID={shown[STUDY + '.1']}")
    assert result.returncode == 0, result.stderr[-3000:]
    deadline = time.monotonic() + 10
    while len(site.scp.received()) < CT_INSTANCES and time.monotonic() < deadline:
        time.sleep(0.1)
    check_researchers_copy(sorted(site.scp.received()), shown[STUDY], site)


def other_project_pseudonym(site: Site) -> str:
    """PAT-RES-1's pseudonym in project STUDY-B (configs/demo/pseudonymizer.toml), as that project sees it."""
    assert site.pseudonymizer is not None and site.hial is not None
    auth = ClientAuth(client_id=TRANSLATE_CLIENT, method=AuthMethod.CLIENT_SECRET_BASIC, secret=TRANSLATE_SECRET)
    with SyncExecutor() as executor:
        client = PseudonymizerClient(site.pseudonymizer.url, OAuthClient(site.hial.issuer, auth, executor), executor)
        return client.pseudonyms("STUDY-B", Needs(patient_ids=frozenset({PATIENT}))).patients[PATIENT].patient_id


def test_no_value_but_a_pseudonym_of_the_project_retrieves_and_none_tells_which(site: Site) -> None:
    """A real Patient ID (consented, refusing, unknown to the policy), a made-up pseudonym, another project's
    pseudonym: one and the same refusal, logged identifying_key, nothing reaches the PACS. The PDP's answer
    about the value itself (consent_denied for PAT-NORES, permit for PAT-RES-1) is never what decides."""
    assert site.orthanc is not None
    before = site.orthanc.log_text().count("Incoming Move request")
    seen = set()
    for named in (PATIENT, "PAT-NORES", "PAT-NOBODY", "SA-AAAAAAAAAAAAAAAA", other_project_pseudonym(site)):
        result = site.launch("researcher", "movescu", "-v", "-P", "-aet", "MOVESCP", "-aem", "MOVESCP", "-k",
                             "QueryRetrieveLevel=PATIENT", "-k", f"PatientID={named}", "-aec", "ORTHANC@GW1",
                             "127.0.0.1", site.ports["agent"])
        told = [line for line in (result.stderr + result.stdout).splitlines()
                if "REFUSED" in line or "Move Response" in line]
        assert told and result.returncode != 0, result.stderr[-2000:]
        seen.add((result.returncode, tuple(told)))
        denied = [r for r in records(site) if r["event"] == "authorization" and r.get("action") == "C-MOVE"
                  and r["decision"] == "deny"][-1]
        assert denied["reason"] == "identifying_key" and denied["resource"]["patient_id"] == named
        assert denied["detail"] == "Patient ID is no pseudonym of project STUDY-A"
    assert len(seen) == 1, seen
    assert site.orthanc.log_text().count("Incoming Move request") == before, "nothing reached the PACS"


# ---- UI values as the app receives them (PS3.5 6.2, 9.1) ----------------------------------------------------------
UID = re.compile(rb"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


def ui_values(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Every UI element's raw value in an Explicit VR Little Endian data set, sequences' items included."""
    ds = read_dataset(BytesIO(data), is_implicit_VR=False, is_little_endian=True)
    yield from _ui_values(ds)


def _ui_values(ds: Dataset) -> Iterator[tuple[int, bytes]]:
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        if raw.VR == "SQ":
            for item in ds[tag].value:
                yield from _ui_values(item)
        elif raw.VR == "UI" and isinstance(raw.value, bytes):
            yield int(tag), raw.value


def ui_problem(value: bytes) -> str:
    """Why a UI value is not as PS3.5 6.2 and 9.1 say (empty: it is): even length, one trailing NUL only to
    make it so, no other padding, components of digits without leading zeros, at most 64 characters."""
    if len(value) % 2:
        return "odd length"
    body = value[:-1] if value.endswith(b"\x00") else value
    if body is not value and len(body) % 2 == 0:
        return "a NUL that pads nothing"
    for uid in body.split(b"\\") if body else []:
        if not UID.fullmatch(uid) or len(uid) > 64:
            return f"{uid!r} is no UID"
    return ""


@pytest.mark.parametrize("level", ["STUDY", "SERIES", "IMAGE"])
def test_every_ui_value_a_research_find_returns_is_padded_as_the_standard_says(site: Site, level: str) -> None:
    """findscu through launch, every UI key the levels have: each value as the app received it (the bytes, not
    DCMTK's print: DCMTK 3.6.7's findscu prints a UI value's trailing NUL pad, as it does for a pynetdicom
    SCP's, where dcmdump does not) is even, padded with one NUL only when odd, no NUL inside, and no real UID."""
    keys = [f"QueryRetrieveLevel={level}", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
            "SOPClassUID", "SOPClassesInStudy", "FrameOfReferenceUID", "ReferencedSOPSequence"]
    tee = Tee(site.ports["agent"])
    try:
        result = site.launch("researcher", "findscu", "-S", *[a for k in keys for a in ("-k", k)], "-aec",
                             "ORTHANC@GW1", "127.0.0.1", tee.port)
    finally:
        tee.close()
    assert result.returncode == 0, result.stderr[-2000:]
    matches = [m for m in received_sets(bytes(tee.received)) if b"SA-" in m]
    assert len(matches) == {"STUDY": 1, "SERIES": 2, "IMAGE": CT_INSTANCES + 1}[level]
    seen = [(tag, value) for match in matches for tag, value in ui_values(match)]
    assert {tag for tag, _ in seen} >= {0x0020000D} and len(seen) >= len(matches)
    assert [(f"{tag:08X}", value, ui_problem(value)) for tag, value in seen if ui_problem(value)] == []
    assert not [value for _, value in seen if STUDY.encode() in value], "a real UID"


# ---- identity where the generated Table E.1-1 does not look (attacker review of issue 16, F1, F4, F10) --------
# Uploaded by the tests below, after the tests above (which count this patient's studies and instances):
# keep this section last in the module.
SMUGGLED_STUDY = "1.2.826.0.1.3680043.10.1447.77.7"
SOURCE_UID = "1.2.826.0.1.3680043.10.1447.77.1.1.1"  # a real SOP Instance UID of another image
NAME, MRN = "SMUGGLED^NAME", "MRN-SMUGGLED-42"
NEEDLES = (NAME, MRN, "SMUGGLED", SOURCE_UID, "20260114", "https://pacs")


def smuggling_instance() -> object:
    """PAT-RES-1's CT whose header carries identity in attributes the generated table does not list:
    unlisted UIDs, free text at the top level and in a kept sequence, URLs, a date in an LO, and a
    person's name (PN) and a date (DA) written as LO."""
    from pydicom.datadict import tag_for_keyword
    ds = identified_header(patient_id=PATIENT, study_uid=SMUGGLED_STUDY)
    ds.MultiFrameSourceSOPInstanceUID = SOURCE_UID
    ds.SOPInstanceUIDOfConcatenationSource = SOURCE_UID
    ds.TextValue = f"{NAME} {MRN}"
    ds.CommentsOnTheScheduledProcedureStep = f"pt {NAME} claustrophobic"
    ds.HL7InstanceIdentifier = f"{MRN}^^^HOSP"
    ds.ImageID = MRN
    ds.RetrieveURL = f"https://pacs/studies/{STUDY}"
    modifier = Dataset()
    modifier.ValueType, modifier.TextValue = "TEXT", f"referred by {NAME}"
    ds.ContentItemModifierSequence = [modifier]
    ds.add_new(tag_for_keyword("AcquisitionProtocolName"), "LO", "CHEST 20260114")
    ds.add_new(tag_for_keyword("EvaluatorName"), "LO", NAME)
    ds.add_new(tag_for_keyword("ExpiryDate"), "LO", "20260114")
    return ds


@pytest.fixture(scope="module")
def smuggled(site: Site) -> str:
    """The smuggling instance in Orthanc; its study's pseudonym, as the researcher knows it."""
    assert site.orthanc is not None
    (site.root / "smuggle").mkdir(exist_ok=True)
    site.orthanc.upload([write(smuggling_instance(), site.root / "smuggle" / "ct.dcm")])
    return pseudonyms(site, {SMUGGLED_STUDY})[SMUGGLED_STUDY]


def test_a_researchers_copy_carries_no_identity_the_table_does_not_name(site: Site, smuggled: str,
                                                                        tmp_path: Path) -> None:
    result = getscu(site, "researcher", smuggled, tmp_path / "got")
    files = sorted((tmp_path / "got").iterdir())
    assert len(files) == 1 and result.returncode == 0, result.stderr[-3000:]
    raw = files[0].read_bytes()
    assert [n for n in (*NEEDLES, *REAL) if n.encode() in raw] == []
    ds = dcmread(files[0])
    assert ds.PatientIdentityRemoved == "YES" and ds.Manufacturer == "ACME MEDICAL"
    shown = pseudonyms(site, {SOURCE_UID, f"{SMUGGLED_STUDY}.1.1"})
    assert ds.MultiFrameSourceSOPInstanceUID == shown[SOURCE_UID]  # a reference: the project's pseudonym
    assert ds.SOPInstanceUID == shown[f"{SMUGGLED_STUDY}.1.1"]
    assert ds.AcquisitionProtocolName == "CHEST"  # cleaned: the demo vocabulary keeps CHEST, not the date
    assert "TextValue" not in ds and "ImageID" not in ds and "RetrieveURL" not in ds
    assert "TextValue" not in ds.ContentItemModifierSequence[0]


def test_a_researchers_find_return_keys_carry_no_identity_the_table_does_not_name(site: Site, smuggled: str) -> None:
    keys = ["QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={smuggled}", "SOPInstanceUID",
            "MultiFrameSourceSOPInstanceUID", "SOPInstanceUIDOfConcatenationSource", "TextValue",
            "CommentsOnTheScheduledProcedureStep", "HL7InstanceIdentifier", "ImageID", "RetrieveURL",
            "AcquisitionProtocolName"]
    tee = Tee(site.ports["agent"])
    try:
        result = site.launch("researcher", "findscu", "-v", "-S", *[a for k in keys for a in ("-k", k)],
                             "-aec", "ORTHANC@GW1", "127.0.0.1", tee.port)
    finally:
        tee.close()
    matches = [s for s in received_sets(bytes(tee.received)) if b"2.25." in s]
    assert len(matches) == 1, result.stderr[-3000:]
    assert [n for n in (*NEEDLES, *REAL) if n.encode() in matches[0]] == []
