"""De-identification of one encoded data set: a C-STORE header, or a C-FIND match (PS3.15 E.1.1).

The caller streams a C-STORE data set: it finds where the header ends (:func:`header_end`: the first
element of group 7FE0, Pixel Data and what belongs to it), asks what the header needs
(:func:`needs`), gets the pseudonyms from the pseudonymisation service, and sends
:func:`deidentify_header`'s new header followed by the original bytes from ``header_end`` on,
unchanged. A C-FIND match is a whole small data set: :func:`deidentify_identifier`.

After de-identification the header carries Patient Identity Removed (0012,0062) ``YES``,
De-identification Method (0012,0063) and its Code Sequence (0012,0064) with the CID 7050 codes of the
profile and options applied, and Longitudinal Temporal Information Modified (0028,0303) ``MODIFIED``
(dates shifted) or ``REMOVED`` (PS3.15 E.1.1 items 6 and 7, E.3.6; PS3.3 C.7.6.1).

Transfer syntaxes: Implicit VR LE, Explicit VR LE (every encapsulated syntax's header is), Explicit
VR BE; Deflated Explicit VR LE only for identifiers (inflated, bounded, then deflated again): a
deflated C-STORE data set is one deflate stream, its pixel data cannot pass unchanged, so it is
refused (the relay should not accept that syntax on a de-identified retrieval).
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass, field

from dicomwire.dataset import (
    DEFLATED_EXPLICIT_VR_LE,
    EXPLICIT_VR_BE,
    IMPLICIT_VR_LE,
    DataSet,
    read_data_set,
)

from .errors import MissingPseudonym, NotDeidentifiable
from .profile import (
    DEIDENTIFICATION_METHOD,
    DEIDENTIFICATION_METHOD_CODES,
    PATIENT_ID,
    PATIENT_IDENTITY_REMOVED,
    TEMPORAL_INFORMATION_MODIFIED,
    Op,
    Profile,
)
from .pseudonyms import Needs, PatientPseudonym, Pseudonyms
from .rewrite import EXPLICIT_BE, EXPLICIT_LE, IMPLICIT, Syntax, Walk, encode
from .table import CID7050, EDITION
from .values import dictionary_vr, padded, words

PIXEL_GROUP = 0x7FE00000  # (7FE0,0001) Extended Offset Table ... (7FE0,0010) Pixel Data: streamed unchanged
METHOD = f"PS3.15 E.1-1 {EDITION}, dicom-identity-agents deid"  # LO: at most 64 characters


@dataclass(frozen=True, slots=True, kw_only=True)
class Deidentified:
    """The new encoding (same transfer syntax) and the pseudonymous Patient ID it names, if any (for
    the disclosure record)."""

    data: bytes
    patient_id: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Header:
    """A C-STORE data set's header read once (:func:`read_header`): the strict reader's result for
    the head held and where the header ends in it. The pixel check (:func:`deid.pixels.pixel_risk_of`),
    :func:`needs_of` and :func:`deidentify_read` take it, so an instance's header is read once."""

    read: DataSet
    end: int

    @property
    def data(self) -> bytes:
        return self.read.data[: self.end]


def read_header(head: bytes, transfer_syntax: str | None, *, complete: bool = False) -> Header | None:
    """The header of a data set whose first bytes are ``head``: it ends at its first element of group
    7FE0 (or with a complete data set that has none); None while ``head`` does not reach that far."""
    if (transfer_syntax or IMPLICIT_VR_LE) == DEFLATED_EXPLICIT_VR_LE:
        raise NotDeidentifiable("a deflated data set cannot be de-identified in transit (PS3.5 A.5: one "
                                "deflate stream, so its pixel data cannot pass unchanged)")
    read = read_data_set(head, transfer_syntax, complete=complete)
    end = next((element.start for element in read.elements if element.tag >= PIXEL_GROUP), None)
    if end is None and read.cut is not None:
        end = read.cut.start if read.cut.tag is not None and read.cut.tag >= PIXEL_GROUP else None
    elif end is None and complete:
        end = len(head)
    return None if end is None else Header(read=read, end=end)


def header_end(head: bytes, transfer_syntax: str | None, *, complete: bool = False) -> int | None:
    """Where the header of a data set ends (:func:`read_header`), or None while ``head`` is too short."""
    header = read_header(head, transfer_syntax, complete=complete)
    return None if header is None else header.end


def needs(data: bytes, transfer_syntax: str | None, profile: Profile, *, patient_id: str | None = None) -> Needs:
    """The pseudonyms de-identifying ``data`` (a header or an identifier) will ask for."""
    read, syntax = _read(data, transfer_syntax)
    recorder = _Recorder()
    patient_key = _patient_id(read) or patient_id
    patient = recorder.patient(patient_key) if patient_key else None
    _walk(read, syntax, profile, recorder, patient, patient_key, markers=False)
    return Needs(patient_ids=frozenset(recorder.patients), uids=frozenset(recorder.uids))


def needs_of(header: Header, profile: Profile) -> Needs:
    """:func:`needs` of a header already read."""
    recorder = _Recorder()
    patient_key = _patient_id(header.read)
    patient = recorder.patient(patient_key) if patient_key else None
    _walk(header.read, _syntax(header.read), profile, recorder, patient, patient_key, markers=False,
          stop=header.end)
    return Needs(patient_ids=frozenset(recorder.patients), uids=frozenset(recorder.uids))


def deidentify_read(header: Header, profile: Profile, pseudonyms: Pseudonyms) -> Deidentified:
    """:func:`deidentify_header` of a header already read: the same bytes for the same header."""
    return _deidentify(header.read, _syntax(header.read), profile, pseudonyms, None, markers=True, stop=header.end)


def deidentify_header(header: bytes, transfer_syntax: str | None, profile: Profile, pseudonyms: Pseudonyms, *,
                      patient_id: str | None = None) -> Deidentified:
    """The de-identified header of a C-STORE data set: ``header`` is every byte before ``header_end``."""
    if (transfer_syntax or IMPLICIT_VR_LE) == DEFLATED_EXPLICIT_VR_LE:
        raise NotDeidentifiable("a deflated data set cannot be de-identified in transit")
    read, syntax = _read(header, transfer_syntax)
    if read.elements and read.elements[-1].tag >= PIXEL_GROUP:
        raise NotDeidentifiable("the header holds pixel data: give the bytes before header_end() only")
    return _deidentify(read, syntax, profile, pseudonyms, patient_id, markers=True)


def deidentify_identifier(identifier: bytes, transfer_syntax: str | None, profile: Profile, pseudonyms: Pseudonyms,
                          *, patient_id: str | None = None) -> Deidentified:
    """A de-identified C-FIND match (PS3.4 C.4.1.1.3.2): the same rules, without the markers a C-FIND
    response does not ask for."""
    read, syntax = _read(identifier, transfer_syntax)
    result = _deidentify(read, syntax, profile, pseudonyms, patient_id, markers=False)
    if read.transfer_syntax == DEFLATED_EXPLICIT_VR_LE:
        return Deidentified(data=_deflate(result.data), patient_id=result.patient_id)
    return result


def _deidentify(read: DataSet, syntax: Syntax, profile: Profile, pseudonyms: Pseudonyms, patient_id: str | None,
                *, markers: bool, stop: int | None = None) -> Deidentified:
    source = _Lookup(pseudonyms)
    patient_key = _patient_id(read) or patient_id
    patient = source.patient(patient_key) if patient_key else None
    data = _walk(read, syntax, profile, source, patient, patient_key, markers=markers, stop=stop)
    return Deidentified(data=data, patient_id=patient.patient_id if patient else None)


def _walk(read: DataSet, syntax: Syntax, profile: Profile, source: _Lookup | _Recorder,
          patient: PatientPseudonym | None, patient_key: str | None, *, markers: bool,
          stop: int | None = None) -> bytes:
    """The walk over ``read``'s top level up to ``stop`` (its end when None: a header or identifier
    read on its own)."""
    stop = len(read.data) if stop is None else stop
    walk = Walk(data=read.data, profile=profile, source=source, patient=patient, patient_key=patient_key,
                identifying=_identifying(read, syntax, profile, stop) if profile.vocabulary else frozenset(),
                inserts=list(_markers(profile, syntax)) if markers else [])
    out: list[bytes] = []
    walk.elements(0, stop, syntax, 0, out)
    return b"".join(out)


def _read(data: bytes, transfer_syntax: str | None) -> tuple[DataSet, Syntax]:
    read = read_data_set(data, transfer_syntax)
    return read, _syntax(read)


def _syntax(read: DataSet) -> Syntax:
    uid = read.transfer_syntax
    return IMPLICIT if uid == IMPLICIT_VR_LE else EXPLICIT_BE if uid == EXPLICIT_VR_BE else EXPLICIT_LE


def _patient_id(read: DataSet) -> str | None:
    element = read.get(PATIENT_ID)
    if element is None:
        return None
    return read.value(element).strip(b" \x00").decode("latin-1") or None


def _identifying(read: DataSet, syntax: Syntax, profile: Profile, stop: int) -> frozenset[bytes]:
    """Words of the top-level names and identifiers the table replaces: never kept by cleaning."""
    found: set[bytes] = set()
    for element in read.elements:
        if element.start >= stop:
            break
        vr = element.vr if element.vr and element.vr != "UN" else dictionary_vr(element.tag)
        if vr in ("PN", "LO", "SH") and profile.op(element.tag, element.vr) in _IDENTIFYING_OPS:
            found |= words(read.value(element))
    return frozenset(found)


_IDENTIFYING_OPS = frozenset({Op.REMOVE, Op.ZERO, Op.DUMMY, Op.PSEUDO_ID, Op.PSEUDO_NAME})


@functools.lru_cache(maxsize=64)
def _markers(profile: Profile, syntax: Syntax) -> tuple[tuple[int, bytes], ...]:
    """PS3.15 E.1.1 items 6-7 and E.3.6: what we add to a de-identified header, encoded once."""
    items = []
    for code in profile.codes():
        scheme, meaning = CID7050[code]
        body = (encode(syntax, 0x00080100, "SH", padded(code.encode(), "SH"))
                + encode(syntax, 0x00080102, "SH", padded(scheme.encode(), "SH"))
                + encode(syntax, 0x00080104, "LO", padded(meaning.encode(), "LO")))
        items.append(syntax.head.pack(0xFFFE, 0xE000, len(body)) + body)
    sequence = b"".join(items)
    group, number = DEIDENTIFICATION_METHOD_CODES >> 16, DEIDENTIFICATION_METHOD_CODES & 0xFFFF
    sequence_header = (syntax.long.pack(group, number, b"SQ", 0, len(sequence)) if syntax.explicit
                       else syntax.head.pack(group, number, len(sequence)))
    temporal = b"MODIFIED" if profile.shifts_dates else b"REMOVED "
    return (
        (PATIENT_IDENTITY_REMOVED, encode(syntax, PATIENT_IDENTITY_REMOVED, "CS", b"YES ")),
        (DEIDENTIFICATION_METHOD, encode(syntax, DEIDENTIFICATION_METHOD, "LO", padded(METHOD.encode(), "LO"))),
        (DEIDENTIFICATION_METHOD_CODES, sequence_header + sequence),
        (TEMPORAL_INFORMATION_MODIFIED, encode(syntax, TEMPORAL_INFORMATION_MODIFIED, "CS", temporal)),
    )


@dataclass(slots=True)
class _Lookup:
    pseudonyms: Pseudonyms

    def uid(self, real: str) -> str:
        new = self.pseudonyms.uids.get(real)
        if new is None:
            raise MissingPseudonym(f"no pseudonym for UID {real[:64]!r}")
        return new

    def patient(self, real_id: str) -> PatientPseudonym:
        found = self.pseudonyms.patients.get(real_id)
        if found is None:
            raise MissingPseudonym("no pseudonym for the data set's Patient ID")
        return found


@dataclass(slots=True)
class _Recorder:
    """Records what is asked; answers placeholders of the right shape."""

    uids: set[str] = field(default_factory=set)
    patients: set[str] = field(default_factory=set)

    def uid(self, real: str) -> str:
        self.uids.add(real)
        return "2.25.0"

    def patient(self, real_id: str) -> PatientPseudonym:
        self.patients.add(real_id)
        return PatientPseudonym(patient_id="X", patient_name="X", date_offset_days=0)


def _deflate(plain: bytes) -> bytes:
    """PS3.5 A.5: raw deflate, padded to an even length."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    stream = compressor.compress(plain) + compressor.flush()
    return stream + b"\x00" if len(stream) & 1 else stream
