"""The drill catalog: `scenarios.yaml` parsed into typed models.

A drill is data: its fault, its workload, how long it runs, and the evidence it must show
(metric changes, trace queries, log events, database probes). The runner executes any drill
described here, so a user adds a drill by editing the YAML, with no code change, as long as it
reuses existing fault types. Any mistake in the file is reported as one line naming the drill
and the field (UsageError, exit 2).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from drillui.errors import UsageError


def default_catalog() -> Path:
    """The catalog next to the source tree (a checkout), else the installed copy."""
    beside_source = Path(__file__).resolve().parent.parent / "scenarios.yaml"
    if beside_source.exists():
        return beside_source
    return Path(sys.prefix) / "share" / "drillui" / "scenarios.yaml"


DEFAULT_CATALOG = default_catalog()


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---- faults (discriminated on `type`) -----------------------------------------------------


class NoFault(_Model):
    """No fault: a control run. Used by tests to prove every check can fail."""

    type: Literal["none"]


class EngineUnreachable(_Model):
    """The search engine refuses connections (relay closed, container stopped, or a dead port)."""

    type: Literal["engine_unreachable"]
    requeue_on_recover: bool = False
    """Once the engine is back, list the run's failed rows as `drillui failed list` does and
    requeue them as `drillui failed requeue` does (a fault that outlasted the attempts)."""


class Es429(_Model):
    """The worker's own 429 injection knobs (OUTBOX_EXPERIMENT_ES_429_*)."""

    type: Literal["es_429"]
    every_n: int | None = Field(None, ge=1)
    ratio: float | None = Field(None, ge=0, le=1)
    ops: list[Literal["upsert", "delete"]] = ["upsert", "delete"]
    seed: int | None = None


class WriteBlock(_Model):
    """`index.blocks.write=true` on the drill's index: every write is a 403."""

    type: Literal["write_block"]
    requeue_on_recover: bool = True
    """After lifting the block, requeue the failed rows (the failure-management loop)."""


class PoisonDocument(_Model):
    """Bulk batch with documents the engine's own mapping rejects among good ones."""

    type: Literal["poison_document"]
    count: int = Field(1, ge=1)


class ClaimContention(_Model):
    """Non-atomic claim knob on every worker (OUTBOX_EXPERIMENT_BREAK_CLAIM_SLEEP)."""

    type: Literal["claim_contention"]
    sleep: float = Field(1.0, gt=0, le=60)


class KillHolder(_Model):
    """The first worker is SIGKILLed while it holds a batch (slow-processing knob, short lease);
    the second worker starts once the lease has expired and takes the rows back."""

    type: Literal["kill_holder"]
    process_sleep: float = Field(30.0, gt=0)
    lease_seconds: float = Field(2.0, gt=0)


class DuplicateDelivery(_Model):
    """The same effect delivered twice: a repeated delete, and a stale upsert."""

    type: Literal["duplicate_delivery"]
    stale_upsert: bool = True


class ProjectionVersion(_Model):
    """The same chronicle event projected under rule version 1, then 2."""

    type: Literal["projection_version"]
    versions: list[Literal[1, 2]] = [1, 2]


class TracingDisabled(_Model):
    """The workers start with tracing off (WORDLOOM_TRACING_ENABLED not 1), runbook 3.2.1; with
    `engine_down`, the engine is unreachable meanwhile, so metrics and logs have a failure to show."""

    type: Literal["tracing_disabled"]
    engine_down: bool = True


class OtlpMismatch(_Model):
    """The workers export OTLP/HTTP to an endpoint that does not speak it (runbook 3.2.1):
    `grpc_port`, a port that answers in HTTP/2 as the OTLP gRPC port (4317) does; `wrong_path`,
    the receiver's URL with `/v1/traces` already in it, so the exporter posts to it twice."""

    type: Literal["otlp_mismatch"]
    mode: Literal["grpc_port", "wrong_path"] = "grpc_port"


class StaleObsSchema(_Model):
    """The workers speak the previous observability schema (OUTBOX_EXPERIMENT_OBS_SCHEMA), as a
    worker built from old code does (runbook 3.1.3, manual-test/2 and /3)."""

    type: Literal["stale_obs_schema"]
    emits: Literal["labs-009-v1"] = "labs-009-v1"


class BatchResultEarly(_Model):
    """The batch span's result is written when the batch starts (OUTBOX_EXPERIMENT_BATCH_RESULT_EARLY,
    runbook manual-test/1), and `poison` documents of the batch fail: `result=ok` over ERROR children."""

    type: Literal["batch_result_early"]
    poison: int = Field(1, ge=1)


class PostgresUnavailable(_Model):
    """The workers' Postgres refuses connections (the stack's relay closed, open connections cut)
    while the fault is armed; drillui's own probes use the direct address."""

    type: Literal["postgres_unavailable"]


class EngineSlow(_Model):
    """The relay in front of the engine holds every request `latency` seconds, beyond the workers'
    request timeout (`timeout`, their ES_TIMEOUT)."""

    type: Literal["engine_slow"]
    latency: float = Field(1.0, gt=0, le=60)
    timeout: float = Field(0.5, gt=0, le=60)

    @model_validator(mode="after")
    def _beyond(self) -> EngineSlow:
        if self.latency <= self.timeout:
            raise ValueError(f"latency {self.latency:g}s must exceed the timeout {self.timeout:g}s, or nothing times out")
        return self


Fault = Annotated[
    NoFault | EngineUnreachable | Es429 | WriteBlock | PoisonDocument | ClaimContention | KillHolder | DuplicateDelivery
    | ProjectionVersion | TracingDisabled | OtlpMismatch | StaleObsSchema | BatchResultEarly | PostgresUnavailable | EngineSlow,
    Field(discriminator="type"),
]

# ---- workload -------------------------------------------------------------------------------

_ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


class WorkerSpec(_Model):
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    env: dict[str, str] = {}

    @field_validator("env", mode="before")
    @classmethod
    def _stringify(cls, v: Any) -> Any:
        if isinstance(v, Mapping):
            return {str(k): str(x).lower() if isinstance(x, bool) else str(x) for k, x in v.items()}
        return v

    @field_validator("env")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not _ENV_NAME.match(key):
                raise ValueError(f"{key!r} is not an environment variable name")
        return v


class Workload(_Model):
    projection: Literal["search_index_to_elastic", "chronicle"] = "search_index_to_elastic"
    op: Literal["upsert", "delete"] = "upsert"
    trigger_count: int = Field(1, ge=1, le=100_000)
    bulk: bool = False
    batch_size: int = Field(10, ge=1, le=10_000)
    workers: list[WorkerSpec] = Field(default_factory=lambda: [WorkerSpec(name="worker")], min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Workload:
        names = [w.name for w in self.workers]
        if len(set(names)) != len(names):
            raise ValueError(f"worker names must be unique, got {names}")
        return self


# ---- expected evidence ------------------------------------------------------------------------

_CHANGE = re.compile(r"^\s*(>=|<=|==|>|<)\s*(-?\d+(?:\.\d+)?)\s*$")


class MetricCheck(_Model):
    """A change between the before and after scrapes, summed over every worker."""

    selector: str
    change: str = Field(description="comparison of after - before, e.g. '>= 1' or '== 0'")
    at: Literal["after", "recovered"] = "after"
    over: Literal["delta", "peak"] = "delta"
    """delta: after - before summed over workers; peak: the highest value any worker reported
    in the samples taken while the drill ran (for gauges such as the stuck count)."""
    promql: str | None = None
    """What a person would type in Prometheus to watch the same signal."""
    quantile: float | None = Field(None, gt=0, le=1)
    """The selector names a histogram family: compare this quantile of what it observed between
    the before scrape and `at` (e.g. 0.95, Prometheus' histogram_quantile) instead of a change."""

    @model_validator(mode="after")
    def _quantile(self) -> MetricCheck:
        if self.quantile is not None and self.over != "delta":
            raise ValueError("a quantile is read from the observations between two scrapes: drop over: peak")
        return self

    @field_validator("change")
    @classmethod
    def _change(cls, v: str) -> str:
        if not _CHANGE.match(v):
            raise ValueError(f"{v!r} is not a comparison like '>= 1' or '== 0'")
        return v

    @field_validator("selector")
    @classmethod
    def _selector(cls, v: str) -> str:
        from drillui.sources.metrics import parse_selector

        parse_selector(v)
        return v

    def compare(self, delta: float) -> bool:
        m = _CHANGE.match(self.change)
        assert m
        op, ref = m.group(1), float(m.group(2))
        return {
            ">=": delta >= ref,
            "<=": delta <= ref,
            "==": abs(delta - ref) < 1e-9,
            ">": delta > ref,
            "<": delta < ref,
        }[op]


Operation = Literal["outbox.process", "projection.process_batch", "outbox.claim_batch", "outbox.reclaim"]


class SpanMatch(_Model):
    """A span of the same trace that a trace check's span must have as its child."""

    operation: Operation
    attributes: dict[str, str | int | bool] = {}
    status: Literal["ERROR", "OK", "UNSET"] | None = None


class TraceCheck(_Model):
    """A span that must be found with the backend's query API, by one of the two pivots."""

    operation: Operation
    by: Literal["outbox_event_id", "claim_batch_id", "entity_id", "obs_schema"]
    attributes: dict[str, str | int | bool] = {}
    """Attributes the matching span must carry (compared as strings)."""
    status: Literal["ERROR", "OK", "UNSET"] | None = None
    which: Literal["all", "first", "last"] = "all"
    """Which of the run's pivot values to query: all of them, or the first / last seen."""
    min_spans: int = Field(1, ge=0)
    max_spans: int | None = None
    child: SpanMatch | None = None
    """The span must have a direct child span like this (e.g. a batch span `result=ok` with an
    ERROR event span under it: the two disagree)."""


class LogCheck(_Model):
    """A log event that must appear, with fields; optionally joinable to a trace on trace_id."""

    event: str
    fields: dict[str, str | int | bool] = {}
    require: list[str] = []
    """Fields that must be present (any value), e.g. attempt, trace_id."""
    absent: list[str] = []
    """Fields that must not be present, e.g. trace_id when tracing is off."""
    min_count: int = Field(1, ge=0)
    max_count: int | None = None
    joined_on_trace: bool = False
    """The line's trace_id must be a trace found by one of the drill's trace queries."""


class DbCheck(_Model):
    """A database probe recorded during the run."""

    probe: Literal["trigger_status", "trigger_status_after", "chronicle_versions", "documents_latest", "failed_listed",
                   "doctor_otlp_protocol"]
    expect: str | bool | list[Any]


class PromqlCheck(_Model):
    """A PromQL expression with a condition, judged over the drill's time range.

    The runner evaluates it against the stack's Prometheus when the run reaches `at` (a range
    query from the start of the run to then) and records what Prometheus answered; the checks
    judge that record. `over: any`: some point of some series meets the condition (e.g. the
    retry rate was positive at some moment); `all`: every point of every series does (e.g. the
    terminal failure rate stayed 0). No series at all fails either way. Where the stack runs no
    Prometheus the check is not applicable (state `skipped`, saying why): it does not fail the run.
    """

    query: str = Field(min_length=1)
    condition: str = Field(description="comparison each point is held to, e.g. '> 0' or '== 0'")
    at: Literal["after", "recovered"] = "after"
    over: Literal["any", "all"] = "any"

    @field_validator("condition")
    @classmethod
    def _condition(cls, v: str) -> str:
        if not _CHANGE.match(v):
            raise ValueError(f"{v!r} is not a comparison like '> 0' or '== 0'")
        return v

    def holds(self, value: float) -> bool:
        m = _CHANGE.match(self.condition)
        assert m
        op, ref = m.group(1), float(m.group(2))
        return {">=": value >= ref, "<=": value <= ref, "==": abs(value - ref) < 1e-9, ">": value > ref, "<": value < ref}[op]


class Expect(_Model):
    metrics: list[MetricCheck] = []
    promql: list[PromqlCheck] = []
    """PromQL expressions judged against the stack's Prometheus (not applicable without one)."""
    traces: list[TraceCheck] = []
    logs: list[LogCheck] = []
    db: list[DbCheck] = []
    forbidden_labels: list[str] = []
    """Labels no series of any worker may carry (e.g. projection_version: high cardinality)."""
    report: list[str] = []
    """Histogram families whose mean per worker is reported (not checked), e.g. claim vs process time."""


class Step(_Model):
    say: str
    promql: str | None = None
    trace_query: str | None = None
    log_query: str | None = None
    """A filter of the logs panel (free text and key=value terms), e.g. `event=outbox.reclaimed`."""
    signal: str | None = None
    """The signal a PromQL step is about (a main signal key such as `retry`, or a drill signal's
    label): applying the step highlights it with its current value."""


class DrillSignal(_Model):
    """A signal this drill is about, shown beside the runbook's four main ones."""

    label: str = Field(min_length=1, max_length=24)
    metric: str | None = None
    """A metric selector: its value summed over workers (counters) or their maximum (gauges)."""
    mean: str | None = None
    """A histogram family: the mean of what it observed since the run started, in ms."""
    by: str | None = None
    """Split into one row per value of this label (e.g. result, reason, failure_class)."""
    per_worker: bool = False
    """One row per worker instead of the total."""

    @model_validator(mode="after")
    def _one_source(self) -> DrillSignal:
        if (self.metric is None) == (self.mean is None):
            raise ValueError("a drill signal has either metric or mean")
        if self.metric is not None:
            from drillui.sources.metrics import parse_selector

            parse_selector(self.metric)
        return self


class Question(_Model):
    """A question of training mode, graded from the run's evidence (`drillui.training.grading`):
    the catalog says what to ask and which property of the evidence answers it, never the answer."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    ask: str
    kind: Literal["failure_class", "id", "yes_no"]
    property: str | None = None
    """For `id` questions, e.g. failed_event, retried_batch_trace, lost_lease_worker; for `yes_no`
    questions, e.g. event_lost. Not used by `failure_class`."""
    points: int = Field(30, ge=0, le=100)

    @model_validator(mode="after")
    def _property(self) -> Question:
        if self.kind != "failure_class" and not self.property:
            raise ValueError(f"a {self.kind} question names the property of the evidence that answers it")
        return self


class RedHerring(_Model):
    """Something true but irrelevant that a trainee may chase (training mode's decoys)."""

    kind: Literal["warning_log", "noisy_metric"]
    every: float = Field(1.5, gt=0.1, le=60)
    """Seconds between decoy log lines, or between harmless background events."""


class Drill(_Model):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    letter: str = Field(pattern=r"^[A-Z]$")
    runbook: str
    title: str
    goal: str
    fault: Fault
    workload: Workload = Field(default_factory=lambda: Workload())
    duration: float = Field(6.0, gt=0, le=600)
    """Seconds the workers run with the fault armed."""
    recovery_timeout: float = Field(15.0, ge=0, le=600)
    """Seconds allowed without progress, after the fault is reverted, for the trigger events to
    settle (the wait goes on while they keep settling)."""
    expect: Expect
    steps: list[Step] = []
    recover: str = ""
    signals: list[DrillSignal] = []
    """This drill's own signals, beside the four main ones."""
    columns: list[str] = []
    """Span attributes / log fields shown as extra columns of the traces and logs panels."""
    scalable: bool = False
    """The number of workers may be changed in the run options (identical workers)."""
    questions: list[Question] = []
    """Training mode: what the trainee answers on the blind screen."""
    hints: list[str] = []
    """Training mode: the hint ladder, cheapest first; each costs `hint_cost` points."""
    hint_cost: int = Field(10, ge=0, le=100)
    red_herring: RedHerring | None = None
    """Training mode only: something true but irrelevant the trainee may chase."""
    control: bool = False
    """Nothing is wrong in this drill (a control for training): every check says so."""


class Catalog(_Model):
    version: Literal[1]
    drills: list[Drill] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Catalog:
        seen: set[str] = set()
        for d in self.drills:
            for key in (d.id, d.letter):
                if key in seen:
                    raise ValueError(f"{key!r} is used by two drills")
                seen.add(key)
        return self

    def get(self, drill_id: str) -> Drill:
        for d in self.drills:
            if drill_id in (d.id, d.letter):
                return d
        known = ", ".join(f"{d.letter} {d.id}" for d in self.drills)
        raise UsageError(f"no drill {drill_id!r} in the catalog", hint=f"known drills: {known}")


def _where(data: Any, loc: tuple[Any, ...]) -> str:
    """'drill es_down_connect: fault.type' from a pydantic error location."""
    if len(loc) >= 2 and loc[0] == "drills" and isinstance(loc[1], int):
        drills = data.get("drills") if isinstance(data, dict) else None
        name = f"#{loc[1] + 1}"
        if isinstance(drills, list) and loc[1] < len(drills) and isinstance(drills[loc[1]], dict):
            name = str(drills[loc[1]].get("id", name))
        # Discriminated unions put the tag in the path ("fault.engine_unreachable.x"): drop it.
        rest = [str(p) for p in loc[2:] if not (isinstance(p, str) and p in _FAULT_TAGS and loc[2] == "fault")]
        return f"drill {name}: {'.'.join(rest) or '(drill)'}"
    return ".".join(str(p) for p in loc) or "(top level)"


_FAULT_TAGS = {
    "none", "engine_unreachable", "es_429", "write_block", "poison_document", "claim_contention",
    "kill_holder", "duplicate_delivery", "projection_version", "tracing_disabled", "otlp_mismatch", "stale_obs_schema",
    "batch_result_early", "postgres_unavailable", "engine_slow",
}


def parse_catalog(data: Any, *, source: str = "scenarios.yaml") -> Catalog:
    try:
        return Catalog.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "union_tag_invalid":
            msg = f"unknown fault type {err.get('input', {}).get('type')!r}; known: {', '.join(sorted(_FAULT_TAGS))}" if isinstance(err.get("input"), dict) else msg
        elif err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling against the other drills)"
        raise UsageError(f"{source}: {_where(data, tuple(err['loc']))}: {msg}") from None


MAX_CATALOG_BYTES = 4 << 20
MAX_YAML_DEPTH = 64


class _CatalogLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing what a drill catalog never needs and an attacker loves:
    aliases (a few hundred bytes of `&a [*a, *a, ...]` expand to gigabytes) and nesting deep
    enough to exhaust the parser's recursion."""

    def compose_node(self, parent: Any, index: Any) -> Any:  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.MarkedYAMLError(problem=f"aliases (*{event.anchor}) are not allowed in a drill catalog: "
                                               "write the value out", problem_mark=event.start_mark)
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.MarkedYAMLError(problem=f"nested more than {MAX_YAML_DEPTH} levels deep",
                                           problem_mark=self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_catalog(path: Path | None = None) -> Catalog:
    p = path or DEFAULT_CATALOG
    try:
        if p.stat().st_size > MAX_CATALOG_BYTES:
            raise UsageError(f"scenario file {p} is larger than {MAX_CATALOG_BYTES >> 20} MB: not a drill catalog")
        text = p.read_bytes().decode("utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read scenario file {p}: {exc.strerror}", hint="pass --scenarios PATH") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{p.name}: not UTF-8 text (byte {exc.start}: {exc.reason})", hint="save it as UTF-8") from None
    try:
        data = yaml.load(text, Loader=_CatalogLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise UsageError(f"{p.name}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    except RecursionError:
        raise UsageError(f"{p.name}: nested too deep to be a drill catalog") from None
    catalog = parse_catalog(data, source=p.name)
    from drillui.training.grading import check_catalog

    problems = check_catalog(catalog.drills)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UsageError(f"{p.name}: {problems[0]}{more}", hint="ask what the drill's evidence records, or drop the question")
    return catalog


def parse_drill(data: Any, *, source: str = "recorded drill") -> Drill:
    """One drill entry (e.g. the copy a run recorded in its `run_started` event)."""
    try:
        return Drill.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(drill)"
        raise UsageError(f"{source}: {where}: {err['msg']}") from None
