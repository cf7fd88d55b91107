"""New values: dummies consistent with a VR, shifted dates, cleaned descriptors (PS3.15 E.1.1, E.3.5, E.3.6).

Values are bytes as the data set carries them (PS3.5 6.2): text VRs padded with a space, UI with a
NUL, to an even length. A value we cannot read (a date that is no date) is never guessed at: the
caller falls back to the attribute's Basic action.
"""

from __future__ import annotations

import datetime
import re

from pydicom._dicom_dict import DicomDictionary
from pydicom._uid_dict import UID_dictionary

# PS3.15 E.1.1 "D": a non-zero length value consistent with the VR. Binary VRs get zeros.
_DUMMY_TEXT = b"DEIDENTIFIED"
DUMMIES = {
    "AE": _DUMMY_TEXT, "AS": b"000Y", "CS": _DUMMY_TEXT, "DA": b"19000101", "DS": b"0 ", "DT": b"19000101000000",
    "IS": b"0 ", "LO": _DUMMY_TEXT, "LT": _DUMMY_TEXT, "PN": _DUMMY_TEXT, "SH": _DUMMY_TEXT, "ST": _DUMMY_TEXT,
    "TM": b"000000", "UC": _DUMMY_TEXT, "UR": b"urn:deidentified", "UT": _DUMMY_TEXT,
    "AT": bytes(4), "FL": bytes(4), "FD": bytes(8), "OB": bytes(2), "OD": bytes(8), "OF": bytes(4), "OL": bytes(4),
    "OV": bytes(8), "OW": bytes(2), "SL": bytes(4), "SS": bytes(2), "SV": bytes(8), "UL": bytes(4), "UN": bytes(2),
    "US": bytes(2), "UV": bytes(8),
}
TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI",
                      "UR", "UT"})
_WORD = re.compile(rb"[A-Za-z0-9]+")
_DIGITS = re.compile(rb"[0-9]*")
_DATE_FORMATS = {4: "%Y", 6: "%Y%m", 8: "%Y%m%d"}


def dictionary_vr(tag: int) -> str:
    """PS3.6 VR of a public tag (the first of "US or SS"-style choices); "UN" when unknown."""
    entry = DicomDictionary.get(tag)
    return entry[0][:2] if entry else "UN"


def written_as_defined(tag: int, written: str | None) -> bool:
    """Whether an element's explicit VR is one PS3.6 gives its tag (PS3.5 7.1.2): None or "" (implicit VR),
    UN (PS3.5 6.2.2: the sender did not know) and unknown tags pass; "US or SS" allows both. A VR the
    dictionary does not give would make the stream, not the standard, decide what the value is."""
    entry = DicomDictionary.get(tag)
    if not written or written == "UN" or entry is None:
        return True
    return written == entry[0] or (len(entry[0]) > 2 and written in entry[0].split(" or "))


def padded(value: bytes, vr: str) -> bytes:
    if len(value) & 1:
        return value + (b"\x00" if vr == "UI" else b" ")
    return value


def split_values(value: bytes) -> list[bytes]:
    """The values of a text element (PS3.5 6.4: backslash-separated), padding stripped."""
    return [part.strip(b" \x00") for part in value.split(b"\\")]


# What a kept value of a text VR may be (PS3.5 Table 6.2-1: characters and length of one value). A value
# that is not its VR's (a name in a Code String, an MRN in an Integer String) is not kept: it is whatever
# a hostile or careless sender put there.
_SHAPES: dict[str, re.Pattern[bytes]] = {
    "CS": re.compile(rb"[A-Z0-9 _]{0,16}"),
    "IS": re.compile(rb" *[+-]?[0-9]{1,11} *|"),
    "DS": re.compile(rb"(?=.{0,16}$) *[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)? *|"),
}


def of_its_vr(value: bytes, vr: str) -> bool:
    """Whether every value of a kept element of text VR ``vr`` is as PS3.5 6.2 allows (other VRs: True)."""
    shape = _SHAPES.get(vr)
    if shape is None:
        return True
    return all(shape.fullmatch(part) for part in value.rstrip(b" \x00").split(b"\\"))


def well_known_uid(uid: str) -> bool:
    """A UID PS3.6 Annex A defines (SOP classes, transfer syntaxes, well-known frames of reference and
    instances...): exactly one of its entries. Any other UID, even one under the standard's own root
    1.2.840.10008 (PS3.5 9.1: a PACS may write anything there), is an instance's and is replaced."""
    return uid in UID_dictionary


def shift_dates(value: bytes, vr: str, days: int) -> bytes | None:
    """DA or DT values moved by ``days``; TM kept; None if any value is unreadable. A DA may be a
    range (PS3.4 C.2.2.2.5, in identifiers); a DT's ``-`` is its UTC offset, kept as it is."""
    if vr == "TM":
        return value
    shifted = []
    for part in split_values(value):
        ends = part.split(b"-") if vr == "DA" else [part]
        if len(ends) > 2:
            return None
        moved = [_shift(end, vr, days) if end else b"" for end in ends]
        if any(item is None for item in moved):
            return None
        shifted.append(b"-".join(item for item in moved if item is not None))
    return padded(b"\\".join(shifted), vr)


def _shift(text: bytes, vr: str, days: int) -> bytes | None:
    """One date (DA: YYYYMMDD) or date-time (DT, PS3.5 6.2: YYYY[MM[DD[HH...]]][&ZZXX]) moved by
    ``days``, its precision kept: a DT's time of day and offset stay, since whole days move."""
    leading = _DIGITS.match(text)
    count = leading.end() if leading else 0
    digits = 8 if count >= 8 else count
    if vr == "DA" and (count != 8 or len(text) != 8):
        return None
    if digits not in _DATE_FORMATS:
        return None
    # YYYY[MM[DD]] read as numbers (what strptime's %Y%m%d would accept of exactly these digits, at a
    # fraction of its cost: one rewrite walks several dates per instance).
    year, month, day = int(text[0:4]), int(text[4:6]) if digits > 4 else 1, int(text[6:8]) if digits > 6 else 1
    try:
        moved = datetime.date(year, month, day) + datetime.timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    return f"{moved.year:04d}{moved.month:02d}{moved.day:02d}"[:digits].encode("ascii") + text[digits:]


def clean_text(value: bytes, vocabulary: frozenset[str], identifying: frozenset[bytes]) -> bytes | None:
    """PS3.15 E.3.5 "clean": only the words of ``vocabulary`` kept, and none that occurs in a name or
    identifier of the same data set (``identifying``); None when nothing is left."""
    kept = [word for word in _WORD.findall(value)
            if word.upper().decode("ascii") in vocabulary and word.upper() not in identifying]
    return padded(b" ".join(kept), "LO") if kept else None


def words(value: bytes) -> set[bytes]:
    """The upper-case words of a value (for ``identifying``)."""
    return {word.upper() for word in _WORD.findall(value)}
