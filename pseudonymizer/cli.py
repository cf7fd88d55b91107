"""``pseudonymizer``: run the pseudonymisation service, check its configuration, re-identify a pseudonym.

    pseudonymizer serve --config configs/demo/pseudonymizer.toml
    pseudonymizer check-config --config configs/demo/pseudonymizer.toml
    pseudonymizer reidentify --config configs/demo/pseudonymizer.toml --project STUDY-A \\
        --patient-id SA-... --reason "incidental finding, ethics approval 2026-17" --user trustee

``serve`` prints ``url: URL`` once it listens (port 0 picks a free one). ``reidentify`` logs the
trustee in at the HIAL (password grant with the public client ``pseudonymizer-cli``, the password read
without echo, or from standard input), asks the service, and prints the real value; the service
writes the call, the pseudonym and the reason to its access log.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import signal
import socket
import sys
import threading
from pathlib import Path

from werkzeug.serving import WSGIRequestHandler, make_server

from dicomwire.tls import server_context
from dicomwire.version import add_version
from oauthclient import ClientAuth, OAuthClient, OAuthClientError, PasswordGrant, SyncExecutor, Timeouts, TlsFiles
from oauthclient.clientauth import AuthMethod
from tomlconf import ConfigError

from .app import Pseudonymizer
from .client import SCOPE_REIDENTIFY, PseudonymizerClient, PseudonymizerError
from .config import ServiceConfig, load_config

CLI_CLIENT = "pseudonymizer-cli"


class _Handler(WSGIRequestHandler):
    """HTTP/1.1 keep-alive and TCP_NODELAY, as the HIAL's (werkzeug writes head and body apart)."""

    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def serve(config: ServiceConfig) -> int:
    context = None
    if config.server.tls_certificate and config.server.tls_key:
        context = server_context(config.server.tls_certificate, config.server.tls_key,
                                 require_client_certificate=False)
    service = Pseudonymizer(config)
    http = make_server(config.server.host, config.server.port, service.app, threaded=True, ssl_context=context,
                       request_handler=_Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=http.shutdown, daemon=True).start())
    host = config.server.host if ":" not in config.server.host else f"[{config.server.host}]"
    print(f"url: {'https' if context else 'http'}://{host}:{http.server_port}", flush=True)
    logging.getLogger("pseudonymizer").info("serving %d projects; access log %s", len(config.projects),
                                            config.server.access_log_path)
    try:
        http.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        service.close()
    return 0


def reidentify(config: ServiceConfig, args: argparse.Namespace) -> int:
    password = getpass.getpass(f"password of {args.user}: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip(
        "\n")
    tls = TlsFiles(ca_file=config.identity.ca_file)
    scheme = "https" if config.server.tls_certificate else "http"
    base = args.url or f"{scheme}://{config.server.host}:{config.server.port}"
    try:
        with SyncExecutor(tls=tls, timeouts=Timeouts.within(config.identity.timeout)) as executor:
            oauth = OAuthClient(config.identity.issuer, ClientAuth(client_id=args.client_id, method=AuthMethod.NONE),
                                executor)
            token = oauth.run(PasswordGrant(username=args.user, password=password, scope=SCOPE_REIDENTIFY))
            client = PseudonymizerClient(base, None, executor)
            real = client.reidentify(args.project, token.access_token, reason=args.reason,
                                     patient_id=args.patient_id, uid=args.uid)
    except (OAuthClientError, PseudonymizerError) as error:
        print(f"pseudonymizer: refused: {error}", file=sys.stderr)
        return 1
    print(real)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = add_version(argparse.ArgumentParser(prog="pseudonymizer", description="The pseudonymisation service"))
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("serve", "check-config", "reidentify"):
        p = sub.add_parser(name)
        p.add_argument("--config", required=True, type=Path)
        p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    again = sub.choices["reidentify"]
    again.add_argument("--project", required=True)
    which = again.add_mutually_exclusive_group(required=True)
    which.add_argument("--patient-id")
    which.add_argument("--uid")
    again.add_argument("--reason", required=True, help="why, for the access log (1-200 characters)")
    again.add_argument("--user", required=True, help="your user name at the HIAL")
    again.add_argument("--client-id", default=CLI_CLIENT)
    again.add_argument("--url", help="the service (default: from the configuration)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"pseudonymizer: bad configuration: {error}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(f"ok: {len(config.projects)} projects, issuer {config.identity.issuer}")
        return 0
    if args.command == "reidentify":
        return reidentify(config, args)
    return serve(config)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
