"""Drive a RelayCore without sockets: whole conversations as playbooks (mitmproxy's idea)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dicomwire.association import Side
from dicomwire.commands import Ask, Close, Command, Log, OpenUpstream, PauseReading, ResumeReading, Send, Tell
from dicomwire.policy import TransparentPolicy
from dicomwire.questions import Question, Verdict
from dicomwire.relay import RelayCore
from dicomwire.upstream import Upstream

Decide = Callable[[Question], Verdict | None]

_TRANSPARENT = TransparentPolicy(Upstream(host="upstream", port=0))


def transparent(question: Question) -> Verdict:
    """The relay's own transparent policy, with a placeholder upstream: playbooks never connect."""
    verdict = question.put(_TRANSPARENT)
    assert not hasattr(verdict, "__await__")
    return verdict  # type: ignore[return-value]


@dataclass
class Playbook:
    """Feeds a core, answers its questions with ``decide`` (None: leave it pending), records output."""

    core: RelayCore
    decide: Decide = transparent
    sent: dict[Side, bytearray] = field(default_factory=lambda: {Side.CLIENT: bytearray(), Side.SERVER: bytearray()})
    sends: dict[Side, list[bytes]] = field(default_factory=lambda: {Side.CLIENT: [], Side.SERVER: []})
    closed: set[Side] = field(default_factory=set)
    paused: dict[Side, bool] = field(default_factory=lambda: {Side.CLIENT: False, Side.SERVER: False})
    pending: list[Question] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    notices: list[object] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    auto_connect: bool = True

    def __post_init__(self) -> None:
        self.run(self.core.start())

    def run(self, commands: list[Command]) -> None:
        for command in commands:
            self.commands.append(command)
            if isinstance(command, Send):
                assert command.side not in self.closed, f"sent to closed {command.side}"
                self.sent[command.side] += command.data
                self.sends[command.side].append(bytes(command.data))
            elif isinstance(command, Close):
                self.closed.add(command.side)
            elif isinstance(command, PauseReading):
                self.paused[command.side] = True
            elif isinstance(command, ResumeReading):
                self.paused[command.side] = False
            elif isinstance(command, Log):
                self.logs.append(command.message)
            elif isinstance(command, Tell):
                self.notices.append(command.notice)
            elif isinstance(command, Ask):
                verdict = self.decide(command.question)
                if verdict is None:
                    self.pending.append(command.question)
                else:
                    self.run(self.core.answer(command.question, verdict))
            elif isinstance(command, OpenUpstream) and self.auto_connect:
                self.run(self.core.upstream_connected())

    def client(self, data: bytes) -> None:
        self.run(self.core.data_received(Side.CLIENT, data))

    def server(self, data: bytes) -> None:
        self.run(self.core.data_received(Side.SERVER, data))

    def answer(self, question: Question, verdict: Verdict) -> None:
        self.pending.remove(question)
        self.run(self.core.answer(question, verdict))

    def take(self, side: Side) -> bytes:
        data = bytes(self.sent[side])
        self.sent[side].clear()
        return data


def any_of(*types: type) -> Callable[[Any], bool]:
    return lambda x: isinstance(x, types)
