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
        (["run", "A", "--metrics-port", "70000"], "outside 0..65535"),
        (["run", "A", "--trigger-count", "0"], "must be >= 1"),
        (["verify", "A", "--snapshots", "/nonexistent"], "no snapshot of es_down_connect"),
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
