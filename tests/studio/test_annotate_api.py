"""The annotator's page (``/annotate``) through ``gradio_client``: next task, check, submit, skip, flag.

Each ``Client`` is one browser session; the server keeps the annotator in session state, so every
call after ``/start_session`` acts for the worker that session started with.
"""
from __future__ import annotations

import hashlib
import io
import json
import time
import uuid

import httpx
import numpy as np
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from PIL import Image
from sqlalchemy import func, select

from annotations import batch, models, workflow
from annotations.review import load_task_annotations
from engine.contact.prior import predict_category_prior

TOPOLOGY, VERTICES = "openbody-v1", 10614
NO_TASK = "No task is waiting for you"
PAGE_OUTPUTS = 5  # image, task text, progress, painter payload, status (then the controls' state)


def png(seed: int, size=(48, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def drain(store) -> None:
    """Fill every open slot left by earlier tests, so a fresh worker sees only the tasks made next."""
    while True:
        filler = store.ensure_annotator(f"filler-{uuid.uuid4().hex[:8]}").id
        claimed = 0
        while (assignment := workflow.next_task(store, filler)) is not None:
            workflow.submit(store, filler, assignment.task.id, {}, uuid.uuid4().hex)
            claimed += 1
        if not claimed:
            return


def new_tasks(store, *specs: tuple[tuple[str, ...], int]) -> list[int]:
    """Fresh tasks ((labels, redundancy) each) that are the only claimable ones in the store."""
    drain(store)
    return [batch.add_task(store, png(index + len(store.task_ids()) * 7), f"x{index}.png", labels=list(labels),
                           topology=TOPOLOGY, redundancy=redundancy) for index, (labels, redundancy) in enumerate(specs)]


def session(running, worker: str) -> tuple[Client, tuple]:
    client = Client(running.url + "/annotate/", verbose=False)
    return client, client.predict(worker, api_name="/start_session")[:PAGE_OUTPUTS]


def painting(task_id, layers: dict, topology: str = TOPOLOGY, seconds: float = 3.0) -> str:
    return json.dumps({"task": task_id, "topology": topology, "layers": layers, "seconds": seconds})


def count_submissions(store, task_id: int | None = None) -> int:
    query = select(func.count()).select_from(models.SubmissionRow)
    if task_id is not None:
        query = query.where(models.SubmissionRow.task_id == task_id)
    with store.session() as db:
        return db.scalar(query)


def statuses(store, task_id: int) -> dict[str, tuple[str, str | None]]:
    """worker -> (assignment status, flag reason) for one task."""
    with store.session() as db:
        rows = db.execute(select(models.AnnotatorRow.external_id, models.AssignmentRow.status,
                                 models.AssignmentRow.flag_reason)
                          .join(models.AnnotatorRow, models.AnnotatorRow.id == models.AssignmentRow.annotator_id)
                          .where(models.AssignmentRow.task_id == task_id)).all()
    return {worker: (status, reason) for worker, status, reason in rows}


def worker_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def fetch(running, client: Client, url: str, **kwargs) -> httpx.Response:
    """GET a URL the page handed out, as the same browser (its session cookie)."""
    return httpx.get(running.url + url, cookies=client.cookies, timeout=30, **kwargs)


def test_start_session_shows_the_task_with_the_prior_as_pre_annotation(studio_server):
    store = studio_server.studio.store
    (task_id,) = new_tasks(store, (("chair", "cup"), 1))
    client, (image, text, progress, payload, status) = session(studio_server, worker_id("start"))
    painter = json.loads(payload)
    assert painter["task_id"] == task_id and painter["kind"] == "human_contact"
    assert painter["topology"] == TOPOLOGY and painter["labels"] == ["chair", "cup"]
    assert painter["colours"] == {"chair": "#e6194b", "cup": "#3cb44b"}
    # The event carries URLs only: no per-vertex list rides on the event stream.
    assert "layers" not in painter and "prediction" not in painter and len(payload) < 1000
    mesh = fetch(studio_server, client, painter["mesh_url"]).json()
    assert mesh == studio_server.studio.body_mesh_json(TOPOLOGY)
    starting = fetch(studio_server, client, painter["annotation_url"]).json()
    body = studio_server.studio.body(TOPOLOGY)
    for label in ("chair", "cup"):
        prior = predict_category_prior(body, label).probabilities
        assert starting["layers"][label] == np.flatnonzero(prior >= 0.5).tolist()
        assert len(starting["prediction"][label]) == VERTICES
        np.testing.assert_allclose(starting["prediction"][label], prior, atol=1e-3)
    assert f"Task {task_id}" in text and "<b>chair</b>, <b>cup</b>" in text and "baseline: category prior" in text
    assert f'src="{painter["image_url"]}"' in image
    picture = fetch(studio_server, client, painter["image_url"])
    assert picture.headers["content-type"] == "image/png"
    assert picture.content == store.task(task_id).image.path.read_bytes()  # the stored file, not re-encoded
    assert np.asarray(Image.open(io.BytesIO(picture.content))).shape == (48, 64, 3)
    assert progress == "**0** done this session" and status == ""


def test_task_payloads_are_content_addressed_gzipped_and_built_once(studio_server):
    store, payloads = studio_server.studio.store, studio_server.studio.payloads
    first, second = new_tasks(store, (("chair",), 1), (("chair",), 1))
    client_a, (*_, payload_a, _) = session(studio_server, worker_id("hash-a"))
    client_b, (*_, payload_b, _) = session(studio_server, worker_id("hash-b"))
    painter_a, painter_b = json.loads(payload_a), json.loads(payload_b)
    assert {painter_a["task_id"], painter_b["task_id"]} == {first, second}
    # The same starting layers (same prior, same labels) are one response: the same digest for both tasks.
    assert painter_a["annotation_url"].rsplit("/", 1)[1] == painter_b["annotation_url"].rsplit("/", 1)[1]
    digest = painter_a["annotation_url"].rsplit("/", 1)[1].removesuffix(".json")
    answer = fetch(studio_server, client_a, painter_a["annotation_url"], headers={"accept-encoding": "gzip"})
    assert answer.status_code == 200 and answer.headers["content-encoding"] == "gzip"
    assert hashlib.sha256(answer.content).hexdigest() == digest  # httpx un-gzips: the digest is of the content
    assert "immutable" in answer.headers["cache-control"] and answer.headers["etag"] == f'"{digest}"'
    plain = fetch(studio_server, client_a, painter_a["annotation_url"], headers={"accept-encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == answer.content
    again = fetch(studio_server, client_a, painter_a["annotation_url"], headers={"if-none-match": f'"{digest}"'})
    assert again.status_code == 304
    builds = payloads.cache.builds
    for _ in range(3):
        fetch(studio_server, client_b, painter_b["annotation_url"])
        session(studio_server, worker_id("hash-c"))
    assert payloads.cache.builds == builds  # served from the cache, never rebuilt


def test_task_payloads_go_only_to_the_browser_holding_the_task(studio_server):
    store = studio_server.studio.store
    new_tasks(store, (("chair",), 1), (("cup",), 1))
    holder, (*_, payload, _) = session(studio_server, worker_id("holder"))
    other, _ = session(studio_server, worker_id("other"))
    painter = json.loads(payload)
    for url in (painter["annotation_url"], painter["image_url"]):
        assert fetch(studio_server, holder, url).status_code == 200
        assert fetch(studio_server, other, url).status_code == 404  # another annotator's browser
        assert httpx.get(studio_server.url + url, timeout=30).status_code == 404  # no session at all
    task_id = painter["task_id"]
    wrong_digest = f"/studio/payload/task/{task_id}/{'0' * 64}.json"
    other_task = painter["annotation_url"].replace(f"/task/{task_id}/", f"/task/{task_id + 1}/")
    for url in (wrong_digest, other_task, f"/studio/payload/task/{task_id}/{'0' * 64}.gif",
                f"/studio/payload/task/99999999999/{'0' * 64}.json", f"/studio/payload/task/x/{'0' * 64}.json",
                painter["image_url"].replace(".png", ".jpg")):
        answer = fetch(studio_server, holder, url)
        assert answer.status_code == 404 and "/tmp" not in answer.text and "Traceback" not in answer.text
    assert fetch(studio_server, holder, painter["mesh_url"].replace("openbody-v1", "smplh-6890")).status_code == 404
    assert fetch(studio_server, holder, painter["mesh_url"][:-10] + "0" * 5 + ".json").status_code == 404
    assert httpx.get(studio_server.url + painter["mesh_url"], timeout=30).status_code == 200  # the body is public


def test_submit_stores_exactly_the_painted_ids_once(studio_server):
    store = studio_server.studio.store
    (task_id,) = new_tasks(store, (("chair", "cup"), 1))
    worker = worker_id("submit")
    client, first = session(studio_server, worker)
    assert json.loads(first[3])["task_id"] == task_id
    chair, cup = [5, 3, 10613, 0, 3], [42]
    painted = painting(task_id, {"chair": chair, "cup": cup})
    counts = client.predict(painted, api_name="/check_painting")
    assert "chair: 4 vertices" in counts and "cup: 1 vertices" in counts, "duplicates are counted once"
    assert count_submissions(store, task_id) == 0, "checking stores nothing"

    _, text, progress, payload, status = client.predict(painted, api_name="/submit")[:PAGE_OUTPUTS]
    assert status == f"Submitted task {task_id}"
    assert progress == "**1** done this session"
    assert NO_TASK in text and payload == ""
    entry = load_task_annotations(store, task_ids=[task_id])[task_id]
    assert entry.labels == ("chair", "cup") and entry.layers.shape == (1, 2, VERTICES)
    assert np.flatnonzero(entry.layers[0, 0]).tolist() == [0, 3, 5, 10613]
    assert np.flatnonzero(entry.layers[0, 1]).tolist() == [42]
    assert store.annotator(entry.annotator_ids[0]).external_id == worker
    with store.session() as db:
        seconds = db.scalar(select(models.SubmissionRow.seconds_spent).where(models.SubmissionRow.task_id == task_id))
    assert seconds == pytest.approx(3.0)
    assert statuses(store, task_id) == {worker: ("submitted", None)}

    # The same request again (a resend after the answer came back) stores nothing new.
    with pytest.raises(AppError, match="no open task to submit"):
        client.predict(painted, api_name="/submit")
    assert count_submissions(store, task_id) == 1
    # A reload (a new session of the same worker) offers nothing: nobody gets a task twice.
    _, again = session(studio_server, worker)
    assert NO_TASK in again[1] and again[3] == "" and again[2] == "**0** done this session"


def test_a_double_click_is_stored_once(studio_server):
    store = studio_server.studio.store
    (task_id,) = new_tasks(store, (("chair",), 1))
    client, _ = session(studio_server, worker_id("double"))
    painted = painting(task_id, {"chair": [1, 2, 3]})
    jobs = [client.submit(painted, api_name="/submit") for _ in range(2)]
    answers = []
    for job in jobs:
        try:
            answers.append(job.result(timeout=60)[4])
        except AppError as error:  # the second click arrived after the first one moved on
            answers.append(str(error))
    assert count_submissions(store, task_id) == 1
    assert any(answer.startswith(f"Submitted task {task_id}") for answer in answers), answers
    assert all(answer.startswith(f"Submitted task {task_id}") or "no open task" in answer for answer in answers)


def test_progress_counts_each_submission_and_serves_the_next_task(studio_server):
    store = studio_server.studio.store
    first, second = new_tasks(store, (("chair",), 1), (("chair", "cup"), 1))
    client, opened = session(studio_server, worker_id("progress"))
    assert json.loads(opened[3])["task_id"] == first
    answer = client.predict(painting(first, {"chair": [7]}), api_name="/submit")
    assert answer[2] == "**1** done this session" and json.loads(answer[3])["task_id"] == second
    assert json.loads(answer[3])["labels"] == ["chair", "cup"]
    # A resend of the first painting now meets the second task: refused, nothing stored.
    with pytest.raises(AppError, match="another task"):
        client.predict(painting(first, {"chair": [7]}), api_name="/submit")
    answer = client.predict(painting(second, {"cup": [8, 9]}), api_name="/submit")
    assert answer[2] == "**2** done this session" and answer[3] == ""
    assert count_submissions(store, first) == 1 and count_submissions(store, second) == 1


def test_skip_and_flag_finish_the_assignment_without_a_submission(studio_server):
    store = studio_server.studio.store
    skipped, flagged = new_tasks(store, (("chair",), 1), (("cup",), 1))
    worker = worker_id("skipflag")
    client, opened = session(studio_server, worker)
    assert json.loads(opened[3])["task_id"] == skipped
    answer = client.predict(api_name="/skip")
    assert answer[4] == f"Skipped task {skipped}" and json.loads(answer[3])["task_id"] == flagged
    assert statuses(store, skipped) == {worker: ("skipped", None)}
    answer = client.predict("no_contact_visible", api_name="/flag")
    assert answer[4] == f"Flagged task {flagged} (No contact is visible in the image)" and answer[3] == ""
    assert statuses(store, flagged) == {worker: ("flagged", "no_contact_visible")}
    assert count_submissions(store, skipped) == 0 and count_submissions(store, flagged) == 0
    assert answer[2] == "**0** done this session"
    with pytest.raises(AppError, match="no open task"):
        client.predict(api_name="/skip")
    # Skipping and flagging free the slot: the next worker gets the (older) skipped task first.
    _, other = session(studio_server, worker_id("after-skip"))
    assert json.loads(other[3])["task_id"] == skipped


def test_flag_reason_must_be_one_of_the_listed(studio_server):
    store = studio_server.studio.store
    (task_id,) = new_tasks(store, (("chair",), 1))
    worker = worker_id("badflag")
    client, _ = session(studio_server, worker)
    with pytest.raises(AppError, match="image_unusable"):
        client.predict("<img src=x>", api_name="/flag")
    assert statuses(store, task_id) == {worker: ("assigned", None)}


def test_a_worker_never_gets_another_workers_task(studio_server):
    store = studio_server.studio.store
    (task_id,) = new_tasks(store, (("chair",), 1))
    alice, opened = session(studio_server, worker_id("alice"))
    assert json.loads(opened[3])["task_id"] == task_id
    bob, offered = session(studio_server, worker_id("bob"))
    image, text, _, payload, _ = offered
    assert NO_TASK in text and payload == "" and image == ""
    painted = painting(task_id, {"chair": [1, 2]})
    assert bob.predict(painted, api_name="/check_painting") == "", "no task: nothing to check against"
    with pytest.raises(AppError, match="no open task to submit"):
        bob.predict(painted, api_name="/submit")
    with pytest.raises(AppError, match="no open task"):
        bob.predict(api_name="/skip")
    assert count_submissions(store, task_id) == 0
    # Alice's session is untouched by Bob's calls.
    assert alice.predict(painted, api_name="/submit")[4] == f"Submitted task {task_id}"
    entry = load_task_annotations(store, task_ids=[task_id])[task_id]
    assert [store.annotator(a).external_id.startswith("alice-") for a in entry.annotator_ids] == [True]


def test_redundancy_two_gives_the_task_to_two_workers_and_no_third(studio_server):
    store = studio_server.studio.store
    (task_id,) = new_tasks(store, (("chair",), 2))
    first = [session(studio_server, worker_id(name))[1][3] for name in ("r1", "r2", "r3")]
    assert [json.loads(payload)["task_id"] if payload else None for payload in first] == [task_id, task_id, None]


@pytest.mark.parametrize("bad,message", [
    ({"layers": {"chair": [VERTICES]}}, "must be in 0..10613 for openbody-v1"),
    ({"layers": {"chair": [-1]}}, "must be in 0..10613"),
    ({"layers": {"chair": [0.5]}}, "flat list of integers"),
    ({"layers": {"chair": "1,2"}}, "list of integers"),
    ({"layers": {"chair": [1]}, "topology": "smplh-6890"}, "made on .*smplh-6890.*uses .*openbody-v1"),
    ({"layers": {"<b>table</b>": [1]}}, "unknown layer"),
    ({"layers": [1, 2]}, "must be an object with a .*layers"),
    ("not json {", "not valid JSON"),
    ("", "no painting was received"),
])
def test_bad_paintings_are_refused_and_nothing_is_stored(studio_server, bad, message):
    store = studio_server.studio.store
    (task_id,) = new_tasks(store, (("chair",), 1))
    client, _ = session(studio_server, worker_id("bad"))
    text = bad if isinstance(bad, str) else json.dumps({"task": task_id, "topology": TOPOLOGY, **bad})
    for api in ("/check_painting", "/submit"):
        with pytest.raises(AppError, match=message) as error:
            client.predict(text, api_name=api)
        assert "<b>" not in str(error.value), "labels are escaped in the message"
    assert count_submissions(store, task_id) == 0
    # The session still holds its task, and a good painting goes through.
    answer = client.predict(painting(task_id, {"chair": [0, 1]}), api_name="/submit")
    assert answer[4] == f"Submitted task {task_id}"
    assert np.flatnonzero(load_task_annotations(store, task_ids=[task_id])[task_id].layers[0, 0]).tolist() == [0, 1]


def test_a_painting_for_another_task_id_is_refused(studio_server):
    store = studio_server.studio.store
    (task_id,) = new_tasks(store, (("chair",), 1))
    client, _ = session(studio_server, worker_id("other-id"))
    with pytest.raises(AppError, match="another task"):
        client.predict(painting(task_id + 1000, {"chair": [1]}), api_name="/submit")
    assert count_submissions(store, task_id) == 0


def test_no_worker_id_is_a_clear_error(studio_server):
    client = Client(studio_server.url + "/annotate/", verbose=False)
    image, text, progress, payload, status = client.predict("", api_name="/start_session")[:PAGE_OUTPUTS]
    assert payload == "" and image == "", "no task is handed to nobody"
    assert f"<{studio_server.url}/annotate?worker=YOUR_ID>" in status, "the page shows the absolute link to open"
    for worker in ("   ", "x" * 129, "tab\there"):
        with pytest.raises(AppError, match="an annotator id must be 1-128 printable characters"):
            client.predict(worker, api_name="/start_session")
    for api, args in (("/skip", ()), ("/submit", (painting(1, {}),)), ("/flag", ("image_unusable",))):
        with pytest.raises(AppError, match="this page has no annotator yet"):
            client.predict(*args, api_name=api)
    assert client.predict(painting(1, {}), api_name="/check_painting") == ""
    # The same session can still start properly afterwards.
    assert client.predict(worker_id("late"), api_name="/start_session")[2] == "**0** done this session"


def test_an_admin_account_id_cannot_annotate(studio_server):
    store = studio_server.studio.store
    new_tasks(store, (("chair",), 1))
    store.ensure_annotator("lab-boss", role="admin")
    client = Client(studio_server.url + "/annotate/", verbose=False)
    with pytest.raises(AppError, match="belongs to an admin account"):
        client.predict("lab-boss", api_name="/start_session")
    with pytest.raises(AppError, match="this page has no annotator yet"):
        client.predict(api_name="/skip")


def test_the_annotator_page_has_no_admin_endpoints(studio_server):
    client = Client(studio_server.url + "/annotate/", verbose=False)
    endpoints = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert endpoints == {"/start_session", "/submit", "/skip", "/flag", "/check_painting"}
    for api in ("/export", "/import_batch", "/quality", "/review_task"):
        with pytest.raises(ValueError, match="Cannot find a function"):
            client.predict(api_name=api)


def test_the_links_handed_out_open_the_pages_without_a_trailing_slash(studio_server):
    """/annotate?worker=ID and /admin, exactly as the README, the banner and the demo hand them out."""
    import httpx

    with httpx.Client(base_url=studio_server.url, follow_redirects=True, timeout=30) as client:
        page = client.get("/annotate?worker=link-walker&x=1")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert [str(r.url) for r in page.history] == [f"{studio_server.url}/annotate?worker=link-walker&x=1"]
        assert str(page.url) == f"{studio_server.url}/annotate/?worker=link-walker&x=1", "the query string is kept"
        admin = client.get("/admin")
        assert admin.status_code == 200 and str(admin.url) == f"{studio_server.url}/admin/"
        assert "Admin console" not in admin.text, "the redirect does not skip the admin login"
        assert client.get("/annotatefoo").status_code == 404


def test_a_typed_flag_reason_is_checked_stored_and_escaped(studio_server):
    store = studio_server.studio.store
    (task_id,) = new_tasks(store, (("chair",), 1))
    worker = worker_id("typedflag")
    client, _ = session(studio_server, worker)
    with pytest.raises(AppError, match="type the reason"):
        client.predict("other", "   ", api_name="/flag")
    with pytest.raises(AppError, match=f"at most {workflow.MAX_TYPED_REASON} printable"):
        client.predict("other", "x" * (workflow.MAX_TYPED_REASON + 1), api_name="/flag")
    assert statuses(store, task_id) == {worker: ("assigned", None)}
    answer = client.predict("other", "  the <b>person</b>   is cut off ", api_name="/flag")
    assert statuses(store, task_id) == {worker: ("flagged", "other: the <b>person</b> is cut off")}
    assert "&lt;b&gt;person&lt;/b&gt; is cut off" in answer[4] and "<b>person" not in answer[4]
    with pytest.raises(Exception, match="flag reason must be one of"):
        workflow.flag(store, store.ensure_annotator(worker).id, task_id, "other:no space")


def test_an_open_task_on_a_body_the_server_cannot_show_can_be_skipped_and_flagged(studio_server):
    """A task claimed before its body went missing (next_task never hands such a task out): the page says so in
    words (no path), Submit is refused, Skip and Flag work."""
    store = studio_server.studio.store
    drain(store)
    unshowable = [batch.add_task(store, png(900 + k), f"smplh{k}.png", labels=["chair"], topology="smplh-6890",
                                 redundancy=1) for k in range(2)]
    worker = worker_id("nobody")
    annotator = store.ensure_annotator(worker).id
    assert workflow.next_task(store, annotator).task.id == unshowable[0]  # claimed without the body filter
    client, opened = session(studio_server, worker)
    assert json.loads(opened[3])["task_id"] == unshowable[0]
    assert "cannot be painted" in opened[1] and "Pre-annotation: none" in opened[1]
    assert "/" not in opened[1].split("task-unavailable")[1].replace("</b>", "").replace("</div>", "")
    with pytest.raises(AppError, match="not installed on this server") as refused:
        client.predict(painting(unshowable[0], {"chair": [1]}, "smplh-6890"), api_name="/submit")
    assert "/" not in str(refused.value).split("Error")[-1]
    answer = client.predict(api_name="/skip")
    assert answer[4] == f"Skipped task {unshowable[0]}" and answer[3] == ""  # the other one is never served
    assert workflow.next_task(store, annotator).task.id == unshowable[1]
    client, opened = session(studio_server, worker)
    answer = client.predict("image_unusable", "", api_name="/flag")
    assert answer[4].startswith(f"Flagged task {unshowable[1]}")
    assert statuses(store, unshowable[1]) == {worker: ("flagged", "image_unusable")}
    assert count_submissions(store, unshowable[0]) == 0
    mesh = httpx.get(f"{studio_server.url}/studio/mesh/body/smplh-6890.json", timeout=30)
    assert mesh.status_code == 404 and "not installed on this server" in mesh.text
    assert str(studio_server.models_dir) not in mesh.text, "the 404 says it in words, without the server path"


def test_a_task_on_a_body_that_is_not_installed_is_never_served(studio_server):
    store = studio_server.studio.store
    assert "smplh-6890" not in studio_server.studio.available_bodies()  # this server has only the open body
    drain(store)
    stuck = batch.add_task(store, png(901), "smplh.png", labels=["chair"], topology="smplh-6890", redundancy=3,
                           priority=100)
    for _ in range(2):
        _, (image, text, _, payload, _) = session(studio_server, worker_id("nobody-paints-smplh"))
        assert NO_TASK in text and payload == "" and image == ""
    (paintable,) = new_tasks(store, (("chair",), 1))  # drains the smplh task's slots directly in the store
    stuck_again = batch.add_task(store, png(902), "smplh2.png", labels=["chair"], topology="smplh-6890",
                                 redundancy=1, priority=100)
    _, (*_, payload, _) = session(studio_server, worker_id("gets-the-open-body"))
    assert json.loads(payload)["task_id"] == paintable
    assert not workflow.holds_task(store, all_annotator_ids(store), stuck_again)  # nobody was handed it


def all_annotator_ids(store) -> list[int]:
    with store.session() as db:
        return list(db.scalars(select(models.AnnotatorRow.id)))


def check_direct(running, client, ticket, painted, **kwargs) -> httpx.Response:
    return httpx.post(running.url + "/studio/api/check", json={"ticket": ticket, "painting": painted},
                      cookies=client.cookies if client is not None else None, timeout=30, **kwargs)


def test_the_stroke_check_endpoint_answers_the_ticket_holder_only(studio_server):
    store = studio_server.studio.store
    new_tasks(store, (("chair", "cup"), 1), (("chair",), 1))
    holder, (*_, payload, _) = session(studio_server, worker_id("ticket"))
    other, _ = session(studio_server, worker_id("no-ticket"))
    painter = json.loads(payload)
    task_id, ticket = painter["task_id"], painter["ticket"]
    assert painter["check_url"] == "/studio/api/check"
    answer = check_direct(studio_server, holder, ticket, painting(task_id, {"chair": [5, 1, 5, 10613], "cup": []}))
    assert answer.status_code == 200
    assert answer.json()["counts"] == {"chair": 3, "cup": 0} and answer.json()["task"] == task_id
    assert "chair: 3 vertices" in answer.json()["html"] and "cup: 0 vertices" in answer.json()["html"]
    # The same check through the queued event says the same.
    assert holder.predict(painting(task_id, {"chair": [5, 1, 5, 10613]}), api_name="/check_painting") \
        == answer.json()["html"]
    good = painting(task_id, {"chair": [1]})
    assert check_direct(studio_server, other, ticket, good).status_code == 403  # another browser
    assert check_direct(studio_server, None, ticket, good).status_code == 403  # no session cookie at all
    annotator, task, expires, mac = ticket.split(".")
    for forged in (f"{annotator}.{task_id + 1}.{expires}.{mac}", f"{int(annotator) + 1}.{task}.{expires}.{mac}",
                   f"{annotator}.{task}.{int(expires) + 1}.{mac}", "", "1.2.3", "x" * 500, None, 7):
        refused = check_direct(studio_server, holder, forged, good)
        assert refused.status_code == 403 and "ticket" in refused.json()["error"]


@pytest.mark.parametrize("body, status, message", [
    ({"painting": "{\"layers\": {\"chair\": [99999]}}"}, 400, "no topology"),
    ({"painting": "not json"}, 400, "not valid JSON"),
    ({"painting": {"layers": {}}}, 400, "JSON text"),
    ({}, 400, "'ticket' and a 'painting'"),
])
def test_the_stroke_check_endpoint_refuses_bad_input_in_words(studio_server, body, status, message):
    store = studio_server.studio.store
    new_tasks(store, (("chair",), 1))
    holder, (*_, payload, _) = session(studio_server, worker_id("bad-check"))
    painter = json.loads(payload)
    answer = httpx.post(studio_server.url + "/studio/api/check", json={"ticket": painter["ticket"], **body},
                        cookies=holder.cookies, timeout=30)
    assert answer.status_code == status and message in answer.json()["error"]
    assert "/tmp" not in answer.text and "Traceback" not in answer.text


def test_the_stroke_check_endpoint_checks_ids_size_task_and_content_type(studio_server):
    store = studio_server.studio.store
    new_tasks(store, (("chair",), 1))
    holder, (*_, payload, _) = session(studio_server, worker_id("limits"))
    painter = json.loads(payload)
    task_id, ticket = painter["task_id"], painter["ticket"]
    out_of_range = check_direct(studio_server, holder, ticket, painting(task_id, {"chair": [VERTICES]}))
    assert out_of_range.status_code == 400 and "must be in 0..10613" in out_of_range.json()["error"]
    elsewhere = check_direct(studio_server, holder, ticket, painting(task_id + 1, {"chair": [1]}))
    assert elsewhere.status_code == 400 and "another task" in elsewhere.json()["error"]
    huge = httpx.post(studio_server.url + "/studio/api/check", cookies=holder.cookies, timeout=30,
                      headers={"content-type": "application/json"},
                      content=b'{"ticket": "1", "painting": "' + b" " * (4 * 2**20 + 10) + b'"}')
    assert huge.status_code == 413
    form = httpx.post(studio_server.url + "/studio/api/check", cookies=holder.cookies, timeout=30,
                      data={"ticket": ticket, "painting": painting(task_id, {"chair": [1]})})
    assert form.status_code == 415  # a cross-site form cannot send JSON without the browser's preflight


def test_a_flood_of_checks_or_actions_is_refused_per_annotator_in_words(studio_server):
    from studio.painter_api import ACTIONS_PER_MINUTE, CHECKS_PER_MINUTE

    store = studio_server.studio.store
    new_tasks(store, (("chair",), 1), (("chair",), 1))
    flooder, (*_, payload, _) = session(studio_server, worker_id("flood"))
    calm, (*_, calm_payload, _) = session(studio_server, worker_id("calm"))
    painter, calm_painter = json.loads(payload), json.loads(calm_payload)
    good = painting(painter["task_id"], {"chair": [1]})
    with httpx.Client(base_url=studio_server.url, cookies=flooder.cookies, timeout=30) as browser:
        answers = [browser.post("/studio/api/check", json={"ticket": painter["ticket"], "painting": good})
                   for _ in range(CHECKS_PER_MINUTE + 1)]
        assert [answer.status_code for answer in answers[:-1]] == [200] * CHECKS_PER_MINUTE
        assert answers[-1].status_code == 429
        assert "too many stroke checks from this annotator; try again in" in answers[-1].json()["error"]
        # the actions have a limit of their own: a skip of a finished task is refused in words, and counted
        refusals = [browser.post("/studio/api/skip", json={"ticket": painter["ticket"]})
                    for _ in range(ACTIONS_PER_MINUTE + 1)]
    assert refusals[0].status_code == 200 and {answer.status_code for answer in refusals[1:-1]} == {400}
    assert refusals[-1].status_code == 429 and "too many submissions from this annotator" in refusals[-1].json()["error"]
    # another annotator is not slowed down by the flood
    calm_check = check_direct(studio_server, calm, calm_painter["ticket"],
                              painting(calm_painter["task_id"], {"chair": [2]}))
    assert calm_check.status_code == 200 and calm_check.json()["counts"] == {"chair": 1}


def test_tickets_expire_and_are_bound_to_the_browser():
    from studio.painter_api import TICKET_TTL_S, read_ticket, ticket_for, ticket_key

    key = ticket_key(None)
    ticket = ticket_for(key, 7, 42, "browser-a", now=1000.0)
    assert read_ticket(key, ticket, "browser-a", now=1000.0 + TICKET_TTL_S - 1) == (7, 42)
    with pytest.raises(PermissionError, match="expired"):
        read_ticket(key, ticket, "browser-a", now=1000.0 + TICKET_TTL_S + 1)
    for browser in ("browser-b", None):
        with pytest.raises(PermissionError, match="not valid"):
            read_ticket(key, ticket, browser, now=1000.0)
    with pytest.raises(PermissionError):
        read_ticket(ticket_key(None), ticket, "browser-a", now=1000.0)  # another server's random key
    shared = ticket_key("s" * 32)
    assert read_ticket(ticket_key("s" * 32), ticket_for(shared, 7, 42, "b", now=5.0), "b", now=5.0) == (7, 42)


def act(running, client, action: str, **body) -> httpx.Response:
    """The page's JSON Submit / Skip / Flag (``studio.painter_api``), as the browser of ``client`` sends it."""
    return httpx.post(running.url + f"/studio/api/{action}", json=body,
                      cookies=client.cookies if client is not None else None, timeout=30)


def submission_rows(store, task_id: int) -> list[tuple[str, dict]]:
    with store.session() as db:
        return [tuple(row) for row in db.execute(select(models.SubmissionRow.submission_key,
                                                        models.SubmissionRow.client_info)
                                                 .where(models.SubmissionRow.task_id == task_id))]


def test_json_submit_stores_like_the_page_and_answers_the_next_task(studio_server):
    store = studio_server.studio.store
    first, second, third = new_tasks(store, (("chair", "cup"), 1), (("chair",), 1), (("cup",), 1))
    holder, (_, _, progress, payload, _) = session(studio_server, worker_id("json-submit"))
    painter = json.loads(payload)
    assert painter["task_id"] == first
    sent = painting(first, {"chair": [5, 1, 5, 10613], "cup": [7]})
    answer = act(studio_server, holder, "submit", ticket=painter["ticket"], painting=sent, done=0)
    assert answer.status_code == 200, answer.text
    reply = answer.json()
    assert reply["task"] == second and reply["done"] == 1 and "<strong>1</strong> done" in reply["progress"]
    assert reply["status"] == f"Submitted task {first}"
    nxt = json.loads(reply["payload"])
    assert nxt["task_id"] == second and nxt["ticket"] != painter["ticket"]
    assert nxt["ticket"].split(".")[1] == str(second) and f"Task {second}:" in reply["text"]
    assert "task-image-view" in reply["image"]
    with store.session() as db:
        assignment = db.scalar(select(models.AssignmentRow.id).where(models.AssignmentRow.task_id == first))
    rows = submission_rows(store, first)
    assert len(rows) == 1 and rows[0][0] == f"studio-assignment-{assignment}"  # the queued event's key
    info = rows[0][1]
    from engine.contact.prior import PRIOR_SOURCE
    from studio.annotate import prior_version

    assert info == {"client": "studio", "seed": {"model_name": PRIOR_SOURCE, "model_version": prior_version(),
                                                 "source": "computed by the studio for the painter"}}
    assert list(statuses(store, first).values()) == [("submitted", None)]
    # the same request again (a double click, a resend): stored once, the same next task, the count kept
    again = act(studio_server, holder, "submit", ticket=painter["ticket"], painting=sent, done=1)
    assert again.status_code == 200 and again.json()["task"] == second and again.json()["done"] == 1
    assert "already stored" in again.json()["status"] and len(submission_rows(store, first)) == 1
    # skip and flag the next ones with their tickets; then nothing is left
    skipped = act(studio_server, holder, "skip", ticket=nxt["ticket"], done=1).json()
    assert skipped["task"] == third and skipped["status"] == f"Skipped task {second}"
    assert list(statuses(store, second).values()) == [("skipped", None)]
    flagged = act(studio_server, holder, "flag", ticket=json.loads(skipped["payload"])["ticket"], done=1,
                  reason=FLAG_WORDS_FIRST, typed="").json()
    assert flagged["task"] is None and flagged["payload"] == "" and NO_TASK in flagged["text"]
    assert list(statuses(store, third).values()) == [("flagged", workflow.FLAG_REASONS[0])]
    assert count_submissions(store, second) == 0 and count_submissions(store, third) == 0
    # a finished task's ticket acts no more
    late = act(studio_server, holder, "skip", ticket=nxt["ticket"], done=1)
    assert late.status_code == 400 and "already skipped" in late.json()["error"]


FLAG_WORDS_FIRST = workflow.FLAG_REASON_WORDS[workflow.FLAG_REASONS[0]]


def test_json_flag_takes_a_typed_reason_and_refuses_an_unknown_one(studio_server):
    store = studio_server.studio.store
    first, = new_tasks(store, (("chair",), 1))
    holder, (*_, payload, _) = session(studio_server, worker_id("json-flag"))
    ticket = json.loads(payload)["ticket"]
    unknown = act(studio_server, holder, "flag", ticket=ticket, reason="<b>nope</b>", typed="")
    assert unknown.status_code == 400 and "flag reason must be one of" in unknown.json()["error"]
    empty = act(studio_server, holder, "flag", ticket=ticket, reason="other", typed="   ")
    assert empty.status_code == 400 and "type the reason" in empty.json()["error"]
    typed = act(studio_server, holder, "flag", ticket=ticket, reason="Something else (type it below)",
                typed="the <cup> is  cut off")
    assert typed.status_code == 200 and "the &lt;cup&gt; is cut off" in typed.json()["status"]
    assert list(statuses(store, first).values()) == [("flagged", workflow.OTHER_REASON + "the <cup> is cut off")]


def test_json_actions_refuse_forged_foreign_and_expired_tickets_and_bad_paintings(studio_server):
    from studio.painter_api import TICKET_TTL_S, ticket_for

    store = studio_server.studio.store
    first, _ = new_tasks(store, (("chair",), 1), (("chair",), 1))
    holder, (*_, payload, _) = session(studio_server, worker_id("json-forged"))
    other, _ = session(studio_server, worker_id("json-other"))
    ticket = json.loads(payload)["ticket"]
    good = painting(first, {"chair": [1]})
    annotator, task, expires, mac = ticket.split(".")
    for forged in (f"{annotator}.{first + 1}.{expires}.{mac}", f"{int(annotator) + 1}.{task}.{expires}.{mac}",
                   f"{annotator}.{task}.{int(expires) + 1}.{mac}", "", "1.2.3", None, 7):
        for action in ("submit", "skip", "flag"):
            refused = act(studio_server, holder, action, ticket=forged, painting=good, reason="other", typed="x")
            assert refused.status_code == 403 and "ticket" in refused.json()["error"]
    assert act(studio_server, other, "submit", ticket=ticket, painting=good).status_code == 403  # another browser
    assert act(studio_server, None, "skip", ticket=ticket).status_code == 403  # no session cookie
    key = studio_server.studio.painter_ticket_key
    browser = hashlib.sha256(holder.cookies["studio-session"].encode()).hexdigest()
    expired = ticket_for(key, int(annotator), first, browser, now=time.time() - TICKET_TTL_S - 3600)
    refused = act(studio_server, holder, "submit", ticket=expired, painting=good)  # its browser, an hour too late
    assert refused.status_code == 403 and "expired" in refused.json()["error"]
    foreign = ticket_for(key, int(annotator), first + 1, browser)  # signed right, but the other annotator's task
    for action in ("submit", "skip", "flag"):
        refused = act(studio_server, holder, action, ticket=foreign, painting=painting(first + 1, {"chair": [1]}),
                      reason="other", typed="x")
        assert refused.status_code == 400 and "not yours" in refused.json()["error"], refused.text
    assert count_submissions(store, first + 1) == 0 and list(statuses(store, first + 1).values()) == [("assigned", None)]
    for sent, message in ((painting(first, {"chair": [VERTICES]}), "must be in 0..10613"),
                          (painting(first + 1, {"chair": [1]}), "another task"),
                          (painting(first, {"chair": [1]}, topology="smplx"), "smplx"),
                          ("not json", "not valid JSON"), (painting(first, {"table": [1]}), "table")):
        refused = act(studio_server, holder, "submit", ticket=ticket, painting=sent)
        assert refused.status_code == 400 and message in refused.json()["error"], (sent, refused.text)
        assert "/tmp" not in refused.text and "Traceback" not in refused.text
    no_painting = act(studio_server, holder, "submit", ticket=ticket)
    assert no_painting.status_code == 400 and "'painting'" in no_painting.json()["error"]
    form = httpx.post(studio_server.url + "/studio/api/submit", cookies=holder.cookies, timeout=30,
                      data={"ticket": ticket, "painting": good})
    assert form.status_code == 415
    huge = httpx.post(studio_server.url + "/studio/api/submit", cookies=holder.cookies, timeout=30,
                      headers={"content-type": "application/json"},
                      content=b'{"ticket": "1", "painting": "' + b" " * (4 * 2**20 + 10) + b'"}')
    assert huge.status_code == 413
    assert count_submissions(store, first) == 0  # nothing refused was stored
    assert act(studio_server, holder, "submit", ticket=ticket, painting=good).status_code == 200


def test_json_submit_of_a_retired_task_is_kept_and_the_next_task_is_never_retired(studio_server):
    from annotations import task_admin

    store = studio_server.studio.store
    first, second = new_tasks(store, (("chair",), 1), (("chair",), 1))
    holder, (*_, payload, _) = session(studio_server, worker_id("json-retired"))
    assert json.loads(payload)["task_id"] == first
    task_admin.retire_task(store, first)
    task_admin.retire_task(store, second)
    answer = act(studio_server, holder, "submit", ticket=json.loads(payload)["ticket"],
                 painting=painting(first, {"chair": [3]}))
    assert answer.status_code == 200 and count_submissions(store, first) == 1  # as the queued event: kept
    assert answer.json()["task"] is None and answer.json()["payload"] == ""  # the retired one is served to nobody


def test_a_queued_submit_after_json_actions_acts_on_the_task_the_page_shows(studio_server):
    store = studio_server.studio.store
    first, second, third = new_tasks(store, (("chair",), 1), (("chair",), 1), (("chair",), 1))
    holder, (*_, payload, _) = session(studio_server, worker_id("mixed"))
    answer = act(studio_server, holder, "submit", ticket=json.loads(payload)["ticket"],
                 painting=painting(first, {"chair": [2]})).json()
    assert answer["task"] == second  # Gradio's state still holds the first task
    outputs = holder.predict(painting(second, {"chair": [4]}), api_name="/submit")
    assert json.loads(outputs[3])["task_id"] == third and f"Submitted task {second}" in outputs[4]
    assert count_submissions(store, second) == 1
    with pytest.raises(AppError, match="another task"):  # a painting of a task the annotator does not hold
        holder.predict(painting(first + 10_000, {"chair": [4]}), api_name="/submit")
