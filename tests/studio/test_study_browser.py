"""Participants in Debian's Chromium: one always picks method A whatever its side (keyboard, with ratings), one
always picks the left side, one fails the attention checks, one on a phone taps "top"/"bottom"; a reload
resumes at the same trial, the completion code appears at the end, and a GLB pair is orbitable in WebGL."""
from __future__ import annotations

import pytest
import trimesh
from sqlalchemy import select
from study_fixtures import open_study

from annotations import models, studies
from annotations.studies import ItemSpec, StudyConfig
from annotations.studies_media import check_stimulus
from annotations.study_stats import analyse

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def is_swapped(store, key: str) -> bool:
    with store.session() as session:
        return session.scalar(select(models.StudyTrialRow.swapped).where(models.StudyTrialRow.key == key))


def is_catch(store, key: str) -> bool:
    with store.session() as session:
        return session.scalar(select(models.StudyItemRow.is_catch).join(
            models.StudyTrialRow, models.StudyTrialRow.item_id == models.StudyItemRow.id)
            .where(models.StudyTrialRow.key == key))


def start(page, url: str, slug: str, pid: str) -> dict:
    page.goto(f"{url}/study/{slug}?pid={pid}&session=S-{pid}")
    page.wait_for_selector("#consent-agree", state="visible", timeout=30000)
    page.click("#consent-agree")
    return wait_for_trial(page, None)


def wait_for_trial(page, previous: str | None) -> dict:
    page.wait_for_function("""(previous) => { const s = window.studyPage && window.studyPage.state();
        return s && (s.done || (!s.busy && s.key && s.key !== previous)); }""", arg=previous, timeout=30000)
    return page.evaluate("window.studyPage.state()")


def answer(page, side: str, rating: int | None = None, mobile: bool = False) -> None:
    if mobile:
        page.tap(f"#choose-{side}")
    else:
        page.keyboard.press("ArrowLeft" if side == "left" else "ArrowRight")
    if rating is not None:
        page.keyboard.press(str(rating))


def test_always_a_with_ratings_resumes_after_reload_and_ends_with_the_code(browser, studio_server, artifacts):
    store = studio_server.studio.store
    open_study(store, "pick-a", items=6, catches=1, attention_checks=1, likert="chosen", completion_code="DONE-123",
               reference=True, consent="Consent text.", instructions="Pick the better fit.")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    state = start(page, studio_server.url, "pick-a", "always-a")
    assert page.inner_text("#progress") == "Item 1 of 7"
    assert page.is_visible("#reference") and page.inner_text("#choose-left") == "Left is better"
    page.screenshot(path=str(artifacts / "study-trial.png"))
    answered = 0
    while not state["done"]:
        side = "right" if is_swapped(store, state["key"]) else "left"
        answer(page, side, rating=5)
        answered += 1
        state = wait_for_trial(page, state["key"])
        if answered == 2:
            before = state["key"]
            page.reload()
            state = wait_for_trial(page, None)
            assert state["key"] == before and page.inner_text("#progress") == "Item 3 of 7", "resumes at the same trial"
    assert page.inner_text("#completion-code") == "DONE-123"
    page.screenshot(path=str(artifacts / "study-done.png"))
    result = analyse(studies.response_records(store, "pick-a"), max_failed_checks=0)
    assert result.kept.preference.share == 1.0 and result.kept.preference.trials == 6 and result.excluded == ()
    assert result.kept.likert[0].mean.value == 5.0 and result.kept.likert[1].count == 0


def test_always_left_shows_half_a_and_a_strong_position_bias(browser, studio_server):
    store = studio_server.studio.store
    open_study(store, "left", items=24)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    state = start(page, studio_server.url, "left", "lefty")
    while not state["done"]:
        answer(page, "left")
        state = wait_for_trial(page, state["key"])
    result = analyse(studies.response_records(store, "left")).all
    unswapped = sum(not swapped for _, _, swapped in studies.participant_trials(store, "left", "lefty"))
    assert result.preference.successes == unswapped and 0.25 <= result.preference.share <= 0.75
    assert result.position_bias.share == 1.0 and result.position_bias.p_value < 1e-6
    print(f"\nalways left: {result.preference.share:.0%} A, position bias {result.position_bias.share:.0%} "
          f"left (p = {result.position_bias.p_value:.2g})")


def test_failing_the_attention_checks_excludes(browser, studio_server):
    store = studio_server.studio.store
    open_study(store, "checks", items=4, catches=2, attention_checks=2, max_failed_checks=1)
    for pid, fail in (("careful", False), ("careless", True)):
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        state = start(page, studio_server.url, "checks", pid)
        while not state["done"]:
            a_side = "right" if is_swapped(store, state["key"]) else "left"
            b_side = "left" if a_side == "right" else "right"
            answer(page, b_side if fail and is_catch(store, state["key"]) else a_side)
            state = wait_for_trial(page, state["key"])
        page.close()
    result = analyse(studies.response_records(store, "checks"), max_failed_checks=1)
    assert [person.participant for person in result.excluded] == ["careless"]
    assert result.excluded[0].reason == "failed 2 of 2 attention checks (more than 1 allowed)"
    assert result.all.participants == 2 and result.kept.participants == 1


def test_phone_stacks_the_pair_with_top_and_bottom(browser, studio_server, artifacts):
    store = studio_server.studio.store
    open_study(store, "phone", items=2, likert="both")
    context = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True)
    page = context.new_page()
    state = start(page, studio_server.url, "phone", "mobile")
    assert page.inner_text("#choose-left") == "Top is better" and page.inner_text("#choose-right") == "Bottom is better"
    top, bottom = (page.locator(f"#side-{side}").bounding_box() for side in ("left", "right"))
    assert bottom["y"] >= top["y"] + top["height"] - 1, "stacked"
    page.tap("#rate-left-2")
    page.tap("#rate-right-4")
    page.screenshot(path=str(artifacts / "study-phone.png"))
    page.tap("#choose-right")
    state = wait_for_trial(page, state["key"])
    record = studies.response_records(store, "phone")[0]
    assert record.choice == "right" and (record.likert_b if not record.swapped else record.likert_a) == 4
    context.close()


def test_glb_pairs_are_orbitable(browser, studio_server, artifacts):
    store = studio_server.studio.store
    box, sphere = (check_stimulus("m.glb", mesh.export(file_type="glb")) for mesh in
                   (trimesh.creation.box(), trimesh.creation.icosphere(subdivisions=2)))
    study = studies.create_study(store, slug="models", title="3D", method_a="A", method_b="B",
                                 items=[ItemSpec("m", box, sphere)], config=StudyConfig())
    studies.set_state(store, study.slug, "open")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    start(page, studio_server.url, "models", "viewer")
    page.wait_for_function("document.querySelectorAll('.stage canvas').length === 2", timeout=30000)
    canvas = page.locator("#stage-left canvas").bounding_box()
    before = page.locator("#stage-left canvas").screenshot()
    page.mouse.move(canvas["x"] + canvas["width"] / 2, canvas["y"] + canvas["height"] / 2)
    page.mouse.down()
    page.mouse.move(canvas["x"] + canvas["width"] / 2 + 120, canvas["y"] + canvas["height"] / 2, steps=8)
    page.mouse.up()
    after = page.locator("#stage-left canvas").screenshot()
    page.screenshot(path=str(artifacts / "study-glb.png"))
    assert errors == [] and not page.inner_text("#status")
    assert before != after, "dragging orbits the model"
