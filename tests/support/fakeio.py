"""The asyncio driver without sockets: a loop whose clock a test advances by hand, fake transports, and
policies that answer, wait, or fail as told (uvicorn's protocol tests: a mock transport and loop).

:class:`ManualLoop` is a real asyncio event loop (``BaseEventLoop``: its tasks, futures, ``call_later``
and ``asyncio.wait`` timeouts behave as in production) with two things replaced:

* time: :meth:`ManualLoop.time` is a number the test moves with :meth:`ManualLoop.advance`, which runs
  the timers due on the way, each at its own time. When nothing is ready and a timer lies ahead, the
  loop does not sleep: it raises :class:`Stalled` (the test awaited something only time can bring and
  forgot to advance the clock), so no test can hang or wait in real time;
* the network: ``connect_accepted_socket`` (the listener's client side) and ``create_connection`` (the
  upstream) give the protocol a :class:`FakeTransport`. An upstream connection is a :class:`Dial` the
  test accepts or fails when it chooses.

We chose a real loop with a hand-moved clock over a mock loop (uvicorn's ``MockLoop``): ``RelayServer.shutdown``
waits with ``asyncio.wait(timeout=...)`` and the driver runs policy verdicts as tasks, which a mock loop
would have to re-implement, and a re-implementation could hide the very ordering bugs these tests look for.

A :class:`FakeTransport` keeps what was written to it (``received``: what the peer has read; ``buffer``:
what it has not, while :meth:`FakeTransport.stall` says the peer stops reading), calls ``pause_writing``
/ ``resume_writing`` at its water marks, holds bytes fed while reading is paused (as TCP does) and
hands them over when reading resumes, and reports ``connection_lost`` once, after a close has written
out its buffer, or at once after an abort.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from dicomwire.commands import Notice
from dicomwire.policy import EVERY_REQUEST, Asks, ConnectionInfo, Ending
from dicomwire.questions import (
    AcceptQuestion,
    AssociationQuestion,
    ForwardAccept,
    ForwardAssociation,
    Permit,
    Question,
    Verdict,
)
from dicomwire.upstream import Upstream


def run(scenario: Callable[[ManualLoop], Awaitable[None]]) -> None:
    """Run ``scenario`` on a fresh :class:`ManualLoop`; the tasks it leaves are cancelled after it, and a
    scenario the loop cannot go on with (:class:`Stalled`) is cancelled before the error is raised."""
    loop = ManualLoop()

    async def main() -> None:
        try:
            await scenario(loop)
        finally:
            left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in left:
                task.cancel()
            await asyncio.gather(*left, return_exceptions=True)

    task = loop.create_task(main())
    try:
        loop.run_until_complete(task)
    except Stalled:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(task)
        raise
    finally:
        loop.close()


class Stalled(AssertionError):
    """The loop has nothing to run before a timer in the future: the test must advance the clock."""


class _Selector:
    """What BaseEventLoop polls for I/O: there is none, and waiting would mean real time passing."""

    def __init__(self, loop: ManualLoop) -> None:
        self.loop = loop

    def select(self, timeout: float | None) -> list[Any]:
        if timeout is not None and timeout <= 0:
            return []
        ahead = "no timer at all" if timeout is None else f"the next timer {timeout:g} s ahead"
        raise Stalled(f"at t={self.loop.time():g} s nothing can run ({ahead}): advance the clock")

    def close(self) -> None:
        pass


class ManualLoop(asyncio.BaseEventLoop):
    """An event loop whose clock moves only when the test says (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._now = 0.0
        self._selector = _Selector(self)
        self.dials: list[Dial] = []  # upstream connections asked for, in order

    def time(self) -> float:
        return self._now

    def _process_events(self, event_list: list[Any]) -> None:
        pass

    def _write_to_self(self) -> None:
        pass  # no other thread can wake this loop: nothing to do

    async def settle(self) -> None:
        """Let everything that is ready run (callbacks, tasks, and what they schedule), clock unmoved."""
        for _ in range(1000):
            await asyncio.sleep(0)
            if not self._ready:
                return
        raise AssertionError("the loop never settles: something reschedules itself forever")

    async def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` ahead, running each timer due on the way at its own time."""
        target = self._now + seconds
        await self.settle()
        while True:
            due = [h for h in self._scheduled if not h.cancelled()]
            heapq.heapify(due)
            if not due or due[0].when() > target:
                break
            self._now = max(self._now, due[0].when())
            await self.settle()
        self._now = target
        await self.settle()

    # -- the network ---------------------------------------------------------------------------------
    async def connect_accepted_socket(self, protocol_factory: Callable[[], asyncio.BaseProtocol],
                                      sock: FakeSocket, **kwargs: Any) -> tuple[FakeTransport, Any]:
        """The listener's client side: ``sock`` says how its TLS handshake goes."""
        if sock.handshake is not None:
            await sock.handshake(self)
        transport = FakeTransport(self, peer=sock.peer, tls=kwargs.get("ssl") is not None,
                                  certificate=sock.certificate)
        protocol = protocol_factory()
        transport.attach(protocol)
        sock.transport = transport
        return transport, protocol

    async def create_connection(self, protocol_factory: Callable[[], asyncio.BaseProtocol], host: str | None = None,
                                port: int | None = None, **kwargs: Any) -> tuple[FakeTransport, Any]:
        """The upstream: a :class:`Dial` that waits for the test to accept or fail it."""
        dial = Dial(self, host, port, protocol_factory, tls=kwargs.get("ssl") is not None)
        self.dials.append(dial)
        try:
            return await dial.outcome
        except asyncio.CancelledError:
            dial.cancelled = True
            raise


class Dial:
    """One upstream connection being made: :meth:`accept` it, or :meth:`fail` it."""

    def __init__(self, loop: ManualLoop, host: str | None, port: int | None,
                 protocol_factory: Callable[[], asyncio.BaseProtocol], tls: bool) -> None:
        self.loop = loop
        self.host = host
        self.port = port
        self.tls = tls
        self.protocol_factory = protocol_factory
        self.outcome: asyncio.Future[tuple[FakeTransport, Any]] = loop.create_future()
        self.cancelled = False

    def accept(self) -> FakeTransport:
        transport = FakeTransport(self.loop, peer=(self.host or "", self.port or 0), tls=self.tls)
        protocol = self.protocol_factory()
        transport.attach(protocol)
        self.outcome.set_result((transport, protocol))
        return transport

    def fail(self, error: Exception) -> None:
        self.outcome.set_exception(error)


class FakeSocket:
    """An accepted connection handed to ``RelayServer._accepted``: its peer, and how its TLS handshake
    goes (``handshake``: None for none, else an async function of the loop that returns or raises)."""

    def __init__(self, peer: tuple[str, int] = ("192.0.2.10", 40000), *,
                 handshake: Callable[[ManualLoop], Coroutine[Any, Any, None]] | None = None,
                 certificate: dict[str, Any] | None = None) -> None:
        self.peer = peer
        self.handshake = handshake
        self.certificate = certificate
        self.transport: FakeTransport | None = None
        self.closed = False

    def setblocking(self, flag: bool) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class _SSLObject:
    def __init__(self, certificate: dict[str, Any] | None) -> None:
        self.certificate = certificate

    def getpeercert(self) -> dict[str, Any] | None:
        return self.certificate


_EOF = None


class FakeTransport(asyncio.Transport):
    """One side's transport, as the driver sees it and as its peer would (see the module docstring)."""

    def __init__(self, loop: ManualLoop, *, peer: tuple[str, int], tls: bool = False,
                 certificate: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.loop = loop
        self.protocol: Any = None
        self.extra: dict[str, Any] = {"peername": peer, "sockname": ("198.51.100.1", 11112), "socket": None,
                                      "sslcontext": ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER) if tls else None,
                                      "ssl_object": _SSLObject(certificate) if tls else None}
        self.received = bytearray()  # written by the driver and read by the peer
        self.buffer = bytearray()  # written by the driver, not yet read by a stalled peer
        self.writes: list[bytes] = []  # one entry per write()/writelines() call
        self.peer_reading = True
        self.high, self.low = 64 * 1024, 16 * 1024
        self.writing_paused = False
        self.reading = True
        self.reading_calls: list[str] = []  # "pause" / "resume", in the order the driver called them
        self.inbox: collections.deque[bytes | None] = collections.deque()  # fed, not yet delivered
        self.closing = False
        self.aborted = False
        self.lost = False

    def attach(self, protocol: Any) -> None:
        self.protocol = protocol
        protocol.connection_made(self)

    # -- what the driver calls ----------------------------------------------------------------------
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.high = high if high is not None else self.high
        self.low = low if low is not None else self.high // 4

    def get_write_buffer_size(self) -> int:
        return len(self.buffer)

    def write(self, data: Any) -> None:
        if self.closing or self.lost:
            raise AssertionError(f"write of {len(data)} bytes after the transport was closed")
        chunk = bytes(data)
        self.writes.append(chunk)
        if self.peer_reading:
            self.received += chunk
            return
        self.buffer += chunk
        if not self.writing_paused and len(self.buffer) > self.high:
            self.writing_paused = True
            self.protocol.pause_writing()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(bytes(d) for d in list_of_data))

    def pause_reading(self) -> None:
        self.reading = False
        self.reading_calls.append("pause")

    def resume_reading(self) -> None:
        self.reading = True
        self.reading_calls.append("resume")
        self.loop.call_soon(self._deliver)  # as a real transport: on a later turn of the loop, not inside

    def is_reading(self) -> bool:
        return self.reading

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        if not self.buffer:
            self.loop.call_soon(self._lose, None)

    def abort(self) -> None:
        self.closing = self.aborted = True
        self.buffer.clear()
        self.loop.call_soon(self._lose, None)

    def is_closing(self) -> bool:
        return self.closing or self.lost

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> Any:
        return self.protocol

    # -- what the peer does -------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """The peer sends ``data``: delivered now if the driver reads, else when it resumes."""
        assert not self.lost, "the connection is gone"
        self.inbox.append(data)
        self._deliver()

    def feed_eof(self) -> None:
        self.inbox.append(_EOF)
        self._deliver()

    def drop(self, error: Exception | None = None) -> None:
        """The connection breaks (a reset, the peer's host gone)."""
        self.closing = True
        self.loop.call_soon(self._lose, error or ConnectionResetError("reset by peer"))

    def stall(self) -> None:
        """The peer stops reading: what is written stays in the buffer."""
        self.peer_reading = False

    def drain(self) -> None:
        """The peer reads everything buffered (and what comes next)."""
        self.peer_reading = True
        self.received += self.buffer
        self.buffer.clear()
        if self.writing_paused:
            self.writing_paused = False
            self.protocol.resume_writing()
        if self.closing:
            self.loop.call_soon(self._lose, None)

    def take(self) -> bytes:
        """What the peer has read since the last take."""
        data = bytes(self.received)
        self.received.clear()
        return data

    def _deliver(self) -> None:
        while self.reading and self.inbox and not self.is_closing():
            item = self.inbox.popleft()
            if item is _EOF:
                if not self.protocol.eof_received():
                    self.close()
            else:
                self.protocol.data_received(item)

    def _lose(self, error: Exception | None) -> None:
        if self.lost:
            return
        self.lost = True
        self.protocol.connection_lost(error)


# -- policies ---------------------------------------------------------------------------------------------

Decide = Callable[["Recorder", Question], "Verdict | Awaitable[Verdict]"]


def transparent(target: Any) -> Decide:
    """Forward the association to ``target``; permit everything else."""
    def decide(policy: Recorder, question: Question) -> Verdict:
        if isinstance(question, AssociationQuestion):
            return ForwardAssociation(target=target)
        if isinstance(question, AcceptQuestion):
            return ForwardAccept()
        return Permit()
    return decide


class Policies:
    """A :class:`~dicomwire.policy.PolicyFactory`: one :class:`Recorder` per association, each answering
    with ``decide`` (which may return a verdict, return an awaitable, or raise)."""

    def __init__(self, decide: Decide | None = None, *, asks: Asks = EVERY_REQUEST, target: Any = None,
                 open_raises: bool = False, notice_raises: bool = False, close_raises: bool = False) -> None:
        self.target = target or Upstream(host="pacs.example", port=104)
        self.decide = decide or transparent(self.target)
        self.asks = asks
        self.open_raises = open_raises
        self.notice_raises = notice_raises
        self.close_raises = close_raises
        self.opened: list[Recorder] = []

    def open(self, connection: ConnectionInfo) -> Recorder:
        if self.open_raises:
            raise RuntimeError("policy factory bug")
        policy = Recorder(self, connection)
        self.opened.append(policy)
        return policy


class Recorder:
    """One association's policy: records every question, notice and ending."""

    def __init__(self, factory: Policies, connection: ConnectionInfo) -> None:
        self.factory = factory
        self.connection = connection
        self.questions: list[Question] = []
        self.notices: list[Notice] = []
        self.endings: list[Ending] = []

    def _put(self, question: Question) -> Any:
        self.questions.append(question)
        return self.factory.decide(self, question)

    associate = accept = request = response = _put

    def notice(self, notice: Notice) -> None:
        self.notices.append(notice)
        if self.factory.notice_raises:
            raise RuntimeError("notice hook bug")

    def close(self, ending: Ending) -> None:
        self.endings.append(ending)
        if self.factory.close_raises:
            raise RuntimeError("close hook bug")


__all__ = ["Dial", "FakeSocket", "FakeTransport", "ManualLoop", "Policies", "Recorder", "Stalled", "run", "transparent"]
