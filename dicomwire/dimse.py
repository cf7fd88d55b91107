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

# What a command element holds, typed; ``bytes`` is a value already encoded (copied from a request).
Value = int | str | tuple[int, ...] | bytes


def is_failure(status: int | None) -> bool:
    """A final status that is neither Success, Warning, Cancel nor Pending (PS3.7 C.1-C.4): Refused
    (01xx, A7xx...), Error (Cxxx), Failed (Axxx, 02xx)... or none at all."""
    if status is None:
        return True
    return not (status in (0x0000, 0x0001, STATUS_CANCEL) or status in STATUS_PENDING or 0xB000 <= status <= 0xBFFF)


def partly_failed(command: CommandSet) -> bool:
    """A final C-GET-RSP or C-MOVE-RSP that reports failed sub-operations (PS3.4 C.4.2.1.4, C.4.3.1.4:
    B000H "one or more failures", or any status with a failed count): some images were refused or lost,
    which a person must hear of although the app may take it as a warning."""
    if command.command_field not in (CommandField.C_GET_RQ | 0x8000, CommandField.C_MOVE_RQ | 0x8000):
        return False
    failed = command.get(Tag.NUMBER_OF_FAILED_SUBOPERATIONS)
    return isinstance(failed, int) and failed > 0


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

    def _us(self, tag: int) -> int | None:
        """A US element (as :meth:`get` reads it, without the lookups: asked for every message)."""
        value = self.elements.get(tag)
        if value is None:
            return None
        return int.from_bytes(value[:2], "little") if len(value) >= 2 else 0

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
        return self._us(Tag.MESSAGE_ID)

    @property
    def message_id_responded_to(self) -> int | None:
        return self._us(Tag.MESSAGE_ID_BEING_RESPONDED_TO)

    @property
    def has_data_set(self) -> bool:
        value = self._us(Tag.COMMAND_DATA_SET_TYPE)
        return value is not None and value != NO_DATA_SET

    @property
    def status(self) -> int | None:
        return self._us(Tag.STATUS)

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


def decode_command(data: Buffer, *, strict: bool = True) -> CommandSet:
    """Decode an Implicit VR Little Endian command set (PS3.7 6.3.1, E.1).

    Raises :class:`ProtocolError` when an element overruns, tags are not ascending (PS3.5 7.1: no
    tag twice, none out of order), or the Command Field is missing or not two bytes. ``strict`` (a
    command set we act on: every request, every response from a client) also requires group 0000
    only and well-formed values for the elements the agents read (:func:`_check_values`), so that a
    command means to us what it means to the receiver. A PACS's responses are read leniently: Orthanc
    puts (0008,0000) and (0008,0058) into pending C-GET-RSP command sets, which we forward untouched.
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
        tag = group << 16 | element
        if strict and group != 0x0000:
            raise ProtocolError(f"command set holds element ({group:04X},{element:04X}) outside group 0000",
                                reason=AbortReason.INVALID_PDU_PARAMETER_VALUE)
        if tag <= last:
            raise ProtocolError(f"command element ({group:04X},{element:04X}) out of ascending order or repeated",
                                reason=AbortReason.INVALID_PDU_PARAMETER_VALUE)
        last = tag
        stop = pos + 8 + length
        if stop > size:
            raise ProtocolError(f"command element ({group:04X},{element:04X}) length {length} overruns")
        elements[tag] = bytes(view[pos + 8 : stop])
        pos = stop
    field = elements.get(Tag.COMMAND_FIELD)
    if field is None or len(field) != 2:
        raise ProtocolError("command set has no two-byte Command Field (0000,0100)",
                            reason=AbortReason.INVALID_PDU_PARAMETER_VALUE)
    if strict:
        _check_values(elements)
    return CommandSet(MappingProxyType(elements), bytes(view), int.from_bytes(field, "little"))


_UID_CHARACTERS = frozenset(b"0123456789.")


def _check_values(elements: Mapping[int, bytes]) -> None:
    """The value of each element we read is what its VR allows (PS3.5 6.2): fixed-length binary
    values of their length, UIDs of digits and dots (at most 64, padded with one NUL), AE titles of
    printable ASCII without a backslash. Anything else could be read one way by us and another by
    the receiver, or break the refusal we build from it: a protocol error, never a guess."""
    for tag, value in elements.items():
        vr = COMMAND_VR.get(tag)
        problem = None
        if len(value) % 2:
            # PS3.5 7.1.1: every value length is even. An odd UID (b"\x00") reads as "" here and as a
            # NUL-padded other thing once re-encoded into our refusal (found by fuzz/dimse_fuzz.py).
            problem = f"odd value length {len(value)}"
        elif vr == "US" and len(value) != 2:
            problem = f"US value of {len(value)} bytes"
        elif vr == "UL" and len(value) != 4:
            problem = f"UL value of {len(value)} bytes"
        elif vr == "AT" and len(value) % 4:
            problem = f"AT value of {len(value)} bytes"
        elif vr == "UI":
            uid = value[:-1] if value.endswith(b"\x00") else value
            if len(uid) > 64 or not _UID_CHARACTERS.issuperset(uid):
                problem = "not a UID (digits and dots, at most 64)"
        elif vr in ("AE", "LO", "SH") and any(b < 0x20 or b > 0x7E or b == 0x5C for b in value):
            problem = f"{vr} value with a control, non-ASCII or backslash byte"
        elif vr == "AE" and len(value.strip(b" ")) > 16:
            problem = "AE title longer than 16 characters"
        if problem is not None:
            raise ProtocolError(f"command element (0000,{tag & 0xFFFF:04X}): {problem}",
                                reason=AbortReason.INVALID_PDU_PARAMETER_VALUE)


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
    """One value as its VR encodes it (PS3.5 6.2); a value that does not fit is an :class:`EncodeError`
    (a status or a Message ID past 16 bits, a UID or AE title outside ASCII), never a guess."""
    if isinstance(value, bytes):
        return value + (b"\x00" if vr == "UI" else b" ") * (len(value) % 2)
    if vr in ("US", "UL"):
        assert isinstance(value, int)
        return _unsigned(value, 2 if vr == "US" else 4, vr)
    if vr == "AT":
        values = (value,) if isinstance(value, int) else value
        assert isinstance(values, tuple)
        return b"".join(_unsigned(v >> 16, 2, vr) + _unsigned(v & 0xFFFF, 2, vr) for v in map(_tag_value, values))
    assert isinstance(value, str)
    try:
        raw = value.encode("ascii" if vr in ("UI", "AE") else "utf-8")
    except UnicodeEncodeError as error:
        raise EncodeError(f"{vr} value {value!r} is not in its character repertoire") from error
    if len(raw) % 2:
        raw += b"\x00" if vr == "UI" else b" "  # PS3.5 6.2: UI pads with NUL, text with space
    return raw


def _unsigned(value: int, size: int, vr: str) -> bytes:
    if not 0 <= value < 1 << (8 * size):
        raise EncodeError(f"{vr} value {value} does not fit {size} bytes")
    return value.to_bytes(size, "little")


def _tag_value(value: int) -> int:
    if not 0 <= value <= 0xFFFFFFFF:
        raise EncodeError(f"AT value {value} is not a 32-bit tag")
    return value


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

    Carries Message ID Being Responded To, the Affected SOP Class (and Instance, for C-STORE) copied
    byte for byte from the request (never decoded and re-encoded: whatever the request held, the
    refusal can be built), no data set, the Status and an Error Comment (:func:`error_comment`).
    C-GET and C-MOVE refusals report zero completed, failed and warning sub-operations, since none ran.
    Never raises for a request that has a response.
    """
    if not request.is_request or request.command_field == CommandField.C_CANCEL_RQ:
        raise ValueError(f"{request.name} is not a request that has a response")
    sop_tag = _RESPONSE_SOP_CLASS_TAG.get(request.command_field, Tag.AFFECTED_SOP_CLASS_UID)
    values: dict[int, Value] = {
        Tag.COMMAND_FIELD: request.command_field | 0x8000,
        Tag.MESSAGE_ID_BEING_RESPONDED_TO: request.message_id or 0,
        Tag.COMMAND_DATA_SET_TYPE: NO_DATA_SET,
        Tag.STATUS: status,
    }
    sop_class = request.elements.get(sop_tag)
    if sop_class is not None:
        values[Tag.AFFECTED_SOP_CLASS_UID] = sop_class
    instance = request.elements.get(Tag.AFFECTED_SOP_INSTANCE_UID)
    if request.command_field == CommandField.C_STORE_RQ and instance:
        values[Tag.AFFECTED_SOP_INSTANCE_UID] = instance
    if request.command_field in (CommandField.C_GET_RQ, CommandField.C_MOVE_RQ):
        values[Tag.NUMBER_OF_COMPLETED_SUBOPERATIONS] = 0
        values[Tag.NUMBER_OF_FAILED_SUBOPERATIONS] = 0
        values[Tag.NUMBER_OF_WARNING_SUBOPERATIONS] = 0
    text = error_comment(comment)
    if text:
        values[Tag.ERROR_COMMENT] = text
    return encode_command(values)


def error_comment(text: str) -> str:
    """An Error Comment (0000,0902) as VR LO allows (PS3.5 6.2): at most 64 characters of the default
    repertoire, no backslash; a longer text is cut at a word boundary, so that it reads whole."""
    clean = " ".join("".join(c if " " <= c <= "~" and c != "\\" else " " for c in text).split())
    if len(clean) <= MAX_ERROR_COMMENT:
        return clean
    head = clean[: MAX_ERROR_COMMENT + 1]
    cut = head.rsplit(" ", 1)[0] if " " in head else ""  # no space: no word boundary to cut at
    return (cut if len(cut) >= MAX_ERROR_COMMENT // 2 else clean[:MAX_ERROR_COMMENT]).rstrip(" ,;:")
