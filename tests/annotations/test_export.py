"""Training-data export: DAMON-style npz, PIAD-style text, manifest, filters, determinism, round trip."""
from __future__ import annotations

import json
import pickle
import uuid

import numpy as np
import pytest
import scipy.sparse as sp
from store_helpers import count_rows, write_batch

from annotations import models, qc, workflow
from annotations.batch import import_batch
from annotations.export import ExportFilters, export_training_data
from annotations.store import Store, StoreConfig
from engine.errors import InputError

PAINTS = {  # annotator -> task index -> {label: vertex ids}
    "a": [{"chair": range(0, 100), "supporting": range(6000, 6100)}, {"chair": range(10, 20)}],
    "b": [{"chair": range(0, 90)}, {"chair": range(10, 20)}],
    "c": [{"chair": range(50, 120), "supporting": range(6000, 6050)}, {"chair": range(500, 600)}],
}


def paint(store: Store, people: dict, plan: dict = PAINTS) -> None:
    for name, per_task in plan.items():
        for layers in per_task:
            assignment = workflow.next_task(store, people[name])
            workflow.submit(store, people[name], assignment.task.id,
                            {label: list(ids) for label, ids in layers.items()}, uuid.uuid4().hex)


@pytest.fixture
def filled(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'x.db'}", data_dir=tmp_path / "data", config=StoreConfig(gold_rate=0.0))
    folder = tmp_path / "batch"
    folder.mkdir()
    np.savez(folder / "mug.npz", points=np.random.default_rng(1).random((2048, 3)) - 0.5)
    rows = [{"image": f"img{i}.png", "labels": ["chair", "supporting"], "topology": "smplh-6890",
             "source": "lab camera", "licence": "CC-BY-4.0"} for i in range(2)]
    rows.append({"image": "img0.png", "kind": "object_affordance", "labels": ["sit"], "object": "mug.npz",
                 "object_class": "mug", "redundancy": 2, "priority": -1})
    import_batch(store, write_batch(folder, rows))
    people = {name: store.ensure_annotator(name).id for name in "abc"}
    paint(store, people)
    for name, values in (("a", np.linspace(0, 1, 2048)), ("b", np.full(2048, 0.25))):
        task = workflow.next_task(store, people[name]).task
        workflow.submit(store, people[name], task.id, {"sit": values}, uuid.uuid4().hex)
    return store, people


def test_damon_npz_has_the_documented_keys_shapes_and_majority(filled, tmp_path):
    store, _ = filled
    manifest = export_training_data(store, tmp_path / "out")
    with np.load(tmp_path / "out/contact_smplh-6890.npz") as data:  # plain numpy: allow_pickle=False
        assert set(data.files) == {"imgname", "contact_label", "contact_label_objectwise",
                                   "contact_label_objectwise_json", "topology"}
        labels, names = data["contact_label"], data["imgname"]
        objectwise = [json.loads(text) for text in data["contact_label_objectwise_json"]]
        assert str(data["topology"]) == "smplh-6890"
    assert labels.shape == (2, 6890) and labels.dtype == np.uint8
    # Task 1: chair 0..99 / 0..89 / 50..119 -> 2 of 3 on 0..99 -> majority 0..99; supporting 6000..6049.
    assert objectwise[0] == {"chair": list(range(0, 100)), "supporting": list(range(6000, 6050))}
    assert objectwise[1] == {"chair": list(range(10, 20)), "supporting": []}
    assert np.flatnonzero(labels[0]).tolist() == list(range(100)) + list(range(6000, 6050))
    assert all((tmp_path / "out" / name).is_file() for name in names)
    with np.load(tmp_path / "out/contact_smplh-6890.npz", allow_pickle=True) as data:
        assert data["contact_label_objectwise"][0]["chair"] == list(range(100))  # DAMON's dict form
    lines = [json.loads(line) for line in (tmp_path / "out/manifest.jsonl").read_text().splitlines()]
    assert [line["kind"] for line in lines] == ["human_contact", "human_contact", "object_affordance"]
    masks = np.zeros((3, 2 * 6890), bool)
    for row, name in enumerate("abc"):
        for label, ids in PAINTS[name][0].items():
            masks[row, np.array(list(ids)) + (6890 if label == "supporting" else 0)] = True
    assert lines[0]["provenance"]["annotators"] == 3
    assert lines[0]["provenance"]["agreement"]["fleiss_kappa"] == pytest.approx(qc.fleiss_kappa(masks), abs=1e-6)
    assert (lines[0]["source"], lines[0]["licence"], lines[0]["row"]) == ("lab camera", "CC-BY-4.0", 0)
    assert manifest.counts == {"tasks": 3, "human_contact": 2, "object_affordance": 1}
    assert count_rows(store, models.ExportRow) == 1


def test_piad_text_holds_points_and_the_mean_affordance(filled, tmp_path):
    store, _ = filled
    export_training_data(store, tmp_path / "out")
    (text_file,) = (tmp_path / "out/affordance").iterdir()
    table = np.loadtxt(text_file, dtype=str)
    assert table.shape == (2048, 5 + 17)
    assert table[0, 0] == "0" and table[5, 1] == "mug"
    values = table[:, 5:].astype(float)
    sit = values[:, 5]  # "sit" is PIAD's sixth affordance
    np.testing.assert_allclose(sit, (np.linspace(0, 1, 2048) + 0.25) / 2, atol=1e-4)
    assert np.all(np.delete(values, 5, axis=1) == 0)
    np.testing.assert_allclose(table[:, 2:5].astype(float), store.object_points(1), atol=1e-6)


def test_export_is_deterministic_and_round_trips(filled, tmp_path):
    store, _ = filled
    first = export_training_data(store, tmp_path / "one")
    second = export_training_data(store, tmp_path / "two")
    assert first.content_hash == second.content_hash
    for name in first.files:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    copy = Store(f"sqlite:///{tmp_path / 'copy.db'}", data_dir=tmp_path / "copy-data")
    report = import_batch(copy, tmp_path / "one")
    assert report.num_tasks == 3
    assert all(copy.task(task_id).is_gold for task_id in copy.task_ids())
    again = export_training_data(copy, tmp_path / "three", ExportFilters(source="gold"))
    for name, digest in again.files.items():
        if name != "manifest.jsonl":  # task ids are new in the second store
            assert first.files[name] == digest, name
    old_lines = (tmp_path / "one/manifest.jsonl").read_text().splitlines()
    new_lines = (tmp_path / "three/manifest.jsonl").read_text().splitlines()
    for old, new in zip(old_lines, new_lines):
        old, new = json.loads(old), json.loads(new)
        assert {**old, "task_id": 0} == {**new, "task_id": 0}  # provenance travels with the labels


def test_filters_agreement_flags_qualification_and_weights(filled, tmp_path):
    store, people = filled
    strict = export_training_data(store, tmp_path / "strict", ExportFilters(min_agreement=0.9))
    assert strict.counts["human_contact"] == 0  # task 1 kappa < 0.9, task 2 one dissenter
    store.set_qualification(people["c"], "qualified")
    only_c = export_training_data(store, tmp_path / "qualified", ExportFilters(only_qualified=True))
    with np.load(tmp_path / "qualified/contact_smplh-6890.npz") as data:
        objectwise = [json.loads(text) for text in data["contact_label_objectwise_json"]]
    assert objectwise[1]["chair"] == list(range(500, 600)) and only_c.counts["object_affordance"] == 0
    three_people = Store(f"sqlite:///{tmp_path / 'w.db'}", data_dir=tmp_path / "w-data",
                         config=StoreConfig(gold_rate=0.5))
    rows = [{"image": "img0.png", "labels": ["chair"], "gold": True, "gold_answer": {"chair": list(range(50))}},
            {"image": "img1.png", "labels": ["chair"], "redundancy": 3}]
    import_batch(three_people, write_batch(tmp_path / "wb", rows))
    who = {name: three_people.ensure_annotator(name).id for name in "abc"}
    # Rate 0.5: the real task first, then gold. On gold a is exact while b and c are far off
    # (accuracy 1, 0, 0); on the real task b and c outvote a unless votes are weighted.
    paint(three_people, who, {"a": [{"chair": range(50)}, {"chair": range(50)}],
                              "b": [{"chair": range(100, 150)}, {"chair": range(3000, 3050)}],
                              "c": [{"chair": range(100, 150)}, {"chair": range(4000, 4050)}]})
    plain = export_training_data(three_people, tmp_path / "plain")
    weighted = export_training_data(three_people, tmp_path / "weighted", ExportFilters(weighted=True))
    with np.load(tmp_path / "plain/contact_smplh-6890.npz") as a, \
            np.load(tmp_path / "weighted/contact_smplh-6890.npz") as b:
        assert np.flatnonzero(a["contact_label"][0]).tolist() == list(range(100, 150))
        assert np.flatnonzero(b["contact_label"][0]).tolist() == list(range(50))
    assert plain.content_hash != weighted.content_hash


def test_flagged_tasks_are_excluded_unless_asked(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'f.db'}", data_dir=tmp_path / "data", config=StoreConfig(gold_rate=0.0))
    import_batch(store, write_batch(tmp_path / "b", [{"image": "img0.png", "labels": ["chair"], "redundancy": 2}]))
    first, second = store.ensure_annotator("a").id, store.ensure_annotator("b").id
    task_id = workflow.next_task(store, first).task.id
    workflow.submit(store, first, task_id, {"chair": [1, 2]}, uuid.uuid4().hex)
    workflow.next_task(store, second)
    workflow.flag(store, second, task_id, "no_contact_visible")
    assert export_training_data(store, tmp_path / "x").counts["tasks"] == 0
    assert export_training_data(store, tmp_path / "y", ExportFilters(exclude_flagged=False)).counts["tasks"] == 1


def test_smplx_variant_through_the_topology_map(filled, tmp_path):
    store, _ = filled
    models_dir = tmp_path / "models"
    (models_dir / "body").mkdir(parents=True)
    rows = np.arange(10475)
    matrix = sp.csr_matrix((np.ones(10475), (rows, rows % 6890)), shape=(10475, 6890))
    (models_dir / "body/smpl_to_smplx.pkl").write_bytes(pickle.dumps({"matrix": matrix}))
    export_training_data(store, tmp_path / "out", models_dir=models_dir)
    with np.load(tmp_path / "out/contact_smplh-6890.npz") as data:
        smplx, smplh = data["contact_label_smplx"], data["contact_label"]
    assert smplx.shape == (2, 10475) and smplx.dtype == np.uint8
    np.testing.assert_array_equal(smplx, smplh[:, rows % 6890])


def test_bad_export_requests_fail_cleanly(filled, tmp_path):
    store, _ = filled
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy/keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        export_training_data(store, tmp_path / "busy")
    assert (tmp_path / "busy/keep.txt").read_text() == "mine"
    for bad in ({"source": "crowd"}, {"min_agreement": 2.0}, {"agreement_metric": "f1"}, {"min_annotators": 0}):
        with pytest.raises(InputError):
            ExportFilters(**bad)


# ---- the InteractVLM release's DAMON layout -------------------------------------------------------------
RELEASE_VIEWS = ("topfront", "bottomfront", "topback", "bottomback")


def release_damon_loader(base_image_dir, split="train"):
    """A plain statement of the reading logic of the release's ``init_damon_hcontact`` (objectwise mode):
    image list -> per image the objects with contact -> 6890 contact array, mask paths, parts string."""
    import os

    base = base_image_dir / f"damon/{split}"
    image_list = np.load(base / "imgname.npy", allow_pickle=True)
    images = [base / "images" / os.path.basename(name) for name in image_list]
    with open(base / "contact_label_objectwise.pkl", "rb") as handle:  # what joblib.load reads
        objectwise = pickle.load(handle)
    with open(base / "body_parts_objectwise.pkl", "rb") as handle:
        body_parts = pickle.load(handle)
    samples = []
    for index, image in enumerate(images):
        base_name = os.path.basename(image)[:-4]
        for obj_name, contact_vertices in objectwise[index].items():
            if len(contact_vertices) == 0:
                continue
            contact = np.zeros(6890, dtype=int)
            contact[contact_vertices] = 1
            masks = [base / "hcontact_vitruvian" / obj_name / f"{base_name}_{view}.png" for view in RELEASE_VIEWS]
            if not all(path.is_file() for path in masks):
                continue
            parts = ", ".join(body_parts[f"{base_name}_{obj_name}"])
            samples.append((image, obj_name, contact, masks, parts))
    return samples


@pytest.fixture
def smplh_models(tmp_path):
    from fakes import write_fake_smpl_family

    write_fake_smpl_family(tmp_path / "models", "smplh")
    return tmp_path / "models"


def test_interactvlm_export_reads_back_through_the_release_loader(filled, smplh_models, tmp_path):
    from PIL import Image

    from annotations.export import export_interactvlm
    from engine import rll
    from engine.body import load_body

    store, _ = filled
    manifest = export_interactvlm(store, tmp_path / "out", models_dir=smplh_models, mask_size=64)
    samples = release_damon_loader(tmp_path / "out")
    # majority labels (see PAINTS): image 0 chair 0..99 and supporting 6000..6049; image 1 chair 10..19,
    # its empty "supporting" layer is not written (the release skips empty objects)
    assert [(sample[1], np.flatnonzero(sample[2]).tolist()) for sample in samples] == [
        ("chair", list(range(100))), ("supporting", list(range(6000, 6050))), ("chair", list(range(10, 20)))]
    assert all(sample[0].is_file() for sample in samples) and samples[0][0] == samples[1][0] != samples[2][0]
    body = load_body("smplh", smplh_models)
    views = rll.render_views(body.vitruvian_vertices(), body.faces, preset="body", resolution=64, topology=body.topology)
    for image, obj_name, contact, masks, parts in samples:
        expected = rll.project(views, contact.astype(bool), min_vertices=3)
        read = np.stack([np.asarray(Image.open(path)) for path in masks])
        assert read.shape == (4, 64, 64) and set(np.unique(read)) <= {0, 255}
        np.testing.assert_array_equal(read == 255, expected)
        from engine.contact.prior import part_contact_summary
        assert parts == ", ".join(p.replace("_", " ") for p in part_contact_summary(body, contact.astype(np.float32)))
    assert manifest.counts["human_contact"] == 2 and manifest.counts["images"] == 2
    info = json.loads((tmp_path / "out/export.json").read_text())
    assert info["format"] == "interactvlm-damon-hcontact/1" and info["content_hash"] == manifest.content_hash
    objectwise_npy = np.load(tmp_path / "out/damon/train/contact_label_objectwise.npy", allow_pickle=True)
    assert objectwise_npy[0]["chair"] == list(range(100))  # the first code drop's file name


def test_interactvlm_export_refuses_what_the_release_cannot_read(filled, smplh_models, tmp_path):
    from annotations.export import export_interactvlm

    store, _ = filled
    with pytest.raises(InputError, match="split must be"):
        export_interactvlm(store, tmp_path / "a", models_dir=smplh_models, split="val")
    with pytest.raises(FileNotFoundError, match="SMPL-H|smplh"):
        export_interactvlm(store, tmp_path / "b", models_dir=tmp_path / "no-models", mask_size=64)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x").write_text("")
    with pytest.raises(InputError, match="not empty"):
        export_interactvlm(store, tmp_path / "c", models_dir=smplh_models)


def test_cli_export_format_interactvlm(filled, smplh_models, tmp_path, capsys, monkeypatch):
    from annotations import __main__ as cli
    from annotations import export as export_module

    store, _ = filled
    args = cli.build_parser().parse_args(["export", str(tmp_path / "out"), "--format", "interactvlm",
                                          "--models", str(smplh_models)])
    assert args.format == "interactvlm" and args.split == "train"
    # the CLI uses the release's 1024 masks; 64 keeps the test fast
    monkeypatch.setattr(export_module.export_interactvlm, "__kwdefaults__",
                        {**export_module.export_interactvlm.__kwdefaults__, "mask_size": 64})
    result = cli.export(store, args)
    assert result["format"] == "interactvlm" and (tmp_path / "out/damon/train/imgname.npy").is_file()


# ---- every filter can fail: each test breaks when its filter is ignored -----------------------------------
def manifest_of(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]


def test_min_annotators_drops_tasks_with_fewer_submissions(filled, tmp_path):
    store, _ = filled  # both contact tasks have 3 submissions, the affordance task 2
    counts = {k: export_training_data(store, tmp_path / f"m{k}", ExportFilters(min_annotators=k)).counts
              for k in (2, 3, 4)}
    assert (counts[2]["human_contact"], counts[2]["object_affordance"]) == (2, 1)
    assert (counts[3]["human_contact"], counts[3]["object_affordance"]) == (2, 0)
    assert counts[4]["tasks"] == 0
    assert {row["provenance"]["annotators"] for row in manifest_of(tmp_path / "m3")} == {3}


def pairwise_iou(masks: np.ndarray) -> float:
    """Brute force: mean over annotator pairs of |A & B| / |A | B|."""
    values = [(a & b).sum() / (a | b).sum() for i, a in enumerate(masks) for b in masks[i + 1:]]
    return float(np.mean(values))


def test_agreement_metric_iou_keeps_tasks_by_mean_pairwise_iou(filled, tmp_path):
    store, _ = filled
    from annotations.review import load_task_annotations

    entries = load_task_annotations(store)
    human = sorted(task_id for task_id, entry in entries.items() if entry.kind == "human_contact")
    iou = {task_id: pairwise_iou(entries[task_id].masks()) for task_id in human}
    kappa = {task_id: qc.agreement(entries[task_id].masks()).fleiss_kappa for task_id in human}
    # task 1: IoU 0.38, kappa 0.56; task 2: IoU 1/3, kappa 0.08. At 0.3 IoU keeps both, kappa only task 1.
    assert iou[human[1]] == pytest.approx(1 / 3) and kappa[human[1]] < 0.3 <= kappa[human[0]]
    for task_id in human:  # the two metrics disagree here, so ignoring the metric changes the result
        assert iou[task_id] == pytest.approx(qc.agreement(entries[task_id].masks()).mean_pairwise_iou)
    by_iou = export_training_data(store, tmp_path / "iou", ExportFilters(min_agreement=0.3, agreement_metric="iou"))
    by_kappa = export_training_data(store, tmp_path / "kappa", ExportFilters(min_agreement=0.3))
    kept_iou = {row["task_id"] for row in manifest_of(tmp_path / "iou") if row["kind"] == "human_contact"}
    kept_kappa = {row["task_id"] for row in manifest_of(tmp_path / "kappa") if row["kind"] == "human_contact"}
    assert kept_iou == set(human) and kept_kappa == {human[0]}
    assert kept_iou != kept_kappa and by_iou.content_hash != by_kappa.content_hash
    assert json.loads((tmp_path / "iou/export.json").read_text())["filters"]["agreement_metric"] == "iou"


def test_smplx_variant_thresholds_the_mapped_values_at_one_half(filled, tmp_path):
    """A map whose rows mix two SMPL-H vertices with weights 0.3/0.7, 0.5/0.5 and 0.7/0.3: an SMPL-X vertex is
    in contact exactly when its weighted contact reaches 0.5 (checked vertex by vertex)."""
    store, _ = filled
    models_dir = tmp_path / "models"
    (models_dir / "body").mkdir(parents=True)
    rows = np.arange(10475)
    first, second = rows % 6890, (rows * 7 + 1) % 6890
    weight = np.array([0.3, 0.5, 0.7])[rows % 3]
    matrix = sp.csr_matrix((np.concatenate([weight, 1 - weight]), (np.concatenate([rows, rows]),
                                                                    np.concatenate([first, second]))),
                           shape=(10475, 6890))
    (models_dir / "body/smpl_to_smplx.pkl").write_bytes(pickle.dumps({"matrix": matrix}))
    export_training_data(store, tmp_path / "out", models_dir=models_dir)
    with np.load(tmp_path / "out/contact_smplh-6890.npz") as data:
        smplx, smplh = data["contact_label_smplx"], data["contact_label"]
    expected = np.zeros_like(smplx)
    for n in range(len(smplh)):
        for i in range(10475):
            expected[n, i] = weight[i] * smplh[n, first[i]] + (1 - weight[i]) * smplh[n, second[i]] >= 0.5 - 1e-9
    np.testing.assert_array_equal(smplx, expected)
    assert 0 < smplx.sum() < (smplx | expected).size and (smplx != (smplh[:, first] | smplh[:, second])).any()


def test_manifest_records_the_seeding_prediction_and_the_image_origin(tmp_path):
    """Field by field: a stored prediction (imported with its model, version and source), the prior the painter
    computed (recorded per submission), and nothing at all."""
    store = Store(f"sqlite:///{tmp_path / 'p.db'}", data_dir=tmp_path / "data", config=StoreConfig(gold_rate=0.0))
    folder = tmp_path / "batch"
    folder.mkdir()
    np.savez(folder / "pred.npz", chair=np.linspace(0, 1, 6890))
    rows = [{"image": "img0.png", "labels": ["chair"], "topology": "smplh-6890", "redundancy": 2,
             "prediction": "pred.npz", "model_name": "interactvlm-hcontact", "model_version": "v1.2",
             "parameters": {"source": "lab run 7"}, "source": "lab camera 3", "licence": "CC-BY-4.0",
             "original_name": "DSC_0042.JPG"},
            {"image": "img1.png", "labels": ["chair"], "topology": "smplh-6890", "redundancy": 2},
            {"image": "img2.png", "labels": ["chair"], "topology": "smplh-6890", "redundancy": 1}]
    import_batch(store, write_batch(folder, rows))
    prior = {"model_name": "baseline: category prior", "model_version": "table-0123456789ab",
             "source": "computed by the studio for the painter"}
    people = [store.ensure_annotator(name).id for name in ("p", "q")]
    for person in people:
        for _ in range(3 if person == people[0] else 1):
            task = workflow.next_task(store, person).task
            seed = None if task.id == 3 else ({"model_name": task.prediction.model_name, "model_version":
                                               task.prediction.model_version, "source": "lab run 7"}
                                              if task.prediction else prior)
            workflow.submit(store, person, task.id, {"chair": [1, 2]}, uuid.uuid4().hex,
                            client_info={"client": "studio", **({"seed": seed} if seed else {})})
    task = workflow.next_task(store, people[1]).task
    workflow.submit(store, people[1], task.id, {"chair": [1]}, uuid.uuid4().hex, client_info={"client": "api"})
    export_training_data(store, tmp_path / "out")
    lines = {row["task_id"]: row for row in manifest_of(tmp_path / "out")}
    assert sorted(lines) == [1, 2, 3]
    first, second, third = lines[1], lines[2], lines[3]
    assert (first["original_name"], first["source"], first["licence"]) == ("DSC_0042.JPG", "lab camera 3", "CC-BY-4.0")
    assert second["original_name"] == "img1.png" and second["source"] is None
    assert first["provenance"]["prediction"] == {"model_name": "interactvlm-hcontact", "model_version": "v1.2",
                                                 "source": "lab run 7", "baseline": False}
    assert first["provenance"]["submission_seeds"] == [{"model_name": "interactvlm-hcontact", "model_version": "v1.2",
                                                        "source": "lab run 7"}] * 2
    assert second["provenance"]["prediction"] == {**prior, "baseline": True}
    assert second["provenance"]["submission_seeds"] == [prior, None], "q's submission came without a seed"
    assert third["provenance"]["prediction"] is None and third["provenance"]["submission_seeds"] == [None]
    assert [first["provenance"]["annotators"], second["provenance"]["annotators"]] == [2, 2]
