"""DIMSE message assembly from PDVs, one direction of one association (PS3.8 Annex E.2, PS3.7 6.3.1).

A message is a command set (its fragments flagged command, the last one flagged last) and, when
the command announces one, a data set (its fragments, the last one flagged last). Fragments of one
message all travel on one presentation context and are never interleaved with another message's.
The assembler decodes command sets only; data sets are counted, never decoded here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .dimse import MAX_COMMAND_LENGTH, CommandSet, decode_command
from .errors import AbortReason, ProtocolError
from .pdu import Frame
from .pdv import COMMAND, COMMAND_WHOLE, LAST, Spans, pdv_spans

Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class MessageStarted:
    """A command set is complete; ``seq`` numbers the messages of one direction from 1."""

    seq: int
    context_id: int
    command: CommandSet


@dataclass(frozen=True, slots=True)
class MessageCompleted:
    seq: int
    context_id: int
    command: CommandSet
    data_set_length: int


AssemblyEvent = MessageStarted | MessageCompleted


class MessageAssembler:
    """Follows one direction's PDVs: command fragments, then (if announced) data set fragments.

    ``feed`` returns the events a PDV causes: a command's last fragment gives MessageStarted (and
    MessageCompleted at once when no data set follows); a data set's last fragment gives
    MessageCompleted. A fragment out of order or on another presentation context mid-message is a
    :class:`ProtocolError`. ``strict`` is passed to :func:`decode_command`: command sets we act on are
    read strictly, a PACS's responses leniently.
    """

    __slots__ = ("_command", "_context", "_data_length", "_max_command", "_message", "_seq", "strict")

    def __init__(self, *, strict: bool = True, max_command_length: int = MAX_COMMAND_LENGTH) -> None:
        self.strict = strict
        self._max_command = max_command_length
        self._command = bytearray()
        self._context: int | None = None
        self._message: MessageStarted | None = None  # set while data set fragments are expected
        self._data_length = 0
        self._seq = 0

    @property
    def seq(self) -> int:
        """Number of the message the next fragment belongs to (the current one if mid-message)."""
        return self._seq + 1 if self._context is None else self._seq

    @property
    def collecting_command(self) -> bool:
        """True while a command set's fragments are arriving (its message has not started yet)."""
        return self._context is not None and self._message is None

    @property
    def idle(self) -> bool:
        """True between messages (a message may be injected here without interleaving)."""
        return self._context is None

    def feed_p_data(self, frames: Sequence[Frame], spans: Sequence[Spans] | None = None,
                    commands: Mapping[tuple[int, int], CommandSet] | None = None) -> list[AssemblyEvent]:
        """Follow every PDV of whole P-DATA-TF PDUs at once (the relay's pass-through path).

        Same checks and events as :meth:`feed`; a data set fragment in the middle of a message, the
        bulk of any transfer, costs a comparison instead of a call. ``spans`` (each frame's
        :func:`~dicomwire.pdv.pdv_spans`) and ``commands`` (command sets whole in one PDV, already decoded,
        by frame index and value start) spare a caller that looked ahead the same work twice.
        """
        events: list[AssemblyEvent] = []
        for index, frame in enumerate(frames):
            data = frame.data
            for start, stop, context_id, control in (spans[index] if spans is not None else pdv_spans(data)):
                if self._message is not None and not control & COMMAND_WHOLE and context_id == self._context:
                    self._data_length += stop - start
                elif commands is not None and control == COMMAND_WHOLE and (index, start) in commands \
                        and self._context is None:
                    self._context = context_id
                    self._seq += 1
                    events.extend(self._started(context_id, commands[(index, start)]))
                else:
                    events.extend(self.feed(context_id, control, data[start:stop]))
        return events

    def feed(self, context_id: int, control: int, value: Buffer) -> tuple[AssemblyEvent, ...]:
        is_command = control & COMMAND
        if self._context is None:
            if not is_command:
                raise ProtocolError("data set fragment with no command before it",
                                    reason=AbortReason.UNEXPECTED_PDU_PARAMETER)
            self._context = context_id
            self._seq += 1
        elif context_id != self._context:
            raise ProtocolError(
                f"fragment on presentation context {context_id} in the middle of a message on {self._context}",
                reason=AbortReason.UNEXPECTED_PDU_PARAMETER,
            )
        if self._message is None:
            return self._command_fragment(context_id, control, value)
        if is_command:
            raise ProtocolError("command fragment while a data set was expected",
                                reason=AbortReason.UNEXPECTED_PDU_PARAMETER)
        self._data_length += len(value)
        if not control & LAST:
            return ()
        message = self._message
        self._message = None
        self._context = None
        return (MessageCompleted(message.seq, context_id, message.command, self._data_length),)

    def _command_fragment(self, context_id: int, control: int, value: Buffer) -> tuple[AssemblyEvent, ...]:
        if not control & COMMAND:
            raise ProtocolError("data set fragment before the command set's last fragment",
                                reason=AbortReason.UNEXPECTED_PDU_PARAMETER)
        if len(self._command) + len(value) > self._max_command:
            raise ProtocolError(f"command set longer than {self._max_command} bytes")
        self._command += value
        if not control & LAST:
            return ()
        command = decode_command(self._command, strict=self.strict)
        self._command = bytearray()
        return self._started(context_id, command)

    def _started(self, context_id: int, command: CommandSet) -> tuple[AssemblyEvent, ...]:
        started = MessageStarted(self._seq, context_id, command)
        if command.has_data_set:
            self._message = started
            self._data_length = 0
            return (started,)
        self._context = None
        return (started, MessageCompleted(self._seq, context_id, command, 0))


__all__ = ["AssemblyEvent", "MessageAssembler", "MessageCompleted", "MessageStarted"]
