"""The GenZI pipeline end to end on CPU with tiny seeded models in the released layouts, and the CLI's
answers to bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.errors import InputError
from engine.genzi import generate, inpaint, lifting, views
from engine.genzi.pipeline import GenziConfig, GenziPipeline
from engine.genzi.scenes import BUILTIN_POINTS, builtin_scene


def _write_tiny_vitpose(folder):
    """A COCO-17 ViTPose whose heatmaps are a constant 0.9: every keypoint is found with confidence 0.9."""
    import transformers
    from engine.fitting.vitpose import _processor_class

    torch.manual_seed(0)
    backbone = transformers.VitPoseBackboneConfig(image_size=[64, 48], patch_size=[16, 16], hidden_size=32,
                                                  num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, out_indices=[2])
    model = transformers.VitPoseForPoseEstimation(transformers.VitPoseConfig(backbone_config=backbone, num_labels=17))
    with torch.no_grad():
        model.head.conv.weight.zero_()
        model.head.conv.bias.fill_(0.9)
    model.save_pretrained(folder)
    _processor_class()(size={"height": 64, "width": 48}).save_pretrained(folder)


@pytest.mark.slow
def test_end_to_end_prompt_to_metrics(genzi_models, clip_folder, tiny_pipe, tmp_path):
    _write_tiny_vitpose(genzi_models / "vitpose")
    config = GenziConfig(inpaint=inpaint.InpaintConfig(steps=2, image_size=128, batch_size=4, negative=("blurry",)),
                         views=views.ViewConfig(max_views=4), lift=lifting.LiftConfig(phase_iterations=2),
                         inpaints_per_view=(2, 1), sdf_dim=16)
    pipeline = generate.build_pipeline(genzi_models, "cpu", config)
    scene = builtin_scene("bedroom")
    stages = []
    output = pipeline(scene, "lying on the bed", BUILTIN_POINTS["bedroom"], progress=lambda f, text: stages.append(text))
    assert [text for text in stages if text[0].isdigit()] == ["1. views", "2. inpainting (dynamic masks)",
                                                            "3. 2D pose, 4. lifting", "5. refinement", "6. metrics"]
    assert output.renders.shape == (4, 128, 128, 3)
    assert output.inpaintings[0].images.shape == (8, 128, 128, 3) and output.inpaintings[0].attention.shape[0] == 1
    assert len(output.inpaintings) == 2  # one stage-0 body of two kept, refined with fixed masks
    assert all(view is not None for view in output.keypoints[0][0])  # confidence 0.9 everywhere: accepted
    assert [body.stage for body in output.bodies] == [0, 0, 1]
    for body in output.bodies:
        assert np.isfinite(body.fit.vertices).all() and -1 <= body.clip <= 1
        assert 0 <= body.non_collision <= 1 and body.contact in (0.0, 1.0)
    assert output.metrics.clip == tuple(body.clip for body in output.bodies)
    generate.save_output(output, tmp_path / "run", pipeline.body.faces.numpy())
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["prompt"] == "lying on the bed" and len(saved["clip"]) == 3
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
