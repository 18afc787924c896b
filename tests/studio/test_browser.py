"""What a person does, in Debian's Chromium: paint with the mouse, switch layer, erase, submit; the admin's export.

The painted region is checked against the drag independently of the painter: the test projects the
body's vertices with the camera the page reports and asks that every stored vertex lies under the
brush's path, and that the path is covered.
"""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from annotations import models, workflow
from annotations.batch import add_task
from annotations.review import load_task_annotations

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TOPOLOGY = "openbody-v1"
BRUSH_RADIUS = 0.03  # the painter's default, metres


def png_bytes(seed: int, size=(96, 128)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def project(mesh: dict, camera: dict) -> tuple[np.ndarray, np.ndarray]:
    """Page-pixel positions (V, 2) and clip depth (V,) of every vertex under the page's camera."""
    vertices = np.asarray(mesh["vertices"], dtype=np.float64).reshape(-1, 3)
    matrix = np.asarray(camera["viewProjection"], dtype=np.float64).reshape(4, 4).T  # column-major in JS
    clip = np.concatenate([vertices, np.ones((len(vertices), 1))], 1) @ matrix.T
    ndc = clip[:, :3] / clip[:, 3:4]
    rect = camera["rect"]
    x = rect["left"] + (ndc[:, 0] + 1) / 2 * rect["width"]
    y = rect["top"] + (1 - ndc[:, 1]) / 2 * rect["height"]
    return np.stack([x, y], 1), ndc[:, 2]


def segment_distance(points: np.ndarray, start, end) -> np.ndarray:
    start, end = np.asarray(start, float), np.asarray(end, float)
    direction = end - start
    t = np.clip(((points - start) @ direction) / (direction @ direction), 0, 1)
    return np.linalg.norm(points - (start + t[:, None] * direction), axis=1)


def front_vertices(mesh: dict) -> np.ndarray:
    """Vertices on the camera-facing half of the body (the painter starts with a front view along -Z)."""
    vertices = np.asarray(mesh["vertices"]).reshape(-1, 3)
    return vertices[:, 2] > np.median(vertices[:, 2])


def drag(page, start, end, steps: int = 12) -> None:
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=steps)
    page.mouse.up()


def wait_for_server_count(page, label: str, previous: str | None) -> str:
    """Wait until the server's check of the painting changed (the paint -> server round trip)."""
    page.wait_for_function(
        """([label, previous]) => { const el = document.getElementById('painter-server-counts');
           return el && el.textContent.includes(label) && el.textContent !== previous; }""",
        arg=[label, previous], timeout=15000)
    return page.inner_text("#painter-server-counts")


def open_annotator(page, url: str, worker: str, task_id: int) -> None:
    page.goto(f"{url}/annotate/?worker={worker}")
    page.wait_for_selector(f'#studio-painter[data-ready="1"][data-task="{task_id}"]', timeout=60000)


def test_annotator_paints_switches_layer_erases_and_submits(browser, studio_server, artifacts):
    store = studio_server.studio.store
    mesh = studio_server.studio.body_mesh_json(TOPOLOGY)
    zero = np.zeros(len(mesh["vertices"]) // 3, dtype=np.float32)
    task_id = add_task(store, png_bytes(1), "paint.png", labels=["chair", "supporting"], topology=TOPOLOGY,
                       prediction={"chair": zero}, model_name="test zero prediction", redundancy=1, priority=1000)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    open_annotator(page, studio_server.url, "w1", task_id)
    assert page.evaluate("window.studioPainter.state().counts") == {"chair": 0, "supporting": 0}

    screen, _ = project(mesh, page.evaluate("window.studioPainter.camera()"))
    front = front_vertices(mesh)
    parts = np.asarray(mesh["part_labels"])
    chest = screen[(parts == mesh["part_names"].index("chest")) & front].mean(0)
    belly = screen[(parts == mesh["part_names"].index("abdomen")) & front].mean(0)
    radius_px = brush_radius_pixels(page, mesh)
    stroke = (chest - [3 * radius_px, 0], chest + [3 * radius_px, 0])
    rub = (chest + [1.5 * radius_px, 0], chest + [4 * radius_px, 0])
    support = (belly - [0, radius_px], belly + [0, radius_px])

    drag(page, *stroke)
    first = wait_for_server_count(page, "chair", None)
    painted_before_erase = set(page.evaluate("window.studioPainter.layers().chair"))
    page.click('[data-layer="supporting"]')
    drag(page, *support)
    second = wait_for_server_count(page, "supporting", first)
    page.click('[data-layer="chair"]')
    page.click('[data-action="erase"]')
    drag(page, *rub)
    wait_for_server_count(page, "chair", second)
    erased_count = page.evaluate("window.studioPainter.state().counts.chair")
    page.click('[data-action="undo"]')
    assert page.evaluate("window.studioPainter.state().counts.chair") == len(painted_before_erase), "undo restores"
    page.click('[data-action="redo"]')
    assert page.evaluate("window.studioPainter.state().counts.chair") == erased_count < len(painted_before_erase)
    page.wait_for_function(f"document.getElementById('painter-server-counts').textContent"
                           f".includes('chair: {erased_count} vertices')", timeout=15000)
    page.screenshot(path=str(artifacts / "annotator-painted.png"))
    page.click("#submit")
    page.wait_for_function("document.getElementById('status').innerText.includes('Submitted task')", timeout=15000)

    stored = load_task_annotations(store, task_ids=[task_id])[task_id]
    chair = np.flatnonzero(stored.layers[0, stored.labels.index("chair")])
    supporting = np.flatnonzero(stored.layers[0, stored.labels.index("supporting")])
    assert set(chair) < painted_before_erase, "the erase removed vertices and added none"
    assert_under_path(screen, chair, front, (stroke[0], rub[0]), radius_px)
    assert_under_path(screen, supporting, front, support, radius_px)
    erased = segment_distance(screen[chair], rub[0] + [0.5 * radius_px, 0], rub[1] - [radius_px, 0])
    assert erased.min() > 0.5 * radius_px, "the erased stretch holds no chair vertex"
    assert not set(chair) & set(supporting) or len(set(chair) & set(supporting)) < 0.1 * len(chair)
    page.reload()
    page.wait_for_selector("#progress", timeout=60000)
    page.wait_for_function(f"!document.getElementById('task-info').innerText.includes('Task {task_id}:')")
    with store.session() as session:
        rows = session.query(models.SubmissionRow).filter_by(task_id=task_id).all()
        assert len(rows) == 1 and rows[0].seconds_spent > 0, "a reload neither lost nor repeated the submission"


def brush_radius_pixels(page, mesh: dict) -> float:
    """The default brush radius in page pixels at the body's depth (finite difference of the projection)."""
    camera = page.evaluate("window.studioPainter.camera()")
    vertices = np.asarray(mesh["vertices"]).reshape(-1, 3)
    centre = vertices.mean(0)
    probe = {"vertices": np.concatenate([centre, centre + [BRUSH_RADIUS, 0, 0]]).tolist()}
    screen, _ = project(probe, camera)
    return float(np.linalg.norm(screen[1] - screen[0]))


def assert_under_path(screen: np.ndarray, ids: np.ndarray, front: np.ndarray, segment, radius_px: float) -> None:
    """Every painted vertex lies within the brush of the path, on the visible side; the path is covered."""
    assert len(ids) >= 10, f"only {len(ids)} vertices painted"
    distance = segment_distance(screen[ids], *segment)
    assert distance.max() < 2.0 * radius_px + 4, f"a vertex {distance.max():.1f}px from the path (brush {radius_px:.1f}px)"
    assert front[ids].mean() > 0.95, "painted vertices are on the side facing the camera"
    samples = [np.asarray(segment[0]) + t * (np.asarray(segment[1]) - segment[0]) for t in np.linspace(0.1, 0.9, 9)]
    covered = [np.linalg.norm(screen[ids] - sample, axis=1).min() < radius_px for sample in samples]
    assert np.mean(covered) >= 0.85, f"the path is covered at {np.mean(covered):.0%} of its samples"


def test_annotator_cannot_open_admin_and_admin_export_loads(browser, studio_server, tmp_path):
    store = studio_server.studio.store
    task_id = add_task(store, png_bytes(2), "export.png", labels=["cup"], topology=TOPOLOGY, redundancy=1, priority=-5)
    annotator = store.ensure_annotator("export-worker")
    workflow.assign_task(store, annotator.id, task_id)
    workflow.submit(store, annotator.id, task_id, {"cup": [5, 6, 7, 8]}, "export-test-key-1", topology=TOPOLOGY)

    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{studio_server.url}/annotate/?worker=w-admin-probe")
    page.wait_for_selector("#studio-painter", timeout=60000)
    for path in ("/admin/gradio_api/info", "/admin/config"):
        status = page.evaluate(f"fetch('{path}').then(r => r.status)")
        assert status in (401, 403), f"{path} answered {status} to an annotator"
    page.goto(f"{studio_server.url}/admin/")
    assert "Admin console" not in page.content()
    page.fill("input[type=password]", "wrong password")
    page.fill("input:not([type=password])", studio_server.studio.settings.admin.username)
    page.keyboard.press("Enter")
    page.wait_for_timeout(1000)
    assert "Admin console" not in page.content()

    settings = studio_server.studio.settings.admin
    page.goto(f"{studio_server.url}/admin/")
    page.fill("input:not([type=password])", settings.username)
    page.fill("input[type=password]", settings.password)
    page.keyboard.press("Enter")
    page.wait_for_selector("text=Admin console", timeout=30000)
    page.get_by_role("tab", name="Export").click()
    page.click("#export")
    link = page.wait_for_selector("#export-file a[download], #export-file a", timeout=60000)
    with page.expect_download() as download_info:
        link.click()
    archive = tmp_path / "export.zip"
    download_info.value.save_as(archive)
    with zipfile.ZipFile(archive) as bundle:
        arrays = np.load(io.BytesIO(bundle.read(f"contact_{TOPOLOGY}.npz")))
        manifest = [json.loads(line) for line in bundle.read("manifest.jsonl").decode().splitlines()]
    entry = next(item for item in manifest if item["task_id"] == task_id)
    assert np.flatnonzero(arrays["contact_label"][entry["row"]]).tolist() == [5, 6, 7, 8]
    context.close()


def toast_text(page) -> str:
    page.wait_for_selector(".toast-body", timeout=30000)
    text = page.inner_text(".toast-body")
    page.evaluate("document.querySelectorAll('.toast-close').forEach((b) => b.click())")
    page.wait_for_timeout(300)
    return text


def open_demo(page, url: str) -> None:
    page.goto(f"{url}/")
    page.wait_for_selector("#predict-contact", timeout=60000)


def upload_and_predict(page, url: str, path) -> str:
    open_demo(page, url)
    page.set_input_files("#contact-image input[type=file]", str(path))
    page.wait_for_timeout(500)
    page.click("#predict-contact")
    return toast_text(page)


def test_bad_input_in_the_page_gets_a_clear_message_and_the_server_keeps_serving(browser, studio_server, tmp_path,
                                                                                   picture, artifacts):
    not_image = tmp_path / "holiday.png"
    not_image.write_text("this is not a picture")
    huge = tmp_path / "huge.png"
    Image.new("L", (8000, 6250)).save(huge)
    nan_mesh = tmp_path / "broken.obj"
    nan_mesh.write_text("v nan 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    url = studio_server.url
    assert "not a readable image" in upload_and_predict(page, url, not_image)
    assert "at most 40,000,000 pixels" in upload_and_predict(page, url, huge)
    open_demo(page, url)
    page.set_input_files("#contact-image input[type=file]", str(picture))
    page.wait_for_timeout(500)
    page.click("#predict-contact")
    page.wait_for_selector("#model-source", timeout=60000)
    assert "baseline: category prior" in page.inner_text("#model-source"), "the server still serves after bad input"
    page.screenshot(path=str(artifacts / "demo-contact.png"), full_page=True)

    page.get_by_role("tab", name="Affordance").click()
    page.set_input_files("#affordance-image input[type=file]", str(picture))
    page.set_input_files("#object-upload input[type=file]", str(nan_mesh))
    page.wait_for_timeout(500)
    page.click("#object-choice input")
    page.get_by_role("option", name="my upload").click()
    page.click("#paint-affordance")
    assert "NaN" in toast_text(page)

    task_id = add_task(studio_server.studio.store, png_bytes(3), "range.png", labels=["bench"], topology=TOPOLOGY,
                       redundancy=1, priority=900)
    annotator = browser.new_page()
    open_annotator(annotator, studio_server.url, "w-out-of-range", task_id)
    annotator.evaluate("window.studioPainter.layers = () => ({bench: [0, 99999]})")
    annotator.click("#submit")  # the task came with a ticket: the JSON submit answers, in the page's status line
    annotator.wait_for_function("document.getElementById('status').innerText.includes('0..10613')", timeout=30000)
    assert not annotator.is_disabled("#submit"), "the painting is kept and can be sent again"
    assert load_task_annotations(studio_server.studio.store, task_ids=[task_id]) == {}, "nothing was stored"


def touch(cdp, kind: str, points) -> None:
    """One touch event through Chromium's input pipeline (real pointer events with pointerType 'touch')."""
    cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [
        {"x": float(x), "y": float(y), "id": index} for index, (x, y) in enumerate(points)]})


def touch_drag(page, cdp, starts, ends, steps: int = 10) -> None:
    starts, ends = np.asarray(starts, float), np.asarray(ends, float)
    touch(cdp, "touchStart", starts)
    for t in np.linspace(0, 1, steps + 1)[1:]:
        touch(cdp, "touchMove", starts + t * (ends - starts))
        page.wait_for_timeout(20)
    touch(cdp, "touchEnd", [])
    page.wait_for_timeout(200)


def test_one_finger_paints_and_two_fingers_orbit_and_pinch_zoom(browser, studio_server, artifacts):
    store = studio_server.studio.store
    mesh = studio_server.studio.body_mesh_json(TOPOLOGY)
    zero = np.zeros(len(mesh["vertices"]) // 3, dtype=np.float32)
    task_id = add_task(store, png_bytes(4), "touch.png", labels=["chair"], topology=TOPOLOGY, redundancy=1,
                       prediction={"chair": zero}, model_name="test zero prediction", priority=2000)
    context = browser.new_context(has_touch=True, viewport={"width": 900, "height": 1000})
    page = context.new_page()
    open_annotator(page, studio_server.url, "w-touch", task_id)
    cdp = context.new_cdp_session(page)
    camera = page.evaluate("window.studioPainter.camera()")
    screen, _ = project(mesh, camera)
    front = front_vertices(mesh)
    parts = np.asarray(mesh["part_labels"])
    chest = screen[(parts == mesh["part_names"].index("chest")) & front].mean(0)
    radius_px = brush_radius_pixels(page, mesh)

    stroke = (chest - [3 * radius_px, 0], chest + [3 * radius_px, 0])
    touch_drag(page, cdp, [stroke[0]], [stroke[1]])
    wait_for_server_count(page, "chair", None)
    painted = np.asarray(page.evaluate("window.studioPainter.layers().chair"))
    assert_under_path(screen, painted, front, stroke, radius_px)
    assert page.evaluate("window.studioPainter.camera()")["viewProjection"] == camera["viewProjection"], \
        "one finger paints without moving the camera"

    touch_drag(page, cdp, [chest - [60, 0], chest + [60, 0]], [chest + [120, 0], chest + [240, 0]])
    orbited = page.evaluate("window.studioPainter.camera()")
    assert not np.allclose(orbited["viewProjection"], camera["viewProjection"]), "two fingers orbit"
    assert page.evaluate("window.studioPainter.state()")["counts"]["chair"] == len(painted), \
        "a two-finger gesture paints nothing"

    before = brush_radius_pixels(page, mesh)
    centre = np.asarray([camera["rect"]["left"] + camera["rect"]["width"] / 2,
                         camera["rect"]["top"] + camera["rect"]["height"] / 2])
    touch_drag(page, cdp, [centre - [40, 0], centre + [40, 0]], [centre - [160, 0], centre + [160, 0]])
    assert brush_radius_pixels(page, mesh) > 1.5 * before, "spreading two fingers zooms in"
    assert page.evaluate("window.studioPainter.state()")["counts"]["chair"] == len(painted)
    page.screenshot(path=str(artifacts / "touch-painted.png"))
    context.close()


def test_the_demo_hands_out_an_absolute_clickable_link_that_opens_the_painter(browser, studio_server, picture):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    open_demo(page, studio_server.url)
    page.get_by_role("tab", name="Affordance").click()
    page.set_input_files("#affordance-image input[type=file]", str(picture))
    page.wait_for_timeout(500)
    with context.expect_page() as opened:  # "Paint instead" opens the painter in a new tab by itself
        page.click("#paint-affordance")
    anchor = page.wait_for_selector("#paint-anchor", timeout=30000)
    href = anchor.get_attribute("href")
    assert href.startswith(f"{studio_server.url}/annotate?worker=demo-"), href
    painter = opened.value
    painter.bring_to_front()
    painter.wait_for_selector('#studio-painter[data-ready="1"]', timeout=120000)
    assert painter.url.startswith(f"{studio_server.url}/annotate/?worker=demo-")
    page.bring_to_front()
    with context.expect_page() as clicked:  # and the link shown on the page opens it too
        anchor.click()
    clicked.value.bring_to_front()
    clicked.value.wait_for_selector('#studio-painter[data-ready="1"]', timeout=120000)
    context.close()


def test_without_a_task_the_buttons_and_tools_are_disabled_and_the_check_resets(browser, tmp_path):
    """A studio of its own with one task: after it is skipped there is none, and the page says so by itself."""
    from studio_servers import start_studio, stop

    models = tmp_path / "models"
    models.mkdir()
    running, server = start_studio(models, tmp_path)
    try:
        store = running.studio.store
        mesh = running.studio.body_mesh_json(TOPOLOGY)
        zero = np.zeros(len(mesh["vertices"]) // 3, dtype=np.float32)
        task_id = add_task(store, png_bytes(5), "reset.png", labels=["chair"], topology=TOPOLOGY, redundancy=1,
                           prediction={"chair": zero}, model_name="test zero prediction")
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        open_annotator(page, running.url, "w-reset", task_id)
        page.wait_for_function("!document.querySelector('#submit').disabled", timeout=15000)
        assert not page.is_disabled("#skip") and not page.is_disabled("#flag")
        screen, _ = project(mesh, page.evaluate("window.studioPainter.camera()"))
        parts = np.asarray(mesh["part_labels"])
        chest = screen[(parts == mesh["part_names"].index("chest")) & front_vertices(mesh)].mean(0)
        drag(page, chest - [20, 0], chest + [20, 0])
        wait_for_server_count(page, "chair", None)

        page.click("#skip")
        page.wait_for_function("document.getElementById('status').innerText.includes('Skipped task')", timeout=15000)
        page.wait_for_selector('#studio-painter[data-ready="0"]', timeout=15000)
        page.wait_for_function("document.querySelector('#submit').disabled", timeout=15000)
        assert page.is_disabled("#skip") and page.is_disabled("#flag"), "no task: nothing to skip or flag"
        assert page.query_selector("#painter-server-counts") is None, "the previous task's check is gone"
        for action in ("paint", "erase", "brush", "part", "undo", "redo", "reset-view"):
            assert page.is_disabled(f'[data-action="{action}"]'), f"the {action} tool works without a task"
        assert "No task is waiting" in page.inner_text("#task-info")
        task_id = add_task(store, png_bytes(6), "again.png", labels=["chair"], topology=TOPOLOGY, redundancy=1)
        page.reload()
        open_annotator(page, running.url, "w-reset", task_id)
        for action in ("paint", "erase", "brush", "part"):
            assert not page.is_disabled(f'[data-action="{action}"]'), f"the {action} tool is off with a task"
    finally:
        stop(server, running)
