"""Issue 15, item 5: bounded resources, attacked over the raw queue protocol.

Object uploads refused by size and by declared counts before parsing (memory measured with
tracemalloc: the server runs on a thread of this process), the pixel budget of a lane, the sweep of
uploads and outputs, and the same image served to many annotators at once arriving complete.
"""
from __future__ import annotations

import concurrent.futures
import io
import os
import time
import tracemalloc

import httpx
import numpy as np
import pytest
from PIL import Image

from annotations import batch
from engine.errors import InputError
from engine.objects import load_object_file
from raw_queue import RawPage, painter_payload
from studio.context import GPU_LANE
from studio.resources import sweep
from studio.uploads import upload_roots

from studio_servers import start_studio, stop

MIB = 2**20


@pytest.fixture(scope="module")
def bounded_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("studio-bounded")
    (folder / "models").mkdir()
    running, server = start_studio(folder / "models", folder, pixel_budget=3_000_000, pixel_wait_s=0.3,
                                   sweep_every_s=0.25)  # the sweep test shortens the age while it runs
    yield running
    stop(server, running)


def noise_png(path, width: int, height: int, seed: int = 0):
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def paint_with_object(page: RawPage, image, obj):
    return page.call("paint_affordance", [page.upload(image), "my upload", page.upload(obj), "chair", "sit"])


def paint_uploaded(page: RawPage, image, obj):
    """Upload first (the transfer is Gradio's), then measure only the request that handles the files."""
    files = [page.upload(image), page.upload(obj)]
    return lambda: page.call("paint_affordance", [files[0], "my upload", files[1], "chair", "sit"])


def measured(action):
    """(result, peak bytes allocated in this process, server thread included, while ``action`` ran)."""
    tracemalloc.start()
    try:
        result = action()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_forty_megabyte_obj_is_refused_by_its_size_before_parsing(bounded_server, tmp_path, picture):
    big = tmp_path / "huge.obj"
    with big.open("w") as handle:
        line = "v 0.123456 0.654321 0.111111\n"
        handle.write(line * (40 * MIB // len(line)))
    page = RawPage(bounded_server.url)
    page.visit()
    before = len(bounded_server.studio.store.task_ids())
    outcome, peak = measured(paint_uploaded(page, picture, big))
    assert not outcome.success and "larger than 20 MB" in outcome.error
    assert peak < 8 * MIB, f"{peak / MIB:.0f} MiB allocated for a file refused by its size"
    assert len(bounded_server.studio.store.task_ids()) == before


def test_declared_counts_are_checked_anywhere_in_the_header(bounded_server, tmp_path, picture):
    comments = "".join(f"comment {'x' * 60} {i}\n" for i in range(200))  # about 14 KiB before the counts
    ply = tmp_path / "bomb.ply"
    ply.write_text(f"ply\nformat ascii 1.0\n{comments}element vertex 50000000\nproperty float x\nproperty float y\n"
                   "property float z\nend_header\n0 0 0\n")
    off = tmp_path / "bomb.off"
    off.write_text("OFF\n" + "# a comment line that pushes the counts far down\n" * 300 + "90000000 1 0\n0 0 0\n")
    page = RawPage(bounded_server.url)
    page.visit()
    for path, declared in ((ply, "declares 50000000 vertex"), (off, "declares 90000000 vertex")):
        outcome, peak = measured(paint_uploaded(page, picture, path))
        assert not outcome.success and declared in outcome.error, outcome
        assert peak < 16 * MIB
    # An OBJ of 600k vertex lines (15 MB, under the size limit) is refused from its line count, unparsed.
    obj = ("v 0.1 0.2 0.3\n" * 600_000).encode()
    with pytest.raises(InputError, match="declares 600000 vertex elements"):
        load_object_file(obj, "many.obj", class_name="mug")
    _, peak = measured(lambda: _refused(obj))
    assert peak < 3 * len(obj), f"{peak / MIB:.0f} MiB for an {len(obj) / MIB:.0f} MiB file"


def _refused(data: bytes) -> None:
    try:
        load_object_file(data, "many.obj", class_name="mug")
    except InputError:
        return
    raise AssertionError("the OBJ was accepted")


def test_a_malformed_obj_gets_words_not_an_exception_name(bounded_server, tmp_path, picture):
    broken = tmp_path / "broken.obj"
    broken.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n")
    page = RawPage(bounded_server.url)
    page.visit()
    outcome = paint_with_object(page, picture, broken)
    assert not outcome.success and outcome.error.startswith("could not read the mesh: ")
    assert "IndexError" not in outcome.error and "Error:" not in outcome.error and "/" not in outcome.error.split("(")[0]


@pytest.mark.slow
def test_the_pixel_budget_makes_requests_wait_or_refuses_them_with_a_message(bounded_server, tmp_path):
    budget = bounded_server.studio.pixel_budgets[GPU_LANE]
    page = RawPage(bounded_server.url)
    page.visit()
    too_big = noise_png(tmp_path / "big.png", 2000, 2000)  # 4 MP > the whole 3 MP budget
    refused = page.call("paint_affordance", [page.upload(too_big), "chair", None, "chair", "sit"])
    assert not refused.success and "decodes at most 3.0 million" in refused.error
    medium = noise_png(tmp_path / "medium.png", 1000, 1200, seed=1)  # 1.2 MP
    with budget.hold(2_500_000):  # other requests hold most of the budget: this one waits, then is refused
        busy = page.call("paint_affordance", [page.upload(medium), "chair", None, "chair", "sit"])
    assert not busy.success and "busy with other large images" in busy.error
    budget.peak = 0
    pages = [RawPage(bounded_server.url) for _ in range(6)]
    for each in pages:
        each.visit()
    uploads = [each.upload(noise_png(tmp_path / f"m{i}.png", 1000, 1200, seed=10 + i)) for i, each in enumerate(pages)]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(lambda pair: pair[0].call("paint_affordance", [pair[1], "chair", None, "chair", "sit"]),
                                 zip(pages, uploads)))
    assert all(o.success or "busy with other large images" in o.error for o in outcomes), outcomes
    assert any(o.success for o in outcomes)
    assert 1_200_000 <= budget.peak <= 3_000_000 and budget.used == 0


@pytest.mark.slow
def test_uploads_and_outputs_are_swept_and_the_folders_stay_bounded(bounded_server, tmp_path, picture):
    studio = bounded_server.studio
    page = RawPage(bounded_server.url)
    page.visit()
    marker = os.urandom(8).hex()
    uploaded = []
    for i in range(100):
        path = tmp_path / f"upload-{i}.txt"
        path.write_text(f"{marker} {i}\n")
        uploaded.append(page.upload(path)["path"])
    outcome = page.call("predict_contact", [page.upload(picture), ["chair"]])
    assert outcome.success, outcome
    assert any(studio.outputs.rglob("*.glb"))
    studio._sweeper.max_age_s = 1.5
    try:
        time.sleep(2.5)  # past the 1.5 s age, several 0.25 s sweeps
    finally:
        studio._sweeper.max_age_s = studio.settings.cache_max_age_s
    assert [path for path in uploaded if os.path.exists(path)] == []
    assert not any(path.is_file() for path in studio.outputs.rglob("*"))
    remaining = [path for root in upload_roots(studio) for path in root.rglob("*") if path.is_file()
                 and path.stat().st_size < 64 and marker.encode() in path.read_bytes()]
    assert remaining == []


def test_sweep_keeps_the_newest_files_under_the_byte_cap(tmp_path):
    now = time.time()
    for i in range(100):
        path = tmp_path / f"d{i % 7}" / f"f{i}.bin"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(bytes(10_000))
        os.utime(path, (now - 100 + i, now - 100 + i))
    deleted, kept = sweep([tmp_path], max_age_s=3600, max_bytes=105_000, now=now)
    left = sorted(int(p.stem[1:]) for p in tmp_path.rglob("*.bin"))
    assert deleted == 90 and kept == 100_000 and left == list(range(90, 100))
    deleted, _ = sweep([tmp_path], max_age_s=5, max_bytes=10**9, now=now)
    assert sorted(int(p.stem[1:]) for p in tmp_path.rglob("*.bin")) == list(range(95, 100)) and deleted == 5


@pytest.mark.slow
def test_the_same_image_served_to_eight_annotators_at_once_arrives_complete(bounded_server):
    studio = bounded_server.studio
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(5).integers(0, 255, (600, 800, 3), dtype=np.uint8)).save(buffer, "PNG")
    stored = buffer.getvalue()
    complete = 0
    for round_number in range(3):
        task_id = batch.add_task(studio.store, stored, f"shared{round_number}.png", labels=["chair"],
                                 topology="openbody-v1", redundancy=8, priority=10_000 + round_number)
        pages = [RawPage(bounded_server.url, "/annotate") for _ in range(8)]
        for each in pages:
            each.visit()

        def open_and_fetch(index):
            outcome = pages[index].call("start_session", [f"viewer-{round_number}-{index}"])
            assert painter_payload(outcome)["task_id"] == task_id
            # The painter fetches the task's cached image with the page's own cookie (studio.payloads).
            return pages[index].client.get(bounded_server.url + painter_payload(outcome)["image_url"]).content

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            served = list(pool.map(open_and_fetch, range(8)))
        complete += sum(body == stored for body in served)
    assert complete == 24
