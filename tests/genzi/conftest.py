"""Tiny seeded model folders for the GenZI tests, built once per session."""
from __future__ import annotations

import pytest

from tiny_models import write_tiny_clip, write_tiny_sd2_inpainting


@pytest.fixture(scope="session")
def genzi_models(tmp_path_factory):
    """A models dir holding sd2-inpainting/ and clip-vit-base-patch32/ in their released layouts."""
    root = tmp_path_factory.mktemp("genzi-models")
    write_tiny_sd2_inpainting(root / "sd2-inpainting")
    write_tiny_clip(root / "clip-vit-base-patch32")
    return root


@pytest.fixture(scope="session")
def tiny_pipe(genzi_models):
    from engine.genzi.inpaint import load_inpainting_pipeline

    return load_inpainting_pipeline(genzi_models)
