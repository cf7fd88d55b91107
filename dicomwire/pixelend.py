"""Where a streamed data set ends when it is cut after its Pixel Data (PS3.5 7.1, 7.5, A.4).

A de-identified C-STORE has its header replaced and the rest of its data set streamed on
(``Rewrite(keep_from=)``). That rest starts at the first element of group 7FE0 and, in a well-formed
data set, holds the pixel elements (PS3.3 C.7.6.3: (7FE0,0001) to (7FE0,0003) Extended Offset Table
and Encapsulated Pixel Data Value Total Length, (7FE0,0008)/(7FE0,0009) Float/Double Float Pixel Data,
(7FE0,0010) Pixel Data) and possibly more: Digital Signatures (FFFA,FFFA), Data Set Trailing Padding
(FFFC,FFFC), a private group, a retired (7FE0,0020)... PS3.15 Table E.1-1 removes Digital Signatures
and private attributes, and padding carries nothing, so the de-identified copy ends with its Pixel
Data element: :class:`PixelEnd` follows those bytes and says which of them pass.

Elements pass while they are pixel elements of group 7FE0 (:data:`PIXEL_ELEMENTS`, each with its own
VR; only Pixel Data of undefined length), at most (7FE0,0010), in ascending order (PS3.5 7.1); the
first other element, and everything after it, is dropped (one that is no pixel element as ``broken``),
and the end of (7FE0,0010) ends the data set. A native value is skipped by its defined length; an
undefined length is a sequence of items (PS3.5 A.4: encapsulated fragments, each of defined length)
ended by a Sequence Delimitation Item. An
element or item header is withheld until it is whole (at most 12 bytes), so no byte of a dropped
element leaves. Anything that cannot be read one way only (an item without a defined length, another
tag among the items, a delimiter with a length) ends the data set where it starts, as ``broken``.
The state is a few integers and that header, whatever the peer sends: the pixels are never held.
"""

from __future__ import annotations

from typing import Literal

from .dataset import DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_BE, IMPLICIT_VR_LE, LONG_VRS

Buffer = bytes | bytearray | memoryview

PIXEL_GROUP = 0x7FE00000
PIXEL_DATA = 0x7FE00010
ITEM = 0xFFFEE000
SEQUENCE_DELIMITATION = 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
# The pixel elements (PS3.3 C.7.6.3; PS3.6 group 7FE0) with the VRs PS3.6 gives them. Nothing else of the
# group passes: another tag may hold a sequence of identifying elements (it precedes Pixel Data, after the
# header the de-identifier read), and an unknown VR would be read with a 4-byte length by the receiver
# (PS3.5 7.1.2) where we read 2: the two would disagree where the next element starts.
PIXEL_ELEMENTS = {0x7FE00001: (b"OV",), 0x7FE00002: (b"OV",), 0x7FE00003: (b"UV",), 0x7FE00008: (b"OF",),
                  0x7FE00009: (b"OD",), PIXEL_DATA: (b"OB", b"OW")}


class PixelEnd:
    """Follows the bytes of a data set from its first element of group 7FE0 (its header replaced before
    them) to the end of its Pixel Data element; :meth:`feed` says which of them pass."""

    __slots__ = ("_big", "_explicit", "_head", "_items", "_last", "_pixel", "_skip", "broken", "done")

    def __init__(self, transfer_syntax: str) -> None:
        if transfer_syntax == DEFLATED_EXPLICIT_VR_LE:
            raise ValueError("a deflated data set cannot be cut in transit (PS3.5 A.5: one deflate stream)")
        self._explicit = transfer_syntax != IMPLICIT_VR_LE
        self._big = transfer_syntax == EXPLICIT_VR_BE
        self._head = bytearray()  # an element or item header not yet whole: withheld
        self._skip = 0  # value bytes of the current element or item still to pass
        self._items = False  # inside an element of undefined length: items until its delimiter
        self._last = PIXEL_GROUP - 1  # the last element's tag (ascending order, PS3.5 7.1)
        self._pixel = False  # the current element is Pixel Data: the data set ends with it
        self.done = False  # the data set has ended: nothing more passes
        self.broken: str | None = None  # why it ended early, when the bytes could not be read

    @property
    def room(self) -> int:
        """Bytes that pass as they come without a look: the rest of the current value (0 when a header
        is pending or the data set has ended)."""
        return 0 if self._head or self.done else self._skip

    def advance(self, length: int) -> None:
        """``length`` bytes, at most :attr:`room`, passed without :meth:`feed`."""
        if not 0 <= length <= self.room:
            raise ValueError(f"{length} bytes advanced with {self.room} of room")
        self._skip -= length
        if not self._skip and self._pixel and not self._items:
            self.done = True

    def feed(self, data: Buffer) -> list[Buffer]:
        """The parts of ``data`` (the next bytes of the data set, in order) that pass: a withheld header
        now whole, then a view of ``data`` up to where it ends or is cut. Nothing once :attr:`done`."""
        out: list[Buffer] = []
        view = memoryview(data)
        end = len(view)
        pos = run = 0  # run: where the bytes passing as they are began
        while pos < end and not self.done:
            if self._skip:
                step = min(self._skip, end - pos)
                pos += step
                self.advance(step)
                continue
            start, withheld = pos, bool(self._head)  # (a header begun in an earlier part: withheld)
            pos = self._take_header(view, pos)
            if len(self._head) < self._header_length():
                pos = start  # the header goes on in the next part: withheld until then
                break
            header = bytes(self._head)
            self._head.clear()
            if not self._decide(header):
                pos = start
                break
            if withheld:
                out.append(header)
                run = pos
        if pos > run:
            out.append(view[run:pos])
        return out

    def _header_length(self) -> int:
        head = self._head
        if self._items or not self._explicit or len(head) < 6:
            return 8
        return 12 if bytes(head[4:6]) in LONG_VRS else 8

    def _take_header(self, view: memoryview, pos: int) -> int:
        while pos < len(view):
            need = self._header_length() - len(self._head)
            if need <= 0:
                break
            self._head += view[pos : pos + need]
            pos += min(need, len(view) - pos)
        return pos

    def _decide(self, header: bytes) -> bool:
        """Whether a whole header passes; sets what follows it."""
        order: Literal["big", "little"] = "big" if self._big else "little"
        tag = int.from_bytes(header[0:2], order) << 16 | int.from_bytes(header[2:4], order)
        long = len(header) == 12
        length = int.from_bytes(header[8:12] if long else header[6:8] if self._explicit and not self._items
                                else header[4:8], order)
        if self._items:
            return self._item(tag, length)
        if not PIXEL_GROUP <= tag <= PIXEL_DATA or tag <= self._last:
            self.done = True  # an element after the pixels (or out of order): it and the rest are dropped
            return False
        vrs = PIXEL_ELEMENTS.get(tag)
        if vrs is None or (self._explicit and header[4:6] not in vrs) or (length == UNDEFINED and tag != PIXEL_DATA):
            self.done = True
            vr = header[4:6].decode("latin-1") if self._explicit else "implicit"
            self.broken = (f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {vr} of length {length:#x} is not a pixel element "
                           "as PS3.6 defines them")
            return False
        self._last, self._pixel = tag, tag == PIXEL_DATA
        if length == UNDEFINED:
            self._items = True
        else:
            self._skip = length
            self.advance(0)  # an empty Pixel Data ends the data set at once
        return True

    def _item(self, tag: int, length: int) -> bool:
        if tag == ITEM and length != UNDEFINED:
            self._skip = length
            return True
        if tag == SEQUENCE_DELIMITATION and length == 0:
            self._items = False
            self.advance(0)
            return True
        self.done = True
        self.broken = (f"({tag >> 16:04X},{tag & 0xFFFF:04X}) of length {length:#x} among the items of "
                       f"({self._last >> 16:04X},{self._last & 0xFFFF:04X}) (PS3.5 A.4 wants items of defined "
                       "length, then a Sequence Delimitation Item)")
        return False


__all__ = ["PixelEnd"]
