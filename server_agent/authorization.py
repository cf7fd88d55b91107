"""Authorization of one DIMSE request as pure, synchronous functions (no I/O, no clock of their own).

:func:`prepare` turns what the agent knows (the verified subject, the association's context, the facts
of the request) into either an :class:`Outcome` the agent reaches by itself (deny by default: no
policy for the service, an expired token, no Patient ID in a store, scopes that do not allow it, a
C-MOVE to another workstation...) or a :class:`PdpQuery` (an AuthZEN evaluation, standards digest
section 8). :func:`conclude` turns the policy decision point's answer into a :class:`Conclusion`,
with the obligations of a permit dispatched here: the PDP decides what the agent must do with a
permit (``filter-results``: check every C-FIND match; ``security-alert``: a break-glass use;
``de-identify``: the research view, :mod:`server_agent.deidview`), and a permit on a condition the agent
does not understand, or cannot meet (a research view without a pseudonymisation service), is a deny
(AuthZEN 1.0 section 6.2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from audit.events import Action, Reason
from dicomwire.dataset import MalformedDataSet
from dicomwire.dimse import STATUS_NOT_AUTHORIZED, CommandField, CommandSet

from .authn import Subject
from .config import Node, Workstation
from .deidview import DEIDENTIFY, DeidView
from .keys import DecisionKeys, Matching, identifier_keys, retrieve_keys, store_keys
from .pdp import Decision
from .resources import Context, authzen_request, scope_allows

# What a PDP may attach to a permit, and what the agent does about it.
FILTER_RESULTS = "filter-results"  # C-FIND: each match is decided before the user sees it (post-filter)
SECURITY_ALERT = "security-alert"  # break-glass: the agent raises a security alert (audit, decision log)
UNDERSTOOD = frozenset({FILTER_RESULTS, SECURITY_ALERT, DEIDENTIFY})
# What a research view can be given for: queries, and retrievals with their sub-operations, whose images
# are rewritten in transit (issue 16 item 3, server_agent.deidretrieve). Never a store.
_DEIDENTIFIABLE = frozenset({Action.C_ECHO, Action.C_FIND, Action.C_GET, Action.C_MOVE})

ACTIONS = {CommandField.C_ECHO_RQ: Action.C_ECHO, CommandField.C_FIND_RQ: Action.C_FIND,
           CommandField.C_GET_RQ: Action.C_GET, CommandField.C_MOVE_RQ: Action.C_MOVE,
           CommandField.C_STORE_RQ: Action.C_STORE}


_IDENTIFIED = frozenset({CommandField.C_FIND_RQ, CommandField.C_GET_RQ, CommandField.C_MOVE_RQ})


@dataclass(frozen=True, slots=True, kw_only=True)
class Facts:
    """One request as the decision sees it: what is asked for, about whom.

    ``patient`` is the patient the request is decided for: the one a C-FIND or a C-STORE is pinned to
    (the PACS can match no other, :attr:`DecisionKeys.pinned_patient`), or the one a C-GET/C-MOVE names
    by a single-value Patient ID at any level. Below the PATIENT level a PACS retrieves by the level's
    unique key whatever Patient ID the identifier holds, so such a decision is not binding: every image
    of the retrieval is decided again, with its own Patient ID, as a sub-operation.
    """

    action: Action | None  # None: a service the agent has no policy for
    command: CommandSet
    keys: DecisionKeys = field(default_factory=DecisionKeys)
    patient: str | None = None
    sub_operation_of: Action | None = None  # a C-STORE the PACS sends for a C-GET or a C-MOVE
    move_destination: str = ""
    malformed: str = ""  # why the data set cannot be read one way only (then nothing is decided on it)
    status: int = STATUS_NOT_AUTHORIZED  # the refusal's status (0xC000 for a malformed data set)
    data_set: bytes = b""  # the identifier (or head) the keys were read from, for a rewrite
    transfer_syntax: str = ""  # ... and how it is encoded

    @property
    def name(self) -> str:
        return self.action.value if self.action is not None else Action.parse(self.command.name).value

    @property
    def resource(self) -> dict[str, str]:
        """The keys as the decision log and the PDP's resource properties show them."""
        return self.keys.as_dict()


def read_facts(command: CommandSet, data_set: bytes, transfer_syntax: str, *, complete: bool,
               action: Action | None, sub_operation_of: Action | None = None, move_destination: str = "") -> Facts:
    """The facts of a request, its data set read strictly by the reader its command calls for."""
    destination = command.move_destination or move_destination
    try:
        keys = _keys(command.command_field, data_set, transfer_syntax, complete, command.has_data_set)
    except MalformedDataSet as error:
        return Facts(action=action, command=command, sub_operation_of=sub_operation_of, move_destination=destination,
                     malformed=error.detail, status=error.status, data_set=data_set, transfer_syntax=transfer_syntax)
    return Facts(action=action, command=command, keys=keys, patient=requested_patient(keys),
                 sub_operation_of=sub_operation_of, move_destination=destination, data_set=data_set,
                 transfer_syntax=transfer_syntax)


def _keys(command_field: int, data_set: bytes, transfer_syntax: str, complete: bool, announced: bool) -> DecisionKeys:
    if not announced and command_field in _IDENTIFIED:
        raise MalformedDataSet("no identifier (mandatory: PS3.4 C.4.1.1.3; C-MOVE, C-GET alike)")
    if not data_set:
        return DecisionKeys()
    if not complete and command_field != CommandField.C_STORE_RQ:
        # An identifier (PS3.4 C.4.1.1.3; of a C-MOVE, a C-GET alike) is decided whole: its first bytes may
        # read as a whole data set, but the PACS reads the rest too (keys, a level, a character set).
        raise MalformedDataSet(f"identifier longer than the {len(data_set)} bytes the relay holds to decide it")
    if command_field == CommandField.C_FIND_RQ:
        return identifier_keys(data_set, transfer_syntax)
    if command_field in (CommandField.C_GET_RQ, CommandField.C_MOVE_RQ):
        return retrieve_keys(data_set, transfer_syntax)
    if command_field == CommandField.C_STORE_RQ:
        return store_keys(data_set, transfer_syntax, complete=complete)
    return DecisionKeys()  # a service with no policy here: its data set is never read


def requested_patient(keys: DecisionKeys) -> str | None:
    """See :class:`Facts`: the pinned patient, or the one a retrieval names by a single value."""
    pinned = keys.pinned_patient
    if pinned is not None:
        return pinned.id
    if keys.retrieve and keys.patient_id.matching is Matching.SINGLE and \
            keys.patient_id_issuer.matching in (Matching.SINGLE, Matching.UNIVERSAL):
        return keys.patient_id.value
    return None


@dataclass(frozen=True, slots=True)
class Outcome:
    """A decision the agent reached by itself; ``text`` is for the Error Comment."""

    allowed: bool
    reason: Reason
    text: str = ""
    status: int = STATUS_NOT_AUTHORIZED


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
    deid: DeidView | None = None  # the research view this request is permitted in


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
        return Outcome(False, Reason.MALFORMED, "data set could not be read one way only", facts.status)
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
    return PdpQuery(authzen_request(subject, facts.action.value, facts.command, facts.keys, facts.patient, context))


def _store_mismatch(facts: Facts) -> str:
    """A C-STORE names its instance twice, in the command and in the data set (PS3.4 B.2.1.1): the PACS
    files the data set's, the decision and the log would name the command's. They must agree."""
    command = facts.command
    for key, value in ((facts.keys.sop_instance_uid, command.affected_sop_instance_uid),
                       (facts.keys.sop_class_uid, command.affected_sop_class_uid)):
        if key.matching is Matching.SINGLE and value and key.value != value:
            return "the data set names another instance (or SOP class) than its command"
    return ""


def conclude(facts: Facts, decision: Decision, *, pseudonymizer: bool = False) -> Conclusion:
    """What a PDP decision means for this request (its obligations dispatched). ``pseudonymizer``: the
    agent has a pseudonymisation service to meet a ``de-identify`` obligation with."""
    if not decision.allowed:
        return Conclusion(False, Reason.PDP, decision.message or decision.reason)
    if decision.obligation_problem:
        return Conclusion(False, Reason.OBLIGATION_NOT_UNDERSTOOD,
                          f"permitted on a condition this agent cannot read: {decision.obligation_problem}")
    unknown = [o for o in decision.obligations if o not in UNDERSTOOD]
    if unknown:
        return Conclusion(False, Reason.OBLIGATION_NOT_UNDERSTOOD,
                          f"permitted on a condition this agent cannot meet: {', '.join(unknown)}")
    filtering = FILTER_RESULTS in decision.obligations
    if filtering and facts.action is not Action.C_FIND:
        return Conclusion(False, Reason.OBLIGATION_NOT_UNDERSTOOD, f"{FILTER_RESULTS} on {facts.name}")
    deid = decision.deid
    if (deid is None) == (DEIDENTIFY in decision.obligations):  # a view without its obligation, or the reverse
        return Conclusion(False, Reason.OBLIGATION_NOT_UNDERSTOOD, f"{DEIDENTIFY} without its project and profile")
    if deid is not None and facts.action not in _DEIDENTIFIABLE:
        return Conclusion(False, Reason.OBLIGATION_NOT_UNDERSTOOD, f"{DEIDENTIFY} on {facts.name}")
    if deid is not None and not pseudonymizer:
        return Conclusion(False, Reason.PSEUDONYMIZER_UNAVAILABLE, "research view: no pseudonymisation service")
    return Conclusion(True, Reason.PDP, filter_results=filtering,
                      security_alert=decision.break_glass or SECURITY_ALERT in decision.obligations, deid=deid)


__all__ = ["ACTIONS", "FILTER_RESULTS", "SECURITY_ALERT", "Conclusion", "Facts", "Outcome", "PdpQuery", "conclude",
           "prepare", "read_facts", "requested_patient"]
