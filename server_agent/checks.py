"""``dicom-server-agent check-config``: the whole chain a deployment depends on, proved step by step
(issue 14 item 7), before the agent is started (or after a change, with the agent stopped).

Each step is named and run in order; the first that fails ends the check with its reason and a
non-zero exit, the later ones listed as not run (a broken link early on would only make the later
ones fail for the same cause). No step prints a traceback: an unresolvable host, a refused connection
or a bad certificate is a sentence.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from cryptography import x509

from dicomwire.tls import client_context, server_context
from oauthclient import AsyncExecutor, AsyncOAuthClient, OAuthClient, OAuthClientError, SyncExecutor, Timeouts, TlsFiles
from oauthclient.discovery import ProviderMetadata

from . import introspection, logout
from .config import Pacs, ServerAgentConfig
from .pdp import PDP_SCOPE, PdpClient, PdpUnavailable, probe
from .service import identity_client, pacs_context, pdp_credentials, shared_state
from .shared import SharedUnavailable
from .shared_redis import RedisShared

CERTIFICATE_WARNING_DAYS = 30


class StepFailed(Exception):
    """What is wrong, as one sentence for the administrator."""


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    run: Callable[[], str]  # what was found (printed after "ok"), or raises StepFailed


def steps(config: ServerAgentConfig) -> Iterator[Step]:
    """The chain, in the order its links depend on each other."""
    found: dict[str, ProviderMetadata] = {}
    yield Step("listen addresses free", lambda: _listen_free(config))
    yield Step("certificate and key", lambda: _certificate(config))
    yield Step(f"identity provider {config.identity.issuer}", lambda: _discovery(config, found))
    if config.identity.introspect:
        yield Step("introspection", lambda: _introspection(config))
    if config.sessions.logout_listen is not None:
        yield Step("back-channel logout endpoint", lambda: _logout(config, found))
    yield Step(f"PDP {config.pdp.url}: token and one evaluation", lambda: asyncio.run(_pdp(config)))
    if config.shared.redis is not None:
        yield Step(f"shared state {config.shared.redis}: PING and a script", lambda: asyncio.run(_shared(config)))
    for pacs in config.pacs.values():
        yield Step(f"PACS {pacs.name} ({pacs.ae_title} at {pacs.host}:{pacs.port}): C-ECHO",
                   lambda pacs=pacs: _echo(pacs))  # type: ignore[misc]
    if config.audit is not None:
        yield Step("audit record repository", lambda: _audit(config))


def run_checks(config: ServerAgentConfig, say: Callable[[str], None] = print) -> int:
    """Every step in order until one fails: 0 when the whole chain holds, 1 otherwise."""
    planned = list(steps(config))
    for number, step in enumerate(planned, 1):
        try:
            text = step.run()
        except StepFailed as failure:
            say(f"[{number}/{len(planned)}] {step.name}: FAILED: {failure}")
            for later in planned[number:]:
                say(f"    not run: {later.name}")
            return 1
        say(f"[{number}/{len(planned)}] {step.name}: ok{': ' + text if text else ''}")
    return 0


def _listen_free(config: ServerAgentConfig) -> str:
    addresses = {"TLS listener": config.listen, "return listener": config.return_listen}
    if config.plain_listen:
        addresses["plain listener"] = config.plain_listen
    if config.sessions.logout_listen:
        addresses["logout endpoint"] = config.sessions.logout_listen
    if config.admin is not None:
        addresses["admin listener"] = config.admin.listen
    for name, (host, port) in addresses.items():
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            family, kind, proto, _, address = infos[0]
            with socket.socket(family, kind, proto) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(address)
        except OSError as error:
            raise StepFailed(f"{name} {host}:{port}: {error.strerror or error}") from None
    return ", ".join(f"{name} {host}:{port}" for name, (host, port) in addresses.items())


def _certificate(config: ServerAgentConfig) -> str:
    try:
        server_context(config.certificate, config.key, ca=config.ca)  # the key must be the certificate's
        certificate = x509.load_pem_x509_certificate(config.certificate.read_bytes())
        authority = x509.load_pem_x509_certificate(config.ca.read_bytes())
        certificate.verify_directly_issued_by(authority)
    except (OSError, ssl.SSLError, ValueError, TypeError) as error:
        raise StepFailed(f"{config.certificate} with {config.key} and CA {config.ca}: {error}") from None
    except Exception as error:  # cryptography's InvalidSignature: not issued by this CA
        raise StepFailed(f"{config.certificate} is not issued by the CA {config.ca} ({type(error).__name__})") \
            from None
    left = certificate.not_valid_after_utc - dt.datetime.now(dt.UTC)
    if left.total_seconds() <= 0:
        raise StepFailed(f"{config.certificate} expired on {certificate.not_valid_after_utc:%Y-%m-%d}")
    warning = " (renew it soon)" if left.days < CERTIFICATE_WARNING_DAYS else ""
    return f"{certificate.subject.rfc4514_string()}, valid {left.days} more days{warning}"


def _provider(config: ServerAgentConfig, http: SyncExecutor) -> OAuthClient:
    return OAuthClient(config.identity.issuer, identity_client(config.identity), http)


def _sync_http(config: ServerAgentConfig) -> SyncExecutor:
    identity = config.identity
    return SyncExecutor(tls=TlsFiles(ca_file=identity.ca_file), timeouts=Timeouts.within(identity.timeout))


def _discovery(config: ServerAgentConfig, found: dict[str, ProviderMetadata]) -> str:
    try:
        with _sync_http(config) as http:
            meta = _provider(config, http).metadata()  # OpenID Connect Discovery 1.0 4.3: the issuer checked
    except OAuthClientError as error:
        raise StepFailed(str(error)) from None
    found["meta"] = meta
    return f"token {meta.token_endpoint}, jwks {meta.jwks_uri}, introspection {meta.introspection_endpoint or '-'}"


def _introspection(config: ServerAgentConfig) -> str:
    with _sync_http(config) as http:
        result = introspection.probe(_provider(config, http), PDP_SCOPE)
    if not result.ok:
        raise StepFailed(result.text)
    return result.text


def _logout(config: ServerAgentConfig, found: dict[str, ProviderMetadata]) -> str:
    problem = logout.check_endpoint(config, found["meta"])
    if problem:
        raise StepFailed(problem)
    listen = config.sessions.logout_listen
    assert listen is not None
    return f"POST http://{listen[0]}:{listen[1]}/backchannel-logout"


async def _pdp(config: ServerAgentConfig) -> str:
    """The PDP's metadata, our token for it (``[pdp] auth``) and one uncached evaluation: a permit and a
    deny both prove the chain (the agent's own clients, built as :class:`ServerAgent` builds them)."""
    http = AsyncExecutor(tls=TlsFiles(ca_file=config.identity.ca_file),
                         timeouts=Timeouts.within(config.identity.timeout))
    pdp_http = AsyncExecutor(tls=TlsFiles(ca_file=config.pdp.ca_file, certificate=config.pdp.certificate,
                                          key=config.pdp.key), timeouts=Timeouts.within(config.pdp.timeout))
    try:
        identity = AsyncOAuthClient(config.identity.issuer, identity_client(config.identity), http)
        client = PdpClient(config.pdp, pdp_credentials(config.pdp, identity, pdp_http), pdp_http)
        decision = await probe(client)
    except PdpUnavailable as error:
        raise StepFailed(str(error)) from None
    finally:
        await http.aclose()
        await pdp_http.aclose()
    return f"answered {'permit' if decision.allowed else 'deny'} (policy {decision.policy_version or '-'})"


def _echo(pacs: Pacs) -> str:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    server_name = pacs.server_name or pacs.host
    tls_args = None
    try:
        socket.getaddrinfo(pacs.host, pacs.port, type=socket.SOCK_STREAM)
        if pacs.tls:  # the handshake alone first, for a clear reason (pynetdicom only logs a traceback)
            context = pacs_context(pacs)
            with socket.create_connection((pacs.host, pacs.port), timeout=5) as raw, \
                    context.wrap_socket(raw, server_hostname=server_name):
                pass
            tls_args = (context, server_name)
    except (OSError, ssl.SSLError) as error:
        raise StepFailed(f"{'TLS: ' if pacs.tls else ''}{error}") from None
    ae = AE(ae_title="CHECKCONFIG")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 5
    assoc = ae.associate(pacs.host, pacs.port, ae_title=pacs.ae_title, tls_args=tls_args)
    if not assoc.is_established:
        raise StepFailed("no association (refused, rejected or no answer)")
    status = assoc.send_c_echo()
    assoc.release()
    if not status or status.Status != 0:
        raise StepFailed(f"C-ECHO status {getattr(status, 'Status', '?')}")
    return "status 0000H" + (" (TLS)" if pacs.tls else "")


async def _shared(config: ServerAgentConfig) -> str:
    """Redis answers with our password and TLS files, and runs the scripts (an ACL that forbids EVALSHA
    or the prefix would refuse every association once the agent runs)."""
    store = shared_state(config)
    try:
        problem = await store.check() if isinstance(store, RedisShared) else None
        if problem is None:
            await store.move_active("CHECK-CONFIG")  # a read through a Lua script
    except SharedUnavailable as error:
        problem = str(error)
    finally:
        await store.close()
    if problem is not None:
        raise StepFailed(problem)
    return "answers, scripts run"


def _audit(config: ServerAgentConfig) -> str:
    assert config.audit is not None
    target = config.audit.target()
    try:
        infos = socket.getaddrinfo(target.host, target.port)
        if target.transport == "udp":  # RFC 5426: nothing answers; the address must resolve
            return f"udp {target.host}:{target.port} ({infos[0][4][0]})"
        with socket.create_connection((target.host, target.port), timeout=5) as raw:
            context = client_context(ca=target.ca, certificate=target.certificate, key=target.key)
            with context.wrap_socket(raw, server_hostname=target.server_name or target.host) as tls:
                version = tls.version()
    except (OSError, ssl.SSLError) as error:
        raise StepFailed(f"{target.host}:{target.port}: {error}") from None
    return f"tls {target.host}:{target.port} ({version}, RFC 5425)"


__all__ = ["Step", "StepFailed", "run_checks", "steps"]
