"""SIGHUP: the workstation agent reads its configuration file again without dropping an app's
association (issue 15 item 1), as the server agent does (:mod:`server_agent.reload`).

What one reading of the file builds is a :class:`Generation`: the routes (server agents' addresses and
certificate names), the apps' storage SCPs, limits, and the TLS contexts made from our certificate and
the site CA. It is built whole, its certificate and key opened and matched first, and then put in
place in one step on the event loop: an app's association that is open keeps the policy (and the TLS
connection to its server agent) it began with; the next one uses the new routes and presents the new
certificate. Warm connections opened with the old settings are closed, and the new routes' are opened.

Refused, with the running generation kept: a file that cannot be read or validated, a certificate or
key that cannot be read or do not belong together (each named by file and key), and a change to a key
of :data:`RESTART_KEYS`: the listening addresses (the apps and the server agents know them), this
workstation's name (the ``WS`` of ``APP@WS`` that the PACS's trust list holds), and what the logged-in
session depends on (the identity provider, the identity mode, the session file): the user logs in
again after a restart instead. One log line per reload: generation, changed key names (never values),
result.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dicomwire import tls
from dicomwire.limits import RelayLimits
from tomlconf import ConfigError
from tomlconf.reload import changed_files, changed_keys, check_ca, check_key_pair, file_digests, needing_restart, reread

from .config import WorkstationConfig
from .notices import Notifier
from .policy import AssociationLog, Credentials, ReturnPolicy, WorkstationPolicy

if TYPE_CHECKING:
    from .service import WorkstationAgent

log = logging.getLogger("dicom_agent")

RESTART_KEYS = ("workstation.name", "workstation.listen", "workstation.identity", "workstation.session_file",
                "identity_provider", "return.listen", "admin")
_WRITTEN = ("workstation.log_file", "workstation.session_file")  # files the agent writes: not hashed


@dataclass(frozen=True, slots=True, kw_only=True)
class Generation:
    """One reading of the workstation agent's file, and what is built from it."""

    number: int
    digest: str
    config: WorkstationConfig
    policy: WorkstationPolicy
    returns: ReturnPolicy
    return_ssl: ssl.SSLContext
    limits: RelayLimits
    files: Mapping[str, str] = field(default_factory=dict)


def build(config: WorkstationConfig, credentials: Callable[[], Credentials | None], *, number: int,
          digest: str, notifier: Notifier | None = None) -> Generation:
    """Generation ``number``; a :class:`ConfigError` naming file and key if a part cannot be built."""
    path, files = config.path, config.tls
    check_key_pair(path, "tls.certificate", files.certificate, "tls.key", files.key)
    check_ca(path, "tls.ca", files.ca)
    digests = file_digests(config, skip=_WRITTEN)
    try:
        to_servers = tls.client_context(ca=files.ca, certificate=files.certificate, key=files.key)
        return_ssl = tls.server_context(files.certificate, files.key, ca=files.ca)
    except (OSError, ValueError, ssl.SSLError) as error:
        raise ConfigError(path, "tls.certificate", f"cannot build the TLS context: {error}") from None
    journal = AssociationLog(config.log_file)
    return Generation(number=number, digest=digest, config=config,
                      policy=WorkstationPolicy(config, credentials, to_servers, journal, notifier=notifier),
                      returns=ReturnPolicy(config, journal), return_ssl=return_ssl, limits=config.limits.relay(),
                      files=digests)


def _read(agent: WorkstationAgent) -> tuple[Generation, tuple[str, ...]]:
    running = agent.generation
    config, digest = reread(running.config.path, WorkstationConfig)
    changed = changed_keys(running.config, config)
    restart = needing_restart(changed, RESTART_KEYS)
    if restart:
        raise ConfigError(config.path, restart[0], f"cannot change while running: restart the agent for "
                                                   f"{', '.join(restart)} (other changes not applied either)")
    generation = build(config, agent.session.current, number=running.number + 1, digest=digest,
                       notifier=agent.notifier)
    return generation, tuple(changed) + tuple(changed_files(running.files, generation.files, changed))


@dataclass(frozen=True, slots=True, kw_only=True)
class Reloaded:
    generation: int
    applied: bool
    changed: tuple[str, ...] = ()
    problem: str = ""


def reload(agent: WorkstationAgent) -> Reloaded:
    """Read the file again and switch new associations to it; a bad file is refused and logged."""
    running = agent.generation
    try:
        generation, changed = _read(agent)
    except ConfigError as error:
        log.error("configuration reload refused: %s; generation %d (sha256 %.12s) keeps running", error,
                  running.number, running.digest)
        return Reloaded(generation=running.number, applied=False, problem=str(error))
    agent.generation = generation
    config = generation.config
    # The metered factories live as long as the agent (its metrics, and the wrappers of live associations'
    # policies); what they open from now on is the new generation's.
    agent.metered.inner, agent.metered_returns.inner = generation.policy, generation.returns
    agent.main.reconfigure(agent.metered, limits=generation.limits, max_associations=config.max_associations)
    agent.returns.reconfigure(agent.metered_returns, limits=generation.limits, ssl=generation.return_ssl,
                              max_associations=config.return_.max_associations)
    agent.warm()
    if agent.admin is not None:  # /readyz checks the new routes, /metrics the new certificates
        agent.admin.follow(config)
    log.info("configuration reloaded: generation %d (sha256 %.12s), %s; live associations keep generation %d",
                generation.number, generation.digest,
                f"changed {', '.join(changed)}" if changed else "nothing changed", running.number)
    return Reloaded(generation=generation.number, applied=True, changed=changed)


__all__ = ["RESTART_KEYS", "Generation", "Reloaded", "build", "reload"]
