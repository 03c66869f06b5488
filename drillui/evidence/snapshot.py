"""The evidence folder of one run: `snapshots/<scenario>/<run_id>/` (CONTRACT.md).

Everything a verdict needs is written here first, and the verdict is then computed from these
files alone; that is what lets `drillui verify` recompute it offline, on a copied folder.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

RUN_ID_FORMAT = "%Y%m%dT%H%M%S"
_SECRETISH = re.compile(r"(PASSWORD|SECRET|TOKEN|KEY|DSN|DATABASE_URL)", re.IGNORECASE)


def redact_url(url: str) -> str:
    """scheme://host:port/path, without user, password or query: never a full DSN."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def redact_env(env: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in env.items():
        if _SECRETISH.search(key):
            out[key] = redact_url(value) if "://" in value else "<redacted>"
        elif "://" in value:
            out[key] = redact_url(value)
        else:
            out[key] = value
    return out


def new_run_id(root: Path, scenario: str, now: datetime | None = None) -> str:
    base = (now or datetime.now(UTC)).strftime(RUN_ID_FORMAT)
    run_id, n = base, 1
    while (root / scenario / run_id).exists():
        n += 1
        run_id = f"{base}-{n}"
    return run_id


@dataclass(frozen=True)
class Snapshot:
    root: Path
    scenario: str
    run_id: str

    @property
    def path(self) -> Path:
        return self.root / self.scenario / self.run_id

    @classmethod
    def create(cls, root: Path, scenario: str) -> Snapshot:
        run_id = new_run_id(root, scenario)
        snap = cls(root, scenario, run_id)
        for sub in ("_metrics", "_logs", "_exports"):
            (snap.path / sub).mkdir(parents=True, exist_ok=True)
        return snap

    @classmethod
    def open(cls, path: Path) -> Snapshot:
        path = path.resolve()
        return cls(path.parent.parent, path.parent.name, path.name)

    def log_path(self, worker: str) -> Path:
        return self.path / "_logs" / f"{worker}-{self.run_id}.log"

    def metrics_path(self, phase: str, worker: str, single: bool) -> Path:
        suffix = "" if single else f"-{worker}"
        return self.path / "_metrics" / f"metrics-{phase}{suffix}.txt"

    def write_json(self, name: str, data: Any) -> Path:
        p = self.path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
        return p

    def read_json(self, name: str, default: Any = None) -> Any:
        p = self.path / name
        if not p.exists():
            return default
        return json.loads(p.read_text(encoding="utf-8"))


def latest_run(root: Path, scenario: str) -> Path | None:
    base = root / scenario
    if not base.is_dir():
        return None
    runs = sorted((p for p in base.iterdir() if p.is_dir() and (p / "_recipe.json").exists()), key=lambda p: p.name)
    return runs[-1] if runs else None
