"""Seed inputs for the fuzz harnesses, made from real encodings: pydicom data sets, DCMTK's golden
A-ASSOCIATE-RQs (tests/golden), pynetdicom's associations and DIMSE messages.

    python fuzz/make_seeds.py CORPUS_DIR [dataset|pdu|dimse|relay]

Each harness's docstring describes its input; the seeds follow it.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pydicom import examples  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402
from pydicom.filebase import DicomBytesIO  # noqa: E402
from pydicom.filewriter import write_dataset  # noqa: E402

from dicomwire.errors import AbortSource, RejectResult, RejectSource  # noqa: E402
from dicomwire.pdu import RELEASE_RP_BYTES, RELEASE_RQ_BYTES, abort_pdu, reject_pdu  # noqa: E402
from dicomwire.pdv import iter_pdvs  # noqa: E402
from tests.support.wire import golden, pynetdicom_ac, pynetdicom_message, pynetdicom_rq  # noqa: E402

ECHO, FIND, MOVE, GET, CT = ("1.2.840.10008.1.1", "1.2.840.10008.5.1.4.1.2.2.1", "1.2.840.10008.5.1.4.1.2.2.2",
                             "1.2.840.10008.5.1.4.1.2.2.3", "1.2.840.10008.5.1.4.1.1.2")
IDENTIFIER = b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY \x10\x00\x20\x00\x0a\x00\x00\x00PAT-REF-1 "
# Orthanc's pending C-GET-RSP carries (0008,0000) and (0008,0058) in its command set (issue 13).
ORTHANC_TAIL = b"\x08\x00\x00\x00\x04\x00\x00\x00\x0a\x00\x00\x00\x08\x00\x58\x00\x02\x00\x00\x001\x00"


def encode(ds: Dataset, implicit: bool, little: bool = True) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = little, implicit
    write_dataset(fp, ds)
    return fp.getvalue()


def identifiers() -> list[Dataset]:
    query = Dataset()
    query.SpecificCharacterSet = "ISO_IR 100"
    query.QueryRetrieveLevel = "STUDY"
    query.ReferencedStudySequence = [Dataset()]
    query.ReferencedStudySequence[0].ReferencedSOPInstanceUID = "1.2.3"
    query.PatientID = "PAT-REF-1"
    query.IssuerOfPatientID = "HOSP"
    query.StudyInstanceUID = "1.2.3\\1.2.4"
    query.SeriesInstanceUID = ""
    head = examples.ct.copy()
    del head.file_meta
    return [query, head]


def dataset_seeds() -> Iterable[bytes]:
    for ds in identifiers():
        for selector, implicit, little in ((0, True, True), (1, False, True), (2, False, True), (3, False, False)):
            data = encode(ds, implicit, little)[:4096]
            for flags in (0x00, 0x20, 0x10 if selector == 2 else 0x00):
                yield bytes([selector | flags]) + b"\x10\x00" + data


def messages(max_pdu: int = 16384) -> list[list[bytes]]:
    """Requests and responses of every kind the agents relay, as pynetdicom sends them."""
    def msg(kind: str, context_id: int, data_set: bytes | None = None, **fields: object) -> list[bytes]:
        return pynetdicom_message(kind, context_id=context_id, max_pdu=max_pdu, data_set=data_set, **fields)

    return [
        msg("C_ECHO_RQ", 7, MessageID=1, AffectedSOPClassUID=ECHO),
        msg("C_ECHO_RSP", 7, MessageIDBeingRespondedTo=1, AffectedSOPClassUID=ECHO, Status=0),
        msg("C_FIND_RQ", 1, IDENTIFIER, MessageID=2, AffectedSOPClassUID=FIND, Priority=0),
        msg("C_FIND_RSP", 1, IDENTIFIER, MessageIDBeingRespondedTo=2, AffectedSOPClassUID=FIND, Status=0xFF00),
        msg("C_FIND_RSP", 1, MessageIDBeingRespondedTo=2, AffectedSOPClassUID=FIND, Status=0),
        msg("C_MOVE_RQ", 5, IDENTIFIER, MessageID=3, AffectedSOPClassUID=MOVE, Priority=0, MoveDestination="VIEWER1"),
        msg("C_MOVE_RSP", 5, MessageIDBeingRespondedTo=3, AffectedSOPClassUID=MOVE, Status=0xFF00,
            NumberOfRemainingSuboperations=1, NumberOfCompletedSuboperations=0, NumberOfFailedSuboperations=0,
            NumberOfWarningSuboperations=0),
        msg("C_GET_RQ", 9, IDENTIFIER, MessageID=4, AffectedSOPClassUID=GET, Priority=0),
        msg("C_GET_RSP", 9, MessageIDBeingRespondedTo=4, AffectedSOPClassUID=GET, Status=0xFF00,
            NumberOfRemainingSuboperations=1, NumberOfCompletedSuboperations=0, NumberOfFailedSuboperations=1,
            NumberOfWarningSuboperations=0),
        msg("C_STORE_RQ", 3, bytes(range(256)) * 2, MessageID=5, AffectedSOPClassUID=CT, Priority=0,
            AffectedSOPInstanceUID="1.2.3.4", MoveOriginatorApplicationEntityTitle="FINDSCU",
            MoveOriginatorMessageID=3),
        msg("C_STORE_RSP", 3, MessageIDBeingRespondedTo=5, AffectedSOPClassUID=CT, AffectedSOPInstanceUID="1.2.3.4",
            Status=0),
        msg("C_CANCEL_RQ", 1, MessageIDBeingRespondedTo=2),
    ]


def command_of(pdus: list[bytes]) -> bytes:
    return b"".join(bytes(p.value) for pdu in pdus for p in iter_pdvs(pdu) if p.is_command)


def associations() -> list[bytes]:
    return [
        golden("dcmtk-storescu-jwt.hex"), golden("dcmtk-storescu-user-password.hex"),
        pynetdicom_rq(identity=(2, b"refdoc", b"secret", True)),
        pynetdicom_rq(identity=(5, b"eyJ0.e30.sig", b"", False)),
        pynetdicom_rq(max_length=0), pynetdicom_ac(), pynetdicom_ac(contexts=(1, 3), max_length=0),
    ]


def pdu_seeds() -> Iterable[bytes]:
    fixed = [reject_pdu(RejectResult.PERMANENT, RejectSource.SERVICE_USER, 7), abort_pdu(AbortSource.SERVICE_USER),
             abort_pdu(AbortSource.SERVICE_PROVIDER, 6), RELEASE_RQ_BYTES, RELEASE_RP_BYTES]
    p_data = [b"".join(pdus) for pdus in messages(64)]
    streams = associations() + fixed + p_data + [pynetdicom_ac() + b"".join(p_data) + RELEASE_RQ_BYTES]
    prefixes = (b"\x00\x00\x00", b"\x10\x03\x00", b"\x01\x05\x04ABCD", b"\x12\x07\x09\x05\x01\x03tokPASSW")
    for stream in streams:
        for prefix in prefixes:
            yield prefix + stream


def dimse_seeds() -> Iterable[bytes]:
    for pdus in messages():
        command = command_of(pdus)
        yield b"\x00\x00\x00" + command
        yield b"\x00\x81\x24" + command
        yield b"\x02\x10\x81" + bytes([len(command) & 0xFF]) + command + IDENTIFIER
    yield b"\x00\x00\x00" + command_of(messages()[8]) + ORTHANC_TAIL  # Orthanc's lenient C-GET-RSP
    for a in (0, 1):
        records = b"".join(bytes([p.context_id, p.control, len(p.value)]) + bytes(p.value)
                           for pdus in messages(64) for pdu in pdus for p in iter_pdvs(pdu))
        yield bytes([1, a, 3]) + records
    yield b"\x03\x00\x00" + b"\x06\x02\x01\x00\x04\x0bVIEWER1@WS1\x0e\x05hello"


def relay_seeds() -> Iterable[bytes]:
    from fuzz.relay_seeds import seeds

    return seeds(messages)


HARNESSES = {"dataset": dataset_seeds, "pdu": pdu_seeds, "dimse": dimse_seeds, "relay": relay_seeds}


def main() -> None:
    corpus = Path(sys.argv[1])
    corpus.mkdir(parents=True, exist_ok=True)
    for seed in HARNESSES[sys.argv[2] if len(sys.argv) > 2 else "dataset"]():
        (corpus / hashlib.sha1(seed).hexdigest()).write_bytes(seed)


if __name__ == "__main__":
    main()
