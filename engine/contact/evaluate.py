"""Evaluate contact predictors on labelled data: ``python -m engine.contact.evaluate``.

The figures are REFERENCE.md section 4's, computed by ``engine.metrics`` and laid out as the paper's
tables: an "all" row, then one row per category.

- Human contact (DECO): images from a DAMON ``hot_dca_*.npz`` or a studio export ``contact_<topology>.npz``
  go through ``predict_human_contact_batch`` in batches; P, R and F1 at 0.5 and the geodesic error (cm)
  over the body's rest-pose (T-pose) mesh, as DECO measures it on the template. Categories are the object
  labels, or "any" for binary contact with anything.
- Both are scored under one of two conventions (``--convention``, ``engine.metrics.CONVENTIONS``):
  ``deco`` (the default: DECO's and IAGNet's rules) or ``interactvlm`` (InteractVLM's own
  ``eval_utils``, with which its paper's numbers were computed). Every report says which.
- Object affordance (IAGNet/PIAD): (image, point cloud, affordance) samples from a JSONL manifest go
  through ``predict_object_affordance`` one by one; SIM, AUC, aIoU and MAE. Categories are the object
  classes (or the affordances, ``group_by="affordance"``).

Predictions and labels must share one body topology: per-vertex arrays of different topologies are never
compared. Without an InteractVLM checkpoint, human contact is scored for the category-prior baseline, and
the report, its JSON and the printed table all say so: those figures are never the model's.

Stages of one evaluation:
1. check the samples against the predictor (topology, labels) before any prediction runs;
2. predict in batches, with a tqdm bar and an optional ``progress(done, total)`` callback;
3. the geodesic matrix (human contact, cached on disk after the first, slow, call);
4. ``metrics.contact_table`` / ``metrics.affordance_table`` into a frozen ``EvaluationReport``.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from engine import metrics
from engine.body.geodesic import cached_geodesic_matrix
from engine.body.model import SMPL_FAMILY
from engine.contact.data import AffordanceSample, HumanContactSample, read_affordance_manifest, read_damon_npz
from engine.contact.predict import MAX_BATCH, VARIANTS
from engine.contact.prior import PRIOR_SOURCE
from engine.contact.vocabulary import resolve_object_label
from engine.errors import InputError, MissingAssetError
from engine.paths import models_dir as default_models_dir, write_atomically

ANY_OBJECT = "any"  # the category of binary samples: contact with anything
GROUPINGS = ("object", "affordance")
DEFAULT_BATCH = 8
BASELINE_NOTE = ("these figures are from the category-prior baseline (contact from the object label alone; the "
                 "image is not looked at), not from InteractVLM; install the checkpoint under "
                 "<models>/interactvlm/<variant>/ to evaluate the model")
_BODY_KINDS = {"openbody-v1": "openbody", **{spec.topology: kind for kind, spec in SMPL_FAMILY.items()}}
_BODY_NAMES = {"smplx": "SMPL-X", "smplh": "SMPL-H", "smpl": "SMPL"}
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class EvaluationReport:
    """Scores of one predictor on one data set.

    kind: "contact" (human contact) or "affordance" (object affordance).
    source: the predictor's source: the checkpoint folder's name ("hcontact", "oafford", "joint") or
        ``"baseline: category prior"``.
    is_baseline: True when the figures come from the category prior, never from a model.
    count: number of images (contact) or samples (affordance) scored.
    overall: ``metrics.ContactScores`` or ``metrics.AffordanceScores`` over all of them.
    categories: per-category ``metrics.CategoryRow``s, largest first (the "all" row is ``overall``).
    topology: the body topology of the contact labels; None for affordance.
    geodesic: whether the geodesic error was computed (``overall.geodesic_cm`` is None otherwise).
    tokens_missing: predictions whose answer lacked the contact token (no mask: the prediction is empty).
        Always 0 for the baseline.
    convention: the metric convention, "deco" or "interactvlm" (``engine.metrics``).
    """

    kind: str
    source: str
    is_baseline: bool
    count: int
    overall: metrics.ContactScores | metrics.AffordanceScores
    categories: tuple[metrics.CategoryRow, ...]
    topology: str | None
    geodesic: bool
    tokens_missing: int
    convention: str = metrics.DEFAULT_CONVENTION

    @property
    def rows(self) -> tuple[metrics.CategoryRow, ...]:
        """The table's rows: "all" first, then the categories."""
        return (metrics.CategoryRow(metrics.ALL_CATEGORY, self.overall), *self.categories)

    def table(self) -> str:
        """The paper-style text table (``metrics.format_table``)."""
        return metrics.format_table(self.rows)

    def to_json(self) -> dict:
        """A JSON-serialisable dict; what produced the figures travels with them.

        Keys: ``kind``, ``overall`` and ``categories`` as ``metrics.report_dict`` writes them; ``source``,
        ``is_baseline``, ``note`` (the baseline warning, or None), ``count``; ``model``: {source, type
        ("InteractVLM" or "category prior"), topology, tokens_missing}; ``geodesic`` (bool); ``threshold``
        (contact, or affordance-label, threshold).
        """
        return {
            **metrics.report_dict(self.rows),
            "source": self.source,
            "is_baseline": self.is_baseline,
            "note": BASELINE_NOTE if self.is_baseline else None,
            "count": self.count,
            "model": {"source": self.source, "type": "category prior" if self.is_baseline else "InteractVLM",
                      "topology": self.topology, "tokens_missing": self.tokens_missing},
            "geodesic": self.geodesic,
            "convention": self.convention,
            "threshold": metrics.CONTACT_THRESHOLD if self.kind == "contact" else metrics.AFFORDANCE_LABEL_THRESHOLD,
        }


# ---- checks before predicting ------------------------------------------------------------------------------
def _check_nonempty(samples: Sequence, what: str) -> None:
    if len(samples) == 0:
        raise InputError(f"no {what} samples to evaluate; the data file holds none (or --limit removed them all)")


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH:
        raise InputError(f"batch_size must be an integer from 1 to {MAX_BATCH}, got {batch_size!r}")


def _topology_hint(labels: str, body: str) -> str:
    """What to install or choose so that a body of topology ``labels`` is used."""
    kind = _BODY_KINDS.get(labels)
    if kind == "openbody":
        return "evaluate with the built-in open body (load_body('openbody')), which is always available"
    if kind in SMPL_FAMILY:
        spec = SMPL_FAMILY[kind]
        return (f"install the {_BODY_NAMES[kind]} body: {spec.licence_hint} Put it at <models>/{spec.files[0]} "
                f"('python app.py doctor' checks); the {body} body is used only while it is missing")
    return f"use a body of topology {labels}"


def _check_topology(samples: Sequence[HumanContactSample], body) -> None:
    topologies = sorted({sample.topology for sample in samples})
    if len(topologies) > 1:
        raise InputError(f"the samples mix body topologies {topologies}; evaluate one topology at a time")
    if topologies[0] != body.topology:
        raise InputError(f"the contact labels are on {topologies[0]} but the predictor's body is {body.topology}; "
                         f"labels and predictions of different topologies are never compared. "
                         f"{_topology_hint(topologies[0], body.topology)}")


def _check_labels(samples: Sequence[HumanContactSample], predictor) -> None:
    """Every object label resolves, and the baseline is not asked for binary contact it cannot predict."""
    labels = {sample.object_label for sample in samples}
    if None in labels and getattr(predictor, "source", None) == PRIOR_SOURCE:
        raise InputError("the category-prior baseline predicts from the object label alone, so it cannot score "
                         "binary contact (labels with no object); evaluate per-object labels (semantic=True, i.e. "
                         "without --binary) or install the InteractVLM hcontact checkpoint")
    for label in sorted(labels - {None}):
        try:
            resolve_object_label(label)
        except InputError as error:
            raise InputError(f"object label {label!r} in the data: {error}") from error


# ---- human contact -------------------------------------------------------------------------------------------
def _batches(items: Sequence, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _predict_contacts(predictor, samples, batch_size: int, progress: Progress | None) -> list:
    results = []
    with tqdm(total=len(samples), desc="human contact", unit="image") as bar:
        for batch in _batches(samples, batch_size):
            results += predictor.predict_human_contact_batch([(s.image_path, s.object_label) for s in batch])
            bar.update(len(batch))
            if progress is not None:
                progress(len(results), len(samples))
    return results


def _rest_vertices(body) -> torch.Tensor:
    """(V, 3) rest-pose (T-pose) vertices: DECO's geodesic matrix is measured on the template mesh."""
    with torch.no_grad():
        return body.forward().vertices[0]


def _geodesic_matrix(geodesic, body) -> np.ndarray | None:
    """None (off), the body's cached matrix (True), or a caller's own (V, V) matrix in metres."""
    if geodesic is None or geodesic is False:
        return None
    if geodesic is True:
        return cached_geodesic_matrix(_rest_vertices(body), body.faces, body.topology)
    return geodesic  # metrics checks its shape against the vertex count


def evaluate_human_contact(predictor, samples: Sequence[HumanContactSample], *, geodesic: bool | np.ndarray = True,
                           batch_size: int = DEFAULT_BATCH, progress: Progress | None = None,
                           convention: str = metrics.DEFAULT_CONVENTION) -> EvaluationReport:
    """DECO scores of ``predictor`` (``load_predictor``'s InteractVLM or category-prior predictor) on ``samples``.

    geodesic: True computes (or reads from the cache) the body's (V, V) geodesic matrix; False skips the
        geodesic error; an array is used as that matrix (metres), so several evaluations can share one.
    batch_size: requests per ``predict_human_contact_batch`` call, 1 to ``MAX_BATCH``.
    progress: called with (done, total) after each batch.
    convention: "deco" (default) or "interactvlm" (``engine.metrics``).
    """
    _check_convention(convention)
    samples = list(samples)
    _check_nonempty(samples, "human contact")
    _check_batch_size(batch_size)
    _check_topology(samples, predictor.body)
    _check_labels(samples, predictor)
    results = _predict_contacts(predictor, samples, batch_size, progress)
    pred = np.stack([result.probabilities for result in results])
    gt = np.stack([sample.contact for sample in samples])
    categories = [result.object_label or ANY_OBJECT for result in results]
    matrix = _geodesic_matrix(geodesic, predictor.body)
    rows = metrics.contact_table(pred, gt, categories, geodesic=matrix, convention=convention)
    return _report("contact", predictor.source, rows, topology=predictor.body.topology, geodesic=matrix is not None,
                   tokens_missing=sum(not result.token_emitted for result in results), convention=convention)


def _check_convention(convention: str) -> None:
    if convention not in metrics.CONVENTIONS:
        raise InputError(f"convention must be one of {metrics.CONVENTIONS}, got {convention!r}")


def _report(kind: str, source: str, rows: list[metrics.CategoryRow], **fields) -> EvaluationReport:
    overall, *categories = rows  # contact_table and affordance_table put "all" first
    return EvaluationReport(kind=kind, source=source, is_baseline=source == PRIOR_SOURCE, count=overall.count,
                            overall=overall.scores, categories=tuple(categories), **fields)


# ---- object affordance -----------------------------------------------------------------------------------------
def object_label_of(object_class: str) -> str:
    """A PIAD class as a label the vocabulary resolves: "StorageFurniture" -> "storage furniture"."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", object_class)  # PIAD writes classes in CamelCase
    return resolve_object_label(spaced)


def _check_affordance_samples(samples: Sequence[AffordanceSample], predictor) -> None:
    if not callable(getattr(predictor, "predict_object_affordance", None)):
        raise InputError(f"the {getattr(predictor, 'source', 'given')} predictor has no object affordance; "
                         "evaluate affordance with the oafford or joint InteractVLM checkpoint")
    sizes = sorted({len(sample.values) for sample in samples})
    if len(sizes) > 1:
        raise InputError(f"the point clouds hold different numbers of points {sizes}; the affordance table "
                         "needs one size (PIAD's files all have 2048)")
    for object_class in sorted({sample.object_class for sample in samples}):
        try:
            object_label_of(object_class)
        except InputError as error:
            raise InputError(f"object class {object_class!r} in the data: {error}") from error


def _predict_affordances(predictor, samples, progress: Progress | None) -> list:
    results = []
    for sample in tqdm(samples, desc="object affordance", unit="sample"):
        results.append(predictor.predict_object_affordance(sample.image_path, sample.points, None,
                                                           object_label=object_label_of(sample.object_class),
                                                           affordance=sample.affordance))
        if progress is not None:
            progress(len(results), len(samples))
    return results


def evaluate_affordance(predictor, samples: Sequence[AffordanceSample], *, group_by: str = "object",
                        progress: Progress | None = None,
                        convention: str = metrics.DEFAULT_CONVENTION) -> EvaluationReport:
    """IAGNet scores of an oafford or joint ``InteractVLMPredictor`` on point-cloud ``samples``.

    group_by: "object" makes one table row per object class (IAGNet's layout), "affordance" one per affordance.
    progress: called with (done, total) after each sample.
    convention: "deco" (IAGNet's rules, default) or "interactvlm".
    """
    _check_convention(convention)
    if group_by not in GROUPINGS:
        raise InputError(f"group_by must be one of {GROUPINGS}, got {group_by!r}")
    samples = list(samples)
    _check_nonempty(samples, "affordance")
    _check_affordance_samples(samples, predictor)
    results = _predict_affordances(predictor, samples, progress)
    pred = np.stack([result.values for result in results])
    gt = np.stack([sample.values for sample in samples])
    categories = [sample.object_class if group_by == "object" else sample.affordance for sample in samples]
    rows = metrics.affordance_table(pred, gt, categories, convention=convention)
    return _report("affordance", predictor.source, rows, topology=None, geodesic=False,
                   tokens_missing=sum(not result.token_emitted for result in results), convention=convention)


# ---- the command line --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvaluateOptions:
    """One command-line evaluation.

    models: the models directory. variant: the InteractVLM variant, or None to take hcontact for human data
    and oafford for affordance data. human_data / affordance_data: exactly one is set. images: the image root
    of the npz (default: its folder). semantic: per-object labels (else binary contact). limit: the first N
    samples only. geodesic: compute the geodesic error. json: where to write the JSON report. device: "auto",
    "cpu", "cuda", ... dtype: "auto" (bf16 on CUDA, fp32 elsewhere), "fp32", "fp16" or "bf16".
    group_by: affordance table rows per "object" or per "affordance".
    convention: metric convention, "deco" (default) or "interactvlm".
    """

    models: Path
    variant: str | None = None
    human_data: Path | None = None
    affordance_data: Path | None = None
    images: Path | None = None
    semantic: bool = True
    limit: int | None = None
    geodesic: bool = True
    json: Path | None = None
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = DEFAULT_BATCH
    group_by: str = "object"
    convention: str = metrics.DEFAULT_CONVENTION


def parse_args(argv=None) -> EvaluateOptions:
    parser = argparse.ArgumentParser(prog="python -m engine.contact.evaluate", description=__doc__.split("\n\n")[0])
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--human-data", type=Path, help="DAMON hot_dca_*.npz or a store export's contact_<topology>.npz")
    data.add_argument("--affordance-data", type=Path, help="PIAD/LEMON JSONL manifest or a store export folder")
    parser.add_argument("--models", type=Path, help="models directory (default: $STUDIO_MODELS or models/)")
    parser.add_argument("--variant", choices=VARIANTS, help="default: hcontact for human data, oafford for affordance")
    parser.add_argument("--images", type=Path, help="image root for the npz's imgname entries (default: its folder)")
    parser.add_argument("--binary", action="store_true", help="score contact with anything (ignore per-object labels)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N samples")
    parser.add_argument("--no-geodesic", action="store_true", help="skip the geodesic error (its first run is slow)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    parser.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    parser.add_argument("--dtype", default="auto", choices=("auto", "fp32", "fp16", "bf16"))
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help=f"images per batch, 1 to {MAX_BATCH}")
    parser.add_argument("--group-by", choices=GROUPINGS, default="object", help="affordance table rows")
    parser.add_argument("--convention", choices=metrics.CONVENTIONS, default=metrics.DEFAULT_CONVENTION,
                        help="metric rules: 'deco' (DECO/IAGNet, default) or 'interactvlm' (its eval_utils, "
                             "as its paper's numbers)")
    args = parser.parse_args(argv)
    return EvaluateOptions(models=default_models_dir(args.models), variant=args.variant, human_data=args.human_data,
                           affordance_data=args.affordance_data, images=args.images, semantic=not args.binary,
                           limit=args.limit, geodesic=not args.no_geodesic, json=args.json, device=args.device,
                           dtype=args.dtype, batch_size=args.batch_size, group_by=args.group_by,
                           convention=args.convention)


def _limited(samples: tuple, limit: int | None) -> tuple:
    if limit is None:
        return samples
    if limit < 1:
        raise InputError(f"--limit must be at least 1, got {limit}")
    return samples[:limit]


def _dtype(choice: str, device: torch.device) -> str:
    # bf16 matmuls on CPU are slow and lose precision for nothing; CUDA keeps the released bf16.
    if choice == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return choice


def _body_for(models: Path, topology: str, device: torch.device):
    """The body the labels are on when it is available here, else the predictor's default body.

    Exports painted on the open body score on it even when SMPL-H is installed; with the labels' body
    missing, the default is kept and ``evaluate_human_contact`` explains what to install.
    """
    from engine.assets import doctor_report
    from engine.body import load_body
    from engine.contact.predict import default_body

    body, topology_map = default_body(models)
    kind = _BODY_KINDS.get(topology)
    if body.topology != topology and kind in doctor_report(models).available_bodies():
        body = load_body(kind, models)
    return body.to(device), topology_map


def _predictor(options: EvaluateOptions, variant: str, topology: str | None):
    from engine.contact.predict import load_predictor
    from engine.runtime import pick_device

    device = pick_device(options.device)
    body, topology_map = _body_for(options.models, topology, device) if topology else (None, None)
    return load_predictor(options.models, variant, device=device, dtype=_dtype(options.dtype, device),
                          body=body, topology_map=topology_map)


def run(options: EvaluateOptions) -> EvaluationReport:
    """Read the data, load the predictor, evaluate. Raises InputError / MissingAssetError for fixable problems."""
    if options.human_data is not None:
        samples = _limited(read_damon_npz(options.human_data, image_root=options.images, semantic=options.semantic),
                           options.limit)
        _check_nonempty(samples, "human contact")
        predictor = _predictor(options, options.variant or "hcontact", samples[0].topology)
        return evaluate_human_contact(predictor, samples, geodesic=options.geodesic, batch_size=options.batch_size,
                                      convention=options.convention)
    samples = _limited(read_affordance_manifest(options.affordance_data), options.limit)
    _check_nonempty(samples, "affordance")
    predictor = _predictor(options, options.variant or "oafford", None)
    return evaluate_affordance(predictor, samples, group_by=options.group_by, convention=options.convention)


def summary(report: EvaluationReport) -> str:
    """The printed result: what was scored, by whom, the table, and the baseline warning when it applies."""
    what = "images" if report.kind == "contact" else "samples"
    name = "human contact" if report.kind == "contact" else "object affordance"
    lines = [f"{name.capitalize()} on {report.count} {what}, source: {report.source}"
             + (f", body {report.topology}" if report.topology else ""),
             f"Metric convention: {report.convention} ({metrics.CONVENTION_NAMES[report.convention]})",
             "", report.table()]
    if report.is_baseline:
        lines += ["", f"BASELINE: {BASELINE_NOTE}."]
    if report.tokens_missing:
        lines += ["", f"{report.tokens_missing} answer(s) lacked the contact token (the model was unsure)."]
    return "\n".join(lines)


def write_json(report: EvaluationReport, path: Path) -> None:
    """The JSON report, written atomically: a reader never sees half a file."""
    text = json.dumps(report.to_json(), indent=2).encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda handle: handle.write(text))
    except OSError as error:  # a folder in the way, no permission: the user's to fix, not a crash
        raise InputError(f"could not write the JSON report to {path}: {error}") from error


def main(argv=None) -> int:
    options = parse_args(argv)
    try:
        report = run(options)
        print(summary(report))
        if options.json is not None:
            write_json(report, options.json)
            print(f"\nwrote {options.json}")
    except (InputError, MissingAssetError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
