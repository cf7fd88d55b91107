"""Shared by the de-identification tests: pseudonyms made the way the service makes them, and the
checker that reads every element of a de-identified data set for identifying values."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from deid import Needs, PatientPseudonym, Profile, Pseudonyms, deidentify_header, header_end, needs
from devtools.dicomdata import decode_data_set, encode_data_set

IMPLICIT, EXPLICIT, BIG = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"
SYNTAXES = (IMPLICIT, EXPLICIT, BIG)
OFFSET = -40


def answer(wanted: Needs, project: str = "STUDY-A", offset: int = OFFSET) -> Pseudonyms:
    """What a service keyed by ``project`` answers (a stand-in with the same shape)."""
    def h(value: str) -> int:
        return int.from_bytes(hashlib.sha256(f"{project}:{value}".encode()).digest()[:16], "big")
    return Pseudonyms(
        patients={p: PatientPseudonym(patient_id=f"P{h(p) % 10**12:012d}", patient_name=f"P{h(p) % 10**12:012d}",
                                      date_offset_days=offset) for p in wanted.patient_ids},
        uids={u: f"2.25.{h(u)}" for u in wanted.uids})


def elements(ds: Dataset) -> Iterator[tuple[BaseTag, str, object]]:
    """Every element at every nesting level, private ones included."""
    for element in ds.iterall():
        yield element.tag, element.VR, element.value


def deidentify(ds: Dataset, ts: str, profile: Profile, project: str = "STUDY-A") -> tuple[bytes, bytes, Dataset]:
    """(original encoding, de-identified encoding with the original pixel data, read back)."""
    data = encode_data_set(ds, ts)
    end = header_end(data, ts, complete=True)
    assert end is not None
    pseudonyms = answer(needs(data[:end], ts, profile), project)
    new = deidentify_header(data[:end], ts, profile, pseudonyms).data + data[end:]
    return data, new, decode_data_set(new, ts)


# Values of identified_header() that must never reach a researcher (names, IDs, UIDs, dates, places).
IDENTIFYING = ("PAT-4711", "DOE", "JANE", "19610704", "20260114", "ACC-99812", "SAINT ELSEWHERE", "SPRINGFIELD",
               "HOSPITAL ROAD", "WELBY", "MARCUS", "CT7", "RADIOLOGY WEST", "HOUSE^GREGORY", "RATCHED", "KILDARE",
               "SSN-078", "EVERGREEN", "IODINE", "ANNA", "SN-884422", "S-1234", "RP-5521", "SPS-5521",
               "1.2.826.0.1.3680043.10.1447.77")


def leaks(original: Dataset, new_bytes: bytes, new: Dataset) -> list[str]:
    """Identifying values of ``original`` found anywhere in the de-identified data: in any element of
    any item (read back with pydicom), and in the raw bytes (what no reader would show)."""
    found = [value for value in IDENTIFYING if value.encode() in new_bytes]
    for tag, vr, value in elements(new):
        text = str(value)
        found += [f"{tag} {vr} {text[:40]}" for needle in IDENTIFYING if needle in text]
    return found
