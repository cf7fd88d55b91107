"""A de-identification profile: PS3.15 Table E.1-1's Basic Profile plus named options, compiled once.

PS3.15 E.1.1 gives each attribute an action code; a profile turns every code into one operation
(:class:`Op`) per tag, the options overriding the Basic Profile where their column has an entry (a
keep ``K`` wins over a clean ``C``, which wins over the Basic action). The combined codes of E.1.1 let
the de-identifier choose; we choose what keeps a Type 1 or Type 2 attribute present, because legacy
viewers are what researchers use:

| code | we do | why |
|---|---|---|
| Z/D, X/D, X/Z/D | D, a dummy consistent with the VR | Type 1 attributes keep a value |
| X/Z | Z, zero length | Type 2 attributes stay present |
| X/Z/U* | a sequence: its items processed; a UI: a new UID; else Z | references stay consistent |

What the table does not name is removed or cleaned, never kept because no row names it (E.1.1: the
profile's "all other attributes", and the Clean options): :mod:`deid.supplement` gives each unlisted
public attribute an action by its PS3.6 VR (structured values kept, UIDs replaced, names a dummy,
dates shifted or a dummy, free text cleaned or removed, URLs and opaque bytes removed) and lists the
few text and definition-UID attributes reviewed as safe to keep. An element is judged by the
dictionary's VR: one whose explicit VR the dictionary does not give its tag is removed (the stream
must not decide that a date or a name is "just text"). Unknown public tags, group lengths (rewritten
groups no longer have the length they announce), command and file meta elements (groups 0000, 0002:
never part of a data set, PS3.5 7.1, PS3.7 6.3.1), curves and overlays and anything of group 7FE0
(pixels the header check has not vouched for: an icon, a C-FIND match's Pixel Data) are removed.
Private attributes (odd groups) are removed unless the Retain Safe Private option names them (E.3.10).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from pydicom._dicom_dict import DicomDictionary

from . import supplement, table
from .values import written_as_defined

PATIENT_ID = 0x00100020
PATIENT_NAME = 0x00100010
# What we write after de-identification (PS3.15 E.1.1, PS3.3 C.12.1): at the top level only.
PATIENT_IDENTITY_REMOVED = 0x00120062
DEIDENTIFICATION_METHOD = 0x00120063
DEIDENTIFICATION_METHOD_CODES = 0x00120064
TEMPORAL_INFORMATION_MODIFIED = 0x00280303
MARKERS = frozenset({PATIENT_IDENTITY_REMOVED, DEIDENTIFICATION_METHOD, DEIDENTIFICATION_METHOD_CODES,
                     TEMPORAL_INFORMATION_MODIFIED})
BASIC_PROFILE_CODE = "113100"


class Op(enum.IntEnum):
    """What happens to one element."""

    KEEP = 0  # as it is (a sequence: its items processed)
    REMOVE = 1  # X
    ZERO = 2  # Z (a sequence: no items)
    DUMMY = 3  # D (a sequence: one empty item)
    UID = 4  # U: every value replaced by its pseudonymous UID
    SHIFT = 5  # C of Modified Dates: DA/DT shifted by the patient's offset, TM kept
    CLEAN = 6  # C of the other options: only vocabulary words kept (else the Basic action)
    PSEUDO_ID = 7  # Patient ID: its pseudonym
    PSEUDO_NAME = 8  # Patient's Name: the patient's pseudonymous name (top level)
    UID_OR_ZERO = 9  # X/Z/U*: a sequence is processed, a UI replaced, anything else emptied


class Option(enum.Enum):
    """The options we offer (PS3.15 E.3), by their column in Table E.1-1 and their CID 7050 code.

    Retain UIDs and Retain Full Dates are not offered (they would defeat pseudonymisation), nor the
    Clean Structured Content/Graphics options (we have no cleaner for content trees or graphics).
    """

    RETAIN_SAFE_PRIVATE = "rtnSafePrivOpt"
    RETAIN_DEVICE_IDENTITY = "rtnDevIdOpt"
    RETAIN_INSTITUTION_IDENTITY = "rtnInstIdOpt"
    RETAIN_PATIENT_CHARACTERISTICS = "rtnPatCharsOpt"
    RETAIN_LONGITUDINAL_MODIFIED_DATES = "rtnLongModifDatesOpt"
    CLEAN_DESCRIPTORS = "cleanDescOpt"

    @property
    def code(self) -> str:
        return table.OPTION_CODES[self.value]


_BASIC_OPS = {"K": Op.KEEP, "X": Op.REMOVE, "Z": Op.ZERO, "D": Op.DUMMY, "U": Op.UID, "Z/D": Op.DUMMY,
              "X/D": Op.DUMMY, "X/Z/D": Op.DUMMY, "X/Z": Op.ZERO, "X/Z/U*": Op.UID_OR_ZERO}
_RANK = {"K": 2, "C": 1}
_SUPPLEMENT_OPS = {"K": Op.KEEP, "X": Op.REMOVE, "D": Op.DUMMY, "U": Op.UID}
_WHEN = frozenset({"DA", "DT", "TM"})
_NEVER_KEPT_GROUPS = frozenset({0x0000, 0x0002, 0x7FE0})


@dataclass(frozen=True, slots=True, kw_only=True)
class SafePrivate:
    """One private attribute that may be kept (PS3.15 E.3.10): its group, the private creator of its
    block (PS3.5 7.8.1) and the low byte of its element number."""

    group: int
    creator: str
    element: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    """The Basic Profile plus ``options``; ``safe_private`` lists what Retain Safe Private keeps (the
    project's own list: no maintained package ships Table E.3.10-1); ``vocabulary`` the words a
    cleaned descriptor may keep (upper case; empty: cleaning keeps nothing)."""

    options: frozenset[Option] = frozenset()
    safe_private: frozenset[SafePrivate] = frozenset()
    vocabulary: frozenset[str] = frozenset()
    _ops: dict[int, Op] = field(init=False, repr=False, compare=False, hash=False)
    _fallback: dict[int, Op] = field(init=False, repr=False, compare=False, hash=False)
    # unlisted dictionary tags already decided: at most one entry per PS3.6 tag, so bounded
    _unlisted_ops: dict[int, Op] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        ops, fallback = _compile(self.options)
        object.__setattr__(self, "_ops", ops)
        object.__setattr__(self, "_fallback", fallback)
        object.__setattr__(self, "_unlisted_ops", {})

    @property
    def shifts_dates(self) -> bool:
        return Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in self.options

    @property
    def retains_safe_private(self) -> bool:
        return Option.RETAIN_SAFE_PRIVATE in self.options and bool(self.safe_private)

    def codes(self) -> tuple[str, ...]:
        """CID 7050 codes of what this profile applies, in Table E.1-1's column order."""
        chosen = [option for option in Option if option in self.options]
        if Option.RETAIN_SAFE_PRIVATE in self.options and not self.safe_private:
            chosen.remove(Option.RETAIN_SAFE_PRIVATE)  # nothing retained: not claimed
        return (BASIC_PROFILE_CODE, *(option.code for option in chosen))

    @property
    def cleans_descriptors(self) -> bool:
        return Option.CLEAN_DESCRIPTORS in self.options

    def op(self, tag: int, vr: str | None = None) -> Op:
        """The operation for a public or masked tag written with explicit VR ``vr`` (None or "" in implicit VR,
        or UN: the dictionary's). Private tags: :mod:`deid.rewrite` keeps what Retain Safe Private lists."""
        if not written_as_defined(tag, vr):
            return Op.REMOVE  # PS3.5 7.1.2: not this attribute as PS3.6 defines it
        op = self._ops.get(tag)
        if op is None:
            op = self._unlisted_ops.get(tag)
        if op is not None:
            return op
        op = self._unlisted(tag)
        if tag in DicomDictionary:
            self._unlisted_ops[tag] = op
        return op

    def fallback(self, tag: int) -> Op:
        """The Basic action of a tag whose option action could not be carried out."""
        return self._fallback.get(tag, Op.REMOVE)

    def _unlisted(self, tag: int) -> Op:
        """A tag Table E.1-1 does not list: the module docstring, then :func:`deid.supplement.action`."""
        for value, mask, code in table.BASIC_MASKED:
            if tag & mask == value:
                return _BASIC_OPS[code]
        if tag & 0xFFFF == 0 or (tag >> 16) in _NEVER_KEPT_GROUPS:
            return Op.REMOVE  # group lengths (PS3.5 7.2); command, file meta and pixel groups
        entry = DicomDictionary.get(tag)
        if entry is None or (tag >> 24) in (0x50, 0x60):
            return Op.REMOVE  # unknown, retired repeating, or curves and overlays (E.1-1 removes their data)
        vr = entry[0]
        code = supplement.action(tag, vr)
        if code == "C" and vr in _WHEN:
            return Op.SHIFT if self.shifts_dates else Op.DUMMY
        if code == "C":
            return Op.CLEAN if self.cleans_descriptors else Op.REMOVE
        return _SUPPLEMENT_OPS.get(code, Op.REMOVE)


def _compile(options: frozenset[Option]) -> tuple[dict[int, Op], dict[int, Op]]:
    ops: dict[int, Op] = {}
    fallback: dict[int, Op] = {}
    for tag, code in table.BASIC.items():
        ops[tag] = fallback[tag] = _BASIC_OPS[code]
        best = ""
        for option in options:
            action = table.OPTIONS[option.value].get(tag, "")
            if _RANK.get(action, 0) > _RANK.get(best, 0):
                best = action
        if best == "K":
            ops[tag] = Op.KEEP
        elif best == "C":
            dates = Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in options and tag in table.OPTIONS[
                Option.RETAIN_LONGITUDINAL_MODIFIED_DATES.value]
            ops[tag] = Op.SHIFT if dates else Op.CLEAN
    ops[PATIENT_ID] = Op.PSEUDO_ID
    ops[PATIENT_NAME] = Op.PSEUDO_NAME
    for tag in MARKERS:
        ops[tag] = Op.REMOVE  # replaced at the top level by ours
    return ops, fallback
