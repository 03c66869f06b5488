"""One way to make the HTTP clients drillui talks to its stack with.

Every call to the stack (the engine, the trace store, the workers' /metrics, the control server)
goes to loopback or to URLs the user named: a proxy from the environment (`HTTP_PROXY`,
`ALL_PROXY`) must never sit in between, or a drill that takes the engine down would measure the
proxy instead. Clients are meant to be kept and shared per target: a new client per request
costs a TLS-less but still real ~30 ms of CPU in httpx.
"""

from __future__ import annotations

from typing import Any

import httpx

DEFAULT_TIMEOUT_SECONDS = 5.0


def client(timeout: float = DEFAULT_TIMEOUT_SECONDS, **kwargs: Any) -> httpx.Client:
    """An httpx client that ignores proxy settings of the environment."""
    return httpx.Client(timeout=timeout, trust_env=False, **kwargs)
