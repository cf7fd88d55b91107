"""A listener out of file descriptors pauses accepting instead of spinning (found by bench/flood_bench.py:
1.28 million "Too many open files" lines in 43 s under a 1,024-descriptor limit)."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket

import pytest

from dicomwire import listener
from dicomwire.listener import RelayServer
from dicomwire.policy import TransparentPolicy
from dicomwire.upstream import Upstream


def test_accept_failing_pauses_the_listener_and_it_serves_again(caplog: pytest.LogCaptureFixture,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listener, "ACCEPT_PAUSE", 0.3)

    async def scenario() -> None:
        server = RelayServer(TransparentPolicy(Upstream(host="127.0.0.1", port=9)))
        await server.start()
        real = server._sock
        assert real is not None
        failures = 0

        class Exhausted:  # the listening socket, but accept() fails as it does at the descriptor limit
            def fileno(self) -> int:
                return real.fileno()

            def getsockname(self) -> object:
                return real.getsockname()

            def accept(self) -> tuple[socket.socket, object]:
                nonlocal failures
                failures += 1
                raise OSError(errno.EMFILE, "Too many open files")

        server._sock = Exhausted()  # type: ignore[assignment]
        client = socket.create_connection(server.address)  # readable: a connection waits in the backlog
        await asyncio.sleep(0.2)
        assert failures == 1  # one attempt, then the socket is not watched while paused
        await asyncio.sleep(0.3)
        assert 2 <= failures <= 3  # watched again after the pause: it tries, fails, pauses again
        server._sock = real
        await asyncio.sleep(0.5)
        assert server.associations or server.admission.total  # descriptors back: the waiting one is accepted
        client.close()
        await server.shutdown(0.1)

    with caplog.at_level(logging.ERROR, logger="dicomwire.relay"):
        asyncio.run(scenario())
    lines = [r for r in caplog.records if "accept failed" in r.getMessage()]
    assert 2 <= len(lines) <= 3 and "accepting again in 0.3 s" in lines[0].getMessage()
