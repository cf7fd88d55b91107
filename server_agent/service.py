"""The server agent's composition root: the listeners, and what lasts across reloads (the decision
log, outstanding moves, sessions); TLS contexts and the identity provider and PDP clients are built per
generation of the configuration (:mod:`server_agent.generation`), replaced on SIGHUP
(:mod:`server_agent.reload`). The only place that builds real clients."""

from __future__ import annotations

import asyncio
import logging

from audit.events import ApplicationEvent, Kind
from audit.syslog import SpooledSender
from dicomwire.listener import RelayServer
from dicomwire.version import version
from oauthclient import AsyncExecutor, AsyncOAuthClient
from tomlconf.reload import digest

from .association import ServerPolicy
from .authn import Authenticator
from .config import ServerAgentConfig
from .decisions import DecisionLog, Decisions, UnloggedDecisions, load_key
from .generation import Lasting, build, identity_client, pacs_context, pdp_credentials, return_context
from .logout import LogoutEndpoint
from .moves import MoveRegistry
from .pdp import PdpClient
from .sessions import LogoutVerifier, Sessions

log = logging.getLogger("server_agent")


class ServerAgent:
    def __init__(self, config: ServerAgentConfig) -> None:
        logged, repository = config.decision_log, config.audit
        audit = SpooledSender(repository.target(), repository.spool) if repository and repository.spool else None
        decisions: Decisions
        if logged.enabled and logged.key_file is not None:
            decisions = DecisionLog(config.server.decision_log, load_key(logged.key_file),
                                    max_bytes=logged.max_bytes, checkpoint_interval=logged.checkpoint_interval,
                                    audit=audit, source_id=config.name)
        else:
            log.critical("DECISION LOG DISABLED ([decision_log] enabled = false in %s): decisions are not "
                         "recorded; for measurements only", config.path)
            decisions = UnloggedDecisions()
        self.lasting = Lasting(decisions=decisions, moves=MoveRegistry(), sessions=Sessions(config.sessions))
        # Everything built from the file: replaced as a whole by a reload (server_agent.reload).
        self.generation = build(config, self.lasting, number=1, digest=digest(config.path))
        self.sessions.end_association = lambda owner: any(s.end(owner) for s in (self.main, self.plain) if s)
        listen = config.sessions.logout_listen
        self.logout = LogoutEndpoint(self.logout_verifier(), self.sessions, *listen) if listen else None
        # Workstation agents only, each with a certificate from the site CA (mutual TLS, PS3.15 B.12).
        generation, limits = self.generation, self.generation.limits
        self.main = RelayServer(generation.policy, host=config.listen[0], port=config.listen[1],
                                ssl=generation.main_ssl, limits=limits, max_associations=config.max_associations,
                                name="main", proxies=config.server.proxy_protocol_from)
        self.plain = (RelayServer(generation.policy, host=config.plain_listen[0], port=config.plain_listen[1],
                                  limits=limits, max_associations=config.max_associations, name="plain",
                                  proxies=config.server.proxy_protocol_from)
                      if config.plain_listen else None)
        self.returns = RelayServer(generation.returns, host=config.return_listen[0], port=config.return_listen[1],
                                   ssl=generation.return_ssl, limits=limits,
                                   max_associations=config.return_.max_associations, name="return",
                                   proxies=config.server.proxy_protocol_from)
        self.retired: set[asyncio.Task[None]] = set()  # old generations waiting for their associations

    # -- the current generation's parts (server_agent.generation), by the names callers know ------------
    @property
    def config(self) -> ServerAgentConfig:
        return self.generation.config

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
        for server in self.servers:
            await server.start()
        if self.logout is not None:
            await self.logout.start()
            log.info("back-channel logout endpoint on http://%s:%d/backchannel-logout", *self.logout.address)
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
        for task in list(self.retired):  # their associations are over now: close their clients at once
            task.cancel()
        await asyncio.gather(*self.retired, return_exceptions=True)
        await self.generation.aclose()


__all__ = ["ServerAgent", "identity_client", "pacs_context", "pdp_credentials", "return_context"]
