"""The DIMSE bookkeeping of one association: which requests are outstanding, and what may pass.

PS3.7 9.1 / Annex E: a request's Message ID distinguishes it from the other requests its sender has
outstanding, and each response names the request it answers (Message ID Being Responded To). The
relay holds nothing keyed by a peer's choice without checking that choice first: a request whose
Message ID is missing or still outstanding, a request on a presentation context that was not accepted
or for another SOP class than the context's, and a response that answers nothing outstanding (or
answers it with the wrong kind of response) break these rules. Each rule says what the sender gets:
the standard failure status (the request never goes on), or A-ABORT when no response could name the
request. What is kept per request is an :class:`Exchange` object; responses and policies hold it,
not its number.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .association import Side
from .dimse import STATUS_PENDING, CommandField, CommandSet, Tag
from .errors import AbortReason, ProtocolError

# PS3.7 C.5 / Annex C: general failure statuses we answer broken requests with.
STATUS_SOP_CLASS_NOT_SUPPORTED = 0x0122  # Refused: SOP Class not supported
STATUS_DUPLICATE_INVOCATION = 0x0210  # Failure: Duplicate invocation (the Message ID is in use)

_CANCELLABLE = frozenset({CommandField.C_FIND_RQ, CommandField.C_GET_RQ, CommandField.C_MOVE_RQ})
# PS3.7 10.1: N- services name their SOP class as Requested; the others as Affected.
_REQUESTED_SOP_CLASS = frozenset({CommandField.N_GET_RQ, CommandField.N_SET_RQ, CommandField.N_ACTION_RQ,
                                  CommandField.N_DELETE_RQ})
_REQUESTS = frozenset(f for f in CommandField if f < 0x8000)


@dataclass(eq=False, slots=True)
class Exchange:
    """One request and its responses. ``review`` is what the request's verdict asked to see its
    responses with (None: they pass); ``final_seen`` once the last response has started."""

    requester: Side
    request: CommandSet
    context_id: int
    message_id: int
    review: object = None
    forwarded: bool = False  # the request went on: only then can the other side answer it
    final_seen: bool = False


class Breach(enum.Enum):
    """A DIMSE rule broken, and what the sender gets for it."""

    NO_MESSAGE_ID = "request without a Message ID"
    DUPLICATE_MESSAGE_ID = "Message ID already outstanding"
    UNKNOWN_COMMAND = "unknown Command Field"
    CONTEXT_NOT_ACCEPTED = "presentation context not accepted"
    SOP_CLASS_MISMATCH = "SOP class is not the presentation context's"
    UNEXPECTED_RESPONSE = "response to no outstanding request"
    STRAY_CANCEL = "C-CANCEL of no outstanding C-FIND, C-GET or C-MOVE"

    @property
    def status(self) -> int | None:
        """The failure status the request is refused with, or None: no response can name it."""
        if self is Breach.DUPLICATE_MESSAGE_ID:
            return STATUS_DUPLICATE_INVOCATION
        if self is Breach.SOP_CLASS_MISMATCH:
            return STATUS_SOP_CLASS_NOT_SUPPORTED
        return None

    @property
    def dropped(self) -> bool:
        """Not forwarded and not answered (a C-CANCEL has no response, PS3.7 9.3.2.3)."""
        return self is Breach.STRAY_CANCEL

    @property
    def abort_reason(self) -> AbortReason:
        return AbortReason.UNEXPECTED_PDU_PARAMETER if self is Breach.UNEXPECTED_RESPONSE else \
            AbortReason.INVALID_PDU_PARAMETER_VALUE


@dataclass(frozen=True, slots=True)
class Violation:
    breach: Breach
    detail: str


class Dialogue:
    """Outstanding requests of both sides, and the accepted presentation contexts."""

    __slots__ = ("contexts", "outstanding", "transfer_syntaxes")

    def __init__(self) -> None:
        self.contexts: dict[int, str] = {}  # accepted presentation context ID -> abstract syntax
        self.transfer_syntaxes: dict[int, str] = {}  # ... -> the transfer syntax the acceptor chose
        self.outstanding: dict[Side, dict[int, Exchange]] = {Side.CLIENT: {}, Side.SERVER: {}}

    def accept(self, context_id: int, abstract_syntax: str, transfer_syntax: str) -> None:
        self.contexts[context_id] = abstract_syntax
        self.transfer_syntaxes[context_id] = transfer_syntax

    # -- checks (no change: the pass-through path asks them ahead of the bytes) ---------------------
    def check_request(self, side: Side, command: CommandSet, context_id: int,
                      opened: frozenset[int] | set[int] = frozenset()) -> Violation | None:
        """Why the request may not pass, or None. ``opened``: Message IDs opened by requests of ``side``
        that are ahead of this one in the same read (the pass-through path looks before it commits)."""
        field = command.command_field
        if field not in _REQUESTS:
            return Violation(Breach.UNKNOWN_COMMAND, f"Command Field 0x{field:04X}")
        if field == CommandField.C_CANCEL_RQ:
            target = self.outstanding[side].get(command.message_id_responded_to or -1)
            if target is None or target.request.command_field not in _CANCELLABLE:
                return Violation(Breach.STRAY_CANCEL, f"cancels {command.message_id_responded_to}")
            # It travels on its request's presentation context: one on another context is a message the
            # PACS may read differently from us (or not at all), so it goes nowhere.
            if context_id != target.context_id:
                return Violation(Breach.STRAY_CANCEL, f"cancels {command.message_id_responded_to} on context "
                                                      f"{context_id}, not {target.context_id}")
            return None
        message_id = command.message_id
        if message_id is None:
            return Violation(Breach.NO_MESSAGE_ID, command.name)
        if message_id in self.outstanding[side] or message_id in opened:
            return Violation(Breach.DUPLICATE_MESSAGE_ID, f"{command.name} Message ID {message_id}")
        abstract = self.contexts.get(context_id)
        if abstract is None:
            return Violation(Breach.CONTEXT_NOT_ACCEPTED, f"{command.name} on context {context_id}")
        tag = Tag.REQUESTED_SOP_CLASS_UID if field in _REQUESTED_SOP_CLASS else Tag.AFFECTED_SOP_CLASS_UID
        sop_class = command.get(tag)
        if sop_class != abstract:
            return Violation(Breach.SOP_CLASS_MISMATCH, f"{command.name} for {sop_class!r} on context "
                                                        f"{context_id} ({abstract})")
        return None

    def check_response(self, side: Side, command: CommandSet, context_id: int,
                       ended: frozenset[int] | set[int] = frozenset()) -> Exchange | Violation:
        """The exchange a response from ``side`` answers, or why it answers none. ``ended``: Message IDs
        whose final response is ahead of this one in the same read."""
        answered = command.message_id_responded_to
        exchange = self.outstanding[side.other].get(answered if answered is not None else -1)
        # A request still held for its verdict never reached the other side: a "response" to it is a
        # guessed Message ID, and passing it would bypass the review the verdict may yet ask for.
        if exchange is None or not exchange.forwarded or exchange.final_seen or answered in ended:
            return Violation(Breach.UNEXPECTED_RESPONSE, f"{command.name} answers Message ID {answered}, "
                                                         "which is not outstanding")
        if command.command_field != exchange.request.command_field | 0x8000 or context_id != exchange.context_id:
            return Violation(Breach.UNEXPECTED_RESPONSE, f"{command.name} on context {context_id} does not "
                                                         f"answer {exchange.request.name} on {exchange.context_id}")
        return exchange

    # -- changes ------------------------------------------------------------------------------------
    def open(self, side: Side, command: CommandSet, context_id: int) -> Exchange | None:
        """Record a request that passed :meth:`check_request` (None for a C-CANCEL: it opens nothing)."""
        if command.command_field == CommandField.C_CANCEL_RQ or command.message_id is None:
            return None
        exchange = Exchange(side, command, context_id, command.message_id)
        self.outstanding[side][exchange.message_id] = exchange
        return exchange

    def respond(self, exchange: Exchange, response: CommandSet) -> bool:
        """Record a response that passed :meth:`check_response`; True if it is the final one, which ends
        the exchange (a later request may use its Message ID again)."""
        if response.status in STATUS_PENDING:
            return False
        exchange.final_seen = True
        self.close(exchange)
        return True

    def close(self, exchange: Exchange) -> None:
        """The exchange is over (answered, or refused by us before it went on)."""
        table = self.outstanding[exchange.requester]
        if table.get(exchange.message_id) is exchange:
            del table[exchange.message_id]

    def retrievals(self, side: Side) -> tuple[object, ...]:
        """The review objects of ``side``'s outstanding C-GETs (whose sub-operations the other side sends)."""
        return tuple(e.review for e in self.outstanding[side].values()
                     if e.request.command_field == CommandField.C_GET_RQ and e.review is not None)


class DimseViolation(ProtocolError):
    """A DIMSE rule broken in a way no response can answer: the association ends (A-ABORT)."""

    def __init__(self, violation: Violation) -> None:
        super().__init__(f"{violation.breach.value}: {violation.detail}", reason=violation.breach.abort_reason)
        self.violation = violation


def is_final(response: CommandSet) -> bool:
    return response.status not in STATUS_PENDING


__all__ = ["Breach", "Dialogue", "DimseViolation", "Exchange", "Violation", "is_final"]
