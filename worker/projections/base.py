"""The boundary between the relay loop and a projection target."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Protocol

from worker.classify import Outcome
from worker.db import OutboxRow


class Projection(Protocol):
    """Applies claimed outbox rows to one target and says what happened to each.

    A projection never touches outbox status: the relay settles each outcome with an
    ownership-checked write. It must be idempotent in effect: the same row applied twice, or
    an older row applied after a newer one, leaves the target as the newest row left it.
    """

    name: str

    def apply_one(self, row: OutboxRow, *, deadline: float | None = None) -> Outcome | None:
        """Apply one row (single-document mode); None when it was not sent.

        `deadline` (time.monotonic()) is when the claim's write window ends: a projection whose
        writes could land after it must not send them and returns None, and the relay gives
        the row back unattempted.
        """
        ...

    def apply_batch(
        self, rows: Sequence[OutboxRow], *, deadline: float | None = None, stop: threading.Event | None = None
    ) -> list[Outcome | None]:
        """Apply many rows at once; one outcome per row, in order, None for a row not sent
        (the window ended, or `stop` was set between two requests)."""
        ...

    def event_attributes(self, row: OutboxRow) -> dict[str, Any]:
        """Extra span attributes / log fields for one row (e.g. projection_version)."""
        ...

    @property
    def batched(self) -> bool:
        """True when `apply_batch` is one request (no per-event spans then)."""
        ...

    def close(self) -> None: ...
