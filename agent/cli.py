"""``dicom-agent``: the clinician's entry point and the workstation agent.

    dicom-agent launch [--user NAME] [--password-stdin | --device] [--break-glass REASON] -- APP [ARGS...]
    dicom-agent login [--user NAME] [--password-stdin | --device] [--break-glass REASON]
    dicom-agent status | logout | serve
    dicom-agent certs init --dir DIR | certs issue --dir DIR --name NAME [--host H ...]

``launch`` logs in, starts the agent, runs APP unchanged (its exit code is ours) and, whatever
happens to APP or to us, logs out (revokes the tokens) and stops the agent. ``login`` keeps the
session (tokens only, mode 0600) for ``serve``; ``logout`` revokes and deletes it.

``--break-glass REASON`` (HL7 purpose of use ``BTG``): after the login, the access token is
exchanged at the provider (RFC 8693) for one whose purpose of use is BTG, if the user's roles allow
it; it lasts at most what remains of the login's access token (the HIAL's rule), and every use is a
Security Alert at the server agent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import signal
import sys
from pathlib import Path

from dicomwire.aio import run
from dicomwire.sdnotify import Notifier
from dicomwire.version import add_version
from tomlconf import ConfigError

from . import certs, device, dialog
from .config import WorkstationConfig, config_path, load
from .launch import launch, resolve_app
from .messages import login_message, os_message
from .oidc import LoginError, MfaRequired, OidcClient, Tokens, delete_session, load_session, save_session
from .reload import reload
from .service import Session, WorkstationAgent
from .shared import Endpoint, SharingError

log = logging.getLogger("dicom_agent")


def _read_line(prompt: str, from_stdin: bool, secret: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise LoginError(f"{prompt.strip(': ')} expected on standard input")
        return line.rstrip("\n")
    return getpass.getpass(prompt) if secret else input(prompt)


def login(client: OidcClient, args: argparse.Namespace) -> tuple[Tokens, str | None]:
    """The login, then break-glass if asked for; returns the tokens and the password (type-2 mode)."""
    tokens, password = _login(client, args)
    if args.break_glass is None:
        return tokens, password
    try:
        btg = client.break_glass(tokens, args.break_glass)
    except LoginError as error:
        client.revoke(tokens)  # no session left behind by a refused break-glass
        raise LoginError(f"break-glass refused: {error}", code=error.code) from None
    print(f"dicom-agent: BREAK-GLASS access for {btg.username} for {int(btg.remaining)} s; every use is "
          f"audited as a security alert", file=sys.stderr, flush=True)
    return btg, password


def _login(client: OidcClient, args: argparse.Namespace) -> tuple[Tokens, str | None]:
    """Interactive or scripted login; returns the tokens and the password (kept for type-2 mode).

    Standard input if asked (``--password-stdin``), else a terminal prompt; with no terminal (an app
    started from a desktop icon) the sign-in dialog; with no display either, or when configured
    (``login = "device"``) or asked (``--device``), the device flow (RFC 8628) in the browser."""
    terminal = sys.stdin is not None and sys.stdin.isatty()  # None: started with fd 0 closed
    if args.device or (client.provider.login == "device" and not args.password_stdin):  # the command line wins
        return device.device_login(client, browser=device.can_open_browser(), window=not terminal), None
    if not args.password_stdin and not terminal:
        try:
            signed_in = dialog.ask(client, user=args.user)
        except dialog.NoDisplay as why:
            print(f"dicom-agent: no terminal and {why}: signing in with the device flow", file=sys.stderr, flush=True)
            return device.device_login(client, browser=device.can_open_browser()), None
        if signed_in is None:
            raise dialog.Cancelled("sign-in cancelled; nothing was started")
        return signed_in
    user = args.user or _read_line("User: ", args.password_stdin, secret=False)
    password = _read_line("Password: ", args.password_stdin, secret=True)
    try:
        return client.password_login(user, password), password
    except MfaRequired:
        otp = _read_line("One-time code: ", args.password_stdin, secret=False)
        return client.password_login(user, password, otp), password


async def _serve_agent(config: WorkstationConfig, session: Session, app: list[str] | None) -> int:
    agent = WorkstationAgent(config, session)
    await agent.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    notifier = Notifier.from_environment()  # a systemd user unit (packaging/systemd/dicom-agent.service)
    loop.add_signal_handler(signal.SIGHUP, _reload, agent, notifier)
    notifier.ready(f"serving generation 1 of {config.path}")
    try:
        if app is None:
            await stop.wait()
            return 0
        process = await asyncio.create_subprocess_exec(*app)
        waiter = asyncio.create_task(process.wait())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            log.info("interrupted: stopping %s", app[0])
            process.terminate()
            try:
                await asyncio.wait_for(waiter, 10)
            except TimeoutError:
                process.kill()
                await waiter
        stopper.cancel()
        code = process.returncode
        return code if code is not None and code >= 0 else 128 + (-(code or 0))
    finally:
        notifier.stopping()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        # No reload while stopping, and SIGHUP must not kill the shutdown (the app's associations end first).
        loop.add_signal_handler(signal.SIGHUP, log.info, "stopping: SIGHUP ignored")
        await agent.stop()


def _reload(agent: WorkstationAgent, notifier: Notifier) -> None:
    """SIGHUP: the file read again (agent.reload); an app's open association keeps its configuration."""
    notifier.reloading()
    result = reload(agent)
    notifier.ready(f"serving generation {result.generation}" + ("" if result.applied else
                                                                 f"; last reload refused: {result.problem}"))


def cmd_launch(config: WorkstationConfig, args: argparse.Namespace) -> int:
    """See :mod:`agent.launch`: the app found outside our own scripts, run on this login's shared agent."""
    app = list(args.app)
    if app and app[0] == "--":
        app = app[1:]
    if not app:
        print("dicom-agent launch: name the app to run after --, e.g. dicom-agent launch -- findscu ...",
              file=sys.stderr)
        return 2
    program = resolve_app(app[0])
    if program is None:
        print(f"dicom-agent: no program {app[0]!r} found on PATH (this project's own scripts are not looked in): "
              "install the app (DCMTK: apt install dcmtk) or give its full path", file=sys.stderr)
        return 2
    try:
        endpoint = Endpoint.of(config_path(args.config))
    except (SharingError, OSError) as error:
        print(f"dicom-agent: {error}", file=sys.stderr)
        return 2
    try:
        return launch(config, endpoint, args, [program, *app[1:]], login)
    except SharingError as error:  # a host that cannot be trusted (another user's socket): a sentence
        print(f"dicom-agent: {error}", file=sys.stderr)
        return 2


def cmd_login(config: WorkstationConfig, args: argparse.Namespace) -> int:
    with OidcClient(config.provider) as client:
        tokens, _ = login(client, args)
    save_session(config.session_file, tokens)
    print(f"logged in as {tokens.username}; session in {config.session_file}")
    return 0


def cmd_status(config: WorkstationConfig, args: argparse.Namespace) -> int:
    tokens = load_session(config.session_file)
    print(f"workstation {config.name}: apps connect to {config.listen[0]}:{config.listen[1]}; "
          f"routes {', '.join(config.routes) or '-'} (default {config.default_route or '-'})")
    if tokens is None:
        print("not logged in")
        return 1
    state = f"access token valid {int(tokens.remaining)} s more" if tokens.remaining > 0 else "access token expired"
    if tokens.purpose_of_use:
        state += f" (purpose of use {tokens.purpose_of_use})"
    print(f"logged in as {tokens.username}: {state}; refresh token {'yes' if tokens.refresh_token else 'no'}")
    return 0


def cmd_logout(config: WorkstationConfig, args: argparse.Namespace) -> int:
    tokens = load_session(config.session_file)
    if tokens is None:
        print("not logged in")
        return 0
    with OidcClient(config.provider) as client:
        client.revoke(tokens)
    delete_session(config.session_file)
    print(f"{tokens.username} logged out")
    return 0


def cmd_serve(config: WorkstationConfig, args: argparse.Namespace) -> int:
    tokens = load_session(config.session_file)
    if tokens is None:
        print("dicom-agent serve: not logged in (run `dicom-agent login`)", file=sys.stderr)
        return 2
    session = Session(config.provider, tokens, None, config.refresh_margin)
    return int(run(lambda: _serve_agent(config, session, None)))


def cmd_certs(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    if args.certs_command == "init":
        print(f"CA certificate: {certs.init_ca(folder, args.name or 'DICOM identity agents site CA')}")
    else:
        cert, key = certs.issue(folder, args.name, args.host)
        print(f"certificate: {cert}\nkey: {key}")
    return 0


def _reason(text: str) -> str:
    """A break-glass reason: one line of printable text, 1 to 200 characters (what the HIAL accepts)."""
    reason = " ".join(text.split())
    if not reason or len(reason) > 200 or not reason.isprintable():
        raise argparse.ArgumentTypeError("a reason of 1 to 200 printable characters is needed")
    return reason


def build_parser() -> argparse.ArgumentParser:
    parser = add_version(argparse.ArgumentParser(prog="dicom-agent",
                                                 description="DICOM workstation agent and apps wrapper"))
    parser.add_argument("--config", type=Path, help="default: $DICOM_AGENT_CONFIG or "
                                                     "~/.config/dicom-agent/workstation.toml")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="default: INFO, but ERROR for launch without --verbose (the app's output only)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("launch", "login"):
        p = sub.add_parser(name)
        p.add_argument("--user")
        how = p.add_mutually_exclusive_group()
        how.add_argument("--password-stdin", action="store_true", help="read the password (and a one-time code "
                                                                        "if asked) from standard input")
        how.add_argument("--device", action="store_true", help="log in with the device flow (RFC 8628)")
        p.add_argument("--break-glass", metavar="REASON", type=_reason, help="ask for emergency access (purpose "
                       "of use BTG) for this reason; audited as a security alert")
        if name == "launch":
            p.add_argument("--verbose", action="store_true", help="show the agent's and the relay's log lines")
            p.add_argument("app", nargs=argparse.REMAINDER, help="-- APP [ARGS...]")
    for name in ("status", "logout", "serve"):
        sub.add_parser(name)
    certs_parser = sub.add_parser("certs", help="a private CA and agent certificates for a site")
    certs_sub = certs_parser.add_subparsers(dest="certs_command", required=True)
    init = certs_sub.add_parser("init")
    init.add_argument("--dir", required=True)
    init.add_argument("--name")
    issue = certs_sub.add_parser("issue")
    issue.add_argument("--dir", required=True)
    issue.add_argument("--name", required=True, help="the agent's name (certificate CN and DNS SAN)")
    issue.add_argument("--host", action="append", default=[], help="an address or DNS name (repeatable)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet = args.command == "launch" and not args.verbose  # a launch shows the app's output, and refusals
    logging.basicConfig(level=args.log_level or ("ERROR" if quiet else "INFO"), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.command == "certs":
        try:
            return cmd_certs(args)
        except (OSError, ValueError) as error:
            print(f"dicom-agent certs: {error}", file=sys.stderr)
            return 2
    config_file = config_path(args.config)
    try:
        config = load(config_file)
    except ConfigError as error:
        print(f"dicom-agent: the configuration cannot be used: {error}. Fix it, or call the help desk.",
              file=sys.stderr)
        return 2
    if getattr(args, "break_glass", None) is not None and config.identity == "password":
        # Type 2 sends the password and the server agent logs in anew: the BTG token would never be used.
        print("dicom-agent: --break-glass needs identity = \"jwt\" (the password mode cannot carry it)",
              file=sys.stderr)
        return 2
    commands = {"launch": cmd_launch, "login": cmd_login, "status": cmd_status, "logout": cmd_logout,
                "serve": cmd_serve}
    try:
        return commands[args.command](config, args)
    except dialog.Cancelled as error:
        print(f"dicom-agent: {error}", file=sys.stderr)
        return 3
    except LoginError as error:
        print(f"dicom-agent: {login_message(str(error), error.code, config.provider.issuer, str(config_file))}",
              file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130
    except OSError as error:
        print(f"dicom-agent: {os_message(error, config)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
