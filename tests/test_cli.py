"""Bad input gets one clear line and exit code 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def drillui(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "drillui", *args], capture_output=True, text=True, timeout=60, cwd=cwd)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["run", "nope"], "no drill 'nope'"),
        (["run", "A", "--duration", "soon"], "is not a number of seconds"),
        (["run", "A", "--metrics-port", "70000"], "outside 1..65535"),
        (["run", "A", "--trigger-count", "0"], "must be between 1 and"),
        (["run", "A", "--trigger-count", "10000000"], "must be between 1 and"),
        (["run", "A", "--duration", "1e400"], "not a finite number of seconds"),
        (["run", "A", "--duration", "nan"], "not a finite number of seconds"),
        (["run", "A", "--duration", "86400"], "more than 3600 seconds"),
        (["verify", "A", "--snapshots", "/nonexistent"], "no run of es_down_connect"),
        (["verify", "A", "--run", "../../target"], "is not a run id"),
        (["list", "--infra", "kubernetes"], "invalid choice: 'kubernetes'"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(args: list[str], fragment: str) -> None:
    proc = drillui("--scenarios", str(ROOT / "scenarios.yaml"), *args)
    assert proc.returncode == 2, proc.stderr
    assert fragment in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("yaml_text", "fragment"),
    [
        ("version: 1\ndrills:\n  - {id: x, letter: X, runbook: '1', title: t, goal: g, fault: {type: meteor}, expect: {}}\n",
         "drill x: fault: unknown fault type 'meteor'"),
        ("version: 1\ndrills:\n  - {id: x, letter: X, runbook: '1', title: t, goal: g, fault: {type: none}}\n",
         "drill x: expect: Field required"),
        ("version: 1\ndrills:\n  - {id: x, letter: X, runbook: '1', title: t, goal: g, fault: {type: none}, duration: soon, expect: {}}\n",
         "drill x: duration:"),
        ("version: 1\ndrills:\n  - {id: x, letter: X, runbook: '1', title: t, goal: g, fault: {type: none}, expect: {}, colour: red}\n",
         "drill x: colour: unknown key"),
        ("version: 1\ndrills: [\n", "not valid YAML"),
    ],
)
def test_broken_catalog_names_the_drill_and_field(tmp_path: Path, yaml_text: str, fragment: str) -> None:
    bad = tmp_path / "scenarios.yaml"
    bad.write_text(yaml_text)
    proc = drillui("--scenarios", str(bad), "list")
    assert proc.returncode == 2, proc.stdout
    assert fragment in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_list_shows_the_menu() -> None:
    proc = drillui("--scenarios", str(ROOT / "scenarios.yaml"), "list")
    assert proc.returncode == 0
    assert "A  es_down_connect" in proc.stdout


def test_global_options_work_after_the_subcommand_too(tmp_path: Path) -> None:
    from drillui.cli import build_parser

    args = build_parser().parse_args(["stack", "up", "--state-dir", str(tmp_path), "--json"])
    assert args.state_dir == tmp_path and args.json
    args = build_parser().parse_args(["--infra", "docker", "list"])
    assert args.infra == "docker"
    args = build_parser().parse_args(["list", "--infra", "docker", "--scenarios", "x.yaml"])
    assert args.infra == "docker" and str(args.scenarios) == "x.yaml"
    proc = drillui("list", "--scenarios", str(ROOT / "scenarios.yaml"), cwd=tmp_path)
    assert proc.returncode == 0 and "A  es_down_connect" in proc.stdout


def test_the_infra_flag_reaches_the_dashboard_without_touching_the_environment() -> None:
    import os

    from drillui.scenarios import load_catalog
    from drillui.settings import DrillSettings
    from drillui.ui.app import DrillApp

    before = dict(os.environ)
    settings = DrillSettings.build({"DRILLUI_INFRA": "embedded"}, infra="docker")
    app = DrillApp(load_catalog(ROOT / "scenarios.yaml"), settings=settings, start_stack=False)
    assert app.settings.infra == "docker"
    assert dict(os.environ) == before


def test_a_bad_infra_variable_is_one_line_and_exit_2() -> None:
    import os

    env = {**os.environ, "DRILLUI_INFRA": "kubernetes"}
    proc = subprocess.run([sys.executable, "-m", "drillui", "--scenarios", str(ROOT / "scenarios.yaml"), "list"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2 and "DRILLUI_INFRA='kubernetes' is not valid" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"version: 1\nx: &a [1, 2]\ny: [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n", "aliases (*a) are not allowed"),
        (b"version: 1\ndrills:\n  - id: x\n    workload:\n      workers:\n        - env: &e {A: 1}\n        - env: *e\n",
         "aliases (*e) are not allowed"),
        (b"a: " + b"[" * 20_000 + b"]" * 20_000 + b"\n", "nested more than 64 levels deep"),
        ("version: 1\ndrills: []\n# caf\xe9\n".encode("latin-1"), "not UTF-8 text"),
        (b"version: 1\n" + b"x" * (5 << 20), "larger than 4 MB"),
    ],
    ids=["alias-bomb", "alias-in-env", "deep", "not-utf8", "huge"],
)
def test_hostile_catalogs_are_refused_in_one_line(tmp_path: Path, content: bytes, fragment: str) -> None:
    bad = tmp_path / "scenarios.yaml"
    bad.write_bytes(content)
    proc = drillui("--scenarios", str(bad), "list")
    assert proc.returncode == 2, proc.stderr[-500:]
    assert fragment in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("target", ["file", "under-a-file"])
def test_a_snapshots_root_that_cannot_be_a_folder_is_one_line(tmp_path: Path, target: str) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    root = blocker if target == "file" else blocker / "snaps"
    for args in (["verify", "A", "--snapshots", str(root)], ["replay", "A", "--snapshots", str(root)],
                 ["export", "A", "--snapshots", str(root)]):
        proc = drillui("--scenarios", str(ROOT / "scenarios.yaml"), *args)
        assert proc.returncode == 2, (args, proc.stderr[-500:])
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    listed = drillui("--scenarios", str(ROOT / "scenarios.yaml"), "list", "--snapshots", str(root))
    assert "Traceback" not in listed.stderr and listed.returncode == (2 if target == "file" else 0)


@pytest.mark.parametrize("name", ["_result.json", "_probes.json", "_recipe.json", "_events.jsonl"])
def test_a_corrupt_run_file_is_one_line_for_list_and_verify(tmp_path: Path, name: str) -> None:
    run = tmp_path / "snapshots" / "es_down_connect" / "20260101T000000"
    run.mkdir(parents=True)
    (run / "_recipe.json").write_text('{"scenario": "es_down_connect", "run_id": "20260101T000000"}')
    (run / "_result.json").write_text('{"scenario": "es_down_connect", "run_id": "20260101T000000", "verdict": "pass"}')
    (run / name).write_bytes(b'{"truncated": \xff')
    listed = drillui("--scenarios", str(ROOT / "scenarios.yaml"), "list", "--snapshots", str(tmp_path / "snapshots"))
    assert listed.returncode == 0 and "Traceback" not in listed.stderr
    verified = drillui("--scenarios", str(ROOT / "scenarios.yaml"), "verify", "A", "--snapshots", str(tmp_path / "snapshots"))
    assert verified.returncode in (1, 2), verified.stderr
    assert "Traceback" not in verified.stderr + verified.stdout


def test_run_with_postgres_unreachable_is_one_line(tmp_path: Path) -> None:
    import os
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "DATABASE_URL": f"postgresql://drill:wrong@127.0.0.1:{port}/outbox",
           "DRILLUI_STATE_DIR": str(tmp_path / "state")}
    proc = subprocess.run([sys.executable, "-m", "drillui", "--scenarios", str(ROOT / "scenarios.yaml"), "run", "A"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-1500:]
    assert "Traceback" not in proc.stderr and "wrong" not in proc.stderr  # no password in the message either
    assert "Postgres" in proc.stderr or "postgres" in proc.stderr
