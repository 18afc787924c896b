"""GenZI generation through the tab (``gradio_client``) with tiny seeded models in the released folder layouts
(diffusers SD2 inpainting, transformers ViTPose and CLIP): a bedroom, a point on the mattress, a prompt ->
bodies in the scene's GLB, a metrics table, downloads and a stored run. Small settings (4 views, 2 steps,
128 px, 2 iterations per phase) keep it a CPU test; the stages are the real ones."""
from __future__ import annotations

import json

import numpy as np
import pytest
import trimesh
from gradio_client import Client
from gradio_client.exceptions import AppError

import studio.genzi as genzi_tab
from annotations.runs import list_runs
from engine.genzi import scenes

from studio_servers import start_studio, stop

pytestmark = pytest.mark.slow
BEDROOM = genzi_tab.SCENE_LABELS["bedroom"]
POINT = scenes.BUILTIN_POINTS["bedroom"]
PROMPT = "lying on the bed"


@pytest.fixture(scope="module")
def generation_server(tmp_path_factory):
    from engine.genzi import inpaint, lifting, views
    from engine.genzi.pipeline import GenziConfig
    from genzi.tiny_models import write_template_vitpose, write_tiny_clip, write_tiny_sd2_inpainting

    folder = tmp_path_factory.mktemp("genzi-generate")
    models = folder / "models"
    write_tiny_sd2_inpainting(models / "sd2-inpainting")
    write_tiny_clip(models / "clip-vit-base-patch32")
    write_template_vitpose(models / "vitpose")
    small_views = views.ViewConfig(max_views=4)
    pipeline = GenziConfig(inpaint=inpaint.InpaintConfig(steps=2, image_size=128, batch_size=4, negative=("blurry",)),
                           views=small_views, lift=lifting.LiftConfig(phase_iterations=2), inpaints_per_view=(2, 1),
                           sdf_dim=16)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(genzi_tab, "DEFAULT_CONFIG",
                      genzi_tab.GenziTabConfig(views=small_views, preview_size=64, pipeline=pipeline))
        running, server = start_studio(models, folder)
    yield running
    stop(server, running)


@pytest.fixture(scope="module")
def generated(generation_server):
    api = Client(generation_server.url + "/", verbose=False)
    api.predict(BEDROOM, None, "y", api_name="/genzi_load_scene")
    return api, api.predict(", ".join(map(str, POINT)), PROMPT, api_name="/genzi_generate")


def test_generation_places_bodies_in_the_scene_glb(generated):
    _, (glb, info, table, downloads, gallery) = generated
    world = trimesh.load(glb, force="scene")
    names = sorted(world.geometry)
    assert names[-1] == "scene" and names[:-1] == [f"body{n:02d}" for n in range(len(names) - 1)]
    assert len(names) - 1 == 3 and "3 bodies placed" in info  # 2 stage-0 bodies, the better one refined once
    assert "left_foot (missing" in info and "pelvis (derived" in info  # a COCO-17 ViTPose: no big toes
    room = scenes.builtin_scene("bedroom")
    np.testing.assert_allclose(world.geometry["scene"].vertices, room.vertices, atol=1e-5)
    low, high = room.vertices.min(0), room.vertices.max(0)  # the room has no walls: its floor bounds it
    for name in names[:-1]:
        body = world.geometry[name].vertices
        assert body.shape == (10614, 3) and np.isfinite(body).all(), name  # the open body
        assert (body.min(0)[[0, 2]] > low[[0, 2]]).all() and (body.max(0)[[0, 2]] < high[[0, 2]]).all(), name
        assert body.min(0)[1] > low[1] - 0.5 and body.max(0)[1] < 2.5, name  # about the floor, under 2.5 m
        assert np.linalg.norm(body.mean(0) - POINT) < 1.5, name  # by the point on the mattress


def test_metrics_table_downloads_and_gallery(generated, generation_server):
    _, (glb, _, table, downloads, gallery) = generated
    rows = table["data"]
    assert table["headers"] == genzi_tab.METRIC_HEADERS and [row[1] for row in rows] == [0, 0, 1]
    for row in rows:
        assert -1 <= row[3] <= 1 and 0 <= row[4] <= 1 and row[5] in (0, 1)
    names = sorted(path.rsplit("/", 1)[-1] for path in downloads)
    assert "scene_and_bodies.glb" in names and "metrics.json" in names and "joints.json" in names
    for suffix in (".npz", ".ply", ".obj"):
        assert sum(name.endswith(suffix) for name in names) == 3, suffix
    npz = np.load(next(path for path in downloads if path.endswith(".npz")))
    assert {"betas", "body_pose", "global_orient", "transl"} <= set(npz.files)
    metrics = json.loads(open(next(path for path in downloads if path.endswith("metrics.json"))).read())
    assert [round(value, 4) for value in metrics["clip"]] == [row[3] for row in rows]
    assert len(gallery) == 2 * 4 + 1 * 4  # stage 0: 2 per view; stage 1: 1 per view for the one refined body
    assert all("stage" in item["caption"] and "pose" in item["caption"] for item in gallery)


def test_generation_is_kept_as_a_run(generated, generation_server):
    runs = list_runs(generation_server.studio.store, kind="genzi")
    assert len(runs) == 1
    run = runs[0]
    assert run.method == "genzi" and run.inputs["prompt"] == PROMPT and run.inputs["scene"] == "built-in: bedroom"
    assert run.inputs["point"] == [round(v, 4) for v in POINT] and "sd2-inpainting" in run.inputs["models"]
    assert run.inputs["body"] == "openbody-v1"
    expected = genzi_tab.group_key(scenes.builtin_scene("bedroom"), POINT, PROMPT)
    assert run.group_key == expected and len(run.summary["clip"]) == 3
    assert "scene_and_bodies.glb" in run.files and run.files["scene_and_bodies.glb"].is_file()


@pytest.mark.parametrize("point, prompt, message", [
    ("0.2, 0.5, 0", "", "the prompt is empty"),
    ("0.2, 0.5, 0", " ".join(["sitting on the sofa reading"] * 16), "would truncate the rest"),
    ("0.2, 0.5, 0", "x" * 501, "over 500 characters"),
    ("0.2, 2.5, 0", PROMPT, "from the scene.{0,6}s surface"),
    ("bed", PROMPT, "three numbers x, y, z"),
])
def test_bad_generation_input_is_refused_in_words(generated, point, prompt, message):
    api, _ = generated
    with pytest.raises(AppError, match=message) as error:
        api.predict(point, prompt, api_name="/genzi_generate")
    assert "Error" not in str(error.value) and "/tmp" not in str(error.value)


def test_with_every_folder_installed_there_is_no_notice_and_generate_is_on(generation_server):
    import httpx

    config = httpx.get(generation_server.url + "/config").json()
    by_id = {c["props"].get("elem_id"): c["props"] for c in config["components"] if c.get("props", {}).get("elem_id")}
    assert not by_id["genzi-notice"]["value"]
    assert by_id["genzi-generate"]["interactive"] is not False and by_id["genzi-generate"]["value"] == "Generate"
