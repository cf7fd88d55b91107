"""``dicom-agent launch APP``: the clinician's app, run unchanged on a shared workstation agent.

The first launch of a login is the host (it logs in, runs the agent, see :mod:`agent.shared`); a
launch while it runs joins it. Either way the app is the one the clinician chose: a bare name is
looked up on ``PATH`` passing over the scripts this installation's packages installed
(:func:`resolve_app`): pynetdicom's ``findscu``, ``storescu``... would otherwise stand in front of
DCMTK's.

Exit status: the app's own; 4 when the app exited 0 although access control refused something it
asked (each such refusal was told on standard error, see :mod:`agent.notices`); 2 for a usage or
configuration problem, 3 when the login failed, 130 when interrupted.

The host logs out (RFC 7009 revocation of its tokens) however it ends: the app's end, Ctrl-C, and
the signals that end a terminal program without asking it: SIGHUP when its terminal is closed
(POSIX.1 "Controlling terminal": the session's processes are sent SIGHUP) and SIGTERM from a
session manager or ``kill``. A second such signal never cuts the logout short.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .config import WorkstationConfig
from .messages import printable
from .notices import NOTIFY_TIMEOUT, Notifier, notify_now
from .oidc import OidcClient, Tokens
from .service import Session, WorkstationAgent
from .shared import Endpoint, Guest, Host

REFUSED = 4  # the exit status of a launch whose app exited 0 but was refused something
# The signals that end us without a word from the user: the terminal closed, the session ending.
ENDING = tuple(getattr(signal, name) for name in ("SIGHUP", "SIGTERM") if hasattr(signal, name))


class Ended(BaseException):
    """SIGHUP or SIGTERM outside the agent's event loop (logging in, logging out): unwinds as Ctrl-C does,
    so that the logout in :func:`_host`'s ``finally`` runs. A BaseException: no ``except Exception`` of
    the login code may swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_ended(signum: int, frame: object) -> None:
    raise Ended(signum)


@contextlib.contextmanager
def _on_ending(handler: Callable[[int, Any], None] | int) -> Iterator[None]:
    """SIGHUP and SIGTERM handled by ``handler`` (a function, or ``signal.SIG_IGN``) within the block."""
    previous = {sig: signal.signal(sig, handler) for sig in ENDING}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def say(text: str) -> None:
    with contextlib.suppress(OSError):  # a terminal closed under us (EIO) must not stop the logout
        print(text, file=sys.stderr, flush=True)


def resolve_app(name: str, path: str | None = None) -> str | None:
    """The program ``name`` names: as given if it has a slash, else the first on ``PATH`` that is not a
    script this installation's Python packages put there (:func:`installed_scripts`: pynetdicom's
    ``findscu``, never meant for the clinician). Only those files are passed over, not their folder:
    with a system install the scripts folder is ``/usr/bin`` or ``/usr/local/bin``, DCMTK's too."""
    if "/" in name:
        return name
    ours = installed_scripts(name)
    for entry in (path if path is not None else os.environ.get("PATH", "")).split(os.pathsep):
        found = shutil.which(name, path=entry) if entry else None
        if found is not None and Path(found).resolve() not in ours:
            return found
    return None


def installed_scripts(name: str) -> frozenset[Path]:
    """The files named ``name`` that the Python distributions of this installation declare as their
    console or GUI scripts and installed (their RECORD, PEP 376 / the binary distribution format)."""
    found: set[Path] = set()
    for group in ("console_scripts", "gui_scripts"):
        for entry in importlib.metadata.entry_points(group=group, name=name):
            distribution = entry.dist
            if distribution is None:
                continue
            found.update(Path(str(distribution.locate_file(file))).resolve() for file in distribution.files or ()
                         if file.name in (name, f"{name}.exe"))
    return frozenset(found)


def exit_status(code: int | None, refusals: int) -> int:
    """The app's status (a signal as 128+N, the shell's way); 4 for an app that exited 0 but was refused."""
    code = code if code is not None and code >= 0 else 128 + (-(code or 0))
    return REFUSED if code == 0 and refusals else code


def launch(config: WorkstationConfig, endpoint: Endpoint, args: argparse.Namespace, app: list[str],
           login: Any) -> int:
    """Host or join, whichever the lock says; ``login(client, args)`` logs in when we host."""
    waiting: set[str] = set()  # what we said we wait for, once each
    request = {"user": args.user, "break_glass": bool(args.break_glass)}
    while True:
        lock = endpoint.try_lock()
        if lock is not None:
            try:
                return _host(config, endpoint, args, app, login)
            finally:
                os.close(lock)  # released only once the agent is stopped and the tokens revoked
        guest = Guest(endpoint)
        answer = guest.join(request)
        if answer is None or "closing" in answer:
            # No host answers (it is still logging in, or it just stopped), or it is stopping: wait for it,
            # or for the lock, and log in anew. Never the app on an agent about to stop.
            why = "closing" if answer else "login"
            if why not in waiting:
                say("dicom-agent: the agent of another window is stopping; this app logs in anew once it has"
                    if answer else "dicom-agent: waiting for the login in progress in another window")
                waiting.add(why)
            guest.close()
            time.sleep(0.2)
            continue
        if "refused" in answer:
            _wait(told(f"dicom-agent: {printable(str(answer['refused']), 400)}", "DICOM app not started"))
            guest.close()
            return 2
        return _guest(guest, app, answer)


def told(text: str, summary: str, urgency: str = "critical") -> threading.Thread | None:
    """A joining launch's news for the person: on stderr and, when stderr is no terminal (an app started
    from a desktop icon, whose stderr nobody reads), as a desktop notification too, sent by the thread
    returned (the app need not wait for the desktop). The host tells the desktop of refusals itself
    (:class:`agent.notices.Notifier`); this is what only the joiner knows."""
    say(text)
    if sys.stderr is not None and sys.stderr.isatty():
        return None
    thread = threading.Thread(target=notify_now, args=(summary, text.removeprefix("dicom-agent: "), urgency),
                              daemon=True)
    thread.start()
    return thread


def _wait(thread: threading.Thread | None) -> None:
    """A notification told before this launch ends, however short its app."""
    if thread is not None:
        thread.join(NOTIFY_TIMEOUT)


def _guest(guest: Guest, app: list[str], welcome: dict[str, Any]) -> int:
    """Run the app on the host's agent, telling this terminal its refusals as the host sends them."""
    refusals = [0]

    def listen() -> None:
        while (message := guest.receive()) is not None:
            if "line" in message or "repeat" in message:
                refusals[0] += 1
                if isinstance(message.get("line"), str):
                    say(message["line"][:2000])
            elif "ended" in message:
                _wait(told("dicom-agent: the agent this app shared stopped (the window that started it was closed "
                           "or interrupted): this app's next connections fail; start it again", "DICOM login ended"))
                return

    given = welcome.get("welcome")
    hosted: dict[str, Any] = given if isinstance(given, dict) else {}
    who = printable(str(hosted.get("user") or "?"), 64)
    if hosted.get("break_glass") is True:
        telling = told(f"dicom-agent: this app runs as {who} under the BREAK-GLASS login of another window; every "
                       "use is audited as a security alert", "DICOM app on a BREAK-GLASS login")
    else:  # always said: on a shared account the person at the keyboard may not be the one logged in
        telling = told(f"dicom-agent: this app runs as {who}, on the login of another window", "DICOM app started",
                       "normal")
    process = subprocess.Popen(app)
    try:
        reader = threading.Thread(target=listen, daemon=True)
        reader.start()
        try:
            code = process.wait()
        except KeyboardInterrupt:
            process.terminate()
            code = process.wait(10)
        reader.join(1.0)  # the last refusals, written before the app's end was read
        return exit_status(code, refusals[0])
    finally:
        guest.close()
        _wait(telling)


def _host(config: WorkstationConfig, endpoint: Endpoint, args: argparse.Namespace, app: list[str], login: Any) -> int:
    from dicomwire.aio import run

    with OidcClient(config.provider) as client, _on_ending(_raise_ended):
        try:
            tokens, password = login(client, args)
        except Ended as ended:
            return 128 + ended.signum  # no login yet: nothing to log out of
        session = Session(config.provider, tokens, password, config.refresh_margin)
        try:
            if args.verbose:
                say(f"dicom-agent: {tokens.username} logged in; starting {app[0]}")
            return int(run(lambda: _serve(config, endpoint, session, tokens, app)))
        except Ended as ended:  # between the login and the agent's loop
            return 128 + ended.signum
        finally:
            with _on_ending(signal.SIG_IGN):  # logout, even if the app crashed or we were interrupted or hung up
                client.revoke(session.current().tokens)
                if args.verbose:
                    say(f"dicom-agent: {tokens.username} logged out")


def _welcome(tokens: Tokens, request: dict[str, Any]) -> str | None:
    """Whether a launch may join this login: the same user, and no break-glass it did not ask for here."""
    user = request.get("user")
    if isinstance(user, str) and user and user != tokens.username:
        return (f"{tokens.username} is logged in for the apps already running from another window: close them "
                f"first to log in as {user}")
    if request.get("break_glass") and tokens.purpose_of_use != "BTG":
        return ("break-glass needs a login of its own: close the apps already running under your login, then "
                "launch again with --break-glass")
    if tokens.purpose_of_use == "BTG" and not request.get("break_glass"):
        # Break-glass is asked for, app by app: an ordinary launch never inherits it silently.
        return ("a BREAK-GLASS login runs in another window: launch this app with --break-glass REASON to join "
                "it, or wait until it ends")
    return None


async def _serve(config: WorkstationConfig, endpoint: Endpoint, session: Session, tokens: Tokens,
                 app: list[str]) -> int:
    notifier = Notifier()
    agent = WorkstationAgent(config, session, notifier)
    await agent.start()
    host = Host(endpoint, lambda request: _welcome(tokens, request), tokens.username, notifier,
                break_glass=tokens.purpose_of_use == "BTG")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, *ENDING):  # the terminal closed (SIGHUP) ends the app and logs out, as Ctrl-C
        loop.add_signal_handler(sig, stop.set)
    try:
        await host.start()
        code, refusals = await _run_app(app, notifier, stop)
        if host.guests and not stop.is_set():
            say(f"dicom-agent: {len(host.guests)} other app(s) use this login; it ends when they end")
        while host.guests and not stop.is_set():
            host.changed.clear()
            await _first(host.changed.wait(), stop.wait())
        host.close()  # no guest left, or interrupted: a late launch will log in anew
        await notifier.drain()
        return exit_status(code, refusals)
    finally:
        # SIGHUP and SIGTERM stay ours (stop is set already) until _host ignores them for the logout:
        # removed, they would kill us while the agent stops, before it.
        loop.remove_signal_handler(signal.SIGINT)
        host.close()
        await agent.stop()


async def _run_app(app: list[str], notifier: Notifier, stop: asyncio.Event) -> tuple[int | None, int]:
    """The host's own app: its refusals told on this terminal; (its return code, refusals told)."""
    refusals = [0]

    def tell(line: str | None) -> None:
        refusals[0] += 1
        if line:
            say(line)

    me = os.getpid()  # known before the app starts; the app is our child, so its connections are ours
    notifier.listeners[me] = tell
    try:
        process = await asyncio.create_subprocess_exec(*app)
        await _first(process.wait(), stop.wait())
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        await asyncio.sleep(0)  # notices already read for it are told before its end is counted
        return process.returncode, refusals[0]
    finally:
        notifier.listeners.pop(me, None)


async def _first(*waits: Any) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()


__all__ = ["REFUSED", "exit_status", "launch", "resolve_app", "told"]
