"""State shared by every worker and instance of a site's server agent (issue 15 items 5 and 6).

Three things must be the same whichever process a peer reaches (``docs/deployment-ha.md``):

* **Outstanding C-MOVEs.** The PACS opens its C-STORE sub-operations (PS3.4 C.4.2) to the return
  listener of whichever instance the load balancer picks; that instance must find the move another one
  permitted, check the image against it (:meth:`MoveRecord.covers`), and count it against the number of
  sub-operations the PACS announced (PS3.4 C.4.2.1.6), until the final response.
* **Failed type-2 logins** per source (:mod:`server_agent.throttle`): a guesser spread over the workers
  must not get ``max_failures`` guesses from each.
* **Ended sessions** (OIDC Back-Channel Logout 1.0 section 2.7): the logout reaches one instance; a
  new association on another with a token of that session is refused there too.

:class:`SharedState` is the contract; :class:`LocalShared` (one process, the default, no Redis) and
:class:`server_agent.shared_redis.RedisShared` implement it and pass the same tests. Every method may
raise :class:`SharedUnavailable`: the caller then refuses (fail closed), never guesses.

Bounded: at most ``MAX_MOVES_PER_DESTINATION`` outstanding moves per destination and
``MAX_MOVE_BYTES`` per move record (a C-MOVE naming more UIDs than that is refused, not half-shared);
everything expires (moves at their ``move_timeout``, counts after their window, ended sessions after
``remember``).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from audit.events import Reason

from .config import ThrottleConfig
from .throttle import LoginThrottle

MAX_MOVES_PER_DESTINATION = 256
MAX_MOVE_BYTES = 256 * 1024  # about 4,000 UIDs: an IMAGE-level move of a large series
# The unique key of each Query/Retrieve level (PS3.4 C.6.1.1, C.6.2.1): what a C-MOVE names at it.
LEVEL_KEY = {"PATIENT": "patient_id", "STUDY": "study_instance_uid", "SERIES": "series_instance_uid",
             "IMAGE": "sop_instance_uid"}


class SharedUnavailable(Exception):
    """The shared store cannot be reached or refused an update: whatever needed it is refused (the
    association A-ASSOCIATE-RJ transient, the sub-operation 0124H, the login as throttled), and logged."""

    reason = Reason.SHARED_STATE_UNAVAILABLE


class MoveRefused(Exception):
    """A permitted C-MOVE that cannot be made outstanding (too many for its destination, too large):
    the C-MOVE is refused 0124H rather than relayed with a return path that would refuse its images."""


def digest(value: str) -> str:
    """A fixed-size key for a peer-chosen string (a session id, a subject): never the string itself."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass(frozen=True, slots=True, kw_only=True)
class MoveRecord:
    """One permitted C-MOVE as every process sees it: what its sub-operations must match, and whose
    it is (the user's description, never a token, so that another instance can decide them)."""

    id: str
    destination: str  # the Move Destination, APP@WS
    calling_ae: str  # the Move Originator AE Title the PACS will quote (PS3.7 9.1.1.1)
    message_id: int | None
    who: tuple[str, str]  # (kind, sub): several candidates are one as long as one user made them all
    level: str  # Query/Retrieve level
    members: Mapping[str, frozenset[str]]  # unique key -> the values the move named
    owner: str  # the process that permitted it (its own sub-operations are decided by its association)
    subject: Mapping[str, Any] = field(default_factory=dict)  # Subject fields, token excluded
    context: Mapping[str, Any] = field(default_factory=dict)

    def covers(self, image: Mapping[str, str]) -> bool:
        """Whether an image is one this move asked for: every key the move named at its level and above
        must name this image (a list of UIDs names each of its members, C.2.2.2.2)."""
        if self.level not in LEVEL_KEY or LEVEL_KEY[self.level] not in self.members:
            return False  # a move without the unique key of its level names nothing we can check
        return all(image.get(key, "") in values for key, values in self.members.items())

    def dumps(self) -> bytes:
        return orjson.dumps({"id": self.id, "destination": self.destination, "calling_ae": self.calling_ae,
                             "message_id": self.message_id, "who": list(self.who), "level": self.level,
                             "members": {k: sorted(v) for k, v in self.members.items()}, "owner": self.owner,
                             "subject": dict(self.subject), "context": dict(self.context)})

    @classmethod
    def loads(cls, raw: bytes) -> MoveRecord:
        data = orjson.loads(raw)
        return cls(id=data["id"], destination=data["destination"], calling_ae=data["calling_ae"],
                   message_id=data["message_id"], who=(data["who"][0], data["who"][1]), level=data["level"],
                   members={k: frozenset(v) for k, v in data["members"].items()}, owner=data["owner"],
                   subject=data["subject"], context=data["context"])


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """The answer to a sub-operation: the move it belongs to (one of its sub-operations now counted),
    or why there is none."""

    move: MoveRecord | None
    reason: Reason


def choose(moves: list[MoveRecord], originator_ae: str | None, originator_id: int | None,
           image: Mapping[str, str]) -> tuple[list[MoveRecord], Reason]:
    """The moves a sub-operation may belong to, most likely first, or why none can be: those of the
    Move Originator (PS3.7 9.1.1.1), one user's only (otherwise nothing says whose image it is), that
    asked for this image."""
    candidates = [m for m in moves if (not originator_ae or m.calling_ae == originator_ae)
                  and (originator_id is None or m.message_id == originator_id)]
    if not candidates:
        return [], Reason.NO_MATCHING_MOVE
    if len({m.who for m in candidates}) > 1:
        return [], Reason.AMBIGUOUS_MOVE
    covering = [m for m in candidates if m.covers(image)]
    return covering, (Reason.PDP if covering else Reason.NOT_IN_MOVE)


class SharedState(Protocol):
    """What the server agent's processes share. ``problem``: why the store cannot be used now (None:
    it can); a process with a problem refuses new associations and reports itself not ready."""

    @property
    def problem(self) -> str | None: ...

    async def add_move(self, move: MoveRecord, timeout: float) -> None:
        """Outstanding for ``timeout`` seconds at most; raises :class:`MoveRefused` when full or too large."""

    async def respond(self, move: MoveRecord, announced: int | None, final: bool) -> None:
        """A C-MOVE-RSP: the sub-operations announced so far (the largest total seen counts); a final one
        ends the move."""

    async def remove_move(self, move: MoveRecord) -> None: ...

    async def move_active(self, destination: str) -> bool: ...

    async def claim(self, destination: str, originator_ae: str | None, originator_id: int | None,
                    image: Mapping[str, str]) -> Claim:
        """The move a sub-operation belongs to, with the sub-operation counted against its announced
        number (atomically: two instances cannot both take the last one)."""

    async def admit_login(self, source: str) -> float | None:
        """None: one type-2 attempt may go to the provider (then :meth:`settle_login`); else seconds to wait."""

    async def settle_login(self, source: str, *, failed: bool) -> bool:
        """The outcome of an admitted attempt; True when it made the source refused."""

    async def end_session(self, *, sid: str, sub: str, issued_at: float, remember: float) -> None: ...

    async def session_ended(self, *, sid: str, sub: str, issued_at: float) -> bool:
        """Whether a token of session ``sid`` (or of ``sub``, issued at ``issued_at``) was logged out."""

    async def close(self) -> None: ...


@dataclass(slots=True)
class _Outstanding:
    record: MoveRecord
    expires: float
    announced: int | None = None
    relayed: int = 0


class LocalShared:
    """:class:`SharedState` for one process (``[server] workers = 1`` without ``[shared] redis``)."""

    def __init__(self, throttle: ThrottleConfig, *, max_ended: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._moves: dict[str, dict[str, _Outstanding]] = {}  # destination -> id -> move
        self._throttle = LoginThrottle(throttle, clock=clock)
        self._ended: OrderedDict[str, tuple[float, float]] = OrderedDict()  # digest -> (iat, forget at)
        self._max_ended = max_ended

    @property
    def problem(self) -> str | None:
        return None

    async def add_move(self, move: MoveRecord, timeout: float) -> None:
        if len(move.dumps()) > MAX_MOVE_BYTES:
            raise MoveRefused(f"the C-MOVE names more than {MAX_MOVE_BYTES // 1024} KiB of keys")
        moves = self._live(move.destination)
        if len(moves) >= MAX_MOVES_PER_DESTINATION:
            raise MoveRefused(f"{MAX_MOVES_PER_DESTINATION} C-MOVEs already outstanding for {move.destination!r}")
        self._moves.setdefault(move.destination, {})[move.id] = _Outstanding(move, self._clock() + timeout)

    async def respond(self, move: MoveRecord, announced: int | None, final: bool) -> None:
        outstanding = self._moves.get(move.destination, {}).get(move.id)
        if outstanding is None:
            return
        if final:
            await self.remove_move(move)
        elif announced is not None:
            outstanding.announced = max(outstanding.announced or 0, announced)

    async def remove_move(self, move: MoveRecord) -> None:
        moves = self._moves.get(move.destination, {})
        moves.pop(move.id, None)
        if not moves:
            self._moves.pop(move.destination, None)

    def _live(self, destination: str) -> dict[str, _Outstanding]:
        now, moves = self._clock(), self._moves.get(destination, {})
        for key in [k for k, m in moves.items() if m.expires <= now]:
            del moves[key]
        return moves

    async def move_active(self, destination: str) -> bool:
        return bool(self._live(destination))

    async def claim(self, destination: str, originator_ae: str | None, originator_id: int | None,
                    image: Mapping[str, str]) -> Claim:
        moves = self._live(destination)
        covering, reason = choose([m.record for m in moves.values()], originator_ae, originator_id, image)
        for record in covering:
            outstanding = moves[record.id]
            if outstanding.announced is None or outstanding.relayed < outstanding.announced:
                outstanding.relayed += 1
                return Claim(move=record, reason=Reason.PDP)
        return Claim(move=None, reason=reason if not covering else Reason.NOT_IN_MOVE)

    async def admit_login(self, source: str) -> float | None:
        return self._throttle.admit(source)

    async def settle_login(self, source: str, *, failed: bool) -> bool:
        before = self._throttle.sizes[1]
        self._throttle.settle(source, failed=failed)
        return self._throttle.sizes[1] > before

    async def end_session(self, *, sid: str, sub: str, issued_at: float, remember: float) -> None:
        self._forget()
        key = "sid:" + digest(sid) if sid else "sub:" + digest(sub)
        earlier = self._ended.pop(key, (float("-inf"), 0.0))[0]
        self._ended[key] = (max(earlier, issued_at), self._clock() + remember)
        while len(self._ended) > self._max_ended:
            self._ended.popitem(last=False)

    async def session_ended(self, *, sid: str, sub: str, issued_at: float) -> bool:
        self._forget()
        now = self._clock()  # each entry's own expiry too: _forget stops at the first one still live
        by_sid = self._ended.get("sid:" + digest(sid)) if sid else None
        if by_sid is not None and by_sid[1] > now:
            return True
        ended = self._ended.get("sub:" + digest(sub)) if sub else None
        return ended is not None and ended[1] > now and issued_at <= ended[0]

    def _forget(self) -> None:
        now = self._clock()  # kept in order of ending (each moved to the end): the oldest first
        while self._ended and next(iter(self._ended.values()))[1] <= now:
            self._ended.popitem(last=False)

    async def close(self) -> None:
        return None


__all__ = ["LEVEL_KEY", "MAX_MOVES_PER_DESTINATION", "MAX_MOVE_BYTES", "Claim", "LocalShared", "MoveRecord",
           "MoveRefused", "SharedState", "SharedUnavailable", "choose", "digest"]
