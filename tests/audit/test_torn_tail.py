"""A crash in the middle of a write leaves a torn last line: verify calls it truncated, the writer seals
it when it starts (keeping the torn bytes), and a sealed tail is a warning, never tampering."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from audit.chain import ChainWriter, log_files, verify
from audit.events import ApplicationEvent, Kind
from devtools.peers import PROJECT
from server_agent.decisions import DecisionLog
from tests.audit.fakes import Repository

KEY = b"k" * 32
TORN = b'{"decision":"permit","event":"authorization","resource":{"patient_id":"PAT-'  # a record cut short


def chained(folder: Path, count: int = 4, *, max_bytes: int = 1 << 30) -> Path:
    """A log as a crashed writer leaves it: its start (file-start and the first checkpoint) and ``count``
    records, no closing checkpoint: six lines by default."""
    path = folder / "decisions.jsonl"
    writer = ChainWriter(path, KEY, max_bytes=max_bytes, checkpoint_interval=3600)
    for n in range(count):
        writer.write({"event": "authorization", "decision": "permit", "resource": {"patient_id": f"PAT-{n}"}})
    writer._out.close()
    return path


def tear(path: Path, torn: bytes = TORN) -> None:
    with path.open("ab") as out:
        out.write(torn)


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "audit.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=PROJECT)


def verify_cli(path: Path) -> subprocess.CompletedProcess[str]:
    key_file = path.parent / "key"
    key_file.write_text(KEY.hex())
    return cli("verify", "--log", path, "--key-file", key_file)


def test_a_torn_last_line_is_truncated_not_edited_and_the_writer_seals_it_and_carries_on(tmp_path: Path) -> None:
    path = chained(tmp_path)
    tear(path)
    report = verify(path, KEY)
    assert report.damage is not None and report.damage.kind == "truncated"
    assert report.damage.line == 7 and report.damage.seq == 6 and "seals it" in report.damage.detail
    before = verify_cli(path)
    assert before.returncode == 1 and before.stdout.startswith("BROKEN: truncated at")

    writer = ChainWriter(path, KEY)  # the agent starts again: no refusal
    assert writer.sealed is not None and writer.sealed.torn_bytes == len(TORN)
    writer.write({"event": "authorization", "decision": "deny"})
    writer.close()

    lines = path.read_bytes().split(b"\n")
    assert lines[6] == TORN  # the torn bytes are kept, byte for byte, on a line of their own
    seal = json.loads(lines[7])
    assert seal["event"] == "log-truncated" and seal["seq"] == 7
    assert (seal["torn_bytes"], seal["torn_sha256"]) == (len(TORN), hashlib.sha256(TORN).hexdigest())
    assert json.loads(lines[8])["decision"] == "deny"  # and the log carries on, chained
    report = verify(path, KEY)
    assert report.ok and report.final and len(report.sealed) == 1
    assert (report.sealed[0].line, report.sealed[0].seq, report.sealed[0].torn_bytes) == (7, 7, len(TORN))
    after = verify_cli(path)
    assert after.returncode == 3, after.stdout  # a warning the officer sees, distinct from damage (1)
    assert after.stdout.startswith("ok:") and "WARNING: a write was cut short" in after.stdout
    assert f"decisions.jsonl:7 is a torn line of {len(TORN)} bytes" in after.stdout


def test_a_second_restart_neither_seals_again_nor_breaks_the_chain(tmp_path: Path) -> None:
    path = chained(tmp_path)
    tear(path)
    ChainWriter(path, KEY).close()
    again = ChainWriter(path, KEY)
    assert again.sealed is None
    again.close()
    report = verify(path, KEY)
    assert report.ok and len(report.sealed) == 1


def test_a_record_missing_only_its_newline_is_ended_not_sealed(tmp_path: Path) -> None:
    path = chained(tmp_path)
    path.write_bytes(path.read_bytes()[:-1])  # the crash came between the record and its newline
    assert verify(path, KEY).ok
    writer = ChainWriter(path, KEY)
    assert writer.sealed is None
    writer.write({"event": "authorization", "decision": "permit"})
    writer.close()
    report = verify(path, KEY)
    assert report.ok and not report.sealed and verify_cli(path).returncode == 0


def test_a_live_file_holding_only_torn_bytes_is_sealed_before_its_file_start(tmp_path: Path) -> None:
    path = chained(tmp_path, 30, max_bytes=1500)  # rotated several times
    rotated = len(log_files(path)) - 1
    path.rename(path.with_name(f"{path.name}.{rotated + 1:06d}"))  # a rotation whose file-start was torn
    path.write_bytes(b'{"event":"file-st')
    writer = ChainWriter(path, KEY, max_bytes=1500)
    assert writer.sealed is not None
    writer.close()
    assert [json.loads(raw)["event"] for raw in path.read_bytes().split(b"\n")[1:3]] == ["log-truncated", "file-start"]
    report = verify(path, KEY)
    assert report.ok and len(report.sealed) == 1 and report.sealed[0].line == 1


@pytest.mark.parametrize("where", ["middle", "rotated file", "terminated last line"])
def test_a_partial_line_anywhere_else_is_edited(tmp_path: Path, where: str) -> None:
    path = chained(tmp_path, 30, max_bytes=1500)
    if where == "middle":
        lines = path.read_bytes().split(b"\n")
        lines[2] = lines[2][:40]  # cut inside a line that records follow
        path.write_bytes(b"\n".join(lines))
    elif where == "rotated file":
        first = log_files(path)[0]
        first.write_bytes(first.read_bytes().rstrip(b"\n")[:-10])
    else:
        tear(path, TORN + b"\n")  # ended: not a write cut short, a line that is not a record
    report = verify(path, KEY)
    assert report.damage is not None and report.damage.kind == "edited", report.damage
    assert verify_cli(path).returncode == 1


def test_a_sealed_torn_line_changed_or_removed_afterwards_is_edited(tmp_path: Path) -> None:
    path = chained(tmp_path)
    tear(path)
    ChainWriter(path, KEY).close()
    lines = path.read_bytes().split(b"\n")
    changed = [*lines[:6], TORN.replace(b"PAT-", b"PAX-"), *lines[7:]]
    path.write_bytes(b"\n".join(changed))
    report = verify(path, KEY)
    assert report.damage is not None and (report.damage.kind, report.damage.line) == ("edited", 7)
    path.write_bytes(b"\n".join([*lines[:6], *lines[7:]]))  # the torn line deleted: the seal names nothing
    report = verify(path, KEY)
    assert report.damage is not None and report.damage.kind == "edited" and "torn line" in report.damage.detail


def test_a_damaged_line_at_the_end_still_stops_the_writer(tmp_path: Path) -> None:
    path = chained(tmp_path)
    tear(path, b"not a record\n")
    with pytest.raises(ValueError, match="decision-log verify"):
        ChainWriter(path, KEY)


def test_kill_9_in_the_middle_of_a_write_then_restart_and_verify(tmp_path: Path) -> None:
    """A real writer killed inside its write(2): the kernel stops copying at a page boundary, in the
    middle of a record. The next start seals it; verify calls it a warning, not damage."""
    child = textwrap.dedent("""
        import sys
        from pathlib import Path
        from audit.chain import ChainWriter
        writer = ChainWriter(Path(sys.argv[1]), bytes.fromhex(sys.argv[2]), max_bytes=1 << 40)
        writer.write({"event": "authorization", "decision": "permit"})
        write_all = writer._write_all
        def announced(data):
            print("writing", flush=True)
            write_all(data)
        writer._write_all = announced
        writer.write_many([{"event": "authorization", "decision": "permit", "detail": "x" * 2000, "n": n}
                           for n in range(16_000)])  # one write of 32 MB
    """)
    path = tmp_path / "decisions.jsonl"
    for _attempt in range(5):  # the kill must land inside the write; on a very fast disk, try again
        path.unlink(missing_ok=True)
        writer = subprocess.Popen([sys.executable, "-c", child, str(path), KEY.hex()], stdout=subprocess.PIPE,
                                  cwd=PROJECT)
        assert writer.stdout is not None and writer.stdout.readline() == b"writing\n"
        time.sleep(0.001)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        writer.stdout.close()
        if not path.read_bytes().endswith(b"\n"):
            break
    data = path.read_bytes()
    assert not data.endswith(b"\n"), "the kill never landed inside the write"
    torn = data[data.rindex(b"\n") + 1:]
    assert verify(path, KEY).damage.kind == "truncated"  # type: ignore[union-attr]

    log = DecisionLog(path, KEY, checkpoint_interval=3600)  # the agent restarts on it
    log.write(ApplicationEvent(kind=Kind.APPLICATION_START, name="GW1"))
    log.close()
    report = verify(path, KEY)
    assert report.ok and report.final and [s.torn_bytes for s in report.sealed] == [len(torn)]
    assert torn in path.read_bytes()
    assert verify_cli(path).returncode == 3


def test_the_seal_reaches_the_audit_repository_as_a_security_alert(tmp_path: Path) -> None:
    path = chained(tmp_path)
    tear(path)
    repository = Repository()
    DecisionLog(path, KEY, audit=repository, source_id="GW1").close()  # type: ignore[arg-type]
    (alert,) = repository.messages
    assert alert.find("EventIdentification/EventID").get("csd-code") == "110113"  # type: ignore[union-attr]
    assert alert.find("EventIdentification/EventTypeCode").get("csd-code") == "110133"  # type: ignore[union-attr]
    assert alert.find("EventIdentification").get("EventOutcomeIndicator") == "4"  # type: ignore[union-attr]
    subject = alert.find("ParticipantObjectIdentification")
    assert subject is not None and subject.get("ParticipantObjectID") == str(path)


def test_search_and_report_show_the_sealed_tail(tmp_path: Path) -> None:
    path = chained(tmp_path)
    tear(path)
    ChainWriter(path, KEY).close()
    found = [json.loads(line) for line in cli("search", "--log", path, "--json").stdout.splitlines()]
    assert [row["event"] for row in found] == ["authorization"] * 4 + ["log-truncated"]
    assert f"{len(TORN)} torn bytes kept and sealed" in found[-1]["detail"]
    report = cli("report", "--log", path).stdout
    assert "writes cut short by a crash (torn tails sealed): 1" in report
    tail = cli("tail", "--log", path, "-n", "3").stdout.splitlines()  # the torn line, its seal, the checkpoint
    assert len(tail) == 3 and "not a log record: 75 bytes" in tail[0] and "log-truncated" in tail[1]
