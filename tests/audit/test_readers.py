"""decision-log search, report, export and the index read records as events: a log written by an
earlier version (reasons with spaces, authentication failures in prose, ``sub-operation``) answers by
reason code, the same from the index as from a scan."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from audit import index
from audit.chain import ChainWriter
from audit.events import AuthorizationEvent
from audit.reading import events
from devtools.peers import PROJECT

KEY = b"k" * 32


def legacy_log(folder: Path) -> Path:
    """Records as the server agent wrote them before decision events (2026-11)."""
    path = folder / "decisions.jsonl"
    writer = ChainWriter(path, KEY)
    rad = {"kind": "user", "sub": "u-1", "username": "rad", "roles": ["radiologist"], "organization": ""}
    for record in (
        {"event": "authentication", "association": 1, "peer": "127.0.0.1:4000", "certificate": ["ws1"],
         "calling_ae": "FINDSCU@WS1", "called_ae": "ORTHANC", "decision": "deny",
         "reason": "token rejected: Signature verification failed", "identity_type": 5},
        {"event": "authentication", "association": 2, "peer": "10.0.0.9:104", "certificate": [],
         "calling_ae": "MOD1", "called_ae": "ORTHANC", "decision": "permit", "reason": "node policy",
         "user": {"kind": "node", "sub": "MOD1", "username": "MOD1", "roles": [], "organization": ""}},
        {"event": "authorization", "association": 3, "message_id": 1, "action": "C-FIND", "user": rad,
         "calling_ae": "FINDSCU@WS1", "workstation": "WS1", "pacs": "ORTHANC", "resource": {"patient_id": "PAT-C"},
         "decision": "deny", "reason": "consent_denied", "rule_id": "consent:1", "policy_version": "v1",
         "cached": False, "break_glass": False, "latency_ms": 2.0},
        {"event": "sub-operation", "association": 5, "action": "C-STORE", "sub_operation_of": "C-MOVE",
         "message_id": 7, "resource": {"patient_id": "PAT-1"}, "decision": "permit",
         "reason": "authorized move outstanding"},
        {"event": "authentication", "association": 6, "peer": "10.9.9.9", "calling_ae": "EVIL", "called_ae": "V@WS1",
         "path": "return", "decision": "deny", "reason": "not a configured PACS"},
    ):
        writer.write({"time": "2026-11-20T10:00:00.000000+00:00", **record})
    writer.close()
    return path


def search(path: Path, *filters: str) -> list[dict[str, object]]:
    out = subprocess.run([sys.executable, "-m", "audit.cli", "search", "--log", str(path), "--json", *filters],
                         capture_output=True, text=True, check=True, cwd=PROJECT).stdout
    return [json.loads(line) for line in out.splitlines()]


def test_an_earlier_versions_log_is_searched_and_reported_by_code(tmp_path: Path) -> None:
    path = legacy_log(tmp_path)
    rejected = search(path, "--reason", "token_rejected")
    assert [(r["reason"], r["detail"]) for r in rejected] == [
        ("token_rejected", "token rejected: Signature verification failed")]
    assert [r["user"] for r in search(path, "--reason", "node_policy")] == ["MOD1"]
    assert search(path, "--reason", "node policy") == search(path, "--reason", "node_policy")  # old spelling finds it
    assert [r["association"] for r in search(path, "--reason", "consent_denied")] == ["3"]
    assert [r["event"] for r in search(path, "--reason", "move_outstanding")] == ["authorization"]
    report = subprocess.run([sys.executable, "-m", "audit.cli", "report", "--log", str(path)], capture_output=True,
                            text=True, check=True, cwd=PROJECT).stdout
    for code in ("token_rejected", "consent_denied", "not_a_pacs"):
        assert f"\n  {code:<28}        1" in report


def test_the_index_answers_as_the_scan_does_and_an_index_of_an_earlier_version_is_rebuilt(tmp_path: Path) -> None:
    path = legacy_log(tmp_path)
    scanned = [search(path, "--reason", code) for code in ("token_rejected", "node_policy", "not_a_pacs")]
    # an index as the version before wrote it: reasons as written, no schema version
    db = sqlite3.connect(index.index_path(path))
    db.executescript("""CREATE TABLE records (seq INTEGER PRIMARY KEY, time TEXT, event TEXT, user TEXT, action TEXT,
        patient TEXT, study TEXT, workstation TEXT, decision TEXT, reason TEXT, line TEXT);
        CREATE TABLE files (name TEXT PRIMARY KEY, offset INTEGER);""")
    db.execute("INSERT INTO files VALUES (?, ?)", (path.name, path.stat().st_size))
    db.commit()
    db.close()
    assert not index.current(path)
    assert [search(path, "--reason", code) for code in ("token_rejected", "node_policy", "not_a_pacs")] == scanned
    assert index.current(path) and all(scanned)


def test_the_index_reads_a_rotated_live_file_from_its_start_however_much_it_has_grown(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    writer = ChainWriter(path, KEY, max_bytes=1 << 20, checkpoint_interval=3600)
    for n in range(5):
        writer.write({"event": "authorization", "decision": "permit", "resource": {"patient_id": f"A{n}"}})
    assert index.build(path) == 5
    writer.rotate()  # the live file is renamed; the new one grows past the offset the index kept for its name
    for n in range(20):
        writer.write({"event": "authorization", "decision": "permit", "resource": {"patient_id": f"B{n}"}})
    writer.close()
    index.build(path)
    found = [stored.event.resource["patient_id"] for stored in index.search(path, {}, None, None)
             if isinstance(stored.event, AuthorizationEvent)]
    assert found == [f"A{n}" for n in range(5)] + [f"B{n}" for n in range(20)]
    assert found == [s.event.resource["patient_id"] for s in events(path) if isinstance(s.event, AuthorizationEvent)]


def test_export_carries_the_detail(tmp_path: Path) -> None:
    path = legacy_log(tmp_path)
    out = subprocess.run([sys.executable, "-m", "audit.cli", "export", "--log", str(path), "--format", "csv"],
                         capture_output=True, text=True, check=True, cwd=PROJECT).stdout.splitlines()
    assert out[0].startswith("seq,time,event,user") and out[0].endswith(",detail")
    assert "token_rejected" in out[1] and "Signature verification failed" in out[1]
