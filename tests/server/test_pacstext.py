"""The PACS's Error Comments relayed under the code PACS (server_agent.pacstext), so that the wrapper
never words a PACS's text as the agent's refusal (issue 17's attacker review, low finding 1)."""

from __future__ import annotations

import asyncio
from typing import Any

from agent.messages import from_comment
from dicomwire.association import Side
from dicomwire.dimse import CommandSet, Tag, decode_command, encode_command
from dicomwire.questions import Drop, Permit, Refuse, RequestQuestion, ResponseQuestion, Rewrite
from server_agent.pacstext import HEARD, heard, relayed

FIND = "1.2.840.10008.5.1.4.1.2.2.1"
IMPLICIT = "1.2.840.10008.1.2"
REQUEST = decode_command(encode_command({Tag.COMMAND_FIELD: 0x0020, Tag.MESSAGE_ID: 7, Tag.PRIORITY: 0,
                                         Tag.AFFECTED_SOP_CLASS_UID: FIND, Tag.COMMAND_DATA_SET_TYPE: 0x0000}))


def response(status: int, comment: str | None, side: Side = Side.SERVER) -> ResponseQuestion:
    values: dict[int, Any] = {Tag.COMMAND_FIELD: 0x8020, Tag.MESSAGE_ID_BEING_RESPONDED_TO: 7,
                              Tag.AFFECTED_SOP_CLASS_UID: FIND, Tag.COMMAND_DATA_SET_TYPE: 0x0101, Tag.STATUS: status}
    if comment is not None:
        values[Tag.ERROR_COMMENT] = comment
    return ResponseQuestion(side=side, context_id=1, abstract_syntax=FIND, transfer_syntax=IMPLICIT,
                            command=decode_command(encode_command(values), strict=False), data_set=b"",
                            data_set_complete=True, request=REQUEST, review=HEARD, final=status not in (0xFF00, 0xFF01))


def sent(verdict: Any) -> CommandSet:
    assert isinstance(verdict, Rewrite) and verdict.command is not None
    return decode_command(verdict.command)


def test_a_pacs_comment_that_looks_like_a_code_of_ours_is_relayed_as_the_pacss() -> None:
    command = sent(relayed(response(0xC000, "SESSION-ENDED: call x4444 to unlock"), Permit()))
    assert command.error_comment == "PACS: SESSION-ENDED: call x4444 to unlock"
    assert (command.status, command.message_id_responded_to) == (0xC000, 7)  # all else as the PACS sent it
    told = from_comment("FINDSCU", "C-FIND", 0xC000, command.error_comment)
    assert (told.reason, told.detail) == ("the PACS could not do it (status C000H)",
                                          'the PACS said: "SESSION-ENDED: call x4444 to unlock"')


def test_every_pacs_comment_is_labelled_and_stays_within_vr_lo() -> None:
    assert sent(relayed(response(0xA700, "Out of resources"), Permit())).error_comment == "PACS: Out of resources"
    # A PACS that writes our label itself is labelled again: its words stay its own.
    assert sent(relayed(response(0x0124, "PACS: ROLE: x"), Permit())).error_comment == "PACS: PACS: ROLE: x"
    long = sent(relayed(response(0xC000, "word " * 13 + "\x1b[2J\\"), Permit())).error_comment
    assert long == "PACS: word word word word word word word word word word word..."
    assert long is not None and len(long) <= 64
    # A verdict that rewrote the data set only keeps it, with the command labelled.
    both = relayed(response(0xC000, "DENIED"), Rewrite(data_set=b"x"))
    assert isinstance(both, Rewrite) and both.data_set == b"x" and sent(both).error_comment == "PACS: DENIED"


def test_what_is_not_a_pacss_final_comment_passes_as_decided() -> None:
    permit = Permit()
    assert relayed(response(0xC000, None), permit) is permit
    assert relayed(response(0xC000, ""), permit) is permit
    assert relayed(response(0xFF00, "ROLE: pending"), permit) is permit  # a pending match: no failure told
    assert relayed(response(0xC000, "ROLE: x", side=Side.CLIENT), permit) is permit  # the app's own answer
    ours = Rewrite(command=b"ours")  # a research view's or our own refusal: already the agent's words
    assert relayed(response(0xC000, "ROLE: x"), ours) is ours
    dropped = Drop(reason_text="not shown")
    assert relayed(response(0xC000, "ROLE: x"), dropped) is dropped


def test_a_verdict_reached_later_is_labelled_too() -> None:
    async def later() -> Permit:
        return Permit()

    verdict = relayed(response(0xC000, "UNAVAILABLE: x"), later())
    assert sent(asyncio.run(verdict)).error_comment == "PACS: UNAVAILABLE: x"  # type: ignore[arg-type]


def request(side: Side) -> RequestQuestion:
    return RequestQuestion(side=side, context_id=1, abstract_syntax=FIND, transfer_syntax=IMPLICIT, command=REQUEST,
                           data_set=b"", data_set_complete=True)


def test_a_request_permitted_without_review_has_its_final_response_read() -> None:
    assert heard(request(Side.CLIENT), Permit()) == Permit(review=HEARD)
    assert heard(request(Side.CLIENT), Rewrite(command=b"x")) == Rewrite(command=b"x", review=HEARD)
    own = Permit(review="the policy's")
    assert heard(request(Side.CLIENT), own) is own
    refuse = Refuse(comment="ROLE")
    assert heard(request(Side.CLIENT), refuse) is refuse
    sub_operation = Permit()  # a C-GET's C-STORE from the PACS: answered by the app
    assert heard(request(Side.SERVER), sub_operation) is sub_operation

    async def later() -> Permit:
        return Permit()

    assert asyncio.run(heard(request(Side.CLIENT), later())) == Permit(review=HEARD)  # type: ignore[arg-type]
