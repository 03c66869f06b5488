"""What the stack's two loopback HTTP servers refuse before any handler runs.

Why it exists: "listens on 127.0.0.1" does not make a server private. A web page the trainer has
open can make the browser send requests to loopback ports: a cross-site form POST needs no
permission at all (it switched the engine off), and DNS rebinding (a hostile name re-resolved to
127.0.0.1) even lets the page read the answers. Both attacks carry tell-tale headers, so the control
server and the trace store apply the same three rules:

- the `Host` header must name a loopback address (127.0.0.1, localhost, [::1]) with the server's own
  port (or no port): a rebinding page always sends its own host name;
- an `Origin` header, when present, must be one of those same loopback origins: browsers add it to
  every cross-origin request and to every POST;
- a state change must be a request a browser cannot send cross-site without a CORS preflight
  (which these servers never grant): a JSON body (`Content-Type: application/json`) or the custom
  header `X-Drillui-Control`. OTLP ingest qualifies by its own content types (protobuf or JSON).

And the plumbing both need: a strict `Content-Length` (digits only, one value, bounded; Python's
`int()` would take "-1", " 5" or "1_0"), a bound on concurrent connections, and quiet error
handling (a client that hangs up is not a traceback in the `stack up` terminal).
"""

from __future__ import annotations

import logging
import re
import socket
import sys
import threading
from email.message import Message
from http.server import ThreadingHTTPServer
from socketserver import BaseRequestHandler, TCPServer
from typing import Any, Final
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

LOOPBACK_NAMES: Final = frozenset({"127.0.0.1", "localhost", "::1"})
CONTROL_HEADER: Final = "X-Drillui-Control"
"""A custom header marks a request as deliberate: browsers cannot add it cross-site without a preflight."""

_HOST_RE: Final = re.compile(r"(?P<name>\[[0-9A-Fa-f:.]+\]|[^:\[\]]+)(?::(?P<port>\d{1,5}))?")
_DIGITS: Final = re.compile(r"\d{1,19}")
_QUIET_ERRORS: Final = (ConnectionError, TimeoutError)


class BadRequest(Exception):
    """A request refused before its handler runs: HTTP status and a one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _loopback_name(name: str) -> bool:
    return name.lower().removeprefix("[").removesuffix("]") in LOOPBACK_NAMES


def host_allowed(host: str | None, port: int) -> bool:
    """Whether a `Host` header names this loopback server (DNS-rebinding defence)."""
    if host is None:
        return False
    match = _HOST_RE.fullmatch(host.strip())
    if match is None or not _loopback_name(match["name"]):
        return False
    return match["port"] is None or int(match["port"]) == port


def origin_allowed(origin: str | None, port: int) -> bool:
    """Whether an `Origin` header (absent = a non-browser client) is this server's own origin."""
    if origin is None:
        return True
    try:
        parts = urlsplit(origin.strip())
        origin_port = parts.port
    except ValueError:
        return False
    return parts.scheme == "http" and parts.hostname is not None and _loopback_name(parts.hostname) and origin_port == port


def check_browser_headers(headers: Message, port: int, http_version: str) -> None:
    """Raise BadRequest unless Host and Origin are this server's own (see the module docstring)."""
    hosts = headers.get_all("Host") or []
    if len(hosts) > 1:
        raise BadRequest(400, "more than one Host header")
    if not hosts:
        # HTTP/1.1 requires Host (RFC 9112 §3.2); an HTTP/1.0 client may omit it, and no browser does.
        if http_version == "HTTP/1.0":
            return
        raise BadRequest(400, "missing Host header")
    if not host_allowed(hosts[0], port):
        raise BadRequest(403, f"Host {_shown(hosts[0])} is not this server's loopback address (127.0.0.1:{port})")
    origins = headers.get_all("Origin") or []
    if len(origins) > 1 or not origin_allowed(origins[0] if origins else None, port):
        raise BadRequest(403, f"Origin {_shown(origins[0])} may not use this server (only http://127.0.0.1:{port})")


def check_deliberate(headers: Message) -> None:
    """Raise BadRequest unless the request could not have come from a cross-site form or link."""
    if headers.get(CONTROL_HEADER):
        return
    media_type = (headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
    if media_type == "application/json":
        return
    raise BadRequest(
        403,
        f"a state change needs a JSON body (Content-Type: application/json) or the header {CONTROL_HEADER}: 1",
    )


def content_length(headers: Message, limit: int) -> int | None:
    """The request's body length, None when it has none; BadRequest when it is malformed or > limit.

    A body sent with `Transfer-Encoding` is refused here: neither server needs chunked requests
    except OTLP ingest, which reads them itself (and refuses a Content-Length beside them).
    """
    values = headers.get_all("Content-Length") or []
    if not values:
        return None
    if len(values) > 1 and len(set(values)) > 1:
        raise BadRequest(400, "conflicting Content-Length headers")
    text = values[0].strip()
    if not _DIGITS.fullmatch(text):
        raise BadRequest(400, f"invalid Content-Length {_shown(values[0])}")
    length = int(text)
    if length > limit:
        raise BadRequest(413, f"request body too large ({length} bytes, at most {limit})")
    return length


def _shown(value: str) -> str:
    """A header value fit for a one-line error: bounded and printable."""
    cut = value[:80] + ("..." if len(value) > 80 else "")
    return repr(cut)


class LoopbackHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server with a bound on live connections and quiet error handling.

    Past `max_connections` a new connection is closed at once rather than given a thread: every
    thread holds a stack and buffers, so an unbounded number of idle clients is unbounded memory.
    """

    daemon_threads = True
    max_connections = 64

    def __init__(self, address: tuple[str, int], handler: type[BaseRequestHandler], *, name: str) -> None:
        self.name = name
        self._slots = threading.BoundedSemaphore(self.max_connections)
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn), which can stall offline.
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.warning("%s: more than %d connections, closing a new one", self.name, self.max_connections)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line, never a traceback in the terminal; a client hanging up is not even that."""
        error = sys.exc_info()[1]
        if isinstance(error, _QUIET_ERRORS):
            log.debug("%s: client %s went away: %s", self.name, client_address, error)
            return
        log.debug("%s: error while serving %s", self.name, client_address, exc_info=True)
        log.warning("%s: request from %s failed: %s: %s", self.name, client_address, type(error).__name__, error)


def set_nodelay(sock: socket.socket) -> None:
    """Headers and body leave in two writes; without NODELAY, Nagle + delayed ACK add ~40 ms."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
