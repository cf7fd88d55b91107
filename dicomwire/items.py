"""Variable items of A-ASSOCIATE-RQ/AC and their User Information sub-items (PS3.8 9.3.2.x, PS3.7 D.3.3).

Every item is ``type(1) reserved(1) length(2, big-endian) value``. An :class:`Item` keeps its value
and reserved byte verbatim; typed views (:class:`PresentationContext`, :class:`UserInformation`) are
computed from it on demand and never replace it, so unknown items and sub-items survive untouched
(PS3.8 D.2: unknown sub-items must be ignored, not rejected).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, replace

from .errors import AbortReason, EncodeError, ProtocolError

Buffer = bytes | memoryview

ITEM_HEADER = struct.Struct(">BBH")
MAX_ITEM_VALUE = 0xFFFF  # the item length field is 16 bits (PS3.8 9.3.2.x)


class ItemType(enum.IntEnum):
    APPLICATION_CONTEXT = 0x10
    PRESENTATION_CONTEXT_RQ = 0x20
    PRESENTATION_CONTEXT_AC = 0x21
    ABSTRACT_SYNTAX = 0x30
    TRANSFER_SYNTAX = 0x40
    USER_INFORMATION = 0x50
    MAXIMUM_LENGTH = 0x51
    IMPLEMENTATION_CLASS_UID = 0x52
    ASYNC_OPERATIONS_WINDOW = 0x53
    ROLE_SELECTION = 0x54
    IMPLEMENTATION_VERSION_NAME = 0x55
    SOP_CLASS_EXTENDED_NEGOTIATION = 0x56
    SOP_CLASS_COMMON_EXTENDED_NEGOTIATION = 0x57
    USER_IDENTITY_RQ = 0x58
    USER_IDENTITY_AC = 0x59


@dataclass(frozen=True, slots=True)
class Item:
    """A variable item or sub-item exactly as on the wire."""

    type: int
    value: bytes
    reserved: int = 0

    def encode(self) -> bytes:
        if len(self.value) > MAX_ITEM_VALUE:
            raise EncodeError(
                f"item 0x{self.type:02x} value of {len(self.value)} bytes exceeds the 16-bit item length"
            )
        return ITEM_HEADER.pack(self.type, self.reserved, len(self.value)) + self.value


def decode_items(data: Buffer, start: int, end: int, *, where: str) -> tuple[Item, ...]:
    """Decode consecutive items in ``data[start:end]``; any overrun of the parent is a ProtocolError."""
    view = memoryview(data)
    items: list[Item] = []
    pos = start
    while pos < end:
        if end - pos < 4:
            raise ProtocolError(f"{where}: item header overruns its parent ({end - pos} bytes left)")
        item_type, reserved, length = ITEM_HEADER.unpack_from(view, pos)
        stop = pos + 4 + length
        if stop > end:
            raise ProtocolError(
                f"{where}: item 0x{item_type:02x} length {length} overruns its parent by {stop - end} bytes"
            )
        items.append(Item(item_type, bytes(view[pos + 4 : stop]), reserved))
        pos = stop
    return tuple(items)


def encode_items(items: tuple[Item, ...] | list[Item]) -> bytes:
    return b"".join(item.encode() for item in items)


def _uid(value: bytes) -> str:
    # Some implementations pad UIDs with a trailing NUL (PS3.5 9.1); it is not part of the UID.
    return value.decode("ascii", "replace").rstrip("\x00 ")


class PresentationContextResult(enum.IntEnum):
    """PS3.8 Table 9-18, result/reason of a presentation context in an A-ASSOCIATE-AC."""

    ACCEPTANCE = 0
    USER_REJECTION = 1
    NO_REASON = 2
    ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
    TRANSFER_SYNTAXES_NOT_SUPPORTED = 4


@dataclass(frozen=True, slots=True, kw_only=True)
class PresentationContext:
    """Typed view of item 0x20 (RQ, PS3.8 9.3.2.2) or 0x21 (AC, PS3.8 9.3.3.2)."""

    id: int
    result: int | None  # None in an RQ
    abstract_syntax: str | None
    transfer_syntaxes: tuple[str, ...]
    sub_items: tuple[Item, ...]

    @classmethod
    def decode(cls, item: Item) -> PresentationContext:
        value = item.value
        if len(value) < 4:
            raise ProtocolError(f"presentation context item of {len(value)} bytes is shorter than 4")
        subs = decode_items(value, 4, len(value), where=f"presentation context {value[0]}")
        abstract = [_uid(s.value) for s in subs if s.type == ItemType.ABSTRACT_SYNTAX]
        transfer = tuple(_uid(s.value) for s in subs if s.type == ItemType.TRANSFER_SYNTAX)
        return cls(
            id=value[0],
            result=value[2] if item.type == ItemType.PRESENTATION_CONTEXT_AC else None,
            abstract_syntax=abstract[0] if abstract else None,
            transfer_syntaxes=transfer,
            sub_items=subs,
        )

    def check(self) -> None:
        """PS3.8 9.3.2.2: odd id 1-255, exactly one abstract syntax, one or more transfer syntaxes."""
        if self.id % 2 == 0:
            raise ProtocolError(
                f"presentation context id {self.id} is even (PS3.8 9.3.2.2 requires odd)",
                reason=AbortReason.INVALID_PDU_PARAMETER_VALUE,
            )
        abstract = [s for s in self.sub_items if s.type == ItemType.ABSTRACT_SYNTAX]
        if len(abstract) != 1 or not self.transfer_syntaxes:
            raise ProtocolError(
                f"presentation context {self.id} needs one abstract syntax and at least one transfer "
                f"syntax, has {len(abstract)} and {len(self.transfer_syntaxes)}"
            )


# The smallest Maximum Length that carries one PDV with one byte of value (4 length, context, control).
MIN_MAX_LENGTH = 7


@dataclass(frozen=True, slots=True)
class UserInformation:
    """Typed view of item 0x50 (PS3.8 9.3.2.3): its sub-items in wire order, unknown ones included."""

    sub_items: tuple[Item, ...]
    reserved: int = 0

    @classmethod
    def decode(cls, item: Item) -> UserInformation:
        return cls(decode_items(item.value, 0, len(item.value), where="user information"), item.reserved)

    def to_item(self) -> Item:
        return Item(ItemType.USER_INFORMATION, encode_items(self.sub_items), self.reserved)

    def find(self, sub_type: int) -> Item | None:
        for sub in self.sub_items:
            if sub.type == sub_type:
                return sub
        return None

    def without(self, sub_type: int) -> UserInformation:
        return replace(self, sub_items=tuple(s for s in self.sub_items if s.type != sub_type))

    def with_item(self, new: Item, *, after: tuple[int, ...] = ()) -> UserInformation:
        """Replace the sub-item of ``new.type`` in place, or insert it after the last of ``after``."""
        subs = list(self.sub_items)
        for n, sub in enumerate(subs):
            if sub.type == new.type:
                subs[n] = new
                return replace(self, sub_items=tuple(subs))
        at = len(subs)
        if after:
            positions = [n for n, s in enumerate(subs) if s.type in after]
            at = positions[-1] + 1 if positions else at
        subs.insert(at, new)
        return replace(self, sub_items=tuple(subs))

    @property
    def maximum_length(self) -> int | None:
        """PS3.8 D.1: the largest PDU the sender of this item can receive (0 = unlimited)."""
        sub = self.find(ItemType.MAXIMUM_LENGTH)
        if sub is None or len(sub.value) != 4:
            return None
        return int(struct.unpack(">I", sub.value)[0])

    def with_maximum_length(self, length: int) -> UserInformation:
        return self.with_item(Item(ItemType.MAXIMUM_LENGTH, struct.pack(">I", length)))

    @property
    def implementation_class_uid(self) -> str | None:
        sub = self.find(ItemType.IMPLEMENTATION_CLASS_UID)
        return None if sub is None else _uid(sub.value)

    @property
    def implementation_version_name(self) -> str | None:
        sub = self.find(ItemType.IMPLEMENTATION_VERSION_NAME)
        return None if sub is None else sub.value.decode("ascii", "replace").strip()

    def check(self) -> None:
        """PS3.8 D.1: exactly one Maximum Length of 4 bytes; PS3.7 D.3.3.7: at most one User Identity."""
        lengths = [s for s in self.sub_items if s.type == ItemType.MAXIMUM_LENGTH]
        if len(lengths) > 1 or any(len(s.value) != 4 for s in lengths):
            raise ProtocolError("user information must carry one 4-byte Maximum Length sub-item")
        announced = self.maximum_length
        if announced is not None and 0 < announced < MIN_MAX_LENGTH:
            # A peer that can receive no PDV at all could never be answered (PS3.8 D.1, Annex E.2).
            raise ProtocolError(f"Maximum Length {announced} cannot carry a PDV",
                                reason=AbortReason.INVALID_PDU_PARAMETER_VALUE)
        for kind in (ItemType.USER_IDENTITY_RQ, ItemType.USER_IDENTITY_AC):
            if sum(1 for s in self.sub_items if s.type == kind) > 1:
                raise ProtocolError(
                    f"more than one User Identity sub-item 0x{kind:02x} (PS3.7 D.3.3.7 allows one)",
                    reason=AbortReason.UNEXPECTED_PDU_PARAMETER,
                )
