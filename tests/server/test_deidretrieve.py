"""The research view of a C-GET and a C-MOVE at the policy (issue 16 item 3): what the server agent
decides for a researcher's retrieval, each of its sub-operations and the responses that echo UIDs,
with a fake PDP answering ``de-identify`` and a stand-in pseudonymisation service."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

import pytest

from audit.dicom_audit import audit_message
from audit.events import Reason
from deid import Needs, Option, PixelPolicy, Profile, Pseudonyms, needs
from devtools.dicomdata import decode_data_set, encode_data_set, identified_header
from dicomwire.association import Side
from dicomwire.dataset import read_data_set
from dicomwire.dimse import Tag, decode_command, encode_command
from dicomwire.pixelend import PixelEnd
from dicomwire.policy import ConnectionInfo
from dicomwire.questions import Extend, Permit, Refuse, RequestQuestion, ResponseQuestion, Rewrite
from pseudonymizer.client import Originals
from server_agent.association import Retrieval, ServerPolicy
from server_agent.authn import Subject
from server_agent.deidretrieve import NotTranslatable, StoreReview, translate
from server_agent.deidview import DeidView, ResearchProject
from server_agent.moves import Move, MoveRegistry
from server_agent.pdp import Decision
from server_agent.pseudonyms import PseudonymsUnavailable
from server_agent.resources import Context
from server_agent.returns import ReturnPolicy
from tests.deid.support import IDENTIFYING, answer, leaks

IMPLICIT, EXPLICIT = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1"
GET = "1.2.840.10008.5.1.4.1.2.2.3"  # Study Root Query/Retrieve Information Model - GET
CT = "1.2.840.10008.5.1.4.1.1.2"
STUDY = "1.2.826.0.1.3680043.10.1447.77.1"
VIEW = DeidView(project=ResearchProject(id="STUDY-A", scope="STUDY-A"),
                profile=Profile(options=frozenset({Option.RETAIN_LONGITUDINAL_MODIFIED_DATES})))


class Source:
    """The pseudonymisation service's stand-in: pseudonyms as tests/deid/support makes them, and the
    way back for those it handed out; every call remembered."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.handed: dict[str, str] = {}
        self.down = False

    async def pseudonyms(self, project: str, wanted: Needs) -> Pseudonyms:
        self.calls.append(("pseudonyms", wanted))
        if self.down:
            raise PseudonymsUnavailable("pseudonymisation service: no answer in time")
        got = answer(wanted, project)
        self.handed.update({new: real for real, new in got.uids.items()})
        self.handed.update({p.patient_id: real for real, p in got.patients.items()})
        return got

    async def originals(self, project: str, *, patient_ids: Iterable[str] = (), uids: Iterable[str] = ()) -> Originals:
        self.calls.append(("originals", (tuple(patient_ids), tuple(uids))))
        return Originals(patient_ids={p: self.handed[p] for p in patient_ids if p in self.handed},
                         uids={u: self.handed[u] for u in uids if u in self.handed})

    def shown(self, real: str) -> str:
        return answer(Needs(uids=frozenset({real})), "STUDY-A").uids[real]


class Pdp:
    def __init__(self, deid: DeidView | None) -> None:
        self.deid = deid
        self.asked: list[dict[str, Any]] = []

    def cached(self, request: dict[str, Any]) -> Decision | None:
        self.asked.append(request)
        return Decision(allowed=True, reason="research", obligations=("de-identify",) if self.deid else (),
                        deid=self.deid)


class Log:
    problem = None

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.events: list[Any] = []

    def write(self, event: Any) -> None:
        self.records.append(event.record())
        self.events.append(event)


def resolve(verdict: Any) -> Any:
    return asyncio.run(_await(verdict)) if inspect.isawaitable(verdict) else verdict


async def _await(verdict: Any) -> Any:
    return await verdict


def association(deid: DeidView | None = VIEW, source: Source | None = None) -> tuple[Any, Log, Source, Pdp]:
    log, source, pdp = Log(), source or Source(), Pdp(deid)
    config = SimpleNamespace(refuse_unlogged=False, nodes={}, workstations={"WS1": object()},
                             identity=SimpleNamespace(introspect=False), move_timeout=60.0)
    factory = ServerPolicy(config, SimpleNamespace(), pdp, MoveRegistry(), log,  # type: ignore[arg-type]
                           pseudonyms=source)
    owner = factory.open(ConnectionInfo(association_id="7", peer=("127.0.0.1", 4000), local=None))
    owner.subject = Subject(kind="user", id="u-res", username="researcher", roles=("researcher",),
                            scopes=frozenset({"user/ImagingStudy.rs"}))
    owner.context = Context(calling_ae="GETSCU@WS1", called_ae="ORTHANC", workstation="WS1", certificate=[],
                            peer="127.0.0.1:4000")
    return owner, log, source, pdp


def element(tag: int, value: bytes, pad: bytes) -> bytes:
    value += pad * (len(value) % 2)
    return tag.to_bytes(4, "little")[2:] + tag.to_bytes(4, "little")[:2] + len(value).to_bytes(4, "little") + value


def identifier(level: str = "STUDY", **keys: str) -> bytes:
    tags = {"sop": 0x00080018, "patient": 0x00100020, "study": 0x0020000D, "series": 0x0020000E,
            "accession": 0x00080050}
    parts = [(0x00080052, level.encode(), b" ")] + [(tags[k], v.encode(), b"\0" if k != "patient" and
                                                     k != "accession" else b" ") for k, v in keys.items()]
    return b"".join(element(tag, value, pad) for tag, value, pad in sorted(parts))


def get_rq(data: bytes) -> RequestQuestion:
    command = decode_command(encode_command({Tag.COMMAND_FIELD: 0x0010, Tag.MESSAGE_ID: 3, Tag.PRIORITY: 0,
                                             Tag.AFFECTED_SOP_CLASS_UID: GET, Tag.COMMAND_DATA_SET_TYPE: 1}))
    return RequestQuestion(side=Side.CLIENT, context_id=1, abstract_syntax=GET, transfer_syntax=IMPLICIT,
                           command=command, data_set=data, data_set_complete=True)


def store_rq(data: bytes, sop: str, *, complete: bool = False, retrievals: tuple[Any, ...] = (),
             ts: str = EXPLICIT, sop_class: str = CT) -> RequestQuestion:
    command = decode_command(encode_command({Tag.COMMAND_FIELD: 0x0001, Tag.MESSAGE_ID: 11, Tag.PRIORITY: 0,
                                             Tag.AFFECTED_SOP_CLASS_UID: sop_class, Tag.AFFECTED_SOP_INSTANCE_UID: sop,
                                             Tag.COMMAND_DATA_SET_TYPE: 1}))
    return RequestQuestion(side=Side.SERVER, context_id=3, abstract_syntax=CT, transfer_syntax=ts, command=command,
                           data_set=data, data_set_complete=complete, retrievals=retrievals)


def researcher_get(owner: Any, source: Source) -> Retrieval:
    """A de-identified C-FIND showed the study's pseudonym; the researcher retrieves by it."""
    asyncio.run(source.pseudonyms("STUDY-A", Needs(uids=frozenset({STUDY}))))
    verdict = resolve(owner.request(get_rq(identifier(study=source.shown(STUDY)))))
    assert isinstance(verdict, Rewrite) and isinstance(verdict.review, Retrieval)
    return verdict.review


# ---- the request ---------------------------------------------------------------------------------------------
def test_the_pacs_gets_the_real_study_and_nothing_else() -> None:
    owner, _, source, _ = association()
    asyncio.run(source.pseudonyms("STUDY-A", Needs(uids=frozenset({STUDY}))))
    verdict = resolve(owner.request(get_rq(identifier(study=source.shown(STUDY), patient=""))))
    assert isinstance(verdict, Rewrite)
    assert verdict.data_set == identifier(study=STUDY)  # the level and the real key: one reading
    assert verdict.review.facts.resource == {"level": "STUDY", "study_instance_uid": STUDY}
    assert verdict.review.deid.view == VIEW
    assert source.calls[-1] == ("originals", ((), (source.shown(STUDY),)))


@pytest.mark.parametrize(("keys", "reason"), [
    ({"study": STUDY}, Reason.IDENTIFYING_KEY),  # the real UID: no pseudonym of the project
    ({"study": "2.25.1"}, Reason.IDENTIFYING_KEY),  # a pseudonym nobody handed out
    ({"study": "SHOWN", "accession": "ACC-99812"}, Reason.NOT_DEIDENTIFIABLE),  # a key we do not translate
    ({"patient": "P*"}, Reason.NOT_DEIDENTIFIABLE),  # a pattern where the unique key must be
], ids=["real uid", "unknown pseudonym", "accession number", "wildcard"])
def test_a_researcher_retrieval_that_cannot_be_translated_is_refused(keys: dict[str, str], reason: Reason) -> None:
    owner, log, source, _ = association()
    asyncio.run(source.pseudonyms("STUDY-A", Needs(uids=frozenset({STUDY}))))
    keys = {k: source.shown(STUDY) if v == "SHOWN" else v for k, v in keys.items()}
    level = "PATIENT" if "patient" in keys else "STUDY"
    verdict = resolve(owner.request(get_rq(identifier(level, **keys))))
    assert isinstance(verdict, Refuse) and verdict.status == 0x0124
    assert log.records[-1]["decision"] == "deny" and log.records[-1]["reason"] == reason.value
    assert not owner.retrievals


def test_a_uid_list_is_translated_value_by_value() -> None:
    shown = {"1.2.3.1": "2.25.11", "1.2.3.2": "2.25.12"}
    out = translate(identifier("SERIES", study="2.25.10", series="2.25.11\\2.25.12"), IMPLICIT, {},
                    {"2.25.10": "1.2.3", **{v: k for k, v in shown.items()}})
    assert out.identifier == identifier("SERIES", study="1.2.3", series="1.2.3.1\\1.2.3.2")
    with pytest.raises(NotTranslatable):
        translate(identifier("SERIES", study="2.25.10"), IMPLICIT, {}, {"2.25.10": "1.2.3"})  # no series key


def test_a_clinicians_retrieval_passes_as_it_came() -> None:
    owner, _, source, _ = association(deid=None)
    verdict = resolve(owner.request(get_rq(identifier(study=STUDY))))
    assert isinstance(verdict, Permit) and verdict.review.deid is None
    assert source.calls == []


# ---- the sub-operations -----------------------------------------------------------------------------------
def ct(instance: int = 1, **kw: Any) -> tuple[bytes, int, str]:
    data = encode_data_set(identified_header(instance=instance, **kw), EXPLICIT)
    end = data.index(b"\xe0\x7f\x10\x00")
    return data, end, f"{STUDY}.1.{instance}"


def test_a_sub_operation_is_held_until_its_header_is_whole_then_rewritten() -> None:
    owner, log, source, _ = association()
    retrieval = researcher_get(owner, source)
    data, end, sop = ct()
    short = resolve(owner.request(store_rq(data[:end - 40], sop, retrievals=(retrieval,))))
    assert isinstance(short, Extend) and short.length > end - 40
    before = len(log.records)
    verdict = resolve(owner.request(store_rq(data[:end + 8], sop, retrievals=(retrieval,))))
    assert isinstance(verdict, Rewrite) and verdict.keep_from == end
    new = verdict.data_set + data[end:]  # what the researcher's app receives: the new header, the pixels as sent
    shown = decode_data_set(new, EXPLICIT)
    assert shown.PatientIdentityRemoved == "YES" and shown.PixelData == identified_header().PixelData
    assert [item.CodeValue for item in shown.DeidentificationMethodCodeSequence] == ["113100", "113107"]
    assert leaks(identified_header(), new, shown) == []
    command = decode_command(verdict.command)
    assert command.affected_sop_instance_uid == shown.SOPInstanceUID == source.shown(sop)
    assert command.affected_sop_class_uid == CT and command.message_id == 11
    assert isinstance(verdict.review, StoreReview) and verdict.review.real == sop
    record = log.records[before]
    assert len(log.records) == before + 1 and record["decision"] == "permit"
    assert record["de_identified"] is True and record["project"] == "STUDY-A"
    assert record["resource"]["patient_id"] == "PAT-4711" and record["sub_operation_of"] == "C-GET"
    assert record["pseudonyms"] == [shown.PatientID, shown.StudyInstanceUID, shown.SeriesInstanceUID,
                                    shown.SOPInstanceUID]
    assert retrieval.sub_operations == 1
    # The audit stream says the same (PS3.15 A.5.3.4 DICOM Instances Transferred): the pseudonymous patient,
    # its life cycle "de-identification" (7), beside the real one the record's resource names.
    message = audit_message(log.events[before], "GW1", time="2026-12-01T00:00:00Z").decode()
    assert 'csd-code="110104"' in message and f'ParticipantObjectID="{shown.PatientID}"' in message
    assert 'ParticipantObjectDataLifeCycle="7"' in message and 'ParticipantObjectID="PAT-4711"' in message


def test_pseudonyms_are_asked_once_per_retrieval() -> None:
    owner, _, source, _ = association()
    retrieval = researcher_get(owner, source)
    for instance in (1, 2, 3):
        data, end, sop = ct(instance)
        assert isinstance(resolve(owner.request(store_rq(data[:end + 8], sop, retrievals=(retrieval,)))), Rewrite)
    asked = [wanted for kind, wanted in source.calls if kind == "pseudonyms"][1:]  # after the C-FIND's
    assert len(asked) == 3 and asked[0].patient_ids == {"PAT-4711"}
    assert STUDY not in asked[0].uids  # known from the translation
    assert [set(w.uids) for w in asked[1:]] == [{f"{STUDY}.1.2"}, {f"{STUDY}.1.3"}]  # only the new instance


@pytest.mark.parametrize("kind", ["US", "SC"])
def test_pixels_that_may_identify_are_refused_before_anyone_is_asked(kind: str) -> None:
    owner, log, source, pdp = association()
    retrieval = researcher_get(owner, source)
    header = identified_header(kind)
    data = encode_data_set(header, EXPLICIT)
    calls, asked = len(source.calls), len(pdp.asked)
    verdict = resolve(owner.request(store_rq(data, f"{STUDY}.1.1", complete=True, retrievals=(retrieval,),
                                             sop_class=header.SOPClassUID)))
    assert isinstance(verdict, Refuse) and verdict.status == 0x0124
    assert log.records[-1]["reason"] == Reason.NOT_DEIDENTIFIABLE.value
    assert "Burned In Annotation is absent" in log.records[-1]["detail"]
    assert len(source.calls) == calls and len(pdp.asked) == asked and retrieval.deid.refused == 1


def test_a_project_that_allows_burned_in_pixels_gets_them_de_identified() -> None:
    allowing = DeidView(project=VIEW.project, profile=VIEW.profile, pixels=PixelPolicy(allow=True))
    owner, _, source, _ = association(allowing)
    retrieval = researcher_get(owner, source)
    header = identified_header("US")
    verdict = resolve(owner.request(store_rq(encode_data_set(header, EXPLICIT), f"{STUDY}.1.1", complete=True,
                                             retrievals=(retrieval,), sop_class=header.SOPClassUID)))
    assert isinstance(verdict, Rewrite)


def test_no_pseudonyms_no_image() -> None:
    owner, log, source, _ = association()
    retrieval = researcher_get(owner, source)
    source.down = True
    data, end, sop = ct()
    verdict = resolve(owner.request(store_rq(data[:end + 8], sop, retrievals=(retrieval,))))
    assert isinstance(verdict, Refuse)
    assert log.records[-1]["reason"] == Reason.PSEUDONYMIZER_UNAVAILABLE.value
    assert retrieval.sub_operations == 0


def test_a_research_view_on_an_identified_retrieval_is_refused() -> None:
    owner, log, _, pdp = association(deid=None)
    retrieval = resolve(owner.request(get_rq(identifier(study=STUDY)))).review
    pdp.deid = VIEW  # the PDP now says de-identify, for an image of a retrieval decided identified
    data, end, sop = ct()
    assert isinstance(resolve(owner.request(store_rq(data[:end + 8], sop, retrievals=(retrieval,)))), Refuse)
    assert log.records[-1]["reason"] == Reason.OBLIGATION_NOT_UNDERSTOOD.value


def test_an_image_of_a_clinicians_retrieval_passes_unchanged() -> None:
    owner, _, source, _ = association(deid=None)
    retrieval = resolve(owner.request(get_rq(identifier(study=STUDY)))).review
    data, end, sop = ct()
    verdict = resolve(owner.request(store_rq(data[:end + 8], sop, retrievals=(retrieval,))))
    assert isinstance(verdict, Permit) and verdict.review is None and source.calls == []


# ---- responses --------------------------------------------------------------------------------------------
def response(fields: dict[int, Any], review: Any, data: bytes = b"", side: Side = Side.CLIENT,
             final: bool = True) -> ResponseQuestion:
    command = decode_command(encode_command(fields))
    request = decode_command(encode_command({Tag.COMMAND_FIELD: 0x0010, Tag.MESSAGE_ID: 3,
                                             Tag.AFFECTED_SOP_CLASS_UID: GET, Tag.COMMAND_DATA_SET_TYPE: 1}))
    return ResponseQuestion(side=side, context_id=1, abstract_syntax=GET, transfer_syntax=IMPLICIT, command=command,
                            data_set=data, data_set_complete=True, request=request, review=review, final=final)


def test_the_pacs_hears_back_about_its_own_instance() -> None:
    owner, *_ = association()
    rsp = {Tag.COMMAND_FIELD: 0x8001, Tag.MESSAGE_ID_BEING_RESPONDED_TO: 11, Tag.AFFECTED_SOP_CLASS_UID: CT,
           Tag.AFFECTED_SOP_INSTANCE_UID: "2.25.99", Tag.COMMAND_DATA_SET_TYPE: 0x0101, Tag.STATUS: 0}
    verdict = owner.response(response(rsp, StoreReview(real=f"{STUDY}.1.1", shown="2.25.99")))
    assert isinstance(verdict, Rewrite) and verdict.data_set is None
    assert decode_command(verdict.command).affected_sop_instance_uid == f"{STUDY}.1.1"


def test_the_final_response_shows_failed_instances_as_pseudonyms_and_no_comment() -> None:
    owner, _, source, _ = association()
    retrieval = researcher_get(owner, source)
    failed = f"{STUDY}.1.1\\{STUDY}.1.2"
    rsp = {Tag.COMMAND_FIELD: 0x8010, Tag.MESSAGE_ID_BEING_RESPONDED_TO: 3, Tag.AFFECTED_SOP_CLASS_UID: GET,
           Tag.COMMAND_DATA_SET_TYPE: 1, Tag.STATUS: 0xB000, Tag.ERROR_COMMENT: "PAT-4711 DOE^JANE failed",
           Tag.NUMBER_OF_COMPLETED_SUBOPERATIONS: 1, Tag.NUMBER_OF_FAILED_SUBOPERATIONS: 2,
           Tag.NUMBER_OF_WARNING_SUBOPERATIONS: 0}
    data = element(0x00080058, failed.encode(), b"\0") + element(0x00100020, b"PAT-4711", b" ")
    verdict = resolve(owner.response(response(rsp, retrieval, data, side=Side.SERVER)))
    assert isinstance(verdict, Rewrite)
    command = decode_command(verdict.command)
    assert command.error_comment is None and command.get(Tag.NUMBER_OF_FAILED_SUBOPERATIONS) == 2
    read = read_data_set(verdict.data_set, IMPLICIT)
    assert [e.tag for e in read.elements] == [0x00080058]
    assert read.value(read.elements[0]).rstrip(b"\0").decode().split("\\") == [
        source.shown(f"{STUDY}.1.1"), source.shown(f"{STUDY}.1.2")]
    assert not any(value.encode() in verdict.data_set + verdict.command for value in IDENTIFYING)


def test_a_move_in_a_research_view_carries_its_view_to_the_return_path() -> None:
    owner, _, source, _ = association()
    owner.context = Context(calling_ae="MOVESCU@WS1", called_ae="ORTHANC", workstation="WS1", certificate=[],
                            peer="127.0.0.1:4000")
    asyncio.run(source.pseudonyms("STUDY-A", Needs(uids=frozenset({STUDY}))))
    command = decode_command(encode_command({Tag.COMMAND_FIELD: 0x0021, Tag.MESSAGE_ID: 5, Tag.PRIORITY: 0,
                                             Tag.AFFECTED_SOP_CLASS_UID: "1.2.840.10008.5.1.4.1.2.2.2",
                                             Tag.MOVE_DESTINATION: "MOVESCP@WS1", Tag.COMMAND_DATA_SET_TYPE: 1}))
    question = RequestQuestion(side=Side.CLIENT, context_id=1, abstract_syntax="1.2.840.10008.5.1.4.1.2.2.2",
                               transfer_syntax=IMPLICIT, command=command,
                               data_set=identifier(study=source.shown(STUDY)), data_set_complete=True)
    verdict = resolve(owner.request(question))
    assert isinstance(verdict, Rewrite) and isinstance(verdict.review, Move)
    move = verdict.review
    assert move.deid is not None and move.record("test").covers({"study_instance_uid": STUDY})  # the real UID
    matched = asyncio.run(owner.factory.moves.match("MOVESCP@WS1", "MOVESCU@WS1", 5, {"study_instance_uid": STUDY}))
    assert matched[0] is move


# ---- pseudonyms asked ahead (deidprefetch) ---------------------------------------------------------------
def test_pseudonyms_asked_ahead_serve_every_image_without_a_call() -> None:
    owner, _, source, _ = association()
    retrieval = researcher_get(owner, source)
    assert retrieval.deid is not None
    images = [ct(n) for n in (1, 2, 3)]
    ahead = Needs()
    for data, end, _ in images:
        ahead = ahead | needs(data[:end], EXPLICIT, VIEW.profile)
    asyncio.run(retrieval.deid.prefetch(lambda: ahead, 1.0))
    calls = len(source.calls)
    assert source.calls[-1] == ("pseudonyms", Needs(patient_ids=ahead.patient_ids, uids=ahead.uids - {STUDY}))
    for data, end, sop in images:
        verdict = owner.request(store_rq(data[:end + 8], sop, retrievals=(retrieval,)))  # at once: no await
        assert isinstance(verdict, Rewrite) and decode_command(verdict.command).affected_sop_instance_uid == \
            source.shown(sop)
    assert len(source.calls) == calls  # one call for the whole retrieval


@pytest.mark.parametrize("failure", [OSError("connection refused"), TimeoutError()])
def test_a_pacs_that_cannot_say_leaves_each_image_to_ask(failure: Exception, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "server_agent.deid")
    owner, _, source, _ = association()
    retrieval = researcher_get(owner, source)
    assert retrieval.deid is not None

    def find() -> Needs:
        raise failure
    asyncio.run(retrieval.deid.prefetch(find, 1.0))
    assert "asked per instance" in caplog.text
    data, end, sop = ct()
    assert isinstance(resolve(owner.request(store_rq(data[:end + 8], sop, retrievals=(retrieval,)))), Rewrite)


def test_a_researchers_move_is_de_identified_on_the_return_path() -> None:
    owner, log, source, _ = association()
    owner.context = Context(calling_ae="MOVESCU@WS1", called_ae="ORTHANC", workstation="WS1", certificate=[],
                            peer="127.0.0.1:4000")
    asyncio.run(source.pseudonyms("STUDY-A", Needs(uids=frozenset({STUDY}))))
    command = decode_command(encode_command({Tag.COMMAND_FIELD: 0x0021, Tag.MESSAGE_ID: 5, Tag.PRIORITY: 0,
                                             Tag.AFFECTED_SOP_CLASS_UID: "1.2.840.10008.5.1.4.1.2.2.2",
                                             Tag.MOVE_DESTINATION: "MOVESCP@WS1", Tag.COMMAND_DATA_SET_TYPE: 1}))
    move_rq = RequestQuestion(side=Side.CLIENT, context_id=1, abstract_syntax="1.2.840.10008.5.1.4.1.2.2.2",
                              transfer_syntax=IMPLICIT, command=command,
                              data_set=identifier(study=source.shown(STUDY)), data_set_complete=True)
    assert isinstance(resolve(owner.request(move_rq)), Rewrite)
    policy = ReturnPolicy(SimpleNamespace(pacs={}, workstations={}), owner.factory.moves, log, None,  # type: ignore[arg-type]
                          pacs_hosts={"127.0.0.1"})
    back = policy.open(ConnectionInfo(association_id="9", peer=("127.0.0.1", 4242), local=None))
    back.destination = "MOVESCP@WS1"
    data, end, sop = ct()
    store = decode_command(encode_command({Tag.COMMAND_FIELD: 0x0001, Tag.MESSAGE_ID: 1, Tag.PRIORITY: 0,
                                           Tag.AFFECTED_SOP_CLASS_UID: CT, Tag.AFFECTED_SOP_INSTANCE_UID: sop,
                                           Tag.MOVE_ORIGINATOR_AE_TITLE: "MOVESCU@WS1",
                                           Tag.MOVE_ORIGINATOR_MESSAGE_ID: 5, Tag.COMMAND_DATA_SET_TYPE: 1}))
    from_pacs = RequestQuestion(side=Side.CLIENT, context_id=1, abstract_syntax=CT, transfer_syntax=EXPLICIT,
                                command=store, data_set=data[:end + 8], data_set_complete=False)
    verdict = resolve(back.request(from_pacs))
    assert isinstance(verdict, Rewrite) and verdict.keep_from == end
    shown = decode_data_set(verdict.data_set, EXPLICIT)
    assert shown.PatientIdentityRemoved == "YES" and shown.SOPInstanceUID == source.shown(sop)
    assert log.records[-1]["de_identified"] is True and log.records[-1]["sub_operation_of"] == "C-MOVE"
    rsp = {Tag.COMMAND_FIELD: 0x8001, Tag.MESSAGE_ID_BEING_RESPONDED_TO: 1, Tag.AFFECTED_SOP_CLASS_UID: CT,
           Tag.AFFECTED_SOP_INSTANCE_UID: source.shown(sop), Tag.COMMAND_DATA_SET_TYPE: 0x0101, Tag.STATUS: 0}
    answered = back.response(response(rsp, verdict.review, side=Side.SERVER))
    assert isinstance(answered, Rewrite) and decode_command(answered.command).affected_sop_instance_uid == sop
    pending = {Tag.COMMAND_FIELD: 0x8021, Tag.MESSAGE_ID_BEING_RESPONDED_TO: 5, Tag.STATUS: 0xFF00,
               Tag.AFFECTED_SOP_CLASS_UID: "1.2.840.10008.5.1.4.1.2.2.2", Tag.COMMAND_DATA_SET_TYPE: 0x0101,
               Tag.ERROR_COMMENT: f"sending {sop}", Tag.NUMBER_OF_REMAINING_SUBOPERATIONS: 2,
               Tag.NUMBER_OF_COMPLETED_SUBOPERATIONS: 1, Tag.NUMBER_OF_FAILED_SUBOPERATIONS: 0,
               Tag.NUMBER_OF_WARNING_SUBOPERATIONS: 0}
    move = resolve(owner.request(move_rq)).review  # a second move, for its responses
    seen = resolve(owner.response(response(pending, move, side=Side.SERVER, final=False)))
    assert isinstance(seen, Rewrite) and decode_command(seen.command).error_comment is None
    assert move.announced == 3  # the counts still tell the return path how many images come


def test_what_follows_the_pixels_of_a_data_set_held_whole_is_left_out() -> None:
    owner, _, source, _ = association()
    retrieval = researcher_get(owner, source)
    ds = identified_header()
    ds.add_new(0x7FE10010, "LO", "ACME CINE")
    ds.add_new(0x7FE11001, "LO", "DOE^JANE")  # a private group after the pixels, naming the patient
    data = encode_data_set(ds, EXPLICIT)
    verdict = resolve(owner.request(store_rq(data, f"{STUDY}.1.1", complete=True, retrievals=(retrieval,))))
    # The header replaced, the rest cut after the Pixel Data (the relay's part: dicomwire.pixelend).
    assert isinstance(verdict, Rewrite) and verdict.cut_after_pixel_data and verdict.keep_from is not None
    assert verdict.data_set is not None
    sent = verdict.data_set + b"".join(PixelEnd(EXPLICIT).feed(data[verdict.keep_from:]))
    assert b"DOE" not in sent and b"ACME CINE" not in sent
    shown = decode_data_set(sent, EXPLICIT)
    assert shown.PixelData == ds.PixelData and shown.PatientIdentityRemoved == "YES"


def test_a_retrieval_past_its_memory_bound_still_answers_what_it_is_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_REMEMBERED the retrieval forgets what it remembered, but not before its answer is made of it:
    the image that passes the bound is de-identified, not refused by a lookup of what was just forgotten
    (attacker review of issue 16, F8: a KeyError, an image refused and never written to the log)."""
    from server_agent import deidretrieve

    class Service:
        async def pseudonyms(self, project: str, wanted: Needs) -> Pseudonyms:
            return answer(wanted)

    monkeypatch.setattr(deidretrieve, "MAX_REMEMBERED", 3)
    retrieval = deidretrieve.DeidRetrieval(view=VIEW, source=Service())  # type: ignore[arg-type]

    async def run() -> Pseudonyms:
        await retrieval.pseudonyms(Needs(patient_ids=frozenset({"P"}), uids=frozenset({"1.2.3"})))
        more = Needs(patient_ids=frozenset({"P"}), uids=frozenset({"1.2.3", "1.2.4", "1.2.5"}))
        return await retrieval.pseudonyms(more)

    shown = asyncio.run(run())
    assert set(shown.uids) == {"1.2.3", "1.2.4", "1.2.5"} and set(shown.patients) == {"P"}
    assert "1.2.3" not in shown.uids.values()
