"""What the server agent's ``/readyz`` asks other servers (issue 15 item 3), for one generation of the
configuration (issue 15 item 1: after a reload, the new generation's servers are the ones asked).

- ``identity_provider``: the provider's discovery document (OpenID Connect Discovery 1.0 section 4,
  its issuer checked, section 4.3) and its JWKS (RFC 7517 section 5: the keys tokens are verified
  with), both public: no client secret is sent.
- ``pdp``: the PDP's AuthZEN metadata (AuthZEN 1.0 section 9.1) answers 200.

With HTTP clients of their own, built from the generation's ``[identity]`` and ``[pdp]`` (CA, timeout,
the PDP's client certificate), so that a check never queues behind an association's request. A detail
names the server asked by its origin only (scheme, host and port: never a path's or a user part's
secret), so that an administrator sees which generation's server answered or did not.
"""

from __future__ import annotations

import logging
import ssl
from urllib.parse import urlsplit

from oauthclient import AsyncExecutor, AsyncOAuthClient, AuthMethod, ClientAuth, OAuthClientError, Timeouts, TlsFiles
from oauthclient.discovery import JwksRequest

from .admin import CheckResult
from .config import ServerAgentConfig
from .pdp import metadata_request

log = logging.getLogger("server_agent.admin")


def origin(url: str) -> str:
    """``scheme://host:port`` of ``url`` (RFC 6454 section 4), for a check's detail."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


class Probes:
    """The identity provider and PDP checks of one generation (module docstring). Built whatever the
    files hold: clients that cannot be built (a CA file gone since the reload read it) make both
    checks fail, naming the key, instead of the agent."""

    def __init__(self, config: ServerAgentConfig) -> None:
        self.config = config
        identity, pdp = config.identity, config.pdp
        self.problem = ""
        self.identity_http: AsyncExecutor | None = None
        self.pdp_http: AsyncExecutor | None = None
        try:
            self.identity_http = AsyncExecutor(tls=TlsFiles(ca_file=identity.ca_file),
                                               timeouts=Timeouts.within(identity.timeout))
            self.pdp_http = AsyncExecutor(tls=TlsFiles(ca_file=pdp.ca_file, certificate=pdp.certificate,
                                                       key=pdp.key), timeouts=Timeouts.within(pdp.timeout))
        except (OSError, ValueError, ssl.SSLError) as error:
            log.error("readiness: the checks' HTTP clients cannot be built: %s", error)
            self.problem = "the check's HTTP client cannot be built from [identity]/[pdp] (see the log)"
            return
        # Discovery and the JWKS are public (OIDC Discovery 1.0 section 4, RFC 7517): no client secret here.
        self.provider = AsyncOAuthClient(identity.issuer, ClientAuth(client_id=identity.client_id,
                                                                     method=AuthMethod.NONE), self.identity_http)

    async def check_provider(self) -> CheckResult:
        where = origin(self.config.identity.issuer)
        if self.problem:
            return CheckResult(ok=False, detail=f"identity provider {where}: {self.problem}")
        try:
            keys = await self.provider.run(JwksRequest())
        except OAuthClientError as error:
            log.warning("readiness: identity provider: %s", error)
            return CheckResult(ok=False, detail=f"identity provider {where} unreachable (discovery or JWKS; "
                                                "see the log)")
        return CheckResult(ok=True, detail=f"{where}: JWKS fetched ({len(keys)} keys)")

    async def check_pdp(self) -> CheckResult:
        url = self.config.pdp.url
        where = origin(url)
        if self.pdp_http is None:
            return CheckResult(ok=False, detail=f"PDP {where}: {self.problem}")
        try:
            response = await self.pdp_http.send(metadata_request(url))
        except OAuthClientError as error:
            log.warning("readiness: PDP: %s", error)
            return CheckResult(ok=False, detail=f"PDP {where} unreachable (see the log)")
        if response.status != 200:
            return CheckResult(ok=False, detail=f"PDP {where}: metadata answered HTTP {response.status}")
        return CheckResult(ok=True, detail=f"PDP {where}: metadata answered")

    async def aclose(self) -> None:
        for client in (self.identity_http, self.pdp_http):
            if client is not None:
                await client.aclose()


__all__ = ["Probes", "origin"]
