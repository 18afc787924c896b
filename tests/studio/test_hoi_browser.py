"""The HOI tab in Debian's Chromium: pick an example, fit, and get a 3D result, an overlay and downloads."""
from __future__ import annotations

import pytest

import studio.hoi as hoi
from engine.hoi.fit import FitConfig

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(autouse=True)
def quick_fit():
    previous = hoi.FIT_CONFIG
    hoi.FIT_CONFIG = FitConfig(iterations=8, render_size=96, frames=3)
    yield
    hoi.FIT_CONFIG = previous


def test_example_to_a_3d_result(browser, studio_server, artifacts):
    page = browser.new_page(viewport={"width": 1400, "height": 1400})
    page.goto(studio_server.url + "/")
    page.get_by_role("tab", name="HOI reconstruction").click()
    page.click("#hoi-example input")
    page.get_by_role("option", name="person_chair").click()
    page.wait_for_function("() => document.querySelector('#hoi-image') && "
                           "document.querySelector('#hoi-image').innerText.includes('person_chair')", timeout=30000)
    page.click("#hoi-fit")
    page.wait_for_selector("#hoi-report", timeout=240000)
    report = page.inner_text("#hoi-report")
    assert "interactvlm contacts" in report and "silhouette only (no contacts)" in report
    page.wait_for_selector("#hoi-3d canvas", timeout=60000)
    page.wait_for_selector("#hoi-overlay img", timeout=60000)
    assert page.locator("#hoi-downloads a").count() >= 5
    page.screenshot(path=str(artifacts / "hoi-fit.png"), full_page=True)
