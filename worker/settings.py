"""Worker settings: the environment of CONTRACT.md as one validated model.

Built once in `worker.__main__` and passed down; nothing else reads `os.environ`. A bad value
is refused at start with a one-line message naming the variable (see `load_settings`).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.contract import DEFAULT_SERVICE_NAME, OPS, Projection


class SettingsError(Exception):
    """A setting is missing or malformed. The message names the variable."""


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class WorkerSettings(BaseSettings):
    """Everything a worker needs, read from the environment (names exactly as CONTRACT.md)."""

    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", frozen=True, use_attribute_docstrings=True)

    DATABASE_URL: str
    """Postgres DSN holding the outbox."""
    ES_URL: str = "http://127.0.0.1:9200"
    """Base URL of the Elasticsearch/OpenSearch engine."""
    ES_INDEX: str = "wordloom-search"
    """Index the search projection writes to."""
    OUTBOX_PROJECTION: Projection = "search_index_to_elastic"
    """Which projection this worker relays."""
    OUTBOX_BATCH_SIZE: int = Field(100, ge=1, le=10_000)
    """Rows claimed per claim statement."""
    OUTBOX_POLL_INTERVAL: float = Field(0.5, gt=0, le=3600)
    """Seconds to sleep when nothing is due."""
    OUTBOX_LEASE_SECONDS: float = Field(30.0, gt=0, le=86_400)
    """How long a claim is owned before another worker may take it back."""
    OUTBOX_MAX_ATTEMPTS: int = Field(10, ge=1, le=1000)
    """Attempts before a retryable failure becomes terminal (status `failed`)."""
    OUTBOX_BACKOFF_BASE: float = Field(0.5, gt=0, le=3600)
    """First retry delay in seconds; doubles per attempt."""
    OUTBOX_BACKOFF_CAP: float = Field(30.0, gt=0, le=86_400)
    """Largest retry delay in seconds."""
    OUTBOX_USE_ES_BULK: bool = False
    """Project a batch with one `_bulk` request instead of one request per event."""
    OUTBOX_METRICS_PORT: int = Field(9108, ge=0, le=65535)
    """Port of `/metrics` on 127.0.0.1 (0 picks a free one, logged at start)."""
    OUTBOX_METRICS_HOST: str = "127.0.0.1"
    """Address `/metrics` binds to."""
    OUTBOX_WORKER_ID: str = Field(default_factory=_default_worker_id, min_length=1)
    """Name written to `claimed_by`, logs and spans."""
    ENV: str = "local"
    """Value of the `env` label and log field."""
    WORDLOOM_TRACING_ENABLED: bool = False
    """Tracing is opt-in."""
    OTEL_EXPORTER_OTLP_ENDPOINT: str = "http://127.0.0.1:4318"
    """OTLP/HTTP base URL; spans go to `<endpoint>/v1/traces`."""
    OTEL_SERVICE_NAME: str = DEFAULT_SERVICE_NAME
    OTEL_SDK_DISABLED: bool = False
    CHRONICLE_PROJECTION_VERSION: int = Field(1, ge=1, le=2)
    """Rule version the chronicle projection writes with."""
    ES_TIMEOUT: float = Field(5.0, gt=0, le=600)
    """Seconds before one engine request counts as a timeout."""

    OUTBOX_EXPERIMENT_ES_429_EVERY_N: int | None = Field(None, ge=1)
    """Fault knob: inject a 429 on every n-th engine call."""
    OUTBOX_EXPERIMENT_ES_429_RATIO: float | None = Field(None, ge=0, le=1)
    """Fault knob: inject a 429 with this probability."""
    OUTBOX_EXPERIMENT_ES_429_OPS: str = "upsert,delete"
    """Fault knob: ops the 429 injection applies to."""
    OUTBOX_EXPERIMENT_ES_429_SEED: int | None = None
    OUTBOX_EXPERIMENT_BREAK_CLAIM_SLEEP: float | None = Field(None, ge=0, le=600)
    """Fault knob: non-atomic claim (select, sleep this long, update) to cause contention."""
    OUTBOX_EXPERIMENT_PROCESS_SLEEP: float | None = Field(None, ge=0, le=3600)
    """Fault knob: sleep this long after claiming, before processing (stuck leases)."""

    @field_validator("DATABASE_URL")
    @classmethod
    def _dsn(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError("must be a postgresql:// URL, e.g. postgresql://postgres@127.0.0.1:5432/postgres")
        return v

    @field_validator("ES_URL", "OTEL_EXPORTER_OTLP_ENDPOINT")
    @classmethod
    def _http(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s):// URL such as http://127.0.0.1:9200")
        try:
            _ = parts.port  # raises on a port outside 0..65535
        except ValueError as exc:
            raise ValueError(f"bad port ({exc})") from None
        return v.rstrip("/")

    @field_validator("OUTBOX_EXPERIMENT_ES_429_OPS")
    @classmethod
    def _ops(cls, v: str) -> str:
        ops = [o.strip() for o in v.split(",") if o.strip()]
        bad = [o for o in ops if o not in OPS]
        if bad or not ops:
            raise ValueError(f"must be a comma list of {', '.join(OPS)}")
        return ",".join(ops)

    @model_validator(mode="after")
    def _backoff(self) -> WorkerSettings:
        if self.OUTBOX_BACKOFF_CAP < self.OUTBOX_BACKOFF_BASE:
            raise ValueError("OUTBOX_BACKOFF_CAP must be >= OUTBOX_BACKOFF_BASE")
        return self

    @property
    def tracing_enabled(self) -> bool:
        return self.WORDLOOM_TRACING_ENABLED and not self.OTEL_SDK_DISABLED

    @property
    def es_429_ops(self) -> frozenset[str]:
        return frozenset(self.OUTBOX_EXPERIMENT_ES_429_OPS.split(","))


def load_settings(env: Mapping[str, str] | None = None) -> WorkerSettings:
    """Validate the environment; raise SettingsError naming the first bad variable."""
    source = dict(os.environ if env is None else env)
    # pydantic-settings reads os.environ itself; passing values explicitly keeps `env` testable.
    known = {k: v for k, v in source.items() if k in WorkerSettings.model_fields}
    try:
        return WorkerSettings(_env_file=None, **known)  # type: ignore[call-arg,arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "settings"
        value = known.get(loc)
        shown = f" (got {value!r})" if value is not None and loc != "DATABASE_URL" else ""
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            raise SettingsError(f"{loc} is not set: export {loc}=... (see CONTRACT.md, Worker settings)") from None
        raise SettingsError(f"{loc}: {msg}{shown}") from None
