"""What fuzz/relay_fuzz.py found in the relay core, each as the playbook that shows it (issue 13).

Each failed on the core as the fuzzer found it and passes since its fix.
"""

from __future__ import annotations

from dicomwire.assembly import MessageAssembler, MessageStarted
from dicomwire.association import Side, State
from dicomwire.dimse import CommandField, Tag, encode_command
from dicomwire.limits import RelayLimits
from dicomwire.pdu import PduFramer, decode_pdu
from dicomwire.pdv import COMMAND_WHOLE, PDataTF, Pdv, encode_p_data, fragment
from dicomwire.questions import (
    DimseQuestion,
    Permit,
    Question,
    Refuse,
    RequestQuestion,
    ResponseQuestion,
    Rewrite,
    Verdict,
)
from dicomwire.relay import RelayCore
from tests.support.playbook import Playbook, transparent
from tests.support.wire import pynetdicom_ac, pynetdicom_message, pynetdicom_rq

FIND = "1.2.840.10008.5.1.4.1.2.2.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
ECHO = "1.2.840.10008.1.1"
IDENTIFIER = b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY \x10\x00\x20\x00\x0a\x00\x00\x00PAT-REF-1 "
# A match longer than the core holds for a question (max_identifier_length): (0008,0080) of 400 bytes.
LONG_MATCH = b"\x08\x00\x80\x00\x90\x01\x00\x00" + b"A" * 400 + b"\x10\x00\x20\x00\x0a\x00\x00\x00PAT-REF-1 "


def test_a_long_match_rewritten_is_dropped_and_the_association_goes_on() -> None:
    held: list[bool] = []

    def decide(question: Question) -> Verdict | None:
        if isinstance(question, ResponseQuestion) and not question.final:
            held.append(question.data_set_complete)
            return Rewrite(data_set=IDENTIFIER)  # what strip_patient_id returns, read from the head it got
        if isinstance(question, DimseQuestion):
            return Permit(review="find")
        return transparent(question)

    book = Playbook(RelayCore(RelayLimits(max_identifier_length=64), asks=None), decide)
    book.client(pynetdicom_rq(contexts=[(1, FIND, ["1.2.840.10008.1.2"])]))
    book.server(pynetdicom_ac(contexts=(1,)))
    book.take(Side.CLIENT), book.take(Side.SERVER)
    book.client(b"".join(pynetdicom_message("C_FIND_RQ", data_set=IDENTIFIER, MessageID=1,
                                            AffectedSOPClassUID=FIND, Priority=0)))
    match = pynetdicom_message("C_FIND_RSP", max_pdu=128, data_set=LONG_MATCH, MessageIDBeingRespondedTo=1,
                               AffectedSOPClassUID=FIND, Status=0xFF00)
    final = pynetdicom_message("C_FIND_RSP", MessageIDBeingRespondedTo=1, AffectedSOPClassUID=FIND, Status=0)
    book.server(b"".join(match + final))

    assert held == [False]  # the core asked about the match's head only
    assert not [line for line in book.logs if line.startswith("relay core failed")], book.logs
    assert book.core.state is State.ESTABLISHED and not book.closed
    # The match the policy could not have rewritten whole is dropped (fail closed); the final response passes.
    sent = book.take(Side.CLIENT)
    assert sent == b"".join(final) and isinstance(decode_pdu(sent), PDataTF)


def test_a_response_to_a_request_still_awaiting_its_verdict_never_reaches_the_requester() -> None:
    pending: list[Question] = []

    def decide(question: Question) -> Verdict | None:
        if isinstance(question, DimseQuestion):
            pending.append(question)
            return None  # the policy is still deciding (it will ask for a review of the matches)
        return transparent(question)

    book = Playbook(RelayCore(asks=None), decide)
    book.client(pynetdicom_rq(contexts=[(1, FIND, ["1.2.840.10008.1.2"])]))
    book.server(pynetdicom_ac(contexts=(1,)))
    book.take(Side.CLIENT), book.take(Side.SERVER)
    book.client(b"".join(pynetdicom_message("C_FIND_RQ", data_set=IDENTIFIER, MessageID=1,
                                            AffectedSOPClassUID=FIND, Priority=0)))
    assert len(pending) == 1 and book.take(Side.SERVER) == b""  # held: the server has not seen it
    other = b"\x10\x00\x20\x00\x0a\x00\x00\x00PAT-OTHER "
    book.server(b"".join(pynetdicom_message("C_FIND_RSP", data_set=other, MessageIDBeingRespondedTo=1,
                                            AffectedSOPClassUID=FIND, Status=0xFF00)))
    # A match for a request the server never received (a guessed Message ID) is no response to it: it must
    # not reach the client, unreviewed, before the policy has even decided on the request.
    assert b"PAT-OTHER" not in book.take(Side.CLIENT)


def _store(message_id: int, data_set: bytes) -> tuple[bytes, list[Pdv]]:
    """A C-STORE-RQ (a C-GET sub-operation, sent by the server) as its command set and its data set's
    PDVs of at most 94 bytes."""
    command = encode_command({Tag.COMMAND_FIELD: CommandField.C_STORE_RQ, Tag.MESSAGE_ID: message_id,
                              Tag.AFFECTED_SOP_CLASS_UID: CT, Tag.AFFECTED_SOP_INSTANCE_UID: f"1.2.3.{message_id}",
                              Tag.PRIORITY: 0, Tag.COMMAND_DATA_SET_TYPE: 1})
    return command, fragment(3, data_set, is_command=False, max_length=100)


def test_a_waiting_refusal_never_lands_inside_a_rewritten_message() -> None:
    def decide(question: Question) -> Verdict | None:
        if isinstance(question, RequestQuestion) and question.side is Side.CLIENT:
            return Refuse(comment="Not authorized")  # made while a C-STORE to the client is in flight: waits
        if isinstance(question, RequestQuestion):
            return Rewrite(data_set=b"\x08\x00\x18\x00\x96\x00\x00\x00" + b"9" * 150) \
                if question.command.message_id == 2 else Permit()
        return transparent(question)

    book = Playbook(RelayCore(RelayLimits(store_head_length=64), asks=None), decide)
    book.client(pynetdicom_rq(contexts=[(3, CT, ["1.2.840.10008.1.2"]), (7, ECHO, ["1.2.840.10008.1.2"])],
                              max_length=256))
    book.server(pynetdicom_ac(contexts=(3, 7)))
    book.take(Side.CLIENT), book.take(Side.SERVER)
    first, first_data = _store(1, b"\x08\x00\x16\x00\x2c\x01\x00\x00" + b"1" * 300)
    book.server(b"".join(encode_p_data((pdv,)) for pdv in (Pdv(3, COMMAND_WHOLE, first), *first_data[:-1])))
    book.client(b"".join(pynetdicom_message("C_ECHO_RQ", context_id=7, MessageID=5, AffectedSOPClassUID=ECHO)))
    second, second_data = _store(2, b"\x08\x00\x18\x00\x20\x00\x00\x00" + b"2" * 32)
    # The end of the first C-STORE and the whole second one in one PDU, as a PACS may send them.
    book.server(encode_p_data((first_data[-1], Pdv(3, COMMAND_WHOLE, second), *second_data)))

    stream, events = book.take(Side.CLIENT), []
    assembler = MessageAssembler(strict=False)
    for frame in PduFramer().feed(stream):
        events += assembler.feed_p_data([frame])  # ProtocolError: a message inside another
    assert [(e.command.name, e.command.message_id or e.command.message_id_responded_to) for e in events
            if isinstance(e, MessageStarted)] in ([("C-STORE-RQ", 1), ("C-ECHO-RSP", 5), ("C-STORE-RQ", 2)],
                                                  [("C-STORE-RQ", 1), ("C-STORE-RQ", 2), ("C-ECHO-RSP", 5)])


def _ac_with_context(body: bytes) -> bytes:
    """pynetdicom's A-ASSOCIATE-AC for context 1 with that context's item value replaced by ``body``."""
    from dataclasses import replace

    from dicomwire.items import Item, ItemType
    from dicomwire.pdu import decode_associate

    ac = decode_associate(pynetdicom_ac(contexts=(1,)))
    items = tuple(Item(ItemType.PRESENTATION_CONTEXT_AC, body) if i.type == ItemType.PRESENTATION_CONTEXT_AC else i
                  for i in ac.items)
    return replace(ac, items=items).encode()


def test_an_accept_with_a_context_item_that_cannot_be_read_aborts_as_a_protocol_error() -> None:
    """Found by fuzz/relay_fuzz.py: an A-ASSOCIATE-AC whose presentation context item is empty passed the
    accept's checks and broke the core later, in the middle of its review (its guard aborted: "relay core
    failed"). An accepted context naming two transfer syntaxes (PS3.8 9.3.3.2 allows one) is refused the
    same way: the app and the agent could each read the data sets in another."""
    ts = b"\x40\x00\x00\x11" + b"1.2.840.10008.1.2\x00"
    explicit = b"\x40\x00\x00\x14" + b"1.2.840.10008.1.2.1\x00"
    for body in (b"", b"\x01\x00\x00\x00" + ts + explicit):
        book = Playbook(RelayCore(), transparent)
        book.client(pynetdicom_rq(contexts=[(1, FIND, ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"])]))
        book.take(Side.SERVER)
        book.server(_ac_with_context(body))
        assert book.core.state is State.CLOSED
        assert not any("relay core failed" in line for line in book.logs), book.logs
        assert decode_pdu(book.take(Side.CLIENT)).__class__.__name__ in ("Abort", "AssociateRJ")


def test_a_fragment_cut_after_a_replaced_head_fits_what_the_receiver_announced() -> None:
    """A data set whose head is replaced (``Rewrite(keep_from=)``) goes on with the rest of the fragment the
    head ends in: a fragment the core makes, which must fit the receiver's Maximum Length (PS3.8 D.3.3.1)
    even when the sender's fragments did not (found by fuzz/relay_fuzz.py after 106,508 executions: a
    99-byte PDV to a client that announced 64)."""
    def decide(question: Question) -> Verdict | None:
        if isinstance(question, RequestQuestion) and question.side is Side.SERVER:
            return Rewrite(data_set=b"", keep_from=1)
        return transparent(question)

    book = Playbook(RelayCore(RelayLimits(store_head_length=64), asks=None), decide)
    book.client(pynetdicom_rq(contexts=[(3, CT, ["1.2.840.10008.1.2"])], max_length=64))
    book.server(pynetdicom_ac(contexts=(3,)))
    book.take(Side.CLIENT), book.take(Side.SERVER)
    command, _ = _store(1, b"")
    data_set = b"\x08\x00\x16\x00\x5c\x00\x00\x00" + b"1" * 92  # one 100-byte fragment: more than 64 allows
    book.server(encode_p_data((Pdv(3, COMMAND_WHOLE, command),)) + encode_p_data((Pdv(3, 0x02, data_set),)))
    frames = [decode_pdu(frame.data) for frame in PduFramer().feed(book.take(Side.CLIENT))]
    data = [f for f in frames if isinstance(f, PDataTF) and not any(p.is_command for p in f.pdvs)]  # (command: as came)
    assert data and all(sum(6 + len(pdv.value) for pdv in frame.pdvs) <= 64 for frame in data)
    assert b"".join(bytes(pdv.value) for frame in data for pdv in frame.pdvs) == data_set[1:]
    assert data[-1].pdvs[-1].is_last
