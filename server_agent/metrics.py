"""The agents' Prometheus metrics (issue 15 item 3), each agent in a :class:`CollectorRegistry` of its own.

What is counted comes from three places, each observed without changing what it decides:

- :class:`MeteredFactory` stands between a relay listener and its policy factory: association results,
  DIMSE requests put to the policy and their verdicts, relay notices, and the bytes each side sent
  (PS3.8 association life as the relay saw it, counted when the association ends);
- :class:`TimedExecutor` is the HTTP client of the identity provider and times each exchange
  (``dicom_agent_provider_request_seconds``); the server agent times each decision it asks of the PDP
  (``dicom_agent_pdp_request_seconds``, ``server_agent.monitoring.TimedPdpClient``);
- collectors read state when scraped: live associations per listener, certificate expiry.

Label cardinality is bounded by construction (a peer must not be able to grow the registry): a label
value is a listener name or a certificate's key from our configuration, or a member of one of our enums
(PS3.7 Command Field, PS3.8 A-ASSOCIATE-RJ reasons, :class:`~dicomwire.commands.NoticeKind`). No AE
title, user name, patient id or free text reaches a label.
"""

from __future__ import annotations

import datetime as dt
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dicomwire.association import Side
from dicomwire.commands import Notice
from dicomwire.dimse import CommandField
from dicomwire.policy import Asks, AssociationPolicy, ConnectionInfo, Ending, PolicyFactory
from dicomwire.questions import (
    AcceptQuestion,
    AcceptVerdict,
    AssociationQuestion,
    AssociationVerdict,
    Drop,
    Extend,
    Permit,
    Refuse,
    RejectAssociation,
    RequestQuestion,
    RequestVerdict,
    ResponseQuestion,
    ResponseVerdict,
    Rewrite,
)
from dicomwire.version import version
from oauthclient import AsyncExecutor
from oauthclient.executors import Timeouts
from oauthclient.http import HttpRequest, HttpResponse

log = logging.getLogger("admin.metrics")

# Seconds: an exchange with the PDP or the provider on a LAN takes milliseconds; the [pdp] timeout is 2 s.
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)

# PS3.8 9.3.4: the meaning of an A-ASSOCIATE-RJ reason depends on its source (the numbers repeat).
_REJECT_REASONS: dict[tuple[int, int], str] = {
    (1, 1): "no_reason", (1, 2): "application_context_not_supported", (1, 3): "calling_ae_not_recognized",
    (1, 7): "called_ae_not_recognized", (2, 1): "no_reason", (2, 2): "protocol_version_not_supported",
    (3, 1): "temporary_congestion", (3, 2): "local_limit_exceeded"}
_COMMANDS = {int(c): c.name.removesuffix("_RQ").replace("_", "-") for c in CommandField if c.name.endswith("_RQ")}
_VERDICTS: dict[type, str] = {Permit: "permit", Refuse: "refuse", Drop: "drop", Rewrite: "rewrite", Extend: "extend"}


class RelayMetrics:
    """What both agents count about their associations, in this agent's own registry."""

    def __init__(self, agent: str, name: str, worker: int | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        Gauge("dicom_agent_info", "The agent: kind, configured name, version and worker ([server] workers; "
              "empty: the only process) (always 1)", ["agent", "name", "version", "worker"], registry=r).labels(
            agent, name, version(), "" if worker is None else str(worker)).set(1)
        self.live = Gauge("dicom_agent_associations_live", "Associations holding a slot now, per listener",
                          ["listener"], registry=r)
        self.associations = Counter(
            "dicom_agent_associations", "Associations ended, by result (accepted, rejected: by this agent, "
            "not_established: refused or unreachable upstream, undecided: no request was decided) and "
            "A-ASSOCIATE-RJ reason (PS3.8 9.3.4)", ["listener", "result", "reason"], registry=r)
        self.requests = Counter("dicom_agent_requests", "DIMSE requests put to the policy, by command and verdict",
                                ["listener", "command", "verdict"], registry=r)
        self.notices = Counter("dicom_agent_relay_notices", "What the relay refused or ended on its own "
                               "(malformed, violation, decision_timeout, failed)", ["listener", "kind"], registry=r)
        self.bytes = Counter("dicom_agent_relayed_bytes", "Bytes received to relay, by the side that sent them "
                             "(counted when the association ends)", ["listener", "direction"], registry=r)
        self.provider_seconds = Histogram("dicom_agent_provider_request_seconds", "HTTP exchanges with the "
                                          "identity provider", ["outcome"], buckets=LATENCY_BUCKETS, registry=r)
        self.pdp_seconds = Histogram("dicom_agent_pdp_request_seconds", "Decisions asked of the policy decision "
                                     "point, its token included (cached answers are not counted)", ["outcome"],
                                     buckets=LATENCY_BUCKETS, registry=r)
        self.check_ok = Gauge("dicom_agent_check_ok", "Readiness checks as /readyz last saw them (1 passed)",
                              ["check"], registry=r)
        for outcome in ("ok", "error"):  # so that rates and alerts see the series from the start
            self.provider_seconds.labels(outcome)
            self.pdp_seconds.labels(outcome)

    def watch(self, listener: str, live: Callable[[], int]) -> None:
        """Read a listener's live association count when scraped."""
        self.live.labels(listener).set_function(live)
        for direction in ("from_client", "from_server"):
            self.bytes.labels(listener, direction)

    def checks(self, results: Mapping[str, Any]) -> None:
        for name, result in results.items():
            self.check_ok.labels(name).set(1 if result.ok else 0)


class MeteredFactory:
    """A policy factory that counts what the one it wraps decides (see the module docstring). The label
    ``listener`` is the name the composition root gave the listener (:attr:`ConnectionInfo.listener`)."""

    def __init__(self, inner: PolicyFactory, metrics: RelayMetrics) -> None:
        self.inner = inner
        self.metrics = metrics
        self.asks: Asks = inner.asks  # asks about exactly what the wrapped policy asks about
        self._outer: dict[int, MeteredPolicy] = {}  # id(inner policy) -> its wrapper, while it lives

    def open(self, connection: ConnectionInfo) -> AssociationPolicy:
        inner = self.inner.open(connection)
        policy = MeteredPolicy(inner, self.metrics, connection.listener or "-", self._forget)
        self._outer[id(inner)] = policy
        return policy

    def _forget(self, policy: MeteredPolicy) -> None:
        if self._outer.get(id(policy.inner)) is policy:  # a factory may hand one policy to several associations
            del self._outer[id(policy.inner)]

    def outer(self, inner: object) -> object:
        """The policy the relay holds for ``inner`` (what :meth:`RelayServer.end` looks for)."""
        return self._outer.get(id(inner), inner)


T = TypeVar("T")


class MeteredPolicy:
    """One association's policy, observed: every answer is the wrapped policy's own."""

    def __init__(self, inner: AssociationPolicy, metrics: RelayMetrics, listener: str,
                 forget: Callable[[MeteredPolicy], None]) -> None:
        self.inner = inner
        self.metrics = metrics
        self.listener = listener
        self._forget = forget
        self._association: AssociationVerdict | None = None

    def associate(self, question: AssociationQuestion) -> AssociationVerdict | Awaitable[AssociationVerdict]:
        return _observed(self.inner.associate(question), self._associated)

    def accept(self, question: AcceptQuestion) -> AcceptVerdict | Awaitable[AcceptVerdict]:
        return _observed(self.inner.accept(question), self._accepted)

    def request(self, question: RequestQuestion) -> RequestVerdict | Awaitable[RequestVerdict]:
        command = _COMMANDS.get(question.command.command_field, "other")
        return _observed(self.inner.request(question), lambda verdict: self.metrics.requests.labels(
            self.listener, command, "error" if verdict is None else _VERDICTS.get(type(verdict), "other")).inc())

    def response(self, question: ResponseQuestion) -> ResponseVerdict | Awaitable[ResponseVerdict]:
        return self.inner.response(question)

    def notice(self, notice: Notice) -> None:
        self.metrics.notices.labels(self.listener, notice.kind.value).inc()
        self.inner.notice(notice)

    def close(self, ending: Ending) -> None:
        self._forget(self)
        try:
            self.inner.close(ending)
        finally:
            self._ended(ending)

    def _associated(self, verdict: AssociationVerdict | None) -> None:
        self._association = verdict

    def _accepted(self, verdict: AcceptVerdict | None) -> None:
        if isinstance(verdict, RejectAssociation):  # the A-ASSOCIATE-AC reviewed and refused
            self._association = verdict

    def _ended(self, ending: Ending) -> None:
        verdict = self._association
        if ending.established:
            result, reason = "accepted", "none"
        elif isinstance(verdict, RejectAssociation):
            result, reason = "rejected", _REJECT_REASONS.get((verdict.source, verdict.reason), "other")
        elif verdict is not None:
            result, reason = "not_established", "none"
        else:
            result, reason = "undecided", "none"
        self.metrics.associations.labels(self.listener, result, reason).inc()
        for side, direction in ((Side.CLIENT, "from_client"), (Side.SERVER, "from_server")):
            count = ending.bytes_in.get(side, 0)
            if count:
                self.metrics.bytes.labels(self.listener, direction).inc(count)


def _observed(verdict: T | Awaitable[T], seen: Callable[[T | None], None]) -> T | Awaitable[T]:
    """``verdict`` as it is, ``seen`` told of it now or when it is known (None: the policy raised)."""
    if not inspect.isawaitable(verdict):
        seen(verdict)
        return verdict
    return _later(verdict, seen)


async def _later(pending: Awaitable[T], seen: Callable[[T | None], None]) -> T:
    try:
        verdict = await pending
    except Exception:
        seen(None)
        raise
    seen(verdict)
    return verdict


# Set while a PDP decision is awaited (the server agent's TimedPdpClient): the exchanges it makes are timed
# as the PDP's, even on a client the PDP shares with the identity provider (its token included).
PDP_CALL: ContextVar[bool] = ContextVar("pdp_call", default=False)


class TimedExecutor(AsyncExecutor):
    """The identity provider's HTTP client, each exchange timed into ``histogram`` (outcome ``ok``: an
    answer, whatever its status; ``error``: none within the deadline), except those made for a PDP decision
    (:data:`PDP_CALL`), which the PDP's histogram times."""

    def __init__(self, histogram: Histogram, **options: Any) -> None:
        super().__init__(**options)
        self._ok, self._error = histogram.labels("ok"), histogram.labels("error")

    async def send(self, request: HttpRequest, timeouts: Timeouts | None = None) -> HttpResponse:
        if PDP_CALL.get():
            return await super().send(request, timeouts)
        started = time.perf_counter()
        try:
            response = await super().send(request, timeouts)
        except BaseException:
            self._error.observe(time.perf_counter() - started)
            raise
        self._ok.observe(time.perf_counter() - started)
        return response


class CertificateExpiry(Collector):
    """``dicom_agent_certificate_expiry_days{certificate}``: days until each configured certificate file
    expires (a file of several, such as a CA bundle: its first to expire), read when scraped and parsed
    again only when the file changes. ``certificates``: the configuration key naming each file."""

    def __init__(self, certificates: Callable[[], Mapping[str, Path]],
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self.certificates = certificates
        self._clock = clock
        self._parsed: dict[Path, tuple[tuple[float, int], dt.datetime | None]] = {}

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("dicom_agent_certificate_expiry_days", "Days until the certificate expires "
                                   "(negative: expired), by configuration key", labels=["certificate"])
        now = self._clock()
        for key, path in sorted(self.certificates().items()):
            expiry = self._expiry(path)
            if expiry is not None:
                family.add_metric([key], (expiry - now).total_seconds() / 86400)
        yield family

    def _expiry(self, path: Path) -> dt.datetime | None:
        try:
            stat = path.stat()
        except OSError:
            return None
        stamp = (stat.st_mtime, stat.st_size)
        known = self._parsed.get(path)
        if known is not None and known[0] == stamp:
            return known[1]
        try:
            expiry: dt.datetime | None = min(c.not_valid_after_utc for c in _certificates(path.read_bytes()))
        except (OSError, ValueError) as error:
            log.warning("certificate %s cannot be read for its expiry: %s", path, error)
            expiry = None
        self._parsed[path] = (stamp, expiry)
        return expiry


def _certificates(pem: bytes) -> Iterable[x509.Certificate]:
    certificates = x509.load_pem_x509_certificates(pem)
    if not certificates:
        raise ValueError("no certificate in the file")
    return certificates


__all__ = ["LATENCY_BUCKETS", "PDP_CALL", "CertificateExpiry", "MeteredFactory", "MeteredPolicy", "RelayMetrics",
           "TimedExecutor"]
