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

from .http11 import Answer, Bounds, HttpListener

log = logging.getLogger("admin")

MAX_HEAD = 8 * 1024  # a health check's request line and headers are a few hundred bytes
TIMEOUT = 5.0  # seconds for a whole exchange: a client that sends nothing holds its connection no longer
# Seconds a readiness check that asks another server may take: below TIMEOUT, so that a server that hangs is
# named in a 503 instead of the exchange timing out unanswered.
CHECK_TIMEOUT = 3.0
MAX_CONNECTIONS = 16  # at once; a monitoring system needs a few, a flood gets closed connections


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckResult:
    """One readiness check's state: ``detail`` is the agent's own sentence, safe to show anyone."""

    ok: bool
    detail: str = ""


RemoteCheck = Callable[[], Awaitable[CheckResult]]  # asks another server: cached, one probe at a time
LocalCheck = Callable[[], CheckResult]  # reads this process's own state: cheap, asked every time


class Readiness:
    """The checks of ``/readyz``: ``local`` ones on every call, ``remote`` ones at most once per ``interval``
    seconds each (one probe in flight per check, shared by every caller meanwhile), each within
    ``timeout`` seconds (no answer is a failure).

    A remote result older than ``interval`` is refreshed in the background while callers get it as it
    is, so that a load balancer's check (often given a second) never waits on another server; a result
    older than ``interval + timeout`` (no probe can take longer) is not given: the caller waits."""

    def __init__(self, *, local: Mapping[str, LocalCheck], remote: Mapping[str, RemoteCheck], interval: float,
                 timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.local = dict(local)
        self.remote = dict(remote)
        self.interval = interval
        self.timeout = timeout
        self._clock = clock
        self._results: dict[str, tuple[float, CheckResult]] = {}
        self._probes: dict[str, asyncio.Task[CheckResult]] = {}
        self._epoch = 0  # which servers the remote checks ask: one more at each renew()
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
        age = self._clock() - cached[0] if cached is not None else float("inf")
        if cached is not None and age < self.interval:
            return cached[1]
        probe = self._probes.get(name)
        if probe is None:
            probe = asyncio.get_running_loop().create_task(self._probe(name, self._epoch))
            self._probes[name] = probe
            probe.add_done_callback(lambda done: self._probes.pop(name) if self._probes.get(name) is done else None)
        if cached is not None and age < self.interval + self.timeout:
            return cached[1]  # being refreshed
        return await asyncio.shield(probe)  # a caller that leaves does not cancel the others' probe

    def renew(self) -> list[asyncio.Task[CheckResult]]:
        """Forget what the remote checks found: the servers they ask were replaced (a reload), so the next
        report probes the new ones, never answering with what the old ones said. A probe under way still
        answers the callers already waiting for it, but its result is not kept; the probes under way are
        returned, so that the clients they use can be closed once they end (within ``timeout``)."""
        self._epoch += 1
        self._results.clear()
        under_way = list(self._probes.values())
        self._probes.clear()
        return under_way

    def close(self) -> None:
        """Cancel the probes under way (the agent is stopping)."""
        for probe in list(self._probes.values()):
            probe.cancel()

    async def _probe(self, name: str, epoch: int) -> CheckResult:
        try:
            async with asyncio.timeout(self.timeout):
                result = await self.remote[name]()
        except TimeoutError:
            result = CheckResult(ok=False, detail=f"no answer within {self.timeout:g} s")
        except Exception as error:
            log.warning("readiness check %s failed: %r", name, error)
            result = CheckResult(ok=False, detail="the check itself failed (see the agent's log)")
        if epoch != self._epoch:
            return result  # about servers a reload replaced: for its waiting callers only
        if not result.ok and self._results.get(name, (0.0, CheckResult(ok=True)))[1].ok:
            log.warning("not ready: %s: %s", name, result.detail)  # said when it changes, not every check
        self._results[name] = (self._clock(), result)
        return result


def throttled(check: LocalCheck, seconds: float, clock: Callable[[], float] = time.monotonic) -> LocalCheck:
    """``check`` run at most once per ``seconds``, its result given in between: for a local check that
    touches the disk, so that a flood of ``/readyz`` on the loopback is not a flood of file operations."""
    last: list[tuple[float, CheckResult]] = []

    def run() -> CheckResult:
        now = clock()
        if not last or now - last[0][0] >= seconds:
            last[:] = [(now, check())]
        return last[0][1]
    return run


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
    """The listener: one GET or HEAD per connection, answered from ``paths`` (404 for any other path),
    through the agents' one small HTTP server (:mod:`server_agent.http11`)."""

    def __init__(self, paths: Mapping[bytes, Route], host: str, port: int) -> None:
        self.paths = dict(paths)
        self.listener = HttpListener(self, host, port, Bounds(max_head=MAX_HEAD, max_body=0, timeout=TIMEOUT,
                                                              max_connections=MAX_CONNECTIONS))

    @property
    def address(self) -> tuple[str, int]:
        return self.listener.address

    @property
    def reuse_port(self) -> bool:
        """[server] workers > 1: every worker answers on the port (SO_REUSEPORT); set before start."""
        return self.listener.reuse_port

    @reuse_port.setter
    def reuse_port(self, value: bool) -> None:
        self.listener.reuse_port = value

    async def start(self) -> None:
        await self.listener.start()

    async def stop(self) -> None:
        await self.listener.stop()

    def head(self, request: h11.Request) -> Answer | None:
        if request.target.split(b"?", 1)[0] not in self.paths:
            return Answer(status=404, body=b'{"error": "not found"}\n')
        if request.method not in (b"GET", b"HEAD"):
            return Answer(status=405, body=b'{"error": "GET or HEAD only"}\n', headers=(("Allow", "GET, HEAD"),))
        return None

    async def answer(self, request: h11.Request, body: bytes) -> Answer:
        try:
            return await self.paths[request.target.split(b"?", 1)[0]]()
        except Exception as error:  # the agent's own fault: said in the log, not in the answer
            log.error("admin %s failed: %r", request.target[:64].decode("ascii", "replace"), error)
            return Answer(status=500, body=b'{"error": "internal error (see the agent\'s log)"}\n')


__all__ = ["CHECK_TIMEOUT", "MAX_CONNECTIONS", "AdminServer", "Answer", "CheckResult", "LocalCheck", "Readiness",
           "RemoteCheck", "readiness_answer", "routes", "throttled"]
