"""Exact playbooks for the relay core: the events fed, in order, and every command expected back.

mitmproxy tests its proxy layers as ``Playbook(layer) >> event << command`` (test/mitmproxy/proxy/tutils.py);
this is the same idea for :class:`~dicomwire.relay.RelayCore`. A test writes the whole exchange::

    q = Placeholder(AssociationQuestion)
    assert (Script(RelayCore())
            >> client(RQ)
            << cancel(Timer.ARTIM) << pause(C) << start(deadline(q), 10) << ask(q)
            >> answer(q, ForwardAssociation(target=UP))
            << cancel(deadline(q)) << start(Timer.CONNECT, 10) << open_upstream(UP))

``>>`` feeds an event (one call of a core method: :func:`client`, :func:`answer`, :func:`expire`...);
``<<`` expects the next command the core returned, matched by type and the fields given (a field not
given matches anything). Every command must be expected, in the order returned, before the next event
is fed and at the end, except the types the script ignores: :class:`~dicomwire.commands.Log` and
:class:`~dicomwire.commands.Trace` unless it is made with ``logs=True`` (``ignore`` names others).
``<< state(State.X)`` checks the core's state at that point.

Questions are made by the core, so a test names them with a :class:`Placeholder`: the first command
that carries a question of its type (and passing its ``where`` predicate) binds it, later ones must carry
the same object, and events use it (``answer(q, ...)``, ``expire(deadline(q))``).

Running is lazy, as in mitmproxy: ``assert script`` runs the steps not yet run, so a script may be
extended and asserted again. A mismatch raises AssertionError with the transcript as a diff (``-``
expected, ``+`` actual); the bytes of a ``Send`` are shown decoded (PDU type, DIMSE command, status).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from dicomwire.association import Side, State
from dicomwire.commands import (
    Ask,
    CancelTimer,
    Close,
    Command,
    Deadline,
    Log,
    NoticeKind,
    OpenUpstream,
    PauseReading,
    ResumeReading,
    Send,
    StartTimer,
    Tell,
    Timer,
    TimerKey,
    Trace,
)
from dicomwire.dimse import decode_command
from dicomwire.pdu import PduType, decode_pdu
from dicomwire.pdv import iter_pdvs
from dicomwire.questions import Question, Verdict
from dicomwire.relay import RelayCore

T = TypeVar("T")
C, S = Side.CLIENT, Side.SERVER


class Placeholder(Generic[T]):
    """A value the core makes (a question) that a test names before it exists: bound by the first
    command that carries a ``kind`` passing ``where``; ``q()`` is the bound value."""

    def __init__(self, kind: type[T], where: Callable[[T], bool] | None = None, name: str = "") -> None:
        self.kind = kind
        self.where = where
        self.name = name or kind.__name__
        self.value: T | None = None

    def __call__(self) -> T:
        assert self.value is not None, f"placeholder {self.name} used before a command bound it"
        return self.value

    def match(self, value: object) -> bool:
        if self.value is not None:
            return value is self.value
        if not isinstance(value, self.kind) or (self.where is not None and not self.where(value)):
            return False
        self.value = value
        return True

    def __repr__(self) -> str:
        return f"<{self.name}>" if self.value is None else _question(self.value)


def _is(expected: object, actual: object) -> bool:
    """Field match: a placeholder binds or compares identity, a type matches instances, a callable
    (other than a type) is a predicate, anything else compares equal."""
    if isinstance(expected, Placeholder):
        return expected.match(actual)
    if isinstance(expected, type):
        return isinstance(actual, expected)
    if isinstance(expected, bytes) and isinstance(actual, bytes | bytearray | memoryview):
        return bytes(actual) == expected
    if callable(expected) and not isinstance(expected, Timer):
        return bool(expected(actual))
    return expected == actual


# -- expected commands -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DeadlineOf:
    """The :class:`Deadline` of a question named by a placeholder (resolved when matched or fed)."""

    question: Placeholder[Any]

    def key(self) -> Deadline:
        return Deadline(self.question())

    def __call__(self, actual: object) -> bool:
        return isinstance(actual, Deadline) and self.question.match(actual.question)

    def __repr__(self) -> str:
        return f"Deadline({self.question!r})"


def deadline(question: Placeholder[Any]) -> DeadlineOf:
    return DeadlineOf(question)


@dataclass(frozen=True)
class Expect:
    """One expected command: its type and the fields that must match."""

    kind: type
    fields: tuple[tuple[str, object], ...]

    def matches(self, command: Command) -> bool:
        if type(command) is not self.kind:
            return False
        return all(_is(value, getattr(command, name)) for name, value in self.fields)

    def __repr__(self) -> str:
        shown = ", ".join(_show(value) for _, value in self.fields)
        return f"{self.kind.__name__}({shown})"


@dataclass(frozen=True)
class StateIs:
    """Not a command: the core's state at this point (every command so far must have been expected)."""

    state: State


def _expect(kind: type, **fields: object) -> Expect:
    return Expect(kind, tuple((name, value) for name, value in fields.items() if value is not ANY))


ANY: Any = object()


def send(side: Side, data: object = ANY) -> Expect:
    """``data``: the exact bytes, or a predicate on them (see :func:`pdu`, :func:`response`)."""
    return _expect(Send, side=side, data=data)


def pause(side: Side) -> Expect:
    return _expect(PauseReading, side=side)


def resume(side: Side) -> Expect:
    return _expect(ResumeReading, side=side)


def start(timer: TimerKey | DeadlineOf, seconds: float = ANY) -> Expect:
    return _expect(StartTimer, timer=timer, seconds=seconds)


def cancel(timer: TimerKey | DeadlineOf) -> Expect:
    return _expect(CancelTimer, timer=timer)


def close(side: Side) -> Expect:
    return _expect(Close, side=side)


def open_upstream(target: object = ANY) -> Expect:
    return _expect(OpenUpstream, target=target)


def ask(question: Placeholder[Any] | type) -> Expect:
    return _expect(Ask, question=question)


def log(level: str, text: str = "") -> Expect:
    """A log line at ``level`` containing ``text``."""
    return _expect(Log, level=level, message=Predicate(f"...{text!r}...", lambda m: text in m))


def tell(kind: NoticeKind, side: Side = ANY) -> Expect:
    return _expect(Tell, notice=Predicate(f"{kind.name} from {side.value if side is not ANY else 'any side'}",
                                          lambda n: n.kind is kind and (side is ANY or n.side is side)))


def state(expected: State) -> StateIs:
    return StateIs(expected)


def finished(*sides: Side) -> list[Expect]:
    """How the core ends an association (``RelayCore._finish``): every timer cancelled, then each
    transport still there closed, in this order."""
    return [cancel(Timer.ARTIM), cancel(Timer.CONNECT), cancel(Timer.IDLE), *(close(side) for side in sides)]


@dataclass(frozen=True)
class Predicate:
    """A named predicate, so that a mismatch shows what was expected."""

    name: str
    test: Callable[[Any], bool]

    def __call__(self, value: Any) -> bool:
        return self.test(value)

    def __repr__(self) -> str:
        return self.name


def pdus(data: bytes) -> list[bytes]:
    """The PDUs in ``data``, each whole: what the core sends one by one on its general path."""
    out, pos = [], 0
    while pos < len(data):
        end = pos + 6 + int.from_bytes(data[pos + 2 : pos + 6], "big")
        out.append(data[pos:end])
        pos = end
    return out


def pdu(expected: object) -> Predicate:
    """Bytes that decode to ``expected`` (an :class:`~dicomwire.pdu.AssociateRJ`, an ``Abort``...)."""
    return Predicate(repr(expected), lambda data: decode_pdu(bytes(data)) == expected)


def response(name: str, status: int, to: int) -> Predicate:
    """A P-DATA-TF whose command set is the response ``name`` with ``status`` to Message ID ``to``."""
    def test(data: Any) -> bool:
        commands = [decode_command(p.value, strict=False) for p in iter_pdvs(bytes(data)) if p.is_command]
        return [(c.name, c.status, c.message_id_responded_to) for c in commands] == [(name, status, to)]
    return Predicate(f"{name} 0x{status:04X} to #{to}", test)


# -- events ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One call of a core method; ``args`` may hold placeholders or deadline keys, resolved when fed."""

    method: str
    args: tuple[object, ...]

    def feed(self, core: RelayCore) -> list[Command]:
        return list(getattr(core, self.method)(*(_resolve(arg) for arg in self.args)))

    def __repr__(self) -> str:
        return f"{self.method}({', '.join(_show(arg) for arg in self.args)})"


def _resolve(arg: object) -> object:
    if isinstance(arg, Placeholder):
        return arg()
    if isinstance(arg, DeadlineOf):
        return arg.key()
    return arg


def opened() -> Event:
    """The client's transport is up (``RelayCore.start``)."""
    return Event("start", ())


def client(data: bytes) -> Event:
    return Event("data_received", (C, data))


def server(data: bytes) -> Event:
    return Event("data_received", (S, data))


def eof(side: Side) -> Event:
    return Event("eof_received", (side,))


def lost(side: Side) -> Event:
    return Event("connection_lost", (side,))


def connected() -> Event:
    return Event("upstream_connected", ())


def unreachable(reason: str) -> Event:
    return Event("upstream_failed", (reason,))


def expire(timer: TimerKey | DeadlineOf) -> Event:
    return Event("timer_expired", (timer,))


def answer(question: Placeholder[Any] | Question, verdict: Verdict) -> Event:
    return Event("answer", (question, verdict))


def overloaded() -> Event:
    return Event("overloaded", ())


def shutdown() -> Event:
    return Event("shutdown", ())


# -- the script --------------------------------------------------------------------------------------

Step = Event | Expect | StateIs


class Script:
    """A relay core and the steps of one conversation with it; see the module docstring."""

    def __init__(self, core: RelayCore, *, logs: bool = False, ignore: tuple[type, ...] = ()) -> None:
        self.core = core
        self.ignore = (*ignore, *(() if logs else (Log, Trace)))
        self.steps: list[Step] = []
        self._ran = 0  # steps run so far
        self._queue: list[Command] = []  # commands returned, not yet expected
        self._transcript: list[str] = []  # what matched so far, as both sides would show it
        self.commands: list[Command] = []  # everything the core returned, logs included
        self._failure: AssertionError | None = None  # a failed script fails again, never passes later

    def __rshift__(self, event: Event) -> Script:
        assert isinstance(event, Event), f"only events are fed with >>, not {event!r}"
        self.steps.append(event)
        return self

    def __lshift__(self, expected: Expect | StateIs | list[Expect]) -> Script:
        items = expected if isinstance(expected, list) else [expected]
        for item in items:
            assert isinstance(item, Expect | StateIs), f"only commands are expected with <<, not {item!r}"
            self.steps.append(item)
        return self

    def __bool__(self) -> bool:
        """Run the steps not yet run; True, or AssertionError with a diff at the first mismatch."""
        if self._failure is not None:
            raise self._failure
        while self._ran < len(self.steps):
            step = self.steps[self._ran]
            self._ran += 1
            if isinstance(step, Event):
                self._boundary(f"before >> {step!r}")
                returned = step.feed(self.core)
                self.commands.extend(returned)
                self._queue = [c for c in returned if not isinstance(c, self.ignore)]
                self._transcript.append(f">> {step!r}")
            elif isinstance(step, StateIs):
                self._boundary(f"at << {step!r}")
                if self.core.state is not step.state:
                    self._fail(f"state is {self.core.state.name}, expected {step.state.name}",
                               [f"<< state({step.state.name})"], [f"<< state({self.core.state.name})"])
                self._transcript.append(f"<< state({step.state.name})")
            elif not self._queue:
                self._fail("a command was expected and none came", [f"<< {step!r}"], [])
            else:
                command = self._queue.pop(0)
                if not step.matches(command):
                    self._fail("command differs", [f"<< {step!r}"], [f"<< {render(command)}"])
                self._transcript.append(f"<< {render(command)}")
        self._boundary("at the end")
        return True

    def _boundary(self, where: str) -> None:
        if self._queue:
            self._fail(f"commands nobody expected {where}", [], [])

    def _fail(self, why: str, expected: list[str], actual: list[str]) -> None:
        later = [f"{'>>' if isinstance(s, Event) else '<<'} {s!r}" for s in self.steps[self._ran:]]
        unexpected = [f"<< {render(c)}" for c in self._queue]
        self._queue = []
        self._ran = len(self.steps)  # a failed script is not resumed
        diff = difflib.ndiff([*self._transcript, *expected, *later], [*self._transcript, *actual, *unexpected])
        lines = [line for line in diff if not line.startswith("?")]
        self._failure = AssertionError(f"script mismatch: {why} (- expected, + actual)\n" + "\n".join(lines))
        raise self._failure


# -- how commands read in a transcript ---------------------------------------------------------------


def render(command: Command) -> str:
    if isinstance(command, Send):
        return f"Send({command.side.name}, {describe_bytes(bytes(command.data))})"
    if isinstance(command, Ask):
        return f"Ask({_question(command.question)})"
    if isinstance(command, StartTimer | CancelTimer):
        seconds = f", {command.seconds:g}" if isinstance(command, StartTimer) else ""
        return f"{type(command).__name__}({_show(command.timer)}{seconds})"
    if isinstance(command, Tell):
        notice = command.notice
        return f"Tell({notice.kind.name} from {notice.side.value}: {notice.detail})"
    if isinstance(command, PauseReading | ResumeReading | Close):
        return f"{type(command).__name__}({command.side.name})"
    return repr(command)


def _show(value: object) -> str:
    if isinstance(value, Side | Timer):
        return value.name
    if isinstance(value, Deadline):
        return f"Deadline({_question(value.question)})"
    if isinstance(value, bytes):
        return describe_bytes(value)
    return repr(value)


def _question(question: object) -> str:
    command = getattr(question, "command", None)
    what = f" {command.name} #{command.message_id or command.message_id_responded_to}" if command else ""
    return f"{type(question).__name__}{what} id={getattr(question, 'id', '?')}"


def describe_bytes(data: bytes) -> str:
    """PDU by PDU: the type, and for P-DATA-TF each command (name, Message ID, status) or data PDV."""
    parts, pos = [], 0
    while pos + 6 <= len(data):
        length = int.from_bytes(data[pos + 2 : pos + 6], "big")
        one = data[pos : pos + 6 + length]
        pos += 6 + length
        try:
            kind = PduType(one[0])
        except ValueError:
            parts.append(f"PDU type 0x{one[0]:02X} ({len(one)} B)")
            continue
        if kind is PduType.P_DATA_TF:
            parts.append(f"P-DATA-TF[{_pdvs(one)}]")
        elif kind in (PduType.ASSOCIATE_RJ, PduType.ABORT):
            parts.append(repr(decode_pdu(one)))
        else:
            parts.append(f"{kind.name} ({len(one)} B)")
    if pos != len(data):
        parts.append(f"{len(data) - pos} B of a partial PDU")
    return " + ".join(parts) or "b''"


def _pdvs(one: bytes) -> str:
    shown = []
    try:
        for pdv in iter_pdvs(one):
            if pdv.is_command and pdv.is_last:
                try:
                    command = decode_command(pdv.value, strict=False)
                except Exception:  # a fragment or a malformed command: show its size only
                    shown.append(f"command ctx {pdv.context_id} {len(pdv.value)} B")
                    continue
                status = f" 0x{command.status:04X}" if command.status is not None else ""
                number = command.message_id or command.message_id_responded_to
                shown.append(f"{command.name} #{number}{status}")
            else:
                kind = "command" if pdv.is_command else "data"
                shown.append(f"{kind} ctx {pdv.context_id} {len(pdv.value)} B{' last' if pdv.is_last else ''}")
    except Exception:  # not well formed: its size is all we can say
        return f"{len(one)} B, malformed"
    return ", ".join(shown)
