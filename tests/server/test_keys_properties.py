"""Properties of the one strict reading (Hypothesis), with pydicom as the independent second reader.

1. Any data set pydicom writes (its tags unique and sorted, any transfer syntax) reads back to the
   keys pydicom reads from it.
2. Any single-byte change of such a data set is refused (MalformedDataSet) or read to the keys an
   independent reader (pydicom's element generator) finds in the changed bytes: when the reader
   accepts, nobody reads it another way. (``the same keys as before`` cannot be the property: a byte
   of a value, or of a tag that becomes a key's tag, legitimately makes another data set.)
3. Any cut of it, read as a head, gives each key of the whole data set or UNKNOWN, never another value.
4. Any bytes at all: a reading or MalformedDataSet, nothing else.
"""

from __future__ import annotations

import contextlib
import warnings
import zlib
from io import BytesIO

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import data_element_generator, read_dataset
from pydicom.filewriter import write_dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from dicomwire.dataset import (
    DEFLATED_EXPLICIT_VR_LE,
    EXPLICIT_VR_BE,
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    MalformedDataSet,
    read_data_set,
)
from server_agent.keys import KEY_TAGS, DecisionKeys, Matching, Reading, decision_keys

SYNTAXES = (IMPLICIT_VR_LE, EXPLICIT_VR_LE, EXPLICIT_VR_BE, DEFLATED_EXPLICIT_VR_LE)
MODES = {IMPLICIT_VR_LE: (True, True), EXPLICIT_VR_LE: (False, True), EXPLICIT_VR_BE: (False, False),
         DEFLATED_EXPLICIT_VR_LE: (False, True)}

ids = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.*?", min_size=1, max_size=16)
uid_component = st.one_of(st.just("0"), st.integers(1, 10**12).map(str))
uids = st.lists(uid_component, min_size=2, max_size=6).map(".".join)
texts = st.text("ABCDEFGHIJ ^", max_size=20).map(str.strip)


@st.composite
def data_sets(draw: st.DrawFn, depth: int = 0) -> Dataset:
    ds = Dataset()
    if depth == 0:
        if draw(st.booleans()):
            ds.QueryRetrieveLevel = draw(st.sampled_from(["PATIENT", "STUDY", "SERIES", "IMAGE"]))
        if draw(st.booleans()):
            ds.SOPClassUID = draw(uids)
        if draw(st.booleans()):
            ds.AccessionNumber = draw(ids.map(lambda value: value[:16]))
        for keyword in ("PatientID", "IssuerOfPatientID"):
            if draw(st.booleans()):
                setattr(ds, keyword, draw(st.one_of(ids, st.just(""))))
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            if draw(st.booleans()):
                setattr(ds, keyword, draw(st.one_of(uids, st.lists(uids, min_size=2, max_size=3), st.just(""))))
    if draw(st.booleans()):
        ds.PatientName = draw(texts)
    if draw(st.booleans()):
        ds.StudyDate = draw(st.sampled_from(["20260101", "20260101-20261231", ""]))
    if draw(st.booleans()):
        ds.Rows = draw(st.integers(0, 65535))
    if draw(st.booleans()):
        ds.add_new(0x00091010, "LO", "ACME")  # a private creator and its element
        ds.add_new(0x00091001, "LO", "x")
    if depth < 3 and draw(st.booleans()):
        items = draw(st.lists(data_sets(depth + 1), max_size=2))
        sequence = Sequence(items)
        ds.ReferencedStudySequence = sequence
        ds["ReferencedStudySequence"].is_undefined_length = draw(st.booleans())
        for item in items:
            item.is_undefined_length_sequence_item = draw(st.booleans())
    return ds


def encode(ds: Dataset, syntax: str) -> bytes:
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = MODES[syntax]
    write_dataset(fp, ds)
    return fp.getvalue()


def wire(plain: bytes, syntax: str) -> bytes:
    if syntax != DEFLATED_EXPLICIT_VR_LE:
        return plain
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(plain) + compressor.flush()


def ours(data: bytes, syntax: str, complete: bool = True) -> DecisionKeys:
    return decision_keys(read_data_set(data, syntax, complete=complete), Reading.QUERY)


def as_read(key: object) -> object:
    """Our key as pydicom gives the value: a string, or a list for a UID list."""
    assert hasattr(key, "matching")
    if key.matching is Matching.UID_LIST:  # type: ignore[attr-defined]
        return list(key.values)  # type: ignore[attr-defined]
    return key.value  # type: ignore[attr-defined]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data_sets(), st.sampled_from(SYNTAXES))
def test_what_pydicom_writes_reads_to_the_keys_pydicom_reads(ds: Dataset, syntax: str) -> None:
    plain = encode(ds, syntax)
    keys = ours(wire(plain, syntax), syntax)
    implicit, little = MODES[syntax]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = read_dataset(BytesIO(plain), implicit, little)
    for name, tag, _ in KEY_TAGS:
        key = getattr(keys, name)
        if tag not in theirs:
            assert not key.present, name
            continue
        value = theirs[tag].value
        expected = [str(v) for v in value] if isinstance(value, MultiValue | list) else str(value or "").strip(" ")
        assert as_read(key) == expected, (name, key, value)


def raw_keys(plain: bytes, syntax: str) -> dict[int, bytes]:
    """The decision keys' value bytes at the top level, as pydicom's element generator finds them."""
    implicit, little = MODES[syntax]
    found: dict[int, bytes] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for raw in data_element_generator(BytesIO(plain), implicit, little, defer_size=None):
            if any(raw.tag == tag for _, tag, _ in KEY_TAGS):
                assert raw.tag not in found
                found[int(raw.tag)] = raw.value or b""
    return found


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data_sets(), st.sampled_from([IMPLICIT_VR_LE, EXPLICIT_VR_LE, EXPLICIT_VR_BE]), st.data())
def test_a_changed_byte_is_refused_or_read_as_another_reader_reads_it(ds: Dataset, syntax: str,
                                                                      data: st.DataObject) -> None:
    plain = encode(ds, syntax)
    if not plain:
        return
    at = data.draw(st.integers(0, len(plain) - 1))
    changed = plain[:at] + bytes([data.draw(st.integers(0, 255))]) + plain[at + 1:]
    try:
        read = read_data_set(changed, syntax)
    except MalformedDataSet:
        return
    mine = {tag: read.value(element) for _, tag, _ in KEY_TAGS if (element := read.get(tag)) is not None}
    assert mine == raw_keys(changed, syntax)
    with contextlib.suppress(MalformedDataSet):
        decision_keys(read, Reading.QUERY)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data_sets(), st.sampled_from(SYNTAXES), st.data())
def test_a_cut_never_changes_a_key(ds: Dataset, syntax: str, data: st.DataObject) -> None:
    whole_wire = wire(encode(ds, syntax), syntax)
    whole = ours(whole_wire, syntax)
    cut = data.draw(st.integers(0, len(whole_wire)))
    head = ours(whole_wire[:cut], syntax, complete=False)
    for name, _, _ in KEY_TAGS:
        key = getattr(head, name)
        assert key.matching is Matching.UNKNOWN or key == getattr(whole, name), (name, key)
    if head.pinned_patient is not None:
        assert head.pinned_patient == whole.pinned_patient


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.sampled_from((*SYNTAXES, "1.2.840.10008.1.2.4.50")), st.booleans(),
       st.sampled_from(Reading))
def test_any_bytes_read_or_are_malformed_nothing_else(data: bytes, syntax: str, complete: bool,
                                                      reading: Reading) -> None:
    with contextlib.suppress(MalformedDataSet):
        decision_keys(read_data_set(data, syntax, complete=complete), reading)
