"""The embedded search engine (osmem) behind a loopback relay that a drill can switch off or slow.

osmem keeps its indices in memory, so stopping it for the "engine down" drill would lose them.
Instead clients talk to a TCP relay in front of it (relay.py): `set_reachable(False)` makes the
engine's address refuse connections, exactly as a stopped engine's would, and `set_reachable(True)`
opens it again with the data still there; `set_latency(seconds)` makes every request reach the
engine that much later (for a drill of timeouts), 0 by default.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
from types import TracebackType
from typing import IO, Final

import httpx
import osmem_server  # type: ignore[import-untyped]
from osmem_server import resolve_binary

from drillui.errors import StackError
from drillui.stack.postgres import HOST, describe_exit
from drillui.stack.relay import TcpRelay

START_TIMEOUT_S: Final = 15.0
STOP_GRACE_S: Final = 5.0


class EmbeddedEngine:
    """osmem on 127.0.0.1:<free port> plus the relay; `url` is the relay's (stable) address."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self._stderr: IO[bytes] | None = None
        self._relay: TcpRelay | None = None
        self._backend_url: str | None = None
        self._api_version = ""

    @property
    def url(self) -> str:
        """What clients use (ES_URL): the relay, same address for the engine's whole life."""
        return f"http://{HOST}:{self._running_relay().port}"

    @property
    def backend_url(self) -> str:
        """osmem's own address, always reachable (for fixtures and checks, not for the worker)."""
        if self._backend_url is None:
            raise StackError("the embedded engine is not running")
        return self._backend_url

    @property
    def version(self) -> str:
        """The osmem release (e.g. `0.1.6`)."""
        return str(osmem_server.__version__)

    @property
    def api_version(self) -> str:
        """The OpenSearch API version osmem answers as (e.g. `3.8.0`)."""
        return self._api_version

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise StackError("the embedded engine is not running")
        return self._proc.pid

    @property
    def reachable(self) -> bool:
        return self._relay is not None and self._relay.reachable

    def reap(self) -> int | None:
        """osmem's exit status if it died (and reap it), else None."""
        proc = self._proc
        return None if proc is None else proc.poll()

    def health(self) -> tuple[bool, str]:
        """(ok, one line): osmem is alive and answers, and the relay's thread runs.

        A relay closed on purpose (a drill's "engine down") is healthy: the line says it is off.
        """
        proc, relay = self._proc, self._relay
        if proc is None or relay is None or self._backend_url is None:
            return False, "not running"
        code = proc.poll()
        if code is not None:
            return False, f"osmem (pid {proc.pid}) exited: {describe_exit(code)}"
        if not relay.is_alive():
            return False, "the relay in front of osmem has stopped"
        try:
            response = httpx.get(self._backend_url, timeout=2.0, trust_env=False)
        except httpx.HTTPError as exc:
            return False, f"osmem (pid {proc.pid}) does not answer: {type(exc).__name__}: {exc}"
        if response.status_code != 200:
            return False, f"osmem (pid {proc.pid}) answers HTTP {response.status_code}"
        state = "reachable" if relay.reachable else "switched off (relay closed on purpose)"
        return True, f"osmem (pid {proc.pid}) answers; {state} at {HOST}:{relay.port}"

    def set_reachable(self, reachable: bool) -> None:
        """Close (False) or reopen (True) the relay's port; returns once it is done."""
        self._running_relay().set_reachable(reachable)

    @property
    def latency(self) -> float:
        """Seconds each request is held before it reaches osmem (0: none)."""
        return self._relay.delay if self._relay is not None else 0.0

    def set_latency(self, seconds: float) -> None:
        """Hold each request `seconds` (0 to 3600) before osmem sees it; ValueError if out of range."""
        self._running_relay().set_delay(seconds)

    def start(self) -> str:
        """Start osmem and the relay; return `url`. Raises StackError if osmem does not start."""
        if self._relay is not None:
            return self.url
        try:
            self._start_osmem()
            assert self._backend_url is not None
            backend_port = int(self._backend_url.rsplit(":", 1)[1])
            relay = TcpRelay((HOST, backend_port), name="engine")
            try:
                relay.bind_first()
            except BaseException:
                relay.discard()
                raise
            relay.start()
            self._relay = relay
        except BaseException:
            self.stop()
            raise
        return self.url

    def stop(self) -> None:
        """Stop the relay, then osmem (its data goes with it). Idempotent."""
        relay, self._relay = self._relay, None
        if relay is not None:
            relay.stop()
        proc, self._proc = self._proc, None
        self._backend_url = None
        if proc is not None:
            try:
                _stop_osmem(proc)
            finally:
                if self._stderr is not None:
                    self._stderr.close()
                    self._stderr = None

    def __enter__(self) -> EmbeddedEngine:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        if self._relay is None:
            return "EmbeddedEngine(stopped)"
        state = "reachable" if self.reachable else "unreachable"
        return f"EmbeddedEngine({self.url} -> {self._backend_url}, {state})"

    # -- internals ------------------------------------------------------------------------

    def _running_relay(self) -> TcpRelay:
        if self._relay is None:
            raise StackError("the embedded engine is not running")
        return self._relay

    def _start_osmem(self) -> None:
        # Launched here rather than with OsmemServer.start(): we need our own session (a Ctrl-C
        # in the terminal must not reach osmem before the stack decides to stop) and osmem's
        # stderr kept for error messages instead of printed in the user's terminal.
        binary = resolve_binary()
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            # --parent-pid and the stdin pipe both make osmem exit when this process dies.
            [binary, "--parent-pid", str(os.getpid()), "--no-ja", "--addr", f"{HOST}:0"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            start_new_session=True,
        )
        ready = _read_ready_line(self._proc, START_TIMEOUT_S)
        if ready is None:
            raise StackError(f"osmem did not start within {START_TIMEOUT_S:.0f} s: {self._stderr_tail()}")
        url = str(ready["url"])
        if not url.startswith(f"http://{HOST}:"):
            raise StackError(f"osmem listens on {url}, expected {HOST}")
        self._backend_url = url
        self._api_version = str(ready.get("version", ""))

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return "(no output)"
        self._stderr.seek(0)
        lines = [ln.strip() for ln in self._stderr.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        return " | ".join(lines[-5:]) or "(no output)"


def _read_ready_line(proc: subprocess.Popen[str], timeout: float) -> dict[str, object] | None:
    """osmem prints one JSON line with its URL when ready; read it without blocking forever."""
    assert proc.stdout is not None
    found: list[dict[str, object]] = []

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if isinstance(msg, dict) and "url" in msg:
                found.append(msg)
                return

    thread = threading.Thread(target=reader, name="osmem-ready", daemon=True)
    thread.start()
    thread.join(timeout)
    return found[0] if found else None


def _stop_osmem(proc: subprocess.Popen[str]) -> None:
    """Close osmem's stdin (its documented stop), then kill it if it lingers."""
    if proc.stdin is not None:
        proc.stdin.close()  # nothing was ever written, so closing cannot hit a broken pipe
    try:
        proc.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()

