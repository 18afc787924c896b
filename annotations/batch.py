"""Batch import: a folder, a zip, a CSV/JSONL manifest, or one of our own exports.

A manifest row names an image (relative to the manifest) and its labels; the columns are listed
in ``COLUMNS`` and documented in the README. A folder or zip without a manifest imports every image
in it with the labels given by the caller. Every row is checked first (image readable and within
limits, labels valid, topology known, prediction and gold payloads of the right size); one bad row
rejects the whole batch with a list of every problem (``BatchRejected``), and nothing is written.

Given the server's models folder (``models_dir``, as the admin page and the CLI give it), a batch whose
human-contact tasks are on a body the server cannot show (its licensed file is not installed) is
refused too, naming the file, unless the admin forces it; rows without a topology then get the best
body installed (``engine.body.topology.best_installed_topology``).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
from sqlalchemy import select

from annotations import codec, models
from annotations.errors import BatchRejected, PayloadError, UnsafeArchiveError
from annotations.files import ArchiveLimits, CheckedImage, check_image, read_zip, resolve_inside
from annotations.store import Store, utcnow
from annotations.vocabulary import normalise_affordance, normalise_labels
from annotations.workflow import check_known_labels, check_point_values, encode_payload
from engine.body.topology import best_installed_topology, installed_topologies, missing_body_file, num_vertices
from engine.errors import InputError
from engine.paths import write_atomically

DEFAULT_TOPOLOGY = "smplh-6890"
MANIFEST_NAMES = ("tasks.jsonl", "tasks.csv")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
COLUMNS = ("image", "labels", "kind", "topology", "redundancy", "priority", "gold", "gold_answer", "prediction",
           "model_name", "model_version", "parameters", "object", "object_class", "source", "licence", "provenance",
           "original_name")
MAX_ROWS = 100_000
MAX_MANIFEST_BYTES = 64 * 2**20
MAX_OBJECT_POINTS = 100_000
MAX_REDUNDANCY = 50


@dataclass(frozen=True)
class BatchDefaults:
    """Values for columns a row leaves empty. ``labels`` is required for a folder or zip without manifest.

    ``topology`` None: the best body installed in the import's models folder (``DEFAULT_TOPOLOGY`` when the
    import is given none)."""

    labels: tuple[str, ...] = ()
    topology: str | None = None
    redundancy: int = 3
    priority: int = 0


@dataclass(frozen=True)
class BatchReport:
    batch_id: int
    name: str
    sha256: str
    num_tasks: int
    num_images: int
    new_images: int


@dataclass(frozen=True)
class PlannedObject:
    sha256: str
    class_name: str
    points: np.ndarray  # (N, 3) float32
    faces: np.ndarray | None  # (F, 3) int64


@dataclass(frozen=True)
class PlannedTask:
    """One checked row, ready to write. Layers are already encoded: label -> (encoding, bytes)."""

    image: CheckedImage
    original_name: str
    kind: str
    labels: tuple[str, ...]
    topology: str
    redundancy: int
    priority: int
    gold: bool
    gold_layers: Mapping[str, tuple[str, bytes]] | None
    prediction: Mapping | None  # model_name, model_version, parameters, layers
    object: PlannedObject | None
    source: str | None
    licence: str | None
    provenance: Mapping | None = field(default=None)


def import_batch(store: Store, source: Path | str, *, defaults: BatchDefaults = BatchDefaults(),
                 name: str | None = None, allow_repeat: bool = False, models_dir: Path | str | None = None,
                 force: bool = False) -> BatchReport:
    """Import a batch atomically; raises ``BatchRejected`` listing every bad row.

    ``models_dir``: the server's models folder; tasks on a body whose file is missing there are refused
    (every such topology named with its file) unless ``force``. None: no body check (library use)."""
    source = Path(source)
    if defaults.topology is None:
        topology = best_installed_topology(models_dir) if models_dir is not None else DEFAULT_TOPOLOGY
        defaults = replace(defaults, topology=topology)
    read_file, rows = open_source(source, defaults)
    if len(rows) > MAX_ROWS:
        raise BatchRejected([f"{len(rows)} rows; a batch holds at most {MAX_ROWS}"])
    plans, problems = [], []
    for line, row in rows:
        try:
            plans.append(plan_row(row, read_file, defaults, store.config))
        except InputError as error:
            problems.append(f"row {line}: {error}")
    if problems:
        raise BatchRejected(problems)
    if not plans:
        raise BatchRejected([f"{source.name}: no rows and no images found"])
    if models_dir is not None and not force:
        unshowable = unavailable_bodies(plans, models_dir)
        if unshowable:
            raise BatchRejected(unshowable)
    return commit(store, plans, name or source.name, allow_repeat)


def unavailable_bodies(plans: list[PlannedTask], models_dir: Path | str) -> list[str]:
    """One problem per topology whose body file is not installed: no annotator could paint those tasks."""
    rows: dict[str, list[int]] = {}
    for number, plan in enumerate(plans, 1):
        if plan.kind == "human_contact" and missing_body_file(plan.topology, models_dir) is not None:
            rows.setdefault(plan.topology, []).append(number)
    installed = ", ".join(installed_topologies(models_dir))
    return [f"{len(numbers)} task(s) (batch item {', '.join(map(str, numbers[:10]))}"
            f"{', ...' if len(numbers) > 10 else ''}) are on {topology}, whose body file "
            f"{missing_body_file(topology, models_dir)} is not installed in the models folder: no annotator could "
            f"paint them. Install that file, import them on an installed body ({installed}), or force the import."
            for topology, numbers in rows.items()]


def add_task(store: Store, image: bytes, image_name: str, *, labels, kind: str = "human_contact",
             topology: str = DEFAULT_TOPOLOGY, prediction: Mapping | None = None, model_name: str | None = None,
             model_version: str | None = None, object_points: np.ndarray | None = None,
             object_faces: np.ndarray | None = None, object_class: str | None = None, redundancy: int = 1,
             priority: int = 0, source: str | None = None, pool: str = "crowd",
             prediction_source: str | None = None) -> int:
    """One task made in the studio (a demo prediction to correct); checked exactly like a batch row.

    ``prediction``: label -> per-vertex (or per-point) values. ``pool``: "demo" keeps the task away from
    every crowd annotator (``next_task`` serves only "crowd") until an admin promotes it.
    ``prediction_source``: where the prediction came from (e.g. "studio demo"), kept in its parameters and
    exported with every submission it seeded. Returns the new task's id.
    """
    if pool not in models.POOLS:
        raise InputError(f"pool must be one of {models.POOLS}, got {pool!r}")
    files = {"image" + Path(image_name).suffix.lower(): image}
    row = {"image": next(iter(files)), "original_name": Path(image_name).name[:255] or None, "labels": list(labels),
           "kind": kind, "topology": topology,
           "redundancy": redundancy, "priority": priority, "source": source}
    if prediction is not None:
        row.update(prediction={label: np.asarray(values) for label, values in prediction.items()},
                   model_name=model_name, model_version=model_version,
                   parameters={"source": prediction_source} if prediction_source else {})
    if object_points is not None:
        buffer = io.BytesIO()
        np.savez(buffer, points=object_points, **({"faces": object_faces} if object_faces is not None else {}))
        files["object.npz"] = buffer.getvalue()
        row.update(object="object.npz", object_class=object_class or "object")
    plan = plan_row({key: value for key, value in row.items() if value is not None}, zip_reader(files),
                    BatchDefaults(), store.config)
    report = commit(store, [plan], f"studio: {Path(image_name).name}"[:255], allow_repeat=True, pool=pool)
    with store.session() as session:
        return session.scalar(select(models.TaskRow.id).where(models.TaskRow.batch_id == report.batch_id))


# ---- sources ------------------------------------------------------------------------------------
def open_source(source: Path, defaults: BatchDefaults) -> tuple[Callable[[str], bytes], list[tuple[int, dict]]]:
    """(file reader relative to the batch, [(line number, row dict)])."""
    if source.is_dir():
        from annotations.export import EXPORT_INFO, rows_from_export

        if (source / EXPORT_INFO).exists():
            return folder_reader(source), rows_from_export(source)
        names = [str(path.relative_to(source)) for path in sorted(source.rglob("*")) if path.is_file()]
        return folder_reader(source), rows_for(names, folder_reader(source), defaults)
    if not source.is_file():
        raise InputError(f"{source} does not exist; give a folder, a .zip, a .csv or a .jsonl")
    suffix = source.suffix.lower()
    if suffix == ".zip":
        if source.stat().st_size > ArchiveLimits().max_total_bytes:
            raise UnsafeArchiveError(f"{source.name} is larger than {ArchiveLimits().max_total_bytes // 2**20} MiB")
        members = read_zip(source)
        return zip_reader(members), rows_for(sorted(members), zip_reader(members), defaults)
    if suffix in (".csv", ".jsonl"):
        return folder_reader(source.parent), parse_manifest(source.name, read_limited(source))
    raise InputError(f"{source.name}: unsupported batch type; give a folder, a .zip, a .csv or a .jsonl")


def rows_for(names: list[str], read_file, defaults: BatchDefaults) -> list[tuple[int, dict]]:
    manifests = [name for name in names if name in MANIFEST_NAMES]
    if manifests:
        return parse_manifest(manifests[0], read_file(manifests[0]))
    if not defaults.labels:
        raise InputError("no tasks.csv or tasks.jsonl in the batch: give the object labels for its images")
    images = [name for name in names if Path(name).suffix.lower() in IMAGE_SUFFIXES]
    return [(number, {"image": name}) for number, name in enumerate(images, 1)]


def folder_reader(base: Path) -> Callable[[str], bytes]:
    def read(relative: str) -> bytes:
        path = resolve_inside(base, relative)
        if not path.is_file():
            raise InputError(f"{relative}: file not found in the batch")
        return read_limited(path)

    return read


def zip_reader(members: Mapping[str, bytes]) -> Callable[[str], bytes]:
    def read(relative: str) -> bytes:
        if relative not in members:
            raise InputError(f"{relative}: file not found in the zip")
        return members[relative]

    return read


def read_limited(path: Path, limit: int = MAX_MANIFEST_BYTES) -> bytes:
    if path.stat().st_size > limit:
        raise InputError(f"{path.name} is larger than {limit // 2**20} MiB")
    return path.read_bytes()


def parse_manifest(name: str, data: bytes) -> list[tuple[int, dict]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{name} is not UTF-8 text") from None
    if name.endswith(".jsonl"):
        return [(number, parse_json_line(number, line)) for number, line in enumerate(text.splitlines(), 1)
                if line.strip()]
    reader = csv.DictReader(io.StringIO(text))
    unknown = sorted(set(reader.fieldnames or ()) - set(COLUMNS))
    if "image" not in (reader.fieldnames or ()) or unknown:
        raise InputError(f"{name}: needs an 'image' column; unknown columns {unknown}; known: {', '.join(COLUMNS)}")
    return [(number, {key: value for key, value in row.items() if value not in (None, "")})
            for number, row in enumerate(reader, 2)]


def parse_json_line(number: int, line: str) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        return {"__error__": f"not valid JSON ({error.msg})"}
    if not isinstance(row, dict):
        return {"__error__": "each line must be a JSON object"}
    return row


# ---- rows -> checked plans ------------------------------------------------------------------------
def plan_row(row: dict, read_file, defaults: BatchDefaults, config) -> PlannedTask:
    if "__error__" in row:
        raise InputError(row["__error__"])
    unknown = sorted(set(row) - set(COLUMNS))
    if unknown:
        raise InputError(f"unknown field(s) {unknown}; known: {', '.join(COLUMNS)}")
    if not row.get("image"):
        raise InputError("the 'image' field is empty")
    image = check_image(read_file(str(row["image"])), str(row["image"]), config.image_limits)
    kind = row.get("kind", "human_contact")
    if kind == "human_contact":
        labels = normalise_labels(split_labels(row.get("labels", defaults.labels)), config.max_labels)
        obj, topology = None, str(row.get("topology", defaults.topology))
        count = num_vertices(topology)
    elif kind == "object_affordance":
        labels = (normalise_affordance(single(split_labels(row.get("labels", ())), "an affordance label")),)
        obj = load_object(row, read_file)
        count, topology = len(obj.points), f"points-{len(obj.points)}"
    else:
        raise InputError(f"kind must be human_contact or object_affordance, got {kind!r}")
    return PlannedTask(
        image=image, original_name=optional_text(row.get("original_name"), 255) or Path(str(row["image"])).name[:255],
        kind=kind, labels=labels, topology=topology,
        redundancy=bounded_int(row.get("redundancy", defaults.redundancy), "redundancy", 1, MAX_REDUNDANCY),
        priority=bounded_int(row.get("priority", defaults.priority), "priority", -10**6, 10**6),
        gold=parse_bool(row.get("gold", False)), object=obj,
        gold_layers=gold_layers(row.get("gold_answer"), read_file, kind, labels, topology),
        prediction=prediction(row, read_file, labels, count, topology),
        source=optional_text(row.get("source"), 500), licence=optional_text(row.get("licence"), 200),
        provenance=row.get("provenance") if isinstance(row.get("provenance"), dict) else None)


def split_labels(value) -> list:
    if isinstance(value, str):
        return [item for item in value.split("|") if item.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise InputError("labels must be a list or a '|'-separated string")


def single(items: list, what: str):
    if len(items) != 1:
        raise InputError(f"an object_affordance row needs exactly one label ({what}), got {len(items)}")
    return items[0]


def bounded_int(value, name: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be an integer, got {value!r}") from None
    if not low <= number <= high:
        raise InputError(f"{name} must be in {low}..{high}, got {number}")
    return number


def parse_bool(value) -> bool:
    text = str(value).strip().lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no", ""):
        return False
    raise InputError(f"gold must be true or false, got {value!r}")


def optional_text(value, limit: int) -> str | None:
    if value is None:
        return None
    text = str(value)
    if len(text) > limit or not text.isprintable():
        raise InputError(f"text field must be at most {limit} printable characters")
    return text


def load_arrays(data: bytes, name: str) -> dict[str, np.ndarray]:
    """Arrays of an npz, never unpickling anything."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError) as error:
        raise InputError(f"{name} is not a readable .npz without pickles ({error})") from None


def layer_source(value, read_file, what: str) -> Mapping:
    """A per-label mapping given inline (JSON object) or as an .npz path with one array per label."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.endswith(".npz"):
        return load_arrays(read_file(value), value)
    raise InputError(f"{what} must be an object {{label: values}} or the path of an .npz with one array per label")


def gold_layers(value, read_file, kind: str, labels: tuple[str, ...], topology: str):
    if value is None:
        return None
    return encode_payload(kind, topology, labels, layer_source(value, read_file, "gold_answer"), "gold_answer")


def prediction(row: dict, read_file, labels, count: int, topology: str) -> Mapping | None:
    value = row.get("prediction")
    if value is None:
        return None
    layers = layer_source(value, read_file, "prediction")
    check_known_labels(layers, labels, "prediction")
    parameters = row.get("parameters", {})
    parameters = json.loads(parameters) if isinstance(parameters, str) else parameters
    if not isinstance(parameters, dict) or len(json.dumps(parameters)) > 4096:
        raise InputError("parameters must be a JSON object of at most 4 KiB")
    return {"model_name": optional_text(row.get("model_name"), 200) or "unknown",
            "model_version": optional_text(row.get("model_version"), 100) or "unknown",
            "parameters": parameters, "topology": topology,
            "layers": {label: check_point_values(np.asarray(layers[label], dtype=np.float64).ravel(), count, label)
                       for label in labels if label in layers}}


def load_object(row: dict, read_file) -> PlannedObject:
    """An object as .npz (``points`` (N, 3), optional ``faces``) or a PIAD-style .txt point file."""
    path = row.get("object")
    if not path:
        raise InputError("an object_affordance row needs an 'object' file (.npz or PIAD .txt)")
    data = read_file(str(path))
    if str(path).endswith(".txt"):
        points, faces = piad_points(data, str(path)), None
    else:
        arrays = load_arrays(data, str(path))
        points, faces = arrays.get("points"), arrays.get("faces")
    points = check_points(points, str(path))
    if faces is not None:
        faces = np.asarray(faces)
        if faces.ndim != 2 or faces.shape[1] != 3 or faces.dtype.kind not in "iu" or faces.size == 0 \
                or faces.min() < 0 or faces.max() >= len(points):
            raise InputError(f"{path}: faces must be (F, 3) integers indexing the {len(points)} points")
        faces = faces.astype(np.int64)
    class_name = normalise_labels([row.get("object_class", "object")], 1)[0]
    digest = hashlib.sha256(points.tobytes() + (faces.tobytes() if faces is not None else b"")).hexdigest()
    return PlannedObject(sha256=digest, class_name=class_name, points=points, faces=faces)


def piad_points(data: bytes, name: str) -> np.ndarray:
    try:
        table = np.loadtxt(io.StringIO(data.decode("ascii")), dtype=str, ndmin=2)
        return table[:, 2:5].astype(np.float64)
    except (UnicodeDecodeError, ValueError, IndexError):
        raise InputError(f"{name}: not a PIAD point file (lines of 'id class x y z' + affordance values)") from None


def check_points(points, name: str) -> np.ndarray:
    array = np.asarray(points) if points is not None else np.empty((0, 3))
    if array.ndim != 2 or array.shape[1] != 3 or not 3 <= len(array) <= MAX_OBJECT_POINTS:
        raise InputError(f"{name}: points must be (N, 3) with 3 <= N <= {MAX_OBJECT_POINTS}, got {array.shape}")
    if array.dtype.kind not in "fiu" or not np.all(np.isfinite(array)):
        raise InputError(f"{name}: points must be finite numbers (no NaN or inf)")
    return array.astype(np.float32)


# ---- commit ----------------------------------------------------------------------------------------
def batch_digest(plans: list[PlannedTask]) -> str:
    digest = hashlib.sha256()
    for plan in plans:
        digest.update(json.dumps([plan.image.sha256, plan.kind, plan.labels, plan.topology, plan.gold,
                                  plan.object.sha256 if plan.object else None]).encode())
    return digest.hexdigest()


def commit(store: Store, plans: list[PlannedTask], name: str, allow_repeat: bool, pool: str = "crowd") -> BatchReport:
    sha = batch_digest(plans)
    written = write_new_files(store, plans)
    try:
        with store.session(write=True) as session:
            earlier = session.scalar(select(models.BatchRow.id).where(models.BatchRow.sha256 == sha))
            if earlier is not None and not allow_repeat:
                raise BatchRejected([f"this batch was already imported as batch {earlier}"])
            return insert_plans(session, plans, name[:255], sha, pool)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise


def image_relative_path(image: CheckedImage) -> str:
    return f"images/{image.sha256[:2]}/{image.sha256}{image.suffix}"


def object_relative_path(obj: PlannedObject) -> str:
    return f"objects/{obj.sha256[:2]}/{obj.sha256}.npz"


def write_new_files(store: Store, plans: list[PlannedTask]) -> list[Path]:
    """Write images and objects that are not stored yet (content-addressed); returns the new paths."""
    written = []
    for plan in plans:
        targets = [(image_relative_path(plan.image), lambda handle, p=plan: handle.write(p.image.data))]
        if plan.object is not None:
            targets.append((object_relative_path(plan.object), lambda handle, o=plan.object: np.savez(
                handle, points=o.points, **({"faces": o.faces} if o.faces is not None else {}))))
        for relative, save in targets:
            path = store.data_dir / relative
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                write_atomically(path, save)
                written.append(path)
    return written


def insert_plans(session, plans: list[PlannedTask], name: str, sha: str, pool: str = "crowd") -> BatchReport:
    now = utcnow()
    batch = models.BatchRow(name=name, sha256=sha, num_tasks=len(plans), created_at=now)
    session.add(batch)
    session.flush()
    images, new_images = {}, 0
    for plan in plans:
        if plan.image.sha256 not in images:
            images[plan.image.sha256], created = get_or_add_image(session, plan, now)
            new_images += created
        task = models.TaskRow(
            image_id=images[plan.image.sha256], batch_id=batch.id, kind=plan.kind, topology=plan.topology,
            labels=list(plan.labels), object_id=get_or_add_object(session, plan.object, now),
            prediction_id=add_prediction(session, plan.prediction, now), redundancy=plan.redundancy,
            priority=plan.priority, is_gold=plan.gold, filled=0, provenance=plan.provenance, created_at=now, pool=pool)
        session.add(task)
        session.flush()
        session.add_all(models.GoldLayerRow(task_id=task.id, label=label, encoding=encoding, data=data)
                        for label, (encoding, data) in (plan.gold_layers or {}).items())
    return BatchReport(batch_id=batch.id, name=name, sha256=sha, num_tasks=len(plans), num_images=len(images),
                       new_images=new_images)


def get_or_add_image(session, plan: PlannedTask, now) -> tuple[int, bool]:
    found = session.scalar(select(models.ImageRow.id).where(models.ImageRow.sha256 == plan.image.sha256))
    if found is not None:
        return found, False
    row = models.ImageRow(sha256=plan.image.sha256, path=image_relative_path(plan.image), format=plan.image.format,
                          width=plan.image.width, height=plan.image.height, num_bytes=len(plan.image.data),
                          original_name=plan.original_name, source=plan.source, licence=plan.licence,
                          created_at=now)
    session.add(row)
    session.flush()
    return row.id, True


def get_or_add_object(session, obj: PlannedObject | None, now) -> int | None:
    if obj is None:
        return None
    found = session.scalar(select(models.ObjectRow.id).where(models.ObjectRow.sha256 == obj.sha256))
    if found is not None:
        return found
    row = models.ObjectRow(sha256=obj.sha256, class_name=obj.class_name, kind="mesh" if obj.faces is not None
                           else "points", num_points=len(obj.points), path=object_relative_path(obj), created_at=now)
    session.add(row)
    session.flush()
    return row.id


def add_prediction(session, prediction: Mapping | None, now) -> int | None:
    if prediction is None:
        return None
    row = models.PredictionRow(model_name=prediction["model_name"], model_version=prediction["model_version"],
                               parameters=prediction["parameters"], topology=prediction["topology"], created_at=now)
    session.add(row)
    session.flush()
    session.add_all(models.PredictionLayerRow(prediction_id=row.id, label=label, encoding="values",
                                              data=codec.encode_values(values))
                    for label, values in prediction["layers"].items())
    return row.id
