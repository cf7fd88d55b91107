"""decision-log alerts: break-glass uses, refusal bursts and unusual volume, as JSON lines or RFC 5424
syslog, from a log read once or followed as it grows."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

from audit.chain import ChainWriter, log_files
from audit.events import Action, AuthenticationEvent, AuthorizationEvent, Decision, PdpAnswer, Reason, Who
from devtools.peers import PROJECT
from tests.audit.sample_log import write_sample

KEY = b"k" * 32
T0 = 1_764_576_000  # 2025-12-01T08:00:00Z


def stamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds % 1 * 1e6):06d}+00:00"


def query(user: str, patient: str, *, deny: str = "", break_glass: bool = False, post_filter: bool = False,
          workstation: str = "WS1", association: str = "a1") -> dict[str, object]:
    event = AuthorizationEvent(
        association=association, action=Action.C_FIND, decision=Decision.DENY if deny else Decision.PERMIT,
        reason=Reason.PDP, pdp=PdpAnswer(reason=deny or "permit", break_glass=break_glass),
        user=Who(kind="user", sub=user, username=user), workstation=workstation, resource={"patient_id": patient},
        post_filter=post_filter)
    return event.record()


def crafted(folder: Path) -> Path:
    """Each alert once, and what must not raise one, at known times."""
    path = folder / "decisions.jsonl"
    writer = ChainWriter(path, KEY, checkpoint_interval=3600)
    events: list[tuple[float, dict[str, object]]] = [
        (0, query("erdoc", "PAT-OPTOUT", break_glass=True)),
        (1, query("erdoc", "PAT-OPTOUT", break_glass=True)),  # the same override, same association: said once
        *[(10 + 60 * n, query("nobody", "PAT-1", deny="no_role", workstation="WS7")) for n in range(5)],  # burst
        *[(2000 + 200 * n, query("slow", "PAT-1", deny="no_role", workstation="WS8")) for n in range(5)],  # 800 s
        *[(3000 + n, query("refdoc", f"PAT-{n}", deny="not_in_care", post_filter=True)) for n in range(9)],
        *[(4000 + 5 * n, AuthenticationEvent(association=f"x{n}", decision=Decision.DENY,
                                             reason=Reason.PASSWORD_REFUSED, peer=f"10.0.0.66:{5000 + n}").record())
          for n in range(5)],
        *[(5000 + 30 * n, query("mfarad", f"PAT-{1000 + n}")) for n in range(3)],  # 3 patients: not over 3
        *[(5000 + 30 * n, query("mfarad", "PAT-1000")) for n in range(10)],  # the same patient again: still 1
    ]
    for seconds, record in sorted(events, key=lambda item: item[0]):
        writer.write({"time": stamp(T0 + seconds), **record})
    writer.close()
    return path


def alerts(path: Path, *args: str) -> list[dict[str, object]]:
    done = subprocess.run([sys.executable, "-m", "audit.cli", "alerts", "--log", str(path), "--volume", "3", *args],
                          capture_output=True, text=True, cwd=PROJECT, timeout=60)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_each_alert_is_raised_by_the_record_that_crosses_the_line(tmp_path: Path) -> None:
    found = alerts(crafted(tmp_path))
    assert [(a["alert"], a.get("user") or a.get("source") or a.get("workstation")) for a in found] == [
        ("break-glass", "erdoc"),  # once, though two records carry it
        ("refusal-burst", "nobody"), ("refusal-burst", "WS7"),  # five refusals in four minutes, by user and place
        ("refusal-burst", "10.0.0.66"),  # five failed logins from one address (no user: the address counts)
    ]
    burst = found[1]
    assert burst["count"] == 5 and burst["reasons"] == "no_role" and burst["time"] == stamp(T0 + 250)
    assert found[0]["patient"] == "PAT-OPTOUT" and found[0]["severity"] == "warning"
    assert len(found) == 4  # not "slow" (800 s), not refdoc (post-filter), not mfarad (one patient, many times)
    more = alerts(crafted(tmp_path / "again"), "--volume", "3", "--burst", "3")
    assert ("refusal-burst", "slow") not in [(a["alert"], a.get("user")) for a in more]


def test_unusual_volume_and_the_sample_sites_alerts(tmp_path: Path) -> None:
    path = write_sample(tmp_path)
    found = alerts(path, "--volume", "50")
    kinds = [(a["alert"], a.get("user") or a.get("source") or a.get("workstation")) for a in found]
    assert ("unusual-volume", "mfarad") in kinds and ("break-glass", "erdoc") in kinds
    assert ("refusal-burst", "nobody") in kinds and ("refusal-burst", "10.0.0.66") in kinds
    volume = next(a for a in found if a["alert"] == "unusual-volume")
    assert volume["patients"] == 51 and volume["threshold"] == 50
    assert alerts(path, "--volume", "50", "--until", "2026-11-30") == []  # the first day was quiet


def test_syslog_lines_are_rfc5424_and_values_cannot_forge_a_line(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    writer = ChainWriter(path, KEY)
    evil = 'x"] [fake@1 a="b"]\n<84>1 - forged'  # a user name a hostile identity provider could send
    writer.write({"time": stamp(T0), **query(evil, "PAT-1", break_glass=True)})
    writer.close()
    done = subprocess.run([sys.executable, "-m", "audit.cli", "alerts", "--log", str(path), "--format", "syslog"],
                          capture_output=True, cwd=PROJECT, timeout=60)
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and len(lines) == 1
    header = re.match(rb"<84>1 2025-12-01T08:00:00\.000000Z \S+ decision-log \d+ break-glass ", lines[0])
    assert header is not None, lines[0]
    params, rest = structured_data(lines[0][header.end():].decode())
    assert params["user"] == 'x"] [fake@1 a="b"]\\x0a<84>1 - forged' and params["patient"] == "PAT-1"
    assert rest.startswith(" \ufeffbreak-glass: x") and "\n" not in rest


def structured_data(text: str) -> tuple[dict[str, str], str]:
    """One SD-ELEMENT read as RFC 5424 6.3 says (escapes: backslash before ", \\ and ]); what follows it."""
    sd_id, _, text = text[1:].partition(" ")
    assert sd_id == "decision-log@32473"
    params: dict[str, str] = {}
    while not text.startswith("]"):
        name, _, text = text.partition('="')
        value, n = [], 0
        while text[n] != '"':
            if text[n] == "\\" and text[n + 1] in '"\\]':
                n += 1
            value.append(text[n])
            n += 1
        params[name.strip()] = "".join(value)
        text = text[n + 1:]
    return params, text[1:]


def test_syslog_to_a_udp_target(tmp_path: Path) -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(20)
    try:
        done = subprocess.run([sys.executable, "-m", "audit.cli", "alerts", "--log", str(crafted(tmp_path)),
                               "--format", "syslog", "--target", f"127.0.0.1:{receiver.getsockname()[1]}",
                               "--transport", "udp", "--spool", str(tmp_path / "spool")],
                              capture_output=True, text=True, cwd=PROJECT, timeout=60)
        assert done.returncode == 0 and done.stdout == "", done.stderr
        datagrams = [receiver.recv(65535) for _ in range(3)]
    finally:
        receiver.close()
    assert [d.split(b" ")[5] for d in datagrams] == [b"break-glass", b"refusal-burst", b"refusal-burst"]
    assert not list((tmp_path / "spool").glob("*.msg"))  # all delivered


def test_follow_mode_reads_the_growing_log_across_rotations(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    writer = ChainWriter(path, KEY, max_bytes=3000, checkpoint_interval=3600)
    writer.write({"time": stamp(T0), **query("erdoc", "PAT-OLD", break_glass=True)})  # before the follower: not seen
    follower = subprocess.Popen([sys.executable, "-m", "audit.cli", "alerts", "--log", str(path), "--follow"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=PROJECT)
    try:
        time.sleep(1.5)  # the follower is at the end of the log
        for n in range(40):  # several rotations
            writer.write({"time": stamp(T0 + 10 + n), **query("nobody", f"PAT-{n}", deny="no_role",
                                                               association=f"b{n}")})
        writer.write({"time": stamp(T0 + 60), **query("erdoc", "PAT-NEW", break_glass=True, association="a9")})
        assert len(log_files(path)) > 3
        assert follower.stdout is not None
        seen = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(a["alert"] == "break-glass" for a in seen):
            seen.append(json.loads(follower.stdout.readline()))
    finally:
        follower.terminate()
        follower.wait(10)
        for stream in (follower.stdout, follower.stderr):
            if stream is not None:
                stream.close()
    bursts = [a for a in seen if a["alert"] == "refusal-burst" and a.get("user") == "nobody"]
    assert len(bursts) == 8  # forty refusals: eight bursts of five, none lost to a rotation
    assert seen[-1]["alert"] == "break-glass" and seen[-1]["patient"] == "PAT-NEW"
    assert "PAT-OLD" not in json.dumps(seen)
    writer.close()


def test_follow_from_a_time_reads_the_log_so_far_then_what_is_appended(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    writer = ChainWriter(path, KEY, max_bytes=2000, checkpoint_interval=3600)
    for n in range(12):  # rotated files before the follower starts
        writer.write({"time": stamp(T0 + n), **query("erdoc", f"PAT-OLD-{n}", break_glass=True, association=f"o{n}")})
    follower = subprocess.Popen([sys.executable, "-m", "audit.cli", "alerts", "--log", str(path), "--follow",
                                 "--since", stamp(T0 + 2)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=PROJECT)
    try:
        assert follower.stdout is not None
        patients = [json.loads(follower.stdout.readline())["patient"] for _ in range(10)]
        writer.write({"time": stamp(T0 + 60), **query("erdoc", "PAT-NEW", break_glass=True, association="n")})
        patients.append(json.loads(follower.stdout.readline())["patient"])
    finally:
        follower.terminate()
        follower.wait(10)
        for stream in (follower.stdout, follower.stderr):
            if stream is not None:
                stream.close()
        writer.close()
    assert patients == [f"PAT-OLD-{n}" for n in range(2, 12)] + ["PAT-NEW"]  # once each, in order
