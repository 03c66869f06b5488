"""A loopback TCP relay that a drill can close, reopen and slow down.

Why it exists: the drills need a server to become unreachable, or slow, without losing its data
and without any fake error. Clients talk to this relay instead of the server: closing it
(`set_reachable(False)`) closes its listening socket and every relayed connection, so every
client (an idle keep-alive connection in a pool included) then gets a real ECONNREFUSED on the
same address, exactly as with a stopped server; reopening rebinds the same port and the server
behind it never noticed. A delay (`set_delay`) holds every byte a client sends for that long
before the server gets it: each request, a connection's handshake included, reaches the server
late, as when the server is overloaded; the answers come back at once.

One selector thread pumps bytes both ways with bounded buffers (a slow reader applies
backpressure instead of growing memory; delayed bytes count against the same bound) and honours
half-closes. Commands are executed by that thread and the caller waits for them, so when
`set_reachable(False)` returns, the port is already refusing.
"""

from __future__ import annotations

import math
import queue
import selectors
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Final, Literal

from drillui.errors import StackError
from drillui.stack.postgres import HOST, free_port

BUF_LIMIT: Final = 256 * 1024
"""Bytes buffered per direction before the relay stops reading from the sender."""
MAX_DELAY_S: Final = 3600.0
_CHUNK: Final = 64 * 1024
_BACKEND_CONNECT_TIMEOUT_S: Final = 2.0
_REBIND_ATTEMPTS: Final = 20
_COMMAND_TIMEOUT_S: Final = 10.0


@dataclass(eq=False)
class _Pair:
    """One relayed connection: client socket, backend socket and the bytes in flight."""

    client: socket.socket
    backend: socket.socket
    to_backend: bytearray = field(default_factory=bytearray)
    to_client: bytearray = field(default_factory=bytearray)
    delayed: deque[tuple[float, bytes]] = field(default_factory=deque)
    """What the client sent, with the time it arrived, until the delay has passed."""
    delayed_bytes: int = 0
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
            if not self.client_eof and len(self.to_backend) + self.delayed_bytes < BUF_LIMIT:
                events |= selectors.EVENT_READ
            if self.to_client:
                events |= selectors.EVENT_WRITE
        else:
            if not self.backend_eof and len(self.to_client) < BUF_LIMIT:
                events |= selectors.EVENT_READ
            if self.to_backend:
                events |= selectors.EVENT_WRITE
        return events

    @property
    def finished(self) -> bool:
        return self.client_shut and self.backend_shut


_What = Literal["down", "up", "delay", "backend", "stop"]
_Command = tuple[_What, object, "queue.Queue[BaseException | None]"]


class TcpRelay(threading.Thread):
    """Selector loop relaying 127.0.0.1:<port> to `backend`; controlled through commands."""

    def __init__(self, backend: tuple[str, int], *, name: str) -> None:
        super().__init__(name=f"{name}-relay", daemon=True)
        self.label = name
        self.backend = backend
        self.port = 0
        self.delay = 0.0
        self._sel = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._pairs: set[_Pair] = set()
        self._holding: set[_Pair] = set()  # pairs with delayed bytes: the timer's work list
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

    def set_reachable(self, reachable: bool) -> None:
        self.command("up" if reachable else "down")

    def set_delay(self, seconds: float) -> None:
        """Hold what clients send for `seconds` (0 to 3600; 0: pass it on at once)."""
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not math.isfinite(seconds):
            raise ValueError(f"a delay is a number of seconds, not {seconds!r}")
        if not 0 <= seconds <= MAX_DELAY_S:
            raise ValueError(f"a delay of {seconds} s is not between 0 and {MAX_DELAY_S:.0f} s")
        self.command("delay", float(seconds))

    def set_backend(self, backend: tuple[str, int]) -> None:
        """Relay new connections to `backend` (a server restarted on another port)."""
        self.command("backend", backend)

    def command(self, what: _What, arg: object = None) -> None:
        if not self.is_alive():
            raise StackError(f"the {self.label} relay is not running")
        done: queue.Queue[BaseException | None] = queue.Queue(maxsize=1)
        self._commands.put((what, arg, done))
        self._wake_w.send(b"x")
        try:
            error = done.get(timeout=_COMMAND_TIMEOUT_S)
        except queue.Empty:
            raise StackError(f"the {self.label} relay did not carry out {what!r} within {_COMMAND_TIMEOUT_S:.0f} s") from None
        if error is not None:
            raise error

    def stop(self) -> None:
        """End the loop (closing every connection) and release the command channel."""
        if self.is_alive():
            self.command("stop")
            self.join(5.0)
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
                for key, events in self._sel.select(self._next_release()):
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
                self._release_due()
        finally:
            self._close_all()
            if self._listener is not None:
                self._unlisten()
            self._sel.close()
            self._wake_r.close()

    def _next_release(self) -> float | None:
        """Seconds until the first delayed bytes are due (the select timeout); None: no timer."""
        if not self._holding:
            return None
        first = min(pair.delayed[0][0] for pair in self._holding)
        return max(0.0, first + self.delay - time.monotonic())

    def _release_due(self) -> None:
        if not self._holding:
            return
        now = time.monotonic()
        for pair in list(self._holding):
            while pair.delayed and pair.delayed[0][0] + self.delay <= now:
                _, data = pair.delayed.popleft()
                pair.delayed_bytes -= len(data)
                pair.to_backend.extend(data)
            if not pair.delayed:
                self._holding.discard(pair)
            try:
                self._flush(pair, pair.backend)
                self._update(pair)
            except OSError:
                self._close_pair(pair)

    def _drain_commands(self) -> bool:
        """Run queued commands; True when the loop must end."""
        # Wake-up bytes carry no meaning; any left over only cause one more, empty, pass here.
        self._wake_r.recv(4096)
        stop = False
        while True:
            try:
                what, arg, done = self._commands.get_nowait()
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
                elif what == "delay":
                    assert isinstance(arg, float)
                    self.delay = arg  # bytes already held are released by the new delay
                elif what == "backend":
                    assert isinstance(arg, tuple)
                    self.backend = arg
                else:
                    stop = True
            except (OSError, StackError) as exc:
                result = exc if isinstance(exc, StackError) else StackError(f"{self.label} relay: {exc}")
            done.put(result)

    def _listen(self, port: int | None) -> None:
        last: OSError | None = None
        # A port we just closed can be briefly busy (a client racing for it); retry a little.
        for _ in range(_REBIND_ATTEMPTS if port else 1):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            # The connections we closed leave TIME_WAIT entries on this port; without
            # SO_REUSEADDR the rebind after "down" would fail for a minute.
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
        raise StackError(f"the {self.label} relay could not bind {HOST}:{port} again: {last}")

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
            # The server itself is gone: refuse this client the way a dead server would.
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
            if sock is pair.client and (self.delay > 0 or pair.delayed):
                # Held back (in order behind anything still held) until the delay has passed.
                pair.delayed.append((time.monotonic(), data))
                pair.delayed_bytes += len(data)
                self._holding.add(pair)
            else:
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
        if sock is pair.backend and pair.client_eof and not pair.delayed and not pair.backend_shut:
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
        self._holding.discard(pair)
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
