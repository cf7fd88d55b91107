"""From DIMSE requests to AuthZEN questions: keys read from (cut) data sets, scopes, request shape."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian

from dicomwire.dataset import MalformedDataSet, with_element, without_element
from dicomwire.dimse import Tag, decode_command, encode_command
from server_agent.authn import Subject
from server_agent.keys import PATIENT_ID, identifier_keys, store_keys
from server_agent.resources import Context, authzen_request, scope_allows


def encoded(ds: Dataset, implicit: bool = True) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = implicit
    write_dataset(fp, ds)
    return fp.getvalue()


def ct_head() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.AccessionNumber = "A1"
    seq_item = Dataset()
    seq_item.ReferencedSOPInstanceUID = "9.9.9"
    ds.ReferencedImageSequence = [seq_item]
    ds.PatientID = "PAT-42"
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = "1.2.3.1"
    ds.BitsAllocated = 16
    ds.PixelData = b"\0" * 1000
    return ds


@pytest.mark.parametrize("implicit", [True, False])
def test_keys_from_a_whole_data_set(implicit: bool) -> None:
    keys = store_keys(encoded(ct_head(), implicit), None if implicit else ExplicitVRLittleEndian, complete=True)
    assert keys.as_dict() == {"sop_class_uid": "1.2.840.10008.5.1.4.1.1.2", "sop_instance_uid": "1.2.3.4.5",
                              "accession_number": "A1", "patient_id": "PAT-42", "study_instance_uid": "1.2.3",
                              "series_instance_uid": "1.2.3.1"}


def test_a_cut_element_is_dropped_never_read_in_part() -> None:
    data = encoded(ct_head())
    at = data.index(b"PAT-42")
    keys = store_keys(data[: at + 3], None, complete=False)  # cut in the middle of the Patient ID
    assert not keys.patient_id.present and keys.pinned_patient is None and keys.accession_number.value == "A1"
    for cut in range(len(data)):
        keys = store_keys(data[:cut], None, complete=False)  # never raises, never a wrong value
        assert keys.patient_id.value in ("", "PAT-42")


def test_wildcards_do_not_pin_a_patient() -> None:
    def query(patient: str) -> bytes:
        ds = Dataset()
        ds.QueryRetrieveLevel, ds.PatientID = "STUDY", patient
        return encoded(ds)

    assert identifier_keys(query("PAT-1"), None).pinned_patient is not None
    for value in ("", "PAT*", "P?T"):
        assert identifier_keys(query(value), None).pinned_patient is None
    with pytest.raises(MalformedDataSet):
        identifier_keys(query("A\\B"), None)  # a list in a VM-1 key: read one way by us, another by a PACS


def subject(*scopes: str) -> Subject:
    return Subject(kind="user", id="rad", username="rad", roles=("radiologist",), scopes=frozenset(scopes),
                   identity_type=5)


@pytest.mark.parametrize(("scopes", "action", "patient", "allowed"), [
    (("user/ImagingStudy.rs",), "C-FIND", None, True),
    (("user/ImagingStudy.rs",), "C-MOVE", "P", True),
    (("user/ImagingStudy.rs",), "C-STORE", "P", False),
    (("user/ImagingStudy.c",), "C-STORE", "P", True),
    (("user/ImagingStudy.r",), "C-FIND", None, False),
    (("patient/ImagingStudy.rs",), "C-FIND", None, False),  # patient/ scopes need one patient
    (("patient/ImagingStudy.rs",), "C-FIND", "P", True),
    (("user/*.cruds",), "C-STORE", "P", True),
    (("user/ImagingStudy.read",), "C-GET", "P", True),  # SMART v1 spelling
    (("user/Observation.rs",), "C-FIND", "P", False),
    ((), "C-ECHO", None, True),
])
def test_smart_scopes_gate(scopes: tuple[str, ...], action: str, patient: str | None, allowed: bool) -> None:
    assert scope_allows(subject(*scopes), action, patient) is allowed


def test_authzen_request_for_a_store_is_about_the_study() -> None:
    command = decode_command(encode_command({Tag.COMMAND_FIELD: 0x0001, Tag.MESSAGE_ID: 1, Tag.PRIORITY: 0,
                                             Tag.AFFECTED_SOP_CLASS_UID: "1.2.840.10008.5.1.4.1.1.2",
                                             Tag.AFFECTED_SOP_INSTANCE_UID: "1.2.3.4.5",
                                             Tag.COMMAND_DATA_SET_TYPE: 1}))
    keys = store_keys(encoded(ct_head()), None, complete=True)
    context = Context(calling_ae="VIEWER1@WS1", called_ae="ORTHANC@GW1", workstation="WS1", certificate=["ws1"],
                      peer="127.0.0.1:5")
    request = authzen_request(subject("user/ImagingStudy.c"), "C-STORE", command, keys, "PAT-42", context)
    assert request["action"] == {"name": "C-STORE"}
    assert request["resource"]["type"] == "study" and request["resource"]["id"] == "1.2.3"
    assert request["resource"]["properties"]["patient_id"] == "PAT-42"
    assert "sop_instance_uid" not in request["resource"]["properties"]  # one decision serves the study
    assert request["context"]["workstation"] == "WS1" and "time" not in request["context"]
    head = ct_head()
    head.SOPInstanceUID = "1.2.3.4.6"
    other = store_keys(encoded(head), None, complete=True)
    assert authzen_request(subject("user/ImagingStudy.c"), "C-STORE", command, other, "PAT-42", context) == request


def _encode(ds: Dataset, implicit: bool, undefined_sequences: bool = False) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, implicit
    if undefined_sequences:
        for element in ds:
            if element.VR == "SQ":
                element.is_undefined_length = True
                for item in element.value:
                    item.is_undefined_length_sequence_item = True
    write_dataset(fp, ds)
    return fp.getvalue()


def _read(data: bytes, implicit: bool) -> Dataset:
    from pydicom.filereader import read_dataset

    return read_dataset(DicomBytesIO(data), implicit, True)


@pytest.mark.parametrize("implicit", [True, False])
@pytest.mark.parametrize("undefined", [True, False])
def test_a_patient_id_return_key_is_added_in_tag_order_and_removed_again(implicit: bool, undefined: bool) -> None:
    syntax = None if implicit else ExplicitVRLittleEndian
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.ReferencedStudySequence = [Dataset()]  # (0008,1110), before the insertion point
    query.ReferencedStudySequence[0].ReferencedSOPInstanceUID = "7.7"
    query.StudyDate = "20260101-20261231"
    query.StudyInstanceUID = ""  # (0020,000D), after it
    original = _encode(query, implicit, undefined)
    asked = with_element(original, syntax, PATIENT_ID, "LO")
    parsed = _read(asked, implicit)
    assert parsed.PatientID == "" and [e.tag for e in parsed] == sorted(e.tag for e in parsed)
    assert parsed.StudyDate == "20260101-20261231"
    assert parsed.ReferencedStudySequence[0].ReferencedSOPInstanceUID == "7.7"
    assert len(asked) == len(original) + 8 and with_element(asked, syntax, PATIENT_ID, "LO") == asked
    match = _read(asked, implicit)
    match.PatientID = "PAT-7"
    match.StudyInstanceUID = "1.2.3"
    answered = _encode(match, implicit, undefined)
    shown = without_element(answered, syntax, PATIENT_ID)
    assert "PatientID" not in _read(shown, implicit) and _read(shown, implicit).StudyInstanceUID == "1.2.3"
    assert len(answered) - len(shown) == 8 + 6  # the element, header and even-padded value, and nothing else
    last = Dataset()
    last.QueryRetrieveLevel = "PATIENT"
    assert _read(with_element(_encode(last, implicit), syntax, PATIENT_ID, "LO"), implicit).PatientID == ""


def test_an_unreadable_identifier_is_said_to_be_so() -> None:
    broken = b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY " + b"\x10\x00\x10\x00\xfe\xff\x00\x00PART"  # length overruns
    with pytest.raises(MalformedDataSet, match="runs past the end"):
        with_element(broken, None, PATIENT_ID, "LO")
    with pytest.raises(MalformedDataSet, match="runs past the end"):
        without_element(broken, None, PATIENT_ID)
