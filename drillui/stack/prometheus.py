"""The embedded stack's Prometheus: used when a `prometheus` binary is installed, absent otherwise.

Why optional: it is the one real server of the runbook's stack that installs on these machines
(Debian's `prometheus` package), so where it is present the runbook's PromQL runs for real;
where it is not, nothing changes (drills scrape each worker's /metrics directly, as before).

How it runs: one `prometheus` on 127.0.0.1:<free port>, its config and TSDB in
`<state>/prometheus/`, scraping every second (a drill lasts seconds, and `rate(...[1m])` needs
samples). Its targets are the drill workers, listed by the runner in `targets/<run_id>.json`
(file_sd: Prometheus re-reads the folder when a file changes); each target carries
`job="outbox-worker"` (the compose file's job name), `worker` (the worker's name in the drill) and
`drill` (the drill id) and `run` (the run id: one value per run, for a check to see its own
run only), on top of the `component` and `env` every worker series already has. It
ends with its owner like the postmaster (the same watchdog, see postgres.py), and a stack that
starts waits for the previous one on the folder to be gone (its TSDB lock).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx

from drillui.errors import StackError, UsageError
from drillui.stack.postgres import HOST, describe_exit, free_port, pid_alive, start_watchdog
from drillui.stack.private import write_private

BINARY_ENV: Final = "DRILLUI_PROMETHEUS"
"""A path to the `prometheus` binary, or `off` to run without one even where it is installed."""
URL_ENV: Final = "PROMETHEUS_URL"
"""A Prometheus of your own (it then scrapes the workers itself): the stack starts none."""
INSTALL_HINT: Final = f"apt-get install prometheus, or set {BINARY_ENV}=/path/to/prometheus"
OFF_WORDS: Final = frozenset({"off", "0", "no", "false", "none"})
JOB: Final = "outbox-worker"
SCRAPE_INTERVAL_S: Final = 1
RETENTION: Final = ("2d", "512MB")
"""How long and how much the TSDB keeps: drills are minutes; a forgotten stack must not fill the disk."""
READY_TIMEOUT_S: Final = 20.0
STOP_TIMEOUT_S: Final = 10.0
PREVIOUS_TIMEOUT_S: Final = 15.0
_PORT_ATTEMPTS: Final = 4
FOLDER_NAME: Final = "prometheus"
TARGETS_NAME: Final = "targets"
PID_NAME: Final = "prometheus.pid"
LOG_NAME: Final = "prometheus.log"


def find_binary(env: Mapping[str, str] = os.environ) -> tuple[Path | None, str]:
    """(the binary to run, or None and why not). A `DRILLUI_PROMETHEUS` that names no executable
    is a UsageError: the user asked for one."""
    raw = env.get(BINARY_ENV, "").strip()
    if raw.lower() in OFF_WORDS:
        return None, f"turned off ({BINARY_ENV}={raw})"
    if raw:
        path = Path(raw).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise UsageError(f"{BINARY_ENV}={raw} is not an executable file",
                             hint=f"give the path of the prometheus binary, or {BINARY_ENV}=off")
        return path, ""
    found = shutil.which("prometheus", path=env.get("PATH") or os.defpath)
    if found:
        return Path(found), ""
    return None, f"no prometheus binary on PATH ({INSTALL_HINT})"


def config_text(targets_dir: Path) -> str:
    """The Prometheus config: scrape the drill workers listed in `targets_dir`, every second."""
    pattern = json.dumps(str(targets_dir / "*.json"))  # a JSON string is a valid YAML scalar
    return (
        "# Written by drillui at every start of the embedded stack.\n"
        "global:\n"
        f"  scrape_interval: {SCRAPE_INTERVAL_S}s\n"
        f"  scrape_timeout: {SCRAPE_INTERVAL_S}s\n"
        "  evaluation_interval: 15s\n"
        "scrape_configs:\n"
        f"  - job_name: {JOB}\n"
        "    metrics_path: /metrics\n"
        "    file_sd_configs:\n"
        f"      - files: [{pattern}]\n"
        "        refresh_interval: 1s\n"
    )


@dataclass(frozen=True)
class ScrapeTarget:
    """One worker for Prometheus to scrape: its /metrics address and the labels it gets."""

    address: str
    """host:port"""
    worker: str
    drill: str
    run: str
    """The run's id: lets a query tell this run's workers from the previous run's."""


def write_targets(path: Path, targets: Sequence[ScrapeTarget]) -> None:
    """Write a file_sd file atomically (Prometheus reads a half-written file as an error and
    keeps the old targets until the next change)."""
    groups = [{"targets": [t.address], "labels": {"worker": t.worker, "drill": t.drill, "run": t.run}} for t in targets]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write_private(tmp, json.dumps(groups, indent=1) + "\n")
    os.replace(tmp, path)


class EmbeddedPrometheus:
    """`prometheus` on 127.0.0.1:<free port>, config and data in `folder`."""

    def __init__(self, folder: Path, binary: Path) -> None:
        self.folder = Path(folder).expanduser().absolute()
        self.binary = binary
        self._proc: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._lifeline: int | None = None
        self._port: int | None = None
        self._log_offset = 0
        self.version = ""

    @property
    def targets_dir(self) -> Path:
        return self.folder / TARGETS_NAME

    @property
    def log_path(self) -> Path:
        return self.folder / LOG_NAME

    @property
    def url(self) -> str:
        if self._port is None or self._proc is None:
            raise StackError("the embedded Prometheus is not running")
        return f"http://{HOST}:{self._port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def reap(self) -> int | None:
        """Prometheus's exit status if it died (and reap it), else None."""
        proc = self._proc
        return None if proc is None else proc.poll()

    def health(self) -> tuple[bool, str]:
        proc = self._proc
        if proc is None or self._port is None:
            return False, "not running"
        code = proc.poll()
        if code is not None:
            return False, f"prometheus (pid {proc.pid}) exited: {describe_exit(code)}"
        try:
            response = httpx.get(f"{self.url}/-/ready", timeout=2.0, trust_env=False)
        except httpx.HTTPError as exc:
            return False, f"prometheus (pid {proc.pid}) does not answer: {type(exc).__name__}: {exc}"
        if response.status_code != 200:
            return False, f"prometheus (pid {proc.pid}) answers HTTP {response.status_code} on /-/ready"
        return True, f"prometheus {self.version} (pid {proc.pid}) answers on {HOST}:{self._port}"

    def start(self) -> str:
        """Write the config, start Prometheus, wait until it is ready; return its URL."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.targets_dir.mkdir(exist_ok=True, mode=0o700)
        # Targets of runs whose runner died: their workers are gone with it.
        for stale in self.targets_dir.glob("*.json"):
            stale.unlink(missing_ok=True)
        self._wait_for_previous()
        config = self.folder / "prometheus.yml"
        write_private(config, config_text(self.targets_dir))
        last: StackError | None = None
        for _ in range(_PORT_ATTEMPTS):
            self._launch(config, free_port())
            try:
                self._wait_ready()
            except _PortTaken as exc:
                last = exc
                continue
            except BaseException:
                self.stop()
                raise
            self._read_version()
            return self.url
        assert last is not None
        raise last

    def stop(self) -> None:
        """SIGTERM (Prometheus flushes its head block and exits), SIGKILL if it lingers. Idempotent."""
        proc, self._proc = self._proc, None
        try:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        finally:
            self._release_watchdog()
            (self.folder / PID_NAME).unlink(missing_ok=True)

    # -- internals ------------------------------------------------------------------------

    def _wait_for_previous(self) -> None:
        """A Prometheus whose owner just died is still shutting down (its watchdog asked it to):
        wait for it, or the TSDB lock refuses the new one."""
        pid_file = self.folder / PID_NAME
        try:
            pid = int(pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return
        deadline = time.monotonic() + PREVIOUS_TIMEOUT_S
        while pid_alive(pid) and _is_prometheus(pid):
            if time.monotonic() > deadline:
                raise StackError(f"an earlier prometheus (pid {pid}) still runs on {self.folder}", hint=f"kill {pid}")
            time.sleep(0.05)

    def _launch(self, config: Path, port: int) -> None:
        args = [
            str(self.binary),
            f"--config.file={config}",
            f"--storage.tsdb.path={self.folder / 'data'}",
            f"--storage.tsdb.retention.time={RETENTION[0]}",
            f"--storage.tsdb.retention.size={RETENTION[1]}",
            f"--web.listen-address={HOST}:{port}",
            "--log.level=warn",
        ]
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            # Own session: a Ctrl-C in the owner's terminal must not reach it before the stack
            # decides to stop; stdout and stderr to a log beside its data, not the terminal.
            self._proc = subprocess.Popen(args, cwd=self.folder, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        self._port = port
        write_private(self.folder / PID_NAME, f"{self._proc.pid}\n")
        try:
            self._watchdog, self._lifeline = start_watchdog(self._proc.pid, "prometheus")
        except BaseException:
            self._proc.kill()
            self._proc.wait()
            self._proc = None
            raise

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        url = f"http://{HOST}:{self._port}/-/ready"
        with httpx.Client(trust_env=False, timeout=1.0) as client:
            while True:
                code = self._proc.poll()
                if code is not None:
                    self._proc = None
                    self._release_watchdog()
                    tail = self._log_tail()
                    if "address already in use" in tail:
                        raise _PortTaken(f"port {self._port} on {HOST} was taken: {tail}")
                    raise StackError(f"prometheus exited at start ({describe_exit(code)}): {tail}", hint=f"full log: {self.log_path}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(url).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise StackError(f"prometheus on {HOST}:{self._port} was not ready within {READY_TIMEOUT_S:.0f} s: "
                                     f"{self._log_tail()}", hint=f"full log: {self.log_path}")
                time.sleep(0.05)

    def _read_version(self) -> None:
        try:
            info = httpx.get(f"{self.url}/api/v1/status/buildinfo", timeout=2.0, trust_env=False).json()
            self.version = str(info.get("data", {}).get("version", ""))
        except (httpx.HTTPError, ValueError, AttributeError):
            self.version = ""

    def _log_tail(self, lines: int = 4) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_offset)
                text = log.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return "(no log)"
        kept = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
        return " | ".join(kept) or "(no output)"

    def _release_watchdog(self) -> None:
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None
        if self._watchdog is not None:
            try:
                self._watchdog.wait(STOP_TIMEOUT_S + 6.0)
            finally:
                self._watchdog = None


class _PortTaken(StackError):
    """The probed port was bound by someone else before Prometheus could bind it."""


def _is_prometheus(pid: int) -> bool:
    """Whether `pid` is still a prometheus (a pid file can outlive its process; pids are reused)."""
    try:
        return "prometheus" in Path(f"/proc/{pid}/comm").read_text()
    except OSError:
        return False
