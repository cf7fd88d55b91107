"""What the review commands do at their edges: time filters, a pipe closed early, the index's mode."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from audit import index
from audit.chain import ChainWriter
from devtools.peers import PROJECT

KEY = b"k" * 32
TIMES = {  # the record's patient: its time, as written
    "A": "2026-11-30T23:59:59.999999+00:00",
    "B": "2026-12-01T00:00:00.000000+00:00",
    "C": "2026-12-01T08:30:15.500000+00:00",
    "D": "2026-12-01T23:59:59.999999+00:00",
    "E": "2026-12-02T00:00:00.000000+00:00",
    "F": "2026-12-01T12:00:00Z",  # another way to write a UTC time: read as the same instant
}


def timed_log(folder: Path) -> Path:
    path = folder / "decisions.jsonl"
    writer = ChainWriter(path, KEY)
    for patient, when in TIMES.items():
        writer.write({"event": "authorization", "time": when, "user": {"username": "rad"}, "action": "C-FIND",
                      "resource": {"patient_id": patient}, "decision": "permit"})
    writer.close()
    return path


def cli(*args: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "audit.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=PROJECT, **kwargs)  # type: ignore[call-overload]


@pytest.mark.parametrize(("bounds", "found"), [
    (["--since", "2026-12-01"], "BCDEF"),
    (["--until", "2026-12-01"], "ABCDF"),  # the whole day: it used to find nothing
    (["--since", "2026-12-01", "--until", "2026-12-01"], "BCDF"),
    (["--until", "2026-11-30"], "A"),
    (["--until", "2026-12-01T08"], "ABC"),  # the whole hour
    (["--until", "2026-12-01T08:30"], "ABC"),  # the whole minute
    (["--until", "2026-12-01 08:30:15"], "ABC"),
    (["--until", "2026-12-01T08:30:14"], "AB"),
    (["--until", "2026-12-01T08:30:15.4"], "AB"),
    (["--since", "2026-12-01T09:30+01:00"], "CDEF"),  # a zone: 08:30 UTC
    (["--since", "2026-12-01T08:30:15.5Z"], "CDEF"),
    (["--since", "2026-12-01T13:00:00+0100", "--until", "2026-12-01T13:00+01:00"], "F"),
])
def test_time_filters(tmp_path: Path, bounds: list[str], found: str) -> None:
    path = timed_log(tmp_path)

    def search() -> str:
        done = cli("search", "--log", path, "--json", *bounds)
        assert done.returncode == 0, done.stderr
        return "".join(json.loads(line)["patient"] for line in done.stdout.splitlines())

    assert search() == found
    cli("index", "--log", path, "--quiet")
    assert index.current(path) and search() == found  # the index answers the same


@pytest.mark.parametrize(("bounds", "named"), [
    (["--until", "2026-13-01"], "--until"),
    (["--since", "yesterday"], "--since"),
    (["--until", "2026-12-01T25:00"], "--until"),
    (["--since", "2026-02-30"], "--since"),
    (["--since", "2026-12-01T10:00+25:00"], "--since"),
    (["--until", "01/12/2026"], "--until"),
    (["--since", "2026-12-02", "--until", "2026-12-01"], "--until"),
])
def test_a_bad_time_is_an_error_naming_the_option(tmp_path: Path, bounds: list[str], named: str) -> None:
    path = timed_log(tmp_path)
    for command in ("search", "report", "export --format csv", "patient A", "alerts"):
        done = cli(*command.split(), "--log", path, *bounds)
        assert done.returncode == 2 and f"argument {named}:" in done.stderr, (command, done.stderr)
        assert done.stdout == "" and "Traceback" not in done.stderr


def test_a_pipe_closed_early_ends_the_command_quietly(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    writer = ChainWriter(path, KEY, checkpoint_interval=3600)
    writer.write_many([{"event": "authorization", "user": {"username": f"u{n % 5}"}, "action": "C-FIND",
                        "resource": {"patient_id": f"PAT-{n}"}, "decision": "permit"} for n in range(20_000)])
    writer.close()
    for command in (["search"], ["export", "--format", "csv"], ["search", "--json"], ["tail", "-n", "20000"]):
        producer = subprocess.Popen([sys.executable, "-m", "audit.cli", *command, "--log", str(path)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=PROJECT)
        head = subprocess.run(["head", "-n", "3"], stdin=producer.stdout, capture_output=True, timeout=60)
        assert producer.stdout is not None and producer.stderr is not None
        producer.stdout.close()
        errors = producer.stderr.read().decode()
        producer.wait(60)
        producer.stderr.close()
        assert len(head.stdout.splitlines()) == 3
        assert "Traceback" not in errors and "BrokenPipe" not in errors and "Exception" not in errors, errors
        assert producer.returncode == -signal.SIGPIPE, command  # as `seq 100000 | head -n 3` ends


def test_the_index_has_the_logs_own_permissions(tmp_path: Path) -> None:
    path = timed_log(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o640
    old = os.umask(0o022)  # a reviewer's usual umask: without care, the index would be 0644
    try:
        assert cli("index", "--log", path, "--quiet").returncode == 0
        assert index.index_path(path).stat().st_mode & 0o777 == 0o640
        os.chmod(index.index_path(path), 0o644)  # made by an earlier version: put right at the next update
        assert cli("search", "--log", path, "--user", "rad").returncode == 0
        assert index.index_path(path).stat().st_mode & 0o777 == 0o640
        os.chmod(path, 0o600)
        assert cli("index", "--log", path, "--quiet").returncode == 0
        assert index.index_path(path).stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
    for name in os.listdir(tmp_path):  # no journal or other file left open to others
        if name.startswith(path.name + ".index"):
            assert (tmp_path / name).stat().st_mode & 0o007 == 0, name


def test_verify_of_a_log_written_by_workers_checks_every_workers_chain(tmp_path: Path) -> None:
    """[server] workers = N: each worker writes decisions.wI.jsonl; verify --log decisions.jsonl checks each
    chain whole and fails when one is damaged, naming it."""
    key_file = tmp_path / "hmac.key"
    key_file.write_text(KEY.hex())
    for worker in (1, 2):
        writer = ChainWriter(tmp_path / f"decisions.w{worker}.jsonl", KEY)
        for n in range(3):
            writer.write({"event": "authorization", "time": TIMES["C"], "user": {"username": f"w{worker}"},
                          "action": "C-FIND", "resource": {"patient_id": str(n)}, "decision": "permit"})
        writer.close()
    (tmp_path / "decisions.w10.jsonl.bak").write_text("not a chain of a worker\n")
    intact = cli("verify", "--log", tmp_path / "decisions.jsonl", "--key-file", key_file)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert intact.stdout.count("ok: ") == 2 and "decisions.w2.jsonl:" in intact.stdout
    second = tmp_path / "decisions.w2.jsonl"
    lines = second.read_text().splitlines(keepends=True)
    second.write_text("".join([lines[0], lines[2], lines[1], *lines[3:]]))  # two records swapped
    broken = cli("verify", "--log", tmp_path / "decisions.jsonl", "--key-file", key_file)
    assert broken.returncode == 1
    assert "decisions.w1.jsonl:\nok: " in broken.stdout and "BROKEN" in broken.stdout.split("decisions.w2.jsonl:")[1]
