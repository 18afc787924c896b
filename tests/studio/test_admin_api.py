"""The admin console (``/admin``) through ``gradio_client``: login, import, quality, review, export.

The module's store is filled once (``painted``): a zip batch imported through the API, then painted
and flagged by three workers through ``/annotate``; the later tests read it. Tests that import more
tasks ask for ``painted`` first, so their tasks never reach those workers.
"""
from __future__ import annotations

import io
import json
import zipfile

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from sqlalchemy import func, select

from annotations import models, qc
from annotations.review import load_task_annotations

TOPOLOGY, VERTICES = "openbody-v1", 10614
ROWS = [  # image, labels, redundancy
    ("a.png", ("chair", "supporting"), 2),
    ("b.png", ("cup",), 2),
    ("c.png", ("bottle",), 1),
]
PAINTS = {  # worker -> [{label: vertex ids}] for the tasks of a.png and b.png, in that order
    "ann-1": [{"chair": [1, 2, 3], "supporting": [100, 101]}, {"cup": [10, 11]}],
    "ann-2": [{"chair": [1, 2, 3], "supporting": [100, 101]}, {"cup": [10, 12, 13]}],
}


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def write_zip(path, rows, images=None) -> None:
    """A batch zip: the images and a tasks.csv (lists separated by |)."""
    with zipfile.ZipFile(path, "w") as archive:
        for index, (name, _, _) in enumerate(rows):
            archive.writestr(name, (images or {}).get(name, png(index + 1)))
        lines = ["image,labels,topology,redundancy"]
        lines += [f"{name},{'|'.join(labels)},{TOPOLOGY},{redundancy}" for name, labels, redundancy in rows]
        archive.writestr("tasks.csv", "\n".join(lines) + "\n")


def count(store, table) -> int:
    with store.session() as db:
        return db.scalar(select(func.count()).select_from(table))


@pytest.fixture(scope="module")
def login(studio_server) -> tuple[str, str]:
    account = studio_server.studio.settings.admin
    return account.username, account.password


@pytest.fixture(scope="module")
def admin(studio_server, login) -> Client:
    return Client(studio_server.url + "/admin/", auth=login, verbose=False)


@pytest.fixture(scope="module")
def imported(studio_server, admin, tmp_path_factory) -> dict[str, int]:
    """Import the batch through the API; image name -> task id."""
    store = studio_server.studio.store
    path = tmp_path_factory.mktemp("batch") / "lab-batch.zip"
    write_zip(path, ROWS)
    report = admin.predict([handle_file(str(path))], "", TOPOLOGY, 3, api_name="/import_batch")
    assert "3 tasks, 3 images (3 new)" in report and "lab-batch.zip" in report
    with store.session() as db:
        rows = db.execute(select(models.TaskRow.id, models.ImageRow.original_name)
                          .join(models.ImageRow, models.ImageRow.id == models.TaskRow.image_id)).all()
    return {name: task_id for task_id, name in rows}


@pytest.fixture(scope="module")
def painted(studio_server, imported) -> dict[str, int]:
    """Two workers paint a.png and b.png; a third flags c.png."""
    for worker, layers in PAINTS.items():
        client = Client(studio_server.url + "/annotate/", verbose=False)
        payload = client.predict(worker, api_name="/start_session")[3]
        for expected_image, paint in zip(("a.png", "b.png"), layers):
            task_id = json.loads(payload)["task_id"]
            assert task_id == imported[expected_image]
            answer = client.predict(json.dumps({"task": task_id, "topology": TOPOLOGY, "layers": paint, "seconds": 4.0}),
                                    api_name="/submit")
            assert answer[4] == f"Submitted task {task_id}"
            payload = answer[3]
        if worker == "ann-1":
            assert json.loads(payload)["task_id"] == imported["c.png"]
        else:
            assert payload == "", "c.png's single slot is held by ann-1"
    # ann-1 still holds c.png: a third worker gets nothing until it is flagged, then c.png.
    flagger = Client(studio_server.url + "/annotate/", verbose=False)
    assert flagger.predict("ann-3", api_name="/start_session")[3] == ""
    first = Client(studio_server.url + "/annotate/", verbose=False)
    first.predict("ann-1", api_name="/start_session")
    first.predict("image_unusable", api_name="/flag")
    assert json.loads(flagger.predict("ann-3", api_name="/start_session")[3])["task_id"] == imported["c.png"]
    return imported


# ---- login -------------------------------------------------------------------------------------------
def test_without_login_the_console_is_closed(studio_server, painted):
    with pytest.raises(Exception, match="credentials|login|Login"):
        Client(studio_server.url + "/admin/", verbose=False)
    for path in ("/admin/gradio_api/info", "/admin/config", "/admin/gradio_api/info?all_endpoints=true"):
        response = httpx.get(studio_server.url + path, timeout=30, follow_redirects=False)
        assert response.status_code in (401, 302, 303, 307), (path, response.status_code)
        assert "import_batch" not in response.text and "qc-summary" not in response.text
    join = httpx.post(studio_server.url + "/admin/gradio_api/queue/join", timeout=30,
                      json={"data": ["", False, False, 1, "consensus"], "fn_index": 0, "session_hash": "x"})
    assert join.status_code in (401, 403, 404), join.status_code
    # The page itself is the login form: no layout, no components, none of the store's data.
    page = httpx.get(studio_server.url + "/admin/", timeout=30).text
    config = json.loads(page.split("window.gradio_config = ", 1)[1].split(";</script>", 1)[0])
    assert config["auth_required"] is True and config["components"] == [] and config["dependencies"] == []
    assert "Admin console" not in page
    for secret in ("ann-1", "ann-2", "lab-batch", str(studio_server.studio.settings.admin.password)):
        assert secret not in page


def test_the_login_page_does_not_describe_the_admin_api(studio_server, admin):
    page = httpx.get(studio_server.url + "/admin/", timeout=30).text
    assert "window.gradio_api_info = {};" in page and "auth_required" in page
    assert "/import_batch" not in page and "/export" not in page


def test_a_wrong_password_is_refused(studio_server, login):
    user, password = login
    for auth in ((user, password + "x"), (user, ""), ("someone", password)):
        with pytest.raises(Exception, match="login|Login|credentials"):
            Client(studio_server.url + "/admin/", auth=auth, verbose=False)
    response = httpx.post(studio_server.url + "/admin/login", data={"username": user, "password": "wrong password"},
                          timeout=30)
    assert response.status_code in (400, 401) and "access-token" not in response.headers.get("set-cookie", "")


def test_the_admin_client_sees_its_endpoints(admin):
    endpoints = set(admin.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert endpoints == {"/import_batch", "/quality", "/review_task", "/export", "/task_list", "/set_priority",
                         "/retire_task", "/retire_batch", "/promote_listed",
                         "/require_signed_links", "/signed_links", "/demo_pool", "/promote_task",
                         "/study_create", "/study_state", "/study_link", "/study_analysis", "/study_power", "/study_export",
                         "/study_run_pairs", "/study_pick_run_pair"}


def test_an_annotator_cannot_call_admin_endpoints(studio_server):
    annotator = Client(studio_server.url + "/annotate/", verbose=False)
    for api, args in (("/export", ("", False, False, 1, "consensus")), ("/import_batch", ([], "", TOPOLOGY, 1))):
        with pytest.raises(ValueError, match="Cannot find a function"):
            annotator.predict(*args, api_name=api)
    demo = Client(studio_server.url + "/", verbose=False)
    with pytest.raises(ValueError, match="Cannot find a function"):
        demo.predict("", False, False, 1, "consensus", api_name="/export")


# ---- import ------------------------------------------------------------------------------------------
def test_import_writes_one_row_per_manifest_line(studio_server, imported):
    store = studio_server.studio.store
    assert set(imported) == {"a.png", "b.png", "c.png"}
    for name, labels, redundancy in ROWS:
        task = store.task(imported[name])
        assert (task.labels, task.topology, task.redundancy, task.kind) == (labels, TOPOLOGY, redundancy,
                                                                            "human_contact")
        assert task.image.path.read_bytes() == png([row[0] for row in ROWS].index(name) + 1)
        assert (task.image.width, task.image.height) == (56, 40)
    with store.session() as db:
        batches = db.execute(select(models.BatchRow.id, models.BatchRow.num_tasks)
                             .where(models.BatchRow.name == "lab-batch.zip")).all()
    assert [tuple(row) for row in batches] == [(1, 3)]


def test_a_repeated_or_bad_batch_is_rejected_whole(studio_server, admin, painted, tmp_path):
    store = studio_server.studio.store
    tasks, images = count(store, models.TaskRow), count(store, models.ImageRow)
    again = tmp_path / "lab-batch.zip"
    write_zip(again, ROWS)
    with pytest.raises(AppError, match="already imported as batch 1"):
        admin.predict([handle_file(str(again))], "", TOPOLOGY, 3, api_name="/import_batch")
    bad = tmp_path / "bad.zip"
    write_zip(bad, [("d.png", ("chair",), 1), ("e.png", ("<script>x</script>",), 1), ("f.png", ("cup",), 99)],
              images={"f.png": b"not a png"})
    with pytest.raises(AppError, match=r"batch rejected, nothing imported \(2 problem") as error:
        admin.predict([handle_file(str(bad))], "", TOPOLOGY, 3, api_name="/import_batch")
    message = str(error.value)
    assert "row 3" in message and "row 4" in message and "<script>" not in message
    with pytest.raises(AppError, match="upload a .zip"):
        admin.predict([], "", TOPOLOGY, 3, api_name="/import_batch")
    assert (count(store, models.TaskRow), count(store, models.ImageRow)) == (tasks, images)


def test_import_of_a_manifest_with_its_images(studio_server, admin, painted, tmp_path):
    store = studio_server.studio.store
    before = set(store.task_ids())
    (tmp_path / "g.png").write_bytes(png(7))
    (tmp_path / "h.png").write_bytes(png(8))
    (tmp_path / "tasks.csv").write_text("image,labels,redundancy,priority\ng.png,bed,1,-5\nh.png,bench|supporting,1,-5\n")
    report = admin.predict([handle_file(str(tmp_path / name)) for name in ("tasks.csv", "g.png", "h.png")],
                           "", TOPOLOGY, 1, api_name="/import_batch")
    assert "2 tasks, 2 images (2 new)" in report
    new = sorted(set(store.task_ids()) - before)
    assert [store.task(task_id).labels for task_id in new] == [("bed",), ("bench", "supporting")]
    assert {store.task(task_id).topology for task_id in new} == {TOPOLOGY}, "the form's topology fills the gap"
    assert {store.task(task_id).priority for task_id in new} == {-5}


def test_images_without_manifest_take_the_form_labels(studio_server, admin, painted, tmp_path):
    store = studio_server.studio.store
    before = set(store.task_ids())
    path = tmp_path / "plain.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("one.png", png(11))
        archive.writestr("two.png", png(12))
    with pytest.raises(AppError, match="give the object labels"):
        admin.predict([handle_file(str(path))], "", TOPOLOGY, 2, api_name="/import_batch")
    report = admin.predict([handle_file(str(path))], "table|supporting", TOPOLOGY, 2, api_name="/import_batch")
    assert "2 tasks" in report
    new = sorted(set(store.task_ids()) - before)
    assert len(new) == 2
    for task_id in new:
        task = store.task(task_id)
        assert (task.labels, task.redundancy, task.topology) == (("table", "supporting"), 2, TOPOLOGY)


# ---- quality, review, export --------------------------------------------------------------------------
def test_quality_tables_reflect_the_submissions(studio_server, admin, painted):
    summary, annotators, tasks, agreement, gold, flow = admin.predict(api_name="/quality")
    assert "<b>4</b> submissions from <b>2</b> annotators" in summary and "on <b>3</b> tasks" in summary, \
        "ann-3 opened the page and flagged, but never submitted"
    assert "<b>4</b> in the last 10 min" in summary
    people = {row[0]: dict(zip(annotators["headers"], row)) for row in annotators["data"]}
    for worker, submissions in (("ann-1", 2), ("ann-2", 2), ("ann-3", 0)):
        assert people[worker]["submissions"] == submissions and people[worker]["gold submissions"] == 0
        assert people[worker]["qualification"] == "pending"
    assert people["ann-1"]["median seconds"] == pytest.approx(4.0)
    rows = {row[0]: dict(zip(tasks["headers"], row)) for row in tasks["data"]}
    a, b, c = (painted[name] for name in ("a.png", "b.png", "c.png"))
    assert set(rows) == {a, b, c}
    assert (rows[a]["submissions"], rows[a]["flags"], rows[a]["kappa"], rows[a]["mean IoU"]) == (2, 0, 1.0, 1.0)
    entry = load_task_annotations(studio_server.studio.store, task_ids=[b])[b]
    expected = qc.agreement(entry.masks())
    assert (rows[b]["submissions"], rows[b]["flags"]) == (2, 0)
    assert rows[b]["kappa"] == pytest.approx(expected.fleiss_kappa, abs=1e-4)
    assert rows[b]["mean IoU"] == pytest.approx(0.25, abs=1e-4), "{10, 11} vs {10, 12, 13}: 1 / 4"
    assert (rows[c]["submissions"], rows[c]["flags"], rows[c]["kappa"]) == (0, 1, None)
    assert sorted(int(row[0]) for row in agreement["data"]) == [a, b], "plotted: tasks with a kappa"
    assert sum(row[1] for row in flow["data"]) == 4


def test_review_shows_each_annotator_and_the_aggregate(admin, painted):
    gallery, info = admin.predict(painted["a.png"], api_name="/review_task")
    assert [item["caption"] for item in gallery] == ["ann-1", "ann-2", "aggregate (majority vote)"]
    for item in gallery:
        image = np.asarray(Image.open(item["image"]).convert("RGB"))
        assert image.shape == (256, 512, 3)
        assert (image < 250).any(-1).mean() > 0.02, "a body is drawn"
        for half in (image[:, :256], image[:, 256:]):  # front | back, each the whole body: nothing touches an edge
            drawn = (half < 250).any(-1)
            assert drawn.mean() > 0.02
            assert not drawn[:3].any() and not drawn[-3:].any() and not drawn[:, :3].any() and not drawn[:, -3:].any()
            rows = np.flatnonzero(drawn.any(1))
            assert rows[-1] - rows[0] > 100, "head to feet, not a cropped half"
    assert f"Task {painted['a.png']}: 2 submissions" in info and "chair" in info and "supporting" in info
    gallery, info = admin.predict(painted["c.png"], api_name="/review_task")
    assert gallery == [] and "has no submissions yet" in info
    with pytest.raises(AppError, match="no task with id 99999"):
        admin.predict(99999, api_name="/review_task")
    with pytest.raises(AppError, match="select a task in the list first"):
        admin.predict(None, api_name="/review_task")


def open_export(path) -> dict:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        npz = np.load(io.BytesIO(archive.read(f"contact_{TOPOLOGY}.npz")))  # allow_pickle=False
        arrays = {key: npz[key] for key in npz.files if key != "contact_label_objectwise"}
        info = json.loads(archive.read("export.json"))
        manifest = [json.loads(line) for line in archive.read("manifest.jsonl").decode().splitlines()]
        images = {name: archive.read(name) for name in names if name.startswith("images/")}
    return {"names": names, "arrays": arrays, "info": info, "manifest": manifest, "images": images}


def test_export_has_one_row_per_task_with_the_majority_of_the_submissions(studio_server, admin, painted):
    store = studio_server.studio.store
    exported = open_export(admin.predict("", False, False, 1, "consensus", api_name="/export"))
    arrays = exported["arrays"]
    assert set(arrays) == {"imgname", "contact_label", "contact_label_objectwise_json", "topology"}
    assert arrays["contact_label"].shape == (2, VERTICES) and arrays["contact_label"].dtype == np.uint8
    assert arrays["topology"].item() == TOPOLOGY
    a, b = (store.task(painted[name]) for name in ("a.png", "b.png"))
    assert arrays["imgname"].tolist() == [f"images/{a.image.sha256}.png", f"images/{b.image.sha256}.png"]
    assert np.flatnonzero(arrays["contact_label"][0]).tolist() == [1, 2, 3, 100, 101]
    assert np.flatnonzero(arrays["contact_label"][1]).tolist() == [10], "a 1-1 tie is not a majority"
    objectwise = [json.loads(item) for item in arrays["contact_label_objectwise_json"]]
    assert objectwise == [{"chair": [1, 2, 3], "supporting": [100, 101]}, {"cup": [10]}]
    assert exported["images"][f"images/{a.image.sha256}.png"] == png(1)
    assert len(exported["manifest"]) == 2 and exported["info"]["counts"]["tasks"] == 2
    assert sorted(exported["names"]) == sorted(["export.json", "manifest.jsonl", f"contact_{TOPOLOGY}.npz",
                                                *exported["images"]])


def test_export_filters(admin, painted):
    agreed = open_export(admin.predict("0.99", False, False, 1, "consensus", api_name="/export"))["arrays"]
    assert agreed["contact_label"].shape == (1, VERTICES), "only a.png's annotators agree fully"
    assert np.flatnonzero(agreed["contact_label"][0]).tolist() == [1, 2, 3, 100, 101]
    with pytest.raises(AppError, match="min_agreement must be in"):
        admin.predict("2.5", False, False, 1, "consensus", api_name="/export")
    with pytest.raises(AppError, match="minimum agreement must be a number or empty"):
        admin.predict("high", False, False, 1, "consensus", api_name="/export")
    nothing = admin.predict("", True, False, 1, "consensus", api_name="/export")  # nobody is qualified yet
    with zipfile.ZipFile(nothing) as archive:
        assert f"contact_{TOPOLOGY}.npz" not in archive.namelist()
        assert json.loads(archive.read("export.json"))["counts"]["tasks"] == 0


# ---- the task list: filters, priority, retire, promote ------------------------------------------------------
def listed(admin, batch="any", status="any", topology="any", low="", high="") -> dict[int, dict]:
    table = admin.predict(batch, status, topology, low, high, api_name="/task_list")
    return {row[0]: dict(zip(table["headers"], row)) for row in table["data"]}


def test_task_list_filters_by_batch_status_topology_and_agreement(admin, painted):
    everything = listed(admin)
    a, b, c = (painted[name] for name in ("a.png", "b.png", "c.png"))
    assert {a, b, c} <= set(everything)
    assert (everything[a]["status"], everything[a]["submissions"], everything[a]["kappa"]) == ("complete", 2, 1.0)
    assert everything[c]["flags"] == 1 and everything[c]["kappa"] is None
    assert everything[a]["batch"] == "1: lab-batch.zip" and everything[a]["image"] == "a.png"
    assert set(listed(admin, batch="1")) == {a, b, c}
    assert set(listed(admin, low="0.99")) == {a} and set(listed(admin, high="0.5")) == {b}
    assert set(listed(admin, topology="smplx-10475")) == set()
    assert {row["status"] for row in listed(admin, status="open").values()} <= {"open"}
    with pytest.raises(AppError, match="not in the list of choices"):
        admin.predict("any", "finished", "any", "", "", api_name="/task_list")
    with pytest.raises(AppError, match="choose a batch from the list"):
        admin.predict("1; drop table", "any", "any", "", "", api_name="/task_list")
    with pytest.raises(AppError, match="the lowest agreement must be a number"):
        admin.predict("any", "any", "any", "lots", "", api_name="/task_list")


def test_priority_retire_and_retire_batch_from_the_list(studio_server, admin, painted, tmp_path):
    store = studio_server.studio.store
    path = tmp_path / "later.zip"
    write_zip(path, [("r1.png", ("sofa",), 1), ("r2.png", ("sofa",), 1)], images={"r1.png": png(31), "r2.png": png(32)})
    admin.predict([handle_file(str(path))], "", TOPOLOGY, 1, api_name="/import_batch")
    batch = max(row["batch"] for row in listed(admin).values() if row["batch"].endswith("later.zip"))
    first, second = sorted(listed(admin, batch=batch.split(":")[0]))
    message, table = admin.predict(first, 9, "any", "any", "any", "", "", api_name="/set_priority")
    assert message == f"Task {first} now has priority 9." and store.task(first).priority == 9
    with pytest.raises(AppError, match="whole number"):
        admin.predict(first, None, "any", "any", "any", "", "", api_name="/set_priority")
    message, _ = admin.predict(first, 0, "any", "any", "any", "", "", api_name="/retire_task")
    assert "retired" in message and listed(admin, status="retired")[first]["status"] == "retired"
    fresh = store.ensure_annotator(f"fresh-{first}").id
    from annotations import workflow

    served = workflow.next_task(store, fresh)
    assert served is None or served.task.id != first
    message, _ = admin.predict(second, 0, "any", "any", "any", "", "", api_name="/retire_batch")
    assert f"Batch {batch.split(':')[0]} is retired" in message
    assert {first, second} <= set(listed(admin, status="retired"))
    with pytest.raises(AppError, match="select a task in the list first"):
        admin.predict(None, 0, "any", "any", "any", "", "", api_name="/retire_task")
