"""The GenZI tab in Debian's Chromium: open the demo, load the living room, pick the sofa seat by clicking the
scene, and see the selected views. The click target is computed from the camera the picker reports, and the
point the server received must be where the ray meets the seat."""
from __future__ import annotations

import numpy as np
import pytest

from genzi_fixtures import genzi_server  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]
SEAT = np.array([0.0, 0.45, -1.3])  # on the sofa's seat (top at y = 0.45, front edge at z = -1.05)


def to_page(point: np.ndarray, camera: dict) -> np.ndarray:
    matrix = np.asarray(camera["viewProjection"], dtype=np.float64).reshape(4, 4).T  # column-major in JS
    clip = matrix @ np.append(point, 1.0)
    ndc = clip[:3] / clip[3]
    rect = camera["rect"]
    return np.array([rect["left"] + (ndc[0] + 1) / 2 * rect["width"], rect["top"] + (1 - ndc[1]) / 2 * rect["height"]])


def test_visitor_picks_the_sofa_seat_by_clicking_and_sees_the_views(browser, genzi_server, artifacts):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(genzi_server.url + "/")
    page.get_by_role("tab", name="GenZI: people in a scene").click()
    page.click("#genzi-load")
    page.wait_for_selector('#studio-scene-picker[data-ready="1"][data-scene="living_room"]', timeout=120000)
    page.wait_for_function("document.querySelector('#genzi-point textarea, #genzi-point input').value.length > 0",
                           timeout=60000)
    target = to_page(SEAT, page.evaluate("window.studioScenePicker.camera()"))
    page.mouse.click(*target)
    page.wait_for_function("""() => { const box = document.querySelector('#genzi-point textarea, #genzi-point input');
        return box.value !== '0.000, 0.450, -1.350' && document.getElementById('genzi-point-info'); }""",
                           timeout=120000)
    picked = np.array([float(v) for v in page.input_value("#genzi-point textarea, #genzi-point input").split(",")])
    assert np.linalg.norm(picked - SEAT) < 0.03, picked  # the ray met the seat under the cursor
    assert abs(picked[1] - 0.45) < 1e-3
    assert "cm from the surface" in page.inner_text("#genzi-point-info")
    page.click("#genzi-show-views")
    page.wait_for_function("document.querySelectorAll('#genzi-views img').length >= 16", timeout=300000)
    assert "views pass" in page.inner_text("#genzi-info")
    shot = artifacts / "genzi-views.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    page.close()
