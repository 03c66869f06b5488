"""The runbook's verbs as a user types them: run --all, verify, export, clean, failed list/requeue."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from drillui.errors import DrillError
from drillui.runner.cleanup import clean, find_dirt, prune_snapshots
from drillui.runner.infra import Infrastructure
from drillui.runner.runner import DirtyState, DrillRunner, RunOptions
from drillui.scenarios import load_catalog
from worker.db import connect, insert_event

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
CATALOG = load_catalog(ROOT / "scenarios.yaml")


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "ES_URL", "JAEGER_URL", "OTEL_EXPORTER_OTLP_ENDPOINT", "DRILLUI_INFRA")}
    env["DRILLUI_STATE_DIR"] = str(tmp / "state")
    return env


def drillui(tmp: Path, *args: str, timeout: float = 300, scenarios: Path = ROOT / "scenarios.yaml") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "drillui", "--scenarios", str(scenarios), *args],
        env=_env(tmp), capture_output=True, text=True, timeout=timeout, cwd=tmp,
    )


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Path]:
    """A `drillui stack up` in the background on its own state folder, so commands attach to it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "drillui", "stack", "up", "--json"], env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert {"database_url", "es_url", "otlp_endpoint", "jaeger_url"} <= set(json.loads(line))
    yield tmp_path
    proc.terminate()
    proc.wait(30)
    proc.stdout.close()


# Every drill of the catalog passes on its own in test_drills.py (and `bench/run.py` times
# `run --all` over all of them): here the command itself, over a catalog of four that covers the
# end states' variety: A (exported again below), C (verified offline), N (no span expected), Z (control).
ALL_SUBSET = ("A", "C", "N", "Z")


@pytest.mark.timeout(300)
def test_run_all_from_a_fresh_folder_then_verify_export_list(stack: Path) -> None:
    import yaml

    raw = yaml.safe_load((ROOT / "scenarios.yaml").read_text(encoding="utf-8"))
    ids = {CATALOG.get(letter).id for letter in ALL_SUBSET}
    raw["drills"] = [d for d in raw["drills"] if d["id"] in ids]
    subset = stack / "subset.yaml"
    subset.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    drills = [d for d in CATALOG.drills if d.id in ids]

    proc = drillui(stack, "run", "--all", "--json", scenarios=subset)
    assert proc.returncode == 0, proc.stderr[-3000:]
    verdicts = json.loads(proc.stdout)
    assert [v["scenario"] for v in verdicts] == [d.id for d in drills]
    assert all(v["verdict"] == "pass" for v in verdicts)
    for d in drills:
        [run] = list((stack / "snapshots" / d.id).iterdir())
        # A drill that expects no span (N: Postgres away) has nothing to query the backend for.
        exports = ("_exports/_queries.json",) if d.expect.traces else ()
        for rel in ("_recipe.json", "_result.json", "_ids.json", "_fault.json", "_probes.json", *exports):
            assert (run / rel).is_file(), f"{d.id}: {rel}"
        assert list((run / "_logs").glob("*.log")) and list((run / "_metrics").glob("metrics-before*.txt"))

    listed = drillui(stack, "list")
    assert listed.returncode == 0 and listed.stdout.count("PASS") == len(drills)

    # verify: offline, on a copied folder, with no server at all
    shutil.copytree(stack / "snapshots", stack / "copy" / "snapshots")
    offline = subprocess.run(
        [sys.executable, "-m", "drillui", "--scenarios", str(ROOT / "scenarios.yaml"), "verify", "C", "--json"],
        env={"PATH": os.environ["PATH"], "HOME": str(stack)}, capture_output=True, text=True, timeout=60, cwd=stack / "copy",
    )
    assert offline.returncode == 0, offline.stderr
    report = json.loads(offline.stdout)
    assert report["recomputed"]["verdict"] == "pass" and report["consistent"] and report["differences"] == []

    # export: the running stack's trace store still holds the spans; written beside the record
    [run_a] = list((stack / "snapshots" / "es_down_connect").iterdir())
    before = (run_a / "_manifest.json").read_text()
    exported = drillui(stack, "export", "A", "--lookback", "1h", "--limit", "5")
    assert exported.returncode == 0, exported.stderr
    assert "answered by api_v3" in exported.stdout and " 0 trace(s)" not in exported.stdout
    [later] = [p for p in (run_a / "_exports").iterdir() if p.is_dir()]
    assert (later / "_queries.json").is_file()
    assert (run_a / "_manifest.json").read_text() == before
    verified = drillui(stack, "verify", "A")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "every recorded file matches _manifest.json (" in verified.stdout  # the export: added, nothing changed


def test_failed_list_and_requeue(stack: Path) -> None:
    run = drillui(stack, "run", "D")
    assert run.returncode == 0, run.stdout[-2000:]
    listed = drillui(stack, "failed", "list", "--json")
    rows = json.loads(listed.stdout)
    assert len(rows) == 1 and rows[0]["last_reason"] == "es_4xx" and "mapper_parsing_exception" in rows[0]["last_error"]
    bad = drillui(stack, "failed", "requeue", "not-a-uuid")
    assert bad.returncode == 2 and "not an outbox event id" in bad.stderr
    again = drillui(stack, "failed", "requeue", rows[0]["id"])
    assert again.returncode == 0 and "requeued 1 failed row(s)" in again.stdout
    [audit] = [json.loads(line) for line in (stack / "state" / "audit.log").read_text().splitlines()]
    assert audit["event"] == "outbox.requeued" and audit["outbox_event_ids"] == [rows[0]["id"]] and audit["count"] == 1
    assert drillui(stack, "failed", "list").stdout.startswith("no failed rows")


def test_a_dirty_environment_is_refused_until_cleaned(drill_infra: Infrastructure, db_url: str, tmp_path: Path) -> None:
    assert drill_infra.engine is not None
    drill = CATALOG.get("B")
    with connect(db_url) as conn:
        insert_event(conn, projection="search_index_to_elastic", op="upsert", entity_id=uuid.uuid4(), correlation_id="drillui:crashed")
    drill_infra.engine.set_reachable(False)  # a run that died with the engine down
    with connect(db_url) as conn:
        dirt = [d.what for d in find_dirt(drill_infra, conn)]
    assert any("unreachable" in d for d in dirt) and any("1 pending" in d for d in dirt)
    with pytest.raises(DirtyState) as refused:
        DrillRunner(drill, drill_infra, RunOptions(snapshots=tmp_path)).run()
    assert isinstance(refused.value, DrillError) and refused.value.exit_code == 4
    assert "drillui clean" in str(refused.value)
    assert not (tmp_path / drill.id).exists(), "a refused run must leave no folder"

    done = clean(drill_infra)
    assert "made the search engine reachable again" in done and any("removed 1" in d for d in done)
    verdict = DrillRunner(drill, drill_infra, RunOptions(snapshots=tmp_path)).run()
    assert verdict.passed


def test_clean_lifts_a_write_block_left_behind(drill_infra: Infrastructure, es_url: str) -> None:
    index = f"drillui-left-{uuid.uuid4().hex[:6]}"
    httpx.put(f"{es_url}/{index}").raise_for_status()
    httpx.put(f"{es_url}/{index}/_settings", json={"index": {"blocks": {"write": True}}}).raise_for_status()
    with connect(drill_infra.endpoints.database_url) as conn:
        assert any(index in d.what for d in find_dirt(drill_infra, conn))
    assert f"lifted the write block on {index}" in clean(drill_infra)
    with connect(drill_infra.endpoints.database_url) as conn:
        assert not find_dirt(drill_infra, conn)
    httpx.delete(f"{es_url}/{index}")


def test_clean_opens_the_postgres_relay_and_drops_the_engine_latency_left_behind(drill_infra: Infrastructure, tmp_path: Path) -> None:
    """What drills N and O leave if their process dies mid-fault: both are dirt, both are cleaned."""
    engine, postgres = drill_infra.engine, drill_infra.postgres
    assert engine is not None and postgres is not None
    postgres.set_reachable(False)
    engine.set_latency(2.0)  # type: ignore[attr-defined]
    with connect(drill_infra.endpoints.database_direct_url) as conn:
        dirt = [d.what for d in find_dirt(drill_infra, conn)]
    assert "the relay in front of Postgres refuses the workers' connections" in dirt
    assert "the engine's relay still holds every request 2s" in dirt
    with pytest.raises(DirtyState):
        DrillRunner(CATALOG.get("N"), drill_infra, RunOptions(snapshots=tmp_path)).run()
    done = clean(drill_infra)
    assert "opened the relay in front of Postgres again" in done and "set the engine's relay latency back to 0" in done
    with connect(drill_infra.endpoints.database_url) as conn:  # the workers' address answers again
        assert not find_dirt(drill_infra, conn)


def test_prune_keeps_the_newest_and_never_an_unfinished_run(tmp_path: Path) -> None:
    for name in ("20260101T000000", "20260102T000000", "20260103T000000", "20260104T000000"):
        (tmp_path / "es_429" / name).mkdir(parents=True)
        (tmp_path / "es_429" / name / "_events.jsonl").write_text("")
        if name != "20260102T000000":  # this one has no end: running, or interrupted
            (tmp_path / "es_429" / name / "_result.json").write_text(
                json.dumps({"scenario": "es_429", "run_id": name, "verdict": "pass", "passed": True}))
    pruned, kept = prune_snapshots(tmp_path, "es_429", 1)
    assert [p.name for p in pruned] == ["20260101T000000", "20260103T000000"]
    assert [p.name for p in kept] == ["20260102T000000"]
    assert sorted(p.name for p in (tmp_path / "es_429").iterdir()) == ["20260102T000000", "20260104T000000"]


def test_only_orphaned_drill_workers_count_as_leftovers() -> None:
    from drillui.runner.cleanup import OWNER_ENV_MARK, RUN_ENV_MARK, leftover_workers

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    sleeper = [sys.executable, "-c", "import time; time.sleep(30)", "-m", "worker"]
    orphan = subprocess.Popen(sleeper, env={**os.environ, RUN_ENV_MARK: "r1", OWNER_ENV_MARK: str(gone.pid)})
    owned = subprocess.Popen(sleeper, env={**os.environ, RUN_ENV_MARK: "r2", OWNER_ENV_MARK: str(os.getpid())})
    try:
        import time

        time.sleep(0.3)
        pids = {p.pid for p in leftover_workers()}
        assert orphan.pid in pids and owned.pid not in pids
    finally:
        for p in (orphan, owned):
            p.kill()
            p.wait()


def test_drill_workers_do_not_inherit_worker_knobs_from_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    from drillui.runner.workers import inherited_environment

    monkeypatch.setenv("OUTBOX_EXPERIMENT_ES_429_EVERY_N", "2")
    monkeypatch.setenv("ES_INDEX", "someone-elses-index")
    monkeypatch.setenv("OUTBOX_METRICS_HOST", "0.0.0.0")
    env = inherited_environment(os.environ)
    assert "OUTBOX_EXPERIMENT_ES_429_EVERY_N" not in env and "ES_INDEX" not in env
    assert env["OUTBOX_METRICS_HOST"] == "0.0.0.0" and env["PATH"] == os.environ["PATH"]
