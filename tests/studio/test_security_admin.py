"""Issue 15, item 3: the admin console and the HTTP layer, attacked from a plain HTTP client.

Login throttling (30 wrong passwords), the schema hidden before login, admin-only routes, export
files served only to the admin, cookies, CORS, client addresses behind a proxy, security headers.
"""
from __future__ import annotations

import io
import logging
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from studio_servers import ADMIN_PASSWORD, ADMIN_USER, start_studio, stop
from raw_queue import RawPage
from studio.security import LoginThrottle

ADMIN_ENDPOINTS = ("import_batch", "review_task", "export", "quality", "task_list", "retire_task", "retire_batch",
                   "promote_listed", "set_priority")


@pytest.fixture(scope="module")
def proxied_server(tmp_path_factory):
    """A short login delay (the test waits it out) and 127.0.0.1 trusted as the reverse proxy."""
    folder = tmp_path_factory.mktemp("studio-proxied")
    (folder / "models").mkdir()
    running, server = start_studio(folder / "models", folder, login_delay_s=3.0, trusted_proxies=("127.0.0.1",))
    yield running
    stop(server, running)


def login(client: httpx.Client, url: str, password: str, username: str = ADMIN_USER, address: str | None = None):
    headers = {"X-Forwarded-For": address} if address else {}
    return client.post(f"{url}/admin/login", data={"username": username, "password": password}, headers=headers)


@pytest.mark.slow
def test_thirty_wrong_passwords_are_throttled_and_the_right_one_works_after_the_delay(proxied_server, caplog):
    url = proxied_server.url
    caplog.set_level(logging.INFO, logger="studio.security")
    with httpx.Client(timeout=30) as client:
        answers = [login(client, url, f"guess-{i}", address="203.0.113.7") for i in range(30)]
        assert [answer.status_code for answer in answers[:5]] == [400] * 5
        assert {answer.status_code for answer in answers[5:]} == {429}
        assert all(1 <= int(answer.headers["retry-after"]) <= 3600 for answer in answers[5:])
        assert "too many failed logins" in answers[-1].json()["detail"]
        # while blocked, even the right password is refused, and it leaves no session cookie
        blocked = login(client, url, ADMIN_PASSWORD, address="203.0.113.7")
        assert blocked.status_code == 429 and "set-cookie" not in blocked.headers
        time.sleep(float(blocked.headers["retry-after"]) + 0.2)
        assert login(client, url, ADMIN_PASSWORD, address="203.0.113.7").status_code == 200
        assert "import_batch" in client.get(f"{url}/admin/config").text  # logged in
    refusals = [r.getMessage() for r in caplog.records if r.name == "studio.security"]
    assert sum("failed login" in m and "203.0.113.7" in m for m in refusals) == 5
    assert sum("throttled" in m for m in refusals) == 26
    assert not any(ADMIN_PASSWORD in m or "guess-" in m for m in refusals)  # passwords never logged


def test_the_delay_doubles_with_every_further_failure_and_success_resets_it():
    now = [1000.0]
    throttle = LoginThrottle(max_failures=5, delay_s=3.0, clock=lambda: now[0])
    keys = ["user:/admin:grow", "address:192.0.2.1"]
    imposed = []
    for _ in range(8):
        now[0] += throttle.retry_after(keys)  # wait out any block, then fail once more
        imposed.append(throttle.failed(keys))
    assert imposed == [0, 0, 0, 0, 3.0, 6.0, 12.0, 24.0]
    assert throttle.retry_after(keys) == 24.0 and throttle.retry_after(["address:192.0.2.2"]) == 0
    throttle.succeeded(keys)
    assert throttle.retry_after(keys) == 0 and throttle.failed(keys) == 0
    for _ in range(40):  # the delay stops growing at an hour
        now[0] += throttle.retry_after(keys)
        throttle.failed(keys)
    assert throttle.retry_after(keys) == 3600.0


def test_one_address_trying_many_users_and_many_addresses_trying_one_user_are_both_stopped(proxied_server):
    url = proxied_server.url
    with httpx.Client(timeout=30) as client:
        by_address = [login(client, url, "x", username=f"user-{i}", address="192.0.2.50").status_code for i in range(8)]
        assert by_address[:5] == [400] * 5 and set(by_address[5:]) == {429}
        by_user = [login(client, url, "x", username="target", address=f"192.0.2.{100 + i}").status_code
                   for i in range(8)]
        assert by_user[:5] == [400] * 5 and set(by_user[5:]) == {429}


def test_forwarded_for_is_ignored_unless_the_request_comes_from_a_trusted_proxy(studio_server):
    """The default server trusts no proxy: rotating X-Forwarded-For does not escape the address throttle."""
    url, throttle = studio_server.url, studio_server.studio.login_throttle
    with httpx.Client(timeout=30) as client:
        codes = [login(client, url, "x", username=f"rotating-{i}", address=f"10.9.8.{i}").status_code
                 for i in range(7)]
    assert 429 in codes
    assert throttle.retry_after(["address:127.0.0.1"]) > 0
    assert throttle.retry_after(["address:10.9.8.6"]) == 0
    throttle.succeeded(["address:127.0.0.1"])  # the other tests of this module's server log in from here


PRE_LOGIN_ROUTES = [("GET", "/admin/config"), ("GET", "/admin/config/"), ("GET", "/admin/gradio_api/info"),
                    ("GET", "/admin/gradio_api/info/"), ("GET", "/admin/gradio_api/runs"),
                    ("GET", "/admin/gradio_api/runs/"), ("GET", "/admin/gradio_api/openapi.json"),
                    ("GET", "/admin/gradio_api/heartbeat/abc"), ("POST", "/admin/gradio_api/cancel"),
                    ("POST", "/admin/gradio_api/reset"), ("POST", "/admin/gradio_api/queue/join"),
                    ("GET", "/admin/gradio_api/queue/data?session_hash=x"), ("GET", "/admin/gradio_api/file=/etc/hostname"),
                    ("POST", "/admin/gradio_api/upload"), ("GET", "/admin/gradio_api/startup-events"),
                    ("GET", "/admin/%2e%2e/admin/config"), ("GET", "/ADMIN/config")]


def test_before_login_no_admin_route_shows_the_schema_or_runs_anything(studio_server):
    with httpx.Client(timeout=30) as client:
        for method, path in PRE_LOGIN_ROUTES:
            answer = client.request(method, studio_server.url + path, json={})
            assert answer.status_code in (401, 404), (path, answer.status_code)
            assert not any(name in answer.text for name in ADMIN_ENDPOINTS), path
        for path in ("/admin/", "/admin/?view=api", "/admin/?view=runs"):
            page = client.get(studio_server.url + path)
            assert page.status_code == 200 and not any(name in page.text for name in ADMIN_ENDPOINTS), path


def test_export_files_are_served_to_the_admin_only(studio_server):
    admin = RawPage(studio_server.url, "/admin")
    assert admin.login(ADMIN_USER, ADMIN_PASSWORD).status_code == 200
    outcome = admin.call("export", ["", False, False, 1, "consensus", "studio"])
    assert outcome.success, outcome
    url = outcome.data[0]["url"]
    served = admin.client.get(url if url.startswith("http") else studio_server.url + url)
    assert served.status_code == 200
    with zipfile.ZipFile(io.BytesIO(served.content)) as bundle:
        assert "manifest.jsonl" in bundle.namelist()
    path = outcome.data[0]["path"]
    with httpx.Client(timeout=30) as anyone:
        for prefix in ("", "/annotate", "/admin"):
            answer = anyone.get(f"{studio_server.url}{prefix}/gradio_api/file={path}")
            assert answer.status_code in (401, 403), (prefix, answer.status_code)
            assert answer.content != served.content
    admin.close()


def test_cookies_are_lax_http_only_and_secure_over_https(proxied_server):
    url = proxied_server.url
    with httpx.Client(timeout=30) as client:
        plain = login(client, url, ADMIN_PASSWORD, address="198.51.100.20")
    cookies = plain.headers.get_list("set-cookie")
    assert cookies and all("HttpOnly" in c and "SameSite=Lax" in c and "Secure" not in c for c in cookies)
    with httpx.Client(timeout=30) as client:
        secure = client.post(f"{url}/admin/login", data={"username": ADMIN_USER, "password": ADMIN_PASSWORD},
                             headers={"X-Forwarded-For": "198.51.100.21", "X-Forwarded-Proto": "https"})
    cookies = secure.headers.get_list("set-cookie")
    assert cookies and all("HttpOnly" in c and "SameSite=Lax" in c and "Secure" in c for c in cookies)


def test_no_cross_origin_access_with_credentials(studio_server):
    evil = {"Origin": "https://evil.example"}
    with httpx.Client(timeout=30) as client:
        for path in ("/", "/gradio_api/info", "/annotate/config", "/studio/mesh/body/openbody-v1.json"):
            answer = client.get(studio_server.url + path, headers=evil)
            assert not any(key.lower().startswith("access-control-") for key in answer.headers), path
        preflight = client.options(f"{studio_server.url}/gradio_api/queue/join",
                                   headers={**evil, "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in preflight.headers
        assert "access-control-allow-credentials" not in preflight.headers


def test_every_page_carries_the_security_headers(studio_server):
    with httpx.Client(timeout=60) as client:
        for path in ("/", "/annotate/", "/admin/", "/admin/config", "/studio/static/painter.js",
                     "/studio/mesh/body/openbody-v1.json", "/studio/mesh/task/999999.json", "/no-such-page",
                     "/gradio_api/info", "/annotate/gradio_api/info"):
            answer = client.get(studio_server.url + path)
            assert answer.headers.get("x-frame-options") == "DENY", path
            assert "frame-ancestors 'none'" in answer.headers.get("content-security-policy", ""), path
            assert answer.headers.get("x-content-type-options") == "nosniff", path
            assert answer.headers.get("referrer-policy") == "same-origin", path


def test_admin_uploads_stay_in_the_admin_folder_and_public_pages_cannot_use_them(studio_server, picture):
    from raw_queue import forged

    admin = RawPage(studio_server.url, "/admin")
    assert admin.login(ADMIN_USER, ADMIN_PASSWORD).status_code == 200
    uploaded = admin.upload(picture, "batch-image.png")["path"]
    assert str(studio_server.studio.admin_files.resolve()) in str(Path(uploaded).resolve())
    visitor = RawPage(studio_server.url)
    refused = visitor.call("predict_contact", [forged(uploaded), ["chair"]])
    assert not refused.success and "was not uploaded to this server" in refused.error
    for prefix in ("", "/annotate"):
        assert visitor.client.get(f"{studio_server.url}{prefix}/gradio_api/file={uploaded}").status_code == 403
    assert admin.client.get(f"{studio_server.url}/admin/gradio_api/file={uploaded}").status_code == 200
    admin.close()
    visitor.close()
