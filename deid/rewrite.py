"""The rewrite of an encoded data set, element by element, at every nesting level (PS3.15 E.1.1).

Input is a data set the strict reader (:mod:`dicomwire.dataset`) has already read one way only, so
this walk trusts its structure. Elements kept are copied as they were encoded; only what an action
changes is encoded again, in the data set's own transfer syntax (PS3.5 7.1: explicit or implicit VR,
little or big endian). A sequence keeps its form: an undefined length stays undefined (with its
delimiters), a defined one gets its new length; so do its items. An explicit UN of undefined length
is a sequence encoded in Implicit VR Little Endian (PS3.5 6.2.2) and is rewritten as one.

Private attributes (PS3.5 7.8.1): a creator element (gggg,0010-00FF) reserves a block; the data
elements of block xx are (gggg,xx00-xxFF). With Retain Safe Private, a data element is kept when its
block's creator, group and low byte are on the profile's list (never a private sequence: its content
is unknown) and its value is a number (:func:`numeric_value`: the list says where a safe value is,
not what a PACS wrote there), with its creator; everything else private goes.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from dicomwire.dataset import ITEM_DELIMITER, LONG_VRS, SEQUENCE_DELIMITER, UNDEFINED, VRS
from dicomwire.sequence_tags import is_sequence

from .errors import MissingPseudonym, NotDeidentifiable
from .profile import PATIENT_ID, Op, Profile, SafePrivate
from .pseudonyms import PatientPseudonym
from .values import DUMMIES, clean_text, dictionary_vr, of_its_vr, padded, shift_dates, split_values, well_known_uid

SOP_CLASS_UID = 0x00080016  # kept as written: the receiver checks it against the command's (PS3.4 B.2.2)


class Syntax(NamedTuple):
    explicit: bool
    order: str
    head: struct.Struct  # tag and 4-byte length: implicit elements, items, delimiters
    short: struct.Struct  # explicit VR with a 2-byte length
    long: struct.Struct  # explicit VR with 2 reserved bytes and a 4-byte length


IMPLICIT = Syntax(False, "<", struct.Struct("<HHI"), struct.Struct("<HH2sH"), struct.Struct("<HH2sHI"))
EXPLICIT_LE = IMPLICIT._replace(explicit=True)
EXPLICIT_BE = Syntax(True, ">", struct.Struct(">HHI"), struct.Struct(">HH2sH"), struct.Struct(">HH2sHI"))


class Source(Protocol):
    """Where the walk gets pseudonyms: the service's answer, or a recorder of what is needed."""

    def uid(self, real: str) -> str: ...

    def patient(self, real_id: str) -> PatientPseudonym: ...


@dataclass(slots=True, kw_only=True)
class Walk:
    """One data set's rewrite. ``patient`` is the data set's own pseudonym, ``patient_key`` the real
    Patient ID it is the pseudonym of (the top-level one, or the one the caller named)."""

    data: bytes
    profile: Profile
    source: Source
    patient: PatientPseudonym | None
    patient_key: str | None = None
    identifying: frozenset[bytes] = frozenset()
    inserts: list[tuple[int, bytes]] = field(default_factory=list)  # top level, in tag order

    def elements(self, pos: int, stop: int, syntax: Syntax, depth: int, out: list[bytes]) -> int:
        """Rewrite the elements from ``pos`` to ``stop`` (-1: up to an item delimiter) into ``out``."""
        data = self.data
        pending = self.inserts if depth == 0 else []
        creators: dict[int, bytes] = {}  # private block (gggg << 8 | xx) -> its creator, this level
        while pos != stop:
            group, number, length = syntax.head.unpack_from(data, pos)
            tag = group << 16 | number
            if tag == ITEM_DELIMITER and stop == -1:
                break
            code = ""
            value_start = pos + 8
            if syntax.explicit:
                code = data[pos + 4:pos + 6].decode("latin-1")
                if code.encode("latin-1") in LONG_VRS:
                    length = _u32(data, pos + 8, syntax)
                    value_start = pos + 12
                else:
                    length = syntax.short.unpack_from(data, pos)[3]
            while pending and pending[0][0] < tag:
                out.append(pending.pop(0)[1])
            sequence = _is_sequence(tag, code, length, syntax)
            end = self.sequence_end(value_start, length, syntax, tag, code) if sequence else value_start + length
            if group & 1:
                self.private(tag, code, pos, value_start, end, sequence, creators, out)
            elif sequence:
                self.sequence(tag, code, value_start, length, syntax, depth, out)
            else:
                self.element(tag, code, pos, value_start, end, syntax, depth, out)
            pos = end
        for _, encoded in pending:
            out.append(encoded)
        pending.clear()
        return pos + 8 if stop == -1 else pos

    # ---- one element ----------------------------------------------------------------------------------
    def element(self, tag: int, code: str, pos: int, value_start: int, end: int, syntax: Syntax, depth: int,
                out: list[bytes]) -> None:
        known = dictionary_vr(tag)
        if known == "SQ":
            return  # a sequence not encoded as one (UN of defined length, a wrong VR): unreadable, so removed
        vr = code if code and code != "UN" else known
        op = self.profile.op(tag, code)  # judged by the dictionary's VR: a disagreeing one is removed
        if op is Op.KEEP:
            kept = self.data[value_start:end]
            if not of_its_vr(kept, known):
                return  # not a value of its VR (PS3.5 6.2): not what the keep-list vouches for
            if known == "UI" and tag != SOP_CLASS_UID:  # a definition UID holds one, or it is an instance's
                out.append(encode(syntax, tag, code, self.uids(kept)))
                return
            out.append(self.data[pos:end])
            return
        if op is Op.REMOVE:
            return
        value = self.new_value(op, tag, vr, self.data[value_start:end], depth)
        if value is None:
            op = self.profile.fallback(tag)
            if op is Op.REMOVE:
                return
            value = self.new_value(op, tag, vr, self.data[value_start:end], depth)
        if value is None:
            return
        out.append(encode(syntax, tag, code, value))

    def new_value(self, op: Op, tag: int, vr: str, value: bytes, depth: int) -> bytes | None:
        """The new value of a non-sequence element, or None when this operation cannot make one."""
        if op is Op.ZERO:
            return b""
        if op is Op.UID or (op is Op.UID_OR_ZERO and vr == "UI") or (op is Op.DUMMY and vr == "UI"):
            return self.uids(value)
        if op is Op.DUMMY or op is Op.UID_OR_ZERO:
            return DUMMIES.get(vr, b"") if op is Op.DUMMY else b""
        if op is Op.PSEUDO_ID:
            real = _text(value)
            if depth and real and real != self.patient_key:
                return DUMMIES["LO"]  # another patient (a group, a source): no pseudonym of theirs is made
            return padded(self.source.patient(real).patient_id.encode("latin-1"), vr) if real else b""
        if op is Op.PSEUDO_NAME:
            if depth or self.patient is None:
                return DUMMIES["PN"]
            return padded(self.patient.patient_name.encode("latin-1"), "PN")
        if op is Op.SHIFT:
            if vr not in ("DA", "DT", "TM"):
                return None
            return shift_dates(value, vr, self.offset()) if value.strip(b" \x00") else value
        if op is Op.CLEAN:
            return clean_text(value, self.profile.vocabulary, self.identifying) if vr in _CLEANABLE else None
        return None

    def offset(self) -> int:
        if self.patient is None:
            raise MissingPseudonym("dates must be shifted and the data set names no Patient ID (0010,0020): "
                                   "give patient_id, or ask for Patient ID in the query")
        return self.patient.date_offset_days

    def uids(self, value: bytes) -> bytes:
        new = []
        for part in split_values(value):
            uid = part.decode("latin-1")
            new.append(uid if not uid or well_known_uid(uid) else self.source.uid(uid))
        return padded("\\".join(new).encode("latin-1"), "UI")

    # ---- sequences --------------------------------------------------------------------------------------
    def sequence_end(self, pos: int, length: int, syntax: Syntax, tag: int, code: str) -> int:
        if length != UNDEFINED:
            return pos + length
        inner = IMPLICIT if code == "UN" else syntax
        while True:
            group, number, item_length = inner.head.unpack_from(self.data, pos)
            if (group << 16 | number) == SEQUENCE_DELIMITER:
                return pos + 8
            pos = pos + 8 + item_length if item_length != UNDEFINED else self.skip_item(pos + 8, inner)

    def skip_item(self, pos: int, syntax: Syntax) -> int:
        """The end of an item of undefined length (after its delimiter), skipping nested sequences."""
        while True:
            group, number, length = syntax.head.unpack_from(self.data, pos)
            tag = group << 16 | number
            if tag == ITEM_DELIMITER:
                return pos + 8
            code, value_start = "", pos + 8
            if syntax.explicit:
                code = self.data[pos + 4:pos + 6].decode("latin-1")
                if code.encode("latin-1") in LONG_VRS:
                    length, value_start = _u32(self.data, pos + 8, syntax), pos + 12
                else:
                    length = syntax.short.unpack_from(self.data, pos)[3]
            if length == UNDEFINED:
                pos = self.sequence_end(value_start, length, syntax, tag, code)
            else:
                pos = value_start + length

    def sequence(self, tag: int, code: str, pos: int, length: int, syntax: Syntax, depth: int,
                 out: list[bytes]) -> None:
        op = self.profile.op(tag, "SQ")
        if op is Op.REMOVE:
            return
        if op is Op.ZERO:
            out.append(_sequence_header(syntax, tag, code, 0))
            return
        inner = IMPLICIT if code == "UN" else syntax
        if op is Op.DUMMY:  # one empty item: a non-zero length value that holds nothing (E.1.1 "D")
            out.append(_sequence_header(syntax, tag, code, 8) + inner.head.pack(0xFFFE, 0xE000, 0))
            return
        items: list[bytes] = []
        end = pos + length if length != UNDEFINED else None
        while pos != end:
            group, number, item_length = inner.head.unpack_from(self.data, pos)
            if (group << 16 | number) == SEQUENCE_DELIMITER:
                break
            content: list[bytes] = []
            if item_length == UNDEFINED:
                pos = self.elements(pos + 8, -1, inner, depth + 1, content)
                items.append(inner.head.pack(0xFFFE, 0xE000, UNDEFINED) + b"".join(content)
                             + inner.head.pack(0xFFFE, 0xE00D, 0))
            else:
                pos = self.elements(pos + 8, pos + 8 + item_length, inner, depth + 1, content)
                body = b"".join(content)
                items.append(inner.head.pack(0xFFFE, 0xE000, len(body)) + body)
        body = b"".join(items)
        if length == UNDEFINED:
            out.append(_sequence_header(syntax, tag, code, UNDEFINED) + body + inner.head.pack(0xFFFE, 0xE0DD, 0))
        else:
            out.append(_sequence_header(syntax, tag, code, len(body)) + body)

    # ---- private ----------------------------------------------------------------------------------------
    def private(self, tag: int, code: str, pos: int, value_start: int, end: int, sequence: bool,
                creators: dict[int, bytes], out: list[bytes]) -> None:
        if not self.profile.retains_safe_private:
            return
        group, number = tag >> 16, tag & 0xFFFF
        if 0x0010 <= number <= 0x00FF:  # a creator: kept when its block holds a safe attribute
            name = self.data[value_start:end].strip(b" \x00")
            creators[group << 8 | number] = name
            if any(safe.group == group and safe.creator.encode("latin-1") == name
                   for safe in self.profile.safe_private):
                out.append(self.data[pos:end])
            return
        creator = creators.get(group << 8 | number >> 8)
        if sequence or creator is None or number < 0x1000:
            return
        wanted = SafePrivate(group=group, creator=creator.decode("latin-1"), element=number & 0xFF)
        if wanted in self.profile.safe_private and numeric_value(code, self.data[value_start:end]):
            out.append(self.data[pos:end])


_CLEANABLE = frozenset({"LO", "LT", "SH", "ST", "UC", "UT"})


_BINARY_SIZES = {"US": 2, "SS": 2, "UL": 4, "SL": 4, "FL": 4, "FD": 8, "SV": 8, "UV": 8, "OF": 4, "OD": 8,
                 "OL": 4, "OV": 8}
_NUMBER_TEXT = re.compile(rb"[0-9+\-.eE \\]*")  # PS3.5 6.2 DS and IS characters, and the value separator
_PRINTABLE = re.compile(rb"[ -~]*")


def numeric_value(code: str, value: bytes) -> bool:
    """Whether a safe private value is a number or numbers, so a name or an ID written in its place is
    not kept: an explicit binary number VR whose length fits it, a DS/IS (or, with no VR to go by,
    implicit or UN, any value) that reads as decimal text, or an implicit short value that is binary
    (up to 8 bytes, an even count, not all printable: no text)."""
    size = _BINARY_SIZES.get(code)
    if size is not None:
        return len(value) % size == 0
    if code in ("DS", "IS", "", "UN") and _NUMBER_TEXT.fullmatch(value):
        return True
    return code in ("", "UN") and 0 < len(value) <= 8 and not _PRINTABLE.fullmatch(value)


def _u32(data: bytes, pos: int, syntax: Syntax) -> int:
    value: int = struct.unpack_from(syntax.order + "I", data, pos)[0]
    return value


def _is_sequence(tag: int, code: str, length: int, syntax: Syntax) -> bool:
    """The strict reader's own rule (dicomwire.dataset), so both read the same elements as sequences."""
    if syntax.explicit:
        return code == "SQ" or (code == "UN" and length == UNDEFINED)
    if length == UNDEFINED:
        return is_sequence(tag) or bool(tag >> 16 & 1)
    return is_sequence(tag)


def _text(value: bytes) -> str:
    return value.strip(b" \x00").decode("latin-1")


def encode(syntax: Syntax, tag: int, code: str, value: bytes) -> bytes:
    """One element of defined length (PS3.5 7.1.2, 7.1.3); ``code`` is its VR (ignored in implicit VR)."""
    group, number = tag >> 16, tag & 0xFFFF
    if not syntax.explicit:
        return syntax.head.pack(group, number, len(value)) + value
    vr = code.encode("latin-1")
    if vr in LONG_VRS:
        return syntax.long.pack(group, number, vr, 0, len(value)) + value
    if len(value) > 0xFFFF or vr not in VRS:
        raise NotDeidentifiable(f"({group:04X},{number:04X}): a new {code} value of {len(value)} bytes does not fit")
    return syntax.short.pack(group, number, vr, len(value)) + value


def _sequence_header(syntax: Syntax, tag: int, code: str, length: int) -> bytes:
    group, number = tag >> 16, tag & 0xFFFF
    if not syntax.explicit:
        return syntax.head.pack(group, number, length)
    return syntax.long.pack(group, number, (code or "SQ").encode("latin-1"), 0, length)


__all__ = ["EXPLICIT_BE", "EXPLICIT_LE", "IMPLICIT", "PATIENT_ID", "Source", "Syntax", "Walk", "encode"]
