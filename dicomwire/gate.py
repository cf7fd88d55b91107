"""The DIMSE gate of one direction: what one side sends, held while it is decided, then let through.

Each side's bytes are framed into PDUs and each P-DATA-TF is followed message by message
(:class:`~dicomwire.assembly.MessageAssembler`). A message that needs no decision and breaks no rule
keeps the pass-through path: its PDUs go on as the very bytes that were read. A message that needs a
question (a request the policy asks about, a response under review) is held: its identifier (or the
head of its data set) is gathered, the question is asked, and its frames wait, in order, until every
message in them has a fate (pass, refuse, drop, rewrite). Reading stops while a request awaits its
verdict (TCP does the buffering) and while too many responses do. A request that breaks a DIMSE rule
(:mod:`dicomwire.dialogue`) is answered with its failure status, or ends the association.

Output to each side goes through an :class:`~dicomwire.output.Output`: a refusal we make is sent only
between messages, never inside one.

A data set whose head was replaced streams on (``Rewrite(keep_from=)``); when it is cut after its Pixel
Data (:mod:`dicomwire.pixelend`) its message stays followed until it ends, and its fragments keep the
pass-through path while they lie within the current value (the bulk of the pixels); the fragment
where the cut falls, or where a header is to be read, takes the general path.
"""

from __future__ import annotations

from collections import deque

from .assembly import AssemblyEvent, MessageAssembler, MessageCompleted, MessageStarted
from .association import Side
from .commands import (
    Ask,
    CancelTimer,
    Command,
    Deadline,
    Notice,
    NoticeKind,
    PauseReading,
    StartTimer,
    Tell,
    Trace,
)
from .dataset import DEFLATED_EXPLICIT_VR_LE
from .dialogue import Dialogue, DimseViolation, Violation, is_final
from .dimse import CommandField, CommandSet, decode_command, is_failure, partly_failed, refusal_response
from .errors import ProtocolError
from .held import Fate, Held, Message, kept_pdvs
from .limits import RelayLimits
from .output import Output
from .pdu import Frame, PduFramer, PduType
from .pdv import COMMAND, COMMAND_WHOLE, LAST, Pdv, Spans, fragment_message, pack, pdv_spans
from .pixelend import PixelEnd
from .policy import Asks, asked
from .questions import Drop, Extend, Permit, Refuse, RequestQuestion, ResponseQuestion, Rewrite, Verdict, reviewed
from .trace import MessageFact, PduFact

Buffer = bytes | bytearray | memoryview
DimseQuestion = RequestQuestion | ResponseQuestion
# What the pass-through path learnt looking ahead: each frame's PDV spans, the command sets whole in one
# PDV (by frame index and value start), and how many bytes of a streaming message's data set it carries.
Plain = tuple[list[Spans], dict[tuple[int, int], CommandSet], int]

# Requests whose whole identifier the decision needs, C-FIND matches, and the data set of a C-GET/C-MOVE
# response (its Failed SOP Instance UID List, PS3.4 C.4.2.1.4.2, C.4.3.1.3.2: a view that shows other UIDs
# must rewrite all of it); held up to ``max_identifier_length``. Any other data set is decided from its head.
_WHOLE_DATA_SET = frozenset({CommandField.C_FIND_RQ, CommandField.C_GET_RQ, CommandField.C_MOVE_RQ,
                             CommandField.C_FIND_RSP, CommandField.C_GET_RSP, CommandField.C_MOVE_RSP})


class Gate:
    """One direction of one association, from the bytes read on ``side`` to what leaves for the other."""

    def __init__(self, side: Side, limits: RelayLimits, dialogue: Dialogue, outputs: dict[Side, Output],
                 asks: Asks, tracing: bool) -> None:
        self.side = side
        self.limits = limits
        self.dialogue = dialogue
        self.to_other = outputs[side.other]
        self.to_self = outputs[side]
        self.asks = asks
        self.tracing = tracing
        self.framer = PduFramer(limits.max_pdu_length, limits.max_associate_length)
        # Command sets from the client are read strictly; a PACS's responses leniently (dimse.decode_command).
        self.strict = side is Side.CLIENT
        self.assembler = MessageAssembler(strict=self.strict)
        self.queue: deque[Frame] = deque()  # PDUs read, not yet processed
        self.held: deque[Held] = deque()
        self.messages: dict[int, Message] = {}  # messages whose fate is not PASS, by seq
        self.questions: dict[DimseQuestion, Message] = {}
        self.asked_requests = 0
        self.asked_responses = 0
        self.eof = False
        self.messages_seen = 0

    @property
    def blocked(self) -> bool:
        """Reading stops while a request awaits its verdict, or too many responses do (they are
        pipelined so that a policy can decide them in one batch; their frames still leave in order)."""
        return self.asked_requests > 0 or self.asked_responses >= self.limits.max_pending_reviews

    @property
    def idle(self) -> bool:
        return not self.held and not self.messages

    def _streaming(self) -> Message | None:
        """The one message followed, when nothing is held: its head replaced and gone, its rest streaming
        through its cut, within a value (PS3.8 E.2: no other message's fragment comes before it ends)."""
        if self.held or len(self.messages) != 1:
            return None
        (message,) = self.messages.values()
        if message.cut is None or message.fate is not Fate.REWRITE or not message.data_set_sent or \
                message.data_offset < (message.keep_from or 0) or not message.cut.room:
            return None  # (no room: a header to read, or the data set cut: what follows is dropped)
        return message

    def _look(self, frames: list[Frame]) -> tuple[Plain, Message | None] | None:
        """:meth:`_plain` when the frames may take the pass-through path at all (no tracing; nothing
        held, or only a message streaming through its cut), with that message."""
        if self.tracing:
            return None
        stream = None if self.idle else self._streaming()
        if stream is None and not self.idle:
            return None
        plain = self._plain(frames, None if stream is None or stream.cut is None else stream.cut.room)
        return None if plain is None else (plain, stream)

    def _streamed(self, stream: Message | None, length: int, events: list[AssemblyEvent]) -> None:
        """A streaming message's ``length`` bytes went by on the pass-through path: its cut follows
        them, and the message is forgotten once its data set ended."""
        if stream is None or stream.cut is None:
            return
        stream.cut.advance(length)
        seq = stream.started.seq
        if any(isinstance(event, MessageCompleted) and event.seq == seq for event in events):
            del self.messages[seq]

    # -- the pass-through path ----------------------------------------------------------------------
    def pass_through(self, frames: list[Frame], data: Buffer, out: list[Command]) -> bool:
        """Forward a chunk of P-DATA-TF PDUs that need no decision as one slice of what was read.

        The bulk of every transfer takes this path: the PDUs are checked (PDV structure, fragment
        order, every command against the DIMSE rules) and followed (message boundaries), then the
        original bytes go on without a copy. Returns False, having changed nothing, when the frames
        need the general path (tracing, something held, a command that needs a question or breaks a
        rule, or one split across PDVs).
        """
        look = self._look(frames)
        if look is None:
            return False
        (spans, commands, streamed), stream = look
        events = self.assembler.feed_p_data(frames, spans, commands)  # ProtocolError: the caller aborts
        self._streamed(stream, streamed, events)
        for event in events:
            if isinstance(event, MessageStarted):
                self.messages_seen += 1
                if self._admit(event, out, checked=True) is not Fate.PASS:  # _plain said otherwise
                    raise ProtocolError(f"{event.command.name} changed its fate on the pass-through path")
        framer = self.framer
        buffers: list[Buffer] = [frames[0].data] if framer.joined else []
        start, end = framer.span
        if end > start:
            buffers.append(memoryview(data)[start:end])
        last = len(buffers) - 1
        for n, buffer in enumerate(buffers):
            self.to_other.emit(buffer, self.assembler.idle if n == last else False, out)
        return True

    def _plain(self, frames: list[Frame], room: int | None = None) -> Plain | None:
        """Whether every command in these PDUs is whole in one PDV and passes without a question or a
        broken rule: their PDV spans and decoded commands if so (for the assembler), None if not. With
        ``room``, the PDUs begin with the rest of a streaming message's data set, of which ``room``
        bytes may pass unread: its fragments must end within it (its last exactly at its end, flagged
        last). Looks ahead without changing anything."""
        opened: set[int] = set()
        ended: set[int] = set()
        all_spans: list[Spans] = []
        commands: dict[tuple[int, int], CommandSet] = {}
        streamed = 0
        for index, frame in enumerate(frames):
            if frame.type is not PduType.P_DATA_TF:
                return None
            data = frame.data
            try:
                spans = pdv_spans(data)
            except ProtocolError:
                return None
            all_spans.append(spans)
            for start, stop, context_id, control in spans:
                if room is not None:  # a fragment of the streaming message
                    size = stop - start
                    if control & COMMAND or size > room or (size == room) != bool(control & LAST):
                        return None
                    streamed += size
                    room = None if control & LAST else room - size
                    continue
                if not control & COMMAND:
                    continue
                if control != COMMAND_WHOLE:
                    return None
                try:
                    command = decode_command(data[start:stop], strict=self.strict)
                except ProtocolError:
                    return None
                if not self._passes(command, context_id, opened, ended):
                    return None
                commands[(index, start)] = command
        return all_spans, commands, streamed

    def _passes(self, command: CommandSet, context_id: int, opened: set[int], ended: set[int]) -> bool:
        if command.is_request:
            if asked(self.asks, command.command_field) or \
                    self.dialogue.check_request(self.side, command, context_id, opened) is not None:
                return False
            if command.message_id is not None and command.command_field != CommandField.C_CANCEL_RQ:
                opened.add(command.message_id)
            return True
        exchange = self.dialogue.check_response(self.side, command, context_id, ended)
        if isinstance(exchange, Violation) or reviewed(exchange.review, command):
            return False
        if is_final(command):
            ended.add(exchange.message_id)
        return True

    # -- the general path ---------------------------------------------------------------------------
    def relay(self, frame: Frame, out: list[Command]) -> bool:
        """Process one P-DATA-TF; False if a question stopped processing inside it (it stays first in
        the queue and is resumed when the answer comes)."""
        look = self._look([frame])
        if look is not None:
            self._relay_plain(frame, *look, out)
            return True
        if self.held and self.held[-1].frame is frame:
            held = self.held[-1]  # resuming a frame a question interrupted
        else:
            held = Held(frame, _pdvs(frame))
            self.held.append(held)
            if self.tracing:
                out.append(Trace(PduFact(self.side, PduType.P_DATA_TF, frame.data)))
        assembler = self.assembler
        for pdv in held.pdvs[len(held.seqs):]:
            seq = assembler.seq
            held.seqs.append(seq)
            message = self.messages.get(seq)
            if message is not None and message.fate is Fate.GATHER and not pdv.is_command:
                message.data += pdv.value
            for event in assembler.feed(pdv.context_id, pdv.control, pdv.value):
                self._on_event(event, out)
            message = self.messages.get(seq)
            if message is not None and message.fate is Fate.GATHER and (
                    message.complete or len(message.data) >= self._gather_limit(message)):
                self._ask(message, out)
            if self.blocked and not held.processed:
                return False
        held.ends_idle = assembler.idle
        self.flush(out)
        return True

    def _relay_plain(self, frame: Frame, plain: Plain, stream: Message | None, out: list[Command]) -> None:
        spans, commands, streamed = plain
        events = self.assembler.feed_p_data([frame], spans, commands)
        self._streamed(stream, streamed, events)
        for event in events:
            if isinstance(event, MessageStarted):
                self.messages_seen += 1
                if self._admit(event, out, checked=True) is not Fate.PASS:
                    raise ProtocolError(f"{event.command.name} changed its fate on the pass-through path")
        self.to_other.emit(frame.data, self.assembler.idle, out)

    def _gather_limit(self, message: Message) -> int:
        if message.limit is not None:
            return message.limit
        if message.started.command.command_field in _WHOLE_DATA_SET:
            return self.limits.max_identifier_length
        return self.limits.store_head_length

    def _on_event(self, event: MessageStarted | MessageCompleted, out: list[Command]) -> None:
        if isinstance(event, MessageStarted):
            self.messages_seen += 1
            if self.tracing and not event.command.has_data_set:
                out.append(Trace(MessageFact(self.side, event.command, event.context_id, None)))
            self._admit(event, out)
            return
        if self.tracing and event.command.has_data_set:
            out.append(Trace(MessageFact(self.side, event.command, event.context_id, event.data_set_length)))
        message = self.messages.get(event.seq)
        if message is None:
            return
        message.complete = True
        if message.fate is Fate.REFUSE:
            self._send_refusal(message, out)

    def _admit(self, event: MessageStarted, out: list[Command], *, checked: bool = False) -> Fate:
        """Check a message against the DIMSE rules and decide whether it is asked about (``checked``: a
        request :meth:`_plain` checked in this same read, with nothing changed since)."""
        command = event.command
        if command.is_request:
            violation = None if checked else self.dialogue.check_request(self.side, command, event.context_id)
            if violation is not None:
                return self._breach(event, violation, out)
            exchange = self.dialogue.open(self.side, command, event.context_id)
            if not asked(self.asks, command.command_field):
                if exchange is not None:
                    exchange.forwarded = True
                return Fate.PASS
            message = Message(event, Fate.GATHER, exchange)
        else:
            answered = self.dialogue.check_response(self.side, command, event.context_id)
            if isinstance(answered, Violation):
                return self._breach(event, answered, out)
            final = self.dialogue.respond(answered, command)
            if final and (is_failure(command.status) or partly_failed(command)):
                out.append(Tell(Notice(kind=NoticeKind.FAILED, side=self.side, command=command,
                                       detail=f"{command.name} status 0x{command.status or 0:04X}")))
            if not reviewed(answered.review, command):
                return Fate.PASS
            message = Message(event, Fate.GATHER, answered, final)
        self.messages[event.seq] = message
        if not command.has_data_set:
            self._ask(message, out)
        return message.fate

    def _breach(self, event: MessageStarted, violation: Violation, out: list[Command]) -> Fate:
        out.append(Tell(Notice(kind=NoticeKind.VIOLATION, side=self.side, detail=f"{violation.breach.value}: "
                               f"{violation.detail}", command=event.command)))
        breach = violation.breach
        if breach.dropped:
            self.messages[event.seq] = Message(event, Fate.DROP)
            return Fate.DROP
        if breach.status is None or not event.command.is_request:
            raise DimseViolation(violation)
        self.messages[event.seq] = Message(event, Fate.REFUSE, refusal=Refuse(comment=breach.value,
                                                                               status=breach.status))
        if not event.command.has_data_set:
            self.messages[event.seq].complete = True
            self._send_refusal(self.messages[event.seq], out)
        return Fate.REFUSE

    # -- questions and verdicts ---------------------------------------------------------------------
    def _ask(self, message: Message, out: list[Command]) -> None:
        started = message.started
        exchange = message.exchange
        assert exchange is not None
        context_id = started.context_id
        abstract = self.dialogue.contexts.get(context_id, "")
        transfer = self.dialogue.transfer_syntaxes.get(context_id, "")
        complete = message.complete or not started.command.has_data_set
        question: DimseQuestion
        if started.command.is_request:
            question = RequestQuestion(side=self.side, context_id=context_id, abstract_syntax=abstract,
                                       transfer_syntax=transfer, command=started.command, data_set=bytes(message.data),
                                       data_set_complete=complete, retrievals=self.dialogue.retrievals(self.side.other))
            self.asked_requests += 1
        else:
            question = ResponseQuestion(side=self.side, context_id=context_id, abstract_syntax=abstract,
                                        transfer_syntax=transfer, command=started.command,
                                        data_set=bytes(message.data), data_set_complete=complete,
                                        request=exchange.request, review=exchange.review, final=message.final)
            self.asked_responses += 1
        message.fate = Fate.ASKED
        message.question = question
        message.data = bytearray()
        self.questions[question] = message
        if self.blocked:
            out.append(PauseReading(self.side))
        out.append(StartTimer(Deadline(question), self.limits.decision_timeout))
        out.append(Ask(question))

    def answer(self, question: DimseQuestion, verdict: Verdict, out: list[Command]) -> None:
        message = self.questions.pop(question, None)
        if message is None:
            return  # answered already (its deadline passed)
        out.append(CancelTimer(Deadline(question)))
        if isinstance(question, RequestQuestion):
            self.asked_requests -= 1
        else:
            self.asked_responses -= 1
        verdict = self._feasible(question, verdict)
        if isinstance(verdict, Extend):
            message.fate, message.limit = Fate.GATHER, verdict.length
            message.data = bytearray(question.data_set)  # held again, and more of it, for the next question
            self.flush(out)
            return
        exchange = message.exchange
        if isinstance(verdict, Permit | Rewrite):
            message.fate = Fate.PASS
            if isinstance(verdict, Rewrite):
                message.fate = Fate.REWRITE
                message.new_command = verdict.command
                message.new_data_set = verdict.data_set
                message.keep_from = verdict.keep_from
                if verdict.cut_after_pixel_data:
                    message.cut = PixelEnd(question.transfer_syntax)
            if isinstance(question, RequestQuestion) and exchange is not None:
                exchange.review, exchange.forwarded = verdict.review, True
        elif isinstance(verdict, Refuse) and isinstance(question, RequestQuestion):
            message.fate = Fate.REFUSE
            message.refusal = verdict
            if exchange is not None:
                self.dialogue.close(exchange)  # answered by us: it never reaches the other side
            if message.complete:
                self._send_refusal(message, out)
        elif isinstance(verdict, Drop) and isinstance(question, ResponseQuestion):
            message.fate = Fate.DROP
        else:
            raise TypeError(f"{type(verdict).__name__} does not answer a {type(question).__name__}")
        self.flush(out)

    def _feasible(self, question: DimseQuestion, verdict: Verdict) -> Verdict:
        """The verdict, or the fail-closed one (a refusal, a dropped response) that stands for a verdict
        the gate cannot carry out on what it holds."""
        held = len(question.data_set)
        if isinstance(verdict, Extend) and (question.data_set_complete or verdict.length <= held
                                            or verdict.length > self.limits.max_header_length):
            return question.fail_closed("data set header too long to be checked")
        if isinstance(verdict, Rewrite) and verdict.data_set is not None:
            if verdict.keep_from is None and not question.data_set_complete:
                return question.fail_closed("identifier too long to be checked")
            if verdict.keep_from is not None and not 0 <= verdict.keep_from <= held:
                return question.fail_closed("data set rewritten beyond what was held")
        if isinstance(verdict, Rewrite) and verdict.cut_after_pixel_data and (
                verdict.keep_from is None or question.transfer_syntax == DEFLATED_EXPLICIT_VR_LE):
            return question.fail_closed("data set cannot be cut after its pixel data")
        return verdict

    def expire(self, question: DimseQuestion, out: list[Command]) -> None:
        """The question's deadline passed: its fail-closed verdict stands (fail closed)."""
        if question not in self.questions:
            return
        out.append(Tell(Notice(kind=NoticeKind.DECISION_TIMEOUT, side=self.side, command=question.command,
                               detail=f"no verdict on {question.command.name} within "
                                      f"{self.limits.decision_timeout:g} s")))
        self.answer(question, question.fail_closed("Authorization decision timed out"), out)

    def _send_refusal(self, message: Message, out: list[Command]) -> None:
        refusal = message.refusal
        command = message.started.command
        if refusal is None or not command.is_request:
            return
        message.refusal = None
        response = refusal_response(command, status=refusal.status, comment=refusal.comment)
        if self.tracing:
            out.append(Trace(MessageFact(self.side.other, decode_command(response, strict=False),
                                         message.started.context_id, None, synthesised=True)))
        self.to_self.inject(fragment_message(message.started.context_id, response, None, self.to_self.max_length),
                            out)

    # -- leaving ------------------------------------------------------------------------------------
    def flush(self, out: list[Command]) -> None:
        """Emit held frames, in order, as far as every PDV in them has a final fate."""
        held = self.held
        # A command whose last fragment has not arrived may still be refused or rewritten: hold it.
        incomplete = self.assembler.seq if self.assembler.collecting_command else None
        messages = self.messages
        while held:
            first = held[0]
            if not first.processed or incomplete in first.seqs:
                break
            fates = [messages[s].fate if s in messages else Fate.PASS for s in first.seqs]
            if any(f in (Fate.GATHER, Fate.ASKED) for f in fates):
                break
            held.popleft()
            if all(f is Fate.PASS for f in fates):
                self.to_other.emit(first.frame.data, first.ends_idle, out)
                continue
            kept = kept_pdvs(first, fates, messages, self.to_other.max_length)
            self._tell_broken(first, out)
            # Only the frame's last PDU can end at a message boundary: one before it would let a waiting
            # refusal in between the fragments of a message.
            pdus = pack(kept, self.to_other.max_length)
            for n, pdu in enumerate(pdus, 1):
                self.to_other.emit(pdu, first.ends_idle and n == len(pdus), out)
        # Forget what no frame needs any more (PASS is what an unknown message gets, so the rest of a
        # passed message's data set takes the pass-through path).
        live = {s for h in held for s in h.seqs}
        for seq in [s for s, m in messages.items() if s not in live and m.settled]:
            del messages[seq]

    def _tell_broken(self, held: Held, out: list[Command]) -> None:
        """A data set cut short because what follows its head could not be read (once per message)."""
        for seq in set(held.seqs):
            message = self.messages.get(seq)
            if message is not None and message.cut is not None and message.cut.broken:
                out.append(Tell(Notice(kind=NoticeKind.MALFORMED, side=self.side, command=message.started.command,
                                       detail=f"data set ended early: {message.cut.broken}")))
                message.cut.broken = None

    def clear(self) -> None:
        self.queue.clear()
        self.held.clear()


def _pdvs(frame: Frame) -> list[Pdv]:
    view = memoryview(frame.data)
    return [Pdv(context_id, control, view[start:stop]) for start, stop, context_id, control in pdv_spans(view)]


__all__ = ["Fate", "Gate"]
