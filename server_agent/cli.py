"""``dicom-server-agent``: the authN/authZ agent in front of an unchanged PACS.

    dicom-server-agent serve --config FILE          # SIGHUP re-reads FILE (server_agent.reload)
    dicom-server-agent check-config --config FILE   # the whole chain, step by step (server_agent.checks)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from dicomwire.aio import run
from dicomwire.sdnotify import Notifier
from dicomwire.version import add_version
from tomlconf import ConfigError

from .checks import run_checks
from .config import ServerAgentConfig, load
from .reload import reload
from .service import ServerAgent


async def _serve(config: ServerAgentConfig,
                 derive: Callable[[ServerAgentConfig], ServerAgentConfig] | None = None) -> int:
    try:
        agent = ServerAgent(config, derive)
    except (OSError, ValueError) as error:
        print(f"dicom-server-agent: cannot start: {error}", file=sys.stderr)
        return 2
    try:
        await agent.start()
    except OSError as error:
        print(f"dicom-server-agent: cannot listen: {error}", file=sys.stderr)
        return 2
    print(f"dicom-server-agent: {config.name} ready on {agent.main.address[0]}:{agent.main.address[1]}",
          file=sys.stderr, flush=True)
    notifier = Notifier.from_environment()  # systemd Type=notify (packaging/systemd/)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _reload, agent, notifier)
    notifier.ready(f"serving generation 1 of {config.path}")  # listening, and every signal handled
    await stop.wait()
    notifier.stopping()
    # A reload while stopping would build clients nobody closes; and SIGHUP must not kill the shutdown.
    loop.add_signal_handler(signal.SIGHUP, logging.getLogger("server_agent").info, "stopping: SIGHUP ignored")
    await agent.stop()
    return 0


def _reload(agent: ServerAgent, notifier: Notifier) -> None:
    """SIGHUP (``systemctl reload``): the file read again; live associations keep their configuration."""
    notifier.reloading()
    result = reload(agent)
    notifier.ready(f"serving generation {result.generation}" + ("" if result.applied else
                                                                 f"; last reload refused: {result.problem}"))


def check(config: ServerAgentConfig) -> int:
    """What the file configures, then the chain it depends on, step by step (:mod:`.checks`)."""
    print(f"server agent {config.name} ({config.path})")
    for ws in config.workstations.values():
        print(f"  workstation {ws.name}: return path to {ws.host}:{ws.port} (certificate {ws.server_name})")
    for node in config.nodes.values():
        print(f"  node {node.ae_title}: from {', '.join(node.addresses)}: {', '.join(node.actions)}")
    return run_checks(config)


def main(argv: list[str] | None = None) -> int:
    parser = add_version(argparse.ArgumentParser(prog="dicom-server-agent", description=__doc__.split("\n\n")[0]))
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("serve", "check-config"):
        p = sub.add_parser(name)
        p.add_argument("--config", required=True, type=Path)
        p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
        p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)  # started by the supervisor
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    try:
        config = load(args.config)
    except ConfigError as error:
        print(f"dicom-server-agent: bad configuration: {error}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        return check(config)
    if config.server.workers > 1:  # [server] workers: a supervisor, or one of its workers
        from .supervisor import Supervisor, prepare, worker_config

        if args.worker is None:
            prepare(config)
            return Supervisor(args.config, config.server.workers, args.log_level).run()
        worker = args.worker
        config = worker_config(config, worker)  # and each reload's (its own decision log)
        return int(run(lambda: _serve(config, lambda reread: worker_config(reread, worker))))
    return int(run(lambda: _serve(config)))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
