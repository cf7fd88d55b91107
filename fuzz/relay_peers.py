"""The peers of fuzz/relay_fuzz.py: what a client and a server send, chosen by the fuzzer's bytes.

Mostly well-formed PDUs, so that the fuzzer gets past the association to the DIMSE traffic: real
A-ASSOCIATE-RQ/AC (pynetdicom's, built once), DIMSE requests and responses of every kind the
agents relay (answering what the other side has outstanding, with Message IDs that collide on purpose),
fragmented as the fuzzer chooses, each PDU mutated if it chooses; and raw bytes.
"""

from __future__ import annotations

import fuzz.plainwire  # noqa: F401 - registers plainwire: the codec, not instrumented (see that module)

# isort: split
from plainwire.dimse import NO_DATA_SET, CommandField, Tag, encode_command
from plainwire.errors import AbortSource, RejectResult, RejectSource
from plainwire.pdu import RELEASE_RP_BYTES, RELEASE_RQ_BYTES, PduFramer, abort_pdu, reject_pdu
from plainwire.pdv import Pdv, encode_p_data, fragment, fragment_message, iter_pdvs, pack

from dicomwire.association import Side
from tests.support.wire import pynetdicom_ac, pynetdicom_rq

ECHO, FIND, MOVE, GET, CT = ("1.2.840.10008.1.1", "1.2.840.10008.5.1.4.1.2.2.1", "1.2.840.10008.5.1.4.1.2.2.2",
                             "1.2.840.10008.5.1.4.1.2.2.3", "1.2.840.10008.5.1.4.1.1.2")
IVLE = "1.2.840.10008.1.2"
CONTEXTS = {FIND: 1, CT: 3, MOVE: 5, ECHO: 7, GET: 9}
_PROPOSED = [(context, sop, [IVLE]) for sop, context in CONTEXTS.items()]

# Built once (pynetdicom is the specification oracle, not fast): requests with a small, an unlimited and a
# tiny Maximum Length, with a User Identity of type 2 and 5, with more contexts; answers accepting all,
# some, with an identity response, with an unlimited and a tiny Maximum Length.
RQS = (
    pynetdicom_rq(contexts=_PROPOSED),
    pynetdicom_rq(contexts=_PROPOSED, identity=(2, b"refdoc", b"secret", True), max_length=0),
    pynetdicom_rq(contexts=_PROPOSED, identity=(5, b"eyJhbGciOiJSUzI1NiJ9.e30.c2ln", b"", False), max_length=64),
    # Two contexts for one SOP class, one of them for a class nobody proposes a request on (DCMTK's
    # storescu proposes 128 such; not here: each would cost the fuzzer as much as the rest of an input).
    pynetdicom_rq(contexts=[*_PROPOSED, (11, CT, [IVLE, "1.2.840.10008.1.2.1"]), (13, "1.2.3.4", [IVLE])]),
)
ACS = (
    pynetdicom_ac(contexts=tuple(CONTEXTS.values())),
    pynetdicom_ac(contexts=(1, 3, 5), max_length=0),
    pynetdicom_ac(contexts=tuple(CONTEXTS.values()), max_length=32),
    pynetdicom_ac(contexts=(3, 7, 9), max_length=200),
)
FIXED = (RELEASE_RQ_BYTES, RELEASE_RP_BYTES, abort_pdu(), abort_pdu(AbortSource.SERVICE_USER),
         reject_pdu(RejectResult.PERMANENT, RejectSource.SERVICE_USER, 7),
         reject_pdu(RejectResult.TRANSIENT, RejectSource.SERVICE_PROVIDER_PRESENTATION, 1))

IDENTIFIER = b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY \x10\x00\x20\x00\x0a\x00\x00\x00PAT-REF-1 "
# Orthanc's pending C-GET-RSP carries (0008,0000) and (0008,0058) in its command set (issue 13).
ORTHANC_TAIL = b"\x08\x00\x00\x00\x04\x00\x00\x00\x0a\x00\x00\x00\x08\x00\x58\x00\x02\x00\x00\x001\x00"
KINDS = (CommandField.C_ECHO_RQ, CommandField.C_FIND_RQ, CommandField.C_MOVE_RQ, CommandField.C_GET_RQ,
         CommandField.C_STORE_RQ, CommandField.C_CANCEL_RQ, CommandField.N_ACTION_RQ, CommandField.C_ECHO_RSP,
         CommandField.C_FIND_RSP, CommandField.C_MOVE_RSP, CommandField.C_GET_RSP, CommandField.C_STORE_RSP)
SOP_CLASS: dict[int, str] = {CommandField.C_ECHO_RQ: ECHO, CommandField.C_FIND_RQ: FIND, CommandField.C_MOVE_RQ: MOVE,
             CommandField.C_GET_RQ: GET, CommandField.C_STORE_RQ: CT, CommandField.N_ACTION_RQ: CT}
STATUSES = (0xFF00, 0x0000, 0xFF01, 0xA700, 0xC000, 0xB000, 0xFE00, 0xFF00)
FRAGMENTS = (16384, 24, 64, 300)
MAX_READS = 12  # reads per chunked send: byte-by-byte reads of a whole message cost more than they find
_IDENTIFIER_KINDS = (CommandField.C_FIND_RQ, CommandField.C_MOVE_RQ, CommandField.C_GET_RQ)


# True while the core has findings not yet fixed (tests/unit/test_relay_fuzz_findings.py): the harness then
# does not walk into them again, so that a long run looks for new ones. All three known ones are fixed.
AVOID_KNOWN_FINDINGS = False


class Reader:
    """The fuzzer's bytes, read in order; zeros once they run out (then ``done``)."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def done(self) -> bool:
        return self.pos >= len(self.data)

    def u8(self) -> int:
        pos = self.pos
        self.pos += 1
        return self.data[pos] if pos < len(self.data) else 0

    def u16(self) -> int:
        return self.u8() << 8 | self.u8()

    def blob(self, size: int) -> bytes:
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk


Outstanding = list[tuple[int, int, int]]  # (Message ID, Command Field, context) of requests a peer received


def pdus(r: Reader, side: Side, others: Outstanding, avoid: set[int]) -> bytes:
    """One thing a peer sends: an association PDU, a DIMSE message, a fixed PDU, or raw bytes."""
    choice = r.u8()
    if choice < 0x70:
        data = message(r, others, avoid)
    elif choice < 0x80:  # two messages whose PDVs share P-DATA-TF PDUs: a question stops inside a PDU
        both = pdvs_of(message(r, others, avoid)) + pdvs_of(message(r, others, avoid))
        data = b"".join(pack(both, FRAGMENTS[choice % len(FRAGMENTS)]))
    elif choice < 0xA0:
        data = (RQS if side is Side.CLIENT else ACS)[choice % 4]
    elif choice < 0xC0:
        data = FIXED[(choice - 0xA0) % len(FIXED)]
    else:
        return r.blob(r.u8())
    return mutate(r, data)


def pdvs_of(data: bytes) -> list[Pdv]:
    """The PDVs of consecutive P-DATA-TF PDUs made here."""
    out: list[Pdv] = []
    for frame in PduFramer().feed(data):
        out += iter_pdvs(frame.data)
    return out


def mutate(r: Reader, data: bytes) -> bytes:
    how = r.u8()
    if how < 0xE0 or not data:
        return data
    position = r.u16() % len(data)
    if how < 0xF0:
        return data[:position] + bytes([r.u8()]) + data[position + 1 :]
    return data[:position]  # cut short


def message(r: Reader, others: Outstanding, avoid: set[int]) -> bytes:
    kind: int = KINDS[r.u8() % len(KINDS)]
    values: dict[int, int | str] = {Tag.COMMAND_FIELD: kind}
    pick = r.u8()
    if kind < 0x8000:
        context = _request(kind, values, pick)
    else:
        kind, context = _response(kind, values, pick, r.u8(), others, avoid)
    data_set = _data_set(r, kind)
    values[Tag.COMMAND_DATA_SET_TYPE] = NO_DATA_SET if data_set is None else 1
    where = r.u8()
    if where >= 0xE0:
        context = where & 0x0F  # a context not accepted, or not the SOP class's
    command = encode_command(values)
    if kind == CommandField.C_GET_RSP and where & 1:
        command += ORTHANC_TAIL
    return _fragments(r.u8(), context, command, data_set)


def _request(kind: int, values: dict[int, int | str], pick: int) -> int:
    if kind == CommandField.C_CANCEL_RQ:
        values[Tag.MESSAGE_ID_BEING_RESPONDED_TO] = 1 + pick % 4
        return CONTEXTS[FIND]
    if pick % 16:
        values[Tag.MESSAGE_ID] = 1 + pick % 4  # few Message IDs: they collide with outstanding ones
    sop_class = SOP_CLASS[kind]
    values[Tag.REQUESTED_SOP_CLASS_UID if kind == CommandField.N_ACTION_RQ else Tag.AFFECTED_SOP_CLASS_UID] = sop_class
    values[Tag.PRIORITY] = 0
    if kind == CommandField.C_MOVE_RQ:
        values[Tag.MOVE_DESTINATION] = "VIEWER1"
    elif kind == CommandField.C_STORE_RQ:
        values[Tag.AFFECTED_SOP_INSTANCE_UID] = f"1.2.3.{pick}"
    return CONTEXTS[sop_class]


def _response(kind: int, values: dict[int, int | str], pick: int, status: int, others: Outstanding,
              avoid: set[int]) -> tuple[int, int]:
    """A response: mostly to a request this peer received (``others``); else to a Message ID of its own
    choosing, but none in ``avoid`` (requests of the other side this peer has not received: answering them
    is tests/unit/test_relay_fuzz_findings.py's second finding, avoided until the core refuses it)."""
    context = CONTEXTS.get(SOP_CLASS.get(kind & 0x7FFF, CT), 3)
    mid = 1 + pick % 4
    if AVOID_KNOWN_FINDINGS and mid in avoid:
        mid += 100
    if others and pick < 0xC0:  # mostly an answer to what the other side has outstanding
        mid, request, context = others[pick % len(others)]
        kind = request | 0x8000
    values[Tag.COMMAND_FIELD] = kind
    values[Tag.MESSAGE_ID_BEING_RESPONDED_TO] = mid
    values[Tag.AFFECTED_SOP_CLASS_UID] = SOP_CLASS.get(kind & 0x7FFF, CT)
    values[Tag.STATUS] = STATUSES[status % len(STATUSES)]
    if kind in (CommandField.C_GET_RSP, CommandField.C_MOVE_RSP):
        values[Tag.NUMBER_OF_REMAINING_SUBOPERATIONS] = status & 3
        values[Tag.NUMBER_OF_COMPLETED_SUBOPERATIONS] = 1
        values[Tag.NUMBER_OF_FAILED_SUBOPERATIONS] = 0
        values[Tag.NUMBER_OF_WARNING_SUBOPERATIONS] = 0
    return kind, context


def _data_set(r: Reader, kind: int) -> bytes | None:
    size = r.u8()
    wanted = kind in _IDENTIFIER_KINDS or kind == CommandField.C_STORE_RQ or (
        kind == CommandField.C_FIND_RSP and size & 1)
    if size >= 0xF0:
        wanted = not wanted  # a data set where none belongs, or none where one does
    if not wanted:
        return None
    if kind == CommandField.C_STORE_RQ:  # up to 3 KiB: past every store_head_length of the harness's limits
        if size & 0x20:
            return image(size)
        return bytes(range(256)) * (size >> 6) + IDENTIFIER
    return IDENTIFIER + b"\x20\x00\x0d\x00\x00\x00\x00\x00" * (size & 0x1F)  # up to 280 bytes: past some bounds


# Behind the Pixel Data of an image (implicit VR little endian: tag, length, value): what a de-identified
# copy cut after its Pixel Data must never carry (fuzz/relay_watch.py checks every data set delivered).
SECRET = b"SECRET-AFTER-PIXELS!"
PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"
_TRAILERS = (b"\xe1\x7f\x10\x00" + len(SECRET).to_bytes(4, "little") + SECRET,  # a private group after 7FE0
             b"\xfa\xff\xfa\xff\xff\xff\xff\xff\xfe\xff\x00\xe0" + len(SECRET).to_bytes(4, "little") + SECRET
             + b"\xfe\xff\x0d\xe0\x00\x00\x00\x00\xfe\xff\xdd\xe0\x00\x00\x00\x00",  # Digital Signatures
             b"\xfc\xff\xfc\xff" + len(SECRET).to_bytes(4, "little") + SECRET)  # trailing padding


def image(size: int) -> bytes:
    """A C-STORE data set: a small header, Pixel Data (native of a defined length, or encapsulated:
    items then a Sequence Delimitation Item, PS3.5 A.4) and an element after it that holds SECRET."""
    pixels = bytes(range(256)) * (size >> 6 & 3) + bytes(size & 0x1F) * 8
    if size & 0x40:
        items = b"".join(b"\xfe\xff\x00\xe0" + len(part).to_bytes(4, "little") + part
                         for part in (b"", pixels[: len(pixels) // 2], pixels[len(pixels) // 2 :]))
        element = PIXEL_DATA_TAG + b"\xff\xff\xff\xff" + items + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    else:
        element = PIXEL_DATA_TAG + len(pixels).to_bytes(4, "little") + pixels
    return IDENTIFIER + element + _TRAILERS[size % 3]


def _fragments(how: int, context: int, command: bytes, data_set: bytes | None) -> bytes:
    max_length = FRAGMENTS[how % len(FRAGMENTS)]
    if how & 0x10:  # every PDV of the message in as few PDUs as fit
        pdvs = fragment(context, command, is_command=True, max_length=max_length)
        if data_set is not None:
            pdvs += fragment(context, data_set, is_command=False, max_length=max(max_length, 100))
        return b"".join(pack(pdvs, max_length))
    pdus = fragment_message(context, command, None, max_length)
    if data_set is not None:  # data sets in fragments of 100 bytes or more: tiny ones only cost time
        pdus += [encode_p_data((pdv,)) for pdv in fragment(context, data_set, is_command=False,
                                                             max_length=max(max_length, 100))]
    return b"".join(pdus)


def chunks(size: int, data: bytes) -> list[bytes]:
    """How a peer's bytes arrive: whole, or in reads of a size ``size`` picks."""
    if size < 0x80:
        return [data]
    step = max(1 + (size & 0x3F) * (1 + (size >> 6 & 1) * 31), len(data) // MAX_READS)
    return [data[i : i + step] for i in range(0, len(data), step)]
