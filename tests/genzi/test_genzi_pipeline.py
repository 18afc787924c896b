"""The GenZI pipeline end to end on CPU with tiny seeded models in the released layouts, and the CLI's
answers to bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest

from engine.body.skeleton import BODY_JOINT_NAMES
from engine.errors import InputError
from engine.fitting.keypoints import Keypoints2D
from engine.fitting.vitpose import person_box
from engine.genzi import generate, inpaint, lifting, views
from engine.genzi.pipeline import GenziConfig, GenziPipeline
from engine.genzi.scenes import BUILTIN_POINTS, builtin_scene
from tiny_models import template_keypoints, write_template_vitpose


@pytest.mark.slow
def test_end_to_end_prompt_to_metrics(genzi_models, clip_folder, tiny_pipe, tmp_path):
    """Prompt -> views -> inpaintings -> masks -> keypoints -> lifted bodies -> metrics, with a whole-body
    ViTPose whose heatmaps put an upright person facing the camera into each mask's box: every view's
    keypoints are checked against the hand-computed template in that box, and the lifted bodies against it."""
    tokens = write_template_vitpose(genzi_models / "vitpose", num_labels=133)
    config = GenziConfig(inpaint=inpaint.InpaintConfig(steps=2, image_size=128, batch_size=4, negative=("blurry",)),
                         views=views.ViewConfig(max_views=4), lift=lifting.LiftConfig(phase_iterations=40),
                         inpaints_per_view=(2, 1), sdf_dim=16)
    pipeline = generate.build_pipeline(genzi_models, "cpu", config)
    assert pipeline.keypoint_layout == "coco23"
    scene = builtin_scene("bedroom")
    stages = []
    output = pipeline(scene, "lying on the bed", BUILTIN_POINTS["bedroom"], progress=lambda f, text: stages.append(text))
    assert [text for text in stages if text[0].isdigit()] == ["1. views", "2. inpainting (dynamic masks)",
                                                            "3. 2D pose, 4. lifting", "5. refinement", "6. metrics"]
    assert output.renders.shape == (4, 128, 128, 3)
    assert output.inpaintings[0].images.shape == (8, 128, 128, 3) and output.inpaintings[0].attention.shape[0] == 1
    assert len(output.inpaintings) == 2  # one stage-0 body of two kept, refined with fixed masks
    genzi = list(lifting.GENZI_JOINT_IDS)
    for stage, per_stage in enumerate(output.keypoints):
        result = output.inpaintings[stage]
        for index, per_view in enumerate(per_stage):
            for view, found in enumerate(per_view):
                box = person_box((128, 128), mask=result.masks[index * len(per_view) + view])
                xy, _ = template_keypoints(tokens[:23], box)
                expected = lifting.genzi_keypoints(Keypoints2D(xy=xy, confidence=np.full(23, 0.9), image_size=(128, 128),
                                                               layout="coco23"))
                assert found is not None  # 17 of 17 joints at 0.9, big toes included
                np.testing.assert_allclose(found.xy[genzi], expected.xy[genzi], atol=0.01)
                np.testing.assert_allclose(found.confidence[genzi], 0.9, atol=1e-4)
    assert output.joint_sources["left_foot"] == "ViTPose left_big_toe"
    assert output.joint_sources["pelvis"].startswith("derived")
    assert [body.stage for body in output.bodies] == [0, 0, 1]
    at = lambda name: BODY_JOINT_NAMES.index(name)
    for body in output.bodies:
        fit = body.fit
        assert np.isfinite(fit.vertices).all() and -1 <= body.clip <= 1
        assert 0 <= body.non_collision <= 1 and body.contact in (0.0, 1.0)
        # every view shows an upright person facing the camera: the body stands, head over pelvis over feet,
        # and its joints move onto the keypoints (the 2D error falls)
        joints = fit.joints
        assert joints[at("head"), 1] > joints[at("pelvis"), 1] + 0.3 > joints[at("left_foot"), 1] + 0.3
        # (measured: stage 0 falls from 0.047 to 0.020; stage 1 starts from its stage-0 body)
        reprojection = [history.terms["reprojection"] for history in fit.history]
        assert reprojection[-1][-1] < (0.5 if body.stage == 0 else 1.0) * reprojection[0][0]
    assert output.metrics.clip == tuple(body.clip for body in output.bodies)
    generate.save_output(output, tmp_path / "run", pipeline.body.faces.numpy())
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["prompt"] == "lying on the bed" and len(saved["clip"]) == 3
    assert json.loads((tmp_path / "run" / "joints.json").read_text())["right_foot"] == "ViTPose right_big_toe"
    assert (tmp_path / "run" / "body00_stage0.obj").is_file() and (tmp_path / "run" / "mask0_000.png").is_file()


def _run_cli(capsys, *args) -> tuple[int, str]:
    code = generate.main(list(args))
    return code, capsys.readouterr().err


def test_cli_names_the_missing_model_folder(tmp_path, capsys):
    code, err = _run_cli(capsys, "--scene", "living_room", "--prompt", "sitting on the sofa", "--point", "0", "0.45",
                         "-1.35", "--out", str(tmp_path / "out"), "--models", str(tmp_path / "models"), "--device", "cpu")
    assert code == 2 and "Stable Diffusion 2 inpainting folder not found" in err and "sd2-inpainting" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("args, message", [
    (["--scene", "kitchen", "--prompt", "cooking", "--point", "0", "0", "0"], "unknown built-in scene 'kitchen'"),
    (["--scene", "living_room", "--prompt", "  ", "--point", "0", "0.45", "-1.35"], "the prompt is empty"),
    (["--scene", "living_room", "--prompt", "sitting", "--point", "0", "2.5", "-1.35"], "from the scene's surface"),
])
def test_cli_bad_input_is_answered_in_words(tmp_path, capsys, args, message):
    code, err = _run_cli(capsys, *args, "--out", str(tmp_path / "out"), "--models", str(tmp_path))
    assert code == 2 and message in err and "Traceback" not in err


def test_cli_degenerate_scene_file(tmp_path, capsys):
    path = tmp_path / "flat.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n")
    code, err = _run_cli(capsys, "--scene", str(path), "--prompt", "sitting", "--point", "0", "0", "0",
                         "--out", str(tmp_path / "out"))
    assert code == 2 and "zero area" in err and str(tmp_path) not in err


def test_long_prompt_is_refused_before_any_work(tiny_pipe):
    pipeline = GenziPipeline(tiny_pipe, None, None, None)
    with pytest.raises(InputError, match="would truncate"):
        pipeline(builtin_scene("bedroom"), "lying " * 80, BUILTIN_POINTS["bedroom"])
