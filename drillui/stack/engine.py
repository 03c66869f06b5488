"""The embedded search engine (osmem) behind a loopback relay that a drill can switch off.

osmem keeps its indices in memory, so stopping it for the "engine down" drill would lose them.
Instead clients talk to a small TCP relay in front of it: `set_reachable(False)` closes the
relay's listening socket and every relayed connection, so any client (an idle keep-alive
connection in an httpx pool included) then gets a real ECONNREFUSED on the same address, exactly
as with a stopped engine; `set_reachable(True)` rebinds the same port and the data is still there.

The relay is one selector thread: it pumps bytes both ways with bounded buffers (a slow reader
applies backpressure instead of growing memory) and honours half-closes. Reachability changes
are executed by that thread and the caller waits for them, so when `set_reachable(False)`
returns, the port is already refusing.
"""

from __future__ import annotations

import json
import os
import queue
import selectors
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import IO, Final, Literal

import httpx
import osmem_server  # type: ignore[import-untyped]
from osmem_server import resolve_binary

from drillui.errors import StackError
from drillui.stack.postgres import HOST, describe_exit, free_port

START_TIMEOUT_S: Final = 15.0
STOP_GRACE_S: Final = 5.0
_BUF_LIMIT: Final = 256 * 1024
"""Bytes buffered per direction before the relay stops reading from the sender."""
_CHUNK: Final = 64 * 1024
_BACKEND_CONNECT_TIMEOUT_S: Final = 2.0
_REBIND_ATTEMPTS: Final = 20


@dataclass(eq=False)
class _Pair:
    """One relayed connection: client socket, backend socket and the bytes in flight."""

    client: socket.socket
    backend: socket.socket
    to_backend: bytearray = field(default_factory=bytearray)
    to_client: bytearray = field(default_factory=bytearray)
    client_eof: bool = False
    backend_eof: bool = False
    client_shut: bool = False
    backend_shut: bool = False

    def peer(self, sock: socket.socket) -> socket.socket:
        return self.backend if sock is self.client else self.client

    def outgoing(self, sock: socket.socket) -> bytearray:
        """Bytes waiting to be written to `sock`."""
        return self.to_backend if sock is self.backend else self.to_client

    def wants(self, sock: socket.socket) -> int:
        events = 0
        if sock is self.client:
            if not self.client_eof and len(self.to_backend) < _BUF_LIMIT:
                events |= selectors.EVENT_READ
            if self.to_client:
                events |= selectors.EVENT_WRITE
        else:
            if not self.backend_eof and len(self.to_client) < _BUF_LIMIT:
                events |= selectors.EVENT_READ
            if self.to_backend:
                events |= selectors.EVENT_WRITE
        return events

    @property
    def finished(self) -> bool:
        return self.client_shut and self.backend_shut


_Command = tuple[Literal["down", "up", "stop"], "queue.Queue[BaseException | None]"]


class _Relay(threading.Thread):
    """Selector loop relaying 127.0.0.1:<port> to the backend; controlled through commands."""

    def __init__(self, backend: tuple[str, int]) -> None:
        super().__init__(name="engine-relay", daemon=True)
        self.backend = backend
        self.port = 0
        self._sel = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._pairs: set[_Pair] = set()
        self._owner: dict[socket.socket, _Pair] = {}
        self._commands: queue.Queue[_Command] = queue.Queue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ)
        self.reachable = False

    # -- called from other threads --------------------------------------------------------

    def bind_first(self) -> None:
        """Bind the listening socket once, before the thread starts (fixes the port)."""
        self._listen(None)
        self.reachable = True

    def command(self, what: Literal["down", "up", "stop"]) -> None:
        if not self.is_alive():
            raise StackError("the engine relay is not running")
        done: queue.Queue[BaseException | None] = queue.Queue(maxsize=1)
        self._commands.put((what, done))
        self._wake_w.send(b"x")
        try:
            error = done.get(timeout=10.0)
        except queue.Empty:
            raise StackError(f"the engine relay did not carry out {what!r} within 10 s") from None
        if error is not None:
            raise error

    def close(self) -> None:
        """Release the command channel once the loop has ended."""
        self._wake_w.close()

    def discard(self) -> None:
        """Release everything of a relay whose thread never started."""
        if self._listener is not None:
            self._unlisten()
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> None:
        try:
            while True:
                for key, events in self._sel.select():
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self._wake_r:
                        if self._drain_commands():
                            return
                    elif sock is self._listener:
                        self._accept()
                    else:
                        pair = self._owner.get(sock)
                        if pair is not None:  # closed earlier in this same batch of events
                            self._pump(pair, sock, events)
        finally:
            self._close_all()
            if self._listener is not None:
                self._unlisten()
            self._sel.close()
            self._wake_r.close()

    def _drain_commands(self) -> bool:
        """Run queued commands; True when the loop must end."""
        # Wake-up bytes carry no meaning; any left over only cause one more, empty, pass here.
        self._wake_r.recv(4096)
        stop = False
        while True:
            try:
                what, done = self._commands.get_nowait()
            except queue.Empty:
                return stop
            result: BaseException | None = None
            try:
                if what == "down":
                    # Listener first: no new connection may slip in while the others close.
                    if self._listener is not None:
                        self._unlisten()
                    self._close_all()
                    self.reachable = False
                elif what == "up":
                    if self._listener is None:
                        self._listen(self.port)
                    self.reachable = True
                else:
                    stop = True
            except (OSError, StackError) as exc:
                result = exc if isinstance(exc, StackError) else StackError(f"engine relay: {exc}")
            done.put(result)

    def _listen(self, port: int | None) -> None:
        last: OSError | None = None
        # A port we just closed can be briefly busy (a client racing for it); retry a little.
        for _ in range(_REBIND_ATTEMPTS if port else 1):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            # The connections we closed leave TIME_WAIT entries on this port; without
            # SO_REUSEADDR the rebind after "engine down" would fail for a minute.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((HOST, port if port else free_port()))
            except OSError as exc:
                sock.close()
                last = exc
                time.sleep(0.05)
                continue
            sock.listen(128)
            sock.setblocking(False)
            self._listener = sock
            self.port = sock.getsockname()[1]
            self._sel.register(sock, selectors.EVENT_READ)
            return
        raise StackError(f"the engine relay could not bind {HOST}:{port} again: {last}")

    def _unlisten(self) -> None:
        assert self._listener is not None
        self._sel.unregister(self._listener)
        # Closing the listener also resets connections still waiting in its accept backlog.
        self._listener.close()
        self._listener = None

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            client, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        try:
            # A blocking connect inside the loop is acceptable: the backend is on loopback, so
            # it either connects or is refused within microseconds.
            backend = socket.create_connection(self.backend, timeout=_BACKEND_CONNECT_TIMEOUT_S)
        except OSError:
            # The engine itself is gone: refuse this client the way a dead engine would.
            _abort(client)
            return
        pair = _Pair(client, backend)
        self._pairs.add(pair)
        self._owner[client] = pair
        self._owner[backend] = pair
        try:
            for sock in (client, backend):
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._update(pair)
        except OSError:
            # The client may already have reset the connection; one bad pair must not end the loop.
            self._close_pair(pair)

    def _pump(self, pair: _Pair, sock: socket.socket, events: int) -> None:
        try:
            if events & selectors.EVENT_READ:
                self._read(pair, sock)
            if events & selectors.EVENT_WRITE:
                self._flush(pair, sock)
        except OSError:
            # Reset by either side: drop both, like a broken connection would.
            self._close_pair(pair)
            return
        if pair.finished:
            self._close_pair(pair)
            return
        try:
            self._update(pair)
        except OSError:
            self._close_pair(pair)

    def _read(self, pair: _Pair, sock: socket.socket) -> None:
        try:
            data = sock.recv(_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        target = pair.peer(sock)
        if data:
            pair.outgoing(target).extend(data)
        elif sock is pair.client:
            pair.client_eof = True
        else:
            pair.backend_eof = True
        self._flush(pair, target)

    def _flush(self, pair: _Pair, sock: socket.socket) -> None:
        """Write what is pending for `sock`; pass a half-close on once its buffer is empty."""
        buf = pair.outgoing(sock)
        if buf:
            try:
                sent = sock.send(buf)
            except (BlockingIOError, InterruptedError):
                sent = 0
            del buf[:sent]
        if buf:
            return
        if sock is pair.backend and pair.client_eof and not pair.backend_shut:
            sock.shutdown(socket.SHUT_WR)
            pair.backend_shut = True
        elif sock is pair.client and pair.backend_eof and not pair.client_shut:
            sock.shutdown(socket.SHUT_WR)
            pair.client_shut = True

    def _update(self, pair: _Pair) -> None:
        for sock in (pair.client, pair.backend):
            wanted = pair.wants(sock)
            key = self._sel.get_map().get(sock)
            current = key.events if key is not None else 0
            if wanted == current:
                continue
            if not wanted:
                self._sel.unregister(sock)
            elif not current:
                self._sel.register(sock, wanted)
            else:
                self._sel.modify(sock, wanted)

    def _close_pair(self, pair: _Pair) -> None:
        self._pairs.discard(pair)
        for sock in (pair.client, pair.backend):
            self._owner.pop(sock, None)
            if sock in self._sel.get_map():
                self._sel.unregister(sock)
            sock.close()

    def _close_all(self) -> None:
        for pair in list(self._pairs):
            self._close_pair(pair)


def _abort(sock: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0), as a refused or broken connection looks to a client."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()


class EmbeddedEngine:
    """osmem on 127.0.0.1:<free port> plus the relay; `url` is the relay's (stable) address."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self._stderr: IO[bytes] | None = None
        self._relay: _Relay | None = None
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
        self._running_relay().command("up" if reachable else "down")

    def start(self) -> str:
        """Start osmem and the relay; return `url`. Raises StackError if osmem does not start."""
        if self._relay is not None:
            return self.url
        try:
            self._start_osmem()
            assert self._backend_url is not None
            backend_port = int(self._backend_url.rsplit(":", 1)[1])
            relay = _Relay((HOST, backend_port))
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
            if relay.is_alive():
                relay.command("stop")
                relay.join(5.0)
            relay.close()
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

    def _running_relay(self) -> _Relay:
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

