"""Builders shared by the store tests: seeded images, batch folders, row counts."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import func, select


def write_image(path: Path, seed: int, size=(48, 40)) -> Path:
    """A small PNG with seeded noise, so every seed gives different bytes."""
    pixels = (np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def write_batch(folder: Path, rows: list[dict], *, images: int | None = None, seed: int = 0) -> Path:
    """A batch folder: ``img<i>.png`` for every image a row names, plus ``tasks.jsonl``."""
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted({row["image"] for row in rows if "image" in row})
    for index, name in enumerate(names):
        if not (folder / name).exists():
            write_image(folder / name, seed * 100_000 + index)
    (folder / "tasks.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


def contact_rows(count: int, **fields) -> list[dict]:
    base = {"labels": ["chair", "supporting"], "topology": "smplh-6890", "redundancy": 3}
    return [{**base, "image": f"img{i}.png", **fields} for i in range(count)]


def count_rows(store, table) -> int:
    with store.session() as session:
        return session.scalar(select(func.count()).select_from(table))
