"""Starting and stopping a real studio server for tests (shared by conftest.py and the test modules).

Importable by its own name (``from studio_servers import start_studio``): test modules must not import
``conftest``, which names a different module in every test folder.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

ADMIN_USER, ADMIN_PASSWORD = "lab-admin", "correct horse battery"
# This run's own Gradio upload folder: the servers' sweepers never touch another process's files.
os.environ.setdefault("GRADIO_TEMP_DIR", tempfile.mkdtemp(prefix="studio-tests-gradio-"))


@dataclass(frozen=True)
class RunningStudio:
    url: str  # http://127.0.0.1:PORT (no trailing slash)
    studio: object  # studio.context.Studio
    models_dir: Path
    pages: dict | None = None  # mount path -> gr.Blocks, every page the server mounted


def start_studio(models_dir: Path, folder: Path, **settings) -> tuple[RunningStudio, object]:
    from app import build_studio
    from studio.server import BackgroundServer
    from studio.settings import Login, StudioSettings

    # The shared test servers take many sessions from 127.0.0.1; the limits have tests of their own.
    settings = {"session_starts_per_minute": 100_000, "tasks_per_minute": 100_000, **settings}
    config = StudioSettings(models_dir=models_dir, db_url=f"sqlite:///{folder / 'store.db'}", data_dir=folder / "data",
                            admin=Login(ADMIN_USER, ADMIN_PASSWORD), **settings)
    server = BackgroundServer(build_studio(config))
    return RunningStudio(server.url, server.studio, models_dir, server.app.state.pages), server


def stop(server, running: RunningStudio) -> None:
    server.stop()
