"""A relay listener: accepts connections, bounds the anonymous ones, does TLS, runs one association each.

Every accepted TCP connection is first *admitted* (:mod:`dicomwire.admission`): beyond the bounds on
connections without an association (in all, per source address) it is closed at once, before any TLS
work. On a TLS listener the handshake is then done here (``loop.connect_accepted_socket``, with a deadline), so that
a connection whose handshake fails or never starts costs no slot and is forgotten; only a connection
whose transport is up becomes an association, and once its A-ASSOCIATE-RQ is whole it may take one
of ``max_associations`` slots (the next one gets A-ASSOCIATE-RJ rejected-transient, local-limit-exceeded;
PS3.8 9.3.4). A load balancer's TCP check (connect, close, or connect and wait) leaves nothing behind and
is logged at debug level only.

Shutdown follows uvicorn's order: stop accepting, let live associations finish until a deadline,
then end them at an association boundary (A-ABORT), then abort what is left.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl as _ssl
from collections.abc import Callable, Iterable
from typing import Any

from . import proxy
from .admission import Admission, Pending
from .aio import _Association, _SideProtocol
from .association import Side
from .limits import RelayLimits
from .policy import PolicyFactory
from .trace import Fact
from .upstream import WarmPool

log = logging.getLogger("dicomwire.relay")

ACCEPT_PAUSE = 1.0  # seconds without accepting after accept() failed (asyncio's own loop waits as long)

# Where trace facts go (only when tracing is on): the association's id and the fact; the CLI formats.
TraceSink = Callable[[str, Fact], None]


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


async def _recv_exactly(loop: asyncio.AbstractEventLoop, conn: socket.socket, count: int) -> bytes:
    """``count`` bytes, never more: what follows a PROXY header is the client's (its TLS handshake)."""
    data = bytearray()
    while len(data) < count:
        chunk = await loop.sock_recv(conn, count - len(data))
        if not chunk:
            raise proxy.ProxyHeaderError("connection closed before its PROXY header ended")
        data += chunk
    return bytes(data)


class RelayServer:
    """Accepts client connections and runs one :class:`~dicomwire.relay.RelayCore` per association,
    asking the policies ``factory`` opens (see the module docstring for what is bounded)."""

    def __init__(self, factory: PolicyFactory, *, host: str = "127.0.0.1", port: int = 0,
                 limits: RelayLimits | None = None, max_associations: int = 200, trace: TraceSink | None = None,
                 ssl: _ssl.SSLContext | None = None, quickack: bool = True, name: str = "",
                 proxies: Iterable[str] = (), reuse_port: bool = False) -> None:
        self.factory = factory
        self.reuse_port = reuse_port  # SO_REUSEPORT: the workers of one host share the port (socket(7))
        self.host = host
        self.port = port
        self.limits = limits or RelayLimits()
        self.max_associations = max_associations
        self.trace = trace
        self.ssl = ssl
        self.quickack = quickack
        self.name = name
        self.proxies = proxy.networks(proxies)  # load balancers whose PROXY v2 header is believed
        self.admission = Admission(self.limits)
        self.associations: set[_Association] = set()
        self.connecting: set[asyncio.Task[None]] = set()
        self.lingering: set[asyncio.Transport] = set()
        self._linger_handles: dict[asyncio.Transport, asyncio.TimerHandle] = {}
        self.live = 0  # associations holding a slot
        self.pool = WarmPool(min(20.0, self.limits.artim_timeout * 2 / 3))
        self._sock: socket.socket | None = None
        self._refused = 0
        self._refused_said = -60.0

    @property
    def address(self) -> tuple[str, int]:
        assert self._sock is not None
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        needed = 2 * self.max_associations + self.limits.max_pending_connections + 64
        open_files_for(needed)  # two sockets per association, the pending ones, a margin for spares
        # Our own accept loop rather than loop.create_server: every connection is admitted (or closed)
        # before any TLS work, with the peer's address in hand, and the TLS handshake runs with a
        # deadline on a connection that holds no slot (loop.connect_accepted_socket).
        infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            # A backlog sized for the association limit: a burst of connections is queued, not dropped
            # (a dropped SYN costs the client a one-second retransmission).
            sock.listen(min(4096, max(128, self.max_associations)))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        loop.add_reader(sock.fileno(), self._accept_ready)
        log.info("listening on %s:%d%s", *self.address, " (TLS)" if self.ssl else "")

    def _accept_ready(self) -> None:
        assert self._sock is not None
        for _ in range(64):  # a burst, then let the loop serve the associations
            try:
                conn, address = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # out of descriptors, or the like: pause, say so once, listen again
                self._pause_accepting(error)
                return
            self._accepted(conn, address)

    def _pause_accepting(self, error: OSError) -> None:
        """accept() failed (EMFILE, ENFILE, ENOBUFS...): the pending connection stays in the backlog and
        the socket stays readable, so retrying at once would spin (a million log lines a minute under
        a flood). Stop watching it for ``ACCEPT_PAUSE`` seconds, as asyncio's own accept loop does."""
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._sock.fileno())
        log.error("accept failed on %s:%d: %s; accepting again in %g s", *self.address, error, ACCEPT_PAUSE)
        loop.call_later(ACCEPT_PAUSE, self._resume_accepting)

    def _resume_accepting(self) -> None:
        if self._sock is not None and self._sock.fileno() != -1:  # not shut down meanwhile
            asyncio.get_running_loop().add_reader(self._sock.fileno(), self._accept_ready)

    def _accepted(self, conn: socket.socket, address: Any) -> None:
        conn.setblocking(False)
        source = str(address[0]) if isinstance(address, tuple) else "-"
        via_proxy = bool(self.proxies) and proxy.trusted(source, self.proxies)
        pending = self.admission.admit(source, per_source=not via_proxy)
        if pending is None:
            self.refused(source)
            conn.close()
            return
        association = _Association(self, pending)
        self.associations.add(association)
        association.done.add_done_callback(lambda _: self.associations.discard(association))
        task = asyncio.get_running_loop().create_task(self._connect(conn, association, pending, via_proxy))
        self.connecting.add(task)
        task.add_done_callback(self.connecting.discard)

    async def _connect(self, conn: socket.socket, association: _Association, pending: Pending,
                       via_proxy: bool) -> None:
        """The transport of an admitted connection, its PROXY header read first when it comes from a
        trusted proxy, TLS done (PS3.15 B.12) where this listener has it; the association begins when
        it is up (the protocol's connection_made)."""
        loop = asyncio.get_running_loop()
        try:
            if via_proxy and not await self._proxied(conn, association, pending):
                self._forget(association, conn, pending)
                return
            await loop.connect_accepted_socket(
                lambda: _SideProtocol(association, Side.CLIENT), sock=conn, ssl=self.ssl,
                ssl_handshake_timeout=self.limits.tls_handshake_timeout if self.ssl else None,
                # A peer that never answers our close_notify must not keep its socket for 30 s (the
                # default), uncounted by any bound: the same deadline as the handshake.
                ssl_shutdown_timeout=self.limits.tls_handshake_timeout if self.ssl else None)
        except asyncio.CancelledError:
            self._forget(association, conn, pending)
            raise
        except (OSError, _ssl.SSLError, TimeoutError) as error:
            # A TCP check or a scanner that leaves before the handshake is routine: debug, not info.
            quiet = isinstance(error, ConnectionError | _ssl.SSLEOFError)
            log.log(logging.DEBUG if quiet else logging.INFO, "TLS handshake from %s failed: %s",
                    pending.source or "-", f"{type(error).__name__}: {error}")
            self._forget(association, conn, pending)

    async def _proxied(self, conn: socket.socket, association: _Association, pending: Pending) -> bool:
        """Read the PROXY v2 header (within the handshake deadline) and make its client the
        association's peer, counted as that source; False (and logged) when there is none to believe."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.limits.tls_handshake_timeout):
                fixed = await _recv_exactly(loop, conn, proxy.FIXED_LENGTH)
                header = proxy.parse(fixed, await _recv_exactly(loop, conn, proxy.header_length(fixed)))
        except (OSError, TimeoutError, proxy.ProxyHeaderError) as error:
            log.info("connection from proxy %s closed: %s", pending.source, f"{type(error).__name__}: {error}")
            return False
        if header.source is not None:
            if not pending.move(header.source[0]):
                self.refused(header.source[0])
                return False
            association.proxied = header.source
        return True

    @staticmethod
    def _forget(association: _Association, conn: socket.socket, pending: Pending) -> None:
        """A connection that never became an association: no slot, no trace, nothing left pending."""
        conn.close()
        pending.leave()
        association.pending = None
        if not association.done.done():
            association.done.set_result(None)

    def refused(self, source: str) -> None:
        """Say that connections are being closed unadmitted: at most once a minute, with a count (a
        flood must not become a flood of log lines)."""
        self._refused += 1
        now = asyncio.get_running_loop().time()
        if now - self._refused_said >= 60.0:
            log.warning("%d connection(s) closed at once in the last minute: too many connections without an "
                        "association (in all, or from one address; the last from %s)", self._refused, source)
            self._refused, self._refused_said = 0, now

    def linger(self, transport: asyncio.Transport) -> None:
        """A transport of an association that is over but still writing out what was queued to it: it
        holds no slot, but a peer that stopped reading would keep it (and its buffer) forever, so it is
        aborted after ARTIM (PS3.8 9.1.5), or at shutdown."""
        self.lingering.add(transport)
        handle = asyncio.get_running_loop().call_later(self.limits.artim_timeout, self._abort_lingering, transport)
        self._linger_handles[transport] = handle

    def _abort_lingering(self, transport: asyncio.Transport) -> None:
        self.lingering.discard(transport)
        self._linger_handles.pop(transport, None)
        if not transport.is_closing() or transport.get_write_buffer_size():
            transport.abort()

    def take_slot(self) -> bool:
        if self.live >= self.max_associations:
            return False
        self.live += 1
        return True

    def free_slot(self) -> None:
        self.live -= 1

    def reconfigure(self, factory: PolicyFactory, *, limits: RelayLimits, max_associations: int,
                    ssl: _ssl.SSLContext | None = None, proxies: Iterable[str] = ()) -> None:
        """A reloaded configuration (SIGHUP): connections accepted from now on get ``factory``'s policies,
        these bounds and ``ssl``'s certificate; live associations keep the policy (and TLS session) they
        began with. Warm upstream connections made with the old settings are closed, not reused."""
        self.factory = factory
        self.limits = self.admission.limits = limits
        self.max_associations = max_associations
        self.ssl = ssl
        self.proxies = proxy.networks(proxies)
        retired, self.pool = self.pool, WarmPool(min(20.0, limits.artim_timeout * 2 / 3))
        retired.close()

    def end(self, policy: object) -> bool:
        """End now (A-ABORT both ways, PS3.8 7.3) the association ``policy`` answers for, e.g. because its
        user's session ended; False if no live association of this listener has that policy."""
        for association in self.associations:
            if association.policy is policy and not association.done.done():
                association.run(association.core.shutdown())
                return True
        return False

    async def shutdown(self, deadline: float = 10.0) -> None:
        """Stop accepting, let live associations finish until ``deadline`` seconds, then abort them."""
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
        self.pool.close()
        for task in list(self.connecting):
            task.cancel()
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
        for transport in list(self.lingering):  # no transport outlives the listener
            self._linger_handles.pop(transport).cancel()
            self.lingering.discard(transport)
            transport.abort()


__all__ = ["RelayServer", "TraceSink", "open_files_for"]
