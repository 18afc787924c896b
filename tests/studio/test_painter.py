"""The painter's Python side: payloads out, paintings in (checked before anything is stored), and settings."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from annotations.errors import PayloadError
from engine.errors import InputError
from studio.exports import label_colours
from studio.painter import MAX_PAINTING_BYTES, counts_html, payload_json, read_painting
from studio.settings import Login, StudioSettings, admin_from_env, any_login, logins_from_file

LABELS = ("chair", "supporting")


def painting(layers, topology="openbody-v1", **extra) -> str:
    return json.dumps({"task": 4, "topology": topology, "layers": layers, "seconds": 2.5, **extra})


def test_payload_starts_from_the_prediction_thresholded_at_one_half():
    prediction = {"chair": np.array([0.1, 0.5, 0.49, 0.9], dtype=np.float32)}
    payload = json.loads(payload_json(mesh_url="/m.json", kind="human_contact", topology="openbody-v1", task_id=3,
                                      labels=LABELS, prediction=prediction))
    assert payload["layers"] == {"chair": [1, 3]}
    assert payload["prediction"]["chair"] == [0.1, 0.5, 0.49, 0.9]
    assert payload["colours"] == label_colours(LABELS) and payload["colours"]["supporting"] == "#bfa100"
    assert payload["labels"] == list(LABELS) and payload["task_id"] == 3


def test_read_painting_sorts_and_deduplicates_and_fills_absent_labels():
    result = read_painting(painting({"chair": [9, 3, 3, 0]}), LABELS, "openbody-v1")
    assert result.layers["chair"].tolist() == [0, 3, 9] and result.layers["supporting"].size == 0
    assert result.counts() == {"chair": 3, "supporting": 0} and result.task_id == 4 and result.seconds == 2.5


@pytest.mark.parametrize("text, message", [
    (painting({"chair": [10614]}), "0..10613"),
    (painting({"chair": [-1]}), "0..10613"),
    (painting({"chair": [1.5]}), "integers"),
    (painting({"chair": "1,2"}), "list of integers"),
    (painting({"chair": [1]}, topology="smplx-10475"), "this task uses 'openbody-v1'"),
    (painting({"<b>table</b>": [1]}), "unknown layer"),
    (painting({"chair": list(range(10615))}), "only 10614 vertices"),
    ("{not json", "not valid JSON"),
    ("", "no painting was received"),
    (json.dumps([1, 2]), "'layers' mapping"),
    ("x" * (MAX_PAINTING_BYTES + 1), "larger than"),
])
def test_read_painting_refuses_bad_input_with_a_clear_message(text, message):
    with pytest.raises(PayloadError, match=message):
        read_painting(text, LABELS, "openbody-v1")


def test_object_paintings_are_checked_against_the_point_count():
    assert read_painting(painting({"sit": [0, 299]}, "points-300"), ("sit",), "points-300", 300).counts() == {"sit": 2}
    with pytest.raises(PayloadError, match="0..299"):
        read_painting(painting({"sit": [300]}, "points-300"), ("sit",), "points-300", 300)


def test_counts_html_escapes_labels():
    result = read_painting(painting({"<img src=x>": [1]}), ("<img src=x>",), "openbody-v1")
    text = counts_html(result, {"<img src=x>": "#123456"})
    assert "<img" not in text and "&lt;img src=x&gt;: 1 vertices" in text


def test_settings_and_logins(tmp_path):
    assert admin_from_env({}) is None and admin_from_env({"STUDIO_ADMIN_USER": "a"}) is None
    with pytest.raises(InputError, match="at least 8"):
        admin_from_env({"STUDIO_ADMIN_USER": "a", "STUDIO_ADMIN_PASSWORD": "short"})
    admin = admin_from_env({"STUDIO_ADMIN_USER": "lab", "STUDIO_ADMIN_PASSWORD": "long enough"})
    assert admin.check("lab", "long enough") and not admin.check("lab", "long enougH") and not admin.check("la", "long enough")
    assert "long enough" not in repr(admin)
    path = tmp_path / "logins.txt"
    path.write_text("# crowd\nalice:password-1\n\nbob:password-2\n")
    check = any_login(logins_from_file(path))
    assert check("bob", "password-2") and not check("bob", "password-1") and not check("carol", "password-2")
    path.write_text("alice:short\n")
    with pytest.raises(InputError, match="line 1"):
        logins_from_file(path)
    with pytest.raises(InputError, match="gpu concurrency"):
        StudioSettings(models_dir=tmp_path, gpu_concurrency=0)
    assert Login("u", "p") != Login("u", "q")


def test_body_meshes_for_each_installed_topology(smplx_models_dir, tmp_path):
    from studio.context import Studio

    studio = Studio(StudioSettings(models_dir=smplx_models_dir), engine=None, store=None)
    for topology, count in (("openbody-v1", 10614), ("smplx-10475", 10475)):
        mesh = studio.body_mesh_json(topology)
        assert len(mesh["vertices"]) == 3 * count and len(mesh["part_labels"]) == count
        assert max(mesh["faces"]) == count - 1 and len(mesh["part_names"]) == 19
    with pytest.raises(InputError, match="unknown body topology"):
        studio.body_mesh_json("../../etc/passwd")
    from engine.errors import MissingAssetError
    with pytest.raises(MissingAssetError):
        studio.body_mesh_json("smplh-6890")


def test_painter_library_modules_are_served_by_name_with_three_resolved():
    """OrbitControls and three-mesh-bvh import 'three' from the URL the painter uses; nothing else in
    node_modules is reachable."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from studio.server import LIBRARY_MODULES, add_static_routes

    app = FastAPI()
    add_static_routes(app)
    client = TestClient(app)
    for name in LIBRARY_MODULES:
        response = client.get(f"/studio/static/lib/{name}")
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/javascript")
        assert "from '../three/three.module.js'" in response.text
        assert not re.search(r"""\bfrom\s*['"]three['"]""", response.text), f"{name} keeps a bare 'three' import"
    assert "export { OrbitControls }" in client.get("/studio/static/lib/OrbitControls.js").text
    assert "MeshBVH" in client.get("/studio/static/lib/three-mesh-bvh.js").text
    assert client.get("/studio/static/three/three.module.js").status_code == 200
    for path in ("/studio/static/lib/package.json", "/studio/static/lib/../three-mesh-bvh/package.json",
                 "/studio/static/three/../package.json", "/studio/static/three-mesh-bvh/build/index.module.js",
                 "/studio/static/lib/%2e%2e/%2e%2e/package.json", "/studio/static/node_modules/three/package.json"):
        assert client.get(path).status_code == 404, path
