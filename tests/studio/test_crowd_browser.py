"""Issue 17's walls, in Debian's Chromium, through the links the app hands out: the demo shows the image and no
model tokens; a visitor's "Paint instead" ends in a thank-you; the admin's task list reviews, promotes and
retires; a task on a body the server cannot show can still be skipped and flagged."""
from __future__ import annotations

import numpy as np
import pytest

from annotations import batch, models, workflow
from test_annotate_api import drain
from test_browser import front_vertices, open_annotator, open_demo, png_bytes, project, touch_drag

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def admin_login(page, url: str, settings) -> None:
    page.goto(f"{url}/admin")  # the startup banner's link, without a trailing slash
    page.fill("input:not([type=password])", settings.username)
    page.fill("input[type=password]", settings.password)
    page.keyboard.press("Enter")
    page.wait_for_selector("text=Admin console", timeout=30000)


def table_rows(page, selector: str) -> dict[int, list[str]]:
    """A Gradio dataframe's rows (its virtual grid) as cell texts, keyed by the row index."""
    return {int(key): cells for key, cells in page.evaluate(f"""() => Object.entries(
        [...document.querySelectorAll('{selector} [role=gridcell][data-row]')].reduce((rows, cell) => {{
            (rows[cell.dataset.row] ||= [])[Number(cell.dataset.col)] = cell.innerText.trim(); return rows; }}, {{}}))""")}


def listed_task_ids(page) -> dict[int, list[str]]:
    """task id -> [cells] of the task list, with the grid's row index appended."""
    return {int(cells[0]): cells + [str(index)] for index, cells in table_rows(page, "#task-list").items()
            if cells and cells[0].isdigit()}


def select_row(page, task_id: int) -> None:
    """Click the task's first cell (the list selects it and opens its review)."""
    index = listed_task_ids(page)[task_id][-1]
    page.click(f'#task-list [data-testid="cell-{index}-0"]')
    page.wait_for_function(f"() => document.querySelector('#review-info-box')?.innerText.includes('Task {task_id}')",
                           timeout=60000)


def test_demo_shows_the_input_image_thumbnails_and_no_model_tokens(browser, model_server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    open_demo(page, model_server.url)
    examples = page.locator("#contact-examples img")
    assert examples.count() >= 3, "the examples show thumbnails"
    examples.first.click()
    page.wait_for_selector("#contact-preview img", timeout=30000)
    page.click("#predict-contact")
    page.wait_for_selector("#contact-answers li", timeout=120000)
    assert "[SEG]" not in page.content() and "SEG]" not in page.inner_text("body")
    assert "hcontact" in page.inner_text("#model-source")
    context.close()


def test_paint_instead_ends_with_thanks_and_the_admin_promotes_reviews_and_retires(browser, studio_server, picture):
    store = studio_server.studio.store
    crowd_task = batch.add_task(store, png_bytes(41), "crowd.png", labels=["cup"], topology="openbody-v1",
                                redundancy=5, priority=50)  # the lab's queue is not empty
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    open_demo(page, studio_server.url)
    page.get_by_role("tab", name="Affordance").click()
    button = page.locator("#predict-affordance")
    assert button.is_disabled() and "no affordance checkpoint installed" in button.inner_text()
    assert "/" not in button.inner_text()
    page.set_input_files("#affordance-image input[type=file]", str(picture))
    page.wait_for_selector("#affordance-preview img", timeout=30000)
    with context.expect_page() as opened:
        page.click("#paint-affordance")
    painter = opened.value
    painter.wait_for_selector('#studio-painter[data-ready="1"]', timeout=120000)
    assert "where a person would sit on the" in painter.inner_text("#task-text")
    task_id = int(painter.get_attribute("#studio-painter", "data-task"))
    painter.click("#submit")
    painter.wait_for_selector("#demo-thanks", timeout=30000)
    back = painter.get_attribute("#back-to-demo", "href")
    assert back == f"{studio_server.url}/"
    assert painter.get_attribute("#studio-painter", "data-task") != str(crowd_task)
    painter.close()

    admin = context.new_page()
    admin_login(admin, studio_server.url, studio_server.studio.settings.admin)
    admin.get_by_role("tab", name="Tasks").click()
    admin.click("#tasks-show")
    admin.wait_for_function(f"() => document.querySelector('#task-list')?.innerText.includes('crowd.png')",
                            timeout=30000)
    rows = listed_task_ids(admin)
    assert rows[task_id][2] == "demo" and rows[crowd_task][2] == "open"
    assert rows[task_id][-2] == picture.name, "the visitor's own file name"
    select_row(admin, task_id)
    assert admin.locator("#review-gallery img").count() >= 2, "the visitor's painting and the aggregate"
    admin.click("#task-promote")
    admin.wait_for_function("() => document.querySelector('#task-action-status')?.innerText.includes('crowd queue')",
                            timeout=30000)
    assert store.task(task_id).pool == "crowd"
    select_row(admin, crowd_task)
    admin.click("#task-retire")
    admin.wait_for_function("() => document.querySelector('#task-action-status')?.innerText.includes('retired')",
                            timeout=30000)
    assert store.task(crowd_task).pool == "retired"
    assert listed_task_ids(admin)[crowd_task][2] == "retired"
    fresh = store.ensure_annotator("after-retire").id
    served = workflow.next_task(store, fresh)
    assert served is None or served.task.id != crowd_task
    context.close()


def test_a_task_on_a_missing_body_is_never_served_and_an_open_one_can_be_skipped_and_flagged(browser, studio_server):
    """next_task never hands out a task on a body this server lacks; one claimed before its body went missing
    says so in the page, and Skip and Flag work on it."""
    store = studio_server.studio.store
    drain(store)  # earlier tests' open slots would otherwise follow the skip
    stuck = [batch.add_task(store, png_bytes(60 + k), f"smplh{k}.png", labels=["chair"], topology="smplh-6890",
                            redundancy=1, priority=100) for k in range(2)]
    annotator = store.ensure_annotator("stuck-worker").id
    assert workflow.next_task(store, annotator).task.id == stuck[0]  # claimed without the body filter
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(f"{studio_server.url}/annotate?worker=stuck-worker")
    page.wait_for_selector("#task-unavailable", timeout=60000)
    assert "cannot be painted" in page.inner_text("#task-unavailable")
    page.wait_for_selector("#skip:not([disabled])", timeout=30000)
    page.click("#skip")
    page.wait_for_function(f"() => document.querySelector('#status')?.innerText.includes('Skipped task {stuck[0]}')",
                           timeout=30000)
    assert page.locator("#task-unavailable").count() == 0, "the other task on the missing body is never served"
    assert workflow.next_task(store, annotator).task.id == stuck[1]
    page.reload()
    page.wait_for_selector("#task-unavailable", timeout=60000)
    page.wait_for_selector("#flag:not([disabled])", timeout=30000)
    page.click("#flag")
    page.wait_for_function(f"() => document.querySelector('#status')?.innerText.includes('Flagged task {stuck[1]}')",
                           timeout=30000)
    assert "no annotator yet" not in page.content()
    with store.session() as session:
        reasons = dict(session.query(models.AssignmentRow.task_id, models.AssignmentRow.flag_reason)
                       .filter(models.AssignmentRow.task_id.in_(stuck)).all())
    assert reasons == {stuck[0]: None, stuck[1]: workflow.FLAG_REASONS[0]}
    context.close()


def boxes(page) -> tuple[dict, dict]:
    return page.locator("#task-image").bounding_box(), page.locator("#studio-painter canvas").first.bounding_box()


def inside(box: dict, viewport: dict) -> bool:
    return box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= viewport["width"] + 1 \
        and box["y"] + box["height"] <= viewport["height"] + 1


def test_the_task_image_is_beside_the_painter_and_zooms(browser, studio_server):
    store = studio_server.studio.store
    task_id = batch.add_task(store, png_bytes(70, size=(240, 320)), "wide.png", labels=["chair"],
                             topology="openbody-v1", redundancy=1, priority=3000)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    open_annotator(page, studio_server.url, "w-image-desk", task_id)
    page.wait_for_selector("#task-image img", timeout=30000)
    image, canvas = boxes(page)
    assert image["x"] >= canvas["x"] + canvas["width"] - 1, "the image sits to the right of the painter"
    assert image["y"] < canvas["y"] + canvas["height"] and image["y"] + image["height"] > canvas["y"]
    centre = (image["x"] + image["width"] / 2, image["y"] + image["height"] / 2)
    page.mouse.move(*centre)
    page.mouse.wheel(0, -400)
    page.wait_for_function("() => Number(document.getElementById('task-image').dataset.zoom) > 1.5")
    page.mouse.dblclick(*centre)
    page.wait_for_function("() => Number(document.getElementById('task-image').dataset.zoom) === 1")
    context.close()


def test_on_a_phone_image_and_painter_share_the_screen_and_the_stroke_survives(browser, studio_server):
    store = studio_server.studio.store
    mesh = studio_server.studio.body_mesh_json("openbody-v1")
    zero = np.zeros(len(mesh["vertices"]) // 3, dtype=np.float32)  # no pre-annotation: the stroke is all there is
    task_id = batch.add_task(store, png_bytes(71), "phone.png", labels=["chair"], topology="openbody-v1",
                             redundancy=1, priority=3001, prediction={"chair": zero}, model_name="test zero")
    viewport = {"width": 390, "height": 844}
    context = browser.new_context(viewport=viewport, has_touch=True, is_mobile=True, device_scale_factor=2)
    page = context.new_page()
    open_annotator(page, studio_server.url, "w-image-phone", task_id)
    page.wait_for_selector("#task-image img", timeout=30000)
    image, canvas = boxes(page)
    assert inside(image, viewport), "the image is on screen"
    visible = min(canvas["y"] + canvas["height"], viewport["height"]) - max(canvas["y"], 0)
    assert visible > 250 and canvas["width"] > 0.75 * viewport["width"], "and so is the painter, as wide as the page"
    cdp = context.new_cdp_session(page)
    camera = page.evaluate("window.studioPainter.camera()")
    screen, _ = project(mesh, camera)
    front = front_vertices(mesh)
    shown = front & (screen[:, 1] > image["y"] + image["height"] + 10) & (screen[:, 1] < viewport["height"] - 10)
    start = screen[shown].mean(0)
    touch_drag(page, cdp, [start - [30, 0]], [start + [30, 0]])
    page.wait_for_function("() => window.studioPainter.state().counts.chair > 0", timeout=15000)
    painted = page.evaluate("window.studioPainter.state()")["counts"]["chair"]
    # Look at the image: tap to enlarge it, pinch to zoom, tap to shrink it; the stroke is still there.
    centre = np.asarray([image["x"] + image["width"] / 2, image["y"] + image["height"] / 2])
    page.touchscreen.tap(*centre)
    page.wait_for_function("() => document.getElementById('task-image').classList.contains('task-image-large')")
    large = page.locator("#task-image").bounding_box()
    assert large["width"] > 2 * image["width"] and inside(large, viewport)
    middle = np.asarray([large["x"] + large["width"] / 2, large["y"] + large["height"] / 2])
    touch_drag(page, cdp, [middle - [20, 0], middle + [20, 0]], [middle - [80, 0], middle + [80, 0]])
    page.wait_for_function("() => Number(document.getElementById('task-image').dataset.zoom) > 1.5")
    page.touchscreen.tap(large["x"] + 10, large["y"] + 10)
    page.wait_for_function("() => !document.getElementById('task-image').classList.contains('task-image-large')")
    assert page.evaluate("window.studioPainter.state()")["counts"]["chair"] == painted
    page.click("#submit")
    page.wait_for_function(f"() => document.querySelector('#status')?.innerText.includes('Submitted task {task_id}')",
                           timeout=30000)
    context.close()


def test_an_object_task_opens_looking_at_its_functional_surface(browser, studio_server, picture):
    """"Sit" on the built-in chair: the painter opens from above the seat, not from the front."""
    from annotations.batch import add_task
    from engine.objects import builtin_object

    store = studio_server.studio.store
    chair = builtin_object("chair")
    task_id = add_task(store, png_bytes(72), "chair.png", labels=["sit"], kind="object_affordance",
                       object_points=chair.vertices, object_faces=chair.faces, object_class="chair", priority=3002)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    open_annotator(page, studio_server.url, "w-object-view", task_id)
    assert "where a person would sit on the chair" in page.inner_text("#task-text")
    camera = page.evaluate("window.studioPainter.camera()")
    matrix = np.asarray(camera["viewProjection"], dtype=np.float64).reshape(4, 4).T
    centre = chair.vertices.mean(0)
    above, in_front = centre + [0, 1, 0], centre + [0, 0, 1]
    depth = lambda point: (matrix @ np.append(point, 1.0))[3]  # clip w: the distance along the view
    assert depth(above) < depth(centre) and depth(in_front) < depth(centre), "the camera looks down and from the front"
    context.close()
