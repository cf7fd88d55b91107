"""A request that names a patient, when the answer may be a research view: translated first, then decided
on the real patient (issue 16: retrieval by pseudonymous Patient ID).

A researcher names a patient by the pseudonymous Patient ID a de-identified C-FIND showed. Asked about
that value, the PDP cannot place it (a retrieval is denied: no consent it knows of). Asked about a real
Patient ID the researcher typed, its answer would say whether that patient exists and what they
consented to: an oracle. So a request that names one Patient ID (a C-FIND pinned to it, PS3.4
C.4.1.2.1; a C-GET or C-MOVE naming it as a single value, C.4.2.2.1, C.4.3.2.1) is decided in this
order when the agent has a pseudonymisation service:

1. **The view.** The PDP is asked the request without its patient ("may this user do this, and in which
   view?") together with the request as asked, in one call. Unless the first is a permit with a
   ``de-identify`` obligation and the second is not an identified permit, the request is decided as asked:
   a clinician's request is what it always was, and a patient the PDP lets the user see identified is
   seen identified.
2. **The translation.** Only now, with the PDP's permit for one project's view, is the pseudonymisation
   service asked, for that project only, which real Patient ID the value stands for: the agent never asks
   the service for something the PDP would not let this user learn. A value the service never handed out
   for the project (a real Patient ID, another project's pseudonym, a made-up one) is refused 0124H
   ``identifying_key`` with one and the same comment whatever it was, and no PDP answer about it was
   used: the refusal says nothing about any real patient.
3. **The real patient.** The PDP decides the request again with the real Patient ID (consent, as for
   every request: a withdrawn consent refuses). A permit must be the same research view, else the request
   is refused (``obligation_not_understood``).

The decision log keeps the request as asked (pseudonyms), with the decision made on the real patient.
Nothing here does I/O of its own: the PDP and the service are passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from audit.events import Action, Reason

from .authn import Subject
from .authorization import Facts, conclude
from .deidview import DeidView
from .pdp import Decision
from .pseudonyms import PseudonymSource, PseudonymsUnavailable
from .resources import Context, authzen_request

# Requests whose single Patient ID may be a pseudonym (the PDP decides them for that patient).
NAMING = frozenset({Action.C_FIND, Action.C_GET, Action.C_MOVE})
# One text for every value that is no pseudonym of the project: the researcher learns nothing else.
_UNKNOWN = {Action.C_FIND: "research view: Patient ID is no pseudonym of {project}",
            Action.C_GET: "a key names no pseudonym of this project",
            Action.C_MOVE: "a key names no pseudonym of this project"}


class Evaluator(Protocol):
    """The PDP client's batch evaluation (:meth:`server_agent.pdp.PdpClient.evaluate`)."""

    async def evaluate(self, requests_: list[dict[str, Any]]) -> list[Decision]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Refusal:
    """A request refused before the PACS sees it: ``decision`` is the PDP's permit it overrides (logged
    with it), ``text`` the Error Comment's reason, ``detail`` the decision log's."""

    reason: Reason
    text: str
    detail: str
    decision: Decision


def names_patient(facts: Facts) -> bool:
    """A client's C-FIND, C-GET or C-MOVE that the PDP would decide for one Patient ID (``facts.patient``)."""
    return facts.patient is not None and facts.sub_operation_of is None and facts.action in NAMING


async def decide(facts: Facts, asked: dict[str, Any], *, subject: Subject, context: Context, pdp: Evaluator,
                 source: PseudonymSource) -> Decision | Refusal:
    """The decision that stands for a request that names a patient (the module's three steps): the PDP's
    answer as asked, its answer for the real patient a pseudonym stands for, or a refusal."""
    assert facts.action is not None and facts.patient is not None
    action = facts.action.value
    blind, as_asked = await pdp.evaluate([authzen_request(subject, action, facts.command, facts.keys, None, context),
                                          asked])
    view = _research_view(facts, blind)
    if view is None or (as_asked.allowed and as_asked.deid is None):
        return as_asked
    try:
        originals = await source.originals(view.project.id, patient_ids=[facts.patient])
    except PseudonymsUnavailable as error:
        return Refusal(reason=Reason.PSEUDONYMIZER_UNAVAILABLE, text="pseudonymisation service unavailable",
                       detail=str(error), decision=blind)
    real = originals.patient_ids.get(facts.patient)
    if real is None:
        return Refusal(reason=Reason.IDENTIFYING_KEY, text=_UNKNOWN[facts.action].format(project=view.project.id),
                       detail=f"Patient ID is no pseudonym of project {view.project.id}", decision=blind)
    (decision,) = await pdp.evaluate([authzen_request(subject, action, facts.command, facts.keys, real, context)])
    if decision.allowed and decision.deid != view:
        return Refusal(reason=Reason.OBLIGATION_NOT_UNDERSTOOD, text="the policy gave this patient another view",
                       detail=f"a pseudonym of {view.project.id} permitted in another view for its real patient",
                       decision=decision)
    return decision


def _research_view(facts: Facts, decision: Decision) -> DeidView | None:
    """The research view a permit obliges (None: a deny, or an identified permit)."""
    conclusion = conclude(facts, decision, pseudonymizer=True)
    return conclusion.deid if conclusion.allowed else None


__all__ = ["NAMING", "Evaluator", "Refusal", "decide", "names_patient"]
