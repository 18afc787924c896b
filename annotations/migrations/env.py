"""Alembic environment: always runs on the connection the store hands over (never a config URL)."""
from alembic import context

from annotations.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through annotations.migrations.upgrade (python -m annotations migrate)")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
