"""Refusals reach the person: the workstation agent's notices become a terminal line and a desktop
notification, at once, whatever the app itself shows.

:class:`Notifier` is given every :class:`agent.messages.Refusal` the agent relays or makes. It tells
each listener (the terminal of every ``dicom-agent launch`` sharing this agent, see
:mod:`agent.shared`) and, when there is a session bus, the desktop, through the freedesktop
Desktop Notifications Specification's ``org.freedesktop.Notifications.Notify`` (1.2, "Basic Design")
as ``notify-send`` (libnotify-bin) sends it: a small, audited program, run without a shell, its
arguments a list. The same refusal repeated (a storescu of 500 images, each refused alike) is told
once per :data:`REPEAT_QUIET` seconds and counted, so the terminal stays readable and the desktop is
not flooded. Different refusals in a burst are bounded too: at most :data:`MAX_NOTIFYING`
``notify-send`` run at once, and what comes meanwhile is merged into one notification, sent next.
"""

from __future__ import annotations

import asyncio
import html
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable

from .messages import Refusal
from .peercred import holder, peer_inode

log = logging.getLogger("dicom_agent")

REPEAT_QUIET = 10.0  # seconds during which the same refusal is counted, not told again
NOTIFY_TIMEOUT = 5.0  # seconds notify-send may take (a hung session bus never holds the agent)
MAX_NOTIFYING = 2  # notify-send processes at once; notifications meanwhile are merged into the next one
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
        self._merged: tuple[str, str, int] | None = None  # what waits for a free notify-send: summary, body, count

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
        """A notification, or, while :data:`MAX_NOTIFYING` are under way, merged into the next one."""
        if len(self._tasks) >= MAX_NOTIFYING:
            if self._merged is None:
                self._merged = (summary, body, 1)
            else:  # the latest words, and how many came before them
                first, _, count = self._merged
                self._merged = (first if first == summary else "DICOM notices", body, count + 1)
            return
        try:
            task = asyncio.get_running_loop().create_task(self._send(summary, body))
        except RuntimeError:
            return  # no loop (a test calling from outside the agent): the terminal line was told
        self._tasks.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._merged is not None:
            summary, body, count = self._merged
            self._merged = None
            more = f"\n({count - 1} more before it: see the terminal window)" if count > 1 else ""
            self._desktop(summary, body + more)

    async def _send(self, summary: str, body: str) -> None:
        assert self._notify_send is not None
        try:
            process = await asyncio.create_subprocess_exec(
                *notify_argv(self._notify_send, summary, body), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        except OSError as error:
            log.debug("notify-send could not start: %s", error)
            return
        try:
            await asyncio.wait_for(process.wait(), NOTIFY_TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def drain(self) -> None:
        """Let the desktop notifications under way, and the merged one after them, finish (at the end of a
        launch), for at most :data:`NOTIFY_TIMEOUT` seconds in all."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + NOTIFY_TIMEOUT
        while self._tasks and (left := deadline - loop.time()) > 0:
            await asyncio.wait(set(self._tasks), timeout=left)


def notify_argv(program: str, summary: str, body: str, urgency: str = "critical") -> list[str]:
    """notify-send's arguments; the body may be read as markup (the specification's "body-markup"): the
    peers' words in it are escaped. ``urgency`` "critical" stays until dismissed; "normal" expires."""
    icon = "dialog-warning" if urgency == "critical" else "dialog-information"
    return [program, "--app-name=dicom-agent", f"--urgency={urgency}", f"--icon={icon}", "--", summary,
            html.escape(body, quote=False)]


def notify_now(summary: str, body: str, urgency: str = "critical") -> None:
    """One desktop notification from a process without an event loop (a joining launch, which may have
    been started from a desktop icon, with no terminal to read): blocking at most :data:`NOTIFY_TIMEOUT`
    seconds, best effort."""
    program = shutil.which("notify-send") if session_bus() else None
    if program is None:
        return
    try:
        subprocess.run(notify_argv(program, summary, body, urgency), stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=NOTIFY_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        log.debug("notify-send failed: %s", error)


__all__ = ["MAX_NOTIFYING", "Notifier", "notify_argv", "notify_now", "session_bus"]
