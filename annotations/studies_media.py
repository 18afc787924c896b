"""Stimulus files of perceptual studies: images, videos (MP4 / WebM) and GLB models, checked as hostile uploads.

``check_stimulus(name, data)`` accepts a file by its suffix *and* its content (images through the store's
image checks; videos and GLB by their container headers) or raises ``InputError`` naming the file and what
is accepted. ``broken_stimulus`` makes the obviously wrong side of an attention check from a real image (tiles
shuffled) or GLB model (meshes scrambled).
"""
from __future__ import annotations

import hashlib
import io
import json
import struct
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
from PIL import Image

from annotations.files import ImageLimits, check_image
from engine.errors import InputError

MAX_STIMULUS_BYTES = 64 * 2**20
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".m4v", ".webm")
GLB_SUFFIXES = (".glb",)
STIMULUS_SUFFIXES = IMAGE_SUFFIXES + VIDEO_SUFFIXES + GLB_SUFFIXES
ACCEPTED = "PNG, JPEG, WEBP or BMP images, MP4 or WebM videos, or GLB models"
_EBML_MAGIC = b"\x1a\x45\xdf\xa3"
_GLB_JSON_CHUNK = 0x4E4F534A
BROKEN_TILES = 8


@dataclass(frozen=True)
class CheckedStimulus:
    """An accepted stimulus: ``data`` unchanged; media "image" | "video" | "glb"."""

    media: str
    content_type: str
    suffix: str
    sha256: str
    data: bytes


def check_stimulus(name: str, data: bytes, limits: ImageLimits = ImageLimits()) -> CheckedStimulus:
    """Accept ``data`` as a study stimulus or raise ``InputError`` (the message names ``name``)."""
    data = bytes(data)
    suffix = PurePosixPath(str(name)).suffix.lower()
    if suffix not in STIMULUS_SUFFIXES:
        raise InputError(f"file {str(name)[-120:]!r}: {ACCEPTED} are accepted")
    if not data:
        raise InputError(f"file {str(name)[-120:]!r} is empty")
    if len(data) > MAX_STIMULUS_BYTES:
        raise InputError(f"file {str(name)[-120:]!r} is {len(data):,} bytes; at most {MAX_STIMULUS_BYTES:,} are "
                         "accepted")
    digest = hashlib.sha256(data).hexdigest()
    if suffix in IMAGE_SUFFIXES:
        image = check_image(data, str(name), limits)
        return CheckedStimulus("image", f"image/{image.format}", image.suffix, digest, data)
    if suffix in VIDEO_SUFFIXES:
        return CheckedStimulus("video", _video_type(name, data), suffix, digest, data)
    _check_glb(name, data)
    return CheckedStimulus("glb", "model/gltf-binary", ".glb", digest, data)


def _video_type(name: str, data: bytes) -> str:
    if data[4:8] == b"ftyp":
        return "video/mp4"
    if data.startswith(_EBML_MAGIC):
        return "video/webm"
    raise InputError(f"file {str(name)[-120:]!r} is not an MP4 or WebM video (its header says otherwise)")


def _check_glb(name: str, data: bytes) -> None:
    """glTF 2.0 binary: 12-byte header with the true length, then a JSON chunk that parses."""
    shown = repr(str(name)[-120:])
    if len(data) < 20 or data[:4] != b"glTF":
        raise InputError(f"file {shown} is not a GLB model (no glTF header)")
    version, length = struct.unpack_from("<II", data, 4)
    chunk_length, chunk_type = struct.unpack_from("<II", data, 12)
    if version != 2 or length != len(data) or chunk_type != _GLB_JSON_CHUNK or 20 + chunk_length > len(data):
        raise InputError(f"file {shown} is not a complete glTF 2.0 binary (header, length or JSON chunk is wrong)")
    try:
        json.loads(data[20:20 + chunk_length])
    except (UnicodeDecodeError, ValueError):
        raise InputError(f"file {shown} is not a readable GLB model (its JSON chunk does not parse)") from None


def broken_stimulus(stimulus: CheckedStimulus, seed: int) -> CheckedStimulus:
    """The obviously wrong side of a catch trial made from a real stimulus: an image's tiles shuffled and inverted
    (``broken_render``), or a GLB's meshes scrambled (``broken_model``). Videos are refused."""
    if stimulus.media == "glb":
        return broken_model(stimulus, seed)
    return broken_render(stimulus, seed)


def broken_model(model: CheckedStimulus, seed: int) -> CheckedStimulus:
    """A GLB of ``model`` whose every mesh keeps its faces but gets its vertices in a shuffled order: each triangle
    then joins random points of the surface, a spiky tangle in place of the scene and the people."""
    import trimesh

    if model.media != "glb":
        raise InputError("broken_model takes a GLB stimulus")
    try:
        scene = trimesh.load(io.BytesIO(model.data), file_type="glb", force="scene")
    except (ValueError, KeyError, IndexError, TypeError) as error:
        raise InputError(f"the GLB cannot be read to make an attention check from it ({error})") from None
    rng = np.random.default_rng(seed)
    meshes = [geometry for geometry in scene.geometry.values() if isinstance(geometry, trimesh.Trimesh)
              and len(geometry.vertices) >= 3 and len(geometry.faces)]
    if not meshes:
        raise InputError("the GLB holds no triangle mesh to break for an attention check")
    for mesh in meshes:
        order = rng.permutation(len(mesh.vertices))
        colours = mesh.visual.vertex_colors[order] if mesh.visual.kind == "vertex" else None
        mesh.vertices = np.asarray(mesh.vertices)[order]
        if colours is not None:
            mesh.visual.vertex_colors = colours
    return check_stimulus("broken.glb", scene.export(file_type="glb"))


def broken_render(image: CheckedStimulus, seed: int) -> CheckedStimulus:
    """A PNG of ``image`` cut into an 8x8 grid with the tiles shuffled: the obviously wrong side of a catch trial."""
    if image.media != "image":
        raise InputError("attention checks are made from image or GLB items; add catch items for videos by hand")
    with Image.open(io.BytesIO(image.data)) as opened:
        pixels = np.asarray(opened.convert("RGB"))
    height, width = (pixels.shape[0] // BROKEN_TILES) * BROKEN_TILES, (pixels.shape[1] // BROKEN_TILES) * BROKEN_TILES
    tiles = pixels[:height, :width].reshape(BROKEN_TILES, height // BROKEN_TILES, BROKEN_TILES,
                                            width // BROKEN_TILES, 3).swapaxes(1, 2).reshape(
        BROKEN_TILES**2, height // BROKEN_TILES, width // BROKEN_TILES, 3)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(tiles))
    while np.any(order == np.arange(len(tiles))):  # every tile leaves its place
        order = rng.permutation(len(tiles))
    shuffled = tiles[order].reshape(BROKEN_TILES, BROKEN_TILES, height // BROKEN_TILES, width // BROKEN_TILES, 3)
    broken = 255 - shuffled.swapaxes(1, 2).reshape(height, width, 3)  # inverted as well: unmistakable
    buffer = io.BytesIO()
    Image.fromarray(broken.astype(np.uint8)).save(buffer, "PNG")
    return check_stimulus("broken.png", buffer.getvalue())
