"""Whole associations through the sans-I/O relay core, no sockets: bytes in, bytes out (the exact
command sequences are in test_relay_playbooks.py)."""

from __future__ import annotations

from dicomwire.association import Side, State
from dicomwire.dimse import decode_command
from dicomwire.errors import AbortReason
from dicomwire.identity import UserIdentity, insert_user_identity
from dicomwire.limits import RelayLimits
from dicomwire.pdu import (
    RELEASE_RP_BYTES,
    RELEASE_RQ_BYTES,
    Abort,
    decode_associate,
    decode_pdu,
)
from dicomwire.pdv import fragment_message, iter_pdvs
from dicomwire.questions import (
    AssociationQuestion,
    DimseQuestion,
    Drop,
    Extend,
    ForwardAssociation,
    Permit,
    Refuse,
    Rewrite,
    Selective,
)
from dicomwire.relay import RelayCore
from tests.support.playbook import Playbook, transparent
from tests.support.wire import pynetdicom_ac, pynetdicom_rq
from tests.unit.test_dimse import _pynetdicom_command

CT = "1.2.840.10008.5.1.4.1.1.2"
FIND = "1.2.840.10008.5.1.4.1.2.2.1"
MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
VERIFICATION = "1.2.840.10008.1.1"
IVLE = "1.2.840.10008.1.2"
CONTEXTS = {FIND: 1, CT: 3, MOVE: 5, VERIFICATION: 7}  # proposed by RQ, accepted by AC

RQ = pynetdicom_rq(contexts=[(context, sop, [IVLE]) for sop, context in CONTEXTS.items()])
AC = pynetdicom_ac(contexts=tuple(CONTEXTS.values()))


def message(kind: str, dataset: bytes | None = None, ctx: int | None = None, max_pdu: int = 16384,
            **fields: object) -> bytes:
    """A DIMSE message as PDUs, on the context of its SOP class unless ``ctx`` says otherwise."""
    if dataset is not None:
        fields["CommandDataSetType"] = 1
    command = _pynetdicom_command(kind, **fields)
    context = ctx if ctx is not None else CONTEXTS.get(str(fields.get("AffectedSOPClassUID", "")), 1)
    return b"".join(fragment_message(context, command, dataset, max_pdu))


def established(decide=transparent, limits: RelayLimits | None = None,  # type: ignore[no-untyped-def]
                **core_args: object) -> Playbook:
    book = Playbook(RelayCore(limits, **core_args), decide)
    book.client(RQ)
    book.server(AC)
    assert book.core.state is State.ESTABLISHED
    return book


def test_transparent_association_forwards_every_byte_unchanged() -> None:
    book = established()
    assert book.take(Side.SERVER) == RQ
    assert book.take(Side.CLIENT) == AC
    echo = message("C_ECHO_RQ", MessageID=1, AffectedSOPClassUID="1.2.840.10008.1.1")
    find = message("C_FIND_RQ", b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY ", MessageID=2, AffectedSOPClassUID=FIND,
                   Priority=0)
    book.client(echo + find)
    assert book.take(Side.SERVER) == echo + find
    rsp = message("C_FIND_RSP", b"\x10\x00\x20\x00\x02\x00\x00\x00P1", MessageIDBeingRespondedTo=2,
                  AffectedSOPClassUID=FIND, Status=0xFF00)
    book.server(rsp)
    assert book.take(Side.CLIENT) == rsp
    book.client(RELEASE_RQ_BYTES)
    book.server(RELEASE_RP_BYTES)
    assert book.take(Side.SERVER) == RELEASE_RQ_BYTES and book.take(Side.CLIENT) == RELEASE_RP_BYTES
    assert book.core.state is State.CLOSING
    book.run(book.core.eof_received(Side.CLIENT))
    assert book.core.closed and book.closed == {Side.CLIENT, Side.SERVER}


def test_bytes_split_anywhere_come_out_identical() -> None:
    book = established()
    book.take(Side.SERVER)
    stream = b"".join(
        message("C_STORE_RQ", bytes(range(256)) * 40, ctx=3, max_pdu=1000, MessageID=n, AffectedSOPClassUID=CT,
                Priority=0, AffectedSOPInstanceUID=f"1.2.3.{n}")
        for n in range(1, 4)
    )
    for i in range(0, len(stream), 7):
        book.client(stream[i : i + 7])
    assert book.take(Side.SERVER) == stream


def test_real_dcmtk_request_fed_byte_by_byte_goes_upstream_unchanged() -> None:
    from tests.support.wire import golden

    rq = golden("dcmtk-storescu-jwt.hex")
    for how in ("whole", "bytewise", "trailing"):
        book = Playbook(RelayCore())
        if how == "bytewise":
            for i in range(len(rq)):
                book.client(rq[i : i + 1])
        else:
            book.client(rq + (RELEASE_RQ_BYTES[:3] if how == "trailing" else b""))
        assert book.take(Side.SERVER) == rq, how
        assert book.core.state is State.AWAIT_AC


def test_association_verdict_may_rewrite_the_request() -> None:
    def decide(question):  # type: ignore[no-untyped-def]
        if isinstance(question, AssociationQuestion):
            rq = insert_user_identity(question.rq, UserIdentity(type=5, primary=b"token"))
            return ForwardAssociation(target="x", rq=rq.with_ae_titles(called="PACS1"))
        return transparent(question)

    book = established(decide)
    forwarded = decode_associate(book.take(Side.SERVER))
    assert forwarded.called_ae == "PACS1"
    from dicomwire.identity import extract_user_identity

    identity = extract_user_identity(forwarded)
    assert identity is not None and identity.primary == b"token"


def test_unlimited_maximum_length_is_capped() -> None:
    book = Playbook(RelayCore(RelayLimits(max_pdu_length=65536)))
    book.client(pynetdicom_rq(max_length=0))
    forwarded = decode_associate(book.take(Side.SERVER))
    assert forwarded.user_information is not None and forwarded.user_information.maximum_length == 65536


def test_c_store_question_carries_the_head_not_the_whole_data_set() -> None:
    seen: list[DimseQuestion] = []

    def decide(question):  # type: ignore[no-untyped-def]
        if isinstance(question, DimseQuestion):
            seen.append(question)
            return Permit()
        return transparent(question)

    book = established(decide, RelayLimits(store_head_length=4096), asks=None)
    book.take(Side.SERVER)
    data = bytes(range(256)) * 400  # 100 KiB
    store = message("C_STORE_RQ", data, ctx=3, max_pdu=2048, MessageID=1, AffectedSOPClassUID=CT, Priority=0,
                    AffectedSOPInstanceUID="1.2.3.1")
    book.client(store)
    (question,) = seen
    assert not question.data_set_complete and 4096 <= len(question.data_set) < 8192
    assert data.startswith(question.data_set)
    assert book.take(Side.SERVER) == store


def test_response_review_drops_pending_matches() -> None:
    def decide(question):  # type: ignore[no-untyped-def]
        if isinstance(question, DimseQuestion):
            if question.side is Side.CLIENT:
                return Permit(review=True)
            return Drop() if b"SECRET" in question.data_set else Permit()
        return transparent(question)

    book = established(decide, asks=None)
    book.take(Side.CLIENT)
    find = message("C_FIND_RQ", b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY ", MessageID=9, AffectedSOPClassUID=FIND,
                   Priority=0)
    book.client(find)
    visible = message("C_FIND_RSP", b"\x10\x00\x20\x00\x06\x00\x00\x00PUBLIC", MessageIDBeingRespondedTo=9,
                      AffectedSOPClassUID=FIND, Status=0xFF00)
    hidden = message("C_FIND_RSP", b"\x10\x00\x20\x00\x06\x00\x00\x00SECRET", MessageIDBeingRespondedTo=9,
                     AffectedSOPClassUID=FIND, Status=0xFF00)
    final = message("C_FIND_RSP", MessageIDBeingRespondedTo=9, AffectedSOPClassUID=FIND, Status=0)
    book.server(visible + hidden + final)
    assert book.take(Side.CLIENT) == visible + final


def test_a_selective_review_is_asked_only_about_the_responses_it_wants() -> None:
    """A Selective review (the server agent's HEARD) asks about a final response with an Error Comment and
    lets the pending matches and a final without one pass without a question."""
    class FinalWithComment(Selective):
        def wants(self, response):  # type: ignore[no-untyped-def]
            return response.status == 0xC000

    asked: list[int | None] = []

    def decide(question):  # type: ignore[no-untyped-def]
        if isinstance(question, DimseQuestion):
            if question.side is Side.CLIENT:
                return Permit(review=FinalWithComment())
            asked.append(question.command.status)
            return Rewrite(command=_pynetdicom_command("C_FIND_RSP", MessageIDBeingRespondedTo=question.command
                                                       .message_id_responded_to, AffectedSOPClassUID=FIND,
                                                       Status=0xC000, ErrorComment="PACS: no"))
        return transparent(question)

    for status in (0x0000, 0xC000):
        asked.clear()
        book = established(decide, asks=None)
        book.take(Side.CLIENT)
        book.client(message("C_FIND_RQ", b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY ", MessageID=9,
                            AffectedSOPClassUID=FIND, Priority=0))
        match = message("C_FIND_RSP", b"\x10\x00\x20\x00\x06\x00\x00\x00PUBLIC", MessageIDBeingRespondedTo=9,
                        AffectedSOPClassUID=FIND, Status=0xFF00)
        final = message("C_FIND_RSP", MessageIDBeingRespondedTo=9, AffectedSOPClassUID=FIND, Status=status,
                        **({"ErrorComment": "call x4444"} if status else {}))
        book.server(match + final)
        received = book.take(Side.CLIENT)
        assert asked == ([0xC000] if status else [])
        assert received.startswith(match) and (received == match + final) == (status == 0)
        assert (b"PACS: no" in received) == (status == 0xC000)


def test_malformed_p_data_aborts_both_and_is_never_forwarded() -> None:
    book = established()
    book.take(Side.SERVER), book.take(Side.CLIENT)
    bad = bytes.fromhex("04 00 0000000c 00000020 01 03 deadbeef0001".replace(" ", ""))
    book.client(bad)
    assert decode_pdu(book.take(Side.CLIENT)) == Abort(2, AbortReason.INVALID_PDU_PARAMETER_VALUE)
    assert decode_pdu(book.take(Side.SERVER)) == Abort(2, 0)  # the server sees an abort, not the bad PDU
    assert book.core.closed
    assert any("malformed" in line for line in book.logs)


def test_unknown_pdu_type_before_association_aborts() -> None:
    book = Playbook(RelayCore())
    book.client(bytes.fromhex("0a00000000040000000"[:-1] + "00"))
    assert decode_pdu(book.take(Side.CLIENT)) == Abort(2, AbortReason.UNRECOGNIZED_PDU)
    assert book.core.closed


def test_second_user_identity_in_request_aborts_before_anything_goes_upstream() -> None:
    rq = decode_associate(pynetdicom_rq(identity=(1, b"alice", b"", False)))
    info = rq.user_information
    assert info is not None
    from dicomwire.items import ItemType

    doubled = rq.with_user_information(type(info)((*info.sub_items, info.find(ItemType.USER_IDENTITY_RQ))))
    book = Playbook(RelayCore())
    book.client(doubled.encode())
    assert decode_pdu(book.take(Side.CLIENT)) == Abort(2, AbortReason.UNEXPECTED_PDU_PARAMETER)
    assert not any(type(c).__name__ == "OpenUpstream" for c in book.commands)


def test_rewrite_replaces_the_move_destination_and_keeps_the_identifier() -> None:
    from dicomwire.dimse import Tag, command_values, encode_command
    move_class = MOVE

    def decide(question):  # type: ignore[no-untyped-def]
        if isinstance(question, DimseQuestion) and question.command.move_destination:
            values = command_values(question.command)
            values[Tag.MOVE_DESTINATION] = question.command.move_destination + "@WS1"
            return Rewrite(command=encode_command(values))
        return transparent(question)

    book = established(decide, asks=None)
    book.take(Side.SERVER)
    identifier = b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY " * 3
    move = message("C_MOVE_RQ", identifier, max_pdu=64, MessageID=4, AffectedSOPClassUID=move_class,
                   Priority=0, MoveDestination="VIEWER1")
    book.client(move)
    forwarded = book.take(Side.SERVER)
    pdvs = [p for pdu in _split_pdus(forwarded) for p in iter_pdvs(pdu)]
    command = decode_command(b"".join(bytes(p.value) for p in pdvs if p.is_command))
    assert command.move_destination == "VIEWER1@WS1" and command.message_id == 4
    assert b"".join(bytes(p.value) for p in pdvs if not p.is_command) == identifier
    assert all(len(pdu) <= 16384 + 6 for pdu in _split_pdus(forwarded))


def _split_pdus(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        length = int.from_bytes(data[pos + 2 : pos + 6], "big")
        out.append(data[pos : pos + 6 + length])
        pos += 6 + length
    return out


def test_refused_request_with_a_fragmented_command_leaks_no_fragment() -> None:
    book = established(lambda q: Refuse(comment="no") if isinstance(q, DimseQuestion) else transparent(q),
                       asks=None)
    book.take(Side.SERVER), book.take(Side.CLIENT)
    echo = message("C_ECHO_RQ", max_pdu=30, MessageID=8, AffectedSOPClassUID="1.2.840.10008.1.1")
    assert len(_split_pdus(echo)) > 2  # the command set is split over several PDUs
    for pdu in _split_pdus(echo):
        book.client(pdu)
    assert book.sent[Side.SERVER] == b""
    (pdv,) = iter_pdvs(book.take(Side.CLIENT))
    assert decode_command(pdv.value).status == 0x0124


def test_ask_commands_limits_questions_and_stores_stream_without_holding() -> None:
    from dicomwire.dimse import CommandField

    asked: list[str] = []

    def decide(question):  # type: ignore[no-untyped-def]
        if isinstance(question, DimseQuestion):
            asked.append(question.command.name)
        return transparent(question)

    book = established(decide, asks=frozenset({CommandField.C_MOVE_RQ}))
    book.take(Side.SERVER)
    store = message("C_STORE_RQ", b"\x01" * 50000, ctx=3, max_pdu=4096, MessageID=1, AffectedSOPClassUID=CT,
                    Priority=0, AffectedSOPInstanceUID="1.2.3.1")
    pdus = _split_pdus(store)
    book.client(pdus[0] + pdus[1])
    assert book.take(Side.SERVER) == pdus[0] + pdus[1]  # forwarded at once: no head is held
    book.client(b"".join(pdus[2:]))
    assert book.take(Side.SERVER) == b"".join(pdus[2:])
    assert asked == []


def test_response_reviews_are_pipelined_and_leave_in_order() -> None:
    def decide(question):  # type: ignore[no-untyped-def]
        if isinstance(question, DimseQuestion) and question.side is Side.CLIENT:
            return Permit(review=True)
        if isinstance(question, DimseQuestion):
            return None  # leave the responses pending
        return transparent(question)

    book = established(decide, asks=None)
    book.take(Side.CLIENT)
    book.client(message("C_FIND_RQ", b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY ", MessageID=9,
                        AffectedSOPClassUID=FIND, Priority=0))
    responses = [message("C_FIND_RSP", b"\x10\x00\x20\x00\x02\x00\x00\x00P" + bytes([48 + n]),
                         MessageIDBeingRespondedTo=9, AffectedSOPClassUID=FIND, Status=0xFF00) for n in range(5)]
    final = message("C_FIND_RSP", MessageIDBeingRespondedTo=9, AffectedSOPClassUID=FIND, Status=0)
    book.server(b"".join(responses) + final)
    assert len(book.pending) == 6 and not book.paused[Side.SERVER]  # asked together, reading goes on
    assert book.sent[Side.CLIENT] == b""
    # Answered out of order (the final response first): the output still follows the server's order.
    book.answer(next(q for q in book.pending if not q.data_set), Permit())
    for n in (3, 0, 4, 1, 2):
        verdict = Drop() if n == 1 else Permit()
        book.answer(next(q for q in book.pending if q.data_set.endswith(bytes([48 + n]))), verdict)
    assert book.take(Side.CLIENT) == responses[0] + responses[2] + responses[3] + responses[4] + final


def test_rewrite_replaces_a_fragmented_identifier_and_keeps_the_command() -> None:
    find_class = "1.2.840.10008.5.1.4.1.2.2.1"
    replacement = b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY \x10\x00\x20\x00\x00\x00\x00\x00"

    def decide(question):  # type: ignore[no-untyped-def]
        if isinstance(question, DimseQuestion) and question.command.is_request:
            assert question.data_set_complete
            return Rewrite(data_set=replacement, review=True)
        return transparent(question)

    book = established(decide, asks=None)
    book.take(Side.SERVER), book.take(Side.CLIENT)
    identifier = b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY " + b"\x08\x00\x50\x00\x08\x00\x00\x00ACC12345" * 4
    find = message("C_FIND_RQ", identifier, max_pdu=40, MessageID=6, AffectedSOPClassUID=find_class, Priority=0)
    assert len(_split_pdus(find)) > 3  # command and identifier each in several fragments
    book.client(find)
    forwarded = book.take(Side.SERVER)
    pdvs = [p for pdu in _split_pdus(forwarded) for p in iter_pdvs(pdu)]
    command = decode_command(b"".join(bytes(p.value) for p in pdvs if p.is_command))
    assert command.message_id == 6 and command.affected_sop_class_uid == find_class
    data = [p for p in pdvs if not p.is_command]
    assert b"".join(bytes(p.value) for p in data) == replacement and data[-1].is_last
    assert [p.is_last for p in data].count(True) == 1
    # A response to the rewritten request is reviewed, and its identifier may be rewritten too.
    match = b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY \x10\x00\x20\x00\x04\x00\x00\x00PAT1"
    stripped = b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY "
    asked = []

    def review(question):  # type: ignore[no-untyped-def]
        asked.append(question)
        return Rewrite(data_set=stripped)

    book.decide = review
    book.server(message("C_FIND_RSP", match, MessageIDBeingRespondedTo=6, AffectedSOPClassUID=find_class,
                        Status=0xFF00))
    back = book.take(Side.CLIENT)
    assert asked and asked[0].data_set == match
    pdvs = [p for pdu in _split_pdus(back) for p in iter_pdvs(pdu)]
    assert b"".join(bytes(p.value) for p in pdvs if not p.is_command) == stripped
    assert decode_command(b"".join(bytes(p.value) for p in pdvs if p.is_command)).status == 0xFF00


def test_rewriting_an_identifier_held_only_in_part_is_refused_not_truncated() -> None:
    def decide(question):  # type: ignore[no-untyped-def]
        if isinstance(question, DimseQuestion) and question.command.is_request:
            return Rewrite(data_set=b"")
        return transparent(question)

    book = established(decide, RelayLimits(max_identifier_length=32), asks=None)
    book.take(Side.SERVER), book.take(Side.CLIENT)
    identifier = b"\x08\x00\x50\x00\x08\x00\x00\x00ACC12345" * 8
    book.client(message("C_FIND_RQ", identifier, max_pdu=40, MessageID=7,
                        AffectedSOPClassUID="1.2.840.10008.5.1.4.1.2.2.1", Priority=0))
    assert book.take(Side.SERVER) == b""  # not one fragment of it
    response = decode_command(b"".join(bytes(p.value) for p in iter_pdvs(book.take(Side.CLIENT)) if p.is_command))
    assert response.status == 0x0124 and book.core.state is State.ESTABLISHED


def test_any_fragmentation_of_a_rewritten_identifier_forwards_exactly_the_replacement() -> None:
    """Property: whatever the PDU sizes of the request and however the stream is cut into reads, the
    server side receives the original command and exactly the replacement identifier, once."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    find_class = "1.2.840.10008.5.1.4.1.2.2.1"

    @settings(max_examples=60, deadline=None)
    @given(max_pdu=st.integers(min_value=20, max_value=400), original_length=st.integers(1, 60),
           replacement_length=st.integers(0, 900), cuts=st.lists(st.integers(1, 97), max_size=8))
    def check(max_pdu: int, original_length: int, replacement_length: int, cuts: list[int]) -> None:
        replacement = bytes(n % 251 for n in range(replacement_length))
        book = established(lambda q: Rewrite(data_set=replacement) if isinstance(q, DimseQuestion)
                           else transparent(q), asks=None)
        book.take(Side.SERVER), book.take(Side.CLIENT)
        identifier = b"\x08\x00\x50\x00\x08\x00\x00\x00ACC12345" * original_length
        stream = message("C_FIND_RQ", identifier, max_pdu=max_pdu, MessageID=9, AffectedSOPClassUID=find_class,
                         Priority=0)
        pos = 0
        for cut in cuts:
            book.client(stream[pos : pos + cut])
            pos += cut
        book.client(stream[pos:])
        pdvs = [p for pdu in _split_pdus(book.take(Side.SERVER)) for p in iter_pdvs(pdu)]
        command = decode_command(b"".join(bytes(p.value) for p in pdvs if p.is_command))
        data = [p for p in pdvs if not p.is_command]
        assert command.message_id == 9 and b"".join(bytes(p.value) for p in data) == replacement
        assert [p.is_last for p in data] == [False] * (len(data) - 1) + [True]
        assert book.core.state is State.ESTABLISHED and book.take(Side.CLIENT) == b""

    check()


def test_only_the_commands_asked_about_are_asked_however_the_stream_is_cut() -> None:
    """Property: with questions for C-MOVE only (the workstation agent), every C-MOVE is asked once,
    whether its command set is whole in one PDV or fragmented, whatever the reads, and held until
    answered (here: refused, so none of its bytes may reach the server); nothing else is asked, and
    every other byte goes on unchanged."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from dicomwire.dimse import CommandField

    move_class = MOVE
    identifier = b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY "

    @settings(max_examples=60, deadline=None)
    @given(kinds=st.lists(st.sampled_from(["store", "move", "echo"]), min_size=1, max_size=6),
           max_pdu=st.sampled_from([24, 60, 150, 400, 16384]), cuts=st.lists(st.integers(1, 900), max_size=10))
    def check(kinds: list[str], max_pdu: int, cuts: list[int]) -> None:
        asked: list[int] = []

        def decide(question):  # type: ignore[no-untyped-def]
            if isinstance(question, DimseQuestion):
                asked.append(question.command.message_id)
                return Refuse(comment="no")
            return transparent(question)

        book = established(decide, asks=frozenset({CommandField.C_MOVE_RQ}))
        book.take(Side.SERVER), book.take(Side.CLIENT)
        messages = []
        for n, kind in enumerate(kinds, start=1):
            if kind == "store":
                messages.append(message("C_STORE_RQ", b"\x07" * 3000, ctx=3, max_pdu=max_pdu, MessageID=n,
                                        AffectedSOPClassUID=CT, Priority=0, AffectedSOPInstanceUID=f"1.2.3.{n}"))
            elif kind == "move":
                messages.append(message("C_MOVE_RQ", identifier, max_pdu=max_pdu, MessageID=n,
                                        AffectedSOPClassUID=move_class, Priority=0, MoveDestination="VIEWER"))
            else:
                messages.append(message("C_ECHO_RQ", max_pdu=max_pdu, MessageID=n,
                                        AffectedSOPClassUID="1.2.840.10008.1.1"))
        stream = b"".join(messages)
        pos = 0
        for cut in cuts:
            book.client(stream[pos : pos + cut])
            pos += cut
        book.client(stream[pos:])
        moves = [n for n, kind in enumerate(kinds, start=1) if kind == "move"]
        assert asked == moves
        assert book.take(Side.SERVER) == b"".join(m for m, kind in zip(messages, kinds, strict=True) if kind != "move")
        refusals = [decode_command(p.value) for pdu in _split_pdus(book.take(Side.CLIENT)) for p in iter_pdvs(pdu)]
        assert [(r.message_id_responded_to, r.status) for r in refusals] == [(n, 0x0124) for n in moves]
        assert book.core.state is State.ESTABLISHED

    check()


def test_a_failure_response_that_goes_on_is_told_to_the_policy() -> None:
    """Issue 17: the workstation agent sees every refusal it relays (a notice per failed final response),
    pending and successful responses are not notices, and the bytes pass unchanged all the same."""
    from dicomwire.commands import NoticeKind

    book = established()
    book.take(Side.SERVER), book.take(Side.CLIENT)
    find = message("C_FIND_RQ", b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY ", MessageID=3, AffectedSOPClassUID=FIND,
                   Priority=0)
    echo = message("C_ECHO_RQ", MessageID=4, AffectedSOPClassUID=VERIFICATION)
    book.client(find + echo)
    pending = message("C_FIND_RSP", b"\x10\x00\x20\x00\x02\x00\x00\x00P1", MessageIDBeingRespondedTo=3,
                      AffectedSOPClassUID=FIND, Status=0xFF00)
    refused = message("C_FIND_RSP", MessageIDBeingRespondedTo=3, AffectedSOPClassUID=FIND, Status=0x0124,
                      ErrorComment="Not authorized: consent")
    echoed = message("C_ECHO_RSP", MessageIDBeingRespondedTo=4, AffectedSOPClassUID=VERIFICATION, Status=0)
    book.server(pending + refused + echoed)
    assert book.take(Side.CLIENT) == pending + refused + echoed
    (notice,) = book.notices
    assert notice.kind is NoticeKind.FAILED and notice.command.status == 0x0124  # type: ignore[attr-defined]
    assert notice.command.error_comment == "Not authorized: consent"  # type: ignore[attr-defined]


# -- a header held longer and replaced, the rest streamed (Extend, Rewrite.keep_from) ------------------
def _store(data: bytes, message_id: int = 11, max_pdu: int = 1000) -> bytes:
    return message("C_STORE_RQ", data, ctx=3, max_pdu=max_pdu, MessageID=message_id, AffectedSOPClassUID=CT,
                   Priority=0, AffectedSOPInstanceUID=f"1.2.3.{message_id}")


def _data_pdvs(data: bytes) -> list:  # type: ignore[type-arg]
    return [p for pdu in _split_pdus(data) for p in iter_pdvs(pdu) if not p.is_command]


def _head_rewriter(asked: list[int], *, header: int, keep_from: int, head: bytes):  # type: ignore[no-untyped-def]
    """Asks for ``header`` bytes, then replaces the first ``keep_from`` of them by ``head``."""
    def decide(question):  # type: ignore[no-untyped-def]
        if isinstance(question, DimseQuestion) and question.command.is_request:
            asked.append(len(question.data_set))
            if len(question.data_set) < header and not question.data_set_complete:
                return Extend(length=header)
            return Rewrite(data_set=head, keep_from=keep_from)
        return transparent(question)
    return decide


def test_extended_header_is_replaced_and_the_rest_streams_unchanged() -> None:
    original = bytes(range(256)) * 200  # 51,200 bytes
    head = b"\x10\x00\x10\x00\x04\x00\x00\x00ANON" * 3
    for chunk in (len(original) * 2, 333, 7):  # whole, in PDU-crossing pieces, nearly byte by byte
        asked: list[int] = []
        book = established(_head_rewriter(asked, header=12_000, keep_from=9_000, head=head),
                           RelayLimits(store_head_length=2048), asks=None)
        book.take(Side.SERVER)
        stream = _store(original)
        for i in range(0, len(stream), chunk):
            book.client(stream[i : i + chunk])
        forwarded = book.take(Side.SERVER)
        assert len(asked) == 2 and 2048 <= asked[0] < 12_000 <= asked[1], chunk
        data = _data_pdvs(forwarded)
        assert b"".join(bytes(p.value) for p in data) == head + original[9_000:], chunk
        assert [p.is_last for p in data] == [False] * (len(data) - 1) + [True]
        command = decode_command(b"".join(bytes(p.value) for pdu in _split_pdus(forwarded)
                                          for p in iter_pdvs(pdu) if p.is_command))
        assert command.message_id == 11 and command.affected_sop_instance_uid == "1.2.3.11"
        assert all(len(pdu) <= 16384 + 6 for pdu in _split_pdus(forwarded))
        # The association goes on: the next store passes (and is asked about) as usual.
        book.decide = transparent
        book.client(_store(b"\x00" * 100, message_id=12))
        assert _data_pdvs(book.take(Side.SERVER))[0].value == b"\x00" * 100


def test_extend_answered_later_holds_then_releases_in_order() -> None:
    original = bytes(range(256)) * 60
    asked: list[int] = []
    rewrite = _head_rewriter(asked, header=8_000, keep_from=8_000, head=b"H" * 10)
    book = established(lambda q: None if isinstance(q, DimseQuestion) else transparent(q),
                       RelayLimits(store_head_length=2048), asks=None)
    book.take(Side.SERVER)
    book.client(_store(original))
    assert book.sent[Side.SERVER] == b"" and len(book.pending) == 1
    (first,) = book.pending
    book.decide = lambda q: None if isinstance(q, DimseQuestion) else transparent(q)
    book.answer(first, rewrite(first))  # Extend: asked again at once, the data set being all read
    assert book.sent[Side.SERVER] == b"" and len(book.pending) == 1
    (second,) = book.pending
    assert second is not first and len(second.data_set) >= 8_000
    book.answer(second, rewrite(second))
    data = _data_pdvs(book.take(Side.SERVER))
    assert b"".join(bytes(p.value) for p in data) == b"H" * 10 + original[8_000:] and data[-1].is_last


def test_data_set_ending_inside_the_replaced_head_ends_once() -> None:
    original = b"\x08\x00\x18\x00\x08\x00\x00\x001.2.3.11" * 30
    book = established(_head_rewriter([], header=1, keep_from=len(original), head=b"NEWHEAD!"),
                       RelayLimits(store_head_length=4096), asks=None)
    book.take(Side.SERVER)
    book.client(_store(original, max_pdu=64))
    data = _data_pdvs(book.take(Side.SERVER))
    assert b"".join(bytes(p.value) for p in data) == b"NEWHEAD!"
    assert [p.is_last for p in data].count(True) == 1 and data[-1].is_last


def test_headers_that_cannot_be_held_or_rewritten_are_refused_whole() -> None:
    """An Extend beyond max_header_length, or a keep_from past what was held, refuses the store: no byte
    of it reaches the server, the sender hears 0124H, the association goes on."""
    for decide in (
        _head_rewriter([], header=64_000, keep_from=0, head=b""),  # beyond max_header_length
        lambda q: (Rewrite(data_set=b"X", keep_from=len(q.data_set) + 1)
                   if isinstance(q, DimseQuestion) and q.command.is_request else transparent(q)),
        lambda q: (Extend(length=len(q.data_set))  # not more than it holds
                   if isinstance(q, DimseQuestion) and q.command.is_request else transparent(q)),
    ):
        book = established(decide, RelayLimits(store_head_length=2048, max_header_length=32_768), asks=None)
        book.take(Side.SERVER), book.take(Side.CLIENT)
        book.client(_store(bytes(50_000)))
        assert book.take(Side.SERVER) == b""
        (pdv,) = [p for p in iter_pdvs(book.take(Side.CLIENT)) if p.is_command]
        assert decode_command(pdv.value).status == 0x0124 and book.core.state is State.ESTABLISHED
