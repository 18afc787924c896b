"""Shared fixtures. Every test run writes its caches to a private STUDIO_VAR, never to the repo's var/."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ["STUDIO_VAR"] = tempfile.mkdtemp(prefix="studio-test-var-")


@pytest.fixture(scope="session")
def open_body():
    from engine.body import load_body

    return load_body("openbody")


@pytest.fixture(scope="session")
def open_body_views(open_body):
    from engine import rll

    return rll.render_views(open_body.vitruvian_vertices(), open_body.faces, preset="body", resolution=1024,
                            topology=open_body.topology)


@pytest.fixture(scope="session")
def smplx_models_dir(tmp_path_factory):
    """A models dir holding a synthetic SMPL-X file in the official layout (no licensed data)."""
    from fakes import write_fake_smpl_family

    root = tmp_path_factory.mktemp("models")
    write_fake_smpl_family(root, "smplx")
    return root
