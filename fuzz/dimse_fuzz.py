"""Coverage-guided fuzzing of DIMSE command sets and message assembly (atheris; PS3.7 6.3.1, 9.3, Annex
E; PS3.8 Annex E).

    python fuzz/dimse_fuzz.py [corpus_dir] -atheris_runs=10000000 [libFuzzer flags; -max_len is MAX_LEN unless given]

An input is ``mode(1) a(1) b(1) data``; ``mode % 4`` chooses what ``data`` is:

0. a command set, read strictly and leniently (``a``, ``b``: the refusal's status, comment, context and
   the receiver's Maximum Length);
1. PDVs, ``context(1) control(1) length(1) value`` each, fed to a ``MessageAssembler`` one by one and
   as P-DATA-TF PDUs of ``b`` PDVs (``a``: strictness and the command length bound);
2. a command set and a data set fragmented for a Maximum Length ``a`` on context ``b``;
3. typed command values, ``tag(1) length(1) value`` each, encoded.

Invariants, any failure an exception that stops the run with its input:

1. ``decode_command`` returns a command set or raises ProtocolError; what it accepts strictly it accepts
   leniently, the same; a command set's elements are its bytes, in ascending order; every typed view
   (summary, status, UIDs...) returns; ``peek_command_field`` agrees with it.
2. A command set read strictly re-encodes (``encode_command(command_values(...))``) and reads back
   strictly with the same values.
3. A refusal of any request read either way is always built, reads back (strictly, when the request was
   read strictly) as the response to that request's Message ID and Command Field with the status asked
   for, no data set, and an Error Comment VR LO allows; fragmented for any Maximum Length that can carry
   a PDV, it reassembles into that command.
4. The assembler raises only ProtocolError; its events are those of an independent walk over the same
   PDVs (same messages, commands, contexts, data set lengths, and the error at the same PDV); fed as
   P-DATA-TF PDUs it gives the same events; ``idle``/``collecting_command``/``seq`` say where it is.
5. ``fragment_message`` gives P-DATA-TF PDUs within the Maximum Length, one PDV each, which carry the
   command and then the data set, the last of each flagged last; a Maximum Length that can carry no PDV
   is a ProtocolError. Typed values encode or raise EncodeError, and read back.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import atheris

with atheris.instrument_imports(include=["dicomwire"]):
    from dicomwire.assembly import MessageAssembler, MessageCompleted, MessageStarted
    from dicomwire.dimse import (
        COMMAND_VR,
        MAX_COMMAND_LENGTH,
        NO_DATA_SET,
        CommandField,
        CommandSet,
        Tag,
        command_values,
        decode_command,
        encode_command,
        peek_command_field,
        refusal_response,
    )
    from dicomwire.errors import EncodeError, ProtocolError
    from dicomwire.items import MIN_MAX_LENGTH
    from dicomwire.pdu import DEFAULT_MAX_PDU_LENGTH, Frame, PduType, decode_pdu
    from dicomwire.pdv import PDataTF, Pdv, encode_p_data, fragment_message, pack

STATUSES = (0x0124, 0x0210, 0x0122, 0xA700, 0xC000, 0xFE00, 0x0000, 0xFF00)
COMMENTS = ("Not authorized", "", "Not authorized: patient\\consent é\x00\n" * 3, "x" * 200,
            "Authorization decision timed out")
MAX_LENGTHS = (0, 7, 8, 9, 16, 64, 100, 16384)
COMMAND_BOUNDS = (MAX_COMMAND_LENGTH, 16, 100)
_TAGS = tuple(COMMAND_VR)


def check_command(data: bytes, a: int, b: int) -> None:
    try:
        strict: CommandSet | None = decode_command(data, strict=True)
    except ProtocolError:
        strict = None
    try:
        lenient = decode_command(data, strict=False)
    except ProtocolError:
        assert strict is None, "a command set read strictly is refused leniently"
        return
    assert strict is None or (strict.elements == lenient.elements and strict.raw == lenient.raw)
    check_structure(lenient, data)
    if strict is not None:
        assert peek_command_field(data) == strict.command_field
        check_round_trip(strict)
    if lenient.is_request and lenient.command_field != CommandField.C_CANCEL_RQ:
        check_refusal(strict or lenient, strict is not None, a, b)


def check_structure(command: CommandSet, data: bytes) -> None:
    assert command.raw == data
    tags = list(command.elements)
    assert tags == sorted(set(tags)), "command elements not in strictly ascending order"
    assert sum(8 + len(value) for value in command.elements.values()) == len(data)
    assert command.command_field == int.from_bytes(command.elements[Tag.COMMAND_FIELD], "little")
    peeked = peek_command_field(data)
    assert peeked is None or peeked == command.command_field, (peeked, command.command_field)
    assert isinstance(command.summary(), str)
    command.message_id, command.message_id_responded_to, command.status, command.has_data_set  # noqa: B018
    command.affected_sop_instance_uid, command.move_destination, command.error_comment  # noqa: B018
    command.priority, command.is_request, command.is_response  # noqa: B018
    for tag in tags:
        command.get(tag)


def check_round_trip(command: CommandSet) -> None:
    values = command_values(command)
    again = decode_command(encode_command(values), strict=True)
    assert command_values(again) == values, (values, command_values(again))


def check_refusal(request: CommandSet, strict: bool, a: int, b: int) -> None:
    status = STATUSES[a % len(STATUSES)] if a < 0x80 else a << 8 | b
    comment = COMMENTS[b % len(COMMENTS)]
    response = refusal_response(request, status=status, comment=comment)
    refusal = decode_command(response, strict=strict)
    assert refusal.command_field == request.command_field | 0x8000
    assert refusal.message_id_responded_to == (request.message_id or 0)
    assert refusal.status == status and not refusal.has_data_set
    assert refusal.get(Tag.COMMAND_DATA_SET_TYPE) == NO_DATA_SET
    text = refusal.error_comment or ""
    assert len(text) <= 64 and all(" " <= c <= "~" and c != "\\" for c in text), text
    max_length = MAX_LENGTHS[b % len(MAX_LENGTHS)]
    context_id = a | 1
    reassembled = reassemble(fragment_message(context_id, response, None, max_length), strict, max_length)
    assert [(type(e), e.context_id, e.command.raw) for e in reassembled] == \
           [(MessageStarted, context_id, response), (MessageCompleted, context_id, response)]


def reassemble(pdus: list[bytes], strict: bool, max_length: int) -> list[MessageStarted | MessageCompleted]:
    assembler = MessageAssembler(strict=strict)
    events: list[MessageStarted | MessageCompleted] = []
    for pdu in pdus:
        decoded = decode_pdu(pdu)
        assert isinstance(decoded, PDataTF) and len(pdu) - 6 <= (max_length or DEFAULT_MAX_PDU_LENGTH), len(pdu)
        events += assembler.feed_p_data([Frame(PduType.P_DATA_TF, pdu)])
    assert assembler.idle
    return events


# -- message assembly ---------------------------------------------------------------------------------

def parse_pdvs(data: bytes) -> list[Pdv]:
    pdvs, pos = [], 0
    while len(data) - pos >= 3:
        length = data[pos + 2]
        pdvs.append(Pdv(data[pos], data[pos + 1], data[pos + 3 : pos + 3 + length]))
        pos += 3 + length
    return pdvs


Expected = tuple[str, int, int, bytes, int]


@dataclass(frozen=True, slots=True)
class Step:
    """What one PDV does, by the independent walk: its events, and where the assembler is after it."""

    events: list[Expected]
    idle: bool
    collecting_command: bool
    seq: int


def reference(pdvs: list[Pdv], strict: bool, bound: int) -> tuple[list[Step], int | None]:
    """Each PDV's step, by an independent walk (PS3.8 E.2: a command's fragments, then its data set's,
    all on one context), up to the index of the first PDV that is a protocol error (None if none is)."""
    steps: list[Step] = []
    seq, context, command, started, length = 0, -1, b"", None, 0
    for index, pdv in enumerate(pdvs):
        events: list[Expected] = []
        is_command, last = bool(pdv.control & 1), bool(pdv.control & 2)
        if context < 0:
            if not is_command:
                return steps, index
            context, seq, command = pdv.context_id, seq + 1, b""
        elif pdv.context_id != context or is_command != (started is None):
            return steps, index
        if started is None:
            if len(command) + len(pdv.value) > bound:
                return steps, index
            command += pdv.value
            if last:
                try:
                    started = decode_command(command, strict=strict)
                except ProtocolError:
                    return steps, index
                events.append(("started", seq, context, command, 0))
                length = 0
                if not started.has_data_set:
                    events.append(("completed", seq, context, command, 0))
                    context, started = -1, None
        else:
            length += len(pdv.value)
            if last:
                events.append(("completed", seq, context, command, length))
                context, started = -1, None
        idle = context < 0
        steps.append(Step(events, idle, not idle and started is None, seq + 1 if idle else seq))
    return steps, None


def as_tuple(event: MessageStarted | MessageCompleted) -> Expected:
    if isinstance(event, MessageStarted):
        return ("started", event.seq, event.context_id, event.command.raw, 0)
    return ("completed", event.seq, event.context_id, event.command.raw, event.data_set_length)


def check_assembly(data: bytes, a: int, b: int) -> None:
    pdvs = parse_pdvs(data)
    strict, bound = bool(a & 1), COMMAND_BOUNDS[(a >> 1) % len(COMMAND_BOUNDS)]
    steps, error_at = reference(pdvs, strict, bound)
    assembler = MessageAssembler(strict=strict, max_command_length=bound)
    for index, pdv in enumerate(pdvs):
        try:
            events = assembler.feed(pdv.context_id, pdv.control, pdv.value)
        except ProtocolError:
            assert index == error_at, f"ProtocolError at PDV {index}, expected at {error_at}"
            break
        assert index != error_at, f"PDV {index} should have been refused"
        step = steps[index]
        assert [as_tuple(e) for e in events] == step.events, (index, events, step)
        assert (assembler.idle, assembler.collecting_command, assembler.seq) == \
               (step.idle, step.collecting_command, step.seq), (index, step)
    else:
        assert error_at is None
    check_frames(pdvs, max(b, 1), [step.events for step in steps], error_at, strict, bound)


def check_frames(pdvs: list[Pdv], per_frame: int, expected: list[list[Expected]], error_at: int | None,
                 strict: bool, bound: int) -> None:
    """Fed as P-DATA-TF PDUs: the same events, up to the PDU holding the first error."""
    assembler = MessageAssembler(strict=strict, max_command_length=bound)
    for start in range(0, len(pdvs), per_frame):
        group = pdvs[start : start + per_frame]
        frame = Frame(PduType.P_DATA_TF, encode_p_data(group))
        try:
            events = assembler.feed_p_data([frame])
        except ProtocolError:
            assert error_at is not None and start <= error_at < start + per_frame, (start, error_at)
            return
        assert error_at is None or error_at >= start + per_frame, (start, error_at)
        assert [as_tuple(e) for e in events] == [e for pdv_events in expected[start : start + per_frame]
                                                 for e in pdv_events]


# -- encoders -----------------------------------------------------------------------------------------

def check_fragments(data: bytes, a: int, b: int) -> None:
    max_length = a if a < 0xF0 else MAX_LENGTHS[a % len(MAX_LENGTHS)]
    cut = data[0] if data else 0
    command, data_set = data[1 : 1 + cut], (data[1 + cut :] if b & 0x80 else None)
    try:
        pdus = fragment_message(b, command, data_set, max_length)
    except ProtocolError:
        assert 0 < max_length < MIN_MAX_LENGTH
        return
    assert not 0 < max_length < MIN_MAX_LENGTH
    pdvs = []
    for pdu in pdus:
        decoded = decode_pdu(pdu)
        assert isinstance(decoded, PDataTF) and len(decoded.pdvs) == 1 and len(pdu) - 6 <= (max_length or 1 << 22)
        pdvs.append(decoded.pdvs[0])
    commands = [p for p in pdvs if p.is_command]
    data_sets = [p for p in pdvs if not p.is_command]
    assert pdvs == commands + data_sets and all(p.context_id == b for p in pdvs)
    assert b"".join(bytes(p.value) for p in commands) == command
    assert [p.is_last for p in commands] == [False] * (len(commands) - 1) + [True]
    if data_set is None:
        assert not data_sets
    else:
        assert b"".join(bytes(p.value) for p in data_sets) == data_set
        assert [p.is_last for p in data_sets] == [False] * (len(data_sets) - 1) + [True]
    packed = pack(pdvs, max_length)
    assert all(len(pdu) - 6 <= (max_length or 1 << 22) for pdu in packed)
    assert [p for pdu in packed for p in decode_pdu(pdu).pdvs] == pdvs  # type: ignore[union-attr]


def check_typed(data: bytes) -> None:
    values: dict[int, object] = {Tag.COMMAND_FIELD: CommandField.C_ECHO_RQ}
    pos = 0
    while len(data) - pos >= 2:
        tag, length = _TAGS[data[pos] % len(_TAGS)], data[pos + 1]
        raw = data[pos + 2 : pos + 2 + length]
        pos += 2 + length
        vr = COMMAND_VR[tag]
        values[tag] = (int.from_bytes(raw[:3], "little") if vr in ("US", "UL") else
                       tuple(int.from_bytes(raw[i : i + 4], "little") for i in range(0, len(raw) - 3, 4))
                       if vr == "AT" else raw.decode("latin-1"))
    try:
        encoded = encode_command(values)  # type: ignore[arg-type]
    except EncodeError:
        return
    decoded = decode_command(encoded, strict=False)
    for tag, value in values.items():
        if tag == Tag.COMMAND_GROUP_LENGTH:
            continue
        if isinstance(value, str):
            value = value.rstrip("\x00 ") if COMMAND_VR[tag] == "UI" else value.strip(" \x00")
        assert decoded.get(tag) == value, (tag, value, decoded.get(tag))


def test_one_input(raw: bytes) -> None:
    if len(raw) < 3:
        return
    mode, a, b, data = raw[0] % 4, raw[1], raw[2], raw[3:]
    if mode == 0:
        check_command(data, a, b)
    elif mode == 1:
        check_assembly(data, a, b)
    elif mode == 2:
        check_fragments(data, a, b)
    else:
        check_typed(data)


MAX_LEN = 4096  # libFuzzer's -max_len unless given: inputs of this size already reach every path


def main() -> None:
    if not any(arg.startswith("-max_len=") for arg in sys.argv):
        sys.argv.append(f"-max_len={MAX_LEN}")
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
