"""Decision records read back as events (:mod:`audit.events`): what ``decision-log`` and the DICOM
audit mapper (PS3.15 A.5) read a log through, tolerating logs written before these types existed.

Never raises, whatever a record holds: a log may have been edited, and reading it is how that is
looked into (``decision-log verify`` says whether). An earlier version's spelling of a reason is
mapped by :mod:`audit.legacy`; text no version wrote as a code is ``UNRECOGNIZED``, kept as detail.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import legacy
from .events import (
    Action,
    ApplicationEvent,
    AssociationEnd,
    AuthenticationEvent,
    AuthorizationEvent,
    Decision,
    DecisionEvent,
    Disclosure,
    Kind,
    LogTruncated,
    PdpAnswer,
    Reason,
    TransferSummary,
    Who,
)
from .fields import mapping, number, strings, text, whole


@dataclass(frozen=True, slots=True, kw_only=True)
class Stored:
    """A record as the log holds it: its place in the chain, when it was written, the event it holds."""

    seq: int | None
    time: str
    event: DecisionEvent


def read(data: Any) -> Stored | None:
    """A parsed line of the log as a :class:`Stored` event, or None (see :func:`from_record`)."""
    event = from_record(data)
    return None if event is None else Stored(seq=whole(data.get("seq")), time=text(data.get("time")), event=event)


def from_record(data: Any) -> DecisionEvent | None:
    """The event a record holds, as this version or an earlier one wrote it.

    None for the chain's own records (``file-start``, ``checkpoint``), an unknown ``event``, or a
    decision record without a decision. Never raises, whatever the record holds: a log may have
    been edited, and reading it is how that is looked into (``decision-log verify`` says whether).
    """
    if not isinstance(data, Mapping):
        return None
    reader = _READERS.get(text(data.get("event")))
    return None if reader is None else reader(data)


def _authentication(data: Mapping[str, Any]) -> AuthenticationEvent | None:
    decision = _decision(data)
    if decision is None:
        return None
    reason, detail = _agent_reason(text(data.get("reason")), text(data.get("detail")))
    return AuthenticationEvent(
        association=text(data.get("association")), decision=decision, reason=reason, detail=detail,
        peer=text(data.get("peer")), certificate=strings(data.get("certificate")),
        calling_ae=text(data.get("calling_ae")), called_ae=text(data.get("called_ae")), pacs=text(data.get("pacs")),
        user=Who.from_record(data.get("user")), identity_type=whole(data.get("identity_type")),
        workstation=text(data.get("workstation")), claimed_workstation=text(data.get("claimed_workstation")),
        path=text(data.get("path")), latency_ms=number(data.get("latency_ms")))


def _authorization(data: Mapping[str, Any], sub_operation_of: Action | None = None) -> AuthorizationEvent | None:
    decision = _decision(data)
    if decision is None:
        return None
    reason, pdp, detail = _authorization_reason(data)
    of = text(data.get("sub_operation_of"))
    return AuthorizationEvent(
        association=text(data.get("association")), action=Action.parse(text(data.get("action"))),
        decision=decision, reason=reason, detail=detail, pdp=pdp, message_id=whole(data.get("message_id")),
        user=Who.from_record(data.get("user")), calling_ae=text(data.get("calling_ae")),
        workstation=text(data.get("workstation")), pacs=text(data.get("pacs")),
        resource=mapping(data.get("resource")), sub_operation_of=Action.parse(of) if of else sub_operation_of,
        move_destination=text(data.get("move_destination")), post_filter=data.get("post_filter") is True,
        latency_ms=number(data.get("latency_ms")), disclosure=Disclosure.from_record(data))


def _sub_operation(data: Mapping[str, Any]) -> AuthorizationEvent | None:
    """The return path's ``sub-operation`` record of earlier versions: a C-STORE relayed for an
    authorized C-MOVE (``"authorized move outstanding"``), or anything else refused there."""
    return _authorization(data, sub_operation_of=Action.C_MOVE)


_PDP_FIELDS = ("decided_by", "rule_id", "policy_version", "cached", "break_glass", "obligations", "pdp_reason")


def _authorization_reason(data: Mapping[str, Any]) -> tuple[Reason, PdpAnswer | None, str]:
    """Who decided, the code, the PDP's answer and the detail. Before ``decided_by`` existed, a
    record the PDP decided carried its policy version (or its own code, which no agent code is)."""
    raw, detail = text(data.get("reason")), text(data.get("detail"))
    if "decided_by" in data:
        by_pdp = data.get("decided_by") == "pdp"
    else:
        by_pdp = "policy_version" in data or "cached" in data or (bool(raw) and not _agent_code(raw))
    pdp = None
    if by_pdp or any(name in data for name in _PDP_FIELDS):
        pdp = PdpAnswer(reason=raw if by_pdp else text(data.get("pdp_reason")), rule_id=text(data.get("rule_id")),
                        policy_version=text(data.get("policy_version")), cached=data.get("cached") is True,
                        break_glass=data.get("break_glass") is True, obligations=strings(data.get("obligations")))
    if by_pdp:
        return Reason.PDP, pdp, detail
    reason, detail = _agent_reason(raw, detail)
    return reason, pdp, detail


_REASONS = frozenset(reason.value for reason in Reason)


def _agent_code(written: str) -> bool:
    return written in _REASONS or legacy.code_for(written) is not None


def _agent_reason(written: str, detail: str) -> tuple[Reason, str]:
    """A reason the agent wrote, as its code and the detail: a code of this version, an earlier
    version's spelling or prose (``audit/legacy.py``, the prose kept as detail), or else text no
    version wrote as a code (``UNRECOGNIZED``, the text kept as detail)."""
    if written in _REASONS:
        return Reason(written), detail
    known = legacy.code_for(written)
    if known is None:
        return Reason.UNRECOGNIZED, detail or written
    code, prose = known
    return Reason(code), detail or (written if prose else "")


def _transfer_summary(data: Mapping[str, Any]) -> TransferSummary:
    return TransferSummary(
        association=text(data.get("association")), action=Action.parse(text(data.get("action"))),
        message_id=whole(data.get("message_id")), user=Who.from_record(data.get("user")),
        workstation=text(data.get("workstation")), pacs=text(data.get("pacs")),
        resource=mapping(data.get("resource")), move_destination=text(data.get("move_destination")),
        sub_operations=whole(data.get("sub_operations")) or 0)


def _association_end(data: Mapping[str, Any]) -> AssociationEnd:
    return AssociationEnd(association=text(data.get("association")), user=Who.from_record(data.get("user")),
                          calling_ae=text(data.get("calling_ae")), detail=text(data.get("detail")))


_BOOKKEEPING = frozenset({"event", "name", "time", "seq", "prev"})  # the writer's and the chain's, not the detail


def _application(data: Mapping[str, Any]) -> ApplicationEvent:
    return ApplicationEvent(kind=Kind(data["event"]), name=text(data.get("name")),
                            detail={k: v for k, v in data.items() if k not in _BOOKKEEPING})


def _log_truncated(data: Mapping[str, Any]) -> LogTruncated:
    return LogTruncated(torn_bytes=whole(data.get("torn_bytes")) or 0, torn_sha256=text(data.get("torn_sha256")),
                        detail=text(data.get("detail")))


_READERS: dict[str, Callable[[Mapping[str, Any]], DecisionEvent | None]] = {
    Kind.AUTHENTICATION: _authentication,
    Kind.AUTHORIZATION: _authorization,
    Kind.SUB_OPERATION: _sub_operation,
    Kind.TRANSFER_SUMMARY: _transfer_summary,
    Kind.ASSOCIATION_END: _association_end,
    Kind.APPLICATION_START: _application,
    Kind.APPLICATION_STOP: _application,
    Kind.CONFIGURATION_RELOAD: _application,
    Kind.LOG_TRUNCATED: _log_truncated,
}


def _decision(data: Mapping[str, Any]) -> Decision | None:
    value = data.get("decision")
    return Decision(value) if value in (Decision.PERMIT, Decision.DENY) else None


__all__ = ["Stored", "from_record", "read"]
