"""The decision log's writer takes events, chains them and hands each to the audit repository."""

from __future__ import annotations

import json
from pathlib import Path

from audit.chain import log_files, verify
from audit.events import (
    Action,
    ApplicationEvent,
    AuthenticationEvent,
    AuthorizationEvent,
    Decision,
    Kind,
    PdpAnswer,
    Reason,
    Who,
)
from audit.stored import from_record
from server_agent.decisions import DecisionLog, UnloggedDecisions
from tests.audit.fakes import Repository

KEY = b"k" * 32
RAD = Who(kind="user", sub="u-1", username="rad", roles=("radiologist",))
DENIED = AuthorizationEvent(association="srv-3", action=Action.C_FIND, decision=Decision.DENY, reason=Reason.PDP,
                            pdp=PdpAnswer(reason="consent_denied", rule_id="consent:1", policy_version="v1"),
                            message_id=1, user=RAD, calling_ae="FINDSCU@WS1", workstation="WS1", pacs="ORTHANC",
                            resource={"patient_id": "PAT-C"}, latency_ms=0.4)


def written(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for file in log_files(path) for line in file.read_bytes().splitlines()]


def test_events_are_written_chained_and_audited(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    repository = Repository()
    log = DecisionLog(path, KEY, checkpoint_interval=3600, audit=repository, source_id="GW1")  # type: ignore[arg-type]
    node = AuthenticationEvent(association="4", decision=Decision.PERMIT, reason=Reason.NODE_POLICY, calling_ae="MOD1",
                               user=Who(kind="node", sub="MOD1", username="MOD1"))
    log.write(DENIED)
    log.write(node)
    log.write(ApplicationEvent(kind=Kind.APPLICATION_STOP, name="GW1"))
    log.close()
    records = written(path)
    events_written = [r for r in records if r["event"] not in ("file-start", "checkpoint")]
    assert [r["event"] for r in events_written] == ["authorization", "authentication", "application-stop"]
    new, login, _ = events_written
    assert {k: v for k, v in new.items() if k not in ("time", "seq", "prev")} == DENIED.record()
    assert new["reason"] == "consent_denied" and new["decided_by"] == "pdp"
    assert login["reason"] == "node_policy" and login["association"] == "4"
    assert from_record(new) == DENIED and from_record(login) == node
    assert verify(path, KEY).ok
    codes = [(m.find("EventIdentification/EventID").get("csd-code"),  # type: ignore[union-attr]
              m.findtext("EventIdentification/EventOutcomeDescription")) for m in repository.messages]
    assert codes == [("110113", "consent_denied"), ("110114", "node_policy"), ("110100", None)]


def test_the_unlogged_stand_in_takes_events_and_keeps_nothing() -> None:
    unlogged = UnloggedDecisions()
    unlogged.write(DENIED)
    assert unlogged.healthy and unlogged.path is None


def test_an_authentication_event_reads_its_reason_code() -> None:
    event = AuthenticationEvent(association="a", decision=Decision.DENY, reason=Reason.THROTTLED, detail="5 failures")
    assert event.reason_code == "throttled" and from_record(event.record()) == event
