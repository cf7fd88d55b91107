"""Authorization of one DIMSE request as pure, synchronous functions (no I/O, no clock of their own).

:func:`prepare` turns what the agent knows (the verified subject, the association's context, the facts
of the request) into either an :class:`Outcome` the agent reaches by itself (deny by default: no
policy for the service, an expired token, no Patient ID in a store, scopes that do not allow it, a
C-MOVE to another workstation...) or a :class:`PdpQuery` (an AuthZEN evaluation, standards digest
section 8). :func:`conclude` turns the policy decision point's answer into a :class:`Conclusion`,
with the obligations of a permit dispatched here: the PDP decides what the agent must do with a
permit (``filter-results``: check every C-FIND match; ``security-alert``: a break-glass use), and a
permit on a condition the agent does not understand is a deny (AuthZEN 1.0 section 6.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from audit.events import Action, Reason
from dicomwire.dimse import CommandField, CommandSet

from .authn import Subject
from .config import Node, Workstation
from .pdp import Decision
from .resources import Context, authzen_request, scope_allows

# What a PDP may attach to a permit, and what the agent does about it.
FILTER_RESULTS = "filter-results"  # C-FIND: each match is decided before the user sees it (post-filter)
SECURITY_ALERT = "security-alert"  # break-glass: the agent raises a security alert (audit, decision log)
UNDERSTOOD = frozenset({FILTER_RESULTS, SECURITY_ALERT})

ACTIONS = {CommandField.C_ECHO_RQ: Action.C_ECHO, CommandField.C_FIND_RQ: Action.C_FIND,
           CommandField.C_GET_RQ: Action.C_GET, CommandField.C_MOVE_RQ: Action.C_MOVE,
           CommandField.C_STORE_RQ: Action.C_STORE}


@dataclass(frozen=True, slots=True, kw_only=True)
class Facts:
    """One request as the decision sees it: what is asked for, about whom."""

    action: Action | None  # None: a service the agent has no policy for
    command: CommandSet
    keys: dict[str, str]  # the decision keys read from the identifier or the store head
    patient: str | None  # the one patient the request is pinned to, if any
    sub_operation_of: Action | None = None  # a C-STORE the PACS sends for a C-GET or a C-MOVE
    move_destination: str = ""
    malformed: str = ""  # why the data set cannot be read one way only (then nothing is decided on it)
    data_set: bytes = b""  # the identifier (or head) the keys were read from, for a rewrite
    transfer_syntax: str = ""  # ... and how it is encoded

    @property
    def name(self) -> str:
        return self.action.value if self.action is not None else Action.parse(self.command.name).value


@dataclass(frozen=True, slots=True)
class Outcome:
    """A decision the agent reached by itself; ``text`` is for the Error Comment."""

    allowed: bool
    reason: Reason
    text: str = ""


@dataclass(frozen=True, slots=True)
class PdpQuery:
    request: dict[str, Any]  # the AuthZEN evaluation request


@dataclass(frozen=True, slots=True)
class Conclusion:
    allowed: bool
    reason: Reason  # PDP, or the agent's own reason for refusing the PDP's permit
    text: str = ""
    filter_results: bool = False
    security_alert: bool = False


def prepare(subject: Subject, context: Context, facts: Facts, *, nodes: dict[str, Node],
            workstations: dict[str, Workstation], now: float, log_problem: str | None = None) -> Outcome | PdpQuery:
    """Everything about a request that needs no I/O: the agent's own outcome, or the PDP's question."""
    if facts.action is None:
        return Outcome(False, Reason.UNSUPPORTED_SERVICE, f"{facts.command.name} is not supported here")
    if log_problem is not None:
        return Outcome(False, Reason.DECISION_LOG_UNAVAILABLE, "decision log unavailable")
    if now >= subject.expires_at:  # exp plus the leeway: the same instant as at association time
        return Outcome(False, Reason.TOKEN_INVALID, "the token has expired")
    if facts.malformed:
        return Outcome(False, Reason.MALFORMED, "data set could not be read one way only")
    if facts.command.command_field == CommandField.C_STORE_RQ:
        mismatch = _store_mismatch(facts)
        if mismatch:
            return Outcome(False, Reason.MALFORMED, mismatch)
        if facts.patient is None:
            return Outcome(False, Reason.PATIENT_UNKNOWN, "no Patient ID in the head of the data set")
    if subject.kind == "node":
        node = nodes.get(subject.id)
        if node is None or facts.action.value not in node.actions:
            return Outcome(False, Reason.NODE_ACTION_NOT_PERMITTED, f"node {subject.id} may not {facts.action.value}")
        return Outcome(True, Reason.NODE_POLICY)
    if not scope_allows(subject, facts.action.value, facts.patient):
        return Outcome(False, Reason.INSUFFICIENT_SCOPE, f"token scopes do not allow {facts.action.value}")
    if facts.action is Action.C_MOVE and facts.sub_operation_of is None:
        destination = facts.command.move_destination or ""
        name, _, workstation = destination.partition("@")
        if not name or workstation != context.workstation or workstation not in workstations:
            return Outcome(False, Reason.MOVE_DESTINATION_NOT_ALLOWED,
                           f"move destination {destination!r} is not the requester's workstation")
    return PdpQuery(authzen_request(subject, facts.action.value, facts.command, facts.keys, context))


def _store_mismatch(facts: Facts) -> str:
    """A C-STORE names its instance twice, in the command and in the data set (PS3.4 B.2.1.1): the PACS
    files the data set's, the decision and the log would name the command's. They must agree."""
    command = facts.command
    for key, value in (("sop_instance_uid", command.affected_sop_instance_uid),
                       ("sop_class_uid", command.affected_sop_class_uid)):
        in_data_set = facts.keys.get(key)
        if in_data_set and value and in_data_set != value:
            return f"the data set's {key} is not the command's"
    return ""


def conclude(facts: Facts, decision: Decision) -> Conclusion:
    """What a PDP decision means for this request (its obligations dispatched)."""
    if not decision.allowed:
        return Conclusion(False, Reason.PDP, decision.message or decision.reason)
    unknown = [o for o in decision.obligations if o not in UNDERSTOOD]
    if unknown:
        return Conclusion(False, Reason.OBLIGATION_NOT_UNDERSTOOD,
                          f"permitted on a condition this agent cannot meet: {', '.join(unknown)}")
    filtering = FILTER_RESULTS in decision.obligations
    if filtering and facts.action is not Action.C_FIND:
        return Conclusion(False, Reason.OBLIGATION_NOT_UNDERSTOOD, f"{FILTER_RESULTS} on {facts.name}")
    return Conclusion(True, Reason.PDP, filter_results=filtering,
                      security_alert=decision.break_glass or SECURITY_ALERT in decision.obligations)


__all__ = ["ACTIONS", "FILTER_RESULTS", "SECURITY_ALERT", "Conclusion", "Facts", "Outcome", "PdpQuery", "conclude",
           "prepare"]
