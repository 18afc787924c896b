"""Issue 15, item 4: the crowd queue, attacked over the raw queue protocol.

Demo-made tasks stay in the demo pool with their maker; session starts and task creation are rate
limited per address; signed worker links; unsigned workers' assignments expire sooner; a task's
object mesh only for its holders; annotator identity bound to the browser's session cookie; with
annotator logins the login is the identity; malformed paintings refused with a message.
"""
from __future__ import annotations

import io
import json
import time

import httpx
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from annotations import batch, models, workflow
from raw_queue import RawPage, painter_payload
from studio.crowd import sign_worker
from studio.settings import Login

from studio_servers import ADMIN_PASSWORD, ADMIN_USER, start_studio, stop

TOPOLOGY = "openbody-v1"
SECRET = "a-worker-link-secret-for-tests"


@pytest.fixture(scope="module")
def crowd_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("studio-crowd")
    (folder / "models").mkdir()
    running, server = start_studio(folder / "models", folder, worker_secret=SECRET, unsigned_assignment_timeout_s=1.0)
    running.studio.warm_up()
    yield running
    stop(server, running)


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("studio-limited")
    (folder / "models").mkdir()
    running, server = start_studio(folder / "models", folder, session_starts_per_minute=5, tasks_per_minute=3)
    yield running
    stop(server, running)


def browser(url: str, page: str) -> RawPage:
    """A fresh browser: its own cookie jar, the page loaded once (the session cookie set)."""
    raw = RawPage(url, page)
    raw.visit()
    return raw


def start(raw: RawPage, link: str):
    return raw.call("start_session", [link])


def pools(store) -> dict[str, int]:
    with store.session() as db:
        return dict(db.execute(select(models.TaskRow.pool, func.count()).group_by(models.TaskRow.pool)).all())


def paint_instead(demo: RawPage, picture):
    return demo.call("paint_affordance", [demo.upload(picture), "chair", None, "chair", "sit"])


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def crowd_task(store, seed: int, redundancy: int = 1) -> int:
    return batch.add_task(store, png(seed), f"crowd{seed}.png", labels=["chair"], topology=TOPOLOGY,
                          redundancy=redundancy)


def painting(task_id, layers, topology=TOPOLOGY, seconds=2.0) -> str:
    return json.dumps({"task": task_id, "topology": topology, "layers": layers, "seconds": seconds})


def submissions_by(store, external_id: str) -> int:
    with store.session() as db:
        return db.scalar(select(func.count()).select_from(models.SubmissionRow)
                         .join(models.AnnotatorRow, models.AnnotatorRow.id == models.SubmissionRow.annotator_id)
                         .where(models.AnnotatorRow.external_id == external_id))


@pytest.mark.slow
def test_fifty_demo_tasks_never_reach_the_crowd_until_the_admin_promotes_one(crowd_server, picture):
    store, url = crowd_server.studio.store, crowd_server.url
    queued = crowd_task(store, 901)
    visitor = browser(url, "")
    links = []
    for _ in range(50):
        outcome = paint_instead(visitor, picture)
        assert outcome.success, outcome
        links.append(outcome.data[0])
    assert pools(store)["demo"] == 50
    # a crowd annotator is served the crowd task, then nothing: no demo task, whatever its priority
    worker = browser(url, "/annotate")
    first = painter_payload(start(worker, f"?worker=c1&sig={sign_worker(SECRET, 'c1')}"))
    assert first["task_id"] == queued
    assert worker.call("submit", [painting(queued, {"chair": [1, 2]}), None]).success
    assert painter_payload(start(worker, f"?worker=c1&sig={sign_worker(SECRET, 'c1')}")) is None
    # the visitor's own link opens its task; the same link in another browser is refused
    thief = start(browser(url, "/annotate"), links[0].split("/annotate", 1)[1])
    assert not thief.success and "belongs to another browser" in thief.error
    mine = RawPage(url, "/annotate", client=visitor.client)
    held = painter_payload(start(mine, links[0].split("/annotate", 1)[1]))
    assert held is not None and store.task(held["task_id"]).pool == "demo"
    # the admin promotes that task: now the crowd is served it
    admin = RawPage(url, "/admin")
    assert admin.login(ADMIN_USER, ADMIN_PASSWORD).status_code == 200
    assert admin.call("promote_task", [held["task_id"]]).success
    other = browser(url, "/annotate")
    served = painter_payload(start(other, f"?worker=c2&sig={sign_worker(SECRET, 'c2')}"))
    assert served["task_id"] in (queued, held["task_id"])
    with store.session() as db:
        crowd_on_demo = db.scalar(select(func.count()).select_from(models.AssignmentRow)
                                  .join(models.TaskRow, models.TaskRow.id == models.AssignmentRow.task_id)
                                  .join(models.AnnotatorRow, models.AnnotatorRow.id == models.AssignmentRow.annotator_id)
                                  .where(models.TaskRow.pool == "demo", models.AnnotatorRow.bound_session.is_(None)))
    assert crowd_on_demo == 0


def test_session_starts_and_task_creation_are_rate_limited_per_address(limited_server, picture):
    store, url = limited_server.studio.store, limited_server.url
    page = browser(url, "/annotate")
    outcomes = [page.call("start_session", [f"squatter-{i}"]) for i in range(10)]
    assert [o.success for o in outcomes] == [True] * 5 + [False] * 5
    assert all("too many session starts" in o.error for o in outcomes[5:])
    # a spoofed X-Forwarded-For does not help: no proxy is trusted
    spoofed = RawPage(url, "/annotate", headers={"X-Forwarded-For": "203.0.113.99"})
    spoofed.visit()
    assert "too many session starts" in spoofed.call("start_session", ["squatter-x"]).error
    with store.session() as db:
        squatters = db.scalar(select(func.count()).select_from(models.AnnotatorRow)
                              .where(models.AnnotatorRow.external_id.like("squatter-%")))
    assert squatters == 5
    demo = browser(url, "")
    before = len(store.task_ids())
    made = [paint_instead(demo, picture) for _ in range(5)]
    assert [o.success for o in made] == [True] * 3 + [False] * 2
    assert "too many tasks made from the demo" in made[-1].error
    assert len(store.task_ids()) == before + 3


def test_signed_links_bind_the_worker_id_and_the_admin_can_require_and_generate_them(crowd_server):
    studio, url = crowd_server.studio, crowd_server.url
    signed = start(browser(url, "/annotate"), f"?worker=s1&sig={sign_worker(SECRET, 's1')}")
    assert signed.success
    assert studio.store.ensure_annotator("s1").verified
    for link, message in ((f"?worker=s1&sig={'0' * 64}", "signature does not match"),
                          ("?worker=s1", "needs its signed link"), ("s1", "needs its signed link"),
                          (f"?worker=s2&sig={sign_worker(SECRET, 's1')}", "signature does not match")):
        outcome = start(browser(url, "/annotate"), link)
        assert not outcome.success and message in outcome.error, link
    admin = RawPage(url, "/admin")
    assert admin.login(ADMIN_USER, ADMIN_PASSWORD).status_code == 200
    assert admin.call("require_signed_links", [True]).success
    try:
        refused = start(browser(url, "/annotate"), "?worker=fresh-unsigned")
        assert not refused.success and "needs a signed link" in refused.error
        made = admin.call("signed_links", ["lab", 5, "https://studio.example.org"])
        assert made.success, made
        file_url = made.data[0]["url"]
        csv_text = admin.client.get(file_url if file_url.startswith("http") else url + file_url).text.splitlines()
        assert csv_text[0] == "worker_id,link" and len(csv_text) == 6
        for row in csv_text[1:]:
            worker, link = row.split(",")
            assert link.startswith("https://studio.example.org/annotate?worker=")
            assert start(browser(url, "/annotate"), "?" + link.split("?", 1)[1]).success
            assert studio.store.ensure_annotator(worker).verified
    finally:
        assert admin.call("require_signed_links", [False]).success
    assert not admin.call("signed_links", ["lab", 0, ""]).success


def test_open_assignments_of_unsigned_workers_expire_sooner(crowd_server):
    store, url = crowd_server.studio.store, crowd_server.url
    for annotator in ("drainer",):
        drainer = store.ensure_annotator(annotator).id
        store.mark_verified(drainer)
        while (held := workflow.next_task(store, drainer)) is not None:
            workflow.submit(store, drainer, held.task.id, {}, f"drain-{held.task.id}")
    unsigned_task, signed_task = crowd_task(store, 911), crowd_task(store, 912)
    unsigned = painter_payload(start(browser(url, "/annotate"), "quick-unsigned"))
    signed = painter_payload(start(browser(url, "/annotate"), f"?worker=slow&sig={sign_worker(SECRET, 'slow')}"))
    assert {unsigned["task_id"], signed["task_id"]} == {unsigned_task, signed_task}
    time.sleep(1.3)  # past the unsigned timeout (1 s), far before the normal one (30 min)
    third = painter_payload(start(browser(url, "/annotate"), f"?worker=late&sig={sign_worker(SECRET, 'late')}"))
    assert third["task_id"] == unsigned["task_id"]  # the unsigned worker's slot was freed
    with store.session() as db:
        states = dict(db.execute(select(models.AnnotatorRow.external_id, models.AssignmentRow.status)
                                 .join(models.AssignmentRow, models.AssignmentRow.annotator_id == models.AnnotatorRow.id)
                                 .where(models.AnnotatorRow.external_id.in_(["quick-unsigned", "slow"]))).all())
    assert states == {"quick-unsigned": "expired", "slow": "assigned"}


def test_a_task_mesh_is_served_only_to_its_holder_and_the_admin(crowd_server, picture):
    url = crowd_server.url
    visitor = browser(url, "")
    link = paint_instead(visitor, picture).data[0]
    holder = RawPage(url, "/annotate", client=visitor.client)
    payload = painter_payload(start(holder, link.split("/annotate", 1)[1]))
    mesh_url = url + payload["mesh_url"]
    answer = visitor.client.get(mesh_url)
    assert answer.status_code == 200 and len(answer.json()["vertices"]) > 0
    stranger = browser(url, "/annotate")
    assert start(stranger, f"?worker=st&sig={sign_worker(SECRET, 'st')}").success
    for client in (stranger.client, httpx.Client()):
        refused = client.get(mesh_url)
        assert refused.status_code == 404 and "vertices" not in refused.text
    admin = RawPage(url, "/admin")
    admin.login(ADMIN_USER, ADMIN_PASSWORD)
    assert admin.client.get(mesh_url).status_code == 200
    for task_id in ("99999999", "9" * 40, "-1", "0", "abc", "1e9"):
        answer = admin.client.get(f"{url}/studio/mesh/task/{task_id}.json")
        assert answer.status_code == 404 and "detail" in answer.json(), task_id


def test_a_stolen_session_hash_cannot_submit_for_its_annotator(crowd_server):
    store, url = crowd_server.studio.store, crowd_server.url
    task_id = crowd_task(store, 921)
    victim = browser(url, "/annotate")
    payload = painter_payload(start(victim, f"?worker=victim&sig={sign_worker(SECRET, 'victim')}"))
    assert payload["task_id"] == task_id
    for thief in (RawPage(url, "/annotate"), browser(url, "/annotate")):  # no cookie, and a cookie of its own
        for api, data in (("submit", [painting(task_id, {"chair": [7]}), None]), ("skip", [None]),
                          ("flag", ["image_unusable", "", None]), ("check_painting", [painting(task_id, {"chair": [7]}), None])):
            outcome = thief.call(api, data, session_hash=victim.session_hash)
            assert not outcome.success and "belongs to another browser" in outcome.error, api
    assert submissions_by(store, "victim") == 0
    assert victim.call("submit", [painting(task_id, {"chair": [7]}), None]).success
    assert submissions_by(store, "victim") == 1


def test_with_annotator_logins_the_login_is_the_identity(tmp_path_factory):
    folder = tmp_path_factory.mktemp("studio-logins")
    (folder / "models").mkdir()
    logins = (Login("alice", "alice-password"), Login("bob", "bob-password"))
    running, server = start_studio(folder / "models", folder, annotator_logins=logins)
    try:
        store = running.studio.store
        task_id = crowd_task(store, 931)
        alice = RawPage(running.url, "/annotate")
        joined = alice.client.post(f"{alice.page}/gradio_api/queue/join",
                                   json={"data": ["?worker=bob"], "fn_index": 0, "session_hash": "x"})
        assert joined.status_code == 401  # no login, no queue
        assert alice.login("alice", "alice-password").status_code == 200
        alice.visit()
        payload = painter_payload(alice.call("start_session", ["?worker=bob"]))
        assert payload["task_id"] == task_id
        assert alice.call("submit", [painting(task_id, {"chair": [3, 4]}), None]).success
        assert submissions_by(store, "alice") == 1 and submissions_by(store, "bob") == 0
        with store.session() as db:
            assert db.scalar(select(models.AnnotatorRow.id).where(models.AnnotatorRow.external_id == "bob")) is None
    finally:
        stop(server, running)


@pytest.mark.parametrize("painted, message", [
    (json.dumps({"task": 1, "layers": {"chair": [1]}, "seconds": 1}), "has no topology"),
    (painting(1, {"chair": [1]}, seconds=-5), "seconds"),
    (painting(1, {"chair": [[1, 2], [3]]}), "flat list of integers"),
    (painting(1, {"chair": [1, "x", 2.5]}), "flat list of integers"),
    (painting(2**70, {"chair": [1]}), "another task"),
    ("[" * 100_000 + "]" * 100_000, "nested"),
])
def test_malformed_paintings_are_refused_with_a_message(crowd_server, painted, message):
    store, url = crowd_server.studio.store, crowd_server.url
    task_id = crowd_task(store, 940 + len(painted) % 50)
    page = browser(url, "/annotate")
    worker = f"painter-{len(painted)}-{abs(hash(message)) % 10_000}"
    assert painter_payload(start(page, f"?worker={worker}&sig={sign_worker(SECRET, worker)}")) is not None
    painted = painted.replace('"task": 1,', f'"task": {page_task(store, worker)},')
    for api in ("check_painting", "submit"):
        outcome = page.call(api, [painted, None])
        assert not outcome.success and message in outcome.error, (api, outcome)
        assert "Error" not in outcome.error.split(":")[0] and "Traceback" not in outcome.error
    assert submissions_by(store, worker) == 0
    del task_id


def page_task(store, worker: str) -> int:
    with store.session() as db:
        return db.scalar(select(models.AssignmentRow.task_id)
                         .join(models.AnnotatorRow, models.AnnotatorRow.id == models.AssignmentRow.annotator_id)
                         .where(models.AnnotatorRow.external_id == worker, models.AssignmentRow.status == "assigned"))


def test_a_hundred_thousand_deep_json_body_is_a_400_not_a_500(crowd_server):
    deep = "[" * 100_000 + "]" * 100_000
    with httpx.Client(timeout=30) as client:
        for path in ("/gradio_api/queue/join", "/annotate/gradio_api/queue/join", "/admin/login"):
            answer = client.post(crowd_server.url + path, content=deep, headers={"content-type": "application/json"})
            assert 400 <= answer.status_code < 500, (path, answer.status_code)
        answer = client.post(crowd_server.url + "/annotate/gradio_api/queue/join", content=deep,
                             headers={"content-type": "application/json"})
        assert "nested deeper than" in answer.json()["detail"]


def test_a_demo_visitor_submits_its_own_task_through_json_and_gets_the_thanks_never_the_crowd(crowd_server, picture):
    store, url = crowd_server.studio.store, crowd_server.url
    queued = crowd_task(store, 951)  # a crowd task waits: the visitor must never be handed it
    visitor = browser(url, "")
    link = paint_instead(visitor, picture).data[0]
    mine = RawPage(url, "/annotate", client=visitor.client)
    held = painter_payload(start(mine, link.split("/annotate", 1)[1]))
    thief = browser(url, "/annotate")
    stolen = thief.client.post(url + "/studio/api/submit", json={"ticket": held["ticket"], "painting": painting(
        held["task_id"], {"chair": [1]}, topology=held["topology"])})
    assert stolen.status_code == 403  # the ticket is bound to the visitor's browser
    count = int(held["topology"].removeprefix("points-"))
    answer = visitor.client.post(url + "/studio/api/submit", json={"ticket": held["ticket"], "painting": painting(
        held["task_id"], {"sit": list(range(min(count, 5)))}, topology=held["topology"])})
    assert answer.status_code == 200, answer.text
    reply = answer.json()
    assert reply["payload"] == "" and reply["task"] is None and "demo-thanks" in reply["text"]
    assert f"{url}/" in reply["text"]  # the absolute link back to the demo
    with store.session() as db:
        mine_rows = db.scalar(select(func.count()).select_from(models.SubmissionRow)
                              .where(models.SubmissionRow.task_id == held["task_id"]))
        crowd_on_queued = db.scalar(select(func.count()).select_from(models.AssignmentRow)
                                    .join(models.AnnotatorRow, models.AnnotatorRow.id == models.AssignmentRow.annotator_id)
                                    .where(models.AssignmentRow.task_id == queued,
                                           models.AnnotatorRow.bound_session.is_not(None)))
    assert mine_rows == 1 and crowd_on_queued == 0  # stored once; no demo visitor holds the crowd task
