"""The supervisor of ``[server] workers`` (server_agent.supervisor): which worker is restarted when, the
configuration each worker runs, and that more than one worker needs the shared state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from server_agent import supervisor
from server_agent.supervisor import Supervisor, worker_log


class FakeProcess:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.signals: list[int] = []

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, number: int) -> None:
        self.signals.append(number)


def fake_supervisor(monkeypatch: pytest.MonkeyPatch, now: list[float]) -> tuple[Supervisor, list[int]]:
    started: list[int] = []
    pids = iter(range(100, 1000))
    monkeypatch.setattr(supervisor.time, "monotonic", lambda: now[0])
    sup = Supervisor(Path("server-agent.toml"), 2)

    def start(worker: Any) -> None:
        worker.process, worker.started = FakeProcess(next(pids)), now[0]
        started.append(worker.index)

    monkeypatch.setattr(sup, "_start", start)
    for worker in sup.workers:
        sup._start(worker)
    return sup, started


def test_a_worker_that_dies_at_once_is_restarted_later_and_later_one_that_ran_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    sup, started = fake_supervisor(monkeypatch, now)
    first = sup.workers[0]
    assert started == [1, 2]
    first.process.returncode = 1  # type: ignore[union-attr]
    now[0] += 1
    sup._watch()
    assert started == [1, 2]  # died 1 s after starting: wait 1 s
    now[0] += 1.2
    sup._watch()
    assert started == [1, 2, 1]
    first.process.returncode = 1  # type: ignore[union-attr]
    now[0] += 1
    sup._watch()
    now[0] += 1.5
    sup._watch()
    assert started == [1, 2, 1]  # again at once: 2 s now
    now[0] += 0.7
    sup._watch()
    assert started == [1, 2, 1, 1]
    now[0] += 60  # ran for a minute, then killed: restarted at once, the backoff forgotten
    first.process.returncode = -9  # type: ignore[union-attr]
    sup._watch()
    assert started == [1, 2, 1, 1, 1] and first.backoff == 1.0


def test_hup_is_forwarded_and_term_stops_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    import signal

    now = [0.0]
    sup, started = fake_supervisor(monkeypatch, now)
    sup._signal(signal.SIGHUP, None)
    assert [w.process.signals for w in sup.workers] == [[signal.SIGHUP]] * 2  # type: ignore[union-attr]
    sup._signal(signal.SIGINT, None)  # Ctrl-C: the workers are stopped as by SIGTERM
    assert [w.process.signals[-1] for w in sup.workers] == [signal.SIGTERM] * 2  # type: ignore[union-attr]
    sup.workers[0].process.returncode = 0  # type: ignore[union-attr]
    now[0] += 60
    sup._watch()
    assert sup.stopping and started == [1, 2]  # stopping: nothing restarted


def test_each_worker_writes_its_own_chain_beside_the_configured_log() -> None:
    assert worker_log(Path("/var/log/dia/decisions.jsonl"), 3) == Path("/var/log/dia/decisions.w3.jsonl")
