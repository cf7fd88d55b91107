"""Short runs of the wire fuzz harnesses (fuzz/pdu_fuzz.py, fuzz/dimse_fuzz.py, fuzz/relay_fuzz.py) on every
``make test``, like tests/unit/test_fuzz_dataset.py: the harnesses keep working and their invariants hold on
the seeds and on what a few seconds of coverage-guided mutation reaches. Long runs are ``make fuzz``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("harness", "runs"), [("pdu", 5000), ("dimse", 5000), ("relay", 1500)])
def test_a_short_fuzz_run_finds_nothing(harness: str, runs: int, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    subprocess.run([sys.executable, str(ROOT / "fuzz" / "make_seeds.py"), str(corpus), harness], check=True,
                   cwd=ROOT, capture_output=True)
    assert len(list(corpus.iterdir())) >= 5, "no seeds"
    run = subprocess.run([sys.executable, str(ROOT / "fuzz" / f"{harness}_fuzz.py"), str(corpus),
                          f"-atheris_runs={runs}", f"-artifact_prefix={tmp_path}/"],
                         cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"Done {runs}" in run.stderr
