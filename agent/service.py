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
from tomlconf.reload import digest

from .admin import WorkstationAdmin, WorkstationMetrics
from .config import IdentityProvider, WorkstationConfig
from .notices import Notifier
from .oidc import AsyncOidcClient, LoginError, Tokens
from .policy import Credentials, WorkstationPolicy
from .reload import build

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
        self.session = session
        self.notifier = notifier or Notifier()
        session.ended = self.notifier.announce
        # Everything built from the file: replaced as a whole on SIGHUP (agent.reload).
        self.generation = build(config, session.current, number=1, digest=digest(config.path), notifier=self.notifier)
        generation, limits = self.generation, self.generation.limits
        self.metrics = WorkstationMetrics(config, session.current)  # in a registry of this agent's own
        # One metered factory per listener for the agent's life; a reload puts the new generation in it.
        self.metered = MeteredFactory(generation.policy, self.metrics)
        self.metered_returns = MeteredFactory(generation.returns, self.metrics)
        self.main = RelayServer(self.metered, host=config.listen[0], port=config.listen[1], limits=limits,
                                max_associations=config.max_associations, name="apps")
        # The return listener: server agents only, each with a certificate from the site CA (mutual TLS).
        self.returns = RelayServer(self.metered_returns, host=config.return_listen[0],
                                   port=config.return_listen[1], name="return", limits=limits,
                                   max_associations=config.return_.max_associations, ssl=generation.return_ssl)
        self._refresher: asyncio.Task[None] | None = None
        for server in (self.main, self.returns):
            self.metrics.watch(server.name, lambda server=server: server.live)  # type: ignore[misc]
        self.admin = (WorkstationAdmin(config.admin, config, self.metrics, lambda: [self.main, self.returns],
                                       session.current) if config.admin is not None else None)

    @property
    def config(self) -> WorkstationConfig:
        return self.generation.config

    @property
    def policy(self) -> WorkstationPolicy:
        return self.generation.policy

    def warm(self) -> None:
        """Open the warm connections of the routes that keep some (``[routes.X] warm``)."""
        for route in self.config.routes.values():
            if route.warm:
                self.main.pool.refill(self.policy.upstream(route))

    async def start(self) -> None:
        await self.main.start()
        await self.returns.start()
        self.warm()
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
