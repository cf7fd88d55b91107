"""``dicom-server-agent``: the authN/authZ agent in front of an unchanged PACS.

    dicom-server-agent serve --config FILE
    dicom-server-agent check-config --config FILE   # routes, the provider's endpoints, C-ECHO to each PACS
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import ssl
import sys
from pathlib import Path

from dicomwire.aio import run
from dicomwire.version import add_version
from oauthclient import OAuthClient, OAuthClientError, SyncExecutor, Timeouts, TlsFiles
from tomlconf import ConfigError

from . import introspection
from .config import Pacs, ServerAgentConfig, load
from .pdp import PDP_SCOPE
from .service import ServerAgent, identity_client, pacs_context


async def _serve(config: ServerAgentConfig) -> int:
    try:
        agent = ServerAgent(config)
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
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await agent.stop()
    return 0


def _echo(pacs: Pacs) -> str:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title="CHECKCONFIG")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 5
    tls_args = None
    server_name = pacs.server_name or pacs.host
    if pacs.tls:
        context = pacs_context(pacs)
        try:  # the handshake alone first, for a clear reason (pynetdicom only logs a traceback)
            with socket.create_connection((pacs.host, pacs.port), timeout=5) as raw, \
                    context.wrap_socket(raw, server_hostname=server_name):
                pass
        except (OSError, ssl.SSLError) as error:
            return f"failed: TLS: {error}"
        tls_args = (context, server_name)
    assoc = ae.associate(pacs.host, pacs.port, ae_title=pacs.ae_title, tls_args=tls_args)
    if not assoc.is_established:
        return "no association"
    status = assoc.send_c_echo()
    assoc.release()
    return "ok" if status and status.Status == 0 else f"status {getattr(status, 'Status', '?')}"


def check(config: ServerAgentConfig) -> int:
    returns = " (TLS, PACS certificates)" if config.return_.tls else ""
    print(f"server agent {config.name}: TLS listener {config.listen[0]}:{config.listen[1]}, return listener "
          f"{config.return_listen[0]}:{config.return_listen[1]}{returns}")
    problems = 0
    identity = config.identity
    try:
        with SyncExecutor(tls=TlsFiles(ca_file=identity.ca_file), timeouts=Timeouts.within(identity.timeout)) as http:
            provider = OAuthClient(identity.issuer, identity_client(identity), http)
            meta = provider.metadata()
            print(f"identity provider {identity.issuer}: token {meta.token_endpoint}, jwks {meta.jwks_uri}, "
                  f"introspection {meta.introspection_endpoint or '-'}")
            if identity.introspect:  # issue 14: a provider that cannot introspect JWTs would refuse everyone
                found = introspection.probe(provider, PDP_SCOPE)
                print(f"introspection: {'ok' if found.ok else 'FAILED'}: {found.text}")
                problems += not found.ok
    except OAuthClientError as error:
        print(f"identity provider {config.identity.issuer}: UNREACHABLE: {error}")
        problems += 1
    for pacs in config.pacs.values():
        result = _echo(pacs)
        print(f"PACS {pacs.name}: {pacs.ae_title} at {pacs.host}:{pacs.port}{' (TLS)' if pacs.tls else ''}: "
              f"C-ECHO {result}"
              f"{' (default)' if pacs.name == config.default_pacs else ''}")
        problems += result != "ok"
    for ws in config.workstations.values():
        print(f"workstation {ws.name}: return path to {ws.host}:{ws.port} (certificate {ws.server_name})")
    for node in config.nodes.values():
        print(f"node {node.ae_title}: from {', '.join(node.addresses)}: {', '.join(node.actions)}")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = add_version(argparse.ArgumentParser(prog="dicom-server-agent", description=__doc__.split("\n\n")[0]))
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("serve", "check-config"):
        p = sub.add_parser(name)
        p.add_argument("--config", required=True, type=Path)
        p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
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
    return int(run(lambda: _serve(config)))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
