"""What a policy imports: the questions the relay core asks and the verdicts that answer them.

Four questions, each with its own verdicts (so a policy cannot answer one with another's):

* :class:`AssociationQuestion`: an A-ASSOCIATE-RQ arrived (route, rewrite or reject it);
* :class:`AcceptQuestion`: the A-ASSOCIATE-AC, when the association verdict asked to review it;
* :class:`RequestQuestion`: a DIMSE request (with its identifier, or the head of its data set);
* :class:`ResponseQuestion`: a response to a request whose verdict asked to review its responses.

A question is put to a policy by :meth:`put`, which calls the one method of
:class:`~dicomwire.policy.AssociationPolicy` that answers it: the only dispatch on the question's type.
:meth:`fail_closed` is the verdict that stands when no answer comes (deny).
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .association import Side
from .dimse import STATUS_NOT_AUTHORIZED, CommandSet
from .errors import RejectReason, RejectResult, RejectSource
from .pdu import AssociatePdu

if TYPE_CHECKING:
    from .policy import AssociationPolicy

_ids = itertools.count(1)  # question ids: unique in the process, only for logs and traces


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardAssociation:
    """Connect to ``target`` and send ``rq`` (None: the RQ exactly as received); with ``review_ac`` the
    A-ASSOCIATE-AC is asked about before the client sees it."""

    target: Any
    rq: AssociatePdu | None = None
    review_ac: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RejectAssociation:
    reason_text: str
    result: int = RejectResult.PERMANENT
    source: int = RejectSource.SERVICE_USER
    reason: int = RejectReason.NO_REASON

    @classmethod
    def transient(cls, reason_text: str, reason: int = RejectReason.TEMPORARY_CONGESTION) -> RejectAssociation:
        """Try again later (PS3.8 9.3.4: rejected-transient, service provider, presentation related)."""
        return cls(reason_text=reason_text, result=RejectResult.TRANSIENT,
                   source=RejectSource.SERVICE_PROVIDER_PRESENTATION, reason=reason)


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardAccept:
    ac: AssociatePdu | None = None  # None: unchanged


@dataclass(frozen=True, slots=True, kw_only=True)
class Permit:
    """Forward the message unchanged. A request's ``review``, if not None, makes every response to it a
    :class:`ResponseQuestion` carrying this same object (the policy's own state for that request), or
    only those it :meth:`~Selective.wants` when it is a :class:`Selective`."""

    review: Any = None


class Selective:
    """A review that wants only some of its request's responses asked about; the others pass as they
    came, without a question (and keep the relay's pass-through path)."""

    __slots__ = ()

    def wants(self, response: CommandSet) -> bool:
        raise NotImplementedError


def reviewed(review: object, response: CommandSet) -> bool:
    """Whether ``response``, to a request whose verdict gave ``review``, is asked about."""
    return review is not None and (not isinstance(review, Selective) or review.wants(response))


@dataclass(frozen=True, slots=True, kw_only=True)
class Refuse:
    """Do not forward; answer the sender with a failure response (status 0124H unless told)."""

    comment: str
    status: int = STATUS_NOT_AUTHORIZED


@dataclass(frozen=True, slots=True, kw_only=True)
class Drop:
    """Do not forward and do not answer (a C-FIND match the user may not see)."""

    reason_text: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Rewrite:
    """Forward the message with its command set replaced by ``command`` (encoded, e.g. a C-MOVE-RQ whose
    Move Destination was rewritten) and/or its data set by ``data_set`` (e.g. an identifier with a return
    key added). What is None passes unchanged. A whole data set can be replaced only when the question
    held all of it (``data_set_complete``); with ``keep_from``, ``data_set`` replaces only the data set's
    first ``keep_from`` bytes (at most what the question held: a header, PS3.5 7.1) and the rest of the
    data set streams on unchanged, as read (a de-identified header before untouched Pixel Data). With
    ``cut_after_pixel_data`` as well, that rest ends with its Pixel Data element and what follows it is
    dropped (:mod:`dicomwire.pixelend`; the held bytes and the streamed ones alike). ``review`` as for
    :class:`Permit`."""

    command: bytes | None = None
    data_set: bytes | None = None
    keep_from: int | None = None
    cut_after_pixel_data: bool = False
    review: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Extend:
    """Not enough of the data set to decide: ask again once ``length`` bytes of it (or all of it, if it is
    shorter) are held. A request only; ``length`` more than the question held, at most
    ``RelayLimits.max_header_length`` (else the request is refused)."""

    length: int


AssociationVerdict = ForwardAssociation | RejectAssociation
AcceptVerdict = ForwardAccept | RejectAssociation
RequestVerdict = Permit | Refuse | Rewrite | Extend
ResponseVerdict = Permit | Drop | Rewrite
Verdict = ForwardAssociation | RejectAssociation | ForwardAccept | Permit | Refuse | Drop | Rewrite | Extend

@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class AssociationQuestion:
    """An A-ASSOCIATE-RQ arrived (already checked by :func:`~dicomwire.negotiation.check_associate_rq`)."""

    rq: AssociatePdu
    id: int = field(default_factory=lambda: next(_ids))

    def put(self, policy: AssociationPolicy) -> AssociationVerdict | Awaitable[AssociationVerdict]:
        return policy.associate(self)

    def fail_closed(self, why: str) -> AssociationVerdict:
        return RejectAssociation.transient(why)


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class AcceptQuestion:
    rq: AssociatePdu  # as sent upstream
    ac: AssociatePdu
    id: int = field(default_factory=lambda: next(_ids))

    def put(self, policy: AssociationPolicy) -> AcceptVerdict | Awaitable[AcceptVerdict]:
        return policy.accept(self)

    def fail_closed(self, why: str) -> AcceptVerdict:
        return RejectAssociation.transient(why)


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class _DimseQuestion:
    """A DIMSE message from ``side`` on an accepted presentation context.

    ``data_set`` is the whole identifier (C-FIND/C-GET/C-MOVE requests, C-FIND matches) or the head of
    any other data set (a C-STORE's first ``store_head_length`` bytes); ``data_set_complete`` says which.
    ``transfer_syntax`` is the context's, in which ``data_set`` is encoded.
    """

    side: Side
    context_id: int
    abstract_syntax: str
    transfer_syntax: str
    command: CommandSet
    data_set: bytes
    data_set_complete: bool
    id: int = field(default_factory=lambda: next(_ids))


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class RequestQuestion(_DimseQuestion):
    """A request. ``retrievals``: the review objects of the other side's outstanding C-GETs, for a
    request from the server (a C-GET's C-STORE sub-operation belongs to one of them, PS3.4 C.4.3)."""

    retrievals: tuple[Any, ...] = ()

    def put(self, policy: AssociationPolicy) -> RequestVerdict | Awaitable[RequestVerdict]:
        return policy.request(self)

    def fail_closed(self, why: str) -> RequestVerdict:
        return Refuse(comment=why)


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class ResponseQuestion(_DimseQuestion):
    """A response to ``request``, whose verdict asked to review its responses with ``review`` (the
    policy's object, given back as it was). ``final``: the last response (not Pending, PS3.7 C.4)."""

    request: CommandSet
    review: Any
    final: bool

    def put(self, policy: AssociationPolicy) -> ResponseVerdict | Awaitable[ResponseVerdict]:
        return policy.response(self)

    def fail_closed(self, why: str) -> ResponseVerdict:
        return Drop(reason_text=why)


Question = AssociationQuestion | AcceptQuestion | RequestQuestion | ResponseQuestion
DimseQuestion = RequestQuestion | ResponseQuestion

_ANSWERS: dict[type, tuple[type, ...]] = {
    AssociationQuestion: (ForwardAssociation, RejectAssociation),
    AcceptQuestion: (ForwardAccept, RejectAssociation),
    RequestQuestion: (Permit, Refuse, Rewrite, Extend),
    ResponseQuestion: (Permit, Drop, Rewrite),
}


def answers(question: Question, verdict: Verdict) -> bool:
    """Whether ``verdict`` is one of the verdicts that answer ``question`` (a policy that gives another
    has failed: its question's :meth:`fail_closed` verdict stands)."""
    return isinstance(verdict, _ANSWERS[type(question)])

__all__ = [
    "AcceptQuestion",
    "AcceptVerdict",
    "AssociationQuestion",
    "AssociationVerdict",
    "DimseQuestion",
    "Drop",
    "Extend",
    "ForwardAccept",
    "ForwardAssociation",
    "Permit",
    "Question",
    "Refuse",
    "RejectAssociation",
    "RequestQuestion",
    "RequestVerdict",
    "ResponseQuestion",
    "ResponseVerdict",
    "Rewrite",
    "Selective",
    "Verdict",
    "answers",
    "reviewed",
]
