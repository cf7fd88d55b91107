"""Workstation agent failover (issue 15 item 6): a route lists several server agents; when one does not
answer, the next is tried, and one that failed is tried last for a while (per-address backoff)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from agent.config import Route
from dicomwire.upstream import AddressHealth, Upstream, connect
from tomlconf import ConfigError


def dead_port() -> int:
    """A loopback port nothing listens on (bound, then closed: connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_address_that_failed_is_tried_last_for_a_doubling_while_and_a_success_clears_it() -> None:
    now = [0.0]
    health = AddressHealth(base=1.0, cap=4.0, clock=lambda: now[0])
    a, b, c = ("a", 1), ("b", 1), ("c", 1)
    assert health.order([a, b, c]) == [a, b, c]
    assert health.failed(a) == 1.0
    assert health.order([a, b, c]) == [b, c, a]
    now[0] = 1.5
    assert health.order([a, b, c]) == [a, b, c]  # its backoff is over: first again, as configured
    assert [health.failed(a) for _ in range(3)] == [2.0, 4.0, 4.0]  # in a row: doubling, capped
    health.failed(b)
    assert health.order([a, b, c]) == [c, b, a]  # both backing off: still tried, the soonest first
    health.succeeded(a)
    assert health.order([a, b, c]) == [a, c, b]


def test_a_connection_goes_to_the_next_address_when_the_first_is_dead() -> None:
    async def body() -> tuple[int, list[tuple[str, int]]]:
        accepted: list[int] = []

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(writer.get_extra_info("sockname")[1])
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        live, dead = server.sockets[0].getsockname()[1], dead_port()
        health = AddressHealth()
        target = Upstream(host="127.0.0.1", port=dead, fallbacks=(("127.0.0.1", live),), connect_timeout=2.0,
                          health=health)
        loop = asyncio.get_running_loop()
        await connect(loop, asyncio.Protocol, target)
        await asyncio.sleep(0.1)
        order = target.candidates()
        server.close()
        await server.wait_closed()
        return accepted[0] if accepted else 0, order

    accepted, order = asyncio.run(body())
    assert accepted != 0
    assert order[0][1] == accepted  # the dead address is tried last from now on


def test_when_every_address_is_dead_the_last_failure_is_raised() -> None:
    async def body() -> None:
        target = Upstream(host="127.0.0.1", port=dead_port(), fallbacks=(("127.0.0.1", dead_port()),),
                          connect_timeout=2.0, health=AddressHealth())
        await connect(asyncio.get_running_loop(), asyncio.Protocol, target)

    with pytest.raises(ConnectionRefusedError):
        asyncio.run(body())


def test_a_route_reads_its_addresses_in_order() -> None:
    route = Route.model_validate({"host": "gw1a.example", "port": 2762, "addresses": ["gw1b.example:2762",
                                                                                     "gw1c.example:2763"]})
    assert route.addresses == (("gw1b.example", 2762), ("gw1c.example", 2763))
    assert route.connect_timeout == 5.0
    with pytest.raises((ConfigError, ValueError)):
        Route.model_validate({"host": "gw1a.example", "port": 2762, "addresses": ["no-port"]})
