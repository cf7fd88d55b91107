"""The state table is the state machine: every (state, event) pair ends in the table's next state, an
unlisted PDU is an A-ABORT, an unlisted non-PDU event is an error naming both; mutated PDUs only ever
give typed errors."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dicomwire.association import TRANSITIONS, Event, Happening, Side, State
from dicomwire.commands import Log
from dicomwire.errors import AbortReason, DicomWireError, ProtocolError
from dicomwire.pdu import (
    RELEASE_RP_BYTES,
    RELEASE_RQ_BYTES,
    Abort,
    AssociateRJ,
    PduFramer,
    PduType,
    decode_pdu,
)
from dicomwire.questions import (
    AcceptQuestion,
    AssociationQuestion,
    ForwardAccept,
    ForwardAssociation,
    Permit,
    RejectAssociation,
    RequestQuestion,
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


def _hold(question: Any) -> Any:
    """Answer nothing but the association question, which asks to review the AC: every state with a
    question pending can be reached and stays put."""
    if isinstance(question, AssociationQuestion):
        return ForwardAssociation(target="upstream", review_ac=True)
    if isinstance(question, AcceptQuestion):
        return ForwardAccept()
    return Permit()


C, S = Side.CLIENT, Side.SERVER
ROUTES: dict[State, list[Any]] = {
    State.AWAIT_RQ: [],
    State.DECIDING: ["hold", (C, RQ)],
    State.CONNECTING: ["manual", (C, RQ)],
    State.AWAIT_AC: [(C, RQ)],
    State.REVIEWING_AC: ["hold-ac", (C, RQ), (S, AC)],
    State.ESTABLISHED: [(C, RQ), (S, AC)],
    State.RELEASE_BY_CLIENT: [(C, RQ), (S, AC), (C, RELEASE_RQ_BYTES)],
    State.RELEASE_BY_SERVER: [(C, RQ), (S, AC), (S, RELEASE_RQ_BYTES)],
    State.RELEASE_COLLISION: [(C, RQ), (S, AC), (C, RELEASE_RQ_BYTES), (S, RELEASE_RQ_BYTES)],
    State.RELEASE_COLLISION_HALF: [(C, RQ), (S, AC), (C, RELEASE_RQ_BYTES), (S, RELEASE_RQ_BYTES),
                                   (C, RELEASE_RP_BYTES)],
    State.CLOSING: [(C, RQ), (S, AC), (C, RELEASE_RQ_BYTES), (S, RELEASE_RP_BYTES)],
}


def book_in(state: State) -> Playbook:
    steps = ROUTES[state]
    decide = _hold
    if steps and steps[0] == "hold":
        decide = lambda q: None  # noqa: E731 - the association question stays pending
    elif steps and steps[0] == "hold-ac":
        decide = lambda q: _hold(q) if isinstance(q, AssociationQuestion) else None  # noqa: E731
    book = Playbook(RelayCore(), decide)
    book.auto_connect = not (steps and steps[0] == "manual")
    for step in steps:
        if isinstance(step, tuple):
            book.run(book.core.data_received(*step))
    assert book.core.state is state, (book.core.state, state)
    for side in Side:
        book.take(side)
    return book


_REJECT = RejectAssociation(reason_text="test")
PAYLOADS: dict[Happening, Any] = {
    Happening.RQ_REFUSED: _REJECT, Happening.FORWARD_VERDICT: ForwardAssociation(target="upstream"),
    Happening.REJECT_VERDICT: _REJECT, Happening.UPSTREAM_FAILED: _REJECT, Happening.AC_PASSED: ForwardAccept(),
    Happening.AC_REFUSED: _REJECT, Happening.DECISION_TIMEOUT: _REJECT,
    Happening.CLIENT_MALFORMED: (C, ProtocolError("test")), Happening.SERVER_MALFORMED: (S, ProtocolError("test")),
}


def _unknown_question() -> RequestQuestion:
    from dicomwire.dimse import decode_command
    from tests.unit.test_dimse import _pynetdicom_command

    command = decode_command(_pynetdicom_command("C_ECHO_RQ", MessageID=1, AffectedSOPClassUID="1.2.840.10008.1.1"))
    return RequestQuestion(side=C, context_id=7, abstract_syntax="", transfer_syntax="", command=command,
                           data_set=b"", data_set_complete=True)


def fire(book: Playbook, event: Event) -> None:
    """Deliver one event to the core: a PDU as bytes read, anything else straight to the table. Nothing
    answers what it asks and nothing connects: the state after it is the table's, not a later one."""
    book.decide = lambda q: None
    book.auto_connect = False
    if isinstance(event, tuple):
        book.run(book.core.data_received(event[0], SAMPLE[event[1]]))
        return
    payload = PAYLOADS.get(event)
    if event is Happening.DIMSE_VERDICT:
        payload = (_unknown_question(), Permit())
    elif event is Happening.DIMSE_DEADLINE:
        payload = _unknown_question()
    core = book.core
    book.run(core._guarded(lambda out: core._fire(event, out, payload)))  # as every public event method does


READABLE = [s for s in State if s is not State.CLOSED]
EVENTS: list[Event] = [*((side, pdu) for side in Side for pdu in PduType), *Happening]
PAIRS = [(state, event) for state in READABLE for event in EVENTS
         # No server side exists before the request goes upstream: no event can come from it.
         if not (state in (State.AWAIT_RQ, State.DECIDING, State.CONNECTING) and event in
                 [(S, pdu) for pdu in PduType] + [Happening.SERVER_EOF, Happening.SERVER_MALFORMED])
         # A PDU is not read while its side is paused: the table is not consulted for it there.
         and not (state in (State.DECIDING, State.CONNECTING, State.REVIEWING_AC) and isinstance(event, tuple))]


def _name(event: Event) -> str:
    return event.name if isinstance(event, Happening) else f"{event[0].name}-{event[1].name}"


@pytest.mark.parametrize(("state", "event"), PAIRS, ids=[f"{s.name}:{_name(e)}" for s, e in PAIRS])
def test_every_state_event_pair_ends_where_the_table_says(state: State, event: Event) -> None:
    book = book_in(state)
    fire(book, event)
    step = TRANSITIONS.get((state, event))
    if step is not None:
        assert book.core.state is step[1], f"{state.name} + {_name(event)}: {book.core.state.name}, not {step[1].name}"
        return
    assert book.core.closed
    if isinstance(event, Happening):
        # The caller's bug, not the peer's: the association ends, and the log names event and state.
        assert any(event.value in line and state.value in line for line in book.logs), book.logs
        return
    # A peer's PDU the table does not list: A-ABORT (unexpected PDU) to it, and the other side told.
    offender = event[0]
    assert decode_pdu(bytes(book.sent[offender])) == Abort(2, AbortReason.UNEXPECTED_PDU)
    if state is not State.AWAIT_RQ:
        assert decode_pdu(bytes(book.sent[offender.other])) == Abort(2, AbortReason.NOT_SPECIFIED)


def test_every_transition_in_the_table_is_reached_by_the_pairs() -> None:
    tested = set(PAIRS)
    untested = [(s.name, _name(e)) for (s, e) in TRANSITIONS if (s, e) not in tested]
    assert untested == [], "transitions no test drives"


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
    book = book_in(state)
    mutated = bytearray(sample)
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(mutated) - 1))
        mutated[pos] = data.draw(st.integers(0, 255))
    chunk = bytes(mutated[: data.draw(st.integers(1, len(mutated)))])
    book.run(book.core.data_received(Side.CLIENT, chunk))  # must not raise
    assert not any(isinstance(c, Log) and "relay core failed" in c.message for c in book.commands)
    if book.core.closed:
        # Whatever ended it, the client was told (RJ or ABORT) unless the bytes were a valid RQ/PDU.
        assert book.sent[Side.CLIENT] or Side.CLIENT in book.closed
    # The end of the stream always ends the association: no hang on a half PDU.
    book.run(book.core.connection_lost(Side.CLIENT))
    book.run(book.core.connection_lost(Side.SERVER))
    assert book.core.closed
