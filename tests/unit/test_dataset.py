"""The strict data-set reader (dicomwire.dataset): golden bytes, annotated, in every transfer syntax.

Each malformed case is a data set some reader would read one way and another reader another way (or
that PS3.5 forbids outright); the reader must refuse it with MalformedDataSet and nothing else.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from pydicom._dicom_dict import DicomDictionary

from devtools.gen_sequence_tags import render
from dicomwire.dataset import (
    DEFLATED_EXPLICIT_VR_LE,
    EXPLICIT_VR_BE,
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    MAX_DEPTH,
    Cut,
    MalformedDataSet,
    encode_element,
    read_data_set,
    with_element,
    without_element,
)
from dicomwire.sequence_tags import SEQUENCE_TAGS, is_sequence

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


def implicit(tag: int, value: bytes) -> bytes:
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value


def explicit(tag: int, vr: str, value: bytes, order: str = "<") -> bytes:
    return encode_element(EXPLICIT_VR_BE if order == ">" else EXPLICIT_VR_LE, tag, vr, value)


def header(tag: int, length: int, order: str = "<") -> bytes:
    """An item or delimiter header, or an implicit element header of any length (undefined too)."""
    return struct.pack(order + "HHI", tag >> 16, tag & 0xFFFF, length)


def explicit_long(tag: int, vr: str, length: int) -> bytes:
    return struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, vr.encode(), 0, length)


LEVEL = implicit(0x00080052, b"STUDY ")
PATIENT = implicit(0x00100020, b"PAT-REF-1 ")
STAR = implicit(0x00100020, b"* ")
STUDY = implicit(0x0020000D, b"1.2.3\x00")
ITEM, ITEM_END, SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF


def tags(data: bytes, syntax: str | None = None, **kwargs: bool) -> list[int]:
    return [element.tag for element in read_data_set(data, syntax, **kwargs).elements]


def test_an_identifier_reads_to_its_elements_and_values() -> None:
    read = read_data_set(LEVEL + PATIENT + STUDY, IMPLICIT_VR_LE)
    assert [e.tag for e in read.elements] == [0x00080052, 0x00100020, 0x0020000D]
    assert read.value(read.elements[1]) == b"PAT-REF-1 " and read.elements[1].vr is None
    assert read.complete and read.cut is None and read.get(0x00100021) is None


@pytest.mark.parametrize("twice", [STAR + PATIENT, PATIENT + STAR, PATIENT + PATIENT])
def test_a_patient_id_twice_is_malformed_in_either_order(twice: bytes) -> None:
    with pytest.raises(MalformedDataSet, match=r"\(0010,0020\) occurs twice"):
        read_data_set(LEVEL + twice + STUDY, IMPLICIT_VR_LE)


def test_tags_out_of_order_are_malformed() -> None:
    with pytest.raises(MalformedDataSet, match="out of ascending tag order"):
        read_data_set(LEVEL + STUDY + STAR, IMPLICIT_VR_LE)  # DCMTK sorts it back in; a stop-early reader misses it


@pytest.mark.parametrize(("data", "why"), [
    (implicit(0x00000900, b"\x00\x00") + LEVEL, "not a data element"),  # a command element
    (implicit(0x00020010, b"1.2\x00") + LEVEL, "not a data element"),  # file meta information
    (implicit(0x00070010, b"AB"), "not a data element"),  # PS3.5 7.1: groups 1, 3, 5, 7 are not used
    (LEVEL + header(ITEM, 0), "not a data element"),  # an item where an element belongs
    (LEVEL + header(SEQ_END, 0), "not a data element"),
    (implicit(0x00100020, b"ODD"), "odd length"),  # PS3.5 7.1.1
    (LEVEL + header(0x00100020, 64) + b"PAT-1 ", "runs past the end"),  # length overruns the data set
    (LEVEL + b"\x10\x00\x20", "runs past the end"),  # ends inside a header
])
def test_what_ps35_forbids_in_a_data_set(data: bytes, why: str) -> None:
    with pytest.raises(MalformedDataSet, match=why):
        read_data_set(data, IMPLICIT_VR_LE)


@pytest.mark.parametrize(("data", "why"), [
    (b"\x10\x00\x20\x00XX\x02\x00AB", "no valid VR"),
    (b"\x10\x00\x20\x00lo\x02\x00AB", "no valid VR"),
    (struct.pack("<HH2sHI", 0x0010, 0x1010, b"OB", 1, 2) + b"AB", "reserved bytes"),
    (struct.pack("<HH2sH", 0x0028, 0x0010, b"UL", 6) + b"\x00" * 6, "multiple of 4"),  # 1.5 values
    (explicit_long(0x00100010, "UT", UNDEFINED) + header(SEQ_END, 0), "undefined length"),
    (explicit_long(0x7FE00010, "OB", UNDEFINED) + header(ITEM, 0) + header(SEQ_END, 0), "undefined length"),
])
def test_explicit_vr_headers(data: bytes, why: str) -> None:
    with pytest.raises(MalformedDataSet, match=why):
        read_data_set(data, EXPLICIT_VR_LE)


def sequence(tag: int, *items: bytes, undefined: bool = True, items_undefined: bool = True) -> bytes:
    body = b"".join(header(ITEM, UNDEFINED) + item + header(ITEM_END, 0) if items_undefined
                    else header(ITEM, len(item)) + item for item in items)
    if undefined:
        return header(tag, UNDEFINED) + body + header(SEQ_END, 0)
    return header(tag, len(body)) + body


REFERENCED_STUDY = 0x00081110  # SQ
OTHER_PATIENT_IDS = 0x00101002  # SQ


@pytest.mark.parametrize("undefined", [True, False])
@pytest.mark.parametrize("items_undefined", [True, False])
def test_sequences_nested_with_any_lengths(undefined: bool, items_undefined: bool) -> None:
    inner = sequence(REFERENCED_STUDY, implicit(0x00081155, b"1.2\x00"), undefined=undefined,
                     items_undefined=items_undefined)
    outer = sequence(OTHER_PATIENT_IDS, inner + implicit(0x00100020, b"OTHER1"), b"", undefined=undefined,
                     items_undefined=items_undefined)
    read = read_data_set(LEVEL + PATIENT + outer + STUDY, IMPLICIT_VR_LE)
    assert [e.tag for e in read.elements] == [0x00080052, 0x00100020, OTHER_PATIENT_IDS, 0x0020000D]
    assert read.elements[2].undefined_length is undefined
    assert read.value(read.elements[1]) == b"PAT-REF-1 "  # the Patient ID inside the sequence is another level


@pytest.mark.parametrize(("data", "why"), [
    # an element's length runs past the end of its item (defined length 10, element of 12)
    (header(OTHER_PATIENT_IDS, 18) + header(ITEM, 10) + implicit(0x00100020, b"ABCD") + STUDY, "runs past"),
    # an item runs past the end of its sequence
    (header(OTHER_PATIENT_IDS, 16) + header(ITEM, 12) + implicit(0x00100020, b"ABCD"), "runs past"),
    # duplicate inside an item
    (sequence(OTHER_PATIENT_IDS, implicit(0x00100020, b"AB") + implicit(0x00100020, b"CD")), "occurs twice"),
    # out of order inside an item
    (sequence(OTHER_PATIENT_IDS, implicit(0x00100021, b"AB") + implicit(0x00100020, b"CD")), "out of ascending"),
    # a sequence delimiter where an item delimiter belongs
    (header(OTHER_PATIENT_IDS, UNDEFINED) + header(ITEM, UNDEFINED) + header(SEQ_END, 0), "not a data element"),
    # something else where an item belongs
    (header(OTHER_PATIENT_IDS, UNDEFINED) + implicit(0x00100020, b"AB") + header(SEQ_END, 0), "where an item"),
    # delimiters must have length 0 (PS3.5 7.5)
    (header(OTHER_PATIENT_IDS, UNDEFINED) + header(SEQ_END, 4) + b"\0" * 4, "non-zero length"),
    (header(OTHER_PATIENT_IDS, UNDEFINED) + header(ITEM, UNDEFINED) + header(ITEM_END, 2) + b"\0\0"
     + header(SEQ_END, 0), "non-zero length"),
    # never delimited: the data set ends inside the sequence
    (header(OTHER_PATIENT_IDS, UNDEFINED) + header(ITEM, 0), "runs past"),
    # an item delimiter in an item of defined length
    (header(OTHER_PATIENT_IDS, 16) + header(ITEM, 8) + header(ITEM_END, 0), "not a data element"),
    # undefined length for an element that is no sequence (Patient Name, LO in PS3.6)
    (header(0x00100010, UNDEFINED) + header(SEQ_END, 0), "undefined length"),
    (header(0x7FE00010, UNDEFINED) + header(SEQ_END, 0), "undefined length"),  # no encapsulation in implicit
])
def test_malformed_sequences(data: bytes, why: str) -> None:
    with pytest.raises(MalformedDataSet, match=why):
        read_data_set(data, IMPLICIT_VR_LE)


def test_nesting_depth_is_bounded() -> None:
    def nested(depth: int) -> bytes:
        body = b""
        for _ in range(depth):
            body = sequence(OTHER_PATIENT_IDS, body)
        return body

    assert tags(nested(MAX_DEPTH), IMPLICIT_VR_LE) == [OTHER_PATIENT_IDS]
    with pytest.raises(MalformedDataSet, match="nested deeper"):
        read_data_set(nested(MAX_DEPTH + 1), IMPLICIT_VR_LE)
    with pytest.raises(MalformedDataSet):  # the attacker's version: bounded work, no RecursionError
        read_data_set(nested(5000), IMPLICIT_VR_LE)


def test_a_private_sequence_of_undefined_length_and_un_as_a_sequence() -> None:
    private = header(0x00091010, UNDEFINED) + header(ITEM, UNDEFINED) + implicit(0x00100020, b"AB") \
        + header(ITEM_END, 0) + header(SEQ_END, 0)
    assert tags(implicit(0x00090010, b"ACME") + private, IMPLICIT_VR_LE) == [0x00090010, 0x00091010]
    # PS3.5 6.2.2: UN of undefined length, its items in Implicit VR LE inside an explicit data set
    un = explicit_long(0x00091010, "UN", UNDEFINED) + private[8:]
    read = read_data_set(explicit(0x00090010, "LO", b"ACME") + un + explicit(0x00100020, "LO", b"P1"),
                         EXPLICIT_VR_LE)
    assert [e.vr for e in read.elements] == ["LO", "UN", "LO"]


def test_encapsulated_pixel_data_only_where_the_syntax_is_encapsulated() -> None:
    pixels = (explicit_long(0x7FE00010, "OB", UNDEFINED) + header(ITEM, 0) + header(ITEM, 4) + b"\xff\xd8\xff\xd9"
              + header(SEQ_END, 0))
    data = explicit(0x00100020, "LO", b"P1") + pixels
    assert tags(data, JPEG_BASELINE) == [0x00100020, 0x7FE00010]
    for native in (EXPLICIT_VR_LE, EXPLICIT_VR_BE):
        with pytest.raises(MalformedDataSet):
            read_data_set(data, native)
    odd = data.replace(header(ITEM, 4) + b"\xff\xd8\xff\xd9", header(ITEM, 3) + b"\xff\xd8\xff")
    with pytest.raises(MalformedDataSet, match="fragments"):
        read_data_set(odd, JPEG_BASELINE)


def test_big_endian() -> None:
    data = (explicit(0x00080052, "CS", b"STUDY ", ">") + explicit(0x00100020, "LO", b"PAT-1 ", ">")
            + explicit(0x00280010, "US", b"\x02\x00", ">"))
    read = read_data_set(data, EXPLICIT_VR_BE)
    assert [e.tag for e in read.elements] == [0x00080052, 0x00100020, 0x00280010]
    with pytest.raises(MalformedDataSet):  # the same bytes read as little endian are something else
        read_data_set(data, EXPLICIT_VR_LE)


def deflate(plain: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(plain) + compressor.flush()


def test_deflated_identifiers_are_inflated_before_they_are_read() -> None:
    plain = explicit(0x00080052, "CS", b"STUDY ") + explicit(0x00100020, "LO", b"PAT-1 ")
    stream = deflate(plain)
    read = read_data_set(stream, DEFLATED_EXPLICIT_VR_LE)
    assert read.data == plain and read.value(read.elements[1]) == b"PAT-1 "
    assert read_data_set(stream + b"\x00", DEFLATED_EXPLICIT_VR_LE).data == plain  # the even-length pad
    with pytest.raises(MalformedDataSet, match="follow the end"):
        read_data_set(stream + b"\x10\x00\x20\x00", DEFLATED_EXPLICIT_VR_LE)  # hidden after the stream
    with pytest.raises(MalformedDataSet, match="ends before"):
        read_data_set(stream[:-3], DEFLATED_EXPLICIT_VR_LE)
    with pytest.raises(MalformedDataSet, match="cannot be inflated"):
        read_data_set(b"\xff" * 16, DEFLATED_EXPLICIT_VR_LE)
    with pytest.raises(MalformedDataSet):  # what today's reader did: read the deflated bytes as plain
        read_data_set(stream, EXPLICIT_VR_LE)


def test_a_deflate_bomb_is_bounded() -> None:
    bomb = deflate(explicit_long(0x00091010, "OB", 1 << 24) + bytes(1 << 24))
    assert len(bomb) < 20_000
    with pytest.raises(MalformedDataSet, match="inflates to more than"):
        read_data_set(bomb, DEFLATED_EXPLICIT_VR_LE, max_inflated=1 << 20)
    head = read_data_set(bomb[:4096], DEFLATED_EXPLICIT_VR_LE, complete=False, max_inflated=1 << 16)
    assert len(head.data) <= 1 << 16 and head.cut == Cut(tag=0x00091010, start=0)


def test_a_head_cut_inside_the_patient_id_reports_it_cut() -> None:
    data = LEVEL + PATIENT + STUDY
    at = data.index(b"PAT-REF-1") + 3
    head = read_data_set(data[:at], IMPLICIT_VR_LE, complete=False)
    assert [e.tag for e in head.elements] == [0x00080052]
    assert head.cut == Cut(tag=0x00100020, start=len(LEVEL)) and head.known_below == 0x00100020
    cut_in_tag = read_data_set(data[:len(LEVEL) + 2], IMPLICIT_VR_LE, complete=False)
    assert cut_in_tag.cut == Cut(tag=None, start=len(LEVEL)) and cut_in_tag.known_below == 0x00080053
    with pytest.raises(MalformedDataSet):  # the same bytes as a whole data set
        read_data_set(data[:at], IMPLICIT_VR_LE)
    clean = read_data_set(LEVEL + PATIENT, IMPLICIT_VR_LE, complete=False)  # ends between two elements
    assert clean.cut is None and clean.known_below == 0x00100021


def test_a_head_still_refuses_what_it_can_see() -> None:
    with pytest.raises(MalformedDataSet, match="occurs twice"):
        read_data_set(LEVEL + PATIENT + PATIENT[:12], IMPLICIT_VR_LE, complete=False)
    with pytest.raises(MalformedDataSet, match="runs past"):  # an item overrunning its sequence, cut or not
        read_data_set(header(OTHER_PATIENT_IDS, 16) + header(ITEM, 400) + b"\0" * 8, IMPLICIT_VR_LE, complete=False)


def test_inserting_and_removing_one_element_keeps_every_other_byte() -> None:
    data = LEVEL + sequence(REFERENCED_STUDY, implicit(0x00081155, b"1.2\x00")) + STUDY
    asked = with_element(data, IMPLICIT_VR_LE, 0x00100020, "LO")
    assert asked == LEVEL + sequence(REFERENCED_STUDY, implicit(0x00081155, b"1.2\x00")) + implicit(0x00100020, b"") \
        + STUDY
    assert with_element(asked, IMPLICIT_VR_LE, 0x00100020, "LO") == asked
    assert without_element(asked, IMPLICIT_VR_LE, 0x00100020) == data
    assert without_element(data, IMPLICIT_VR_LE, 0x00100020) == data
    plain = explicit(0x00080052, "CS", b"STUDY ")
    deflated = with_element(deflate(plain), DEFLATED_EXPLICIT_VR_LE, 0x00100020, "LO")
    assert len(deflated) % 2 == 0
    assert read_data_set(deflated, DEFLATED_EXPLICIT_VR_LE).data == plain + explicit(0x00100020, "LO", b"")
    with pytest.raises(MalformedDataSet):
        with_element(LEVEL + PATIENT + PATIENT, IMPLICIT_VR_LE, 0x00100021, "LO")


def test_the_sequence_table_is_pydicoms() -> None:
    assert {tag for tag, entry in DicomDictionary.items() if entry[0] == "SQ"} == SEQUENCE_TAGS
    assert is_sequence(0x50102600) and not is_sequence(0x00100020)
    assert (Path(__file__).parents[2] / "dicomwire" / "sequence_tags.py").read_text() == render()
