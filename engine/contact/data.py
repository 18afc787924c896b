"""Training and evaluation data for InteractVLM (REFERENCE.md section 3, "Datasets and formats").

Torch-free: numpy and PIL only, so data checks run without a model.

Human contact (``read_damon_npz``) reads two npz layouts:
- DAMON's ``hot_dca_{trainval,test}.npz``: ``imgname`` (N,), ``contact_label`` (N, 6890) and the
  optional ``contact_label_smplx`` (N, 10475).
- The studio's export ``contact_<topology>.npz`` (``annotations/export.py``): the same keys plus
  ``topology`` () and ``contact_label_objectwise_json`` (N,) UTF-8 JSON bytes ``{label: [vertex ids]}``.
Files are opened with ``allow_pickle=False``: loading a pickle runs code, and a training file is as
untrusted as any download. DAMON's per-object labels live in the pickled dict
``contact_label_objectwise`` and are therefore never read; semantic (per-object) samples come only from
the JSON key. To train semantically on DAMON, convert its dict once, in a script you trust, into
``contact_label_objectwise_json`` (``json.dumps(row).encode()`` per image, stored as a bytes array).

Object affordance (``read_affordance_manifest``) reads a JSONL manifest of (image, PIAD point file,
affordance) triples, either our plain layout or the studio's export ``manifest.jsonl``;
``read_piad_points`` parses PIAD's ``id class x y z`` + 17 (or LEMON's 21) value lines.

Every path a file names must stay inside its folder (``..`` and absolute paths are refused), and
every problem raises ``InputError`` naming the file, the line or row, and what is accepted.
``load_image_rgb`` is also the inference API's image reader.
"""
from __future__ import annotations

import io
import json
import struct
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Sequence, TypeVar

import numpy as np
from PIL import Image, ImageOps

from engine.body.topology import check_vertex_ids, num_vertices
from engine.contact.vocabulary import AFFORDANCES, PIAD_AFFORDANCES
from engine.errors import InputError

DAMON_TOPOLOGY = "smplh-6890"
SMPLX_TOPOLOGY = "smplx-10475"
OBJECTWISE_JSON = "contact_label_objectwise_json"
MANIFEST_NAME = "manifest.jsonl"
MAX_PIAD_BYTES = 32 * 2**20
MAX_PIAD_LINES = 100_000
MAX_MANIFEST_BYTES = 64 * 2**20
MAX_IMAGE_PIXELS = 40_000_000
SHOWN_MISSING = 5
MAX_NUMBER_CHARS = 64  # a PIAD number is ~10 characters; longer tokens are garbage, not precision
# PIL raises any of these for a corrupt or truncated file, depending on the format plugin.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error)
# Only these PIL parsers ever see a file: others (EPS runs Ghostscript, ...) are attack surface we do not need.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")


# ---- human contact --------------------------------------------------------------------------------
@dataclass(frozen=True)
class HumanContactSample:
    """One image's contact with one object (or with anything).

    image_path: resolved image file. object_label: the object, or None for binary contact with anything.
    contact: (V,) uint8 in {0, 1}, read-only, on ``topology``. image_name: the ``imgname`` entry as stored.
    """

    image_path: Path
    object_label: str | None
    contact: np.ndarray
    topology: str
    image_name: str


def read_damon_npz(path: Path | str, *, image_root: Path | str | None = None, topology: str | None = None,
                   semantic: bool = False) -> tuple[HumanContactSample, ...]:
    """Samples from a DAMON or studio-export contact npz (module docstring).

    Topology: the npz's ``topology`` key; else the ``topology`` argument; else ``smplh-6890`` when the
    labels have 6890 columns (DAMON). Asking for ``smplx-10475`` on a DAMON file reads its
    ``contact_label_smplx``. ``semantic=False``: one binary sample per image; ``semantic=True``: one
    sample per (image, object label) from ``contact_label_objectwise_json``. Image names resolve against
    ``image_root`` (default: the npz's folder) and must stay inside it; every image must exist.
    """
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    with _open_npz(path) as data:
        names = _image_names(data, path)
        key, topology = _label_key_and_topology(data, path, topology, semantic)
        labels = _binary_labels(_array(data, key, path), len(names), num_vertices(topology), f"{path} key {key!r}")
        objectwise = _objectwise(data, path, len(names)) if semantic else None
    images = resolve_images(root, names, what=str(path))
    if objectwise is None:
        return tuple(HumanContactSample(image, None, labels[i], topology, names[i]) for i, image in enumerate(images))
    return tuple(sample for i, image in enumerate(images)
                 for sample in semantic_samples(image, names[i], objectwise[i], topology, f"{path} row {i}"))


def _open_npz(path: Path):
    if not path.is_file():
        raise InputError(f"contact file {path} not found; expected a DAMON hot_dca_*.npz or an export contact_*.npz")
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise InputError(f"could not read {path} as an npz archive ({error}); expected a DAMON-style .npz") from error
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise InputError(f"{path} holds a single array; expected an .npz archive with imgname and contact_label")
    return data


def _array(data, key: str, path: Path) -> np.ndarray:
    if key not in data.files:
        raise InputError(f"{path} lacks the key {key!r}; found {sorted(data.files)}")
    try:
        return data[key]
    except ValueError as error:  # object arrays: numpy refuses to unpickle them with allow_pickle=False
        raise InputError(f"{path}: key {key!r} holds pickled Python objects, which are never loaded (they can run "
                         "code); store numbers, str or bytes arrays instead") from error
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise InputError(f"{path}: key {key!r} is corrupt ({error})") from error


def _image_names(data, path: Path) -> list[str]:
    names = _array(data, "imgname", path)
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise InputError(f"{path}: imgname must be a 1-D array of strings, got {names.dtype} {names.shape}")
    return [name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name) for name in names.tolist()]


def _label_key_and_topology(data, path: Path, requested: str | None, semantic: bool) -> tuple[str, str]:
    """Which label key to read and its topology (``read_damon_npz`` gives the order)."""
    stored = str(_array(data, "topology", path)[()]) if "topology" in data.files else None
    if stored is not None and requested is not None and stored != requested:
        raise InputError(f"{path} holds topology {stored}, not the requested {requested}; "
                         "topologies convert only through an explicit map")
    if stored is None and requested == SMPLX_TOPOLOGY and "contact_label_smplx" in data.files:
        if semantic:
            raise InputError(f"{path}: semantic labels are stored on the file's own topology, not {SMPLX_TOPOLOGY}; "
                             "read them without topology= and convert explicitly")
        return "contact_label_smplx", SMPLX_TOPOLOGY
    topology = stored or requested
    if topology is None:
        columns = _array(data, "contact_label", path).shape[-1]
        if columns != num_vertices(DAMON_TOPOLOGY):
            raise InputError(f"{path} has no topology key and {columns} label columns; pass topology= "
                             f"(DAMON files have {num_vertices(DAMON_TOPOLOGY)} columns, {DAMON_TOPOLOGY})")
        topology = DAMON_TOPOLOGY
    num_vertices(topology)  # unknown ids raise here, with the known ones listed
    return "contact_label", topology


def _binary_labels(labels: np.ndarray, rows: int, vertices: int, what: str) -> np.ndarray:
    """(N, V) read-only uint8; each sample's contact is a row view of it."""
    if labels.shape != (rows, vertices):
        raise InputError(f"{what} must have shape ({rows}, {vertices}) (one row per imgname, one column per "
                         f"vertex), got {labels.shape}")
    if labels.dtype.kind not in "biuf":
        raise InputError(f"{what} must be numeric 0/1, got dtype {labels.dtype}")
    bad = ~((labels == 0) | (labels == 1))  # NaN fails both comparisons
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise InputError(f"{what} must hold only 0 or 1; row {row}, vertex {column} is {labels[row, column].item()!r}")
    labels = labels.astype(np.uint8)
    labels.setflags(write=False)
    return labels


def _objectwise(data, path: Path, rows: int) -> list[dict]:
    if OBJECTWISE_JSON not in data.files:
        raise InputError(f"{path} has no {OBJECTWISE_JSON!r} key, so semantic=True has no labels to read. DAMON's "
                         "pickled 'contact_label_objectwise' is never loaded; convert it to JSON bytes first "
                         "(engine.contact.data module docstring), or use semantic=False")
    column = _array(data, OBJECTWISE_JSON, path)
    if column.shape != (rows,) or column.dtype.kind not in "SU":
        raise InputError(f"{path}: {OBJECTWISE_JSON} must be ({rows},) JSON bytes, got {column.dtype} {column.shape}")
    return [_parse_objectwise(item, f"{path} row {i}") for i, item in enumerate(column.tolist())]


def _parse_objectwise(item, what: str) -> dict:
    try:
        parsed = json.loads(item)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{what}: {OBJECTWISE_JSON} is not UTF-8 JSON ({error})") from error
    if not isinstance(parsed, dict) or not all(isinstance(k, str) and isinstance(v, list) for k, v in parsed.items()):
        raise InputError(f"{what}: {OBJECTWISE_JSON} must be a JSON object {{label: [vertex ids]}}")
    return parsed


def semantic_samples(image: Path, name: str, objectwise: dict, topology: str, what: str) -> list[HumanContactSample]:
    """One sample per object label of one image; ids are checked against the topology."""
    samples = []
    for label, ids in objectwise.items():
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise InputError(f"{what}, label {label!r}: vertex ids must be JSON integers")
        contact = np.zeros(num_vertices(topology), dtype=np.uint8)
        contact[check_vertex_ids(np.asarray(ids, dtype=np.int64), topology, name=f"{what}, label {label!r}")] = 1
        contact.setflags(write=False)
        samples.append(HumanContactSample(image, label, contact, topology, name))
    return samples


# ---- paths inside a folder ------------------------------------------------------------------------
def resolve_inside(root: Path, name: str, *, what: str) -> Path:
    """``root / name`` resolved, refusing absolute names and anything that leaves ``root`` (``..``, symlinks)."""
    text = str(name).replace("\\", "/")  # a Windows-style separator must not hide a '..'
    if not text or "\x00" in text or PurePosixPath(text).is_absolute() or (len(text) > 1 and text[1] == ":"):
        raise InputError(f"{what}: path {str(name)[:200]!r} is not accepted; use a relative path inside {root}")
    base = root.resolve()
    resolved = (base / text).resolve()
    if not resolved.is_relative_to(base):
        raise InputError(f"{what}: path {str(name)[:200]!r} leaves the folder {root}; "
                         "only paths inside it are accepted")
    return resolved


def resolve_images(root: Path, names: Sequence[str], *, what: str) -> list[Path]:
    """Resolved image paths; every one must exist (the first few missing ones are named)."""
    paths = [resolve_inside(root, name, what=what) for name in names]
    missing = [name for name, path in zip(names, paths) if not path.is_file()]
    if missing:
        shown = ", ".join(repr(name) for name in missing[:SHOWN_MISSING])
        more = f" and {len(missing) - SHOWN_MISSING} more" if len(missing) > SHOWN_MISSING else ""
        raise InputError(f"{what}: {len(missing)} image(s) not found under {root}: {shown}{more}")
    return paths


# ---- object affordance ----------------------------------------------------------------------------
@dataclass(frozen=True)
class PiadPoints:
    """A PIAD point file. points: (P, 3) float32; values: (P, K) float32 in [0, 1], with K = 17 (PIAD's
    affordance columns) or 21 (LEMON's, the 17 plus pull, ride, play, carry); object_class as written."""

    points: np.ndarray
    values: np.ndarray
    object_class: str

    @property
    def affordances(self) -> tuple[str, ...]:
        return PIAD_AFFORDANCES if self.values.shape[1] == len(PIAD_AFFORDANCES) else AFFORDANCES

    def column(self, affordance: str) -> np.ndarray:
        """(P,) float32 values of one affordance."""
        if affordance not in self.affordances:
            raise InputError(f"affordance {affordance!r} is not a column of this {self.values.shape[1]}-column file; "
                             f"its columns: {', '.join(self.affordances)}")
        return self.values[:, self.affordances.index(affordance)]


@dataclass(frozen=True)
class AffordanceSample:
    """One (image, object, affordance). points: (P, 3) float32; values: (P,) float32 in [0, 1], the
    soft ground truth of ``affordance`` per point (both read-only). image_name: the image as the
    manifest names it (``split`` groups by it), None for samples built by hand."""

    image_path: Path
    points: np.ndarray
    affordance: str
    values: np.ndarray
    object_class: str
    image_name: str | None = None


@dataclass(frozen=True)
class _ManifestEntry:
    number: int
    image: str
    points: str
    affordance: str
    object_class: str | None
    from_export: bool  # the export writes class names with '_' for ' '


def read_piad_points(path: Path | str) -> PiadPoints:
    """Parse a PIAD/LEMON point file: lines ``id class x y z`` + 17 or 21 values in [0, 1].

    ``id`` is not interpreted (the line order is the point order). Blank lines are skipped. At most
    ``MAX_PIAD_LINES`` lines and ``MAX_PIAD_BYTES`` bytes; every line has the same width and class.
    """
    path = Path(path)
    rows = _piad_rows(path)
    widths = {5 + len(PIAD_AFFORDANCES), 5 + len(AFFORDANCES)}
    width = len(rows[0][1])
    for number, tokens in rows:
        if len(tokens) != width or width not in widths:
            raise InputError(f"{path} line {number}: {len(tokens)} columns; expected 'id class x y z' + 17 "
                             f"(PIAD) or 21 (LEMON) values, the same on every line (line {rows[0][0]} has {width})")
        if tokens[1] != rows[0][1][1]:
            raise InputError(f"{path} line {number}: class {tokens[1]!r} differs from {rows[0][1][1]!r}; "
                             "a point file holds one object")
    numbers = _piad_numbers(path, rows)
    points, values = numbers[:, :3].astype(np.float32), numbers[:, 3:].astype(np.float32)
    points.setflags(write=False)
    values.setflags(write=False)
    return PiadPoints(points=points, values=values, object_class=rows[0][1][1])


def _piad_rows(path: Path) -> list[tuple[int, list[str]]]:
    if not path.is_file():
        raise InputError(f"point file {path} not found")
    if path.stat().st_size > MAX_PIAD_BYTES:
        raise InputError(f"{path} is {path.stat().st_size} bytes; point files may be at most {MAX_PIAD_BYTES}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"{path} is not UTF-8 text ({error}); "
                         "expected PIAD lines 'id class x y z' + values") from error
    lines = text.splitlines()
    if len(lines) > MAX_PIAD_LINES:
        raise InputError(f"{path} has {len(lines)} lines; point files may have at most {MAX_PIAD_LINES}")
    rows = [(number, line.split()) for number, line in enumerate(lines, 1) if line.strip()]
    if not rows:
        raise InputError(f"{path} has no points; expected PIAD lines 'id class x y z' + values")
    return rows


def _piad_numbers(path: Path, rows: list[tuple[int, list[str]]]) -> np.ndarray:
    """(P, 3 + K) float64 of xyz and values, with the line number of the first bad entry on error."""
    numbers = np.empty((len(rows), len(rows[0][1]) - 2))
    for index, (number, tokens) in enumerate(rows):
        numbers[index] = [_piad_number(token, path, number) for token in tokens[2:]]
    index = _first_row(~np.isfinite(numbers).all(axis=1))
    if index is not None:
        raise InputError(f"{path} line {rows[index][0]}: coordinates and values must be finite numbers")
    index = _first_row(((numbers[:, 3:] < 0) | (numbers[:, 3:] > 1)).any(axis=1))
    if index is not None:
        bad = numbers[index, 3:][(numbers[index, 3:] < 0) | (numbers[index, 3:] > 1)][0]
        raise InputError(f"{path} line {rows[index][0]}: affordance value {bad:g} is outside [0, 1]")
    return numbers


def _piad_number(token: str, path: Path, number: int) -> float:
    try:
        value = float(token) if len(token) <= MAX_NUMBER_CHARS else None
    except ValueError:
        value = None
    if value is None:
        raise InputError(f"{path} line {number}: {token[:40]!r} is not a number")
    return value


def _first_row(bad: np.ndarray) -> int | None:
    return int(np.argmax(bad)) if bad.any() else None


def read_affordance_manifest(path: Path | str) -> tuple[AffordanceSample, ...]:
    """Affordance samples from a JSONL manifest (or an export folder holding ``manifest.jsonl``).

    Accepted lines, paths relative to the manifest's folder:
    - plain: ``{"image": ..., "points": ..., "affordance": ...}`` (optional ``"object_class"``);
    - the studio export: ``{"kind": "object_affordance", "imgname": ..., "points": ..., "labels": [affordance]}``;
      its ``human_contact`` lines are skipped (their labels are in the contact npz).
    The affordance picks the column by name: PIAD's 17 in a 17-value file, LEMON's 21 in a 21-value one.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    entries = [entry for entry in _manifest_entries(path) if entry is not None]
    images = resolve_images(path.parent, [entry.image for entry in entries], what=str(path))
    cache: dict[Path, PiadPoints] = {}  # several affordances of one object share its point file
    samples = []
    for entry, image in zip(entries, images):
        where = f"{path} line {entry.number}"
        points_path = resolve_inside(path.parent, entry.points, what=where)
        if points_path not in cache:
            cache[points_path] = read_piad_points(points_path)
        table = cache[points_path]
        object_class = entry.object_class or (table.object_class.replace("_", " ") if entry.from_export
                                              else table.object_class)
        samples.append(AffordanceSample(image, table.points, entry.affordance, _column(table, entry.affordance, where),
                                        object_class, entry.image))
    return tuple(samples)


def _manifest_entries(path: Path) -> list[_ManifestEntry | None]:
    """One entry per non-blank line; None for lines that are not affordance tasks."""
    if not path.is_file():
        raise InputError(f"manifest {path} not found; expected a JSONL file or an export folder with {MANIFEST_NAME}")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise InputError(f"{path} is {path.stat().st_size} bytes; manifests may be at most {MAX_MANIFEST_BYTES}")
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise InputError(f"{path} is not UTF-8 text ({error})") from error
    return [_manifest_entry(number, line, str(path)) for number, line in enumerate(lines, 1) if line.strip()]


def _manifest_entry(number: int, line: str, what: str) -> _ManifestEntry | None:
    where = f"{what} line {number}"
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as error:
        raise InputError(f"{where} is not JSON ({error})") from error
    if not isinstance(entry, dict):
        raise InputError(f"{where} must be a JSON object")
    from_export = "kind" in entry
    if from_export:
        if entry["kind"] != "object_affordance":
            return None
        labels = entry.get("labels")
        affordance = labels[0] if isinstance(labels, list) and len(labels) == 1 else None
        image, points, object_class = entry.get("imgname"), entry.get("points"), None
    else:
        image, points, affordance = entry.get("image"), entry.get("points"), entry.get("affordance")
        object_class = entry.get("object_class")
    if not all(isinstance(value, str) and value for value in (image, points, affordance)):
        raise InputError(f"{where} needs string fields image, points and affordance "
                         "(or the export's imgname, points and a one-item labels list)")
    if affordance not in AFFORDANCES:
        raise InputError(f"{where}: unknown affordance {affordance!r}; known: {', '.join(AFFORDANCES)}")
    return _ManifestEntry(number, image, points, affordance, object_class if isinstance(object_class, str) else None,
                          from_export)


def _column(table: PiadPoints, affordance: str, where: str) -> np.ndarray:
    try:
        return table.column(affordance)
    except InputError as error:
        raise InputError(f"{where}: {error}") from error


# ---- images ---------------------------------------------------------------------------------------
def load_image_rgb(source, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a path, encoded bytes, a PIL image or a numpy array.

    Files and bytes (JPEG, PNG, WEBP or BMP): the size is read from the header and checked against
    ``max_pixels`` before any pixel is decoded. Then, as for PIL images: the EXIF orientation is applied,
    transparency is composited on white, and grayscale, palette, CMYK and 16-bit images become RGB.
    Arrays: (H, W), (H, W, 3) or (H, W, 4), uint8, or float in [0, 1] (scaled by 255 and rounded; NaN
    and out-of-range values are refused). The result never aliases the input.
    """
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, max_pixels)
    if isinstance(source, Image.Image):
        with _decode_errors("image", max_pixels):  # a lazily opened PIL image decodes here
            return _from_pil(source, "image", max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode(io.BytesIO(bytes(source)), "image bytes", max_pixels)
    if isinstance(source, (str, Path)):
        if not Path(source).is_file():
            raise InputError(f"image {source} not found")
        with open(source, "rb") as handle:
            return _decode(handle, str(source), max_pixels)
    raise InputError(f"unsupported image input {type(source).__name__}; "
                     "accepted: a path, encoded bytes, a PIL image or a uint8/float numpy array")


def _decode(stream, name: str, max_pixels: int) -> np.ndarray:
    with _decode_errors(name, max_pixels), Image.open(stream, formats=IMAGE_FORMATS) as image:
        return _from_pil(image, name, max_pixels)  # Image.open is lazy: only the header was read


def _from_pil(image: Image.Image, name: str, max_pixels: int) -> np.ndarray:
    _check_pixels(image.size, max_pixels, name)
    image.load()
    return _pil_to_rgb(ImageOps.exif_transpose(image))


@contextmanager
def _decode_errors(name: str, max_pixels: int):
    """PIL's errors for a bad or oversized file, as ``InputError``."""
    try:
        yield
    except InputError:
        raise
    except Image.DecompressionBombError as error:  # PIL's own, far higher, limit fired first
        raise InputError(f"{name} has too many pixels ({error}); at most {max_pixels} are accepted") from error
    except _DECODE_ERRORS as error:
        raise InputError(f"could not decode image {name} ({type(error).__name__}: {error}); "
                         f"accepted: {', '.join(IMAGE_FORMATS)}") from error


def _check_pixels(size: tuple[int, int], max_pixels: int, name: str) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise InputError(f"{name} is empty ({width}x{height})")
    if width * height > max_pixels:
        raise InputError(f"{name} is {width}x{height} = {width * height} pixels; at most {max_pixels} are accepted")


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode.startswith("I;16"):  # 16-bit grayscale: keep the top 8 bits rather than clip at 255
        gray = (np.asarray(image, dtype=np.uint32) >> 8).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    has_alpha = image.mode in ("RGBA", "LA", "La", "RGBa", "PA") or "transparency" in image.info
    if has_alpha:
        return composite_on_white(np.asarray(image.convert("RGBA")))
    return np.array(image.convert("RGB"), dtype=np.uint8)


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 -> (H, W, 3) uint8: ``round((c a + 255 (255 - a)) / 255)``."""
    colour = rgba[..., :3].astype(np.uint32)
    alpha = rgba[..., 3:].astype(np.uint32)
    return ((colour * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def _array_to_rgb(array: np.ndarray, max_pixels: int) -> np.ndarray:
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise InputError(f"image array must be (H, W), (H, W, 3) or (H, W, 4), got {array.shape}")
    _check_pixels((array.shape[1], array.shape[0]), max_pixels, "image array")
    array = _as_uint8(array)
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=2)
    return composite_on_white(array) if array.shape[2] == 4 else array.copy()  # never alias the caller's array


def _as_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind != "f":
        raise InputError(f"image array must be uint8 or float in [0, 1], got {array.dtype}")
    if np.isnan(array).any():
        raise InputError("image array contains NaN; accepted: finite floats in [0, 1]")
    if array.min() < 0 or array.max() > 1:
        raise InputError(f"float image array must lie in [0, 1], got [{array.min():g}, {array.max():g}]")
    return np.rint(array.astype(np.float64) * 255).astype(np.uint8)


# ---- splits ---------------------------------------------------------------------------------------
Sample = TypeVar("Sample", HumanContactSample, AffordanceSample)


def image_key(sample) -> str:
    """The image a sample belongs to: its ``image_name`` (relative, so the split survives moving the
    dataset), else its path."""
    name = getattr(sample, "image_name", None)
    return name if name is not None else Path(sample.image_path).as_posix()


def split(samples: Sequence[Sample], val_fraction: float,
          seed: int = 0) -> tuple[tuple[Sample, ...], tuple[Sample, ...]]:
    """(train, val), split by image so that one image's samples (several objects or affordances) never
    land on both sides.

    The distinct image keys are sorted, shuffled by ``numpy.random.default_rng(seed)``, and the first
    ``round(val_fraction x images)`` go to validation. The result depends only on the set of images, the
    fraction and the seed, not on the input order; both outputs keep the input order.
    """
    if not 0 <= val_fraction <= 1:
        raise InputError(f"val_fraction must be in [0, 1], got {val_fraction}")
    keys = sorted({image_key(sample) for sample in samples})
    order = np.random.default_rng(seed).permutation(len(keys))
    val_keys = {keys[i] for i in order[:round(val_fraction * len(keys))]}
    train = tuple(sample for sample in samples if image_key(sample) not in val_keys)
    val = tuple(sample for sample in samples if image_key(sample) in val_keys)
    return train, val
