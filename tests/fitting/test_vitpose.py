"""ViTPose loader: a tiny seeded VitPoseForPoseEstimation saved with save_pretrained (the release layout)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.errors import InputError, MissingAssetError
from engine.fitting.vitpose import VITPOSE_FILES, VitPoseEstimator, load_vitpose, person_box

transformers = pytest.importorskip("transformers")

INPUT_H, INPUT_W = 64, 48


@pytest.fixture(scope="module")
def vitpose_models(tmp_path_factory):
    from engine.fitting.vitpose import _processor_class

    torch.manual_seed(0)
    backbone = transformers.VitPoseBackboneConfig(image_size=[INPUT_H, INPUT_W], patch_size=[16, 16], hidden_size=32,
                                                  num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                                                  out_indices=[2])
    model = transformers.VitPoseForPoseEstimation(transformers.VitPoseConfig(backbone_config=backbone, num_labels=17))
    root = tmp_path_factory.mktemp("models")
    model.save_pretrained(root / "vitpose")
    _processor_class()(size={"height": INPUT_H, "width": INPUT_W}).save_pretrained(root / "vitpose")
    return root


@pytest.fixture(scope="module")
def image():
    return (np.random.RandomState(0).rand(120, 100, 3) * 255).astype(np.uint8)


def test_release_layout_is_what_we_expect(vitpose_models):
    assert sorted(p.name for p in (vitpose_models / "vitpose").iterdir()) == sorted(VITPOSE_FILES)


def _box_transform(box) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corner and size of the region the heatmap spans: the box padded by 1.25 to the input's aspect."""
    x0, y0, x1, y1 = box
    width, height = x1 - x0, y1 - y0
    centre = np.array([x0 + width / 2, y0 + height / 2])
    aspect = INPUT_W / INPUT_H
    if width > aspect * height:
        height = width / aspect
    else:
        width = height * aspect
    size = np.array([width, height]) * 1.25
    return centre - size / 2, size


def _cell(box, heatmap_shape) -> np.ndarray:
    rows, cols = heatmap_shape
    return _box_transform(box)[1] / np.array([cols - 1, rows - 1])


def test_model_keypoints_are_the_heatmap_peaks_decoded(vitpose_models, image):
    estimator = load_vitpose(vitpose_models)
    box = (10.0, 5.0, 90.0, 115.0)
    keypoints = estimator(image, box=box)
    heatmaps, _ = estimator.heatmaps(image, box)
    maps = heatmaps[0].numpy()
    flat = maps.reshape(17, -1)
    peak = flat.argmax(1)
    cols = maps.shape[2]
    corner, _ = _box_transform(box)
    argmax_xy = np.stack([peak % cols, peak // cols], 1) * _cell(box, maps.shape[1:]) + corner
    assert keypoints.layout == "coco17" and keypoints.xy.shape == (17, 2) and keypoints.box == box
    np.testing.assert_allclose(keypoints.confidence, np.clip(flat.max(1), 0, 1), atol=1e-6)
    # DARK refinement moves a peak by a fraction of a cell, up to ~2 cells on an untrained model's rough maps
    assert np.abs(keypoints.xy - argmax_xy).max() < 2 * _cell(box, maps.shape[1:]).max()


def test_decoding_recovers_subpixel_gaussian_centres(vitpose_models):
    """Heatmaps that are exact Gaussians: the decoded points are their centres mapped through the box."""
    estimator = load_vitpose(vitpose_models)
    rows, cols = 16, 12
    rng = np.random.RandomState(1)
    centres = np.stack([rng.uniform(3, cols - 4, 17), rng.uniform(3, rows - 4, 17)], 1)
    yy, xx = np.mgrid[0:rows, 0:cols]
    maps = np.exp(-((xx[None] - centres[:, 0, None, None]) ** 2 + (yy[None] - centres[:, 1, None, None]) ** 2) / (2 * 1.5 ** 2))
    maps *= np.linspace(0.3, 0.9, 17)[:, None, None]
    box = (20.0, 10.0, 80.0, 110.0)
    xy, confidence = estimator.decode(torch.as_tensor(maps[None], dtype=torch.float32), box)
    corner, _ = _box_transform(box)
    cell = _cell(box, (rows, cols))
    np.testing.assert_allclose(xy, centres * cell + corner, atol=0.15 * cell.max())
    np.testing.assert_allclose(confidence, maps.reshape(17, -1).max(1), atol=1e-6)


def test_mask_and_whole_image_boxes(vitpose_models, image):
    estimator = load_vitpose(vitpose_models)
    mask = np.zeros(image.shape[:2], bool)
    mask[20:100, 30:70] = True
    assert person_box(image.shape[:2], mask=mask) == (30.0, 20.0, 70.0, 100.0)
    assert estimator(image, mask=mask).box == (30.0, 20.0, 70.0, 100.0)
    assert estimator(image).box == (0.0, 0.0, 100.0, 120.0)
    assert person_box((120, 100), box=(-5, -5, 500, 60)) == (0.0, 0.0, 100.0, 60.0)


@pytest.mark.parametrize("kwargs, message", [
    ({"box": (50, 50, 50, 90)}, "no area"),
    ({"box": (1, 2, 3)}, "4 finite numbers"),
    ({"box": (0, 0, float("nan"), 10)}, "4 finite numbers"),
    ({"mask": np.zeros((120, 100), bool)}, "empty"),
    ({"mask": np.ones((60, 50), bool)}, "the image is"),
])
def test_bad_boxes_and_masks(vitpose_models, image, kwargs, message):
    with pytest.raises(InputError, match=message):
        load_vitpose(vitpose_models)(image, **kwargs)


@pytest.mark.parametrize("bad", [np.zeros((10, 10, 5), np.uint8), np.zeros((1, 1, 3), np.uint8),
                                 np.full((10, 10, 3), np.nan), np.full((10, 10, 3), 300.0)])
def test_bad_images(vitpose_models, bad):
    with pytest.raises(InputError):
        load_vitpose(vitpose_models)(bad)


def test_missing_folder_names_the_file(tmp_path):
    with pytest.raises(MissingAssetError) as error:
        load_vitpose(tmp_path)
    assert str(tmp_path / "vitpose" / "config.json") in str(error.value)


def test_a_model_with_other_keypoints_is_refused(tmp_path):
    backbone = transformers.VitPoseBackboneConfig(image_size=[32, 32], patch_size=[16, 16], hidden_size=16,
                                                  num_hidden_layers=1, num_attention_heads=2, out_indices=[1])
    model = transformers.VitPoseForPoseEstimation(transformers.VitPoseConfig(backbone_config=backbone, num_labels=26))
    with pytest.raises(InputError, match="COCO-17"):  # Halpe-26 (AlphaPose's) is not read; 17 and 133 are
        VitPoseEstimator(model, processor=None)
    wholebody = transformers.VitPoseForPoseEstimation(transformers.VitPoseConfig(backbone_config=backbone, num_labels=133))
    assert VitPoseEstimator(wholebody, processor=None).keypoint_layout == "coco23"


def test_vitpose_keypoints_feed_the_fit(vitpose_models, image, open_body):
    """ViTPose -> fit wiring on a photo camera (the untrained model's keypoints are arbitrary, the plumbing is not)."""
    import dataclasses

    from engine.fitting.fit import DEFAULT_STAGES, FitConfig, fit_body, photo_camera

    keypoints = load_vitpose(vitpose_models)(image)
    config = FitConfig(stages=(dataclasses.replace(DEFAULT_STAGES[0], iterations=3),), orientation_hypotheses=1)
    fit = fit_body(open_body, keypoints, photo_camera(keypoints.image_size), config=config)
    assert fit.layout == "coco17" and fit.projected.shape == (1, 17, 2) and np.isfinite(fit.vertices).all()
