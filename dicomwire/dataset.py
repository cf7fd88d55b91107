"""One strict, bounded reading of a data set, as the PACS will read it again (PS3.5 7, Annex A).

The server agent decides on data sets that the PACS reads after it: C-FIND/C-GET/C-MOVE identifiers,
the head of a C-STORE data set, C-FIND matches on their way back. Any data set that two readers could
read two ways (the same tag twice: DCMTK keeps the first, a dict the last; tags out of order; lengths
that do not fit; a VR that is not one) is refused here with ``MalformedDataSet``, never read on a guess.

What is checked, at every nesting level:

- PS3.5 7.1: elements in strictly ascending tag order (so no tag twice); no group 0000 (command), 0002
  (file meta) or 0001/0003/0005/0007/FFFF element in a data set; explicit VRs that are one of the
  PS3.5 6.2 codes, the two reserved bytes of the long form zero; even value lengths (7.1.1), and a
  multiple of the value width for binary VRs.
- PS3.5 7.1.1/7.5: every length fits its parent (item, sequence, data set); undefined length only for
  SQ, UN (a sequence encoded in Implicit VR Little Endian, 6.2.2) and, in an encapsulated transfer
  syntax, Pixel Data (A.4); items, item delimiters and sequence delimiters only where they belong,
  delimiters of length zero; sequence nesting at most ``MAX_DEPTH``.
- Annex A: Implicit VR LE (A.1, the sequences known from PS3.6, see ``sequence_tags``), Explicit VR LE
  (A.2) and every encapsulated syntax (A.4), Explicit VR BE (A.3), Deflated Explicit VR LE (A.5: raw
  deflate, inflated to a bounded size, the stream ending exactly at the end of the data set, one
  trailing NUL pad allowed).

A *head* (``complete=False``: the first bytes of a C-STORE data set) may end anywhere: the top-level
element the end falls in is reported as cut and never read, so a Patient ID cut in two cannot become
another patient's ID. Standard library only: this is the wire core, run on every C-STORE.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import NamedTuple

from .errors import DicomWireError
from .sequence_tags import SEQUENCE_TAGS, is_sequence

IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BE = "1.2.840.10008.1.2.2"
NATIVE_SYNTAXES = frozenset({IMPLICIT_VR_LE, EXPLICIT_VR_LE, DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_BE})

# Sequence nesting the reader follows. Structured reports are the deepest real data (content trees of
# ten or so levels); 32 leaves room and bounds the work an attacker can ask for per byte.
MAX_DEPTH = 32
# What a deflated data set may inflate to (a deflate stream expands up to ~1000x: a bound on memory).
MAX_INFLATED = 1 << 20

STATUS_CANNOT_UNDERSTAND = 0xC000  # PS3.4 B.2.3 C-STORE "Cannot understand", C.4.x "Unable to process"

ITEM = 0xFFFEE000
ITEM_DELIMITER = 0xFFFEE00D
SEQUENCE_DELIMITER = 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
UNDEFINED = 0xFFFFFFFF

# PS3.5 Table 6.2-1 (VR codes) and 7.1.2 (those with the 2 reserved bytes and a 4-byte length).
VRS = {code.encode(): code for code in (
    "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD", "OF", "OL", "OV",
    "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN", "UR", "US", "UT", "UV")}
LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
# What a value length must be a multiple of, per VR: the value width of binary VRs (PS3.5 6.2), 2 for
# the others (7.1.1: every value length is even). Split by header form, so one lookup does both jobs.
_WIDTHS = {b"AT": 4, b"FD": 8, b"FL": 4, b"OD": 8, b"OF": 4, b"OL": 4, b"OV": 8, b"OW": 2, b"SL": 4,
           b"SS": 2, b"SV": 8, b"UL": 4, b"US": 2, b"UV": 8}
_SHORT_WIDTHS = {code: _WIDTHS.get(code, 2) for code in VRS if code not in LONG_VRS}
_LONG_WIDTHS = {code: _WIDTHS.get(code, 2) for code in LONG_VRS}
# PS3.5 7.1: groups that never hold a data element of a data set (0000 is the command set, 0002 the
# file meta information; 0001, 0003, 0005, 0007 and FFFF "shall not be used").
_FORBIDDEN_GROUPS = frozenset({0x0000, 0x0001, 0x0002, 0x0003, 0x0005, 0x0007, 0xFFFF})


class MalformedDataSet(DicomWireError, ValueError):
    """A data set that cannot be read one way only. Never decided on: the request is refused with
    ``status`` (0xC000: C-STORE "Cannot understand", C-FIND/C-GET/C-MOVE "Unable to process") and the
    refusal is logged as malformed with ``detail``. ``offset`` is where, in the (inflated) encoding."""

    status = STATUS_CANNOT_UNDERSTAND

    def __init__(self, detail: str, offset: int = 0) -> None:
        super().__init__(f"{detail} (at byte {offset})")
        self.detail = detail
        self.offset = offset


class Element(NamedTuple):
    """One complete top-level element: ``data[start:end]`` is all of it, ``data[value_start:end]`` its
    value when its length is defined. ``vr`` is None in Implicit VR. (A NamedTuple, not a dataclass:
    one is made per top-level element of every C-STORE head, and a frozen dataclass costs 5x more.)"""

    tag: int
    vr: str | None
    start: int
    value_start: int
    end: int
    undefined_length: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Cut:
    """Where a head ends inside a top-level element: its tag (None when the end falls inside the tag
    itself) and the offset the element starts at."""

    tag: int | None
    start: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DataSet:
    """A data set read strictly: its complete top-level elements in tag order, and for a head the
    element it ends in (``cut``). ``data`` is the plain encoding (inflated, for the deflated syntax)."""

    data: bytes
    transfer_syntax: str
    elements: tuple[Element, ...]
    complete: bool
    cut: Cut | None = None

    @property
    def known_below(self) -> int:
        """Tags below this one are known present (in ``elements``) or absent; above, a head says nothing."""
        if self.complete:
            return 1 << 32
        if self.cut is not None and self.cut.tag is not None:
            return self.cut.tag
        return self.elements[-1].tag + 1 if self.elements else 0

    def get(self, tag: int) -> Element | None:
        for element in self.elements:
            if element.tag >= tag:
                return element if element.tag == tag else None
        return None

    def value(self, element: Element) -> bytes:
        return self.data[element.value_start:element.end]


class _Cut(Exception):
    """The bytes of a head end here (never escapes this module)."""


class _Syntax(NamedTuple):
    explicit: bool
    tag_length: struct.Struct  # implicit header, and item/delimiter headers in every syntax
    explicit_header: struct.Struct
    u32: struct.Struct


_LE_IMPLICIT = _Syntax(False, struct.Struct("<HHI"), struct.Struct("<HH2sH"), struct.Struct("<I"))
_LE_EXPLICIT = _LE_IMPLICIT._replace(explicit=True)
_BE_EXPLICIT = _Syntax(True, struct.Struct(">HHI"), struct.Struct(">HH2sH"), struct.Struct(">I"))


def read_data_set(data: bytes, transfer_syntax: str | None, *, complete: bool = True,
                  max_inflated: int = MAX_INFLATED) -> DataSet:
    """Read ``data`` (encoded in ``transfer_syntax``; None: Implicit VR LE, the default transfer syntax
    of PS3.5 10.1) strictly, or raise ``MalformedDataSet``. ``complete=False``: ``data`` is the head
    of a longer data set (for the deflated syntax, the head of the deflated stream)."""
    syntax = transfer_syntax or IMPLICIT_VR_LE
    if syntax == DEFLATED_EXPLICIT_VR_LE:
        data, complete = inflate(data, complete=complete, max_inflated=max_inflated)
    wire = (_LE_IMPLICIT if syntax == IMPLICIT_VR_LE else _BE_EXPLICIT if syntax == EXPLICIT_VR_BE
            else _LE_EXPLICIT)
    walker = _Walker(data, complete, encapsulated=syntax not in NATIVE_SYNTAXES)
    elements, cut = walker.top_level(wire)
    return DataSet(data=data, transfer_syntax=syntax, elements=elements, complete=complete, cut=cut)


def inflate(data: bytes, *, complete: bool, max_inflated: int = MAX_INFLATED) -> tuple[bytes, bool]:
    """PS3.5 A.5: the data set of the deflated syntax is a raw deflate stream (RFC 1951). Returns the
    inflated bytes and whether they are the whole data set. A whole stream must end exactly at the end
    of ``data`` (one NUL pad byte allowed: the stream is padded to an even length) and inflate to at
    most ``max_inflated`` bytes; a head inflates to what its bytes hold, cut at ``max_inflated``."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        plain = inflater.decompress(data, max_inflated + 1)
    except zlib.error as error:
        raise MalformedDataSet(f"the deflated data set cannot be inflated: {error}") from None
    if len(plain) > max_inflated:
        if complete:
            raise MalformedDataSet(f"the deflated data set inflates to more than {max_inflated} bytes")
        return plain[:max_inflated], False
    if inflater.eof and inflater.unused_data not in (b"", b"\x00"):
        raise MalformedDataSet("bytes follow the end of the deflated data set", len(plain))
    if complete and not inflater.eof:
        raise MalformedDataSet("the deflated data set ends before its deflate stream", len(plain))
    return plain, complete


class _Walker:
    """PS3.5 7.1 and 7.5 over ``data``. ``end`` below is the declared end of the enclosing item,
    sequence or data set (None: a head's top level, which ends where its bytes do); ``stop`` is where
    a list of elements ends (-1: at an item delimiter)."""

    __slots__ = ("complete", "data", "encapsulated", "size")

    def __init__(self, data: bytes, complete: bool, encapsulated: bool) -> None:
        self.data = data
        self.size = len(data)
        self.complete = complete
        self.encapsulated = encapsulated

    def need(self, pos: int, count: int, end: int | None) -> None:
        if end is not None and pos + count > end:
            raise MalformedDataSet("an element runs past the end of its item, sequence or data set", pos)
        if pos + count > self.size:
            if self.complete:
                raise MalformedDataSet("the data set ends inside an element", pos)
            raise _Cut

    def top_level(self, wire: _Syntax) -> tuple[tuple[Element, ...], Cut | None]:
        record: list[Element] = []
        try:
            self.elements(0, self.size, self.size if self.complete else None, wire, 0, record)
        except _Cut:
            start = record[-1].end if record else 0  # top-level elements are contiguous
            previous = record[-1].tag if record else -1
            return tuple(record), Cut(tag=self.tag_at(start, wire, previous), start=start)
        return tuple(record), None

    def tag_at(self, pos: int, wire: _Syntax, previous: int) -> int | None:
        """The tag of the element a head ends in, if its four bytes are there (checked like any tag)."""
        if pos + 4 > self.size:
            return None
        group, number = struct.unpack_from(">HH" if wire is _BE_EXPLICIT else "<HH", self.data, pos)
        tag: int = group << 16 | number
        if group < 8 or group >= 0xFFFE:
            _check_group(group, number, pos)
        if tag <= previous:
            raise _order_error(group, number, tag == previous, pos)
        return tag

    def elements(self, pos: int, stop: int, end: int | None, wire: _Syntax, depth: int,
                 record: list[Element] | None) -> int:
        """The elements from ``pos`` to ``stop``; returns the offset after them (and their delimiter).

        One loop for every level, written out flat: it runs once per element of every C-STORE head.
        """
        data, size, explicit = self.data, self.size, wire.explicit
        unpack = (wire.explicit_header if explicit else wire.tag_length).unpack_from
        previous = -1
        code, width = b"", 2  # Implicit VR: no VR code; every length even
        while pos != stop:
            if pos + 8 > size or (end is not None and pos + 8 > end):
                self.need(pos, 8, end)
            if explicit:
                group, number, code, length = unpack(data, pos)
            else:
                group, number, length = unpack(data, pos)
            tag = group << 16 | number
            if group < 8 or group >= 0xFFFE:
                if stop == -1 and tag == ITEM_DELIMITER:
                    if wire.u32.unpack_from(data, pos + 4)[0]:
                        raise MalformedDataSet("an item delimiter with a non-zero length", pos)
                    return pos + 8
                _check_group(group, number, pos)
            if tag <= previous:
                raise _order_error(group, number, tag == previous, pos)
            previous = tag
            value_start = pos + 8
            if explicit:
                known = _SHORT_WIDTHS.get(code)
                if known is None:
                    width = self.long_form(group, number, code, length, pos, end)
                    value_start = pos + 12
                    length = wire.u32.unpack_from(data, pos + 8)[0]
                else:
                    width = known
            if length == UNDEFINED:
                after = self.undefined(tag, code, value_start, end, wire, depth)
            else:
                if length % width:
                    raise _length_error(group, number, length, width, pos)
                after = value_start + length
                if after > size or (end is not None and after > end):
                    self.need(value_start, length, end)
                if code == b"SQ" or (not explicit and (tag in SEQUENCE_TAGS or (tag & 0xFF00FFFF) == 0x50002600)):
                    self.items(value_start, after, after, wire, depth + 1)
            if record is not None:
                record.append(_new_element(Element, (tag, VRS.get(code), pos, value_start, after,
                                                     length == UNDEFINED)))
            pos = after
        return pos

    def long_form(self, group: int, number: int, code: bytes, reserved: int, pos: int, end: int | None) -> int:
        """PS3.5 7.1.2: a VR with two reserved bytes and a 4-byte length; returns its length multiple."""
        width = _LONG_WIDTHS.get(code)
        if width is None:
            raise MalformedDataSet(f"({group:04X},{number:04X}) has no valid VR: {code!r}", pos)
        if reserved:
            raise MalformedDataSet(f"({group:04X},{number:04X}) reserved bytes are not zero", pos)
        self.need(pos, 12, end)
        return width

    def undefined(self, tag: int, code: bytes, pos: int, end: int | None, wire: _Syntax, depth: int) -> int:
        """The value of an element of undefined length, up to its sequence delimiter (PS3.5 7.5)."""
        if code == b"SQ" or (not code and tag != PIXEL_DATA and (is_sequence(tag) or tag >> 16 & 1)):
            return self.items(pos, None, end, wire, depth + 1)
        if code == b"UN":  # PS3.5 6.2.2: a sequence whose content is Implicit VR Little Endian
            return self.items(pos, None, end, _LE_IMPLICIT, depth + 1)
        if code in (b"OB", b"OW") and tag == PIXEL_DATA and self.encapsulated:
            return self.fragments(pos, end, wire)
        raise MalformedDataSet(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) may not have an undefined length", pos)

    def item_header(self, pos: int, end: int | None, wire: _Syntax) -> tuple[int, int]:
        self.need(pos, 8, end)
        group, number, length = wire.tag_length.unpack_from(self.data, pos)
        return group << 16 | number, length

    def items(self, pos: int, own_end: int | None, end: int | None, wire: _Syntax, depth: int) -> int:
        """The items of a sequence: up to ``own_end`` (defined length) or to its delimiter."""
        if depth > MAX_DEPTH:
            raise MalformedDataSet(f"sequences nested deeper than {MAX_DEPTH}", pos)
        while pos != own_end:
            tag, length = self.item_header(pos, end, wire)
            if tag == SEQUENCE_DELIMITER and own_end is None:
                if length:
                    raise MalformedDataSet("a sequence delimiter with a non-zero length", pos)
                return pos + 8
            if tag != ITEM:
                raise MalformedDataSet(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) where an item belongs", pos)
            if length == UNDEFINED:
                pos = self.elements(pos + 8, -1, end, wire, depth, None)
            else:
                self.need(pos + 8, length, end)
                pos = self.elements(pos + 8, pos + 8 + length, pos + 8 + length, wire, depth, None)
        return pos

    def fragments(self, pos: int, end: int | None, wire: _Syntax) -> int:
        """PS3.5 A.4: encapsulated Pixel Data, items of defined even length up to a sequence delimiter."""
        while True:
            tag, length = self.item_header(pos, end, wire)
            if tag == SEQUENCE_DELIMITER:
                if length:
                    raise MalformedDataSet("a sequence delimiter with a non-zero length", pos)
                return pos + 8
            if tag != ITEM or length == UNDEFINED or length & 1:
                raise MalformedDataSet("encapsulated pixel data holds something other than fragments", pos)
            self.need(pos + 8, length, end)
            pos += 8 + length


def _check_group(group: int, number: int, pos: int) -> None:
    if group in _FORBIDDEN_GROUPS or group == 0xFFFE:
        raise MalformedDataSet(f"({group:04X},{number:04X}) is not a data element of a data set", pos)


def _length_error(group: int, number: int, length: int, width: int, pos: int) -> MalformedDataSet:
    what = "an odd length" if length & 1 else f"a length that is not a multiple of {width}"
    return MalformedDataSet(f"({group:04X},{number:04X}) has {what}: {length} (PS3.5 7.1.1, 6.2)", pos)


def _order_error(group: int, number: int, twice: bool, pos: int) -> MalformedDataSet:
    return MalformedDataSet(f"({group:04X},{number:04X}) " + (
        "occurs twice" if twice else "is out of ascending tag order") + " (PS3.5 7.1)", pos)


_new_element = tuple.__new__


def with_element(data: bytes, transfer_syntax: str | None, tag: int, vr: str, value: bytes = b"") -> bytes:
    """``data`` (a whole data set) with the top-level element ``tag`` inserted in tag order, every other
    byte of the plain encoding unchanged; ``data`` itself when ``tag`` is there already. ``value`` must
    be even-length and padded as its VR requires (PS3.5 6.2). A deflated data set is deflated again."""
    read = read_data_set(data, transfer_syntax)
    if read.get(tag) is not None:
        return data
    at = next((element.start for element in read.elements if element.tag > tag), len(read.data))
    plain = read.data[:at] + encode_element(read.transfer_syntax, tag, vr, value) + read.data[at:]
    return _deflate(plain) if read.transfer_syntax == DEFLATED_EXPLICIT_VR_LE else plain


def without_element(data: bytes, transfer_syntax: str | None, tag: int) -> bytes:
    """``data`` (a whole data set) without its top-level element ``tag``, every other byte of the plain
    encoding unchanged; ``data`` itself when ``tag`` is not there."""
    read = read_data_set(data, transfer_syntax)
    element = read.get(tag)
    if element is None:
        return data
    plain = read.data[:element.start] + read.data[element.end:]
    return _deflate(plain) if read.transfer_syntax == DEFLATED_EXPLICIT_VR_LE else plain


def encode_element(transfer_syntax: str | None, tag: int, vr: str, value: bytes = b"") -> bytes:
    """One element of defined length in ``transfer_syntax`` (PS3.5 7.1.2, 7.1.3)."""
    code = vr.encode("ascii")
    if code not in VRS or code == b"SQ" or len(value) & 1:
        raise ValueError(f"cannot encode ({tag >> 16:04X},{tag & 0xFFFF:04X}) {vr} of {len(value)} bytes")
    syntax = transfer_syntax or IMPLICIT_VR_LE
    order = ">" if syntax == EXPLICIT_VR_BE else "<"
    if syntax == IMPLICIT_VR_LE:
        return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value
    if code in LONG_VRS:
        return struct.pack(order + "HH2sHI", tag >> 16, tag & 0xFFFF, code, 0, len(value)) + value
    if len(value) > 0xFFFF:
        raise ValueError(f"a {vr} value of {len(value)} bytes does not fit a 16-bit length")
    return struct.pack(order + "HH2sH", tag >> 16, tag & 0xFFFF, code, len(value)) + value


def _deflate(plain: bytes) -> bytes:
    """PS3.5 A.5: raw deflate, padded to an even length with one NUL."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    stream = compressor.compress(plain) + compressor.flush()
    return stream + b"\x00" if len(stream) & 1 else stream
