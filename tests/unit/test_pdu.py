"""Golden bytes for the seven PDU types and the framer (PS3.8 9.3)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pynetdicom import pdu as pn_pdu

from dicomwire.errors import AbortReason, AssociationRejected, ProtocolError, RejectReason
from dicomwire.items import MIN_MAX_LENGTH, ItemType
from dicomwire.negotiation import check_associate_rq, read_accept
from dicomwire.pdu import (
    DEFAULT_MAX_PDU_LENGTH,
    RELEASE_RP_BYTES,
    RELEASE_RQ_BYTES,
    Abort,
    AssociateRJ,
    PduFramer,
    PduType,
    ReleaseRP,
    ReleaseRQ,
    decode_associate,
    decode_pdu,
)
from dicomwire.pdv import PDataTF, Pdv, fragment_message, iter_pdvs
from tests.support.wire import feed_three_ways, golden, hex_bytes, pynetdicom_ac, pynetdicom_rq

RJ_CALLED_AE = hex_bytes("""
    03 00           # A-ASSOCIATE-RJ, reserved
    00 00 00 04     # length 4
    00              # reserved
    01              # result: rejected-permanent
    01              # source: DICOM UL service-user
    07              # reason: called-AE-title-not-recognized
""")
ABORT_PROVIDER_INVALID = hex_bytes("""
    07 00 00 00 00 04   # A-ABORT, length 4
    00 00               # reserved, reserved
    02                  # source: DICOM UL service-provider
    06                  # reason: invalid-PDU-parameter-value
""")
P_DATA_ECHO = hex_bytes("""
    04 00 00 00 00 0c   # P-DATA-TF, length 12
    00 00 00 08         # PDV item length 8 (context id + MCH + 6 bytes)
    01                  # presentation context 1
    03                  # message control header: command, last fragment
    de ad be ef 00 01   # value (opaque here)
""")


def test_fixed_pdus_match_annotated_bytes_and_pynetdicom() -> None:
    assert AssociateRJ(1, 1, 7).encode() == RJ_CALLED_AE
    assert Abort(2, 6).encode() == ABORT_PROVIDER_INVALID
    assert decode_pdu(RJ_CALLED_AE) == AssociateRJ(1, 1, 7)
    assert decode_pdu(ABORT_PROVIDER_INVALID) == Abort(2, 6)
    theirs = pn_pdu.A_ASSOCIATE_RJ()
    theirs.decode(RJ_CALLED_AE)
    assert (theirs.result, theirs.source, theirs.reason_diagnostic) == (1, 1, 7)
    assert bytes(theirs.encode()) == RJ_CALLED_AE
    abort = pn_pdu.A_ABORT_RQ()
    abort.decode(ABORT_PROVIDER_INVALID)
    assert bytes(abort.encode()) == ABORT_PROVIDER_INVALID
    for ours, cls in ((RELEASE_RQ_BYTES, pn_pdu.A_RELEASE_RQ), (RELEASE_RP_BYTES, pn_pdu.A_RELEASE_RP)):
        pdu = cls()
        pdu.decode(ours)
        assert bytes(pdu.encode()) == ours
    assert decode_pdu(RELEASE_RQ_BYTES) == ReleaseRQ() and decode_pdu(RELEASE_RP_BYTES) == ReleaseRP()


def test_p_data_round_trip_and_pynetdicom_agree() -> None:
    pdu = decode_pdu(P_DATA_ECHO)
    assert isinstance(pdu, PDataTF)
    (pdv,) = pdu.pdvs
    assert (pdv.context_id, pdv.is_command, pdv.is_last) == (1, True, True)
    assert bytes(pdv.value) == bytes.fromhex("deadbeef0001")
    assert pdu.encode() == P_DATA_ECHO
    theirs = pn_pdu.P_DATA_TF()
    theirs.decode(P_DATA_ECHO)
    assert bytes(theirs.encode()) == P_DATA_ECHO


def test_fragment_message_respects_the_peer_maximum() -> None:
    pdus = fragment_message(3, b"C" * 25, b"D" * 10, 16)
    pdvs = [p for pdu in pdus for p in iter_pdvs(pdu)]
    assert all(len(pdu) <= 16 + 6 for pdu in pdus)
    assert [p.control for p in pdvs] == [1, 1, 3, 2]  # 10+10+5 command bytes, 10 data bytes
    assert b"".join(bytes(p.value) for p in pdvs if p.is_command) == b"C" * 25
    assert b"".join(bytes(p.value) for p in pdvs if not p.is_command) == b"D" * 10


@given(max_length=st.integers(0, 300), command=st.binary(max_size=400), data_set=st.none() | st.binary(max_size=400))
def test_any_workable_maximum_fragments_and_the_rest_is_a_protocol_error(max_length: int, command: bytes,
                                                                       data_set: bytes | None) -> None:
    """Issue 13: a Maximum Length of 1-6 raised ValueError inside the core (no A-ABORT, a hung slot).
    Every maximum of 7 or more (0: no limit) carries any message in PDUs it allows; below 7 no PDV fits,
    which is a protocol error (the association request announcing it is refused)."""
    if 0 < max_length < MIN_MAX_LENGTH:
        with pytest.raises(ProtocolError):
            fragment_message(1, command, data_set, max_length)
        return
    pdus = fragment_message(1, command, data_set, max_length)
    pdvs = [p for pdu in pdus for p in iter_pdvs(pdu)]
    assert all(len(pdu) - 6 <= (max_length or DEFAULT_MAX_PDU_LENGTH) for pdu in pdus)
    assert b"".join(bytes(p.value) for p in pdvs if p.is_command) == command
    assert b"".join(bytes(p.value) for p in pdvs if not p.is_command) == (data_set or b"")
    assert [p.is_last for p in pdvs if p.is_command][-1] and sum(p.is_last for p in pdvs) == 1 + (data_set is not None)


@pytest.mark.parametrize("announced", [1, 6])
def test_a_request_announcing_a_maximum_no_pdv_fits_is_refused(announced: int) -> None:
    rq = decode_associate(pynetdicom_rq(max_length=announced))
    with pytest.raises(ProtocolError) as error:
        check_associate_rq(rq)
    assert error.value.reason == AbortReason.INVALID_PDU_PARAMETER_VALUE


@pytest.mark.parametrize("source", ["pynetdicom", "dcmtk-user-password", "dcmtk-jwt"])
def test_associate_rq_round_trips_byte_exact(source: str) -> None:
    data = {
        "pynetdicom": lambda: pynetdicom_rq(contexts=[(1, "1.2.840.10008.1.1", ["1.2.840.10008.1.2"]),
                                                      (3, "1.2.840.10008.5.1.4.1.2.2.1",
                                                       ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])]),
        "dcmtk-user-password": lambda: golden("dcmtk-storescu-user-password.hex"),
        "dcmtk-jwt": lambda: golden("dcmtk-storescu-jwt.hex"),
    }[source]()
    rq = decode_associate(data)
    assert rq.encode() == data
    check_associate_rq(rq)
    theirs = pn_pdu.A_ASSOCIATE_RQ()
    theirs.decode(data)
    assert rq.called_ae == theirs.called_ae_title.strip()
    assert rq.calling_ae == theirs.calling_ae_title.strip()
    assert [pc.id for pc in rq.presentation_contexts] == [pc.context_id for pc in theirs.presentation_context]
    assert rq.user_information is not None
    assert rq.user_information.maximum_length == theirs.user_information.maximum_length


def test_unknown_items_and_sub_items_survive_untouched() -> None:
    data = bytearray(pynetdicom_rq())
    # Append an unknown top-level item 0x77 and grow the PDU length accordingly.
    extra = bytes.fromhex("77 05 0003 616263".replace(" ", ""))
    data += extra
    data[2:6] = (len(data) - 6).to_bytes(4, "big")
    rq = decode_associate(bytes(data))
    assert rq.items[-1].type == 0x77 and rq.items[-1].reserved == 5
    assert rq.encode() == bytes(data)


def test_associate_ac_round_trip_from_pynetdicom() -> None:
    data = pynetdicom_ac(max_length=32768)
    ours = decode_associate(data)
    assert ours.pdu_type == PduType.ASSOCIATE_AC
    assert ours.encode() == data
    assert ours.presentation_contexts[0].result == 0
    assert ours.user_information is not None and ours.user_information.maximum_length == 32768


def _framer_feed() -> object:
    return PduFramer().feed


@pytest.mark.parametrize(
    "data", [RJ_CALLED_AE, ABORT_PROVIDER_INVALID, P_DATA_ECHO, RELEASE_RQ_BYTES, golden("dcmtk-storescu-jwt.hex")]
)
def test_framer_whole_bytewise_and_with_trailing_bytes(data: bytes) -> None:
    for how, frames in feed_three_ways(_framer_feed, data):
        assert len(frames) == 1, how
        assert bytes(frames[0].data) == data, how


def test_framer_reports_what_is_left_of_a_truncated_pdu() -> None:
    framer = PduFramer()
    assert framer.feed(P_DATA_ECHO[:-3]) == []
    assert framer.buffered == len(P_DATA_ECHO) - 3


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (bytes.fromhex("09 00 00000004 00000000"), AbortReason.UNRECOGNIZED_PDU),  # unknown type
        (bytes.fromhex("00 00 00000004 00000000"), AbortReason.UNRECOGNIZED_PDU),  # type 0
        (bytes.fromhex("04 00 ffffffff"), AbortReason.INVALID_PDU_PARAMETER_VALUE),  # 4 GiB P-DATA
        (bytes.fromhex("01 00 7fffffff"), AbortReason.INVALID_PDU_PARAMETER_VALUE),  # 2 GiB RQ
        (bytes.fromhex("05 00 00000008"), AbortReason.INVALID_PDU_PARAMETER_VALUE),  # release of length 8
    ],
)
def test_framer_refuses_bad_headers_before_buffering(data: bytes, reason: AbortReason) -> None:
    framer = PduFramer(max_pdu_length=1 << 20)
    with pytest.raises(ProtocolError) as raised:
        framer.feed(data)
    assert raised.value.reason == reason
    with pytest.raises(ProtocolError):
        framer.feed(b"\x04")  # and stays broken


def test_items_overrunning_their_parent_are_protocol_errors() -> None:
    data = bytearray(pynetdicom_rq())
    # The first item (application context, at offset 74) claims 200 more bytes than it has.
    assert data[74] == ItemType.APPLICATION_CONTEXT
    data[76:78] = (int.from_bytes(data[76:78], "big") + 2000).to_bytes(2, "big")
    with pytest.raises(ProtocolError, match="overruns"):
        decode_associate(bytes(data))


@pytest.mark.parametrize(
    ("field", "title", "reason"),
    [
        ("called", b"PACS\x01    ", RejectReason.CALLED_AE_NOT_RECOGNIZED),
        ("called", b"   ", RejectReason.CALLED_AE_NOT_RECOGNIZED),
        ("calling", b"AB\\CD", RejectReason.CALLING_AE_NOT_RECOGNIZED),
        ("calling", b"VIEWER\x1b[2J", RejectReason.CALLING_AE_NOT_RECOGNIZED),
    ],
)
def test_bad_ae_titles_are_rejected_with_the_standard_reason(field: str, title: bytes, reason: int) -> None:
    data = bytearray(pynetdicom_rq())
    offset = 10 if field == "called" else 26
    data[offset : offset + 16] = title.ljust(16, b" ")
    with pytest.raises(AssociationRejected) as raised:
        check_associate_rq(decode_associate(bytes(data)))
    assert (raised.value.result, raised.value.source, raised.value.reason) == (1, 1, reason)


def test_even_presentation_context_id_is_invalid() -> None:
    data = bytearray(pynetdicom_rq())
    at = data.index(bytes([ItemType.PRESENTATION_CONTEXT_RQ, 0]), 74)
    data[at + 4] = 2  # the context id byte
    rq = decode_associate(bytes(data))
    with pytest.raises(ProtocolError, match="even"):
        check_associate_rq(rq)


def test_pdv_overrun_is_a_protocol_error() -> None:
    bad = bytearray(P_DATA_ECHO)
    bad[9] = 0x20  # PDV length 32 in a 12-byte PDU
    with pytest.raises(ProtocolError, match="overruns"):
        iter_pdvs(bytes(bad))
    assert iter_pdvs(P_DATA_ECHO) == [Pdv(1, 3, memoryview(bytes.fromhex("deadbeef0001")))]


def test_a_presentation_context_id_proposed_twice_is_invalid() -> None:
    """PS3.8 7.1.1.13: a Presentation Context ID identifies one context of the association. Proposed
    twice, it names two: the relay's bookkeeping (``accepted_contexts``) kept the last one's abstract
    syntax while DCMTK (Orthanc) accepts the ID once, with the first one's abstract syntax
    (``ASC_acceptPresentationContext`` looks the ID up in the proposed list), so a request on it was
    checked against one SOP class by the agent and meant another to the PACS."""
    data = bytearray(pynetdicom_rq(contexts=((1, "1.2.840.10008.1.1", ["1.2.840.10008.1.2"]),
                                             (3, "1.2.840.10008.5.1.4.1.2.2.1", ["1.2.840.10008.1.2"]))))
    first = data.index(bytes([ItemType.PRESENTATION_CONTEXT_RQ, 0]), 74)
    second = data.index(bytes([ItemType.PRESENTATION_CONTEXT_RQ, 0]), first + 4)
    assert data[second + 4] == 3
    data[second + 4] = 1  # the second context's id byte: 1 again
    with pytest.raises(ProtocolError, match="more than once") as raised:
        check_associate_rq(decode_associate(bytes(data)))
    assert raised.value.reason == AbortReason.INVALID_PDU_PARAMETER_VALUE


@pytest.mark.parametrize("title", ["VIEWÉR1", "PACS\u00a0", "A\udc80", "\u0663"])
def test_a_non_ascii_ae_title_is_an_encode_error(title: str) -> None:
    # Found by fuzz/pdu_fuzz.py: the check read the title with "replace" (a valid "?"), then encoding
    # it raised UnicodeEncodeError, where callers expect EncodeError (PS3.5 6.2, VR AE).
    from dicomwire.errors import EncodeError

    with pytest.raises(EncodeError, match="non-ASCII"):
        decode_associate(pynetdicom_rq()).with_ae_titles(called=title)


@pytest.mark.parametrize("kind", [ItemType.USER_INFORMATION, ItemType.APPLICATION_CONTEXT])
def test_a_second_user_information_or_application_context_item_is_refused(kind: int) -> None:
    """PS3.8 9.3.2: one Application Context Item and one User Information Item. A second User Information
    item carrying its own User Identity would pass to the PACS unread and unstripped (the agent reads and
    rewrites the first): whichever one the PACS reads, the agent must not have read another."""
    rq = decode_associate(pynetdicom_rq(identity=(1, b"alice", b"", False)))
    extra = next(item for item in rq.items if item.type == kind)
    doubled = decode_associate(replace(rq, items=(*rq.items, extra)).encode())
    with pytest.raises(ProtocolError, match="more than one") as raised:
        check_associate_rq(doubled)
    assert raised.value.reason == AbortReason.UNEXPECTED_PDU_PARAMETER
    with pytest.raises(ProtocolError, match="more than one"):
        read_accept(replace(doubled, pdu_type=PduType.ASSOCIATE_AC).encode())
