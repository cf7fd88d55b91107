"""The workstation agent's composition root: TLS contexts, the session, the two listeners.

The only place that builds real clients (HTTP to the identity provider, TLS to server agents).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

import httpx

from dicomwire import tls
from dicomwire.listener import RelayServer
from server_agent.metrics import MeteredFactory

from .admin import WorkstationAdmin, WorkstationMetrics
from .config import IdentityProvider, WorkstationConfig
from .notices import Notifier
from .oidc import AsyncOidcClient, LoginError, Tokens
from .policy import AssociationLog, Credentials, ReturnPolicy, WorkstationPolicy

log = logging.getLogger("dicom_agent")


def client_context(config: WorkstationConfig) -> ssl.SSLContext:
    """To server agents: verified against the site CA, presenting our certificate (PS3.15 B.12)."""
    return tls.client_context(ca=config.tls.ca, certificate=config.tls.certificate, key=config.tls.key)


class Session:
    """The logged-in user's credentials, kept fresh while the agent runs."""

    def __init__(self, provider: IdentityProvider, tokens: Tokens, password: str | None, margin: float, *,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.provider = provider
        self.credentials = Credentials(tokens, password)
        self.margin = margin
        self._transport = transport  # tests: a fake provider
        self.ended: Callable[[str], None] = log.error  # told that the session ended (the agent: to the person)

    def current(self) -> Credentials:
        return self.credentials

    async def keep_fresh(self) -> None:
        """Refresh the access token ``margin`` seconds before it expires (RFC 6749 section 6), on this
        loop's own HTTP client; a provider that answers ``invalid_grant`` has ended the session."""
        async with AsyncOidcClient(self.provider, transport=self._transport) as client:
            while True:
                tokens = self.credentials.tokens
                await asyncio.sleep(max(1.0, tokens.remaining - self.margin))
                if not tokens.refresh_token:
                    continue
                try:
                    fresh = await client.refresh(tokens)
                except LoginError as error:
                    if error.code == "invalid_grant":  # RFC 6749 5.2: revoked or expired; retrying cannot help
                        self.ended(f"dicom-agent: your session ended at the identity provider ({error}): log in "
                                   "again (start the app again with dicom-agent launch)")
                        return
                    log.warning("token refresh failed (%s); retrying in 10 s", error)
                    await asyncio.sleep(10)
                    continue
                self.credentials = Credentials(fresh, self.credentials.password)
                log.info("access token refreshed for %s", fresh.username)


class WorkstationAgent:
    def __init__(self, config: WorkstationConfig, session: Session, notifier: Notifier | None = None) -> None:
        self.config = config
        self.session = session
        self.notifier = notifier or Notifier()
        session.ended = self.notifier.announce
        journal = AssociationLog(config.log_file)
        self.policy = WorkstationPolicy(config, session.current, client_context(config), journal,
                                        notifier=self.notifier)
        limits = config.limits.relay()
        self.metrics = WorkstationMetrics(config, session.current)  # in a registry of this agent's own
        self.main = RelayServer(MeteredFactory(self.policy, self.metrics), host=config.listen[0], port=config.listen[1],
                                limits=limits, max_associations=config.max_associations, name="apps")
        # The return listener: server agents only, each with a certificate from the site CA (mutual TLS).
        self.returns = RelayServer(MeteredFactory(ReturnPolicy(config, journal), self.metrics),
                                   host=config.return_listen[0], port=config.return_listen[1], name="return",
                                   limits=limits, max_associations=config.return_.max_associations,
                                   ssl=tls.server_context(config.tls.certificate, config.tls.key, ca=config.tls.ca))
        self._refresher: asyncio.Task[None] | None = None
        for server in (self.main, self.returns):
            self.metrics.watch(server.name, lambda server=server: server.live)  # type: ignore[misc]
        self.admin = (WorkstationAdmin(config.admin, config, self.metrics, lambda: [self.main, self.returns],
                                       session.current) if config.admin is not None else None)

    async def start(self) -> None:
        await self.main.start()
        await self.returns.start()
        for route in self.config.routes.values():
            if route.warm:
                self.main.pool.refill(self.policy.upstream(route))
        self._refresher = asyncio.create_task(self.session.keep_fresh())
        if self.admin is not None:
            await self.admin.start()
        log.info("workstation agent %s: apps connect to %s:%d; return listener on %s:%d", self.config.name,
                 *self.main.address, *self.returns.address)

    async def stop(self, deadline: float = 5.0) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        await asyncio.gather(self.main.shutdown(deadline), self.returns.shutdown(deadline))
        if self.admin is not None:
            await self.admin.stop()
