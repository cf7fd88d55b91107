"""One association's research C-FINDs: the request translated, each match decided, de-identified, recorded.

The steps are :mod:`server_agent.deidfind`'s; this object holds what they need for one association
(its recorder, its PDP batcher, the pseudonymisation service, one :class:`PseudonymBatcher` per project)
and writes the decision log: a refused research query with its reason (``identifying_key``,
``pseudonymizer_unavailable``), every match shown as a de-identified disclosure (user, project,
profile, pseudonyms; the real Patient ID as the resource, so that ``decision-log patient`` lists it),
every match withheld with why.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from dataclasses import dataclass, field

from audit.events import Action, Reason
from deid import DeidError
from dicomwire.dataset import MalformedDataSet
from dicomwire.dimse import refusal_response
from dicomwire.questions import Drop, Permit, Refuse, RequestVerdict, ResponseQuestion, ResponseVerdict, Rewrite

from .authn import Subject
from .authorization import Facts
from .deidfind import (
    PseudonymBatcher,
    ResearchFind,
    ResearchRefusal,
    asked_patient_id,
    deidentified_match,
    match_acceptable,
    match_needs,
    read_query,
    translate,
)
from .deidresponse import without_comment
from .deidview import DeidView
from .keys import match_keys
from .pdp import Decision, PdpUnavailable
from .postfilter import Batcher
from .pseudonyms import PseudonymSource, PseudonymsUnavailable
from .records import Recorder
from .refusals import refusal_comment
from .resources import Context, authzen_request

STATUS_UNABLE_TO_PROCESS = 0xC000  # PS3.4 C.4.1.1.4: C-FIND failure, Unable to process
MAX_PROJECTS = 4  # research views one association may hold batchers for (one in practice)




@dataclass(eq=False, slots=True)
class ResearchFinds:
    record: Recorder
    pdp: Batcher
    source: PseudonymSource
    _batchers: dict[str, PseudonymBatcher] = field(default_factory=dict)

    def _batcher(self, view: DeidView) -> PseudonymBatcher:
        batcher = self._batchers.get(view.project.id)
        if batcher is None:
            if len(self._batchers) >= MAX_PROJECTS:
                raise PseudonymsUnavailable("too many research projects on one association")
            batcher = self._batchers[view.project.id] = PseudonymBatcher(self.source, view.project.id)
        return batcher

    # ---- the request ---------------------------------------------------------------------------------
    async def request(self, facts: Facts, decision: Decision, view: DeidView, subject: Subject, context: Context,
                      started: float) -> RequestVerdict:
        """A C-FIND the PDP permitted in ``view``: its keys translated back, or refused with the reason."""
        def refuse(reason: Reason, text: str, status: int = 0x0124, detail: str = "") -> Refuse:
            self.record.authorization(facts, subject, context, reason, False, started, pdp=decision,
                                      detail=detail or text)
            return Refuse(comment=refusal_comment(text, reason), status=status)

        try:
            query = read_query(facts.data_set, facts.transfer_syntax, view)
            identifier, pinned = await translate(facts.data_set, facts.transfer_syntax, view, query, self.source)
            identifier, added = asked_patient_id(identifier, facts.transfer_syntax)
        except ResearchRefusal as refusal:
            return refuse(Reason.IDENTIFYING_KEY, refusal.text)
        except PseudonymsUnavailable as error:
            return refuse(Reason.PSEUDONYMIZER_UNAVAILABLE, "pseudonymisation service unavailable", detail=str(error))
        except MalformedDataSet as error:
            return refuse(Reason.MALFORMED, "data set could not be read one way only", error.status, error.detail)
        self.record.authorization(facts, subject, context, Reason.PDP, True, started, pdp=decision)
        review = ResearchFind(facts=facts, view=view, pinned=pinned, strip_patient_id=added)
        if identifier == facts.data_set:
            return Permit(review=review)
        return Rewrite(data_set=identifier, review=review)

    # ---- each match ------------------------------------------------------------------------------------
    def match(self, question: ResponseQuestion, review: ResearchFind, subject: Subject,
              context: Context) -> Awaitable[ResponseVerdict]:
        """A pending C-FIND response of a research query: decided with its real patient, shown
        de-identified. Counted as pending from the moment it is asked, so that the final response,
        asked next, waits for it."""
        review.pending += 1
        review.quiet.clear()
        return self._counted(question, review, subject, context)

    async def _counted(self, question: ResponseQuestion, review: ResearchFind, subject: Subject,
                       context: Context) -> ResponseVerdict:
        try:
            return await self._match(question, review, subject, context)
        finally:
            review.pending -= 1
            if not review.pending:
                review.quiet.set()

    async def final(self, question: ResponseQuestion, review: ResearchFind) -> ResponseVerdict:
        """The final response, once every match before it has its verdict: a success that withheld
        matches the view could not be made for becomes "Unable to process" (PS3.4 C.4.1.1.4, C000H)
        with the reason, so that a researcher never takes a partial answer for the whole one."""
        if review.pending:
            await review.quiet.wait()
        status = question.command.status
        if not review.withheld or (status is not None and status != 0x0000):
            command = without_comment(question.command)  # the PACS's words may echo the real keys
            return Permit() if command is None else Rewrite(command=command)
        text = f"research view: {review.withheld} match(es) withheld: {review.why}"
        return Rewrite(command=refusal_response(question.request, status=STATUS_UNABLE_TO_PROCESS, comment=text))

    async def _match(self, question: ResponseQuestion, review: ResearchFind, subject: Subject,
                     context: Context) -> ResponseVerdict:
        started = time.perf_counter()
        try:
            keys = match_keys(question.data_set, question.transfer_syntax)
        except MalformedDataSet as error:
            facts = Facts(action=Action.C_FIND, command=question.request, malformed=error.detail)
            self.record.match(facts, subject, context, Reason.MALFORMED, False, detail=error.detail)
            return Drop(reason_text="a match that cannot be read one way only")
        pinned = keys.pinned_patient
        facts = Facts(action=Action.C_FIND, command=question.request, keys=keys, patient=pinned.id if pinned else None)
        if facts.patient is None:
            self.record.match(facts, subject, context, Reason.NO_PATIENT_ID_TO_CHECK, False)
            return Drop(reason_text="match without a Patient ID cannot be checked")
        if review.pinned is not None and facts.patient != review.pinned:
            self.record.match(facts, subject, context, Reason.OTHER_PATIENT, False)
            return Drop(reason_text="a match of another patient than the one decided")
        request = authzen_request(subject, "C-FIND", question.request, keys, facts.patient, context)
        try:
            decision = await self.pdp.decide(request)
        except PdpUnavailable as error:
            self.record.match(facts, subject, context, Reason.PDP_UNAVAILABLE, False, started, detail=str(error))
            return Drop(reason_text="authorization service unavailable")
        if not decision.allowed:
            self.record.match(facts, subject, context, Reason.PDP, False, started, pdp=decision)
            return Drop(reason_text=decision.reason)
        refused = match_acceptable(decision.deid, decision.obligations, decision.obligation_problem, review.view)
        if refused is not None:
            self.record.match(facts, subject, context, refused[0], False, started, pdp=decision, detail=refused[1])
            return Drop(reason_text=refused[1])
        return await self._shown(question, review, facts, decision, subject, context, started)

    async def _shown(self, question: ResponseQuestion, review: ResearchFind, facts: Facts, decision: Decision,
                     subject: Subject, context: Context, started: float) -> ResponseVerdict:
        data, syntax = question.data_set, question.transfer_syntax
        try:
            wanted = match_needs(data, syntax, review.view)
            pseudonyms = await self._batcher(review.view).get(wanted)
            shown, disclosure = deidentified_match(data, syntax, review, pseudonyms, wanted)
        except PseudonymsUnavailable as error:
            self.record.match(facts, subject, context, Reason.PSEUDONYMIZER_UNAVAILABLE, False, started, pdp=decision,
                              detail=str(error))
            return _withheld(review, "pseudonymisation service unavailable")
        except (DeidError, MalformedDataSet) as error:
            self.record.match(facts, subject, context, Reason.NOT_DEIDENTIFIABLE, False, started, pdp=decision,
                              detail=str(error)[:200])
            return _withheld(review, "cannot be de-identified")
        self.record.match(facts, subject, context, Reason.PDP, True, started, pdp=decision, disclosure=disclosure)
        return Rewrite(data_set=shown)

    def close(self) -> None:
        for batcher in self._batchers.values():
            batcher.close()
        self._batchers.clear()


def _withheld(review: ResearchFind, why: str) -> Drop:
    review.withheld += 1
    review.why = review.why or why
    return Drop(reason_text=f"a match withheld: {why}")


__all__ = ["ResearchFinds"]
