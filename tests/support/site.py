"""A relay listener over fake connections, and the small policies its tests use (see :mod:`.fakeio`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from dicomwire.listener import RelayServer
from dicomwire.pdu import RELEASE_RP_BYTES, RELEASE_RQ_BYTES
from dicomwire.policy import Ending
from dicomwire.questions import Question, Verdict
from tests.support.fakeio import Dial, FakeSocket, FakeTransport, ManualLoop, Policies, Recorder, transparent
from tests.unit.test_relay_core import AC, CT, RQ, message


class Site:
    """A RelayServer whose connections are fake: ``connect`` is a client arriving through the listener's
    own admission path (``RelayServer._accepted``), ``upstream`` accepts the next upstream dial."""

    def __init__(self, loop: ManualLoop, policies: Policies, **server_args: Any) -> None:
        self.loop = loop
        self.policies = policies
        self.server = RelayServer(policies, **server_args)

    async def connect(self, sock: FakeSocket | None = None) -> FakeTransport:
        sock = sock or FakeSocket()
        self.server._accepted(sock, sock.peer)  # type: ignore[arg-type]
        await self.loop.settle()
        assert sock.transport is not None, "the connection never became a transport"
        return sock.transport

    async def dial(self) -> Dial:
        await self.loop.settle()
        assert self.loop.dials, "no upstream connection was asked for"
        return self.loop.dials.pop(0)

    async def upstream(self) -> FakeTransport:
        transport = (await self.dial()).accept()
        await self.loop.settle()
        return transport

    async def associate(self) -> tuple[FakeTransport, FakeTransport]:
        """A client whose association the server accepted: both transports, their bytes taken."""
        client = await self.connect()
        client.feed(RQ)
        server = await self.upstream()
        assert server.take() == RQ
        server.feed(AC)
        await self.loop.settle()
        assert client.take() == AC
        client.reading_calls.clear()  # set-up paused and resumed it: tests look at what comes after
        return client, server

    @property
    def policy(self) -> Recorder:
        (policy,) = self.policies.opened
        return policy


def ending(policy: Recorder) -> Ending:
    """The association's ending: close() was called exactly once."""
    assert len(policy.endings) == 1, f"close() called {len(policy.endings)} times"
    return policy.endings[0]


def decided(verdicts: dict[type, Callable[[Question], Any]]) -> Callable[[Recorder, Question], Any]:
    """Answer each question type with its function of the question; transparent for the others."""
    default = transparent(Policies().target)

    def decide(policy: Recorder, question: Question) -> Any:
        for kind, answer in verdicts.items():
            if isinstance(question, kind):
                return answer(question)
        return default(policy, question)
    return decide


class Never:
    """A policy decision point that never answers; the futures it handed out, to be checked."""

    def __init__(self) -> None:
        self.futures: list[asyncio.Future[Verdict]] = []

    def __call__(self, question: Question) -> Awaitable[Verdict]:
        future: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future


def released(client: FakeTransport, server: FakeTransport) -> None:
    """The client releases the association and, as the requestor does, closes its connection (PS3.8 9.2.2)."""
    client.feed(RELEASE_RQ_BYTES)
    server.feed(RELEASE_RP_BYTES)
    client.feed_eof()


def store(number: int, size: int) -> bytes:
    return message("C_STORE_RQ", bytes(size), ctx=3, max_pdu=16384, MessageID=number, AffectedSOPClassUID=CT,
                   Priority=0, AffectedSOPInstanceUID=f"1.2.3.{number}")


__all__ = ["Never", "Site", "decided", "ending", "released", "store"]
