"""What the demo hands back: label colours, vertex-coloured GLB files, result npz files and overlay grids.

The contact npz (one file per request) holds:
    labels          (L,) str    object labels, in request order
    probabilities   (L, V) float32 per-vertex contact probability for each label, on ``topology``
    contact_label   (V,) uint8  1 where any label's probability is >= 0.5 (DAMON's binary contact)
    contact_label_objectwise_json  () UTF-8 JSON bytes {label: [vertex ids >= 0.5]}
    topology        () str      body topology id (``smplh-6890``, ``openbody-v1``, ...)
    source          () str      checkpoint name, or ``baseline: category prior``
    probabilities_smplx (L, 10475) float32, only when the SMPL -> SMPL-X map is installed
    answers         (L,) str    the model's raw text answer per label, special tokens ([SEG] ...) included
                                (the page shows them without the tokens: ``visible_text``)
It loads with plain ``np.load`` (no pickles).
"""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import trimesh

from engine.paths import write_atomically

CONTACT_THRESHOLD = 0.5
# Model tokens a visitor must never read: [SEG]-style segmentation tokens, the image placeholder, sequence markers.
_MODEL_TOKENS = re.compile(r"\[/?[A-Z]*SEG\]|<image>|<im_(?:start|end|patch)>|</?s>|<\|[a-z_]+\|>")
PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324", "#800000",
           "#808000", "#000075", "#469990")
SUPPORTING_COLOUR = "#bfa100"
BASE_GREY = np.array([0.82, 0.82, 0.82])


def label_colours(labels) -> dict[str, str]:
    """One stable hex colour per label, in order; ``supporting`` always gets the same ochre."""
    colours, index = {}, 0
    for label in labels:
        if label == "supporting":
            colours[label] = SUPPORTING_COLOUR
        else:
            colours[label] = PALETTE[index % len(PALETTE)]
            index += 1
    return colours


def hex_to_rgb(colour: str) -> np.ndarray:
    return np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.float64) / 255.0


def blend_vertex_colours(values: np.ndarray, colours: list[str]) -> np.ndarray:
    """(V, 3) float in [0, 1]: grey blended towards each label's colour by its (L, V) value, label by label."""
    rgb = np.tile(BASE_GREY, (values.shape[1], 1))
    for layer, colour in zip(values, colours):
        weight = np.clip(layer, 0.0, 1.0)[:, None]
        rgb = rgb * (1.0 - weight) + hex_to_rgb(colour) * weight
    return rgb


def heat_colours(values: np.ndarray) -> np.ndarray:
    """(P, 3) float in [0, 1]: grey at 0 through orange at 0.5 to red at 1, for a per-vertex heat map."""
    t = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)[:, None]
    low, mid, high = BASE_GREY, np.array([1.0, 0.6, 0.1]), np.array([0.8, 0.0, 0.05])
    return np.where(t < 0.5, low + (mid - low) * (t * 2), mid + (high - mid) * (t * 2 - 1))


def coloured_glb(vertices: np.ndarray, faces: np.ndarray | None, rgb: np.ndarray) -> bytes:
    """A GLB with per-vertex COLOR_0 (a point cloud when ``faces`` is None)."""
    rgba = np.concatenate([np.round(rgb * 255), np.full((len(rgb), 1), 255)], 1).astype(np.uint8)
    if faces is None:
        geometry = trimesh.PointCloud(np.asarray(vertices, dtype=np.float64), colors=rgba)
    else:
        geometry = trimesh.Trimesh(np.asarray(vertices, dtype=np.float64), np.asarray(faces), vertex_colors=rgba,
                                   process=False)
    return trimesh.Scene(geometry).export(file_type="glb")


def contact_npz(labels: list[str], probabilities: np.ndarray, topology: str, source: str,
                probabilities_smplx: np.ndarray | None = None, imgname: str = "", answers: list[str] | None = None) -> bytes:
    """The documented contact npz (see the module docstring) as bytes."""
    contact = probabilities >= CONTACT_THRESHOLD
    objectwise = {label: np.flatnonzero(row).tolist() for label, row in zip(labels, contact)}
    arrays = {"imgname": np.array(imgname), "labels": np.array(labels, dtype=str),
              "probabilities": probabilities.astype(np.float32), "contact_label": contact.any(0).astype(np.uint8),
              "contact_label_objectwise_json": np.frombuffer(json.dumps(objectwise).encode(), dtype=np.uint8),
              "topology": np.array(topology), "source": np.array(source)}
    if probabilities_smplx is not None:
        arrays["probabilities_smplx"] = probabilities_smplx.astype(np.float32)
    if answers is not None:
        arrays["answers"] = np.array([str(answer) for answer in answers], dtype=str)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def visible_text(answer: str) -> str:
    """A model answer as a visitor reads it: without model tokens, spaces tidied (the npz keeps the raw text)."""
    text = _MODEL_TOKENS.sub(" ", str(answer or ""))
    text = re.sub(r"\s+([.,;:!?])", r"\1", " ".join(text.split()))
    return text or "(no text answer)"


def affordance_npz(result, points: np.ndarray) -> bytes:
    """``values`` (P,) float32 in [0, 1] on ``points`` (P, 3), with the object label, affordance, kind, source and
    the model's raw ``answer`` (special tokens included)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, values=result.values.astype(np.float32), points=np.asarray(points, dtype=np.float32),
                        object_label=np.array(result.object_label), affordance=np.array(result.affordance or ""),
                        kind=np.array(result.kind), source=np.array(result.source),
                        answer=np.array(str(getattr(result, "answer", "") or "")))
    return buffer.getvalue()


def overlay_grid(images: np.ndarray, masks: np.ndarray, colours: list[str], alpha: float = 0.65) -> np.ndarray:
    """(2H, 2W, 3) uint8: the four (4, H, W, 3) renders with each label's (L, 4, S, S) mask tinted on top."""
    out = images.astype(np.float64) / 255.0
    size = images.shape[1]
    for label_masks, colour in zip(masks, colours):
        resized = _resize_masks(label_masks, size)[..., None] * alpha
        out = out * (1.0 - resized) + hex_to_rgb(colour) * resized
    out = np.round(out * 255).astype(np.uint8)
    return np.concatenate([np.concatenate(list(out[:2]), 1), np.concatenate(list(out[2:]), 1)], 0)


def _resize_masks(masks: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resampling of (4, S, S) masks to (4, size, size)."""
    index = (np.arange(size) * masks.shape[1] / size).astype(int)
    return np.clip(masks[:, index][:, :, index], 0.0, 1.0)


def write_bytes(folder: Path, name: str, data: bytes) -> Path:
    """Write ``data`` to ``folder/name`` atomically (a reader never sees a half-written file)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    write_atomically(path, lambda handle: handle.write(data))
    return path


def png_bytes(image: np.ndarray) -> bytes:
    """An (H, W, 3) uint8 image as PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()
