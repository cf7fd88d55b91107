"""A de-identified data set that streams ends with its Pixel Data element (issue 16): what follows it
(Digital Signatures, Data Set Trailing Padding, a private group, a retired (7FE0,0020)) never leaves
the relay, however the PDVs are cut, and the data set still ends with a last fragment (PS3.8 E.2).
:class:`dicomwire.pixelend.PixelEnd` on its own, then through the relay core's gate."""

from __future__ import annotations

import itertools
import struct
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dicomwire.association import Side, State
from dicomwire.commands import NoticeKind
from dicomwire.dataset import EXPLICIT_VR_BE, EXPLICIT_VR_LE, IMPLICIT_VR_LE, encode_element
from dicomwire.dimse import decode_command
from dicomwire.limits import RelayLimits
from dicomwire.pdv import LAST, Pdv, encode_p_data, fragment, iter_pdvs
from dicomwire.pixelend import PixelEnd
from dicomwire.questions import DimseQuestion, Extend, Rewrite
from tests.support.playbook import transparent
from tests.unit.test_relay_core import CT, _pynetdicom_command, _split_pdus, established

SYNTAXES = (IMPLICIT_VR_LE, EXPLICIT_VR_LE, EXPLICIT_VR_BE)


def _order(ts: str) -> str:
    return ">" if ts == EXPLICIT_VR_BE else "<"


def undefined(ts: str, tag: int, vr: str) -> bytes:
    """An element header of undefined length (PS3.5 7.1.2, 7.1.3)."""
    if ts == IMPLICIT_VR_LE:
        return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, 0xFFFFFFFF)
    return struct.pack(_order(ts) + "HH2sHI", tag >> 16, tag & 0xFFFF, vr.encode(), 0, 0xFFFFFFFF)


def item(ts: str, value: bytes, tag: int = 0xFFFEE000, length: int | None = None) -> bytes:
    return struct.pack(_order(ts) + "HHI", tag >> 16, tag & 0xFFFF, len(value) if length is None else length) + value


def header(ts: str) -> bytes:
    return encode_element(ts, 0x00080018, "UI", b"1.2.3.4\x00") + encode_element(ts, 0x00100010, "PN", b"DOE^JANE")


def native(ts: str, size: int = 64) -> bytes:
    return encode_element(ts, 0x7FE00010, "OW", bytes(n & 0xFF for n in range(size)))


def encapsulated(ts: str) -> bytes:
    """Extended Offset Table and its lengths, then Pixel Data of undefined length: a Basic Offset Table
    item, two fragments, the Sequence Delimitation Item (PS3.5 A.4)."""
    return (encode_element(ts, 0x7FE00001, "OV", bytes(8)) + encode_element(ts, 0x7FE00002, "OV", bytes(8))
            + undefined(ts, 0x7FE00010, "OB") + item(ts, b"") + item(ts, b"\xff\xd8" + bytes(28))
            + item(ts, b"\xab" * 10) + item(ts, b"", 0xFFFEE0DD))


def trailing(ts: str) -> bytes:
    """What a PACS may keep after the pixels, identifying values included."""
    return (encode_element(ts, 0x7FE00020, "OW", b"\x01\x02")
            + encode_element(ts, 0x7FE10010, "LO", b"ACME PRIVATE")
            + encode_element(ts, 0x7FE11001, "LO", b"DOE^JANE 19610704 ")
            + undefined(ts, 0xFFFAFFFA, "SQ") + item(ts, encode_element(ts, 0x04000015, "CS", b"SHA1"))
            + item(ts, b"", 0xFFFEE0DD) + encode_element(ts, 0xFFFCFFFC, "OB", bytes(8)))


def feed(cut: PixelEnd, parts: list[bytes]) -> bytes:
    out = b""
    for part in parts:
        out += b"".join(bytes(p) for p in cut.feed(part))
    return out


def splits(data: bytes) -> list[list[bytes]]:
    """Every single split, every split into a 5-byte piece (inside a 12-byte header), and byte by byte."""
    cases = [[data[:i], data[i:]] for i in range(len(data) + 1)]
    cases += [[data[:i], data[i : i + 5], data[i + 5 :]] for i in range(len(data))]
    return [*cases, [data[i : i + 1] for i in range(len(data))]]


@pytest.mark.parametrize("ts", SYNTAXES)
@pytest.mark.parametrize("pixels", [native, encapsulated])
def test_what_follows_the_pixel_data_never_passes(ts: str, pixels: object) -> None:
    kept = pixels(ts)  # type: ignore[operator]
    for tail in (trailing(ts), b""):
        for parts in splits(kept + tail):
            cut = PixelEnd(ts)
            assert feed(cut, parts) == kept
            assert cut.done and cut.broken is None


@pytest.mark.parametrize("ts", SYNTAXES)
def test_an_element_out_of_order_or_outside_group_7fe0_ends_the_data_set(ts: str) -> None:
    offsets = encode_element(ts, 0x7FE00001, "OV", bytes(8))
    for after in (encode_element(ts, 0x00100010, "PN", b"DOE^JANE"),  # out of order: below what passed
                  encode_element(ts, 0x7FE00001, "OV", bytes(8)),  # the same tag again
                  encode_element(ts, 0x7FE10010, "LO", b"ACME")):
        cut = PixelEnd(ts)
        assert feed(cut, [offsets, after, native(ts)]) == offsets and cut.done


@pytest.mark.parametrize("ts", SYNTAXES)
def test_only_the_pixel_elements_of_ps3_6_pass_before_the_pixel_data(ts: str) -> None:
    """Group 7FE0 before Pixel Data is not the header the de-identifier read: a sequence there (7FE0,0005)
    holding a name and an ID, text under a pixel element's tag, an unknown VR (whose length the receiver
    reads as 4 bytes where we read 2, PS3.5 7.1.2), a pixel element of undefined length: the data set ends
    there, told as broken, and none of it leaves (second attacker review of issue 16, H1 and M1)."""
    person = encode_element(ts, 0x00100010, "PN", b"DOE^JANE") + encode_element(ts, 0x00100020, "LO", b"PAT-4711")
    smuggled = [undefined(ts, 0x7FE00005, "SQ") + item(ts, person) + item(ts, b"", 0xFFFEE0DD),
                encode_element(ts, 0x7FE00004, "LO", b"PAT-4711"),
                undefined(ts, 0x7FE00001, "OV") + item(ts, person) + item(ts, b"", 0xFFFEE0DD)]
    if ts != IMPLICIT_VR_LE:  # explicit VR: the VR must be the one PS3.6 gives the tag
        smuggled += [encode_element(ts, 0x7FE00002, "LO", b"PAT-4711"),
                     struct.pack(_order(ts) + "HH2sH", 0x7FE0, 0x0002, b"ZZ", 0) + struct.pack(_order(ts) + "I", 24)
                     + encode_element(ts, 0x7FE11000, "LO", b"DOE^JANE PAT-4711 ")]
    for bad in smuggled:
        for parts in splits(bad + native(ts))[:: 5]:
            cut = PixelEnd(ts)
            sent = feed(cut, parts)
            assert sent == b"" and b"PAT-4711" not in sent and cut.done
            assert cut.broken is not None and "not a pixel element" in cut.broken
    offsets = encode_element(ts, 0x7FE00001, "OV", bytes(8)) + encode_element(ts, 0x7FE00003, "UV", bytes(8))
    cut = PixelEnd(ts)
    assert feed(cut, [offsets + native(ts)]) == offsets + native(ts) and cut.broken is None  # the real ones pass


@pytest.mark.parametrize("ts", SYNTAXES)
def test_items_that_cannot_be_read_end_the_data_set_where_they_start(ts: str) -> None:
    start = undefined(ts, 0x7FE00010, "OB") + item(ts, bytes(4))
    for bad in (item(ts, b"", length=0xFFFFFFFF),  # an item of undefined length among fragments
                item(ts, b"\x00\x00", 0x00100010),  # no item tag
                item(ts, b"\x00\x00", 0xFFFEE0DD)):  # a delimiter with a length
        for parts in splits(start + bad + trailing(ts))[:: 7]:
            cut = PixelEnd(ts)
            assert feed(cut, parts) == start and cut.done
            assert cut.broken is not None and "PS3.5 A.4" in cut.broken


@settings(max_examples=300, deadline=None)
@given(ts=st.sampled_from(SYNTAXES), pieces=st.lists(st.sampled_from(["native", "encapsulated", "trailing", "item",
                                                                     "delimiter", "noise"]), max_size=6),
       noise=st.binary(max_size=40), cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_however_a_stream_is_split_the_same_bytes_pass_and_nothing_past_them(
        ts: str, pieces: list[str], noise: bytes, cuts: list[int]) -> None:
    """Any stream (well-formed or not) split anywhere: the bytes that pass are those that pass fed
    whole, a prefix of the stream, and the withheld header never exceeds 12 bytes."""
    make = {"native": lambda: native(ts, 6), "encapsulated": lambda: encapsulated(ts),
            "trailing": lambda: trailing(ts), "item": lambda: item(ts, b"\x01\x02"),
            "delimiter": lambda: item(ts, b"", 0xFFFEE0DD), "noise": lambda: noise}
    data = b"".join(make[name]() for name in pieces)
    whole = PixelEnd(ts)
    reference = feed(whole, [data])
    assert data.startswith(reference)
    bounds = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    cut = PixelEnd(ts)
    out = b""
    for start, stop in itertools.pairwise(bounds):
        out += b"".join(bytes(p) for p in cut.feed(data[start:stop]))
        assert len(cut._head) <= 12
    assert out == reference and cut.done == whole.done


def test_an_empty_pixel_data_ends_the_data_set_at_once() -> None:
    cut = PixelEnd(EXPLICIT_VR_LE)
    empty = encode_element(EXPLICIT_VR_LE, 0x7FE00010, "OW", b"")
    assert feed(cut, [empty + trailing(EXPLICIT_VR_LE)]) == empty and cut.done


def test_an_endless_stream_of_items_holds_no_more_than_a_header() -> None:
    """A peer's Pixel Data of undefined length followed by items forever: the state stays a header."""
    cut = PixelEnd(IMPLICIT_VR_LE)
    chunk = item(IMPLICIT_VR_LE, b"") * 2048  # 16 KiB of empty items
    assert feed(cut, [undefined(IMPLICIT_VR_LE, 0x7FE00010, "OB")])
    tracemalloc.start()
    try:
        for _ in range(16):  # 256 KiB, 32,768 items
            passed = cut.feed(chunk[:-3])
            assert sum(len(p) for p in passed) == len(chunk) - 8
            passed = cut.feed(chunk[-3:])
            assert sum(len(p) for p in passed) == 8
        del passed
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not cut.done and current < 4096 and peak < 4 * len(chunk)


def test_a_deflated_data_set_cannot_be_cut() -> None:
    with pytest.raises(ValueError, match="deflate"):
        PixelEnd("1.2.840.10008.1.2.1.99")


# -- through the gate ------------------------------------------------------------------------------------
HEAD = encode_element(IMPLICIT_VR_LE, 0x00080018, "UI", b"9.9.9\x00")  # the replaced header


def store(data_pdvs: list[bytes], message_id: int = 11) -> bytes:
    command = _pynetdicom_command("C_STORE_RQ", MessageID=message_id, AffectedSOPClassUID=CT, Priority=0,
                                  AffectedSOPInstanceUID=f"1.2.3.{message_id}", CommandDataSetType=1)
    pdus = [encode_p_data((pdv,)) for pdv in fragment(3, command, is_command=True, max_length=16384)]
    last = len(data_pdvs) - 1
    return b"".join(pdus) + b"".join(encode_p_data((Pdv(3, LAST if n == last else 0, value),))
                                     for n, value in enumerate(data_pdvs))


def cutter(keep_from: int, asked: list[int] | None = None):  # type: ignore[no-untyped-def]
    """The research view's verdict: the header whole (Extend), replaced, the rest cut after the pixels."""
    def decide(question):  # type: ignore[no-untyped-def]
        if isinstance(question, DimseQuestion) and question.command.is_request:
            if asked is not None:
                asked.append(len(question.data_set))
            if len(question.data_set) < keep_from and not question.data_set_complete:
                return Extend(length=keep_from * 2)
            return Rewrite(data_set=HEAD, keep_from=keep_from, cut_after_pixel_data=True)
        return transparent(question)
    return decide


def forwarded_data(book) -> list[Pdv]:  # type: ignore[no-untyped-def]
    return [p for pdu in _split_pdus(book.take(Side.SERVER)) for p in iter_pdvs(pdu) if not p.is_command]


def check(book, expected: bytes, why: object) -> None:  # type: ignore[no-untyped-def]
    data = forwarded_data(book)
    assert b"".join(bytes(p.value) for p in data) == HEAD + expected, why
    assert [p.is_last for p in data] == [False] * (len(data) - 1) + [True], why
    # The association goes on: the next store is asked about and passes.
    book.decide = transparent
    book.client(store([b"\x00" * 10], message_id=12))
    assert b"".join(bytes(p.value) for p in forwarded_data(book)) == b"\x00" * 10, why
    assert book.core.state is State.ESTABLISHED


@pytest.mark.parametrize("pixels", [native, encapsulated])
def test_the_gate_cuts_the_stream_after_the_pixel_data_however_it_is_fragmented(pixels: object) -> None:
    """Each data set in two fragments split at every offset past the header (inside the delimiter and
    inside each trailing element's header), in three with a 5-byte one, and byte by byte."""
    head = header(IMPLICIT_VR_LE)
    kept = pixels(IMPLICIT_VR_LE)  # type: ignore[operator]
    data = head + kept + trailing(IMPLICIT_VR_LE)
    cases = [parts for parts in splits(data) if all(parts)]
    for parts in cases:
        book = established(cutter(len(head)), RelayLimits(store_head_length=len(head) // 2), asks=None)
        book.take(Side.SERVER)
        book.client(store(parts))
        check(book, kept, [len(p) for p in parts])


def test_a_large_streamed_data_set_keeps_the_pass_through_path_and_ends_with_its_pixels() -> None:
    """200 KB of native pixels in 16 KiB PDUs, then trailing elements: the PDUs inside the pixels are
    forwarded as they were read; the one the pixels end in is cut and flagged last."""
    head = header(IMPLICIT_VR_LE)
    kept = native(IMPLICIT_VR_LE, 200_000)
    data = head + kept + trailing(IMPLICIT_VR_LE)
    pieces = [data[i : i + 16378] for i in range(0, len(data), 16378)]
    asked: list[int] = []
    book = established(cutter(len(head), asked), RelayLimits(store_head_length=4096), asks=None)
    book.take(Side.SERVER)
    stream = store(pieces)
    pdus = _split_pdus(stream)
    for pdu in pdus:  # as a PACS sends: one PDU a read
        book.client(pdu)
    sends = book.sends[Side.SERVER][-len(pdus):]
    assert sum(1 for pdu in pdus[3:-2] if pdu in sends) == len(pdus) - 5  # unchanged, not re-encoded
    assert len(asked) == 1
    check(book, kept, "large")


def test_held_whole_the_data_set_is_cut_the_same_way() -> None:
    head = header(IMPLICIT_VR_LE)
    kept = encapsulated(IMPLICIT_VR_LE)
    book = established(cutter(len(head)), RelayLimits(store_head_length=4096), asks=None)
    book.take(Side.SERVER)
    book.client(store([head + kept + trailing(IMPLICIT_VR_LE)]))
    check(book, kept, "held")


def test_items_that_cannot_be_read_end_the_data_set_and_are_told() -> None:
    head = header(IMPLICIT_VR_LE)
    start = undefined(IMPLICIT_VR_LE, 0x7FE00010, "OB") + item(IMPLICIT_VR_LE, bytes(4))
    bad = item(IMPLICIT_VR_LE, b"PATIENT^NAME", 0x00100010)
    book = established(cutter(len(head)), RelayLimits(store_head_length=16), asks=None)
    book.take(Side.SERVER)
    book.client(store([head + start[:5], start[5:] + bad[:3], bad[3:]]))
    (notice,) = [n for n in book.notices if n.kind is NoticeKind.MALFORMED]  # type: ignore[attr-defined]
    assert "PS3.5 A.4" in notice.detail and notice.command.message_id == 11  # type: ignore[attr-defined]
    check(book, start, "broken")


def test_a_cut_without_a_head_replaced_is_refused() -> None:
    """``cut_after_pixel_data`` says where the streamed rest ends: without ``keep_from`` there is none,
    and the gate refuses the store rather than guess (fail closed)."""
    book = established(lambda q: Rewrite(data_set=HEAD, cut_after_pixel_data=True)
                       if isinstance(q, DimseQuestion) and q.command.is_request else transparent(q),
                       RelayLimits(store_head_length=4096), asks=None)
    book.take(Side.SERVER), book.take(Side.CLIENT)
    book.client(store([header(IMPLICIT_VR_LE) + native(IMPLICIT_VR_LE)]))
    assert book.take(Side.SERVER) == b""
    (pdv,) = [p for p in iter_pdvs(book.take(Side.CLIENT)) if p.is_command]
    assert decode_command(pdv.value).status == 0x0124


def test_nothing_of_the_data_set_passes_once_it_was_cut() -> None:
    """The pixels end exactly with a fragment: that fragment is flagged last, and what follows (the
    trailing elements, then an empty last fragment) is dropped, not a second end of the data set."""
    head = header(IMPLICIT_VR_LE)
    kept = native(IMPLICIT_VR_LE)
    for split in ([head + kept, trailing(IMPLICIT_VR_LE), b""], [head, kept, b""], [head + kept, b""]):
        book = established(cutter(len(head)), RelayLimits(store_head_length=len(head) // 2), asks=None)
        book.take(Side.SERVER)
        book.client(store(split))
        check(book, kept, [len(p) for p in split])
