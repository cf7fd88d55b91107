"""The workstation agent's admin listener (issue 15 item 3): the same ``/healthz``, ``/readyz`` and
``/metrics`` as the server agent's (:mod:`server_agent.admin`), with the workstation's own checks.

Ready means able to carry an app's association: both listeners up; the user's session holds an
access token that has not expired (the agent refreshes it ahead of time, RFC 6749 section 6); the
identity provider answers its discovery document (OIDC Discovery 1.0 section 4); and every route's
server agent accepts a TCP connection (closed at once: a TCP check costs the server agent no slot and
leaves nothing there). The provider and the routes are asked at most once per ``[admin] check_interval``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import Gauge

from dicomwire.listener import RelayServer
from oauthclient import AsyncExecutor, OAuthClientError, Timeouts, TlsFiles, discovery
from server_agent.admin import CHECK_TIMEOUT, AdminServer, CheckResult, Readiness, routes
from server_agent.metrics import CertificateExpiry, RelayMetrics
from server_agent.monitoring import check_listeners
from tomlconf.admin import AdminSection

from .config import WorkstationConfig
from .policy import Credentials

log = logging.getLogger("dicom_agent.admin")


class WorkstationMetrics(RelayMetrics):
    """The workstation agent's registry: the relays' metrics, its session and its certificates."""

    def __init__(self, config: WorkstationConfig, credentials: Callable[[], Credentials]) -> None:
        super().__init__("workstation", config.name)
        self.config = config  # the running generation's (WorkstationAdmin.follow): its certificate files
        Gauge("dicom_agent_session_token_seconds", "Seconds the user's access token is still valid for "
              "(negative: expired)", registry=self.registry).set_function(
            lambda: credentials().tokens.expires_at - time.time())
        self.registry.register(CertificateExpiry(lambda: certificates(self.config)))


def certificates(config: WorkstationConfig) -> dict[str, Path]:
    """The certificate files of the configuration, by key (read when scraped: a reload's are seen)."""
    return {"tls.certificate": config.tls.certificate, "tls.ca": config.tls.ca}


class WorkstationAdmin:
    """``[admin]`` of the workstation agent: the listener, its checks and the metrics."""

    def __init__(self, admin: AdminSection, config: WorkstationConfig, metrics: WorkstationMetrics,
                 servers: Callable[[], list[RelayServer]], credentials: Callable[[], Credentials]) -> None:
        self.config = config
        self.metrics = metrics
        provider = config.identity_provider
        self.http = AsyncExecutor(tls=TlsFiles(ca_file=provider.ca_file), timeouts=Timeouts.within(provider.timeout))
        self.credentials = credentials
        self.readiness = Readiness(
            local={"listeners": lambda: check_listeners(servers()), "session": self.check_session},
            remote={"identity_provider": self.check_provider, "routes": self.check_routes},
            interval=admin.check_interval, timeout=min(provider.timeout, CHECK_TIMEOUT))
        self.server = AdminServer(routes(self.readiness, metrics.registry,
                                         lambda: metrics.checks(self.readiness.last)), *admin.listen)

    def follow(self, config: WorkstationConfig) -> None:
        """A reload (issue 15 item 1): the routes checked and the certificates measured are ``config``'s
        from now on, and nothing found about the old routes is given again. (The identity provider cannot
        change without a restart: agent.reload.RESTART_KEYS.)"""
        self.config = self.metrics.config = config
        self.readiness.renew()

    def check_session(self) -> CheckResult:
        tokens = self.credentials().tokens
        if tokens.remaining <= 0:
            return CheckResult(ok=False, detail="the access token has expired: log in again")
        return CheckResult(ok=True, detail=f"access token valid for {tokens.remaining:.0f} s")

    async def check_provider(self) -> CheckResult:
        exchange = discovery(self.config.identity_provider.issuer)
        try:
            exchange.parse(await self.http.send(exchange.request))
        except OAuthClientError as error:
            log.warning("readiness: identity provider: %s", error)
            return CheckResult(ok=False, detail="identity provider unreachable (discovery; see the log)")
        return CheckResult(ok=True, detail="discovery answered")

    async def check_routes(self) -> CheckResult:
        """Each route reachable at one of its addresses at least (``[routes.X] addresses``: the agent
        fails over to them, so one that answers carries the apps' associations)."""
        routes_ = sorted(self.config.routes.values(), key=lambda r: r.name)
        answers = await asyncio.gather(*(_any_connects([(r.host, r.port), *r.addresses]) for r in routes_))
        down = [r.name for r, up in zip(routes_, answers, strict=True) if not up]
        if down:
            return CheckResult(ok=False, detail=f"server agent not reachable: {', '.join(down)}")
        return CheckResult(ok=True, detail=f"{len(routes_)} server agent(s) reachable")

    async def start(self) -> None:
        await self.server.start()
        log.info("admin listener on http://%s:%d (/healthz /readyz /metrics)", *self.server.address)

    async def stop(self) -> None:
        await self.server.stop()
        self.readiness.close()
        await self.http.aclose()


async def _any_connects(addresses: list[tuple[str, int]]) -> bool:
    return any(await asyncio.gather(*(_connects(host, port) for host, port in addresses)))


async def _connects(host: str, port: int, timeout: float = 3.0) -> bool:
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.transport.abort()  # nothing sent: the server agent forgets it at once
    return True


__all__ = ["WorkstationAdmin", "WorkstationMetrics", "certificates"]
