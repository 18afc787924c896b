"""A real studio server (uvicorn in a thread) on a free port, with its own store; optionally tiny models."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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


@pytest.fixture(scope="module")
def studio_server(tmp_path_factory):
    """No licensed files: the open body and the category prior."""
    folder = tmp_path_factory.mktemp("studio")
    models = folder / "models"
    models.mkdir()
    running, server = start_studio(models, folder)
    yield running
    stop(server, running)


@pytest.fixture(scope="module")
def tiny_models_dir(tmp_path_factory):
    """A models dir with tiny seeded InteractVLM hcontact and oafford checkpoints in the released layout."""
    from engine.contact.checkpoint import CLIP_FOLDER, new_model, save_released

    root = tmp_path_factory.mktemp("tiny-models")
    for variant in ("hcontact", "oafford"):
        model, tokenizer = new_model(f"tiny-{variant}", seed=0)
        save_released(model, tokenizer, root / "interactvlm" / variant, dtype="fp32", clip_folder=root / CLIP_FOLDER)
    return root


@pytest.fixture(scope="module")
def model_server(tmp_path_factory, tiny_models_dir):
    """The tiny InteractVLM checkpoints installed: the demo runs the real model path."""
    running, server = start_studio(tiny_models_dir, tmp_path_factory.mktemp("studio-models"))
    yield running
    stop(server, running)


@pytest.fixture(scope="module")
def picture(tmp_path_factory) -> Path:
    """A small seeded RGB PNG."""
    path = tmp_path_factory.mktemp("pictures") / "person.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(path)
    return path


CHROMIUM = Path("/usr/bin/chromium")
# Software WebGL in headless Chromium: the painter needs WebGL and CI machines have no GPU.
CHROMIUM_ARGS = ["--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"]


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium through Playwright (never a downloaded browser); skips without it unless CI requires it."""
    import os

    if not CHROMIUM.exists():
        if os.environ.get("STUDIO_REQUIRE_BROWSER") == "1":
            pytest.fail("STUDIO_REQUIRE_BROWSER=1 but /usr/bin/chromium is missing (apt-get install chromium)")
        pytest.skip("browser tests need Debian's Chromium at /usr/bin/chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def artifacts(request) -> Path:
    """A folder for this test's screenshots: artifacts/<test name>/ at the repository root."""
    folder = Path(__file__).resolve().parents[2] / "artifacts" / request.node.name
    folder.mkdir(parents=True, exist_ok=True)
    return folder
