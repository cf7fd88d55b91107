"""What the relay core asks its driver to do: the driver's whole vocabulary (sans-I/O, as in h11).

The core returns a list of commands for every event it is given; the driver
(:mod:`dicomwire.aio`) executes them in order and never decides anything itself.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .association import Side

if TYPE_CHECKING:
    from .questions import Question
    from .trace import Fact

Buffer = bytes | bytearray | memoryview


class Timer(enum.Enum):
    """The association's timers; what each supervises, and what its expiry does.

    * ``ARTIM`` (PS3.8 9.1.5): from the transport's arrival until the A-ASSOCIATE-RQ (expiry: close,
      no answer), from the RQ sent upstream until the A-ASSOCIATE-AC/RJ (expiry: A-ABORT to both), and
      from the last A-RELEASE-RP until both transports have closed (expiry: close them).
    * ``CONNECT``: from the association verdict until the upstream transport is up (expiry: the client
      gets A-ASSOCIATE-RJ, transient, temporary congestion).
    * ``IDLE``: while established, no byte either way for this long (expiry: A-ABORT to both). The
      driver re-arms it lazily; it never fires while traffic flows.

    Each question has a deadline of its own: see :class:`Deadline`.
    """

    __hash__ = object.__hash__

    ARTIM = "artim"
    CONNECT = "connect"
    IDLE = "idle"


@dataclass(frozen=True, slots=True)
class Deadline:
    """The time a question may take (``RelayLimits.decision_timeout`` from the moment it is asked).

    At expiry the question is answered for the policy, closed: an association question by
    A-ASSOCIATE-RJ (transient), a request by its refusal, a response under review by dropping it. One
    deadline per question: a slow answer to one never extends another's. Equal for the same question object.
    """

    question: Question


TimerKey = Timer | Deadline


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
    timer: TimerKey
    seconds: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    timer: TimerKey


@dataclass(frozen=True, slots=True)
class Close:
    """Close one transport once what was sent to it has been written."""

    side: Side


@dataclass(frozen=True, slots=True)
class Ask:
    """Put ``question`` to the association's policy; the answer comes back through ``RelayCore.answer``."""

    question: Question


@dataclass(frozen=True, slots=True)
class Log:
    level: str  # "debug" | "info" | "warning" | "error"
    message: str


class NoticeKind(enum.Enum):
    """Something the policy may want to record or tell a person, that changes nothing in the relay."""

    MALFORMED = "malformed"  # a PDU, command set or data set that cannot be read one way only
    VIOLATION = "violation"  # a DIMSE rule broken: duplicate Message ID, unaccepted context, stray response
    DECISION_TIMEOUT = "decision_timeout"  # a question not answered in time: refused (fail closed)
    FAILED = "failed"  # a final response with a failure status went on (a refusal the user should hear of)
    REJECTED = "rejected"  # an A-ASSOCIATE-RJ from the server went on to the client; ``code``: result, source, reason
    ABORTED = "aborted"  # an A-ABORT from the server went on to the client; ``code``: source, reason


@dataclass(frozen=True, slots=True, kw_only=True)
class Notice:
    kind: NoticeKind
    side: Side
    detail: str
    command: Any = None  # the CommandSet concerned, if any
    code: tuple[int, ...] = ()  # the PDU's own fields, for REJECTED and ABORTED (PS3.8 9.3.4, 9.3.8)


@dataclass(frozen=True, slots=True)
class Tell:
    """Pass a :class:`Notice` to the association's policy."""

    notice: Notice


def server_refusal(data: Buffer) -> list[Tell]:
    """An A-ASSOCIATE-RJ or A-ABORT from the server, relayed to the client, as a notice for the person
    refused: RJ result, source, reason (PS3.8 9.3.4, bytes 8-10); A-ABORT source, reason (9.3.8, bytes 9-10)."""
    if len(data) < 10:
        return []
    if data[0] == 0x03:
        return [Tell(Notice(kind=NoticeKind.REJECTED, side=Side.SERVER, detail="A-ASSOCIATE-RJ",
                            code=(data[7], data[8], data[9])))]
    return [Tell(Notice(kind=NoticeKind.ABORTED, side=Side.SERVER, detail="A-ABORT", code=(data[8], data[9])))]


@dataclass(frozen=True, slots=True)
class Trace:
    """A fact for the trace sink (only when tracing is on); the CLI formats it."""

    fact: Fact


Command = (Send | OpenUpstream | PauseReading | ResumeReading | StartTimer | CancelTimer | Close | Ask | Log | Tell
           | Trace)

__all__ = [
    "Ask",
    "CancelTimer",
    "Close",
    "Command",
    "Deadline",
    "Log",
    "Notice",
    "NoticeKind",
    "OpenUpstream",
    "PauseReading",
    "ResumeReading",
    "Send",
    "StartTimer",
    "Tell",
    "Timer",
    "TimerKey",
    "Trace",
    "server_refusal",
]
