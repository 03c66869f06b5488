"""Worker processes of a drill: `python -m worker` children with their own env and log file.

Each worker listens for metrics on a port it picks itself (OUTBOX_METRICS_PORT=0, unless the run
asks for fixed ports a Prometheus scrapes) and says which in its `metrics.listening` log line: no
port race between picking and binding. stdout and stderr
both go to the worker's log file, so a crash's traceback sits next to its JSON lines.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from drillui.errors import DrillError

READY_TIMEOUT_SECONDS = 15.0
# Settings a person may set in the shell for every drill worker; every other worker setting
# in the shell (a leftover OUTBOX_EXPERIMENT_* knob from a manual session, say) would silently
# change the drill, so drill workers never inherit it: the drill's own env decides.
INHERITED_WORKER_SETTINGS = frozenset({"OUTBOX_METRICS_HOST"})


def inherited_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """What a drill worker inherits from drillui's environment: everything but worker settings."""
    from worker.settings import WorkerSettings

    own = set(WorkerSettings.model_fields) - INHERITED_WORKER_SETTINGS
    return {k: v for k, v in environ.items() if k not in own}

STOP_TIMEOUT_SECONDS = 10.0


class WorkerStartError(DrillError):
    title = "Worker did not start"


@dataclass
class WorkerProcess:
    name: str
    env: Mapping[str, str]
    log_path: Path
    base_env: Mapping[str, str] = field(default_factory=dict, repr=False)
    """drillui's environment; `inherited_environment` filters it."""
    proc: subprocess.Popen[bytes] | None = None
    metrics_url: str | None = None
    worker_id: str = ""
    _log_file: object = field(default=None, repr=False)
    _ready_offset: int = 0
    _terminated: bool = False

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**inherited_environment(self.base_env), "OUTBOX_METRICS_PORT": "0", **self.env, "PYTHONUNBUFFERED": "1"}
        self.worker_id = env.get("OUTBOX_WORKER_ID", self.name)
        env["OUTBOX_WORKER_ID"] = self.worker_id
        fh = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self._log_file = fh
        # A restarted worker appends to its predecessor's log: read only what this one writes.
        self._ready_offset = fh.tell()
        self.metrics_url = None
        self._terminated = False
        # Its own session: Ctrl+C or a closed terminal signal drillui's process group, and the
        # runner then stops its workers in order; they must not be hit behind its back.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker"], env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> str:
        """Block until the worker has said where its metrics are; returns the /metrics URL."""
        deadline = time.monotonic() + timeout
        offset = self._ready_offset
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise WorkerStartError(f"worker {self.name} exited with code {self.proc.returncode} at start: {self._tail()}")
            with open(self.log_path, "rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
            for raw in chunk.splitlines():
                try:
                    rec = json.loads(raw)
                except ValueError:
                    continue
                if rec.get("event") == "metrics.listening" and rec.get("worker_id") == self.worker_id:
                    self.metrics_url = f"http://127.0.0.1:{rec['metrics_port']}/metrics"
                if rec.get("event") == "worker.started" and rec.get("worker_id") == self.worker_id and self.metrics_url:
                    return self.metrics_url
            time.sleep(0.05)
        raise WorkerStartError(f"worker {self.name} did not report ready within {timeout:.0f}s: {self._tail()}")

    def _tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-3:])[-400:] or "(empty log)"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the crash of drill F. No cleanup runs in the worker."""
        if self.proc is not None and self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT_SECONDS)
        self._close_log()

    def terminate(self) -> None:
        """SIGTERM without waiting (`stop` waits)."""
        if self.proc is not None and self.alive() and not self._terminated:
            self._terminated = True
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int | None:
        """SIGTERM and wait (the worker finishes or releases its batch); SIGKILL if it hangs."""
        if self.proc is None:
            return None
        if self.alive():
            self.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        self._close_log()
        return self.proc.returncode

    def _close_log(self) -> None:
        fh = self._log_file
        if fh is not None:
            fh.close()  # type: ignore[attr-defined]
            self._log_file = None
