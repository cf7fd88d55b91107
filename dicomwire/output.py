"""What goes to one side of a relayed association, and when a message of our own may join it."""

from __future__ import annotations

from .association import Side
from .commands import Command, Send

Buffer = bytes | bytearray | memoryview


class Output:
    """What goes to one side: its Maximum Length, whether it is mid-message, refusals waiting."""

    __slots__ = ("max_length", "mid_message", "side", "waiting", "writable")

    def __init__(self, side: Side) -> None:
        self.side = side
        self.max_length = 0  # what the side announced it can receive (0: not yet known)
        self.mid_message = False
        self.waiting: list[bytes] = []
        self.writable = side is Side.CLIENT  # the server side is writable once connected

    def send(self, data: Buffer, out: list[Command]) -> None:
        if self.writable:
            out.append(Send(self.side, data))

    def emit(self, data: Buffer, ends_idle: bool, out: list[Command]) -> None:
        """Forwarded bytes; ``ends_idle``: they end at a message boundary."""
        self.send(data, out)
        self.mid_message = not ends_idle
        if ends_idle and self.waiting:
            waiting, self.waiting = self.waiting, []
            for pdu in waiting:
                self.send(pdu, out)

    def inject(self, pdus: list[bytes], out: list[Command]) -> None:
        """A message of our own: now if the side is between messages, else after the current one."""
        if self.mid_message:
            self.waiting.extend(pdus)
        else:
            for pdu in pdus:
                self.send(pdu, out)


__all__ = ["Output"]
