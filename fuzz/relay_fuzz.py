"""Coverage-guided fuzzing of RelayCore driven from both sides (atheris; issue 13, "an adversary in the tests").

    python fuzz/relay_fuzz.py [corpus_dir] -atheris_runs=10000000 [libFuzzer flags; -max_len is MAX_LEN unless given]

An input is a program: three header bytes (the limits, which requests are asked about, tracing and a busy
relay), then operations until the bytes run out, each an opcode and its arguments (fuzz/relay_peers.py
reads them): a peer sends something (an A-ASSOCIATE-RQ/AC, a DIMSE message answering what the other side
has outstanding, a fixed PDU, raw bytes; mutated or not), its bytes are read in chunks, a peer half-closes
or resets, a timer fires (any running: ARTIM, CONNECT, IDLE, a question's deadline), the upstream
connection is made or fails, the relay shuts down or runs out of pre-association budget, and the policy
answers a question (permit, permit with review, refuse, drop, rewrite, reject, hold more of a data set,
replace a data set's head and stream the rest, a verdict of the wrong kind, a stale answer, or never).
The harness executes the core's commands as dicomwire.aio does: it reads a side only while the core lets
it, fires only timers that run, connects only after OpenUpstream, and applies verdicts given at once
after the batch that asked.

Invariants, checked after every command and every step (fuzz/relay_watch.py), any failure an exception
that stops the run with its input:

1. No request that was asked about reaches the other side (its command set, in whole or in part) unless
   a permit or rewrite the core took answered it, and then only that command set; a response under review
   likewise.
2. Every PDU sent to either side is well formed (frames, decodes, PDVs walk), whole PDUs only; the
   A-ASSOCIATE-RQ goes first to the server and only there, the AC/RJ first to the client; P-DATA-TF and
   releases only once the association is established; nothing after an A-ABORT or A-ASSOCIATE-RJ to that
   side, only an A-ABORT after its A-RELEASE-RP. The DIMSE stream to each side reassembles (a message the
   core makes never lands inside another); a P-DATA-TF the core makes fits what the receiver announced,
   one it forwards fits the relay's bound.
3. Nothing is sent to a side after Close for it, nor to the server before it is connected; a closed core
   returns no command (but Close for an upstream connection that completes after the end).
4. The core never raises, and never logs ``relay core failed`` (its guard caught its own bug).
5. Whenever the core is closed, a Close was issued for each side whose transport is up.
6. Every response to a side answers one of that side's outstanding requests (Message ID, kind, context);
   one the core synthesises is a final failure status without a data set.
7. A data set whose head was replaced and which is cut after its Pixel Data carries nothing of what
   followed its Pixel Data (the peers put a secret there).
"""

from __future__ import annotations

import sys
from collections import deque
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

with atheris.instrument_imports(include=["dicomwire"]):
    from dicomwire.association import Side, State
    from dicomwire.commands import (
        Ask,
        CancelTimer,
        Close,
        Command,
        Deadline,
        Log,
        OpenUpstream,
        PauseReading,
        ResumeReading,
        Send,
        StartTimer,
        TimerKey,
        Trace,
    )
    from dicomwire.dimse import CommandField, CommandSet, Tag, command_values, encode_command
    from dicomwire.errors import EncodeError
    from dicomwire.identity import UserIdentity, add_identity_response, insert_user_identity, strip_user_identity
    from dicomwire.limits import RelayLimits
    from dicomwire.policy import EVERY_REQUEST, NO_REQUEST, Asks
    from dicomwire.questions import (
        AcceptQuestion,
        AssociationQuestion,
        Drop,
        Extend,
        ForwardAccept,
        ForwardAssociation,
        Permit,
        Question,
        Refuse,
        RejectAssociation,
        RequestQuestion,
        ResponseQuestion,
        Rewrite,
        Selective,
        Verdict,
    )
    from dicomwire.relay import RelayCore
    from dicomwire.trace import format_fact

from fuzz.relay_peers import AVOID_KNOWN_FINDINGS, IDENTIFIER, PIXEL_DATA_TAG, Reader, chunks, pdus
from fuzz.relay_watch import Watch

LIMITS = (
    RelayLimits(max_pdu_length=16384, store_head_length=512, max_identifier_length=4096, max_pending_reviews=2),
    RelayLimits(max_pdu_length=1024, store_head_length=64, max_identifier_length=40, max_pending_reviews=1),
    RelayLimits(),
    RelayLimits(max_pdu_length=256, max_associate_length=600, store_head_length=100, max_identifier_length=48),
)
ASKS: tuple[Asks, ...] = (EVERY_REQUEST, NO_REQUEST, frozenset({CommandField.C_MOVE_RQ}),
                          frozenset({CommandField.C_FIND_RQ, CommandField.C_GET_RQ, CommandField.C_MOVE_RQ,
                                     CommandField.C_STORE_RQ}), frozenset({CommandField.C_STORE_RQ}))
COMMENTS = ("Not authorized", "Not authorized: patient under consent restriction " * 3, "é\\\x00" * 30, "")
_PRE_ASSOCIATION = (State.AWAIT_RQ, State.DECIDING)
MAX_STEPS_CLOSED = 4  # events still given to a closed core: it must ignore them


class FinalFailures(Selective):
    """A review that wants only a final response that is not a success (as the server agent's HEARD
    wants only one with an Error Comment): the rest must pass without a question."""

    __slots__ = ()

    def wants(self, response: CommandSet) -> bool:
        return response.status not in (0xFF00, 0xFF01, 0x0000)


FINAL_FAILURES = FinalFailures()


class Run:
    """One input: a core, its two peers and its policy, driven as dicomwire.aio drives a core."""

    def __init__(self, r: Reader) -> None:
        self.r = r
        limits, asks, flags = LIMITS[r.u8() % len(LIMITS)], ASKS[r.u8() % len(ASKS)], r.u8()
        self.core = RelayCore(limits, asks=asks, tracing=bool(flags & 1), busy=flags & 0x0E == 0x0E)
        self.watch = Watch(asks, limits.max_pdu_length)
        self.timers: dict[TimerKey, None] = {}
        self.paused = {Side.CLIENT: False, Side.SERVER: False}
        self.up = {Side.CLIENT: True, Side.SERVER: False}  # transports up
        self.eof = {Side.CLIENT: False, Side.SERVER: False}
        self.waiting = {Side.CLIENT: b"", Side.SERVER: b""}  # sent by a peer, not read yet
        self.connecting = False
        self.questions: list[Question] = []
        self.pending: list[Question] = []  # asked, not answered, deadline not passed
        self.answers: deque[tuple[Question, Verdict]] = deque()  # given at once: applied after the batch
        self.pre_association = True
        self.ops = (self.send_client, self.send_server, self.read_client, self.read_server, self.half_close,
                    self.reset, self.fire_timer, self.answer, self.connect, self.shutdown, self.overload)

    def play(self) -> None:
        self.step(self.core.start())
        after_close = 0
        while not self.r.done and after_close < MAX_STEPS_CLOSED:
            self.ops[self.r.u8() % len(self.ops)]()
            after_close += self.core.closed

    # -- driving --------------------------------------------------------------------------------------
    def call(self, commands: list[Command], closed_before: bool, late_connect: bool = False) -> None:
        if closed_before:
            assert not commands or (late_connect and commands == [Close(Side.SERVER)]), \
                f"a closed core returned {commands}"
        self.step(commands)

    def step(self, commands: list[Command]) -> None:
        self.execute(commands)
        while self.answers:
            question, verdict = self.answers.popleft()
            self.give(question, verdict)
        if self.pre_association and self.core.state not in _PRE_ASSOCIATION:
            self.pre_association = False
        self.watch.step_done(self.core.closed, self.up)

    def execute(self, commands: list[Command]) -> None:
        for command in commands:
            kind = type(command)
            if kind is Send:
                self.watch.send(command.side, bytes(command.data))  # type: ignore[union-attr]
            elif kind is Close:
                self.watch.close(command.side)  # type: ignore[union-attr]
                if command.side is Side.SERVER and not self.up[Side.SERVER]:  # type: ignore[union-attr]
                    self.connecting = False  # the driver cancels the connection attempt
            elif kind is PauseReading or kind is ResumeReading:
                self.paused[command.side] = kind is PauseReading  # type: ignore[union-attr]
            elif kind is StartTimer:
                self.timers.pop(command.timer, None)  # type: ignore[union-attr]
                self.timers[command.timer] = None  # type: ignore[union-attr]
            elif kind is CancelTimer:
                self.timers.pop(command.timer, None)  # type: ignore[union-attr]
            elif kind is Ask:
                self.ask(command.question)  # type: ignore[union-attr]
            elif kind is OpenUpstream:
                assert not self.connecting and not self.up[Side.SERVER], "OpenUpstream twice"
                self.connecting = True
            elif kind is Log:
                assert not command.message.startswith("relay core failed"), command.message  # type: ignore[union-attr]
            elif kind is Trace:
                format_fact(command.fact)  # type: ignore[union-attr]

    def ask(self, question: Question) -> None:
        self.questions.append(question)
        if self.r.u8() < 0x60:
            self.answers.append((question, self.verdict(question)))
        else:
            self.pending.append(question)

    def give(self, question: Question, verdict: Verdict) -> None:
        if question in self.pending:
            self.pending.remove(question)
        closed = self.core.closed
        commands = self.core.answer(question, verdict)
        if CancelTimer(Deadline(question)) in commands:  # the core took this answer
            self.permitted(question, verdict)
        self.call(commands, closed)

    def permitted(self, question: Question, verdict: Verdict) -> None:
        """Tell the watch what a verdict the core took lets through."""
        if not isinstance(question, RequestQuestion | ResponseQuestion):
            return
        response = isinstance(question, ResponseQuestion)
        passes = isinstance(verdict, Permit) or (isinstance(verdict, Rewrite) and (
            verdict.data_set is None or (question.data_set_complete if verdict.keep_from is None
                                         else 0 <= verdict.keep_from <= len(question.data_set)))
            and (not verdict.cut_after_pixel_data or verdict.keep_from is not None))
        if response and not (passes and (isinstance(verdict, Permit) or verdict.command is None)):  # type: ignore[union-attr]
            self.watch.settled(question.side.other, question.command)  # dropped, or sent as rewritten
        if passes and not response and question.command.command_field == CommandField.C_STORE_RQ:  # perhaps an image
            rewrite = verdict if isinstance(verdict, Rewrite) else None
            sent = (rewrite.command if rewrite else None) or question.command.raw
            self.watch.image(question.side.other, sent, bool(rewrite and rewrite.cut_after_pixel_data))
        if passes:  # (a data set can be replaced only when the question held all of it: else refused)
            self.watch.permit(question.side.other if response else question.side, question.command,
                              verdict.command if isinstance(verdict, Rewrite) else None,
                              verdict.review, response)  # type: ignore[union-attr]

    # -- the operations ---------------------------------------------------------------------------------
    def send_client(self) -> None:
        self.peer_sends(Side.CLIENT)

    def send_server(self) -> None:
        self.peer_sends(Side.SERVER)

    def peer_sends(self, side: Side) -> None:
        if not self.eof[side]:
            self.waiting[side] += pdus(self.r, side, *self.watch.answerable(side))
        if self.r.u8() < 0xC0:
            self.read(side)
        else:
            self.r.u8()

    def read_client(self) -> None:
        self.read_some(Side.CLIENT)

    def read_server(self) -> None:
        self.read_some(Side.SERVER)

    def read_some(self, side: Side) -> None:
        """Part of what the peer sent arrives (the rest later, or never): a message stops half read."""
        size = self.r.u16() or 1
        if self.readable(side) and self.waiting[side]:
            part, self.waiting[side] = self.waiting[side][:size], self.waiting[side][size:]
            self.watch.received(side, part)
            closed = self.core.closed
            self.call(self.core.data_received(side, part), closed)

    def readable(self, side: Side) -> bool:
        return self.up[side] and not self.eof[side] and not self.paused[side] and not self.watch.outbound[side].closed

    def read(self, side: Side) -> None:
        size = self.r.u8()  # read whether or not the side is readable: the program keeps its shape
        if not self.readable(side) or not self.waiting[side]:
            return
        data, self.waiting[side] = self.waiting[side], b""
        parts = chunks(size, data)
        for n, part in enumerate(parts):
            if not self.readable(side):
                self.waiting[side] = b"".join(parts[n:]) + self.waiting[side]
                return
            self.watch.received(side, part)
            closed = self.core.closed
            self.call(self.core.data_received(side, part), closed)

    def half_close(self) -> None:
        side = Side.SERVER if self.r.u8() & 1 else Side.CLIENT
        if self.readable(side) and not self.waiting[side]:
            self.eof[side] = True
            closed = self.core.closed
            self.call(self.core.eof_received(side), closed)

    def reset(self) -> None:
        side = Side.SERVER if self.r.u8() & 1 else Side.CLIENT
        if self.up[side]:
            self.up[side] = False
            self.waiting[side] = b""
            closed = self.core.closed
            self.call(self.core.connection_lost(side), closed)

    def fire_timer(self) -> None:
        pick = self.r.u8()
        if not self.timers:
            return
        timer = list(self.timers)[pick % len(self.timers)]
        del self.timers[timer]
        if isinstance(timer, Deadline):
            if timer.question in self.pending:
                self.pending.remove(timer.question)
            if isinstance(timer.question, ResponseQuestion):  # too late: dropped (fail closed)
                self.watch.settled(timer.question.side.other, timer.question.command)
        closed = self.core.closed
        self.call(self.core.timer_expired(timer), closed)

    def answer(self) -> None:
        pick = self.r.u8()
        if self.pending and pick < 0xF0:
            question = self.pending[pick % len(self.pending)]
        elif self.questions:
            question = self.questions[pick % len(self.questions)]  # perhaps answered already: ignored
        else:
            return
        self.give(question, self.verdict(question))

    def connect(self) -> None:
        if not self.connecting:
            return
        self.connecting = False
        closed = self.core.closed
        if self.r.u8() & 3:
            self.up[Side.SERVER] = self.watch.server_transport = True
            self.call(self.core.upstream_connected(), closed, late_connect=True)
        else:
            self.call(self.core.upstream_failed("connection refused"), closed)

    def shutdown(self) -> None:
        closed = self.core.closed
        self.call(self.core.shutdown(), closed)

    def overload(self) -> None:
        if self.pre_association:
            closed = self.core.closed
            self.call(self.core.overloaded(), closed)

    # -- the policy ---------------------------------------------------------------------------------------
    def verdict(self, question: Question) -> Verdict:
        """The policy's answer, built only once chosen (a rewrite costs an encoding)."""
        choice = self.r.u8()
        if isinstance(question, AssociationQuestion):
            return association_verdict(question, choice, self.r.u8())
        if isinstance(question, AcceptQuestion):
            kind = choice & 3
            return (ForwardAccept() if kind == 0 else RejectAssociation(reason_text="the PACS is not trusted")
                    if kind == 2 else Drop() if kind == 3 else
                    ForwardAccept(ac=add_identity_response(strip_user_identity(question.ac))))
        review = "under review" if choice & 0x80 else None
        kind = choice & 7
        if isinstance(question, RequestQuestion):
            if kind == 3:
                return Rewrite(command=rewritten(question), review=review) if choice & 0x40 == 0 else \
                    self.head_verdict(question, review)
            if kind == 1 and choice & 0x40:
                return Permit(review=FINAL_FAILURES)
            return (Permit(), Permit(review=review), Refuse(comment=COMMENTS[choice >> 4 & 3], status=0xA700),
                    None, Rewrite(data_set=IDENTIFIER), Refuse(comment="Not authorized"), Drop(),
                    ForwardAccept())[kind] or Permit()
        if kind == 2:
            return Rewrite(command=rewritten(question))
        if AVOID_KNOWN_FINDINGS and not question.data_set_complete and kind == 3:
            return Drop()  # a data set rewritten from its head: the first finding (test_relay_fuzz_findings.py)
        return (Permit(), Drop(reason_text="not for this user"), None, Rewrite(data_set=IDENTIFIER),
                Refuse(comment="wrong kind"), Permit(), Permit(), Drop())[kind] or Permit()


    def head_verdict(self, question: RequestQuestion, review: str | None) -> Verdict:
        """What the research view answers a C-STORE by its head: hold more of it (``Extend``, perhaps
        beyond what the gate may hold or less than it holds), or replace its first ``keep_from`` bytes
        and let the rest stream (perhaps beyond what the question held: refused)."""
        pick, size = self.r.u8(), self.r.u8()
        held = len(question.data_set)
        if pick & 1:
            return Extend(length=held + size * 64 - 512 if pick & 2 else held + 1 + size)
        pixels = bytes(question.data_set).find(PIXEL_DATA_TAG)
        # where the research view's header ends, or anywhere
        keep_from = pixels if pick & 0x40 and pixels >= 0 else held - size if pick & 2 else size
        return Rewrite(data_set=IDENTIFIER[: (pick >> 2 & 7) * 5], keep_from=keep_from, review=review,
                       command=rewritten(question) if pick & 0x80 else None, cut_after_pixel_data=bool(pick & 0x20))


def association_verdict(question: AssociationQuestion, choice: int, size: int) -> Verdict:
    """``choice & 7`` picks the verdict, bit 0x80 asks to review the A-ASSOCIATE-AC."""
    upstream = ("pacs", 104)
    kind = choice & 7
    if kind == 2:
        return ForwardAssociation(target=upstream, rq=strip_user_identity(question.rq).with_ae_titles(called="PACS1"))
    if kind == 3:
        try:
            rq = insert_user_identity(question.rq, UserIdentity(type=5, primary=b"t" * (size * 4)))
        except EncodeError:
            rq = None
        return ForwardAssociation(target=upstream, rq=rq, review_ac=bool(choice & 0x80))
    if kind == 4:
        return RejectAssociation(reason_text="called AE title not known", reason=7)
    if kind == 5:
        return Permit()  # not an answer to this question: denied
    return ForwardAssociation(target=upstream, review_ac=bool(choice & 0x80))


def rewritten(question: RequestQuestion | ResponseQuestion) -> bytes | None:
    """The command set re-encoded from its typed values (a request's Priority changed), as a policy
    that rewrites a Move Destination does; None if it cannot be encoded."""
    values = command_values(question.command)
    if question.command.is_request:
        values[Tag.PRIORITY] = 2
    try:
        return encode_command(values)
    except EncodeError:
        return None


def test_one_input(raw: bytes) -> None:
    Run(Reader(raw)).play()


MAX_LEN = 384  # libFuzzer's -max_len unless given: ~30 operations reach every state; longer cost time only


def main() -> None:
    if not any(arg.startswith("-max_len=") for arg in sys.argv):
        sys.argv.append(f"-max_len={MAX_LEN}")
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
