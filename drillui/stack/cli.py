"""`drillui stack up`: run the embedded stack in a terminal until Ctrl-C or SIGTERM.

Why a foreground command: the stack lives exactly as long as this process (every server stops by
itself when it dies), so a trainer keeps it in one terminal and runs drills, psql or a worker in
another. With `--json` the first stdout line is the endpoints, for scripts and tests that start
the stack as a subprocess; everything else then goes to stderr.

Nothing printed shows a password: URLs are redacted. A program gets the real endpoints from the
0600 file named by `secrets_file` in that JSON line (`{"pid": ..., "endpoints": {...}}`), or
through `Stack.attach`; a shell from `env_file` (`set -a; . <env_file>; set +a`).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TextIO

from drillui.stack.httpguard import CONTROL_HEADER
from drillui.stack.stack import (
    DATABASE_URL,
    ES_URL,
    JAEGER_URL,
    OTLP_ENDPOINT,
    Stack,
    default_state_dir,
)

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def stack_up(state_dir: Path | None, json_out: bool) -> int:
    """Start the stack, print its endpoints, wait for SIGINT/SIGTERM, stop it; return 0.

    Expected failures raise DrillError subclasses (UsageError, StackAlreadyRunning, StackError).
    Must run in the main thread (it installs signal handlers).
    """
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Installed before starting: a SIGTERM during the start must still end in a clean stop.
    previous = {sig: signal.signal(sig, on_signal) for sig in _STOP_SIGNALS}
    notes = sys.stderr if json_out else sys.stdout
    try:
        folder = state_dir if state_dir is not None else default_state_dir()
        began = time.monotonic()
        stack = Stack.start(folder, on_event=lambda message: print(message, file=notes, flush=True))
        total = time.monotonic() - began
        try:
            if json_out:
                print(json.dumps(stack.summary()), flush=True)
            _describe(stack, total, notes)
            while not stop.wait(0.5):
                pass
            print("stopping the stack ...", file=notes, flush=True)
        finally:
            began = time.monotonic()
            stack.stop()
        print(f"stopped in {time.monotonic() - began:.2f} s", file=notes, flush=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _describe(stack: Stack, total: float, out: TextIO) -> None:
    """The human summary: each endpoint, started or taken from the environment, and its time."""
    endpoints = stack.endpoints.redacted()
    lines = [f"drillui stack on {stack.state_dir} (pid {os.getpid()}), ready in {total:.2f} s"]
    urls = {"postgres": endpoints.database_url, "engine": endpoints.es_url}
    for part in stack.parts:
        how = f"started in {part.seconds:.2f} s" if part.started else f"from {part.source}"
        if part.name == "traces":
            lines.append(f"  traces    {how}")
            lines.append(f"    OTLP    {endpoints.otlp_endpoint}/v1/traces")
            lines.append(f"    Jaeger  {endpoints.jaeger_url}")
        elif part.name == "prometheus":
            # Optional: say whether it runs and, when it does not, how to get it.
            if endpoints.prometheus_url:
                lines.append(f"  prometheus {endpoints.prometheus_url}  ({how}; PromQL: {endpoints.prometheus_url}/api/v1/query)")
            else:
                lines.append("  prometheus none")
        else:
            lines.append(f"  {part.name:<9} {urls[part.name]}  ({how})")
        if part.detail:
            lines.append(f"    {part.detail}")
    lines.append(f"  control   {stack.control_url}  GET /health; POST /engine/down|up|latency, /postgres/down|up|restart")
    lines.append(f"    e.g. curl -X POST -H '{CONTROL_HEADER}: 1' {stack.control_url}/engine/down")
    lines.append(f"In another terminal, to set {DATABASE_URL}, {ES_URL}, {OTLP_ENDPOINT} and {JAEGER_URL} (passwords included):")
    lines.append(f"  set -a; . {shlex.quote(str(stack.env_path))}; set +a")
    lines.append("Ctrl-C (or kill -TERM) stops everything.")
    print("\n".join(lines), file=out, flush=True)
