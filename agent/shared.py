"""One workstation agent per login, shared by every app the user launches at once.

The first ``dicom-agent launch`` takes an exclusive lock (``flock``) on ``AGENT.lock`` in the user's
runtime directory, logs in, starts the agent and a control socket ``AGENT.sock`` beside it; it is the
*host*. A second ``launch`` with the same configuration finds the lock taken and *joins* through the
socket: it runs its app on the host's agent and login (no second password prompt, no second
listener: no ``address in use``), and hears of its own refusals. The host's agent lives while any
app launched through it runs, then logs out.

Who may join: only this OS user. The directory is the user's own (``$XDG_RUNTIME_DIR``, XDG Base
Directory Specification: owned by the user, mode 0700; else ``/run/user/UID``, else
``/tmp/dicom-agent-UID``, created 0700; it and every directory above it checked, see
:func:`runtime_dir`), the socket is 0600, and each end checks the other's uid from the kernel
(``SO_PEERCRED``, unix(7)). Messages are JSON lines of at most :data:`MAX_LINE` bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import pwd
import socket
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .notices import Notifier
from .peercred import unix_peer

MAX_LINE = 8192  # a control message; a longer one ends the connection


class SharingError(Exception):
    """The runtime directory or the host cannot be trusted or used; the message is for the user."""


USER_RUNTIME = Path("/run/user")  # systemd-logind's per-user runtime directories (/run/user/UID, 0700)


def runtime_dir() -> Path:
    """This user's private directory for the lock and the socket (0700, owned by us, else refused).

    ``$XDG_RUNTIME_DIR/dicom-agent`` (XDG Base Directory Specification); when the variable is lost
    (``su``, a desktop that does not set it) logind's ``/run/user/UID``, which no other user can
    create; only then ``dicom-agent-UID`` in the temporary directory, which another user could have
    created first: then refused, by a sentence naming it. Every directory above it is checked too
    (:func:`_unsafe`): one that another user may write could have it swapped under us."""
    uid = os.getuid()
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base:
        folder = Path(base) / "dicom-agent"
    elif (USER_RUNTIME / str(uid)).is_dir():
        folder = USER_RUNTIME / str(uid) / "dicom-agent"
    else:
        folder = Path(tempfile.gettempdir()) / f"dicom-agent-{uid}"
    try:
        parent = folder.parent.resolve(strict=True)
    except OSError:
        raise SharingError(f"{folder.parent} does not exist: set XDG_RUNTIME_DIR to a private directory of yours "
                           "(mode 0700), or call the help desk") from None
    unsafe = _unsafe(parent, uid)
    if unsafe is not None:
        raise SharingError(f"{unsafe} may be changed by another user, so {folder} cannot be trusted: set "
                           "XDG_RUNTIME_DIR to a private directory of yours (mode 0700), or call the help desk")
    folder = parent / folder.name
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    info = folder.lstat()  # never followed: a link planted there is refused like another user's folder
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid or info.st_mode & 0o077:
        kind = "folder" if stat.S_ISDIR(info.st_mode) else "file"
        raise SharingError(f"{folder} is not a private folder of this user (it is a {kind} of {_user(info.st_uid)}, "
                           f"mode {stat.S_IMODE(info.st_mode):04o}; it must be yours, mode 0700): another user may "
                           "be blocking you. Ask the help desk to remove it, or set XDG_RUNTIME_DIR to a private "
                           "directory of yours")
    return folder


def _unsafe(folder: Path, uid: int) -> Path | None:
    """The first of ``folder`` (resolved) and the directories above it that another user could change
    (OpenSSH's rule for the paths it trusts): not owned by root or us, or writable by others without the
    sticky bit that keeps them from renaming what is not theirs (``/tmp`` is fine)."""
    for path in (folder, *folder.parents):
        info = path.lstat()
        writable = info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX
        if not stat.S_ISDIR(info.st_mode) or info.st_uid not in (0, uid) or writable:
            return path
    return None


def _user(uid: int) -> str:
    try:
        return f"user {pwd.getpwuid(uid).pw_name}"
    except KeyError:
        return f"uid {uid}"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """The lock and the socket of one configuration's agent."""

    lock: Path
    socket: Path

    @classmethod
    def of(cls, config_file: Path) -> Endpoint:
        key = hashlib.sha256(str(config_file.resolve()).encode()).hexdigest()[:16]
        folder = runtime_dir()
        return cls(lock=folder / f"{key}.lock", socket=folder / f"{key}.sock")

    def try_lock(self) -> int | None:
        """The lock's descriptor if we now hold it (we are the host), else None (a host exists)."""
        fd = os.open(self.lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


class Host:
    """The host's control socket: one :class:`Guest` per joined launch, told its refusals' lines."""

    def __init__(self, endpoint: Endpoint, welcome: Callable[[dict[str, Any]], str | None], user: str,
                 notifier: Notifier, *, break_glass: bool = False) -> None:
        self.endpoint = endpoint
        self.break_glass = break_glass  # the login is a break-glass one: a guest is told it runs under it
        self.notifier = notifier
        self.welcome = welcome  # the join request -> None (welcome) or why not, in words
        self.user = user
        self.guests: dict[int, asyncio.StreamWriter] = {}  # a joined launch's pid -> its connection
        self.changed = asyncio.Event()
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.endpoint.socket.unlink()  # a stale one: we hold the lock, so no host is behind it
        old = os.umask(0o177)  # created 0600, never briefly wider
        try:
            self._server = await asyncio.start_unix_server(self._guest, path=str(self.endpoint.socket),
                                                           limit=MAX_LINE)
        finally:
            os.umask(old)

    def close(self) -> None:
        """Stop taking guests (called when none is left: a late joiner then starts a host of its own)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.endpoint.socket.unlink()
        for pid, writer in self.guests.items():
            writer.write(encode({"ended": "the agent stopped"}))
            writer.close()
            self.notifier.listeners.pop(pid, None)
        self.guests.clear()

    def tell(self, pid: int, line: str | None) -> None:
        """A refusal for the guest launch ``pid``: its line, or None for a repeat (counted only)."""
        writer = self.guests.get(pid)
        if writer is not None and not writer.is_closing():
            writer.write(encode({"line": line} if line else {"repeat": 1}))

    async def _guest(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One joining launch, known by its process id as the kernel tells it (its app is its child: the
        refusals on that app's connections are this launch's, see :meth:`Notifier.owner`)."""
        sock = writer.get_extra_info("socket")
        pid = 0
        try:
            peer_pid, uid, _ = unix_peer(sock) if sock is not None else (0, -1, 0)
            if uid != os.getuid() or peer_pid <= 0:
                return  # not this user: not a word
            request = json.loads(await reader.readline())
            if self._server is None:  # closed while this one was connecting: never welcomed to a stopping agent
                writer.write(encode({"closing": "the agent is stopping"}))
                return
            why = self.welcome(request) if isinstance(request, dict) else "malformed request"
            if why is not None:
                writer.write(encode({"refused": why}))
                return
            pid = peer_pid
            self.guests[pid] = writer  # before the welcome: its app cannot connect before it is known
            self.notifier.listeners[pid] = lambda line: self.tell(pid, line)
            self.changed.set()
            writer.write(encode({"welcome": {"user": self.user, "break_glass": self.break_glass}}))
            while await reader.read(4096):  # until the launch closes (its app has ended); nothing is expected
                pass
        except (ValueError, OSError, asyncio.LimitOverrunError, asyncio.IncompleteReadError):
            pass
        finally:
            if self.guests.get(pid) is writer:
                del self.guests[pid]
                self.notifier.listeners.pop(pid, None)
                self.changed.set()
            writer.close()


class Guest:
    """A joining launch's side (blocking: it has nothing else to do while its app runs)."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.sock: socket.socket | None = None
        self._buffer = b""

    def join(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """The host's answer (``welcome``, ``refused``, or ``closing``: it is stopping, start over once it
        has), or None if no host answers (start over)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(self.endpoint.socket))
            if unix_peer(sock)[1] != os.getuid():
                raise SharingError(f"{self.endpoint.socket} is held by another user: call the help desk")
            sock.sendall(encode(request))
            self.sock = sock
            answer = self.receive()
        except OSError:
            answer = None
        if answer is None:
            sock.close()
            self.sock = None
        return answer

    def receive(self) -> dict[str, Any] | None:
        """The next message; None at the end (the host stopped, or spoke out of turn)."""
        assert self.sock is not None
        while b"\n" not in self._buffer:
            if len(self._buffer) > MAX_LINE:
                return None
            data = self.sock.recv(4096)
            if not data:
                return None
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            message = json.loads(line)
        except ValueError:
            return None
        return message if isinstance(message, dict) else None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


__all__ = ["MAX_LINE", "Endpoint", "Guest", "Host", "SharingError", "runtime_dir"]
