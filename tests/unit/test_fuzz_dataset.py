"""A short run of the data-set fuzz harness (fuzz/dataset_fuzz.py) on every ``make test``.

Long runs are ``make fuzz``; this one keeps the harness working and its invariants holding on the
seeds and on what a few seconds of coverage-guided mutation reaches.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_short_fuzz_run_finds_nothing(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    subprocess.run([sys.executable, str(ROOT / "fuzz" / "make_seeds.py"), str(corpus)], check=True, cwd=ROOT)
    run = subprocess.run([sys.executable, str(ROOT / "fuzz" / "dataset_fuzz.py"), str(corpus),
                          "-atheris_runs=30000", "-max_len=4200", f"-artifact_prefix={tmp_path}/"],
                         cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Done 30000" in run.stderr
