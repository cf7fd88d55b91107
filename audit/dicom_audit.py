"""DICOM audit messages (PS3.15 A.5) built from decision events, with the human user as requestor.

| decision event | EventID | EventTypeCode |
|---|---|---|
| authentication (association) | 110114 User Authentication | 110122 Login |
| association-end | 110114 User Authentication | 110123 Logout |
| authorization permit, C-FIND | 110112 Query | - |
| authorization permit, C-MOVE / C-GET | 110102 Begin Transferring DICOM Instances | - |
| authorization permit, C-STORE; sub-operation; C-MOVE/C-GET transfer summary | 110104 DICOM Instances Transferred | - |
| any deny; break-glass | 110113 Security Alert | 110132 Use of Restricted Function / 110127 Emergency Override |
| application-start / -stop | 110100 Application Activity | 110120 / 110121 |

The AE title and network address are secondary participants; the patient and the study are
participant objects (PS3.15 A.5.2.2, RFC 3881 codes). The XML is one line, UTF-8.
"""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET

DCM = "DCM"


def _code(parent: ET.Element, tag: str, code: str, meaning: str, system: str = DCM) -> None:
    ET.SubElement(parent, tag, {"csd-code": code, "codeSystemName": system, "originalText": meaning})


def _event(record: dict[str, Any]) -> tuple[tuple[str, str], tuple[str, str] | None, str]:
    """(EventID, EventTypeCode or None, EventActionCode)."""
    event, action, decision = record.get("event"), record.get("action"), record.get("decision")
    if event == "application-start":
        return ("110100", "Application Activity"), ("110120", "Application Start"), "E"
    if event == "application-stop":
        return ("110100", "Application Activity"), ("110121", "Application Stop"), "E"
    if event == "association-end":
        return ("110114", "User Authentication"), ("110123", "Logout"), "E"
    if event == "transfer-summary":
        return ("110104", "DICOM Instances Transferred"), None, "R"
    if record.get("break_glass"):
        return ("110113", "Security Alert"), ("110127", "Emergency Override Started"), "E"
    if event == "authentication":
        if decision == "deny":
            return ("110113", "Security Alert"), ("110126", "Node Authentication"), "E"
        return ("110114", "User Authentication"), ("110122", "Login"), "E"
    if decision == "deny":
        return ("110113", "Security Alert"), ("110132", "Use of Restricted Function"), "E"
    if action == "C-FIND":
        return ("110112", "Query"), None, "E"
    if action in ("C-MOVE", "C-GET") and event == "authorization" and not record.get("sub_operation_of"):
        return ("110102", "Begin Transferring DICOM Instances"), None, "E"
    return ("110104", "DICOM Instances Transferred"), None, "R" if action != "C-STORE" else "C"


def audit_message(record: dict[str, Any], source_id: str) -> bytes:
    event_id, type_code, action_code = _event(record)
    root = ET.Element("AuditMessage")
    ident = ET.SubElement(root, "EventIdentification", {
        "EventActionCode": action_code, "EventDateTime": str(record.get("time", "")),
        # 0 success; 4 minor failure (refused as designed); PS3.15 A.5.1
        "EventOutcomeIndicator": "4" if record.get("decision") == "deny" else "0"})
    _code(ident, "EventID", *event_id)
    if type_code:
        _code(ident, "EventTypeCode", *type_code)
    if record.get("reason"):
        ET.SubElement(ident, "EventOutcomeDescription").text = str(record["reason"])
    user = record.get("user") or {}
    peer = str(record.get("peer", "")).rsplit(":", 1)[0]
    if user.get("username"):
        person = ET.SubElement(root, "ActiveParticipant", {
            "UserID": str(user["username"]), "AlternativeUserID": str(user.get("sub", "")),
            "UserName": str(user["username"]), "UserIsRequestor": "true"})
        _code(person, "RoleIDCode", "110153", "Source Role ID")
    if record.get("calling_ae"):
        node = ET.SubElement(root, "ActiveParticipant", {
            "UserID": str(record["calling_ae"]), "UserIsRequestor": "false" if user.get("username") else "true",
            **({"NetworkAccessPointID": peer, "NetworkAccessPointTypeCode": "2"} if peer else {})})
        _code(node, "RoleIDCode", "110153", "Source Role ID")
    server = ET.SubElement(root, "ActiveParticipant", {"UserID": source_id, "UserIsRequestor": "false"})
    _code(server, "RoleIDCode", "110152", "Destination Role ID")
    source = ET.SubElement(root, "AuditSourceIdentification", {"AuditSourceID": source_id})
    _code(source, "AuditSourceTypeCode", "4", "Application Server Process", "RFC-3881")
    resource = record.get("resource") or {}
    patient = resource.get("patient_id")
    if patient and "*" not in patient:
        obj = ET.SubElement(root, "ParticipantObjectIdentification", {
            "ParticipantObjectID": str(patient), "ParticipantObjectTypeCode": "1",
            "ParticipantObjectTypeCodeRole": "1"})
        _code(obj, "ParticipantObjectIDTypeCode", "2", "Patient Number", "RFC-3881")
    if resource.get("study_instance_uid"):
        obj = ET.SubElement(root, "ParticipantObjectIdentification", {
            "ParticipantObjectID": str(resource["study_instance_uid"]), "ParticipantObjectTypeCode": "2",
            "ParticipantObjectTypeCodeRole": "3"})
        _code(obj, "ParticipantObjectIDTypeCode", "110180", "Study Instance UID")
    return ET.tostring(root, encoding="unicode").encode("utf-8")  # one line, no XML declaration


AUDITED = frozenset({"authentication", "authorization", "association-end", "sub-operation", "transfer-summary",
                     "application-start", "application-stop"})
