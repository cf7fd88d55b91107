"""The sans-I/O relay core: one association between a client and an upstream server.

The driver (:mod:`dicomwire.aio`) feeds it what happens on the two transports and executes the
commands it returns; it never awaits and never touches a socket. Bytes that need no change are
forwarded as views of what was read (PS3.8 PDUs are passed whole, never re-encoded); only an
A-ASSOCIATE-RQ/AC that a verdict rewrites, a PDU from which a refused message's PDVs are removed,
and the refusals we synthesise are newly encoded.

Hooks are questions, not callbacks: the core returns ``Ask(question)`` and stops reading that side
(``PauseReading``) until ``answer(question, verdict)`` comes back, so TCP does the buffering while
someone decides. Questions arise for the A-ASSOCIATE-RQ (always: route, rewrite or reject), for the
A-ASSOCIATE-AC (when the association verdict asks to review it), for DIMSE requests (when
``ask_requests`` is set; ``ask_commands`` narrows them to some command fields) and for responses
to a request whose verdict asked to review them.
"""

from __future__ import annotations

import enum
import itertools
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .association import PAUSED_STATES, TRANSITIONS, Action, Side, State, transition
from .dimse import (
    STATUS_NOT_AUTHORIZED,
    STATUS_PENDING,
    AssemblyEvent,
    CommandField,
    CommandSet,
    MessageAssembler,
    MessageCompleted,
    MessageStarted,
    peek_command_field,
    refusal_response,
)
from .errors import (
    AbortReason,
    AbortSource,
    AssociationRejected,
    ProtocolError,
    RejectReason,
    RejectResult,
    RejectSource,
)
from .identity import extract_user_identity
from .items import ItemType
from .pdu import (
    DEFAULT_MAX_ASSOCIATE_LENGTH,
    DEFAULT_MAX_PDU_LENGTH,
    PDU_NAMES,
    AssociatePdu,
    Frame,
    PduFramer,
    PduType,
    Pdv,
    abort_pdu,
    check_associate_rq,
    decode_associate,
    encode_p_data,
    fragment_message,
    iter_pdvs,
    reject_pdu,
)

Buffer = bytes | memoryview


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayLimits:
    """Every bound and timeout of one relayed association, with the reason for its default."""

    # Largest P-DATA-TF we accept; an endpoint announcing more (or 0, unlimited) is told this instead.
    max_pdu_length: int = DEFAULT_MAX_PDU_LENGTH
    # A-ASSOCIATE-RQ/AC with 128 contexts x 10 transfer syntaxes stay well below this.
    max_associate_length: int = DEFAULT_MAX_ASSOCIATE_LENGTH
    # C-FIND/C-GET/C-MOVE identifiers held while a decision is made; real ones are a few KiB.
    max_identifier_length: int = 1024 * 1024
    # Head of a C-STORE data set held for a decision: Patient ID and Study UID come early in tag order,
    # within the first kilobytes; one 16 KiB PDU holds them, and a smaller head stalls the stream less.
    store_head_length: int = 16 * 1024
    # PS3.8 9.1.5 ARTIM: pynetdicom and DCMTK use 30 s for request/release/close supervision.
    artim_timeout: float = 30.0
    connect_timeout: float = 10.0
    # No traffic either way for this long ends the association (a C-MOVE sends pending responses).
    idle_timeout: float = 600.0
    # A question not answered in time is answered "deny" (fail closed).
    decision_timeout: float = 10.0
    # Responses under review at once (C-FIND post-filter), decided as a batch; bounds held data.
    max_pending_reviews: int = 64


class Timer(enum.Enum):
    __hash__ = object.__hash__

    ARTIM = "artim"  # waiting for A-ASSOCIATE-RQ, A-ASSOCIATE-AC, or for transports to close
    CONNECT = "connect"
    IDLE = "idle"  # the driver re-arms it while traffic flows; it fires after idle_timeout of silence
    DECISION = "decision"


# ---- commands the driver executes ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    side: Side
    data: Buffer


@dataclass(frozen=True, slots=True)
class OpenUpstream:
    target: Any  # whatever the association verdict named: the driver knows how to connect to it


@dataclass(frozen=True, slots=True)
class PauseReading:
    side: Side


@dataclass(frozen=True, slots=True)
class ResumeReading:
    side: Side


@dataclass(frozen=True, slots=True)
class StartTimer:
    timer: Timer
    seconds: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    timer: Timer


@dataclass(frozen=True, slots=True)
class Close:
    """Close one transport once what was sent to it has been written."""

    side: Side


@dataclass(frozen=True, slots=True)
class Ask:
    question: Question


@dataclass(frozen=True, slots=True)
class Log:
    level: str  # "info" | "warning" | "error"
    message: str


@dataclass(frozen=True, slots=True)
class Trace:
    side: Side
    text: str


Command = Send | OpenUpstream | PauseReading | ResumeReading | StartTimer | CancelTimer | Close | Ask | Log | Trace


# ---- questions and verdicts --------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AssociationQuestion:
    """An A-ASSOCIATE-RQ arrived (already checked by :func:`check_associate_rq`)."""

    id: int
    rq: AssociatePdu


@dataclass(frozen=True, slots=True, kw_only=True)
class AcceptQuestion:
    id: int
    rq: AssociatePdu
    ac: AssociatePdu


@dataclass(frozen=True, slots=True, kw_only=True)
class DimseQuestion:
    """A DIMSE message from ``side`` needs a decision.

    ``data_set`` is the whole identifier (C-FIND/C-GET/C-MOVE and responses) or the head of a C-STORE
    data set; ``data_set_complete`` says which.
    """

    id: int
    side: Side
    context_id: int
    abstract_syntax: str | None
    command: CommandSet
    data_set: bytes
    data_set_complete: bool
    transfer_syntax: str | None = None  # of the presentation context: how to read ``data_set``


Question = AssociationQuestion | AcceptQuestion | DimseQuestion


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardAssociation:
    """Connect to ``target`` and send ``rq`` (None: the RQ exactly as received)."""

    target: Any
    rq: AssociatePdu | None = None
    review_ac: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RejectAssociation:
    reason_text: str
    result: int = RejectResult.PERMANENT
    source: int = RejectSource.SERVICE_USER
    reason: int = RejectReason.NO_REASON


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardAccept:
    ac: AssociatePdu | None = None  # None: unchanged


@dataclass(frozen=True, slots=True, kw_only=True)
class Permit:
    """Forward the message unchanged; with ``review_responses`` each response to it is asked about."""

    review_responses: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Refuse:
    """Do not forward; answer the sender with a failure response (status 0124H unless told)."""

    comment: str
    status: int = STATUS_NOT_AUTHORIZED


@dataclass(frozen=True, slots=True, kw_only=True)
class Drop:
    """Do not forward and do not answer (a C-FIND pending response the user may not see)."""

    reason_text: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Rewrite:
    """Forward the message with its command set replaced by ``command`` (an encoded command set, e.g.
    a C-MOVE-RQ whose Move Destination was rewritten) and/or its data set replaced by ``data_set``
    (e.g. a C-FIND identifier with a return key added). What is None passes unchanged. A data set can
    be replaced only when the question held all of it (``data_set_complete``)."""

    command: bytes | None = None
    review_responses: bool = False
    data_set: bytes | None = None


Verdict = ForwardAssociation | RejectAssociation | ForwardAccept | Permit | Refuse | Drop | Rewrite


# ---- internals -----------------------------------------------------------------------------------


class _Fate(enum.Enum):
    __hash__ = object.__hash__

    PASS = "pass"
    GATHER = "gather"  # collecting the data set before asking
    ASKED = "asked"
    REFUSE = "refuse"
    DROP = "drop"
    REWRITE = "rewrite"  # forward with a replaced command set


@dataclass(slots=True)
class _Held:
    """A P-DATA-TF frame whose PDVs are (being) sorted by the fate of their message."""

    frame: Frame
    pdvs: list[Pdv]
    seqs: list[int] = field(default_factory=list)  # message seq of each processed PDV
    ends_idle: bool = False  # the frame ends at a message boundary

    @property
    def processed(self) -> bool:
        return len(self.seqs) == len(self.pdvs)


@dataclass(slots=True)
class _Message:
    started: MessageStarted
    fate: _Fate
    data: bytearray = field(default_factory=bytearray)
    complete: bool = False
    refusal: Refuse | None = None
    question: DimseQuestion | None = None
    new_command: bytes | None = None  # with fate REWRITE: the command set to send instead
    new_data_set: bytes | None = None  # with fate REWRITE: the data set to send instead
    command_sent: bool = False
    data_set_sent: bool = False

    @property
    def rewritten(self) -> bool:
        """Every replacement went out (the message's own PDVs may still be held, and are skipped)."""
        return (self.new_command is None or self.command_sent) and (self.new_data_set is None or self.data_set_sent)


class _Inbound:
    """What one side sends us: framing, message assembly, frames held for a decision."""

    __slots__ = ("asked_requests", "asked_responses", "assembler", "eof", "framer", "held", "messages", "queue")

    def __init__(self, limits: RelayLimits) -> None:
        self.framer = PduFramer(limits.max_pdu_length, limits.max_associate_length)
        self.assembler = MessageAssembler()
        self.queue: deque[Frame] = deque()
        self.held: deque[_Held] = deque()
        self.messages: dict[int, _Message] = {}  # messages whose fate is not PASS, by seq
        self.eof = False
        # Messages whose fate is ASKED, by kind: counted, since _blocked() runs for every PDU.
        self.asked_requests = 0
        self.asked_responses = 0


# (state, side) pairs in which a P-DATA-TF is relayed: where the pass-through path may run.
_RELAY_DATA = frozenset(
    (state, side) for (state, side, pdu), (action, _) in TRANSITIONS.items() if action is Action.RELAY_DATA
)

_NEEDS_WHOLE_IDENTIFIER = frozenset(
    {CommandField.C_FIND_RQ, CommandField.C_GET_RQ, CommandField.C_MOVE_RQ, CommandField.C_FIND_RSP}
)


def _may_need_question(frames: list[Frame], asked: frozenset[int] | None) -> bool:
    """Whether a command in these P-DATA-TF PDUs may need a question (a header scan).

    ``asked``: the Command Fields asked about, or None when any command may be. A command whole in
    one PDV (control 0x03, how every DICOM implementation sends a command set of a few hundred
    bytes) is peeked at for its Command Field; a fragmented one or one that cannot be read counts as
    needing a question, and the general path then decides.
    """
    for frame in frames:
        data = frame.data
        pos, end = 6, len(data)
        while pos + 6 <= end:
            length = int.from_bytes(data[pos : pos + 4], "big")
            control = data[pos + 5]
            if control & 0x01:
                if asked is None or control != 0x03:
                    return True
                field = peek_command_field(data[pos + 6 : min(end, pos + 4 + length)])
                if field is None or field in asked:
                    return True
            pos += 4 + length
    return False


def _pdvs(context_id: int, value: bytes, kind: int, max_pdu: int) -> list[Pdv]:
    """A command set (``kind`` 0x01) or data set (0x00) as PDVs that each fit a PDU the receiver
    accepts, the last one flagged last (PS3.8 Annex E, E.2)."""
    room = max(1, (max_pdu or DEFAULT_MAX_PDU_LENGTH) - 6)
    chunks = [value[i : i + room] for i in range(0, len(value), room)] or [b""]
    return [Pdv(context_id, kind | (0x02 if n == len(chunks) - 1 else 0), chunk) for n, chunk in enumerate(chunks)]


def _p_data_pdus(pdvs: list[Pdv], max_pdu: int) -> list[bytes]:
    """Pack PDVs, in order, into as few P-DATA-TF PDUs as the receiver's maximum allows."""
    limit = max_pdu or DEFAULT_MAX_PDU_LENGTH
    pdus: list[bytes] = []
    batch: list[Pdv] = []
    size = 0
    for pdv in pdvs:
        need = 6 + len(pdv.value)
        if batch and size + need > limit:
            pdus.append(encode_p_data(batch))
            batch, size = [], 0
        batch.append(pdv)
        size += need
    if batch:
        pdus.append(encode_p_data(batch))
    return pdus


class RelayCore:
    """One relayed association, from the accepted client connection to the last close.

    Construct it when a client connects, pass :meth:`start`'s commands to the driver, then call the
    event methods. Every method returns the list of commands to execute, in order.
    """

    def __init__(
        self,
        limits: RelayLimits | None = None,
        *,
        ask_requests: bool = False,
        ask_commands: frozenset[int] | None = None,
        trace: bool = False,
        busy: bool = False,
        label: str = "",
    ) -> None:
        self.limits = limits or RelayLimits()
        self.ask_requests = ask_requests
        # Which requests are asked about (None: every request but C-CANCEL). The workstation agent asks
        # only about C-MOVE, so C-STORE data sets keep streaming through the pass-through path.
        self.ask_commands = ask_commands
        self.trace = trace
        self.busy = busy
        self.label = label
        self.state = State.AWAIT_RQ
        self.rq: AssociatePdu | None = None
        self.ac: AssociatePdu | None = None
        self.close_reason = ""
        self._in = {side: _Inbound(self.limits) for side in Side}
        self._ids = itertools.count(1)
        self._question: AssociationQuestion | AcceptQuestion | None = None
        self._dimse_questions: dict[int, tuple[Side, int]] = {}
        self._verdict: ForwardAssociation | None = None
        self._rq_bytes: Buffer = b""
        self._frame_bytes: Buffer = b""  # the RQ as received
        self._max_receive = {Side.CLIENT: 0, Side.SERVER: 0}  # what each side can receive (0: unknown)
        self._contexts: dict[int, str | None] = {}  # accepted presentation contexts: abstract syntax
        self._transfer: dict[int, str] = {}  # ... and the transfer syntax the acceptor chose
        self._reviewed: set[int] = set()  # message ids (from the client) whose responses we review
        self._mid_message = {Side.CLIENT: False, Side.SERVER: False}  # output to side is mid-message
        self._injections: dict[Side, list[bytes]] = {Side.CLIENT: [], Side.SERVER: []}
        self._connected = {Side.CLIENT: True, Side.SERVER: False}
        self._closed = {Side.CLIENT: False, Side.SERVER: False}
        self.bytes_in = {Side.CLIENT: 0, Side.SERVER: 0}
        self.messages_seen = {Side.CLIENT: 0, Side.SERVER: 0}

    # ---- events from the driver -----------------------------------------------------------------
    def start(self) -> list[Command]:
        return [StartTimer(Timer.ARTIM, self.limits.artim_timeout)]

    @property
    def closed(self) -> bool:
        return self.state == State.CLOSED

    def data_received(self, side: Side, data: Buffer) -> list[Command]:
        out: list[Command] = []
        if self.state == State.CLOSED or self._closed[side]:
            return out
        self.bytes_in[side] += len(data)
        inbound = self._in[side]
        try:
            frames = inbound.framer.feed(data)
        except ProtocolError as error:
            self._protocol_error(side, error, out)
            return out
        if frames:
            if not inbound.queue and self._pass_through(side, frames, data, out):
                return out
            inbound.queue.extend(frames)
            self._pump(side, out)
        return out

    def _pass_through(self, side: Side, frames: list[Frame], data: Buffer, out: list[Command]) -> bool:
        """Forward a chunk of P-DATA-TF PDUs that need no decision as one slice of what was read.

        The bulk of every transfer takes this path: the PDUs are checked (PDV structure, fragment
        order) and followed (message boundaries), then the original bytes go on without a copy.
        Returns False, having done nothing, when the frames need the general path.
        """
        inbound = self._in[side]
        if self.trace or (self.state, side) not in _RELAY_DATA or inbound.held or inbound.messages:
            return False
        for frame in frames:
            if frame.type is not PduType.P_DATA_TF:
                return False
        if self._may_ask(side) and _may_need_question(frames, self._asked(side)):
            return False  # a command that may need a question: the general path can hold it
        try:
            events = inbound.assembler.feed_p_data(frames)
        except ProtocolError as error:
            self._protocol_error(side, error, out)
            return True
        self._on_events(side, events, out)
        framer = inbound.framer
        buffers: list[Buffer] = [frames[0].data] if framer.joined else []
        start, end = framer.span
        if end > start:
            buffers.append(memoryview(data)[start:end])
        last = len(buffers) - 1
        for n, buffer in enumerate(buffers):
            self._emit(side, buffer, inbound.assembler.idle if n == last else False, out)
        return True

    def eof_received(self, side: Side) -> list[Command]:
        """The side closed its writing half (or the whole connection, see :meth:`connection_lost`)."""
        out: list[Command] = []
        inbound = self._in[side]
        if inbound.eof or self.state == State.CLOSED:
            return out
        inbound.eof = True
        if inbound.framer.buffered:
            out.append(Log("warning", f"{side.value} closed with a truncated PDU of {inbound.framer.buffered} "
                                      "bytes"))
        state = self.state
        graceful = (
            state == State.CLOSING
            or (state == State.RELEASE_BY_CLIENT and side is Side.CLIENT)
            or (state == State.RELEASE_BY_SERVER and side is Side.SERVER)
            or state in (State.RELEASE_COLLISION, State.RELEASE_COLLISION_HALF)
        )
        if state == State.CLOSING:
            self._finish(out, self.close_reason)
        elif graceful:
            pass  # a half-close after our release request: wait for the A-RELEASE-RP
        elif state in (State.AWAIT_RQ, State.DECIDING) and side is Side.CLIENT:
            self._finish(out, "client closed before the association was established")
        elif state == State.CONNECTING and side is Side.CLIENT:
            self._finish(out, "client closed while connecting upstream")
        else:
            why = f"{side.value} closed the connection in state '{state.value}'"
            out.append(Log("warning", why + "; A-ABORT sent to the " + side.other.value))
            self._abort_side(side.other, AbortReason.NOT_SPECIFIED, out)
            self._finish(out, why)
        return out

    def connection_lost(self, side: Side) -> list[Command]:
        out = self.eof_received(side)
        self._closed[side] = True
        self._connected[side] = False
        if self.state != State.CLOSED and all(self._closed[s] or not self._connected[s] for s in Side):
            self._set_closed(out)
        return out

    def upstream_connected(self) -> list[Command]:
        out: list[Command] = []
        if self.state != State.CONNECTING:
            out.append(Close(Side.SERVER))
            return out
        self._connected[Side.SERVER] = True
        out.append(CancelTimer(Timer.CONNECT))
        out.append(Send(Side.SERVER, self._rq_bytes))
        if self._rq_bytes is not self._frame_bytes:
            self._trace_pdu(Side.CLIENT, PduType.ASSOCIATE_RQ, self._rq_bytes, out, rewritten=True)
        self.state = State.AWAIT_AC
        out.append(StartTimer(Timer.ARTIM, self.limits.artim_timeout))
        out.append(ResumeReading(Side.CLIENT))
        self._pump(Side.CLIENT, out)
        return out

    def upstream_failed(self, reason: str) -> list[Command]:
        out: list[Command] = []
        if self.state != State.CONNECTING:
            return out
        out.append(CancelTimer(Timer.CONNECT))
        self._reject(
            RejectAssociation(
                reason_text=f"upstream unreachable: {reason}",
                result=RejectResult.TRANSIENT,
                source=RejectSource.SERVICE_PROVIDER_PRESENTATION,
                reason=RejectReason.TEMPORARY_CONGESTION,
            ),
            out,
        )
        return out

    def timer_expired(self, timer: Timer) -> list[Command]:
        out: list[Command] = []
        state = self.state
        if state == State.CLOSED:
            return out
        if timer is Timer.CONNECT:
            return self.upstream_failed(f"no connection within {self.limits.connect_timeout:g} s")
        if timer is Timer.DECISION:
            self._decision_timeout(out)
        elif timer is Timer.ARTIM:
            if state == State.AWAIT_RQ:
                self._finish(out, f"no A-ASSOCIATE-RQ within {self.limits.artim_timeout:g} s (ARTIM)")
            elif state == State.AWAIT_AC:
                out.append(Log("warning", f"no A-ASSOCIATE-AC/RJ within {self.limits.artim_timeout:g} s"))
                self._abort_both(AbortReason.NOT_SPECIFIED, out, "upstream did not answer the request")
            elif state == State.CLOSING:
                self._finish(out, self.close_reason or "transports not closed in time (ARTIM)")
        elif timer is Timer.IDLE and state not in (State.CLOSING, State.AWAIT_RQ):
            out.append(Log("warning", f"no traffic for {self.limits.idle_timeout:g} s"))
            self._abort_both(AbortReason.NOT_SPECIFIED, out, "idle timeout")
        return out

    def shutdown(self) -> list[Command]:
        """The driver's shutdown deadline passed: end this association now."""
        out: list[Command] = []
        if self.state in (State.CLOSED,):
            return out
        if self.state in (State.AWAIT_RQ, State.DECIDING, State.CONNECTING):
            self._finish(out, "shutting down")
        elif self.state == State.CLOSING:
            self._finish(out, self.close_reason or "shutting down")
        else:
            self._abort_both(AbortReason.NOT_SPECIFIED, out, "shutting down")
        return out

    def answer(self, question: Question, verdict: Verdict) -> list[Command]:
        out: list[Command] = []
        if self.state == State.CLOSED:
            return out
        if isinstance(question, DimseQuestion):
            self._answer_dimse(question, verdict, out)
        elif question is self._question:
            self._question = None
            out.append(CancelTimer(Timer.DECISION))
            if isinstance(question, AssociationQuestion):
                self._answer_association(question, verdict, out)
            else:
                self._answer_accept(question, verdict, out)
        return out

    # ---- the pump: frames in order, through the state table ------------------------------------
    def _pump(self, side: Side, out: list[Command]) -> None:
        inbound = self._in[side]
        queue = inbound.queue
        while queue and not self._blocked(side):
            frame = queue[0]
            if self.state == State.CLOSED:
                queue.clear()
                return
            step = transition(self.state, side, frame.type)
            if step is None:
                queue.clear()
                self._trace_pdu(side, frame.type, frame.data, out)
                out.append(
                    Log("warning", f"{PDU_NAMES[frame.type]} from the {side.value} is not valid in state "
                                   f"'{self.state.value}'")
                )
                self._abort_both(AbortReason.UNEXPECTED_PDU, out, "unexpected PDU")
                return
            action, next_state = step
            if action is Action.RELAY_DATA:
                if not self._relay_data(side, frame, out):
                    return  # a question stopped us inside this frame; it stays first in the queue
                if queue and queue[0] is frame:  # (a protocol error empties the queue)
                    queue.popleft()
                continue
            queue.popleft()
            if inbound.held and action is not Action.IGNORE:
                # A non-data PDU in the middle of a message being decided: only A-ABORT is legal.
                inbound.held.clear()
                if frame.type != PduType.ABORT:
                    self._protocol_error(
                        side, ProtocolError(f"{PDU_NAMES[frame.type]} inside an unfinished DIMSE message",
                                            reason=AbortReason.UNEXPECTED_PDU), out)
                    return
            self._trace_pdu(side, frame.type, frame.data, out)
            if action is Action.ASK_ASSOCIATION:
                self._on_associate_rq(frame, out)
            elif action is Action.FORWARD_AC:
                self.state = next_state
                self._on_associate_ac(frame, out)
            elif action is Action.FORWARD_RJ:
                self._send(Side.CLIENT, frame.data, out)
                self._finish(out, "association rejected by the server")
            elif action is Action.FORWARD:
                self._send(side.other, frame.data, out)
                self.state = next_state
                if next_state == State.CLOSING:
                    out.append(CancelTimer(Timer.IDLE))
                    self.close_reason = "released"
                    out.append(StartTimer(Timer.ARTIM, self.limits.artim_timeout))
                    if self._in[side.other].eof or not self._connected[side.other]:
                        self._finish(out, "released")
            elif action is Action.FORWARD_AND_CLOSE:
                self._send(side.other, frame.data, out)
                out.append(Log("info", f"{side.value} aborted the association"))
                self._finish(out, f"aborted by the {side.value}")
            # Action.IGNORE: nothing

    def _blocked(self, side: Side) -> bool:
        if self.state in PAUSED_STATES:
            return True
        inbound = self._in[side]
        if inbound.asked_requests:
            return True
        # Responses under review (C-FIND post-filter) are pipelined: several may be asked about at
        # once, so the policy can decide them in one batch; their frames still leave in order.
        return inbound.asked_responses >= self.limits.max_pending_reviews

    # ---- association establishment --------------------------------------------------------------
    def _on_associate_rq(self, frame: Frame, out: list[Command]) -> None:
        out.append(CancelTimer(Timer.ARTIM))
        try:
            rq = decode_associate(frame.data)
            check_associate_rq(rq)
            extract_user_identity(rq)  # a second 0x58 or a malformed one is refused here
        except AssociationRejected as rejected:
            self._reject(
                RejectAssociation(reason_text=str(rejected), result=rejected.result, source=rejected.source,
                                  reason=rejected.reason),
                out,
            )
            return
        except ProtocolError as error:
            self._protocol_error(Side.CLIENT, error, out)
            return
        self.rq = rq
        if self.busy:
            self._reject(
                RejectAssociation(
                    reason_text="too many concurrent associations",
                    result=RejectResult.TRANSIENT,
                    source=RejectSource.SERVICE_PROVIDER_PRESENTATION,
                    reason=RejectReason.LOCAL_LIMIT_EXCEEDED,
                ),
                out,
            )
            return
        self._rq_bytes = self._frame_bytes = frame.data
        self.state = State.DECIDING
        question = AssociationQuestion(id=next(self._ids), rq=rq)
        self._question = question
        out.append(PauseReading(Side.CLIENT))
        out.append(StartTimer(Timer.DECISION, self.limits.decision_timeout))
        out.append(Ask(question))

    def _answer_association(self, question: AssociationQuestion, verdict: Verdict, out: list[Command]) -> None:
        if isinstance(verdict, RejectAssociation):
            self._reject(verdict, out)
            return
        if not isinstance(verdict, ForwardAssociation):
            raise TypeError(f"{type(verdict).__name__} does not answer an AssociationQuestion")
        rq = verdict.rq or question.rq
        capped = self._cap_max_length(rq, Side.CLIENT)
        if verdict.rq is not None or capped is not rq:
            self._rq_bytes = capped.encode()  # otherwise the original bytes go upstream untouched
        self.rq = capped
        self._contexts = {pc.id: pc.abstract_syntax for pc in capped.presentation_contexts}
        self._verdict = verdict
        self.state = State.CONNECTING
        out.append(StartTimer(Timer.CONNECT, self.limits.connect_timeout))
        out.append(OpenUpstream(verdict.target))

    def _cap_max_length(self, pdu: AssociatePdu, sender: Side) -> AssociatePdu:
        """Record what ``sender`` can receive; announce at most our bound (PS3.8 D.1, 0 = unlimited)."""
        info = pdu.user_information
        announced = info.maximum_length if info else None
        bound = self.limits.max_pdu_length
        if info is None or announced is None:
            self._max_receive[sender] = bound
            return pdu
        if announced == 0 or announced > bound:
            self._max_receive[sender] = bound
            return pdu.with_user_information(info.with_maximum_length(bound))
        self._max_receive[sender] = announced
        return pdu

    def _on_associate_ac(self, frame: Frame, out: list[Command]) -> None:
        out.append(CancelTimer(Timer.ARTIM))
        try:
            ac = decode_associate(frame.data)
            info = ac.user_information
            if info is None:
                raise ProtocolError("A-ASSOCIATE-AC has no User Information item")
            info.check()
        except ProtocolError as error:
            self._protocol_error(Side.SERVER, error, out)
            return
        capped = self._cap_max_length(ac, Side.SERVER)
        self.ac = capped
        for pc in capped.presentation_contexts:
            if pc.result != 0:
                self._contexts.pop(pc.id, None)
            elif pc.transfer_syntaxes:
                self._transfer[pc.id] = pc.transfer_syntaxes[0]
        assert self.rq is not None
        if self._verdict is not None and self._verdict.review_ac:
            self.state = State.REVIEWING_AC
            question = AcceptQuestion(id=next(self._ids), rq=self.rq, ac=capped)
            self._question = question
            out.append(PauseReading(Side.SERVER))
            out.append(StartTimer(Timer.DECISION, self.limits.decision_timeout))
            out.append(Ask(question))
            return
        self._send(Side.CLIENT, frame.data if capped is ac else capped.encode(), out)
        self._established(out)

    def _answer_accept(self, question: AcceptQuestion, verdict: Verdict, out: list[Command]) -> None:
        if isinstance(verdict, RejectAssociation):
            # Refusing an association the server accepted: abort upstream, reject downstream.
            self._send(Side.SERVER, abort_pdu(AbortSource.SERVICE_USER), out)
            self._reject(verdict, out)
            return
        if not isinstance(verdict, ForwardAccept):
            raise TypeError(f"{type(verdict).__name__} does not answer an AcceptQuestion")
        ac = verdict.ac or question.ac
        self._send(Side.CLIENT, ac.encode(), out)
        self.state = State.ESTABLISHED
        self._established(out)

    def _established(self, out: list[Command]) -> None:
        self.state = State.ESTABLISHED
        out.append(StartTimer(Timer.IDLE, self.limits.idle_timeout))
        out.append(ResumeReading(Side.SERVER))
        out.append(ResumeReading(Side.CLIENT))
        self._pump(Side.SERVER, out)
        self._pump(Side.CLIENT, out)

    def _reject(self, verdict: RejectAssociation, out: list[Command]) -> None:
        out.append(
            Log("warning", f"association rejected ({verdict.result}, {verdict.source}, {verdict.reason}): "
                           f"{verdict.reason_text}")
        )
        data = reject_pdu(RejectResult(verdict.result), RejectSource(verdict.source), verdict.reason)
        self._trace_pdu(Side.SERVER, PduType.ASSOCIATE_RJ, data, out, synthesised=True)
        out.append(Send(Side.CLIENT, data))
        self._finish(out, f"rejected: {verdict.reason_text}")

    # ---- data transfer ---------------------------------------------------------------------------
    def _may_ask(self, side: Side) -> bool:
        return (self.ask_requests) or (side is Side.SERVER and bool(self._reviewed))

    def _asked(self, side: Side) -> frozenset[int] | None:
        """The Command Fields a command from ``side`` is asked about (None: any), see
        :meth:`_on_message_started`; responses under review can be of any kind."""
        if not self.ask_requests or (side is Side.SERVER and self._reviewed):
            return None
        return self.ask_commands

    def _relay_data(self, side: Side, frame: Frame, out: list[Command]) -> bool:
        """Process one P-DATA-TF; False if a question stopped processing inside it."""
        inbound = self._in[side]
        if not inbound.held and not inbound.messages and not (
                self._may_ask(side) and _may_need_question([frame], self._asked(side))):
            return self._relay_fast(side, frame, out)
        if inbound.held and inbound.held[-1].frame is frame:
            held = inbound.held[-1]  # resuming a frame a question interrupted
        else:
            try:
                held = _Held(frame, iter_pdvs(frame.data))
            except ProtocolError as error:
                self._protocol_error(side, error, out)
                return True
            inbound.held.append(held)
            self._trace_pdvs(side, held, out)
        assembler = inbound.assembler
        for pdv in held.pdvs[len(held.seqs):]:
            seq = assembler.seq
            held.seqs.append(seq)
            message = inbound.messages.get(seq)
            if message is not None and message.fate is _Fate.GATHER and not pdv.is_command:
                message.data += pdv.value
            try:
                events = assembler.feed(pdv.context_id, pdv.control, pdv.value)
            except ProtocolError as error:
                self._protocol_error(side, error, out)
                return True
            self._on_events(side, events, out)
            message = inbound.messages.get(seq)
            if message is not None and message.fate is _Fate.GATHER:
                limit = (self.limits.max_identifier_length
                         if message.started.command.command_field in _NEEDS_WHOLE_IDENTIFIER
                         else self.limits.store_head_length)
                if message.complete or len(message.data) >= limit:
                    self._ask_dimse(side, message, out)
            if self._blocked(side) and not held.processed:
                return False  # resumed from here when the answer comes
        held.ends_idle = assembler.idle
        self._flush_held(side, out)
        return True

    def _relay_fast(self, side: Side, frame: Frame, out: list[Command]) -> bool:
        """No decision can be pending on this side: follow the messages and forward the bytes."""
        inbound = self._in[side]
        try:
            pdvs = iter_pdvs(frame.data)
            if self.trace:
                self._trace_pdu(side, PduType.P_DATA_TF, frame.data, out, pdvs=pdvs)
            feed = inbound.assembler.feed
            for pdv in pdvs:
                self._on_events(side, feed(pdv.context_id, pdv.control, pdv.value), out)
        except ProtocolError as error:
            self._protocol_error(side, error, out)
            return True
        self._emit(side, frame.data, inbound.assembler.idle, out)
        return True

    def _on_events(self, side: Side, events: Iterable[AssemblyEvent], out: list[Command]) -> None:
        for event in events:
            if isinstance(event, MessageStarted):
                self._on_message_started(side, event, out)
            else:
                self._on_message_completed(side, event, out)

    def _on_message_started(self, side: Side, event: MessageStarted, out: list[Command]) -> None:
        command = event.command
        self.messages_seen[side] += 1
        needs = False
        if command.is_request and command.command_field != CommandField.C_CANCEL_RQ and self.ask_requests:
            needs = self.ask_commands is None or command.command_field in self.ask_commands
        elif (command.is_response and side is Side.SERVER
              and command.message_id_responded_to in self._reviewed):
            if command.status in STATUS_PENDING:
                needs = command.has_data_set
            else:
                self._reviewed.discard(command.message_id_responded_to or 0)
        if not needs:
            return
        message = _Message(event, _Fate.GATHER)
        self._in[side].messages[event.seq] = message
        if not command.has_data_set:
            self._ask_dimse(side, message, out)

    def _on_message_completed(self, side: Side, event: MessageCompleted, out: list[Command]) -> None:
        if self.trace:
            out.append(Trace(side, f"DIMSE {event.command.summary()} ctx={event.context_id} "
                                   f"dataset={event.data_set_length if event.command.has_data_set else '-'}"))
        message = self._in[side].messages.get(event.seq)
        if message is None:
            return
        message.complete = True
        if message.fate is _Fate.REFUSE:
            self._send_refusal(side, message, out)

    def _ask_dimse(self, side: Side, message: _Message, out: list[Command]) -> None:
        started = message.started
        question = DimseQuestion(
            id=next(self._ids),
            side=side,
            context_id=started.context_id,
            abstract_syntax=self._contexts.get(started.context_id),
            transfer_syntax=self._transfer.get(started.context_id),
            command=started.command,
            data_set=bytes(message.data),
            data_set_complete=message.complete or not started.command.has_data_set,
        )
        message.fate = _Fate.ASKED
        self._count_asked(side, message, +1)
        message.question = question
        message.data = bytearray()
        self._dimse_questions[question.id] = (side, started.seq)
        if self._blocked(side):
            out.append(PauseReading(side))
        out.append(StartTimer(Timer.DECISION, self.limits.decision_timeout))
        out.append(Ask(question))

    def _answer_dimse(self, question: DimseQuestion, verdict: Verdict, out: list[Command]) -> None:
        entry = self._dimse_questions.pop(question.id, None)
        if entry is None:
            return  # answered already (timed out and refused)
        side, seq = entry
        inbound = self._in[side]
        message = inbound.messages.get(seq)
        if message is None:
            return
        if not self._dimse_questions:
            out.append(CancelTimer(Timer.DECISION))
        if message.fate is _Fate.ASKED:
            self._count_asked(side, message, -1)
        if isinstance(verdict, Rewrite) and verdict.data_set is not None and not question.data_set_complete:
            out.append(Log("error", f"{question.command.name}: a data set held only in part cannot be "
                                    "rewritten; refused"))
            verdict = Refuse(comment="identifier too long to be checked")
        if isinstance(verdict, Permit | Rewrite):
            message.fate = _Fate.PASS
            if isinstance(verdict, Rewrite):
                message.fate = _Fate.REWRITE
                message.new_command = verdict.command
                message.new_data_set = verdict.data_set
            if verdict.review_responses and question.command.message_id is not None:
                self._reviewed.add(question.command.message_id)
        elif isinstance(verdict, Refuse):
            message.fate = _Fate.REFUSE
            message.refusal = verdict
            out.append(Log("info", f"{question.command.name} id={question.command.message_id} refused: "
                                   f"{verdict.comment}"))
            if message.complete:
                self._send_refusal(side, message, out)
        elif isinstance(verdict, Drop):
            message.fate = _Fate.DROP
        else:
            raise TypeError(f"{type(verdict).__name__} does not answer a DimseQuestion")
        self._flush_held(side, out)
        if not self._blocked(side) and self.state != State.CLOSED:
            out.append(ResumeReading(side))
            self._pump(side, out)

    def _count_asked(self, side: Side, message: _Message, delta: int) -> None:
        inbound = self._in[side]
        if message.started.command.is_response:
            inbound.asked_responses += delta
        else:
            inbound.asked_requests += delta

    def _decision_timeout(self, out: list[Command]) -> None:
        question = self._question
        if question is not None:
            self._question = None
            out.append(Log("warning", "no decision in time: denied (fail closed)"))
            if isinstance(question, AcceptQuestion):
                self._send(Side.SERVER, abort_pdu(AbortSource.SERVICE_USER), out)
            self._reject(
                RejectAssociation(reason_text="no decision in time (fail closed)", result=RejectResult.TRANSIENT,
                                  source=RejectSource.SERVICE_PROVIDER_PRESENTATION,
                                  reason=RejectReason.TEMPORARY_CONGESTION),
                out,
            )
            return
        for question_id, (side, seq) in list(self._dimse_questions.items()):
            message = self._in[side].messages.get(seq)
            if message is not None and message.question is not None:
                out.append(Log("warning", f"no decision in time for {message.question.command.name}: "
                                          "refused (fail closed)"))
                self._answer_dimse(message.question, Refuse(comment="Authorization decision timed out"), out)
            self._dimse_questions.pop(question_id, None)

    def _send_refusal(self, side: Side, message: _Message, out: list[Command]) -> None:
        refusal = message.refusal
        command = message.started.command
        if refusal is None or not command.is_request:
            return
        response = refusal_response(command, status=refusal.status, comment=refusal.comment)
        pdus = fragment_message(message.started.context_id, response, None, self._max_receive[side])
        if self.trace:
            out.append(Trace(side.other, f"DIMSE {command.name.replace('RQ', 'RSP')} "
                                         f"re={command.message_id} status=0x{refusal.status:04X} (synthesised)"))
        if self._mid_message[side]:
            self._injections[side].extend(pdus)
        else:
            for pdu in pdus:
                self._send(side, pdu, out)
        message.refusal = None

    def _flush_held(self, side: Side, out: list[Command]) -> None:
        """Emit held frames, in order, as far as every PDV in them has a final fate."""
        inbound = self._in[side]
        messages = inbound.messages
        held = inbound.held
        # A command whose last fragment has not arrived may still be refused or rewritten: hold it.
        assembler = inbound.assembler
        incomplete = assembler.seq if assembler.collecting_command else None
        while held:
            first = held[0]
            if not first.processed or incomplete in first.seqs:
                return
            fates = [messages[s].fate if s in messages else _Fate.PASS for s in first.seqs]
            if any(f in (_Fate.GATHER, _Fate.ASKED) for f in fates):
                return
            held.popleft()
            if all(f is _Fate.PASS for f in fates):
                self._emit(side, first.frame.data, first.ends_idle, out)
                continue
            kept: list[Pdv] = []
            for pdv, seq, fate in zip(first.pdvs, first.seqs, fates, strict=True):
                if fate is _Fate.PASS:
                    kept.append(pdv)
                elif fate is _Fate.REWRITE:
                    # The first fragment of the command (of the data set) carries the whole replacement;
                    # the original's other fragments are skipped.
                    message = messages[seq]
                    replacement = message.new_command if pdv.is_command else message.new_data_set
                    if replacement is None:
                        kept.append(pdv)
                    elif pdv.is_command and not message.command_sent:
                        kept.extend(_pdvs(pdv.context_id, replacement, 0x01, self._max_receive[side.other]))
                        message.command_sent = True
                    elif not pdv.is_command and not message.data_set_sent:
                        kept.extend(_pdvs(pdv.context_id, replacement, 0x00, self._max_receive[side.other]))
                        message.data_set_sent = True
            for pdu in _p_data_pdus(kept, self._max_receive[side.other]):
                self._emit(side, pdu, first.ends_idle, out)
        # Forget the fates no frame needs any more: a message passed (PASS is what an unknown message
        # gets, so the rest of its data set takes the pass-through path) or finished being refused,
        # dropped or rewritten, and referenced by no held frame.
        live = {s for h in held for s in h.seqs}
        for seq in [s for s, m in messages.items() if s not in live and m.refusal is None and (
                    m.fate is _Fate.PASS or (m.fate is _Fate.REWRITE and m.rewritten)
                    or (m.complete and m.fate in (_Fate.REFUSE, _Fate.DROP)))]:
            del messages[seq]

    def _emit(self, side: Side, data: Buffer, ends_idle: bool, out: list[Command]) -> None:
        target = side.other
        out.append(Send(target, data))
        self._mid_message[target] = not ends_idle
        if not ends_idle:
            return
        pending = self._injections[target]
        if pending:
            self._injections[target] = []
            out.extend(Send(target, pdu) for pdu in pending)

    # ---- endings ----------------------------------------------------------------------------------
    def _protocol_error(self, side: Side, error: ProtocolError, out: list[Command]) -> None:
        out.append(Log("warning", f"malformed data from the {side.value}: {error}; A-ABORT "
                                  f"(source {int(error.source)}, reason {int(error.reason)})"))
        self._in[side].queue.clear()
        self._in[side].held.clear()
        if self._connected[side]:
            out.append(Send(side, abort_pdu(error.source, error.reason)))
        other = side.other
        if self._connected[other] and self.state not in (State.AWAIT_RQ, State.DECIDING, State.CONNECTING):
            # The other side never sees the malformed PDU, only that the association ended.
            out.append(Send(other, abort_pdu(AbortSource.SERVICE_PROVIDER, AbortReason.NOT_SPECIFIED)))
        self._finish(out, f"protocol error from the {side.value}: {error}")

    def _abort_both(self, reason: AbortReason, out: list[Command], why: str) -> None:
        for side in Side:
            self._abort_side(side, reason, out)
        self._finish(out, why)

    def _abort_side(self, side: Side, reason: AbortReason, out: list[Command]) -> None:
        if self._connected[side] and not self._closed[side]:
            data = abort_pdu(AbortSource.SERVICE_PROVIDER, reason)
            self._trace_pdu(side.other, PduType.ABORT, data, out, synthesised=True)
            out.append(Send(side, data))

    def _finish(self, out: list[Command], why: str) -> None:
        """Close both transports (after what was queued to them is written) and end the association."""
        if self.state == State.CLOSED:
            return
        self.close_reason = self.close_reason or why
        for timer in Timer:
            out.append(CancelTimer(timer))
        for side in Side:
            self._close(side, out)
        self._set_closed(out)

    def _close(self, side: Side, out: list[Command]) -> None:
        if self._connected[side] and not self._closed[side]:
            self._closed[side] = True
            out.append(Close(side))

    def _set_closed(self, out: list[Command]) -> None:
        if self.state != State.CLOSED:
            self.state = State.CLOSED
            for timer in Timer:
                out.append(CancelTimer(timer))
            out.append(Log("info", f"association closed: {self.close_reason or 'connection closed'}; "
                                   f"{self.bytes_in[Side.CLIENT]} bytes C>S, {self.bytes_in[Side.SERVER]} "
                                   f"bytes S>C, {self.messages_seen[Side.CLIENT]}+"
                                   f"{self.messages_seen[Side.SERVER]} messages"))

    def _send(self, side: Side, data: Buffer, out: list[Command]) -> None:
        if self._connected[side] and not self._closed[side]:
            out.append(Send(side, data))

    # ---- tracing ------------------------------------------------------------------------------------
    def _trace_pdu(self, side: Side, pdu_type: PduType, data: Buffer, out: list[Command], *,
                   pdvs: list[Pdv] | None = None, rewritten: bool = False, synthesised: bool = False) -> None:
        if not self.trace:
            return
        text = f"{PDU_NAMES[pdu_type]} {len(data)} bytes"
        try:
            if pdu_type in (PduType.ASSOCIATE_RQ, PduType.ASSOCIATE_AC):
                pdu = decode_associate(data)
                info = pdu.user_information
                identity = info.find(ItemType.USER_IDENTITY_RQ if pdu_type == PduType.ASSOCIATE_RQ
                                     else ItemType.USER_IDENTITY_AC) if info else None
                contexts = pdu.presentation_contexts
                accepted = sum(1 for pc in contexts if pc.result in (None, 0))
                text += (f" called={pdu.called_ae!r} calling={pdu.calling_ae!r} contexts={accepted}/"
                         f"{len(contexts)} max_pdu={info.maximum_length if info else None}")
                if identity is not None:
                    text += f" user-identity=0x{identity.type:02x}"
                    if pdu_type == PduType.ASSOCIATE_RQ and identity.value:
                        text += f" type={identity.value[0]}"
            elif pdu_type in (PduType.ASSOCIATE_RJ, PduType.ABORT):
                view = memoryview(data)
                text += f" ({view[7]}, {view[8]}, {view[9]})" if pdu_type == PduType.ASSOCIATE_RJ else (
                    f" (source {view[8]}, reason {view[9]})")
            elif pdu_type == PduType.P_DATA_TF:
                pdvs = pdvs if pdvs is not None else iter_pdvs(data)
                text += " " + " ".join(
                    f"[ctx={p.context_id} {'cmd' if p.is_command else 'data'}{' last' if p.is_last else ''} "
                    f"{len(p.value)}]" for p in pdvs)
        except ProtocolError as error:
            text += f" (malformed: {error})"
        if rewritten:
            text += " (rewritten)"
        if synthesised:
            text += " (synthesised)"
        out.append(Trace(side, text))

    def _trace_pdvs(self, side: Side, held: _Held, out: list[Command]) -> None:
        if self.trace:
            self._trace_pdu(side, PduType.P_DATA_TF, held.frame.data, out, pdvs=held.pdvs)


__all__ = [
    "AcceptQuestion",
    "Ask",
    "AssociationQuestion",
    "CancelTimer",
    "Close",
    "Command",
    "DimseQuestion",
    "Drop",
    "ForwardAccept",
    "ForwardAssociation",
    "Log",
    "OpenUpstream",
    "PauseReading",
    "Permit",
    "Question",
    "Refuse",
    "RejectAssociation",
    "RelayCore",
    "RelayLimits",
    "ResumeReading",
    "Rewrite",
    "Send",
    "StartTimer",
    "Timer",
    "Trace",
    "Verdict",
]
