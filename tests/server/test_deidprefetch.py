"""The C-FIND a research retrieval asks ahead (server_agent.deidprefetch) against a scripted PACS whose
PDUs pynetdicom encodes: what it reads, and what makes it give up (then each image asks for itself)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from deid import Needs
from devtools.peers import free_port
from dicomwire.pdu import reject_pdu
from server_agent.config import Pacs
from server_agent.deidprefetch import members
from tests.support.wire import pynetdicom_ac, pynetdicom_message

FIND = "1.2.840.10008.5.1.4.1.2.2.1"


def match(sop: str, series: str = "1.2.3.1", patient: str = "PAT-1") -> bytes:
    def element(tag: int, value: bytes, pad: bytes) -> bytes:
        value += pad * (len(value) % 2)
        return (tag >> 16).to_bytes(2, "little") + (tag & 0xFFFF).to_bytes(2, "little") + \
            len(value).to_bytes(4, "little") + value
    return (element(0x00080018, sop.encode(), b"\0") + element(0x00080052, b"IMAGE", b" ")
            + element(0x00100020, patient.encode(), b" ") + element(0x0020000D, b"1.2.3", b"\0")
            + element(0x0020000E, series.encode(), b"\0"))


def pending(data: bytes) -> list[bytes]:
    return pynetdicom_message("C_FIND_RSP", data_set=data, MessageIDBeingRespondedTo=1, AffectedSOPClassUID=FIND,
                              Status=0xFF00)


FINAL = pynetdicom_message("C_FIND_RSP", MessageIDBeingRespondedTo=1, AffectedSOPClassUID=FIND, Status=0x0000)


def pacs(answers: list[bytes]) -> Iterator[Pacs]:
    """Accepts one association, sends ``answers`` once the request has come, and keeps what it read."""
    listener = socket.create_server(("127.0.0.1", free_port()))

    def serve() -> None:
        connection, _ = listener.accept()
        with connection, contextlib.suppress(OSError):  # the client may close first: that is what we test
            connection.settimeout(5)
            connection.recv(65536)  # the A-ASSOCIATE-RQ
            connection.sendall(answers[0])
            if len(answers) > 1:
                connection.recv(65536)  # the C-FIND-RQ
                connection.sendall(b"".join(answers[1:]))
                connection.recv(65536)  # A-RELEASE-RQ, or the close
                connection.sendall(b"\x06\x00\x00\x00\x00\x04\x00\x00\x00\x00")
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield Pacs(host="127.0.0.1", port=listener.getsockname()[1], ae_title="ORTHANC")
    thread.join(5)
    listener.close()


AC = pynetdicom_ac(abstract=FIND)


def test_every_match_is_read_into_one_batch() -> None:
    answers = [AC, *pending(match("1.2.3.1.1")), *pending(match("1.2.3.1.2")), *pending(match("1.2.3.2.1", "1.2.3.2"))]
    for found in pacs(answers + FINAL):
        assert members(found, None, "GETSCU@WS1", {"study_instance_uid": "1.2.3"}) == Needs(
            patient_ids=frozenset({"PAT-1"}),
            uids=frozenset({"1.2.3", "1.2.3.1", "1.2.3.2", "1.2.3.1.1", "1.2.3.1.2", "1.2.3.2.1"}))


@pytest.mark.parametrize("answers", [
    [reject_pdu(1, 1, 3)],  # the PACS does not know the calling AE title
    [AC, *pynetdicom_message("C_FIND_RSP", MessageIDBeingRespondedTo=1, AffectedSOPClassUID=FIND, Status=0xA700)],
    [AC, b"\x04\x00\x00\x01\x00\x00" + bytes(65536)],  # a PDU longer than the 16 KiB we announced
    [AC, *pending(match("1.2.3.1.1"))],  # the PACS stops answering before the final response
], ids=["rejected", "failed", "oversized PDU", "no final response"])
def test_a_pacs_that_cannot_say_gives_nothing(answers: list[bytes]) -> None:
    for found in pacs(answers):
        assert members(found, None, "GETSCU@WS1", {"study_instance_uid": "1.2.3"}) is None
