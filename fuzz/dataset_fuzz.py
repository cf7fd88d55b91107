"""Coverage-guided fuzzing of the strict data-set reader and the decision keys (atheris).

    python fuzz/dataset_fuzz.py [corpus_dir] -atheris_runs=10000000 [-max_len=4096] [libFuzzer flags]

The first byte of an input chooses the transfer syntax (implicit LE, explicit LE, deflated, explicit
BE, JPEG baseline so that encapsulated pixel data is allowed), whole data set or head, the reading
(query, retrieval, values), and whether the harness deflates the rest itself (so that inflated
content is fuzzed, not only broken streams); the
next two bytes choose a cut. Invariants, any failure an exception that stops the run with its input:

1. ``read_data_set`` and the key readers return, or raise ``MalformedDataSet``: nothing else.
2. A data set read: top-level elements contiguous from byte 0, tags strictly ascending, a whole data
   set read to its last byte, a head's cut exactly where its last complete element ends.
3. Every data set accepted whole is read the same way by an independent reader (pydicom's element
   generator): the same top-level tags, the same value bytes for each decision key.
4. Every head of an accepted data set is accepted, with the same leading elements, and its keys are
   those of the whole data set or UNKNOWN (a cut never changes a key).
5. Rewrites keep every other element byte for byte: removing the first element, inserting an empty
   Patient ID.
"""

from __future__ import annotations

import sys
import warnings
import zlib
from io import BytesIO

import atheris

with atheris.instrument_imports():
    from dicomwire.dataset import (
        DEFLATED_EXPLICIT_VR_LE,
        EXPLICIT_VR_BE,
        EXPLICIT_VR_LE,
        IMPLICIT_VR_LE,
        DataSet,
        MalformedDataSet,
        read_data_set,
        with_element,
        without_element,
    )
    from server_agent.keys import KEY_TAGS, PATIENT_ID, Matching, Reading, decision_keys

from pydicom.filereader import data_element_generator

SYNTAXES = (IMPLICIT_VR_LE, EXPLICIT_VR_LE, DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_BE, "1.2.840.10008.1.2.4.50")


def deflate(plain: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(plain) + compressor.flush()


def check_structure(read: DataSet) -> None:
    position, previous = 0, -1
    for element in read.elements:
        assert element.start == position and element.tag > previous, (element, position, previous)
        assert element.start < element.value_start <= element.end <= len(read.data), element
        position, previous = element.end, element.tag
    if read.complete:
        assert position == len(read.data) and read.cut is None
    elif read.cut is not None:
        assert read.cut.start == position < len(read.data)
    else:
        assert position == len(read.data)


def keys_or_malformed(read: DataSet, reading: Reading) -> object:
    try:
        return decision_keys(read, reading)
    except MalformedDataSet:
        return None


def pydicom_reading(plain: bytes, syntax: str) -> dict[int, bytes | None]:
    """Top-level tags with their raw values (None for sequences), as pydicom reads them."""
    implicit, little = syntax == IMPLICIT_VR_LE, syntax != EXPLICIT_VR_BE
    out: dict[int, bytes | None] = {}
    for raw in data_element_generator(BytesIO(plain), implicit, little, defer_size=None):
        assert raw.tag not in out, f"pydicom yields {raw.tag} twice from a data set read as strict"
        value = b"" if raw.value is None and raw.length == 0 else raw.value  # pydicom: None when empty
        out[int(raw.tag)] = value if isinstance(value, bytes) else None
    return out


def check_against_pydicom(read: DataSet) -> None:
    charset = read.get(0x00080005)
    if charset is not None and not all(0x20 <= byte < 0x7F for byte in read.value(charset)):
        return  # pydicom itself raises on such a Specific Character Set (codecs.lookup); keys refuse it
    theirs = pydicom_reading(read.data, read.transfer_syntax)
    assert list(theirs) == [element.tag for element in read.elements], (list(theirs), read.elements)
    for _, tag, _ in KEY_TAGS:
        element = read.get(tag)
        if element is not None:
            assert theirs[tag] == read.value(element), (hex(tag), theirs[tag], read.value(element))


def check_heads(read: DataSet, cut: int, reading: Reading) -> None:
    whole_keys = keys_or_malformed(read, reading)
    for length in {cut % (len(read.data) + 1), len(read.data) // 2, max(len(read.data) - 1, 0)}:
        head = read_data_set(read.data[:length], IMPLICIT_VR_LE if read.transfer_syntax == IMPLICIT_VR_LE
                             else EXPLICIT_VR_BE if read.transfer_syntax == EXPLICIT_VR_BE
                             else read.transfer_syntax if read.transfer_syntax != DEFLATED_EXPLICIT_VR_LE
                             else EXPLICIT_VR_LE, complete=False)
        check_structure(head)
        assert head.elements == read.elements[:len(head.elements)]
        head_keys = keys_or_malformed(head, reading)
        if whole_keys is None or head_keys is None:
            continue  # a key malformed in the whole data set may lie after the cut, and vice versa not
        for name, _, _ in KEY_TAGS:
            mine = getattr(head_keys, name)
            assert mine.matching is Matching.UNKNOWN or mine == getattr(whole_keys, name), (name, mine)


def check_rewrites(read: DataSet, data: bytes) -> None:
    first = read.elements[0]
    shorter = read_data_set(without_element(data, read.transfer_syntax, first.tag), read.transfer_syntax)
    assert shorter.data == read.data[first.end:]
    try:
        longer = read_data_set(with_element(data, read.transfer_syntax, PATIENT_ID, "LO"), read.transfer_syntax)
    except MalformedDataSet:
        return  # an element of undefined length ends in (FFFE,...) only: nothing to insert before
    added = longer.get(PATIENT_ID)
    assert added is not None
    if read.get(PATIENT_ID) is None:
        assert longer.data[:added.start] + longer.data[added.end:] == read.data


def test_one_input(raw: bytes) -> None:
    if len(raw) < 3:
        return
    syntax = SYNTAXES[raw[0] % len(SYNTAXES)]
    complete = not raw[0] & 0x08
    cut = int.from_bytes(raw[1:3], "little")
    data = raw[3:]
    if syntax == DEFLATED_EXPLICIT_VR_LE and raw[0] & 0x10:
        data = deflate(data)
    reading = Reading.VALUES if raw[0] & 0x20 else Reading.RETRIEVE if raw[0] & 0x40 else Reading.QUERY
    try:
        read = read_data_set(data, syntax, complete=complete, max_inflated=1 << 16)
    except MalformedDataSet:
        return
    check_structure(read)
    keys_or_malformed(read, reading)
    if not read.complete or not read.elements:
        return
    check_against_pydicom(read)
    check_heads(read, cut, reading)
    check_rewrites(read, data)


MAX_LEN = 4200  # libFuzzer's -max_len unless given: the longest seed


def main() -> None:
    if not any(arg.startswith("-max_len=") for arg in sys.argv):
        sys.argv.append(f"-max_len={MAX_LEN}")
    warnings.simplefilter("ignore")  # pydicom warns about every odd value it meets
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
