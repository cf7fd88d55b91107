"""The relay's view of one association as a state table (PS3.8 9.2, seen from the middle).

PS3.8 Table 9-10 defines the state machine of one end of an association. A relay sits between two
ends, so its states are those of the association as a whole: waiting for the request, waiting for
the acceptor's answer, established, releasing (by one side or both at once), closing. Each PDU that
arrives from a side is an event ``(side, PDU type)``; :data:`TRANSITIONS` says which action it
takes and the state that follows. A pair that is not in the table is a protocol error: the relay
aborts both sides with A-ABORT (source service provider, reason unexpected-PDU), as PS3.8 action
AA-8 does for an end.
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
    CLOSING = "closing"  # RJ, RP or ABORT passed; waiting for the transports to close (Sta13)
    CLOSED = "closed"


class Action(enum.Enum):
    __hash__ = object.__hash__

    ASK_ASSOCIATION = "ask about the A-ASSOCIATE-RQ"
    FORWARD_AC = "forward the A-ASSOCIATE-AC"
    FORWARD_RJ = "forward the A-ASSOCIATE-RJ and close"
    RELAY_DATA = "relay P-DATA-TF"
    FORWARD = "forward unchanged"
    FORWARD_AND_CLOSE = "forward and close"
    IGNORE = "ignore (PS3.8 AA-6)"


C, S = Side.CLIENT, Side.SERVER
P = PduType

_T: dict[tuple[State, Side, PduType], tuple[Action, State]] = {
    (State.AWAIT_RQ, C, P.ASSOCIATE_RQ): (Action.ASK_ASSOCIATION, State.DECIDING),
    (State.AWAIT_AC, S, P.ASSOCIATE_AC): (Action.FORWARD_AC, State.ESTABLISHED),
    (State.AWAIT_AC, S, P.ASSOCIATE_RJ): (Action.FORWARD_RJ, State.CLOSING),
    (State.AWAIT_AC, S, P.ABORT): (Action.FORWARD_AND_CLOSE, State.CLOSING),
    (State.AWAIT_AC, C, P.ABORT): (Action.FORWARD_AND_CLOSE, State.CLOSING),
    (State.ESTABLISHED, C, P.P_DATA_TF): (Action.RELAY_DATA, State.ESTABLISHED),
    (State.ESTABLISHED, S, P.P_DATA_TF): (Action.RELAY_DATA, State.ESTABLISHED),
    (State.ESTABLISHED, C, P.RELEASE_RQ): (Action.FORWARD, State.RELEASE_BY_CLIENT),
    (State.ESTABLISHED, S, P.RELEASE_RQ): (Action.FORWARD, State.RELEASE_BY_SERVER),
    (State.ESTABLISHED, C, P.ABORT): (Action.FORWARD_AND_CLOSE, State.CLOSING),
    (State.ESTABLISHED, S, P.ABORT): (Action.FORWARD_AND_CLOSE, State.CLOSING),
    # PS3.8 Sta7/Sta8: the side that received A-RELEASE-RQ may still send P-DATA before its RP.
    (State.RELEASE_BY_CLIENT, S, P.P_DATA_TF): (Action.RELAY_DATA, State.RELEASE_BY_CLIENT),
    (State.RELEASE_BY_CLIENT, S, P.RELEASE_RP): (Action.FORWARD, State.CLOSING),
    (State.RELEASE_BY_CLIENT, S, P.RELEASE_RQ): (Action.FORWARD, State.RELEASE_COLLISION),
    (State.RELEASE_BY_CLIENT, C, P.ABORT): (Action.FORWARD_AND_CLOSE, State.CLOSING),
    (State.RELEASE_BY_CLIENT, S, P.ABORT): (Action.FORWARD_AND_CLOSE, State.CLOSING),
    (State.RELEASE_BY_SERVER, C, P.P_DATA_TF): (Action.RELAY_DATA, State.RELEASE_BY_SERVER),
    (State.RELEASE_BY_SERVER, C, P.RELEASE_RP): (Action.FORWARD, State.CLOSING),
    (State.RELEASE_BY_SERVER, C, P.RELEASE_RQ): (Action.FORWARD, State.RELEASE_COLLISION),
    (State.RELEASE_BY_SERVER, C, P.ABORT): (Action.FORWARD_AND_CLOSE, State.CLOSING),
    (State.RELEASE_BY_SERVER, S, P.ABORT): (Action.FORWARD_AND_CLOSE, State.CLOSING),
    (State.RELEASE_COLLISION, C, P.RELEASE_RP): (Action.FORWARD, State.RELEASE_COLLISION_HALF),
    (State.RELEASE_COLLISION, S, P.RELEASE_RP): (Action.FORWARD, State.RELEASE_COLLISION_HALF),
    (State.RELEASE_COLLISION, C, P.ABORT): (Action.FORWARD_AND_CLOSE, State.CLOSING),
    (State.RELEASE_COLLISION, S, P.ABORT): (Action.FORWARD_AND_CLOSE, State.CLOSING),
    (State.RELEASE_COLLISION_HALF, C, P.RELEASE_RP): (Action.FORWARD, State.CLOSING),
    (State.RELEASE_COLLISION_HALF, S, P.RELEASE_RP): (Action.FORWARD, State.CLOSING),
    (State.RELEASE_COLLISION_HALF, C, P.ABORT): (Action.FORWARD_AND_CLOSE, State.CLOSING),
    (State.RELEASE_COLLISION_HALF, S, P.ABORT): (Action.FORWARD_AND_CLOSE, State.CLOSING),
}
# Sta13: once closing, whatever still arrives is ignored (PS3.8 AA-6/AA-7, we do not answer).
for _side in Side:
    for _pdu in PduType:
        _T[(State.CLOSING, _side, _pdu)] = (Action.IGNORE, State.CLOSING)

TRANSITIONS: Mapping[tuple[State, Side, PduType], tuple[Action, State]] = MappingProxyType(_T)

# States in which a side's PDUs are not read at all (its reading is paused by the relay), so no
# PDU event can arise there: the relay holds the bytes until the state changes.
PAUSED_STATES = frozenset({State.DECIDING, State.CONNECTING, State.REVIEWING_AC})


def transition(state: State, side: Side, pdu_type: PduType) -> tuple[Action, State] | None:
    """The (action, next state) for a PDU event, or None if it is a protocol error."""
    return TRANSITIONS.get((state, side, pdu_type))
