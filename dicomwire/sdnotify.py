"""The service manager's readiness protocol (systemd ``sd_notify(3)``), client side, for ``Type=notify``
units (``packaging/systemd/``): ``READY=1`` once the listeners accept, ``RELOADING=1`` with
``MONOTONIC_USEC`` while SIGHUP is handled and ``READY=1`` after it, ``STOPPING=1`` on shutdown.

The protocol is one datagram of ``KEY=VALUE`` lines to the ``AF_UNIX`` socket named by
``$NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract namespace). Written here rather than taken
from a library: it is these few lines of the standard library; the ``systemd`` Python bindings
(python3-systemd) link libsystemd and build from C, and the PyPI ``sdnotify`` package has had no
release since 2017. Without ``$NOTIFY_SOCKET`` (not run by systemd) every call does nothing. A
notification that cannot be sent is logged once and never stops the agent: readiness is a
courtesy to the service manager, not a condition of serving.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import struct
import time
from collections.abc import Mapping

log = logging.getLogger("dicomwire.sdnotify")

ENVIRONMENT = "NOTIFY_SOCKET"
MAX_STATUS = 200  # characters of STATUS=; systemctl status shows one line


def _address(value: str) -> str | None:
    """The socket address ``$NOTIFY_SOCKET`` names: a path, or ``@name`` (abstract namespace); None for
    what this client does not speak (``vsock:``, used by virtual machine managers)."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    return None


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, what ``RELOADING=1`` carries as ``MONOTONIC_USEC`` (systemd 253
    ties the reload to it; older managers ignore it)."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """Sends state changes to the service manager; a no-op without a socket to send to."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._failed = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None, *, unset: bool = True) -> Notifier:
        """From ``$NOTIFY_SOCKET``, removed from this process's environment by default (``sd_notify``'s
        ``unset_environment``): a program the agent starts (``dicom-agent launch``) must not speak for it."""
        value = (os.environ if environ is None else environ).get(ENVIRONMENT, "")
        if unset and environ is None:
            os.environ.pop(ENVIRONMENT, None)
        address = _address(value) if value else None
        if value and address is None:
            log.warning("%s=%r is not a socket this agent can notify: readiness not reported", ENVIRONMENT, value)
        return cls(address)

    @property
    def active(self) -> bool:
        return self.address is not None

    def notify(self, **fields: str | int) -> bool:
        """Send ``KEY=VALUE`` lines (``ready=1`` becomes ``READY=1``); True if a datagram went out."""
        if self.address is None:
            return False
        lines = [f"{key.upper()}={value}" for key, value in fields.items()]
        if any("\n" in line for line in lines):
            raise ValueError("a notification field holds a newline")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                sock.sendall("\n".join(lines).encode())
        except OSError as error:
            if not self._failed:
                self._failed = True
                log.warning("cannot notify the service manager at %s: %s", os.environ.get(ENVIRONMENT)
                            or self.address.replace("\0", "@"), error)
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify(ready=1, **({"status": status[:MAX_STATUS].replace("\n", " ")} if status else {}))

    def reloading(self) -> bool:
        return self.notify(reloading=1, monotonic_usec=monotonic_usec())

    def stopping(self) -> bool:
        return self.notify(stopping=1)

    def status(self, text: str) -> bool:
        return self.notify(status=text[:MAX_STATUS].replace("\n", " "))


class Inbox:
    """The service manager's end of the protocol, for a supervisor whose workers notify it (``[server]
    workers``): an abstract-namespace datagram socket passed to them as ``$NOTIFY_SOCKET``. Like systemd
    it asks the kernel who sent each datagram (``SO_PASSCRED``) and believes only the processes it
    names, so that another local process cannot declare a worker ready."""

    def __init__(self) -> None:
        self.name = f"dicom-agents-notify-{os.getpid()}-{secrets.token_hex(8)}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind("\0" + self.name)

    @property
    def address(self) -> str:
        """What ``$NOTIFY_SOCKET`` says to the workers."""
        return "@" + self.name

    def ready(self, senders: set[int]) -> set[int]:
        """The processes among ``senders`` that said ``READY=1`` since the last call."""
        ready: set[int] = set()
        size = socket.CMSG_SPACE(struct.calcsize("3i"))
        while True:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, size)
            except (BlockingIOError, InterruptedError):
                return ready
            pid = next((struct.unpack("3i", payload[:12])[0] for level, kind, payload in ancillary
                        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS), None)
            if pid in senders and "READY=1" in data.decode(errors="replace").splitlines():
                ready.add(pid)

    def close(self) -> None:
        self.sock.close()


__all__ = ["ENVIRONMENT", "Inbox", "Notifier", "monotonic_usec"]
