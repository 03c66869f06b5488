"""Worker settings: the environment of CONTRACT.md as one validated model.

Built once in `worker.__main__` and passed down; nothing else reads `os.environ`. A bad value
is refused at start with a one-line message naming the variable (see `load_settings`).
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from collections.abc import Mapping
from typing import Final, Literal
from urllib.parse import urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.contract import DEFAULT_SERVICE_NAME, OPS, Projection
from worker.redact import redact

DEFAULT_BULK_MAX_BYTES: Final = 10 * 1024 * 1024
"""10 MiB: inside the 5-15 MB Elasticsearch recommends per `_bulk`, a tenth of the engines'
default request limit (`http.max_content_length`, 100 MB)."""
DEFAULT_TOMBSTONE_SECONDS: Final = 60.0
"""Elasticsearch's and OpenSearch's default `index.gc_deletes`."""

# libpq settings whose values are a closed list: libpq only checks them when it connects, where
# a typo reads like "cannot connect"; checked here it is a bad setting (exit 2).
_LIBPQ_CHOICES: Final[Mapping[str, frozenset[str]]] = {
    "sslmode": frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}),
    "gssencmode": frozenset({"disable", "prefer", "require"}),
    "channel_binding": frozenset({"disable", "prefer", "require"}),
    "target_session_attrs": frozenset({"any", "read-write", "read-only", "primary", "standby", "prefer-standby"}),
    "load_balance_hosts": frozenset({"disable", "random"}),
    "sslnegotiation": frozenset({"postgres", "direct"}),
}
_LIBPQ_INTEGERS: Final = frozenset(
    {"connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout"}
)
# Elasticsearch / OpenSearch index name rules: lowercase, none of these characters, not
# starting with - _ +, not . or .., at most 255 bytes.
_INDEX_FORBIDDEN: Final = re.compile(r'[\\/*?"<>| ,#:]')


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

    OUTBOX_BULK_MAX_BYTES: int = Field(DEFAULT_BULK_MAX_BYTES, ge=1024, le=2**31)
    """Largest `_bulk` request body in bytes: a batch is split into requests of at most this size,
    and a single document bigger than that fails alone (`invalid_payload`). Keep it below the
    engine's `http.max_content_length` (100 MB by default)."""
    OUTBOX_ES_TOMBSTONE_SECONDS: float = Field(DEFAULT_TOMBSTONE_SECONDS, gt=0, le=10 * 86_400)
    """How long the engine remembers a delete (the index's `index.gc_deletes`). Writes are only
    sent while they can land within `min(lease, tombstone - lease)` of the claim, so an older
    write can never land after the engine forgot a newer delete; must exceed the lease."""

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
    OUTBOX_EXPERIMENT_OBS_SCHEMA: Literal["labs-009-v1", "labs-009-v2"] | None = None
    """Fault knob: speak this observability schema; labs-009-v1 is a stale build's (old span keys:
    `wordloom.outbox.id` holds the entity id, no `wordloom.outbox_event_id` / `wordloom.claim_batch_id`)."""
    OUTBOX_EXPERIMENT_BATCH_RESULT_EARLY: bool = False
    """Fault knob: write the batch span's result when the batch starts, never from its outcome
    (runbook manual-test/1: `result=ok` on a batch whose child span is ERROR)."""

    @field_validator("DATABASE_URL")
    @classmethod
    def _dsn(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError("must be a postgresql:// URL, e.g. postgresql://postgres@127.0.0.1:5432/postgres")
        try:
            params = conninfo_to_dict(v)
        except psycopg.ProgrammingError as exc:
            raise ValueError(f"{' '.join(str(exc).split())}; see the libpq connection URI format") from None
        for port in filter(None, str(params.get("port") or "").split(",")):
            if not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ValueError(f"port {port!r} is not a TCP port (1-65535)")
        for key, allowed in _LIBPQ_CHOICES.items():
            if key in params and str(params[key]) not in allowed:
                raise ValueError(f"{key}={str(params[key])!r} is not one of {', '.join(sorted(allowed))}")
        for key in _LIBPQ_INTEGERS & params.keys():
            if not str(params[key]).isdigit():
                raise ValueError(f"{key}={str(params[key])!r} must be a whole number")
        return v

    @field_validator("ES_INDEX")
    @classmethod
    def _index(cls, v: str) -> str:
        if not v or v in (".", ".."):
            raise ValueError("must be an index name such as wordloom-search")
        bad = sorted(set(_INDEX_FORBIDDEN.findall(v)))
        if bad:
            raise ValueError(f"an index name cannot contain {' '.join(repr(c) for c in bad)}; use e.g. wordloom-search")
        if v != v.lower():
            raise ValueError(f"an index name must be lowercase, e.g. {v.lower()!r}")
        if v[0] in "-_+":
            raise ValueError(f"an index name cannot start with {v[0]!r}")
        if len(v.encode()) > 255:
            raise ValueError("an index name is at most 255 bytes")
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
        if self.OUTBOX_PROJECTION != "chronicle" and self.OUTBOX_LEASE_SECONDS >= self.OUTBOX_ES_TOMBSTONE_SECONDS:
            raise ValueError(
                f"OUTBOX_LEASE_SECONDS ({self.OUTBOX_LEASE_SECONDS:g}) must be below OUTBOX_ES_TOMBSTONE_SECONDS "
                f"({self.OUTBOX_ES_TOMBSTONE_SECONDS:g}, the index's index.gc_deletes): shorten the lease"
            )
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
        shown = f" (got {redact(repr(value))})" if value is not None and loc != "DATABASE_URL" else ""
        msg = redact(err["msg"].removeprefix("Value error, "))
        if err["type"] == "missing":
            raise SettingsError(f"{loc} is not set: export {loc}=... (see CONTRACT.md, Worker settings)") from None
        if not loc or loc == "settings":
            raise SettingsError(msg) from None
        raise SettingsError(f"{loc}: {msg}{shown}") from None
