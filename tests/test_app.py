"""The CLI doctor and the preview page, driven through gradio_client like a remote user."""
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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


@pytest.fixture(scope="module")
def preview_url(smplx_models_dir):
    from studio.preview import build_preview

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    demo = build_preview(smplx_models_dir)
    demo.queue(default_concurrency_limit=1, api_open=False)
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.mark.parametrize("kind,vertices", [("openbody", "10614"), ("smplx", "10475")])
def test_render_body_endpoint_returns_real_renders(preview_url, kind, vertices):
    from gradio_client import Client

    client = Client(preview_url, verbose=False)
    image_path, legend = client.predict(kind, "body parts", 256, api_name="/render_body")
    image = np.asarray(Image.open(image_path).convert("RGB"))
    assert image.shape == (512, 512, 3)
    body = (image < 250).any(-1)
    assert 0.03 < body.mean() < 0.6, "the body fills part of every view"
    for quadrant in (body[:256, :256], body[:256, 256:], body[256:, :256], body[256:, 256:]):
        assert quadrant.mean() > 0.01
    assert len(np.unique(image[body].reshape(-1, 3) // 16, axis=0)) > 15, "parts have distinct colours"
    assert vertices in legend and "left_hand" in legend


def test_render_body_endpoint_refuses_bad_input(preview_url):
    from gradio_client import Client

    client = Client(preview_url, verbose=False)
    with pytest.raises(Exception, match="1024"):
        client.predict("openbody", "body parts", 5000, api_name="/render_body")
    with pytest.raises(Exception, match="smpl"):
        client.predict("smpl", "body parts", 256, api_name="/render_body")
    image_path, _ = client.predict("openbody", "normals (InteractVLM render)", 128, api_name="/render_body")
    assert Image.open(image_path).size == (256, 256), "the server keeps serving after errors"
