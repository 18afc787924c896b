"""The public demo (``/``) through ``gradio_client``: contact, "Correct this", affordance, and bad input.

``studio_server`` has no licensed files (open body, category prior, no affordance checkpoint);
``model_server`` has tiny seeded InteractVLM checkpoints, so the real model path runs.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import httpx
import numpy as np
import pytest
import trimesh
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from sqlalchemy import select

from annotations import models
from engine import rll
from engine.contact.prior import PRIOR_SOURCE, predict_category_prior
from engine.objects import builtin_object
from studio import exports

TOPOLOGY, VERTICES = "openbody-v1", 10614
NPZ_KEYS = {"imgname", "labels", "probabilities", "contact_label", "contact_label_objectwise_json", "topology",
            "source", "answers"}


def demo(running) -> Client:
    return Client(running.url + "/", verbose=False)


def same_browser(running, client: Client, page: str = "/annotate/") -> Client:
    """Another page opened in the same browser as ``client`` (its session cookie)."""
    return Client(running.url + page, verbose=False, httpx_kwargs={"cookies": dict(client.cookies)})


def predict_contact(client: Client, picture, labels) -> tuple:
    return client.predict(handle_file(str(picture)), labels, api_name="/predict_contact")


def load_glb(path) -> trimesh.Trimesh | trimesh.PointCloud:
    scene = trimesh.load(path, process=False)
    geometries = list(scene.geometry.values())
    assert len(geometries) == 1, "one mesh per GLB"
    return geometries[0]


def blend(probabilities: np.ndarray, colours: list[str]) -> np.ndarray:
    """What the GLB's vertex colours must be: grey blended towards each label's colour (uint8 RGB)."""
    return np.round(exports.blend_vertex_colours(probabilities, colours) * 255).astype(int)


def colour_weight(rgb: np.ndarray, colour: str) -> np.ndarray:
    """How far each (V, 3) uint8 colour lies from grey towards ``colour`` (0 = grey, 1 = the label colour)."""
    grey, target = exports.BASE_GREY * 255, exports.hex_to_rgb(colour) * 255
    return (rgb - grey) @ (target - grey) / np.sum((target - grey) ** 2)


def check_still_serving(client: Client, picture) -> None:
    """After an error, a good request still gets a full answer."""
    glb, _, _, source, files = predict_contact(client, picture, ["cup"])
    assert len(load_glb(glb).vertices) == VERTICES
    assert PRIOR_SOURCE in source and len(files) == 2


@pytest.fixture(scope="module")
def body(studio_server):
    return studio_server.studio.body(TOPOLOGY)


@pytest.fixture(scope="module")
def chair(studio_server, picture):
    """One category-prior prediction for "chair", shared by the tests that only read it."""
    return predict_contact(demo(studio_server), picture, ["chair"])


# ---- contact on the category prior ----------------------------------------------------------------
def test_contact_glb_is_the_open_body_coloured_where_the_prior_says_chair(chair, body):
    glb, *_ = chair
    mesh = load_glb(glb)
    expected = predict_category_prior(body, "chair").probabilities
    assert mesh.vertices.shape == (VERTICES, 3) and len(mesh.faces) == len(body.faces)
    np.testing.assert_allclose(mesh.vertices, body.vitruvian_vertices().detach().cpu().numpy(), atol=1e-5)
    colours = np.asarray(mesh.visual.vertex_colors)
    assert colours.shape == (VERTICES, 4) and np.all(colours[:, 3] == 255)
    rgb = colours[:, :3].astype(int)
    chair_colour = exports.label_colours(["chair"])["chair"]
    assert np.abs(rgb - blend(expected[None], [chair_colour])).max() <= 1
    # The prior's values are 0, .3, .5, .8 and .9: the chair colour dominates exactly where p >= 0.5.
    chair_like = colour_weight(rgb, chair_colour) >= 0.45
    assert np.array_equal(chair_like, expected >= 0.5)
    assert 200 < chair_like.sum() < VERTICES / 2
    assert np.all(rgb[expected == 0] == np.round(exports.BASE_GREY * 255)), "untouched vertices stay grey"


def test_contact_npz_has_the_documented_keys_and_the_prior_values(chair, body):
    *_, files = chair
    assert [name.rsplit("/", 1)[-1] for name in files] == ["contact.npz", "contact.glb"]
    expected = predict_category_prior(body, "chair").probabilities
    with np.load(files[0]) as data:  # allow_pickle=False: every key loads without pickles
        assert set(data.files) == NPZ_KEYS, "no SMPL-X probabilities without the topology map"
        assert data["labels"].tolist() == ["chair"]
        assert data["probabilities"].shape == (1, VERTICES) and data["probabilities"].dtype == np.float32
        np.testing.assert_array_equal(data["probabilities"][0], expected.astype(np.float32))
        assert data["contact_label"].dtype == np.uint8
        np.testing.assert_array_equal(data["contact_label"], (expected >= 0.5).astype(np.uint8))
        objectwise = json.loads(data["contact_label_objectwise_json"].tobytes().decode())
        assert objectwise == {"chair": np.flatnonzero(expected >= 0.5).tolist()}
        assert data["topology"].item() == TOPOLOGY
        assert data["source"].item() == PRIOR_SOURCE == "baseline: category prior"
        assert data["imgname"].item() == "person.png"


def test_contact_grid_tints_the_four_views_where_the_masks_are(chair, body):
    _, grid_path, answers, source, _ = chair
    grid = np.asarray(Image.open(grid_path).convert("RGB")).astype(float)
    size = 512  # the category prior renders its views at 512
    assert grid.shape == (2 * size, 2 * size, 3)
    # Where the prior's contact (p >= 0.5) projects into each of the four views, the chair colour is tinted on.
    views = rll.render_views(body.vitruvian_vertices(), body.faces, preset="body", resolution=size,
                             topology=TOPOLOGY)
    masks = rll.project(views, predict_category_prior(body, "chair").probabilities >= 0.5) > 0.5
    tinted = np.concatenate([np.concatenate(list(masks[:2]), 1), np.concatenate(list(masks[2:]), 1)], 0)
    body_pixels = (grid < 245).any(-1)
    assert 0.005 < tinted.mean() < 0.2 and 0.02 < body_pixels.mean() < 0.5
    assert body_pixels[tinted].mean() > 0.98, "the tint lies on the body"
    for quadrant in (tinted[:size, :size], tinted[:size, size:], tinted[size:, :size], tinted[size:, size:]):
        assert quadrant.sum() > 500, "every view shows some contact"
    colour = exports.label_colours(["chair"])["chair"]
    distance = np.linalg.norm(grid - exports.hex_to_rgb(colour) * 255, axis=-1)
    inside, outside = np.median(distance[tinted]), np.median(distance[body_pixels & ~tinted])
    assert inside < 0.5 * outside, (inside, outside)
    assert (distance[tinted] < (inside + outside) / 2).mean() > 0.9, "the chair colour covers the masked pixels"
    assert (distance[body_pixels & ~tinted] < inside).mean() < 0.1, "and little else"
    assert "<b>chair</b>" in answers and answers.count("<li>") == 1 and f"color:{colour}" in answers
    assert "hips" in answers and "lower_back" in answers
    assert "baseline: category prior" in source and "a baseline, not the model" in source


def test_several_labels_give_one_row_and_one_colour_each(studio_server, picture, body):
    labels = ["chair", "cup", "bottle"]
    glb, grid_path, answers, source, files = predict_contact(demo(studio_server), picture, labels)
    colours = list(exports.label_colours(labels).values())
    assert len(set(colours)) == 3
    with np.load(files[0]) as data:
        assert data["labels"].tolist() == labels
        assert data["probabilities"].shape == (3, VERTICES)
        for row, label in zip(data["probabilities"], labels):
            np.testing.assert_array_equal(row, predict_category_prior(body, label).probabilities)
        union = (data["probabilities"] >= 0.5).any(0)
        np.testing.assert_array_equal(data["contact_label"], union.astype(np.uint8))
        assert set(json.loads(data["contact_label_objectwise_json"].tobytes())) == set(labels)
        expected_colours = blend(data["probabilities"], colours)
    assert answers.count("<li>") == 3
    for label, colour in zip(labels, colours):
        assert f"<b>{label}</b>" in answers and f"color:{colour}" in answers
    rgb = np.asarray(load_glb(glb).visual.vertex_colors)[:, :3].astype(int)
    assert np.abs(rgb - expected_colours).max() <= 1
    assert Image.open(grid_path).size == (1024, 1024)
    assert PRIOR_SOURCE in source


def test_labels_that_differ_only_in_case_or_spaces_are_merged(studio_server, picture):
    *_, files = predict_contact(demo(studio_server), picture, ["cup", "Cup", " cup "])
    with np.load(files[0]) as data:
        assert data["labels"].tolist() == ["cup"] and data["probabilities"].shape == (1, VERTICES)


# ---- correct this -----------------------------------------------------------------------------------
def test_correct_contact_makes_a_task_for_a_new_worker_seeded_with_the_prediction(studio_server, picture):
    store = studio_server.studio.store
    client = demo(studio_server)
    before = set(store.task_ids())
    *_, files = predict_contact(client, picture, ["chair", "cup"])
    link = client.predict(api_name="/correct_contact")
    assert link.startswith(studio_server.url + "/annotate?worker=demo-") \
        and len(link) == len(studio_server.url + "/annotate?worker=demo-") + 16, "an absolute link"
    worker = link.split("worker=", 1)[1]
    (task_id,) = set(store.task_ids()) - before
    task = store.task(task_id)
    assert task.kind == "human_contact" and task.topology == TOPOLOGY and task.redundancy == 1
    assert task.labels == ("chair", "cup", "supporting")
    assert task.image.path.read_bytes() == picture.read_bytes()
    assert task.prediction is not None and task.prediction.model_name == PRIOR_SOURCE
    with np.load(files[0]) as data:
        probabilities = dict(zip(data["labels"].tolist(), data["probabilities"]))
    assert set(task.prediction.layers) == {"chair", "cup"}
    for label, values in probabilities.items():
        np.testing.assert_array_equal(task.prediction.layers[label], values)
    with store.session() as session:
        rows = session.execute(select(models.AssignmentRow.status, models.AnnotatorRow.external_id)
                               .join(models.AnnotatorRow, models.AnnotatorRow.id == models.AssignmentRow.annotator_id)
                               .where(models.AssignmentRow.task_id == task_id)).all()
    assert [tuple(row) for row in rows] == [("assigned", worker)]

    # The painter link works in the visitor's own browser (its session cookie), nowhere else.
    with pytest.raises(AppError, match="belongs to another browser session"):
        Client(studio_server.url + "/annotate/", verbose=False).predict(worker, api_name="/start_session")
    annotate = same_browser(studio_server, client)
    image, text, progress, payload, _ = annotate.predict(worker, api_name="/start_session")[:5]
    painter = json.loads(payload)
    assert painter["task_id"] == task_id and f"Task {task_id}" in text
    assert painter["topology"] == TOPOLOGY and painter["mesh_url"].startswith(f"/studio/payload/body/{TOPOLOGY}/")
    assert painter["labels"] == list(task.labels)
    starting = httpx.get(studio_server.url + painter["annotation_url"], cookies=client.cookies, timeout=30).json()
    assert set(starting["layers"]) == {"chair", "cup"}
    for label, values in probabilities.items():
        assert starting["layers"][label] == np.flatnonzero(values >= 0.5).tolist()
    shown = httpx.get(studio_server.url + painter["image_url"], cookies=client.cookies, timeout=30)
    assert f'src="{painter["image_url"]}"' in image
    assert Image.open(io.BytesIO(shown.content)).size == Image.open(picture).size
    assert "**0** done" in progress
    # A reload of the painter link gives the same task back; nobody else gets it (its one slot is taken).
    reload = same_browser(studio_server, client)
    assert json.loads(reload.predict(worker, api_name="/start_session")[3])["task_id"] == task_id
    other = Client(studio_server.url + "/annotate/", verbose=False)
    assert other.predict("someone-else", api_name="/start_session")[3] == ""


def test_correct_contact_before_predicting_or_for_binary_contact_is_refused(studio_server, picture):
    client = demo(studio_server)
    count = len(studio_server.studio.store.task_ids())
    with pytest.raises(AppError, match="predict contact first"):
        client.predict(api_name="/correct_contact")
    with pytest.raises(AppError, match="needs an object label"):  # the prior cannot do binary contact
        predict_contact(client, picture, [])
    assert len(studio_server.studio.store.task_ids()) == count
    check_still_serving(client, picture)


# ---- affordance without a checkpoint ----------------------------------------------------------------
def test_affordance_without_checkpoint_names_the_missing_file(studio_server, picture):
    client = demo(studio_server)
    with pytest.raises(AppError) as error:
        client.predict(handle_file(str(picture)), "chair", None, "chair", "sit", api_name="/predict_affordance")
    message = str(error.value)
    assert str(studio_server.models_dir) not in message  # visitors never see server paths
    assert "interactvlm/oafford/config.json" in message and "Paint instead" in message


def test_paint_affordance_makes_an_object_task_served_as_mesh_json(studio_server, picture):
    store = studio_server.studio.store
    client = demo(studio_server)
    chair_object = builtin_object("chair")
    count = len(chair_object.vertices)
    before = set(store.task_ids())
    link = client.predict(handle_file(str(picture)), "chair", None, "chair", "sit", api_name="/paint_affordance")
    assert link.startswith(studio_server.url + "/annotate?worker=demo-")
    (task_id,) = set(store.task_ids()) - before
    task = store.task(task_id)
    assert task.kind == "object_affordance" and task.labels == ("sit",) and task.object_class == "chair"
    assert task.topology == f"points-{count}"
    # The object is served to the browser holding the task (and the admin), to nobody else.
    assert httpx.get(f"{studio_server.url}/studio/mesh/task/{task_id}.json", timeout=30).status_code == 404
    annotate = same_browser(studio_server, client)
    worker = link.split("worker=", 1)[1]
    _, text, _, payload, _ = annotate.predict(worker, api_name="/start_session")[:5]
    response = httpx.get(f"{studio_server.url}/studio/mesh/task/{task_id}.json", cookies=client.cookies, timeout=30)
    assert response.status_code == 200
    mesh = response.json()
    assert mesh["topology"] == f"points-{count}"
    np.testing.assert_allclose(np.reshape(mesh["vertices"], (-1, 3)), chair_object.vertices, atol=1e-5)
    assert np.array_equal(np.reshape(mesh["faces"], (-1, 3)), chair_object.faces)
    assert httpx.get(f"{studio_server.url}/studio/mesh/task/999999.json", timeout=30).status_code == 404

    # The painter link opens that task; painting three points stores 1 on exactly those points.
    painter = json.loads(payload)
    assert painter["task_id"] == task_id and painter["mesh_url"] == f"/studio/mesh/task/{task_id}.json"
    assert painter["kind"] == "object_affordance" and painter["labels"] == ["sit"]
    assert "where a person would sit on the <b>chair</b>" in text
    painted = json.dumps({"task": task_id, "topology": f"points-{count}", "layers": {"sit": [0, 5, count - 1]}})
    done = annotate.predict(painted, api_name="/submit")
    # The visitor is thanked and sent back to the demo, never handed the lab's crowd tasks.
    assert done[3] == "" and "Thank you!" in done[1] and f'href="{studio_server.url}/"' in done[1].replace("'", '"')
    assert "Submitted task" in done[4]
    from annotations.review import load_task_annotations

    entry = load_task_annotations(store, task_ids=[task_id])[task_id]
    assert entry.layers.shape == (1, 1, count)
    assert np.flatnonzero(entry.layers[0, 0]).tolist() == [0, 5, count - 1]
    assert set(np.unique(entry.layers).tolist()) == {0.0, 1.0}


def test_object_label_follows_the_chosen_object(studio_server):
    client = demo(studio_server)
    assert client.predict("bowl", api_name="/object_label_for") == builtin_object("bowl").class_name == "bowl"
    assert client.predict("table", api_name="/object_label_for") == builtin_object("table").class_name


# ---- bad input: a clear error, and the server keeps serving ------------------------------------------
def test_text_file_named_png_is_refused(studio_server, picture, tmp_path):
    client = demo(studio_server)
    fake = tmp_path / "fake.png"
    fake.write_text("this is not an image at all")
    with pytest.raises(AppError, match="fake.png") as error:
        predict_contact(client, fake, ["chair"])
    assert re.search(r"JPEG, PNG, WEBP,? (or )?BMP", str(error.value)), str(error.value)
    assert "/tmp" not in str(error.value), "no server paths in messages"
    check_still_serving(client, picture)


def test_fifty_megapixel_png_is_refused(studio_server, picture, tmp_path):
    client = demo(studio_server)
    big = tmp_path / "big.png"
    Image.new("L", (8000, 6250)).save(big)
    assert big.stat().st_size < 1_000_000, "the test image itself is cheap"
    with pytest.raises(AppError, match="8000x6250") as error:
        predict_contact(client, big, ["chair"])
    assert re.search(r"at most 40,?000,?000", str(error.value)), str(error.value)
    check_still_serving(client, picture)


def test_html_label_is_refused_without_echoing_markup(studio_server, picture):
    client = demo(studio_server)
    count = len(studio_server.studio.store.task_ids())
    with pytest.raises(AppError, match="object label has characters that are not accepted") as error:
        predict_contact(client, picture, ["<script>alert(1)</script>"])
    assert "<script>" not in str(error.value) and "<" not in str(error.value)
    with pytest.raises(AppError, match="predict contact first"):  # the failed request left no state behind
        client.predict(api_name="/correct_contact")
    with pytest.raises(AppError, match="unknown object .*flux capacitor.*91 known object labels") as error:
        predict_contact(client, picture, ["flux capacitor"])
    assert ".py" not in str(error.value)  # suggestions never name source files
    assert len(studio_server.studio.store.task_ids()) == count
    check_still_serving(client, picture)


def test_too_many_labels_are_refused(studio_server, picture):
    client = demo(studio_server)
    labels = ["chair", "cup", "bottle", "bowl", "bench", "bed", "couch", "toilet", "bicycle", "car", "horse",
              "dog", "cat", "knife", "fork", "spoon", "laptop"]
    with pytest.raises(AppError, match="at most 16 object labels at once, got 17"):
        predict_contact(client, picture, labels)
    check_still_serving(client, picture)


def test_mesh_with_nan_vertices_is_refused(studio_server, picture, tmp_path):
    client = demo(studio_server)
    mesh = tmp_path / "broken.obj"
    mesh.write_text("v nan 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    count = len(studio_server.studio.store.task_ids())
    for api in ("/predict_affordance", "/paint_affordance"):
        with pytest.raises(AppError, match="NaN or inf") as error:
            client.predict(handle_file(str(picture)), "my upload", handle_file(str(mesh)), "chair", "sit",
                           api_name=api)
        assert "broken.obj" in str(error.value) and "finite" in str(error.value)
    with pytest.raises(AppError, match="choose a built-in object or upload"):
        client.predict(handle_file(str(picture)), "my upload", None, "chair", "sit", api_name="/paint_affordance")
    assert len(studio_server.studio.store.task_ids()) == count, "nothing was stored"
    check_still_serving(client, picture)


# ---- the real model path (tiny seeded InteractVLM) ------------------------------------------------------
def test_tiny_model_contact_names_its_checkpoint(model_server, picture):
    glb, grid_path, answers, source, files = predict_contact(demo(model_server), picture, ["chair", "cup"])
    assert "hcontact" in source and "InteractVLM checkpoint" in source and "baseline" not in source
    with np.load(files[0]) as data:
        assert set(data.files) == NPZ_KEYS
        assert data["source"].item() == "hcontact" and data["topology"].item() == TOPOLOGY
        probabilities = data["probabilities"]
        assert probabilities.shape == (2, VERTICES) and probabilities.dtype == np.float32
        assert np.all(np.isfinite(probabilities)) and probabilities.min() >= 0 and probabilities.max() <= 1
        assert probabilities.std() > 0, "a real (if random) prediction, not a constant"
        np.testing.assert_array_equal(data["contact_label"], (probabilities >= 0.5).any(0).astype(np.uint8))
        colours = list(exports.label_colours(["chair", "cup"]).values())
        expected = blend(probabilities, colours)
    mesh = load_glb(glb)
    assert mesh.vertices.shape == (VERTICES, 3)
    assert np.abs(np.asarray(mesh.visual.vertex_colors)[:, :3].astype(int) - expected).max() <= 1
    width, height = Image.open(grid_path).size
    assert width == height and width % 2 == 0 and width >= 128
    assert answers.count("<li>") == 2 and "<b>chair</b>" in answers and "<b>cup</b>" in answers


def test_a_model_prediction_keeps_a_run_pair_with_the_prior_and_the_photo(model_server, body, picture):
    """With a checkpoint, Predict keeps two contact runs in one group (image + labels): the model's and the
    category prior's computed beside it, each with contact.glb, views.png and the photo. A study built from them
    shows each side's views.png and the photo as the reference image."""
    from annotations.runs import list_runs
    from annotations.studies_sources import items_from_runs, run_pairings
    from studio.demo import contact_group_key

    store, method = model_server.studio.store, "interactvlm (hcontact)"
    before = {run.id for run in list_runs(store, kind="contact")}
    glb, grid_path, *_ = predict_contact(demo(model_server), picture, ["cup", "chair"])
    runs = {run.method: run for run in list_runs(store, kind="contact") if run.id not in before}
    assert sorted(runs) == [PRIOR_SOURCE, method]
    photo = picture.read_bytes()
    for run in runs.values():
        assert run.group_key == contact_group_key(hashlib.sha256(photo).hexdigest(), ["chair", "cup"])
        assert sorted(run.files) == ["contact.glb", "input.png", "views.png"]
        assert run.files["input.png"].read_bytes() == photo and run.inputs["labels"] == ["cup", "chair"]
    model, prior = runs[method], runs[PRIOR_SOURCE]
    assert model.files["contact.glb"].read_bytes() == Path(glb).read_bytes()
    assert model.files["views.png"].read_bytes() == Path(grid_path).read_bytes()
    expected = np.stack([predict_category_prior(body, label).probabilities for label in ("cup", "chair")])
    rgb = np.asarray(load_glb(prior.files["contact.glb"]).visual.vertex_colors)[:, :3].astype(int)
    assert np.abs(rgb - blend(expected, list(exports.label_colours(["cup", "chair"]).values()))).max() <= 1
    assert ("contact", method, PRIOR_SOURCE) in {(p.kind, p.method_a, p.method_b) for p in run_pairings(store)}
    item = next(item for item in items_from_runs(store, "contact", method, PRIOR_SOURCE)
                if item.source["group_key"] == model.group_key)
    assert item.source["runs"] == {"a": model.id, "b": prior.id}
    assert item.a.data == model.files["views.png"].read_bytes() and item.b.data == prior.files["views.png"].read_bytes()
    assert item.a.data != item.b.data and item.reference.data == photo


def test_the_prior_alone_keeps_one_run_and_binary_contact_no_baseline(studio_server, model_server, picture):
    from annotations.runs import list_runs

    for running, labels, methods in ((studio_server, ["bowl"], [PRIOR_SOURCE]),
                                     (model_server, [], ["interactvlm (hcontact)"])):
        before = {run.id for run in list_runs(running.studio.store, kind="contact")}
        predict_contact(demo(running), picture, labels)
        runs = [run for run in list_runs(running.studio.store, kind="contact") if run.id not in before]
        assert [run.method for run in runs] == methods and runs[0].files["input.png"].read_bytes() == picture.read_bytes()


def test_tiny_model_affordance_on_a_builtin_object(model_server, picture):
    bowl = builtin_object("bowl")
    glb, answer, files = demo(model_server).predict(handle_file(str(picture)), "bowl", None, "bowl", "grasp",
                                                    api_name="/predict_affordance")
    assert "oafford" in answer and "InteractVLM checkpoint" in answer
    mesh = load_glb(glb)
    assert isinstance(mesh, trimesh.Trimesh) and len(mesh.vertices) == len(bowl.vertices)
    assert len(mesh.faces) == len(bowl.faces)
    with np.load(files[0]) as data:
        values = data["values"]
        assert values.shape == (len(bowl.vertices),) and values.dtype == np.float32
        assert np.all(np.isfinite(values)) and values.min() >= 0 and values.max() <= 1
        np.testing.assert_allclose(data["points"], bowl.vertices, atol=1e-6)
        assert data["affordance"].item() == "grasp" and data["object_label"].item() == "bowl"
        assert data["source"].item() == "oafford"
        heat = np.round(exports.heat_colours(values) * 255).astype(int)
    assert np.abs(np.asarray(mesh.visual.vertex_colors)[:, :3].astype(int) - heat).max() <= 1


def test_tiny_model_affordance_on_an_uploaded_point_cloud(model_server, picture, tmp_path):
    points = np.random.default_rng(3).normal(size=(300, 3)).astype(np.float32)
    cloud = tmp_path / "cloud.npy"
    np.save(cloud, points)
    client = demo(model_server)
    glb, _, files = client.predict(handle_file(str(picture)), "my upload", handle_file(str(cloud)), "bottle",
                                   "grasp", api_name="/predict_affordance")
    cloud_glb = load_glb(glb)
    assert isinstance(cloud_glb, trimesh.PointCloud) and len(cloud_glb.vertices) == 300
    with np.load(files[0]) as data:
        assert data["values"].shape == (300,) and 0 <= data["values"].min() <= data["values"].max() <= 1
        np.testing.assert_allclose(data["points"], points, atol=1e-6)
        assert data["object_label"].item() == "bottle"
    with pytest.raises(AppError, match="NaN or inf"):  # the model path checks uploads too
        broken = tmp_path / "broken.npy"
        np.save(broken, np.array([[np.nan, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=np.float32))
        client.predict(handle_file(str(picture)), "my upload", handle_file(str(broken)), "bottle", "grasp",
                       api_name="/predict_affordance")


def test_answers_never_show_model_tokens_and_the_npz_keeps_the_raw_text():
    from types import SimpleNamespace

    from studio.demo import ContactRun, answer_html

    raw = ["Sure, it is [SEG].", "<image> The hips [HSEG] touch [OSEG] it </s>"]
    results = [SimpleNamespace(answer=text, parts=("hips",)) for text in raw]
    run = ContactRun("x.png", ("chair", "cup"), TOPOLOGY, np.zeros((2, VERTICES), np.float32), "hcontact")
    shown = answer_html(run, results, ["#000000", "#ffffff"])
    assert "SEG]" not in shown and "&lt;image&gt;" not in shown and "&lt;/s&gt;" not in shown
    assert "Sure, it is." in shown and "The hips touch it" in shown
    data = np.load(__import__("io").BytesIO(exports.contact_npz(["chair", "cup"], np.zeros((2, 4), np.float32),
                                                                TOPOLOGY, "hcontact", answers=raw)))
    assert data["answers"].tolist() == raw


def test_label_hint_says_what_predict_does(studio_server, model_server, picture):
    from studio.demo import labels_hint

    assert "at least one" in labels_hint(studio_server.studio) and "category-prior" in labels_hint(studio_server.studio)
    with pytest.raises(AppError, match="needs an object label"):
        predict_contact(demo(studio_server), picture, [])
    assert "none = binary contact" in labels_hint(model_server.studio)
    *_, answers, source, files = predict_contact(demo(model_server), picture, [])
    assert answers.count("<li>") == 1 and "<b>contact</b>" in answers
    with np.load(files[0]) as data:
        assert data["labels"].tolist() == ["contact"]


def test_the_preview_shows_the_upload_or_the_example_upright_and_small(studio_server, picture, tmp_path):
    from studio.demo import example_rows, preview_image
    from studio.uploads import EXAMPLES

    shown = preview_image(studio_server.studio, str(EXAMPLES / "person_chair.png"))
    original = np.asarray(Image.open(EXAMPLES / "person_chair.png").convert("RGB"))
    assert shown.ndim == 3 and max(shown.shape[:2]) <= 512
    assert shown.shape[0] / shown.shape[1] == pytest.approx(original.shape[0] / original.shape[1], rel=0.02)
    assert preview_image(studio_server.studio, None) is None
    assert all(row[0] == row[2] for row in example_rows()), "each example carries its own thumbnail"
    with pytest.raises(Exception, match="upload"):
        preview_image(studio_server.studio, "/etc/passwd")
