"""``hial-mock``: run the HIAL, check its configuration, make password hashes.

    hial-mock serve --config configs/demo/hial.toml
    hial-mock check-config --config configs/demo/hial.toml
    hial-mock hash-password            # reads the password without echo (or from stdin)

``serve`` prints ``issuer: URL`` once it listens. SIGHUP reloads users, clients and policy (a bad
file is refused and the running ones stay); SIGUSR1 rotates the signing key; SIGTERM/SIGINT stop.
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

from dicomwire.sdnotify import Notifier
from dicomwire.tls import server_context
from dicomwire.version import add_version

from .app import Hial
from .config import load_config
from .errors import ConfigError
from .passwords import hash_password


class _Handler(WSGIRequestHandler):
    """Keep-alive (HTTP/1.1) and TCP_NODELAY: werkzeug writes headers and body separately, and with
    Nagle's algorithm on, the body then waits for the client's delayed ACK (~40 ms per request)."""

    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def serve(config_path: Path) -> int:
    try:
        config = load_config(config_path)
    except ConfigError as error:
        print(f"hial-mock: bad configuration: {error}", file=sys.stderr)
        return 2
    context = None
    if config.server.tls_certificate and config.server.tls_key:
        # HTTPS with the project's one profile (BCP 195); clients authenticate in OAuth, not with certificates.
        context = server_context(config.server.tls_certificate, config.server.tls_key,
                                 require_client_certificate=False)
    # Bind first: with port 0 the issuer is only known once the port is.
    probe = Hial(config, issuer="http://placeholder")
    http = make_server(config.server.host, config.server.port, probe.app, threaded=True, ssl_context=context,
                       request_handler=_Handler)
    scheme = "https" if context else "http"
    host = config.server.host if ":" not in config.server.host else f"[{config.server.host}]"
    issuer = config.server.issuer or f"{scheme}://{host}:{http.server_port}"
    hial = Hial(config, issuer=issuer)
    http.app = hial.app
    stop = threading.Event()

    def rotate(*_: object) -> None:
        kid = hial.keys.rotate()
        logging.getLogger("hial_mock").info("signing key rotated: now %s", kid)

    notifier = Notifier.from_environment()  # systemd Type=notify (packaging/systemd/hial.service)

    def reload(*_: object) -> None:
        notifier.reloading()
        hial.reload()
        notifier.ready(f"serving {issuer}")

    def terminate(*_: object) -> None:
        notifier.stopping()
        threading.Thread(target=http.shutdown, daemon=True).start()

    signal.signal(signal.SIGHUP, reload)
    signal.signal(signal.SIGUSR1, rotate)
    signal.signal(signal.SIGTERM, terminate)
    interval = config.server.key_rotation_interval
    if interval > 0:
        def rotator() -> None:
            while not stop.wait(interval):
                rotate()

        threading.Thread(target=rotator, daemon=True, name="key-rotation").start()
    print(f"issuer: {issuer}", flush=True)
    logging.getLogger("hial_mock").info("HIAL serving %s (policy version %s, %d users, %d clients)", issuer,
                                        config.policy.version, len(config.users), len(config.clients))
    notifier.ready(f"serving {issuer}")  # bound and listening since make_server: connections wait in the backlog
    try:
        http.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = add_version(argparse.ArgumentParser(prog="hial-mock",
                                                 description="The HIAL: OIDC provider, OAuth AS and PDP"))
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("serve", "check-config"):
        p = sub.add_parser(name)
        p.add_argument("--config", required=True, type=Path)
        p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub.add_parser("hash-password", help="print the scrypt hash of a password read without echo (or stdin)")
    args = parser.parse_args(argv)
    if args.command == "hash-password":
        password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
        if not password:
            print("hial-mock: empty password", file=sys.stderr)
            return 2
        print(hash_password(password))
        return 0
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    if args.command == "check-config":
        try:
            config = load_config(args.config)
        except ConfigError as error:
            print(f"hial-mock: bad configuration: {error}", file=sys.stderr)
            return 2
        print(f"ok: {len(config.users)} users, {len(config.clients)} clients, policy version {config.policy.version}")
        return 0
    return serve(args.config)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
