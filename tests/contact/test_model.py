"""InteractVLM at tiny size: released-layout checkpoints, inference, caches, trainable set, bad input."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from engine.contact.checkpoint import (CLIP_FOLDER, check_quantisation, load_interactvlm, new_model, read_weights,
                                       released_to_ours, save_released, write_weights)
from engine.contact.lora import apply_lora, merged_state_dict
from engine.contact.model import set_trainable
from engine.contact.predict import CategoryPriorPredictor, InteractVLMPredictor, load_predictor
from engine.contact.sam import CheckpointMismatch
from engine.errors import InputError, MissingAssetError
from release_layout import ScriptedAnswer


def _image(seed: int = 0, shape=(90, 60, 3)) -> np.ndarray:
    return (np.random.default_rng(seed).random(shape) * 255).astype(np.uint8)


def _save_variant(root, preset: str, *, lora_seed: int | None = None):
    model, tokenizer = new_model(preset, seed=1)
    if lora_seed is not None:  # adapters with non-zero B, so that merging really changes the weights
        apply_lora(model)
        generator = torch.Generator().manual_seed(lora_seed)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "lora_B" in name:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    variant = preset.removeprefix("tiny-")
    save_released(model, tokenizer, root / "interactvlm" / variant, dtype="fp32", clip_folder=root / CLIP_FOLDER)
    return model, tokenizer


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory, open_body):
    root = tmp_path_factory.mktemp("models")
    _save_variant(root, "tiny-hcontact")
    _save_variant(root, "tiny-oafford")
    return root


@pytest.fixture(scope="module")
def human_predictor(tiny_models, open_body):
    return load_predictor(tiny_models, "hcontact", dtype="fp32", body=open_body)


RELEASED_NAMES = ("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight",
                  "model.norm.weight", "lm_head.weight", "model.mm_projector.weight", "model.mm_projector.bias",
                  "model.text_hidden_fcs.0.0.weight", "model.text_hidden_fcs.0.2.bias",
                  "cam_pose_encoder.spatial_encoder.0.weight", "cam_pose_encoder.spatial_encoder.2.bias",
                  "cam_pose_encoder.view_transforms.3.weight",
                  "model.visual_model.image_encoder.patch_embed.proj.weight",
                  "model.visual_model.prompt_encoder.no_mask_embed.weight")


@pytest.mark.parametrize("preset, token_type", [("tiny-hcontact", "Gen"), ("tiny-oafford", "Gen"), ("tiny-joint", "Gen-Hu-Obj")])
def test_every_released_layout_round_trips(tmp_path, preset, token_type):
    model, _ = _save_variant(tmp_path, preset, lora_seed=3)
    folder = tmp_path / "interactvlm" / preset.removeprefix("tiny-")
    released = read_weights(folder)
    assert set(RELEASED_NAMES) <= set(released)
    assert "model.visual_model.mask_decoder.iou_token.weight" in released  # one decoder, also for the joint model
    assert not [name for name in released if "human_mask_decoder" in name or "object_mask_decoder" in name]
    assert ("attention_splitter.key.bias" in released) == (token_type == "Gen-Hu-Obj")
    assert not [name for name in released if "vision_tower" in name or "lora" in name or "base_layer" in name]
    config = json.loads((folder / "config.json").read_text())
    assert config["token_type"] == token_type and config["multiview_cam_cond"] is True

    loaded = load_interactvlm(folder, tmp_path / CLIP_FOLDER, dtype="fp32")
    expected = merged_state_dict(model)
    state = loaded.model.state_dict()
    assert set(state) == set(expected)
    assert all(torch.equal(state[name], expected[name]) for name in expected)


def test_merged_lora_gives_the_adapted_outputs(tmp_path):
    model, tokenizer = _save_variant(tmp_path, "tiny-hcontact", lora_seed=5)
    loaded = load_interactvlm(tmp_path / "interactvlm" / "hcontact", tmp_path / CLIP_FOLDER, dtype="fp32")
    ids = torch.tensor([[1, 5, 9, 14, 30, 2]])
    model.eval()
    with torch.no_grad():
        adapted = model.vlm.language_model(input_ids=ids).logits
        merged = loaded.model.vlm.language_model(input_ids=ids).logits
        plain, _ = new_model("tiny-hcontact", seed=1)
        base = plain.vlm.language_model(input_ids=ids).logits
    assert torch.allclose(adapted, merged, atol=1e-5)
    assert not torch.allclose(base, merged, atol=1e-3)  # the adapters did change something


def _rewrite(folder, change):
    state = read_weights(folder)
    change(state)
    for shard in folder.glob("pytorch_model*"):
        shard.unlink()
    write_weights(state, folder)


def test_unknown_and_missing_keys_are_reported_by_name(tmp_path):
    _save_variant(tmp_path, "tiny-hcontact")
    folder = tmp_path / "interactvlm" / "hcontact"
    _rewrite(folder, lambda state: state.update({"model.extra_head.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointMismatch) as error:
        load_interactvlm(folder, tmp_path / CLIP_FOLDER, dtype="fp32")
    assert error.value.unexpected == ("model.extra_head.weight",) and not error.value.missing

    _rewrite(folder, lambda state: [state.pop("model.extra_head.weight"), state.pop("cam_pose_encoder.view_transforms.2.bias")])
    with pytest.raises(CheckpointMismatch) as error:
        load_interactvlm(folder, tmp_path / CLIP_FOLDER, dtype="fp32")
    assert error.value.missing == ("cam_pose_encoder.view_transforms.2.bias",)
    assert "cam_pose_encoder.view_transforms.2.bias" in str(error.value)


def test_sam_keys_convert_under_the_visual_model_prefix():
    model, _ = new_model("tiny-joint")
    from engine.contact.checkpoint import ours_to_released

    released = ours_to_released(model.state_dict())
    ours, unexpected = released_to_ours(released, model.config.decoders)
    assert unexpected == ()
    assert set(ours) == {name for name in model.state_dict() if not name.startswith("vlm.vision_tower.")}


@pytest.fixture
def answers_with_seg(human_predictor):
    """The untrained model's answers end in its contact token (the masks stay the model's own)."""
    script = ScriptedAnswer(human_predictor.model, [human_predictor.token_ids["[SEG]"]])
    yield
    script.remove()


def test_tiny_inference_is_deterministic_and_well_formed(tiny_models, open_body, human_predictor, answers_with_seg):
    first = human_predictor.predict_human_contact(_image(), "Chairs")
    fresh = load_predictor(tiny_models, "hcontact", dtype="fp32", body=open_body)
    script = ScriptedAnswer(fresh.model, [fresh.token_ids["[SEG]"]])
    again = fresh.predict_human_contact(_image(), "chair")
    script.remove()
    assert isinstance(human_predictor, InteractVLMPredictor)
    assert first.object_label == "chair" and first.topology == "openbody-v1" and first.source == "hcontact"
    assert not first.is_baseline and first.smplx_probabilities is None
    assert first.probabilities.shape == (open_body.num_vertices,) and first.probabilities.dtype == np.float32
    assert 0 <= first.probabilities.min() and first.probabilities.max() <= 1
    assert first.view_masks.shape == (4, 128, 128) and first.token_emitted
    assert np.array_equal(first.probabilities, again.probabilities) and first.answer == again.answer
    assert not first.probabilities.flags.writeable
    other = human_predictor.predict_human_contact(_image(seed=7), "chair")
    assert not np.array_equal(first.probabilities, other.probabilities)  # the image matters


def test_cached_and_uncached_body_embeddings_agree(tiny_models, open_body, human_predictor, answers_with_seg):
    cached = human_predictor.predict_human_contact(_image(), "cup")
    uncached_predictor = load_predictor(tiny_models, "hcontact", dtype="fp32", body=open_body)
    uncached_predictor.cache_body = False
    script = ScriptedAnswer(uncached_predictor.model, [uncached_predictor.token_ids["[SEG]"]])
    uncached = uncached_predictor.predict_human_contact(_image(), "cup")
    script.remove()
    assert cached.token_emitted and uncached.token_emitted
    assert np.array_equal(cached.probabilities, uncached.probabilities)
    assert np.array_equal(cached.view_masks, uncached.view_masks)


def test_batch_matches_single_requests(human_predictor):
    seg = human_predictor.token_ids["[SEG]"]
    requests = [(_image(1), "chair"), (_image(2, (40, 120, 3)), None), (_image(3), "bicycle")]
    script = ScriptedAnswer(human_predictor.model, [seg])
    batch = human_predictor.predict_human_contact_batch(requests)
    script.remove()
    singles = []
    for image, label in requests:
        script = ScriptedAnswer(human_predictor.model, [seg])
        singles.append(human_predictor.predict_human_contact(image, label))
        script.remove()
    assert all(result.token_emitted for result in batch + singles)
    assert [result.object_label for result in batch] == ["chair", None, "bicycle"]
    for together, alone in zip(batch, singles):
        assert np.allclose(together.probabilities, alone.probabilities, atol=1e-4)


def test_object_affordance_on_points_and_mesh(tiny_models, open_body):
    predictor = load_predictor(tiny_models, "oafford", dtype="fp32", body=open_body)
    points = np.random.default_rng(0).normal(size=(2048, 3)).astype(np.float32)
    result = predictor.predict_object_affordance(_image(), points, object_label="mug", affordance="wrap grasp")
    assert result.kind == "points" and result.values.shape == (2048,) and result.affordance == "wrapgrasp"
    assert 0 <= result.values.min() and result.values.max() <= 1 and result.view_masks.shape == (4, 128, 128)
    again = predictor.predict_object_affordance(_image(), points, object_label="mug", affordance="wrapgrasp")
    assert np.array_equal(result.values, again.values) and len(predictor._objects) == 1  # encoded once
    import trimesh

    box = trimesh.creation.box()
    mesh = predictor.predict_object_affordance(_image(), box.vertices, box.faces, object_label="table")
    assert mesh.kind == "mesh" and mesh.values.shape == (len(box.vertices),)
    with pytest.raises(InputError, match="human contact"):
        load_predictor(tiny_models, "oafford", dtype="fp32", body=open_body).predict_human_contact(_image(), "cup")


def test_released_trainable_set(open_body):
    model, _ = new_model("tiny-joint")
    apply_lora(model)
    names = set_trainable(model)
    layers = model.config.language.layers
    lora = {name for name in names if "lora_" in name}
    assert len(lora) == layers * 2 * 2  # q_proj and v_proj, A and B, every layer
    assert all(".q_proj." in name or ".v_proj." in name for name in lora)
    assert all(name.startswith("vlm.language_model.") for name in lora)
    rest = names - lora if isinstance(names, set) else set(names) - lora
    groups = {name.split(".")[0] if not name.startswith(("vlm.", "sam.")) else ".".join(name.split(".")[:3]) for name in rest}
    assert groups == {"text_hidden_fcs", "cam_pose_encoder", "attention_splitter", "vlm.language_model.lm_head",
                      "vlm.language_model.model", "sam.mask_decoders.mask_decoder"}
    assert {name for name in rest if name.startswith("vlm.language_model.model")} == {
        "vlm.language_model.model.embed_tokens.weight"}
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    assert any(name.startswith("vlm.vision_tower.") for name in frozen)
    assert "vlm.mm_projector.weight" in frozen
    assert any(name.startswith("sam.image_encoder.") for name in frozen)
    assert any(name.startswith("sam.prompt_encoder.") for name in frozen)


def test_without_a_checkpoint_the_prior_is_used_and_labelled(tmp_path, open_body):
    predictor = load_predictor(tmp_path, "hcontact", body=open_body)
    assert isinstance(predictor, CategoryPriorPredictor)
    result = predictor.predict_human_contact(_image(), "bicycle")
    assert result.is_baseline and result.source == "baseline: category prior"
    assert {"left_hand", "right_hand", "hips"} <= set(result.parts)
    with pytest.raises(MissingAssetError, match="oafford"):
        load_predictor(tmp_path, "oafford", body=open_body)
    with pytest.raises(InputError, match="object label"):
        predictor.predict_human_contact(_image(), None)


def test_quantisation_needs_bitsandbytes():
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        with pytest.raises(InputError, match="bitsandbytes"):
            check_quantisation(8)
    with pytest.raises(InputError, match="4 or 8"):
        check_quantisation(3)


def _png_header_only(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("image, label, message", [
    (b"not an image at all", "chair", "decode"),
    ("text instead of pixels", "chair", "not found"),
    (_image(), "chiar", "chair"),
    (_image(), "<b>chair</b>", "not accepted"),
    (np.full((20, 20, 3), np.nan), "chair", "NaN"),
])
def test_bad_requests_get_clear_errors(human_predictor, image, label, message):
    with pytest.raises(InputError, match=message):
        human_predictor.predict_human_contact(image, label)


def test_oversized_image_is_refused_before_decoding(human_predictor):
    with pytest.raises(InputError, match="pixels"):
        human_predictor.predict_human_contact(_png_header_only(9000, 9000), "chair")


def test_degenerate_objects_are_refused(tiny_models, open_body):
    predictor = load_predictor(tiny_models, "oafford", dtype="fp32", body=open_body)
    with pytest.raises(InputError):
        predictor.predict_object_affordance(_image(), np.zeros((0, 3)), object_label="mug")
    with pytest.raises(InputError):
        predictor.predict_object_affordance(_image(), np.full((10, 3), np.nan), object_label="mug")
    with pytest.raises(InputError):
        predictor.predict_object_affordance(_image(), np.eye(3), np.array([[0, 1, 7]]), object_label="mug")


def test_the_shared_engine_serves_the_models(tiny_models, tmp_path):
    from engine.contact.predict import human_contact_model, register_contact_models
    from engine.runtime import Engine, EngineConfig

    engine = Engine(EngineConfig(models_dir=tiny_models, device="cpu"))
    register_contact_models(engine)
    assert human_contact_model(engine) == "interactvlm-hcontact"
    available = {entry.name: entry.available for entry in engine.status().models}
    assert available == {"interactvlm-hcontact": True, "interactvlm-oafford": True, "interactvlm-joint": False,
                         "category-prior": True}
    predictor = engine.get("interactvlm-hcontact")
    assert isinstance(predictor, InteractVLMPredictor) and engine.get("interactvlm-hcontact") is predictor
    assert engine.memory_used() == predictor.memory_bytes() > 0
    with pytest.raises(MissingAssetError, match="joint"):
        engine.get("interactvlm-joint")

    empty = Engine(EngineConfig(models_dir=tmp_path, device="cpu"))
    register_contact_models(empty)
    assert human_contact_model(empty) == "category-prior"
    assert isinstance(empty.get("category-prior"), CategoryPriorPredictor)


def test_quantising_off_cuda_is_refused(tiny_models, open_body):
    from engine.contact.quantise import quantise_language_model

    predictor = load_predictor(tiny_models, "hcontact", dtype="fp32", body=open_body)
    with pytest.raises(InputError, match="CUDA"):
        quantise_language_model(predictor.model, 8)


def test_sharded_folders_load_and_an_escaping_index_is_refused(tmp_path):
    model, _ = _save_variant(tmp_path, "tiny-hcontact")
    folder = tmp_path / "interactvlm" / "hcontact"
    state = read_weights(folder)
    for shard in folder.glob("pytorch_model*"):
        shard.unlink()
    write_weights(state, folder, shard_bytes=64 * 1024)
    index = json.loads((folder / "pytorch_model.bin.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 3
    loaded = read_weights(folder)
    assert set(loaded) == set(state) and all(torch.equal(loaded[name], state[name]) for name in state)
    index["weight_map"]["lm_head.weight"] = "../../outside.bin"
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    with pytest.raises(InputError, match="leaves the folder"):
        read_weights(folder)
