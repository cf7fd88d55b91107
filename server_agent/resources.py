"""From a DIMSE request to an AuthZEN question (architecture: subject / action / resource / context).

The keys of an identifier, of the head of a C-STORE data set or of a C-FIND match are read once,
strictly, by ``server_agent.keys`` (on ``dicomwire.dataset``): a data set that could be read two ways
raises ``MalformedDataSet`` (a ValueError) and must be refused, never decided on. The dict-shaped
functions here (``read_keys``, ``pinned_patient``, ``with_return_key``, ``without_element``) are thin
adapters over that reader for the policy until it calls ``server_agent.keys`` directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dicomwire import dataset
from dicomwire.dataset import MalformedDataSet
from dicomwire.dimse import CommandField, CommandSet

from .authn import Subject
from .keys import PATIENT_ID, DecisionKeys, Reading, decision_keys

__all__ = ["ACTION_NAMES", "PATIENT_ID", "WILDCARDS", "Context", "MalformedDataSet", "authzen_request",
           "pinned_patient", "read_keys", "scope_allows", "with_return_key", "without_element"]

ACTION_NAMES = {
    CommandField.C_ECHO_RQ: "C-ECHO",
    CommandField.C_FIND_RQ: "C-FIND",
    CommandField.C_GET_RQ: "C-GET",
    CommandField.C_MOVE_RQ: "C-MOVE",
    CommandField.C_STORE_RQ: "C-STORE",
}
WILDCARDS = ("*", "?", "\\")  # what makes a key match more than one value (PS3.4 C.2.2.2.2, C.2.2.2.4)
_EMPTY_VALUE = '""'  # PS3.4 C.2.2.2.8 Empty Value Matching


def read_keys(data: bytes, transfer_syntax: str | None, complete: bool = False) -> dict[str, str]:
    """The decision keys present in a data set, as strings; raises ``MalformedDataSet``.

    ``complete=False`` (what a caller that does not say gets) reads ``data`` as a possibly cut head: an
    element the end falls in is never read (a Patient ID cut in two must not become another patient's
    ID), and keys after it are left out, as unknown. Every byte that is there is read strictly.
    """
    read = dataset.read_data_set(data, transfer_syntax, complete=complete)
    return decision_keys(read, Reading.QUERY).as_dict()


def with_return_key(data: bytes, transfer_syntax: str | None, tag: int, vr: str) -> bytes:
    """The identifier with an empty (return key) element ``tag`` inserted in tag order, every other
    byte unchanged (PS3.4 C.2.2.1.2: an empty key asks the SCP to return the attribute). Raises
    ``MalformedDataSet`` (a ValueError) when the identifier cannot be read one way only."""
    return dataset.with_element(data, transfer_syntax, tag, vr)


def without_element(data: bytes, transfer_syntax: str | None, tag: int) -> bytes:
    """The data set without the top-level element ``tag``, every other byte unchanged. Raises
    ``MalformedDataSet`` (a ValueError) when the data set cannot be read one way only."""
    return dataset.without_element(data, transfer_syntax, tag)


def _single(value: str) -> bool:
    return bool(value) and value != _EMPTY_VALUE and not any(w in value for w in WILDCARDS)


def pinned_patient(keys: dict[str, str] | DecisionKeys) -> str | None:
    """The one patient a request names (PS3.4 C.2.2.2: a single-value Patient ID whose issuer, if
    present, is a single value too), or None."""
    if isinstance(keys, DecisionKeys):
        patient = keys.pinned_patient
        return patient.id if patient is not None else None
    issuer = keys.get("patient_id_issuer", "")
    if not _single(keys.get("patient_id", "")) or (issuer and not _single(issuer)):
        return None
    return keys["patient_id"]


@dataclass(frozen=True, slots=True)
class Context:
    calling_ae: str
    called_ae: str
    workstation: str
    certificate: list[str]
    peer: str


def authzen_request(subject: Subject, action: str, command: CommandSet, keys: dict[str, str] | DecisionKeys,
                    context: Context) -> dict[str, Any]:
    patient = pinned_patient(keys)
    if isinstance(keys, DecisionKeys):
        keys = keys.as_dict()
    level = keys.get("level", "").upper()
    kinds = {"PATIENT": "patient", "STUDY": "study", "SERIES": "series", "IMAGE": "instance"}
    resource_type = kinds.get(level, "instance" if action == "C-STORE" else "study" if action != "C-ECHO"
                              else "service")
    resource_id = (keys.get("sop_instance_uid") if resource_type == "instance" else
                   keys.get("series_instance_uid") if resource_type == "series" else
                   keys.get("study_instance_uid") if resource_type == "study" else patient) or "*"
    if not _single(resource_id):  # a pattern, a list or "": the PACS may match more than one
        resource_id = "*"
    properties: dict[str, Any] = {k: v for k, v in keys.items() if v and k != "level"}
    if patient is None:
        properties.pop("patient_id", None)
    if command.command_field == CommandField.C_STORE_RQ:
        # A store (or a C-GET/C-MOVE sub-operation) is decided for its study: the instance UID is
        # logged, not asked about, so the decision for one instance holds (from the cache) for the
        # rest of the study.
        resource_type, resource_id = "study", keys.get("study_instance_uid") or "*"
        properties.pop("sop_instance_uid", None)
    if level:
        properties["level"] = level
    if command.affected_sop_class_uid:
        properties["sop_class_uid"] = command.affected_sop_class_uid
    if command.move_destination:
        properties["move_destination"] = command.move_destination
    return {
        "subject": {"type": subject.kind, "id": subject.id,
                    "properties": {"username": subject.username, "roles": list(subject.roles),
                                   "organization": subject.organization, "client_id": subject.client_id}},
        "action": {"name": action},
        "resource": {"type": resource_type, "id": resource_id, "properties": properties},
        "context": {"calling_ae": context.calling_ae, "called_ae": context.called_ae,
                    "workstation": context.workstation, "client_certificate": context.certificate,
                    "purpose_of_use": subject.purpose_of_use},  # no time: the PDP uses its clock, and a
        # timestamp would make every request unique to the decision cache
    }


def scope_allows(subject: Subject, action: str, patient: str | None) -> bool:
    """SMART v2 scopes as the first gate (standards digest 7.9): C-FIND needs ``s``, C-GET and C-MOVE
    ``r``, C-STORE ``c``, on ``ImagingStudy`` or ``*``, as ``user/`` (or ``patient/`` for one patient)."""
    if subject.kind != "user" or action == "C-ECHO":
        return True
    if subject.identity_type == 1:
        return True  # a username alone carries no scopes: the PDP alone decides
    need = {"C-FIND": "s", "C-GET": "r", "C-MOVE": "r", "C-STORE": "c"}[action]
    for scope in subject.scopes:
        context, _, rest = scope.partition("/")
        resource, _, letters = rest.partition(".")
        letters = {"read": "rs", "write": "cud", "*": "cruds"}.get(letters.split("?")[0], letters.split("?")[0])
        if resource in ("ImagingStudy", "*") and need in letters and (
                context in ("user", "system") or (context == "patient" and patient is not None)):
            return True
    return False
