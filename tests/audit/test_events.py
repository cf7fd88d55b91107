"""Decision events read back: every event this version writes, and every record earlier versions wrote,
reads as one event with a reason code; no record, however edited, makes a reader raise."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit import legacy
from audit.chain import encode
from audit.dicom_audit import audit_message
from audit.events import (
    Action,
    ApplicationEvent,
    AssociationEnd,
    AuthenticationEvent,
    AuthorizationEvent,
    Decision,
    DecisionEvent,
    Kind,
    LogTruncated,
    PdpAnswer,
    Reason,
    TransferSummary,
    Who,
)
from audit.rows import row
from audit.stored import from_record, read

RAD = {"kind": "user", "sub": "u-1", "username": "rad", "roles": ["radiologist"], "organization": "org-a"}


# ---- records as earlier versions wrote them ----------------------------------------------------------

@pytest.mark.parametrize(("written", "code", "detail"), [
    # codes with spaces, and fixed sentences
    ("node policy", Reason.NODE_POLICY, ""),
    ("authorized move outstanding", Reason.MOVE_OUTSTANDING, ""),
    ("not a configured PACS", Reason.NOT_A_PACS, ""),
    ("no authorized C-MOVE outstanding for this destination", Reason.NO_MOVE_OUTSTANDING, ""),
    ("authenticated", Reason.AUTHENTICATED, ""),
    # the prose of a refusal: the code to count, the sentence kept as detail
    ("token rejected: Signature verification failed", Reason.TOKEN_REJECTED, "*"),
    ("algorithm 'none' is not allowed", Reason.TOKEN_REJECTED, "*"),
    ("token type 'JWT' is not an access token", Reason.TOKEN_REJECTED, "*"),
    ("not a JWT: Not enough segments", Reason.TOKEN_REJECTED, "*"),
    ("unknown signing key 'k9' (JWKS refreshed recently)", Reason.TOKEN_REJECTED, "*"),
    ("the token is not active (revoked)", Reason.TOKEN_INACTIVE, "*"),
    ("password grant refused: Invalid credentials", Reason.PASSWORD_REFUSED, "*"),
    ("identity provider unreachable: timed out", Reason.PROVIDER_UNAVAILABLE, "*"),
    ("introspection unreachable: connection refused", Reason.INTROSPECTION_FAILED, "*"),
    ("identity type 3 (Kerberos/SAML) has no verifier configured", Reason.IDENTITY_TYPE_REFUSED, "*"),
    ("identity type 1 only from a registered workstation certificate", Reason.IDENTITY_TYPE_REFUSED, "*"),
    ("no user identity, and not a registered node at this address", Reason.IDENTITY_MISSING, "*"),
    ("called AE title 'NOPE' names no PACS here", Reason.CALLED_AE_UNKNOWN, "*"),
    ("calling AE title 'FINDSCU@WS2' names workstation 'WS2', which the client certificate ['ws1'] does not prove",
     Reason.WORKSTATION_UNPROVEN, "*"),
    ("decision log unavailable (cannot write x): refusing to act unlogged", Reason.DECISION_LOG_UNAVAILABLE, "*"),
    # what no version wrote as a reason: counted as such, nothing lost
    ("the moon was in the wrong phase", Reason.UNRECOGNIZED, "*"),
])
def test_earlier_association_reasons_read_as_codes_with_the_prose_in_detail(written: str, code: Reason,
                                                                           detail: str) -> None:
    record = {"time": "2026-11-22T10:00:00+00:00", "event": "authentication", "association": 7, "peer": "10.0.0.5:4000",
              "certificate": ["ws1"], "calling_ae": "FINDSCU@WS1", "called_ae": "ORTHANC", "decision": "deny",
              "reason": written, "latency_ms": 1.5, "seq": 12, "prev": "0" * 64}
    stored = read(record)
    assert stored is not None and (stored.seq, stored.time) == (12, "2026-11-22T10:00:00+00:00")
    event = stored.event
    assert isinstance(event, AuthenticationEvent)
    assert (event.reason, event.detail) == (code, written if detail == "*" else "")
    assert event.association == "7" and event.certificate == ("ws1",) and event.latency_ms == 1.5
    flat = row(stored)
    assert (flat["reason"], flat["detail"], flat["decision"]) == (code.value, event.detail, "deny")


def test_every_earlier_spelling_maps_onto_a_reason() -> None:
    codes = [*legacy.ALIASES.values(), *(code for _, code in legacy.PROSE)]
    assert all(Reason(code) for code in codes)


def test_the_return_paths_sub_operation_records_read_as_authorizations_of_the_move() -> None:
    relayed = from_record({"event": "sub-operation", "association": 3, "action": "C-STORE",
                           "sub_operation_of": "C-MOVE", "message_id": 5, "move_originator": "FINDSCU@WS1",
                           "decision": "permit",
                           "resource": {"patient_id": "PAT-1", "study_instance_uid": "1.2"},
                           "reason": "authorized move outstanding"})
    assert relayed == AuthorizationEvent(association="3", action=Action.C_STORE, decision=Decision.PERMIT,
                                         reason=Reason.MOVE_OUTSTANDING, message_id=5,
                                         resource={"patient_id": "PAT-1", "study_instance_uid": "1.2"},
                                         sub_operation_of=Action.C_MOVE)
    refused = from_record({"event": "sub-operation", "association": 4, "action": "C-ECHO-RQ", "message_id": 1,
                           "decision": "deny", "reason": "unsupported_service"})
    assert isinstance(refused, AuthorizationEvent)
    assert (refused.action, refused.reason, refused.sub_operation_of) == (Action.C_ECHO, Reason.UNSUPPORTED_SERVICE,
                                                                          Action.C_MOVE)


def test_an_earlier_pdp_decision_keeps_the_pdps_code_and_a_node_permit_stays_the_agents() -> None:
    pdp = from_record({"event": "authorization", "association": 2, "action": "C-FIND", "decision": "deny",
                       "reason": "consent_denied", "rule_id": "consent:1.2.3", "policy_version": "demo-2026-11-22",
                       "cached": False, "break_glass": False, "user": RAD, "resource": {"patient_id": "PAT-C"}})
    assert isinstance(pdp, AuthorizationEvent) and pdp.reason is Reason.PDP and pdp.reason_code == "consent_denied"
    assert pdp.pdp == PdpAnswer(reason="consent_denied", rule_id="consent:1.2.3", policy_version="demo-2026-11-22")
    assert pdp.user == Who(kind="user", sub="u-1", username="rad", roles=("radiologist",), organization="org-a")
    node = from_record({"event": "authorization", "action": "C-STORE", "decision": "permit", "reason": "node_policy",
                        "rule_id": "node:MODALITY1"})
    assert isinstance(node, AuthorizationEvent) and node.reason is Reason.NODE_POLICY
    assert node.pdp is not None and node.pdp.rule_id == "node:MODALITY1"
    stored = read({"event": "authorization", "decision": "permit", "reason": "node_policy", "rule_id": "node:M"})
    assert stored is not None and row(stored)["rule_id"] == "node:M" and row(stored)["reason"] == "node_policy"


def test_a_pdp_decision_is_written_with_the_pdps_code_and_read_back_as_the_pdps() -> None:
    event = AuthorizationEvent(association="srv-9", action=Action.C_MOVE, decision=Decision.DENY, reason=Reason.PDP,
                               pdp=PdpAnswer(reason="consent_denied", rule_id="consent:1", policy_version="v2"),
                               user=Who.from_record(RAD), resource={"patient_id": "PAT-C"}, move_destination="V@WS1")
    record = event.record()
    assert (record["reason"], record["decided_by"], record["rule_id"]) == ("consent_denied", "pdp", "consent:1")
    assert from_record(record) == event
    overruled = AuthorizationEvent(association="srv-9", action=Action.C_FIND, decision=Decision.DENY,
                                   reason=Reason.OTHER_PATIENT, pdp=PdpAnswer(reason="permit", rule_id="role:rad"))
    record = overruled.record()
    assert (record["reason"], record["decided_by"], record["pdp_reason"]) == ("other_patient", "agent", "permit")
    assert from_record(record) == overruled


def test_an_application_events_detail_cannot_change_what_the_record_is() -> None:
    started = ApplicationEvent(kind=Kind.APPLICATION_START, name="GW1",
                               detail={"listen": "0.0.0.0:11112", "event": "authorization", "name": "forged"})
    record = started.record()
    assert (record["event"], record["name"], record["listen"]) == ("application-start", "GW1", "0.0.0.0:11112")


def test_the_chains_own_records_and_unknown_kinds_hold_no_event() -> None:
    for record in ({"event": "file-start", "file_index": 0}, {"event": "checkpoint", "head": "0"},
                   {"event": "coffee-break"}, {"decision": "permit"}, {"event": "authorization"}, [], "x", None):
        assert from_record(record) is None


# ---- what this version writes reads back as the same event ---------------------------------------------

texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
names = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8)
who = st.builds(Who, kind=st.sampled_from(["user", "node"]), sub=texts, username=names,
                roles=st.lists(texts, max_size=3).map(tuple), organization=texts, acting_client=texts,
                purpose_of_use=texts | st.just("BTG"), break_glass_reason=texts)
pdp_answers = st.builds(PdpAnswer, reason=texts, rule_id=texts, policy_version=texts, cached=st.booleans(),
                        break_glass=st.booleans(), obligations=st.lists(texts, max_size=2).map(tuple))
resources = st.dictionaries(st.sampled_from(["patient_id", "study_instance_uid", "accession_number"]), texts)
ids = st.none() | st.integers(0, 65535)
latencies = st.none() | st.floats(0, 1e6, allow_nan=False)
common = {"association": texts, "decision": st.sampled_from(Decision), "reason": st.sampled_from(Reason),
          "detail": texts, "user": st.none() | who, "calling_ae": texts, "workstation": texts, "pacs": texts,
          "latency_ms": latencies}
events = st.one_of(
    st.builds(AuthenticationEvent, peer=texts, certificate=st.lists(texts, max_size=2).map(tuple), called_ae=texts,
              identity_type=st.none() | st.integers(1, 5), claimed_workstation=texts, path=texts, **common),
    st.builds(AuthorizationEvent, action=st.sampled_from(Action), pdp=st.none() | pdp_answers, message_id=ids,
              resource=resources, sub_operation_of=st.none() | st.sampled_from(Action), move_destination=texts,
              post_filter=st.booleans(), **common),
    st.builds(TransferSummary, association=texts, action=st.sampled_from(Action), message_id=ids, user=st.none() | who,
              workstation=texts, pacs=texts, resource=resources, move_destination=texts,
              sub_operations=st.integers(0, 10_000)),
    st.builds(AssociationEnd, association=texts, user=st.none() | who, calling_ae=texts, detail=texts),
    st.builds(ApplicationEvent, kind=st.sampled_from([Kind.APPLICATION_START, Kind.APPLICATION_STOP]), name=texts,
              detail=st.dictionaries(st.sampled_from(["listen", "version", "pid"]), texts | st.integers(0, 99))),
    st.builds(LogTruncated, torn_bytes=st.integers(0, 1 << 40), torn_sha256=texts, detail=texts),
)


@settings(max_examples=400, deadline=None)
@given(events)
def test_every_event_reads_back_as_itself_from_the_line_written(event: DecisionEvent) -> None:
    line = encode({"time": "2026-12-01T10:00:00.000000+00:00", **event.record(), "seq": 4, "prev": "0" * 64})
    stored = read(orjson.loads(line))
    assert stored is not None and stored.event == event and stored.seq == 4
    # and its audit message is well-formed XML, whatever characters a peer put into a name or a reason
    ET.fromstring(audit_message(event, "GW1", time=stored.time))


# ---- a log may have been edited: nothing in it makes a reader raise ------------------------------------

scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | texts
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3), max_leaves=8)
keys = st.sampled_from(["association", "action", "decision", "reason", "detail", "user", "resource", "peer",
                        "certificate", "message_id", "decided_by", "rule_id", "policy_version", "cached",
                        "break_glass", "obligations", "sub_operation_of", "post_filter", "latency_ms", "identity_type",
                        "sub_operations", "torn_bytes", "name", "time", "seq"])
hostile = st.builds(lambda kind, fields: {"event": kind, **fields},
                    st.sampled_from([k.value for k in Kind]) | json_values,
                    st.dictionaries(keys, json_values | st.sampled_from(["permit", "deny", "pdp", "agent"]),
                                    max_size=10))


@settings(max_examples=600, deadline=None)
@given(hostile)
def test_no_record_makes_the_readers_or_the_audit_mapper_raise(record: dict[str, Any]) -> None:
    stored = read(record)
    if stored is None:
        return
    flat = row(stored)
    assert isinstance(flat["reason"], str) and isinstance(flat["user"], str)
    ET.fromstring(audit_message(stored.event, "GW1", time=stored.time))
