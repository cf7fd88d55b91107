"""The keys a decision depends on, with what the PACS will match for each (PS3.4 C.2.2.2).

A request is read once, strictly (``dicomwire.dataset``), and each decision key is classified as the
PACS will use it: Universal Matching (absent, or a zero-length value, C.2.2.2.3), Single Value
Matching (C.2.2.2.1), Wild Card Matching (``*`` and ``?`` in AE/CS/LO/SH..., C.2.2.2.4), List of UID
Matching (C.2.2.2.2, UI keys only), Range Matching (DA/TM/DT, C.2.2.2.5) or Empty Value Matching (the
value ``""``, C.2.2.2.8). A request is pinned to one patient only when the PACS cannot match another:
its Patient ID is a single value and its issuer, if it has one, a single value too.

Values are checked against their VR (PS3.5 6.2) and character repertoire (PS3.5 6.1), or the data set
is ``MalformedDataSet``:

- UI: digits and dots, components without leading zeros, at most 64 characters; a trailing NUL (the UI
  padding) and trailing spaces are not significant; no wildcard ever; a list only in a query.
- LO (Patient ID, Issuer of Patient ID) and SH (Accession Number): trailing spaces are not significant
  (PS3.5 6.2, and Orthanc matches "PAT-1     " as "PAT-1"). Leading spaces are refused: PS3.5 6.2
  calls them padding too (DCMTK's ``DcmLongString::getOFString`` drops them when asked to normalise),
  but Orthanc 1.10 stores and matches them as characters (measured: " PAT-3" and "PAT-3" are two
  patients there, a query for " PAT-1" matches nothing), so the same key names one patient to one PACS
  and another to the next. No backslash (these keys have VM 1, PS3.5 6.4; Orthanc reads "A\\B" as a
  list and returns both patients); no control character (ESC included: no ISO 2022 code extension
  in a decision key); bytes above 7FH only when (0008,0005) is ``ISO_IR 100`` (decoded as ISO 8859-1)
  or ``ISO_IR 192`` (UTF-8); under the ISO_IR 13 repertoires 7EH is not ``~``, so it is refused there;
  under a character set PS3.3 C.12.1.1.2 does not define, a text key must be empty.
- CS (Query/Retrieve Level): leading and trailing spaces not significant; one of the levels of PS3.4
  C.6 (PATIENT, STUDY, SERIES, IMAGE, FRAME) or empty.
- In an explicit VR syntax each key must carry its PS3.6 VR (UN included is refused: DCMTK may or may
  not convert it back, ``dcmEnableUnknownVRConversion``).

A C-STORE head says nothing about the tags after its end: those keys are ``UNKNOWN``, never absent.
Store heads and C-FIND matches hold attribute values, not keys: there a list is malformed (VM 1), and a
value that would be a pattern if sent back (``*``, ``?``, ``""``) is classified as one, so that it is
never decided on as a patient.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from dicomwire.dataset import DataSet, MalformedDataSet, read_data_set

SPECIFIC_CHARACTER_SET = 0x00080005
SOP_CLASS_UID = 0x00080016
SOP_INSTANCE_UID = 0x00080018
ACCESSION_NUMBER = 0x00080050
QUERY_RETRIEVE_LEVEL = 0x00080052
PATIENT_ID = 0x00100020
ISSUER_OF_PATIENT_ID = 0x00100021
STUDY_INSTANCE_UID = 0x0020000D
SERIES_INSTANCE_UID = 0x0020000E

LEVELS = frozenset({"PATIENT", "STUDY", "SERIES", "IMAGE", "FRAME"})
# PS3.3 C.12.1.1.2 defined terms. The ISO_IR 13 ones replace ASCII's 5CH and 7EH (yen, overline).
_CHARACTER_SETS = frozenset(
    [f"ISO_IR {n}" for n in (6, 100, 101, 109, 110, 144, 127, 126, 138, 148, 203, 166, 13, 192)]
    + [f"ISO 2022 IR {n}" for n in (6, 100, 101, 109, 110, 144, 127, 126, 138, 148, 203, 166, 13, 87, 159, 149,
                                    58)]
    + ["GB18030", "GBK", ""])
_JIS_ROMAN = frozenset({"ISO_IR 13", "ISO 2022 IR 13"})
_UID = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")
_MAX_UID = 64  # PS3.5 9.1
_MAX_LENGTH = {"LO": 64, "SH": 16}  # PS3.5 Table 6.2-1, characters
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1 (PS3.5 6.1.3)


class Matching(enum.Enum):
    UNIVERSAL = "universal"  # absent or zero-length: every value matches (C.2.2.2.3)
    SINGLE = "single"  # C.2.2.2.1
    WILDCARD = "wildcard"  # C.2.2.2.4
    UID_LIST = "uid_list"  # C.2.2.2.2
    RANGE = "range"  # C.2.2.2.5
    EMPTY = "empty"  # the value "": entities without a value (C.2.2.2.8)
    UNKNOWN = "unknown"  # after the end of a C-STORE head: not read


class Reading(enum.Enum):
    QUERY = "query"  # a C-FIND identifier: keys the PACS matches, all of them together
    RETRIEVE = "retrieve"  # a C-GET/C-MOVE identifier: the PACS retrieves by the level's unique key
    VALUES = "values"  # a C-STORE head or a C-FIND match: attribute values (VM as in PS3.6)


@dataclass(frozen=True, slots=True, kw_only=True)
class Key:
    """One key as the PACS will use it. ``value``: the value compared (padding removed, decoded);
    ``values``: the UIDs of a list; ``present``: the element is in the data set."""

    matching: Matching
    value: str = ""
    values: tuple[str, ...] = ()
    present: bool = False


ABSENT = Key(matching=Matching.UNIVERSAL)
UNKNOWN = Key(matching=Matching.UNKNOWN)


@dataclass(frozen=True, slots=True, kw_only=True)
class Patient:
    """The one patient a request is pinned to (``issuer`` None: the request names no issuer)."""

    id: str
    issuer: str | None


# (attribute name, tag, VR), in tag order.
KEY_TAGS = (
    ("sop_class_uid", SOP_CLASS_UID, "UI"),
    ("sop_instance_uid", SOP_INSTANCE_UID, "UI"),
    ("accession_number", ACCESSION_NUMBER, "SH"),
    ("level", QUERY_RETRIEVE_LEVEL, "CS"),
    ("patient_id", PATIENT_ID, "LO"),
    ("patient_id_issuer", ISSUER_OF_PATIENT_ID, "LO"),
    ("study_instance_uid", STUDY_INSTANCE_UID, "UI"),
    ("series_instance_uid", SERIES_INSTANCE_UID, "UI"),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class DecisionKeys:
    """What a request (or a stored instance, or a match) names, read once, strictly."""

    level: Key = ABSENT
    patient_id: Key = ABSENT
    patient_id_issuer: Key = ABSENT
    study_instance_uid: Key = ABSENT
    series_instance_uid: Key = ABSENT
    sop_instance_uid: Key = ABSENT
    sop_class_uid: Key = ABSENT
    accession_number: Key = ABSENT
    character_set: tuple[str, ...] = ()
    retrieve: bool = False  # read as a C-GET/C-MOVE identifier

    @property
    def pinned_patient(self) -> Patient | None:
        """The one patient the PACS can match, or None (no Patient ID, a pattern, an issuer that is a
        pattern, keys a head did not reach, or a retrieval below the PATIENT level).

        A retrieval is pinned only at the PATIENT level: below it the SCP retrieves what the level's
        unique keys name (PS3.4 C.4.2.2.1), and Orthanc 1.10 sends the studies a Study Instance UID
        names whatever Patient ID the identifier holds (measured: C-GET STUDY, Patient ID PAT-1, the
        Study Instance UID of PAT-2: PAT-2's images), in Study and Patient Root alike.
        """
        issuer = self.patient_id_issuer
        if self.patient_id.matching is not Matching.SINGLE:
            return None
        if self.retrieve and self.level.value != "PATIENT":
            return None
        if issuer.matching is Matching.SINGLE:
            return Patient(id=self.patient_id.value, issuer=issuer.value)
        if issuer.matching is Matching.UNIVERSAL:  # absent or empty: any issuer, as the PACS matches
            return Patient(id=self.patient_id.value, issuer=None)
        return None

    def as_dict(self) -> dict[str, str]:
        """The keys present, as strings (a UID list joined by backslashes): the shape of the decision
        log's ``resource`` and of the AuthZEN resource properties."""
        out: dict[str, str] = {}
        for name, _, _ in KEY_TAGS:
            key: Key = getattr(self, name)
            if key.present:
                out[name] = "\\".join(key.values) if key.matching is Matching.UID_LIST else key.value
        return out


def identifier_keys(data: bytes, transfer_syntax: str | None) -> DecisionKeys:
    """The keys of a whole C-FIND identifier, as the PACS will match them."""
    return decision_keys(read_data_set(data, transfer_syntax), Reading.QUERY)


def retrieve_keys(data: bytes, transfer_syntax: str | None) -> DecisionKeys:
    """The keys of a whole C-GET/C-MOVE identifier, as the PACS will retrieve by them."""
    return decision_keys(read_data_set(data, transfer_syntax), Reading.RETRIEVE)


def store_keys(data: bytes, transfer_syntax: str | None, *, complete: bool) -> DecisionKeys:
    """The keys of a C-STORE data set or of its head (``complete=False``)."""
    return decision_keys(read_data_set(data, transfer_syntax, complete=complete), Reading.VALUES)


def match_keys(data: bytes, transfer_syntax: str | None) -> DecisionKeys:
    """The keys of a C-FIND match (the identifier of a pending C-FIND-RSP): whose data it shows."""
    return decision_keys(read_data_set(data, transfer_syntax), Reading.VALUES)


def decision_keys(data_set: DataSet, reading: Reading) -> DecisionKeys:
    values = _key_values(data_set)
    charset = _character_set(values.get(SPECIFIC_CHARACTER_SET), data_set.known_below)
    keys: dict[str, Key] = {}
    for name, tag, vr in KEY_TAGS:
        raw = values.get(tag)
        if raw is None:
            keys[name] = ABSENT if tag < data_set.known_below else UNKNOWN
        elif charset is None:  # the head ends before (0008,0005): nothing after it can be decoded
            keys[name] = UNKNOWN
        else:
            keys[name] = classify(raw, vr, reading, charset, tag)
    return DecisionKeys(character_set=charset or (), retrieve=reading is Reading.RETRIEVE, **keys)


_KEY_VRS = {SPECIFIC_CHARACTER_SET: "CS", **{tag: vr for _, tag, vr in KEY_TAGS}}


def _key_values(data_set: DataSet) -> dict[int, bytes]:
    """The value bytes of the decision keys present, in one pass over the first elements."""
    values: dict[int, bytes] = {}
    data = data_set.data
    for element in data_set.elements:
        tag = element.tag
        if tag > SERIES_INSTANCE_UID:
            break
        vr = _KEY_VRS.get(tag)
        if vr is not None:
            if element.vr is not None and element.vr != vr:
                raise MalformedDataSet(f"{_name(tag)} has VR {element.vr}, not {vr} (PS3.6)", element.start)
            values[tag] = data[element.value_start:element.end]
    return values


def _character_set(raw: bytes | None, known_below: int) -> tuple[str, ...] | None:
    """(0008,0005), its values without padding; None when a head ends before it is known."""
    if raw is None:
        return () if known_below > SPECIFIC_CHARACTER_SET else None
    if any(byte < 0x20 or byte > 0x7E for byte in raw):
        raise MalformedDataSet("(0008,0005) Specific Character Set is not in the default repertoire")
    return tuple(term.strip(" ") for term in raw.decode("ascii").split("\\"))


def classify(raw: bytes, vr: str, reading: Reading, charset: tuple[str, ...], tag: int) -> Key:
    """One key value (PS3.4 C.2.2.2) after the checks of PS3.5 6.1 and 6.2 for its VR."""
    if vr == "UI":
        return _uid_key(raw, reading, tag)
    text = _decode(raw, vr, charset, tag)
    if vr == "CS":
        text = text.strip(" ")
        if text and text not in LEVELS:
            raise MalformedDataSet(f"{_name(tag)} is not a Query/Retrieve Level: {text[:16]!r}")
        return Key(matching=Matching.SINGLE if text else Matching.UNIVERSAL, value=text, present=True)
    if vr in ("DA", "TM", "DT") and "-" in text:
        return Key(matching=Matching.RANGE, value=text.strip(" "), present=True)
    text = text.rstrip(" ")
    if text.startswith(" "):
        # PS3.5 6.2 calls leading spaces of LO/SH padding; Orthanc 1.10 matches and stores them as
        # characters (" PAT-3" and "PAT-3" are two patients there): no reading is canonical.
        raise MalformedDataSet(f"{_name(tag)} starts with a space, significant to some PACS and not to others")
    if "\\" in text:
        raise MalformedDataSet(f"{_name(tag)} holds more than one value (VM 1, PS3.5 6.4)")
    if not text:
        return Key(matching=Matching.UNIVERSAL, present=True)
    if text == '""':
        return Key(matching=Matching.EMPTY, value=text, present=True)
    if "*" in text or "?" in text:
        return Key(matching=Matching.WILDCARD, value=text, present=True)
    if len(text) > _MAX_LENGTH.get(vr, 1 << 16):
        raise MalformedDataSet(f"{_name(tag)} is longer than {vr} allows (PS3.5 6.2)")
    return Key(matching=Matching.SINGLE, value=text, present=True)


def _uid_key(raw: bytes, reading: Reading, tag: int) -> Key:
    text = raw.rstrip(b"\x00 ").decode("ascii", "replace")  # PS3.5 6.2: UI is padded with a NUL
    if not text:
        return Key(matching=Matching.UNIVERSAL, present=True)
    uids = tuple(text.split("\\"))
    for uid in uids:
        if len(uid) > _MAX_UID or not _UID.fullmatch(uid):
            raise MalformedDataSet(f"{_name(tag)} is not a UID or list of UIDs (PS3.5 9.1): {uid[:70]!r}")
    if len(uids) == 1:
        return Key(matching=Matching.SINGLE, value=uids[0], present=True)
    if reading is Reading.VALUES:
        raise MalformedDataSet(f"{_name(tag)} holds more than one UID (VM 1, PS3.5 6.4)")
    return Key(matching=Matching.UID_LIST, values=uids, present=True)


def _decode(raw: bytes, vr: str, charset: tuple[str, ...], tag: int) -> str:
    """PS3.5 6.1: the value's characters, under the data set's Specific Character Set."""
    if raw.isascii():
        text = raw.decode("ascii")
        if vr != "CS" and text.strip(" "):
            if any(term not in _CHARACTER_SETS for term in charset):
                raise MalformedDataSet(f"{_name(tag)} is text in a character set PS3.3 does not define: "
                                       f"{charset!r}"[:160])
            if "~" in text and _JIS_ROMAN.intersection(charset):
                raise MalformedDataSet(f"{_name(tag)}: 7EH is not '~' in JIS X 0201 (ISO_IR 13)")
    elif vr != "CS" and charset == ("ISO_IR 100",):
        text = raw.decode("latin-1")
    elif vr != "CS" and charset == ("ISO_IR 192",):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedDataSet(f"{_name(tag)} is not UTF-8 (ISO_IR 192)") from None
    else:
        raise MalformedDataSet(f"{_name(tag)} has characters outside the default repertoire under "
                               f"(0008,0005) {charset!r}"[:160])
    if _CONTROL.search(text):
        raise MalformedDataSet(f"{_name(tag)} holds a control character (PS3.5 6.1.3)")
    return text


def _name(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
