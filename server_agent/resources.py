"""From a DIMSE request to an AuthZEN question (architecture: subject / action / resource / context).

The keys of a request are read once, strictly, by :mod:`server_agent.keys` (a data set that could be
read two ways is refused, never decided on). :func:`authzen_request` turns them, the verified subject
and the association's context into an AuthZEN evaluation (standards digest section 8); only keys the
PACS matches as single values name a resource, anything it could match more widely is ``*``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dicomwire.dimse import CommandField, CommandSet

from .authn import Subject
from .keys import DecisionKeys

__all__ = ["Context", "authzen_request", "scope_allows"]

_SINGLE = frozenset("*?\\")  # a resource id with any of these could name more than one


@dataclass(frozen=True, slots=True)
class Context:
    calling_ae: str
    called_ae: str
    workstation: str
    certificate: list[str]
    peer: str


def authzen_request(subject: Subject, action: str, command: CommandSet, keys: DecisionKeys, patient: str | None,
                    context: Context) -> dict[str, Any]:
    """The AuthZEN evaluation of one request: ``patient`` is the patient it is decided for (None:
    none, the PDP must decide without one)."""
    resource_keys = keys.as_dict()
    level = resource_keys.get("level", "").upper()
    kinds = {"PATIENT": "patient", "STUDY": "study", "SERIES": "series", "IMAGE": "instance"}
    resource_type = kinds.get(level, "instance" if action == "C-STORE" else "study" if action != "C-ECHO"
                              else "service")
    resource_id = (resource_keys.get("sop_instance_uid") if resource_type == "instance" else
                   resource_keys.get("series_instance_uid") if resource_type == "series" else
                   resource_keys.get("study_instance_uid") if resource_type == "study" else patient) or "*"
    if _SINGLE.intersection(resource_id) or resource_id == '""':  # the PACS may match more than one
        resource_id = "*"
    properties: dict[str, Any] = {k: v for k, v in resource_keys.items() if v and k != "level"}
    properties.pop("patient_id", None)
    if patient is not None:
        properties["patient_id"] = patient
    if command.command_field == CommandField.C_STORE_RQ:
        # A store (or a C-GET/C-MOVE sub-operation) is decided for its study: the instance UID is
        # logged, not asked about, so the decision for one instance holds (from the cache) for the
        # rest of the study.
        resource_type, resource_id = "study", resource_keys.get("study_instance_uid") or "*"
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
