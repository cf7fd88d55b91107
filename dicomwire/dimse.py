"""DIMSE command sets (PS3.7 section 9.3, Annex E) and message assembly from PDVs (PS3.8 Annex E).

A command set is group 0000 in Implicit VR Little Endian, always (PS3.7 6.3.1). We decode it into
``{tag: raw value bytes}`` and read typed fields through :data:`COMMAND_VR`; we only encode the
command sets we synthesise (refusals, rewritten requests). Data sets are never decoded here.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from .errors import AbortReason, EncodeError, ProtocolError
from .pdu import PDV_HEADER as _PDV_HEADER
from .pdu import Frame

Buffer = bytes | bytearray | memoryview

# A command set holds a handful of short elements; anything this large is hostile or broken.
MAX_COMMAND_LENGTH = 64 * 1024

_ELEMENT = struct.Struct("<HHI")


class CommandField(enum.IntEnum):
    """PS3.7 Annex E, (0000,0100) Command Field values handled by the agents."""

    C_STORE_RQ = 0x0001
    C_STORE_RSP = 0x8001
    C_GET_RQ = 0x0010
    C_GET_RSP = 0x8010
    C_FIND_RQ = 0x0020
    C_FIND_RSP = 0x8020
    C_MOVE_RQ = 0x0021
    C_MOVE_RSP = 0x8021
    C_ECHO_RQ = 0x0030
    C_ECHO_RSP = 0x8030
    N_EVENT_REPORT_RQ = 0x0100
    N_EVENT_REPORT_RSP = 0x8100
    N_GET_RQ = 0x0110
    N_GET_RSP = 0x8110
    N_SET_RQ = 0x0120
    N_SET_RSP = 0x8120
    N_ACTION_RQ = 0x0130
    N_ACTION_RSP = 0x8130
    N_CREATE_RQ = 0x0140
    N_CREATE_RSP = 0x8140
    N_DELETE_RQ = 0x0150
    N_DELETE_RSP = 0x8150
    C_CANCEL_RQ = 0x0FFF


def command_name(value: int) -> str:
    try:
        return CommandField(value).name.replace("_", "-")
    except ValueError:
        return f"0x{value:04x}"


class Tag(enum.IntEnum):
    """PS3.7 Table E.1-1, command elements (group 0000) as 32-bit tags."""

    COMMAND_GROUP_LENGTH = 0x00000000
    AFFECTED_SOP_CLASS_UID = 0x00000002
    REQUESTED_SOP_CLASS_UID = 0x00000003
    COMMAND_FIELD = 0x00000100
    MESSAGE_ID = 0x00000110
    MESSAGE_ID_BEING_RESPONDED_TO = 0x00000120
    MOVE_DESTINATION = 0x00000600
    PRIORITY = 0x00000700
    COMMAND_DATA_SET_TYPE = 0x00000800
    STATUS = 0x00000900
    OFFENDING_ELEMENT = 0x00000901
    ERROR_COMMENT = 0x00000902
    ERROR_ID = 0x00000903
    AFFECTED_SOP_INSTANCE_UID = 0x00001000
    REQUESTED_SOP_INSTANCE_UID = 0x00001001
    EVENT_TYPE_ID = 0x00001002
    ATTRIBUTE_IDENTIFIER_LIST = 0x00001005
    ACTION_TYPE_ID = 0x00001008
    NUMBER_OF_REMAINING_SUBOPERATIONS = 0x00001020
    NUMBER_OF_COMPLETED_SUBOPERATIONS = 0x00001021
    NUMBER_OF_FAILED_SUBOPERATIONS = 0x00001022
    NUMBER_OF_WARNING_SUBOPERATIONS = 0x00001023
    MOVE_ORIGINATOR_AE_TITLE = 0x00001030
    MOVE_ORIGINATOR_MESSAGE_ID = 0x00001031


COMMAND_VR: Mapping[int, str] = MappingProxyType(
    {
        Tag.COMMAND_GROUP_LENGTH: "UL",
        Tag.AFFECTED_SOP_CLASS_UID: "UI",
        Tag.REQUESTED_SOP_CLASS_UID: "UI",
        Tag.COMMAND_FIELD: "US",
        Tag.MESSAGE_ID: "US",
        Tag.MESSAGE_ID_BEING_RESPONDED_TO: "US",
        Tag.MOVE_DESTINATION: "AE",
        Tag.PRIORITY: "US",
        Tag.COMMAND_DATA_SET_TYPE: "US",
        Tag.STATUS: "US",
        Tag.OFFENDING_ELEMENT: "AT",
        Tag.ERROR_COMMENT: "LO",
        Tag.ERROR_ID: "US",
        Tag.AFFECTED_SOP_INSTANCE_UID: "UI",
        Tag.REQUESTED_SOP_INSTANCE_UID: "UI",
        Tag.EVENT_TYPE_ID: "US",
        Tag.ATTRIBUTE_IDENTIFIER_LIST: "AT",
        Tag.ACTION_TYPE_ID: "US",
        Tag.NUMBER_OF_REMAINING_SUBOPERATIONS: "US",
        Tag.NUMBER_OF_COMPLETED_SUBOPERATIONS: "US",
        Tag.NUMBER_OF_FAILED_SUBOPERATIONS: "US",
        Tag.NUMBER_OF_WARNING_SUBOPERATIONS: "US",
        Tag.MOVE_ORIGINATOR_AE_TITLE: "AE",
        Tag.MOVE_ORIGINATOR_MESSAGE_ID: "US",
    }
)

NO_DATA_SET = 0x0101  # (0000,0800): PS3.7 E.1, any other value means a data set follows

STATUS_SUCCESS = 0x0000
STATUS_PENDING = (0xFF00, 0xFF01)
STATUS_CANCEL = 0xFE00
STATUS_NOT_AUTHORIZED = 0x0124  # PS3.7 C.5.x "Refused: Not Authorized"

Value = int | str | tuple[int, ...]


@dataclass(frozen=True, slots=True)
class CommandSet:
    """A decoded command set: raw values by tag, in wire order; ``raw`` is the encoding received."""

    elements: Mapping[int, bytes]
    raw: bytes
    # Decoded once: the relay asks for it on every PDU while messages await a decision.
    command_field: int = -1

    # -- typed access ------------------------------------------------------------------------------
    def get(self, tag: int) -> Value | None:
        value = self.elements.get(tag)
        if value is None:
            return None
        return _decode_value(COMMAND_VR.get(tag, "OB"), value)

    def _int(self, tag: int) -> int | None:
        value = self.get(tag)
        return value if isinstance(value, int) else None

    def _str(self, tag: int) -> str | None:
        value = self.get(tag)
        return value if isinstance(value, str) else None

    @property
    def name(self) -> str:
        return command_name(self.command_field)

    @property
    def is_request(self) -> bool:
        return 0 <= self.command_field < 0x8000

    @property
    def is_response(self) -> bool:
        return self.command_field >= 0x8000

    @property
    def message_id(self) -> int | None:
        return self._int(Tag.MESSAGE_ID)

    @property
    def message_id_responded_to(self) -> int | None:
        return self._int(Tag.MESSAGE_ID_BEING_RESPONDED_TO)

    @property
    def has_data_set(self) -> bool:
        value = self._int(Tag.COMMAND_DATA_SET_TYPE)
        return value is not None and value != NO_DATA_SET

    @property
    def status(self) -> int | None:
        return self._int(Tag.STATUS)

    @property
    def affected_sop_class_uid(self) -> str | None:
        return self._str(Tag.AFFECTED_SOP_CLASS_UID)

    @property
    def affected_sop_instance_uid(self) -> str | None:
        return self._str(Tag.AFFECTED_SOP_INSTANCE_UID)

    @property
    def move_destination(self) -> str | None:
        return self._str(Tag.MOVE_DESTINATION)

    @property
    def error_comment(self) -> str | None:
        return self._str(Tag.ERROR_COMMENT)

    @property
    def priority(self) -> int | None:
        return self._int(Tag.PRIORITY)

    def summary(self) -> str:
        """One line for traces and logs: never contains data set content."""
        parts = [self.name]
        if self.message_id is not None:
            parts.append(f"id={self.message_id}")
        if self.message_id_responded_to is not None:
            parts.append(f"re={self.message_id_responded_to}")
        if self.status is not None:
            parts.append(f"status=0x{self.status:04X}")
        if self.move_destination:
            parts.append(f"dest={self.move_destination}")
        sop = self.affected_sop_class_uid
        if sop:
            parts.append(f"sop={sop}")
        return " ".join(parts)


def decode_command(data: Buffer) -> CommandSet:
    """Decode an Implicit VR Little Endian group-0000 command set (PS3.7 6.3.1, E.1).

    Raises :class:`ProtocolError` when an element overruns, a tag is outside group 0000, or tags are
    not ascending (PS3.5 7.1: elements are ordered by tag).
    """
    view = memoryview(data)
    size = len(view)
    if size > MAX_COMMAND_LENGTH:
        raise ProtocolError(f"command set of {size} bytes exceeds {MAX_COMMAND_LENGTH}")
    elements: dict[int, bytes] = {}
    pos = 0
    last = -1
    while pos < size:
        if size - pos < 8:
            raise ProtocolError("command set element header overruns the command set")
        group, element, length = _ELEMENT.unpack_from(view, pos)
        if group != 0x0000:
            raise ProtocolError(
                f"command set holds element ({group:04X},{element:04X}) outside group 0000",
                reason=AbortReason.INVALID_PDU_PARAMETER_VALUE,
            )
        if element <= last:
            raise ProtocolError(f"command element (0000,{element:04X}) out of ascending order")
        last = element
        stop = pos + 8 + length
        if stop > size:
            raise ProtocolError(f"command element (0000,{element:04X}) length {length} overruns")
        elements[element] = bytes(view[pos + 8 : stop])
        pos = stop
    if Tag.COMMAND_FIELD not in elements:
        raise ProtocolError("command set has no Command Field (0000,0100)")
    field = _decode_value("US", elements[Tag.COMMAND_FIELD])
    return CommandSet(MappingProxyType(elements), bytes(view), field if isinstance(field, int) else -1)


def peek_command_field(data: Buffer) -> int | None:
    """The Command Field (0000,0100) of a whole Implicit VR Little Endian command set, or None.

    A header walk only (PS3.7 6.3.1, E.1: group 0000 in ascending tag order), for the relay's
    pass-through path to tell whether a command may need a question without decoding it. None on
    anything irregular; :func:`decode_command` then decides what is wrong.
    """
    size = len(data)
    pos = 0
    unpack = _ELEMENT.unpack_from
    while size - pos >= 8:
        group, element, length = unpack(data, pos)
        if group != 0x0000 or element > Tag.COMMAND_FIELD & 0xFFFF:
            return None
        if element == Tag.COMMAND_FIELD & 0xFFFF:
            return int.from_bytes(data[pos + 8 : pos + 10], "little") if length == 2 and pos + 10 <= size else None
        pos += 8 + length
    return None


def _decode_value(vr: str, value: bytes) -> Value:
    if vr == "US":
        return int.from_bytes(value[:2], "little") if len(value) >= 2 else 0
    if vr == "UL":
        return int.from_bytes(value[:4], "little") if len(value) >= 4 else 0
    if vr == "AT":
        count = len(value) // 4
        return tuple(
            (int.from_bytes(value[4 * i : 4 * i + 2], "little") << 16)
            | int.from_bytes(value[4 * i + 2 : 4 * i + 4], "little")
            for i in range(count)
        )
    if vr == "UI":
        return value.decode("ascii", "replace").rstrip("\x00 ")
    if vr in ("AE", "LO"):
        return value.decode("ascii" if vr == "AE" else "utf-8", "replace").strip(" \x00")
    return value.hex()


def _encode_value(vr: str, value: Value) -> bytes:
    if vr == "US":
        assert isinstance(value, int)
        return value.to_bytes(2, "little")
    if vr == "UL":
        assert isinstance(value, int)
        return value.to_bytes(4, "little")
    if vr == "AT":
        values = (value,) if isinstance(value, int) else value
        assert isinstance(values, tuple)
        return b"".join(((v >> 16).to_bytes(2, "little") + (v & 0xFFFF).to_bytes(2, "little")) for v in values)
    assert isinstance(value, str)
    raw = value.encode("ascii" if vr in ("UI", "AE") else "utf-8")
    if len(raw) % 2:
        raw += b"\x00" if vr == "UI" else b" "  # PS3.5 6.2: UI pads with NUL, text with space
    return raw


def encode_command(values: Mapping[int, Value]) -> bytes:
    """Encode a command set from typed values; (0000,0000) Command Group Length is computed."""
    body = bytearray()
    for tag in sorted(values):
        if tag == Tag.COMMAND_GROUP_LENGTH:
            continue
        if tag >> 16:
            raise EncodeError(f"tag {tag:08X} is not in group 0000")
        vr = COMMAND_VR.get(tag)
        if vr is None:
            raise EncodeError(f"no VR known for command element {tag:08X}")
        raw = _encode_value(vr, values[tag])
        body += _ELEMENT.pack(0, tag & 0xFFFF, len(raw)) + raw
    return _ELEMENT.pack(0, 0, 4) + len(body).to_bytes(4, "little") + bytes(body)


def command_values(command: CommandSet) -> dict[int, Value]:
    """Typed values of every known element of ``command`` (for re-encoding a rewritten command)."""
    out: dict[int, Value] = {}
    for tag in command.elements:
        if tag == Tag.COMMAND_GROUP_LENGTH:
            continue
        value = command.get(tag)
        if value is not None and tag in COMMAND_VR:
            out[tag] = value
    return out


_RESPONSE_SOP_CLASS_TAG: dict[int, int] = {
    # PS3.7 9.3: N- services answer with the Affected SOP Class; their requests carry Requested.
    CommandField.N_GET_RQ: Tag.REQUESTED_SOP_CLASS_UID,
    CommandField.N_SET_RQ: Tag.REQUESTED_SOP_CLASS_UID,
    CommandField.N_ACTION_RQ: Tag.REQUESTED_SOP_CLASS_UID,
    CommandField.N_DELETE_RQ: Tag.REQUESTED_SOP_CLASS_UID,
}

MAX_ERROR_COMMENT = 64  # VR LO: at most 64 characters (PS3.5 6.2)


def refusal_response(
    request: CommandSet, *, status: int = STATUS_NOT_AUTHORIZED, comment: str = "Not authorized"
) -> bytes:
    """The response command set that refuses ``request`` (PS3.7 9.3 and C.5; status 0124H by default).

    Carries Message ID Being Responded To, the Affected SOP Class (and Instance, for C-STORE), no data
    set, the Status and an Error Comment trimmed to the 64 characters VR LO allows. C-GET and C-MOVE
    refusals report zero completed, failed and warning sub-operations, since none ran.
    """
    if not request.is_request or request.command_field == CommandField.C_CANCEL_RQ:
        raise ValueError(f"{request.name} is not a request that has a response")
    sop_tag = _RESPONSE_SOP_CLASS_TAG.get(request.command_field, Tag.AFFECTED_SOP_CLASS_UID)
    sop_class = request.get(sop_tag)
    values: dict[int, Value] = {
        Tag.COMMAND_FIELD: request.command_field | 0x8000,
        Tag.MESSAGE_ID_BEING_RESPONDED_TO: request.message_id or 0,
        Tag.COMMAND_DATA_SET_TYPE: NO_DATA_SET,
        Tag.STATUS: status,
    }
    if isinstance(sop_class, str):
        values[Tag.AFFECTED_SOP_CLASS_UID] = sop_class
    if request.command_field == CommandField.C_STORE_RQ and request.affected_sop_instance_uid:
        values[Tag.AFFECTED_SOP_INSTANCE_UID] = request.affected_sop_instance_uid
    if request.command_field in (CommandField.C_GET_RQ, CommandField.C_MOVE_RQ):
        values[Tag.NUMBER_OF_COMPLETED_SUBOPERATIONS] = 0
        values[Tag.NUMBER_OF_FAILED_SUBOPERATIONS] = 0
        values[Tag.NUMBER_OF_WARNING_SUBOPERATIONS] = 0
    if comment:
        clean = "".join(c if c.isprintable() and c != "\\" else " " for c in comment)
        values[Tag.ERROR_COMMENT] = clean[:MAX_ERROR_COMMENT].rstrip()
    return encode_command(values)


# --------------------------------------------------------------------------------------------------
# Message assembly (PS3.8 Annex E.2, PS3.7 6.3.1)


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
    ProtocolError (PS3.8 Annex E.2: fragments of one message are not interleaved with another's).
    """

    __slots__ = ("_command", "_context", "_data_length", "_max_command", "_message", "_seq")

    def __init__(self, max_command_length: int = MAX_COMMAND_LENGTH) -> None:
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

    def feed_p_data(self, frames: list[Frame]) -> list[AssemblyEvent]:
        """Follow every PDV of whole P-DATA-TF PDUs at once (the relay's pass-through path).

        Same checks and events as :meth:`feed`; data set fragments in the middle of a message, the
        bulk of any transfer, cost a few comparisons each instead of a call.
        """
        events: list[AssemblyEvent] = []
        unpack = _PDV_HEADER.unpack_from
        for frame in frames:
            data = frame.data
            end = len(data)
            pos = 6
            if pos == end:
                raise ProtocolError("P-DATA-TF carries no PDV item (PS3.8 9.3.5 requires one or more)")
            while pos < end:
                if end - pos < 6:
                    raise ProtocolError("PDV item header overruns its P-DATA-TF PDU")
                length, context_id, control = unpack(data, pos)
                stop = pos + 4 + length
                if length < 2 or stop > end:
                    raise ProtocolError(f"PDV item length {length} overruns its P-DATA-TF PDU" if length >= 2
                                        else f"PDV item length {length} is below the 2-byte minimum")
                if (self._message is not None and not control & 0x03 and context_id == self._context):
                    self._data_length += length - 2  # a middle data fragment: nothing else to check
                else:
                    events.extend(self.feed(context_id, control, data[pos + 6 : stop]))
                pos = stop
        return events

    def feed(self, context_id: int, control: int, value: Buffer) -> tuple[AssemblyEvent, ...]:
        is_command = control & 0x01
        if self._context is None:
            if not is_command:
                raise ProtocolError(
                    "data set fragment with no command before it", reason=AbortReason.UNEXPECTED_PDU_PARAMETER
                )
            self._context = context_id
            self._seq += 1
        elif context_id != self._context:
            raise ProtocolError(
                f"fragment on presentation context {context_id} in the middle of a message on {self._context}",
                reason=AbortReason.UNEXPECTED_PDU_PARAMETER,
            )
        if self._message is None:
            if not is_command:
                raise ProtocolError(
                    "data set fragment before the command set's last fragment",
                    reason=AbortReason.UNEXPECTED_PDU_PARAMETER,
                )
            if len(self._command) + len(value) > self._max_command:
                raise ProtocolError(f"command set longer than {self._max_command} bytes")
            self._command += value
            if not control & 0x02:
                return ()
            command = decode_command(self._command)
            self._command = bytearray()
            started = MessageStarted(self._seq, context_id, command)
            if command.has_data_set:
                self._message = started
                self._data_length = 0
                return (started,)
            self._context = None
            return (started, MessageCompleted(self._seq, context_id, command, 0))
        if is_command:
            raise ProtocolError(
                "command fragment while a data set was expected", reason=AbortReason.UNEXPECTED_PDU_PARAMETER
            )
        self._data_length += len(value)
        if not control & 0x02:
            return ()
        message = self._message
        self._message = None
        self._context = None
        return (MessageCompleted(message.seq, context_id, message.command, self._data_length),)
