"""De-identification of real pydicom-made headers, read back the way a researcher's viewer reads them."""

from __future__ import annotations

import zlib

import pytest
from pydicom.dataset import Dataset

from deid import (
    MissingPseudonym,
    Needs,
    NotDeidentifiable,
    Option,
    PatientPseudonym,
    Profile,
    Pseudonyms,
    SafePrivate,
    deidentify_header,
    deidentify_identifier,
    header_end,
    needs,
)
from devtools.dicomdata import decode_data_set, encode_data_set, identified_header

from .support import EXPLICIT, IMPLICIT, OFFSET, SYNTAXES, answer, deidentify, leaks

RESEARCH = Profile(options=frozenset({Option.RETAIN_LONGITUDINAL_MODIFIED_DATES, Option.CLEAN_DESCRIPTORS,
                                      Option.RETAIN_PATIENT_CHARACTERISTICS}),
                   vocabulary=frozenset({"CT", "CHEST", "WITH", "CONTRAST", "DOE", "FOR", "ROUTINE"}))
BASIC = Profile()


@pytest.mark.parametrize("ts", SYNTAXES)
@pytest.mark.parametrize("kind", ["CT", "US", "SC"])
@pytest.mark.parametrize("profile", [BASIC, RESEARCH], ids=["basic", "research"])
def test_no_identifying_value_survives_anywhere(ts: str, kind: str, profile: Profile) -> None:
    original = identified_header(kind)
    data, new_bytes, new = deidentify(original, ts, profile)
    assert leaks(original, new_bytes, new) == []
    assert new.PixelData == original.PixelData  # and the bytes after the header are the original bytes
    end = header_end(data, ts, complete=True)
    assert end is not None and new_bytes.endswith(data[end:])


@pytest.mark.parametrize("ts", SYNTAXES)
def test_research_profile_keeps_what_its_options_retain(ts: str) -> None:
    _, _, new = deidentify(identified_header(), ts, RESEARCH)
    assert new.StudyDate == "20251205"  # 2026-01-14 moved 40 days back
    assert new.AcquisitionDateTime == "20251205101502.250000"  # time of day kept, whole days moved
    assert new.StudyTime == "101500"
    assert (new.PatientSex, new.PatientAge, new.PatientWeight) == ("F", "064Y", 71.5)  # patient characteristics
    assert new.StudyDescription == "CT CHEST WITH CONTRAST"  # cleaned: DOE is the patient's name
    assert new.RequestAttributesSequence[0].RequestedProcedureDescription == "CT CHEST FOR"
    assert "RequestedProcedureID" not in new.RequestAttributesSequence[0]
    assert new.LongitudinalTemporalInformationModified == "MODIFIED"
    codes = [item.CodeValue for item in new.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113108", "113107", "113105"]
    assert new.PatientIdentityRemoved == "YES"


@pytest.mark.parametrize("ts", SYNTAXES)
def test_basic_profile_removes_what_options_would_keep(ts: str) -> None:
    _, _, new = deidentify(identified_header(), ts, BASIC)
    assert new.StudyDate == ""  # Z: no date at all without Modified Dates
    assert new.PatientSex == "" and "PatientAge" not in new and "PatientWeight" not in new
    assert new.StationName == "DEIDENTIFIED" and "StudyDescription" not in new
    assert new.LongitudinalTemporalInformationModified == "REMOVED"
    assert [item.CodeValue for item in new.DeidentificationMethodCodeSequence] == ["113100"]
    assert (new.PatientID, new.PatientName) == (new.PatientName, new.PatientID)  # pseudonymous, one token
    assert new.PatientID.startswith("P") and new.PatientID != "PAT-4711"


def test_retain_device_identity_keeps_the_device_and_says_so() -> None:
    device = Profile(options=frozenset({Option.RETAIN_DEVICE_IDENTITY}))
    _, _, new = deidentify(identified_header(), EXPLICIT, device)
    assert (new.DeviceSerialNumber, new.StationName) == ("SN-884422", "CT7-SPRINGFIELD")
    assert new.InstitutionName == "DEIDENTIFIED"  # the institution is another option
    assert [item.CodeValue for item in new.DeidentificationMethodCodeSequence] == ["113100", "113109"]
    _, _, basic = deidentify(identified_header(), EXPLICIT, BASIC)
    assert basic.DeviceSerialNumber == basic.StationName == "DEIDENTIFIED"


def test_kept_attributes_are_the_original_bytes() -> None:
    original = identified_header()
    _, _, new = deidentify(original, EXPLICIT, RESEARCH)
    for keyword in ("ImageType", "SOPClassUID", "Modality", "Manufacturer", "ManufacturerModelName", "Rows",
                    "BitsStored", "BurnedInAnnotation", "SeriesNumber", "InstanceNumber", "SpecificCharacterSet"):
        assert new[keyword].value == original[keyword].value, keyword


def test_uids_are_consistent_within_a_study_and_references_follow() -> None:
    one = identified_header(instance=1, pixels=False)
    two = identified_header(instance=2, pixels=False)
    two.SourceImageSequence[0].ReferencedSOPInstanceUID = one.SOPInstanceUID
    profile = RESEARCH
    wanted = needs(encode_data_set(one, EXPLICIT), EXPLICIT, profile) | needs(encode_data_set(two, EXPLICIT),
                                                                               EXPLICIT, profile)
    pseudonyms = answer(wanted)
    new = [decode_data_set(deidentify_header(encode_data_set(ds, EXPLICIT), EXPLICIT, profile, pseudonyms).data,
                           EXPLICIT) for ds in (one, two)]
    assert new[0].StudyInstanceUID == new[1].StudyInstanceUID != one.StudyInstanceUID
    assert new[0].SeriesInstanceUID == new[1].SeriesInstanceUID
    assert new[0].FrameOfReferenceUID == new[1].FrameOfReferenceUID
    assert new[0].SOPInstanceUID != new[1].SOPInstanceUID
    assert new[1].SourceImageSequence[0].ReferencedSOPInstanceUID == new[0].SOPInstanceUID
    assert new[0].SOPInstanceUID.startswith("2.25.")
    assert new[0].SourceImageSequence[0].ReferencedSOPClassUID == one.SOPClassUID  # a class, not an instance


def test_needs_is_exactly_what_the_rewrite_asks_for() -> None:
    data = encode_data_set(identified_header(pixels=False), IMPLICIT)
    wanted = needs(data, IMPLICIT, RESEARCH)
    assert wanted.patient_ids == {"PAT-4711"}  # the patient's own ID; the SSN in Other Patient IDs is removed
    assert "1.2.826.0.1.3680043.10.1447.77.1" in wanted.uids
    assert not any(uid.startswith("1.2.840.10008.") for uid in wanted.uids)
    full = answer(wanted)
    deidentify_header(data, IMPLICIT, RESEARCH, full)
    for missing in sorted(wanted.uids)[:3]:
        short = Pseudonyms(patients=full.patients, uids={k: v for k, v in full.uids.items() if k != missing})
        with pytest.raises(MissingPseudonym):
            deidentify_header(data, IMPLICIT, RESEARCH, short)
    with pytest.raises(MissingPseudonym):
        deidentify_header(data, IMPLICIT, RESEARCH, Pseudonyms(uids=full.uids))


def test_dates_need_a_patient_and_the_caller_may_name_it() -> None:
    ds = Dataset()
    ds.StudyDate = "20260114"
    ds.StudyInstanceUID = "1.2.3.4"
    data = encode_data_set(ds, EXPLICIT)
    with pytest.raises(MissingPseudonym, match="Patient ID"):
        deidentify_identifier(data, EXPLICIT, RESEARCH, answer(needs(data, EXPLICIT, RESEARCH)))
    wanted = needs(data, EXPLICIT, RESEARCH, patient_id="PAT-4711")
    assert wanted.patient_ids == {"PAT-4711"}
    out = deidentify_identifier(data, EXPLICIT, RESEARCH, answer(wanted), patient_id="PAT-4711")
    assert decode_data_set(out.data, EXPLICIT).StudyDate == "20251205"
    assert out.patient_id is not None and out.patient_id.startswith("P")


def test_a_c_find_match_gets_no_markers_and_deflate_is_read_and_written() -> None:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyDate = "20260114"
    ds.PatientName = "DOE^JANE"
    ds.PatientID = "PAT-4711"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.10.1447.77.1"
    plain = encode_data_set(ds, EXPLICIT)
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = compressor.compress(plain) + compressor.flush()
    deflated += b"\x00" * (len(deflated) & 1)
    ts = "1.2.840.10008.1.2.1.99"
    out = deidentify_identifier(deflated, ts, RESEARCH, answer(needs(deflated, ts, RESEARCH)))
    new = decode_data_set(zlib.decompress(out.data, -zlib.MAX_WBITS), EXPLICIT)
    assert sorted(new.dir()) == ["PatientID", "PatientName", "QueryRetrieveLevel", "StudyDate", "StudyInstanceUID"]
    assert new.StudyDate == "20251205" and new.PatientName == new.PatientID == out.patient_id


def test_a_deflated_header_is_refused() -> None:
    with pytest.raises(NotDeidentifiable):
        header_end(b"\x00\x00", "1.2.840.10008.1.2.1.99")
    with pytest.raises(NotDeidentifiable):
        deidentify_header(b"", "1.2.840.10008.1.2.1.99", BASIC, Pseudonyms())


@pytest.mark.parametrize("ts", SYNTAXES)
def test_header_end_fed_whole_byte_by_byte_and_with_more(ts: str) -> None:
    data = encode_data_set(identified_header(), ts)
    end = header_end(data, ts, complete=True)
    assert end is not None and data[end:end + 4] == (b"\xe0\x7f\x10\x00" if ts != SYNTAXES[2] else b"\x7f\xe0\x00\x10")
    answers = {n: header_end(data[:n], ts) for n in range(0, end + 40)}
    assert all(answers[n] is None for n in range(end + 4))  # the tag of Pixel Data must be there
    assert all(answers[n] == end for n in range(end + 4, end + 40))
    assert header_end(data[:end], ts, complete=True) == end  # no pixel data: the whole set is header
    with pytest.raises(NotDeidentifiable):
        deidentify_header(data, ts, BASIC, Pseudonyms())


def test_private_attributes_go_unless_listed_safe() -> None:
    ds = identified_header()
    ds.add_new(0x00190010, "LO", "SAFE VENDOR")
    ds.add_new(0x00191005, "DS", "1.25")
    ds.add_new(0x00191006, "LO", "JANE DOE")
    for profile in (BASIC, Profile(options=frozenset({Option.RETAIN_SAFE_PRIVATE}))):
        _, _, new = deidentify(ds, EXPLICIT, profile)
        assert not [element for element in new if element.tag.is_private]
        assert [item.CodeValue for item in new.DeidentificationMethodCodeSequence] == ["113100"]  # nothing kept
    safe = Profile(options=frozenset({Option.RETAIN_SAFE_PRIVATE}),
                   safe_private=frozenset({SafePrivate(group=0x0019, creator="SAFE VENDOR", element=0x05)}))
    for ts in SYNTAXES:
        _original, new_bytes, new = deidentify(ds, ts, safe)
        assert [int(element.tag) for element in new if element.tag.is_private] == [0x00190010, 0x00191005]
        assert new[0x00191005].value in ("1.25", 1.25, b"1.25") and b"JANE" not in new_bytes
        assert "113111" in [item.CodeValue for item in new.DeidentificationMethodCodeSequence]


def test_sequences_of_undefined_length_keep_their_form() -> None:
    ds = identified_header(pixels=False)
    ds["RequestAttributesSequence"].is_undefined_length = True
    ds["SourceImageSequence"].is_undefined_length = True
    for ts in SYNTAXES:
        data = encode_data_set(ds, ts)
        assert data.count(b"\xfe\xff\xdd\xe0") + data.count(b"\xff\xfe\xe0\xdd") == 2
        out = deidentify_header(data, ts, RESEARCH, answer(needs(data, ts, RESEARCH))).data
        assert out.count(b"\xfe\xff\xdd\xe0") + out.count(b"\xff\xfe\xe0\xdd") == 2
        new = decode_data_set(out, ts)
        assert new.RequestAttributesSequence[0].RequestedProcedureDescription == "CT CHEST FOR"


def test_group_lengths_unknown_tags_and_overlays_are_removed() -> None:
    ds = identified_header(pixels=False)
    ds.add_new(0x00080000, "UL", 1234)  # group length: wrong once the group is rewritten
    ds.add_new(0x60000010, "US", 16)  # overlay rows, with its data below
    ds.add_new(0x60003000, "OW", b"\x00\x01" * 16)
    _, _, new = deidentify(ds, EXPLICIT, BASIC)
    assert 0x00080000 not in new and 0x60000010 not in new and 0x60003000 not in new


def test_unlisted_person_names_and_dates_are_not_trusted() -> None:
    ds = Dataset()
    ds.PatientID = "PAT-4711"
    ds.add_new(0x00181200, "DA", "20260110")  # Date of Last Calibration: listed (X)
    ds.add_new(0x0040A123, "PN", "DOE^JOHN")  # Person Name: listed (D)
    ds.add_new(0x00400006, "PN", "NURSE^NANCY")  # Scheduled Performing Physician's Name: listed
    ds.add_new(0x00181202, "DA", "20251230")  # Date of Secondary Capture... treated as a date either way
    out = deidentify_identifier(encode_data_set(ds, EXPLICIT), EXPLICIT, RESEARCH,
                                answer(Needs(patient_ids=frozenset({"PAT-4711"}))))
    assert b"JOHN" not in out.data and b"NANCY" not in out.data and b"20251230" not in out.data


def test_patient_pseudonyms_are_what_the_service_said() -> None:
    data = encode_data_set(identified_header(pixels=False), EXPLICIT)
    patient = PatientPseudonym(patient_id="STUDY-A-7Q2K", patient_name="STUDY-A^7Q2K", date_offset_days=-1)
    pseudonyms = Pseudonyms(patients={"PAT-4711": patient},
                            uids=answer(needs(data, EXPLICIT, BASIC)).uids)
    out = deidentify_header(data, EXPLICIT, RESEARCH, pseudonyms)
    new = decode_data_set(out.data, EXPLICIT)
    assert (new.PatientID, str(new.PatientName), new.StudyDate, out.patient_id) == (
        "STUDY-A-7Q2K", "STUDY-A^7Q2K", "20260113", "STUDY-A-7Q2K")
    assert OFFSET < 0
