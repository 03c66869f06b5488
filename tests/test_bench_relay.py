"""bench/bench_relay.py still runs (tiny sizes) and reports every figure. Nothing here asserts a speed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from drillui.stack.engine import EmbeddedEngine
from drillui.stack.postgres import EmbeddedPostgres

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_bench_relay_reports_ratios_and_gauge_times(pg: EmbeddedPostgres, engine: EmbeddedEngine) -> None:
    spec = importlib.util.spec_from_file_location("bench_relay", ROOT / "bench" / "bench_relay.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_relay"] = module
    spec.loader.exec_module(module)
    rows = module.run(pg=pg, engine=engine, events=600, backlogs=[500, 2_000], rounds=1)
    figures = {r.figure: r for r in rows}
    for batch in (100, 500):
        assert figures[f"one worker / min(claim, sink), batch {batch}"].value > 0
        assert figures[f"two workers / one worker, batch {batch}"].value > 0
    assert figures["gauges ms at 2,000 pending (reading)"].unit == "ms"
    assert "| figure" in module.table(rows)
