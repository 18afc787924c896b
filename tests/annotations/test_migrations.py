"""Alembic: a database created at the first migration upgrades to head with its data intact,
and the head schema is exactly what the models declare."""
from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from annotations.migrations import current_revision, upgrade
from annotations.models import Base
from annotations.store import Store


def test_first_revision_upgrades_to_head_with_data_intact(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        upgrade(connection, "0001")
        assert current_revision(connection) == "0001"
        assert "exports" not in sa.inspect(connection).get_table_names()
        connection.exec_driver_sql("INSERT INTO annotators (external_id, role, qualification, created_at) "
                                   "VALUES ('w1', 'annotator', 'qualified', '2026-01-01 00:00:00')")
        connection.exec_driver_sql("INSERT INTO images (sha256, path, format, width, height, num_bytes, "
                                   "original_name, created_at) VALUES ('ab', 'images/ab.png', 'png', 4, 5, 6, "
                                   "'a.png', '2026-01-01 00:00:00')")
    engine.dispose()
    store = Store(url, data_dir=tmp_path / "data")  # opening a store upgrades it
    with store.engine.begin() as connection:
        assert current_revision(connection) == "0005"
        assert "exports" in sa.inspect(connection).get_table_names()
        assert connection.exec_driver_sql("SELECT external_id, qualification FROM annotators").all() == \
            [("w1", "qualified")]
        assert connection.exec_driver_sql("SELECT width, height FROM images").all() == [(4, 5)]
    assert store.annotator(1).qualification == "qualified"


PARTIAL_INDEXES = ("ix_tasks_open", "ix_tasks_gold")  # alembic cannot compare expression indexes


def test_head_schema_matches_the_models(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'head.db'}", data_dir=tmp_path / "data")

    def comparable(item, name, kind, reflected, other):
        return not (kind == "index" and name in PARTIAL_INDEXES)

    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"include_object": comparable})
        assert compare_metadata(context, Base.metadata) == []
        sql = dict(connection.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'index'").all())
    assert "priority DESC" in sql["ix_tasks_open"] and sql["ix_tasks_open"].endswith("WHERE filled < redundancy")
    assert sql["ix_tasks_gold"].endswith("WHERE is_gold = 1")
