"""Playbooks with the exact command sequence: refusals, pauses, timers and answers, in order.

Each test states the events fed to a :class:`~dicomwire.relay.RelayCore` and every command it must
return, in order (:mod:`tests.support.script`, mitmproxy's ``Playbook``). What a driver would do with
them is the point: reading paused before a question is asked and resumed after its answer, a deadline
started with each question and cancelled with its answer, nothing sent upstream for a refused request,
and the sends of an answer in the order the peer sent the messages. Refusals are compared byte for
byte with what pynetdicom encodes for the same response (the specification oracle).
"""

from __future__ import annotations

import pytest

from dicomwire.association import Side, State
from dicomwire.commands import NoticeKind, Tell, Timer
from dicomwire.dialogue import STATUS_DUPLICATE_INVOCATION
from dicomwire.errors import AbortReason
from dicomwire.limits import RelayLimits
from dicomwire.pdu import RELEASE_RP_BYTES, RELEASE_RQ_BYTES, Abort, AssociateRJ
from dicomwire.policy import EVERY_REQUEST, NO_REQUEST
from dicomwire.questions import (
    AcceptQuestion,
    AssociationQuestion,
    Drop,
    ForwardAssociation,
    Permit,
    Refuse,
    RejectAssociation,
    RequestQuestion,
    ResponseQuestion,
)
from dicomwire.relay import RelayCore
from dicomwire.upstream import Upstream
from tests.support.script import (
    Expect,
    Placeholder,
    Predicate,
    Script,
    _expect,
    answer,
    ask,
    cancel,
    client,
    close,
    connected,
    deadline,
    eof,
    expire,
    finished,
    log,
    lost,
    open_upstream,
    opened,
    overloaded,
    pause,
    pdu,
    pdus,
    resume,
    send,
    server,
    shutdown,
    start,
    state,
    tell,
    unreachable,
)
from tests.unit.test_relay_core import AC, CT, FIND, RQ, VERIFICATION, message

C, S = Side.CLIENT, Side.SERVER
UP = Upstream(host="pacs.example", port=104)
LIMITS = RelayLimits()
ARTIM, CONNECT, IDLE, DECIDE = LIMITS.artim_timeout, LIMITS.connect_timeout, LIMITS.idle_timeout, \
    LIMITS.decision_timeout
STUDY = b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY "  # (0008,0052) CS "STUDY": a C-FIND identifier


def echo(number: int) -> bytes:
    return message("C_ECHO_RQ", MessageID=number, AffectedSOPClassUID=VERIFICATION)


def echo_response(number: int, status: int = 0, comment: str | None = None) -> bytes:
    """A C-ECHO-RSP as pynetdicom encodes it (on the Verification context, 7)."""
    fields: dict[str, object] = {"MessageIDBeingRespondedTo": number, "AffectedSOPClassUID": VERIFICATION,
                                 "Status": status}
    if comment is not None:
        fields["ErrorComment"] = comment
    return message("C_ECHO_RSP", **fields)


def find(number: int) -> bytes:
    return message("C_FIND_RQ", STUDY, MessageID=number, AffectedSOPClassUID=FIND, Priority=0)


def match(number: int, name: bytes) -> bytes:
    """A pending C-FIND response whose identifier is (0010,0020) Patient ID ``name`` (2 bytes)."""
    return message("C_FIND_RSP", b"\x10\x00\x20\x00\x02\x00\x00\x00" + name, MessageIDBeingRespondedTo=number,
                   AffectedSOPClassUID=FIND, Status=0xFF00)


def find_done(number: int) -> bytes:
    return message("C_FIND_RSP", MessageIDBeingRespondedTo=number, AffectedSOPClassUID=FIND, Status=0)


def sent(side: Side, data: bytes) -> list[Expect]:
    """``data`` sent PDU by PDU, as the general path (a message held for a verdict) sends it."""
    return [send(side, one) for one in pdus(data)]


def established(core: RelayCore, *, logs: bool = False, ignore: tuple[type, ...] = ()) -> Script:
    """The association set up through ``core``, every command checked (the test of set-up itself)."""
    q = Placeholder(AssociationQuestion)
    script = (Script(core, logs=logs, ignore=ignore)
              >> opened() << start(Timer.ARTIM, ARTIM) << state(State.AWAIT_RQ)
              >> client(RQ)
              << cancel(Timer.ARTIM) << pause(C) << start(deadline(q), DECIDE) << ask(q) << state(State.DECIDING)
              >> answer(q, ForwardAssociation(target=UP))
              << cancel(deadline(q)) << start(Timer.CONNECT, CONNECT) << open_upstream(UP) << state(State.CONNECTING)
              >> connected()
              << cancel(Timer.CONNECT) << send(S, RQ) << start(Timer.ARTIM, ARTIM) << resume(C)
              << state(State.AWAIT_AC)
              >> server(AC)
              << cancel(Timer.ARTIM) << send(C, AC) << start(Timer.IDLE, IDLE) << resume(S) << resume(C)
              << state(State.ESTABLISHED))
    assert script
    return script


def test_set_up_asks_once_connects_then_forwards_the_request_and_the_accept() -> None:
    established(RelayCore(asks=EVERY_REQUEST))


def test_a_refused_request_is_answered_with_the_refusal_alone_and_reading_resumes() -> None:
    q = Placeholder(RequestQuestion)
    refusal = echo_response(5, 0x0124, "Not authorized: patient under consent restriction")
    script = established(RelayCore(asks=EVERY_REQUEST))
    assert (script
            >> client(echo(5))
            << pause(C) << start(deadline(q), DECIDE) << ask(q)
            >> answer(q, Refuse(comment="Not authorized: patient under consent restriction"))
            << cancel(deadline(q)) << send(C, refusal) << resume(C) << state(State.ESTABLISHED))
    # Not one byte of the refused request went upstream; the next request is asked about and passes.
    q6 = Placeholder(RequestQuestion)
    assert (script
            >> client(echo(6))
            << pause(C) << start(deadline(q6), DECIDE) << ask(q6)
            >> answer(q6, Permit())
            << cancel(deadline(q6)) << send(S, echo(6)) << resume(C))
    assert q().command.message_id == 5 and q6().command.message_id == 6


def test_a_request_waits_while_asked_and_what_follows_it_leaves_after_it() -> None:
    q = Placeholder(RequestQuestion)
    assert (established(RelayCore(asks=EVERY_REQUEST))
            >> client(echo(5) + RELEASE_RQ_BYTES)  # the release request is read, not yet handled
            << pause(C) << start(deadline(q), DECIDE) << ask(q) << state(State.ESTABLISHED)
            >> answer(q, Permit())
            << cancel(deadline(q)) << send(S, echo(5)) << resume(C) << send(S, RELEASE_RQ_BYTES)
            << state(State.RELEASE_BY_CLIENT))


def test_a_request_deadline_that_expires_refuses_it_and_a_late_verdict_changes_nothing() -> None:
    q = Placeholder(RequestQuestion)
    refusal = echo_response(5, 0x0124, "Authorization decision timed out")
    assert (established(RelayCore(asks=EVERY_REQUEST), logs=True)
            >> client(echo(5))
            << pause(C) << start(deadline(q), DECIDE) << ask(q)
            >> expire(deadline(q))
            << log("warning", "no decision in time for C-ECHO-RQ") << tell(NoticeKind.DECISION_TIMEOUT, C)
            << cancel(deadline(q)) << send(C, refusal) << resume(C) << state(State.ESTABLISHED)
            >> answer(q, Permit())  # too late: already refused; reading was resumed already
            << resume(C) << state(State.ESTABLISHED))


def test_an_association_deadline_that_expires_rejects_transient_and_a_late_verdict_changes_nothing() -> None:
    q = Placeholder(AssociationQuestion)
    assert (Script(RelayCore())
            >> client(RQ)
            << cancel(Timer.ARTIM) << pause(C) << start(deadline(q), DECIDE) << ask(q)
            >> expire(deadline(q))
            << send(C, pdu(AssociateRJ(2, 3, 1))) << finished(C) << state(State.CLOSED)
            >> answer(q, ForwardAssociation(target=UP)))  # nothing: the core is closed


def test_an_accept_review_that_expires_aborts_the_server_and_rejects_the_client() -> None:
    q = Placeholder(AssociationQuestion)
    review = Placeholder(AcceptQuestion)
    assert (Script(RelayCore())
            >> client(RQ) << cancel(Timer.ARTIM) << pause(C) << start(deadline(q), DECIDE) << ask(q)
            >> answer(q, ForwardAssociation(target=UP, review_ac=True))
            << cancel(deadline(q)) << start(Timer.CONNECT, CONNECT) << open_upstream(UP)
            >> connected() << cancel(Timer.CONNECT) << send(S, RQ) << start(Timer.ARTIM, ARTIM) << resume(C)
            >> server(AC)
            << cancel(Timer.ARTIM) << pause(S) << start(deadline(review), DECIDE) << ask(review)
            << state(State.REVIEWING_AC)
            >> expire(deadline(review))
            << send(S, pdu(Abort(0, 0))) << send(C, pdu(AssociateRJ(2, 3, 1))) << finished(C, S)
            << state(State.CLOSED))


def test_two_questions_keep_their_own_deadlines() -> None:
    """A response under review and a request asked about at the same time: the response's deadline
    passing drops that response only; the request's deadline is neither cancelled nor restarted."""
    request = Placeholder(RequestQuestion, lambda q: q.command.message_id == 1)
    review = Placeholder(ResponseQuestion)
    pending = Placeholder(RequestQuestion, lambda q: q.command.message_id == 2)
    final = Placeholder(ResponseQuestion, lambda q: q.final)
    assert (established(RelayCore(asks=EVERY_REQUEST))
            >> client(find(1)) << pause(C) << start(deadline(request), DECIDE) << ask(request)
            >> answer(request, Permit(review="find 1"))
            << cancel(deadline(request)) << sent(S, find(1)) << resume(C)
            >> server(match(1, b"P1")) << start(deadline(review), DECIDE) << ask(review)
            >> client(echo(2)) << pause(C) << start(deadline(pending), DECIDE) << ask(pending)
            >> expire(deadline(review))
            << tell(NoticeKind.DECISION_TIMEOUT, S) << cancel(deadline(review)) << resume(S)
            >> answer(pending, Permit())
            << cancel(deadline(pending)) << send(S, echo(2)) << resume(C)
            >> server(find_done(1)) << start(deadline(final), DECIDE) << ask(final))


def test_response_reviews_are_pipelined_up_to_the_bound_and_leave_in_the_servers_order() -> None:
    request = Placeholder(RequestQuestion)
    r1, r2, r3 = (Placeholder(ResponseQuestion, lambda q, n=n: q.data_set.endswith(n), n.decode())
                  for n in (b"P1", b"P2", b"P3"))
    assert (established(RelayCore(RelayLimits(max_pending_reviews=2), asks=EVERY_REQUEST))
            >> client(find(9)) << pause(C) << start(deadline(request), DECIDE) << ask(request)
            >> answer(request, Permit(review="filter"))
            << cancel(deadline(request)) << sent(S, find(9)) << resume(C)
            # Three matches in one read: two are asked about at once, then reading stops (the bound).
            >> server(match(9, b"P1") + match(9, b"P2") + match(9, b"P3"))
            << start(deadline(r1), DECIDE) << ask(r1) << pause(S) << start(deadline(r2), DECIDE) << ask(r2)
            # The second answered first: it waits for the first; reading resumes and the third is asked.
            >> answer(r2, Permit())
            << cancel(deadline(r2)) << resume(S) << pause(S) << start(deadline(r3), DECIDE) << ask(r3)
            >> answer(r1, Drop(reason_text="not this patient"))
            << cancel(deadline(r1)) << sent(C, match(9, b"P2")) << resume(S)
            >> answer(r3, Permit())
            << cancel(deadline(r3)) << sent(C, match(9, b"P3")) << resume(S))


def test_a_duplicate_message_id_is_refused_0210H_and_the_first_request_is_unaffected() -> None:
    refusal = echo_response(3, STATUS_DUPLICATE_INVOCATION, "Message ID already outstanding")
    assert (established(RelayCore(asks=NO_REQUEST))
            >> client(find(3)) << send(S, find(3))
            >> client(echo(3))  # the C-FIND's Message ID, still outstanding
            << tell(NoticeKind.VIOLATION, C) << send(C, refusal) << state(State.ESTABLISHED)
            >> server(match(3, b"P1") + find_done(3))  # the C-FIND goes on as if nothing happened
            << send(C, match(3, b"P1") + find_done(3))
            >> client(echo(3))  # its exchange is over: the Message ID is free again
            << send(S, echo(3)) << state(State.ESTABLISHED))


def test_a_response_that_answers_nothing_aborts_both_sides() -> None:
    assert (established(RelayCore(asks=NO_REQUEST), logs=True, ignore=(Tell,))
            >> server(echo_response(99))
            << log("warning", "response to no outstanding request")
            << send(S, pdu(Abort(2, AbortReason.UNEXPECTED_PDU_PARAMETER))) << send(C, pdu(Abort(2, 0)))
            << finished(C, S) << log("info", "association closed: protocol error from the server")
            << state(State.CLOSED))


def test_a_violation_that_aborts_is_told_to_the_policy_once() -> None:
    assert (established(RelayCore(asks=NO_REQUEST))
            >> server(echo_response(99))
            << tell(NoticeKind.VIOLATION, S)
            << send(S, pdu(Abort(2, AbortReason.UNEXPECTED_PDU_PARAMETER))) << send(C, pdu(Abort(2, 0)))
            << finished(C, S) << state(State.CLOSED))


def test_a_busy_relay_refuses_at_the_first_byte_and_asks_nothing() -> None:
    assert (Script(RelayCore(busy=True))
            >> opened() << start(Timer.ARTIM, ARTIM)
            >> client(RQ[:1])  # the first byte of an A-ASSOCIATE-RQ: nothing else is held for it
            << send(C, pdu(AssociateRJ(2, 3, 2))) << finished(C) << state(State.CLOSED)
            >> client(RQ[1:]))  # the rest is not read


def test_a_spent_pre_association_budget_refuses_the_request_transient() -> None:
    assert (Script(RelayCore())
            >> client(RQ[:100])
            >> overloaded()
            << send(C, pdu(AssociateRJ(2, 3, 2))) << finished(C) << state(State.CLOSED))


def test_an_unreachable_upstream_rejects_transient() -> None:
    q = Placeholder(AssociationQuestion)
    assert (Script(RelayCore())
            >> client(RQ) << cancel(Timer.ARTIM) << pause(C) << start(deadline(q), DECIDE) << ask(q)
            >> answer(q, ForwardAssociation(target=UP))
            << cancel(deadline(q)) << start(Timer.CONNECT, CONNECT) << open_upstream(UP)
            >> unreachable("connection refused")
            << send(C, pdu(AssociateRJ(2, 3, 1))) << finished(C) << state(State.CLOSED))


def test_a_rejected_association_sends_exactly_the_verdicts_codes() -> None:
    q = Placeholder(AssociationQuestion)
    assert (Script(RelayCore())
            >> client(RQ) << cancel(Timer.ARTIM) << pause(C) << start(deadline(q), DECIDE) << ask(q)
            >> answer(q, RejectAssociation(reason_text="unknown PACS", reason=7))
            << cancel(deadline(q)) << send(C, pdu(AssociateRJ(1, 1, 7))) << finished(C) << state(State.CLOSED))


def test_release_collision_forwards_both_requests_and_both_replies_then_closes() -> None:
    assert (established(RelayCore())
            >> client(RELEASE_RQ_BYTES) << send(S, RELEASE_RQ_BYTES) << state(State.RELEASE_BY_CLIENT)
            >> server(RELEASE_RQ_BYTES) << send(C, RELEASE_RQ_BYTES) << state(State.RELEASE_COLLISION)
            >> server(RELEASE_RP_BYTES) << send(C, RELEASE_RP_BYTES) << state(State.RELEASE_COLLISION_HALF)
            >> client(RELEASE_RP_BYTES)
            << send(S, RELEASE_RP_BYTES) << cancel(Timer.IDLE) << start(Timer.ARTIM, ARTIM) << state(State.CLOSING)
            >> eof(S) << finished(C, S) << state(State.CLOSED))


def test_idle_timeout_aborts_both_sides() -> None:
    assert (established(RelayCore(), logs=True)
            >> expire(Timer.IDLE)
            << send(C, pdu(Abort(2, 0))) << send(S, pdu(Abort(2, 0)))
            << log("warning", f"no traffic for {IDLE:g} s; A-ABORT") << finished(C, S)
            << log("info", "association closed: no traffic") << state(State.CLOSED))


def test_artim_closes_a_connection_that_never_sends_a_request() -> None:
    assert (Script(RelayCore(), logs=True)
            >> opened() << start(Timer.ARTIM, ARTIM)
            >> expire(Timer.ARTIM) << finished(C) << log("info", "no A-ASSOCIATE-RQ within 30 s (ARTIM)")
            << state(State.CLOSED))


def test_artim_aborts_both_when_the_server_never_answers_the_request() -> None:
    q = Placeholder(AssociationQuestion)
    assert (Script(RelayCore())
            >> client(RQ) << cancel(Timer.ARTIM) << pause(C) << start(deadline(q), DECIDE) << ask(q)
            >> answer(q, ForwardAssociation(target=UP))
            << cancel(deadline(q)) << start(Timer.CONNECT, CONNECT) << open_upstream(UP)
            >> connected() << cancel(Timer.CONNECT) << send(S, RQ) << start(Timer.ARTIM, ARTIM) << resume(C)
            >> expire(Timer.ARTIM)
            << send(C, pdu(Abort(2, 0))) << send(S, pdu(Abort(2, 0))) << finished(C, S) << state(State.CLOSED))


# -- shutdown in each state: A-ABORT where an association is live, a plain close before ------------------

def _to(target: State) -> Script:
    """A core brought to ``target`` through the exact set-up (questions left pending where needed)."""
    q = Placeholder(AssociationQuestion)
    review = Placeholder(AcceptQuestion)
    script = Script(RelayCore()) >> opened() << start(Timer.ARTIM, ARTIM)
    if target is State.AWAIT_RQ:
        return script
    script >> client(RQ) << cancel(Timer.ARTIM) << pause(C) << start(deadline(q), DECIDE) << ask(q)
    if target is State.DECIDING:
        return script
    script >> answer(q, ForwardAssociation(target=UP, review_ac=target is State.REVIEWING_AC))
    script << cancel(deadline(q)) << start(Timer.CONNECT, CONNECT) << open_upstream(UP)
    if target is State.CONNECTING:
        return script
    script >> connected() << cancel(Timer.CONNECT) << send(S, RQ) << start(Timer.ARTIM, ARTIM) << resume(C)
    if target is State.AWAIT_AC:
        return script
    if target is State.REVIEWING_AC:
        return script >> server(AC) << cancel(Timer.ARTIM) << pause(S) << start(deadline(review), DECIDE) << ask(review)
    script >> server(AC) << cancel(Timer.ARTIM) << send(C, AC) << start(Timer.IDLE, IDLE) << resume(S) << resume(C)
    if target is State.ESTABLISHED:
        return script
    if target is State.RELEASE_BY_CLIENT:
        return script >> client(RELEASE_RQ_BYTES) << send(S, RELEASE_RQ_BYTES)
    if target is State.RELEASE_BY_SERVER:
        return script >> server(RELEASE_RQ_BYTES) << send(C, RELEASE_RQ_BYTES)
    script >> client(RELEASE_RQ_BYTES) << send(S, RELEASE_RQ_BYTES)
    if target is State.CLOSING:
        return (script >> server(RELEASE_RP_BYTES)
                << send(C, RELEASE_RP_BYTES) << cancel(Timer.IDLE) << start(Timer.ARTIM, ARTIM))
    script >> server(RELEASE_RQ_BYTES) << send(C, RELEASE_RQ_BYTES)
    if target is State.RELEASE_COLLISION:
        return script
    return script >> server(RELEASE_RP_BYTES) << send(C, RELEASE_RP_BYTES)


_LIVE = (State.ESTABLISHED, State.RELEASE_BY_CLIENT, State.RELEASE_BY_SERVER, State.RELEASE_COLLISION,
         State.RELEASE_COLLISION_HALF)


@pytest.mark.parametrize("where", [s for s in State if s is not State.CLOSED], ids=lambda s: s.name)
def test_shutdown_in_each_state(where: State) -> None:
    script = _to(where) << state(where)
    assert script
    script >> shutdown()
    if where in _LIVE:  # an association both ends know: each is told (A-ABORT), then closed
        script << send(C, pdu(Abort(2, 0))) << send(S, pdu(Abort(2, 0))) << finished(C, S)
    elif where in (State.AWAIT_AC, State.REVIEWING_AC, State.CLOSING):  # the server's transport is up
        script << finished(C, S)
    else:  # no upstream transport yet
        script << finished(C)
    assert script << state(State.CLOSED)
    assert not script.core.shutdown()  # once closed, the core answers nothing more


def test_a_client_that_leaves_while_connecting_closes_the_late_upstream() -> None:
    assert (_to(State.CONNECTING)
            >> lost(C) << finished(C) << state(State.CLOSED)
            >> connected() << close(S))


def test_a_refused_c_store_leaves_none_of_its_data_and_the_next_store_passes() -> None:
    """The refused request's data set (several PDUs, gathered for the question) is never forwarded; the
    refusal names the instance; the next request, read in the same chunk, is asked only afterwards."""
    first = Placeholder(RequestQuestion, lambda q: q.command.message_id == 1)
    second = Placeholder(RequestQuestion, lambda q: q.command.message_id == 2)
    refused = message("C_STORE_RQ", b"\x00" * 5000, ctx=3, max_pdu=1024, MessageID=1, AffectedSOPClassUID=CT,
                      Priority=0, AffectedSOPInstanceUID="1.2.3.1")
    allowed = message("C_STORE_RQ", b"\x01" * 100, ctx=3, MessageID=2, AffectedSOPClassUID=CT, Priority=0,
                      AffectedSOPInstanceUID="1.2.3.2")
    refusal = message("C_STORE_RSP", MessageIDBeingRespondedTo=1, AffectedSOPClassUID=CT,
                      AffectedSOPInstanceUID="1.2.3.1", Status=0x0124, ErrorComment="consent restriction")
    assert (established(RelayCore(asks=EVERY_REQUEST))
            >> client(refused + allowed)
            << pause(C) << start(deadline(first), DECIDE) << ask(first)
            >> answer(first, Refuse(comment="consent restriction"))
            << cancel(deadline(first)) << send(C, refusal) << resume(C)
            << pause(C) << start(deadline(second), DECIDE) << ask(second)
            >> answer(second, Permit())
            << cancel(deadline(second)) << sent(S, allowed) << resume(C) << state(State.ESTABLISHED))
    assert first().data_set == b"\x00" * 5000 and first().data_set_complete


def told(kind: NoticeKind, code: tuple[int, ...]) -> Expect:
    """A notice of ``kind`` from the server carrying the PDU's own ``code`` fields."""
    return _expect(Tell, notice=Predicate(f"{kind.name} {code}", lambda n: n.kind is kind and n.side is S
                                          and n.code == code))


def test_a_server_abort_is_forwarded_and_ends_the_association_and_the_policy_hears_of_it() -> None:
    assert (established(RelayCore())
            >> server(Abort(2, 6).encode())
            << told(NoticeKind.ABORTED, (2, 6)) << send(C, Abort(2, 6).encode()) << finished(C, S)
            << state(State.CLOSED))


def test_a_server_rejection_is_forwarded_and_the_policy_hears_its_codes() -> None:
    q = Placeholder(AssociationQuestion)
    rejection = AssociateRJ(1, 2, 1).encode()
    assert (Script(RelayCore())
            >> opened() << start(Timer.ARTIM, ARTIM) << state(State.AWAIT_RQ)
            >> client(RQ)
            << cancel(Timer.ARTIM) << pause(C) << start(deadline(q), DECIDE) << ask(q) << state(State.DECIDING)
            >> answer(q, ForwardAssociation(target=UP))
            << cancel(deadline(q)) << start(Timer.CONNECT, CONNECT) << open_upstream(UP) << state(State.CONNECTING)
            >> connected()
            << cancel(Timer.CONNECT) << send(S, RQ) << start(Timer.ARTIM, ARTIM) << resume(C)
            << state(State.AWAIT_AC)
            >> server(rejection)
            << told(NoticeKind.REJECTED, (1, 2, 1)) << send(C, rejection) << finished(C, S) << state(State.CLOSED))


def test_a_client_that_vanishes_mid_association_gets_the_server_an_a_abort() -> None:
    assert (established(RelayCore())
            >> lost(C)
            << send(S, pdu(Abort(2, 0))) << finished(C, S) << state(State.CLOSED)
            >> lost(S))  # nothing more: the core is closed


def test_a_client_that_half_closes_after_its_release_request_still_gets_the_reply() -> None:
    assert (established(RelayCore())
            >> client(RELEASE_RQ_BYTES) << send(S, RELEASE_RQ_BYTES)
            >> eof(C) << state(State.RELEASE_BY_CLIENT)  # PS3.8 9.2.2: waiting for the A-RELEASE-RP
            >> server(RELEASE_RP_BYTES)
            << send(C, RELEASE_RP_BYTES) << cancel(Timer.IDLE) << start(Timer.ARTIM, ARTIM) << finished(C, S)
            << state(State.CLOSED))


# -- the script itself fails when the core does something else (else every playbook above could pass) --

def test_a_script_fails_on_a_different_command_a_missing_one_and_an_unexpected_one() -> None:
    with pytest.raises(AssertionError, match=r"command differs(?s:.*)- << ResumeReading\(CLIENT\)"
                                             r"(?s:.*)\+ << PauseReading\(CLIENT\)"):
        assert Script(RelayCore()) >> client(RQ) << cancel(Timer.ARTIM) << resume(C)
    with pytest.raises(AssertionError, match=r"none came(?s:.*)- << Close\(CLIENT\)"):
        assert Script(RelayCore()) >> opened() << start(Timer.ARTIM, ARTIM) << close(C)
    with pytest.raises(AssertionError, match=r"nobody expected at the end(?s:.*)\+ << Ask\(AssociationQuestion"):
        assert Script(RelayCore()) >> client(RQ) << cancel(Timer.ARTIM) << pause(C)


def test_a_script_that_failed_fails_again_when_asserted_later() -> None:
    script = Script(RelayCore()) >> opened() << close(C)
    with pytest.raises(AssertionError, match="command differs"):
        assert script
    with pytest.raises(AssertionError, match="command differs"):
        assert script >> client(RQ)


def test_a_placeholder_binds_once_and_then_matches_only_its_own_question() -> None:
    q = Placeholder(RequestQuestion)
    script = established(RelayCore(asks=EVERY_REQUEST))
    assert script >> client(echo(5)) << pause(C) << start(deadline(q), DECIDE) << ask(q)
    with pytest.raises(AssertionError, match="command differs"):
        # the deadline of a question that is not q: a fresh core asks its own question
        other = established(RelayCore(asks=EVERY_REQUEST))
        assert other >> client(echo(5)) << pause(C) << start(deadline(q), DECIDE)


def cancel_find(number: int, ctx: int | None = None) -> bytes:
    return message("C_CANCEL_RQ", ctx=ctx, MessageIDBeingRespondedTo=number)


def test_a_c_cancel_on_another_context_than_its_request_is_dropped_and_one_on_the_same_passes() -> None:
    """PS3.7 9.3.2.3: a C-CANCEL travels on the presentation context of the request it cancels. One on any
    other context (accepted or not) is a message the PACS may read differently from the agent: dropped."""
    find_context = 1
    assert (established(RelayCore(asks=NO_REQUEST))
            >> client(find(3)) << send(S, find(3))
            >> client(cancel_find(3, ctx=7))  # the Verification context
            << tell(NoticeKind.VIOLATION, C) << state(State.ESTABLISHED)
            >> client(cancel_find(3, ctx=99))  # never proposed
            << tell(NoticeKind.VIOLATION, C) << state(State.ESTABLISHED)
            >> client(cancel_find(3, ctx=find_context)) << send(S, cancel_find(3, ctx=find_context))
            >> server(find_done(3)) << send(C, find_done(3)) << state(State.ESTABLISHED))
