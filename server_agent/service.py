"""The server agent's composition root: the listeners, and what lasts across reloads (the decision
log, outstanding moves, sessions, the shared state, metrics); TLS contexts and the identity provider and
PDP clients are built per generation of the configuration (:mod:`server_agent.generation`), replaced on
SIGHUP (:mod:`server_agent.reload`). The only place that builds real clients."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from audit.events import ApplicationEvent, Kind
from audit.syslog import SpooledSender
from dicomwire.listener import RelayServer
from dicomwire.version import version
from oauthclient import AsyncExecutor, AsyncOAuthClient
from tomlconf.reload import digest

from .admin import CheckResult
from .association import ServerPolicy
from .authn import Authenticator
from .config import ServerAgentConfig
from .decisions import Decisions, load_key
from .generation import Lasting, build, identity_client, pacs_context, pdp_credentials, return_context
from .logout import LogoutEndpoint
from .metrics import MeteredFactory
from .monitoring import MeteredDecisionLog, MeteredUnlogged, ServerAdmin, ServerMetrics, certificates
from .moves import MoveRegistry
from .pdp import PdpClient
from .sessions import Logout, LogoutVerifier, Sessions
from .shared import LocalShared, SharedState
from .shared_redis import RedisShared, connect

log = logging.getLogger("server_agent")


def shared_state(config: ServerAgentConfig) -> SharedState:
    """``[shared] redis``: the site's Redis (keys under ``dia:SITE:`` unless ``prefix`` says otherwise);
    else this process's own state (one worker)."""
    section = config.shared
    if section.redis is None:
        return LocalShared(config.identity.throttle, max_ended=config.sessions.max_ended)
    prefix = section.prefix or f"dia:{config.server.site or config.name}:"
    return RedisShared(connect(section), prefix, config.identity.throttle, timeout=section.timeout)


def shared_check(shared: SharedState) -> CheckResult:
    problem = shared.problem
    return CheckResult(ok=problem is None, detail=problem or ("Redis answers" if not isinstance(shared, LocalShared)
                                                             else "in this process"))


class ServerAgent:
    def __init__(self, config: ServerAgentConfig,
                 derive: Callable[[ServerAgentConfig], ServerAgentConfig] | None = None) -> None:
        # What a reload applies to the file it reads before comparing it (a worker's own decision log).
        self.derive = derive or (lambda c: c)
        # Certificates read from the running generation when scraped (the registry reads them once when the
        # collector is registered, before the first generation exists: then from ``config``).
        metrics = ServerMetrics(config.name, lambda: certificates(self.config if hasattr(self, "generation")
                                                                  else config),
                                config.admin.worker if config.admin is not None else None)
        logged, repository = config.decision_log, config.audit
        audit = SpooledSender(repository.target(), repository.spool) if repository and repository.spool else None
        decisions: Decisions
        if logged.enabled and logged.key_file is not None:
            decisions = MeteredDecisionLog(metrics, config.server.decision_log, load_key(logged.key_file),
                                           max_bytes=logged.max_bytes, checkpoint_interval=logged.checkpoint_interval,
                                           audit=audit, source_id=config.name)
        else:
            log.critical("DECISION LOG DISABLED ([decision_log] enabled = false in %s): decisions are not "
                         "recorded; for measurements only", config.path)
            decisions = MeteredUnlogged(metrics)
        shared = shared_state(config)
        self.lasting = Lasting(decisions=decisions, moves=MoveRegistry(shared), sessions=Sessions(config.sessions),
                               shared=shared, metrics=metrics)
        # Everything built from the file: replaced as a whole by a reload (server_agent.reload).
        self.generation = build(config, self.lasting, number=1, digest=digest(config.path))
        # One metered factory per kind of listener for the agent's life (metrics, and the wrappers of live
        # associations' policies); a reload puts the new generation's policy in it.
        self.metered = MeteredFactory(self.generation.policy, metrics)  # counts what the policy decides
        self.metered_returns = MeteredFactory(self.generation.returns, metrics)
        self.sessions.end_association = lambda owner: any(s.end(self.metered.outer(owner))
                                                          for s in (self.main, self.plain) if s)
        listen = config.sessions.logout_listen
        shared_port = config.server.workers > 1  # SO_REUSEPORT: the other workers bind the same ports
        self.logout = (LogoutEndpoint(self.logout_verifier(), self.sessions, *listen, shared=shared,
                                      reuse_port=shared_port) if listen else None)
        self._listeners(config, shared_port)
        for server in self.servers:
            metrics.watch(server.name, lambda server=server: server.live)  # type: ignore[misc]
        self.admin = (ServerAdmin(config.admin, config, metrics, lambda: self.servers, self.decisions)
                      if config.admin is not None else None)
        self._share(shared_port)

    def _share(self, shared_port: bool) -> None:
        """The parts that use the shared state beyond the moves: login throttles, logouts from other
        instances (ended here at once), readiness (not ready while it is out of reach: it refuses all)."""
        if isinstance(self.shared, RedisShared):  # (each generation's authn counts logins in it: build())
            self.shared.on_logout = lambda sid, sub, iat: self.sessions.end(Logout(sid=sid, sub=sub, issued_at=iat))
        if self.admin is not None:
            self.admin.readiness.local["shared_state"] = lambda: shared_check(self.shared)
            self.admin.server.reuse_port = shared_port
        self.retired: set[asyncio.Task[None]] = set()  # old generations waiting for their associations

    def _listeners(self, config: ServerAgentConfig, shared_port: bool) -> None:
        # Workstation agents only, each with a certificate from the site CA (mutual TLS, PS3.15 B.12).
        generation, limits, proxies = self.generation, self.generation.limits, config.server.proxy_protocol_from
        self.main = RelayServer(self.metered, host=config.listen[0], port=config.listen[1], ssl=generation.main_ssl,
                                limits=limits, max_associations=config.max_associations, name="main",
                                proxies=proxies, reuse_port=shared_port)
        self.plain = (RelayServer(self.metered, host=config.plain_listen[0], port=config.plain_listen[1],
                                  limits=limits, max_associations=config.max_associations, name="plain",
                                  proxies=proxies, reuse_port=shared_port)
                      if config.plain_listen else None)
        self.returns = RelayServer(self.metered_returns, host=config.return_listen[0], port=config.return_listen[1],
                                   ssl=generation.return_ssl, limits=limits,
                                   max_associations=config.return_.max_associations, name="return",
                                   proxies=proxies, reuse_port=shared_port)

    # -- the current generation's parts (server_agent.generation), by the names callers know ------------
    @property
    def config(self) -> ServerAgentConfig:
        return self.generation.config

    @property
    def metrics(self) -> ServerMetrics:
        return self.lasting.metrics

    @property
    def shared(self) -> SharedState:
        return self.lasting.shared

    @property
    def decisions(self) -> Decisions:
        return self.lasting.decisions

    @property
    def moves(self) -> MoveRegistry:
        return self.lasting.moves

    @property
    def sessions(self) -> Sessions:
        return self.lasting.sessions

    @property
    def policy(self) -> ServerPolicy:
        return self.generation.policy

    @property
    def authn(self) -> Authenticator:
        return self.generation.authn

    @property
    def oauth(self) -> AsyncOAuthClient:
        return self.generation.authn.oauth

    @property
    def pdp(self) -> PdpClient:
        return self.generation.policy.pdp

    @property
    def http(self) -> AsyncExecutor:
        return self.generation.http

    @property
    def pdp_http(self) -> AsyncExecutor:
        return self.generation.pdp_http

    def logout_verifier(self) -> LogoutVerifier:
        sessions = self.config.sessions
        return LogoutVerifier(self.config.identity, self.authn, sessions.logout_max_age, sessions.logout_audiences)

    @property
    def servers(self) -> list[RelayServer]:
        return [s for s in (self.main, self.plain, self.returns) if s is not None]

    async def start(self) -> None:
        start = getattr(self.shared, "start", None)
        if start is not None:
            start()  # pings Redis: unreachable means refuse (fail closed), and /readyz false
        for server in self.servers:
            await server.start()
        if self.logout is not None:
            await self.logout.start()
            log.info("back-channel logout endpoint on http://%s:%d/backchannel-logout", *self.logout.address)
        if self.admin is not None:  # once the listeners are up: ready means they are
            await self.admin.start()
        self.decisions.write(ApplicationEvent(kind=Kind.APPLICATION_START, name=self.config.name,
                                              detail={"listen": f"{self.main.address[0]}:{self.main.address[1]}",
                                                      "version": version(),
                                                      **({"site": self.config.server.site}
                                                         if self.config.server.site else {})}))
        log.info("server agent %s: TLS on %s:%d%s, return listener on %s:%d, PACS %s", self.config.name,
                 *self.main.address, f", plain on {self.plain.address[0]}:{self.plain.address[1]}" if self.plain
                 else "", *self.returns.address, ", ".join(self.config.pacs))

    async def stop(self, deadline: float = 10.0) -> None:
        if self.logout is not None:
            await self.logout.stop()
        await asyncio.gather(*(s.shutdown(deadline) for s in self.servers))
        self.decisions.write(ApplicationEvent(kind=Kind.APPLICATION_STOP, name=self.config.name))
        self.decisions.close()
        await self.shared.close()
        for task in list(self.retired):  # their associations are over now: close their clients at once
            task.cancel()
        await asyncio.gather(*self.retired, return_exceptions=True)
        await self.generation.aclose()
        if self.admin is not None:  # last: /readyz says 503 while the listeners drain
            await self.admin.stop()


__all__ = ["ServerAgent", "identity_client", "pacs_context", "pdp_credentials", "return_context", "shared_check",
           "shared_state"]
