"""Helpers for the golden-byte ring: read annotated hex, feed decoders three ways, build PDUs with pynetdicom."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from pynetdicom import pdu as pn_pdu
from pynetdicom import pdu_primitives as pn_prim
from pynetdicom.presentation import PresentationContext

GOLDEN = Path(__file__).resolve().parent.parent / "golden"


def hex_bytes(text: str) -> bytes:
    """Annotated hex: ``#`` starts a comment; whitespace is ignored."""
    return bytes.fromhex("".join(line.split("#", 1)[0] for line in text.splitlines()))


def golden(name: str) -> bytes:
    return hex_bytes((GOLDEN / name).read_text())


def feed_three_ways(feed_factory: Callable[[], Callable[[bytes], list]], data: bytes,
                    trailing: bytes = b"\x04\x00\x00\x00") -> Iterable[tuple[str, list]]:
    """Yield (how, results) for: all at once, one byte at a time, with trailing bytes of a next PDU."""
    feed = feed_factory()
    yield "whole", feed(data)
    feed = feed_factory()
    out: list = []
    for i in range(len(data)):
        out.extend(feed(data[i : i + 1]))
    yield "bytewise", out
    feed = feed_factory()
    yield "trailing", feed(data + trailing)


def pynetdicom_rq(
    *,
    called: str = "ORTHANC",
    calling: str = "FINDSCU",
    contexts: Iterable[tuple[int, str, list[str]]] = ((1, "1.2.840.10008.1.1", ["1.2.840.10008.1.2"]),),
    max_length: int = 16384,
    identity: tuple[int, bytes, bytes, bool] | None = None,
) -> bytes:
    """An A-ASSOCIATE-RQ encoded by pynetdicom (the specification oracle)."""
    primitive = pn_prim.A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = calling
    primitive.called_ae_title = called
    pcs = []
    for cid, abstract, transfers in contexts:
        pc = PresentationContext()
        pc.context_id = cid
        pc.abstract_syntax = abstract
        pc.transfer_syntax = transfers
        pcs.append(pc)
    primitive.presentation_context_definition_list = pcs
    length = pn_prim.MaximumLengthNotification()
    length.maximum_length_received = max_length
    impl = pn_prim.ImplementationClassUIDNotification()
    impl.implementation_class_uid = "1.2.826.0.1.3680043.9.3811.2.0.0"
    version = pn_prim.ImplementationVersionNameNotification()
    version.implementation_version_name = "PYNETDICOM_TEST"
    user_info = [length, impl, version]
    if identity is not None:
        uid = pn_prim.UserIdentityNegotiation()
        uid.user_identity_type = identity[0]
        uid.primary_field = identity[1]
        if identity[0] == 2:
            uid.secondary_field = identity[2]
        uid.positive_response_requested = identity[3]
        user_info.append(uid)
    primitive.user_information = user_info
    rq = pn_pdu.A_ASSOCIATE_RQ()
    rq.from_primitive(primitive)
    return bytes(rq.encode())


def pynetdicom_ac(*, max_length: int = 16384, contexts: Iterable[int] = (1,),
                  abstract: str = "1.2.840.10008.1.1", transfer_syntax: str = "1.2.840.10008.1.2") -> bytes:
    """An A-ASSOCIATE-AC encoded by pynetdicom, accepting ``contexts``."""
    primitive = pn_prim.A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = "FINDSCU"
    primitive.called_ae_title = "ORTHANC"
    primitive.result = 0
    pcs = []
    for cid in contexts:
        pc = PresentationContext()
        pc.context_id = cid
        pc.abstract_syntax = abstract
        pc.transfer_syntax = [transfer_syntax]
        pc.result = 0
        pcs.append(pc)
    primitive.presentation_context_definition_results_list = pcs
    length = pn_prim.MaximumLengthNotification()
    length.maximum_length_received = max_length
    impl = pn_prim.ImplementationClassUIDNotification()
    impl.implementation_class_uid = "1.2.3.4"
    primitive.user_information = [length, impl]
    ac = pn_pdu.A_ASSOCIATE_AC()
    ac.from_primitive(primitive)
    return bytes(ac.encode())


_DIMSE_PRIMITIVES = {"ECHO": "C_ECHO", "FIND": "C_FIND", "MOVE": "C_MOVE", "GET": "C_GET", "STORE": "C_STORE",
                     "CANCEL": "C_CANCEL"}


def pynetdicom_message(kind: str, *, context_id: int = 1, max_pdu: int = 16384, data_set: bytes | None = None,
                       **fields: object) -> list[bytes]:
    """A DIMSE message (``kind`` as pynetdicom names it: ``C_FIND_RQ``) as the P-DATA-TF PDUs pynetdicom
    sends for it, its command set and data set fragmented by its own encoder (PS3.7 6.3.1, PS3.8 E.2)."""
    from io import BytesIO

    from pynetdicom import dimse_messages as pn_dm
    from pynetdicom import dimse_primitives as pn_dp

    primitive = getattr(pn_dp, _DIMSE_PRIMITIVES[kind.split("_")[1]])()
    for key, value in fields.items():
        setattr(primitive, key, value)
    if data_set is not None:
        setattr(primitive, "DataSet" if kind.startswith("C_STORE") else "Identifier", BytesIO(data_set))
    message = getattr(pn_dm, kind)()
    message.primitive_to_message(primitive)
    pdus = []
    for p_data in message.encode_msg(context_id, max_pdu):
        pdu = pn_pdu.P_DATA_TF()
        pdu.from_primitive(p_data)
        pdus.append(bytes(pdu.encode()))
    return pdus
