"""What the benchmark reads from /proc (``bench/stats.py``): the CPU of a process is that of its whole
tree, or the agents (threads: the decision-log writer) and storescp (``--fork``: a child per
association) would be reported cheaper than they are (issue 15's CPU rows)."""

from __future__ import annotations

import subprocess
import sys
import time

from bench.stats import cpu_times, proc_usage, tree_cpu

BURN = "import time\nend = time.process_time() + {seconds}\nwhile time.process_time() < end: pass\n"


def test_tree_cpu_counts_the_threads_and_the_children_the_process_itself_does_not() -> None:
    # A parent that spends nothing itself, a thread and a child that each burn 0.3 s of CPU.
    script = (f"import subprocess, sys, threading\n"
              f"t = threading.Thread(target=exec, args=({BURN.format(seconds=0.3)!r},)); t.start(); t.join()\n"
              f"subprocess.run([sys.executable, '-c', {BURN.format(seconds=0.3)!r}])\n"
              f"sys.stdin.readline()\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while tree_cpu(parent.pid) < 0.6 and time.monotonic() < deadline:
            time.sleep(0.1)
        whole = tree_cpu(parent.pid)
        alone = proc_usage(parent.pid)[0]  # utime + stime of the process: its threads, not its children
    finally:
        parent.communicate("\n", timeout=30)
    assert 0.6 <= whole < 2.0
    assert alone < whole - 0.25  # the child's 0.3 s is only in the tree


def test_tree_cpu_counts_a_live_grandchild() -> None:
    script = (f"import subprocess, sys\n"
              f"p = subprocess.Popen([sys.executable, '-c', {(BURN.format(seconds=0.3) + 'input()')!r}], "
              f"stdin=subprocess.PIPE, text=True)\n"
              f"sys.stdin.readline(); p.communicate(chr(10))\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while tree_cpu(parent.pid) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert tree_cpu(parent.pid) >= 0.3  # the child is alive, waiting: counted through /proc/.../children
    finally:
        parent.communicate("\n", timeout=30)


def test_cpu_times_sees_this_process_burning() -> None:
    busy, total = cpu_times()
    exec(BURN.format(seconds=0.2))
    busy_after, total_after = cpu_times()
    assert busy_after - busy >= 0.15 and total_after > total
