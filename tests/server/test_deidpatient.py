"""A request naming a Patient ID when the answer may be a research view (server_agent.deidpatient): the
pseudonym is translated only after the PDP permitted the project's view, the PDP decides the real patient,
and every value that is no pseudonym of the project gets one and the same refusal (no oracle)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from deid import Needs
from dicomwire.dimse import decode_command, encode_command
from dicomwire.questions import Permit, Refuse, RequestQuestion, Rewrite
from server_agent.association import Retrieval
from server_agent.deidview import DeidView, ResearchProject
from server_agent.moves import Move
from server_agent.pdp import Decision
from server_agent.resources import Context
from tests.server.test_deidretrieve import IMPLICIT, STUDY, VIEW, Source, association, get_rq, identifier, resolve

MOVE = "1.2.840.10008.5.1.4.1.2.2.2"  # Study Root Query/Retrieve Information Model - MOVE
FIND = "1.2.840.10008.5.1.4.1.2.2.1"
REAL = "PAT-RES-1"  # the patient whose pseudonym the researcher holds


class Policy:
    """A PDP as configs/demo/policy.toml decides for a researcher (or, ``clinician``, a radiologist):
    every question it is asked is remembered, with the Patient ID it named."""

    def __init__(self, *, clinician: bool = False, view: DeidView = VIEW, withdrawn: bool = False) -> None:
        self.clinician, self.view, self.withdrawn = clinician, view, withdrawn
        self.asked: list[str | None] = []

    def cached(self, request: dict[str, Any]) -> Decision | None:
        return None

    async def evaluate(self, requests_: list[dict[str, Any]]) -> list[Decision]:
        return [self._one(r) for r in requests_]

    def _one(self, request: dict[str, Any]) -> Decision:
        patient = request["resource"]["properties"].get("patient_id")
        self.asked.append(patient)
        if self.clinician:
            return Decision(allowed=True, reason="permit")
        deid = {"obligations": ("de-identify",), "deid": self.view}
        if patient is None:
            return Decision(allowed=True, reason="permit_deidentified", **deid)  # type: ignore[arg-type]
        if patient == "PAT-NORES" or (patient == REAL and self.withdrawn):
            return Decision(allowed=False, reason="consent_denied", message="patient consent denies this access")
        if patient == REAL:
            return Decision(allowed=True, reason="permit_deidentified", **deid)  # type: ignore[arg-type]
        return Decision(allowed=False, reason="no_research_consent", message="the patient has not consented")


class Authn:
    async def still_valid(self, subject: object) -> None:
        return None  # a live token: only the policy decides here


def researcher(policy: Policy) -> tuple[Any, Any, Source]:
    owner, log, source, _ = association()
    owner.factory.pdp, owner.factory.authn = policy, Authn()
    owner.context = Context(calling_ae="MOVESCU@WS1", called_ae="ORTHANC", workstation="WS1", certificate=[],
                            peer="127.0.0.1:4000")
    asyncio.run(source.pseudonyms("STUDY-A", Needs(patient_ids=frozenset({REAL}), uids=frozenset({STUDY}))))
    return owner, log, source


def shown_patient(source: Source) -> str:
    return next(shown for shown, real in source.handed.items() if real == REAL)


def move_rq(data: bytes, sop_class: str = MOVE) -> RequestQuestion:
    fields = {0x00000100: 0x0021 if sop_class == MOVE else 0x0020, 0x00000110: 5, 0x00000700: 0,
              0x00000002: sop_class, 0x00000800: 1}
    if sop_class == MOVE:
        fields[0x00000600] = "MOVESCP@WS1"
    command = decode_command(encode_command(fields))
    return RequestQuestion(side=get_rq(b"").side, context_id=1, abstract_syntax=sop_class, transfer_syntax=IMPLICIT,
                           command=command, data_set=data, data_set_complete=True)


def test_a_move_by_the_pseudonymous_patient_id_reaches_the_pacs_with_the_real_one() -> None:
    policy = Policy()
    owner, log, source = researcher(policy)
    calls = len(source.calls)
    verdict = resolve(owner.request(move_rq(identifier("PATIENT", patient=shown_patient(source)))))
    assert isinstance(verdict, Rewrite) and isinstance(verdict.review, Move), verdict
    assert verdict.data_set == identifier("PATIENT", patient=REAL)  # the PACS gets the real patient only
    assert verdict.review.deid is not None and verdict.review.deid.view == VIEW
    assert policy.asked == [None, shown_patient(source), REAL], "the view, as asked, then the real patient"
    assert source.calls[calls] == ("originals", ((shown_patient(source),), ())), "translated before decided"
    record = log.records[-1]
    assert record["decision"] == "permit" and record["decided_by"] == "pdp"
    assert record["reason"] == "permit_deidentified"  # the PDP's permit for the real patient


def test_a_get_by_patient_and_study_pseudonyms_is_decided_on_the_real_patient() -> None:
    policy = Policy()
    owner, _, source = researcher(policy)
    data = identifier("STUDY", patient=shown_patient(source), study=source.shown(STUDY))
    verdict = resolve(owner.request(get_rq(data)))
    assert isinstance(verdict, Rewrite) and isinstance(verdict.review, Retrieval)
    assert verdict.data_set == identifier("STUDY", patient=REAL, study=STUDY)
    assert policy.asked[-1] == REAL


@pytest.mark.parametrize("named", [REAL, "PAT-NORES", "PAT-NOCONSENT", "SA-AAAAAAAAAAAAAAAA", "SB-KEYOFSTUDYB000"],
                         ids=["real consented", "real refused", "real silent", "made up", "other project"])
def test_every_value_that_is_no_pseudonym_of_the_project_gets_the_same_refusal(named: str) -> None:
    policy = Policy()
    owner, log, source = researcher(policy)
    verdict = resolve(owner.request(move_rq(identifier("PATIENT", patient=named))))
    assert verdict == Refuse(comment="RESEARCH-KEY: a key names no pseudonym of this project")
    assert policy.asked == [None, named], "the PDP's answer about the value itself is never used"
    assert [call[0] for call in source.calls[-1:]] == ["originals"]
    record = log.records[-1]
    assert record["decision"] == "deny" and record["reason"] == "identifying_key"
    assert record["detail"] == "Patient ID is no pseudonym of project STUDY-A"
    assert not owner.moves, "nothing reached the PACS or the shared store"


def test_a_research_find_by_a_real_refusing_patient_says_what_any_unknown_value_says() -> None:
    refused = []
    for named in ("PAT-NORES", "PAT-NOCONSENT", REAL):
        owner, log, _ = researcher(Policy())
        refused.append(resolve(owner.request(move_rq(identifier("STUDY", patient=named), FIND))))
        assert log.records[-1]["reason"] == "identifying_key"
    assert refused[0].comment.startswith("RESEARCH-KEY: research view: Patient ID is no pseudonym")
    assert refused == [refused[0]] * 3


def test_a_withdrawn_consent_refuses_the_pseudonym_with_the_pdps_reason() -> None:
    owner, log, source = researcher(Policy(withdrawn=True))
    verdict = resolve(owner.request(move_rq(identifier("PATIENT", patient=shown_patient(source)))))
    assert isinstance(verdict, Refuse) and verdict.comment.startswith("CONSENT: ")
    assert log.records[-1]["reason"] == "consent_denied" and not owner.moves


def test_another_view_for_the_real_patient_is_refused() -> None:
    policy = Policy()
    owner, log, source = researcher(policy)
    other = DeidView(project=ResearchProject(id="STUDY-B", scope="STUDY-B"), profile=VIEW.profile)
    real = policy._one

    def other_for_real(request: dict[str, Any]) -> Decision:
        decision = real(request)
        if request["resource"]["properties"].get("patient_id") == REAL:
            return Decision(allowed=True, reason="permit_deidentified", obligations=("de-identify",), deid=other)
        return decision
    policy._one = other_for_real  # type: ignore[method-assign]
    verdict = resolve(owner.request(move_rq(identifier("PATIENT", patient=shown_patient(source)))))
    assert isinstance(verdict, Refuse) and log.records[-1]["reason"] == "obligation_not_understood"


def test_the_service_is_never_asked_before_the_pdp_permits_a_research_view() -> None:
    policy = Policy()
    owner, _, source = researcher(policy)
    calls = len(source.calls)
    policy._one = lambda request: Decision(allowed=False, reason="no_role")  # type: ignore[method-assign]
    verdict = resolve(owner.request(move_rq(identifier("PATIENT", patient=shown_patient(source)))))
    assert isinstance(verdict, Refuse) and source.calls[calls:] == []


def test_a_clinicians_request_is_decided_as_asked_without_the_service() -> None:
    policy = Policy(clinician=True)
    owner, log, source = researcher(policy)
    calls = len(source.calls)
    verdict = resolve(owner.request(move_rq(identifier("PATIENT", patient=REAL))))
    assert isinstance(verdict, Permit) and isinstance(verdict.review, Move) and verdict.review.deid is None
    assert source.calls[calls:] == [] and policy.asked[-1] == REAL
    assert log.records[-1]["decision"] == "permit"
