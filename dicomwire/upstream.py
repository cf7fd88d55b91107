"""Where an association goes, and the warm connections kept ready for it (the driver's side).

An :class:`Upstream` is the target an association verdict names. A :class:`WarmPool` keeps up to
``Upstream.warm`` connections per target with their TLS handshake done, so that a new association
does not pay for the handshake on its critical path; a spare is replaced when the association that
took it ends, and none is older than the peer's ARTIM (PS3.8 9.1.5), which would close it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl as _ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

log = logging.getLogger("dicomwire.relay")


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
    # More addresses of the same service (several server agents behind one route name), tried in
    # order when a connection to the one before fails or takes longer than ``connect_timeout``.
    fallbacks: tuple[tuple[str, int], ...] = ()
    connect_timeout: float | None = None
    health: AddressHealth | None = field(default=None, compare=False)  # the backoffs, shared by a route

    def __str__(self) -> str:
        return f"{self.host}:{self.port}{' (TLS)' if self.ssl else ''}"

    def candidates(self) -> list[tuple[str, int]]:
        every = [(self.host, self.port), *self.fallbacks]
        return self.health.order(every) if self.health is not None else every


class AddressHealth:
    """Which addresses of a service failed lately: an address whose connection failed is tried last
    (after those that did not) for ``base`` seconds, doubling with each failure in a row up to ``cap``;
    one success clears it. When every address is backing off they are all still tried, soonest first:
    a backoff orders, it never refuses on its own."""

    def __init__(self, base: float = 1.0, cap: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.base, self.cap = base, cap
        self._clock = clock
        self._failures: dict[tuple[str, int], tuple[int, float]] = {}  # address -> (in a row, until)

    def order(self, addresses: list[tuple[str, int]]) -> list[tuple[str, int]]:
        now = self._clock()
        ready = [a for a in addresses if self._failures.get(a, (0, 0.0))[1] <= now]
        waiting = sorted((a for a in addresses if a not in ready), key=lambda a: self._failures[a][1])
        return ready + waiting

    def failed(self, address: tuple[str, int]) -> float:
        """Record a failure; the seconds this address now backs off."""
        count = self._failures.get(address, (0, 0.0))[0] + 1
        wait = min(self.cap, self.base * float(2 ** (count - 1)))
        self._failures[address] = (count, self._clock() + wait)
        return wait

    def succeeded(self, address: tuple[str, int]) -> None:
        self._failures.pop(address, None)


async def connect(loop: asyncio.AbstractEventLoop, factory: Callable[[], asyncio.Protocol],
                  target: Upstream) -> None:
    """A connection to the first of the target's addresses that answers (TLS handshake included);
    raises the last failure (an ``OSError`` or ``ssl.SSLError``) when none did."""
    last: OSError | _ssl.SSLError | None = None
    for host, port in target.candidates():
        opening = loop.create_connection(factory, host, port, ssl=target.ssl,
                                         server_hostname=target.server_hostname if target.ssl else None)
        try:
            await (asyncio.wait_for(opening, target.connect_timeout) if target.connect_timeout else opening)
        except (OSError, _ssl.SSLError) as error:  # TimeoutError is an OSError
            last = error if str(error) else TimeoutError(f"no connection within {target.connect_timeout} s")
            if target.health is not None:
                wait = target.health.failed((host, port))
                log.warning("upstream %s:%d failed (%s)%s; backing off %.0f s", host, port, last,
                            ", trying the next address" if target.fallbacks else "", wait)
            continue
        if target.health is not None:
            target.health.succeeded((host, port))
        return
    assert last is not None
    raise last


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


__all__ = ["AddressHealth", "Upstream", "WarmPool", "connect"]
