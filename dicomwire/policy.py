"""The contract between a relay and the policies that decide for it (mitmproxy's per-connection model).

A :class:`RelayServer <dicomwire.aio.RelayServer>` is given a :class:`PolicyFactory`. For each
connection whose transport is up it calls :meth:`PolicyFactory.open` once, and the
:class:`AssociationPolicy` it gets answers every question about that association and nothing else:
everything the policy knows about one association (who, what it was allowed, what it still awaits)
is an attribute of that object, so two associations can never be confused with each other, whatever
ids their peers choose. Registries that span associations hold references to these objects.

Each answering method returns its verdict at once when it needs no I/O, or an awaitable of it; the
driver runs an awaitable as a task and, if it raises, answers the question's ``fail_closed`` verdict
(a policy that raises is a deny). :meth:`AssociationPolicy.close` is called exactly once, when the
association is over.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .association import Side
from .commands import Notice
from .dimse import CommandField
from .questions import (
    AcceptQuestion,
    AcceptVerdict,
    AssociationQuestion,
    AssociationVerdict,
    ForwardAccept,
    ForwardAssociation,
    Permit,
    RequestQuestion,
    RequestVerdict,
    ResponseQuestion,
    ResponseVerdict,
)

# Which requests a relay asks its policy about: None, every request but C-CANCEL (deny by default);
# otherwise those Command Fields only (the workstation agent asks about C-MOVE only, so C-STORE data
# sets keep the pass-through path). Responses are asked about when their request's verdict says so.
Asks = frozenset[int] | None
EVERY_REQUEST: Asks = None
NO_REQUEST: Asks = frozenset()


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionInfo:
    """What the driver knows about the client's connection, for the policy to decide with."""

    association_id: str  # unique in this process: every listener draws from one sequence
    peer: tuple[str, int] | None
    local: tuple[str, int] | None
    peer_certificate: dict[str, Any] | None = None
    listener: str = ""  # the name the composition root gave the listener ("main", "plain", "return")
    via: tuple[str, int] | None = None  # the load balancer ``peer`` came through (PROXY protocol), if any


@dataclass(frozen=True, slots=True, kw_only=True)
class Ending:
    """How an association ended, for the policy's close hook."""

    reason: str
    established: bool
    bytes_in: dict[Side, int] = field(default_factory=dict)
    messages: dict[Side, int] = field(default_factory=dict)


class AssociationPolicy(Protocol):
    """Answers the questions of one association; see the module docstring."""

    def associate(self, question: AssociationQuestion) -> AssociationVerdict | Awaitable[AssociationVerdict]: ...

    def accept(self, question: AcceptQuestion) -> AcceptVerdict | Awaitable[AcceptVerdict]: ...

    def request(self, question: RequestQuestion) -> RequestVerdict | Awaitable[RequestVerdict]: ...

    def response(self, question: ResponseQuestion) -> ResponseVerdict | Awaitable[ResponseVerdict]: ...

    def notice(self, notice: Notice) -> None:
        """Something the core refused or ended on its own (malformed input, a DIMSE rule broken, a
        verdict too late): for the policy's records. It changes nothing."""

    def close(self, ending: Ending) -> None:
        """The association is over: release what it held (registries, pending work), record its end."""


class PolicyFactory(Protocol):
    asks: Asks

    def open(self, connection: ConnectionInfo) -> AssociationPolicy: ...


class Forwarding:
    """What a policy that decides only whether an association goes where says to everything else: the
    A-ASSOCIATE-AC, every request and response pass; notices and the end change nothing."""

    def accept(self, question: AcceptQuestion) -> AcceptVerdict | Awaitable[AcceptVerdict]:
        return ForwardAccept()

    def request(self, question: RequestQuestion) -> RequestVerdict | Awaitable[RequestVerdict]:
        return Permit()

    def response(self, question: ResponseQuestion) -> ResponseVerdict | Awaitable[ResponseVerdict]:
        return Permit()

    def notice(self, notice: Notice) -> None:
        pass

    def close(self, ending: Ending) -> None:
        pass


class TransparentPolicy(Forwarding):
    """Relay everything, unchanged, to one upstream: what ``dicom-relay`` does (asks about nothing)."""

    asks: Asks = NO_REQUEST

    def __init__(self, upstream: Any) -> None:
        self.upstream = upstream

    def open(self, connection: ConnectionInfo) -> TransparentPolicy:
        return self  # holds nothing per association

    def associate(self, question: AssociationQuestion) -> AssociationVerdict:
        return ForwardAssociation(target=self.upstream)


def asked(asks: Asks, command_field: int) -> bool:
    """Whether a request with this Command Field is asked about (C-CANCEL never is: it only stops an
    operation already allowed)."""
    if command_field == CommandField.C_CANCEL_RQ:
        return False
    return asks is None or command_field in asks


__all__ = [
    "EVERY_REQUEST",
    "NO_REQUEST",
    "Asks",
    "AssociationPolicy",
    "ConnectionInfo",
    "Ending",
    "Forwarding",
    "PolicyFactory",
    "TransparentPolicy",
    "asked",
]
