"""The server agent's decision log: chained records, checkpoints when idle, and loud failure."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from audit.chain import verify
from audit.events import Action, AuthorizationEvent, Decision, Reason, Who
from audit.signing import read_public_key
from server_agent import decisions
from server_agent.decisions import DecisionLog, load_key


def permit(n: int = 0) -> AuthorizationEvent:
    """A permitted C-FIND with Message ID ``n`` (what tells records apart here)."""
    return AuthorizationEvent(association="1", action=Action.C_FIND, decision=Decision.PERMIT,
                              reason=Reason.NODE_POLICY, message_id=n, user=Who(kind="user", sub="rad", username="rad"))


def test_records_are_chained_and_checkpointed_even_when_idle(tmp_path: Path) -> None:
    key = load_key(tmp_path / "key")
    assert (tmp_path / "key").stat().st_mode & 0o777 == 0o600 and load_key(tmp_path / "key") == key
    assert (tmp_path / "key.pub").stat().st_mode & 0o777 == 0o644
    log = DecisionLog(tmp_path / "decisions.jsonl", key, checkpoint_interval=0.2)
    log.write(permit())
    time.sleep(0.7)  # idle: the writer still signs checkpoints
    log.close()
    report = verify(tmp_path / "decisions.jsonl", read_public_key(tmp_path / "key.pub"))
    assert report.ok and report.final and report.checkpoints >= 3 and report.records >= 5
    assert (report.signature, report.key_id) == ("Ed25519", key.key_id)


def test_a_failing_disk_makes_the_log_unhealthy(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "decisions.jsonl", b"k" * 32, checkpoint_interval=60)
    assert log.healthy
    os.close(log._writer._out.fileno())  # the file can no longer be written (as on a full or failed disk)
    log.write(permit())
    deadline = time.monotonic() + 5
    while log.healthy and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not log.healthy and "cannot write" in (log.failed or "")


def test_a_writer_behind_pauses_new_work_until_it_catches_up_and_never_drops_quietly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decisions, "BACKLOG_HIGH", 10)
    monkeypatch.setattr(decisions, "BACKLOG_LIMIT", 20)
    log = DecisionLog(tmp_path / "decisions.jsonl", b"k" * 32, checkpoint_interval=60)
    disk = threading.Event()
    original = log._writer.write_many

    def slow_disk(records: list[dict[str, object]]) -> None:
        disk.wait(10)
        original(records)

    monkeypatch.setattr(log._writer, "write_many", slow_disk)
    log.write(permit(0))
    time.sleep(0.1)  # the writer holds record 0, waiting on the disk
    for n in range(1, 12):
        log.write(permit(n))
    assert not log.healthy and log.failed is None and "behind" in (log.problem or "")
    disk.set()
    deadline = time.monotonic() + 5
    while not log.healthy and time.monotonic() < deadline:
        time.sleep(0.01)
    assert log.healthy and log.problem is None  # caught up: new work goes on
    disk.clear()
    log.write(permit(12))
    time.sleep(0.1)
    for n in range(13, 40):
        log.write(permit(n))
    assert log.dropped == 40 - 13 - 20 and "records lost" in (log.failed or "") and not log.healthy
    disk.set()
    log.close()
    written = [json.loads(line) for line in (tmp_path / "decisions.jsonl").read_text().splitlines()]
    assert [r["message_id"] for r in written if r["event"] == "authorization"] == list(range(0, 33))
    assert verify(tmp_path / "decisions.jsonl", b"k" * 32).ok


def test_one_writer_per_log_and_a_restart_continues_the_chain(tmp_path: Path) -> None:
    """Issue 15 item 2: two processes on one log interleaved two chains (verify: BROKEN, reordered). A second
    writer is refused, naming the holder; one that starts while the first is closing waits for its closing
    record and continues its chain, so a routine restart never reads as tampering."""
    key = load_key(tmp_path / "key")
    path = tmp_path / "decisions.jsonl"
    first = DecisionLog(path, key, checkpoint_interval=60)
    first.write(permit())
    with pytest.raises(decisions.DecisionLogBusy, match=f"PID {os.getpid()}"):
        DecisionLog(path, key, checkpoint_interval=60, handover_wait=0.2)
    closer = threading.Timer(0.3, first.close)  # the old process finishing while the new one starts
    closer.start()
    second = DecisionLog(path, key, checkpoint_interval=60, handover_wait=5)
    closer.join()
    second.write(permit())
    second.close()
    report = verify(path, read_public_key(tmp_path / "key.pub"))
    assert report.ok and report.final and report.records >= 4, report
