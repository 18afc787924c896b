"""The GenZI tab through ``gradio_client`` (no model folders): scene load, the point, views, the missing-model
notice, and a bad-input test for every input a visitor controls. Messages are words: no server paths, no
exception names."""
from __future__ import annotations

import json
import re

import httpx
import numpy as np
import pytest
import trimesh
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

import studio.genzi as genzi_tab
from engine.genzi import scenes
from raw_queue import RawPage, forged

from genzi_fixtures import genzi_server  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow  # view selection rasterizes the patch from every candidate camera
LIVING_ROOM = genzi_tab.SCENE_LABELS["living_room"]
PATH_OR_EXCEPTION = re.compile(r"/\w+/|Error\b|Exception\b|Traceback")


def client(running) -> Client:
    return Client(running.url + "/", verbose=False)


def load(api: Client, choice=LIVING_ROOM, upload=None, axis="y") -> tuple:
    return api.predict(choice, upload, axis, api_name="/genzi_load_scene")


def words_only(error: AppError) -> str:
    message = str(error)
    assert not PATH_OR_EXCEPTION.search(message), message
    return message


def hood_obj(path) -> str:
    """A floor with a closed hood (a box without a bottom) over the origin: nothing sees the floor under it."""
    floor = trimesh.creation.box(bounds=((-1.0, -0.1, -1.0), (1.0, 0.0, 1.0)))
    floor = floor.subdivide().subdivide().subdivide()
    hood = trimesh.creation.box(bounds=((-0.3, 0.0, -0.3), (0.3, 0.4, 0.3)))
    hood = trimesh.Trimesh(hood.vertices, hood.faces[hood.face_normals[:, 1] > -0.5], process=False)
    trimesh.util.concatenate([floor, hood]).export(path)
    return str(path)


def test_builtin_scene_loads_into_the_picker_with_its_suggested_point(genzi_server):
    payload, info, point, gallery = load(client(genzi_server))
    data = json.loads(payload)
    scene = scenes.builtin_scene("living_room")
    assert data["name"] == "living_room" and data["point"] == list(scenes.BUILTIN_POINTS["living_room"])
    assert point == "0.000, 0.450, -1.350" and gallery == []
    assert f"{len(scene.faces):,} faces" in info
    mesh = httpx.get(genzi_server.url + data["url"])
    assert mesh.status_code == 200
    counts = np.frombuffer(mesh.content[:8], "<u4")
    assert counts.tolist() == [len(scene.vertices), len(scene.faces)]
    vertices = np.frombuffer(mesh.content[8:8 + 12 * counts[0]], "<f4").reshape(-1, 3)
    faces = np.frombuffer(mesh.content[8 + 12 * counts[0]:], "<u4").reshape(-1, 3)
    np.testing.assert_allclose(vertices, scene.vertices, atol=1e-6)
    np.testing.assert_array_equal(faces, scene.faces)
    assert httpx.get(genzi_server.url + genzi_tab.SCENE_URL + "/" + "0" * 32 + ".bin").status_code == 404
    assert httpx.get(genzi_server.url + genzi_tab.SCENE_URL + "/..%2F..%2Fetc.bin").status_code == 404


def test_uploaded_z_up_scene_is_turned_y_up(genzi_server, tmp_path):
    path = tmp_path / "room.ply"
    box = trimesh.creation.box(bounds=((0, 0, 0), (2.0, 1.0, 0.5)))  # 0.5 m tall along Z
    box.export(path)
    payload, info, point, _ = load(client(genzi_server), genzi_tab.UPLOAD_CHOICE, handle_file(str(path)), "z")
    assert "room.ply" in info and point == "" and json.loads(payload)["point"] is None
    mesh = httpx.get(genzi_server.url + json.loads(payload)["url"]).content
    vertices = np.frombuffer(mesh[8:8 + 12 * 8], "<f4").reshape(-1, 3)
    np.testing.assert_allclose(np.ptp(vertices, axis=0), [2.0, 0.5, 1.0], atol=1e-6)  # y is the file's z


def test_point_is_checked_on_the_surface(genzi_server):
    api = client(genzi_server)
    load(api)
    text, info = api.predict("[0 0.5 -1.35]", api_name="/genzi_check_point")
    assert text == "0.000, 0.500, -1.350" and "5.0 cm from the surface" in info
    with pytest.raises(AppError, match=r"2\.25 m from the scene.{0,6}s surface.*closest surface point is 0\.000, 0\.750"):
        api.predict("0, 3, 0", api_name="/genzi_check_point")


@pytest.mark.parametrize("text, expected", [
    ("", "click the scene, or type x, y, z"),
    ("sofa", "three numbers x, y, z"),
    ("1, 2", "three numbers x, y, z"),
    ("1, 2, 3, 4", "three numbers x, y, z"),
    ("nan, 0, 0", "three numbers x, y, z"),
    ("1e999, 0, 0", "finite numbers"),
    ("1" * 300, "over 200 characters"),
])
def test_malformed_point_text_is_refused_in_words(genzi_server, text, expected):
    api = client(genzi_server)
    load(api)
    with pytest.raises(AppError, match=expected) as error:
        api.predict(text, api_name="/genzi_check_point")
    words_only(error.value)


def test_point_or_views_before_a_scene_ask_for_one(genzi_server):
    api = client(genzi_server)
    for endpoint in ("/genzi_check_point", "/genzi_views"):
        with pytest.raises(AppError, match="load a scene first"):
            api.predict("0, 0.45, -1.35", api_name=endpoint)


def test_views_at_the_sofa_seat_are_a_gallery_best_first(genzi_server):
    api = client(genzi_server)
    load(api)
    gallery, info = api.predict("0, 0.45, -1.35", api_name="/genzi_views")
    assert len(gallery) == 16 and "16 views pass" in info
    ratios = [float(re.search(r"(\d+)% of the patch", item["caption"]).group(1)) for item in gallery]
    assert ratios == sorted(ratios, reverse=True) and ratios[-1] > 40
    from PIL import Image
    image = np.asarray(Image.open(gallery[0]["image"]))
    assert image.shape[:2] == (128, 128) and image.std() > 5  # a shaded render, not a blank


def test_no_passing_view_says_so_and_suggests_a_point(genzi_server, tmp_path):
    api = client(genzi_server)
    load(api, genzi_tab.UPLOAD_CHOICE, handle_file(hood_obj(tmp_path / "hood.obj")))
    with pytest.raises(AppError, match=r"no camera sees enough.*try the point") as error:
        api.predict("0, 0, 0", api_name="/genzi_views")
    suggested = np.array([float(v) for v in str(error.value).rsplit("try the point ", 1)[1].split(", ")[:3]])
    assert np.abs(suggested[[0, 2]]).max() >= 0.3 or suggested[1] > 0.39  # not under the hood


@pytest.mark.parametrize("name, content, expected", [
    ("empty.obj", b"", "is empty"),
    ("flat.obj", b"v 0 0 0\nv 0 0 0\nv 0 0 0\nf 1 2 3\n", "degenerate"),
    ("points.ply", b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
                   b"end_header\n0 0 0\n1 0 0\n0 1 0\n", "no faces"),
    ("broken.ply", b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nend_header\n\x00\x01", "could not be read"),
    ("huge.ply", b"ply\nformat ascii 1.0\nelement vertex 99999999\nproperty float x\nend_header\n", "declares 99999999"),
    ("scene.txt", b"0 0 0\n", "Invalid file type.*'.ply', '.obj', '.glb'"),  # Gradio refuses it first
])
def test_bad_scene_files_are_refused_in_words(genzi_server, tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(AppError, match=expected) as error:
        load(client(genzi_server), genzi_tab.UPLOAD_CHOICE, handle_file(str(path)))
    words_only(error.value)


def test_bad_scene_choice_axis_and_missing_upload(genzi_server, tmp_path):
    api = client(genzi_server)
    with pytest.raises(AppError, match="upload the scene file first"):
        load(api, genzi_tab.UPLOAD_CHOICE, None)
    with pytest.raises(AppError, match="the moon is not in the list of choices"):  # Gradio refuses it first
        load(api, "the moon")
    path = tmp_path / "box.obj"
    trimesh.creation.box().export(path)
    with pytest.raises(AppError, match="'w'.*is not in the list of choices"):
        load(api, genzi_tab.UPLOAD_CHOICE, handle_file(str(path)), "w")


def bare_demo(folder):
    """The tab's handlers on a studio with no pages (what a client that skips Gradio's checks reaches)."""
    from types import SimpleNamespace

    class FakeStudio:
        settings = SimpleNamespace(models_dir=folder, max_upload_bytes=1000)
        upload_dirs = [folder]
        engine = SimpleNamespace(names=lambda: ("genzi",))

    return genzi_tab.GenziDemo(FakeStudio())


def test_oversized_scene_is_refused_before_parsing(tmp_path):
    """The size check runs on the file's size alone (the parser never sees the bytes)."""
    path = tmp_path / "big.ply"
    path.write_bytes(b"not a mesh at all" * 100)
    with pytest.raises(genzi_tab.InputError, match="1,700 bytes; at most 1,000 are accepted"):
        bare_demo(tmp_path).load_scene(genzi_tab.UPLOAD_CHOICE, str(path), "y")


def test_handlers_check_what_gradio_checks_too(tmp_path):
    demo = bare_demo(tmp_path)
    (tmp_path / "scene.txt").write_text("0 0 0\n")
    (tmp_path / "box.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    with pytest.raises(genzi_tab.InputError, match="unknown scene file type '.txt'"):
        demo.load_scene(genzi_tab.UPLOAD_CHOICE, str(tmp_path / "scene.txt"), "y")
    with pytest.raises(genzi_tab.InputError, match="up axis must be one of y, z"):
        demo.load_scene(genzi_tab.UPLOAD_CHOICE, str(tmp_path / "box.obj"), "w")
    with pytest.raises(genzi_tab.InputError, match="choose a built-in scene"):
        demo.load_scene("the moon", None, "y")
    with pytest.raises(genzi_tab.InputError, match="could not be read as a .ply mesh; accepted") as error:
        (tmp_path / "bad.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nend_header\n")
        demo.load_scene(genzi_tab.UPLOAD_CHOICE, str(tmp_path / "bad.ply"), "y")
    assert "Error" not in str(error.value)


def test_forged_scene_paths_are_refused_and_the_endpoint_is_walked(genzi_server, tmp_path):
    from test_security_uploads import REFUSAL, file_endpoints

    names = {genzi_server.pages[path].fns[fn].api_name for path, fn, _ in file_endpoints(genzi_server.pages)}
    assert "genzi_load_scene" in names  # the attack test fires at every one of these
    secret = tmp_path / "secret.obj"
    secret.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    page = RawPage(genzi_server.url)
    try:
        outcome = page.call("genzi_load_scene", [genzi_tab.UPLOAD_CHOICE, forged(secret), "y"])
        assert not outcome.success and REFUSAL in outcome.error and str(tmp_path) not in outcome.error
    finally:
        page.close()


def test_without_models_the_notice_names_each_folder_and_generate_is_off(genzi_server):
    config = httpx.get(genzi_server.url + "/config").json()
    by_id = {c["props"].get("elem_id"): c["props"] for c in config["components"] if c.get("props", {}).get("elem_id")}
    notice = by_id["genzi-notice"]["value"]
    for folder in ("sd2-inpainting/", "vitpose/", "clip-vit-base-patch32/"):
        assert f"<code>{folder}</code>" in notice
    assert str(genzi_server.models_dir) not in notice
    generate = by_id["genzi-generate"]
    assert generate["interactive"] is False and "model folders missing" in generate["value"]
