"""Every (state, side, PDU) pair is legal or ends in A-ABORT; mutated PDUs only ever give typed errors."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dicomwire.association import TRANSITIONS, Side, State
from dicomwire.errors import DicomWireError, ProtocolError
from dicomwire.pdu import (
    RELEASE_RP_BYTES,
    RELEASE_RQ_BYTES,
    Abort,
    AssociateRJ,
    PduFramer,
    PduType,
    decode_pdu,
)
from dicomwire.relay import RelayCore
from tests.support.playbook import Playbook
from tests.unit.test_relay_core import AC, RQ, message

ECHO = message("C_ECHO_RQ", MessageID=1, AffectedSOPClassUID="1.2.840.10008.1.1")
SAMPLE = {
    PduType.ASSOCIATE_RQ: RQ,
    PduType.ASSOCIATE_AC: AC,
    PduType.ASSOCIATE_RJ: AssociateRJ(1, 1, 1).encode(),
    PduType.P_DATA_TF: ECHO,
    PduType.RELEASE_RQ: RELEASE_RQ_BYTES,
    PduType.RELEASE_RP: RELEASE_RP_BYTES,
    PduType.ABORT: Abort(0, 0).encode(),
}

# How to bring a fresh core into each state where PDUs are read: (side, PDU) steps from AWAIT_RQ.
ROUTES: dict[State, list[tuple[Side, bytes]]] = {
    State.AWAIT_RQ: [],
    State.AWAIT_AC: [(Side.CLIENT, RQ)],
    State.ESTABLISHED: [(Side.CLIENT, RQ), (Side.SERVER, AC)],
    State.RELEASE_BY_CLIENT: [(Side.CLIENT, RQ), (Side.SERVER, AC), (Side.CLIENT, RELEASE_RQ_BYTES)],
    State.RELEASE_BY_SERVER: [(Side.CLIENT, RQ), (Side.SERVER, AC), (Side.SERVER, RELEASE_RQ_BYTES)],
    State.RELEASE_COLLISION: [(Side.CLIENT, RQ), (Side.SERVER, AC), (Side.CLIENT, RELEASE_RQ_BYTES),
                              (Side.SERVER, RELEASE_RQ_BYTES)],
    State.RELEASE_COLLISION_HALF: [(Side.CLIENT, RQ), (Side.SERVER, AC), (Side.CLIENT, RELEASE_RQ_BYTES),
                                   (Side.SERVER, RELEASE_RQ_BYTES), (Side.CLIENT, RELEASE_RP_BYTES)],
    State.CLOSING: [(Side.CLIENT, RQ), (Side.SERVER, AC), (Side.CLIENT, RELEASE_RQ_BYTES),
                    (Side.SERVER, RELEASE_RP_BYTES)],
}


def _book_in(state: State) -> Playbook:
    book = Playbook(RelayCore())
    for side, data in ROUTES[state]:
        book.run(book.core.data_received(side, data))
    assert book.core.state is state
    for side in Side:
        book.take(side)
    return book


# Every (state, side, PDU type) in which PDUs are read; no server connection exists before the request.
PAIRS = [(state, side, pdu) for state in ROUTES for side in Side for pdu in PduType
         if not (state is State.AWAIT_RQ and side is Side.SERVER)]


@pytest.mark.parametrize(("state", "side", "pdu_type"), PAIRS,
                         ids=[f"{s.name}-{d.name}-{p.name}" for s, d, p in PAIRS])
def test_every_state_event_pair_is_legal_or_aborts(state: State, side: Side, pdu_type: PduType) -> None:
    book = _book_in(state)
    book.run(book.core.data_received(side, SAMPLE[pdu_type]))
    if (state, side, pdu_type) in TRANSITIONS:
        assert not any(decode_pdu(d) == Abort(2, 2) for s in Side for d in book.sends[s])
        return
    # Not in the table: an A-ABORT (service provider, unexpected PDU) to every connected side, then closed.
    assert book.core.closed
    for target in Side:
        if state is State.AWAIT_RQ and target is Side.SERVER:
            assert book.sent[target] == b""
            continue
        assert decode_pdu(bytes(book.sent[target])) == Abort(2, 2), target


def test_pdus_that_arrive_while_deciding_wait_for_the_decision() -> None:
    book = Playbook(RelayCore(), lambda q: None)
    book.client(RQ + ECHO)  # a client that does not wait for the AC
    assert book.core.state is State.DECIDING and book.paused[Side.CLIENT]
    assert book.sent[Side.SERVER] == b""


MUTABLE = [RQ, ECHO, AC]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(MUTABLE), st.data())
def test_mutated_and_truncated_pdus_only_raise_protocol_errors(sample: bytes, data: st.DataObject) -> None:
    mutated = bytearray(sample)
    for _ in range(data.draw(st.integers(0, 8))):
        pos = data.draw(st.integers(0, len(mutated) - 1))
        mutated[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(mutated)))
    chunk = bytes(mutated[:cut])
    # The decoder itself: a value or a typed error, nothing else.
    with contextlib.suppress(DicomWireError):
        decode_pdu(chunk)
    # The framer: bounded, never more than one PDU buffered.
    framer = PduFramer(max_pdu_length=1 << 16, max_associate_length=1 << 16)
    try:
        frames = framer.feed(chunk)
        assert sum(len(f.data) for f in frames) + framer.buffered == len(chunk)
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([State.AWAIT_RQ, State.ESTABLISHED]), st.sampled_from(MUTABLE), st.data())
def test_relay_core_survives_mutated_input_and_ends_cleanly(state: State, sample: bytes, data: st.DataObject) -> None:
    book = _book_in(state)
    mutated = bytearray(sample)
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(mutated) - 1))
        mutated[pos] = data.draw(st.integers(0, 255))
    chunk = bytes(mutated[: data.draw(st.integers(1, len(mutated)))])
    book.run(book.core.data_received(Side.CLIENT, chunk))  # must not raise
    if book.core.closed:
        # Whatever ended it, the client was told (RJ or ABORT) unless the bytes were a valid RQ/PDU.
        assert book.sent[Side.CLIENT] or Side.CLIENT in book.closed
    # The end of the stream always ends the association: no hang on a half PDU.
    book.run(book.core.connection_lost(Side.CLIENT))
    book.run(book.core.connection_lost(Side.SERVER))
    assert book.core.closed
