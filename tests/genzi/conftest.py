"""Tiny seeded model folders for the GenZI tests, built once per session, each only when a test needs it."""
from __future__ import annotations

import pytest

from tiny_models import write_tiny_clip, write_tiny_sd2_inpainting


@pytest.fixture(scope="session")
def genzi_models(tmp_path_factory):
    """A models dir for sd2-inpainting/ and clip-vit-base-patch32/ in their released layouts."""
    return tmp_path_factory.mktemp("genzi-models")


@pytest.fixture(scope="session")
def clip_folder(genzi_models):
    return write_tiny_clip(genzi_models / "clip-vit-base-patch32")


@pytest.fixture(scope="session")
def tiny_pipe(genzi_models):
    from engine.genzi.inpaint import load_inpainting_pipeline

    write_tiny_sd2_inpainting(genzi_models / "sd2-inpainting")
    return load_inpainting_pipeline(genzi_models)
