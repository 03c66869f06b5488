"""A port that answers like an OTLP gRPC receiver to an OTLP/HTTP exporter (runbook 3.2.1).

Why not a real gRPC server: none is installed, and none is needed for what the drill shows. What
an HTTP/1.1 client meets on port 4317 is an HTTP/2 server: it accepts the connection, answers the
request with a SETTINGS frame and a GOAWAY (PROTOCOL_ERROR), and closes. The worker's exporter
then fails every export with a protocol or connection error, its startup probe finds no OTLP/HTTP
receiver, and `drillui doctor` recognises "not HTTP/1.1: an OTLP gRPC (HTTP/2) port".

Loopback only, on a free port, in one daemon thread that ends with `close()`.
"""

from __future__ import annotations

import socket
import threading
from typing import Final

# An empty SETTINGS frame (length 0, type 4, no flags, stream 0), then GOAWAY (length 8, type 7)
# with last stream 0 and error code 1, PROTOCOL_ERROR.
_SETTINGS: Final = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_GOAWAY: Final = b"\x00\x00\x08\x07\x00\x00\x00\x00\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x01"
_ACCEPT_POLL_S: Final = 0.2
_READ_TIMEOUT_S: Final = 1.0


class GrpcLikePort:
    """Listen on 127.0.0.1:<free port>; `url` is what a misconfigured worker would be given."""

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(32)
        self._listener.settimeout(_ACCEPT_POLL_S)
        self.port: int = self._listener.getsockname()[1]
        self.connections = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="grpc-like-port", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._done.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            self.connections += 1
            with conn:
                conn.settimeout(_READ_TIMEOUT_S)
                try:
                    conn.recv(65536)
                    conn.sendall(_SETTINGS + _GOAWAY)
                except OSError:
                    continue  # the client hung up first: nothing to answer

    def close(self) -> None:
        self._done.set()
        self._listener.close()
        self._thread.join(2 * _ACCEPT_POLL_S + _READ_TIMEOUT_S)
