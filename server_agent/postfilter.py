"""C-FIND post-filtering: every match is checked before the user sees it (PS3.4 C.4.1).

A C-FIND the PDP permitted with the obligation ``filter-results`` (a query not pinned to one patient)
is forwarded, and each pending response's identifier is decided as a C-FIND of that match's patient;
the matches of patients the user may not see are dropped. Decisions are gathered for a few
milliseconds into one AuthZEN ``evaluations`` call (the relay keeps reading while up to
``RelayLimits.max_pending_reviews`` matches await theirs). A C-FIND pinned to one patient is decided
for that patient; a match of any other patient (a PACS that reads the key as a pattern, or matches
more loosely than the decision assumed) is dropped: a decision covers only what it was made for.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from audit.events import Action, Reason
from dicomwire.dataset import MalformedDataSet, with_element, without_element
from dicomwire.questions import Drop, Permit, Refuse, RequestVerdict, ResponseQuestion, ResponseVerdict, Rewrite

from .authorization import Facts
from .keys import PATIENT_ID, match_keys
from .pdp import Decision, PdpClient, PdpUnavailable
from .refusals import refusal_comment
from .resources import authzen_request
from .window import Window

if TYPE_CHECKING:
    from .association import ServerAssociation

log = logging.getLogger("server_agent")

BATCH_WINDOW = 0.003  # seconds to gather post-filter questions into one PDP call
BATCH_MAX = 64  # = RelayLimits.max_pending_reviews: a full batch goes at once


@dataclass(eq=False, slots=True, kw_only=True)
class FindReview:
    """The review object of one permitted C-FIND (what its responses are checked against)."""

    facts: Facts  # of the request
    pinned: str | None  # the patient the request was decided for; None: each match decided (filtering)
    strip_patient_id: bool = False  # we added Patient ID as a return key: removed from each match again


class Batcher:
    """One association's post-filter evaluations, gathered into AuthZEN batches."""

    def __init__(self, pdp: PdpClient, window: float = BATCH_WINDOW, size: int = BATCH_MAX) -> None:
        self.pdp = pdp
        # The PDP looked up when a window closes, not now (a policy may be given its PDP after this).
        self._window: Window[dict[str, object], Decision] = Window(lambda batch: self.pdp.evaluate(batch), window,
                                                                     size, errors=(PdpUnavailable,))

    async def decide(self, request: dict[str, object]) -> Decision:
        """The PDP's decision on ``request``, made together with the others asked within the window."""
        cached = self.pdp.cached(request)
        if cached is not None:
            return cached
        return await self._window.ask(request)

    def close(self) -> None:
        """The association is over: nothing more is decided for it."""
        self._window.close()


# ---- a C-FIND's review: set when it is permitted, applied to each of its matches -----------------------
def find_permitted(owner: ServerAssociation, facts: Facts, filtering: bool) -> RequestVerdict:
    """A C-FIND pinned to one patient has its matches checked to be that patient's; one the PDP
    permitted on ``filter-results`` has each match decided. If such a query does not ask for the
    Patient ID, it is asked of the PACS too and removed from the matches again, so that the user
    sees what was asked (PS3.4 C.4.1.1.3)."""
    if facts.patient is not None or not filtering:
        return Permit(review=FindReview(facts=facts, pinned=facts.patient) if facts.patient else None)
    if facts.keys.patient_id.present:
        return Permit(review=FindReview(facts=facts, pinned=None))
    return _with_patient_id(owner, facts)


def _with_patient_id(owner: ServerAssociation, facts: Facts) -> RequestVerdict:
    try:
        asked = with_element(facts.data_set, facts.transfer_syntax, PATIENT_ID, "LO")
    except MalformedDataSet as error:
        log.warning("association %s: C-FIND identifier unreadable (%s): refused", owner.connection.association_id,
                    error)
        return Refuse(comment=refusal_comment("query identifier could not be read", Reason.MALFORMED))
    return Rewrite(data_set=asked, review=FindReview(facts=facts, pinned=None, strip_patient_id=True))


def decide_match(owner: ServerAssociation, question: ResponseQuestion,
                 review: FindReview) -> ResponseVerdict | Awaitable[ResponseVerdict]:
    """A pending C-FIND response of ``owner``'s under ``review``: its match shown, or dropped and recorded."""
    assert owner.subject is not None and owner.context is not None
    try:
        keys = match_keys(question.data_set, question.transfer_syntax)
    except MalformedDataSet as error:
        facts = Facts(action=Action.C_FIND, command=question.request, malformed=error.detail)
        owner.record.match(facts, owner.subject, owner.context, Reason.MALFORMED, False, detail=error.detail)
        return Drop(reason_text="a match that cannot be read one way only")
    pinned = keys.pinned_patient
    patient = pinned.id if pinned is not None else None
    facts = Facts(action=Action.C_FIND, command=question.request, keys=keys, patient=patient)
    if review.pinned is not None:
        if patient != review.pinned:
            owner.record.match(facts, owner.subject, owner.context, Reason.OTHER_PATIENT, False)
            return Drop(reason_text="a match of another patient than the one decided")
        return _shown(question, review)
    if patient is None:
        owner.record.match(facts, owner.subject, owner.context, Reason.NO_PATIENT_ID_TO_CHECK, False)
        return Drop(reason_text="match without a Patient ID cannot be checked")
    request = authzen_request(owner.subject, "C-FIND", question.request, keys, patient, owner.context)
    return _filtered(owner, question, review, facts, request)


async def _filtered(owner: ServerAssociation, question: ResponseQuestion, review: FindReview, facts: Facts,
                    request: dict[str, Any]) -> ResponseVerdict:
    assert owner.subject is not None and owner.context is not None
    started = time.perf_counter()
    try:
        decision = await owner.batcher.decide(request)
    except PdpUnavailable as error:
        owner.record.match(facts, owner.subject, owner.context, Reason.PDP_UNAVAILABLE, False, started,
                           detail=str(error))
        return Drop(reason_text="authorization service unavailable")
    owner.record.match(facts, owner.subject, owner.context, Reason.PDP, decision.allowed, started, pdp=decision)
    if not decision.allowed:
        return Drop(reason_text=decision.reason)
    return _shown(question, review)


def _shown(question: ResponseQuestion, review: FindReview) -> ResponseVerdict:
    if not review.strip_patient_id:
        return Permit()
    try:
        return Rewrite(data_set=without_element(question.data_set, question.transfer_syntax, PATIENT_ID))
    except MalformedDataSet:  # read once already; the match was allowed, only a key not asked for stays
        return Permit()


__all__ = ["BATCH_MAX", "BATCH_WINDOW", "Batcher", "FindReview", "decide_match", "find_permitted"]
