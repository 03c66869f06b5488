"""What a run does with Prometheus: list its workers, wait until they are scraped, judge its PromQL
checks at their phase, and turn any PromQL answer into the event the run records.

Why a module of its own: Prometheus is optional (the stack runs one only where the binary is
installed; `--infra docker` has the compose one under its `monitoring` profile), so every step
here knows how to say "no Prometheus in this stack" instead of failing, and the runner only calls
four methods at its four moments. Whether a Prometheus answers is decided once, when the run
starts, and recorded (`run_started.infrastructure.prometheus`): a Prometheus that stops answering
later is an error of that query, not a missing part.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from drillui.evidence.checks import promql_check_id
from drillui.record.events import Event, PromqlEvaluated
from drillui.redact import redact_url
from drillui.runner.infra import Infrastructure
from drillui.scenarios import Drill
from drillui.sources.prometheus import PrometheusClient, PromqlResult, range_step
from drillui.stack.prometheus import INSTALL_HINT, JOB, ScrapeTarget, write_targets

SCRAPE_WAIT_SECONDS: Final = 15.0
"""How long a run waits, before arming its fault, for Prometheus to have scraped every worker:
a new file_sd target takes Prometheus 1 to 6 s to pick up, and a short drill's retries must not
happen before its first scrape."""
POLL_SECONDS: Final = 0.2
RUN_MATCHER: Final = 'run="$run"'
"""Written in a check's query, it scopes the query to this run's workers (see `RunPrometheus.scope`)."""


def promql_event(result: PromqlResult, purpose: str, *, step_index: int | None = None, check: str | None = None,
                 phase: str | None = None) -> PromqlEvaluated:
    """The event that records one PromQL answer (series bounded by the client)."""
    return PromqlEvaluated(query=result.query, purpose=purpose, start=result.start, end=result.end, step=result.step,
                           result_type=result.result_type, series=tuple(s.to_json() for s in result.series),
                           omitted=result.omitted, error=result.error, available=True, step_index=step_index,
                           check=check, phase=phase)


def unavailable_event(query: str, purpose: str, why: str, start: float, end: float, *, check: str | None = None,
                      step_index: int | None = None) -> PromqlEvaluated:
    return PromqlEvaluated(query=query, purpose=purpose, start=start, end=end, error=why, available=False, check=check,
                           step_index=step_index)


def missing_text(infra: Infrastructure) -> str:
    """Why this infrastructure has no Prometheus, and how to get one."""
    return f"no Prometheus in this stack: {infra.prometheus_note or 'none configured'} ({INSTALL_HINT})"


class RunPrometheus:
    """A run's use of Prometheus. `url` is None when there is none to use (`missing` says why)."""

    def __init__(self, infra: Infrastructure, drill: Drill, emit: Callable[[Event], Event], say: Callable[[str], None]) -> None:
        self.infra = infra
        self.drill = drill
        self._emit = emit
        self._say = say
        self.url: str | None = None
        self.missing = missing_text(infra)
        self._targets_file: Path | None = None
        self.run_id = ""
        self._addresses: set[str] = set()

    def probe(self, run_id: str) -> None:
        """Decide, once, whether a Prometheus answers (the run's start). No exception: a missing
        Prometheus is a fact of this stack, not an error of the run."""
        self.run_id = run_id
        url = self.infra.endpoints.prometheus_url
        if not url:
            return
        with PrometheusClient(url, timeout=2.0) as client:
            ok, detail = client.ready()
        if not ok:
            how = ("docker compose -f docker-compose.infra.yml --profile monitoring up -d"
                   if self.infra.mode.startswith("docker") else INSTALL_HINT)
            self.missing = f"no Prometheus in this stack: {detail} ({how})"
            return
        self.url = url
        if self.infra.prometheus_targets is not None:
            self._targets_file = self.infra.prometheus_targets / f"{run_id}.json"

    def record(self) -> dict[str, str]:
        """What `run_started.infrastructure` says of it."""
        if self.url is None:
            return {"prometheus": self.missing}
        return {"prometheus": redact_url(self.url)}

    # ---- targets --------------------------------------------------------------------------------

    def scope(self, query: str) -> str:
        """The query with `run="$run"` made this run's: `run="<run id>"` on the stack's own
        Prometheus (its targets carry the label), else the run's workers' `instance` ports (a
        Prometheus of your own or the compose one). Without it, `rate(...[1m])` early in a run
        also sees the last minute of the previous run's workers."""
        if RUN_MATCHER not in query:
            return query
        if self._targets_file is not None:
            return query.replace(RUN_MATCHER, f'run="{self.run_id}"')
        ports = "|".join(sorted({a.rsplit(":", 1)[1] for a in self._addresses})) or "0"
        return query.replace(RUN_MATCHER, f'instance=~".+:({ports})"')

    def publish(self, workers: Sequence[tuple[str, str | None]]) -> None:
        """List the live workers `(name, metrics URL)` for the stack's own Prometheus to scrape."""
        self._addresses |= {a for _, url in workers if (a := _address(url))}
        if self._targets_file is None:
            return
        targets = [ScrapeTarget(address, name, self.drill.id, self.run_id) for name, url in workers if (address := _address(url))]
        write_targets(self._targets_file, targets)

    def remove(self) -> None:
        if self._targets_file is not None:
            self._targets_file.unlink(missing_ok=True)

    def wait_scraped(self, workers: Sequence[tuple[str, str | None]], stopping: Callable[[], bool], *,
                     needed: bool = True) -> None:
        """Before the fault is armed: wait until Prometheus has scraped every worker once (a new
        target takes 1-6 s), so that a rate over the drill's window starts from the state before
        the fault. Needed for a drill with PromQL checks, and where a trainer will run the steps'
        PromQL (`needed`: guided runs); a bounded run without PromQL checks does not wait."""
        addresses = sorted({a for _, url in workers if (a := _address(url))})
        if self.url is None or self._targets_file is None or not addresses or not (needed or self.drill.expect.promql):
            return
        began = time.monotonic()
        matcher = "|".join(a.replace(".", "\\\\.") for a in addresses)
        query = f'up{{job="{JOB}", instance=~"{matcher}"}} == 1'
        with PrometheusClient(self.url, timeout=2.0) as client:
            while not stopping():
                got = client.query(query, time.time())
                if got.ok and len(got.series) >= len(addresses):
                    self._say(f"Prometheus scrapes the worker(s) every second (first scrape after {time.monotonic() - began:.1f}s)")
                    return
                if time.monotonic() - began > SCRAPE_WAIT_SECONDS:
                    self._say(f"Prometheus has not scraped every worker after {SCRAPE_WAIT_SECONDS:g}s "
                              f"({got.error or f'{len(got.series)} of {len(addresses)} up'}): PromQL may miss the start")
                    return
                time.sleep(POLL_SECONDS)

    # ---- checks ---------------------------------------------------------------------------------

    def announce_missing(self, start: float) -> None:
        """No Prometheus: every PromQL check is not applicable, said from the start of the run."""
        if self.url is not None:
            return
        for pc in self.drill.expect.promql:
            self._emit(unavailable_event(pc.query, "check", self.missing, start, start, check=promql_check_id(pc)))

    def judge(self, phase: str, start: float) -> None:
        """Evaluate the checks due at `phase` over the run so far, and record each answer."""
        due = [pc for pc in self.drill.expect.promql if pc.at == phase]
        if self.url is None or not due:
            return
        end = time.time()
        with PrometheusClient(self.url) as client:
            for pc in due:
                result = client.query_range(self.scope(pc.query), start, end, range_step(start, end))
                self._emit(promql_event(result, "check", check=promql_check_id(pc), phase=phase))


def _address(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.hostname and parts.port else None
