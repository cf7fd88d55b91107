"""DIMSE command sets against pynetdicom's encoder (PS3.7 9.3, E.1) and message assembly (PS3.8 E.2)."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom.dataset import Dataset
from pynetdicom import dimse_messages as dm
from pynetdicom import dimse_primitives as dp
from pynetdicom.dsutils import decode as pn_decode

from dicomwire.assembly import MessageAssembler, MessageCompleted, MessageStarted
from dicomwire.dimse import (
    CommandField,
    Tag,
    command_values,
    decode_command,
    encode_command,
    peek_command_field,
    refusal_response,
)
from dicomwire.errors import ProtocolError
from dicomwire.pdv import fragment_message, iter_pdvs

CT = "1.2.840.10008.5.1.4.1.1.2"
FIND = "1.2.840.10008.5.1.4.1.2.2.1"
MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
GET = "1.2.840.10008.5.1.4.1.2.2.3"


_PRIMITIVE = {"ECHO": dp.C_ECHO, "FIND": dp.C_FIND, "MOVE": dp.C_MOVE, "GET": dp.C_GET, "STORE": dp.C_STORE,
              "CANCEL": dp.C_CANCEL}
_IDENTIFIER = b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY "  # (0008,0052) CS "STUDY"


def _pynetdicom_command(kind: str, **fields: object) -> bytes:
    """The command set pynetdicom encodes for a DIMSE primitive (its own message path, PS3.7 9.3)."""
    primitive = _PRIMITIVE[kind.split("_")[1]]()
    data_set = fields.pop("CommandDataSetType", 0x0101) != 0x0101
    for key, value in fields.items():
        setattr(primitive, key, value)
    if data_set:
        setattr(primitive, "DataSet" if kind.startswith("C_STORE") else "Identifier", BytesIO(_IDENTIFIER))
    message = getattr(dm, kind)()
    message.primitive_to_message(primitive)
    values = [v for p in message.encode_msg(1, 16384) for _, v in p.presentation_data_value_list]
    return b"".join(v[1:] for v in values if v[0] & 1)


CASES = [
    ("C_ECHO_RQ", CommandField.C_ECHO_RQ, dict(MessageID=1, AffectedSOPClassUID="1.2.840.10008.1.1",
                                              CommandDataSetType=0x0101)),
    ("C_ECHO_RSP", CommandField.C_ECHO_RSP, dict(MessageIDBeingRespondedTo=1, AffectedSOPClassUID="1.2.840.10008.1.1",
                                                CommandDataSetType=0x0101, Status=0)),
    ("C_FIND_RQ", CommandField.C_FIND_RQ, dict(MessageID=7, AffectedSOPClassUID=FIND, Priority=0,
                                              CommandDataSetType=1)),
    ("C_FIND_RSP", CommandField.C_FIND_RSP, dict(MessageIDBeingRespondedTo=7, AffectedSOPClassUID=FIND,
                                                CommandDataSetType=1, Status=0xFF00)),
    ("C_MOVE_RQ", CommandField.C_MOVE_RQ, dict(MessageID=9, AffectedSOPClassUID=MOVE, Priority=0,
                                              MoveDestination="VIEWER1@WS1", CommandDataSetType=1)),
    ("C_MOVE_RSP", CommandField.C_MOVE_RSP, dict(MessageIDBeingRespondedTo=9, AffectedSOPClassUID=MOVE,
                                                CommandDataSetType=0x0101, Status=0xFF00,
                                                NumberOfRemainingSuboperations=3, NumberOfCompletedSuboperations=1,
                                                NumberOfFailedSuboperations=0, NumberOfWarningSuboperations=0)),
    ("C_GET_RQ", CommandField.C_GET_RQ, dict(MessageID=11, AffectedSOPClassUID=GET, Priority=0,
                                            CommandDataSetType=1)),
    ("C_GET_RSP", CommandField.C_GET_RSP, dict(MessageIDBeingRespondedTo=11, AffectedSOPClassUID=GET,
                                              CommandDataSetType=0x0101, Status=0)),
    ("C_STORE_RQ", CommandField.C_STORE_RQ, dict(MessageID=3, AffectedSOPClassUID=CT, Priority=0,
                                                CommandDataSetType=1, AffectedSOPInstanceUID="1.2.3.4.5",
                                                MoveOriginatorApplicationEntityTitle="FINDSCU",
                                                MoveOriginatorMessageID=9)),
    ("C_STORE_RSP", CommandField.C_STORE_RSP, dict(MessageIDBeingRespondedTo=3, AffectedSOPClassUID=CT,
                                                  CommandDataSetType=0x0101, Status=0,
                                                  AffectedSOPInstanceUID="1.2.3.4.5")),
    ("C_CANCEL_RQ", CommandField.C_CANCEL_RQ, dict(MessageIDBeingRespondedTo=7, CommandDataSetType=0x0101)),
]


@pytest.mark.parametrize(("kind", "field", "fields"), CASES, ids=[c[0] for c in CASES])
def test_command_sets_decode_and_reencode_like_pynetdicom(kind: str, field: int, fields: dict) -> None:
    theirs = _pynetdicom_command(kind, **dict(fields))
    command = decode_command(theirs)
    assert command.command_field == field
    assert command.raw == theirs
    assert encode_command(command_values(command)) == theirs
    if "MessageID" in fields:
        assert command.message_id == fields["MessageID"]
    if "MoveDestination" in fields:
        assert command.move_destination == "VIEWER1@WS1"
    assert command.has_data_set == (fields.get("CommandDataSetType", 0x0101) != 0x0101)


@pytest.mark.parametrize("kind", ["C_ECHO_RQ", "C_FIND_RQ", "C_MOVE_RQ", "C_GET_RQ", "C_STORE_RQ"])
def test_refusal_is_a_valid_0124_response_for_each_service(kind: str) -> None:
    fields = dict(next(c[2] for c in CASES if c[0] == kind))
    request = decode_command(_pynetdicom_command(kind, **fields))
    comment = "Refused: user alice may not see patient X" + "!" * 40
    response = decode_command(refusal_response(request, comment=comment))
    assert response.command_field == request.command_field | 0x8000
    assert response.status == 0x0124
    assert response.message_id_responded_to == request.message_id
    assert response.affected_sop_class_uid == request.affected_sop_class_uid
    # VR LO: at most 64 characters, cut at a word boundary so that the clinician reads whole words.
    assert response.error_comment == "Refused: user alice may not see patient"
    assert not response.has_data_set
    # pynetdicom (a second implementation) reads it as the matching response message.
    ds = pn_decode(BytesIO(response.raw), True, True)
    assert ds.Status == 0x0124 and ds.ErrorComment == response.error_comment
    assert ds.CommandField == request.command_field | 0x8000
    if kind == "C_STORE_RQ":
        assert response.affected_sop_instance_uid == "1.2.3.4.5"


@pytest.mark.parametrize(("kind", "field", "fields"), CASES, ids=[c[0] for c in CASES])
def test_peeked_command_field_is_the_decoded_one(kind: str, field: int, fields: dict) -> None:
    raw = _pynetdicom_command(kind, **dict(fields))  # pynetdicom's encoding, a second implementation
    assert peek_command_field(raw) == decode_command(raw).command_field == field
    # Cut before the Command Field's value is whole: no answer rather than a wrong one.
    cut = raw.index(b"\x00\x00\x00\x01\x02\x00\x00\x00") + 9
    assert peek_command_field(raw[:cut]) is None


def test_peek_never_guesses_on_damaged_command_sets() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=80))
    def check(data: bytes) -> None:
        field = peek_command_field(data)  # never raises
        if field is not None:  # only ever the value of a 2-byte (0000,0100), reached in tag order
            pos = 0
            while True:
                group, element, length = (int.from_bytes(data[pos : pos + 2], "little"),
                                          int.from_bytes(data[pos + 2 : pos + 4], "little"),
                                          int.from_bytes(data[pos + 4 : pos + 8], "little"))
                assert group == 0 and element <= 0x0100
                if element == 0x0100:
                    assert length == 2 and field == int.from_bytes(data[pos + 8 : pos + 10], "little")
                    break
                pos += 8 + length

    check()


def test_malformed_command_sets_are_protocol_errors() -> None:
    good = _pynetdicom_command("C_ECHO_RQ", MessageID=1, AffectedSOPClassUID="1.2.840.10008.1.1",
                               CommandDataSetType=0x0101)
    with pytest.raises(ProtocolError):
        decode_command(good[:-3])  # last element overruns
    with pytest.raises(ProtocolError):
        decode_command(b"\x08\x00\x10\x00\x02\x00\x00\x00AB")  # group 0008 in a command set
    with pytest.raises(ProtocolError):
        decode_command(encode_command({Tag.MESSAGE_ID: 1}))  # no Command Field


def _message_pdvs(dataset: bytes | None, max_pdu: int) -> list:
    command = _pynetdicom_command("C_STORE_RQ", MessageID=3, AffectedSOPClassUID=CT, Priority=0,
                                  CommandDataSetType=1 if dataset is not None else 0x0101,
                                  AffectedSOPInstanceUID="1.2.3")
    return [p for pdu in fragment_message(5, command, dataset, max_pdu) for p in iter_pdvs(pdu)]


def test_assembler_follows_fragmented_messages() -> None:
    assembler = MessageAssembler()
    events = []
    for pdv in _message_pdvs(b"x" * 1000, 64) + _message_pdvs(b"y" * 10, 16384):
        events.extend(assembler.feed(pdv.context_id, pdv.control, pdv.value))
    kinds = [type(e) for e in events]
    assert kinds == [MessageStarted, MessageCompleted, MessageStarted, MessageCompleted]
    assert [e.data_set_length for e in events if isinstance(e, MessageCompleted)] == [1000, 10]
    assert [e.seq for e in events] == [1, 1, 2, 2]
    assert assembler.idle


def test_assembler_refuses_out_of_order_fragments() -> None:
    pdvs = _message_pdvs(b"x" * 100, 16384)
    with pytest.raises(ProtocolError, match="no command"):
        MessageAssembler().feed(5, 0x02, b"data")
    assembler = MessageAssembler()
    assembler.feed(pdvs[0].context_id, pdvs[0].control, pdvs[0].value)
    with pytest.raises(ProtocolError, match="context"):
        assembler.feed(7, 0x02, b"data")
    assembler = MessageAssembler()
    assembler.feed(pdvs[0].context_id, pdvs[0].control, pdvs[0].value)
    with pytest.raises(ProtocolError, match="command fragment"):
        assembler.feed(5, 0x03, pdvs[0].value)


def test_dataset_not_decoded_by_assembly() -> None:
    # A data set that is not valid DICOM at all still passes: we never parse data sets here.
    ds = Dataset()
    ds.PatientID = "X"
    assembler = MessageAssembler()
    for pdv in _message_pdvs(b"\xff" * 33, 16384):
        assembler.feed(pdv.context_id, pdv.control, pdv.value)
    assert assembler.idle


@pytest.mark.parametrize("values", [
    {Tag.COMMAND_FIELD: 0x18030},  # a Command Field past 16 bits
    {Tag.COMMAND_FIELD: 0x8030, Tag.STATUS: -1},
    {Tag.COMMAND_FIELD: 0x0030, Tag.ATTRIBUTE_IDENTIFIER_LIST: (1 << 32,)},
    {Tag.COMMAND_FIELD: 0x0021, Tag.MOVE_DESTINATION: "VIEWÉR1"},  # AE: the default repertoire only
    {Tag.COMMAND_FIELD: 0x0001, Tag.AFFECTED_SOP_INSTANCE_UID: "1.2.\u0663"},
])
def test_a_value_that_does_not_fit_its_vr_is_an_encode_error(values: dict[int, object]) -> None:
    # Found by fuzz/dimse_fuzz.py: OverflowError and UnicodeEncodeError escaped encode_command (and a
    # refusal built with a policy's out-of-range status), where callers expect EncodeError.
    from dicomwire.errors import EncodeError

    with pytest.raises(EncodeError):
        encode_command(values)  # type: ignore[arg-type]
    request = decode_command(encode_command({Tag.COMMAND_FIELD: 0x0030, Tag.MESSAGE_ID: 1}))
    with pytest.raises(EncodeError):
        refusal_response(request, status=0x10124)


@pytest.mark.parametrize("text", ["x" * 200, "Not authorized: " + "1.2" * 40, "a " + "b" * 100])
def test_an_error_comment_without_a_word_boundary_is_cut_to_64_characters(text: str) -> None:
    # Found by fuzz/dimse_fuzz.py: with no space in its first 65 characters a comment came out 65 long,
    # past what VR LO allows (PS3.5 6.2).
    from dicomwire.dimse import error_comment

    assert 32 <= len(error_comment(text)) <= 64
    request = decode_command(encode_command({Tag.COMMAND_FIELD: 0x0030, Tag.MESSAGE_ID: 1}))
    response = decode_command(refusal_response(request, comment=text))
    assert response.error_comment is not None and len(response.error_comment) <= 64


def test_an_odd_value_length_is_refused_strictly_and_every_refusal_reads_back_strictly() -> None:
    """PS3.5 7.1.1: value lengths are even. Found by fuzz/dimse_fuzz.py: an Affected SOP Class UID of one
    NUL byte read as "" and passed; the refusal built from it carried b"\\x00\\x00", which no strict
    reader (ours included) accepts, so the refusal we sent was itself malformed."""
    odd = b"\x00\x00\x02\x00\x01\x00\x00\x00\x00" + b"\x00\x00\x00\x01\x02\x00\x00\x00\x30\x00"
    with pytest.raises(ProtocolError, match="odd value length"):
        decode_command(odd, strict=True)
    even = b"\x00\x00\x02\x00\x02\x00\x00\x001\x00" + odd[9:]  # "1" padded with its NUL
    assert decode_command(decode_command(even, strict=True).raw, strict=True).get(0x00000002) == "1"


def test_a_retrieval_that_reports_failed_sub_operations_is_partly_failed_whatever_its_status() -> None:
    """Found by the attacker review of issue 17: a C-GET whose images were partly refused ends B000H
    ("one or more failures", a warning to apps) and no one told the person. PS3.4 C.4.2.1.4, C.4.3.1.4."""
    from dicomwire.dimse import partly_failed

    def final(kind: str, status: int, failed: int) -> object:
        fields = {Tag.COMMAND_FIELD: kind, Tag.MESSAGE_ID_BEING_RESPONDED_TO: 1, Tag.STATUS: status,
                  Tag.COMMAND_DATA_SET_TYPE: 0x0101, Tag.NUMBER_OF_FAILED_SUBOPERATIONS: failed}
        return decode_command(encode_command(fields))

    assert partly_failed(final(0x8010, 0xB000, 2))  # C-GET-RSP
    assert partly_failed(final(0x8021, 0x0000, 1))  # C-MOVE-RSP with a failure counted
    assert not partly_failed(final(0x8021, 0x0000, 0))
    assert not partly_failed(final(0x8001, 0xB000, 1))  # a C-STORE-RSP's B000H is a coercion, not a refusal
