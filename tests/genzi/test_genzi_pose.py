"""GenZI's 2D pose from ViTPose: tiny seeded ViTPose folders (transformers layout) whose heatmaps peak on a
known template, so every keypoint is checked against a hand-computed position; the big toes come from a
COCO-WholeBody (133-keypoint) model and are flagged as missing with a COCO-17 one."""
from __future__ import annotations

import numpy as np
import pytest

from engine.body.skeleton import BODY_JOINT_NAMES
from engine.errors import InputError
from engine.fitting.keypoints import COCO23_NAMES, keypoint_sites
from engine.fitting.vitpose import load_vitpose
from engine.genzi import lifting
from tiny_models import template_keypoints, write_template_vitpose

BOX = (30.0, 20.0, 110.0, 190.0)
at = BODY_JOINT_NAMES.index


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 256, (200, 160, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def coco17_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("vitpose17")
    return load_vitpose(_write(root, 17)), _TOKENS[17]


@pytest.fixture(scope="module")
def wholebody_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("vitpose133")
    return load_vitpose(_write(root, 133)), _TOKENS[133]


_TOKENS: dict[int, np.ndarray] = {}


def _write(root, labels: int):
    _TOKENS[labels] = write_template_vitpose(root / "vitpose", num_labels=labels)
    return root


def test_coco17_vitpose_finds_the_template_and_genzi_flags_the_missing_toes(coco17_model, image):
    estimator, tokens = coco17_model
    assert estimator.keypoint_layout == "coco17"
    found = estimator(image, box=BOX)
    expected, pixel = template_keypoints(tokens, BOX)
    assert found.layout == "coco17" and pixel > 1.0
    np.testing.assert_allclose(found.xy, expected, atol=0.01)  # the heatmap peaks, decoded and mapped to the image
    np.testing.assert_allclose(found.confidence, 0.9, atol=1e-4)
    mapped = lifting.genzi_keypoints(found)
    np.testing.assert_allclose(mapped.xy[at("pelvis")], expected[11:13].mean(0), atol=0.01)  # mid-hips
    assert mapped.confidence[at("left_foot")] == 0 and mapped.confidence[at("right_foot")] == 0
    assert lifting.accepted(mapped)  # 15 of 17
    sources = lifting.joint_sources("coco17")
    assert sources["left_foot"].startswith("missing") and "big-toe" in sources["right_foot"]
    assert sources["neck"] == "derived: midpoint of left_shoulder and right_shoulder"
    assert sources["left_wrist"] == "ViTPose left_wrist" and len(sources) == 17


def test_wholebody_vitpose_gives_the_big_toes(wholebody_model, image):
    estimator, tokens = wholebody_model
    assert estimator.keypoint_layout == "coco23"
    body_only = estimator(image, box=BOX)  # the default stays COCO-17 (what HOI fitting reads)
    assert body_only.layout == "coco17" and len(body_only.xy) == 17
    found = estimator(image, box=BOX, layout="coco23")
    expected, _ = template_keypoints(tokens[:23], BOX)
    assert found.layout == "coco23" and found.names == COCO23_NAMES
    np.testing.assert_allclose(found.xy, expected, atol=0.01)
    mapped = lifting.genzi_keypoints(found)
    np.testing.assert_allclose(mapped.xy[at("left_foot")], expected[COCO23_NAMES.index("left_big_toe")], atol=0.01)
    np.testing.assert_allclose(mapped.xy[at("right_foot")], expected[COCO23_NAMES.index("right_big_toe")], atol=0.01)
    assert int((mapped.confidence[list(lifting.GENZI_JOINT_IDS)] >= 0.25).sum()) == 17
    assert lifting.joint_sources("coco23")["left_foot"] == "ViTPose left_big_toe"


def test_bad_layouts_and_keypoint_counts_are_refused(coco17_model, image, tmp_path):
    import transformers

    estimator, _ = coco17_model
    with pytest.raises(InputError, match="COCO-WholeBody"):
        estimator(image, box=BOX, layout="coco23")
    with pytest.raises(InputError, match="coco17 or coco23"):
        estimator(image, box=BOX, layout="halpe26")
    backbone = transformers.VitPoseBackboneConfig(image_size=[64, 48], patch_size=[16, 16], hidden_size=8,
                                                  num_hidden_layers=1, num_attention_heads=2, out_indices=[1])
    transformers.VitPoseForPoseEstimation(transformers.VitPoseConfig(backbone_config=backbone, num_labels=26)) \
        .save_pretrained(tmp_path / "vitpose")
    from engine.fitting.vitpose import _processor_class
    _processor_class()(size={"height": 64, "width": 48}).save_pretrained(tmp_path / "vitpose")
    with pytest.raises(InputError, match="predicts 26 keypoints"):
        load_vitpose(tmp_path)
    with pytest.raises(InputError, match="coco17 or coco23"):
        lifting.joint_sources("body22")


def test_coco23_sites_fit_the_big_toes_on_the_foot_joints_and_ignore_small_toes_and_heels(open_body):
    sites = keypoint_sites("coco23", open_body.topology, open_body.v_template.numpy())
    for name, joint, weight in (("left_big_toe", "left_foot", 1.0), ("right_big_toe", "right_foot", 1.0),
                                ("left_heel", "left_foot", 0.0), ("right_small_toe", "right_foot", 0.0)):
        index = COCO23_NAMES.index(name)
        assert sites.joint[index] == at(joint) and sites.weight[index] == weight
    assert sites.weight[COCO23_NAMES.index("left_hip")] == pytest.approx(0.5)  # COCO-17 part unchanged
