"""Every user-controlled input of the HOI fit refused with a clear message; accepted formats read right."""
from __future__ import annotations

import io
import json
import pickle

import numpy as np
import pytest
import torch

from engine.body import load_body
from engine.errors import InputError
from engine.hoi.fit import NO_OVERLAP, FitConfig, fit_object
from engine.hoi.inputs import (Contacts, Intrinsics, check_contacts, check_mask, load_body_file, load_contacts_file,
                               load_mask_file)
from engine.hoi.synthetic import make_scene, render_mask
from engine.objects import ObjectGeometry, builtin_object

BODY = load_body("openbody")
load_model = lambda kind: BODY if kind == "openbody" else pytest.fail(f"unexpected body kind {kind}")


def npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def parameters(**overrides) -> dict:
    values = {"global_orient": np.array([np.pi, 0, 0]), "body_pose": np.zeros(63), "betas": np.zeros(2),
              "transl": np.array([0, 0, 3.0]), "model_type": np.array("openbody")}
    values.update(overrides)
    return values


def test_parameter_file_poses_the_body_in_the_camera_frame():
    body = load_body_file(npz(**parameters()), "body.npz", load_model)
    with torch.no_grad():
        expected = BODY(global_orient=torch.tensor([[np.pi, 0, 0]], dtype=torch.float32),
                        transl=torch.tensor([[0, 0, 3.0]])).vertices[0].numpy()
    np.testing.assert_allclose(body.vertices, expected, atol=1e-5)
    assert body.topology == "openbody-v1" and body.camera is None and "body.npz" in body.source


def test_json_and_camera_keys():
    content = {key: np.asarray(value).tolist() for key, value in parameters().items()}
    content.update(focal=[1000.0, 1100.0], principal_point=[320.0, 240.0])
    body = load_body_file(json.dumps(content).encode(), "body.json", load_model)
    assert body.camera == Intrinsics(1000.0, 1100.0, 320.0, 240.0)


def test_osx_bbox_convention():
    camera = Intrinsics.from_osx_bbox([100, 50, 192, 256])  # a box the size of OSX's crop: its own numbers
    assert (camera.fx, camera.fy, camera.cx, camera.cy) == (5000.0, 5000.0, 196.0, 178.0)


def test_cam_extrinsics_move_a_posed_mesh():
    vertices = BODY.vitruvian_vertices().numpy()
    body = load_body_file(npz(vertices=vertices, cam_R=np.diag([1.0, -1, -1]), cam_t=np.array([0, 0, 4.0])),
                          "mesh.npz", load_model)
    np.testing.assert_allclose(body.vertices, vertices * [1, -1, -1] + [0, 0, 4], atol=1e-5)


def test_pickle_with_plain_arrays_is_read_and_other_objects_are_refused():
    body = load_body_file(pickle.dumps(parameters()), "body.pkl", load_model)
    assert body.topology == "openbody-v1"

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(InputError, match="refusing to load it"):
        load_body_file(pickle.dumps({"global_orient": Evil()}), "body.pkl", load_model)


@pytest.mark.parametrize("content, message", [
    (parameters(global_orient=np.array([np.nan, 0, 0])), "global_orient contains NaN"),
    ({"body_pose": np.zeros(63), "betas": np.zeros(2)}, r"lacks the keys \['global_orient', 'transl'\]"),
    ({"vertices": np.zeros((1000, 3))}, "vertex count, got 1000"),
    ({"vertices": np.full((10614, 3), np.nan)}, "vertices contains NaN"),
    (parameters(model_type=np.array("robot")), "model_type must be one of"),
    (parameters(transl=np.array([0, 0, -3.0])), "behind the camera"),
    (parameters(cam_R=np.eye(3) * 2), "cam_R must be a rotation"),
])
def test_bad_body_files(content, message):
    with pytest.raises(InputError, match=message):
        load_body_file(npz(**content), "body.npz", load_model)


def test_bad_body_file_types_and_bytes():
    with pytest.raises(InputError, match="unknown body file type"):
        load_body_file(b"x", "body.exe", load_model)
    with pytest.raises(InputError, match="not a valid npz"):
        load_body_file(b"not a zip", "body.npz", load_model)
    with pytest.raises(InputError, match="not valid UTF-8 JSON"):
        load_body_file(b"{", "body.json", load_model)
    with pytest.raises(InputError, match="is empty"):
        load_body_file(b"", "body.json", load_model)


def test_masks():
    assert check_mask(np.eye(4, dtype=np.uint8) * 255, (4, 4)).sum() == 4
    with pytest.raises(InputError, match="the object mask is empty"):
        check_mask(np.zeros((4, 4)), (4, 4))
    with pytest.raises(InputError, match="mask is 5 x 4 pixels but the image is 4 x 4"):
        check_mask(np.ones((4, 5)), (4, 4))
    with pytest.raises(InputError, match="NaN"):
        check_mask(np.full((4, 4), np.nan), (4, 4))
    with pytest.raises(InputError, match="PNG/JPEG image or an .npy"):
        load_mask_file(b"garbage", (4, 4))


@pytest.fixture(scope="module")
def scene():
    return make_scene("sit-chair", azimuth=30.0, image_size=(64, 64))


def test_contacts_on_the_wrong_topology(scene):
    wrong = Contacts(np.ones(6890, np.float32), "smplh-6890", scene.contacts.object, "painted", "painted")
    with pytest.raises(InputError, match="human contacts are on smplh-6890 .* but the body is openbody-v1"):
        check_contacts(wrong, scene.body, len(builtin_object("chair").vertices))
    short = Contacts(scene.contacts.human, "openbody-v1", np.ones(10, np.float32), "painted", "painted")
    with pytest.raises(InputError, match="object contacts have 10 values but the object has"):
        check_contacts(short, scene.body, len(builtin_object("chair").vertices))
    with pytest.raises(InputError, match=r"probabilities in \[0, 1\]"):
        Contacts(scene.contacts.human * 2, "openbody-v1", scene.contacts.object, "painted", "painted")
    with pytest.raises(InputError, match="needs 'human' and 'object'"):
        load_contacts_file(npz(human=np.zeros(3)), human_topology="openbody-v1")


def test_object_without_faces(scene):
    cloud = ObjectGeometry("points.npy", "chair", builtin_object("chair").vertices)
    with pytest.raises(InputError, match="has no faces"):
        fit_object(scene.body, cloud, render_mask(scene), scene.contacts, camera=scene.camera)


def test_mask_not_overlapping_the_object_is_reported_and_nothing_diverges(scene):
    """The mask is the image's border: its centroid is the centre, where stage 2 puts the chair, which never
    reaches the border. The fit says so in words and stays finite."""
    mask = np.zeros(scene.image_size, dtype=bool)
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = True
    result = fit_object(scene.body, builtin_object("chair"), mask, scene.contacts,
                        FitConfig(iterations=15, frames=2), camera=scene.camera, init_R=scene.R)
    assert any(NO_OVERLAP in warning for warning in result.warnings)
    assert all(np.isfinite(values).all() for values in result.losses.values())
    assert np.isfinite(result.R).all() and np.isfinite(result.t).all()
