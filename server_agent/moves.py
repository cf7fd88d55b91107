"""The C-MOVE return path: what the PACS sends back carries only what was moved (PS3.4 C.4.2).

A C-MOVE the agent permitted becomes a :class:`Move`, owned by the association that made it and kept
in the :class:`MoveRegistry` until its final response, the end of that association, or
``move_timeout``. The PACS opens its C-STORE sub-operations to the destination ``APP@WS`` on the return
listener; each one must belong to an outstanding move (found by the Move Originator AE Title and
Message ID the PACS puts in it, PS3.7 9.1.1.1), must be an image that move asked for (its patient,
study, series or instance, at the move's Query/Retrieve level), and must fit the number of
sub-operations the PACS announced; it is then decided as its move, for the user who made it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from audit.events import Reason
from dicomwire.dimse import CommandSet, Tag

from .authorization import Facts

if TYPE_CHECKING:
    from .association import ServerAssociation
    from .deidretrieve import DeidRetrieval

_COUNTS = (Tag.NUMBER_OF_REMAINING_SUBOPERATIONS, Tag.NUMBER_OF_COMPLETED_SUBOPERATIONS,
           Tag.NUMBER_OF_FAILED_SUBOPERATIONS, Tag.NUMBER_OF_WARNING_SUBOPERATIONS)
# The unique key of each Query/Retrieve level (PS3.4 C.6.1.1, C.6.2.1): what a C-MOVE names at it.
_LEVEL_KEY = {"PATIENT": "patient_id", "STUDY": "study_instance_uid", "SERIES": "series_instance_uid",
              "IMAGE": "sop_instance_uid"}


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
    deid: DeidRetrieval | None = None  # a research view's: its sub-operations are de-identified

    def __post_init__(self) -> None:
        resource = self.facts.resource
        for key in _LEVEL_KEY.values():
            value = resource.get(key, "")
            if value:
                self.members[key] = frozenset(v.strip() for v in value.split("\\"))  # list of UIDs (C.2.2.2.2)

    def covers(self, image: dict[str, str]) -> bool:
        """Whether an image is one this move asked for: every key the move named at its level and above
        must name this image (a list of UIDs names each of its members)."""
        level = self.facts.keys.level.value
        if level not in _LEVEL_KEY or _LEVEL_KEY[level] not in self.members:
            return False  # a move without the unique key of its level names nothing we can check
        return all(image.get(key, "") in values for key, values in self.members.items())

    @property
    def sub_operations(self) -> int:
        return self.relayed

    def has_room(self) -> bool:
        return self.announced is None or self.relayed < self.announced

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


class MoveRegistry:
    """The outstanding moves by destination: references to :class:`Move` objects, never numbers. A move
    leaves when it ends, when its association ends, or when it expires."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._by_destination: dict[str, list[Move]] = {}
        self._clock = clock

    def add(self, move: Move) -> None:
        self._by_destination.setdefault(move.destination, []).append(move)

    def remove(self, move: Move) -> None:
        moves = self._by_destination.get(move.destination, [])
        if move in moves:
            moves.remove(move)
        if not moves:
            self._by_destination.pop(move.destination, None)

    def active(self, destination: str) -> bool:
        return bool(self._live(destination))

    def _live(self, destination: str) -> list[Move]:
        now = self._clock()
        moves = self._by_destination.get(destination, [])
        for move in [m for m in moves if not m.live(now)]:
            self.remove(move)
        return list(self._by_destination.get(destination, []))

    def match(self, destination: str, originator_ae: str | None, originator_id: int | None,
              image: dict[str, str]) -> tuple[Move | None, Reason]:
        """The move a sub-operation for ``destination`` belongs to, or why there is none. Several
        candidates are one as long as one user made them all (a viewer moving studies in parallel, each
        association with Message ID 1); otherwise nothing says whose image it is."""
        candidates = [m for m in self._live(destination)
                      if (not originator_ae or m.calling_ae == originator_ae)
                      and (originator_id is None or m.message_id == originator_id)]
        if not candidates:
            return None, Reason.NO_MATCHING_MOVE
        if len({m.owner.who_key for m in candidates}) > 1:
            return None, Reason.AMBIGUOUS_MOVE
        for move in candidates:
            if move.covers(image) and move.has_room():
                return move, Reason.PDP
        return None, Reason.NOT_IN_MOVE


def originator(command: CommandSet) -> tuple[str | None, int | None]:
    """The Move Originator AE Title and Message ID a C-STORE sub-operation carries (PS3.7 9.1.1.1)."""
    ae, message_id = command.get(Tag.MOVE_ORIGINATOR_AE_TITLE), command.get(Tag.MOVE_ORIGINATOR_MESSAGE_ID)
    return (ae if isinstance(ae, str) and ae else None), (message_id if isinstance(message_id, int) else None)


__all__ = ["Move", "MoveRegistry", "originator"]
