"""The listener over fake connections with a clock advanced by hand: admission, TLS handshakes, slots,
the pre-association byte budget, and shutdown in order (stop accepting, let associations finish until
a deadline, A-ABORT the rest, abort what is left). No socket is opened (:mod:`tests.support.fakeio`).
"""

from __future__ import annotations

import ssl
from typing import Any

from dicomwire.aio import WRITE_HIGH_WATER
from dicomwire.limits import RelayLimits
from dicomwire.pdu import Abort, AssociateRJ, decode_pdu
from dicomwire.policy import NO_REQUEST
from dicomwire.questions import AssociationQuestion, ForwardAssociation, Question
from tests.support.fakeio import FakeSocket, ManualLoop, Policies, run
from tests.support.site import Never, Site, decided, ending, released, store
from tests.unit.test_relay_core import RQ


def test_a_failed_tls_handshake_leaves_nothing_behind() -> None:
    async def scenario(loop: ManualLoop) -> None:
        async def fails(loop: ManualLoop) -> None:
            raise ssl.SSLError("handshake failure")

        site = Site(loop, Policies(), ssl=ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
        sock = FakeSocket(handshake=fails)
        site.server._accepted(sock, sock.peer)  # type: ignore[arg-type]
        await loop.settle()
        assert sock.closed and sock.transport is None and not site.policies.opened
        assert site.server.admission.total == 0 and not site.server.associations and site.server.live == 0

    run(scenario)


def test_the_peer_certificate_and_address_reach_the_policy() -> None:
    async def scenario(loop: ManualLoop) -> None:
        certificate = {"subject": ((("commonName", "ws1.example"),),)}
        site = Site(loop, Policies(), ssl=ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), name="main")
        await site.connect(FakeSocket(("192.0.2.7", 50123), certificate=certificate))
        info = site.policy.connection
        assert (info.peer, info.peer_certificate, info.listener) == (("192.0.2.7", 50123), certificate, "main")

    run(scenario)


def test_a_relay_without_a_free_slot_rejects_at_the_first_byte() -> None:
    async def scenario(loop: ManualLoop) -> None:
        site = Site(loop, Policies(), max_associations=1)
        await site.associate()
        second = await site.connect()
        second.feed(RQ[:1])
        await loop.settle()
        assert decode_pdu(second.take()) == AssociateRJ(2, 3, 2) and second.lost
        assert len(site.policies.opened[1].questions) == 0 and site.server.live == 1

    run(scenario)


def test_connections_that_send_nothing_or_part_of_a_request_hold_no_slot() -> None:
    """A TCP connection up but silent (a load balancer's check that holds it, a port scanner, an
    attacker refreshing it every ARTIM period), or one trickling an A-ASSOCIATE-RQ, is a pending
    connection (bounded by admission), not an association. Before the fix it took a slot the moment
    its transport was up: on a plain listener ``max_associations`` silent connections (20 from one
    address on a site of 20 slots; seven addresses for the default 200) refused every user with
    A-ASSOCIATE-RJ 2/3/2 for as long as they were renewed."""
    async def scenario(loop: ManualLoop) -> None:
        site = Site(loop, Policies(), max_associations=1)
        silent = await site.connect(FakeSocket(("192.0.2.66", 40001)))
        trickling = await site.connect(FakeSocket(("192.0.2.66", 40002)))
        trickling.feed(RQ[:20])
        await loop.settle()
        assert site.server.live == 0 and site.server.admission.total == 2
        await site.associate()  # the user is served
        assert site.server.live == 1
        trickling.feed(RQ[20:])  # the slot is taken now: this one is told so once its request is whole
        await loop.settle()
        assert decode_pdu(trickling.take()) == AssociateRJ(2, 3, 2) and trickling.lost
        assert silent.take() == b"" and not silent.lost
        assert [len(p.questions) for p in site.policies.opened] == [0, 0, 1]  # only the user's was asked

    run(scenario)


def test_a_connection_over_the_pre_association_byte_budget_is_rejected() -> None:
    async def scenario(loop: ManualLoop) -> None:
        site = Site(loop, Policies(), limits=RelayLimits(max_pending_bytes=len(RQ) - 1))
        client = await site.connect()
        client.feed(RQ)
        await loop.settle()
        assert decode_pdu(client.take()) == AssociateRJ(2, 3, 2) and client.lost
        assert site.server.admission.bytes == 0 and site.server.admission.total == 0

    run(scenario)


def test_shutdown_lets_associations_finish_then_aborts_the_rest_within_its_deadline() -> None:
    never = Never()

    async def scenario(loop: ManualLoop) -> None:
        def associate(question: Question) -> Any:
            if question.rq.calling_ae.startswith("SLOW"):  # type: ignore[union-attr]
                return never(question)
            return ForwardAssociation(target=Policies().target)
        site = Site(loop, Policies(decided({AssociationQuestion: associate}), asks=NO_REQUEST))
        finishing = await site.associate()
        idle = await site.associate()
        deciding = await site.connect()
        deciding.feed(RQ.replace(b"FINDSCU         ", b"SLOWSCU         ", 1))
        connecting = await site.connect()
        connecting.feed(RQ)
        await site.dial()  # never answered
        stop = loop.create_task(site.server.shutdown(deadline=5))
        await loop.advance(1)
        released(*finishing)  # the first finishes within the deadline
        await loop.advance(3.999)
        assert not stop.done() and not idle[0].closing
        await loop.advance(0.001)
        assert stop.done() and stop.result() is None
        assert decode_pdu(idle[0].take()) == Abort(2, 0) and decode_pdu(idle[1].take()) == Abort(2, 0)
        assert deciding.take() == b"" and deciding.lost and connecting.lost
        reasons = [ending(policy).reason for policy in site.policies.opened]
        assert reasons == ["released", "shutting down", "shutting down", "shutting down"]
        assert not site.server.associations and site.server.live == 0 and site.server.admission.total == 0

    run(scenario)


def test_shutdown_cancels_tls_handshakes_in_progress() -> None:
    async def scenario(loop: ManualLoop) -> None:
        async def hangs(loop: ManualLoop) -> None:
            await loop.create_future()

        site = Site(loop, Policies(), ssl=ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
        sock = FakeSocket(handshake=hangs)
        site.server._accepted(sock, sock.peer)  # type: ignore[arg-type]
        await loop.settle()
        assert site.server.admission.total == 1
        await site.server.shutdown(deadline=5)
        assert sock.closed and site.server.admission.total == 0 and not site.policies.opened

    run(scenario)


def test_shutdown_leaves_no_transport_open_even_to_a_peer_that_stopped_reading() -> None:
    async def scenario(loop: ManualLoop) -> None:
        site = Site(loop, Policies(asks=NO_REQUEST))
        client, server = await site.associate()
        client.stall()  # the client app stops reading
        server.feed(store(1, 2 * WRITE_HIGH_WATER))  # a C-STORE sub-operation it will never read
        await loop.settle()
        stop = loop.create_task(site.server.shutdown(deadline=5))
        await loop.advance(5 + 1)  # the deadline, then the last second shutdown() gives before aborting
        assert stop.done()
        assert client.lost and server.lost

    run(scenario)


def test_an_association_over_but_for_a_peer_that_stopped_reading_is_aborted_after_artim() -> None:
    """A transport still writing out what was queued to it after its association ended holds no slot, but
    a peer that never reads would keep it and its buffer forever: aborted after ARTIM (PS3.8 9.1.5)."""
    async def scenario(loop: ManualLoop) -> None:
        site = Site(loop, Policies(asks=NO_REQUEST), limits=RelayLimits(artim_timeout=3, idle_timeout=5))
        client, server = await site.associate()
        client.stall()  # the client stops reading: the relay stops reading the server (backpressure)
        server.feed(store(1, 2 * WRITE_HIGH_WATER))
        await loop.settle()
        await loop.advance(5 + 0.1)  # nothing moves: the idle timeout ends the association
        assert site.server.live == 0 and not client.lost  # over, no slot held, still flushing to the client
        await loop.advance(3 + 0.1)
        assert client.lost  # aborted: nothing is held for a peer that never reads

    run(scenario)


def test_the_addresses_of_one_ipv6_subscriber_count_as_one_source() -> None:
    """An IPv6 host is given a /64 and may use any of its 2^64 addresses: counted per address, one
    attacker held every pending connection of the listener (``max_pending_connections``) and no one
    else could connect. Counted as the login throttle counts them: by /64, an IPv4-mapped address as IPv4."""
    async def scenario(loop: ManualLoop) -> None:
        limits = RelayLimits(max_pending_per_source=3, max_pending_connections=10)
        site = Site(loop, Policies(), limits=limits)
        attacker = [FakeSocket((f"2001:db8:0:7::{n:x}", 40000 + n)) for n in range(1, 5)]
        for sock in attacker:
            site.server._accepted(sock, sock.peer)  # type: ignore[arg-type]
        mapped = [FakeSocket((f"::ffff:198.51.100.{n}", 40000)) for n in (7, 7)] + [FakeSocket(("198.51.100.7", 1))]
        mapped.append(FakeSocket(("198.51.100.7", 2)))
        for sock in mapped:
            site.server._accepted(sock, sock.peer)  # type: ignore[arg-type]
        await loop.settle()
        assert [s.closed for s in attacker] == [False, False, False, True]
        assert [s.closed for s in mapped] == [False, False, False, True]
        user = await site.connect(FakeSocket(("2001:db8:0:8::1", 40000)))  # another subscriber
        assert not user.lost and site.server.admission.total == 7

    run(scenario)
