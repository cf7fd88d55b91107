"""The decision log's tamper evidence: every kind of damage is caught and named."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from audit.chain import ChainWriter, log_files, verify

KEY = b"k" * 32


def write_log(folder: Path, count: int = 60, *, max_bytes: int = 4000, close: bool = True) -> Path:
    path = folder / "decisions.jsonl"
    writer = ChainWriter(path, KEY, max_bytes=max_bytes, checkpoint_interval=3600)
    for n in range(count):
        writer.write({"event": "authorization", "user": {"username": f"user{n % 3}"}, "action": "C-FIND",
                      "resource": {"patient_id": f"PAT-{n}"}, "decision": "permit" if n % 4 else "deny"})
        if n % 10 == 9:
            writer.checkpoint()
    if close:
        writer.close()
    return path


def lines_of(path: Path) -> tuple[Path, list[bytes]]:
    file = log_files(path)[0]
    return file, file.read_bytes().splitlines()


def test_an_untouched_log_verifies_across_rotated_files(tmp_path: Path) -> None:
    path = write_log(tmp_path)
    assert len(log_files(path)) > 3  # rotation happened
    report = verify(path, KEY, stale_after=60)
    assert report.ok and report.final and report.records > 60 and report.unsigned_tail == 0


def test_a_log_reopened_continues_the_chain(tmp_path: Path) -> None:
    path = write_log(tmp_path, 15)
    writer = ChainWriter(path, KEY, max_bytes=4000)
    writer.write({"event": "authorization", "decision": "permit"})
    writer.close()
    assert verify(path, KEY).ok


def test_an_edited_field_is_caught_at_that_record(tmp_path: Path) -> None:
    path = write_log(tmp_path)
    file, lines = lines_of(path)
    record = json.loads(lines[3])
    record["decision"] = "permit" if record.get("decision") == "deny" else "deny"
    lines[3] = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    file.write_bytes(b"\n".join(lines) + b"\n")
    report = verify(path, KEY)
    assert report.damage is not None and report.damage.kind == "edited"
    assert report.damage.line == 4 and report.damage.seq == record["seq"]


def test_a_deleted_record_is_caught(tmp_path: Path) -> None:
    path = write_log(tmp_path)
    file, lines = lines_of(path)
    gone = json.loads(lines[5])["seq"]
    file.write_bytes(b"\n".join(lines[:5] + lines[6:]) + b"\n")
    report = verify(path, KEY)
    assert report.damage is not None and report.damage.kind == "deleted" and str(gone) in report.damage.detail


def test_two_swapped_records_are_caught(tmp_path: Path) -> None:
    path = write_log(tmp_path)
    file, lines = lines_of(path)
    lines[4], lines[5] = lines[5], lines[4]
    file.write_bytes(b"\n".join(lines) + b"\n")
    report = verify(path, KEY)
    assert report.damage is not None and report.damage.kind == "reordered"


def test_a_truncated_tail_is_caught(tmp_path: Path) -> None:
    path = write_log(tmp_path, close=False)  # checkpoints every 10 records, never a final one
    live = log_files(path)[-1]
    lines = live.read_bytes().splitlines()
    live.write_bytes(b"\n".join(lines[:-3]) + b"\n")  # the last records are cut away
    assert verify(path, KEY, stale_after=3600).ok  # while recent, the unsigned tail is only reported
    report = verify(path, KEY, stale_after=60, now=time.time() + 3600)
    assert report.damage is not None and report.damage.kind == "truncated"


def test_a_removed_rotated_file_is_caught(tmp_path: Path) -> None:
    path = write_log(tmp_path)
    os.remove(log_files(path)[1])
    report = verify(path, KEY)
    assert report.damage is not None and report.damage.kind == "file-missing"


def test_a_forged_checkpoint_is_caught(tmp_path: Path) -> None:
    path = write_log(tmp_path)
    assert not verify(path, b"another key" * 3).ok
    report = verify(path, b"another key" * 3)
    assert report.damage is not None and "signature" in report.damage.detail


@pytest.mark.parametrize("damage", ["none", "edit"])
def test_the_verify_command(tmp_path: Path, damage: str) -> None:
    path = write_log(tmp_path, 20)
    key_file = tmp_path / "key"
    key_file.write_text(KEY.hex())
    if damage == "edit":
        file, lines = lines_of(path)
        lines[2] = lines[2].replace(b"PAT-", b"PAX-")
        file.write_bytes(b"\n".join(lines) + b"\n")
    result = subprocess.run([sys.executable, "-m", "audit.cli", "verify", "--log", str(path), "--key-file",
                             str(key_file)], capture_output=True, text=True)
    if damage == "none":
        assert result.returncode == 0 and result.stdout.startswith("ok:")
    else:
        assert result.returncode == 1 and "BROKEN: edited" in result.stdout


def test_search_and_export(tmp_path: Path) -> None:
    path = write_log(tmp_path, 30)
    run = [sys.executable, "-m", "audit.cli"]
    found = subprocess.run([*run, "search", "--log", str(path), "--user", "user1", "--decision", "deny", "--json"],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    expected = [n for n in range(30) if n % 3 == 1 and n % 4 == 0]
    assert [json.loads(r)["patient"] for r in found] == [f"PAT-{n}" for n in expected]
    csv_out = subprocess.run([*run, "export", "--log", str(path), "--format", "csv"], capture_output=True,
                             text=True, check=True).stdout.splitlines()
    assert csv_out[0].startswith("seq,time,event,user") and len(csv_out) == 31


def test_report_numbers_match_search_and_the_html_renders(tmp_path: Path) -> None:
    from html.parser import HTMLParser

    path = tmp_path / "decisions.jsonl"
    writer = ChainWriter(path, KEY)
    users = ["rad"] * 30 + ["refdoc"] * 5 + ["researcher"] * 4 + ["erdoc"] * 3
    for n, user in enumerate(users):
        writer.write({"event": "authorization", "time": f"2026-11-22T{(n % 24):02d}:10:00.000000+00:00",
                      "user": {"username": user}, "action": "C-FIND" if n % 2 else "C-MOVE",
                      "resource": {"patient_id": f"P{n}" if user == "rad" else "P1"},
                      "decision": "deny" if user == "researcher" else "permit",
                      "reason": "not_identifiable" if user == "researcher" else "permit",
                      "break_glass": user == "erdoc", "workstation": "WS1"})
    writer.close()
    run = [sys.executable, "-m", "audit.cli"]
    html_file = tmp_path / "report.html"
    report = subprocess.run([*run, "report", "--log", str(path), "--html", str(html_file)], capture_output=True,
                            text=True, check=True).stdout

    def count(*filters: str) -> int:
        out = subprocess.run([*run, "search", "--log", str(path), "--json", *filters], capture_output=True,
                             text=True, check=True).stdout
        return len(out.splitlines())

    assert f"{count()} decisions" in report
    assert re.search(rf"researcher\s+{count('--user', 'researcher')}\b", report)
    assert re.search(rf"not_identifiable\s+{count('--decision', 'deny')}\b", report)
    assert f"break-glass uses: {count('--user', 'erdoc')}" in report
    assert "users touching unusually many patients: rad (30)" in report
    page = html_file.read_text()

    class Check(HTMLParser):
        svgs = 0

        def handle_starttag(self, tag, attrs):  # type: ignore[no-untyped-def]
            if tag == "svg":
                self.svgs += 1
            assert tag not in ("script", "link"), "the report must render offline, with no scripts"

    checker = Check()
    checker.feed(page)
    assert checker.svgs == 4  # one timeline per user
    assert re.search(r'<a href="#u-\d+">rad</a></td><td>30</td>', page)  # unusually many patients, linked


def test_the_index_answers_like_the_scan_and_follows_new_records(tmp_path: Path) -> None:
    from audit import index

    path = write_log(tmp_path, 40, close=False)
    run = [sys.executable, "-m", "audit.cli"]

    def search(*filters: str) -> list[str]:
        out = subprocess.run([*run, "search", "--log", str(path), "--json", *filters], capture_output=True, text=True,
                             check=True).stdout
        return [json.loads(r)["patient"] for r in out.splitlines()]

    scanned = search("--user", "user2")
    subprocess.run([*run, "index", "--log", str(path), "--quiet"], check=True)
    assert index.current(path)
    assert search("--user", "user2") == scanned and scanned
    writer = ChainWriter(path, KEY, max_bytes=4000)
    writer.write({"event": "authorization", "user": {"username": "user2"}, "resource": {"patient_id": "PAT-NEW"},
                  "decision": "permit"})
    assert not index.current(path)  # the log grew: searches fall back to reading it
    assert search("--user", "user2")[-1] == "PAT-NEW"
    subprocess.run([*run, "index", "--log", str(path), "--quiet"], check=True)
    assert index.current(path) and search("--user", "user2")[-1] == "PAT-NEW"


def test_a_log_that_is_not_chained_is_not_appended_to(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    path.write_text('{"event": "authorization", "decision": "permit"}\n')
    with pytest.raises(ValueError, match="move it aside"):
        ChainWriter(path, KEY)


def test_tail_reads_only_the_end_and_follows_across_rotations(tmp_path: Path) -> None:
    import threading

    from audit.reading import follow, last_lines

    path = write_log(tmp_path, 60, close=False)  # several rotated files of 4000 bytes
    assert len(log_files(path)) > 3
    every = [json.loads(line) for file in log_files(path) for line in file.read_bytes().splitlines()]
    for n in (1, 5, 25, 200):
        assert [json.loads(raw)["seq"] for raw in last_lines(path, n)] == [r["seq"] for r in every[-n:]]
    seen: list[int] = []

    def reader() -> None:
        for raw in follow(path, poll=0.02):
            seen.append(json.loads(raw)["seq"])
            if len(seen) >= 5 and seen[-1] == last_seq:
                return

    last_seq = -1
    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    time.sleep(0.2)
    writer = ChainWriter(path, KEY, max_bytes=1500, checkpoint_interval=3600)  # rotates within what follows
    for n in range(30):
        writer.write({"event": "authorization", "user": {"username": "late"}, "resource": {"patient_id": f"L{n}"},
                      "decision": "permit"})
        time.sleep(0.005)
    last_seq = writer.seq
    writer.write({"event": "authorization", "user": {"username": "late"}, "resource": {"patient_id": "END"},
                  "decision": "permit"})
    last_seq = writer.seq
    thread.join(10)
    first_new = every[-1]["seq"] + 1
    assert seen == list(range(first_new, last_seq + 1))  # every record once, in order, rotations included
    assert writer.file_index > 0 and len(log_files(path)) > 4
    cli = subprocess.run([sys.executable, "-m", "audit.cli", "tail", "--log", str(path), "-n", "3"],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(cli) == 3 and "late" in cli[-1] and "END" in cli[-1]


def test_long_verifies_and_index_builds_show_progress(tmp_path: Path) -> None:
    import io

    from audit import index
    from audit.progress import Progress

    path = tmp_path / "decisions.jsonl"
    writer = ChainWriter(path, KEY, checkpoint_interval=3600)
    writer.write_many([{"event": "authorization", "user": {"username": f"u{n % 7}"}, "decision": "permit"}
                       for n in range(60_000)])
    writer.close()
    shown = io.StringIO()
    progress = Progress("verify", enabled=True, stream=shown)
    progress._shown = -1e9  # show every update, however fast this machine is
    calls: list[tuple[int, str]] = []
    report = verify(path, KEY, progress=lambda n, detail: (calls.append((n, detail)), progress.update(n, detail)))
    progress.done(f"{report.records:,} records checked")
    assert report.ok and report.records == 60_003  # with file-start and two checkpoints
    assert (10_000, " (pass 1 of 2)") in calls and (60_000, " (pass 2 of 2)") in calls
    text = shown.getvalue()
    assert "verify: 10,000 records (pass 1 of 2)" in text and "60,003 records checked in" in text
    shown = io.StringIO()
    assert index.build(path, Progress("index", enabled=True, stream=shown)) == 60_000  # not file-start, checkpoint
    assert "50,000 records" in shown.getvalue() and "60,000 new records indexed" in shown.getvalue()
    assert "\r" not in subprocess.run([sys.executable, "-m", "audit.cli", "verify", "--log", str(path), "--key-file",
                                       str(_key_file(tmp_path))], capture_output=True, text=True).stderr  # not a tty


def _key_file(folder: Path) -> Path:
    (folder / "key").write_text(KEY.hex())
    return folder / "key"


def test_logs_written_with_the_standard_json_encoder_still_verify(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Earlier versions encoded with json.dumps (non-ASCII escaped): their chains and MACs still hold,
    and a record with non-ASCII text written now verifies too."""
    from audit import chain

    monkeypatch.setattr(chain, "encode", lambda record: json.dumps(record, sort_keys=True, separators=(",", ":"),
                                                                   default=str).encode())
    path = write_log(tmp_path, 25, close=False)
    monkeypatch.undo()
    writer = ChainWriter(path, KEY, max_bytes=4000)
    writer.write({"event": "authorization", "user": {"username": "Zoë Müller"}, "decision": "permit"})
    writer.close()
    assert "Zoë Müller" in log_files(path)[-1].read_text(encoding="utf-8")
    report = verify(path, KEY)
    assert report.ok and report.checkpoints >= 3
