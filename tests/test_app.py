"""The CLI: doctor and serve."""
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _doctor(models_dir):
    return subprocess.run([sys.executable, str(ROOT / "app.py"), "doctor", "--models", str(models_dir)],
                          capture_output=True, text=True, timeout=120)


def test_doctor_names_every_missing_path_and_exits_zero(tmp_path):
    result = _doctor(tmp_path)
    assert result.returncode == 0, result.stderr
    for relative in ("body/smplx/SMPLX_NEUTRAL.npz", "body/smplh/SMPLH_NEUTRAL.pkl", "body/smpl/SMPL_NEUTRAL.pkl",
                     "body/smpl_to_smplx.pkl"):
        assert "[missing]" in result.stdout and str(tmp_path / relative) in result.stdout
    assert "Bodies usable now: openbody" in result.stdout


def test_doctor_reports_found_files(smplx_models_dir):
    result = _doctor(smplx_models_dir)
    assert result.returncode == 0
    assert f"[found]   SMPL-X body model: {smplx_models_dir / 'body/smplx/SMPLX_NEUTRAL.npz'}" in result.stdout
    assert "Bodies usable now: openbody, smplx" in result.stdout


def _serve(tmp_path, env_extra, *args):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {key: value for key, value in os.environ.items() if not key.startswith("STUDIO_ADMIN")}
    env.update(STUDIO_VAR=str(tmp_path / "var"), **env_extra)
    command = [sys.executable, str(ROOT / "app.py"), "serve", "--models", str(tmp_path), "--port", str(port),
               "--db", f"sqlite:///{tmp_path / 'store.db'}", *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), port


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_serve_mounts_three_pages_and_keeps_admin_closed_without_credentials(tmp_path):
    process, port = _serve(tmp_path, {})
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                status, _ = _get(f"http://127.0.0.1:{port}/annotate/")
                break
            except (urllib.error.URLError, ConnectionError):
                assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-2000:]
                time.sleep(0.5)
        assert status == 200
        assert _get(f"http://127.0.0.1:{port}/")[0] == 200
        status, text = _get(f"http://127.0.0.1:{port}/admin")
        assert status == 503 and "STUDIO_ADMIN_PASSWORD" in text
        status, text = _get(f"http://127.0.0.1:{port}/studio/mesh/body/openbody-v1.json")
        assert status == 200 and text.startswith('{"topology":"openbody-v1"')
        assert _get(f"http://127.0.0.1:{port}/studio/mesh/body/..%2F..%2Fetc%2Fpasswd.json")[0] == 404
        assert _get(f"http://127.0.0.1:{port}/studio/static/package.json")[0] == 404, "only the painter's files are served"
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_serve_refuses_a_short_admin_password_and_a_bad_login_file(tmp_path):
    process, _ = _serve(tmp_path, {"STUDIO_ADMIN_USER": "admin", "STUDIO_ADMIN_PASSWORD": "short"})
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2 and "at least 8 characters" in stderr
    logins = tmp_path / "logins.txt"
    logins.write_text("alice:long-enough-password\nbob\n")
    process, _ = _serve(tmp_path, {}, "--annotator-logins", str(logins))
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2 and "line 2" in stderr
