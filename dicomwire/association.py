"""The relay's view of one association as a state table (PS3.8 9.2, seen from the middle).

PS3.8 Table 9-10 defines the state machine of one end of an association. A relay sits between two
ends, so its states are those of the association as a whole: waiting for the request, deciding on
it, connecting upstream, waiting for the acceptor's answer, reviewing it, established, releasing
(by one side or both at once), closing, closed.

Every state change of :class:`~dicomwire.relay.RelayCore` is one lookup in :data:`TRANSITIONS`,
keyed by the state and an event. An event is a PDU from a side (``(side, PDU type)``) or one of the
:class:`Happening` s that are not PDUs: a verdict, a timer, the end of a transport, the upstream
connection made or failed, a shutdown, malformed input. A PDU event missing from the table is a
protocol error: the relay aborts both sides with A-ABORT (source service provider, reason
unexpected-PDU), as PS3.8 action AA-8 does for an end. Any other missing pair is a bug in the caller
(:class:`RelayStateError`, naming event and state). In ``CLOSED`` every event is ignored: the core
refuses further calls.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType

from .pdu import PduType


class Side(enum.Enum):
    # Members are singletons: identity hashing is a C slot, where Enum's default hashes the name in
    # Python on every dict lookup (measured as 10% of the relay's time per PDU).
    __hash__ = object.__hash__

    CLIENT = "client"  # the association requestor (the app, or the agent in front of it)
    SERVER = "server"  # the association acceptor (the PACS, or the agent in front of it)

    @property
    def other(self) -> Side:
        return Side.SERVER if self is Side.CLIENT else Side.CLIENT

    @property
    def arrow(self) -> str:
        return "C>S" if self is Side.CLIENT else "S>C"


class State(enum.Enum):
    __hash__ = object.__hash__

    AWAIT_RQ = "awaiting A-ASSOCIATE-RQ"  # transport accepted, ARTIM running (PS3.8 Sta2)
    DECIDING = "deciding on the association"  # a question about the RQ is pending
    CONNECTING = "connecting upstream"
    AWAIT_AC = "awaiting A-ASSOCIATE-AC/RJ"  # RQ forwarded (Sta5 of the requestor)
    REVIEWING_AC = "reviewing the A-ASSOCIATE-AC"
    ESTABLISHED = "established"  # Sta6
    RELEASE_BY_CLIENT = "release requested by the client"
    RELEASE_BY_SERVER = "release requested by the server"
    RELEASE_COLLISION = "release collision"  # both sent A-RELEASE-RQ (PS3.8 Sta9-Sta12)
    RELEASE_COLLISION_HALF = "release collision, one A-RELEASE-RP seen"
    CLOSING = "closing"  # the release is complete; waiting for the transports to close (Sta13)
    CLOSED = "closed"


class Happening(enum.Enum):
    """The events that are not PDUs."""

    __hash__ = object.__hash__

    RQ_REFUSED = "the A-ASSOCIATE-RQ failed its checks, or no slot is free"
    FORWARD_VERDICT = "the association verdict: forward"
    REJECT_VERDICT = "the association verdict: reject"
    UPSTREAM_CONNECTED = "upstream connected"
    UPSTREAM_FAILED = "upstream unreachable"
    AC_PASSED = "the A-ASSOCIATE-AC passed (reviewed or not)"
    AC_REFUSED = "the A-ASSOCIATE-AC review: reject"
    DECISION_TIMEOUT = "no association verdict in time"
    DIMSE_VERDICT = "a verdict on a DIMSE message"
    DIMSE_DEADLINE = "no verdict on a DIMSE message in time"
    ARTIM_EXPIRED = "ARTIM expired"
    IDLE_EXPIRED = "no traffic for the idle timeout"
    CLIENT_EOF = "the client closed its side"
    SERVER_EOF = "the server closed its side"
    CLIENT_MALFORMED = "malformed data from the client"
    SERVER_MALFORMED = "malformed data from the server"
    SHUTDOWN = "the relay is shutting down"
    TRANSPORTS_GONE = "both transports are gone"
    INTERNAL_ERROR = "the relay's own code failed"

    @staticmethod
    def eof(side: Side) -> Happening:
        return Happening.CLIENT_EOF if side is Side.CLIENT else Happening.SERVER_EOF

    @staticmethod
    def malformed(side: Side) -> Happening:
        return Happening.CLIENT_MALFORMED if side is Side.CLIENT else Happening.SERVER_MALFORMED


Event = tuple[Side, PduType] | Happening


class Action(enum.Enum):
    __hash__ = object.__hash__

    ASK_ASSOCIATION = "check the A-ASSOCIATE-RQ and ask about it"
    OPEN_UPSTREAM = "connect upstream"
    SEND_RQ = "send the A-ASSOCIATE-RQ upstream"
    REVIEW_AC = "check the A-ASSOCIATE-AC, ask about it if the verdict said so"
    FORWARD_AC = "send the A-ASSOCIATE-AC to the client; established"
    REJECT = "send A-ASSOCIATE-RJ to the client and close"
    REFUSE_AC = "abort the server, reject the client, close"
    FORWARD_RJ = "forward the A-ASSOCIATE-RJ and close"
    RELAY_DATA = "relay P-DATA-TF"
    APPLY_VERDICT = "apply a DIMSE verdict"
    EXPIRE_QUESTION = "refuse (or drop) a DIMSE message whose verdict is late"
    FORWARD = "forward unchanged"
    FORWARD_RELEASE_RP = "forward the last A-RELEASE-RP; close once both sides are done"
    FORWARD_AND_CLOSE = "forward the A-ABORT and close"
    ABORT_BOTH = "A-ABORT to both sides and close"
    ABORT_MALFORMED = "A-ABORT to the side that sent malformed data, and to the other, and close"
    FINISH = "close both transports"
    IGNORE = "ignore (PS3.8 AA-6/AA-7)"


C, S = Side.CLIENT, Side.SERVER
P = PduType
H = Happening
_RELEASE_STATES = (State.RELEASE_BY_CLIENT, State.RELEASE_BY_SERVER, State.RELEASE_COLLISION,
                   State.RELEASE_COLLISION_HALF)

_T: dict[tuple[State, Event], tuple[Action, State]] = {
    (State.AWAIT_RQ, (C, P.ASSOCIATE_RQ)): (Action.ASK_ASSOCIATION, State.DECIDING),
    (State.AWAIT_RQ, H.ARTIM_EXPIRED): (Action.FINISH, State.CLOSED),
    (State.AWAIT_RQ, H.RQ_REFUSED): (Action.REJECT, State.CLOSED),  # no slot: refused at its first bytes
    (State.DECIDING, H.RQ_REFUSED): (Action.REJECT, State.CLOSED),
    (State.DECIDING, H.FORWARD_VERDICT): (Action.OPEN_UPSTREAM, State.CONNECTING),
    (State.DECIDING, H.REJECT_VERDICT): (Action.REJECT, State.CLOSED),
    (State.DECIDING, H.DECISION_TIMEOUT): (Action.REJECT, State.CLOSED),
    (State.CONNECTING, H.UPSTREAM_CONNECTED): (Action.SEND_RQ, State.AWAIT_AC),
    (State.CONNECTING, H.UPSTREAM_FAILED): (Action.REJECT, State.CLOSED),
    (State.AWAIT_AC, (S, P.ASSOCIATE_AC)): (Action.REVIEW_AC, State.REVIEWING_AC),
    (State.AWAIT_AC, (S, P.ASSOCIATE_RJ)): (Action.FORWARD_RJ, State.CLOSED),
    (State.AWAIT_AC, (S, P.ABORT)): (Action.FORWARD_AND_CLOSE, State.CLOSED),
    (State.AWAIT_AC, (C, P.ABORT)): (Action.FORWARD_AND_CLOSE, State.CLOSED),
    (State.AWAIT_AC, H.ARTIM_EXPIRED): (Action.ABORT_BOTH, State.CLOSED),
    (State.REVIEWING_AC, H.AC_PASSED): (Action.FORWARD_AC, State.ESTABLISHED),
    (State.REVIEWING_AC, H.AC_REFUSED): (Action.REFUSE_AC, State.CLOSED),
    (State.REVIEWING_AC, H.DECISION_TIMEOUT): (Action.REFUSE_AC, State.CLOSED),
    (State.ESTABLISHED, (C, P.RELEASE_RQ)): (Action.FORWARD, State.RELEASE_BY_CLIENT),
    (State.ESTABLISHED, (S, P.RELEASE_RQ)): (Action.FORWARD, State.RELEASE_BY_SERVER),
    (State.ESTABLISHED, H.IDLE_EXPIRED): (Action.ABORT_BOTH, State.CLOSED),
    # PS3.8 Sta7/Sta8: the side that received A-RELEASE-RQ may still send P-DATA before its RP.
    (State.RELEASE_BY_CLIENT, (S, P.P_DATA_TF)): (Action.RELAY_DATA, State.RELEASE_BY_CLIENT),
    (State.RELEASE_BY_CLIENT, (S, P.RELEASE_RP)): (Action.FORWARD_RELEASE_RP, State.CLOSING),
    (State.RELEASE_BY_CLIENT, (S, P.RELEASE_RQ)): (Action.FORWARD, State.RELEASE_COLLISION),
    (State.RELEASE_BY_SERVER, (C, P.P_DATA_TF)): (Action.RELAY_DATA, State.RELEASE_BY_SERVER),
    (State.RELEASE_BY_SERVER, (C, P.RELEASE_RP)): (Action.FORWARD_RELEASE_RP, State.CLOSING),
    (State.RELEASE_BY_SERVER, (C, P.RELEASE_RQ)): (Action.FORWARD, State.RELEASE_COLLISION),
    (State.RELEASE_COLLISION, (C, P.RELEASE_RP)): (Action.FORWARD, State.RELEASE_COLLISION_HALF),
    (State.RELEASE_COLLISION, (S, P.RELEASE_RP)): (Action.FORWARD, State.RELEASE_COLLISION_HALF),
    (State.RELEASE_COLLISION_HALF, (C, P.RELEASE_RP)): (Action.FORWARD_RELEASE_RP, State.CLOSING),
    (State.RELEASE_COLLISION_HALF, (S, P.RELEASE_RP)): (Action.FORWARD_RELEASE_RP, State.CLOSING),
    (State.CLOSING, H.ARTIM_EXPIRED): (Action.FINISH, State.CLOSED),
}

for _side in Side:
    _T[(State.ESTABLISHED, (_side, P.P_DATA_TF))] = (Action.RELAY_DATA, State.ESTABLISHED)
    _T[(State.ESTABLISHED, (_side, P.ABORT))] = (Action.FORWARD_AND_CLOSE, State.CLOSED)
    for _state in _RELEASE_STATES:
        _T[(_state, (_side, P.ABORT))] = (Action.FORWARD_AND_CLOSE, State.CLOSED)
    # Sta13: once closing, whatever still arrives is ignored (PS3.8 AA-6/AA-7, we do not answer).
    for _pdu in PduType:
        _T[(State.CLOSING, (_side, _pdu))] = (Action.IGNORE, State.CLOSING)

for _state in State:
    if _state is State.CLOSED:
        continue
    _live = _state in (State.ESTABLISHED, *_RELEASE_STATES)
    # Malformed input: A-ABORT to its sender (and to the other side, if it is there); in CLOSING, the
    # release is already complete and the garbage changes nothing.
    for _happening in (H.CLIENT_MALFORMED, H.SERVER_MALFORMED):
        if _happening is H.SERVER_MALFORMED and _state in (State.AWAIT_RQ, State.DECIDING, State.CONNECTING):
            continue  # no server side yet
        _T[(_state, _happening)] = (Action.FINISH if _state is State.CLOSING else Action.ABORT_MALFORMED,
                                    State.CLOSED)
    _T[(_state, H.SHUTDOWN)] = (Action.ABORT_BOTH if _live else Action.FINISH, State.CLOSED)
    _T[(_state, H.TRANSPORTS_GONE)] = (Action.FINISH, State.CLOSED)
    _T[(_state, H.INTERNAL_ERROR)] = (Action.ABORT_BOTH, State.CLOSED)  # fail closed, never a hang
    if _live:
        for _happening in (H.DIMSE_VERDICT, H.DIMSE_DEADLINE):
            _T[(_state, _happening)] = (Action.APPLY_VERDICT if _happening is H.DIMSE_VERDICT
                                        else Action.EXPIRE_QUESTION, _state)
    if _state in _RELEASE_STATES:
        _T[(_state, H.IDLE_EXPIRED)] = (Action.ABORT_BOTH, State.CLOSED)
    if _state is State.CLOSING:
        for _happening in (H.DIMSE_VERDICT, H.DIMSE_DEADLINE, H.IDLE_EXPIRED):
            _T[(_state, _happening)] = (Action.IGNORE, State.CLOSING)

# The end of a transport. Before an upstream exists, the client leaving ends it all; once both ends
# talk, the other side is told by A-ABORT; after our own release request a half-close is how some
# peers wait for the A-RELEASE-RP (PS3.8 9.2.2: closing is the requestor's job after the RP).
for _side in Side:
    _eof = Happening.eof(_side)
    _T[(State.CLOSING, _eof)] = (Action.FINISH, State.CLOSED)
    for _state in (State.AWAIT_AC, State.REVIEWING_AC, State.ESTABLISHED):
        _T[(_state, _eof)] = (Action.ABORT_BOTH, State.CLOSED)
    for _state in _RELEASE_STATES:
        _graceful = _state in (State.RELEASE_COLLISION, State.RELEASE_COLLISION_HALF) or (
            _state is (State.RELEASE_BY_CLIENT if _side is Side.CLIENT else State.RELEASE_BY_SERVER))
        _T[(_state, _eof)] = (Action.IGNORE, _state) if _graceful else (Action.ABORT_BOTH, State.CLOSED)
for _state in (State.AWAIT_RQ, State.DECIDING, State.CONNECTING):
    _T[(_state, H.CLIENT_EOF)] = (Action.FINISH, State.CLOSED)

TRANSITIONS: Mapping[tuple[State, Event], tuple[Action, State]] = MappingProxyType(_T)

# States in which a side's PDUs are not read at all (its reading is paused by the relay), so no PDU
# event can arise there: the relay holds the bytes until the state changes.
PAUSED_STATES = frozenset({State.DECIDING, State.CONNECTING, State.REVIEWING_AC})


class RelayStateError(RuntimeError):
    """An event the table has no entry for that is not a peer's PDU: the caller's bug, not the peer's."""

    def __init__(self, state: State, event: Event) -> None:
        super().__init__(f"event {describe(event)!r} is not valid in state {state.value!r}")
        self.state = state
        self.event = event


def describe(event: Event) -> str:
    if isinstance(event, Happening):
        return event.value
    side, pdu = event
    return f"{pdu.name} from the {side.value}"


def transition(state: State, event: Event) -> tuple[Action, State] | None:
    """The (action, next state) for an event, or None if the table has no entry."""
    return TRANSITIONS.get((state, event))
