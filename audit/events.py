"""Decision events: the one vocabulary of the decision log's writer, its readers and the audit mapper.

The server agent makes a frozen event for every authentication and authorization decision and every
association end; :meth:`DecisionEvent.record` turns it into the JSON object the hash chain stores,
and :func:`audit.stored.from_record` reads a stored object back (tolerating logs written before these
types existed). ``decision-log`` and the DICOM audit mapper (PS3.15 A.5) read events through these two
modules only.

Reason codes: :class:`Reason` lists the agent's own. A decision the policy decision point made is
``Reason.PDP``; its record carries the PDP's own code (for example ``consent_denied``) in ``reason``
and ``decided_by: "pdp"``, since the PDP's vocabulary belongs to the PDP. Prose goes into
``detail``, never into ``reason``: a reason is something to count and filter on.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .fields import strings, text

BREAK_GLASS = "BTG"  # HL7 v3 ActReason "break the glass": the purpose of use of an emergency override


class Kind(enum.StrEnum):
    """The ``event`` field of a record."""

    AUTHENTICATION = "authentication"
    AUTHORIZATION = "authorization"
    ASSOCIATION_END = "association-end"
    TRANSFER_SUMMARY = "transfer-summary"
    APPLICATION_START = "application-start"
    APPLICATION_STOP = "application-stop"
    SUB_OPERATION = "sub-operation"  # written before 2026-12 for refusals on the return path; read only
    LOG_TRUNCATED = "log-truncated"  # the writer sealed a torn last line left by a crash (audit/chain.py)
    CONFIGURATION_RELOAD = "configuration-reload"  # SIGHUP: a new file taken or refused (server_agent/reload.py)


class Decision(enum.StrEnum):
    PERMIT = "permit"
    DENY = "deny"


class Action(enum.StrEnum):
    """What was asked for: the DIMSE service (PS3.7 9.1, 10.1); ``OTHER`` for a service with no name here."""

    C_ECHO = "C-ECHO"
    C_FIND = "C-FIND"
    C_GET = "C-GET"
    C_MOVE = "C-MOVE"
    C_STORE = "C-STORE"
    N_EVENT_REPORT = "N-EVENT-REPORT"
    N_GET = "N-GET"
    N_SET = "N-SET"
    N_ACTION = "N-ACTION"
    N_CREATE = "N-CREATE"
    N_DELETE = "N-DELETE"
    OTHER = "OTHER"

    @classmethod
    def parse(cls, text: str) -> Action:
        """An action from a record or a command name (``N-ACTION-RQ`` reads as ``N-ACTION``)."""
        name = text.removesuffix("-RQ").removesuffix("-RSP")
        try:
            return cls(name)
        except ValueError:
            return cls.OTHER


class Reason(enum.StrEnum):
    """The agent's own reason codes (a PDP's decision is ``PDP``, its code kept beside it)."""

    # -- association: permits --
    AUTHENTICATED = "authenticated"
    NODE_POLICY = "node_policy"
    MOVE_OUTSTANDING = "move_outstanding"  # a return association for an authorized C-MOVE
    # -- association: refusals --
    CALLED_AE_UNKNOWN = "called_ae_unknown"
    WORKSTATION_UNPROVEN = "workstation_unproven"
    IDENTITY_MISSING = "identity_missing"
    IDENTITY_TYPE_REFUSED = "identity_type_refused"
    TOKEN_REJECTED = "token_rejected"  # signature, issuer, audience, type, algorithm or lifetime
    TOKEN_INACTIVE = "token_inactive"  # revoked (introspection, back-channel logout)
    NOT_A_USER = "not_a_user"  # a client's own token (client credentials) where a person is required
    PASSWORD_REFUSED = "password_refused"
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    INTROSPECTION_FAILED = "introspection_failed"
    THROTTLED = "throttled"  # too many failed logins from this source
    NOT_A_PACS = "not_a_pacs"  # return path: the peer is no configured PACS
    NO_MOVE_OUTSTANDING = "no_move_outstanding"
    DECISION_LOG_UNAVAILABLE = "decision_log_unavailable"
    OVERLOADED = "overloaded"
    SHARED_STATE_UNAVAILABLE = "shared_state_unavailable"  # Redis out of reach: refused (fail closed)
    # -- requests --
    PDP = "pdp"  # the policy decision point decided; its own code is in the record's ``reason``
    UNSUPPORTED_SERVICE = "unsupported_service"
    TOKEN_INVALID = "token_invalid"  # expired or revoked since the association began
    INSUFFICIENT_SCOPE = "insufficient_scope"
    PATIENT_UNKNOWN = "patient_unknown"
    NO_PATIENT_ID_TO_CHECK = "no_patient_id_to_check"
    OTHER_PATIENT = "other_patient"  # a match or an image of a patient the request was not decided for
    MOVE_DESTINATION_NOT_ALLOWED = "move_destination_not_allowed"
    UNSOLICITED_SUB_OPERATION = "unsolicited_sub_operation"
    NO_MATCHING_MOVE = "no_matching_move"
    AMBIGUOUS_MOVE = "ambiguous_move"
    NOT_IN_MOVE = "not_in_move"  # an image the C-MOVE did not ask for, or more than the PACS announced
    NODE_ACTION_NOT_PERMITTED = "node_action_not_permitted"
    PDP_UNAVAILABLE = "pdp_unavailable"
    OBLIGATION_NOT_UNDERSTOOD = "obligation_not_understood"  # a permit on a condition the agent cannot meet
    PSEUDONYMIZER_UNAVAILABLE = "pseudonymizer_unavailable"  # a research view, and no pseudonyms to give it
    IDENTIFYING_KEY = "identifying_key"  # a research query matching on what identifies a patient
    NOT_DEIDENTIFIABLE = "not_deidentifiable"  # a data set the research view cannot be made of
    PATIENT_NOT_DECIDED = "patient_not_decided"  # a match permitted only "filter-results": not for its patient
    MALFORMED = "malformed"  # a data set or command that could be read two ways, or not at all
    DECISION_TIMEOUT = "decision_timeout"
    POLICY_ERROR = "policy_error"  # the agent's own code failed: denied (fail closed)
    # -- read only --
    UNRECOGNIZED = "unrecognized"  # an earlier version's reason with no code here; its text is in ``detail``


@dataclass(frozen=True, slots=True, kw_only=True)
class Who:
    """The subject of a decision as the log shows it (never a token)."""

    kind: str  # "user" | "node"
    sub: str
    username: str
    roles: tuple[str, ...] = ()
    organization: str = ""
    acting_client: str = ""  # RFC 8693 ``act``: the client acting for the user, if any
    purpose_of_use: str = ""  # recorded when not the ordinary TREAT: BTG is break-glass
    break_glass_reason: str = ""  # the user's words when breaking the glass

    @property
    def break_glass(self) -> bool:
        """Acting under purpose of use BTG (a token from a break-glass exchange at the HIAL)."""
        return self.purpose_of_use == BREAK_GLASS

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "sub": self.sub, "username": self.username,
                               "roles": list(self.roles), "organization": self.organization}
        _put(out, acting_client=self.acting_client, purpose_of_use=self.purpose_of_use,
             break_glass_reason=self.break_glass_reason)
        return out

    @classmethod
    def from_record(cls, data: Any) -> Who | None:
        if not isinstance(data, Mapping) or not text(data.get("username")):
            return None
        return cls(kind=text(data.get("kind", "user")), sub=text(data.get("sub")),
                   username=text(data["username"]), roles=strings(data.get("roles")),
                   organization=text(data.get("organization")), acting_client=text(data.get("acting_client")),
                   purpose_of_use=text(data.get("purpose_of_use")),
                   break_glass_reason=text(data.get("break_glass_reason")))


@dataclass(frozen=True, slots=True, kw_only=True)
class PdpAnswer:
    """What the policy decision point said (AuthZEN 1.0 decision context)."""

    reason: str
    rule_id: str = ""
    policy_version: str = ""
    cached: bool = False
    break_glass: bool = False
    obligations: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Disclosure:
    """A de-identified disclosure (issue 16 item 5): what a research view showed, so that the patient's
    accounting of disclosures lists research use. ``pseudonyms``: the pseudonymous values shown (the
    Patient ID first); the record's resource keeps the real Patient ID, so the accounting finds it."""

    project: str
    profile: str
    pseudonyms: tuple[str, ...] = ()

    def record(self) -> dict[str, Any]:
        return {"de_identified": True, "project": self.project, "profile": self.profile,
                "pseudonyms": list(self.pseudonyms)}

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> Disclosure | None:
        if data.get("de_identified") is not True:
            return None
        return cls(project=text(data.get("project")), profile=text(data.get("profile")),
                   pseudonyms=strings(data.get("pseudonyms")))


def _common(event: DecisionEvent) -> dict[str, Any]:
    return {"event": event.kind.value}


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthenticationEvent:
    """An association request decided (PS3.7 D.3.3.7 identity, node policy, or the return path)."""

    kind: Kind = field(default=Kind.AUTHENTICATION, init=False)
    association: str
    decision: Decision
    reason: Reason
    detail: str = ""
    peer: str = ""
    certificate: tuple[str, ...] = ()
    calling_ae: str = ""
    called_ae: str = ""
    pacs: str = ""
    user: Who | None = None
    identity_type: int | None = None
    workstation: str = ""
    claimed_workstation: str = ""
    path: str = ""  # "return" for the C-MOVE return listener
    latency_ms: float | None = None

    @property
    def reason_code(self) -> str:
        return self.reason.value

    def record(self) -> dict[str, Any]:
        out = _common(self) | {"association": self.association, "decision": self.decision.value,
                               "reason": self.reason.value, "peer": self.peer, "certificate": list(self.certificate),
                               "calling_ae": self.calling_ae, "called_ae": self.called_ae}
        _put(out, detail=self.detail, pacs=self.pacs, identity_type=self.identity_type, workstation=self.workstation,
             claimed_workstation=self.claimed_workstation, path=self.path, latency_ms=self.latency_ms)
        if self.user is not None:
            out["user"] = self.user.record()
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthorizationEvent:
    """A DIMSE request, a C-FIND match (``post_filter``) or a sub-operation decided."""

    kind: Kind = field(default=Kind.AUTHORIZATION, init=False)
    association: str
    action: Action
    decision: Decision
    reason: Reason
    detail: str = ""
    pdp: PdpAnswer | None = None
    message_id: int | None = None
    user: Who | None = None
    calling_ae: str = ""
    workstation: str = ""
    pacs: str = ""
    resource: Mapping[str, Any] = field(default_factory=dict)
    sub_operation_of: Action | None = None
    move_destination: str = ""
    post_filter: bool = False
    latency_ms: float | None = None
    disclosure: Disclosure | None = None  # shown de-identified (a research view)

    @property
    def reason_code(self) -> str:
        """The code to count and filter on: the PDP's own when the PDP decided."""
        return self.pdp.reason if self.reason is Reason.PDP and self.pdp is not None else self.reason.value

    def record(self) -> dict[str, Any]:
        out = _common(self) | {"association": self.association, "action": self.action.value,
                               "decision": self.decision.value, "reason": self.reason_code,
                               "resource": dict(self.resource)}
        _put(out, detail=self.detail, message_id=self.message_id, calling_ae=self.calling_ae,
             workstation=self.workstation, pacs=self.pacs, move_destination=self.move_destination,
             latency_ms=self.latency_ms)
        if self.user is not None:
            out["user"] = self.user.record()
        if self.sub_operation_of is not None:
            out["sub_operation_of"] = self.sub_operation_of.value
        if self.post_filter:
            out["post_filter"] = True
        if self.pdp is not None:
            out["decided_by"] = "pdp" if self.reason is Reason.PDP else "agent"
            # The agent overruled or preceded an answer: the PDP's own code is kept beside the agent's.
            _put(out, rule_id=self.pdp.rule_id, policy_version=self.pdp.policy_version,
                 pdp_reason=self.pdp.reason if self.reason is not Reason.PDP else None)
            if self.pdp.cached:
                out["cached"] = True
            if self.pdp.break_glass:
                out["break_glass"] = True
            if self.pdp.obligations:
                out["obligations"] = list(self.pdp.obligations)
        if self.disclosure is not None:
            out.update(self.disclosure.record())
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferSummary:
    """One permitted C-MOVE or C-GET at the end of its association: how many sub-operations went."""

    kind: Kind = field(default=Kind.TRANSFER_SUMMARY, init=False)
    association: str
    action: Action
    message_id: int | None
    user: Who | None
    workstation: str = ""
    pacs: str = ""
    resource: Mapping[str, Any] = field(default_factory=dict)
    move_destination: str = ""
    sub_operations: int = 0

    def record(self) -> dict[str, Any]:
        out = _common(self) | {"association": self.association, "action": self.action.value,
                               "message_id": self.message_id, "resource": dict(self.resource),
                               "sub_operations": self.sub_operations}
        _put(out, workstation=self.workstation, pacs=self.pacs, move_destination=self.move_destination)
        if self.user is not None:
            out["user"] = self.user.record()
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class AssociationEnd:
    kind: Kind = field(default=Kind.ASSOCIATION_END, init=False)
    association: str
    user: Who | None
    calling_ae: str = ""
    detail: str = ""  # how it ended (released, aborted by ..., idle timeout)

    def record(self) -> dict[str, Any]:
        out = _common(self) | {"association": self.association, "calling_ae": self.calling_ae}
        _put(out, detail=self.detail)
        if self.user is not None:
            out["user"] = self.user.record()
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class ApplicationEvent:
    """The agent started (``APPLICATION_START``), stopped, or re-read its configuration
    (``CONFIGURATION_RELOAD``: result, generation, the file's SHA-256, changed key names)."""

    kind: Kind
    name: str
    detail: Mapping[str, Any] = field(default_factory=dict)  # listen addresses, version

    def record(self) -> dict[str, Any]:
        # The detail comes first: no detail key can change what kind of record this is, or whose.
        return {**dict(self.detail), **_common(self), "name": self.name}


@dataclass(frozen=True, slots=True, kw_only=True)
class LogTruncated:
    """The decision log's writer found its live file ending in a torn line (a crash in the middle of a
    write: no newline, not a record) and sealed it: the torn bytes are kept as they are, their line is
    ended, and this record, chained like any other, stands right after them (``audit/chain.py``)."""

    kind: Kind = field(default=Kind.LOG_TRUNCATED, init=False)
    torn_bytes: int
    torn_sha256: str
    detail: str = ""

    def record(self) -> dict[str, Any]:
        out = _common(self) | {"torn_bytes": self.torn_bytes, "torn_sha256": self.torn_sha256}
        _put(out, detail=self.detail)
        return out


DecisionEvent = (AuthenticationEvent | AuthorizationEvent | TransferSummary | AssociationEnd | ApplicationEvent
                 | LogTruncated)


def _put(out: dict[str, Any], **fields: Any) -> None:
    """Add the fields that carry something (records stay short; absent means empty)."""
    for key, value in fields.items():
        if value not in (None, ""):
            out[key] = value


__all__ = ["BREAK_GLASS", "Action", "ApplicationEvent", "AssociationEnd", "AuthenticationEvent", "AuthorizationEvent",
           "Decision", "DecisionEvent", "Disclosure", "Kind", "LogTruncated", "PdpAnswer", "Reason", "TransferSummary",
           "Who"]
