"""Seed programs for fuzz/relay_fuzz.py: whole associations, written in the order the harness reads bytes.

Each :class:`Program` method appends what one operation reads (fuzz/relay_fuzz.py ``Run`` and
fuzz/relay_peers.py): the opcode, what the peer sends, whether and how it is read, and for each
question the sending causes, whether the policy answers at once and how. The seeds take the fuzzer
through an association, DIMSE traffic under every kind of verdict, releases and timers; raw
pynetdicom-encoded messages are among what the peers send.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

# Opcodes: the index of each operation in Run.ops.
SEND_CLIENT, SEND_SERVER, READ_CLIENT, READ_SERVER, HALF_CLOSE, RESET, TIMER, ANSWER, CONNECT, SHUTDOWN = range(10)
# Indices into fuzz/relay_peers.py KINDS.
ECHO_RQ, FIND_RQ, MOVE_RQ, GET_RQ, STORE_RQ, CANCEL_RQ, N_ACTION_RQ, ECHO_RSP, FIND_RSP, MOVE_RSP, GET_RSP, \
    STORE_RSP = range(12)
PERMIT, PERMIT_REVIEW, REFUSE, REWRITE = 0x00, 0x81, 0x02, 0x03  # request verdicts (choice % 8, review bit)
SELECTIVE = 0x41  # a permit whose review wants only final failures
HEAD = 0x43  # a request's head verdict (fuzz/relay_fuzz.py head_verdict), then its two bytes
CUT_AT_PIXELS = 0x6C  # replace the head up to the Pixel Data with part of the identifier; cut after it
RELEASE_RQ, RELEASE_RP = 0xA0, 0xA1  # fuzz/relay_peers.py FIXED


class Program:
    def __init__(self, limits: int = 0, asks: int = 0, flags: int = 0) -> None:
        self.data = bytearray((limits, asks, flags))

    def add(self, *values: int) -> Program:
        self.data += bytes(values)
        return self

    def answers(self, verdicts: Iterable[tuple[int, ...]]) -> Program:
        """For each question asked: answered at once with these bytes, or () for later."""
        for verdict in verdicts:
            self.add(0x00, *verdict) if verdict else self.add(0xFF)
        return self

    def associate(self, rq: int = 0, ac: int = 0, review_ac: bool = False) -> Program:
        self.add(SEND_CLIENT, 0x80 + rq, 0x00, 0x00, 0x00).answers([(0x80 if review_ac else 0x00, 0x00)])
        self.add(CONNECT, 0x01)
        self.add(SEND_SERVER, 0x80 + ac, 0x00, 0x00, 0x00)
        return self.answers([(0x00,)]) if review_ac else self

    def message(self, side: int, kind: int, pick: int = 1, status: int = 0, size: int = 0, how: int = 0,
                chunks: int = 0, asks: Iterable[tuple[int, ...]] = ()) -> Program:
        """A DIMSE message; ``status`` indexes fuzz/relay_peers.py STATUSES (0 pending, 1 success)."""
        self.add(side, 0x00, kind, pick)
        if kind >= ECHO_RSP:
            self.add(status)
        return self.add(size, 0x00, how, 0x00, 0x00, chunks).answers(asks)

    def fixed(self, side: int, pdu: int, asks: Iterable[tuple[int, ...]] = ()) -> Program:
        return self.add(side, pdu, 0x00, 0x00, 0x00).answers(asks)

    def raw(self, side: int, data: bytes) -> Program:
        assert len(data) < 0x100
        return self.add(side, 0xC0, len(data), *data, 0x00, 0x00)

    def release(self) -> Program:
        return self.fixed(SEND_CLIENT, RELEASE_RQ).fixed(SEND_SERVER, RELEASE_RP).add(HALF_CLOSE, 0x00)


def scenarios() -> list[Program]:
    transparent = Program(asks=1).associate()
    transparent.message(SEND_CLIENT, ECHO_RQ).message(SEND_SERVER, ECHO_RSP, status=1)
    transparent.message(SEND_CLIENT, STORE_RQ, size=0x40, how=1, chunks=0x85)
    transparent.message(SEND_SERVER, STORE_RSP, status=1).release()

    reviewed = Program(asks=0).associate(review_ac=True)
    reviewed.message(SEND_CLIENT, FIND_RQ, pick=1, asks=[(PERMIT_REVIEW,)])
    reviewed.message(SEND_SERVER, FIND_RSP, size=1, asks=[(0x00,)])  # pending match: permit
    reviewed.message(SEND_SERVER, FIND_RSP, size=1, asks=[(0x01,)])  # pending match: drop
    reviewed.message(SEND_SERVER, FIND_RSP, status=1, asks=[(0x00,)])
    reviewed.message(SEND_CLIENT, MOVE_RQ, pick=2, asks=[(REFUSE,)])
    reviewed.message(SEND_CLIENT, STORE_RQ, pick=3, size=0x80, how=1, asks=[(REWRITE,)]).release()

    retrieve = Program(limits=1, asks=3).associate(rq=1, ac=0)
    retrieve.message(SEND_CLIENT, GET_RQ, pick=1, asks=[(PERMIT_REVIEW,)])
    retrieve.message(SEND_SERVER, STORE_RQ, pick=5, size=0x20, how=2, asks=[(PERMIT,)])
    retrieve.message(SEND_CLIENT, STORE_RSP, status=1)
    retrieve.message(SEND_SERVER, GET_RSP, status=0, asks=[(0x00,)])
    retrieve.message(SEND_SERVER, GET_RSP, status=1, asks=[(0x02,)]).release()

    late = Program(limits=0, asks=0).associate(rq=2, ac=2)
    late.message(SEND_CLIENT, FIND_RQ, pick=1, asks=[()]).message(SEND_CLIENT, ECHO_RQ, pick=1)
    late.add(TIMER, 0x00, TIMER, 0x01, ANSWER, 0xF0, 0x00).add(READ_CLIENT, 0x00)
    late.message(SEND_CLIENT, CANCEL_RQ, pick=1).add(SHUTDOWN)

    # A refusal to the client while the server is in the middle of a C-STORE to it: it waits for the end.
    mid = Program(limits=1, asks=0).associate()
    mid.add(SEND_SERVER, 0x00, STORE_RQ, 5, 0x80, 0x00, 0x01, 0x00, 0xFF, 0x00)  # sent, not read yet
    mid.add(READ_SERVER, 0x01, 0x90).answers([(PERMIT,)])
    mid.message(SEND_CLIENT, ECHO_RQ, pick=2, asks=[(REFUSE,)]).add(READ_SERVER, 0xFF, 0xFF)
    mid.message(SEND_CLIENT, STORE_RSP, pick=0, status=1).release()

    # Two requests in one P-DATA-TF: the first one's question stops the core inside the PDU.
    shared = Program(asks=0).associate()
    shared.add(SEND_CLIENT, 0x70, ECHO_RQ, 1, 0x00, 0x00, 0x00, FIND_RQ, 2, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00)
    shared.answers([(PERMIT,), (REFUSE,)]).release()

    # A reviewed C-FIND match too long to be held whole, answered with a rewritten data set.
    long_match = Program(limits=1, asks=0).associate()
    long_match.message(SEND_CLIENT, FIND_RQ, asks=[(PERMIT_REVIEW,)])
    long_match.message(SEND_SERVER, FIND_RSP, status=0, size=0x1F, how=1, asks=[(0x03,)])
    long_match.message(SEND_SERVER, FIND_RSP, status=1, asks=[(0x00,)])

    # An A-ASSOCIATE-RQ whose called AE title holds a control character: rejected, not asked about.
    bad_title = Program().add(SEND_CLIENT, 0x80, 0xE0, 0x00, 0x0A, 0x01, 0x00, 0x00)

    more = Program(limits=0, asks=2, flags=1).associate(rq=3, ac=3)
    more.message(SEND_CLIENT, MOVE_RQ, pick=1, how=1, asks=[(PERMIT,)]).fixed(SEND_SERVER, 0xA3)
    # The research view: a C-GET whose images come back with their head replaced and cut after their
    # Pixel Data (fuzz/relay_peers.py image: native and encapsulated, held whole and streamed).
    research = []
    for limits, size in ((0, 0xA5), (1, 0xE5), (1, 0xA1), (3, 0xE2)):
        program = Program(limits=limits, asks=3).associate()
        program.message(SEND_CLIENT, GET_RQ, pick=1, asks=[(PERMIT_REVIEW,)])
        program.message(SEND_SERVER, STORE_RQ, pick=5, size=size, how=1, asks=[(HEAD, CUT_AT_PIXELS, 0x00)])
        program.message(SEND_CLIENT, STORE_RSP, status=1)
        research.append(program.message(SEND_SERVER, GET_RSP, status=1, asks=[(0x00,)]).release())
    # A selective review (fuzz/relay_fuzz.py FinalFailures): the match and a success pass unasked, a final
    # failure is asked about.
    selective = []
    for final in (1, 3):
        program = Program(asks=0).associate()
        program.message(SEND_CLIENT, FIND_RQ, pick=1, asks=[(SELECTIVE,)])
        program.message(SEND_SERVER, FIND_RSP, size=1)
        selective.append(program.message(SEND_SERVER, FIND_RSP, status=final, asks=[(PERMIT,)] if final == 3 else []))
    return [transparent, reviewed, retrieve, late, mid, shared, long_match, bad_title, more, *research, *selective]


def seeds(messages: Callable[[int], list[list[bytes]]]) -> list[bytes]:
    """The scenarios, and associations whose DIMSE traffic is pynetdicom's own encoding (requests from
    the client, responses from the server; each request permitted when requests are asked about)."""
    from dicomwire.dimse import peek_command_field
    from dicomwire.pdv import iter_pdvs

    programs = [bytes(p.data) for p in scenarios()]
    for asks in (0, 1):
        program = Program(asks=asks).associate()
        for pdus in messages(128):  # PDUs small enough for one raw send each
            field = peek_command_field(iter_pdvs(pdus[0])[0].value) or 0
            side = SEND_SERVER if field & 0x8000 else SEND_CLIENT
            for pdu in pdus:
                program.raw(side, pdu)
            if asks == 0 and side == SEND_CLIENT and field != 0x0FFF:
                program.answers([(PERMIT,)])
        programs.append(bytes(program.data))
    return programs
