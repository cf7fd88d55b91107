"""User Identity Negotiation (PS3.7 D.3.3.7): sub-items 0x58 (RQ) and 0x59 (AC).

RQ value (Table D.3-14): ``type(1) positive-response-requested(1) primary-length(2) primary
secondary-length(2) secondary``; the secondary field is non-empty only for type 2 (passcode).
AC value (Table D.3-15): ``server-response-length(2) server-response``.

A :class:`UserIdentity` never shows its secret fields in ``repr`` so that it cannot leak into a log.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

from .errors import AbortReason, EncodeError, ProtocolError
from .items import MAX_ITEM_VALUE, Item, ItemType, UserInformation
from .pdu import AssociatePdu, PduType


class UserIdentityType(enum.IntEnum):
    USERNAME = 1
    USERNAME_AND_PASSCODE = 2
    KERBEROS = 3
    SAML = 4
    JWT = 5


# Where a new User Identity sub-item goes among the other sub-items: after the ones PS3.8 D.3 lists
# before it, so that peers that expect the standard order are not surprised.
_IDENTITY_AFTER = (
    ItemType.MAXIMUM_LENGTH,
    ItemType.IMPLEMENTATION_CLASS_UID,
    ItemType.ASYNC_OPERATIONS_WINDOW,
    ItemType.ROLE_SELECTION,
    ItemType.IMPLEMENTATION_VERSION_NAME,
    ItemType.SOP_CLASS_EXTENDED_NEGOTIATION,
    ItemType.SOP_CLASS_COMMON_EXTENDED_NEGOTIATION,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class UserIdentity:
    """The content of a User Identity RQ sub-item. ``type`` may be any byte: unknown types are kept."""

    type: int
    primary: bytes = field(repr=False)
    secondary: bytes = field(default=b"", repr=False)
    positive_response_requested: bool = False

    def __repr__(self) -> str:
        name = UserIdentityType(self.type).name if self.type in _KNOWN else f"type-{self.type}"
        return (
            f"UserIdentity({name}, primary=<{len(self.primary)} bytes>, "
            f"secondary=<{len(self.secondary)} bytes>, positive_response={self.positive_response_requested})"
        )

    @property
    def kind(self) -> UserIdentityType | None:
        return UserIdentityType(self.type) if self.type in _KNOWN else None

    def to_item(self) -> Item:
        """Encode as sub-item 0x58; raises :class:`EncodeError` if it exceeds the 16-bit lengths."""
        if not 0 <= self.type <= 0xFF:
            raise EncodeError(f"user identity type {self.type} does not fit one byte")
        value = b"".join(
            (
                bytes((self.type, 1 if self.positive_response_requested else 0)),
                struct.pack(">H", _field_length(self.primary, "primary")),
                self.primary,
                struct.pack(">H", _field_length(self.secondary, "secondary")),
                self.secondary,
            )
        )
        if len(value) > MAX_ITEM_VALUE:
            raise EncodeError(
                f"user identity of {len(value)} bytes exceeds the 16-bit item length (PS3.7 D.3.3.7.1)"
            )
        return Item(ItemType.USER_IDENTITY_RQ, value)

    @classmethod
    def from_item(cls, item: Item) -> UserIdentity:
        value = item.value
        if len(value) < 6:
            raise ProtocolError(f"User Identity sub-item of {len(value)} bytes is shorter than 6")
        primary_length = struct.unpack_from(">H", value, 2)[0]
        end_primary = 4 + primary_length
        if end_primary + 2 > len(value):
            raise ProtocolError("User Identity primary field overruns its sub-item")
        secondary_length = struct.unpack_from(">H", value, end_primary)[0]
        end = end_primary + 2 + secondary_length
        if end != len(value):
            raise ProtocolError(
                f"User Identity fields end at byte {end}, the sub-item has {len(value)}",
                reason=AbortReason.INVALID_PDU_PARAMETER_VALUE,
            )
        return cls(
            type=value[0],
            positive_response_requested=value[1] == 1,
            primary=bytes(value[4:end_primary]),
            secondary=bytes(value[end_primary + 2 : end]),
        )


_KNOWN = frozenset(int(t) for t in UserIdentityType)


def _field_length(data: bytes, name: str) -> int:
    if len(data) > 0xFFFF:
        raise EncodeError(f"user identity {name} field of {len(data)} bytes exceeds 65535")
    return len(data)


def _user_information(pdu: AssociatePdu) -> UserInformation:
    info = pdu.user_information
    if info is None:
        raise ProtocolError("A-ASSOCIATE PDU has no User Information item")
    return info


def extract_user_identity(rq: AssociatePdu) -> UserIdentity | None:
    """The User Identity of an A-ASSOCIATE-RQ, None if absent; a second 0x58 is a ProtocolError."""
    info = _user_information(rq)
    found = [s for s in info.sub_items if s.type == ItemType.USER_IDENTITY_RQ]
    if len(found) > 1:
        raise ProtocolError(
            "A-ASSOCIATE-RQ carries more than one User Identity sub-item (PS3.7 D.3.3.7)",
            reason=AbortReason.UNEXPECTED_PDU_PARAMETER,
        )
    return UserIdentity.from_item(found[0]) if found else None


def strip_user_identity(pdu: AssociatePdu) -> AssociatePdu:
    """Remove 0x58 from an RQ (before it reaches the PACS) or 0x59 from an AC (before the app sees it)."""
    kind = ItemType.USER_IDENTITY_RQ if pdu.pdu_type == PduType.ASSOCIATE_RQ else ItemType.USER_IDENTITY_AC
    info = _user_information(pdu)
    if info.find(kind) is None:
        return pdu
    return pdu.with_user_information(info.without(kind))


def insert_user_identity(rq: AssociatePdu, identity: UserIdentity) -> AssociatePdu:
    """Put ``identity`` into an RQ, replacing any User Identity the app sent itself."""
    if rq.pdu_type != PduType.ASSOCIATE_RQ:
        raise ValueError("a User Identity RQ sub-item belongs in an A-ASSOCIATE-RQ")
    info = _user_information(rq).with_item(identity.to_item(), after=_IDENTITY_AFTER)
    # The User Information item has a 16-bit length of its own: the whole must still fit.
    if len(info.to_item().value) > MAX_ITEM_VALUE:
        raise EncodeError("user information item with the identity exceeds the 16-bit item length")
    return rq.with_user_information(info)


def identity_response_item(server_response: bytes = b"") -> Item:
    """Sub-item 0x59 (PS3.7 D.3.3.7.2): empty for types 1, 2 and (our choice) 5."""
    if len(server_response) > MAX_ITEM_VALUE - 2:
        raise EncodeError("server response does not fit a User Identity AC sub-item")
    return Item(ItemType.USER_IDENTITY_AC, struct.pack(">H", len(server_response)) + server_response)


def add_identity_response(ac: AssociatePdu, server_response: bytes = b"") -> AssociatePdu:
    if ac.pdu_type != PduType.ASSOCIATE_AC:
        raise ValueError("a User Identity AC sub-item belongs in an A-ASSOCIATE-AC")
    info = _user_information(ac)
    return ac.with_user_information(
        info.with_item(identity_response_item(server_response), after=_IDENTITY_AFTER)
    )


def identity_response(ac: AssociatePdu) -> bytes | None:
    """The server response of a 0x59 sub-item in an AC, None if there is none."""
    sub = _user_information(ac).find(ItemType.USER_IDENTITY_AC)
    if sub is None:
        return None
    if len(sub.value) < 2 or struct.unpack_from(">H", sub.value)[0] != len(sub.value) - 2:
        raise ProtocolError("User Identity AC sub-item length fields disagree")
    return bytes(sub.value[2:])


__all__ = [
    "UserIdentity",
    "UserIdentityType",
    "add_identity_response",
    "extract_user_identity",
    "identity_response",
    "identity_response_item",
    "insert_user_identity",
    "strip_user_identity",
]
