"""The sans-I/O relay core: one association between a client and an upstream server.

The driver (:mod:`dicomwire.aio`) feeds it what happens (bytes read, a transport's end, a timer, the
upstream connected or failed, a verdict) and executes the commands it returns (:mod:`dicomwire.commands`).
Every state change is one lookup in the state table (:mod:`dicomwire.association`) by :meth:`RelayCore._fire`.
The DIMSE traffic of each direction goes through its :class:`~dicomwire.gate.Gate`; the requests
outstanding on both sides are kept by :class:`~dicomwire.dialogue.Dialogue`. Bytes that need no change go
on as views of what was read; only what a verdict rewrites and what we make (refusals, RJ, A-ABORT) is
encoded. No exception escapes: a failure of the core's own code is A-ABORT to both sides and a log line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .association import (
    PAUSED_STATES,
    TRANSITIONS,
    Action,
    Event,
    Happening,
    RelayStateError,
    Side,
    State,
    describe,
    transition,
)
from .commands import (
    Ask,
    CancelTimer,
    Close,
    Command,
    Deadline,
    Log,
    Notice,
    NoticeKind,
    OpenUpstream,
    PauseReading,
    ResumeReading,
    Send,
    StartTimer,
    Tell,
    Timer,
    TimerKey,
    Trace,
    server_refusal,
)
from .dialogue import Dialogue, DimseViolation
from .errors import AbortReason, AbortSource, AssociationRejected, ProtocolError, RejectReason
from .gate import Gate
from .limits import RelayLimits
from .negotiation import accepted_contexts, capped, read_accept, read_request
from .output import Output
from .pdu import (
    AssociatePdu,
    Frame,
    PduType,
    abort_pdu,
    reject_pdu,
)
from .policy import NO_REQUEST, Asks, Ending
from .questions import (
    AcceptQuestion,
    AssociationQuestion,
    ForwardAccept,
    ForwardAssociation,
    Question,
    RejectAssociation,
    RequestQuestion,
    ResponseQuestion,
    Verdict,
    answers,
)
from .trace import PduFact

Buffer = bytes | bytearray | memoryview

# The (state, side) pairs in which a P-DATA-TF is relayed without changing state: where the
# pass-through path may run.
_RELAY_DATA = frozenset((state, event[0]) for (state, event), (action, after) in TRANSITIONS.items()
                        if action is Action.RELAY_DATA and isinstance(event, tuple) and after is state)
_LIVE = frozenset({State.ESTABLISHED, State.RELEASE_BY_CLIENT, State.RELEASE_BY_SERVER, State.RELEASE_COLLISION,
                   State.RELEASE_COLLISION_HALF})
_ARTIM = {State.AWAIT_RQ: "no A-ASSOCIATE-RQ", State.AWAIT_AC: "no A-ASSOCIATE-AC/RJ"}  # what ARTIM waited for


class RelayCore:
    """One relayed association, from the accepted client connection to the last close.

    Construct it when a client's transport is up, pass :meth:`start`'s commands to the driver, then
    call the event methods. Every method returns the list of commands to execute, in order.
    ``asks``: which requests are asked about (:data:`dicomwire.policy.Asks`); ``busy``: no slot is
    free, so the A-ASSOCIATE-RQ is refused as soon as its first bytes arrive.
    """

    def __init__(self, limits: RelayLimits | None = None, *, asks: Asks = NO_REQUEST, tracing: bool = False,
                 busy: bool = False) -> None:
        self.limits = limits or RelayLimits()
        self.asks = asks
        self.tracing = tracing
        self.busy = busy
        self.state = State.AWAIT_RQ
        self.rq: AssociatePdu | None = None  # as forwarded
        self.ac: AssociatePdu | None = None  # as received, Maximum Length capped
        self.close_reason = ""
        self.dialogue = Dialogue()
        self.outputs = {side: Output(side) for side in Side}
        self.gates = {side: Gate(side, self.limits, self.dialogue, self.outputs, asks, tracing) for side in Side}
        self.bytes_in = {Side.CLIENT: 0, Side.SERVER: 0}
        self._question: AssociationQuestion | AcceptQuestion | None = None
        self._verdict: ForwardAssociation | None = None
        self._rq_bytes: Buffer = b""
        self._rq_frame: Buffer = b""  # the RQ as received
        self._ac_frame: Buffer = b""
        self._connected = {Side.CLIENT: True, Side.SERVER: False}
        self._stalled = False
        self._handlers: dict[Action, Callable[[Event, Any, list[Command]], None]] = {
            Action.ASK_ASSOCIATION: self._ask_association, Action.OPEN_UPSTREAM: self._open_upstream,
            Action.SEND_RQ: self._send_rq, Action.REVIEW_AC: self._review_ac, Action.FORWARD_AC: self._forward_ac,
            Action.REJECT: self._reject, Action.REFUSE_AC: self._refuse_ac, Action.FORWARD_RJ: self._forward_rj,
            Action.RELAY_DATA: self._relay_data, Action.APPLY_VERDICT: self._apply_verdict,
            Action.EXPIRE_QUESTION: self._expire_question, Action.FORWARD: self._forward,
            Action.FORWARD_RELEASE_RP: self._forward_release_rp, Action.FORWARD_AND_CLOSE: self._forward_and_close,
            Action.ABORT_BOTH: self._abort_both, Action.ABORT_MALFORMED: self._abort_malformed,
            Action.FINISH: self._finish, Action.IGNORE: lambda event, payload, out: None,
        }

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    def ending(self) -> Ending:
        return Ending(reason=self.close_reason or "connection closed", established=self.ac is not None,
                      bytes_in=dict(self.bytes_in), messages={s: g.messages_seen for s, g in self.gates.items()})

    # ---- events from the driver -----------------------------------------------------------------
    def start(self) -> list[Command]:
        return [StartTimer(Timer.ARTIM, self.limits.artim_timeout)]

    def data_received(self, side: Side, data: Buffer) -> list[Command]:
        return self._guarded(lambda out: self._data(side, data, out))

    def eof_received(self, side: Side) -> list[Command]:
        """The side closed its writing half (or the whole connection, see :meth:`connection_lost`)."""
        return self._guarded(lambda out: self._eof(side, out))

    def connection_lost(self, side: Side) -> list[Command]:
        def lost(out: list[Command]) -> None:
            self._eof(side, out)
            self._connected[side] = False
            self.outputs[side].writable = False
            if not any(self._connected.values()):
                self._fire(Happening.TRANSPORTS_GONE, out)
        return self._guarded(lost)

    def upstream_connected(self) -> list[Command]:
        if self.state is not State.CONNECTING:
            return [Close(Side.SERVER)]  # the client left meanwhile: this transport has no association
        return self._guarded(lambda out: self._fire(Happening.UPSTREAM_CONNECTED, out))

    def upstream_failed(self, reason: str) -> list[Command]:
        rejection = RejectAssociation.transient(f"upstream unreachable: {reason}")
        return self._guarded(lambda out: self._fire(Happening.UPSTREAM_FAILED, out, rejection))

    def timer_expired(self, timer: TimerKey) -> list[Command]:
        def expired(out: list[Command]) -> None:
            if isinstance(timer, Deadline):
                if timer.question is self._question:
                    self._question = None
                    out.append(Log("warning", "no decision in time: denied (fail closed)"))
                    self._fire(Happening.DECISION_TIMEOUT, out, timer.question.fail_closed(
                        "no decision in time (fail closed)"))
                else:
                    self._fire(Happening.DIMSE_DEADLINE, out, timer.question)
            elif timer is Timer.CONNECT:
                self._fire(Happening.UPSTREAM_FAILED, out, RejectAssociation.transient(
                    f"upstream unreachable: no connection within {self.limits.connect_timeout:g} s"))
            elif timer is Timer.ARTIM:
                waited = _ARTIM.get(self.state, "transports not closed")
                self._fire(Happening.ARTIM_EXPIRED, out, f"{waited} within {self.limits.artim_timeout:g} s (ARTIM)")
            else:
                self._fire(Happening.IDLE_EXPIRED, out, f"no traffic for {self.limits.idle_timeout:g} s")
        return self._guarded(expired)

    def overloaded(self) -> list[Command]:
        """The listener's budget for connections without an association is spent: refuse this one."""
        rejection = RejectAssociation.transient("too many connections without an association",
                                                RejectReason.LOCAL_LIMIT_EXCEEDED)
        return self._guarded(lambda out: self._fire(Happening.RQ_REFUSED, out, rejection))

    def shutdown(self) -> list[Command]:
        """The driver's shutdown deadline passed: end this association now."""
        return self._guarded(lambda out: self._fire(Happening.SHUTDOWN, out, "shutting down"))

    def answer(self, question: Question, verdict: Verdict) -> list[Command]:
        return self._guarded(lambda out: self._answer(question, verdict, out))

    # ---- the table --------------------------------------------------------------------------------
    def _fire(self, event: Event, out: list[Command], payload: Any = None) -> None:
        """The one place the state changes: look the event up, set the next state, run the action."""
        if self.state is State.CLOSED:
            return
        step = transition(self.state, event)
        if step is None:
            if isinstance(event, Happening):
                raise RelayStateError(self.state, event)
            side = event[0]
            self._protocol_error(side, ProtocolError(f"{describe(event)} is not valid in state "
                                                     f"'{self.state.value}'", reason=AbortReason.UNEXPECTED_PDU), out)
            return
        action, self.state = step
        self._handlers[action](event, payload, out)

    def _guarded(self, body: Callable[[list[Command]], None]) -> list[Command]:
        out: list[Command] = []
        if self.state is State.CLOSED:
            return out
        try:
            body(out)
        except Exception as error:  # the core's own bug must end the association, never hang or crash it
            out.append(Log("error", f"relay core failed in state '{self.state.value}': {error!r}; A-ABORT"))
            try:
                self._fire(Happening.INTERNAL_ERROR, out, f"internal error: {error!r}")
            except Exception:  # even the abort failed: close the transports as the last word
                self.state = State.CLOSED
                out.extend(Close(side) for side in Side if self._connected[side])
        return out

    def _answer(self, question: Question, verdict: Verdict, out: list[Command]) -> None:
        if not answers(question, verdict):
            out.append(Log("error", f"{type(verdict).__name__} does not answer {type(question).__name__}: "
                                    "denied (fail closed)"))
            verdict = question.fail_closed("policy error (fail closed)")
        if isinstance(question, RequestQuestion | ResponseQuestion):
            self._fire(Happening.DIMSE_VERDICT, out, (question, verdict))
            return
        if question is not self._question:
            return  # answered already (its deadline passed)
        self._question = None
        out.append(CancelTimer(Deadline(question)))
        if isinstance(verdict, RejectAssociation):
            reject = Happening.REJECT_VERDICT if isinstance(question, AssociationQuestion) else Happening.AC_REFUSED
            self._fire(reject, out, verdict)
        else:
            self._fire(Happening.FORWARD_VERDICT if isinstance(verdict, ForwardAssociation) else Happening.AC_PASSED,
                       out, verdict)

    # ---- input ------------------------------------------------------------------------------------
    def _data(self, side: Side, data: Buffer, out: list[Command]) -> None:
        gate = self.gates[side]
        if not self._connected[side] or gate.eof:
            return
        self.bytes_in[side] += len(data)
        if self.busy and self.state is State.AWAIT_RQ and not gate.framer.buffered and data[:1] == b"\x01":
            self._fire(Happening.RQ_REFUSED, out, RejectAssociation.transient(  # a busy relay holds nothing for it
                "too many concurrent associations", RejectReason.LOCAL_LIMIT_EXCEEDED))
            return
        try:
            frames = gate.framer.feed(data)
            if not frames:
                return
            if not gate.queue and (self.state, side) in _RELAY_DATA and gate.pass_through(frames, data, out):
                return
        except ProtocolError as error:
            self._protocol_error(side, error, out)
            return
        gate.queue.extend(frames)
        self._pump(side, out)

    def _pump(self, side: Side, out: list[Command]) -> None:
        """Frames in order, each one event of the table, until a question or a pause stops the side."""
        gate = self.gates[side]
        queue = gate.queue
        while queue and not self._blocked(side) and self.state is not State.CLOSED:
            frame = queue[0]
            if frame.type is not PduType.P_DATA_TF:
                queue.popleft()
                if self.tracing:
                    out.append(Trace(PduFact(side, frame.type, frame.data)))
                if gate.held and frame.type is not PduType.ABORT and self.state is not State.CLOSING:
                    self._protocol_error(side, ProtocolError(f"{frame.type.name} inside an unfinished DIMSE "
                                                             "message", reason=AbortReason.UNEXPECTED_PDU), out)
                    return
                self._fire((side, frame.type), out, frame)
                continue
            self._stalled = False
            self._fire((side, frame.type), out, frame)
            if self._stalled:
                return  # a question stopped us inside this frame; it stays first in the queue
            if queue and queue[0] is frame:  # (a protocol error empties the queue)
                queue.popleft()

    def _blocked(self, side: Side) -> bool:
        return self.state in PAUSED_STATES or self.gates[side].blocked

    def _eof(self, side: Side, out: list[Command]) -> None:
        gate = self.gates[side]
        if gate.eof:
            return
        gate.eof = True
        if gate.framer.buffered:
            out.append(Log("warning", f"{side.value} closed with a truncated PDU of {gate.framer.buffered} bytes"))
        self._fire(Happening.eof(side), out, f"{side.value} closed the connection in state '{self.state.value}'")

    def _protocol_error(self, side: Side, error: ProtocolError, out: list[Command]) -> None:
        out.append(Log("warning", f"malformed data from the {side.value}: {error}; A-ABORT "
                                  f"(source {int(error.source)}, reason {int(error.reason)})"))
        if not isinstance(error, DimseViolation):  # a violation was told already, with its command
            out.append(Tell(Notice(kind=NoticeKind.MALFORMED, side=side, detail=str(error))))
        self.gates[side].clear()
        self._fire(Happening.malformed(side), out, (side, error))

    # ---- association establishment ------------------------------------------------------------------
    def _ask_association(self, event: Event, frame: Frame, out: list[Command]) -> None:
        out.append(CancelTimer(Timer.ARTIM))
        try:
            rq = read_request(frame.data)
        except AssociationRejected as rejected:
            self._fire(Happening.RQ_REFUSED, out, RejectAssociation(
                reason_text=str(rejected), result=rejected.result, source=rejected.source, reason=rejected.reason))
            return
        except ProtocolError as error:
            self._protocol_error(Side.CLIENT, error, out)
            return
        self.rq = rq
        self._rq_bytes = self._rq_frame = frame.data
        self._ask(AssociationQuestion(rq=rq), Side.CLIENT, out)

    def _ask(self, question: AssociationQuestion | AcceptQuestion, side: Side, out: list[Command]) -> None:
        """An association-level question: ``side`` is not read until it is answered (or its deadline)."""
        self._question = question
        out.append(PauseReading(side))
        out.append(StartTimer(Deadline(question), self.limits.decision_timeout))
        out.append(Ask(question))

    def _open_upstream(self, event: Event, verdict: ForwardAssociation, out: list[Command]) -> None:
        assert self.rq is not None
        rq = verdict.rq or self.rq
        self.rq, self.outputs[Side.CLIENT].max_length = capped(rq, self.limits.max_pdu_length)
        if verdict.rq is not None or self.rq is not rq:
            self._rq_bytes = self.rq.encode()  # otherwise the original bytes go upstream untouched
        self._verdict = verdict
        out.append(StartTimer(Timer.CONNECT, self.limits.connect_timeout))
        out.append(OpenUpstream(verdict.target))

    def _send_rq(self, event: Event, payload: None, out: list[Command]) -> None:
        self._connected[Side.SERVER] = True
        self.outputs[Side.SERVER].writable = True
        out.append(CancelTimer(Timer.CONNECT))
        out.append(Send(Side.SERVER, self._rq_bytes))
        if self.tracing:
            out.append(Trace(PduFact(Side.CLIENT, PduType.ASSOCIATE_RQ, self._rq_bytes,
                                     rewritten=self._rq_bytes is not self._rq_frame)))
        out.append(StartTimer(Timer.ARTIM, self.limits.artim_timeout))
        out.append(ResumeReading(Side.CLIENT))
        self._pump(Side.CLIENT, out)

    def _review_ac(self, event: Event, frame: Frame, out: list[Command]) -> None:
        out.append(CancelTimer(Timer.ARTIM))
        try:
            ac = read_accept(frame.data)
        except ProtocolError as error:
            self._protocol_error(Side.SERVER, error, out)
            return
        assert self.rq is not None
        self.ac, self.outputs[Side.SERVER].max_length = capped(ac, self.limits.max_pdu_length)
        self._ac_frame = frame.data if self.ac is ac else self.ac.encode()
        for context in accepted_contexts(self.rq, self.ac):
            self.dialogue.accept(*context)
        if self._verdict is not None and self._verdict.review_ac:
            self._ask(AcceptQuestion(rq=self.rq, ac=self.ac), Side.SERVER, out)
            return
        self._fire(Happening.AC_PASSED, out, ForwardAccept())

    def _forward_ac(self, event: Event, verdict: ForwardAccept, out: list[Command]) -> None:
        self.outputs[Side.CLIENT].send(self._ac_frame if verdict.ac is None else verdict.ac.encode(), out)
        out.append(StartTimer(Timer.IDLE, self.limits.idle_timeout))
        out.append(ResumeReading(Side.SERVER))
        out.append(ResumeReading(Side.CLIENT))
        self._pump(Side.SERVER, out)
        self._pump(Side.CLIENT, out)

    def _reject(self, event: Event, verdict: RejectAssociation, out: list[Command]) -> None:
        out.append(Log("warning", f"association rejected ({verdict.result}, {verdict.source}, {verdict.reason}): "
                                  f"{verdict.reason_text}"))
        self._synthesise(Side.CLIENT, PduType.ASSOCIATE_RJ, reject_pdu(verdict.result, verdict.source, verdict.reason),
                         out)
        self._finish(event, f"rejected: {verdict.reason_text}", out)

    def _refuse_ac(self, event: Event, verdict: RejectAssociation, out: list[Command]) -> None:
        # Refusing an association the server accepted: abort upstream, reject downstream.
        self.outputs[Side.SERVER].send(abort_pdu(AbortSource.SERVICE_USER), out)
        self._reject(event, verdict, out)

    def _forward_rj(self, event: Event, frame: Frame, out: list[Command]) -> None:
        out += server_refusal(frame.data)  # a Notice first: the person hears of it before the app reacts
        self.outputs[Side.CLIENT].send(frame.data, out)
        self._finish(event, "association rejected by the server", out)

    # ---- data transfer ------------------------------------------------------------------------------
    def _relay_data(self, event: Event, frame: Frame, out: list[Command]) -> None:
        side = _side(event)
        try:
            self._stalled = not self.gates[side].relay(frame, out)
        except ProtocolError as error:
            self._protocol_error(side, error, out)

    def _apply_verdict(self, event: Event, payload: tuple[RequestQuestion | ResponseQuestion, Verdict],
                       out: list[Command]) -> None:
        question, verdict = payload
        self.gates[question.side].answer(question, verdict, out)
        self._resume(question.side, out)

    def _expire_question(self, event: Event, question: RequestQuestion | ResponseQuestion,
                         out: list[Command]) -> None:
        out.append(Log("warning", f"no decision in time for {question.command.name}: refused (fail closed)"))
        self.gates[question.side].expire(question, out)
        self._resume(question.side, out)

    def _resume(self, side: Side, out: list[Command]) -> None:
        if not self._blocked(side) and self.state is not State.CLOSED:
            out.append(ResumeReading(side))
            self._pump(side, out)

    # ---- release and endings ------------------------------------------------------------------------
    def _forward(self, event: Event, frame: Frame, out: list[Command]) -> None:
        self.outputs[_side(event).other].send(frame.data, out)

    def _forward_release_rp(self, event: Event, frame: Frame, out: list[Command]) -> None:
        side = _side(event)
        self._forward(event, frame, out)
        self.close_reason = "released"
        out.append(CancelTimer(Timer.IDLE))
        out.append(StartTimer(Timer.ARTIM, self.limits.artim_timeout))
        other = side.other
        if self.gates[other].eof or not self._connected[other]:
            self._fire(Happening.eof(other), out)  # it left already: nothing to wait for

    def _forward_and_close(self, event: Event, frame: Frame, out: list[Command]) -> None:
        out += server_refusal(frame.data) if _side(event) is Side.SERVER else []  # a Notice, as for an RJ
        self._forward(event, frame, out)
        self._finish(event, f"aborted by the {_side(event).value}", out)

    def _abort_both(self, event: Event, why: str | None, out: list[Command]) -> None:
        for side in Side:
            if not self.gates[side].eof:
                self._abort(side, AbortReason.NOT_SPECIFIED, out)
        if why and event is not Happening.SHUTDOWN:
            out.append(Log("warning", f"{why}; A-ABORT"))
        self._finish(event, why or describe(event), out)

    def _abort_malformed(self, event: Event, payload: tuple[Side, ProtocolError], out: list[Command]) -> None:
        side, error = payload
        self.outputs[side].send(abort_pdu(error.source, error.reason), out)
        # The other side never sees the malformed PDU, only that the association ended.
        self._abort(side.other, AbortReason.NOT_SPECIFIED, out)
        self._finish(event, f"protocol error from the {side.value}: {error}", out)

    def _abort(self, side: Side, reason: AbortReason, out: list[Command]) -> None:
        if self._connected[side]:
            self._synthesise(side, PduType.ABORT, abort_pdu(AbortSource.SERVICE_PROVIDER, reason), out)

    def _synthesise(self, side: Side, pdu_type: PduType, data: bytes, out: list[Command]) -> None:
        """A PDU of our own to ``side`` (traced as coming from the other)."""
        if self.tracing:
            out.append(Trace(PduFact(side.other, pdu_type, data, synthesised=True)))
        self.outputs[side].send(data, out)

    def _finish(self, event: Event, why: str | None, out: list[Command]) -> None:
        """Close both transports (after what was queued to them is written): the association is over."""
        self.close_reason = self.close_reason or why or describe(event)
        for timer in Timer:
            out.append(CancelTimer(timer))
        for side in Side:
            if self._connected[side]:
                out.append(Close(side))
                self.outputs[side].writable = False
        # A connection that never sent a byte (a port scan, a load balancer's check) is no news.
        quiet = self.rq is None and not self.bytes_in[Side.CLIENT] and event is Happening.CLIENT_EOF
        client, server = self.gates[Side.CLIENT], self.gates[Side.SERVER]
        out.append(Log("debug" if quiet else "info", f"association closed: {self.close_reason}; "
                       f"{self.bytes_in[Side.CLIENT]} bytes C>S, {self.bytes_in[Side.SERVER]} bytes S>C, "
                       f"{client.messages_seen}+{server.messages_seen} messages"))


def _side(event: Event) -> Side:
    """The side a PDU event came from (the handlers that call this run for PDU events only)."""
    assert isinstance(event, tuple)
    return event[0]


__all__ = ["RelayCore"]
