"""From a DIMSE request to an AuthZEN question (architecture: subject / action / resource / context).

The identifier (C-FIND/C-GET/C-MOVE) or the head of a C-STORE data set is read with pydicom in the
presentation context's transfer syntax, tolerating a head cut in the middle of an element (only the
elements before the cut are used). Only the keys the decision needs are kept.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from pydicom.filereader import data_element_generator
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

from dicomwire.dimse import CommandField, CommandSet

from .authn import Subject

ACTION_NAMES = {
    CommandField.C_ECHO_RQ: "C-ECHO",
    CommandField.C_FIND_RQ: "C-FIND",
    CommandField.C_GET_RQ: "C-GET",
    CommandField.C_MOVE_RQ: "C-MOVE",
    CommandField.C_STORE_RQ: "C-STORE",
}
KEYS = {
    0x00080052: "level",
    0x00100020: "patient_id",
    0x00100021: "patient_id_issuer",
    0x0020000D: "study_instance_uid",
    0x0020000E: "series_instance_uid",
    0x00080018: "sop_instance_uid",
    0x00080016: "sop_class_uid",
    0x00080050: "accession_number",
}
_LAST_TAG = max(KEYS)
WILDCARDS = ("*", "?", "\\")


def read_keys(data: bytes, transfer_syntax: str | None) -> dict[str, str]:
    """The decision keys of a (possibly truncated) data set; never raises on damaged input.

    An element whose value the cut shortened is dropped, never read partially: a Patient ID cut in
    two must not become another patient's ID.
    """
    implicit = transfer_syntax in (None, ImplicitVRLittleEndian)
    little = transfer_syntax != ExplicitVRBigEndian
    found: dict[str, str] = {}
    try:
        for raw in data_element_generator(BytesIO(data), implicit, little, defer_size=None,
                                          stop_when=lambda tag, vr, length: tag > _LAST_TAG):
            name = KEYS.get(raw.tag)
            if name is None:
                continue
            value = raw.value if isinstance(raw.value, bytes) else b""
            length = getattr(raw, "length", len(value))
            if length != 0xFFFFFFFF and len(value) != length:
                break  # cut inside this element
            found[name] = value.decode("latin-1", "replace").strip(" \x00")
    except Exception:
        pass
    return found


PATIENT_ID = 0x00100020


def _top_level(data: bytes, transfer_syntax: str | None) -> list[tuple[int, int, int]]:
    """(tag, start, end) of each top-level element of a whole data set."""
    implicit = transfer_syntax in (None, ImplicitVRLittleEndian)
    little = transfer_syntax != ExplicitVRBigEndian
    out: list[tuple[int, int, int]] = []
    stream = BytesIO(data)
    elements = data_element_generator(stream, implicit, little, defer_size=None)
    while True:
        # The generator reads one whole element (a sequence up to its delimiter) per step and no
        # further, so the stream position before and after a step bounds that element.
        start = stream.tell()
        try:
            element = next(elements)
        except StopIteration:
            return out
        except Exception as error:  # an untrusted data set: say it cannot be read, never guess
            raise ValueError(f"data set unreadable at byte {start}: {error}") from None
        length = getattr(element, "length", None)
        value = getattr(element, "value", None)
        if length not in (None, 0xFFFFFFFF) and isinstance(value, bytes) and len(value) != length:
            raise ValueError(f"data set unreadable at byte {start}: element {element.tag} is cut short")
        out.append((int(element.tag), start, stream.tell()))


def with_return_key(data: bytes, transfer_syntax: str | None, tag: int, vr: str) -> bytes:
    """The identifier with an empty (return key) element ``tag`` inserted in tag order, every other
    byte unchanged (PS3.4 C.2.2.1.2: an empty key asks the SCP to return the attribute). Raises
    ValueError when the identifier cannot be read."""
    implicit = transfer_syntax in (None, ImplicitVRLittleEndian)
    order = ">" if transfer_syntax == ExplicitVRBigEndian else "<"
    group, element = tag >> 16, tag & 0xFFFF
    if implicit:
        item = struct.pack(order + "HHI", group, element, 0)
    else:
        item = struct.pack(order + "HH", group, element) + vr.encode("ascii") + struct.pack(order + "H", 0)
    for found, start, _ in _top_level(data, transfer_syntax):
        if found == tag:
            return data
        if found > tag:
            return data[:start] + item + data[start:]
    return data + item


def without_element(data: bytes, transfer_syntax: str | None, tag: int) -> bytes:
    """The data set without the top-level element ``tag``, every other byte unchanged. Raises
    ValueError when the data set cannot be read."""
    for found, start, end in _top_level(data, transfer_syntax):
        if found == tag:
            return data[:start] + data[end:]
        if found > tag:
            break
    return data


def pinned_patient(keys: dict[str, str]) -> str | None:
    """The one patient a request names, or None if it names none or matches with wildcards."""
    patient = keys.get("patient_id", "")
    if not patient or any(w in patient for w in WILDCARDS):
        return None
    return patient


@dataclass(frozen=True, slots=True)
class Context:
    calling_ae: str
    called_ae: str
    workstation: str
    certificate: list[str]
    peer: str


def authzen_request(subject: Subject, action: str, command: CommandSet, keys: dict[str, str],
                    context: Context) -> dict[str, Any]:
    level = keys.get("level", "").upper()
    patient = pinned_patient(keys)
    kinds = {"PATIENT": "patient", "STUDY": "study", "SERIES": "series", "IMAGE": "instance"}
    resource_type = kinds.get(level, "instance" if action == "C-STORE" else "study" if action != "C-ECHO"
                              else "service")
    resource_id = (keys.get("sop_instance_uid") if resource_type == "instance" else
                   keys.get("series_instance_uid") if resource_type == "series" else
                   keys.get("study_instance_uid") if resource_type == "study" else patient) or "*"
    if any(w in resource_id for w in WILDCARDS):
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
