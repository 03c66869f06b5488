"""Headless core, thin UI, and the boundary enforced: each core module imported alone, in a
fresh interpreter, must not pull in textual (and worker/ must not pull in drillui at all)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _modules(package: str) -> list[str]:
    path = ROOT / package
    names = [package]
    for info in pkgutil.walk_packages([str(path)], prefix=f"{package}."):
        if ".ui" in info.name or info.name.endswith("__main__"):
            continue
        names.append(info.name)
    return sorted(names)


def _loaded_after_import(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


@pytest.mark.parametrize("module", _modules("worker"))
def test_worker_never_imports_drillui_or_textual(module: str) -> None:
    loaded = _loaded_after_import(module)
    assert not {m for m in loaded if m == "textual" or m.startswith(("textual.", "drillui"))}


@pytest.mark.parametrize("module", _modules("drillui"))
def test_headless_drillui_never_imports_textual(module: str) -> None:
    loaded = _loaded_after_import(module)
    assert "textual" not in loaded, f"{module} imports textual"
