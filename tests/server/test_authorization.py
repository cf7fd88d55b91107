"""Authorization as pure functions, tested as tables without HTTP (like hial_mock/policy.py's):
what the agent decides by itself, what it asks the PDP, and what a PDP decision means."""

from __future__ import annotations

from typing import Any

import pytest

from audit.events import Action, Reason
from dicomwire.dimse import Tag, decode_command, encode_command
from server_agent.authn import Subject
from server_agent.authorization import Conclusion, Outcome, PdpQuery, conclude, prepare, read_facts
from server_agent.config import Node, Workstation
from server_agent.pdp import Decision
from server_agent.resources import Context

CT = "1.2.840.10008.5.1.4.1.1.2"
FIND = "1.2.840.10008.5.1.4.1.2.2.1"
MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
IVLE = "1.2.840.10008.1.2"
NOW = 1_000_000.0

RAD = Subject(kind="user", id="rad", username="rad", roles=("radiologist",), identity_type=5, expires_at=NOW + 60,
              scopes=frozenset({"user/ImagingStudy.rs"}))
TECH = Subject(kind="user", id="tech", username="tech", identity_type=5, expires_at=NOW + 60,
               scopes=frozenset({"user/ImagingStudy.c"}))
EXPIRED = Subject(kind="user", id="rad", username="rad", identity_type=5, expires_at=NOW,
                  scopes=frozenset({"user/ImagingStudy.rs"}))
MODALITY = Subject(kind="node", id="CT1", username="CT1")
NODES = {"CT1": Node(ae_title="CT1", addresses=("10.0.0.5",), actions=("C-ECHO", "C-STORE"))}
WORKSTATIONS = {"WS1": Workstation(name="WS1", host="10.0.0.9", port=2764, server_name="ws1")}
CONTEXT = Context(calling_ae="VIEWER@WS1", called_ae="ORTHANC@GW1", workstation="WS1", certificate=["ws1"],
                  peer="10.0.0.9:4000")


def tagged(group: int, number: int, value: bytes, pad: bytes = b" ") -> bytes:
    value += pad * (len(value) % 2)
    return group.to_bytes(2, "little") + number.to_bytes(2, "little") + len(value).to_bytes(4, "little") + value


def identifier(level: str, patient: str | None, study: str | None = None) -> bytes:
    out = tagged(0x0008, 0x0052, level.encode())
    if patient is not None:
        out += tagged(0x0010, 0x0020, patient.encode())
    if study is not None:
        out += tagged(0x0020, 0x000D, study.encode(), b"\0")
    return out


def command(field: int, extra: dict[int, Any] | None = None) -> Any:
    extra = dict(extra or {})
    values: dict[int, Any] = {Tag.COMMAND_FIELD: field, Tag.MESSAGE_ID: 1, Tag.COMMAND_DATA_SET_TYPE: 1}
    values[Tag.AFFECTED_SOP_CLASS_UID] = {0x0020: FIND, 0x0021: MOVE, 0x0001: CT}.get(field, "1.2.840.10008.1.1")
    if field == 0x0001:
        values[Tag.PRIORITY] = 0
        values[Tag.AFFECTED_SOP_INSTANCE_UID] = "1.2.3.4"
    if field in (0x0020, 0x0021):
        values[Tag.PRIORITY] = 0
    values.update(extra)
    return decode_command(encode_command(values))


def facts(field: int, data: bytes, action: Action | None, extra: dict[int, Any] | None = None) -> Any:
    return read_facts(command(field, extra), data, IVLE, complete=True, action=action)


def store_head(patient: str | None, instance: str = "1.2.3.4") -> bytes:
    out = tagged(0x0008, 0x0016, CT.encode(), b"\0") + tagged(0x0008, 0x0018, instance.encode(), b"\0")
    if patient is not None:
        out += tagged(0x0010, 0x0020, patient.encode())
    return out + tagged(0x0020, 0x000D, b"1.2.840.7", b"\0")


CASES = [
    # (name, subject, facts, expected: Reason for an agent outcome, or "pdp" for a question to the PDP)
    ("no policy for N-ACTION", RAD, facts(0x0130, b"", None, {Tag.REQUESTED_SOP_CLASS_UID: "1.2.840.10008.1.20.1"}),
     Reason.UNSUPPORTED_SERVICE),
    ("expired token (exp plus leeway)", EXPIRED, facts(0x0020, identifier("STUDY", "PAT-1"), Action.C_FIND),
     Reason.TOKEN_INVALID),
    ("a store without Patient ID", TECH, facts(0x0001, store_head(None), Action.C_STORE), Reason.PATIENT_UNKNOWN),
    ("a store whose data set names another instance", TECH,
     facts(0x0001, store_head("PAT-1", instance="9.9.9"), Action.C_STORE), Reason.MALFORMED),
    ("a query read two ways", RAD, facts(0x0020, identifier("STUDY", "*") + tagged(0x0010, 0x0020, b"PAT-1"),
                                         Action.C_FIND), Reason.MALFORMED),
    ("a node's own action", MODALITY, facts(0x0001, store_head("PAT-1"), Action.C_STORE), Reason.NODE_POLICY),
    ("a node's other action", MODALITY, facts(0x0020, identifier("STUDY", "PAT-1"), Action.C_FIND),
     Reason.NODE_ACTION_NOT_PERMITTED),
    ("scopes without 'c'", RAD, facts(0x0001, store_head("PAT-1"), Action.C_STORE), Reason.INSUFFICIENT_SCOPE),
    ("a move to another workstation", RAD,
     facts(0x0021, identifier("PATIENT", "PAT-1"), Action.C_MOVE, {Tag.MOVE_DESTINATION: "VIEWER@WS2"}),
     Reason.MOVE_DESTINATION_NOT_ALLOWED),
    ("a move to the requester's workstation", RAD,
     facts(0x0021, identifier("PATIENT", "PAT-1"), Action.C_MOVE, {Tag.MOVE_DESTINATION: "VIEWER@WS1"}), "pdp"),
    ("a pinned query", RAD, facts(0x0020, identifier("STUDY", "PAT-1"), Action.C_FIND), "pdp"),
    ("a query for everybody", RAD, facts(0x0020, identifier("STUDY", "*"), Action.C_FIND), "pdp"),
]


@pytest.mark.parametrize(("name", "subject", "request_facts", "expected"), CASES, ids=[c[0] for c in CASES])
def test_prepare(name: str, subject: Subject, request_facts: Any, expected: Reason | str) -> None:
    prepared = prepare(subject, CONTEXT, request_facts, nodes=NODES, workstations=WORKSTATIONS, now=NOW)
    if expected == "pdp":
        assert isinstance(prepared, PdpQuery)
        return
    assert isinstance(prepared, Outcome) and prepared.reason is expected
    assert prepared.allowed is (expected is Reason.NODE_POLICY)


def test_a_malformed_data_set_is_refused_with_its_own_status() -> None:
    prepared = prepare(RAD, CONTEXT, facts(0x0020, identifier("STUDY", "A\\B"), Action.C_FIND), nodes=NODES,
                       workstations=WORKSTATIONS, now=NOW)
    assert isinstance(prepared, Outcome) and prepared.status == 0xC000


@pytest.mark.parametrize("field", [0x0020, 0x0021, 0x0010], ids=["C-FIND", "C-MOVE", "C-GET"])
def test_an_identifier_the_relay_could_not_hold_whole_is_never_decided_on(field: int) -> None:
    """An identifier longer than RelayLimits.max_identifier_length reaches the policy as its first bytes
    (``data_set_complete`` False). Cut at an element boundary those bytes read as a whole data set, and
    the request was decided on them (pinned to PAT-1) while the PACS read the rest too: a Specific
    Character Set, a Query/Retrieve Level or keys the agent never saw."""
    prefix = identifier("PATIENT", "PAT-1") + tagged(0x0010, 0x1000, b"X" * 4096)  # Other Patient IDs: filler
    action = {0x0020: Action.C_FIND, 0x0021: Action.C_MOVE, 0x0010: Action.C_GET}[field]
    extra = {Tag.MOVE_DESTINATION: "VIEWER@WS1"} if field == 0x0021 else {}
    request = read_facts(command(field, extra), prefix, IVLE, complete=False, action=action)
    prepared = prepare(RAD, CONTEXT, request, nodes=NODES, workstations=WORKSTATIONS, now=NOW)
    assert isinstance(prepared, Outcome) and prepared.reason is Reason.MALFORMED and prepared.status == 0xC000
    assert request.patient is None and "longer" in request.malformed


@pytest.mark.parametrize("field", [0x0020, 0x0021, 0x0010], ids=["C-FIND", "C-MOVE", "C-GET"])
def test_a_query_or_retrieval_without_an_identifier_is_refused(field: int) -> None:
    """PS3.4 C.4.1.1.3 (C-MOVE, C-GET alike): the Identifier is mandatory. A C-FIND whose Command Data
    Set Type says 'none' was decided as a query naming no patient; permitted with filter-results, the
    agent answered with a Rewrite adding Patient ID to a data set that never comes: the PACS got the bare
    command, and the gate kept that message unsettled (never idle again) for the rest of the association."""
    extra: dict[int, Any] = {Tag.COMMAND_DATA_SET_TYPE: 0x0101}
    if field == 0x0021:
        extra[Tag.MOVE_DESTINATION] = "VIEWER@WS1"
    action = {0x0020: Action.C_FIND, 0x0021: Action.C_MOVE, 0x0010: Action.C_GET}[field]
    request = read_facts(command(field, extra), b"", IVLE, complete=True, action=action)
    prepared = prepare(RAD, CONTEXT, request, nodes=NODES, workstations=WORKSTATIONS, now=NOW)
    assert isinstance(prepared, Outcome) and prepared.reason is Reason.MALFORMED and prepared.status == 0xC000


def test_the_pdp_is_asked_about_the_patient_the_request_is_decided_for() -> None:
    pinned = prepare(RAD, CONTEXT, facts(0x0020, identifier("STUDY", "PAT-1"), Action.C_FIND), nodes=NODES,
                     workstations=WORKSTATIONS, now=NOW)
    wildcard = prepare(RAD, CONTEXT, facts(0x0020, identifier("STUDY", "PAT*"), Action.C_FIND), nodes=NODES,
                       workstations=WORKSTATIONS, now=NOW)
    assert isinstance(pinned, PdpQuery) and pinned.request["resource"]["properties"]["patient_id"] == "PAT-1"
    assert isinstance(wildcard, PdpQuery) and "patient_id" not in wildcard.request["resource"]["properties"]
    # A study-level retrieval names its patient (decided for it, every image checked again on its way).
    move = facts(0x0021, identifier("STUDY", "PAT-1", "1.2.840.7"), Action.C_MOVE,
                 {Tag.MOVE_DESTINATION: "VIEWER@WS1"})
    assert move.patient == "PAT-1" and move.keys.pinned_patient is None


ALLOW = Decision(allowed=True, reason="permit", rule_id="role:x")
CONCLUSIONS = [
    ("deny", Decision(allowed=False, reason="consent_denied", message="patient consent denies this"), Action.C_FIND,
     Conclusion(False, Reason.PDP, "patient consent denies this")),
    ("permit", ALLOW, Action.C_FIND, Conclusion(True, Reason.PDP)),
    ("permit, filter the matches", Decision(allowed=True, reason="p", obligations=("filter-results",)),
     Action.C_FIND, Conclusion(True, Reason.PDP, filter_results=True)),
    ("permit on an obligation nobody here understands", Decision(allowed=True, reason="p",
                                                                 obligations=("watermark",)), Action.C_MOVE,
     Conclusion(False, Reason.OBLIGATION_NOT_UNDERSTOOD,
                "permitted on a condition this agent cannot meet: watermark")),
    ("de-identify named without its parameters", Decision(allowed=True, reason="p", obligations=("de-identify",)),
     Action.C_FIND, Conclusion(False, Reason.OBLIGATION_NOT_UNDERSTOOD, "de-identify without its project and profile")),
    ("filter-results on a retrieval", Decision(allowed=True, reason="p", obligations=("filter-results",)),
     Action.C_MOVE, Conclusion(False, Reason.OBLIGATION_NOT_UNDERSTOOD, "filter-results on C-MOVE")),
    ("break-glass", Decision(allowed=True, reason="break_glass", break_glass=True), Action.C_MOVE,
     Conclusion(True, Reason.PDP, security_alert=True)),
]


@pytest.mark.parametrize(("name", "decision", "action", "expected"), CONCLUSIONS, ids=[c[0] for c in CONCLUSIONS])
def test_conclude(name: str, decision: Decision, action: Action, expected: Conclusion) -> None:
    request_facts = facts(0x0020 if action is Action.C_FIND else 0x0021, identifier("PATIENT", "PAT-1"), action)
    assert conclude(request_facts, decision) == expected
