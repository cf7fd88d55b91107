"""The asyncio driver: the only module of dicomwire that touches sockets and the event loop.

Built on ``asyncio.Protocol`` callbacks rather than streams (style.md measures streams at 1.5x the
wire time of a Protocol relay), with transport-level ``pause_reading``/``resume_reading`` as
backpressure: a side is read only while the core has no question pending for it *and* the other
side's write buffer is below its high-water mark. Data is handed on as the ``bytes`` the transport
gave us (views of it, never joined), and consecutive sends go out in one ``writelines`` call.

One :class:`_Association` per connection executes one :class:`~dicomwire.relay.RelayCore`'s commands
and puts its questions to the :class:`~dicomwire.policy.AssociationPolicy` its listener's factory
opened for it. The listener (:mod:`dicomwire.listener`) admits connections and does the TLS handshake.
uvloop is used where it is installed (not on Windows): it is chosen once, in :func:`run`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import itertools
import logging
import os
import socket
import ssl as _ssl
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from .admission import Pending
from .association import Side, State
from .commands import (
    Ask,
    CancelTimer,
    Close,
    Command,
    Deadline,
    Log,
    OpenUpstream,
    PauseReading,
    ResumeReading,
    Send,
    StartTimer,
    Tell,
    Timer,
    TimerKey,
    Trace,
)
from .errors import RejectReason
from .policy import AssociationPolicy, ConnectionInfo
from .questions import AssociationQuestion, Question, RejectAssociation, Verdict
from .relay import RelayCore
from .upstream import Upstream, connect

if TYPE_CHECKING:
    from .listener import RelayServer

log = logging.getLogger("dicomwire.relay")

_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only
_ids = itertools.count(1)  # association ids: one sequence for every listener of the process

# Write buffer marks per transport: enough to keep a 1 Gbit/s loopback busy between wake-ups,
# small enough that 500 associations cannot pin much memory (every buffer is bounded).
WRITE_HIGH_WATER = 1024 * 1024
WRITE_LOW_WATER = 256 * 1024
_PENDING_STATES = frozenset({State.AWAIT_RQ, State.DECIDING})


def _tune_socket(transport: asyncio.BaseTransport, quickack: bool) -> socket.socket | None:
    """Set TCP_NODELAY; with ``quickack`` return a socket object on which to re-arm TCP_QUICKACK.

    uvloop's pseudo-socket builds a new ``socket.socket`` on every ``setsockopt``; a duplicate of
    the descriptor made once is cheaper per read (options belong to the socket, not the descriptor).
    The caller closes it when the connection is lost.
    """
    sock = transport.get_extra_info("socket")
    if sock is None:
        return None
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if quickack and _TCP_QUICKACK is not None:
        with contextlib.suppress(OSError, AttributeError, ValueError):
            own = socket.socket(fileno=os.dup(sock.fileno()))
            own.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
            return own
    return None


class _SideProtocol(asyncio.Protocol):
    __slots__ = ("_quickack_sock", "_tls", "association", "side")

    def __init__(self, association: _Association, side: Side) -> None:
        self.association = association
        self.side = side
        self._quickack_sock: Any = None
        self._tls = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)
        self._tls = transport.get_extra_info("sslcontext") is not None
        self._quickack_sock = _tune_socket(transport, self.association.server.quickack)
        self.association.transport_made(self.side, transport)

    def data_received(self, data: bytes) -> None:
        sock = self._quickack_sock
        if sock is not None:
            # Linux clears TCP_QUICKACK after use: re-arm it so a Nagle-delayed legacy sender gets its
            # ACK at once instead of after the ~40 ms delayed-ACK timer (style.md, measured).
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
        self.association.data_received(self.side, data)

    def eof_received(self) -> bool:
        self.association.eof_received(self.side)
        # Keep our writing half open (half-close) until the core says close; TLS has no half-close.
        return not self._tls

    def connection_lost(self, exc: Exception | None) -> None:
        if self._quickack_sock is not None:
            self._quickack_sock.close()
            self._quickack_sock = None
        self.association.transport_lost(self.side, exc)

    def pause_writing(self) -> None:
        self.association.set_write_paused(self.side, True)

    def resume_writing(self) -> None:
        self.association.set_write_paused(self.side, False)


class _Association:
    """Executes one RelayCore's commands on two transports, and asks one policy."""

    def __init__(self, server: RelayServer, pending: Pending | None) -> None:
        self.server = server
        self.pending = pending  # while the association request is undecided (bounded by the listener)
        self.id = str(next(_ids))
        self.loop = asyncio.get_running_loop()
        self.core = RelayCore(server.limits, asks=server.factory.asks, tracing=server.trace is not None)
        self.policy: AssociationPolicy | None = None
        self.slot = False  # counts against the listener's max_associations
        self.transports: dict[Side, asyncio.Transport | None] = {Side.CLIENT: None, Side.SERVER: None}
        self.core_paused = {Side.CLIENT: False, Side.SERVER: False}
        self.write_paused = {Side.CLIENT: False, Side.SERVER: False}
        self.reading = {Side.CLIENT: True, Side.SERVER: True}
        self.timers: dict[TimerKey, asyncio.TimerHandle] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.deciding: dict[Question, asyncio.Task[Any]] = {}  # the policy's decisions still awaited
        self.connect_task: asyncio.Task[Any] | None = None
        self.info = ConnectionInfo(association_id=self.id, peer=None, local=None, listener=server.name)
        self.proxied: tuple[str, int] | None = None  # the client a trusted proxy named (PROXY protocol)
        self.last_activity = self.loop.time()
        self.done = self.loop.create_future()
        self._answers: collections.deque[tuple[Question, Verdict]] = collections.deque()
        self._draining = False

    # -- transport events -------------------------------------------------------------------------
    def transport_made(self, side: Side, transport: asyncio.Transport) -> None:
        self.transports[side] = transport
        if side is Side.CLIENT:
            ssl_object = transport.get_extra_info("ssl_object")
            peer = _addr(transport.get_extra_info("peername"))
            self.info = ConnectionInfo(
                association_id=self.id, peer=self.proxied or peer, via=peer if self.proxied else None,
                local=_addr(transport.get_extra_info("sockname")), listener=self.server.name,
                peer_certificate=ssl_object.getpeercert() if ssl_object is not None else None)
            try:
                self.policy = self.server.factory.open(self.info)
            except Exception as error:  # no policy, no association: fail closed
                self._log("error", f"policy factory failed: {error!r}; connection closed")
                transport.abort()
                return
            self._log("debug", f"connection from {_fmt(self.info.peer)}")
            self.run(self.core.start())
        self._apply_reading(side)

    def data_received(self, side: Side, data: bytes) -> None:
        self.last_activity = self.loop.time()
        if not self.slot and side is Side.CLIENT:
            # A slot is taken once the request is whole (see _ask); with none free now, the core refuses
            # at the request's first byte and holds nothing for it.
            self.core.busy = self.server.live >= self.server.max_associations
        pending = self.pending
        if pending is not None and not pending.charge(len(data)):
            self._log("warning", "pre-association memory budget spent: refused")
            self.run(self.core.overloaded())
            return
        self.run(self.core.data_received(side, data))

    def eof_received(self, side: Side) -> None:
        self.run(self.core.eof_received(side))

    def transport_lost(self, side: Side, exc: Exception | None) -> None:
        self.transports[side] = None
        if exc is not None and not isinstance(exc, ConnectionResetError):
            self._log("info", f"{side.value} connection lost: {exc}")
        self.run(self.core.connection_lost(side))
        self._maybe_done()

    def set_write_paused(self, side: Side, paused: bool) -> None:
        # The transport to `side` is full: stop reading what would be written to it.
        self.write_paused[side] = paused
        self._apply_reading(side.other)

    # -- command execution --------------------------------------------------------------------------
    def run(self, commands: list[Command]) -> None:
        """Execute ``commands`` in order, then the verdicts the policy gave at once (in the order asked):
        applied after the batch, so that commands the core made before an answer never go out after
        those the answer makes."""
        self._execute_all(commands)
        if self._draining:
            return
        self._draining = True
        try:
            answers = self._answers
            while answers:
                question, verdict = answers.popleft()
                self._execute_all(self.core.answer(question, verdict))
        finally:
            self._draining = False
        pending = self.pending
        if pending is not None and self.core.state not in _PENDING_STATES:
            pending.leave()  # decided (or ended): no longer an anonymous connection
            self.pending = None

    def _execute_all(self, commands: list[Command]) -> None:
        batch: list[Any] = []
        batch_side: Side | None = None
        for command in commands:
            if type(command) is Send:
                if batch_side is not command.side and batch:
                    self._write(batch_side, batch)
                    batch = []
                batch_side = command.side
                batch.append(command.data)
                continue
            if batch:
                self._write(batch_side, batch)
                batch = []
            self._execute(command)
        if batch:
            self._write(batch_side, batch)

    def _write(self, side: Side | None, buffers: list[Any]) -> None:
        transport = self.transports[side] if side is not None else None
        if transport is None or transport.is_closing():
            return
        if len(buffers) == 1:
            transport.write(buffers[0])
        else:
            transport.writelines(buffers)

    def _execute(self, command: Command) -> None:
        kind = type(command)
        if kind is PauseReading or kind is ResumeReading:
            side = cast(PauseReading | ResumeReading, command).side
            self.core_paused[side] = kind is PauseReading
            self._apply_reading(side)
        elif kind is StartTimer:
            start = cast(StartTimer, command)
            self._start_timer(start.timer, start.seconds)
        elif kind is CancelTimer:
            handle = self.timers.pop(cast(CancelTimer, command).timer, None)
            if handle is not None:
                handle.cancel()
        elif kind is Ask:
            self._ask(cast(Ask, command).question)
        elif kind is OpenUpstream:
            self.connect_task = self.loop.create_task(self._connect(cast(OpenUpstream, command).target))
        elif kind is Close:
            self._close(cast(Close, command).side)
        elif kind is Log:
            log_command = cast(Log, command)
            self._log(log_command.level, log_command.message)
        elif kind is Tell:
            self._tell(cast(Tell, command))
        elif kind is Trace:
            sink = self.server.trace
            if sink is not None:
                sink(self.id, cast(Trace, command).fact)

    def _apply_reading(self, side: Side) -> None:
        transport = self.transports[side]
        if transport is None or transport.is_closing():
            return
        want = not (self.core_paused[side] or self.write_paused[side.other])
        if want != self.reading[side]:
            self.reading[side] = want
            if want:
                transport.resume_reading()
            else:
                transport.pause_reading()

    def _close(self, side: Side) -> None:
        transport = self.transports[side]
        if transport is not None:
            transport.close()  # asyncio writes out what is buffered before closing
        elif side is Side.SERVER and self.connect_task is not None:
            self.connect_task.cancel()
        self._maybe_done()

    def _start_timer(self, timer: TimerKey, seconds: float) -> None:
        old = self.timers.pop(timer, None)
        if old is not None:
            old.cancel()
        if timer is Timer.IDLE:
            self.last_activity = self.loop.time()
        self.timers[timer] = self.loop.call_later(seconds, self._timer_fired, timer, seconds)

    def _timer_fired(self, timer: TimerKey, seconds: float) -> None:
        self.timers.pop(timer, None)
        if timer is Timer.IDLE:
            # Re-armed lazily: cheaper than resetting a timer on every read.
            quiet = self.loop.time() - self.last_activity
            if quiet < seconds:
                self.timers[timer] = self.loop.call_later(seconds - quiet, self._timer_fired, timer, seconds)
                return
        self.run(self.core.timer_expired(timer))
        if isinstance(timer, Deadline):
            # The question was answered for the policy (fail closed): a decision it is still making would
            # be acted on by nobody but the policy itself (a permit logged, a move registered) for a
            # message the relay refused or dropped. It ends here.
            task = self.deciding.pop(timer.question, None)
            if task is not None:
                task.cancel()
        self._maybe_done()

    # -- the policy ---------------------------------------------------------------------------------
    def _ask(self, question: Question) -> None:
        policy = self.policy
        try:
            if policy is None:
                raise RuntimeError("no policy for this association")
            if isinstance(question, AssociationQuestion) and not self.slot:
                # The slot (max_associations) is taken by a whole, checked request, never by a transport
                # alone: silent or trickling connections are pending ones, bounded by admission.
                self.slot = self.server.take_slot()
                if not self.slot:
                    self._answers.append((question, RejectAssociation.transient(
                        "too many concurrent associations", RejectReason.LOCAL_LIMIT_EXCEEDED)))
                    return
            result = question.put(policy)
        except Exception as error:  # a policy that raises denies
            self._log("error", f"policy failed on {type(question).__name__}: {error!r}; denied")
            result = question.fail_closed("authorization failed (fail closed)")
        if inspect.isawaitable(result):
            task = self.loop.create_task(self._decide(question, result))
            self.tasks.add(task)
            self.deciding[question] = task
            task.add_done_callback(self.tasks.discard)
            task.add_done_callback(lambda _: self.deciding.pop(question, None))
        else:
            self._answers.append((question, result))  # applied by run() once its batch is out

    async def _decide(self, question: Question, pending: Awaitable[Verdict]) -> None:
        try:
            verdict = await pending
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a policy bug or outage must deny, never hang or crash the relay
            self._log("error", f"policy failed on {type(question).__name__}: {error!r}; denied")
            verdict = question.fail_closed("authorization failed (fail closed)")
        self.run(self.core.answer(question, verdict))
        self._maybe_done()

    def _tell(self, command: Tell) -> None:
        if self.policy is None:
            return
        try:
            self.policy.notice(command.notice)
        except Exception as error:
            self._log("error", f"policy failed on a notice: {error!r}")

    async def _connect(self, target: Upstream) -> None:
        pool = self.server.pool
        if target.warm:
            ready = pool.take(target)
            # Open the replacement when this association is over, not now: its TLS handshake would
            # take the CPU of both agents exactly when this association is being set up (measured:
            # ~4 ms added to set-up + C-ECHO + release, whatever the pause between associations).
            self.done.add_done_callback(lambda _: pool.refill(target))
            if ready is not None:
                protocol = _SideProtocol(self, Side.SERVER)
                ready.set_protocol(protocol)
                protocol.connection_made(ready)
                self.run(self.core.upstream_connected())
                return
        try:
            await connect(self.loop, lambda: _SideProtocol(self, Side.SERVER), target)  # its fallbacks in turn
        except asyncio.CancelledError:
            return
        except (OSError, _ssl.SSLError) as error:
            self.run(self.core.upstream_failed(f"{target}: {error}"))
            self._maybe_done()
            return
        self.run(self.core.upstream_connected())

    # -- end ------------------------------------------------------------------------------------------
    def _maybe_done(self) -> None:
        if not (self.core.closed and all(t is None or t.is_closing() for t in self.transports.values())) or \
                self.done.done():
            return
        for handle in self.timers.values():
            handle.cancel()
        self.timers.clear()
        for task in list(self.tasks):
            task.cancel()
        if self.connect_task is not None and not self.connect_task.done():
            self.connect_task.cancel()  # ended while connecting upstream: no socket outlives the association
        for transport in self.transports.values():
            if transport is not None:  # still writing out what was queued to it
                self.server.linger(transport)
        if self.pending is not None:
            self.pending.leave()
            self.pending = None
        if self.slot:
            self.server.free_slot()
            self.slot = False
        if self.policy is not None:
            try:
                self.policy.close(self.core.ending())  # the policy forgets what it kept about this association
            except Exception as error:
                self._log("error", f"policy failed to close: {error!r}")
        self.done.set_result(None)

    def abort_transports(self) -> None:
        for transport in self.transports.values():
            if transport is not None:
                transport.abort()

    def _log(self, level: str, message: str) -> None:
        log.log(logging.getLevelName(level.upper()), "assoc %s %s: %s", self.id, _fmt(self.info.peer), message)


def _addr(value: Any) -> tuple[str, int] | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return (str(value[0]), int(value[1]))
    return None


def _fmt(addr: tuple[str, int] | None) -> str:
    return f"{addr[0]}:{addr[1]}" if addr else "-"


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``main`` on uvloop where it exists, else on asyncio's default loop (chosen once here)."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if sys.platform != "win32":
        try:
            import uvloop

            factory = uvloop.new_event_loop
        except ImportError:  # pragma: no cover - uvloop is a dependency on these platforms
            factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())  # type: ignore[arg-type]


__all__ = ["WRITE_HIGH_WATER", "run"]
