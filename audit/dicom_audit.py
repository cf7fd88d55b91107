"""DICOM audit messages (PS3.15 A.5) built from decision events, with the human user as requestor.

| decision event | EventID | EventTypeCode |
|---|---|---|
| authentication (association) | 110114 User Authentication | 110122 Login |
| association-end | 110114 User Authentication | 110123 Logout |
| authorization permit, C-FIND | 110112 Query | - |
| authorization permit, C-MOVE / C-GET | 110102 Begin Transferring DICOM Instances | - |
| authorization permit, C-STORE; sub-operation; C-MOVE/C-GET transfer summary | 110104 DICOM Instances Transferred | - |
| any deny; break-glass | 110113 Security Alert | 110132 Use of Restricted Function / 110127 Emergency Override |
| association under purpose of use BTG | 110113 Security Alert | 110127 Emergency Override Started |
| refused association | 110113 Security Alert | 110126 Node Authentication |
| application-start / -stop | 110100 Application Activity | 110120 / 110121 |
| log-truncated (a torn tail sealed) | 110113 Security Alert | 110133 Audit Recording Stopped |

The AE title and network address are secondary participants, and so is a client acting for the user
(RFC 8693 ``act``: 110150 Application, a requestor too); the patient and the study are
participant objects (PS3.15 A.5.2.2, RFC 3881 codes). A de-identified disclosure (issue 16's research
view) adds the pseudonymous patient the user saw: a second patient object whose ID is the pseudonym,
``ParticipantObjectDataLifeCycle`` 7 (De-identification, RFC 3881 5.5.3) and two details, the research
project and the profile; the real patient stays the first object, as in every message, so that an
audit repository's accounting by Patient ID finds the research use. For a sealed torn tail, the decision log itself
is the alert subject (A.5.3.11: a system object in the role of a security resource). The XML is one
line, UTF-8. The event is read through :mod:`audit.events` only: this module knows no record keys.

Names and reasons come from peers (a token's user name, an identity provider's error description,
an AE title): a character XML 1.0 cannot carry (section 2.2: controls other than tab, newline and
carriage return; lone surrogates; U+FFFE, U+FFFF) becomes U+FFFD, so that every message stays
well-formed and a repository cannot be made to drop it.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from xml.etree import ElementTree as ET

from .events import (
    Action,
    ApplicationEvent,
    AssociationEnd,
    AuthenticationEvent,
    AuthorizationEvent,
    Decision,
    DecisionEvent,
    Kind,
    LogTruncated,
    TransferSummary,
    Who,
)
from .rows import one_patient

DCM = "DCM"
Code = tuple[str, str]
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _clean(value: str) -> str:
    return _NOT_XML.sub("\ufffd", value)


def _element(parent: ET.Element, tag: str, attributes: Mapping[str, str]) -> ET.Element:
    return ET.SubElement(parent, tag, {name: _clean(value) for name, value in attributes.items()})


def _code(parent: ET.Element, tag: str, code: str, meaning: str, system: str = DCM) -> None:
    ET.SubElement(parent, tag, {"csd-code": code, "codeSystemName": system, "originalText": meaning})


def _identification(event: DecisionEvent) -> tuple[Code, Code | None, str]:
    """(EventID, EventTypeCode or None, EventActionCode) per PS3.15 A.5.3."""
    alert = ("110113", "Security Alert")
    if isinstance(event, ApplicationEvent):
        started = event.kind is Kind.APPLICATION_START
        return (("110100", "Application Activity"),
                ("110120", "Application Start") if started else ("110121", "Application Stop"), "E")
    if isinstance(event, LogTruncated):
        return alert, ("110133", "Audit Recording Stopped"), "E"
    if isinstance(event, AssociationEnd):
        return ("110114", "User Authentication"), ("110123", "Logout"), "E"
    if isinstance(event, TransferSummary):
        return ("110104", "DICOM Instances Transferred"), None, "R"
    if isinstance(event, AuthenticationEvent):
        if event.decision is Decision.DENY:
            return alert, ("110126", "Node Authentication"), "E"
        if event.user is not None and event.user.break_glass:  # an association opened under BTG
            return alert, ("110127", "Emergency Override Started"), "E"
        return ("110114", "User Authentication"), ("110122", "Login"), "E"
    if event.pdp is not None and event.pdp.break_glass:
        return alert, ("110127", "Emergency Override Started"), "E"
    if event.decision is Decision.DENY:
        return alert, ("110132", "Use of Restricted Function"), "E"
    if event.action is Action.C_FIND:
        return ("110112", "Query"), None, "E"
    if event.action in (Action.C_MOVE, Action.C_GET) and event.sub_operation_of is None:
        return ("110102", "Begin Transferring DICOM Instances"), None, "E"
    return ("110104", "DICOM Instances Transferred"), None, "C" if event.action is Action.C_STORE else "R"


def _outcome(event: DecisionEvent) -> tuple[str, str]:
    """(EventOutcomeIndicator, EventOutcomeDescription): 0 success, 4 minor failure (a refusal as
    designed; a write the writer lost to a crash) per PS3.15 A.5.1."""
    if isinstance(event, LogTruncated):
        return "4", f"decision log: a write cut short by a crash; {event.torn_bytes} torn bytes kept and sealed"
    if isinstance(event, AuthenticationEvent | AuthorizationEvent):
        described = f"{event.reason_code}: {event.detail}" if event.detail else event.reason_code
        return ("4" if event.decision is Decision.DENY else "0"), described
    return "0", ""


def audit_message(event: DecisionEvent, source_id: str, *, time: str, log_file: str = "") -> bytes:
    """The audit message of one event written at ``time``; ``log_file`` names the decision log (the
    alert subject of a sealed torn tail)."""
    event_id, type_code, action_code = _identification(event)
    outcome, description = _outcome(event)
    root = ET.Element("AuditMessage")
    ident = _element(root, "EventIdentification", {
        "EventActionCode": action_code, "EventDateTime": time, "EventOutcomeIndicator": outcome})
    _code(ident, "EventID", *event_id)
    if type_code:
        _code(ident, "EventTypeCode", *type_code)
    if description:
        ET.SubElement(ident, "EventOutcomeDescription").text = _clean(description)
    _participants(root, event, source_id)
    source = _element(root, "AuditSourceIdentification", {"AuditSourceID": source_id})
    _code(source, "AuditSourceTypeCode", "4", "Application Server Process", "RFC-3881")
    _objects(root, event, log_file)
    return ET.tostring(root, encoding="unicode").encode("utf-8")  # one line, no XML declaration


def _participants(root: ET.Element, event: DecisionEvent, source_id: str) -> None:
    user: Who | None = None
    calling_ae = peer = ""
    if isinstance(event, AuthenticationEvent | AuthorizationEvent | TransferSummary | AssociationEnd):
        user = event.user
    if isinstance(event, AuthenticationEvent | AuthorizationEvent | AssociationEnd):
        calling_ae = event.calling_ae
    if isinstance(event, AuthenticationEvent):
        peer = _host(event.peer)
    if user is not None:
        person = _element(root, "ActiveParticipant", {
            "UserID": user.username, "AlternativeUserID": user.sub, "UserName": user.username,
            "UserIsRequestor": "true"})
        _code(person, "RoleIDCode", "110153", "Source Role ID")
    if user is not None and user.acting_client:  # RFC 8693 delegation: the client asked, for the user
        actor = _element(root, "ActiveParticipant", {"UserID": user.acting_client, "UserIsRequestor": "true"})
        _code(actor, "RoleIDCode", "110150", "Application")
    if calling_ae:
        node = _element(root, "ActiveParticipant", {
            "UserID": calling_ae, "UserIsRequestor": "false" if user is not None else "true",
            **({"NetworkAccessPointID": peer, "NetworkAccessPointTypeCode": "2"} if peer else {})})
        _code(node, "RoleIDCode", "110153", "Source Role ID")
    server = _element(root, "ActiveParticipant", {"UserID": source_id, "UserIsRequestor": "false"})
    _code(server, "RoleIDCode", "110152", "Destination Role ID")


def _objects(root: ET.Element, event: DecisionEvent, log_file: str) -> None:
    if isinstance(event, LogTruncated):
        subject = _element(root, "ParticipantObjectIdentification", {
            "ParticipantObjectID": log_file or "decision log", "ParticipantObjectTypeCode": "2",
            "ParticipantObjectTypeCodeRole": "13"})  # system object, security resource (RFC 3881)
        _code(subject, "ParticipantObjectIDTypeCode", "12", "URI", "RFC-3881")
        return
    if not isinstance(event, AuthorizationEvent | TransferSummary):
        return
    patient = one_patient(event.resource)
    if patient:
        obj = _element(root, "ParticipantObjectIdentification", {
            "ParticipantObjectID": patient, "ParticipantObjectTypeCode": "1", "ParticipantObjectTypeCodeRole": "1"})
        _code(obj, "ParticipantObjectIDTypeCode", "2", "Patient Number", "RFC-3881")
    study = event.resource.get("study_instance_uid")
    if isinstance(study, str) and study and "\\" not in study and "*" not in study:
        obj = _element(root, "ParticipantObjectIdentification", {
            "ParticipantObjectID": study, "ParticipantObjectTypeCode": "2", "ParticipantObjectTypeCodeRole": "3"})
        _code(obj, "ParticipantObjectIDTypeCode", "110180", "Study Instance UID")
    if isinstance(event, AuthorizationEvent) and event.disclosure is not None and event.disclosure.pseudonyms:
        shown = event.disclosure
        obj = _element(root, "ParticipantObjectIdentification", {
            "ParticipantObjectID": shown.pseudonyms[0], "ParticipantObjectTypeCode": "1",
            "ParticipantObjectTypeCodeRole": "1", "ParticipantObjectDataLifeCycle": "7"})
        _code(obj, "ParticipantObjectIDTypeCode", "2", "Patient Number", "RFC-3881")
        for kind, value in (("ResearchProject", shown.project), ("DeidentificationProfile", shown.profile)):
            _element(obj, "ParticipantObjectDetail", {"type": kind,
                                                      "value": base64.b64encode(value.encode()).decode("ascii")})


def _host(peer: str) -> str:
    """The address of ``host:port``, ``[v6]:port`` or a bare address (the return path logs no port)."""
    if peer.startswith("["):
        return peer[1:].partition("]")[0]
    host, colon, port = peer.rpartition(":")
    return host if colon and port.isdigit() and ":" not in host else peer
