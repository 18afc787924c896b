"""SQLAlchemy Core statements compiled once and run straight on the DBAPI cursor (the annotator hot path).

SQLAlchemy's execution layer costs about 0.1-0.2 ms of Python per statement (compiled-cache lookup,
events, result metadata), several times what SQLite itself needs for the hot path's indexed single-row
statements. The statements are still written with SQLAlchemy Core (``workflow.HotStatements``); this
module compiles each one once for the engine's dialect and then only binds values and converts the few
column types the drivers hand back raw:

- SQLite stores ``DateTime`` as text (``YYYY-MM-DD HH:MM:SS.ffffff``, SQLAlchemy's own format, so that
  rows written here and by the ORM compare alike), ``JSON`` as text and ``Boolean`` as 0/1.
- psycopg returns ``timestamp`` and ``json`` decoded; JSON parameters (by their bind type) are sent as text,
  lists for ARRAY parameters as lists.

``RawTransaction`` is one transaction on one pooled connection: ``BEGIN IMMEDIATE`` on SQLite for a
writer (the same serialisation as ``Store.session(write=True)``), commit on success, rollback on any error.
"""
from __future__ import annotations

import json
from collections import namedtuple
from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime
from sqlalchemy.engine import Dialect

SQLITE_DATETIME = "%Y-%m-%d %H:%M:%S.%f"


def _json_out(value):
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def _datetime_out(value):
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _bool_out(value):
    return None if value is None else bool(value)


def _converter(column_type):
    if isinstance(column_type, JSON):
        return _json_out
    if isinstance(column_type, DateTime):
        return _datetime_out
    if isinstance(column_type, Boolean):
        return _bool_out
    return None


class RawStatement:
    """One Core statement compiled for one dialect: its SQL text, parameter order and row type."""

    def __init__(self, statement, dialect: Dialect):
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self.defaults = dict(compiled.params)  # literal values of the statement (status = 'assigned', ...)
        self.order = tuple(compiled.positiontup) if dialect.positional else None
        self.sqlite = dialect.name == "sqlite"
        # Sent as JSON text: the parameters of JSON columns (a list for an ARRAY parameter stays a list).
        self.json_names = frozenset(name for name, bind in compiled.binds.items() if isinstance(bind.type, JSON))
        columns = list(statement.exported_columns) if hasattr(statement, "exported_columns") else []
        self.row_type = namedtuple("Row", [column.key for column in columns], rename=True) if columns else None
        converters = [_converter(column.type) for column in columns]
        self.converters = converters if any(converters) else None

    def parameters(self, values: dict):
        merged = {**self.defaults, **values} if self.defaults else values
        for name in self.json_names.intersection(values):
            merged[name] = json.dumps(values[name])
        if self.sqlite:
            for name, value in merged.items():
                if isinstance(value, datetime):
                    merged[name] = value.strftime(SQLITE_DATETIME)
        return tuple(merged[name] for name in self.order) if self.order is not None else merged

    def row(self, values):
        if values is None:
            return None
        if self.converters is not None:
            values = [value if convert is None else convert(value) for convert, value in zip(self.converters, values)]
        return self.row_type._make(values)


class RawTransaction:
    """A DBAPI cursor inside one transaction; statements come from ``compile_for``."""

    def __init__(self, cursor):
        self.cursor = cursor

    def execute(self, statement: RawStatement, **values) -> None:
        self.cursor.execute(statement.sql, statement.parameters(values))

    def first(self, statement: RawStatement, **values):
        self.cursor.execute(statement.sql, statement.parameters(values))
        return statement.row(self.cursor.fetchone())

    def scalar(self, statement: RawStatement, **values):
        row = self.first(statement, **values)
        return None if row is None else row[0]

    def execute_many(self, statement: RawStatement, rows: list[dict]) -> None:
        self.cursor.executemany(statement.sql, [statement.parameters(values) for values in rows])
