"""What an A-ASSOCIATE-RQ and -AC must hold before anything acts on them (PS3.8 9.3.2, 9.3.3, PS3.7
D.3.3), and what the relay takes from a pair of them: the Maximum Length each side can receive (PS3.8
D.1) and the presentation contexts accepted (PS3.8 9.3.3.2).

The PDUs themselves (decoding them byte-exact, encoding them) are :mod:`dicomwire.pdu`'s; a request
that fails here is rejected with the PS3.8 9.3.4 code that fits (:class:`AssociationRejected`) or
aborted (:class:`ProtocolError`) before a policy sees it.
"""

from __future__ import annotations

from .errors import AbortReason, AssociationRejected, ProtocolError, RejectReason, RejectSource
from .identity import extract_user_identity
from .items import ItemType
from .pdu import (
    DICOM_APPLICATION_CONTEXT,
    PDU_NAMES,
    PROTOCOL_VERSION,
    AssociatePdu,
    Buffer,
    ae_title_problem,
    decode_associate,
)


def check_associate_rq(rq: AssociatePdu) -> None:
    """Checks an A-ASSOCIATE-RQ must pass before anything acts on it (PS3.8 9.3.2, PS3.7 D.3.3).

    Raises :class:`AssociationRejected` with the PS3.8 9.3.4 code that fits, or
    :class:`ProtocolError` for a structural fault inside the items.
    """
    if not rq.protocol_version & PROTOCOL_VERSION:
        raise AssociationRejected(
            f"protocol version 0x{rq.protocol_version:04x} not supported",
            source=RejectSource.SERVICE_PROVIDER_ACSE,
            reason=RejectReason.PROTOCOL_VERSION_NOT_SUPPORTED,
        )
    problem = ae_title_problem(rq.called_ae_raw)
    if problem:
        raise AssociationRejected(
            f"called AE title {rq.called_ae_raw!r} {problem}", reason=RejectReason.CALLED_AE_NOT_RECOGNIZED
        )
    problem = ae_title_problem(rq.calling_ae_raw)
    if problem:
        raise AssociationRejected(
            f"calling AE title {rq.calling_ae_raw!r} {problem}",
            reason=RejectReason.CALLING_AE_NOT_RECOGNIZED,
        )
    check_singletons(rq)
    context = rq.application_context
    if context != DICOM_APPLICATION_CONTEXT:
        raise AssociationRejected(
            f"application context {context!r} is not the DICOM application context",
            reason=RejectReason.APPLICATION_CONTEXT_NOT_SUPPORTED,
        )
    seen: set[int] = set()
    for pc in rq.presentation_contexts:  # PS3.8 7.1.1.13: one ID, one context (else DCMTK reads the first)
        pc.check()
        if pc.id in seen:
            raise ProtocolError(f"presentation context id {pc.id} is proposed more than once (PS3.8 7.1.1.13)",
                                reason=AbortReason.INVALID_PDU_PARAMETER_VALUE)
        seen.add(pc.id)
    info = rq.user_information
    if info is None:
        raise ProtocolError("A-ASSOCIATE-RQ has no User Information item (PS3.8 9.3.2)")
    info.check()


def check_singletons(pdu: AssociatePdu) -> None:
    """PS3.8 9.3.2, 9.3.3: one Application Context Item and one User Information Item. Our typed views
    read (and rewrite) the first; a second one the peer may read instead is a PDU read two ways."""
    for kind in (ItemType.APPLICATION_CONTEXT, ItemType.USER_INFORMATION):
        if sum(1 for item in pdu.items if item.type == kind) > 1:
            raise ProtocolError(f"{PDU_NAMES[pdu.pdu_type]} carries more than one item 0x{kind:02x} "
                                "(PS3.8 9.3.2 allows one)", reason=AbortReason.UNEXPECTED_PDU_PARAMETER)


def read_request(data: Buffer) -> AssociatePdu:
    """An A-ASSOCIATE-RQ, decoded and checked (:func:`check_associate_rq`), its User Identity sub-item
    read (a second 0x58 or a malformed one is refused here, PS3.7 D.3.3.7). Raises
    :class:`AssociationRejected` or :class:`ProtocolError`."""
    rq = decode_associate(data)
    check_associate_rq(rq)
    extract_user_identity(rq)
    return rq


def read_accept(data: Buffer) -> AssociatePdu:
    """An A-ASSOCIATE-AC, decoded, with its User Information checked (PS3.8 9.3.3). Raises
    :class:`ProtocolError`."""
    ac = decode_associate(data)
    check_singletons(ac)
    info = ac.user_information
    if info is None:
        raise ProtocolError("A-ASSOCIATE-AC has no User Information item")
    info.check()
    seen: set[int] = set()
    for pc in ac.presentation_contexts:  # each decodes here, not later in the middle of the review
        if pc.id in seen:
            raise ProtocolError(f"A-ASSOCIATE-AC answers presentation context {pc.id} more than once",
                                reason=AbortReason.INVALID_PDU_PARAMETER_VALUE)
        seen.add(pc.id)
        if pc.result == 0 and len(pc.transfer_syntaxes) != 1:
            # PS3.8 9.3.3.2: an accepted context names the one transfer syntax both sides will use;
            # with two, the app and the agent could each read the data sets in another.
            raise ProtocolError(f"A-ASSOCIATE-AC accepts presentation context {pc.id} with "
                                f"{len(pc.transfer_syntaxes)} transfer syntaxes, not one",
                                reason=AbortReason.INVALID_PDU_PARAMETER_VALUE)
    return ac


def capped(pdu: AssociatePdu, bound: int) -> tuple[AssociatePdu, int]:
    """What the sender of ``pdu`` can receive (its Maximum Length, PS3.8 D.1; 0 or none: unlimited), at
    most ``bound``; and ``pdu`` announcing at most ``bound`` (the same object when it already does)."""
    info = pdu.user_information
    announced = info.maximum_length if info else None
    if info is None or announced is None:
        return pdu, bound
    if announced == 0 or announced > bound:
        return pdu.with_user_information(info.with_maximum_length(bound)), bound
    return pdu, announced


def accepted_contexts(rq: AssociatePdu, ac: AssociatePdu) -> list[tuple[int, str, str]]:
    """(context ID, abstract syntax, transfer syntax) of each presentation context the AC accepted (result
    0, PS3.8 9.3.3.2) among those the RQ proposed."""
    proposed = {pc.id: pc.abstract_syntax for pc in rq.presentation_contexts}
    return [(pc.id, proposed[pc.id] or "", pc.transfer_syntaxes[0]) for pc in ac.presentation_contexts
            if pc.result == 0 and pc.id in proposed and pc.transfer_syntaxes]


__all__ = ["accepted_contexts", "capped", "check_associate_rq", "check_singletons", "read_accept", "read_request"]
