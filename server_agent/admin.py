"""The admin listener of both agents (issue 15 item 3): ``/healthz``, ``/readyz`` and ``/metrics``.

HTTP/1.1 (RFC 9110, RFC 9112) parsed by h11's sans-I/O state machine, as the back-channel logout endpoint
does, but read-only: ``GET`` and ``HEAD`` (RFC 9110 section 9.3.1-2) and nothing else (405 with
``Allow``); one request per connection, its head bounded by ``MAX_HEAD``, its whole exchange by
``TIMEOUT`` seconds, at most ``MAX_CONNECTIONS`` connections at once (more are closed unanswered: a
flood of the admin port costs a few descriptors, never a DICOM slot, which this listener has nothing to
do with). A TCP check (connect, close) leaves nothing behind.

- ``/healthz``: 200 while the event loop answers (the agent is alive; a hung loop times the check out).
- ``/readyz``: 200 with a JSON body naming each check and its state, 503 naming those that failed. The
  checks that ask another server (identity provider, PDP) keep their result ``interval`` seconds, and
  one probe at a time per check, so a load balancer checking every second does not hammer them.
- ``/metrics``: the agent's own :class:`prometheus_client.CollectorRegistry` in the Prometheus text
  exposition format (version 0.0.4), through the official client library.

No answer holds a secret: check details are the agent's own sentences (the errors behind them go
to the log), and metric labels come from the agents' enums and configuration, never from a peer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import h11
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

log = logging.getLogger("admin")

MAX_HEAD = 8 * 1024  # a health check's request line and headers are a few hundred bytes
TIMEOUT = 5.0  # seconds for a whole exchange: a client that sends nothing holds its connection no longer
MAX_CONNECTIONS = 16  # at once; a monitoring system needs a few, a flood gets closed connections
READ_SIZE = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckResult:
    """One readiness check's state: ``detail`` is the agent's own sentence, safe to show anyone."""

    ok: bool
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    """An HTTP response of the admin listener."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


RemoteCheck = Callable[[], Awaitable[CheckResult]]  # asks another server: cached, one probe at a time
LocalCheck = Callable[[], CheckResult]  # reads this process's own state: cheap, asked every time


class Readiness:
    """The checks of ``/readyz``: ``local`` ones on every call, ``remote`` ones at most once per ``interval``
    seconds each (one probe in flight per check, shared by every caller meanwhile), each within
    ``timeout`` seconds (no answer is a failure)."""

    def __init__(self, *, local: Mapping[str, LocalCheck], remote: Mapping[str, RemoteCheck], interval: float,
                 timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.local = dict(local)
        self.remote = dict(remote)
        self.interval = interval
        self.timeout = timeout
        self._clock = clock
        self._results: dict[str, tuple[float, CheckResult]] = {}
        self._probes: dict[str, asyncio.Task[CheckResult]] = {}
        self.last: dict[str, CheckResult] = {}  # the latest report, for the metrics

    async def report(self) -> dict[str, CheckResult]:
        names = list(self.remote)
        remote = await asyncio.gather(*(self._remote(name) for name in names))
        results = {name: self._local(name, check) for name, check in self.local.items()}
        results.update(zip(names, remote, strict=True))
        self.last = results
        return results

    @staticmethod
    def _local(name: str, check: LocalCheck) -> CheckResult:
        try:
            return check()
        except Exception as error:  # a check that fails is a failed check, never a 500
            log.warning("readiness check %s failed: %r", name, error)
            return CheckResult(ok=False, detail="the check itself failed (see the agent's log)")

    async def _remote(self, name: str) -> CheckResult:
        cached = self._results.get(name)
        if cached is not None and self._clock() - cached[0] < self.interval:
            return cached[1]
        probe = self._probes.get(name)
        if probe is None:
            probe = asyncio.get_running_loop().create_task(self._probe(name))
            self._probes[name] = probe
            probe.add_done_callback(lambda _: self._probes.pop(name, None))
        return await asyncio.shield(probe)  # a caller that leaves does not cancel the others' probe

    async def _probe(self, name: str) -> CheckResult:
        try:
            async with asyncio.timeout(self.timeout):
                result = await self.remote[name]()
        except TimeoutError:
            result = CheckResult(ok=False, detail=f"no answer within {self.timeout:g} s")
        except Exception as error:
            log.warning("readiness check %s failed: %r", name, error)
            result = CheckResult(ok=False, detail="the check itself failed (see the agent's log)")
        if not result.ok and self._results.get(name, (0.0, CheckResult(ok=True)))[1].ok:
            log.warning("not ready: %s: %s", name, result.detail)  # said when it changes, not every check
        self._results[name] = (self._clock(), result)
        return result


def readiness_answer(results: Mapping[str, CheckResult]) -> Answer:
    """200 when every check passed, else 503 naming the failed ones first (``failed``)."""
    failed = sorted(name for name, result in results.items() if not result.ok)
    body = {"status": "not ready" if failed else "ready", "failed": failed,
            "checks": {name: {"ok": r.ok, "detail": r.detail} for name, r in sorted(results.items())}}
    return Answer(status=503 if failed else 200, body=json.dumps(body, indent=1).encode() + b"\n")


Route = Callable[[], Awaitable[Answer]]


def routes(readiness: Readiness, registry: CollectorRegistry,
           before_scrape: Callable[[], None] = lambda: None) -> dict[bytes, Route]:
    """The three paths; ``before_scrape`` refreshes what the metrics read from the readiness report."""

    async def healthz() -> Answer:
        return Answer(status=200, body=b'{"status": "alive"}\n')

    async def readyz() -> Answer:
        return readiness_answer(await readiness.report())

    async def metrics() -> Answer:
        await readiness.report()  # cached: the check gauges are as fresh as /readyz
        before_scrape()
        # Text format 0.0.4 (what every Prometheus reads, Debian 12's 2.42 included): our names need none of
        # 1.0.0's escaping, and the library's "latest" would be a promise older servers do not know.
        return Answer(status=200, body=generate_latest(registry), content_type=CONTENT_TYPE_PLAIN_0_0_4)

    return {b"/healthz": healthz, b"/readyz": readyz, b"/metrics": metrics}


class AdminServer:
    """The listener: one GET or HEAD per connection, answered from ``paths`` (404 for any other path)."""

    def __init__(self, paths: Mapping[bytes, Route], host: str, port: int) -> None:
        self.paths = dict(paths)
        self.host, self.port = host, port
        self.reuse_port = False  # [server] workers > 1: every worker answers on the port (SO_REUSEPORT)
        self._server: asyncio.Server | None = None
        self._open = 0

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_HEAD,
                                                  reuse_port=self.reuse_port or None)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= MAX_CONNECTIONS:
            writer.transport.abort()
            return
        self._open += 1
        try:
            await asyncio.wait_for(self._exchange(reader, writer), TIMEOUT)
        except (TimeoutError, ConnectionError, h11.ProtocolError):
            pass
        finally:
            self._open -= 1
            if writer.transport.get_write_buffer_size():  # a client that does not read: no lingering
                writer.transport.abort()
            else:
                writer.close()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        request = await _request(connection, reader)
        if request is None:
            return
        answer = await self._answer(request)
        headers = [("Content-Type", answer.content_type), ("Content-Length", str(len(answer.body))),
                   ("Cache-Control", "no-store"), ("Connection", "close"), *answer.headers]
        out = connection.send(h11.Response(status_code=answer.status, headers=headers))
        if request.method != b"HEAD":
            out += connection.send(h11.Data(data=answer.body))
        writer.write(out + connection.send(h11.EndOfMessage()))
        await writer.drain()

    async def _answer(self, request: h11.Request) -> Answer:
        route = self.paths.get(request.target.split(b"?", 1)[0])
        if route is None:
            return Answer(status=404, body=b'{"error": "not found"}\n')
        if request.method not in (b"GET", b"HEAD"):
            return Answer(status=405, body=b'{"error": "GET or HEAD only"}\n', headers=(("Allow", "GET, HEAD"),))
        try:
            return await route()
        except Exception as error:  # the agent's own fault: said in the log, not in the answer
            log.error("admin %s failed: %r", request.target[:64].decode("ascii", "replace"), error)
            return Answer(status=500, body=b'{"error": "internal error (see the agent\'s log)"}\n')


async def _request(connection: h11.Connection, reader: asyncio.StreamReader) -> h11.Request | None:
    """The request's head (its body, if any, is never read: the answer closes the connection)."""
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(READ_SIZE)
            if not data:
                return None
            connection.receive_data(data)
        elif isinstance(event, h11.Request):
            return event
        else:  # ConnectionClosed, or anything else before a request
            return None


__all__ = ["MAX_CONNECTIONS", "AdminServer", "Answer", "CheckResult", "LocalCheck", "Readiness", "RemoteCheck",
           "readiness_answer", "routes"]
