"""deid/supplement.py: its rows say what PS3.6 says, shadow no Table E.1-1 row, and leave no VR without an action."""

from __future__ import annotations

from pydicom._dicom_dict import DicomDictionary

from deid import Option, Profile, supplement, table
from deid.profile import Op

# Keyword endings of UIDs that name a definition (a class, an encoding, a vocabulary), never an instance.
DEFINITION = ("ClassUID", "TransferSyntaxUID", "TransferSyntaxUIDInFile", "ClassUIDInFile", "CodingSchemeUID",
              "SOPClassesInStudy", "SOPClassesInSeries", "SOPClassesSupported", "ContextUID", "MappingResourceUID")


def test_every_row_is_the_attribute_it_names_and_no_row_overrides_the_table() -> None:
    for tag, (keyword, where, why) in supplement.KEEP.items():
        entry = DicomDictionary[tag]
        assert entry[4] == keyword and where and why, hex(tag)
        assert tag not in table.BASIC, f"{keyword}: Table E.1-1 lists it, the supplement must not"
        assert entry[0] not in ("PN", "DA", "DT", "TM", "AS", "AE"), f"{keyword}: a person, a time, a place"


def test_every_vr_of_the_dictionary_has_an_action_and_text_is_never_kept_by_default() -> None:
    vrs = {entry[0] for entry in DicomDictionary.values()} - {"NONE"}
    assert vrs <= set(supplement.BY_VR), vrs - set(supplement.BY_VR)
    for vr in ("LO", "SH", "ST", "LT", "UT", "UC", "UR", "PN", "UI", "OB", "AE", "DA", "DT"):
        assert supplement.BY_VR[vr] != "K", vr


def test_every_definition_uid_is_kept_and_every_other_unlisted_uid_replaced() -> None:
    profile = Profile(options=frozenset(Option))
    for tag, entry in DicomDictionary.items():
        if entry[0] != "UI" or tag in table.BASIC or (tag >> 16) in (0x0000, 0x0002):
            continue
        definition = entry[4].endswith(DEFINITION)
        assert (profile.op(tag, "UI") is Op.KEEP) == definition, entry[4]
        assert profile.op(tag, "UI") in (Op.KEEP, Op.UID), entry[4]


def test_an_unlisted_attribute_is_removed_cleaned_or_kept_by_its_dictionary_vr() -> None:
    clean = Profile(options=frozenset({Option.CLEAN_DESCRIPTORS, Option.RETAIN_LONGITUDINAL_MODIFIED_DATES}))
    basic = Profile()
    for keyword_tag, vr, with_clean, without in [
        (0x0040A160, "UT", Op.CLEAN, Op.REMOVE),  # Text Value
        (0x00540400, "SH", Op.CLEAN, Op.REMOVE),  # Image ID
        (0x00081190, "UR", Op.REMOVE, Op.REMOVE),  # Retrieve URL
        (0x04000520, "OB", Op.REMOVE, Op.REMOVE),  # Encrypted Content: the original attributes
        (0x00141020, "DA", Op.SHIFT, Op.DUMMY),  # Expiry Date
        (0x00142006, "PN", Op.DUMMY, Op.DUMMY),  # Evaluator Name
        (0x00081167, "UI", Op.UID, Op.UID),  # Multi-frame Source SOP Instance UID
        (0x00080070, "LO", Op.KEEP, Op.KEEP),  # Manufacturer
        (0x00280010, "US", Op.KEEP, Op.KEEP),  # Rows
        (0x54001010, "OW", Op.KEEP, Op.KEEP),  # Waveform Data: samples, like pixels
    ]:
        assert (clean.op(keyword_tag, vr), basic.op(keyword_tag, vr)) == (with_clean, without), hex(keyword_tag)
