"""What a de-identified retrieval will bring, asked of the PACS before it starts, so that its pseudonyms
come in one call to the pseudonymisation service (issue 16: pseudonym lookups batched per move).

A C-STORE sub-operation's header cannot leave before its UIDs are replaced, and a PACS sends one
sub-operation at a time: asked instance by instance, every image would wait for a round trip to the
service. So, once a researcher's C-GET or C-MOVE is permitted and translated, the agent asks the PACS
itself, with a C-FIND at the IMAGE level (PS3.4 C.6.2, Study Root; the same keys as the retrieval, as
the calling AE title the PACS already knows for this association), which instances the retrieval names,
and asks the service for all their pseudonyms at once. Nothing of the answer is shown to anyone: the
pseudonyms wait in the retrieval's memory for the sub-operations that need them.

The client is a few lines over :mod:`dicomwire` on a blocking socket (one association, Implicit VR
Little Endian, the matches read strictly): pynetdicom took ~3 ms per match here, longer than the
retrieval spends on an image.

This is an optimisation only. A PACS that refuses the query, answers too slowly, or names more than
:data:`MAX_INSTANCES` instances leaves the retrieval to ask per instance, which is as safe (each header
is still rewritten only with the service's pseudonyms), just slower.
"""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import Iterator

from deid import Needs
from dicomwire.dataset import IMPLICIT_VR_LE, MalformedDataSet, encode_element, read_data_set
from dicomwire.dimse import CommandField, Tag, decode_command, encode_command
from dicomwire.errors import EncodeError, ProtocolError
from dicomwire.items import Item, ItemType
from dicomwire.negotiation import accepted_contexts
from dicomwire.pdu import RELEASE_RQ_BYTES, AssociatePdu, PduType, decode_associate, encode_ae_title
from dicomwire.pdv import Pdv, encode_p_data, iter_pdvs

from .config import Pacs
from .keys import PATIENT_ID, QUERY_RETRIEVE_LEVEL, SERIES_INSTANCE_UID, SOP_INSTANCE_UID, STUDY_INSTANCE_UID

# One call to the service holds at most 10,000 values (its [limits] max_values): an instance brings its
# own UID, and shares its series', study's and patient's.
MAX_INSTANCES = 8_000
TIMEOUT = 3.0  # seconds for the association and each response (pynetdicom's ACSE, DIMSE, network timeouts)
# How long a retrieval's permit waits for the answer (within the relay's 10 s decision_timeout); past it
# the retrieval goes on and its images ask for themselves.
DEADLINE = 3.0
_FIND = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Query/Retrieve Information Model - FIND
_KEYS = {"sop_instance_uid": SOP_INSTANCE_UID, "patient_id": PATIENT_ID, "study_instance_uid": STUDY_INSTANCE_UID,
         "series_instance_uid": SERIES_INSTANCE_UID}
_VALUES = frozenset(_KEYS.values())
MAX_PDU = 16384  # what we announce (PS3.8 D.1); a match is a few hundred bytes
MAX_ASSOCIATE = 64 * 1024  # an A-ASSOCIATE-AC: one context and the PACS's user information
# PS3.7 D.3.3.2: this client's Implementation Class UID, UUID-derived (PS3.5 B.2), drawn once for it.
IMPLEMENTATION_CLASS_UID = "2.25.242632134866746612235762155343172481472"


def members(pacs: Pacs, context: ssl.SSLContext | None, calling_ae: str, keys: dict[str, str]) -> Needs | None:
    """The Patient IDs and UIDs of the instances ``keys`` (a retrieval's real keys, ``Facts.resource``)
    name, by a C-FIND to ``pacs``; None when it cannot tell (blocking: run it in a thread)."""
    try:
        with _connect(pacs, context) as sock:
            return _find(sock, pacs, calling_ae, keys)
    except (OSError, ProtocolError, MalformedDataSet, EncodeError, ValueError):
        return None


def _connect(pacs: Pacs, context: ssl.SSLContext | None) -> socket.socket:
    raw = socket.create_connection((pacs.host, pacs.port), timeout=TIMEOUT)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return context.wrap_socket(raw, server_hostname=pacs.server_name or pacs.host) if context is not None else raw


def _find(sock: socket.socket, pacs: Pacs, calling_ae: str, keys: dict[str, str]) -> Needs | None:
    """PS3.8 9.3 association, one C-FIND (PS3.7 9.1.2), release; the matches read strictly."""
    rq = _associate_rq(pacs.ae_title, calling_ae)
    sock.sendall(rq)
    kind, pdu = _read_pdu(sock)
    if kind != PduType.ASSOCIATE_AC or not accepted_contexts(decode_associate(rq), decode_associate(pdu)):
        return None
    command = encode_command({Tag.COMMAND_FIELD: CommandField.C_FIND_RQ, Tag.MESSAGE_ID: 1, Tag.PRIORITY: 0,
                              Tag.AFFECTED_SOP_CLASS_UID: _FIND, Tag.COMMAND_DATA_SET_TYPE: 1})
    sock.sendall(encode_p_data([Pdv(1, 0x03, command)]) + encode_p_data([Pdv(1, 0x02, _identifier(keys))]))
    patient_ids: set[str] = set()
    uids: set[str] = set()
    for matches, (status, match) in enumerate(_responses(sock)):
        if status == 0:
            sock.sendall(RELEASE_RQ_BYTES)
            _read_pdu(sock)  # A-RELEASE-RP (PS3.8 7.2): the PACS closes, not us
            return Needs(patient_ids=frozenset(patient_ids), uids=frozenset(uids))
        if status not in (0xFF00, 0xFF01) or match is None or matches >= MAX_INSTANCES:
            return None  # the socket closes: the PACS sees the association end (no more matches read)
        for tag, value in match.items():
            (patient_ids if tag == PATIENT_ID else uids).add(value)
    return None


def _associate_rq(called: str, calling: str) -> bytes:
    """An A-ASSOCIATE-RQ (PS3.8 9.3.2) proposing Study Root FIND in Implicit VR Little Endian."""
    context = bytes([1, 0, 0, 0]) + Item(ItemType.ABSTRACT_SYNTAX, _FIND.encode()).encode() + \
        Item(ItemType.TRANSFER_SYNTAX, IMPLICIT_VR_LE.encode()).encode()
    info = Item(ItemType.MAXIMUM_LENGTH, struct.pack(">I", MAX_PDU)).encode() + \
        Item(ItemType.IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_CLASS_UID.encode()).encode()
    items = (Item(ItemType.APPLICATION_CONTEXT, b"1.2.840.10008.3.1.1.1"),
             Item(ItemType.PRESENTATION_CONTEXT_RQ, context), Item(ItemType.USER_INFORMATION, info))
    return AssociatePdu(pdu_type=PduType.ASSOCIATE_RQ, called_ae_raw=encode_ae_title(called),
                        calling_ae_raw=encode_ae_title(calling), items=items).encode()


def _identifier(keys: dict[str, str]) -> bytes:
    """IMAGE level, the retrieval's keys as match keys, the others universal (return keys)."""
    elements = [(QUERY_RETRIEVE_LEVEL, "CS", b"IMAGE ")]
    for name, tag in _KEYS.items():
        value = keys.get(name, "").encode("ascii")
        elements.append((tag, "LO" if tag == PATIENT_ID else "UI",
                         value + (b"\x00" if tag != PATIENT_ID else b" ") * (len(value) & 1)))
    return b"".join(encode_element(IMPLICIT_VR_LE, tag, vr, value) for tag, vr, value in sorted(elements))


def _read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    """One PDU, whole (PS3.8 9.3.1: type, reserved, 4-byte length); bounded by what we announced."""
    head = _exactly(sock, 6)
    length = int.from_bytes(head[2:], "big")
    if length > (MAX_ASSOCIATE if head[0] == PduType.ASSOCIATE_AC else MAX_PDU):
        raise ProtocolError(f"a PDU of {length} bytes, more than we accept")
    return head[0], head + _exactly(sock, length)


def _exactly(sock: socket.socket, count: int) -> bytes:
    data = bytearray()
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("the PACS closed the connection")
        data += chunk
    return bytes(data)


def _responses(sock: socket.socket) -> Iterator[tuple[int, dict[int, str] | None]]:
    """Each C-FIND-RSP's status and its match (the keys' values), as the PDVs bring them (PS3.8 E.2)."""
    command, data = bytearray(), bytearray()
    status: int | None = None
    while True:
        kind, pdu = _read_pdu(sock)
        if kind != PduType.P_DATA_TF:
            raise ProtocolError(f"PDU type {kind} during a C-FIND")
        for pdv in iter_pdvs(pdu):
            (command if pdv.is_command else data).extend(pdv.value)
            if not pdv.is_last:
                continue
            if pdv.is_command:
                decoded = decode_command(bytes(command), strict=False)
                command.clear()
                status = decoded.status
                if not decoded.has_data_set:
                    yield status or 0, None
                continue
            read = read_data_set(bytes(data), IMPLICIT_VR_LE)
            data.clear()
            match = {e.tag: read.value(e).strip(b" \x00").decode("ascii") for e in read.elements
                     if e.tag in _VALUES and read.value(e).strip(b" \x00")}
            yield status if status is not None else -1, match


__all__ = ["DEADLINE", "MAX_INSTANCES", "members"]
