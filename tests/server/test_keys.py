"""Decision keys (server_agent.keys): what the PACS will match for each key, and which one patient a
request is pinned to (PS3.4 C.2.2.2, PS3.5 6.1/6.2). Identifiers as pydicom writes them, or by hand
where pydicom would not write the attack."""

from __future__ import annotations

import struct
import zlib

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from dicomwire.dataset import (
    DEFLATED_EXPLICIT_VR_LE,
    EXPLICIT_VR_BE,
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    MalformedDataSet,
    encode_element,
)
from server_agent.keys import Matching, Patient, identifier_keys, match_keys, retrieve_keys, store_keys

SYNTAXES = {IMPLICIT_VR_LE: (True, True), EXPLICIT_VR_LE: (False, True), EXPLICIT_VR_BE: (False, False)}


def encoded(ds: Dataset, syntax: str = IMPLICIT_VR_LE) -> bytes:
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = SYNTAXES.get(syntax, (False, True))
    write_dataset(fp, ds)
    data = fp.getvalue()
    if syntax == DEFLATED_EXPLICIT_VR_LE:
        compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        data = compressor.compress(data) + compressor.flush()
    return data


def query(**keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = keys.pop("level", "STUDY")
    for name, value in keys.items():
        setattr(ds, name, value)
    return ds


def implicit(tag: int, value: bytes) -> bytes:
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value


@pytest.mark.parametrize("syntax", [IMPLICIT_VR_LE, EXPLICIT_VR_LE, EXPLICIT_VR_BE, DEFLATED_EXPLICIT_VR_LE])
def test_a_query_for_one_patient_is_pinned_to_that_patient(syntax: str) -> None:
    keys = identifier_keys(encoded(query(PatientID="PAT-REF-1", StudyInstanceUID=""), syntax), syntax)
    assert keys.pinned_patient == Patient(id="PAT-REF-1", issuer=None)
    assert keys.level.value == "STUDY" and keys.study_instance_uid.matching is Matching.UNIVERSAL
    assert keys.study_instance_uid.present and not keys.series_instance_uid.present


def test_the_attack_of_issue_13_is_refused_not_decided() -> None:
    """(0010,0020) twice, `*` then PAT-REF-1: the agent read the last, Orthanc (DCMTK) the first."""
    data = (implicit(0x00080052, b"STUDY ") + implicit(0x00100020, b"* ") + implicit(0x00100020, b"PAT-REF-1 ")
            + implicit(0x0020000D, b""))
    with pytest.raises(MalformedDataSet, match="occurs twice"):
        identifier_keys(data, IMPLICIT_VR_LE)
    with pytest.raises(MalformedDataSet):  # and the same as a retrieval identifier
        retrieve_keys(data, IMPLICIT_VR_LE)


@pytest.mark.parametrize(("patient_id", "matching"), [
    ("*", Matching.WILDCARD), ("PAT?1", Matching.WILDCARD), ("PAT*", Matching.WILDCARD),
    ("", Matching.UNIVERSAL), ("   ", Matching.UNIVERSAL), ('""', Matching.EMPTY),
    ("PAT-1", Matching.SINGLE), ("PAT-1     ", Matching.SINGLE),
])
def test_patient_id_matching(patient_id: str, matching: Matching) -> None:
    keys = identifier_keys(encoded(query(PatientID=patient_id)), IMPLICIT_VR_LE)
    assert keys.patient_id.matching is matching
    assert (keys.pinned_patient is not None) is (matching is Matching.SINGLE)
    if matching is Matching.SINGLE:
        assert keys.pinned_patient == Patient(id="PAT-1", issuer=None)  # trailing padding is not significant


@pytest.mark.parametrize(("issuer", "pinned"), [
    (None, Patient(id="P1", issuer=None)), ("", Patient(id="P1", issuer=None)),
    ("HOSP-A", Patient(id="P1", issuer="HOSP-A")), ("HOSP*", None), ("?", None), ('""', None),
])
def test_an_issuer_that_is_a_pattern_unpins_the_patient(issuer: str | None, pinned: Patient | None) -> None:
    ds = query(PatientID="P1")
    if issuer is not None:
        ds.IssuerOfPatientID = issuer
    keys = identifier_keys(encoded(ds), IMPLICIT_VR_LE)
    assert keys.pinned_patient == pinned


@pytest.mark.parametrize(("value", "why"), [
    ("A\\B", "more than one value"),  # VM 1: a list of Patient IDs is no key the PACS may read as one
    ("PAT\x1b(B1", "control character"),  # ISO 2022 escape
    ("PAT\t1", "control character"),
    ("PAT-1\t", "control character"),  # Orthanc matches nothing: a tab is no padding
    (" PAT-3", "starts with a space"),  # Orthanc: another patient than PAT-3 (measured, Orthanc 1.10)
])
def test_malformed_patient_ids(value: str, why: str) -> None:
    with pytest.raises(MalformedDataSet, match=why):
        identifier_keys(encoded(query(PatientID=value)), IMPLICIT_VR_LE)


def test_uid_lists_only_in_queries() -> None:
    data = encoded(query(StudyInstanceUID="1.2.3\\1.2.4", PatientID="P1"))
    keys = identifier_keys(data, IMPLICIT_VR_LE)
    assert keys.study_instance_uid.matching is Matching.UID_LIST
    assert keys.study_instance_uid.values == ("1.2.3", "1.2.4")
    assert keys.as_dict()["study_instance_uid"] == "1.2.3\\1.2.4"
    with pytest.raises(MalformedDataSet, match="more than one UID"):  # an instance has one study
        store_keys(data, IMPLICIT_VR_LE, complete=True)


@pytest.mark.parametrize("uid", ["1.2.*", "1.2.?", "1.02.3", "1..2", ".1.2", "1.2.", "1.2.3a", " 1.2",
                                 "1." + "2" * 63, "1.2\\", "1.2\\\\1.3", "1.2\x00.3"])
def test_malformed_uids(uid: str) -> None:
    raw = uid.encode() + b"\x00" * (len(uid) % 2)
    with pytest.raises(MalformedDataSet, match="UID"):
        identifier_keys(implicit(0x00080052, b"STUDY ") + implicit(0x0020000D, raw), IMPLICIT_VR_LE)


def test_uid_padding_is_not_significant() -> None:
    for raw in (b"1.2.3\x00", b"1.2.3 ", b"1.2.30"):
        data = implicit(0x00080052, b"STUDY ") + implicit(0x0020000D, raw)
        assert identifier_keys(data, IMPLICIT_VR_LE).study_instance_uid.value == raw.rstrip(b"\x00 ").decode()


def test_a_key_with_another_vr_is_malformed() -> None:
    """(0010,0020) as UN: DCMTK converts it back to LO or keeps it opaque, depending on a global."""
    data = encode_element(EXPLICIT_VR_LE, 0x00080052, "CS", b"STUDY ") + \
        encode_element(EXPLICIT_VR_LE, 0x00100020, "UN", b"* ")
    with pytest.raises(MalformedDataSet, match="has VR UN, not LO"):
        identifier_keys(data, EXPLICIT_VR_LE)


@pytest.mark.parametrize(("level", "ok"), [("STUDY", True), ("IMAGE", True), ("", True), ("study", False),
                                           ("STUDY*", False), ("ROOT", False)])
def test_query_retrieve_level(level: str, ok: bool) -> None:
    data = encoded(query(level=level, PatientID="P1"))
    if ok:
        assert identifier_keys(data, IMPLICIT_VR_LE).level.value == level
    else:
        with pytest.raises(MalformedDataSet, match="Query/Retrieve Level"):
            identifier_keys(data, IMPLICIT_VR_LE)


@pytest.mark.parametrize(("charset", "raw", "expected"), [
    (None, b"PAT-1 ", "PAT-1"),
    ("ISO_IR 100", "MÜLLER-1".encode("latin-1"), "MÜLLER-1"),
    ("ISO_IR 192", "MÜLLER-1 ".encode(), "MÜLLER-1"),
    ("ISO_IR 101", b"PAT-1 ", "PAT-1"),  # ASCII reads the same under every ISO 8859 set
    (None, "MÜLLER-1".encode("latin-1"), None),  # not the default repertoire
    ("ISO_IR 101", "MÜLLER-1".encode("latin-1"), None),  # Latin-2: not decoded here
    ("ISO_IR 192", b"M\xc3LLER", None),  # not UTF-8
    ("ISO_IR 100", b"PAT\x851", None),  # a C1 control character
    ("ISO 2022 IR 87", b"PAT\x1b$B1", None),  # an ISO 2022 escape
    ("ISO_IR 13", b"PAT~1 ", None),  # JIS X 0201: 7EH is an overline
    ("KLINGON", b"PAT-1 ", None),  # a character set PS3.3 does not define
])
def test_patient_id_repertoire(charset: str | None, raw: bytes, expected: str | None) -> None:
    data = b""
    if charset is not None:
        value = charset.encode() + (b" " if len(charset) % 2 else b"")
        data += implicit(0x00080005, value)
    data += implicit(0x00080052, b"STUDY ") + implicit(0x00100020, raw + (b" " if len(raw) % 2 else b""))
    if expected is None:
        with pytest.raises(MalformedDataSet):
            identifier_keys(data, IMPLICIT_VR_LE)
    else:
        assert identifier_keys(data, IMPLICIT_VR_LE).pinned_patient == Patient(id=expected, issuer=None)


def ct_head() -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.AccessionNumber = "A1"
    ds.PatientName = "DOE^JANE"
    ds.PatientID = "PAT-42"
    ds.IssuerOfPatientID = "HOSP"
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = "1.2.3.1"
    ds.BitsAllocated = 16
    ds.PixelData = b"\0" * 1000
    return ds


def test_a_store_head_cut_inside_the_patient_id_names_no_patient() -> None:
    data = encoded(ct_head())
    whole = store_keys(data, IMPLICIT_VR_LE, complete=True)
    assert whole.pinned_patient == Patient(id="PAT-42", issuer="HOSP") and whole.accession_number.value == "A1"
    at = data.index(b"PAT-42") + 3
    head = store_keys(data[:at], IMPLICIT_VR_LE, complete=False)
    assert head.patient_id.matching is Matching.UNKNOWN and head.pinned_patient is None
    assert head.accession_number.value == "A1" and head.study_instance_uid.matching is Matching.UNKNOWN
    assert "patient_id" not in head.as_dict()
    issuer_cut = store_keys(data[:data.index(b"HOSP") + 2], IMPLICIT_VR_LE, complete=False)
    assert issuer_cut.pinned_patient is None  # the issuer may narrow the patient: unknown is not absent
    for cut in range(len(data)):  # every cut reads to the whole data set's keys, or to UNKNOWN
        keys = store_keys(data[:cut], IMPLICIT_VR_LE, complete=False)
        assert keys.patient_id in (whole.patient_id, head.patient_id)


def test_a_c_find_match_is_read_as_values() -> None:
    match = query(PatientID="PAT-7", StudyInstanceUID="1.2.3")
    keys = match_keys(encoded(match, EXPLICIT_VR_LE), EXPLICIT_VR_LE)
    assert keys.pinned_patient == Patient(id="PAT-7", issuer=None)
    match.PatientID = "PAT*"  # a value that would be a pattern if sent back: never decided on as a patient
    assert match_keys(encoded(match), IMPLICIT_VR_LE).pinned_patient is None
    match.PatientID = "PAT-7"
    match.SeriesInstanceUID = "1.2\\1.3"
    with pytest.raises(MalformedDataSet):
        match_keys(encoded(match), IMPLICIT_VR_LE)


@pytest.mark.parametrize(("level", "pinned"), [("PATIENT", True), ("STUDY", False), ("SERIES", False),
                                               ("IMAGE", False)])
def test_a_retrieval_is_pinned_only_at_the_patient_level(level: str, pinned: bool) -> None:
    """Below PATIENT the SCP retrieves what the unique keys name (PS3.4 C.4.2.2.1), whatever the
    Patient ID says (tests/e2e/test_keys_orthanc.py shows Orthanc doing so)."""
    data = encoded(query(level=level, PatientID="P1", StudyInstanceUID="1.2.3"))
    assert (retrieve_keys(data, IMPLICIT_VR_LE).pinned_patient is not None) is pinned
    assert identifier_keys(data, IMPLICIT_VR_LE).pinned_patient == Patient(id="P1", issuer=None)
