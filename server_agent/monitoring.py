"""The server agent's admin listener (issue 15 item 3): its readiness checks and its metrics.

Ready means able to decide and record: the DICOM listeners are up; the identity provider answers
(discovery, then its JWKS fetched: the keys tokens are verified with, RFC 7517 section 5); the PDP
answers (its AuthZEN metadata, section 9.1); the decision log is healthy (no write failed, its writer not
behind), its writer lock is held by this process and its directory takes new files (its next segment);
and the audit spool is within ``[admin] max_audit_spool``. The provider and the PDP are asked with
HTTP clients of the checks' own, at most once per ``[admin] check_interval``: the running generation's
(:mod:`server_agent.probes`; after a reload, the new file's servers, and nothing the old ones said).

The counts of decisions come from the decision events themselves (:class:`MeteredDecisionLog`): the
reason label is the agent's :class:`~audit.events.Reason` (a decision the PDP made is ``pdp``, whatever
code the PDP gave: its vocabulary is not ours to bound).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from audit.events import AuthenticationEvent, AuthorizationEvent, DecisionEvent
from audit.syslog import SpooledSender
from dicomwire.listener import RelayServer
from tomlconf.admin import AdminSection

from .admin import CHECK_TIMEOUT, AdminServer, CheckResult, Readiness, routes, throttled
from .config import ServerAgentConfig
from .decisions import DecisionLog, Decisions, UnloggedDecisions
from .metrics import PDP_CALL, CertificateExpiry, RelayMetrics
from .pdp import Decision, PdpClient
from .probes import Probes

log = logging.getLogger("server_agent.admin")

DECISION_LOG_CHECK_EVERY = 1.0  # seconds: the check makes and removes a file; /readyz may be asked far more often


class ServerMetrics(RelayMetrics):
    """The server agent's registry: the relays' metrics and its decisions, log and spool."""

    def __init__(self, name: str, certificate_files: Callable[[], dict[str, Path]], worker: int | None = None) -> None:
        super().__init__("server", name, worker)
        r = self.registry
        self.authentications = Counter(
            "dicom_agent_authentications", "Association requests decided (identity, node policy, return path), by "
            "path, decision and the agent's reason code", ["path", "decision", "reason"], registry=r)
        self.decisions = Counter(
            "dicom_agent_decisions", "DIMSE requests, C-FIND matches and sub-operations decided, by action, "
            "decision, reason code and stage (request, match, sub_operation)",
            ["action", "decision", "reason", "stage"], registry=r)
        self.log_backlog = Gauge("dicom_agent_decision_log_backlog", "Decision records waiting for the disk",
                                 registry=r)
        self.log_healthy = Gauge("dicom_agent_decision_log_healthy", "1 while the decision log writes and keeps "
                                 "up (0: new work is refused with on_failure = refuse)", registry=r)
        self.spool = Gauge("dicom_agent_audit_spool_messages", "Audit messages spooled, not yet taken by the "
                           "audit record repository", registry=r)
        r.register(CertificateExpiry(certificate_files))  # read when scraped: a reloaded file is seen

    def count(self, event: DecisionEvent) -> None:
        if isinstance(event, AuthenticationEvent):
            path = "return" if event.path == "return" else "association"
            self.authentications.labels(path, event.decision.value, event.reason.value).inc()
        elif isinstance(event, AuthorizationEvent):
            stage = "match" if event.post_filter else "sub_operation" if event.sub_operation_of else "request"
            self.decisions.labels(event.action.value, event.decision.value, event.reason.value, stage).inc()

    def watch_log(self, decisions: Decisions, spool: SpooledSender | None) -> None:
        self.log_backlog.set_function(lambda: getattr(decisions, "backlog", 0))
        self.log_healthy.set_function(lambda: 1 if decisions.healthy else 0)
        self.spool.set_function(spool.pending if spool is not None else lambda: 0)


def certificates(config: ServerAgentConfig) -> dict[str, Path]:
    """Each certificate file of the configuration, by its key (bounded: the file's own keys)."""
    found = {"tls.certificate": config.tls.certificate, "tls.ca": config.tls.ca}
    for name, pacs in config.pacs.items():
        if pacs.ca is not None:
            found[f"pacs.{name}.ca"] = pacs.ca
        if pacs.tls and pacs.certificate is not None and pacs.certificate != config.tls.certificate:
            found[f"pacs.{name}.certificate"] = pacs.certificate
    if config.pdp.certificate is not None:
        found["pdp.certificate"] = config.pdp.certificate
    return found


class MeteredDecisionLog(DecisionLog):
    """The decision log, each event counted in ``metrics`` as it is handed over."""

    def __init__(self, metrics: ServerMetrics, *args: Any, **options: Any) -> None:
        self.metrics = metrics
        super().__init__(*args, **options)

    def write(self, event: DecisionEvent, /) -> None:
        self.metrics.count(event)
        super().write(event)

    @property
    def backlog(self) -> int:
        return len(self._pending)


class MeteredUnlogged(UnloggedDecisions):
    """``[decision_log] enabled = false``: nothing recorded, the decisions still counted."""

    backlog = 0

    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics

    def write(self, event: DecisionEvent, /) -> None:
        self.metrics.count(event)


class TimedPdpClient(PdpClient):
    """The PDP client, each decision it has to ask the PDP for timed into ``histogram`` (AuthZEN 1.0
    section 6: one evaluation or a batch; the answers its cache gives are not exchanges and not timed)."""

    def __init__(self, histogram: Histogram, *args: Any) -> None:
        super().__init__(*args)
        self._ok, self._error = histogram.labels("ok"), histogram.labels("error")

    async def evaluate(self, requests_: list[dict[str, Any]]) -> list[Decision]:
        started = time.perf_counter()
        marked = PDP_CALL.set(True)
        try:
            decisions = await super().evaluate(requests_)
        except BaseException:
            self._error.observe(time.perf_counter() - started)
            raise
        finally:
            PDP_CALL.reset(marked)
        if not all(d.cached for d in decisions):
            self._ok.observe(time.perf_counter() - started)
        return decisions


def check_listeners(servers: list[RelayServer]) -> CheckResult:
    closed = []
    for server in servers:
        try:
            server.address  # noqa: B018 - raises once the listening socket is closed
        except (AssertionError, OSError):
            closed.append(server.name)
    if closed:
        return CheckResult(ok=False, detail=f"not listening: {', '.join(closed)}")
    return CheckResult(ok=True, detail=", ".join(f"{s.name} {s.address[0]}:{s.address[1]}" for s in servers))


def check_decision_log(decisions: Decisions) -> CheckResult:
    """Healthy, the writer lock ours, and its directory takes a new file (the next segment goes there)."""
    if not isinstance(decisions, DecisionLog):
        return CheckResult(ok=True, detail="disabled ([decision_log] enabled = false): nothing is recorded")
    if decisions.problem is not None:
        return CheckResult(ok=False, detail=decisions.problem)
    if not _lock_held(decisions.path.with_name(decisions.path.name + ".lock")):
        return CheckResult(ok=False, detail="this process does not hold the decision log's writer lock")
    probe = decisions.path.with_name(f".{decisions.path.name}.readyz-{os.getpid()}")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        return CheckResult(ok=False, detail=f"the decision log's directory takes no new file: {error.strerror}")
    return CheckResult(ok=True, detail="writing")


def _lock_held(path: Path) -> bool:
    """Whether ``LOG.lock`` names this process and is locked (a lock on a new open file description
    conflicts with our own, audit/decisions.py's :class:`WriterLock`)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        if os.pread(fd, 32, 0).strip() != str(os.getpid()).encode():
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)  # nobody held it: not ours either
        return False
    finally:
        os.close(fd)


class ServerAdmin:
    """``[admin]``: the listener, its checks against this agent's parts, and its metrics. The checks that
    ask the identity provider and the PDP ask the running generation's (:meth:`follow`)."""

    def __init__(self, admin: AdminSection, config: ServerAgentConfig, metrics: ServerMetrics,
                 servers: Callable[[], list[RelayServer]], decisions: Decisions) -> None:
        self.metrics = metrics
        spool = decisions.audit if isinstance(decisions, DecisionLog) else None
        metrics.watch_log(decisions, spool)
        self.probes = Probes(config)
        self.retiring: set[asyncio.Task[None]] = set()  # the probes of replaced generations, closing
        self.max_spool = admin.max_audit_spool
        self.spool = spool
        self.readiness = Readiness(
            local={"listeners": lambda: check_listeners(servers()),
                   "decision_log": throttled(lambda: check_decision_log(decisions), DECISION_LOG_CHECK_EVERY)},
            remote={"identity_provider": lambda: self.probes.check_provider(),
                    "pdp": lambda: self.probes.check_pdp(), "audit_spool": self.check_spool},
            interval=admin.check_interval, timeout=check_timeout(config))
        paths = routes(self.readiness, metrics.registry, lambda: metrics.checks(self.readiness.last))
        self.server = AdminServer(paths, *admin.listen)
        # [server] workers: this worker alone, for a scrape that always reaches the same counters
        self.worker_server = AdminServer(paths, *admin.worker_listen) if admin.worker_listen else None

    def follow(self, config: ServerAgentConfig) -> None:
        """A reload (issue 15 item 1): from now on ``/readyz`` asks ``config``'s identity provider and PDP,
        and no result about the old ones is given again; their clients close once their last probe ends."""
        old, self.probes = self.probes, Probes(config)
        under_way = self.readiness.renew()
        self.readiness.timeout = check_timeout(config)
        task = asyncio.get_running_loop().create_task(_retire(old, under_way))
        self.retiring.add(task)
        task.add_done_callback(self.retiring.discard)

    async def check_spool(self) -> CheckResult:
        if self.spool is None:
            return CheckResult(ok=True, detail="no audit record repository configured")
        waiting = self.spool.pending()
        if waiting > self.max_spool:
            return CheckResult(ok=False, detail=f"{waiting} audit messages spooled (bound {self.max_spool})")
        return CheckResult(ok=True, detail=f"{waiting} audit messages spooled")

    async def start(self) -> None:
        await self.server.start()
        log.info("admin listener on http://%s:%d (/healthz /readyz /metrics)", *self.server.address)
        if self.worker_server is not None:
            await self.worker_server.start()
            log.info("this worker's own admin listener on http://%s:%d", *self.worker_server.address)

    async def stop(self) -> None:
        await self.server.stop()
        if self.worker_server is not None:
            await self.worker_server.stop()
        self.readiness.close()
        await asyncio.gather(*self.retiring, return_exceptions=True)
        await self.probes.aclose()


def check_timeout(config: ServerAgentConfig) -> float:
    """Seconds a probe may take: the slower server's own timeout, within the admin listener's bound."""
    return min(max(config.identity.timeout, config.pdp.timeout), CHECK_TIMEOUT)


async def _retire(probes: Probes, under_way: list[asyncio.Task[CheckResult]]) -> None:
    """Close a replaced generation's probe clients once the probes using them have ended."""
    try:
        if under_way:
            await asyncio.wait(under_way)
    finally:
        await probes.aclose()


__all__ = ["MeteredDecisionLog", "MeteredUnlogged", "ServerAdmin", "ServerMetrics", "TimedPdpClient", "certificates",
           "check_decision_log"]
