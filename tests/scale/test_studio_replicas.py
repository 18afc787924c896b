"""Two ``app.py serve`` processes on one PostgreSQL behind nginx (deploy/nginx/studio.conf), as docs/DEPLOY.md
runs them: 50 simulated annotators spread over both, every submission stored exactly once, sticky sessions.

PostgreSQL comes from ``$STUDIO_TEST_PG_URL`` and nginx from Debian's package (``.ci/run`` installs both);
without them the test skips with the reason, unless ``STUDIO_REQUIRE_PG=1`` / ``STUDIO_REQUIRE_NGINX=1``.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from annotations.store import reset_postgres_schema
from scale_helpers import ROOT, requirement

sys.path.insert(0, str(ROOT / "tests" / "studio"))
from raw_queue import RawPage, painter_payload  # noqa: E402

NGINX_CONFIG = ROOT / "deploy" / "nginx" / "studio.conf"
PROXY = "http://127.0.0.1:8088"
REPLICA_PORTS = (7861, 7862)
ADMIN_USER, ADMIN_PASSWORD = "scale-admin", "a long enough password"
ANNOTATORS, TASKS = 50, 100  # a submit serves the next task at once: each annotator holds two
TOPOLOGY = "openbody-v1"
pytestmark = pytest.mark.slow


def postgres_url() -> str:
    url = os.environ.get("STUDIO_TEST_PG_URL")
    if not url:
        requirement("STUDIO_REQUIRE_PG", "STUDIO_TEST_PG_URL is not set (run .ci/start-postgres to start a server)")
    problem = reset_postgres_schema(url)
    if problem:
        requirement("STUDIO_REQUIRE_PG", problem)
    return url


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found is None:
        requirement("STUDIO_REQUIRE_NGINX", "nginx is not installed (apt-get install nginx)")
    return found


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def wait_until_up(url: str, process: subprocess.Popen, log: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{url} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not come up in {timeout_s} s:\n{log.read_text()[-3000:]}")


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """PostgreSQL with TASKS fresh tasks, two studio processes on it sharing one data folder, nginx in front."""
    from annotations import batch
    from annotations.store import Store

    url, nginx = postgres_url(), nginx_binary()
    busy = [port for port in (*REPLICA_PORTS, 8088) if not port_free(port)]
    if busy:
        pytest.fail(f"ports {busy} are taken; the replica test needs 7861, 7862 and 8088 (deploy/nginx/studio.conf)")
    folder = tmp_path_factory.mktemp("replicas")
    models, data = folder / "models", folder / "data"  # data: the store's files, shared storage of both replicas
    models.mkdir()
    store = Store(url, data_dir=data)  # creates the schema before the replicas start
    env = {**os.environ, "STUDIO_ADMIN_USER": ADMIN_USER, "STUDIO_ADMIN_PASSWORD": ADMIN_PASSWORD,
           "STUDIO_VAR": str(folder / "var"), "GRADIO_TEMP_DIR": str(folder / "gradio")}
    replicas, logs = [], []
    try:
        for port in REPLICA_PORTS:  # docs/DEPLOY.md, "Several studio replicas"
            logs.append(folder / f"studio-{port}.log")
            command = [sys.executable, str(ROOT / "app.py"), "serve", "--db", url, "--data", str(data),
                       "--models", str(models), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
                       "--trusted-proxy", "127.0.0.1"]
            replicas.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=logs[-1].open("w"),
                                             stderr=subprocess.STDOUT))
        # The tasks are made while the replicas start (they share the store; nothing is cached at start).
        tasks = [batch.add_task(store, png(index), f"crowd-{index}.png", labels=["chair"], topology=TOPOLOGY)
                 for index in range(TASKS)]
        for port, process, log in zip(REPLICA_PORTS, replicas, logs):
            wait_until_up(f"http://127.0.0.1:{port}/annotate/", process, log)
        prefix = folder / "nginx"
        prefix.mkdir()
        subprocess.run([nginx, "-p", f"{prefix}/", "-c", str(NGINX_CONFIG)], check=True, capture_output=True)
        try:
            yield store, tasks
        finally:
            subprocess.run([nginx, "-p", f"{prefix}/", "-c", str(NGINX_CONFIG), "-s", "quit"], capture_output=True)
            pid = prefix / "nginx.pid"
            deadline = time.monotonic() + 10
            while pid.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
    finally:
        for process in replicas:
            process.terminate()
        for process in replicas:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        store.close()


def annotate(index: int) -> dict:
    """One annotator from their own address: open /annotate, take a task, paint and submit it, reload."""
    page = RawPage(PROXY, "/annotate", headers={"X-Forwarded-For": f"10.20.{index // 200}.{index % 200 + 1}"})
    try:
        replica = page.visit().headers["x-studio-replica"]
        worker = f"annotator-{index}"
        started = page.call("start_session", [f"?worker={worker}"])
        payload = painter_payload(started)
        if payload is None:
            return {"worker": worker, "submitted": False, "error": f"no task: {started} {started.data}"}
        task_id = payload["task_id"]
        painting = json.dumps({"task": task_id, "topology": TOPOLOGY, "layers": {"chair": [index, index + 1]},
                               "seconds": 4.0})
        outcome = page.call("submit", [painting, None])
        reloaded = page.visit().headers["x-studio-replica"]
        return {"worker": worker, "task": task_id, "replica": replica, "reloaded": reloaded,
                "submitted": outcome.success and f"Submitted task {task_id}" in json.dumps(outcome.data),
                "error": outcome.error}
    finally:
        page.close()


def test_fifty_annotators_over_two_replicas_lose_and_duplicate_nothing(cluster):
    from annotations import models

    store, tasks = cluster
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(annotate, range(ANNOTATORS)))
    failed = [result for result in results if not result["submitted"]]
    assert not failed, failed[:3]
    replicas = {result["replica"] for result in results}
    assert replicas == {f"127.0.0.1:{port}" for port in REPLICA_PORTS}, "both replicas served annotators"
    assert all(result["reloaded"] == result["replica"] for result in results), "a reload lands on the same replica"
    with store.session() as db:
        rows = db.execute(select(models.SubmissionRow.task_id, models.AnnotatorRow.external_id)
                          .join(models.AnnotatorRow, models.AnnotatorRow.id == models.SubmissionRow.annotator_id)).all()
        total = db.scalar(select(func.count()).select_from(models.SubmissionRow))
    assert total == ANNOTATORS, "every submission stored, none twice"
    assert sorted(rows) == sorted((result["task"], result["worker"]) for result in results)
    assert len({task for task, _ in rows}) == ANNOTATORS, "redundancy 1: no task was handed to two annotators"
    assert {task for task, _ in rows} <= set(tasks)


def test_a_new_browser_gets_a_route_cookie_and_keeps_its_replica(cluster):
    with httpx.Client(timeout=30) as browser:
        first = browser.get(f"{PROXY}/annotate/")
        assert first.status_code == 200
        assert "studio_route" in browser.cookies and "HttpOnly" in first.headers["set-cookie"]
        replica = first.headers["x-studio-replica"]
        for _ in range(5):
            again = browser.get(f"{PROXY}/annotate/")
            assert again.headers["x-studio-replica"] == replica and "set-cookie" not in {
                key.lower() for key, value in again.headers.items() if "studio_route" in value}
    seen = set()
    for _ in range(30):
        with httpx.Client(timeout=30) as browser:
            seen.add(browser.get(f"{PROXY}/annotate/").headers["x-studio-replica"])
    assert len(seen) == 2, "new browsers are spread over both replicas"


def test_annotate_link_and_admin_work_through_the_proxy(cluster):
    with httpx.Client(timeout=30) as browser:
        link = browser.get(f"{PROXY}/annotate?worker=someone")
        assert link.status_code == 307 and link.headers["location"].endswith("/annotate/?worker=someone")
        assert browser.get(f"{PROXY}/admin/").status_code == 200
        refused = browser.post(f"{PROXY}/admin/login", data={"username": ADMIN_USER, "password": "wrong password"})
        assert refused.status_code in (400, 401)
        login = browser.post(f"{PROXY}/admin/login", data={"username": ADMIN_USER, "password": ADMIN_PASSWORD})
        assert login.status_code == 200, login.text[:300]
        page = browser.get(f"{PROXY}/admin/")
        assert page.status_code == 200 and '"auth_required":true' not in page.text
    admin = RawPage(PROXY, "/admin")
    try:
        admin.visit()
        assert admin.login(ADMIN_USER, ADMIN_PASSWORD).status_code == 200
        dependencies = admin.config()["dependencies"]
        assert any(item.get("api_name") for item in dependencies), "the admin console's endpoints, behind its login"
    finally:
        admin.close()
