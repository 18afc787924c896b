"""The HOI tab through ``gradio_client``: an example end to end (no model files), the paired runs, and bad
input answered in words. The fit runs with a reduced config (the module's ``FIT_CONFIG``) to stay fast."""
from __future__ import annotations

import numpy as np
import pytest
import trimesh
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

import studio.hoi as hoi
from annotations.runs import list_runs
from engine.hoi.fit import FitConfig

pytestmark = pytest.mark.slow
EXAMPLE = "person_chair"


@pytest.fixture(scope="module", autouse=True)
def quick_fit():
    previous = hoi.FIT_CONFIG
    hoi.FIT_CONFIG = FitConfig(iterations=8, render_size=96, frames=3)
    yield
    hoi.FIT_CONFIG = previous


def fit_args(**overrides):
    values = {"image": handle_file(str(hoi.EXAMPLES / f"{EXAMPLE}.png")), "example": EXAMPLE,
              "body_source": hoi.BODY_EXAMPLE, "body_file": None, "object_choice": "chair", "object_file": None,
              "label": "chair", "mask_source": hoi.MASK_EXAMPLE, "editor": None, "box": "",
              "contact_source": hoi.CONTACT_EXAMPLE, "baseline": True}
    values.update(overrides)
    return list(values.values())


def test_example_runs_end_to_end_and_keeps_a_paired_baseline(studio_server):
    client = Client(studio_server.url + "/", verbose=False)
    picture, obj, label, _ = client.predict(EXAMPLE, api_name="/hoi_example")
    assert obj == "chair" and label == "chair" and picture
    glb, overlay, gif, report, downloads = client.predict(*fit_args(), api_name="/hoi_fit")
    scene = trimesh.load(glb, process=False)
    assert len(scene.geometry) == 2  # body and object
    assert sorted(p.rsplit("/", 1)[-1] for p in downloads) == ["combined.obj", "fit.glb", "fit.npz", "human.obj", "object.obj"]
    npz = np.load(next(p for p in downloads if p.endswith("fit.npz")), allow_pickle=False)
    assert npz["R"].shape == (3, 3) and np.isfinite(npz["t"]).all() and npz["K"].shape == (3, 3)
    assert len(npz["loss_total"]) == 8 and "loss_contact" in npz.files
    assert "example: ground-truth proximity" in bytes(npz["sources_json"]).decode()
    assert "silhouette only (no contacts)" in report
    runs = list_runs(studio_server.studio.store, kind="hoi")
    methods = {run.method for run in runs[:2]}
    assert any(m.startswith("baseline: silhouette only") for m in methods)
    assert len({run.group_key for run in runs[:2]}) == 1  # same image: a perceptual study can pair them
    assert runs[0].inputs["mask"].startswith("example: shipped mask")
    photo = (hoi.EXAMPLES / f"{EXAMPLE}.png").read_bytes()
    assert all(run.files["input.png"].read_bytes() == photo for run in runs[:2])
    # the pair as a study item: each side's overlay, the input photo as the reference image
    from annotations.studies_sources import items_from_runs

    ours, baseline = sorted(runs[:2], key=lambda run: run.method.startswith("baseline"))
    item = next(item for item in items_from_runs(studio_server.studio.store, "hoi", ours.method, baseline.method)
                if item.source["group_key"] == ours.group_key)
    assert item.source["runs"] == {"a": ours.id, "b": baseline.id}
    assert item.a.data == ours.files["overlay.png"].read_bytes() and item.b.data == baseline.files["overlay.png"].read_bytes()
    assert item.reference is not None and item.reference.data == photo


def test_refit_needs_a_first_fit_and_bad_input_is_worded(studio_server):
    client = Client(studio_server.url + "/", verbose=False)
    with pytest.raises(AppError, match="fit once first"):
        client.predict(*fit_args(), api_name="/hoi_refit")
    with pytest.raises(AppError, match="upload the image first"):
        client.predict(*fit_args(image=None), api_name="/hoi_fit")
    with pytest.raises(AppError, match="not installed") as missing:
        client.predict(*fit_args(mask_source=hoi.MASK_LABEL), api_name="/hoi_fit")
    assert "Grounding DINO" in str(missing.value) and "/tmp" not in str(missing.value)
    with pytest.raises(AppError, match="paint the object contact first"):
        client.predict(*fit_args(contact_source=hoi.CONTACT_PRIOR), api_name="/hoi_fit")
    with pytest.raises(AppError, match="draw the object"):
        client.predict(*fit_args(mask_source=hoi.MASK_DRAWN), api_name="/hoi_fit")
