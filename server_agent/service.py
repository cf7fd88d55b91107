"""The server agent's composition root: TLS contexts, the identity provider and PDP clients, the
listeners. The only place that builds real clients."""

from __future__ import annotations

import asyncio
import logging
import ssl

from audit.events import ApplicationEvent, Kind
from audit.syslog import SpooledSender
from dicomwire.listener import RelayServer
from dicomwire.tls import client_context, server_context
from dicomwire.version import version
from oauthclient import AsyncExecutor, AsyncOAuthClient, AuthMethod, ClientAuth, Timeouts, TlsFiles

from .admin import CheckResult
from .association import ServerPolicy
from .authn import Authenticator
from .config import IdentityConfig, Pacs, PdpConfig, ServerAgentConfig
from .decisions import Decisions, load_key
from .logout import LogoutEndpoint
from .metrics import MeteredFactory, TimedExecutor
from .monitoring import (
    MeteredDecisionLog,
    MeteredUnlogged,
    ServerAdmin,
    ServerMetrics,
    TimedPdpClient,
    certificates,
)
from .moves import MoveRegistry
from .pdp import ClientCredentials, Credentials, TokenFile
from .returns import ReturnPolicy
from .sessions import Logout, LogoutVerifier, Sessions
from .shared import LocalShared, SharedState
from .shared_redis import RedisShared, connect

log = logging.getLogger("server_agent")


def pacs_context(pacs: Pacs) -> ssl.SSLContext:
    """To a PACS that offers DICOM over TLS (PS3.15 B.1): its certificate checked against its CA, ours
    presented for one that requires client certificates."""
    return client_context(ca=pacs.ca, certificate=pacs.certificate, key=pacs.key)


def return_context(config: ServerAgentConfig) -> ssl.SSLContext | None:
    """The return listener with ``[return] tls``: DICOM over TLS (PS3.15 B.12) with a client certificate
    from a configured PACS's CA required; which PACS it names is checked per association."""
    if not config.return_.tls:
        return None
    return server_context(config.certificate, config.key, ca=[p.ca for p in config.pacs.values() if p.ca])


def identity_client(identity: IdentityConfig) -> ClientAuth:
    return ClientAuth(client_id=identity.client_id, method=AuthMethod(identity.client_auth),
                      secret=identity.client_secret)


def pdp_credentials(pdp: PdpConfig, identity: AsyncOAuthClient, http: AsyncExecutor) -> Credentials:
    """How the agent gets its PDP token (``[pdp] auth``): the identity provider's client, its own
    client at the PDP's authorization server, or a token file."""
    if pdp.auth == "identity":
        return ClientCredentials(identity, pdp.scope)
    if pdp.auth == "token_file" and pdp.token_file is not None:
        return TokenFile(pdp.token_file)
    assert pdp.issuer is not None  # derived from url when the file was read
    method = AuthMethod.TLS_CLIENT_AUTH if pdp.auth == "tls_client_auth" else AuthMethod(pdp.client_auth)
    return ClientCredentials(AsyncOAuthClient(pdp.issuer, ClientAuth(client_id=pdp.client_id, method=method,
                                                                     secret=pdp.client_secret), http), pdp.scope)


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
    def __init__(self, config: ServerAgentConfig) -> None:
        self.config = config
        self.metrics = ServerMetrics(config.name, lambda: certificates(self.config),  # a registry of its own
                                     config.admin.worker if config.admin is not None else None)
        logged, repository = config.decision_log, config.audit
        audit = SpooledSender(repository.target(), repository.spool) if repository and repository.spool else None
        self.decisions: Decisions
        if logged.enabled and logged.key_file is not None:
            self.decisions = MeteredDecisionLog(self.metrics, config.server.decision_log, load_key(logged.key_file),
                                         max_bytes=logged.max_bytes,
                                         checkpoint_interval=logged.checkpoint_interval, audit=audit,
                                         source_id=config.name)
        else:
            log.critical("DECISION LOG DISABLED ([decision_log] enabled = false in %s): decisions are not "
                         "recorded; for measurements only", config.path)
            self.decisions = MeteredUnlogged(self.metrics)
        # One HTTP client for this event loop: the identity provider and the PDP (never another thread's).
        self.http = TimedExecutor(self.metrics.provider_seconds, tls=TlsFiles(ca_file=config.identity.ca_file),
                                  timeouts=Timeouts.within(config.identity.timeout))
        self.oauth = AsyncOAuthClient(config.identity.issuer, identity_client(config.identity), self.http)
        self.authn = Authenticator(config.identity, self.oauth)
        # The PDP's own HTTP client when it needs another CA or our client certificate (RFC 8705).
        self.pdp_http = (self.http if config.pdp.certificate is None and config.pdp.ca_file == config.identity.ca_file
                         else AsyncExecutor(tls=TlsFiles(ca_file=config.pdp.ca_file, certificate=config.pdp.certificate,
                                                         key=config.pdp.key),
                                            timeouts=Timeouts.within(config.pdp.timeout)))
        self.pdp = TimedPdpClient(self.metrics.pdp_seconds, config.pdp,
                                  pdp_credentials(config.pdp, self.oauth, self.pdp_http), self.pdp_http)
        self.shared = shared_state(config)
        self.moves = MoveRegistry(self.shared)
        pacs_ssl = {p.name: pacs_context(p) for p in config.pacs.values() if p.tls}
        limits = config.limits.relay()
        # Deny by default: every request is decided (ServerPolicy.asks), so one the agent has no policy
        # for (N-ACTION, N-CREATE, ...) is refused 0124H instead of reaching the PACS unchecked. One
        # factory for both main listeners: each association still gets an object of its own.
        self.sessions = Sessions(config.sessions)
        self.policy = ServerPolicy(config, self.authn, self.pdp, self.moves, self.decisions, pacs_ssl,
                                   sessions=self.sessions)
        metered = MeteredFactory(self.policy, self.metrics)  # counts what the policy decides, changes nothing
        self.sessions.end_association = lambda owner: any(s.end(metered.outer(owner)) for s in (self.main, self.plain)
                                                          if s)
        listen = config.sessions.logout_listen
        verifier = LogoutVerifier(config.identity, self.authn, config.sessions.logout_max_age,
                                  config.sessions.logout_audiences)
        shared_port = config.server.workers > 1  # SO_REUSEPORT: the other workers bind the same ports
        self.logout = (LogoutEndpoint(verifier, self.sessions, *listen, shared=self.shared, reuse_port=shared_port)
                       if listen else None)
        # Workstation agents only, each with a certificate from the site CA (mutual TLS, PS3.15 B.12).
        self.main = RelayServer(metered, host=config.listen[0], port=config.listen[1],
                                ssl=server_context(config.certificate, config.key, ca=config.ca),
                                limits=limits, max_associations=config.max_associations, name="main",
                                proxies=config.server.proxy_protocol_from, reuse_port=shared_port)
        self.plain = (RelayServer(metered, host=config.plain_listen[0], port=config.plain_listen[1],
                                  limits=limits, max_associations=config.max_associations, name="plain",
                                  proxies=config.server.proxy_protocol_from, reuse_port=shared_port)
                      if config.plain_listen else None)
        returns = ReturnPolicy(config, self.moves, self.decisions,
                               client_context(ca=config.ca, certificate=config.certificate, key=config.key),
                               deciders=self.policy)
        self.returns = RelayServer(MeteredFactory(returns, self.metrics), host=config.return_listen[0],
                                   port=config.return_listen[1],
                                   ssl=return_context(config), limits=limits,
                                   max_associations=config.return_.max_associations, name="return",
                                   proxies=config.server.proxy_protocol_from, reuse_port=shared_port)
        for server in self.servers:
            self.metrics.watch(server.name, lambda server=server: server.live)  # type: ignore[misc]
        self.admin = (ServerAdmin(config.admin, config, self.metrics, lambda: self.servers, self.decisions)
                      if config.admin is not None else None)
        self._share(shared_port)

    def _share(self, shared_port: bool) -> None:
        """The parts that use the shared state beyond the moves: login throttles, logouts from other
        instances (ended here at once), readiness (not ready while it is out of reach: it refuses all)."""
        self.authn.logins = self.shared
        if isinstance(self.shared, RedisShared):
            self.shared.on_logout = lambda sid, sub, iat: self.sessions.end(Logout(sid=sid, sub=sub, issued_at=iat))
        if self.admin is not None:
            self.admin.readiness.local["shared_state"] = lambda: shared_check(self.shared)
            self.admin.server.reuse_port = shared_port

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
        await self.http.aclose()
        if self.pdp_http is not self.http:
            await self.pdp_http.aclose()
        if self.admin is not None:  # last: /readyz says 503 while the listeners drain
            await self.admin.stop()
