"""The asyncio driver (``_Association``, ``_SideProtocol``) over fake transports with a clock advanced by
hand: its timers, policies that never answer or that raise, backpressure, and the order in which verdicts
are applied (uvicorn's protocol tests; the listener and shutdown are in test_aio_listener.py). No socket
is opened; virtual minutes pass in milliseconds (:mod:`tests.support.fakeio`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from dicomwire.aio import WRITE_HIGH_WATER
from dicomwire.association import Side
from dicomwire.commands import NoticeKind, Timer
from dicomwire.dimse import CommandField
from dicomwire.limits import RelayLimits
from dicomwire.pdu import RELEASE_RP_BYTES, Abort, AssociateRJ, decode_pdu
from dicomwire.policy import NO_REQUEST
from dicomwire.questions import (
    AcceptQuestion,
    AssociationQuestion,
    ForwardAssociation,
    Permit,
    Question,
    RequestQuestion,
    ResponseQuestion,
    Verdict,
)
from tests.support.fakeio import ManualLoop, Policies, Stalled, run
from tests.support.site import Never, Site, decided, ending, released, store
from tests.unit.test_relay_core import AC, RQ
from tests.unit.test_relay_playbooks import echo, echo_response, find, find_done, match

LIMITS = RelayLimits()


# -- timers ---------------------------------------------------------------------------------------------


def test_artim_closes_a_connection_that_never_sends_a_request_and_frees_everything() -> None:
    async def scenario(loop: ManualLoop) -> None:
        site = Site(loop, Policies())
        client = await site.connect()
        assert site.server.live == 0 and site.server.admission.total == 1  # pending: no slot without a request
        await loop.advance(LIMITS.artim_timeout - 0.001)
        assert not client.closing
        await loop.advance(0.001)
        assert client.closing and not client.aborted and client.lost and client.take() == b""
        end = ending(site.policy)
        assert "ARTIM" in end.reason and not end.established
        assert site.server.live == 0 and site.server.admission.total == 0 and not site.server.associations

    run(scenario)


def test_artim_aborts_both_sides_when_the_server_never_answers_the_request() -> None:
    async def scenario(loop: ManualLoop) -> None:
        site = Site(loop, Policies())
        client = await site.connect()
        await loop.advance(5)
        client.feed(RQ)
        server = await site.upstream()
        assert server.take() == RQ
        await loop.advance(LIMITS.artim_timeout - 0.001)  # ARTIM restarts with the request sent upstream
        assert not server.closing
        await loop.advance(0.001)
        assert decode_pdu(client.take()) == Abort(2, 0) and decode_pdu(server.take()) == Abort(2, 0)
        assert client.lost and server.lost and "no A-ASSOCIATE-AC/RJ" in ending(site.policy).reason

    run(scenario)


def test_the_connect_timer_rejects_transient_when_the_upstream_never_answers() -> None:
    async def scenario(loop: ManualLoop) -> None:
        site = Site(loop, Policies())
        client = await site.connect()
        client.feed(RQ)
        dial = await site.dial()
        assert (dial.host, dial.port) == ("pacs.example", 104)
        await loop.advance(LIMITS.connect_timeout)
        assert decode_pdu(client.take()) == AssociateRJ(2, 3, 1) and client.lost
        assert "no connection within" in ending(site.policy).reason

    run(scenario)


def test_an_association_that_ends_while_connecting_cancels_the_connection_attempt() -> None:
    async def scenario(loop: ManualLoop) -> None:
        site = Site(loop, Policies())
        client = await site.connect()
        client.feed(RQ)
        dial = await site.dial()
        await loop.advance(LIMITS.connect_timeout)
        assert client.lost
        assert dial.cancelled

    run(scenario)


def test_the_idle_timer_counts_from_the_last_byte_and_aborts_both_sides() -> None:
    async def scenario(loop: ManualLoop) -> None:
        site = Site(loop, Policies(asks=NO_REQUEST))
        client, server = await site.associate()
        await loop.advance(400)
        client.feed(echo(1))
        server.feed(echo_response(1))  # traffic at t=400: quiet from then on
        await loop.settle()
        assert server.take() == echo(1) and client.take() == echo_response(1)
        await loop.advance(LIMITS.idle_timeout - 0.001)
        assert not client.closing and not server.closing
        await loop.advance(0.001)
        assert decode_pdu(client.take()) == Abort(2, 0) and decode_pdu(server.take()) == Abort(2, 0)
        end = ending(site.policy)
        assert end.reason.startswith("no traffic") and end.established

    run(scenario)


def test_a_loop_with_nothing_to_do_stops_the_test_instead_of_sleeping() -> None:
    async def scenario(loop: ManualLoop) -> None:
        site = Site(loop, Policies())
        await site.connect()
        await asyncio.wait_for(loop.create_future(), timeout=60)  # only a clock moved by hand ends this

    with pytest.raises(Stalled, match="advance the clock"):
        run(scenario)


# -- policies that never answer, or raise ---------------------------------------------------------------


def test_an_association_question_never_answered_is_rejected_at_its_deadline() -> None:
    never = Never()

    async def scenario(loop: ManualLoop) -> None:
        site = Site(loop, Policies(decided({AssociationQuestion: never})))
        client = await site.connect()
        client.feed(RQ)
        await loop.advance(LIMITS.decision_timeout - 0.001)
        assert client.take() == b"" and not loop.dials
        await loop.advance(0.001)
        assert decode_pdu(client.take()) == AssociateRJ(2, 3, 1) and client.lost
        assert not ending(site.policy).established
        assert site.server.admission.total == 0  # no longer an anonymous connection holding a share
        (waiting,) = never.futures
        assert waiting.cancelled()  # the wait for the policy ended with the association

    run(scenario)


def test_a_request_never_answered_is_refused_at_its_deadline_and_the_association_goes_on() -> None:
    never = Never()

    async def scenario(loop: ManualLoop) -> None:
        site = Site(loop, Policies(decided({RequestQuestion: lambda q: never(q) if q.command.message_id == 1
                                            else Permit()})))
        client, server = await site.associate()
        client.feed(echo(1))
        await loop.advance(LIMITS.decision_timeout)
        assert client.take() == echo_response(1, 0x0124, "Authorization decision timed out")
        assert server.take() == b"" and client.reading
        assert [n.kind for n in site.policy.notices] == [NoticeKind.DECISION_TIMEOUT]
        client.feed(echo(2))
        await loop.settle()
        assert server.take() == echo(2)
        (waiting,) = never.futures
        assert waiting.cancelled()  # the policy's wait ended with the deadline (see the test below)
        released(client, server)
        await loop.settle()
        assert ending(site.policy).reason == "released"

    run(scenario)


def test_a_decision_that_comes_after_its_deadline_is_never_acted_on_by_the_policy() -> None:
    """The relay refused the request at its deadline; a policy still deciding must not go on to write
    a permit for it (the server agent logs each decision it concludes, and registers a permitted
    C-MOVE for the return path): the decision log would show a permit for a request the PACS never got.
    Before the fix the policy's task ran on and concluded 'permit' 5 s after the refusal."""
    concluded: list[int | None] = []

    async def slow_pdp(question: Question) -> Verdict:
        await asyncio.sleep(LIMITS.decision_timeout + 5)  # a PDP answering late
        assert isinstance(question, RequestQuestion)
        concluded.append(question.command.message_id)  # what ServerAssociation._concluded records
        return Permit()

    async def scenario(loop: ManualLoop) -> None:
        site = Site(loop, Policies(decided({RequestQuestion: slow_pdp})))
        client, server = await site.associate()
        client.feed(echo(1))
        await loop.advance(LIMITS.decision_timeout)
        assert client.take() == echo_response(1, 0x0124, "Authorization decision timed out")
        await loop.advance(10)
        assert server.take() == b"" and concluded == []
        released(client, server)
        await loop.settle()
        assert ending(site.policy).reason == "released" and concluded == []

    run(scenario)


def _failing(asynchronous: bool) -> Callable[[Question], Any]:
    """A policy that raises at once, or returns an awaitable that raises a second later."""
    def fail(question: Question) -> Any:
        if asynchronous:
            async def later() -> Verdict:
                await asyncio.sleep(1)  # a PDP call that fails after a while
                raise ConnectionError("PDP unreachable")
            return later()
        raise RuntimeError("policy bug")
    return fail


def _review(question: Question) -> Verdict:
    return Permit(review="find")


@pytest.mark.parametrize("asynchronous", [False, True], ids=["raises", "awaitable-raises"])
def test_a_policy_that_fails_on_the_association_question_rejects_transient(
        asynchronous: bool, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(loop: ManualLoop) -> None:
        site = Site(loop, Policies(decided({AssociationQuestion: _failing(asynchronous)})))
        client = await site.connect()
        client.feed(RQ)
        await loop.advance(1)
        assert decode_pdu(client.take()) == AssociateRJ(2, 3, 1) and client.lost and not loop.dials
        assert "authorization failed (fail closed)" in ending(site.policy).reason

    with caplog.at_level(logging.INFO, logger="dicomwire.relay"):
        run(scenario)
    assert "policy failed on AssociationQuestion" in caplog.text


@pytest.mark.parametrize("asynchronous", [False, True], ids=["raises", "awaitable-raises"])
def test_a_policy_that_fails_on_the_accept_review_aborts_the_server_and_rejects_the_client(
        asynchronous: bool, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(loop: ManualLoop) -> None:
        forward = ForwardAssociation(target=Policies().target, review_ac=True)
        site = Site(loop, Policies(decided({AssociationQuestion: lambda q: forward,
                                            AcceptQuestion: _failing(asynchronous)})))
        client = await site.connect()
        client.feed(RQ)
        server = await site.upstream()
        server.feed(AC)
        await loop.advance(1)
        assert server.take() == RQ + Abort(0, 0).encode()  # A-ABORT (service user): the PACS accepted it
        assert decode_pdu(client.take()) == AssociateRJ(2, 3, 1)
        assert client.lost and server.lost
        assert ending(site.policy).reason == "rejected: authorization failed (fail closed)"

    with caplog.at_level(logging.INFO, logger="dicomwire.relay"):
        run(scenario)
    assert "policy failed on AcceptQuestion" in caplog.text


@pytest.mark.parametrize("asynchronous", [False, True], ids=["raises", "awaitable-raises"])
def test_a_policy_that_fails_on_a_request_refuses_it_and_the_association_goes_on(
        asynchronous: bool, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(loop: ManualLoop) -> None:
        site = Site(loop, Policies(decided({RequestQuestion: lambda q: _failing(asynchronous)(q)
                                            if q.command.message_id == 1 else Permit()})))
        client, server = await site.associate()
        client.feed(echo(1))
        await loop.advance(1)
        assert client.take() == echo_response(1, 0x0124, "authorization failed (fail closed)")
        assert server.take() == b""
        client.feed(echo(2))
        await loop.settle()
        assert server.take() == echo(2)
        released(client, server)
        await loop.settle()
        assert ending(site.policy).reason == "released"

    with caplog.at_level(logging.INFO, logger="dicomwire.relay"):
        run(scenario)
    assert "policy failed on RequestQuestion" in caplog.text


@pytest.mark.parametrize("asynchronous", [False, True], ids=["raises", "awaitable-raises"])
def test_a_policy_that_fails_on_a_response_drops_it_and_the_association_goes_on(
        asynchronous: bool, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(loop: ManualLoop) -> None:
        def response(question: Question) -> Any:
            if question.data_set.endswith(b"P1"):  # type: ignore[union-attr]
                return _failing(asynchronous)(question)
            return Permit()
        site = Site(loop, Policies(decided({RequestQuestion: _review, ResponseQuestion: response})))
        client, server = await site.associate()
        client.feed(find(1))
        await loop.settle()
        assert server.take() == find(1)
        server.feed(match(1, b"P1") + match(1, b"P2") + find_done(1))
        await loop.advance(1)
        assert client.take() == match(1, b"P2") + find_done(1)  # the failed review's match is not shown
        released(client, server)
        await loop.settle()
        assert ending(site.policy).reason == "released"

    with caplog.at_level(logging.INFO, logger="dicomwire.relay"):
        run(scenario)
    assert "policy failed on ResponseQuestion" in caplog.text


def test_notice_and_close_hooks_that_raise_are_logged_and_change_nothing(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(loop: ManualLoop) -> None:
        site = Site(loop, Policies(asks=NO_REQUEST, notice_raises=True, close_raises=True))
        client, server = await site.associate()
        client.feed(find(3) + echo(3))  # the C-ECHO reuses an outstanding Message ID: a notice
        await loop.settle()
        assert server.take() == find(3)
        assert client.take() == echo_response(3, 0x0210, "Message ID already outstanding")
        assert [n.kind for n in site.policy.notices] == [NoticeKind.VIOLATION]
        server.feed(find_done(3))
        released(client, server)
        await loop.settle()
        assert client.take() == find_done(3) + RELEASE_RP_BYTES
        assert ending(site.policy).reason == "released"
        assert site.server.live == 0 and not site.server.associations  # the slot is free all the same

    with caplog.at_level(logging.INFO, logger="dicomwire.relay"):
        run(scenario)
    assert "policy failed on a notice" in caplog.text and "policy failed to close" in caplog.text


def test_a_factory_that_raises_closes_the_connection_and_holds_nothing(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(loop: ManualLoop) -> None:
        site = Site(loop, Policies(open_raises=True))
        client = await site.connect()
        await loop.settle()
        assert client.aborted and client.lost
        assert site.server.live == 0 and site.server.admission.total == 0 and not site.server.associations

    with caplog.at_level(logging.INFO, logger="dicomwire.relay"):
        run(scenario)
    assert "policy factory failed" in caplog.text


def test_close_is_called_once_with_the_ending_however_many_ways_the_association_ends() -> None:
    async def scenario(loop: ManualLoop) -> None:
        site = Site(loop, Policies(asks=NO_REQUEST))
        client, server = await site.associate()
        client.feed(echo(1))
        server.feed(echo_response(1))
        await loop.settle()
        client.drop()  # the client's host vanishes: the server is told by A-ABORT
        await loop.settle()
        # Both transports report their loss (each a chance to close twice), then every timer's time passes.
        assert decode_pdu(server.take()[-10:]) == Abort(2, 0) and server.lost and client.lost
        await loop.advance(LIMITS.idle_timeout + LIMITS.artim_timeout)
        end = ending(site.policy)
        assert end.reason == "client closed the connection in state 'established'" and end.established
        assert end.bytes_in == {Side.CLIENT: len(RQ) + len(echo(1)), Side.SERVER: len(AC) + len(echo_response(1))}
        assert end.messages == {Side.CLIENT: 1, Side.SERVER: 1}
        assert not site.server.associations and site.server.live == 0

    run(scenario)


# -- flow control and ordering ---------------------------------------------------------------------------


def test_a_full_upstream_stops_reading_the_client_until_it_drains() -> None:
    async def scenario(loop: ManualLoop) -> None:
        site = Site(loop, Policies(asks=NO_REQUEST))
        client, server = await site.associate()
        server.stall()  # the PACS stops reading
        big = store(1, 2 * WRITE_HIGH_WATER)
        client.feed(big)
        assert server.writing_paused and not client.reading and client.reading_calls == ["pause"]
        assert server.reading  # the other direction is not affected
        later = store(2, 1000)
        client.feed(later)  # waits in TCP: not read while the upstream is full
        assert server.get_write_buffer_size() == len(big)
        server.drain()
        await loop.settle()
        assert client.reading and client.reading_calls == ["pause", "resume"]
        assert server.take() == big + later

    run(scenario)


def test_reading_resumes_only_when_the_question_is_answered_and_the_upstream_has_drained() -> None:
    async def scenario(loop: ManualLoop) -> None:
        echo_verdict: asyncio.Future[Verdict] = loop.create_future()

        def request(question: Question) -> Any:
            if question.command.command_field == CommandField.C_ECHO_RQ:  # type: ignore[union-attr]
                return echo_verdict
            return Permit()
        site = Site(loop, Policies(decided({RequestQuestion: request})))
        client, server = await site.associate()
        server.stall()
        client.feed(store(1, 2 * WRITE_HIGH_WATER) + echo(2))  # the store fills the upstream; the echo is asked
        await loop.settle()
        association = next(iter(site.server.associations))
        assert association.write_paused[Side.SERVER] and association.core_paused[Side.CLIENT]
        assert not client.reading
        client.reading_calls.clear()
        server.drain()  # the upstream has room again, but the question is still open
        await loop.settle()
        assert not client.reading and client.reading_calls == []
        echo_verdict.set_result(Permit())
        await loop.settle()
        assert client.reading and client.reading_calls == ["resume"]
        assert server.take().endswith(echo(2))

    run(scenario)


def test_verdicts_given_at_once_are_applied_after_the_batch_in_the_order_asked() -> None:
    """Four responses in one read, each asked about and answered at once: every question is put before
    any verdict is applied (the policy sees the batch whole), the client gets them in the server's
    order, and every deadline started for them is cancelled."""
    async def scenario(loop: ManualLoop) -> None:
        seen_by_client: list[int] = []

        def response(question: Question) -> Verdict:
            seen_by_client.append(len(client.received))
            return Permit()
        site = Site(loop, Policies(decided({RequestQuestion: _review, ResponseQuestion: response})))
        client, server = await site.associate()
        client.feed(find(1))
        await loop.settle()
        assert server.take() == find(1)
        answers = match(1, b"P1") + match(1, b"P2") + match(1, b"P3") + find_done(1)
        server.feed(answers)
        await loop.settle()
        assert seen_by_client == [0, 0, 0, 0]  # no verdict applied while the batch was being asked
        assert client.take() == answers
        (association,) = site.server.associations
        assert set(association.timers) == {Timer.IDLE}  # no deadline left running
        await loop.advance(LIMITS.decision_timeout)
        assert site.policy.notices == []

    run(scenario)
