"""The study routes over HTTP (participant role) and the admin's Studies tab through ``gradio_client``.

A participant's page and every JSON answer are searched for what must never reach them: the methods' names,
the items' names and sources. Bad requests get JSON errors in words, never paths or exception names.
"""
from __future__ import annotations

import csv
import io
import json
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from study_fixtures import open_study, png, write_pairs_zip

from annotations import studies

SECRETS = ("SecretMethodA", "SecretMethodB", "item-0")
LEAKS = ("/tmp", "Traceback", "Error:", "sqlalchemy", "var/")


def no_leak(text: str) -> None:
    for secret in SECRETS + LEAKS:
        assert secret not in text, f"{secret!r} reached a participant"


@pytest.fixture
def http(studio_server):
    with httpx.Client(base_url=studio_server.url, timeout=30) as client:
        yield client


def join(http, slug: str, pid: str, **extra) -> str:
    answer = http.post(f"/study/{slug}/api/join", json={"pid": pid, "session": "S", "consent": True, **extra})
    assert answer.status_code == 200, answer.text
    return answer.json()["token"]


def test_a_participant_walks_through_and_never_sees_the_methods(studio_server, http):
    store = studio_server.studio.store
    open_study(store, "walk", items=4, likert="chosen", method_a="SecretMethodA", method_b="SecretMethodB",
               reference=True, consent="You agree.\n\nReally.", redirect_url="https://app.prolific.com/done?cc=X",
               completion_code="CODE-42")
    page = http.get("/study/walk?pid=P1&session=S1")
    assert page.status_code == 200 and "study.js" in page.text
    no_leak(page.text)
    first = http.post("/study/walk/api/join", json={"pid": "P1", "session": "S1", "consent": False})
    assert first.json()["needs_consent"] and first.json()["consent"] == "You agree.\n\nReally."
    assert studies.participation(store, "walk") == (0, 0), "no participant before consent"
    token = join(http, "walk", "P1")
    headers = {"X-Study-Token": token}
    payload = http.get("/study/walk/api/trial", headers=headers).json()
    items = {item.id: item for item in studies.study_items(store, "walk")}
    plan = studies.participant_trials(store, "walk", "P1")
    texts = [first.text, payload and json.dumps(payload)]
    for position, item_id, swapped in plan:
        trial = payload["trial"]
        assert trial["position"] == position + 1 and trial["total"] == 4
        left, right = (http.get(trial[side]) for side in ("left", "right"))
        expected = ("b", "a") if swapped else ("a", "b")
        assert left.content == items[item_id].stimuli[expected[0]].path.read_bytes()
        assert right.content == items[item_id].stimuli[expected[1]].path.read_bytes()
        assert "filename" not in left.headers.get("content-disposition", "")
        assert http.get(trial["reference"]).content == items[item_id].stimuli["reference"].path.read_bytes()
        answer = http.post("/study/walk/api/respond", headers=headers,
                           json={"trial": trial["key"], "choice": "right", "likert_right": 4, "client_seconds": 2})
        assert answer.status_code == 200, answer.text
        texts.append(answer.text)
        payload = answer.json()
    assert payload == {"receipt": payload["receipt"], "done": True, "completion_code": "CODE-42",
                       "redirect_url": "https://app.prolific.com/done?cc=X"}
    for text in texts:
        no_leak(text)
    records = studies.response_records(store, "walk")
    assert [r.likert_a if r.swapped else r.likert_b for r in records] == [4] * 4


def test_bad_requests_get_clear_errors_in_words(studio_server, http):
    store = studio_server.studio.store
    open_study(store, "bad", items=3)
    mine, theirs = join(http, "bad", "P1"), join(http, "bad", "P2")
    my_trial = http.get("/study/bad/api/trial", headers={"X-Study-Token": mine}).json()["trial"]
    their_trial = http.get("/study/bad/api/trial", headers={"X-Study-Token": theirs}).json()["trial"]
    cases = [
        ({"trial": "forged-key", "choice": "left"}, mine, 403, "does not exist"),
        ({"trial": their_trial["key"], "choice": "left"}, mine, 403, "another participant"),
        ({"trial": my_trial["key"], "choice": "left"}, "", 403, "unknown participant"),
        ({"trial": my_trial["key"], "choice": "up"}, mine, 400, "choice must be one of"),
        ({"trial": my_trial["key"], "choice": "left", "likert_left": 3}, mine, 400, "asks for no rating"),
    ]
    for body, token, status, message in cases:
        answer = http.post("/study/bad/api/respond", headers={"X-Study-Token": token}, json=body)
        assert answer.status_code == status and message in answer.json()["error"], (body, answer.text)
        no_leak(answer.text)
    assert http.post("/study/bad/api/respond", headers={"X-Study-Token": mine}, content=b"{nope").status_code == 400
    assert http.get(f"/study/bad/stimulus/{my_trial['key']}x/left").status_code == 404
    assert http.get(f"/study/bad/stimulus/{my_trial['key']}/middle").status_code == 404
    assert http.get("/study/nope/api/trial", headers={"X-Study-Token": mine}).status_code == 404
    assert http.post("/study/bad/api/join", json={"session": "S"}).json()["error"].startswith("open this page")
    studies.set_state(store, "bad", "closed")
    closed = http.post("/study/bad/api/respond", headers={"X-Study-Token": mine},
                       json={"trial": my_trial["key"], "choice": "left"})
    assert closed.status_code == 409 and "closed" in closed.json()["error"]
    assert http.post("/study/bad/api/join", json={"pid": "P3", "consent": True}).status_code == 409
    assert studies.response_records(store, "bad") == [], "nothing was stored"


def test_a_participant_reaches_no_admin_or_export(studio_server, http):
    for path in ("/admin/gradio_api/info", "/admin/config"):
        assert http.get(path, follow_redirects=False).status_code in (401, 302, 303, 307)
    for path in ("/study/bad/api/responses", "/study/bad/api/export", "/study/static/jsm/loaders/OBJLoader.js",
                 "/study/static/jsm/..%2F..%2Fpackage.json", "/study/static/jsm/utils/..%2F..%2F..%2Fpackage.json"):
        assert http.get(path).status_code in (404, 405), path
    for path in ("/study/static/jsm/../../package.json", "/study/static/../study_admin.py"):
        answer = http.get(path)  # the client folds the dots: at most the participant page of a study by that name
        assert '"dependencies"' not in answer.text and "def " not in answer.text
    assert http.get("/study/static/jsm/loaders/GLTFLoader.js").status_code == 200


# ---- admin -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def admin(studio_server) -> Client:
    account = studio_server.studio.settings.admin
    return Client(studio_server.url + "/admin/", auth=(account.username, account.password), verbose=False)


DEFAULTS = dict(slug="", title="Fits", method_a="SecretMethodA", method_b="SecretMethodB", source="upload", files=[],
                folder_a="", folder_b="", run_kind="hoi", run_file="", reference_file="",
                question="Which fit is better?", likert="none", likert_question="How good?",
                items_per_participant=0, attention_checks=0, make_checks=True, max_failed_checks=0, consent="",
                instructions="", time_limit_s=0, completion_code="", redirect_url="", signed_links=False,
                fast_answer_s=1.0, seed=None)


def create(admin, **fields):
    values = {**DEFAULTS, **fields}
    return admin.predict(*values.values(), api_name="/study_create")


def pairs_zip(tmp_path, rows=None, name="pairs.zip"):
    files = {f"{side}/{k}.png": png(10 * k + (side == "b"), size=(48, 40)) for k in range(4) for side in ("a", "b")}
    rows = rows or [(f"pair-{k}", f"a/{k}.png", f"b/{k}.png", "", "") for k in range(4)]
    write_pairs_zip(tmp_path / name, rows, files)
    return handle_file(str(tmp_path / name))


def test_admin_designs_runs_and_analyses_a_study(studio_server, admin, http, tmp_path):
    store = studio_server.studio.store
    report, _ = create(admin, slug="lab", files=[pairs_zip(tmp_path)], attention_checks=1, max_failed_checks=0,
                       signed_links=True, seed=3)
    assert "Created study <code>lab</code> with 4 items and 1 attention checks; it is <b>paused</b>" in report
    assert "is now <b>open</b>" in admin.predict("lab", "open", api_name="/study_state")
    link = admin.predict("lab", "P-9", "S-9", api_name="/study_link")
    query = parse_qs(urlparse(link).query)
    assert link.startswith(studio_server.url + "/study/lab?") and query["pid"] == ["P-9"]
    denied = http.post("/study/lab/api/join", json={"pid": "P-9", "session": "S-9", "consent": True, "sig": "0" * 64})
    assert denied.status_code == 409 and "not valid" in denied.json()["error"]
    token = join(http, "lab", "P-9", session="S-9", sig=query["sig"][0])
    plan = studies.participant_trials(store, "lab", "P-9")
    payload = http.get("/study/lab/api/trial", headers={"X-Study-Token": token}).json()
    for _, _, swapped in plan:  # always picks method A (the check's A is its good side)
        choice = "right" if swapped else "left"
        payload = http.post("/study/lab/api/respond", headers={"X-Study-Token": token},
                            json={"trial": payload["trial"]["key"], "choice": choice}).json()
    assert payload["done"]
    summary, plots, items, people = admin.predict("lab", True, api_name="/study_analysis")
    assert "100.0% (4/4)" in summary and "nobody" in summary and "<svg id=\"plot-preference\"" in plots
    assert len(items["data"]) == 4 and people["data"][0][0] == "P-9"
    power = admin.predict(0.62, 0.05, 0.8, 20, 0.0, api_name="/study_power")
    assert "<b>134</b> judgments" in power and "<b>7</b> participants" in power
    exported = admin.predict("lab", api_name="/study_export")
    by_name = {path.rsplit("/", 1)[-1]: path for path in (item if isinstance(item, str) else item["path"]
                                                          for item in exported)}
    rows = list(csv.DictReader(io.StringIO(open(by_name["lab-responses.csv"]).read())))
    assert len(rows) == 5 and {row["chosen_method"] for row in rows} == {"SecretMethodA"}
    assert sum(row["is_catch"] == "True" for row in rows) == 1
    assert len(open(by_name["lab-responses.jsonl"]).read().splitlines()) == 5
    summary_json = json.load(open(by_name["lab-summary.json"]))
    assert summary_json["analysis"]["kept"]["preference"]["share"] == 1.0


def test_admin_picks_a_pair_of_methods_from_the_runs_and_builds_a_study_from_it(studio_server, admin, http):
    """Runs kept the tabs' way (with the input photo) become items whose reference image is that photo: the
    participant sees the two renders side by side and the photo, never the photo as a side."""
    from annotations.runs import input_photo_name, list_runs, save_run

    store = studio_server.studio.store
    ours, baseline = "interactvlm-hoi (picker test)", "baseline: picker test"
    photos = {f"picker-{number}": png(400 + number) for number in range(3)}
    for number in range(3):
        photo = {input_photo_name(".png"): photos[f"picker-{number}"]}
        save_run(store, kind="hoi", method=ours, inputs={}, group_key=f"picker-{number}",
                 files={"render.png": png(200 + number), **photo})
        save_run(store, kind="hoi", method=baseline, inputs={}, group_key=f"picker-{number}",
                 files={"render.png": png(300 + number), **photo})
    label = f"hoi: {ours}  vs  {baseline}  (3 inputs)"
    picked = admin.predict(api_name="/study_run_pairs")
    assert picked == label or label in str(picked)
    assert admin.predict(label, api_name="/study_pick_run_pair") == ("runs", "hoi", ours, baseline)
    with pytest.raises(AppError, match="not in the list of choices"):  # gradio checks against the listed pairs
        admin.predict("hoi: a  vs  b  (1 input)", api_name="/study_pick_run_pair")
    report, _ = create(admin, slug="picked", source="runs", run_kind="hoi", method_a=ours, method_b=baseline)
    assert "with 3 items" in report
    assert {item.source["runs"]["a"] for item in studies.study_items(store, "picked")} == \
        {run.id for run in list_runs(store, kind="hoi") if run.method == ours}
    items = {item.id: item for item in studies.study_items(store, "picked")}
    admin.predict("picked", "open", api_name="/study_state")
    headers = {"X-Study-Token": join(http, "picked", "P-photo")}
    trial = http.get("/study/picked/api/trial", headers=headers).json()["trial"]
    _, item_id, swapped = studies.participant_trials(store, "picked", "P-photo")[0]
    group = items[item_id].source["group_key"]
    number = int(group.rsplit("-", 1)[1])
    sides = (png(300 + number), png(200 + number)) if swapped else (png(200 + number), png(300 + number))
    assert (http.get(trial["left"]).content, http.get(trial["right"]).content) == sides
    assert trial["reference"] and http.get(trial["reference"]).content == photos[group]


@pytest.mark.parametrize("rows, message", [
    ([("one", "a/0.png", "", "", "")], "has no B file"),
    ([("one", "a/0.png", "b/7.png", "", "")], "is missing from the upload"),
    ([("one", "a/0.png", "b/0.png", "", ""), ("one", "a/1.png", "b/1.png", "", "")], "duplicate item"),
])
def test_admin_bad_uploads_are_refused_with_the_reason(admin, tmp_path, rows, message):
    with pytest.raises(AppError, match=message):
        create(admin, slug="broken", files=[pairs_zip(tmp_path, rows)])


def test_admin_other_bad_input(admin, tmp_path):
    with pytest.raises(AppError, match="upload a zip"):
        create(admin, slug="empty")
    with pytest.raises(AppError, match="need at least as many catch items|need as many image or GLB items"):
        create(admin, slug="checks", files=[pairs_zip(tmp_path)], attention_checks=9)
    with pytest.raises(AppError, match="no input has hoi runs"):
        create(admin, slug="runs", source="runs")
    with pytest.raises(AppError, match="no such study"):
        admin.predict("missing", "open", api_name="/study_state")
    with pytest.raises(AppError, match="preference to detect"):
        admin.predict(0.5, 0.05, 0.8, 20, 0.0, api_name="/study_power")


def test_upload_gate_refuses_files_outside_the_upload_folder(studio_server, tmp_path):
    from studio.study_admin import uploaded_files
    from studio.uploads import accept_upload

    outside = tmp_path / "x.zip"
    outside.write_bytes(b"zip")
    with pytest.raises(Exception, match="was not uploaded to this server"):
        accept_upload(studio_server.studio, str(outside), what="the study files")
    with pytest.raises(Exception, match="the study files was not uploaded to this server"):
        uploaded_files(studio_server.studio, ["/etc/passwd"])


def test_stimulus_bytes_in_memory_stay_within_their_budget(tmp_path):
    from studio.study import _FileBytes

    files = _FileBytes(budget=10)
    paths = [tmp_path / f"{index}.png" for index in range(3)]
    assert files.put(paths[0], b"aaaa") == b"aaaa" and files.put(paths[1], b"bbbb") == b"bbbb"
    assert files.get(paths[0]) == b"aaaa"  # now the most recently used
    files.put(paths[2], b"cccc")  # 12 bytes > 10: the least recently used (paths[1]) leaves
    assert files.get(paths[1]) is None and files.get(paths[0]) == b"aaaa" and files.get(paths[2]) == b"cccc"
    files.put(paths[2], b"cccc")  # a repeat counts once
    assert files.get(paths[0]) == b"aaaa"
