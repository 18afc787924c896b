"""Builders shared by the study tests (store, studio, browser) and the study benchmark: seeded stimuli and items."""
from __future__ import annotations

import io
import json
import struct
import zipfile

import numpy as np
from PIL import Image

from annotations.studies import ItemSpec, StudyConfig, create_study, set_state
from annotations.studies_media import check_stimulus


def png(seed: int, size=(40, 32)) -> bytes:
    """A small PNG with seeded noise (every seed gives different bytes)."""
    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def solid_png(colour, size=(64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def glb(extra: dict | None = None) -> bytes:
    """A minimal valid glTF 2.0 binary: a header and a JSON chunk (padded to 4 bytes)."""
    payload = json.dumps({"asset": {"version": "2.0"}, **(extra or {})}).encode()
    payload += b" " * (-len(payload) % 4)
    return b"glTF" + struct.pack("<II", 2, 20 + len(payload)) + struct.pack("<II", len(payload), 0x4E4F534A) + payload


def image_items(count: int, *, catches: int = 0, reference: bool = False, seed: int = 0) -> list[ItemSpec]:
    """``count`` regular image items (A and B seeded noise) and ``catches`` catch items."""
    items = []
    for index in range(count + catches):
        a = check_stimulus("a.png", png(seed * 1000 + 3 * index))
        b = check_stimulus("b.png", png(seed * 1000 + 3 * index + 1))
        ref = check_stimulus("r.png", png(seed * 1000 + 3 * index + 2)) if reference else None
        is_catch = index >= count
        items.append(ItemSpec(name=f"check-{index}" if is_catch else f"item-{index:02d}", a=a, b=b, reference=ref,
                              is_catch=is_catch))
    return items


def open_study(store, slug: str = "demo", *, items: int = 6, catches: int = 0, method_a: str = "InteractVLM",
               method_b: str = "PHOSA", seed: int = 7, reference: bool = False, **config):
    """A created and opened study of seeded image items."""
    study = create_study(store, slug=slug, title="Which fit is better?", method_a=method_a, method_b=method_b,
                         items=image_items(items, catches=catches, reference=reference),
                         config=StudyConfig(**config), seed=seed)
    return set_state(store, study.slug, "open")


def write_pairs_zip(path, rows: list[tuple], files: dict[str, bytes], header: str = "item,a,b,reference,catch") -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr("pairs.csv", "\n".join([header] + [",".join(map(str, row)) for row in rows]) + "\n")
