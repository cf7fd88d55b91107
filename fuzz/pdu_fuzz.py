"""Coverage-guided fuzzing of the PDU codec (atheris): the framer, A-ASSOCIATE-RQ/AC with their items,
the User Identity sub-item, the fixed PDUs and the P-DATA-TF walker (PS3.8 9.3, PS3.7 D.3.3.7).

    python fuzz/pdu_fuzz.py [corpus_dir] -atheris_runs=10000000 [libFuzzer flags; -max_len is MAX_LEN unless given]

An input is ``bounds(1) chunking(1) n(1) extra(n) stream``. ``bounds`` chooses the framer's limits and,
with bit 0x10, makes ``stream`` one PDU whose length field the harness sets itself (so that the decoders
see well-framed bodies, not only framing errors); ``chunking`` chooses how the stream is cut into reads;
``extra`` is what rewrites put in (a User Identity, an AE title). Invariants, any failure an exception
that stops the run with its input:

1. The framer returns whole PDUs or raises ProtocolError, exactly at the first header that breaks its
   bounds, and then refuses all input. What it returns is the stream, byte for byte and in order, as an
   independent header walk cuts it, however the stream is cut into reads; it holds only the one PDU
   that is incomplete, whose header already passed its bound; ``span``/``joined`` describe its output.
2. Every decoder and typed view (decode_pdu, items, presentation contexts, user information, User
   Identity RQ/AC) returns a value or raises a DicomWireError: nothing else.
3. Byte-exact round trips: a decoded A-ASSOCIATE-RQ/AC encodes to its bytes, also with its User
   Information decoded and put back; a P-DATA-TF re-encoded from its PDVs is its bytes; a fixed PDU is
   its bytes with the reserved fields zero.
4. Rewrites keep the rest: a User Identity inserted is extracted unchanged, a stripped one is gone with
   every other item and sub-item kept in order; an identity response added to an AC is read back; an AE
   title is encoded and read back, or refused with EncodeError. A rewrite decodes to what was encoded.
"""

from __future__ import annotations

import contextlib
import struct
import sys

import atheris

with atheris.instrument_imports(include=["dicomwire"]):
    from dicomwire.errors import AssociationRejected, DicomWireError, EncodeError, ProtocolError
    from dicomwire.identity import (
        UserIdentity,
        add_identity_response,
        extract_user_identity,
        identity_response,
        insert_user_identity,
        strip_user_identity,
    )
    from dicomwire.items import ItemType
    from dicomwire.negotiation import check_associate_rq
    from dicomwire.pdu import (
        HEADER,
        HEADER_LENGTH,
        Abort,
        AssociatePdu,
        AssociateRJ,
        PduFramer,
        PduType,
        ReleaseRP,
        ReleaseRQ,
        decode_associate,
        decode_pdu,
    )
    from dicomwire.pdv import PDataTF, iter_pdvs, pdv_spans

# (max_pdu_length, max_associate_length): the defaults, and bounds small enough for the fuzzer to cross.
BOUNDS = ((4 << 20, 256 << 10), (64, 256), (1024, 512), (16384, 100))
CHUNK_LIMITS = (0, 1, 2, 3, 5, 7, 16, 64, 256, 1024, 4096)  # 0: the whole stream in one read
_FIXED = {PduType.ASSOCIATE_RJ, PduType.RELEASE_RQ, PduType.RELEASE_RP, PduType.ABORT}
_VALID_TYPES = {int(t) for t in PduType}
MAX_READS = 96
MAX_DECODED = 8  # PDUs of one input that go through the decoders (the framer sees them all)


def reference_frames(data: bytes, max_pdu: int, max_associate: int) -> tuple[list[bytes], int | None]:
    """An independent header walk (PS3.8 9.3.1): the whole PDUs, and the offset of the header that
    breaks the bounds (None if none does)."""
    frames: list[bytes] = []
    pos = 0
    while len(data) - pos >= HEADER_LENGTH:
        pdu_type, _, length = HEADER.unpack_from(data, pos)
        if pdu_type not in _VALID_TYPES:
            return frames, pos
        if PduType(pdu_type) in _FIXED:
            if length != 4:
                return frames, pos
        elif length > (max_associate if pdu_type in (1, 2) else max_pdu):
            return frames, pos
        end = pos + HEADER_LENGTH + length
        if end > len(data):
            break
        frames.append(data[pos:end])
        pos = end
    return frames, None


def chunk_sizes(selector: int, total: int) -> list[int]:
    """Read sizes for a stream of ``total`` bytes: at most :data:`MAX_READS` reads (the cost of an input)."""
    limit = CHUNK_LIMITS[selector % len(CHUNK_LIMITS)]
    if not limit:
        return [total]
    floor = total // MAX_READS
    sizes, state = [], selector or 1
    while total > 0:
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        size = min(total, floor + 1 + (state >> 8) % limit)
        sizes.append(size)
        total -= size
    return sizes


def check_framer(stream: bytes, bounds: tuple[int, int], selector: int) -> list[bytes]:
    expected, bad_header = reference_frames(stream, *bounds)
    framer = PduFramer(*bounds)
    got: list[bytes] = []
    fed = 0
    for size in chunk_sizes(selector, len(stream)):
        chunk = stream[fed : fed + size]
        fed += size
        try:
            frames = framer.feed(chunk)
        except ProtocolError:
            assert bad_header is not None and bad_header + HEADER_LENGTH <= fed, (bad_header, fed)
            assert got == expected[: len(got)], "frames before the error differ from the stream"
            try:
                framer.feed(b"\x04")
            except ProtocolError:
                return expected
            raise AssertionError("a broken framer accepted more input") from None
        assert bad_header is None or fed < bad_header + HEADER_LENGTH, "a header past its bound was accepted"
        out = [bytes(frame.data) for frame in frames]
        for frame, data in zip(frames, out, strict=True):
            assert frame.type == data[0] and len(data) == HEADER_LENGTH + HEADER.unpack_from(data)[2], frame
        if out:
            start, end = framer.span
            assert b"".join(out[1:] if framer.joined else out) == chunk[start:end], (framer.span, framer.joined)
        got += out
        consumed = sum(len(f) for f in got)
        assert got == expected[: len(got)], "the framer's PDUs are not the stream's"
        assert framer.buffered == fed - consumed, (framer.buffered, fed, consumed)
    assert got == expected, "PDUs complete in the stream were not returned"
    return expected


def check_pdu(data: bytes, extra: bytes) -> None:
    try:
        pdu = decode_pdu(data)
    except DicomWireError:
        return
    if isinstance(pdu, AssociatePdu):
        check_associate(pdu, data, extra)
    elif isinstance(pdu, PDataTF):
        assert pdu.encode() == data[:1] + b"\x00" + data[2:], "P-DATA-TF does not re-encode to its bytes"
        spans = pdv_spans(data)
        assert [(p.context_id, p.control, bytes(p.value)) for p in iter_pdvs(data)] == \
               [(c, m, data[s:e]) for s, e, c, m in spans]
    else:
        assert isinstance(pdu, AssociateRJ | Abort | ReleaseRQ | ReleaseRP), pdu
        zeroed = bytearray(data)
        zeroed[1] = 0
        zeroed[6] = 0
        if not isinstance(pdu, AssociateRJ):
            zeroed[7] = 0
        if isinstance(pdu, ReleaseRQ | ReleaseRP):
            zeroed[8:10] = b"\x00\x00"
        assert pdu.encode() == bytes(zeroed), (pdu, data)


def check_associate(pdu: AssociatePdu, data: bytes, extra: bytes) -> None:
    assert pdu.encode() == data, "A-ASSOCIATE does not re-encode to its bytes"
    assert isinstance(pdu.called_ae, str) and isinstance(pdu.calling_ae, str)
    pdu.application_context  # noqa: B018 - a typed view must not raise
    try:
        for context in pdu.presentation_contexts:
            with contextlib.suppress(ProtocolError):
                context.check()
    except ProtocolError:
        pass
    try:
        info = pdu.user_information
    except ProtocolError:
        info = None
    if info is not None:
        assert pdu.with_user_information(info).encode() == data, "user information does not round-trip"
        info.maximum_length, info.implementation_class_uid, info.implementation_version_name  # noqa: B018
        with contextlib.suppress(ProtocolError):
            info.check()
    with contextlib.suppress(AssociationRejected, ProtocolError):
        check_associate_rq(pdu)
    if info is None:
        return
    if pdu.pdu_type == PduType.ASSOCIATE_RQ:
        check_identity_rq(pdu, extra)
    else:
        check_identity_ac(pdu, extra)
    check_ae_title(pdu, extra)


def reencoded(pdu: AssociatePdu) -> AssociatePdu:
    """A rewrite must decode to what was encoded."""
    again = decode_associate(pdu.encode())
    assert again == pdu, "a rewritten A-ASSOCIATE does not decode to itself"
    return again


def others(pdu: AssociatePdu, dropped: int) -> tuple[object, ...]:
    info = pdu.user_information
    assert info is not None
    return (tuple(i for i in pdu.items if i.type != ItemType.USER_INFORMATION),
            tuple(s for s in info.sub_items if s.type != dropped))


def check_identity_rq(rq: AssociatePdu, extra: bytes) -> None:
    try:
        extract_user_identity(rq)
    except ProtocolError:
        return  # two User Identity sub-items, or a malformed one: refused, nothing to rewrite
    stripped = reencoded(strip_user_identity(rq))
    assert extract_user_identity(stripped) is None
    assert others(stripped, ItemType.USER_IDENTITY_RQ) == others(rq, ItemType.USER_IDENTITY_RQ)
    cut = extra[2] if len(extra) > 2 else 0
    identity = UserIdentity(type=extra[0] if extra else 5, positive_response_requested=len(extra) > 1 and
                            bool(extra[1] & 1), primary=extra[3 : 3 + cut], secondary=extra[3 + cut :])
    try:
        inserted = insert_user_identity(rq, identity)
    except EncodeError:
        return
    inserted = reencoded(inserted)
    assert extract_user_identity(inserted) == identity, "the inserted User Identity is not read back"
    assert others(inserted, ItemType.USER_IDENTITY_RQ) == others(rq, ItemType.USER_IDENTITY_RQ)


def check_identity_ac(ac: AssociatePdu, extra: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        identity_response(ac)
    stripped = reencoded(strip_user_identity(ac))
    assert identity_response(stripped) is None
    assert others(stripped, ItemType.USER_IDENTITY_AC) == others(ac, ItemType.USER_IDENTITY_AC)
    try:
        added = add_identity_response(stripped, extra)
        added.encode()
    except EncodeError:
        return  # the User Information item would pass its 16-bit length
    assert identity_response(reencoded(added)) == extra, "the identity response is not read back"


def check_ae_title(pdu: AssociatePdu, extra: bytes) -> None:
    title = extra[:20].decode("latin-1")
    try:
        renamed = pdu.with_ae_titles(called=title, calling=title)
    except EncodeError:
        return
    renamed = reencoded(renamed)
    assert renamed.called_ae == renamed.calling_ae == title.strip(" "), (title, renamed.called_ae)
    assert renamed.items == pdu.items


def test_one_input(raw: bytes) -> None:
    if len(raw) < 3:
        return
    bounds = BOUNDS[raw[0] % len(BOUNDS)]
    extra = raw[3 : 3 + raw[2]]
    stream = raw[3 + raw[2] :]
    if raw[0] & 0x10 and len(stream) >= HEADER_LENGTH:
        stream = stream[:2] + struct.pack(">I", len(stream) - HEADER_LENGTH) + stream[HEADER_LENGTH:]
    frames = check_framer(stream, bounds, raw[1])
    for frame in frames[:MAX_DECODED]:
        check_pdu(frame, extra)
    if raw[0] & 0x10:
        check_pdu(stream, extra)  # the fixed-up PDU even past the framer's bounds


MAX_LEN = 12000  # libFuzzer's -max_len unless given: the longest seed


def main() -> None:
    if not any(arg.startswith("-max_len=") for arg in sys.argv):
        sys.argv.append(f"-max_len={MAX_LEN}")
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
