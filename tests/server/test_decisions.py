"""The server agent's decision log: chained records, checkpoints when idle, and loud failure."""

from __future__ import annotations

import os
import time
from pathlib import Path

from audit.chain import verify
from server_agent.decisions import DecisionLog, load_key


def test_records_are_chained_and_checkpointed_even_when_idle(tmp_path: Path) -> None:
    key = load_key(tmp_path / "key")
    assert (tmp_path / "key").stat().st_mode & 0o777 == 0o600 and load_key(tmp_path / "key") == key
    log = DecisionLog(tmp_path / "decisions.jsonl", key, checkpoint_interval=0.2)
    log.write("authorization", decision="permit", user={"username": "rad"})
    time.sleep(0.7)  # idle: the writer still signs checkpoints
    log.close()
    report = verify(tmp_path / "decisions.jsonl", key)
    assert report.ok and report.final and report.checkpoints >= 3 and report.records >= 5


def test_a_failing_disk_makes_the_log_unhealthy(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "decisions.jsonl", b"k" * 32, checkpoint_interval=60)
    assert log.healthy
    os.close(log._writer._out.fileno())  # the file can no longer be written (as on a full or failed disk)
    log.write("authorization", decision="permit")
    deadline = time.monotonic() + 5
    while log.healthy and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not log.healthy and "cannot write" in (log.failed or "")
