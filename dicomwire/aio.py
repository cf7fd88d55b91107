"""The asyncio driver: the only module of dicomwire that touches sockets and the event loop.

Built on ``asyncio.Protocol`` callbacks rather than streams (style.md measures streams at 1.5x the
wire time of a Protocol relay), with transport-level ``pause_reading``/``resume_reading`` as
backpressure: a side is read only while the core has no question pending for it *and* the other
side's write buffer is below its high-water mark. Data is handed on as the ``bytes`` the transport
gave us (views of it, never joined), and consecutive sends go out in one ``writelines`` call.

uvloop is used where it is installed (not on Windows): it is chosen once, in :func:`run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import logging
import os
import socket
import ssl as _ssl
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from .association import Side
from .relay import (
    AcceptQuestion,
    Ask,
    AssociationQuestion,
    CancelTimer,
    Close,
    Command,
    DimseQuestion,
    ForwardAccept,
    ForwardAssociation,
    Log,
    OpenUpstream,
    PauseReading,
    Permit,
    Question,
    Refuse,
    RejectAssociation,
    RelayCore,
    RelayLimits,
    ResumeReading,
    Send,
    StartTimer,
    Timer,
    Trace,
    Verdict,
)

log = logging.getLogger("dicomwire.relay")

_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only

# Write buffer marks per transport: enough to keep a 1 Gbit/s loopback busy between wake-ups,
# small enough that 500 associations cannot pin much memory (every buffer is bounded).
WRITE_HIGH_WATER = 1024 * 1024
WRITE_LOW_WATER = 256 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Upstream:
    """Where an association goes: a TCP peer, optionally over TLS."""

    host: str
    port: int
    ssl: _ssl.SSLContext | None = None
    server_hostname: str | None = None
    # Connections kept ready (handshake done) for the next associations: a TLS handshake with a
    # Python TLS peer costs milliseconds, paid here off the association's critical path.
    warm: int = 0

    def __str__(self) -> str:
        return f"{self.host}:{self.port}{' (TLS)' if self.ssl else ''}"


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """What the driver knows about the client's connection, for the policy to decide with."""

    association_id: int
    peer: tuple[str, int] | None
    local: tuple[str, int] | None
    peer_certificate: dict[str, Any] | None = None


class RelayPolicy(Protocol):
    """Answers the core's questions. May do I/O (HTTP to an identity provider, a PDP...)."""

    async def decide(self, question: Question, connection: ConnectionInfo) -> Verdict: ...


class TransparentPolicy:
    """Relay everything, unchanged, to one upstream: what ``dicom-relay`` does."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream

    async def decide(self, question: Question, connection: ConnectionInfo) -> Verdict:
        return self.decide_now(question)

    def decide_now(self, question: Question, connection: ConnectionInfo | None = None) -> Verdict:
        if isinstance(question, AssociationQuestion):
            return ForwardAssociation(target=self.upstream)
        if isinstance(question, AcceptQuestion):
            return ForwardAccept()
        return Permit()


def _deny(question: Question, why: str) -> Verdict:
    """Fail closed: what to answer when the policy itself failed."""
    if isinstance(question, AssociationQuestion | AcceptQuestion):
        return RejectAssociation(reason_text=why, result=2, source=3, reason=1)
    return Refuse(comment=why)


TraceSink = Callable[[str], None]


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
        self.association.run(self.association.core.eof_received(self.side))
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
    """Executes one RelayCore's commands on two transports."""

    def __init__(self, server: RelayServer, association_id: int, busy: bool) -> None:
        self.server = server
        self.id = association_id
        self.loop = asyncio.get_running_loop()
        self.core = RelayCore(server.limits, ask_requests=server.ask_requests, ask_commands=server.ask_commands,
                              trace=server.trace is not None,
                              busy=busy, label=str(association_id))
        self.transports: dict[Side, asyncio.Transport | None] = {Side.CLIENT: None, Side.SERVER: None}
        self.core_paused = {Side.CLIENT: False, Side.SERVER: False}
        self.write_paused = {Side.CLIENT: False, Side.SERVER: False}
        self.reading = {Side.CLIENT: True, Side.SERVER: True}
        self.timers: dict[Timer, asyncio.TimerHandle] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.connect_task: asyncio.Task[Any] | None = None
        self.info = ConnectionInfo(association_id, None, None)
        self.last_activity = self.loop.time()
        self.done = self.loop.create_future()

    # -- transport events -------------------------------------------------------------------------
    def transport_made(self, side: Side, transport: asyncio.Transport) -> None:
        self.transports[side] = transport
        if side is Side.CLIENT:
            self.info = ConnectionInfo(
                self.id,
                _addr(transport.get_extra_info("peername")),
                _addr(transport.get_extra_info("sockname")),
                transport.get_extra_info("peercert"),
            )
            self._log("info", f"connection from {_fmt(self.info.peer)}")
            self.run(self.core.start())
        self._apply_reading(side)

    def data_received(self, side: Side, data: bytes) -> None:
        self.last_activity = self.loop.time()
        self.run(self.core.data_received(side, data))

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
        if isinstance(command, Trace):
            sink = self.server.trace
            if sink is not None:
                now = _dt.datetime.now().strftime("%H:%M:%S.%f")
                sink(f"{now} #{self.id} {command.side.arrow} {command.text}")
        elif isinstance(command, PauseReading):
            self.core_paused[command.side] = True
            self._apply_reading(command.side)
        elif isinstance(command, ResumeReading):
            self.core_paused[command.side] = False
            self._apply_reading(command.side)
        elif isinstance(command, StartTimer):
            self._start_timer(command.timer, command.seconds)
        elif isinstance(command, CancelTimer):
            handle = self.timers.pop(command.timer, None)
            if handle is not None:
                handle.cancel()
        elif isinstance(command, Ask):
            self._ask(command.question)
        elif isinstance(command, OpenUpstream):
            self.connect_task = self.loop.create_task(self._connect(command.target))
        elif isinstance(command, Close):
            self._close(command.side)
        elif isinstance(command, Log):
            self._log(command.level, command.message)

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

    def _start_timer(self, timer: Timer, seconds: float) -> None:
        old = self.timers.pop(timer, None)
        if old is not None:
            old.cancel()
        if timer is Timer.IDLE:
            self.last_activity = self.loop.time()
        self.timers[timer] = self.loop.call_later(seconds, self._timer_fired, timer, seconds)

    def _timer_fired(self, timer: Timer, seconds: float) -> None:
        self.timers.pop(timer, None)
        if timer is Timer.IDLE:
            # Re-armed lazily: cheaper than resetting a timer on every read.
            quiet = self.loop.time() - self.last_activity
            if quiet < seconds:
                self.timers[timer] = self.loop.call_later(seconds - quiet, self._timer_fired, timer, seconds)
                return
        self.run(self.core.timer_expired(timer))
        self._maybe_done()

    def _ask(self, question: Question) -> None:
        policy = self.server.policy
        decide_now = getattr(policy, "decide_now", None)
        if decide_now is not None:
            verdict = decide_now(question, self.info)  # a policy answers at once what needs no I/O
            if verdict is not None:
                self.run(self.core.answer(question, verdict))
                return
        task = self.loop.create_task(self._decide(policy, question))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _decide(self, policy: RelayPolicy, question: Question) -> None:
        try:
            verdict = await policy.decide(question, self.info)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a policy bug or outage must deny, never hang or crash the relay
            self._log("error", f"policy failed on {type(question).__name__}: {error!r}; denied")
            verdict = _deny(question, "authorization failed (fail closed)")
        self.run(self.core.answer(question, verdict))
        self._maybe_done()

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
            await self.loop.create_connection(
                lambda: _SideProtocol(self, Side.SERVER),
                target.host,
                target.port,
                ssl=target.ssl,
                server_hostname=target.server_hostname if target.ssl else None,
            )
        except asyncio.CancelledError:
            return
        except (OSError, _ssl.SSLError) as error:
            self.run(self.core.upstream_failed(f"{target}: {error}"))
            self._maybe_done()
            return
        self.run(self.core.upstream_connected())

    # -- end ------------------------------------------------------------------------------------------
    def _maybe_done(self) -> None:
        if (self.core.closed and all(t is None or t.is_closing() for t in self.transports.values())
                and not self.done.done()):
            for handle in self.timers.values():
                handle.cancel()
            self.timers.clear()
            for task in list(self.tasks):
                task.cancel()
            ended = getattr(self.server.policy, "association_ended", None)
            if ended is not None:
                ended(self.info)  # the policy forgets what it kept about this association
            self.done.set_result(None)

    def abort_transports(self) -> None:
        for transport in self.transports.values():
            if transport is not None:
                transport.abort()

    def _log(self, level: str, message: str) -> None:
        log.log(logging.getLevelName(level.upper()), "assoc %d %s: %s", self.id, _fmt(self.info.peer), message)


def _addr(value: Any) -> tuple[str, int] | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return (str(value[0]), int(value[1]))
    return None


def _fmt(addr: tuple[str, int] | None) -> str:
    return f"{addr[0]}:{addr[1]}" if addr else "-"


class _Parked(asyncio.Protocol):
    """A warm upstream connection waiting for an association: anything it receives ends it."""

    def __init__(self, pool: WarmPool, target: Upstream) -> None:
        self.pool = pool
        self.target = target
        self.transport: asyncio.Transport | None = None
        self.since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.since = asyncio.get_running_loop().time()

    def data_received(self, data: bytes) -> None:
        self._drop()  # a peer must not speak before our A-ASSOCIATE-RQ

    def eof_received(self) -> bool:
        self._drop()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.forget(self)

    def _drop(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.pool.forget(self)


class WarmPool:
    """Upstream connections opened ahead of need, ``Upstream.warm`` per target, each at most
    ``max_age`` seconds old (below the peer's ARTIM, PS3.8 9.1.5, so it never times them out)."""

    def __init__(self, max_age: float = 20.0) -> None:
        self.max_age = max_age
        self.ready: dict[Upstream, list[_Parked]] = {}
        self.opening: dict[Upstream, int] = {}
        self.closed = False
        self._sweeper: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def take(self, target: Upstream) -> asyncio.Transport | None:
        now = asyncio.get_running_loop().time()
        spares = self.ready.get(target, [])
        while spares:
            parked = spares.pop(0)
            if parked.transport is not None and not parked.transport.is_closing() and \
                    now - parked.since < self.max_age:
                return parked.transport
            if parked.transport is not None:
                parked.transport.close()
        return None

    def refill(self, target: Upstream) -> None:
        if self.closed:
            return
        missing = target.warm - len(self.ready.get(target, [])) - self.opening.get(target, 0)
        loop = asyncio.get_running_loop()
        for _ in range(max(0, missing)):
            self.opening[target] = self.opening.get(target, 0) + 1
            task = loop.create_task(self._open(target))
            self._tasks.add(task)  # keep a reference until done (asyncio holds tasks weakly)
            task.add_done_callback(self._tasks.discard)
        if self._sweeper is None:
            self._sweeper = loop.call_later(self.max_age / 2, self._sweep)

    async def _open(self, target: Upstream) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await loop.create_connection(
                lambda: _Parked(self, target), target.host, target.port, ssl=target.ssl,
                server_hostname=target.server_hostname if target.ssl else None)
        except (OSError, _ssl.SSLError) as error:
            log.info("warm connection to %s failed: %s", target, error)
            return
        finally:
            self.opening[target] -= 1
        if self.closed:
            if protocol.transport is not None:
                protocol.transport.close()
            return
        self.ready.setdefault(target, []).append(protocol)

    def forget(self, parked: _Parked) -> None:
        spares = self.ready.get(parked.target, [])
        if parked in spares:
            spares.remove(parked)

    def _sweep(self) -> None:
        self._sweeper = None
        if self.closed:
            return
        now = asyncio.get_running_loop().time()
        for target, spares in list(self.ready.items()):
            for parked in [p for p in spares if now - p.since >= self.max_age]:
                spares.remove(parked)
                if parked.transport is not None:
                    parked.transport.close()
            self.refill(target)

    def close(self) -> None:
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for spares in self.ready.values():
            for parked in spares:
                if parked.transport is not None:
                    parked.transport.close()
        self.ready.clear()


def open_files_for(needed: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit when ``needed`` descriptors would not
    fit (Debian's default soft limit is 1024: two sockets per association reach it at ~500); returns
    the soft limit now in force, and warns when even the hard limit is too low."""
    try:
        import resource
    except ImportError:  # not POSIX
        return needed
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        soft = hard if hard == resource.RLIM_INFINITY else max(soft, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning("open-file limit %d is below the %d that max_associations needs: raise it (ulimit -n)",
                    soft, needed)
    return int(soft)


class RelayServer:
    """Accepts client connections and runs one :class:`RelayCore` per association.

    ``max_associations`` live associations at most: the next request is rejected with
    A-ASSOCIATE-RJ (rejected-transient, presentation, local-limit-exceeded; PS3.8 9.3.4).
    """

    def __init__(
        self,
        policy: RelayPolicy,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        limits: RelayLimits | None = None,
        max_associations: int = 200,
        ask_requests: bool = False,
        ask_commands: frozenset[int] | None = None,
        trace: TraceSink | None = None,
        ssl: _ssl.SSLContext | None = None,
        quickack: bool = True,
    ) -> None:
        self.policy = policy
        self.host = host
        self.port = port
        self.limits = limits or RelayLimits()
        self.max_associations = max_associations
        self.ask_requests = ask_requests
        self.ask_commands = ask_commands
        self.trace = trace
        self.ssl = ssl
        self.quickack = quickack
        self.associations: set[_Association] = set()
        self.pool = WarmPool(min(20.0, self.limits.artim_timeout * 2 / 3))
        self._server: asyncio.base_events.Server | None = None
        self._ids = 0

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None and self._server.sockets
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        open_files_for(2 * self.max_associations + 64)  # two sockets per association, a margin for spares
        # A backlog sized for the association limit: a burst of connections is queued, not dropped
        # (a dropped SYN costs the client a one-second retransmission).
        self._server = await loop.create_server(self._protocol, self.host, self.port, ssl=self.ssl,
                                                reuse_address=True, backlog=min(4096, max(128, self.max_associations)))
        log.info("listening on %s:%d", *self.address)

    def _protocol(self) -> asyncio.Protocol:
        self._ids += 1
        live = sum(1 for a in self.associations if not a.done.done())
        association = _Association(self, self._ids, busy=live >= self.max_associations)
        self.associations.add(association)
        association.done.add_done_callback(lambda _: self.associations.discard(association))
        return _SideProtocol(association, Side.CLIENT)

    async def shutdown(self, deadline: float = 10.0) -> None:
        """Stop accepting, let live associations finish until ``deadline`` seconds, then abort them."""
        if self._server is not None:
            self._server.close()
        self.pool.close()
        live = [a for a in self.associations if not a.done.done()]
        if live:
            log.info("shutting down: waiting up to %g s for %d association(s)", deadline, len(live))
            _, pending = await asyncio.wait([a.done for a in live], timeout=deadline)
            for association in list(self.associations):
                if not association.done.done():
                    association.run(association.core.shutdown())
            if pending:
                _, _still = await asyncio.wait(pending, timeout=1.0)
                for association in list(self.associations):
                    if not association.done.done():
                        association.abort_transports()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)


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


__all__ = ["ConnectionInfo", "DimseQuestion", "RelayPolicy", "RelayServer", "TransparentPolicy", "Upstream", "run"]
