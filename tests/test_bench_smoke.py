"""The benchmark still runs (tiny sizes). It reports ratios; nothing here asserts a speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_bench_worker_reports_ratios() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_worker.py"), "--events", "50", "--done-rows", "500"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout)
    assert {"bulk_vs_single_ratio", "claim_backlog_vs_empty_ratio"} <= set(data)
