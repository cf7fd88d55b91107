"""What an attacker uses against the agents: hand-made DICOM bytes and a raw Upper Layer client.

Everything here is written from the standard, on purpose independent of ``dicomwire`` (whose relay
core is being rewritten, and whose encoders refuse the malformed input an attacker sends):

* PS3.8 9.3: the PDUs (A-ASSOCIATE-RQ with its items and the User Identity sub-item of PS3.7
  D.3.3.7, P-DATA-TF with PDV items of PS3.8 Annex E.2).
* PS3.7 9.3 / Annex E: command sets, always group 0000 in Implicit VR Little Endian (PS3.7 6.3.1).
* PS3.5 7.1.3: data set elements in Implicit VR Little Endian, so that an identifier can hold what no
  encoder would write (a duplicated element, elements out of tag order, a non-ASCII byte in a UID).

:class:`Peer` is the client: it sends bytes and reads what comes back, each read with a deadline, and
reports the end of an association as a value (:class:`Ended`: A-ABORT, A-ASSOCIATE-RJ, end of stream,
silence) instead of raising, so a test can assert how the agent answered.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset

from dicomwire.tls import client_context

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"  # PS3.7 A.2.1
IMPLICIT_LE = "1.2.840.10008.1.2"
VERIFICATION = "1.2.840.10008.1.1"
PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"

# PS3.7 Annex E command fields and statuses used here.
C_STORE_RQ, C_STORE_RSP = 0x0001, 0x8001
C_FIND_RQ, C_FIND_RSP = 0x0020, 0x8020
C_MOVE_RQ = 0x0021
C_ECHO_RQ, C_ECHO_RSP = 0x0030, 0x8030
NO_DATA_SET, DATA_SET = 0x0101, 0x0000
PENDING = (0xFF00, 0xFF01)
STATUS = 0x00000900
ERROR_COMMENT = 0x00000902
COMMAND_FIELD = 0x00000100
MESSAGE_ID_RESPONDED = 0x00000120

# PS3.8 9.3 PDU types.
ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ, P_DATA_TF, RELEASE_RQ, RELEASE_RP, ABORT = range(1, 8)

ATTACKER = "127.0.0.2"  # another loopback address: the attacker is not where the legitimate user is
READ_TIMEOUT = 5.0  # seconds: a hang fails a test in seconds, far below pytest's 120 s timeout


# ---- data set and command elements (PS3.5 7.1.3, Implicit VR Little Endian) --------------------------


def element(tag: int, value: bytes) -> bytes:
    """One Implicit VR Little Endian element, its value as given (the caller pads, or does not)."""
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value


def text(tag: int, value: str | bytes) -> bytes:
    """A text element padded with a space to even length (PS3.5 6.2)."""
    raw = value.encode("latin-1") if isinstance(value, str) else value
    return element(tag, raw + b" " * (len(raw) % 2))


def uid(tag: int, value: str | bytes) -> bytes:
    """A UI element padded with NUL to even length (PS3.5 9.1)."""
    raw = value.encode("latin-1") if isinstance(value, str) else value
    return element(tag, raw + b"\x00" * (len(raw) % 2))


def _tag_of(encoded: bytes) -> int:
    group, elem = struct.unpack_from("<HH", encoded, 0)
    return int(group << 16 | elem)


def us(tag: int, value: int) -> bytes:
    return element(tag, struct.pack("<H", value))


def command_set(*elements: bytes) -> bytes:
    """A command set with its Command Group Length (0000,0000) first (PS3.7 E.1)."""
    body = b"".join(elements)
    return element(0x00000000, struct.pack("<I", len(body))) + body


def request(field_: int, message_id: int, sop_class: str | bytes, *, has_data: bool, extra: bytes = b"") -> bytes:
    """A DIMSE request command: Affected SOP Class, Command Field, Message ID, Priority (medium) for the
    C- services that carry one, and the Command Data Set Type (PS3.7 9.3.1 to 9.3.5)."""
    elements = [uid(0x00000002, sop_class), us(COMMAND_FIELD, field_), us(0x00000110, message_id),
                us(0x00000800, DATA_SET if has_data else NO_DATA_SET), *([extra] if extra else [])]
    if field_ != C_ECHO_RQ:
        elements.append(us(0x00000700, 0))
    return command_set(*sorted(elements, key=_tag_of))  # PS3.5 7.1: ascending tag order


def find_rq(message_id: int, sop_class: str | bytes = STUDY_ROOT_FIND) -> bytes:
    return request(C_FIND_RQ, message_id, sop_class, has_data=True)


def echo_rq(message_id: int) -> bytes:
    return request(C_ECHO_RQ, message_id, VERIFICATION, has_data=False)


def store_rq(message_id: int, sop_instance: str, sop_class: str = CT_IMAGE_STORAGE) -> bytes:
    return request(C_STORE_RQ, message_id, sop_class, has_data=True, extra=uid(0x00001000, sop_instance))


def move_rq(message_id: int, destination: str) -> bytes:
    return request(C_MOVE_RQ, message_id, STUDY_ROOT_MOVE, has_data=True, extra=text(0x00000600, destination))


def store_rsp(responding_to: int, sop_instance: str, status: int = 0) -> bytes:
    """A C-STORE-RSP (PS3.7 9.3.1.2): what only the side that received a C-STORE-RQ may send."""
    return command_set(uid(0x00000002, CT_IMAGE_STORAGE), us(COMMAND_FIELD, C_STORE_RSP),
                       us(MESSAGE_ID_RESPONDED, responding_to), us(0x00000800, NO_DATA_SET), us(STATUS, status),
                       uid(0x00001000, sop_instance))


# ---- PDUs (PS3.8 9.3) -------------------------------------------------------------------------------


def pdu(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBI", kind, 0, len(body)) + body


def item(kind: int, value: bytes) -> bytes:
    """An A-ASSOCIATE variable item or sub-item: type, reserved, 16-bit length (PS3.8 9.3.2)."""
    return struct.pack(">BBH", kind, 0, len(value)) + value


@dataclass(frozen=True, kw_only=True)
class Proposal:
    """One presentation context of an A-ASSOCIATE-RQ (PS3.8 9.3.2.2)."""

    id: int
    abstract: str
    transfers: tuple[str, ...] = (IMPLICIT_LE,)


def jwt_identity(token: str | bytes, *, positive: bool = True) -> bytes:
    """User Identity sub-item 0x58, type 5 (JSON Web Token), PS3.7 D.3.3.7.1."""
    raw = token.encode("ascii") if isinstance(token, str) else token
    return item(0x58, bytes((5, int(positive))) + struct.pack(">H", len(raw)) + raw + b"\x00\x00")


def password_identity(user: str, password: str, *, positive: bool = True) -> bytes:
    """User Identity sub-item 0x58, type 2 (username and passcode), PS3.7 D.3.3.7.1."""
    name, secret = user.encode(), password.encode()
    return item(0x58, bytes((2, int(positive))) + struct.pack(">H", len(name)) + name
                + struct.pack(">H", len(secret)) + secret)


def associate_rq(*, called: str, calling: str, proposals: tuple[Proposal, ...], identity: bytes = b"",
                 max_length: int = 16384) -> bytes:
    """An A-ASSOCIATE-RQ (PS3.8 9.3.2): application context, presentation contexts, User Information
    with Maximum Length (D.1), an Implementation Class UID (D.3.3.2) and the identity sub-item."""
    contexts = b"".join(
        item(0x20, bytes((p.id, 0, 0, 0)) + item(0x30, p.abstract.encode())
             + b"".join(item(0x40, t.encode()) for t in p.transfers))
        for p in proposals)
    user_info = item(0x50, item(0x51, struct.pack(">I", max_length)) + item(0x52, b"1.2.826.0.1.3680043.10.1447.99")
                     + identity)
    fixed = (struct.pack(">HH", 1, 0) + called.encode().ljust(16) + calling.encode().ljust(16) + b"\x00" * 32)
    return pdu(ASSOCIATE_RQ, fixed + item(0x10, APPLICATION_CONTEXT.encode()) + contexts + user_info)


def p_data(context_id: int, control: int, value: bytes) -> bytes:
    """A P-DATA-TF of one PDV (PS3.8 9.3.5, E.2: control bit 0 command, bit 1 last fragment)."""
    return pdu(P_DATA_TF, struct.pack(">IBB", len(value) + 2, context_id, control) + value)


def message(context_id: int, command: bytes, data: bytes | None = None) -> bytes:
    """A whole DIMSE message: its command, then its data set if any, each one last fragment."""
    out = p_data(context_id, 0x03, command)
    return out + p_data(context_id, 0x02, data) if data is not None else out


RELEASE_RQ_PDU = pdu(RELEASE_RQ, b"\x00" * 4)


# ---- reading what comes back ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Ended:
    """How the other side ended (or did not answer): ``kind`` is ``abort`` (source, reason of PS3.8
    9.3.8), ``reject`` (result, source, reason of 9.3.4), ``release`` (A-RELEASE-RP), ``eof`` (the
    connection closed without a PDU), ``reset`` or ``silence`` (nothing within the deadline)."""

    kind: str
    detail: tuple[int, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Message:
    """One DIMSE message as received: its command elements (tag -> raw value) and its data set."""

    context_id: int
    command: dict[int, bytes]
    data: bytes | None = None

    def us(self, tag: int) -> int | None:
        value = self.command.get(tag)
        return struct.unpack("<H", value[:2])[0] if value and len(value) >= 2 else None

    @property
    def field(self) -> int | None:
        return self.us(COMMAND_FIELD)

    @property
    def status(self) -> int | None:
        return self.us(STATUS)

    @property
    def responding_to(self) -> int | None:
        return self.us(MESSAGE_ID_RESPONDED)

    @property
    def comment(self) -> str:
        return self.command.get(ERROR_COMMENT, b"").decode("latin-1").strip(" \x00")

    def dataset(self) -> Dataset:
        assert self.data is not None
        return read_dataset(BytesIO(self.data), is_implicit_VR=True, is_little_endian=True)


def parse_elements(data: bytes) -> dict[int, bytes]:
    """The elements of an Implicit VR Little Endian command set (the first occurrence of each)."""
    out: dict[int, bytes] = {}
    pos = 0
    while pos + 8 <= len(data):
        group, elem, length = struct.unpack_from("<HHI", data, pos)
        out.setdefault(group << 16 | elem, data[pos + 8 : pos + 8 + length])
        pos += 8 + length
    return out


def parse_items(data: bytes) -> list[tuple[int, bytes]]:
    """The (type, value) of each item or sub-item in ``data`` (PS3.8 9.3.3)."""
    out, pos = [], 0
    while pos + 4 <= len(data):
        kind, _, length = struct.unpack_from(">BBH", data, pos)
        out.append((kind, data[pos + 4 : pos + 4 + length]))
        pos += 4 + length
    return out


@dataclass(frozen=True, kw_only=True)
class Accepted:
    """An A-ASSOCIATE-AC: the result of each proposed presentation context (PS3.8 9.3.3.2, 0 =
    acceptance), and whether the User Identity server response sub-item 0x59 came back."""

    results: dict[int, int]
    identity_response: bool


def tls_client(pki: Path, name: str = "ws1") -> ssl.SSLContext:
    """A workstation's TLS client context: its certificate from the site CA, the server checked."""
    return client_context(ca=pki / "ca.crt", certificate=pki / f"{name}.crt", key=pki / f"{name}.key")


@dataclass
class Peer:
    """A raw DICOM client on one connection, every read bounded by ``timeout`` seconds."""

    sock: socket.socket
    timeout: float = READ_TIMEOUT
    _buffer: bytearray = field(default_factory=bytearray)

    @classmethod
    def connect(cls, port: int, *, tls: ssl.SSLContext | None = None, server_name: str = "gw1",
                timeout: float = READ_TIMEOUT, source: str | None = None) -> Peer:
        """Connect to 127.0.0.1:``port``, from the loopback address ``source`` if given (an attacker
        elsewhere than the legitimate user, for the bounds per source address)."""
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                        source_address=(source, 0) if source else None)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname=server_name)
        return cls(sock, timeout)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_pdu(self, timeout: float | None = None) -> tuple[int, bytes] | Ended:
        """The next whole PDU as (type, body), or how the stream ended."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            if len(self._buffer) >= 6:
                kind, _, length = struct.unpack_from(">BBI", self._buffer, 0)
                if len(self._buffer) >= 6 + length:
                    body = bytes(self._buffer[6 : 6 + length])
                    del self._buffer[: 6 + length]
                    return kind, body
            left = deadline - time.monotonic()
            if left <= 0:
                return Ended(kind="silence")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return Ended(kind="silence")
            except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
                return Ended(kind="reset")
            if not chunk:
                return Ended(kind="eof")
            self._buffer += chunk

    def associate(self, rq: bytes) -> Accepted | Ended:
        """Send an A-ASSOCIATE-RQ; the AC's context results, or how the agent refused."""
        self.send(rq)
        got = self.read_pdu()
        if isinstance(got, Ended):
            return got
        kind, body = got
        if kind == ASSOCIATE_RJ:
            return Ended(kind="reject", detail=(body[1], body[2], body[3]))
        if kind == ABORT:
            return Ended(kind="abort", detail=(body[2], body[3]))
        assert kind == ASSOCIATE_AC, f"unexpected PDU type {kind} in answer to an A-ASSOCIATE-RQ"
        items = parse_items(body[68:])  # after the 68 bytes of fixed fields (PS3.8 9.3.3)
        results = {value[0]: value[2] for kind, value in items if kind == 0x21}  # id, reserved, result
        user_info = [sub for kind, value in items if kind == 0x50 for sub in parse_items(value)]
        return Accepted(results=results, identity_response=any(kind == 0x59 for kind, _ in user_info))

    def read_message(self, timeout: float | None = None) -> Message | Ended:
        """The next whole DIMSE message (command and data set joined from their PDVs)."""
        command, data, context = bytearray(), bytearray(), 0
        have_command, expect_data = False, False
        while True:
            got = self.read_pdu(timeout)
            if isinstance(got, Ended):
                return got
            kind, body = got
            if kind == ABORT:
                return Ended(kind="abort", detail=(body[2], body[3]))
            if kind == RELEASE_RP:
                return Ended(kind="release")
            if kind != P_DATA_TF:
                return Ended(kind=f"pdu-{kind}")
            pos = 0
            while pos + 6 <= len(body):
                length, context, control = struct.unpack_from(">IBB", body, pos)
                (command if control & 1 else data).extend(body[pos + 6 : pos + 4 + length])
                pos += 4 + length
                if control & 1 and control & 2:
                    have_command = True
                    elements = parse_elements(bytes(command))
                    expect_data = struct.unpack("<H", elements.get(0x00000800, b"\x01\x01"))[0] != NO_DATA_SET
                    if not expect_data:
                        return Message(context_id=context, command=elements)
                elif have_command and not control & 1 and control & 2:
                    return Message(context_id=context, command=parse_elements(bytes(command)), data=bytes(data))

    def responses(self, timeout: float | None = None) -> tuple[list[Message], Ended | None]:
        """Messages up to and including the first final (non-pending) response, and how the stream
        ended if it ended first."""
        out: list[Message] = []
        while True:
            got = self.read_message(timeout)
            if isinstance(got, Ended):
                return out, got
            out.append(got)
            if got.status not in PENDING:
                return out, None

    def release(self) -> Ended | None:
        """A-RELEASE-RQ, then the A-RELEASE-RP (None) or how it ended instead."""
        self.send(RELEASE_RQ_PDU)
        got = self.read_pdu()
        if isinstance(got, tuple) and got[0] == RELEASE_RP:
            return None
        return got if isinstance(got, Ended) else Ended(kind=f"pdu-{got[0]}")


def describe(got: Message | Ended | Accepted | None) -> str:
    """A short account of an answer, for assertion messages."""
    if isinstance(got, Message):
        return f"command 0x{got.field or 0:04x} status 0x{got.status or 0:04x} {got.comment!r}"
    if isinstance(got, Accepted):
        return f"A-ASSOCIATE-AC {got.results}"
    if isinstance(got, Ended):
        return f"{got.kind} {got.detail}" if got.detail else got.kind
    return "nothing"
