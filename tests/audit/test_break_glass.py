"""Break-glass and delegation (RFC 8693 exchange at the HIAL) as the server agent records them: the
decision log, the DICOM audit message (PS3.15 A.5.3.11 Security Alert) and the report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import orjson

from audit.chain import encode
from audit.dicom_audit import audit_message
from audit.events import AuthenticationEvent, DecisionEvent
from audit.integrity import check
from audit.report import summarize, text
from audit.report_page import html_page
from audit.stored import Stored, read
from server_agent.authn import Subject
from server_agent.exchanged import exchanged
from server_agent.records import Recorder

WHEN = "2026-12-01T10:00:00.000000+00:00"


class Log:
    def __init__(self) -> None:
        self.events: list[DecisionEvent] = []

    def write(self, event: DecisionEvent) -> None:
        self.events.append(event)


def _stored(event: DecisionEvent, seq: int = 1) -> Stored:
    stored = read(orjson.loads(encode({"time": WHEN, **event.record(), "seq": seq, "prev": "0" * 64})))
    assert stored is not None
    return stored


def _association(subject: Subject) -> AuthenticationEvent:
    log = Log()
    recorder = Recorder(log, "a-1")  # type: ignore[arg-type]  # a Decisions stand-in: what it is handed
    recorder.begin(peer=("192.0.2.7", 40000), certificate=["ws1"], calling_ae="VIEWER@WS1", called_ae="PACS1")
    recorder.authenticated(subject, "WS1", time.perf_counter())
    event = log.events[0]
    assert isinstance(event, AuthenticationEvent)
    return event


def _codes(message: bytes) -> dict[str, Any]:
    root = ET.fromstring(message)
    ident = root.find("EventIdentification")
    assert ident is not None
    requestors = [p.get("UserID") for p in root.findall("ActiveParticipant") if p.get("UserIsRequestor") == "true"]
    return {"id": ident.find("EventID").get("csd-code"),  # type: ignore[union-attr]
            "type": ident.find("EventTypeCode").get("csd-code"),  # type: ignore[union-attr]
            "requestors": requestors}


BTG = Subject(kind="user", id="u-er", username="erdoc", roles=("emergency_physician",), purpose_of_use="BTG",
              **exchanged({"btg_reason": "trauma bay 2,\n unconscious\x1b[2J"}))


def test_an_association_under_break_glass_is_a_security_alert_with_the_reason() -> None:
    event = _association(BTG)
    stored = _stored(event)
    assert stored.event == event
    user = stored.event.user  # type: ignore[union-attr]
    assert user is not None and user.break_glass and user.break_glass_reason == "trauma bay 2, unconscious [2J"
    assert "break-glass: trauma bay 2, unconscious" in event.detail
    assert _codes(audit_message(event, "GW1", time=WHEN)) == {"id": "110113", "type": "110127",
                                                              "requestors": ["erdoc"]}


def test_an_ordinary_association_is_a_login_and_records_no_purpose() -> None:
    event = _association(Subject(kind="user", id="u-rad", username="rad", roles=("radiologist",)))
    assert event.user is not None and not event.user.break_glass and "purpose_of_use" not in event.user.record()
    assert _codes(audit_message(event, "GW1", time=WHEN))["id"] == "110114"


def test_a_delegated_token_records_both_the_acting_client_and_the_user() -> None:
    subject = Subject(kind="user", id="u-rad", username="rad", roles=("radiologist",),
                      **exchanged({"act": {"sub": "ai-node", "act": {"sub": "earlier-hop"}}}))
    event = _association(subject)
    assert _stored(event).event.user.record()["acting_client"] == "ai-node"  # type: ignore[union-attr]
    assert _codes(audit_message(event, "GW1", time=WHEN))["requestors"] == ["rad", "ai-node"]


def test_the_report_counts_break_glass_associations_and_shows_the_reason() -> None:
    ordinary = _association(Subject(kind="user", id="u-rad", username="rad"))
    summary = summarize([_stored(_association(BTG), 1), _stored(ordinary, 2)])
    assert len(summary.break_glass) == 1
    page = html_page(summary, check(Path("unused"), None))
    assert "erdoc" in page
    assert "break-glass: trauma bay 2, unconscious [2J" in page
    assert "erdoc association" in text(summary)


def test_exchanged_claims_of_the_wrong_shape_add_nothing() -> None:
    for claims in ({"act": "ai-node"}, {"act": {"sub": 7}}, {"act": {"sub": "\x00\x01"}}, {"btg_reason": ["x"]},
                   {}):
        assert exchanged(claims) == {}, claims
    assert len(exchanged({"btg_reason": "x" * 5000, "act": {"sub": "c" * 5000}})["break_glass_reason"]) == 200
    assert len(exchanged({"act": {"sub": "c" * 5000}})["acting_client"]) == 128
