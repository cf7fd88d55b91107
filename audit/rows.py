"""One flat row per stored event: what ``search`` prints, ``export`` writes, the index stores and
``report`` lists.

The row is read from the event (:mod:`audit.events`), never from the record's keys, so a record
written by an earlier version (reason ``"node policy"``, an authentication failure in prose, the
return path's ``sub-operation``) reads like one written today: ``reason`` is always a code to count
and filter on (the PDP's own when the PDP decided), the prose is in ``detail``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import legacy
from .events import (
    ApplicationEvent,
    AssociationEnd,
    AuthenticationEvent,
    AuthorizationEvent,
    LogTruncated,
    TransferSummary,
    Who,
)
from .fields import text
from .period import Bound, instant, within
from .stored import Stored

COLUMNS = ["seq", "time", "event", "user", "action", "patient", "study", "workstation", "calling_ae", "decision",
           "reason", "rule_id", "policy_version", "latency_ms", "association", "pacs", "detail"]
FILTERS = ("user", "patient", "study", "workstation", "action", "decision", "reason")
_PATTERN = frozenset("*?\\")  # PS3.4 C.2.2.2.4 wildcards, and the value delimiter of a list


def line(row: Mapping[str, Any]) -> str:
    """A row as ``search`` and ``tail`` print it."""
    return (f"{str(row['time'])[:26]:<26} {row['user'] or '-':<12} {row['action'] or row['event']:<9} "
            f"{row['patient'] or '-':<16} {row['decision'] or '-':<7} {row['reason'] or '-':<24} {row['rule_id']}")


def one_patient(resource: Mapping[str, Any]) -> str:
    """The Patient ID of a resource when it names one patient; "" for none, or a pattern or list that
    may match several (PS3.4 C.2.2.2): such a key is what was asked, not whose data was touched."""
    patient = text(resource.get("patient_id"))
    return "" if _PATTERN.intersection(patient) else patient


def row(stored: Stored) -> dict[str, Any]:
    """The flat row of one stored event (every column present; absent reads as "")."""
    event = stored.event
    out: dict[str, Any] = dict.fromkeys(COLUMNS, "")
    out.update(seq=stored.seq, time=stored.time, event=event.kind.value, break_glass=False)
    if isinstance(event, AuthenticationEvent | AuthorizationEvent):
        out.update(decision=event.decision.value, reason=event.reason_code, detail=event.detail,
                   association=event.association, calling_ae=event.calling_ae, workstation=event.workstation,
                   pacs=event.pacs, latency_ms="" if event.latency_ms is None else event.latency_ms)
    if isinstance(event, AuthorizationEvent | TransferSummary):
        resource = event.resource
        out.update(action=event.action.value, association=event.association, workstation=event.workstation,
                   pacs=event.pacs, patient=text(resource.get("patient_id")),
                   study=text(resource.get("study_instance_uid")))
    if isinstance(event, AuthorizationEvent) and event.pdp is not None:
        out.update(rule_id=event.pdp.rule_id, policy_version=event.pdp.policy_version,
                   break_glass=event.pdp.break_glass)
    if isinstance(event, AssociationEnd):
        out.update(association=event.association, calling_ae=event.calling_ae, detail=event.detail)
    if isinstance(event, ApplicationEvent):
        out.update(detail=event.name)
    if isinstance(event, LogTruncated):
        out.update(detail=f"{event.torn_bytes} torn bytes kept and sealed (sha256 {event.torn_sha256})")
    user = _user(event)
    out["user"] = user.username if user is not None else ""
    if isinstance(event, AuthenticationEvent) and user is not None and user.break_glass:
        out["break_glass"] = True  # an association opened under break-glass: a use, with its reason in detail
    return out


def _user(event: object) -> Who | None:
    if isinstance(event, AuthenticationEvent | AuthorizationEvent | TransferSummary | AssociationEnd):
        return event.user
    return None


def bookkeeping(record: Mapping[str, Any]) -> dict[str, Any]:
    """The row of one of the chain's own records (``file-start``, ``checkpoint``), for ``tail``."""
    out: dict[str, Any] = dict.fromkeys(COLUMNS, "")
    out.update(seq=record.get("seq"), time=text(record.get("time")), event=text(record.get("event")),
               break_glass=False)
    return out


def wanted_reason(code: str | None) -> str | None:
    """A ``--reason`` filter as the code records are read with: an earlier spelling ("node policy")
    finds the records written either way."""
    if not code:
        return code
    known = legacy.code_for(code)
    return known[0] if known is not None and not known[1] else code


def matches(row: Mapping[str, Any], filters: Mapping[str, str | None], since: Bound | None,
            until: Bound | None) -> bool:
    """Whether a row passes the filters and lies in [since, until) (:mod:`audit.period`)."""
    for name in FILTERS:
        wanted = filters.get(name)
        if wanted and str(row[name]) != wanted:
            return False
    return within(instant(str(row["time"])), since, until)
