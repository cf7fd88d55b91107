"""What one association writes to the decision log: its events, made here from what was decided.

One :class:`Recorder` per association: it knows the association's id, peer and route, and turns each
authentication, authorization, post-filtered match, core notice and the association's end into the
frozen events of :mod:`audit.events` (never a token, never a password). The subject carries what an
RFC 8693 exchange added (the acting client, break-glass and its reason) into every one of them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from audit.events import (
    BREAK_GLASS,
    Action,
    AssociationEnd,
    AuthenticationEvent,
    AuthorizationEvent,
    Decision,
    DecisionEvent,
    Disclosure,
    PdpAnswer,
    Reason,
    TransferSummary,
    Who,
)
from dicomwire.commands import Notice, NoticeKind
from dicomwire.policy import Ending

from .authn import Subject
from .decisions import Decisions
from .pdp import Decision as PdpDecision
from .resources import Context

log = logging.getLogger("server_agent.records")

if TYPE_CHECKING:
    from .authorization import Facts
    from .config import Pacs


class Transfer(Protocol):
    """A permitted C-GET or C-MOVE, for its summary."""

    @property
    def facts(self) -> Facts: ...

    @property
    def sub_operations(self) -> int: ...


def who(subject: Subject | None) -> Who | None:
    """The subject as every record shows it: with the acting client (RFC 8693 ``act``) and a purpose
    of use other than the ordinary TREAT (BTG with its reason), so each request under them says so."""
    if subject is None:
        return None
    purpose = "" if subject.purpose_of_use == "TREAT" else subject.purpose_of_use
    return Who(kind=subject.kind, sub=subject.id, username=subject.username, roles=tuple(subject.roles),
               organization=subject.organization, acting_client=subject.acting_client, purpose_of_use=purpose,
               break_glass_reason=subject.break_glass_reason if purpose == BREAK_GLASS else "")


def _ms(started: float | None) -> float | None:
    return None if started is None else round((time.perf_counter() - started) * 1000, 3)


def answer(decision: PdpDecision) -> PdpAnswer:
    return PdpAnswer(reason=decision.reason, rule_id=decision.rule_id, policy_version=decision.policy_version,
                     cached=decision.cached, break_glass=decision.break_glass, obligations=decision.obligations)


class Recorder:
    def __init__(self, decisions: Decisions, association: str) -> None:
        self.decisions = decisions
        self.association = association
        self.peer = ""
        self.source = ""  # the peer's address: what failed logins are counted by
        self.pacs = ""
        self._base: dict[str, Any] = {}

    def write(self, event: DecisionEvent) -> None:
        self.decisions.write(event)

    # -- the association ----------------------------------------------------------------------------
    def begin(self, *, peer: tuple[str, int] | None, certificate: list[str], calling_ae: str, called_ae: str) -> None:
        self.peer = f"{peer[0]}:{peer[1]}" if peer else ""
        self.source = peer[0] if peer else ""
        self._base = {"peer": self.peer, "certificate": tuple(certificate), "calling_ae": calling_ae,
                      "called_ae": called_ae}

    def note(self, **fields: Any) -> None:
        if "pacs" in fields:
            self.pacs = str(fields["pacs"])
        self._base.update(fields)

    def authentication(self, reason: Reason, detail: str, started: float, *, path: str = "") -> None:
        self.write(AuthenticationEvent(association=self.association, decision=Decision.DENY, reason=reason,
                                       detail=detail, latency_ms=_ms(started), path=path, **self._base))

    def authenticated(self, subject: Subject, workstation: str, started: float) -> None:
        """The association permitted; under break-glass a Security Alert (PS3.15 A.5.3.11, Emergency
        Override Started) follows from the record (:mod:`audit.dicom_audit`), and the log says so now."""
        reason = Reason.AUTHENTICATED if subject.kind == "user" else Reason.NODE_POLICY
        detail = ""
        if subject.purpose_of_use == BREAK_GLASS:
            detail = f"break-glass: {subject.break_glass_reason or 'no reason given'}"
            log.warning("SECURITY ALERT: association %s of %s from %s under break-glass: %r", self.association,
                        subject.username, self.peer, subject.break_glass_reason)
        self.write(AuthenticationEvent(association=self.association, decision=Decision.PERMIT, reason=reason,
                                       detail=detail, user=who(subject), workstation=workstation,
                                       latency_ms=_ms(started), **self._base))

    def write_permit(self, reason: Reason, started: float, *, path: str = "") -> None:
        """An association permitted without a user (the return path: the PACS for an outstanding move)."""
        self.write(AuthenticationEvent(association=self.association, decision=Decision.PERMIT, reason=reason,
                                       latency_ms=_ms(started), path=path, **self._base))

    # -- requests -----------------------------------------------------------------------------------
    def authorization(self, facts: Facts, subject: Subject | None, context: Context | None, reason: Reason,
                      allowed: bool, started: float | None, *, pdp: PdpDecision | None = None, detail: str = "",
                      post_filter: bool = False, disclosure: Disclosure | None = None) -> None:
        self.write(AuthorizationEvent(
            association=self.association, action=Action.parse(facts.name), decision=Decision.PERMIT if allowed
            else Decision.DENY, reason=reason, detail=detail, pdp=answer(pdp) if pdp is not None else None,
            message_id=facts.command.message_id,
            user=who(subject), calling_ae=context.calling_ae if context else "",
            workstation=context.workstation if context else "", pacs=self.pacs, resource=facts.resource,
            sub_operation_of=facts.sub_operation_of, move_destination=facts.move_destination,
            post_filter=post_filter, latency_ms=_ms(started), disclosure=disclosure))

    def match(self, facts: Facts, subject: Subject, context: Context, reason: Reason, allowed: bool,
              started: float | None = None, *, pdp: PdpDecision | None = None, detail: str = "",
              disclosure: Disclosure | None = None) -> None:
        """A C-FIND match decided (post-filter): ``facts.command`` is the C-FIND request it answers."""
        self.authorization(facts, subject, context, reason, allowed, started, pdp=pdp, detail=detail,
                           post_filter=True, disclosure=disclosure)

    def notice(self, notice: Notice, subject: Subject | None, context: Context | None) -> None:
        """What the relay refused or ended on its own: malformed input, a DIMSE rule broken, a verdict late."""
        reason = Reason.DECISION_TIMEOUT if notice.kind is NoticeKind.DECISION_TIMEOUT else Reason.MALFORMED
        detail = f"{notice.kind.value} from the {notice.side.value}: {notice.detail}"
        if subject is None:
            self.write(AuthenticationEvent(association=self.association, decision=Decision.DENY, reason=reason,
                                           detail=detail, **self._base))
            return
        command = notice.command
        self.write(AuthorizationEvent(
            association=self.association, action=Action.parse(command.name) if command is not None else Action.OTHER,
            decision=Decision.DENY, reason=reason, detail=detail,
            message_id=command.message_id if command is not None else None, user=who(subject),
            calling_ae=context.calling_ae if context else "", workstation=context.workstation if context else "",
            pacs=self.pacs))

    # -- the end ------------------------------------------------------------------------------------
    def ended(self, subject: Subject, context: Context | None, pacs: Pacs | None, retrievals: Sequence[Transfer],
              ending: Ending) -> None:
        """One summary per retrieval (how many sub-operations went), then the association's end."""
        for retrieval in retrievals:
            facts = retrieval.facts
            self.write(TransferSummary(
                association=self.association, action=Action.parse(facts.name), message_id=facts.command.message_id,
                user=who(subject), workstation=context.workstation if context else "",
                pacs=pacs.name if pacs else "", resource=facts.resource, move_destination=facts.move_destination,
                sub_operations=retrieval.sub_operations))
        self.write(AssociationEnd(association=self.association, user=who(subject),
                                  calling_ae=context.calling_ae if context else "", detail=ending.reason))


__all__ = ["Recorder", "answer", "who"]
