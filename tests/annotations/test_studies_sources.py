"""Where study items come from: pairs CSV, method folders, zips, studio runs, generated attention checks; and
every bad upload refused with a message naming the problem (unbalanced pairs, missing files, duplicates...)."""
from __future__ import annotations

import io
import types
import zipfile

import numpy as np
import pytest
from PIL import Image
from study_fixtures import glb, png, write_pairs_zip

from annotations.files import read_zip
from annotations.runs import save_run
from annotations.studies_media import BROKEN_TILES, broken_model, broken_render, check_stimulus
from annotations.studies_sources import (StudyRejected, items_from_runs, items_from_upload, with_catch_items)
from engine.errors import InputError

FILES = {f"{side}/{k}.png": png(10 * k + (side == "b")) for k in range(3) for side in ("a", "b")}


def csv_files(lines: list[str], files=FILES) -> dict[str, bytes]:
    return {**files, "pairs.csv": ("\n".join(lines) + "\n").encode()}


def test_pairs_csv_with_reference_and_catch(tmp_path):
    files = {**FILES, "ref/0.png": png(99)}
    write_pairs_zip(tmp_path / "s.zip", [("one", "a/0.png", "b/0.png", "ref/0.png", ""),
                                         ("two", "a/1.png", "b/1.png", "", "0"),
                                         ("trap", "a/2.png", "b/2.png", "", "yes")], files)
    items = items_from_upload(read_zip(tmp_path / "s.zip"))
    assert [(i.name, i.is_catch, i.reference is not None) for i in items] == \
        [("one", False, True), ("two", False, False), ("trap", True, False)]
    assert items[0].a.data == FILES["a/0.png"] and items[0].b.data == FILES["b/0.png"]
    assert items[0].source["upload"]["reference"] == "ref/0.png"


def test_method_folders_matched_by_name_inside_one_top_folder():
    files = {f"results/{name}": data for name, data in FILES.items()}
    files["results/reference/1.png"] = png(77)
    items = items_from_upload(files, "a", "b")
    assert [item.name for item in items] == ["0", "1", "2"]
    assert items[1].reference.data == png(77) and items[2].b.data == FILES["b/2.png"]
    with pytest.raises(StudyRejected, match="no folder 'ours'"):
        items_from_upload(files, "ours", "b")


@pytest.mark.parametrize("lines, message", [
    (["item,a,b", "one,a/0.png,"], "has no B file"),                       # unbalanced pair
    (["item,a,b", "one,a/0.png,b/9.png"], "file 'b/9.png' is missing"),   # missing file
    (["item,a,b", "one,a/0.png,b/0.png", "one,a/1.png,b/1.png"], "duplicate item 'one'"),
    (["item,left,right", "one,a/0.png,b/0.png"], "lacks the column"),
    (["item,a,b,catch", "one,a/0.png,b/0.png,maybe"], "catch must be yes/no"),
    (["item,a,b", "one,a/0.png,b/0.png,extra"], "more values than columns"),
    (["item,a,b", "one,../secret.png,b/0.png"], "contains '..'"),
    (["item,a,b"], "no rows"),
])
def test_bad_pairs_csv(lines, message):
    with pytest.raises(StudyRejected, match=message) as caught:
        items_from_upload(csv_files(lines))
    assert "nothing created" in str(caught.value)


def test_every_problem_is_listed_at_once():
    with pytest.raises(StudyRejected) as caught:
        items_from_upload(csv_files(["item,a,b", "one,a/0.png,", "two,a/9.png,b/1.png", "two,a/2.png,b/2.png"]))
    assert len(caught.value.problems) == 3


def test_unbalanced_method_folders():
    files = dict(FILES)
    del files["b/2.png"]
    files["reference/7.png"] = png(5)
    with pytest.raises(StudyRejected) as caught:
        items_from_upload(files, "a", "b")
    assert caught.value.problems == ["item '2' is in 'a' but not in 'b'", "reference '7' matches no item"]


def test_two_csv_files_and_stray_files_are_refused():
    with pytest.raises(StudyRejected, match="2 CSV files"):
        items_from_upload({**csv_files(["item,a,b"]), "other.csv": b"x"})
    with pytest.raises(StudyRejected, match="expected <method folder>"):
        items_from_upload({**FILES, "notes.txt": b"hi"}, "a", "b")


def test_stimulus_checks():
    assert check_stimulus("x.glb", glb()).media == "glb"
    assert check_stimulus("x.mp4", b"\x00\x00\x00\x18ftypmp42" + bytes(20)).content_type == "video/mp4"
    assert check_stimulus("x.webm", b"\x1a\x45\xdf\xa3" + bytes(20)).content_type == "video/webm"
    for name, data, message in [("x.gif", b"GIF89a", "are accepted"), ("x.png", b"", "is empty"),
                                ("x.png", b"not a png at all", "not a readable image"),
                                ("x.mp4", b"RIFF" + bytes(20), "not an MP4"),
                                ("x.glb", glb()[:-4], "not a complete glTF"), ("x.glb", b"glTX" + bytes(30), "no glTF"),
                                ("x.glb", glb().replace(b'"asset"', b'{asset"'), "does not parse")]:
        with pytest.raises(InputError, match=message):
            check_stimulus(name, data)


def test_broken_render_is_a_shuffled_inverted_copy():
    original = check_stimulus("a.png", png(3, size=(64, 48)))
    broken = broken_render(original, seed=1)
    assert broken.media == "image" and broken.sha256 != original.sha256
    pixels = np.asarray(Image.open(io.BytesIO(original.data)).convert("RGB")).astype(int)
    shuffled = 255 - np.asarray(Image.open(io.BytesIO(broken.data)).convert("RGB")).astype(int)
    tiles = lambda image: sorted(image.reshape(BROKEN_TILES, 6, BROKEN_TILES, 8, 3).swapaxes(1, 2)
                                 .reshape(-1, 6 * 8 * 3).tolist())
    assert tiles(pixels) == tiles(shuffled), "the same tiles, inverted"
    assert not np.array_equal(pixels, shuffled), "in other places"
    with pytest.raises(InputError, match="image or GLB items"):
        broken_render(check_stimulus("x.glb", glb()), 0)


def test_broken_model_scrambles_every_mesh_of_a_scene():
    """The catch side of a GLB item: the same meshes (names, faces, the same vertices) with the vertices in
    another order, so that the triangles become long spikes across the scene."""
    import trimesh

    from engine.genzi import scenes

    files = genzi_run_files(scenes.builtin_scene("living_room"), 0.0)
    original = check_stimulus("s.glb", files["scene_and_bodies.glb"])
    broken = broken_model(original, seed=5)
    assert broken.media == "glb" and broken.sha256 != original.sha256
    assert broken_model(original, seed=5).data == broken.data, "reproducible from the seed"
    before, after = (trimesh.load(io.BytesIO(model.data), file_type="glb", force="scene")
                     for model in (original, broken))
    assert sorted(before.geometry) == sorted(after.geometry) == ["body00", "body01", "scene"]
    for name, mesh in before.geometry.items():
        tangled = after.geometry[name]
        assert np.array_equal(tangled.faces, mesh.faces)
        assert np.allclose(np.sort(tangled.vertices, axis=0), np.sort(mesh.vertices, axis=0))
        assert not np.allclose(tangled.vertices, mesh.vertices)
    edge = lambda mesh: float(np.linalg.norm(np.diff(mesh.vertices[mesh.faces], axis=1), axis=2).mean())
    assert edge(after.geometry["scene"]) > 3 * edge(before.geometry["scene"]), "long spikes across the room"
    with pytest.raises(InputError, match="no triangle mesh"):
        broken_model(check_stimulus("x.glb", glb()), 0)
    with pytest.raises(InputError, match="takes a GLB"):
        broken_model(check_stimulus("a.png", png(1)), 0)


def test_generated_attention_checks():
    items = items_from_upload(FILES, "a", "b")
    checked = with_catch_items(items, 2, seed=4)
    catches = [item for item in checked if item.is_catch]
    assert [c.name for c in catches] == ["check-1", "check-2"] and catches[0].a.data == items[0].a.data
    with pytest.raises(InputError, match="need as many image or GLB items"):
        with_catch_items(items, 4, seed=0)


def test_items_from_runs_pair_the_newest_runs_of_each_input(store):
    for group in ("img-1", "img-2", "img-3"):
        save_run(store, kind="hoi", method="interactvlm-hoi", inputs={}, group_key=group,
                 files={"render.png": png(int(group[-1])), "fit.glb": glb(), "input.png": png(5)})
        if group != "img-3":
            save_run(store, kind="hoi", method="baseline: silhouette only (no contacts)", inputs={}, group_key=group,
                     files={"render.png": png(7), "fit.glb": glb()})
    newest = save_run(store, kind="hoi", method="interactvlm-hoi", inputs={}, group_key="img-1",
                      files={"render.png": png(55), "fit.glb": glb()})
    items = items_from_runs(store, "hoi", "interactvlm-hoi", "baseline: silhouette only (no contacts)")
    assert [item.name for item in items] == ["hoi-img-1", "hoi-img-2"]
    assert items[0].a.data == png(55) and items[0].source["runs"]["a"] == newest.id
    assert items[1].a.data == png(2), "the input photo is the reference, never the stimulus"
    assert items[0].reference is None and items[1].reference.data == png(5)  # img-1's runs kept no photo
    glbs = items_from_runs(store, "hoi", "interactvlm-hoi", "baseline: silhouette only (no contacts)",
                           file_name="fit.glb")
    assert {item.a.media for item in glbs} == {"glb"}
    with pytest.raises(StudyRejected, match="no file 'input.png'"):
        items_from_runs(store, "hoi", "interactvlm-hoi", "baseline: silhouette only (no contacts)",
                        reference_name="input.png")  # the newest run of img-1 has no input.png
    with pytest.raises(StudyRejected, match="no input has hoi runs of both"):
        items_from_runs(store, "hoi", "interactvlm-hoi", "phosa")


def test_a_runs_input_photo_is_the_items_reference_and_never_a_stimulus(store):
    """Runs made the tabs' way keep the photo as ``input<suffix>``: it becomes the reference image (from A's run,
    else B's), the stimulus stays the render; an explicit reference file still wins; a photo alone shows nothing."""
    from annotations.runs import input_photo, input_photo_name

    photo = {input_photo_name(".jpg"): jpeg(8)}
    assert input_photo_name(".jpg") == "input.jpg"
    a = save_run(store, kind="contact", method="interactvlm (hcontact)", inputs={}, group_key="g1",
                 files={"contact.glb": glb(), "views.png": png(1), **photo})
    save_run(store, kind="contact", method="baseline: category prior", inputs={}, group_key="g1",
             files={"contact.glb": glb(), "views.png": png(2), **photo})
    save_run(store, kind="contact", method="interactvlm (hcontact)", inputs={}, group_key="g2",
             files={"views.png": png(3)})
    save_run(store, kind="contact", method="baseline: category prior", inputs={}, group_key="g2",
             files={"views.png": png(4), "input.png": png(9)})
    assert input_photo(a) == "input.jpg"
    items = {item.source["group_key"]: item for item in
             items_from_runs(store, "contact", "interactvlm (hcontact)", "baseline: category prior")}
    assert (items["g1"].a.data, items["g1"].b.data, items["g1"].reference.data) == (png(1), png(2), jpeg(8))
    assert items["g1"].reference.media == "image" and items["g2"].reference.data == png(9)  # B's photo
    chosen = items_from_runs(store, "contact", "interactvlm (hcontact)", "baseline: category prior",
                             reference_name="views.png")
    assert {item.reference.data for item in chosen} == {png(1), png(3)}
    save_run(store, kind="hoi", method="interactvlm-hoi", inputs={}, group_key="only", files=photo)
    save_run(store, kind="hoi", method="baseline: silhouette only", inputs={}, group_key="only",
             files={"overlay.png": png(1), **photo})
    with pytest.raises(StudyRejected, match="no image, video or GLB file besides its input photo"):
        items_from_runs(store, "hoi", "interactvlm-hoi", "baseline: silhouette only")


def jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (32, 40, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_a_zip_with_traversal_is_refused(tmp_path):
    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("../a/0.png", png(1))
    with pytest.raises(InputError, match="'..'"):
        read_zip(path)


def genzi_run_files(scene, offset: float) -> dict[str, bytes]:
    """What the GenZI tab keeps of a generation, made the tab's way: the scene with two (tetrahedral) bodies as
    one GLB (``studio.genzi.scene_with_bodies_glb``) and the metrics."""
    from studio.genzi import scene_with_bodies_glb

    tetra = np.array([[0, 0, 0], [0.3, 0, 0], [0, 1.6, 0], [0, 0, 0.3]], dtype=np.float32)
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    bodies = [tetra + np.array([offset, 0.45, -1.35], dtype=np.float32), tetra + np.array([offset + 0.5, 0.0, 0.0])]
    return {"scene_and_bodies.glb": scene_with_bodies_glb(scene, bodies, faces),
            "metrics.json": b'{"clip_mean": 0.3}', "genzi_bodies.npz": b"not shown"}


def test_genzi_runs_pair_into_orbitable_scene_items(store):
    """GenZI runs as stimuli: two methods on the same scene, point and prompt (the tab's group key) pair up, the
    run picker offers them (GenZI's own method as A), and each side shows that run's scene-with-bodies GLB."""
    import trimesh

    from annotations.studies import (StudyConfig, create_study, current_trial, join, participant_trials, set_state,
                                     stimulus_file)
    from annotations.studies_sources import run_pairings
    from engine.genzi import scenes
    from studio.genzi import group_key
    from studio.study_admin import run_pair_choices, run_pair_fields

    scene = scenes.builtin_scene("living_room")
    point = scenes.BUILTIN_POINTS["living_room"]
    groups = [group_key(scene, point, prompt) for prompt in ("sitting on the sofa", "reading a book")]
    variant = "genzi: one inpainting stage"
    runs = {}
    for number, group in enumerate(groups):
        runs[("genzi", group)] = save_run(store, kind="genzi", method="genzi", inputs={"prompt": number},
                                          group_key=group, files=genzi_run_files(scene, 0.1 * number))
        runs[(variant, group)] = save_run(store, kind="genzi", method=variant, inputs={"prompt": number},
                                          group_key=group, files=genzi_run_files(scene, 1.0 + 0.1 * number))
    save_run(store, kind="genzi", method=variant, inputs={}, group_key=group_key(scene, point, "alone"),
             files=genzi_run_files(scene, 2.0))  # no GenZI run of this prompt: no item
    save_run(store, kind="hoi", method="baseline: silhouette only (no contacts)", inputs={}, group_key="img",
             files={"render.png": png(1)})
    save_run(store, kind="hoi", method="interactvlm-hoi (painted / prior)", inputs={}, group_key="img",
             files={"render.png": png(2)})

    pairings = run_pairings(store)
    assert [(p.kind, p.method_a, p.method_b, p.inputs) for p in pairings] == [
        ("genzi", "genzi", variant, 2),
        ("hoi", "interactvlm-hoi (painted / prior)", "baseline: silhouette only (no contacts)", 1)]
    studio = types.SimpleNamespace(store=store)
    assert run_pair_choices(studio)[0] == "genzi: genzi  vs  genzi: one inpainting stage  (2 inputs)"
    assert run_pair_fields(studio, run_pair_choices(studio)[0]) == ("genzi", "genzi", variant)
    with pytest.raises(InputError, match="no longer there"):
        run_pair_fields(studio, "genzi: genzi  vs  something else  (1 input)")

    items = items_from_runs(store, "genzi", "genzi", variant)
    assert sorted(item.name for item in items) == sorted(f"genzi-{group[:16]}" for group in groups)
    for item in items:
        group = item.source["group_key"]
        assert item.a.media == item.b.media == "glb"
        assert item.a.data == runs[("genzi", group)].files["scene_and_bodies.glb"].read_bytes()
        assert item.b.data == runs[(variant, group)].files["scene_and_bodies.glb"].read_bytes()
        assert item.source["runs"] == {"a": runs[("genzi", group)].id, "b": runs[(variant, group)].id}
        assert item.reference is None  # a scene, no input photo
    loaded = trimesh.load(io.BytesIO(items[0].a.data), file_type="glb")
    assert sorted(loaded.geometry) == ["body00", "body01", "scene"]
    assert len(loaded.geometry["scene"].faces) == len(scene.faces)

    checked = with_catch_items(items, 1, seed=2)
    assert checked[-1].is_catch and checked[-1].a.media == checked[-1].b.media == "glb"
    assert checked[-1].a.data == items[0].a.data and checked[-1].b.data != items[0].a.data
    create_study(store, slug="genzi-ab", title="People in rooms", method_a="genzi", method_b=variant, items=items,
                 config=StudyConfig(likert="chosen"), seed=3)
    set_state(store, "genzi-ab", "open")
    person = join(store, "genzi-ab", "P1", "S1")
    trial = current_trial(store, "genzi-ab", person.token)
    assert trial.media == "glb" and not trial.has_reference
    shown = {slot: stimulus_file(store, "genzi-ab", trial.key, slot).path.read_bytes() for slot in ("left", "right")}
    swapped = participant_trials(store, "genzi-ab", "P1")[0][2]
    item = next(item for item in items if item.a.data in shown.values())
    assert (shown["left"], shown["right"]) == ((item.b.data, item.a.data) if swapped else (item.a.data, item.b.data))
