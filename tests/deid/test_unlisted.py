"""What Table E.1-1 (as generated) does not list is removed, cleaned or replaced, never kept by default
(the attacker review of issue 16: F1, F4, F5, F6, F10), and what is kept is what was reviewed."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage

from deid import (
    Needs,
    Option,
    Profile,
    SafePrivate,
    deidentify_identifier,
    needs,
)
from deid.profile import Op
from devtools.dicomdata import decode_data_set, encode_data_set, identified_header
from server_agent.deidfind import ResearchRefusal, read_query
from server_agent.deidview import deid_view

from .support import EXPLICIT, IMPLICIT, SYNTAXES, answer, deidentify

REAL_UID = "1.2.826.0.1.3680043.10.1447.77.1.1"  # another image's real SOP Instance UID
NAME = "DOE^JANE"
DEMO = Profile(options=frozenset({Option.RETAIN_LONGITUDINAL_MODIFIED_DATES, Option.RETAIN_PATIENT_CHARACTERISTICS,
                                  Option.RETAIN_DEVICE_IDENTITY, Option.CLEAN_DESCRIPTORS,
                                  Option.RETAIN_SAFE_PRIVATE}),
               vocabulary=frozenset({"CT", "CHEST", "AXIAL", "WITH", "CONTRAST", "LESION", "REFERRED", "BY"}),
               safe_private=frozenset({SafePrivate(group=0x0019, creator="GEMS_ACQU_01", element=0x10)}))
BASIC = Profile()


def item(**keywords: object) -> Dataset:
    ds = Dataset()
    for keyword, value in keywords.items():
        setattr(ds, keyword, value)
    return ds


def _uid(keyword: str) -> Callable[[Dataset], str]:
    def smuggle(ds: Dataset) -> str:
        setattr(ds, keyword, REAL_UID)
        return REAL_UID
    return smuggle


def _text(keyword: str, value: str, needle: str) -> Callable[[Dataset], str]:
    def smuggle(ds: Dataset) -> str:
        setattr(ds, keyword, value)
        return needle
    return smuggle


def _nested_text(ds: Dataset) -> str:
    ds.ContentItemModifierSequence = [item(ValueType="TEXT", TextValue=f"referred by {NAME}")]
    return "DOE"


def _specimen(ds: Dataset) -> str:
    ds.SpecimenDescriptionSequence = [item(SpecimenIdentifier="S1", SpecimenUID="2.25.1", SpecimenPreparationSequence=[
        item(SpecimenPreparationStepContentItemSequence=[item(ValueType="TEXT", TextValue=f"from {NAME}")])])]
    return "DOE"


def _date_in_lo(ds: Dataset) -> str:
    ds.add_new(0x00189423, "LO", "CHEST 20260114")  # Acquisition Protocol Name
    return "20260114"


# One smuggled value each (the review's exploits/deid_header_leaks.py), with the needle that must not survive.
SMUGGLED = {
    "multi-frame source UID": _uid("MultiFrameSourceSOPInstanceUID"),
    "concatenation source UID": _uid("SOPInstanceUIDOfConcatenationSource"),
    "referenced fiducial UID": _uid("ReferencedFiducialUID"),
    "volume frame of reference UID": _uid("VolumeFrameOfReferenceUID"),
    "target frame of reference UID": _uid("TargetFrameOfReferenceUID"),
    "radiopharmaceutical event UID": _uid("RadiopharmaceuticalAdministrationEventUID"),
    "text value": _text("TextValue", f"Patient {NAME} MRN PAT-4711", "DOE"),
    "text value in a kept sequence": _nested_text,
    "specimen content item": _specimen,
    "comments on the scheduled step": _text("CommentsOnTheScheduledProcedureStep", f"pt {NAME} claustrophobic", "DOE"),
    "image ID": _text("ImageID", "PAT-4711", "PAT-4711"),
    "tracking ID": _text("TrackingID", f"{NAME} lesion 1", "DOE"),
    "contact display name": _text("ContactDisplayName", NAME, "DOE"),
    "HL7 instance identifier": _text("HL7InstanceIdentifier", "PAT-4711^^^SPRINGFIELD", "PAT-4711"),
    "retrieve URL": _text("RetrieveURL", f"https://pacs/studies/{REAL_UID}", REAL_UID),
    "pixel data provider URL": _text("PixelDataProviderURL", f"https://pacs/{REAL_UID}", REAL_UID),
    "a date in a kept LO": _date_in_lo,
}


@pytest.mark.parametrize("profile", [DEMO, BASIC], ids=["demo", "basic"])
@pytest.mark.parametrize("ts", SYNTAXES)
@pytest.mark.parametrize("case", list(SMUGGLED), ids=list(SMUGGLED))
def test_identity_where_the_table_does_not_look_never_reaches_the_researcher(case: str, ts: str,
                                                                             profile: Profile) -> None:
    ds = identified_header(patient_id="PAT-4711")
    needle = SMUGGLED[case](ds)
    _, new_bytes, new = deidentify(ds, ts, profile)
    assert needle.encode() not in new_bytes
    assert new.PatientIdentityRemoved == "YES"


def test_an_unlisted_reference_uid_becomes_the_projects_pseudonym() -> None:
    ds = identified_header(patient_id="PAT-4711")
    ds.MultiFrameSourceSOPInstanceUID = ds.SOPInstanceUID
    _, _, new = deidentify(ds, EXPLICIT, DEMO)
    assert new.MultiFrameSourceSOPInstanceUID == new.SOPInstanceUID != ds.SOPInstanceUID  # the reference holds


def test_unlisted_free_text_is_cleaned_with_clean_descriptors_and_removed_without() -> None:
    ds = identified_header(patient_id="PAT-4711")
    ds.add_new(0x00189423, "LO", "CT CHEST 20260114 DOE")  # Acquisition Protocol Name: unlisted
    ds.ContentItemModifierSequence = [item(ValueType="TEXT", TextValue=f"referred by {NAME}")]
    _, _, cleaned = deidentify(ds, EXPLICIT, DEMO)
    assert cleaned.AcquisitionProtocolName == "CT CHEST"
    assert cleaned.ContentItemModifierSequence[0].TextValue == "referred by"  # the words kept as written
    assert cleaned.ContentItemModifierSequence[0].ValueType == "TEXT"  # a code string: kept
    _, _, basic = deidentify(ds, EXPLICIT, BASIC)
    assert "AcquisitionProtocolName" not in basic and "TextValue" not in basic.ContentItemModifierSequence[0]


def test_what_is_kept_is_what_was_reviewed() -> None:
    ds = identified_header(patient_id="PAT-4711")
    ds.AnatomicRegionSequence = [item(CodeValue="T-D3000", CodingSchemeDesignator="SRT", CodeMeaning="Chest")]
    ds.ConvolutionKernel, ds.SoftwareVersions = "B30f", "VB42"
    ds.WindowCenterWidthExplanation = "LUNG"
    ds.ImageOrientationPatient, ds.SliceThickness, ds.BodyPartExamined = [1, 0, 0, 0, 1, 0], "1.5", "CHEST"
    ds.SOPClassUID = "1.2.840.113619.4.27"  # a vendor's private SOP class: a class, kept
    _, _, new = deidentify(ds, IMPLICIT, BASIC)
    code = new.AnatomicRegionSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == ("T-D3000", "SRT", "Chest")
    assert (new.ConvolutionKernel, new.SoftwareVersions, new.WindowCenterWidthExplanation) == ("B30f", "VB42", "LUNG")
    assert (new.SliceThickness, new.BodyPartExamined, new.Manufacturer) == (1.5, "CHEST", "ACME MEDICAL")
    assert new.SOPClassUID == "1.2.840.113619.4.27"
    assert new.SourceImageSequence[0].ReferencedSOPClassUID == CTImageStorage


# ---- F4: the dictionary's VR decides, not the stream's ----------------------------------------------------
def test_an_unlisted_date_or_name_written_as_lo_is_removed() -> None:
    ds = identified_header(patient_id="PAT-4711")
    ds.add_new(tag_for_keyword("ExpiryDate"), "LO", "20250314")  # a DA Table E.1-1 does not list
    ds.add_new(tag_for_keyword("EvaluatorName"), "LO", "SMITH^JOHN")  # a PN Table E.1-1 does not list
    ds.add_new(tag_for_keyword("StudyDate"), "LO", "20260114")  # a listed one: neither kept nor matched
    _, new_bytes, _ = deidentify(ds, EXPLICIT, DEMO)
    assert b"20250314" not in new_bytes and b"SMITH" not in new_bytes and b"20260114" not in new_bytes
    assert DEMO.op(tag_for_keyword("EvaluatorName"), "LO") is Op.REMOVE
    assert DEMO.op(tag_for_keyword("EvaluatorName"), "PN") is Op.DUMMY
    assert DEMO.op(tag_for_keyword("SmallestImagePixelValue"), "SS") is Op.KEEP  # "US or SS": both are its own
    assert DEMO.op(tag_for_keyword("Rows"), "UN") is Op.KEEP  # UN: the sender did not know; the dictionary decides
    assert DEMO.op(0x00020102) is DEMO.op(0x00000902) is DEMO.op(0x7FE00010) is Op.REMOVE  # meta, command, pixels


VIEW = deid_view({"id": "de-identify", "project": {"id": "STUDY-A", "scope": "STUDY-A"},
                  "profile": {"name": "basic", "options": ["retain-longitudinal-modified-dates",
                                                           "clean-descriptors"], "vocabulary": ["CT"]},
                  "pixels": {"allow_burned_in": False}})


@pytest.mark.parametrize(("keyword", "vr", "value"), [("ExpiryDate", "LO", "20260114"), ("EvaluatorName", "LO", "DOE*"),
                                                      ("ImageID", "SH", "PAT-4711"), ("TextValue", "UT", "DOE")])
def test_a_query_cannot_match_on_what_the_view_does_not_keep(keyword: str, vr: str, value: str) -> None:
    key = Dataset()
    key.QueryRetrieveLevel = "IMAGE"
    key.add_new(tag_for_keyword(keyword), vr, value)
    with pytest.raises(ResearchRefusal, match=keyword):
        read_query(encode_data_set(key, EXPLICIT), EXPLICIT, VIEW)


# ---- F5: only PS3.6's own UIDs are kept as they are -----------------------------------------------------
def test_an_instance_uid_under_the_dicom_root_is_replaced() -> None:
    ds = identified_header(patient_id="PAT-4711")
    ds.SOPInstanceUID = "1.2.840.10008.999.4711.19610704"  # a PACS-chosen UID encoding an MRN and a birth date
    ds.SourceImageSequence[0].ReferencedSOPInstanceUID = "1.2.840.10008.1.4.1.1"  # PS3.6's own (Talairach): kept
    _, new_bytes, new = deidentify(ds, EXPLICIT, DEMO)
    assert b"1.2.840.10008.999" not in new_bytes and new.SOPInstanceUID.startswith("2.25.")
    assert new.SourceImageSequence[0].ReferencedSOPInstanceUID == "1.2.840.10008.1.4.1.1"


# ---- F10: no pixels in a C-FIND match ---------------------------------------------------------------------
@pytest.mark.parametrize("ts", SYNTAXES)
def test_a_find_match_carries_no_pixel_data(ts: str) -> None:
    match = identified_header(patient_id="PAT-4711")  # the whole instance, as a PACS may answer a pixel key
    data = encode_data_set(match, ts)
    out = deidentify_identifier(data, ts, DEMO, answer(needs(data, ts, DEMO)))
    new = decode_data_set(out.data, ts)
    assert "PixelData" not in new and bytes(range(256)) not in out.data
    assert new.PatientID == out.patient_id


# ---- nested Patient IDs: only the data set's own patient gets a pseudonym ---------------------------------
def test_another_patients_id_in_a_kept_sequence_gets_no_pseudonym() -> None:
    ds = identified_header(patient_id="PAT-4711")
    ds.SourcePatientGroupIdentificationSequence = [item(PatientID="PAT-0815")]
    ds.GroupOfPatientsIdentificationSequence = [item(PatientID="PAT-4711"), item(PatientID="PAT-0816")]
    data = encode_data_set(ds, EXPLICIT)
    wanted = needs(data, EXPLICIT, DEMO)
    assert wanted.patient_ids == {"PAT-4711"}, "no pseudonym is minted for a patient outside the data set"
    _, new_bytes, new = deidentify(ds, EXPLICIT, DEMO)
    assert b"PAT-0815" not in new_bytes and b"PAT-0816" not in new_bytes
    assert new.SourcePatientGroupIdentificationSequence[0].PatientID == "DEIDENTIFIED"
    group = new.GroupOfPatientsIdentificationSequence
    assert (group[0].PatientID, group[1].PatientID) == (new.PatientID, "DEIDENTIFIED")
    assert needs(data, EXPLICIT, DEMO, patient_id="PAT-4711") == Needs(patient_ids=frozenset({"PAT-4711"}),
                                                                        uids=wanted.uids)


# ---- Retain Safe Private: the list says where a safe value is, not what a PACS wrote there ----------------
@pytest.mark.parametrize("ts", SYNTAXES)
def test_a_name_in_a_safe_private_slot_is_not_kept(ts: str) -> None:
    ds = identified_header(patient_id="PAT-4711")
    ds.add_new(0x00190010, "LO", "GEMS_ACQU_01")
    ds.add_new(0x00191010, "LO", "DOE^JANE PAT-4711")  # the listed slot, holding a name and an ID
    ds.add_new(0x00190011, "LO", "SAFE VENDOR")
    ds.add_new(0x00191105, "DS", "1.25\\2.5")
    ds.add_new(0x00191106, "US", 512)
    safe = Profile(options=frozenset({Option.RETAIN_SAFE_PRIVATE}), safe_private=frozenset(
        {SafePrivate(group=0x0019, creator="GEMS_ACQU_01", element=0x10),
         SafePrivate(group=0x0019, creator="SAFE VENDOR", element=0x05),
         SafePrivate(group=0x0019, creator="SAFE VENDOR", element=0x06)}))
    _, new_bytes, new = deidentify(ds, ts, safe)
    assert b"DOE" not in new_bytes and 0x00191010 not in new
    assert 0x00191105 in new and 0x00191106 in new  # numbers: kept, in every syntax


# ---- kept values must be of their VR; kept UIDs must be definitions (second attacker review, M2 and M3) --
@pytest.mark.parametrize(("keyword", "vr", "value"), [
    ("BodyPartExamined", "CS", b"doe^jane PAT-4711 19610704"),  # not Code String characters, nor 16 bytes
    ("SliceThickness", "DS", b"PAT-4711 DOE^JANE "),  # not a Decimal String
    ("SeriesNumber", "IS", b"PAT-4711"),  # not an Integer String
    ("ImageType", "CS", b"ORIGINAL\\PAT4711 DOE JANE X"),  # one value of a list too long
])
def test_a_kept_value_that_is_not_of_its_vr_is_not_kept(keyword: str, vr: str, value: bytes) -> None:
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    ds = identified_header(patient_id="PAT-4711")
    tag = Tag(tag_for_keyword(keyword))
    ds[tag] = RawDataElement(tag, vr, len(value), value, 0, False, True)
    _, new, _ = deidentify(ds, EXPLICIT, VIEW.profile)
    assert b"4711" not in new and keyword not in decode_data_set(new, EXPLICIT)


@pytest.mark.parametrize(("keyword", "value"), [("Modality", "CT"), ("SliceThickness", "2.5"),
                                                ("SeriesNumber", "-12"), ("ImageType", "ORIGINAL\\PRIMARY\\AXIAL")])
def test_a_kept_value_of_its_vr_is_kept(keyword: str, value: str) -> None:
    ds = identified_header(patient_id="PAT-4711")
    setattr(ds, keyword, value.split("\\") if "\\" in value else value)
    _, new, _ = deidentify(ds, EXPLICIT, VIEW.profile)
    assert keyword in decode_data_set(new, EXPLICIT) and value.encode() in new


def test_a_definition_uid_holding_an_instance_uid_is_replaced_and_a_real_one_kept() -> None:
    ds = identified_header(patient_id="PAT-4711")
    real_study = ds.StudyInstanceUID
    ref = Dataset()
    ref.ReferencedSOPClassUID = real_study  # a "SOP class" as a PACS wrote it: a link to the real study
    ref.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.10.1447.77.1.1.2"
    other = Dataset()
    other.ReferencedSOPClassUID = CTImageStorage  # a real SOP class: kept
    other.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.10.1447.77.1.1.3"
    ds.ReferencedImageSequence = [ref, other]
    ds.add_new(0x0008010C, "UI", real_study)  # Coding Scheme UID at the top level
    _, new, _ = deidentify(ds, EXPLICIT, VIEW.profile)
    assert real_study.encode() not in new
    shown = decode_data_set(new, EXPLICIT)
    assert shown.ReferencedImageSequence[1].ReferencedSOPClassUID == CTImageStorage
    assert shown.SOPClassUID == ds.SOPClassUID  # the instance's own class: as the command names it
