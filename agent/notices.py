"""Refusals reach the person: the workstation agent's notices become a terminal line and a desktop
notification, at once, whatever the app itself shows.

:class:`Notifier` is given every :class:`agent.messages.Refusal` the agent relays or makes. It tells
each listener (the terminal of every ``dicom-agent launch`` sharing this agent, see
:mod:`agent.shared`) and, when there is a session bus, the desktop, through the freedesktop
Desktop Notifications Specification's ``org.freedesktop.Notifications.Notify`` (1.2, "Basic Design")
as ``notify-send`` (libnotify-bin) sends it: a small, audited program, run without a shell, its
arguments a list. The same refusal repeated (a storescu of 500 images, each refused alike) is told
once per :data:`REPEAT_QUIET` seconds and counted, so the terminal stays readable and the desktop is
not flooded.
"""

from __future__ import annotations

import asyncio
import html
import logging
import os
import shutil
import time
from collections.abc import Callable

from .messages import Refusal
from .peercred import holder, peer_inode

log = logging.getLogger("dicom_agent")

REPEAT_QUIET = 10.0  # seconds during which the same refusal is counted, not told again
NOTIFY_TIMEOUT = 5.0  # seconds notify-send may take (a hung session bus never holds the agent)
SUMMARY = "DICOM access refused"


def session_bus() -> bool:
    """Whether this session has a D-Bus session bus (D-Bus Specification, "Well-known Message Bus
    Instances": DBUS_SESSION_BUS_ADDRESS)."""
    return bool(os.environ.get("DBUS_SESSION_BUS_ADDRESS"))


class Notifier:
    """Tells the launch whose app was refused (else every launch) and the desktop of each refusal.
    Launches are keyed by their app's process id; each counts what it is told, repeats too."""

    def __init__(self, *, desktop: bool | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.listeners: dict[int, Callable[[str | None], None]] = {}  # a line, or None for a repeat
        self._notify_send = shutil.which("notify-send") if (session_bus() if desktop is None else desktop) else None
        self._clock = clock
        self._last: dict[tuple[int | None, str], float] = {}  # (launch, line) -> when it was last told
        self._tasks: set[asyncio.Task[None]] = set()

    def owner(self, peer: tuple[str, int] | None, local: tuple[str, int] | None) -> int | None:
        """The launch (its app's pid) whose process tree holds the app's end of this connection."""
        if len(self.listeners) <= 1:
            return next(iter(self.listeners), None)
        inode = peer_inode(peer, local) if peer and local else None
        return holder(inode, list(self.listeners)) if inode else None

    def refused(self, refusal: Refusal, owner: int | None = None) -> None:
        told = [owner] if owner in self.listeners else list(self.listeners)  # unknown: everyone hears it
        line = refusal.line()
        now = self._clock()
        if now - self._last.get((owner, line), -REPEAT_QUIET) < REPEAT_QUIET:
            self._tell(told, None)  # the same words just now: counted, not repeated
            return
        if len(self._last) > 256:  # bounded: forget the old ones
            self._last = {k: v for k, v in self._last.items() if now - v < REPEAT_QUIET}
        self._last[(owner, line)] = now
        self._tell(told, line)
        if self._notify_send is not None:
            self._desktop(SUMMARY, f"{refusal.app} {refusal.what}: {refusal.reason}.\nNext step: {refusal.step}.")

    def announce(self, line: str) -> None:
        """Something every launch of this login must hear (the session ended), on the desktop too."""
        self._tell(list(self.listeners), line)
        if not self.listeners:
            log.error("%s", line)  # `serve`: no launch to tell, the log is the place
        if self._notify_send is not None:
            self._desktop("DICOM login ended", line.removeprefix("dicom-agent: "))

    def _tell(self, told: list[int], line: str | None) -> None:
        for key in told:
            try:
                self.listeners[key](line)
            except Exception as error:  # a listener that went away must not stop the others
                log.debug("a listener failed: %r", error)

    def _desktop(self, summary: str, body: str) -> None:
        try:
            task = asyncio.get_running_loop().create_task(self._send(summary, body))
        except RuntimeError:
            return  # no loop (a test calling from outside the agent): the terminal line was told
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, summary: str, body: str) -> None:
        assert self._notify_send is not None
        # The body may be read as markup (the specification's "body-markup"): the server's words are escaped.
        body = html.escape(body, quote=False)
        try:
            process = await asyncio.create_subprocess_exec(
                self._notify_send, "--app-name=dicom-agent", "--urgency=critical", "--icon=dialog-warning",
                "--", summary, body, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL)
        except OSError as error:
            log.debug("notify-send could not start: %s", error)
            return
        try:
            await asyncio.wait_for(process.wait(), NOTIFY_TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def drain(self) -> None:
        """Let the desktop notifications under way finish (at the end of a launch)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=NOTIFY_TIMEOUT)


__all__ = ["Notifier", "session_bus"]
