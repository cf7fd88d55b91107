"""A research retrieval's final response with a long Failed SOP Instance UID List (0008,0058), through the
relay core: the researcher gets the response, the PACS's counts, and as many pseudonymous UIDs as fit in the
element (PS3.5 7.1.2: a UI value's length is 16 bits in explicit VR), never a real UID (issue 16).

Pseudonyms (2.25.<39 digits>) are longer than most real UIDs: a list the PACS fitted into its 64 KiB
element did not fit as pseudonyms, the encoding failed, and the final response never reached the app.
The relay holds a C-GET-RSP's or C-MOVE-RSP's data set whole (the gate's ``_WHOLE_DATA_SET``), up to
``max_identifier_length`` (256 KiB, some 6,000 UIDs); a longer list is dropped, logged (the last test)."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

from dicomwire.association import Side
from dicomwire.dataset import EXPLICIT_VR_LE, IMPLICIT_VR_LE, encode_element, read_data_set
from dicomwire.dimse import decode_command
from dicomwire.limits import RelayLimits
from dicomwire.pdv import iter_pdvs
from dicomwire.questions import DimseQuestion, Permit, Question, Verdict
from dicomwire.relay import RelayCore
from server_agent.deidresponse import SHOWN_LIST
from server_agent.deidretrieve import FAILED_SOP_INSTANCES, DeidRetrieval, retrieve_response
from tests.server.test_deidretrieve import VIEW, Source
from tests.support.playbook import Playbook, transparent
from tests.support.wire import pynetdicom_ac, pynetdicom_rq
from tests.unit.test_relay_core import MOVE, _split_pdus, message

ROOT = "1.2.826.0.1.3680043.10.1447.77.1.1."  # real UIDs: 36-40 characters; their pseudonyms are 43-44


def researcher(retrieval: DeidRetrieval):  # type: ignore[no-untyped-def]
    def decide(question: Question) -> Verdict:
        if not isinstance(question, DimseQuestion):
            return transparent(question)
        if question.command.is_request:
            return Permit(review=retrieval)
        verdict = retrieve_response(question, retrieval)  # type: ignore[arg-type]
        return asyncio.run(_await(verdict)) if inspect.isawaitable(verdict) else verdict
    return decide


async def _await(verdict: Any) -> Any:
    return await verdict


HOLDS = RelayLimits()


def established(syntax: str, decide: Any, limits: RelayLimits = HOLDS) -> Playbook:
    book = Playbook(RelayCore(limits, asks=None), decide)
    book.client(pynetdicom_rq(contexts=[(5, MOVE, [syntax])]))
    book.server(pynetdicom_ac(contexts=(5,), abstract=MOVE, transfer_syntax=syntax))
    book.take(Side.SERVER), book.take(Side.CLIENT)
    return book


@pytest.mark.parametrize("syntax", [IMPLICIT_VR_LE, EXPLICIT_VR_LE], ids=["implicit", "explicit"])
@pytest.mark.parametrize("failed", [40, 1_480, 2_000], ids=["short", "64 KiB as pseudonyms", "64 KiB as sent"])
def test_a_long_failed_list_reaches_the_researcher_as_pseudonyms_that_fit(syntax: str, failed: int) -> None:
    source = Source()
    retrieval = DeidRetrieval(view=VIEW, source=source)
    book = established(syntax, researcher(retrieval))
    book.client(message("C_MOVE_RQ", b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY ", ctx=5, MessageID=3,
                        AffectedSOPClassUID=MOVE, Priority=0, MoveDestination="MOVESCP@WS1"))
    book.take(Side.SERVER)
    real = [f"{ROOT}{n}" for n in range(1, failed + 1)]
    value = "\\".join(real).encode()
    identifier = encode_element(syntax, FAILED_SOP_INSTANCES, "UI", value + b"\x00" * (len(value) & 1)) \
        if len(value) < 0xFFFF or syntax == IMPLICIT_VR_LE else None
    if identifier is None:  # the PACS itself cannot send that many in explicit VR: it sends what fits
        kept = value[:value.rindex(b"\\", 0, 0xFFF0)]
        real = kept.decode().split("\\")
        identifier = encode_element(syntax, FAILED_SOP_INSTANCES, "UI", kept + b"\x00" * (len(kept) & 1))
    book.server(message("C_MOVE_RSP", identifier, ctx=5, MessageIDBeingRespondedTo=3, AffectedSOPClassUID=MOVE,
                        Status=0xB000, NumberOfCompletedSuboperations=7, NumberOfFailedSuboperations=failed,
                        NumberOfWarningSuboperations=0, ErrorComment="DOE^JANE: 1 failed"))
    received = book.take(Side.CLIENT)
    pdvs = [p for pdu in _split_pdus(received) for p in iter_pdvs(pdu)]
    assert pdvs and pdvs[-1].is_last and not pdvs[-1].is_command, "the final response reaches the researcher"
    command = decode_command(b"".join(bytes(p.value) for p in pdvs if p.is_command))
    assert command.status == 0xB000 and command.error_comment is None
    assert command.get(0x00001022) == failed and command.get(0x00001021) == 7  # the PACS's counts, as sent
    data = b"".join(bytes(p.value) for p in pdvs if not p.is_command)
    read = read_data_set(data, syntax)
    (element,) = read.elements
    shown = read.value(element)
    assert element.tag == FAILED_SOP_INSTANCES and len(shown) % 2 == 0
    assert len(shown) <= SHOWN_LIST or syntax == IMPLICIT_VR_LE  # 32-bit lengths in implicit VR: all of it
    uids = shown.rstrip(b"\x00").decode().split("\\")
    assert b"\x00" not in shown.rstrip(b"\x00") and not any(uid.startswith(ROOT) for uid in uids)
    expected = [source.shown(uid) for uid in real]
    assert uids == expected[:len(uids)], "whole pseudonymous UIDs, in the PACS's order"
    assert len(uids) == len(expected) or len("\\".join(expected[:len(uids) + 1])) > SHOWN_LIST, "as many as fit"


def moved(book: Playbook, identifier: bytes) -> bytes:
    book.client(message("C_MOVE_RQ", b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY ", ctx=5, MessageID=3,
                        AffectedSOPClassUID=MOVE, Priority=0, MoveDestination="MOVESCP@WS1"))
    book.take(Side.SERVER)
    book.server(message("C_MOVE_RSP", identifier, ctx=5, MessageIDBeingRespondedTo=3, AffectedSOPClassUID=MOVE,
                        Status=0xB000, NumberOfCompletedSuboperations=0, NumberOfFailedSuboperations=500,
                        NumberOfWarningSuboperations=0))
    return book.take(Side.CLIENT)


def test_a_list_longer_than_the_relay_holds_is_dropped_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    """Longer than the relay holds (256 KiB; this list is 280 KB): neither the real UIDs nor a cut list
    leave; the response is dropped, logged."""
    retrieval = DeidRetrieval(view=VIEW, source=Source())
    value = "\\".join(f"{ROOT}{n}" for n in range(1, 7001)).encode()
    received = moved(established(IMPLICIT_VR_LE, researcher(retrieval), RelayLimits()),
                     encode_element(IMPLICIT_VR_LE, FAILED_SOP_INSTANCES, "UI", value + b"\x00" * (len(value) & 1)))
    assert ROOT.encode() not in received and received == b""
    assert "is dropped" in caplog.text
