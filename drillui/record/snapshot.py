"""The evidence folder of one run, `snapshots/<scenario>/<run_id>/`: its layout and its files.

Why this module exists: it is the only place that spells a file name of a run folder or knows
the shape of its JSON files. Everything else asks it for a path or a typed model. The files are
written once: `write_json` refuses to replace a file, and `_manifest.json` (written last) holds
the sha256 of every file the run recorded, so `verify` can name any file changed since.

Layout (documented for users in `snapshots/README.md`):

    _events.jsonl            every event of the run, as it happened (the record)
    _recipe.json             scenario, parameters, workers (env redacted), versions
    _timeline.json           wall-clock times of the run's milestones
    _fault.json              the fault's proofs: armed, reverted, environment clean
    _ids.json                the ids involved (events, entities, claim batches, workers)
    _probes.json             database and engine probes
    _result.json             the end state and each check with its observed value
    _summary.md              the story of the run for people
    _progress.log            the runner's narration, a line per step
    _manifest.json           sha256 of every file above and below, written last
    _metrics/metrics-<phase>[-<worker>].txt   raw /metrics text: before, after, recovered
    _logs/<worker>-<run_id>.log               every line each worker wrote
    _exports/<check>-<id>.json, _queries.json trace query results as the backend returned them
    _exports/<UTC time>/...                   a later `drillui export`, beside the original
    dashboard-<run_id>-<n>.svg                screenshots, numbered
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from drillui.errors import UsageError

RUN_ID_FORMAT: Final = "%Y%m%dT%H%M%S"
RUN_ID_PATTERN: Final = re.compile(r"^\d{8}T\d{6}(-\d+)?$")
EXPORT_STAMP_FORMAT: Final = "%Y%m%dT%H%M%SZ"

EVENTS: Final = "_events.jsonl"
RECIPE: Final = "_recipe.json"
TIMELINE: Final = "_timeline.json"
FAULT: Final = "_fault.json"
IDS: Final = "_ids.json"
PROBES: Final = "_probes.json"
RESULT: Final = "_result.json"
SUMMARY: Final = "_summary.md"
PROGRESS: Final = "_progress.log"
MANIFEST: Final = "_manifest.json"
METRICS_DIR: Final = "_metrics"
LOGS_DIR: Final = "_logs"
EXPORTS_DIR: Final = "_exports"
QUERIES: Final = "_queries.json"
INBOX: Final = "_inbox.jsonl"
TRAINING: Final = "_training.json"
ANSWERS: Final = "_answers.jsonl"
LEGACY_SAMPLES: Final = "samples.jsonl"
"""Peak samples of runs recorded before the event log (now in `_events.jsonl`)."""

PRIVATE_DIR: Final = 0o700
PRIVATE_FILE: Final = 0o600


class SnapshotError(UsageError):
    """A run folder or one of its files cannot be used as it is (missing, corrupt, foreign)."""

    title = "Evidence folder problem"


# ---- typed files --------------------------------------------------------------------------------


class _File(BaseModel):
    # Older and newer drillui versions add fields: keep them, never fail on them.
    model_config = ConfigDict(extra="allow")


class Recipe(_File):
    scenario: str
    letter: str = "?"
    title: str = ""
    runbook: str = ""
    run_id: str
    drill: dict[str, Any] = {}
    parameters: dict[str, Any] = {}
    workers: list[dict[str, Any]] = []
    infrastructure: dict[str, Any] = {}
    versions: dict[str, Any] = {}


class Timeline(_File):
    started_at: float | None = None
    armed_at: float | None = None
    triggered_at: float | None = None
    reverted_at: float | None = None
    recovered_at: float | None = None
    stopped_at: float | None = None
    finished_at: float | None = None
    duration_seconds: float | None = None


class Proof(_File):
    armed: bool
    evidence: str = ""


class FaultRecord(_File):
    arm: Proof | None = None
    """Proof that the fault was in force before the clock started."""
    revert_proof: Proof | None = None
    """Proof that the fault's own revert worked (armed=false)."""
    revert: Proof | None = None
    """The environment after the run (armed=true: something is still broken)."""


class Ids(_File):
    outbox_event_id: str | None = None
    claim_batch_id: str | None = None
    entity_id: str | None = None
    outbox_event_ids: list[str] = []
    entity_ids: list[str] = []
    claim_batch_ids: list[str] = []
    worker_ids: list[str] = []
    index: str | None = None


class Result(_File):
    scenario: str = ""
    run_id: str = ""
    state: str = ""
    """passed | failed | stopped | error (empty in runs recorded before end states)."""
    verdict: str = ""
    """pass | fail | stopped | error: what `list` and the menu show."""
    passed: bool | None = None
    why: str = ""
    key_figure: str = ""
    duration_seconds: float | None = None
    snapshot: str = ""
    checks: list[dict[str, Any]] = []
    notes: list[str] = []

    @property
    def end_state(self) -> str:
        if self.state:
            return self.state
        return {"pass": "passed", "fail": "failed"}.get(self.verdict, self.verdict)


M = TypeVar("M", bound=BaseModel)


# ---- the folder ---------------------------------------------------------------------------------


def new_run_id(root: Path, scenario: str, now: datetime | None = None) -> str:
    base = (now or datetime.now(UTC)).strftime(RUN_ID_FORMAT)
    run_id, n = base, 1
    while (root / scenario / run_id).exists():
        n += 1
        run_id = f"{base}-{n}"
    return run_id


def _private_mkdir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)


class Snapshot:
    """One run folder. Paths come from here; JSON files go through `write_json`/`read_model`."""

    def __init__(self, root: Path, scenario: str, run_id: str) -> None:
        self.root = root
        self.scenario = scenario
        self.run_id = run_id

    def __repr__(self) -> str:
        return f"Snapshot({self.path})"

    @property
    def path(self) -> Path:
        return self.root / self.scenario / self.run_id

    @classmethod
    def create(cls, root: Path, scenario: str) -> Snapshot:
        """A new, private run folder (0700: its logs and recipe are nobody else's business)."""
        if root.exists() and not root.is_dir():
            raise SnapshotError(f"--snapshots {root} is a file, not a folder", hint="name a folder (it is created if missing)")
        try:
            _private_mkdir(root / scenario)
            run_id = new_run_id(root, scenario)
            snap = cls(root, scenario, run_id)
            snap.path.mkdir(mode=PRIVATE_DIR)
            for sub in (METRICS_DIR, LOGS_DIR, EXPORTS_DIR):
                (snap.path / sub).mkdir(mode=PRIVATE_DIR)
        except OSError as exc:
            raise SnapshotError(f"cannot create a run folder under {root}: {exc.strerror or exc}",
                                hint="pass --snapshots with a folder you can write") from None
        return snap

    @classmethod
    def open(cls, path: Path) -> Snapshot:
        path = path.resolve()
        if not path.is_dir():
            raise SnapshotError(f"{path} is not a run folder")
        return cls(path.parent.parent, path.parent.name, path.name)

    # ---- paths --------------------------------------------------------------------------------

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def events_path(self) -> Path:
        return self.path / EVENTS

    @property
    def progress_path(self) -> Path:
        return self.path / PROGRESS

    def log_path(self, worker: str) -> Path:
        return self.path / LOGS_DIR / f"{worker}-{self.run_id}.log"

    def log_files(self) -> list[Path]:
        return sorted((self.path / LOGS_DIR).glob("*.log"))

    def log_source(self, path: Path) -> str:
        """The worker name of a log file."""
        return path.name.removesuffix(".log").removesuffix(f"-{self.run_id}")

    def metrics_path(self, phase: str, worker: str, single: bool) -> Path:
        suffix = "" if single else f"-{worker}"
        return self.path / METRICS_DIR / f"metrics-{phase}{suffix}.txt"

    def exports_dir(self, stamp: str | None = None) -> Path:
        """`_exports/` of the run itself, or `_exports/<stamp>/` of a later export."""
        return self.path / EXPORTS_DIR / stamp if stamp else self.path / EXPORTS_DIR

    def new_export_dir(self) -> Path:
        stamp = datetime.now(UTC).strftime(EXPORT_STAMP_FORMAT)
        folder, n = self.exports_dir(stamp), 1
        while folder.exists():
            n += 1
            folder = self.exports_dir(f"{stamp}-{n}")
        _private_mkdir(folder)
        return folder

    def new_screenshot_path(self) -> Path:
        """`dashboard-<run_id>-<n>.svg`, numbered: a screenshot never replaces another."""
        n = 1
        while (p := self.path / f"dashboard-{self.run_id}-{n:02d}.svg").exists():
            n += 1
        return p

    def relative(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(self.path.resolve()))
        except ValueError:
            return str(path)

    # ---- JSON files ---------------------------------------------------------------------------

    def write_json(self, name: str, data: Any, *, folder: Path | None = None) -> Path:
        """Write a JSON file of the run once: an existing file is never replaced."""
        if isinstance(data, BaseModel):
            data = data.model_dump(mode="json", exclude_none=False)
        p = (folder or self.path) / name
        p.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(data, indent=2, default=str) + "\n"
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        return p

    def write_text(self, name: str, text: str) -> Path:
        p = self.path / name
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        return p

    def has(self, name: str) -> bool:
        return (self.path / name).exists()

    def read_json(self, name: str, default: Any = None) -> Any:
        p = self.path / name
        if not p.exists():
            return default
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise SnapshotError(f"{p} is not readable JSON ({type(exc).__name__}: {exc})",
                                hint="the run's other files are untouched; `drillui verify` names what changed") from None

    def read_model(self, name: str, model: type[M]) -> M | None:
        data = self.read_json(name)
        if data is None:
            return None
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            raise SnapshotError(f"{self.path / name}: {where}: {err['msg']}") from None

    def recipe(self) -> Recipe | None:
        return self.read_model(RECIPE, Recipe)

    def result(self) -> Result | None:
        return self.read_model(RESULT, Result)

    # ---- the manifest ---------------------------------------------------------------------------

    def recorded_files(self) -> Iterator[Path]:
        for p in sorted(self.path.rglob("*")):
            if p.is_file() and p.name != MANIFEST:
                yield p

    def write_manifest(self) -> Path:
        files = {self.relative(p): _sha256(p) for p in self.recorded_files()}
        return self.write_json(MANIFEST, {"algorithm": "sha256", "files": files})

    def check_manifest(self) -> ManifestCheck:
        data = self.read_json(MANIFEST)
        if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
            return ManifestCheck(present=False)
        recorded: dict[str, str] = data["files"]
        changed: list[str] = []
        missing: list[str] = []
        for rel, digest in sorted(recorded.items()):
            p = self.path / rel
            if not p.is_file():
                missing.append(rel)
            elif _sha256(p) != digest:
                changed.append(rel)
        added = sorted(rel for rel in (self.relative(p) for p in self.recorded_files()) if rel not in recorded)
        return ManifestCheck(True, changed, missing, added)


class ManifestCheck:
    def __init__(self, present: bool, changed: list[str] | None = None, missing: list[str] | None = None,
                 added: list[str] | None = None) -> None:
        self.present = present
        self.changed = changed or []
        self.missing = missing or []
        self.added = added or []

    @property
    def intact(self) -> bool:
        return self.present and not self.changed and not self.missing


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- finding runs -------------------------------------------------------------------------------


def runs(root: Path, scenario: str) -> list[Path]:
    """Run folders of a scenario, oldest first (a refused run leaves none)."""
    base = root / scenario
    if not base.is_dir():
        return []
    found = [p for p in base.iterdir() if p.is_dir() and RUN_ID_PATTERN.match(p.name)
             and ((p / RECIPE).exists() or (p / EVENTS).exists())]
    return sorted(found, key=lambda p: p.name)


def latest_run(root: Path, scenario: str) -> Path | None:
    found = runs(root, scenario)
    return found[-1] if found else None


def run_folder(root: Path, scenario: str, run_id: str | None) -> Path:
    """The folder of a run id (or the latest run), confined to `root/scenario`."""
    if root.exists() and not root.is_dir():
        raise SnapshotError(f"--snapshots {root} is a file, not a folder")
    if run_id is None:
        found = latest_run(root, scenario)
        if found is None:
            raise SnapshotError(f"no run of {scenario} under {root}", hint=f"run `drillui run {scenario}` first")
        return found
    if not RUN_ID_PATTERN.match(run_id):
        raise SnapshotError(f"--run {run_id!r} is not a run id", hint="run ids look like 20261201T155306; `drillui list` shows them")
    path = root / scenario / run_id
    if not path.is_dir():
        raise SnapshotError(f"no run {run_id} under {root / scenario}")
    return path


def end_state_of(path: Path) -> tuple[str, str]:
    """(state, how it reads in a list) of a run folder, from its files, never raising.

    passed / failed / stopped / error from `_result.json`; `running` when the run has an event
    log but no result yet; `unreadable (...)` when the result file is corrupt.
    """
    snap = Snapshot(path.parent.parent, path.parent.name, path.name)
    try:
        result = snap.result()
    except SnapshotError:
        return "unreadable", f"UNREADABLE ({RESULT} is corrupt: `drillui verify` says more)"
    if result is not None:
        state = result.end_state
        return state, {"passed": "PASS", "failed": "FAIL"}.get(state, state.upper())
    if (path / EVENTS).exists():
        return "running", "RUNNING or interrupted"
    return "unknown", "?"
