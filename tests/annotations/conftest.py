"""Store fixtures: one contract suite over in-memory SQLite, file SQLite and a real PostgreSQL server.

PostgreSQL comes from ``$STUDIO_TEST_PG_URL`` (``.ci/start-postgres`` starts one and CI exports it).
Without it the PostgreSQL cases skip with the reason, unless ``$STUDIO_REQUIRE_PG=1`` (set by
``.ci/run``), where they fail instead.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from annotations.store import reset_postgres_schema

BACKENDS = ("sqlite-memory", "sqlite-file", "postgresql")


def postgres_url() -> str:
    url = os.environ.get("STUDIO_TEST_PG_URL")
    problem = None
    if not url:
        problem = "STUDIO_TEST_PG_URL is not set (run .ci/start-postgres to start a server)"
    else:
        problem = reset_postgres_schema(url)
    if problem and os.environ.get("STUDIO_REQUIRE_PG") == "1":
        pytest.fail(f"STUDIO_REQUIRE_PG=1 but {problem}")
    if problem:
        pytest.skip(problem)
    return url


def url_for(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite-memory":
        return "sqlite://"
    if backend == "sqlite-file":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return postgres_url()


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def make_store(backend, tmp_path):
    """``make_store(**config)`` opens a fresh store on the current backend."""
    from annotations.store import Store, StoreConfig

    opened = []

    def make(**config):
        store = Store(url_for(backend, tmp_path), data_dir=tmp_path / "data", config=StoreConfig(**config))
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store):
    return make_store()
