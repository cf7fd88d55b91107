"""``[server] workers = N``: N server-agent processes sharing the listening sockets, one supervisor.

Each worker is ``dicom-server-agent serve --worker I`` and binds the configured listeners with
``SO_REUSEPORT`` (Linux ``socket(7)``: the kernel spreads new connections over the sockets bound to one
port by processes of the same user, so no worker accepts for another and a dead worker's queue goes
with it). What the workers must agree on lives in the shared store (``[shared] redis``, required):
the PACS's return association for a move may reach any worker. The supervisor:

* starts the workers and restarts one that dies (a crash or a kill), waiting longer after each
  death in quick succession (1 s doubling up to 30 s) so that a worker that cannot start does not spin;
* forwards SIGHUP (reload) and SIGTERM/SIGINT (stop) to every worker, waits for them to finish their
  associations, and exits 0 once all have exited (1 if one had to be killed);
* asks the kernel to stop each worker if the supervisor itself dies (``PR_SET_PDEATHSIG``), so that
  a supervisor killed with SIGKILL leaves no worker listening unsupervised.

Decision log: each worker writes its own chain, ``decisions.wI.jsonl`` beside the configured
``decisions.jsonl`` (its own writer lock, its own rotation, and a restarted worker I continues worker
I's chain through the lock's handover). One writer per chain keeps every guarantee ``decision-log
verify`` gives (no record reordered, removed or edited within a chain; a missing tail noticed at the
next checkpoint); a single writer fed by the workers would add a process whose death loses records
the workers had already acted on. ``decision-log verify`` checks each worker's log.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from dicomwire.sdnotify import Inbox, Notifier

from .config import ServerAgentConfig
from .decisions import load_key

log = logging.getLogger("server_agent.supervisor")
PR_SET_PDEATHSIG = 1  # prctl(2)
STOP_WAIT = 30.0  # seconds the workers get to finish their associations after SIGTERM


def worker_log(decision_log: Path, worker: int) -> Path:
    """Worker ``worker``'s own decision-log chain, beside the configured one."""
    return decision_log.with_name(f"{decision_log.stem}.w{worker}{decision_log.suffix}")


def prepare(config: ServerAgentConfig) -> None:
    """What the workers would otherwise race to create: the decision log's signing key (one key, every
    worker's chain signed with it, one public key to verify them all)."""
    if config.decision_log.enabled and config.decision_log.key_file is not None:
        load_key(config.decision_log.key_file)


def worker_config(config: ServerAgentConfig, worker: int) -> ServerAgentConfig:
    """What worker ``worker`` runs: the file's configuration with its own decision log."""
    server = config.server.model_copy(update={"decision_log": worker_log(config.server.decision_log, worker)})
    admin = config.admin.model_copy(update={"worker": worker}) if config.admin is not None else None  # its port
    return config.model_copy(update={"server": server, "admin": admin})


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):  # not Linux: workers outlive a killed supervisor
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(slots=True)
class _Worker:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restart_at: float = 0.0
    backoff: float = 1.0


class Supervisor:
    def __init__(self, config_path: Path, workers: int, log_level: str = "INFO") -> None:
        self.config_path = config_path
        self.log_level = log_level
        self.workers = [_Worker(i) for i in range(1, workers + 1)]
        self.stopping = False
        self.killed = False
        # systemd Type=notify: READY=1 once every worker has said it, RELOADING=1 until every worker has
        # reloaded, STOPPING=1 (the workers notify this supervisor's Inbox, not the service manager).
        self.notifier = Notifier.from_environment()
        self.inbox = Inbox() if self.notifier.active else None
        self.awaited: set[int] = set()  # workers whose READY=1 the manager's next READY=1 waits for
        self.announcing = False  # a READY=1 is due (after the start, after a reload)

    def command(self, worker: int) -> list[str]:
        return [sys.executable, "-m", "server_agent.cli", "serve", "--config", str(self.config_path),
                "--log-level", self.log_level, "--worker", str(worker)]

    def _start(self, worker: _Worker) -> None:
        env = dict(os.environ, NOTIFY_SOCKET=self.inbox.address) if self.inbox is not None else None
        worker.process = subprocess.Popen(self.command(worker.index), stdin=subprocess.DEVNULL, env=env,
                                          preexec_fn=_die_with_parent)
        worker.started = time.monotonic()
        if self.announcing:  # a worker restarted before the announcement is waited for too
            self.awaited.add(worker.process.pid)
        log.info("worker %d started (pid %d)", worker.index, worker.process.pid)

    def _signal(self, number: int, frame: FrameType | None) -> None:
        if number in (signal.SIGTERM, signal.SIGINT):
            self.stopping = True
            number = signal.SIGTERM
            self.notifier.stopping()
        elif number == signal.SIGHUP:
            self.notifier.reloading()
            self.awaited = {w.process.pid for w in self.workers if w.process is not None and w.process.poll() is None}
            self.announcing = True
        for worker in self.workers:
            if worker.process is not None and worker.process.poll() is None:
                worker.process.send_signal(number)

    def run(self) -> int:
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(number, self._signal)
        self.announcing = True
        for worker in self.workers:
            self._start(worker)
        print(f"dicom-server-agent: supervising {len(self.workers)} workers (pids "
              f"{', '.join(str(w.process.pid) for w in self.workers if w.process)})", file=sys.stderr, flush=True)
        while not self.stopping:
            self._watch()
            self._notify()
            time.sleep(0.2)
        return self._stop()

    def _notify(self) -> None:
        if self.inbox is None or not self.announcing:
            return
        self.awaited -= self.inbox.ready(self.awaited)
        live = {w.process.pid for w in self.workers if w.process is not None}
        self.awaited &= live  # one that died is not waited for: its successor is (see _start)
        if not self.awaited:
            self.announcing = False
            self.notifier.ready(f"{len(live)} workers serving")

    def _watch(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            process = worker.process
            if process is not None and process.poll() is not None:
                quick = now - worker.started < 10  # died right after starting: wait 1 s, 2 s, 4 s ... 30 s
                wait = worker.backoff if quick else 0.0
                worker.backoff = min(30.0, worker.backoff * 2) if quick else 1.0
                worker.restart_at = now + wait
                log.error("worker %d (pid %d) exited with %s: restarting%s", worker.index, process.pid,
                          process.returncode, f" in {wait:.0f} s" if quick else "")
                worker.process = None
            if worker.process is None and now >= worker.restart_at and not self.stopping:
                self._start(worker)

    def _stop(self) -> int:
        deadline = time.monotonic() + STOP_WAIT
        for worker in self.workers:
            if worker.process is None:
                continue
            try:
                worker.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d (pid %d) did not stop within %.0f s: killed", worker.index,
                          worker.process.pid, STOP_WAIT)
                worker.process.kill()
                worker.process.wait()
                self.killed = True
        log.info("all workers stopped")
        return 1 if self.killed else 0


__all__ = ["Supervisor", "prepare", "worker_config", "worker_log"]
