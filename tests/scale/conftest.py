"""Scale-out fixtures: a real Ray cluster (``.ci/start-ray``), Ray Serve deployments of tiny seeded models.

The cluster comes from ``$STUDIO_TEST_RAY_ADDRESS`` (``.ci/run`` starts one with ``.ci/start-ray`` and
exports it). Without it the Ray tests skip with the reason, unless ``$STUDIO_REQUIRE_RAY=1`` (set by
``.ci/run``), where they fail instead.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scale_helpers import requirement, tiny_checkpoint


@pytest.fixture(scope="session")
def ray_address() -> str:
    address = os.environ.get("STUDIO_TEST_RAY_ADDRESS")
    if not address:
        requirement("STUDIO_REQUIRE_RAY", "STUDIO_TEST_RAY_ADDRESS is not set (start a cluster with .ci/start-ray)")
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as error:
        requirement("STUDIO_REQUIRE_RAY", f"no Ray cluster answers at {address}: {error}")
    return address


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """A models dir with the tiny seeded InteractVLM hcontact checkpoint and two fine-tuned ones (no oafford)."""
    from engine.contact.checkpoint import CLIP_FOLDER

    root = tmp_path_factory.mktemp("scale-models")
    tiny_checkpoint(root / "interactvlm" / "hcontact", root / CLIP_FOLDER, seed=0)
    for seed, name in ((0, "round-1"), (1, "round-2")):  # round-1 is the base checkpoint again
        tiny_checkpoint(root / "finetuned" / "hcontact" / name, root / CLIP_FOLDER, seed=seed)
    return root


@pytest.fixture(scope="session")
def picture_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()
