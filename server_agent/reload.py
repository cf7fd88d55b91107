"""SIGHUP: the server agent reads its configuration file again without dropping an association (issue 15
item 1; ``systemctl reload`` sends it, see ``packaging/systemd/``).

All or nothing. The file is read and validated as at start-up (every problem names the file and the
dotted key), its certificates and keys are opened and matched, and a whole new
:class:`~server_agent.generation.Generation` is built: routes and PACS entries, workstations, nodes,
limits, identity provider and PDP settings, TLS contexts. Only then are the listeners switched to it,
in one step on the event loop (nothing can run in between), so that every association accepted
afterwards uses the new generation while every live one finishes on the generation it began with (its
policy object holds it). The old generation's HTTP clients are closed when its last association ends.

A file that cannot be used is refused and the running generation stays. So is a file that changes
a key listed in :data:`RESTART_KEYS`: the listening addresses (rebinding would need the old and new
sockets side by side and a hand-over of the return port the PACS knows), the decision log and audit
repository (one writer per log: the chain must not fork), the agent's name (the decision log's
source) and ``[sessions]`` (its endpoint and the sessions it remembers). The refusal names the key
and says that a restart is needed.

One log line per reload: the generation, the keys that changed (names only, never values: a secret
stays a secret), and the result; and a ``configuration-reload`` record in the decision log with the
file's SHA-256, so that a security officer can tell which configuration decided what.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from audit.events import ApplicationEvent, Kind
from tomlconf import ConfigError
from tomlconf.reload import changed_files, changed_keys, file_digests, needing_restart, reread

from .config import ServerAgentConfig
from .generation import Generation, build

if TYPE_CHECKING:
    from .service import ServerAgent

log = logging.getLogger("server_agent")

# Keys (or whole tables) a reload cannot change: see the module docstring for why each needs a restart.
RESTART_KEYS = ("server.name", "server.listen", "server.plain_listen", "server.return_listen",
                "server.decision_log", "decision_log", "audit", "sessions", "server.workers", "shared", "admin")


@dataclass(frozen=True, slots=True, kw_only=True)
class Reloaded:
    """What a reload did: the generation now running, whether the file was taken, what changed (key
    names), and the refusal's file-and-key text when it was not."""

    generation: int
    applied: bool
    changed: tuple[str, ...] = ()
    digest: str = ""
    problem: str = ""


def _read(agent: ServerAgent) -> tuple[Generation, tuple[str, ...]]:
    """The next generation from the file, and the keys (and files) that changed; ConfigError if refused."""
    running = agent.generation
    config, digest = reread(running.config.path, ServerAgentConfig)
    config = agent.derive(config)  # as the running one was made from its file (a worker's own log)
    changed = changed_keys(running.config, config)
    restart = needing_restart(changed, RESTART_KEYS)
    if restart:
        raise ConfigError(config.path, restart[0], f"cannot change while running: restart the agent for "
                                                   f"{', '.join(restart)} (other changes not applied either)")
    # The failed-login counts stay unless their own settings changed: a reload must not forgive.
    same_throttle = config.identity.throttle == running.config.identity.throttle
    generation = build(config, agent.lasting, number=running.number + 1, digest=digest,
                       throttle=running.authn.throttle if same_throttle else None)
    return generation, tuple(changed) + tuple(changed_files(running.files, file_digests(config), changed))


def reload(agent: ServerAgent) -> Reloaded:
    """Read the file again and switch new associations to it (module docstring); never raises for a
    bad file: the running generation stays and the refusal is logged."""
    running = agent.generation
    try:
        generation, changed = _read(agent)
    except ConfigError as error:
        log.error("configuration reload refused: %s; generation %d (sha256 %.12s) keeps running", error,
                  running.number, running.digest)
        agent.decisions.write(ApplicationEvent(kind=Kind.CONFIGURATION_RELOAD, name=running.config.name, detail={
            "result": "refused", "generation": running.number, "config_sha256": running.digest,
            "file": error.path, "key": error.key}))
        return Reloaded(generation=running.number, applied=False, digest=running.digest, problem=str(error))
    _switch(agent, generation)
    log.info("configuration reloaded: generation %d (sha256 %.12s), %s; live associations keep generation %d",
             generation.number, generation.digest, f"changed {', '.join(changed)}" if changed else "nothing changed",
             running.number)
    agent.decisions.write(ApplicationEvent(kind=Kind.CONFIGURATION_RELOAD, name=generation.config.name, detail={
        "result": "applied", "generation": generation.number, "config_sha256": generation.digest,
        "changed": list(changed)}))
    return Reloaded(generation=generation.number, applied=True, changed=changed, digest=generation.digest)


def _switch(agent: ServerAgent, generation: Generation) -> None:
    """One synchronous step: every listener takes the new generation, the old one is retired."""
    running, config = agent.generation, generation.config
    live = [a.done for s in agent.servers for a in s.associations if not a.done.done()]
    agent.generation = generation
    proxies = config.server.proxy_protocol_from
    # The metered factories outlive generations (metrics, the wrappers of live associations' policies):
    # what they open from now on is the new generation's.
    agent.metered.inner, agent.metered_returns.inner = generation.policy, generation.returns
    for server in (agent.main, agent.plain):
        if server is not None:
            server.reconfigure(agent.metered, limits=generation.limits, max_associations=config.max_associations,
                               ssl=generation.main_ssl if server is agent.main else None, proxies=proxies)
    agent.returns.reconfigure(agent.metered_returns, limits=generation.limits, ssl=generation.return_ssl,
                              max_associations=config.return_.max_associations, proxies=proxies)
    if agent.logout is not None:
        agent.logout.verifier = agent.logout_verifier()
    if agent.admin is not None:  # /readyz asks the new identity provider and PDP (certificates: when scraped)
        agent.admin.follow(config)
    task = asyncio.get_running_loop().create_task(_retire(running, live))
    agent.retired.add(task)
    task.add_done_callback(agent.retired.discard)


async def _retire(generation: Generation, live: list[asyncio.Future[None]]) -> None:
    """Close ``generation``'s HTTP clients once the associations that may still use them have ended."""
    try:
        if live:
            await asyncio.wait(live)
    finally:
        await generation.aclose()
        log.debug("generation %d retired", generation.number)


__all__ = ["RESTART_KEYS", "Reloaded", "reload"]
