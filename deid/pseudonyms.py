"""The pseudonyms one de-identification uses, as values the pseudonymisation service handed out.

De-identification is a pure function: it never asks anyone. The caller first learns what a data set
needs (:func:`deid.needs`, batched across C-FIND matches), asks the service once, and passes the
answer in. Values are byte strings carried as latin-1 text, so a Patient ID in any character set
comes back byte for byte.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True, kw_only=True)
class PatientPseudonym:
    """One patient in one project: pseudonymous ID and name, and the offset every date moves by
    (PS3.15 E.3.6: whole days, the same for all of the patient's data, so intervals are kept)."""

    patient_id: str
    patient_name: str
    date_offset_days: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Needs:
    """What a data set's de-identification needs from the service: real Patient IDs and UIDs."""

    patient_ids: frozenset[str] = frozenset()
    uids: frozenset[str] = frozenset()

    def __or__(self, other: Needs) -> Needs:
        return Needs(patient_ids=self.patient_ids | other.patient_ids, uids=self.uids | other.uids)

    def __bool__(self) -> bool:
        return bool(self.patient_ids or self.uids)


@dataclass(frozen=True, slots=True, kw_only=True)
class Pseudonyms:
    """The service's answer: real Patient ID -> :class:`PatientPseudonym`, real UID -> new UID."""

    patients: Mapping[str, PatientPseudonym] = field(default_factory=dict)
    uids: Mapping[str, str] = field(default_factory=dict)
