"""The C-MOVE return path: what the PACS sends back carries only what was moved (PS3.4 C.4.2).

A C-MOVE the agent permitted becomes a :class:`Move`, owned by the association that made it and kept
in the :class:`MoveRegistry` until its final response, the end of that association, or
``move_timeout``. The PACS opens its C-STORE sub-operations to the destination ``APP@WS`` on the return
listener; each one must belong to an outstanding move (found by the Move Originator AE Title and
Message ID the PACS puts in it, PS3.7 9.1.1.1), must be an image that move asked for (its patient,
study, series or instance, at the move's Query/Retrieve level), and must fit the number of
sub-operations the PACS announced; it is then decided as its move, for the user who made it.

The registry keeps what every worker and instance must see in the shared store (:mod:`.shared`: in
this process by default, Redis with ``[shared] redis``): a sub-operation that reaches another process
than the one that permitted its move is matched and counted there, and decided by that process for
the move's user (:func:`subject_of`). Its own moves it still decides through their association.
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from audit.events import Reason
from dicomwire.dimse import CommandSet, Tag

from .authn import Subject
from .authorization import Facts
from .config import ThrottleConfig
from .resources import Context
from .shared import LEVEL_KEY, LocalShared, MoveRecord, SharedState

if TYPE_CHECKING:
    from .association import ServerAssociation
    from .deidretrieve import DeidRetrieval

_COUNTS = (Tag.NUMBER_OF_REMAINING_SUBOPERATIONS, Tag.NUMBER_OF_COMPLETED_SUBOPERATIONS,
           Tag.NUMBER_OF_FAILED_SUBOPERATIONS, Tag.NUMBER_OF_WARNING_SUBOPERATIONS)


@dataclass(eq=False, slots=True, kw_only=True)
class Move:
    """One permitted C-MOVE, its request's review object (its responses tell how many images come)."""

    owner: ServerAssociation
    facts: Facts
    destination: str
    calling_ae: str
    message_id: int | None
    expires: float
    announced: int | None = None  # sub-operations the PACS said it would send (None: not said yet)
    relayed: int = 0  # sub-operations permitted
    ended: bool = False
    members: dict[str, frozenset[str]] = field(default_factory=dict)  # key -> the values the move named
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    deid: DeidRetrieval | None = None  # a research view's: its sub-operations are de-identified

    def __post_init__(self) -> None:
        resource = self.facts.resource
        for key in LEVEL_KEY.values():
            value = resource.get(key, "")
            if value:
                self.members[key] = frozenset(v.strip() for v in value.split("\\"))  # list of UIDs (C.2.2.2.2)

    @property
    def sub_operations(self) -> int:
        return self.relayed

    def respond(self, response: CommandSet, final: bool) -> None:
        """A C-MOVE-RSP: the counts say how many sub-operations there are in all (PS3.4 C.4.2.1.6)."""
        counts = [response.get(tag) for tag in _COUNTS]
        if all(isinstance(c, int) for c in counts):
            total = sum(c for c in counts if isinstance(c, int))
            self.announced = total if self.announced is None else max(self.announced, total)
        if final:
            self.ended = True

    def live(self, now: float) -> bool:
        return not self.ended and now < self.expires

    def record(self, process: str) -> MoveRecord:
        """What the other processes need to match, count and decide its sub-operations (never a token)."""
        subject, context = getattr(self.owner, "subject", None), getattr(self.owner, "context", None)
        who = getattr(self.owner, "who_key", ("", ""))
        return MoveRecord(id=self.id, destination=self.destination, calling_ae=self.calling_ae,
                          message_id=self.message_id, who=who, level=self.facts.keys.level.value,
                          members=self.members, owner=process,
                          subject=subject_fields(subject) if subject is not None else {},
                          context=dataclasses.asdict(context) if context is not None else {})


PROCESS = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"  # this process among a site's


def subject_fields(subject: Subject) -> dict[str, Any]:
    """A subject as a move record carries it: JSON values, the token left out (RFC 6750 section 5.3)."""
    fields = {f.name: getattr(subject, f.name) for f in dataclasses.fields(subject) if f.name != "token"}
    fields["roles"], fields["scopes"] = list(subject.roles), sorted(subject.scopes)
    fields["expires_at"] = None if math.isinf(subject.expires_at) else subject.expires_at
    return fields


def subject_of(record: MoveRecord) -> tuple[Subject, Context] | None:
    """The user (and association context) a move record was permitted for, or None if it names none."""
    try:
        data = dict(record.subject)
        data["roles"], data["scopes"] = tuple(data.get("roles", ())), frozenset(data.get("scopes", ()))
        data["expires_at"] = float("inf") if data.get("expires_at") is None else float(data["expires_at"])
        return Subject(**data), Context(**record.context)
    except (TypeError, ValueError):
        return None


class MoveRegistry:
    """The outstanding moves: in the shared store for every process, and this process's own
    :class:`Move` objects by id (a move leaves when it ends, when its association ends, or when it
    expires). Every method may raise :class:`~server_agent.shared.SharedUnavailable` (refuse)."""

    def __init__(self, shared: SharedState | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.shared: SharedState = shared or LocalShared(ThrottleConfig(), clock=clock)
        self._mine: dict[str, Move] = {}
        self._clock = clock

    async def add(self, move: Move) -> None:
        """Outstanding until ``move.expires``; :class:`~server_agent.shared.MoveRefused` when it cannot be."""
        await self.shared.add_move(move.record(PROCESS), timeout=max(0.001, move.expires - self._clock()))
        self._mine[move.id] = move

    async def respond(self, move: Move, response: CommandSet, final: bool) -> None:
        move.respond(response, final)
        if final:
            self._mine.pop(move.id, None)
        await self.shared.respond(move.record(PROCESS), move.announced, final)

    async def remove(self, move: Move) -> None:
        self._mine.pop(move.id, None)
        await self.shared.remove_move(move.record(PROCESS))

    async def active(self, destination: str) -> bool:
        return await self.shared.move_active(destination)

    def researching(self, destination: str, originator_ae: str | None, originator_id: int | None) -> bool:
        """Whether a live move of this process in a research view may own a sub-operation for
        ``destination``: its header must be whole before the move is claimed (a claim counts, and a
        header asked again after ``Extend`` must not count twice). Conservative when the originator is
        not named."""
        now = self._clock()
        return any(move.deid is not None and move.destination == destination and move.live(now)
                   and originator_ae in (None, move.calling_ae) and originator_id in (None, move.message_id)
                   for move in self._mine.values())

    async def match(self, destination: str, originator_ae: str | None, originator_id: int | None,
                    image: dict[str, str]) -> tuple[Move | MoveRecord | None, Reason]:
        """The move a sub-operation for ``destination`` belongs to (this process's own :class:`Move`, or
        another's record), now counted against its announced number, or why there is none."""
        claim = await self.shared.claim(destination, originator_ae, originator_id, image)
        if claim.move is None:
            return None, claim.reason
        mine = self._mine.get(claim.move.id) if claim.move.owner == PROCESS else None
        return (mine if mine is not None and mine.live(self._clock()) else claim.move), claim.reason


def originator(command: CommandSet) -> tuple[str | None, int | None]:
    """The Move Originator AE Title and Message ID a C-STORE sub-operation carries (PS3.7 9.1.1.1)."""
    ae, message_id = command.get(Tag.MOVE_ORIGINATOR_AE_TITLE), command.get(Tag.MOVE_ORIGINATOR_MESSAGE_ID)
    return (ae if isinstance(ae, str) and ae else None), (message_id if isinstance(message_id, int) else None)


__all__ = ["PROCESS", "Move", "MoveRegistry", "originator", "subject_fields", "subject_of"]
