"""One generation of the server agent's running configuration: everything built from one reading of
the file, owned together and replaced together on SIGHUP (:mod:`server_agent.reload`).

An association holds the :class:`~server_agent.association.ServerPolicy` of the generation that was
current when it opened (its ``factory``), and through it that generation's configuration, identity
provider and PDP clients, and PACS TLS contexts: a reload never changes what a live association sees.
What outlives generations is passed in (:class:`Lasting`): the decision log, the outstanding C-MOVEs
(a move permitted before a reload still gets its sub-operations after it), the OIDC sessions, and the
failed-login throttle while ``[identity.throttle]`` is unchanged (a reload must not forgive an attacker).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from dicomwire.limits import RelayLimits
from dicomwire.tls import client_context, server_context
from oauthclient import AsyncExecutor, AsyncOAuthClient, AuthMethod, ClientAuth, Timeouts, TlsFiles
from pseudonymizer.client import AsyncPseudonymizerClient
from tomlconf import ConfigError
from tomlconf.reload import check_ca, check_key_pair, file_digests

from .association import ServerPolicy
from .authn import Authenticator
from .config import IdentityConfig, Pacs, PdpConfig, PseudonymizerSection, ServerAgentConfig
from .decisions import Decisions
from .metrics import TimedExecutor
from .monitoring import ServerMetrics, TimedPdpClient
from .moves import MoveRegistry
from .pdp import ClientCredentials, Credentials, TokenFile
from .pseudonyms import PseudonymService
from .returns import ReturnPolicy
from .sessions import Sessions
from .shared import SharedState
from .throttle import LoginThrottle

T = TypeVar("T")


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


@dataclass(frozen=True, slots=True, kw_only=True)
class Lasting:
    """What every generation shares (module docstring)."""

    decisions: Decisions
    moves: MoveRegistry
    sessions: Sessions
    shared: SharedState  # outstanding moves, login throttles, ended sessions across processes
    metrics: ServerMetrics


@dataclass(frozen=True, slots=True, kw_only=True)
class Generation:
    """One reading of the file, and everything built from it (immutable once built)."""

    number: int
    digest: str  # SHA-256 of the file as read
    config: ServerAgentConfig
    policy: ServerPolicy  # the main listeners' factory
    returns: ReturnPolicy  # the return listener's factory
    main_ssl: ssl.SSLContext
    return_ssl: ssl.SSLContext | None
    limits: RelayLimits
    authn: Authenticator
    http: AsyncExecutor  # the identity provider's (and usually the PDP's) HTTP client
    pdp_http: AsyncExecutor
    pseudonym_http: AsyncExecutor | None = None  # the pseudonymisation service's, when it needs its own CA
    files: Mapping[str, str] = field(default_factory=dict)  # SHA-256 of the files it names, by key

    @property
    def clients(self) -> tuple[AsyncExecutor, ...]:
        """The HTTP clients to close once no association of this generation is left."""
        own = [c for c in (self.pdp_http, self.pseudonym_http) if c is not None and c is not self.http]
        return (self.http, *own)

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()


def pseudonym_service(section: PseudonymizerSection | None, identity: IdentityConfig,
                      http: AsyncExecutor) -> PseudonymService | None:
    """The research view's pseudonyms (``[pseudonymizer]``): our own client at ``[identity]``'s issuer."""
    if section is None:
        return None
    client = ClientAuth(client_id=section.client_id, method=AuthMethod(section.client_auth),
                        secret=section.client_secret)
    oauth = AsyncOAuthClient(identity.issuer, client, http)
    return PseudonymService(AsyncPseudonymizerClient(section.url, oauth, http), section.timeout)


def _pseudonym_http(config: ServerAgentConfig) -> AsyncExecutor | None:
    """The pseudonymisation service's own HTTP client when it has a CA of its own (else the provider's)."""
    section = config.pseudonymizer
    if section is None or section.ca_file in (None, config.identity.ca_file):
        return None
    try:
        return AsyncExecutor(tls=TlsFiles(ca_file=section.ca_file), timeouts=Timeouts.within(section.timeout))
    except (OSError, ValueError, ssl.SSLError) as error:
        raise ConfigError(config.path, "pseudonymizer.ca_file", str(error)) from None


def _tls(path: Path, key: str, make: Callable[[], T]) -> T:
    """A TLS context, its failure named by ``key`` (the files were checked; this catches the rest)."""
    try:
        return make()
    except (OSError, ValueError, ssl.SSLError) as error:
        raise ConfigError(path, key, f"cannot build the TLS context: {error}") from None


def check_files(config: ServerAgentConfig) -> None:
    """Every certificate, key and CA the file names, opened and matched (a schema only checks they exist)."""
    path = config.path
    check_key_pair(path, "tls.certificate", config.tls.certificate, "tls.key", config.tls.key)
    check_ca(path, "tls.ca", config.tls.ca)
    for name, pacs in config.pacs.items():
        if pacs.ca is not None:
            check_ca(path, f"pacs.{name}.ca", pacs.ca)
        if pacs.tls and pacs.certificate is not None and pacs.key is not None:
            check_key_pair(path, f"pacs.{name}.certificate", pacs.certificate, f"pacs.{name}.key", pacs.key)
    if config.pdp.certificate is not None and config.pdp.key is not None:
        check_key_pair(path, "pdp.certificate", config.pdp.certificate, "pdp.key", config.pdp.key)
    for key, ca in (("identity.ca_file", config.identity.ca_file), ("pdp.ca_file", config.pdp.ca_file)):
        if ca is not None:
            check_ca(path, key, ca)


def build(config: ServerAgentConfig, lasting: Lasting, *, number: int, digest: str,
          throttle: LoginThrottle | None = None) -> Generation:
    """Generation ``number`` from ``config``; a :class:`ConfigError` (file and key) if any part cannot be
    built. Opens no connection: the HTTP clients connect when first used."""
    check_files(config)
    # Before the contexts are built from them (a change after is seen next time); not the files it writes.
    files = file_digests(config, skip=("server.decision_log", "decision_log", "audit"))
    path = config.path
    metrics = lasting.metrics
    try:
        http = TimedExecutor(metrics.provider_seconds, tls=TlsFiles(ca_file=config.identity.ca_file),
                             timeouts=Timeouts.within(config.identity.timeout))
    except (OSError, ValueError, ssl.SSLError) as error:
        raise ConfigError(path, "identity.ca_file", str(error)) from None
    oauth = AsyncOAuthClient(config.identity.issuer, identity_client(config.identity), http)
    authn = Authenticator(config.identity, oauth, throttle=throttle)
    authn.logins = lasting.shared
    # The PDP's own HTTP client when it needs another CA or our client certificate (RFC 8705); its
    # evaluations are timed by TimedPdpClient, whichever client carries them.
    pdp_http: AsyncExecutor = http
    if config.pdp.certificate is not None or config.pdp.ca_file != config.identity.ca_file:
        try:
            pdp_http = AsyncExecutor(tls=TlsFiles(ca_file=config.pdp.ca_file, certificate=config.pdp.certificate,
                                                  key=config.pdp.key), timeouts=Timeouts.within(config.pdp.timeout))
        except (OSError, ValueError, ssl.SSLError) as error:
            raise ConfigError(path, "pdp.certificate" if config.pdp.certificate else "pdp.ca_file",
                              str(error)) from None
    pdp = TimedPdpClient(metrics.pdp_seconds, config.pdp, pdp_credentials(config.pdp, oauth, pdp_http), pdp_http)
    pacs_ssl = {p.name: _tls(path, f"pacs.{p.name}", lambda p=p: pacs_context(p))  # type: ignore[misc]
                for p in config.pacs.values() if p.tls}
    # Deny by default: every request is decided (ServerPolicy.asks), so one the agent has no policy
    # for (N-ACTION, N-CREATE, ...) is refused 0124H instead of reaching the PACS unchecked. One
    # factory for both main listeners: each association still gets an object of its own.
    pseudonym_http = _pseudonym_http(config)
    pseudonyms = pseudonym_service(config.pseudonymizer, config.identity, pseudonym_http or http)
    policy = ServerPolicy(config, authn, pdp, lasting.moves, lasting.decisions, pacs_ssl, sessions=lasting.sessions,
                          pseudonyms=pseudonyms)
    to_workstations = _tls(path, "tls.certificate", lambda: client_context(ca=config.ca, certificate=config.certificate,
                                                                           key=config.key))
    returns = ReturnPolicy(config, lasting.moves, lasting.decisions, to_workstations, deciders=policy)
    return Generation(number=number, digest=digest, config=config, policy=policy, returns=returns,
                      main_ssl=_tls(path, "tls.certificate",
                                    lambda: server_context(config.certificate, config.key, ca=config.ca)),
                      return_ssl=_tls(path, "return.tls", lambda: return_context(config)), limits=config.limits.relay(),
                      authn=authn, http=http, pdp_http=pdp_http, pseudonym_http=pseudonym_http, files=files)


__all__ = ["Generation", "Lasting", "build", "check_files", "identity_client", "pacs_context", "pdp_credentials",
           "return_context"]
