"""The research C-FIND's pieces without sockets (issue 16 items 2 and 5): which query keys a researcher may
match on, the translation back to real values (one reading), the batching of pseudonym requests, the
disclosure record and its audit message."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterable
from xml.etree import ElementTree as ET

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from audit.dicom_audit import audit_message
from audit.events import Action, AuthorizationEvent, Decision, Disclosure, Reason, Who
from audit.stored import from_record
from deid import Needs, Option, PatientPseudonym, Profile, Pseudonyms
from devtools.dicomdata import decode_data_set, encode_data_set
from dicomwire.association import Side
from dicomwire.dataset import DataSet, read_data_set
from dicomwire.dimse import decode_command, encode_command
from dicomwire.questions import Drop, Permit, ResponseQuestion, Rewrite
from pseudonymizer.client import Originals
from server_agent.authn import Subject
from server_agent.deidfind import (
    PseudonymBatcher,
    Query,
    ResearchFind,
    ResearchRefusal,
    deidentified_match,
    match_acceptable,
    match_needs,
    read_query,
    translate,
)
from server_agent.deidview import DeidView, ResearchProject
from server_agent.pdp import Decision as Decision_
from server_agent.postfilter import Batcher
from server_agent.pseudonyms import PseudonymsUnavailable
from server_agent.records import Recorder
from server_agent.research import ResearchFinds
from server_agent.resources import Context

EXPLICIT, IMPLICIT = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"
VIEW = DeidView(project=ResearchProject(id="STUDY-A", scope="STUDY-A"),
                profile=Profile(options=frozenset({Option.RETAIN_LONGITUDINAL_MODIFIED_DATES,
                                                   Option.RETAIN_PATIENT_CHARACTERISTICS})))
REAL_STUDY, PSEUDO_STUDY = "1.2.826.0.1.3680043.10.1447.77.1", "2.25.1234"


def query(syntax: str = EXPLICIT, **keys: object) -> bytes:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    for keyword in ("PatientID", "PatientName", "StudyInstanceUID", "StudyDate", "Modality"):
        setattr(ds, keyword, "")
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return encode_data_set(ds, syntax)


@pytest.mark.parametrize("syntax", [EXPLICIT, IMPLICIT])
def test_return_keys_kept_values_and_pseudonyms_are_a_research_query(syntax: str) -> None:
    found = read_query(query(syntax, Modality="CT", PatientID="SA-1", StudyInstanceUID=f"{PSEUDO_STUDY}\\2.25.9"),
                       syntax, VIEW)
    assert found == Query(patient_id="SA-1", uids=((0x0020000D, "UI", (PSEUDO_STUDY, "2.25.9")),))
    empty_item = Dataset()
    empty_item.ReferencedSOPInstanceUID = ""
    assert read_query(query(syntax, ReferencedStudySequence=Sequence([empty_item])), syntax, VIEW) == Query()


@pytest.mark.parametrize(("keys", "named"), [
    ({"PatientName": "DOE^JANE"}, "PatientName"), ({"PatientName": "D*"}, "PatientName"),
    ({"PatientBirthDate": "19700101"}, "PatientBirthDate"), ({"StudyDate": "20260101-"}, "StudyDate"),
    ({"AccessionNumber": "ACC1"}, "AccessionNumber"), ({"PatientID": "SA-*"}, "Patient ID"),
    ({"PatientID": "A\\B"}, "Patient ID"), ({"InstitutionName": "General Hospital"}, "InstitutionName"),
])
def test_matching_on_what_identifies_is_refused_naming_the_key(keys: dict[str, str], named: str) -> None:
    with pytest.raises(ResearchRefusal) as refused:
        read_query(query(**keys), EXPLICIT, VIEW)
    assert named in refused.value.text and len(f"Not authorized: {refused.value.text}") <= 64


@pytest.mark.parametrize("syntax", [EXPLICIT, IMPLICIT])
@pytest.mark.parametrize("defined", [True, False])
def test_a_value_nested_deep_in_a_sequence_key_is_found(syntax: str, defined: bool) -> None:
    inner = Dataset()
    inner.CodeValue = ""
    outer = Dataset()
    outer.ReferencedSOPInstanceUID = ""
    outer.ProcedureCodeSequence = Sequence([inner])
    ds = decode_data_set(query(syntax), syntax)
    ds.ReferencedStudySequence = Sequence([outer])
    for sequence in (ds.ReferencedStudySequence, outer.ProcedureCodeSequence):
        sequence.is_undefined_length = not defined
    assert read_query(encode_data_set(ds, syntax), syntax, VIEW) == Query(), "return keys only"
    inner.CodeValue = "SECRET"
    with pytest.raises(ResearchRefusal, match="ReferencedStudySequence"):
        read_query(encode_data_set(ds, syntax), syntax, VIEW)


def test_a_sequence_or_private_key_with_a_value_is_refused() -> None:
    item = Dataset()
    item.ReferencedSOPInstanceUID = REAL_STUDY
    with pytest.raises(ResearchRefusal, match="ReferencedStudySequence"):
        read_query(query(ReferencedStudySequence=Sequence([item])), EXPLICIT, VIEW)
    ds = decode_data_set(query(), EXPLICIT)
    ds.add_new(0x00090010, "LO", "ACME")
    ds.add_new(0x00091001, "LO", "DOE")
    with pytest.raises(ResearchRefusal):
        read_query(encode_data_set(ds, EXPLICIT), EXPLICIT, VIEW)


class FakeService:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls: list[tuple[str, object]] = []

    async def pseudonyms(self, project: str, wanted: Needs) -> Pseudonyms:
        self.calls.append(("pseudonyms", wanted))
        if self.fail:
            raise PseudonymsUnavailable("down")
        return Pseudonyms(patients={p: PatientPseudonym(patient_id=f"SA-{p[::-1]}", patient_name=f"SA^{p[::-1]}",
                                                        date_offset_days=-10) for p in wanted.patient_ids},
                          uids={u: f"2.25.{len(u)}" for u in wanted.uids})

    async def originals(self, project: str, *, patient_ids: Iterable[str] = (), uids: Iterable[str] = ()) -> Originals:
        self.calls.append(("originals", (list(patient_ids), list(uids))))
        return Originals(patient_ids={"SA-1": "PAT-1"}, uids={PSEUDO_STUDY: REAL_STUDY})


def test_pseudonyms_go_back_to_real_keys_in_one_call_and_nothing_else_changes() -> None:
    service = FakeService()
    asked = query(PatientID="SA-1", StudyInstanceUID=PSEUDO_STUDY, Modality="CT")
    new, patient = asyncio.run(translate(asked, EXPLICIT, VIEW, read_query(asked, EXPLICIT, VIEW), service))
    assert patient == "PAT-1" and len(service.calls) == 1
    sent = decode_data_set(new, EXPLICIT)
    assert (sent.PatientID, sent.StudyInstanceUID, sent.Modality) == ("PAT-1", REAL_STUDY, "CT")
    before, after = read_data_set(asked, EXPLICIT), read_data_set(new, EXPLICIT)

    def others(read: DataSet) -> list[bytes]:
        return [read.data[e.start:e.end] for e in read.elements if e.tag not in (0x00100020, 0x0020000D)]

    assert others(after) == others(before), "every other element is passed as it was encoded"


@pytest.mark.parametrize("keys", [{"PatientID": "PAT-1"}, {"StudyInstanceUID": REAL_STUDY}])
def test_a_value_the_project_never_handed_out_is_refused(keys: dict[str, str]) -> None:
    asked = query(**keys)
    with pytest.raises(ResearchRefusal, match="no pseudonym of STUDY-A"):
        asyncio.run(translate(asked, EXPLICIT, VIEW, read_query(asked, EXPLICIT, VIEW), FakeService()))


def test_the_pseudonyms_of_several_matches_are_one_call() -> None:
    service = FakeService()

    async def run() -> list[Pseudonyms]:
        batcher = PseudonymBatcher(service, "STUDY-A")
        wanted = [Needs(patient_ids=frozenset({f"PAT-{n}"}), uids=frozenset({f"1.2.{n}"})) for n in range(5)]
        return list(await asyncio.gather(*(batcher.get(w) for w in wanted)))

    answers = asyncio.run(run())
    assert len(service.calls) == 1 and len(answers[0].patients) == 5


def test_a_failed_batch_fails_every_match_in_it() -> None:
    async def run() -> list[object]:
        batcher = PseudonymBatcher(FakeService(fail=True), "STUDY-A")
        return list(await asyncio.gather(*(batcher.get(Needs(patient_ids=frozenset({f"P{n}"}))) for n in range(3)),
                                         return_exceptions=True))

    assert all(isinstance(result, PseudonymsUnavailable) for result in asyncio.run(run()))


@pytest.mark.parametrize(("view", "obligations", "problem", "acceptable"), [
    (VIEW, ("de-identify",), "", True),
    (None, (), "", True),  # a plain permit: still shown in the request's view, never less
    (VIEW, ("filter-results", "de-identify"), "", False),  # the PDP did not decide this patient
    (DeidView(project=ResearchProject(id="STUDY-B", scope="STUDY-B"), profile=VIEW.profile), ("de-identify",), "",
     False),
    (None, (), "unreadable", False),
])
def test_which_match_decisions_show_a_match(view: DeidView | None, obligations: tuple[str, ...], problem: str,
                                            acceptable: bool) -> None:
    assert (match_acceptable(view, obligations, problem, VIEW) is None) is acceptable
    if "filter-results" in obligations:
        assert match_acceptable(view, obligations, problem, VIEW) == (
            Reason.PATIENT_NOT_DECIDED, "the policy did not permit this patient alone")


def match() -> bytes:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientID, ds.PatientName, ds.PatientBirthDate = "PAT-1", "DOE^JANE", "19700101"
    ds.StudyInstanceUID, ds.StudyDate, ds.AccessionNumber = REAL_STUDY, "20260101", "ACC1"
    return encode_data_set(ds, EXPLICIT)


def test_a_match_shown_and_its_disclosure_name_only_its_own_pseudonyms() -> None:
    data = match()
    wanted = match_needs(data, EXPLICIT, VIEW)
    batch = asyncio.run(FakeService().pseudonyms("STUDY-A", wanted | Needs(uids=frozenset({"9.9.9"}))))
    review = ResearchFind(facts=None, view=VIEW, pinned=None, strip_patient_id=True)  # type: ignore[arg-type]
    shown, disclosure = deidentified_match(data, EXPLICIT, review, batch, wanted)
    for secret in (b"PAT-1", b"DOE", b"JANE", REAL_STUDY.encode(), b"ACC1", b"20260101"):
        assert secret not in shown
    seen = decode_data_set(shown, EXPLICIT)
    assert "PatientID" not in seen and seen.StudyDate == "20251222"  # stripped as asked; shifted 10 days
    assert disclosure == Disclosure(project="STUDY-A", profile=VIEW.profile_name,
                                    pseudonyms=("SA-1-TAP", batch.uids[REAL_STUDY]))


def test_the_disclosure_is_in_the_record_and_in_the_audit_message() -> None:
    event = AuthorizationEvent(
        association="a1", action=Action.C_FIND, decision=Decision.PERMIT, reason=Reason.PDP, post_filter=True,
        user=Who(kind="user", sub="u-9", username="researcher", roles=("researcher",)),
        resource={"patient_id": "PAT-1", "study_instance_uid": REAL_STUDY},
        disclosure=Disclosure(project="STUDY-A", profile="basic+clean-descriptors", pseudonyms=("SA-1", "2.25.7")))
    record = event.record()
    assert record["de_identified"] is True and record["pseudonyms"] == ["SA-1", "2.25.7"]
    assert from_record(record) == event
    message = ET.fromstring(audit_message(event, "GW1", time="2026-12-01T00:00:00Z"))
    objects = message.findall("ParticipantObjectIdentification")
    assert [o.get("ParticipantObjectID") for o in objects] == ["PAT-1", REAL_STUDY, "SA-1"]
    pseudonymous = objects[-1]
    assert pseudonymous.get("ParticipantObjectDataLifeCycle") == "7"  # RFC 3881 5.5.3: de-identification
    details = {d.get("type"): base64.b64decode(d.get("value", "")).decode()
               for d in pseudonymous.findall("ParticipantObjectDetail")}
    assert details == {"ResearchProject": "STUDY-A", "DeidentificationProfile": "basic+clean-descriptors"}


# ---- one association's research matches, with fakes for the PDP, the service and the log ---------------

class FakePdp:
    def __init__(self, decision: Decision_) -> None:
        self.decision = decision

    def cached(self, request: object) -> None:
        return None

    async def evaluate(self, requests: list[object]) -> list[Decision_]:
        return [self.decision for _ in requests]


class Written:
    def __init__(self) -> None:
        self.events: list[object] = []
        self.problem = None

    def write(self, event: object) -> None:
        self.events.append(event)


def response(status: int, data: bytes, review: ResearchFind, comment: str | None = None) -> ResponseQuestion:
    request = decode_command(encode_command({0x00000002: "1.2.840.10008.5.1.4.1.2.2.1", 0x00000100: 0x0020,
                                             0x00000110: 7, 0x00000700: 0, 0x00000800: 0x0000}))
    values: dict[int, int | str] = {0x00000002: "1.2.840.10008.5.1.4.1.2.2.1", 0x00000100: 0x8020, 0x00000120: 7,
                                    0x00000800: 0x0000 if data else 0x0101, 0x00000900: status}
    if comment is not None:
        values[0x00000902] = comment
    command = decode_command(encode_command(values))
    return ResponseQuestion(side=Side.SERVER, context_id=1, abstract_syntax="1.2.840.10008.5.1.4.1.2.2.1",
                            transfer_syntax=EXPLICIT, command=command, data_set=data, data_set_complete=True,
                            request=request, review=review, final=not data)


@pytest.mark.parametrize("service_up", [True, False])
def test_the_final_response_says_when_matches_were_withheld(service_up: bool) -> None:
    permit = Decision_(allowed=True, reason="permit_deidentified", obligations=("de-identify",), deid=VIEW)
    written = Written()
    subject = Subject(kind="user", id="u-9", username="researcher", roles=("researcher",))
    context = Context(calling_ae="FINDSCU@WS1", called_ae="ORTHANC@GW1", workstation="WS1", certificate=[], peer="")

    async def run() -> list[object]:
        finds = ResearchFinds(Recorder(written, "a1"), Batcher(FakePdp(permit)),  # type: ignore[arg-type]
                              FakeService(fail=not service_up))
        review = ResearchFind(facts=None, view=VIEW, pinned=None, strip_patient_id=False)  # type: ignore[arg-type]
        pending = [finds.match(response(0xFF00, match(), review), review, subject, context) for _ in range(2)]
        final = finds.final(response(0x0000, b"", review), review)  # asked before the matches are decided
        return list(await asyncio.gather(*pending, final))

    *shown, final = asyncio.run(run())
    if service_up:
        assert all(isinstance(v, Rewrite) and b"PAT-1" not in (v.data_set or b"") for v in shown)
        assert isinstance(final, Permit)
        disclosed = [e for e in written.events if isinstance(e, AuthorizationEvent) and e.disclosure]
        assert len(disclosed) == 2 and disclosed[0].resource["patient_id"] == "PAT-1"
    else:
        assert all(isinstance(v, Drop) for v in shown)
        assert isinstance(final, Rewrite) and final.command is not None
        told = decode_command(final.command)
        assert told.status == 0xC000 and told.message_id_responded_to == 7
        assert told.error_comment == "research view: 2 match(es) withheld: pseudonymisation service"  # LO: 64
        reasons = [e.reason for e in written.events if isinstance(e, AuthorizationEvent)]
        assert reasons == [Reason.PSEUDONYMIZER_UNAVAILABLE] * 2


@pytest.mark.parametrize("status", [0x0000, 0xC000, 0xA700])
def test_the_pacss_words_never_reach_a_researcher(status: int) -> None:
    """The final response of a research C-FIND loses the PACS's Error Comment: free text that may echo the
    real keys the request was translated to (attacker review of issue 16, F9); status and ids stand."""
    finds = ResearchFinds(Recorder(Written(), "a1"), Batcher(FakePdp(Decision_(allowed=True, reason="permit"))),  # type: ignore[arg-type]
                          FakeService(fail=False))
    review = ResearchFind(facts=None, view=VIEW, pinned=None, strip_patient_id=False)  # type: ignore[arg-type]
    final = asyncio.run(finds.final(response(status, b"", review, comment="no match for PatientID=PAT-RES-1"), review))
    assert isinstance(final, Rewrite) and final.command is not None and final.data_set is None
    told = decode_command(final.command)
    assert told.error_comment is None and told.status == status and told.message_id_responded_to == 7
    assert isinstance(asyncio.run(finds.final(response(status, b"", review), review)), Permit)  # nothing to remove
