"""P-DATA-TF PDUs and their Presentation Data Value items (PS3.8 9.3.5, Annex E.2).

One walker (:func:`pdv_spans`) reads the PDV items of a P-DATA-TF; everything that looks inside a
P-DATA-TF (the relay's pass-through scan, message assembly, tracing, tests) goes through it. One
fragmenter (:func:`fragment`) cuts a command or data set into PDVs that fit what a receiver accepts,
and one packer (:func:`pack`) puts PDVs into as few P-DATA-TF PDUs as that receiver's maximum allows.

A PDV item is ``item-length(4, big-endian) presentation-context-ID(1) message-control-header(1)
value``; ``item-length`` counts the context ID, the control header and the value. The Maximum
Length a peer announces (PS3.8 D.1) bounds the *variable field* of each P-DATA-TF it receives: the
PDV items, headers included.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from .errors import AbortReason, ProtocolError
from .items import MIN_MAX_LENGTH
from .pdu import DEFAULT_MAX_PDU_LENGTH, HEADER, HEADER_LENGTH, PduType

Buffer = bytes | bytearray | memoryview

PDV_HEADER = struct.Struct(">IBB")
PDV_HEADER_LENGTH = 6  # item length (4), presentation context ID (1), message control header (1)


# The Message Control Header (PS3.8 Annex E.2): bits 0 and 1 are significant, bits 2-7 are sent as 0.
# Plain ints, not an IntFlag: they are tested for every PDV of every transfer.
COMMAND: Final = 0x01  # bit 0 set: a command fragment; clear: a data set fragment
LAST: Final = 0x02  # bit 1 set: the last fragment of the command set (or of the data set)
COMMAND_WHOLE: Final = COMMAND | LAST  # a command set in one PDV, as every implementation sends it


def control(*, is_command: bool, is_last: bool) -> int:
    return (COMMAND if is_command else 0) | (LAST if is_last else 0)


@dataclass(frozen=True, slots=True)
class Pdv:
    """One Presentation Data Value item; ``control`` is its Message Control Header."""

    context_id: int
    control: int
    value: Buffer = field(repr=False)

    @property
    def is_command(self) -> bool:
        return bool(self.control & COMMAND)

    @property
    def is_last(self) -> bool:
        return bool(self.control & LAST)


Spans = list[tuple[int, int, int, int]]  # (value start, value end, context ID, control) of each PDV


def pdv_spans(data: Buffer) -> Spans:
    """The PDV items of one whole P-DATA-TF PDU (its 6-byte header included in ``data``) as
    ``(value start, value end, context ID, control)`` offsets into ``data``: no copies, no objects
    beyond the tuples. Raises :class:`ProtocolError` when an item overruns the PDU or is shorter than
    its two header bytes, or when the PDU carries no item (PS3.8 9.3.5 requires one or more)."""
    end = len(data)
    unpack = PDV_HEADER.unpack_from
    if end >= HEADER_LENGTH + PDV_HEADER_LENGTH:  # the common case, one PDV filling the PDU: no loop
        length, context_id, control = unpack(data, HEADER_LENGTH)
        if length >= 2 and HEADER_LENGTH + 4 + length == end:
            return [(HEADER_LENGTH + PDV_HEADER_LENGTH, end, context_id, control)]
    pos = HEADER_LENGTH
    spans: Spans = []
    while pos < end:
        if end - pos < PDV_HEADER_LENGTH:
            raise ProtocolError("PDV item header overruns its P-DATA-TF PDU")
        length, context_id, control = unpack(data, pos)
        if length < 2:
            raise ProtocolError(f"PDV item length {length} is below the 2-byte minimum")
        stop = pos + 4 + length
        if stop > end:
            raise ProtocolError(f"PDV item length {length} overruns its P-DATA-TF PDU")
        spans.append((pos + PDV_HEADER_LENGTH, stop, context_id, control))
        pos = stop
    if not spans:
        raise ProtocolError("P-DATA-TF carries no PDV item (PS3.8 9.3.5 requires one or more)")
    return spans


def iter_pdvs(data: Buffer) -> list[Pdv]:
    """The PDV items of one whole P-DATA-TF PDU, their values views of ``data``."""
    view = memoryview(data)
    return [Pdv(context_id, control, view[start:stop]) for start, stop, context_id, control in pdv_spans(view)]


def room(max_length: int) -> int:
    """Value bytes one PDV may carry in a PDU for a receiver announcing ``max_length`` (0: no limit,
    which we treat as our own default). Raises :class:`ProtocolError` below :data:`MIN_MAX_LENGTH`."""
    limit = max_length or DEFAULT_MAX_PDU_LENGTH
    if limit < MIN_MAX_LENGTH:
        raise ProtocolError(f"a Maximum Length of {limit} cannot carry any PDV (PS3.8 D.1)",
                            reason=AbortReason.INVALID_PDU_PARAMETER_VALUE)
    return limit - PDV_HEADER_LENGTH


def fragment(context_id: int, value: Buffer, *, is_command: bool, max_length: int, last: bool = True) -> list[Pdv]:
    """A command set or a data set as PDVs that each fit a PDU for a receiver announcing ``max_length``,
    the last flagged last (PS3.8 Annex E.2) unless ``last`` is False (more of the data set follows). An
    empty value is one empty fragment."""
    size = room(max_length)
    view = memoryview(value)
    chunks = [view[i : i + size] for i in range(0, len(view), size)] or [view[:0]]
    final = len(chunks) - 1 if last else -1
    return [Pdv(context_id, control(is_command=is_command, is_last=n == final), chunk)
            for n, chunk in enumerate(chunks)]


def encode_p_data(pdvs: Iterable[Pdv]) -> bytes:
    """One P-DATA-TF PDU carrying ``pdvs`` in order."""
    parts: list[Buffer] = []
    total = 0
    for pdv in pdvs:
        parts.append(PDV_HEADER.pack(len(pdv.value) + 2, pdv.context_id, pdv.control))
        parts.append(pdv.value)
        total += PDV_HEADER_LENGTH + len(pdv.value)
    return HEADER.pack(PduType.P_DATA_TF, 0, total) + b"".join(parts)


def pack(pdvs: Iterable[Pdv], max_length: int) -> list[bytes]:
    """PDVs, in order, in as few P-DATA-TF PDUs as a receiver announcing ``max_length`` accepts."""
    limit = max_length or DEFAULT_MAX_PDU_LENGTH
    pdus: list[bytes] = []
    batch: list[Pdv] = []
    size = 0
    for pdv in pdvs:
        need = PDV_HEADER_LENGTH + len(pdv.value)
        if batch and size + need > limit:
            pdus.append(encode_p_data(batch))
            batch, size = [], 0
        batch.append(pdv)
        size += need
    if batch:
        pdus.append(encode_p_data(batch))
    return pdus


def fragment_message(context_id: int, command: Buffer, data_set: Buffer | None, max_length: int) -> list[bytes]:
    """One DIMSE message (a command set and an optional data set) as P-DATA-TF PDUs, one PDV each, for
    a receiver announcing ``max_length`` (PS3.8 Annex E; PS3.7 6.3.1: the command first)."""
    pdvs = fragment(context_id, command, is_command=True, max_length=max_length)
    if data_set is not None:
        pdvs += fragment(context_id, data_set, is_command=False, max_length=max_length)
    return [encode_p_data((pdv,)) for pdv in pdvs]


@dataclass(frozen=True, slots=True)
class PDataTF:
    pdvs: tuple[Pdv, ...]

    def encode(self) -> bytes:
        return encode_p_data(self.pdvs)


__all__ = [
    "COMMAND",
    "COMMAND_WHOLE",
    "LAST",
    "MIN_MAX_LENGTH",
    "PDV_HEADER",
    "PDataTF",
    "Pdv",
    "Spans",
    "control",
    "encode_p_data",
    "fragment",
    "fragment_message",
    "iter_pdvs",
    "pack",
    "pdv_spans",
    "room",
]
