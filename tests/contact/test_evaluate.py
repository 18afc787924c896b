"""Evaluation (engine.contact.evaluate): the report's figures equal engine.metrics on direct predictions.

Everything runs on the open body with tiny seeded checkpoints; the open body's geodesic matrix takes
minutes, so geodesic error is checked on a small icosphere body through a stand-in predictor instead.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from engine import metrics
from engine.body.geodesic import cached_geodesic_matrix
from engine.contact import evaluate
from engine.contact.data import HumanContactSample, read_affordance_manifest, read_damon_npz
from engine.contact.predict import HumanContactResult, load_predictor
from engine.contact.prior import PRIOR_SOURCE, predict_category_prior
from engine.contact.vocabulary import PIAD_AFFORDANCES
from engine.errors import InputError

# Per image: {object label: body parts in contact}. Several objects per image, "supporting" included.
OBJECTWISE = [
    {"chair": ("hips", "left_thigh", "right_thigh"), "supporting": ("left_foot", "right_foot")},
    {"cup": ("right_hand",)},
    {"bicycle": ("left_hand", "right_hand", "hips")},
]
JSON_KEYS = {"kind", "overall", "categories", "source", "is_baseline", "note", "count", "model", "geodesic",
             "threshold", "convention"}


def write_png(path: Path, seed: int) -> str:
    pixels = (np.random.default_rng(seed).random((16, 20, 3)) * 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path.name


def write_contact_npz(folder: Path, body, objectwise=OBJECTWISE) -> Path:
    """A studio-export-style npz on ``body``'s topology: union labels plus per-object JSON bytes."""
    names, union, rows = [], np.zeros((len(objectwise), body.num_vertices), np.uint8), []
    for index, item in enumerate(objectwise):
        names.append("images/" + write_png(folder / "images" / f"{index}.png", index))
        ids = {label: sorted(int(i) for part in parts for i in body.part_vertex_ids(part))
               for label, parts in item.items()}
        for vertex_ids in ids.values():
            union[index, vertex_ids] = 1
        rows.append(json.dumps(ids).encode())
    path = folder / f"contact_{body.topology}.npz"
    np.savez(path, imgname=np.array(names), contact_label=union, topology=np.array(body.topology),
             contact_label_objectwise_json=np.array(rows, dtype=bytes))
    return path


def write_damon_npz(folder: Path) -> Path:
    """DAMON's own layout: 6890 smplh columns, no topology key."""
    write_png(folder / "a.png", 5)
    path = folder / "hot_dca_test.npz"
    labels = np.zeros((1, 6890))
    labels[0, :50] = 1
    np.savez(path, imgname=np.array(["a.png"]), contact_label=labels)
    return path


@pytest.fixture(scope="module")
def contact_npz(tmp_path_factory, open_body) -> Path:
    return write_contact_npz(tmp_path_factory.mktemp("contact"), open_body)


@pytest.fixture(scope="module")
def empty_models(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("no-models")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> Path:
    """A models dir holding tiny seeded hcontact and oafford checkpoints in the released layout."""
    from engine.contact.checkpoint import new_model, save_released

    root = tmp_path_factory.mktemp("tiny-models")
    for preset, variant in (("tiny-hcontact", "hcontact"), ("tiny-oafford", "oafford")):
        model, tokenizer = new_model(preset, seed=0)
        save_released(model, tokenizer, root / "interactvlm" / variant, dtype="fp32",
                      clip_folder=root / "clip-vit-large-patch14")
    return root


@pytest.fixture(scope="module")
def prior_predictor(empty_models, open_body):
    return load_predictor(empty_models, "hcontact", body=open_body)


def assert_rows_match(report, pred, gt, categories, geodesic=None):
    """Every category row of the report equals contact_metrics on that category's images."""
    categories = np.asarray(categories)
    for row in report.categories:
        chosen = categories == row.category
        assert row.scores == metrics.contact_metrics(pred[chosen], gt[chosen], geodesic=geodesic), row.category


# ---- human contact -----------------------------------------------------------------------------------
def test_prior_baseline_report_equals_direct_metrics(prior_predictor, contact_npz, open_body):
    samples = read_damon_npz(contact_npz, semantic=True)
    seen = []
    report = evaluate.evaluate_human_contact(prior_predictor, samples, geodesic=False, batch_size=3,
                                             progress=lambda done, total: seen.append((done, total)))
    pred = np.stack([predict_category_prior(open_body, s.object_label).probabilities for s in samples])
    gt = np.stack([s.contact for s in samples])
    assert report.overall == metrics.contact_metrics(pred, gt)
    assert report.kind == "contact" and report.is_baseline and report.source == PRIOR_SOURCE
    assert report.count == len(samples) == 4 and report.topology == open_body.topology
    assert {row.category for row in report.categories} == {"chair", "supporting", "cup", "bicycle"}
    assert_rows_match(report, pred, gt, [s.object_label for s in samples])
    assert report.overall.geodesic_cm is None and not report.geodesic
    assert seen == [(3, 4), (4, 4)]
    assert "F1 (%)" in report.table() and report.table().splitlines()[1].startswith("all")


def test_tiny_checkpoint_report_equals_direct_predictions(tiny_models, contact_npz, open_body):
    predictor = load_predictor(tiny_models, "hcontact", body=open_body, dtype="fp32")
    samples = read_damon_npz(contact_npz, semantic=True)
    # batch_size=1: the same forward passes as predict_human_contact, so the figures match exactly.
    report = evaluate.evaluate_human_contact(predictor, samples, geodesic=False, batch_size=1)
    results = [predictor.predict_human_contact(s.image_path, s.object_label) for s in samples]
    pred = np.stack([r.probabilities for r in results])
    gt = np.stack([s.contact for s in samples])
    assert report.source == "hcontact" and not report.is_baseline
    assert report.overall == metrics.contact_metrics(pred, gt)
    assert_rows_match(report, pred, gt, [r.object_label for r in results])
    assert report.tokens_missing == sum(not r.token_emitted for r in results)
    assert report.to_json()["model"]["type"] == "InteractVLM" and report.to_json()["note"] is None


def test_binary_samples_are_the_any_category(tiny_models, contact_npz, open_body):
    predictor = load_predictor(tiny_models, "hcontact", body=open_body, dtype="fp32")
    samples = read_damon_npz(contact_npz)  # binary: contact with anything
    report = evaluate.evaluate_human_contact(predictor, samples, geodesic=False, batch_size=3)
    assert [row.category for row in report.categories] == ["any"] and report.count == 3


def test_prior_cannot_score_binary_contact(prior_predictor, contact_npz):
    with pytest.raises(InputError, match="object label alone.*without --binary"):
        evaluate.evaluate_human_contact(prior_predictor, read_damon_npz(contact_npz), geodesic=False)


def test_topology_mismatch_says_what_to_install(prior_predictor, tmp_path):
    samples = read_damon_npz(write_damon_npz(tmp_path))
    with pytest.raises(InputError, match=r"smplh-6890 but the predictor's body is openbody-v1.*install the SMPL-H"):
        evaluate.evaluate_human_contact(prior_predictor, samples, geodesic=False)


@pytest.mark.parametrize("kwargs, message", [({"batch_size": 0}, "batch_size"), ({"batch_size": 17}, "1 to 16")])
def test_bad_batch_size(prior_predictor, contact_npz, kwargs, message):
    with pytest.raises(InputError, match=message):
        evaluate.evaluate_human_contact(prior_predictor, read_damon_npz(contact_npz, semantic=True), geodesic=False,
                                        **kwargs)


def test_unknown_label_fails_before_predicting(prior_predictor, open_body, tmp_path):
    sample = HumanContactSample(Path(tmp_path / write_png(tmp_path / "x.png", 1)), "spaceship",
                                np.zeros(open_body.num_vertices, np.uint8), open_body.topology, "x.png")
    with pytest.raises(InputError, match="'spaceship' in the data"):
        evaluate.evaluate_human_contact(prior_predictor, [sample], geodesic=False)
    with pytest.raises(InputError, match="no human contact samples"):
        evaluate.evaluate_human_contact(prior_predictor, [], geodesic=False)


# ---- geodesic error on a small body --------------------------------------------------------------------
class SphereBody(torch.nn.Module):
    """A 42-vertex icosphere standing in for a body: only what evaluation touches."""

    topology = "test-icosphere-42"

    def __init__(self):
        super().__init__()
        import trimesh

        mesh = trimesh.creation.icosphere(subdivisions=1, radius=0.3)
        self.vertices = torch.tensor(mesh.vertices, dtype=torch.float32)
        self.faces = torch.tensor(mesh.faces, dtype=torch.int64)

    def forward(self):
        return SimpleNamespace(vertices=self.vertices[None])


@dataclass
class FixedPredictor:
    """Returns stored probabilities per image path; a model-like source."""

    body: SphereBody
    table: dict
    source: str = "fixed"

    def predict_human_contact_batch(self, requests):
        return [HumanContactResult(label, self.body.topology, self.table[str(image)], None, (), "", np.zeros((4, 2, 2)),
                                   self.source) for image, label in requests]


def test_geodesic_error_equals_metrics_on_the_cached_matrix(tmp_path):
    body, rng = SphereBody(), np.random.default_rng(3)
    samples, table = [], {}
    for index in range(3):
        image = tmp_path / f"{index}.png"
        write_png(image, index)
        contact = (rng.random(42) > 0.7).astype(np.uint8)
        samples.append(HumanContactSample(image, "cup", contact, body.topology, image.name))
        table[str(image)] = rng.random(42).astype(np.float32)
    predictor = FixedPredictor(body, table)
    report = evaluate.evaluate_human_contact(predictor, samples, geodesic=True)
    matrix = cached_geodesic_matrix(body.vertices, body.faces, body.topology)
    pred, gt = np.stack([table[str(s.image_path)] for s in samples]), np.stack([s.contact for s in samples])
    assert report.overall == metrics.contact_metrics(pred, gt, geodesic=matrix)
    assert report.geodesic and report.overall.geodesic_cm > 0 and not report.is_baseline
    given = evaluate.evaluate_human_contact(predictor, samples, geodesic=matrix * 2)  # a caller's own matrix
    assert given.overall.geodesic_cm == pytest.approx(2 * report.overall.geodesic_cm)


@pytest.mark.parametrize("convention, expected", [
    # image 0: 2 predicted, 1 right, 3 in ground truth -> P 1/2, R 1/3, F1 0.4
    # image 1: nothing predicted, 2 in ground truth -> DECO P 1, R 0, F1 0; InteractVLM P = R = F1 = 0
    ("deco", ((0.5 + 1.0) / 2, (1 / 3 + 0.0) / 2, (0.4 + 0.0) / 2)),
    ("interactvlm", (0.5 / 2, (1 / 3) / 2, 0.4 / 2)),
])
def test_evaluator_scores_hand_counted_images_under_each_convention(tmp_path, convention, expected):
    body = SphereBody()
    gt = np.zeros((2, 42), np.uint8)
    gt[0, [0, 1, 2]] = 1
    gt[1, [5, 6]] = 1
    pred = np.zeros((2, 42), np.float32)
    pred[0, [2, 9]] = 0.8
    samples, table = [], {}
    for index in range(2):
        image = tmp_path / f"{index}.png"
        write_png(image, index)
        samples.append(HumanContactSample(image, "cup", gt[index], body.topology, image.name))
        table[str(image)] = pred[index]
    report = evaluate.evaluate_human_contact(FixedPredictor(body, table), samples, geodesic=False, convention=convention)
    scores = report.overall
    assert (scores.precision, scores.recall, scores.f1) == pytest.approx(expected, abs=1e-9)
    assert report.convention == convention and report.to_json()["convention"] == convention
    assert f"Metric convention: {convention}" in evaluate.summary(report)


# ---- object affordance ----------------------------------------------------------------------------------
def write_affordance_manifest(folder: Path) -> Path:
    """Two PIAD samples (2048 points, 17 columns) of different objects, and their JSONL manifest."""
    rng = np.random.default_rng(11)
    lines = []
    for index, (object_class, affordance) in enumerate((("Chair", "sit"), ("Mug", "grasp"))):
        points = rng.random((2048, 3)) - 0.5
        values = np.zeros((2048, len(PIAD_AFFORDANCES)))
        values[:, PIAD_AFFORDANCES.index(affordance)] = np.where(points[:, 1] > 0.1, rng.random(2048), 0.0)
        rows = [f"{i} {object_class} " + " ".join(f"{x:.6f}" for x in point) + " " + " ".join(f"{v:.4f}" for v in row)
                for i, (point, row) in enumerate(zip(points, values))]
        (folder / f"{object_class}.txt").write_text("\n".join(rows) + "\n")
        write_png(folder / f"{object_class}.png", 20 + index)
        lines.append(json.dumps({"image": f"{object_class}.png", "points": f"{object_class}.txt",
                                 "affordance": affordance}))
    path = folder / "manifest.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_affordance_report_equals_direct_predictions(tiny_models, open_body, tmp_path):
    predictor = load_predictor(tiny_models, "oafford", body=open_body, dtype="fp32")
    samples = read_affordance_manifest(write_affordance_manifest(tmp_path))
    report = evaluate.evaluate_affordance(predictor, samples)
    pred = np.stack([predictor.predict_object_affordance(s.image_path, s.points, object_label=s.object_class,
                                                         affordance=s.affordance).values for s in samples])
    gt = np.stack([s.values for s in samples])
    assert report.overall == metrics.affordance_metrics(pred, gt)
    assert report.kind == "affordance" and report.source == "oafford" and not report.is_baseline
    assert [row.category for row in report.categories] == ["Chair", "Mug"] and report.count == 2
    assert report.categories[0].scores == metrics.affordance_metrics(pred[:1], gt[:1])
    by_affordance = evaluate.evaluate_affordance(predictor, samples, group_by="affordance")
    assert {row.category for row in by_affordance.categories} == {"sit", "grasp"}
    assert json.loads(json.dumps(report.to_json()))["kind"] == "affordance"


def test_affordance_needs_an_object_model(prior_predictor, tmp_path):
    samples = read_affordance_manifest(write_affordance_manifest(tmp_path))
    with pytest.raises(InputError, match="oafford or joint"):
        evaluate.evaluate_affordance(prior_predictor, samples)


def test_piad_camel_case_classes_resolve():
    assert evaluate.object_label_of("StorageFurniture") == "storage furniture"
    assert evaluate.object_label_of("TrashCan") == "trash can" and evaluate.object_label_of("Mug") == "mug"


# ---- the command line ---------------------------------------------------------------------------------------
def test_cli_writes_the_json_report(empty_models, contact_npz, tmp_path, capsys):
    out = tmp_path / "reports" / "prior.json"
    code = evaluate.main(["--models", str(empty_models), "--human-data", str(contact_npz), "--no-geodesic",
                          "--json", str(out), "--limit", "3"])
    printed = capsys.readouterr().out
    assert code == 0 and "BASELINE" in printed and "category prior" in printed and "F1 (%)" in printed
    assert "Metric convention: deco (DECO / IAGNet)" in printed
    report = json.loads(out.read_text())
    assert JSON_KEYS <= set(report)
    assert report["kind"] == "contact" and report["is_baseline"] and report["source"] == PRIOR_SOURCE
    assert report["count"] == 3 and report["overall"]["count"] == 3 and report["geodesic"] is False
    assert report["model"]["topology"] == "openbody-v1" and report["model"]["type"] == "category prior"
    assert {row["category"] for row in report["categories"]} == {"chair", "supporting", "cup"}
    assert set(report["overall"]) == {"precision", "recall", "f1", "geodesic_cm", "count", "convention"}
    assert report["convention"] == "deco" and report["overall"]["convention"] == "deco"
    assert not list(out.parent.glob("*.tmp"))


def test_cli_interactvlm_convention_is_used_and_printed(empty_models, contact_npz, tmp_path, capsys):
    out = tmp_path / "ivlm.json"
    assert evaluate.main(["--models", str(empty_models), "--human-data", str(contact_npz), "--no-geodesic",
                          "--json", str(out), "--limit", "3", "--convention", "interactvlm"]) == 0
    assert "Metric convention: interactvlm (InteractVLM eval_utils)" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["convention"] == "interactvlm" and report["overall"]["convention"] == "interactvlm"


def test_unknown_convention_is_refused(prior_predictor, contact_npz):
    samples = read_damon_npz(contact_npz)
    with pytest.raises(InputError, match="convention must be one of"):
        evaluate.evaluate_human_contact(prior_predictor, samples, geodesic=False, convention="iagnet")


def test_cli_affordance_with_tiny_checkpoint(tiny_models, tmp_path, capsys):
    manifest = write_affordance_manifest(tmp_path)
    out = tmp_path / "affordance.json"
    assert evaluate.main(["--models", str(tiny_models), "--affordance-data", str(manifest), "--json", str(out),
                          "--device", "cpu"]) == 0
    assert "BASELINE" not in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["source"] == "oafford" and report["count"] == 2 and set(report["overall"]) >= {"sim", "auc", "aiou"}


@pytest.mark.parametrize("arguments, message", [
    (["--human-data", "{tmp}/absent.npz"], "not found"),
    (["--affordance-data", "{tmp}/absent.jsonl"], "not found"),
    (["--human-data", "{damon}", "--binary"], "install the SMPL-H body"),
    (["--human-data", "{contact}", "--binary"], "without --binary"),
    (["--human-data", "{contact}", "--limit", "0"], "--limit must be at least 1"),
    (["--human-data", "{contact}", "--variant", "oafford"], "InteractVLM oafford checkpoint not found"),
])
def test_cli_bad_input_exits_2_with_a_message(empty_models, contact_npz, tmp_path, capsys, arguments, message):
    values = {"tmp": tmp_path, "contact": contact_npz,
              "damon": write_damon_npz(tmp_path) if "{damon}" in arguments else ""}
    argv = ["--models", str(empty_models), "--no-geodesic"] + [a.format(**values) for a in arguments]
    assert evaluate.main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.err.startswith("error: ") and "Traceback" not in captured.err
