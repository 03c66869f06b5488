"""Fixtures for tests that start an embedded Postgres in a folder of their own.

Why not `tmp_path`: as root, Postgres runs as its own system user, which must traverse to its
data folder, and the stack grants that at start. A pytest session starting meanwhile (another
engineer's, on this shared machine) tightens /tmp/pytest-of-root back to 0700 and cuts Postgres
off in the middle of a test. conftest.py's session Postgres lives outside basetemp for the same
kind of reason; these folders do too.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def private_tmp_folder() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="drillui-test-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pg_tmp() -> Iterator[Path]:
    """A fresh folder outside pytest's basetemp, removed afterwards."""
    with private_tmp_folder() as folder:
        yield folder
