"""Export for training: DAMON-style npz per body topology, PIAD-style point files, a JSONL manifest.

Layout of an export folder (every byte is a function of the database: same store, same files):
- ``contact_<topology>.npz`` (human contact), rows in task order:
  - ``imgname`` (N,) str: ``images/<sha256><suffix>`` inside the export.
  - ``contact_label`` (N, V) uint8: contact with anything (union of every label).
  - ``contact_label_smplx`` (N, 10475) uint8: only for SMPL/SMPL-H with the topology map available.
  - ``contact_label_objectwise_json`` (N,) bytes: UTF-8 JSON ``{label: [vertex ids]}``, ``supporting``
    included (bytes, not str: numpy stores str as 4 bytes per character, padded to the longest row).
  - ``contact_label_objectwise`` (N,) object: the same as dicts, as DAMON stores it (needs
    ``allow_pickle=True``; every other key loads with plain ``np.load``).
  - ``topology`` () str. Whether labels are the crowd's consensus or gold answers is in ``export.json``.
- ``affordance/<image>_<object>_<affordance>.txt``: PIAD lines ``id class x y z`` + 17 affordance
  values (21 when the affordance is one of LEMON's extras). ``id`` is the line's point index.
- ``images/``: the images named in the npz and manifest.
- ``manifest.jsonl``: one line per task: the image (``imgname``, ``original_name``: its file name when it was
  imported or uploaded, ``source``, ``licence``) and provenance (annotators, agreement, and the prediction
  that seeded the painting: model name, version and source, also per submission).
- ``export.json``: format, filters, counts, the sha256 of every file and the export's content hash.

``export_interactvlm`` (``python -m annotations export OUT --format interactvlm``) writes instead the folder the
InteractVLM release's DAMON human-contact loader reads (its ``datasets/hcontact_3d.py``), so that labs
fine-tune with the release's own training code:

- ``damon/<split>/imgname.npy``: (N,) str, ``images/<name>`` per image (the loader keeps the base name);
- ``damon/<split>/images/<name>``: the images, named ``<sha256>.jpg|.png`` (the loader strips 4
  characters to get the base name, so other formats are re-encoded as PNG);
- ``damon/<split>/contact_label_objectwise.pkl``: a pickle (``joblib.load`` reads it) holding a list with
  one ``{object: [vertex ids]}`` per image; the same list as an object array in ``contact_label_objectwise.npy``
  (the release's first code drop reads that name);
- ``damon/<split>/body_parts_objectwise.pkl``: a dict ``{"<image base>_<object>": [part names]}``, a part
  being named when at least 10% of its vertices are in contact (underscores read as spaces);
- ``damon/<split>/hcontact_vitruvian/<object>/<image base>_<view>.png``: the per-object, per-view ground
  truth masks (0/255), made with ``engine.rll.project`` (a face needs 3 contact vertices) on the canonical
  body renders at the release's mask size (1024) and view names (topfront, bottomfront, topback,
  bottomback).

Object names are written as DAMON keys: lower case, spaces as ``_``. Only SMPL/SMPL-H (6890-vertex) human
contact tasks can go there (the release's loader is fixed to 6890 vertices); the masks need the SMPL-H body
file in the models dir. Point the release's data root at ``OUT``.

Importing an export folder (``import_batch``) creates gold tasks whose reference answers are the
exported labels, with the manifest line kept as provenance; exporting those with
``source="gold"`` gives back byte-identical npz and point files.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import pickle
import shutil
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from sqlalchemy import select

from annotations import models, qc
from annotations.errors import UnsafeArchiveError
from annotations.review import (TaskAnnotations, aggregate, annotator_weights, gold_answers,
                                load_task_annotations, quality_report)
from annotations.store import Store, utcnow
from annotations.vocabulary import AFFORDANCES, PIAD_AFFORDANCES
from engine.errors import InputError

FORMAT = "interaction-studio-export/1"
INTERACTVLM_FORMAT = "interactvlm-damon-hcontact/1"
FORMATS = ("studio", "interactvlm")
INTERACTVLM_MASK_FOLDER = "hcontact_vitruvian"  # HUMAN_VIEW_DICT['4MV-Z_Vitru']['folder']
INTERACTVLM_MASK_SIZE = 1024
SIX_THOUSAND_EIGHT_NINETY = ("smpl-6890", "smplh-6890")
EXPORT_INFO = "export.json"
MANIFEST = "manifest.jsonl"
SMPLX = "smplx-10475"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class ExportFilters:
    """Which tasks and labels go out.

    source: "consensus" aggregates the crowd's submissions (gold tasks excluded); "gold" exports the
        reference answers of gold tasks.
    min_agreement: drop tasks whose agreement (``agreement_metric``: "kappa" or "iou") is lower, or
        undefined (a single annotator).
    exclude_flagged: drop tasks anyone flagged. only_qualified: use only qualified annotators.
    min_annotators: drop tasks with fewer submissions. weighted: weight votes by gold accuracy.
    """

    source: str = "consensus"
    min_agreement: float | None = None
    agreement_metric: str = "kappa"
    exclude_flagged: bool = True
    only_qualified: bool = False
    min_annotators: int = 1
    weighted: bool = False

    def __post_init__(self):
        if self.source not in ("consensus", "gold"):
            raise InputError(f"source must be 'consensus' or 'gold', got {self.source!r}")
        if self.agreement_metric not in ("kappa", "iou"):
            raise InputError(f"agreement_metric must be 'kappa' or 'iou', got {self.agreement_metric!r}")
        if self.min_agreement is not None and not -1 <= self.min_agreement <= 1:
            raise InputError(f"min_agreement must be in [-1, 1], got {self.min_agreement}")
        if self.min_annotators < 1:
            raise InputError(f"min_annotators must be at least 1, got {self.min_annotators}")


@dataclass(frozen=True)
class ExportedTask:
    """One task's exported label. ``labels``: (L, V) bool or (L, N) float32."""

    task: models.TaskRow
    image: models.ImageRow
    labels: np.ndarray
    provenance: dict


@dataclass(frozen=True)
class ExportManifest:
    export_id: int
    directory: Path
    content_hash: str
    counts: dict
    files: dict  # relative path -> sha256


def export_training_data(store: Store, out_dir: Path | str, filters: ExportFilters = ExportFilters(), *,
                         models_dir: Path | str | None = None,
                         progress: Callable[[Iterable], Iterable] = lambda items: items) -> ExportManifest:
    """Write an export folder (must be empty or absent) and record its manifest in the store."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} is not empty; choose a new folder for the export")
    exported = select_tasks(store, filters)
    topology_map = load_topology_map(models_dir)
    files: dict[str, bytes] = {}
    for topology, group in group_by(exported, lambda e: e.task.topology if e.task.kind == "human_contact" else None).items():
        files[f"contact_{topology}.npz"] = contact_npz(group, topology, topology_map)
    point_files: dict[int, str] = {}
    for entry in progress([e for e in exported if e.task.kind == "object_affordance"]):
        class_name, text = piad_text(store, entry)
        point_files[entry.task.id] = unique_name(
            f"affordance/{entry.image.sha256[:16]}_{class_name}_{entry.task.labels[0]}", ".txt", files)
        files[point_files[entry.task.id]] = text
    files[MANIFEST] = manifest_lines(exported, point_files)
    counts = {"tasks": len(exported), "human_contact": sum(e.task.kind == "human_contact" for e in exported),
              "object_affordance": sum(e.task.kind == "object_affordance" for e in exported)}
    return write_export(store, out, files, exported, filters, counts, progress)


def export_interactvlm(store: Store, out_dir: Path | str, filters: ExportFilters = ExportFilters(), *,
                       models_dir: Path | str | None = None, split: str = "train", mask_size: int = INTERACTVLM_MASK_SIZE,
                       progress: Callable[[Iterable], Iterable] = lambda items: items) -> ExportManifest:
    """Write the release's DAMON human-contact folder (module docstring) and record the export in the store."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} is not empty; choose a new folder for the export")
    if split not in ("train", "test"):
        raise InputError(f"split must be 'train' or 'test' (the release reads damon/train and damon/test), got {split!r}")
    exported = [entry for entry in select_tasks(store, filters) if entry.task.kind == "human_contact"]
    others = sorted({entry.task.topology for entry in exported} - set(SIX_THOUSAND_EIGHT_NINETY))
    if others:
        raise InputError(f"the InteractVLM format holds 6890-vertex (SMPL-H) contact only; these tasks are on "
                         f"{others}. Export them with --format studio, or filter them out")
    if not exported:
        raise InputError("no human-contact task passes the filters; nothing to export in the InteractVLM format")
    body, views = _interactvlm_body(models_dir, mask_size)
    root = f"damon/{split}"
    files: dict[str, bytes] = {}
    names, contacts, parts = [], [], {}
    for entry in progress(exported):
        name = _interactvlm_image(store, entry.image, files, root)
        base = Path(name).name[:-4]
        objects = {}
        for k, label in enumerate(entry.task.labels):
            ids = np.flatnonzero(entry.labels[k])
            if not len(ids):
                continue  # the release's loader skips empty objects too
            key = label.replace(" ", "_")
            objects[key] = ids.tolist()
            contact = np.zeros(views.num_vertices, dtype=bool)
            contact[ids] = True
            parts[f"{base}_{key}"] = [part.replace("_", " ") for part in _parts_in_contact(body, contact)]
            for view, mask in zip(INTERACTVLM_VIEWS, _project(views, contact)):
                files[f"{root}/{INTERACTVLM_MASK_FOLDER}/{key}/{base}_{view}.png"] = _png(mask)
        if name not in names:
            names.append(name)
            contacts.append(objects)
        else:
            contacts[names.index(name)].update(objects)
    files[f"{root}/imgname.npy"] = _npy(np.array(names))
    files[f"{root}/contact_label_objectwise.pkl"] = pickle.dumps(contacts, protocol=4)
    files[f"{root}/contact_label_objectwise.npy"] = _npy(np.array(contacts + [None], dtype=object)[:-1])
    files[f"{root}/body_parts_objectwise.pkl"] = pickle.dumps(parts, protocol=4)
    counts = {"tasks": len(exported), "human_contact": len(exported), "object_affordance": 0, "images": len(names)}
    return write_export(store, out, files, [], filters, counts, progress, export_format=INTERACTVLM_FORMAT)


INTERACTVLM_VIEWS = ("topfront", "bottomfront", "topback", "bottomback")  # the body preset's order


def _interactvlm_body(models_dir, mask_size: int):
    """The SMPL-H body and its canonical renders at ``mask_size`` (engine imported here only: this format
    needs the renderer, the others do not)."""
    from engine import rll
    from engine.body import load_body

    if not 16 <= mask_size <= 4096:
        raise InputError(f"mask_size must be between 16 and 4096, got {mask_size}")
    body = load_body("smplh", models_dir)
    assert tuple(view.name for view in rll.PRESETS["body"].views) == INTERACTVLM_VIEWS
    views = rll.render_views(body.vitruvian_vertices(), body.faces, preset="body", resolution=mask_size,
                             topology=body.topology)
    return body, views


def _project(views, contact: np.ndarray) -> np.ndarray:
    from engine import rll

    return rll.project(views, contact, min_vertices=3)


def _parts_in_contact(body, contact: np.ndarray) -> tuple[str, ...]:
    from engine.contact.prior import part_contact_summary

    return part_contact_summary(body, contact.astype(np.float32))


def _interactvlm_image(store: Store, image: models.ImageRow, files: dict, root: str) -> str:
    """``images/<sha256>.jpg|png`` inside ``root``; other formats are re-encoded as PNG."""
    source = store.data_dir / image.path
    suffix = source.suffix.lower()
    if suffix in (".jpg", ".png"):
        name, data = f"images/{image.sha256}{suffix}", source.read_bytes()
    elif suffix == ".jpeg":
        name, data = f"images/{image.sha256}.jpg", source.read_bytes()
    else:
        from PIL import Image

        buffer = io.BytesIO()
        with Image.open(source) as picture:
            picture.convert("RGB").save(buffer, format="PNG")
        name, data = f"images/{image.sha256}.png", buffer.getvalue()
    files[f"{root}/{name}"] = data
    return name


def _png(mask: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=array.dtype == object)
    return buffer.getvalue()


# ---- choosing and aggregating tasks ---------------------------------------------------------------
def select_tasks(store: Store, filters: ExportFilters) -> list[ExportedTask]:
    if filters.source == "gold":
        return gold_tasks(store)
    annotations = load_task_annotations(store, only_qualified=filters.only_qualified)
    weights = annotator_weights(quality_report(store)) if filters.weighted else None
    with store.session() as session:
        flagged = set(session.scalars(select(models.AssignmentRow.task_id)
                                      .where(models.AssignmentRow.status == "flagged").distinct()))
        tasks = {row.id: row for row in session.scalars(select(models.TaskRow).where(~models.TaskRow.is_gold))}
        images = {row.id: row for row in session.scalars(select(models.ImageRow))}
        predictions = {row.id: row for row in session.scalars(select(models.PredictionRow))}
        seeds = {(task_id, annotator_id): (info or {}).get("seed") for task_id, annotator_id, info in session.execute(
            select(models.SubmissionRow.task_id, models.SubmissionRow.annotator_id, models.SubmissionRow.client_info))}
    chosen = []
    for task_id in sorted(set(tasks) & set(annotations)):
        entry = annotations[task_id]
        agreement = qc.agreement(entry.masks())
        if not keep(entry, agreement, task_id in flagged, filters):
            continue
        chosen.append(ExportedTask(task=tasks[task_id], image=images[tasks[task_id].image_id],
                                   labels=aggregate(entry, weights),
                                   provenance=provenance(entry, agreement, predictions.get(tasks[task_id].prediction_id),
                                                         filters, [seeds.get((task_id, annotator))
                                                                   for annotator in entry.annotator_ids])))
    return chosen


def keep(entry: TaskAnnotations, agreement: qc.Agreement, flagged: bool, filters: ExportFilters) -> bool:
    if flagged and filters.exclude_flagged or len(entry.annotator_ids) < filters.min_annotators:
        return False
    if filters.min_agreement is None:
        return True
    value = agreement.fleiss_kappa if filters.agreement_metric == "kappa" else agreement.mean_pairwise_iou
    return not math.isnan(value) and value >= filters.min_agreement


def provenance(entry: TaskAnnotations, agreement: qc.Agreement, prediction: models.PredictionRow | None,
               filters: ExportFilters, seeds: list[dict | None] = ()) -> dict:
    """Who labelled the task, how much they agreed, and the prediction each painting started from.

    ``prediction``: the task's stored prediction (``source``: where it came from), else the one the painter
    computed and every submission recorded (the category prior); None when nothing seeded the painting.
    ``submission_seeds``: per submission, in ``annotators`` order, what its painting started from."""
    seeds = [clean_seed(seed) for seed in seeds]
    if prediction is not None:
        seeded = {"model_name": prediction.model_name, "model_version": prediction.model_version,
                  "source": str((prediction.parameters or {}).get("source") or "imported with the task")}
    else:
        known = list({json.dumps(seed, sort_keys=True): seed for seed in seeds if seed is not None}.values())
        seeded = known[0] if len(known) == 1 else None
    if seeded is not None:
        seeded = {**seeded, "baseline": seeded["model_name"].startswith("baseline:")}
    return {"annotators": len(entry.annotator_ids),
            "agreement": {"fleiss_kappa": finite_or_none(agreement.fleiss_kappa),
                          "mean_pairwise_iou": finite_or_none(agreement.mean_pairwise_iou)},
            "aggregation": "weighted majority" if filters.weighted else "majority",
            "prediction": seeded, "submission_seeds": seeds}


def clean_seed(seed) -> dict | None:
    """A recorded seed's three fields as text (client_info is data the studio wrote, checked anyway)."""
    if not isinstance(seed, dict) or not seed.get("model_name"):
        return None
    return {key: str(seed.get(key) or "unknown")[:200] for key in ("model_name", "model_version", "source")}


def finite_or_none(value: float) -> float | None:
    return None if math.isnan(value) else round(float(value), 6)


def gold_tasks(store: Store) -> list[ExportedTask]:
    answers = gold_answers(store)
    with store.session() as session:
        rows = session.scalars(select(models.TaskRow).where(models.TaskRow.is_gold).order_by(models.TaskRow.id))
        return [ExportedTask(task=row, image=session.get(models.ImageRow, row.image_id), labels=answers[row.id],
                             provenance=dict(row.provenance or {"source": "gold answer"}))
                for row in rows if row.id in answers]


def group_by(items, key) -> dict:
    groups: dict = {}
    for item in items:
        name = key(item)
        if name is not None:
            groups.setdefault(name, []).append(item)
    return groups


# ---- file contents --------------------------------------------------------------------------------
def image_name(image: models.ImageRow) -> str:
    return f"images/{Path(image.path).name}"


def contact_npz(group: list[ExportedTask], topology: str, topology_map) -> bytes:
    union = np.stack([entry.labels.any(axis=0) for entry in group]).astype(np.uint8)
    objectwise = [{label: np.flatnonzero(entry.labels[k]).tolist() for k, label in enumerate(entry.task.labels)}
                  for entry in group]
    arrays = {"imgname": np.array([image_name(entry.image) for entry in group]),
              "contact_label": union,
              "contact_label_objectwise_json": np.array([json.dumps(item, sort_keys=True).encode()
                                                         for item in objectwise], dtype=bytes),
              "contact_label_objectwise": np.array(objectwise + [None], dtype=object)[:-1],
              "topology": np.array(topology)}
    if topology_map is not None and topology in ("smpl-6890", "smplh-6890"):
        arrays["contact_label_smplx"] = convert_in_chunks(topology_map, union, topology)
    return deterministic_npz(arrays)


def convert_in_chunks(topology_map, union: np.ndarray, topology: str, chunk: int = 1024) -> np.ndarray:
    """(N, 10475) uint8: each SMPL-X vertex in contact when its mapped value reaches 0.5."""
    parts = [topology_map.convert(union[start:start + chunk].T.astype(np.float32), topology, SMPLX).T >= 0.5
             for start in range(0, len(union), chunk)]
    return np.concatenate(parts).astype(np.uint8)


def deterministic_npz(arrays: dict[str, np.ndarray]) -> bytes:
    """An npz whose bytes depend only on the arrays (fixed zip dates, sorted names)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
            payload = io.BytesIO()
            np.lib.format.write_array(payload, np.asanyarray(arrays[name]), allow_pickle=True)
            archive.writestr(info, payload.getvalue(), compresslevel=1)
    return buffer.getvalue()


def unique_name(stem: str, suffix: str, taken: dict) -> str:
    """``stem + suffix``, or ``stem-2 + suffix`` ... when an earlier file has the name."""
    name, copy = stem + suffix, 1
    while name in taken:
        copy += 1
        name = f"{stem}-{copy}{suffix}"
    return name


def piad_text(store: Store, entry: ExportedTask) -> tuple[str, bytes]:
    """(class name, PIAD text). Coordinates keep 6 decimals, values 4: text -> float32 -> text is stable."""
    with store.session() as session:
        class_name = session.get(models.ObjectRow, entry.task.object_id).class_name.replace(" ", "_")
    points = store.object_points(entry.task.object_id)
    columns = PIAD_AFFORDANCES if entry.task.labels[0] in PIAD_AFFORDANCES else AFFORDANCES
    values = np.zeros((len(points), len(columns)), dtype=np.float32)
    values[:, columns.index(entry.task.labels[0])] = entry.labels[0]
    lines = (f"{i} {class_name} " + " ".join(f"{x:.6f}" for x in point) + " " + " ".join(f"{v:.4f}" for v in row)
             for i, (point, row) in enumerate(zip(points.astype(np.float64), values.astype(np.float64))))
    return class_name, ("\n".join(lines) + "\n").encode()


def manifest_lines(exported: list[ExportedTask], point_files: dict[int, str]) -> bytes:
    rows, position = [], {}
    for entry in exported:
        task = entry.task
        if task.kind == "human_contact":
            npz = f"contact_{task.topology}.npz"
            index = position[npz] = position.get(npz, -1) + 1
            where = {"npz": npz, "row": index}
        else:
            where = {"points": point_files[task.id]}
        rows.append({"task_id": task.id, "kind": task.kind, "imgname": image_name(entry.image),
                     "image_sha256": entry.image.sha256, "labels": list(task.labels), "topology": task.topology,
                     "original_name": entry.image.original_name,
                     "source": entry.image.source, "licence": entry.image.licence, **where,
                     "provenance": entry.provenance})
    return "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows).encode()


def write_export(store, out: Path, files: dict[str, bytes], exported, filters, counts, progress, *,
                 export_format: str = FORMAT) -> ExportManifest:
    (out / "images").mkdir(parents=True, exist_ok=True)
    digests = {}
    for entry in progress(exported):
        name = image_name(entry.image)
        if name not in digests:
            shutil.copyfile(store.data_dir / entry.image.path, out / name)  # content-addressed: no re-hash
            digests[name] = entry.image.sha256
    for name, data in files.items():
        files_write(out / name, data)
        digests[name] = hashlib.sha256(data).hexdigest()
    content = hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()
    info = {"format": export_format, "filters": asdict(filters), "counts": counts, "files": dict(sorted(digests.items())),
            "content_hash": content}
    files_write(out / EXPORT_INFO, (json.dumps(info, indent=1, sort_keys=True) + "\n").encode())
    with store.session(write=True) as session:
        row = models.ExportRow(filters=asdict(filters), counts=counts, content_hash=content, location=str(out),
                               created_at=utcnow())
        session.add(row)
        session.flush()
        return ExportManifest(export_id=row.id, directory=out, content_hash=content, counts=counts, files=digests)


def files_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def load_topology_map(models_dir):
    if models_dir is None:
        return None
    from engine.body.topology import TopologyMap

    try:
        return TopologyMap.from_pretrained(models_dir)
    except FileNotFoundError:
        return None  # the SMPL-X variant is optional: written only when the user's map is present


# ---- reading an export back as a batch ----------------------------------------------------------------
def rows_from_export(folder: Path) -> list[tuple[int, dict]]:
    """Batch rows (gold tasks with the exported labels as reference answers) from an export folder."""
    info = json.loads((folder / EXPORT_INFO).read_text())
    if info.get("format") != FORMAT:
        raise InputError(f"{folder}: unknown export format {info.get('format')!r}; expected {FORMAT}")
    npz_cache: dict[str, dict] = {}
    rows = []
    for number, line in enumerate((folder / MANIFEST).read_text().splitlines(), 1):
        entry = json.loads(line)
        row = {"image": entry["imgname"], "labels": entry["labels"], "kind": entry["kind"], "gold": True,
               "provenance": entry["provenance"], "redundancy": 1}
        row.update({key: entry[key] for key in ("source", "licence", "original_name") if entry.get(key) is not None})
        if entry["kind"] == "human_contact":
            row["topology"] = entry["topology"]
            row["gold_answer"] = objectwise_from_npz(folder, entry["npz"], entry["row"], npz_cache)
        else:
            row.update(piad_row(folder, entry["points"], entry["labels"][0]))
        rows.append((number, row))
    return rows


def objectwise_from_npz(folder: Path, name: str, index: int, cache: dict) -> dict:
    if name not in cache:
        if "/" in name or "\\" in name or ".." in name:
            raise UnsafeArchiveError(f"manifest names an npz outside the export: {name!r}")
        with np.load(folder / name, allow_pickle=False) as data:
            cache[name] = list(data["contact_label_objectwise_json"])
    return json.loads(cache[name][index])


def piad_row(folder: Path, relative: str, affordance: str) -> dict:
    from annotations.files import resolve_inside

    table = np.loadtxt(resolve_inside(folder, relative), dtype=str, ndmin=2)
    columns = PIAD_AFFORDANCES if table.shape[1] == 5 + len(PIAD_AFFORDANCES) else AFFORDANCES
    values = table[:, 5 + columns.index(affordance)].astype(np.float64)
    return {"object": relative, "object_class": table[0, 1].replace("_", " "),
            "gold_answer": {affordance: values.tolist()}}
