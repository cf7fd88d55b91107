"""PDU framing, decoding and encoding (PS3.8 section 9.3).

Every PDU starts with ``type(1) reserved(1) length(4, big-endian)``; ``length`` counts the bytes
after those six (PS3.8 9.3.1). :class:`PduFramer` cuts a byte stream into whole PDUs without copying
what arrives in one piece, and refuses declared lengths past a configured bound before buffering
anything, so a peer cannot make us hold gigabytes.

Decoded A-ASSOCIATE-RQ/AC PDUs keep every byte they were made of (reserved fields, unknown items,
item order) so that ``decode(x).encode() == x`` holds for anything we accept.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .errors import (
    AbortReason,
    AbortSource,
    EncodeError,
    ProtocolError,
)
from .items import (
    Item,
    ItemType,
    PresentationContext,
    UserInformation,
    decode_items,
    encode_items,
)

if TYPE_CHECKING:
    from .pdv import PDataTF

Buffer = bytes | bytearray | memoryview

HEADER = struct.Struct(">BBI")
HEADER_LENGTH = 6
# PS3.8 9.3.2: 2 protocol version + 2 reserved + 16 called + 16 calling + 32 reserved.
ASSOCIATE_FIXED = 68
PROTOCOL_VERSION = 0x0001
DICOM_APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"

# Why these defaults: DCMTK and Orthanc negotiate 16 KiB to 4 MiB PDUs; an A-ASSOCIATE-RQ with 128
# presentation contexts of ten transfer syntaxes each (~40 KiB) and a User Identity sub-item at its
# 16-bit maximum (64 KiB) stays below 128 KiB, and 256 KiB leaves room for what we have not seen.
DEFAULT_MAX_PDU_LENGTH = 4 * 1024 * 1024
DEFAULT_MAX_ASSOCIATE_LENGTH = 256 * 1024


class PduType(enum.IntEnum):
    """PS3.8 Table 9-11 and following: the seven PDU types."""

    ASSOCIATE_RQ = 0x01
    ASSOCIATE_AC = 0x02
    ASSOCIATE_RJ = 0x03
    P_DATA_TF = 0x04
    RELEASE_RQ = 0x05
    RELEASE_RP = 0x06
    ABORT = 0x07


PDU_NAMES = {
    PduType.ASSOCIATE_RQ: "A-ASSOCIATE-RQ",
    PduType.ASSOCIATE_AC: "A-ASSOCIATE-AC",
    PduType.ASSOCIATE_RJ: "A-ASSOCIATE-RJ",
    PduType.P_DATA_TF: "P-DATA-TF",
    PduType.RELEASE_RQ: "A-RELEASE-RQ",
    PduType.RELEASE_RP: "A-RELEASE-RP",
    PduType.ABORT: "A-ABORT",
}

# PDUs whose body is exactly four bytes (PS3.8 9.3.4, 9.3.6, 9.3.7, 9.3.8).
_FIXED_FOUR = frozenset({PduType.ASSOCIATE_RJ, PduType.RELEASE_RQ, PduType.RELEASE_RP, PduType.ABORT})
_ASSOCIATE = frozenset({PduType.ASSOCIATE_RQ, PduType.ASSOCIATE_AC})


@dataclass(frozen=True, slots=True)
class Frame:
    """One whole PDU as received: ``data`` holds the six header bytes and the body, untouched."""

    type: PduType
    data: Buffer

    @property
    def body_length(self) -> int:
        return len(self.data) - HEADER_LENGTH


class PduFramer:
    """Incremental PDU framing from a byte stream (PS3.8 9.3.1).

    ``feed`` returns every PDU completed by the new bytes. PDUs that arrive whole inside one chunk are
    returned as memoryview slices of that chunk (no copy); only a PDU split across chunks is joined.
    A declared length above the bound for its type raises :class:`ProtocolError` as soon as the header
    is read. After an error the framer refuses further input.
    """

    __slots__ = ("_broken", "_max_associate", "_max_pdu", "_need", "_partial", "joined", "span")

    def __init__(
        self,
        max_pdu_length: int = DEFAULT_MAX_PDU_LENGTH,
        max_associate_length: int = DEFAULT_MAX_ASSOCIATE_LENGTH,
    ) -> None:
        self._max_pdu = max_pdu_length
        self._max_associate = max_associate_length
        self._partial = bytearray()
        self._need = 0  # total size of the PDU being joined, 0 while its header is incomplete
        self._broken = False
        # After feed(): whether frames[0] was joined from earlier chunks, and the (start, end) offsets
        # in the chunk just fed of the other frames, which lie back to back: a relay can forward them
        # as one slice.
        self.joined = False
        self.span = (0, 0)

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete PDU held: non-zero at end of stream means a truncated PDU."""
        return len(self._partial)

    def _check_header(self, pdu_type: int, length: int) -> PduType:
        if pdu_type not in _TYPES:
            self._broken = True
            raise ProtocolError(
                f"unknown PDU type 0x{pdu_type:02x}", reason=AbortReason.UNRECOGNIZED_PDU
            )
        kind = _TYPES[pdu_type]
        if kind in _FIXED_FOUR:
            if length != 4:
                self._broken = True
                raise ProtocolError(
                    f"{PDU_NAMES[kind]} declares length {length}, PS3.8 requires 4",
                    reason=AbortReason.INVALID_PDU_PARAMETER_VALUE,
                )
        else:
            limit = self._max_associate if kind in _ASSOCIATE else self._max_pdu
            if length > limit:
                self._broken = True
                raise ProtocolError(
                    f"{PDU_NAMES[kind]} declares length {length}, above the limit of {limit}",
                    reason=AbortReason.INVALID_PDU_PARAMETER_VALUE,
                )
        return kind

    def feed(self, data: Buffer) -> list[Frame]:
        if self._broken:
            raise ProtocolError("stream already broken", reason=AbortReason.UNRECOGNIZED_PDU)
        frames: list[Frame] = []
        view = memoryview(data)
        size = len(view)
        pos = 0
        partial = self._partial
        self.joined = False
        if partial:
            # Join a PDU split across chunks, taking only what it needs from this chunk.
            if not self._need:
                take = min(HEADER_LENGTH - len(partial), size)
                partial += view[:take]
                pos = take
                if len(partial) < HEADER_LENGTH:
                    return frames
                pdu_type, _, length = HEADER.unpack_from(partial, 0)
                self._check_header(pdu_type, length)
                self._need = HEADER_LENGTH + length
            take = min(self._need - len(partial), size - pos)
            partial += view[pos : pos + take]
            pos += take
            if len(partial) < self._need:
                return frames
            whole = bytes(partial)
            partial.clear()
            self._need = 0
            frames.append(Frame(_TYPES[whole[0]], whole))
            self.joined = True
        start = pos
        unpack = HEADER.unpack_from
        while size - pos >= HEADER_LENGTH:
            pdu_type, _, length = unpack(view, pos)
            kind = self._check_header(pdu_type, length)
            end = pos + HEADER_LENGTH + length
            if end > size:
                self._need = end - pos
                break
            frames.append(Frame(kind, view[pos:end]))
            pos = end
        self.span = (start, pos)
        if pos < size:
            partial += view[pos:]
        return frames


_TYPES = {int(t): t for t in PduType}


# --------------------------------------------------------------------------------------------------
# A-ASSOCIATE-RQ / A-ASSOCIATE-AC (PS3.8 9.3.2, 9.3.3)


@dataclass(frozen=True, slots=True, kw_only=True)
class AssociatePdu:
    """A-ASSOCIATE-RQ (type 1) or A-ASSOCIATE-AC (type 2), kept byte-exact.

    ``called_ae_raw``/``calling_ae_raw`` are the 16-byte fields as sent (in an AC they are reserved
    but conventionally echo the RQ; PS3.8 9.3.3 says receivers must not test them).
    ``items`` are the variable items in wire order, unknown ones included.
    """

    pdu_type: PduType
    protocol_version: int = PROTOCOL_VERSION
    called_ae_raw: bytes = b" " * 16
    calling_ae_raw: bytes = b" " * 16
    header_reserved: int = 0
    reserved_after_version: bytes = b"\x00\x00"
    reserved_block: bytes = b"\x00" * 32
    items: tuple[Item, ...] = ()

    # -- typed views ------------------------------------------------------------------------------
    @property
    def called_ae(self) -> str:
        return self.called_ae_raw.decode("ascii", "replace").strip(" ")

    @property
    def calling_ae(self) -> str:
        return self.calling_ae_raw.decode("ascii", "replace").strip(" ")

    @property
    def application_context(self) -> str | None:
        for item in self.items:
            if item.type == ItemType.APPLICATION_CONTEXT:
                return item.value.decode("ascii", "replace").rstrip("\x00 ")
        return None

    @property
    def presentation_contexts(self) -> tuple[PresentationContext, ...]:
        wanted = (
            ItemType.PRESENTATION_CONTEXT_RQ
            if self.pdu_type == PduType.ASSOCIATE_RQ
            else ItemType.PRESENTATION_CONTEXT_AC
        )
        return tuple(PresentationContext.decode(i) for i in self.items if i.type == wanted)

    @property
    def user_information(self) -> UserInformation | None:
        for item in self.items:
            if item.type == ItemType.USER_INFORMATION:
                return UserInformation.decode(item)
        return None

    # -- rewriting --------------------------------------------------------------------------------
    def with_user_information(self, info: UserInformation) -> AssociatePdu:
        """Replace (or append) the User Information item, keeping every other item in place."""
        new = info.to_item()
        items = list(self.items)
        for n, item in enumerate(items):
            if item.type == ItemType.USER_INFORMATION:
                items[n] = new
                break
        else:
            items.append(new)
        return replace(self, items=tuple(items))

    def with_ae_titles(self, *, called: str | None = None, calling: str | None = None) -> AssociatePdu:
        return replace(
            self,
            called_ae_raw=self.called_ae_raw if called is None else encode_ae_title(called),
            calling_ae_raw=self.calling_ae_raw if calling is None else encode_ae_title(calling),
        )

    def encode(self) -> bytes:
        body = b"".join(
            (
                struct.pack(">H", self.protocol_version),
                self.reserved_after_version,
                self.called_ae_raw,
                self.calling_ae_raw,
                self.reserved_block,
                encode_items(self.items),
            )
        )
        return HEADER.pack(self.pdu_type, self.header_reserved, len(body)) + body


def decode_associate(data: Buffer) -> AssociatePdu:
    """Decode an A-ASSOCIATE-RQ or -AC. Raises :class:`ProtocolError` on any structural fault."""
    view = memoryview(data)
    if len(view) < HEADER_LENGTH + ASSOCIATE_FIXED:
        raise ProtocolError("A-ASSOCIATE PDU shorter than its fixed fields")
    pdu_type, header_reserved, length = HEADER.unpack_from(view, 0)
    if pdu_type not in (PduType.ASSOCIATE_RQ, PduType.ASSOCIATE_AC):
        raise ProtocolError(f"PDU type 0x{pdu_type:02x} is not A-ASSOCIATE-RQ/AC")
    if length != len(view) - HEADER_LENGTH:
        raise ProtocolError(f"A-ASSOCIATE length {length} does not match the {len(view) - 6} bytes given")
    (version,) = struct.unpack_from(">H", view, 6)
    items = decode_items(view, HEADER_LENGTH + ASSOCIATE_FIXED, len(view), where="A-ASSOCIATE")
    return AssociatePdu(
        pdu_type=PduType(pdu_type),
        protocol_version=version,
        header_reserved=header_reserved,
        reserved_after_version=bytes(view[8:10]),
        called_ae_raw=bytes(view[10:26]),
        calling_ae_raw=bytes(view[26:42]),
        reserved_block=bytes(view[42:74]),
        items=items,
    )


def encode_ae_title(title: str) -> bytes:
    """PS3.8 9.3.2: 16 bytes, space padded. Raises :class:`EncodeError` if it cannot fit."""
    # Checked as UTF-8, whose non-ASCII bytes are refused: "replace" made a valid-looking "?" of them.
    problem = ae_title_problem(title.encode("utf-8", "surrogatepass"))
    if problem:
        raise EncodeError(f"AE title {title!r}: {problem}")
    return title.encode("ascii").ljust(16, b" ")


def ae_title_problem(raw: bytes) -> str | None:
    """Why ``raw`` is not a valid AE title (PS3.5 6.2, VR AE), or None if it is.

    At most 16 characters of the default repertoire, no backslash, no control characters, and not
    only spaces (leading and trailing spaces are not significant).
    """
    if len(raw) > 16:
        return f"longer than 16 characters ({len(raw)})"
    for b in raw:
        if b < 0x20 or b > 0x7E:
            return f"contains the control or non-ASCII byte 0x{b:02x}"
        if b == 0x5C:
            return "contains a backslash"
    if not raw.strip(b" "):
        return "is empty"
    return None


# --------------------------------------------------------------------------------------------------
# The fixed-size PDUs (PS3.8 9.3.4, 9.3.6-9.3.8)


@dataclass(frozen=True, slots=True)
class AssociateRJ:
    result: int
    source: int
    reason: int

    def encode(self) -> bytes:
        return HEADER.pack(PduType.ASSOCIATE_RJ, 0, 4) + bytes((0, self.result, self.source, self.reason))


@dataclass(frozen=True, slots=True)
class Abort:
    source: int = AbortSource.SERVICE_PROVIDER
    reason: int = AbortReason.NOT_SPECIFIED

    def encode(self) -> bytes:
        return HEADER.pack(PduType.ABORT, 0, 4) + bytes((0, 0, self.source, self.reason))


@dataclass(frozen=True, slots=True)
class ReleaseRQ:
    def encode(self) -> bytes:
        return RELEASE_RQ_BYTES


@dataclass(frozen=True, slots=True)
class ReleaseRP:
    def encode(self) -> bytes:
        return RELEASE_RP_BYTES


RELEASE_RQ_BYTES = HEADER.pack(PduType.RELEASE_RQ, 0, 4) + b"\x00" * 4
RELEASE_RP_BYTES = HEADER.pack(PduType.RELEASE_RP, 0, 4) + b"\x00" * 4


def reject_pdu(result: int, source: int, reason: int) -> bytes:
    """A-ASSOCIATE-RJ (PS3.8 9.3.4): ``result`` a :class:`RejectResult`, ``source`` a :class:`RejectSource`."""
    return AssociateRJ(int(result), int(source), int(reason)).encode()


def abort_pdu(source: AbortSource = AbortSource.SERVICE_PROVIDER, reason: int = 0) -> bytes:
    # PS3.8 9.3.8: when the source is the service user the reason is not significant and sent as 0.
    return Abort(int(source), 0 if source == AbortSource.SERVICE_USER else int(reason)).encode()


# --------------------------------------------------------------------------------------------------


def decode_pdu(data: Buffer) -> AssociatePdu | AssociateRJ | PDataTF | ReleaseRQ | ReleaseRP | Abort:
    """Decode one whole PDU of any of the seven types (a test oracle; the relay never decodes P-DATA)."""
    from .pdv import PDataTF, iter_pdvs  # pdv builds on this module's header

    view = memoryview(data)
    if len(view) < HEADER_LENGTH:
        raise ProtocolError("PDU shorter than its 6-byte header")
    pdu_type, _, length = HEADER.unpack_from(view, 0)
    if length != len(view) - HEADER_LENGTH:
        raise ProtocolError(f"PDU length {length} does not match the {len(view) - 6} bytes given")
    if pdu_type in (PduType.ASSOCIATE_RQ, PduType.ASSOCIATE_AC):
        return decode_associate(view)
    if pdu_type == PduType.P_DATA_TF:
        return PDataTF(tuple(iter_pdvs(view)))
    if pdu_type in _FIXED_FOUR and length != 4:
        raise ProtocolError(f"{PDU_NAMES[_TYPES[pdu_type]]} must have length 4, has {length}")
    if pdu_type == PduType.ASSOCIATE_RJ:
        return AssociateRJ(view[7], view[8], view[9])
    if pdu_type == PduType.RELEASE_RQ:
        return ReleaseRQ()
    if pdu_type == PduType.RELEASE_RP:
        return ReleaseRP()
    if pdu_type == PduType.ABORT:
        return Abort(view[8], view[9])
    raise ProtocolError(f"unknown PDU type 0x{pdu_type:02x}", reason=AbortReason.UNRECOGNIZED_PDU)
