"""InteractVLM as released: folder layout, loading, tokenisation, preprocessing and the predictor's numbers.

Folders are written in the release's layout (4.31 shards + index, rotary buffers, config.json fields, the
slow Llama tokenizer files around a SentencePiece model trained here) and checked against a plain
template of its key names (``release_layout``). The predictor's outputs are pinned against a plain-torch
statement of the pipeline: hidden states of a teacher-forced pass -> Γ -> Φ -> splitter -> SAM decode of
every view with all 4 tokens -> lift.
"""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from engine import rll
from engine.contact import prompts
from engine.contact.checkpoint import (CLIP_FOLDER, load_interactvlm, new_model, released_state, released_to_ours,
                                       save_released, split_rotary)
from engine.contact.config import get_config
from engine.contact.llama_tokenizer import ReleaseLlamaTokenizer
from engine.contact.lora import merged_state_dict
from engine.contact.model import InteractVLM
from engine.contact.predict import load_predictor
from engine.contact.sam import CheckpointMismatch
from engine.contact.vlm import IMAGE_TOKEN_INDEX, add_contact_tokens, clip_pixels, clip_processor, tokenize_with_image
from engine.errors import InputError
from release_layout import ScriptedAnswer, release_keys, train_sentencepiece

VARIANTS = ("hcontact", "oafford", "joint")
SP_SIZE = 600  # the trained SentencePiece model; added tokens follow it


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
    return train_sentencepiece(tmp_path_factory.mktemp("sp") / "tokenizer.model")


def fresh_tokenizer(sp_model, **options) -> ReleaseLlamaTokenizer:
    return ReleaseLlamaTokenizer(sp_model, **options)


@pytest.fixture(scope="module")
def release_root(tmp_path_factory, sp_model):
    """<root>/interactvlm/<variant>/ in the release's layout, several shards each, and the CLIP folder."""
    root = tmp_path_factory.mktemp("release")
    models = {}
    for seed, variant in enumerate(VARIANTS):
        model, tokenizer = new_model(f"tiny-{variant}", fresh_tokenizer(sp_model), seed=10 + seed)
        if variant == "joint":  # sharper attention than a default init, so that the two branches differ visibly
            with torch.no_grad():
                for name in ("query_human", "query_object", "key"):
                    getattr(model.attention_splitter, name).weight.mul_(40)
                for transform in model.cam_pose_encoder.view_transforms:  # views gated apart
                    transform.weight.mul_(20)
        save_released(model, tokenizer, root / "interactvlm" / variant, dtype="fp32", clip_folder=root / CLIP_FOLDER,
                      shard_bytes=150_000)
        models[variant] = model
    return root, models


def read_shards(folder):
    index = json.loads((folder / "pytorch_model.bin.index.json").read_text())
    state = {}
    for shard in sorted(set(index["weight_map"].values())):
        part = torch.load(folder / shard, weights_only=True)
        assert all(index["weight_map"][name] == shard for name in part)
        state.update(part)
    return index, state


# ---- layout ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
def test_folder_is_in_the_release_layout(release_root, variant):
    root, _ = release_root
    folder = root / "interactvlm" / variant
    index, state = read_shards(folder)
    shards = sorted(path.name for path in folder.glob("pytorch_model-*.bin"))
    assert len(shards) > 1 and shards == [f"pytorch_model-{k:05d}-of-{len(shards):05d}.bin" for k in range(1, len(shards) + 1)]
    assert {path.name for path in folder.iterdir()} == set(shards) | {
        "config.json", "generation_config.json", "pytorch_model.bin.index.json", "tokenizer.model",
        "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"}
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in state.values())
    assert set(state) == release_keys(layers=2, sam_depth=2, joint=variant == "joint")
    # tiny sizes: Llama hidden 64 / 4 heads -> head dim 16; SAM C = 48; splitter C/2 = 24
    expected_inv_freq = 1.0 / 10000 ** (torch.arange(0, 16, 2).float() / 16)
    for layer in range(2):
        assert torch.equal(state[f"model.layers.{layer}.self_attn.rotary_emb.inv_freq"], expected_inv_freq)
    assert state["model.text_hidden_fcs.0.2.weight"].shape == (48, 64)
    assert state["cam_pose_encoder.view_transforms.3.weight"].shape == (48, 32)
    if variant == "joint":
        assert state["attention_splitter.input_proj.weight"].shape == (24, 48)
        assert state["attention_splitter.output_proj.weight"].shape == (48, 24)
        assert not any("human_mask_decoder" in name or "object_mask_decoder" in name for name in state)


def test_config_and_tokenizer_files_hold_the_release_values(release_root):
    root, _ = release_root
    added = {"[SEG]": SP_SIZE, "<im_start>": SP_SIZE + 1, "<im_end>": SP_SIZE + 2}
    for variant in VARIANTS:
        folder = root / "interactvlm" / variant
        config = json.loads((folder / "config.json").read_text())
        joint = variant == "joint"
        tokens = {**added, "[HSEG]": SP_SIZE + 3, "[OSEG]": SP_SIZE + 4} if joint else added
        assert json.loads((folder / "added_tokens.json").read_text()) == tokens
        assert config["vocab_size"] == SP_SIZE + len(tokens)
        assert (config["model_type"], config["architectures"]) == ("llava", ["InteractVLMForCausalLM"])
        assert config["token_type"] == ("Gen-Hu-Obj" if joint else "Gen")
        assert (config["seg_token_idx"], config["hseg_token_idx"], config["oseg_token_idx"]) == \
            ((SP_SIZE, SP_SIZE + 3, SP_SIZE + 4) if joint else (SP_SIZE, None, None))
        assert (config["cam_encoder_type"], config["multiview_cam_cond"], config["multiview_channels"]) == ("vi_v1", True, 4)
        assert (config["img_emb_len"], config["out_dim"]) == (3, 48)  # tiny CLIP: 4 patches - 1; tiny SAM: 48
        assert config["hC_sam_view_type"] == ("4MV-Z_Vitru" if variant != "oafford" else None)
        assert config["oC_sam_view_type"] == ("4MV-Z_HM_BM" if variant != "hcontact" else None)
        assert (config["hC_loss_weight"] > 0, config["oC_loss_weight"] > 0) == \
            ("human" in get_config(variant).targets, "object" in get_config(variant).targets)
        assert json.loads((folder / "generation_config.json").read_text())["eos_token_id"] == 2
        tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
        assert tokenizer_config["tokenizer_class"] == "LlamaTokenizer" and tokenizer_config["add_bos_token"] is True


@pytest.mark.parametrize("variant", VARIANTS)
def test_release_folders_load_every_tensor(release_root, variant, tmp_path):
    root, models = release_root
    # the variant comes from config.json: a folder named as the release names it (or misleadingly) loads
    folder = tmp_path / ("interactvlm-3d-hcontact-damon" if variant != "hcontact" else "joint")
    shutil.copytree(root / "interactvlm" / variant, folder)
    loaded = load_interactvlm(folder, root / CLIP_FOLDER, dtype="fp32")
    assert loaded.model.config.name == variant and loaded.model.config.targets == get_config(variant).targets
    expected = merged_state_dict(models[variant])
    clip = merged_state_dict(models[VARIANTS[-1]])  # the shared CLIP folder was written last by the joint model
    expected.update({name: clip[name] for name in expected if name.startswith("vlm.vision_tower.")})
    state = loaded.model.state_dict()
    assert set(state) == set(expected)  # zero missing, zero unexpected
    assert all(torch.equal(state[name], expected[name]) for name in expected)  # every tensor reached the model
    assert isinstance(loaded.tokenizer, ReleaseLlamaTokenizer)
    assert loaded.token_ids == {token: loaded.tokenizer.convert_tokens_to_ids(token)
                                for token in loaded.model.config.seg_tokens}


@pytest.mark.parametrize("variant, count", [("hcontact", 1015), ("oafford", 1015), ("joint", 1027)])
def test_full_size_layout_on_the_meta_device(variant, count):
    config = get_config(variant, vocab_size=32005 if variant == "joint" else 32003)
    with torch.device("meta"):
        model = InteractVLM(config)
    ours = {name: t for name, t in model.state_dict().items() if not name.startswith("vlm.vision_tower.")}
    released = released_state(ours, config)
    assert len(released) == count and set(released) == release_keys(40, 32, variant == "joint")
    back, unexpected = released_to_ours(released, config.decoders)
    back, rotary = split_rotary(back)
    assert unexpected == () and len(rotary) == 40
    assert set(back) == set(ours) and all(back[name].shape == ours[name].shape for name in ours)
    assert released["model.embed_tokens.weight"].shape == (config.language.vocab_size, 5120)
    assert released["model.visual_model.image_encoder.blocks.31.attn.rel_pos_h"].shape == (127, 80)
    if variant == "joint":
        assert released["attention_splitter.query_object.weight"].shape == (128, 128)


def _rewrite_shard(folder, change):
    index = json.loads((folder / "pytorch_model.bin.index.json").read_text())
    shard = index["weight_map"]["model.layers.1.self_attn.rotary_emb.inv_freq"]
    state = torch.load(folder / shard, weights_only=True)
    change(state, index, shard)
    torch.save(state, folder / shard)
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index))


def test_rotary_mismatch_and_unknown_keys_are_reported_by_name(release_root, tmp_path):
    root, _ = release_root
    folder = tmp_path / "hcontact"
    shutil.copytree(root / "interactvlm" / "hcontact", folder)
    _rewrite_shard(folder, lambda state, index, shard: state["model.layers.1.self_attn.rotary_emb.inv_freq"].mul_(1.01))
    with pytest.raises(InputError, match=r"model\.layers\.1\.self_attn\.rotary_emb\.inv_freq"):
        load_interactvlm(folder, root / CLIP_FOLDER, dtype="fp32")
    shutil.rmtree(folder)
    shutil.copytree(root / "interactvlm" / "hcontact", folder)

    def add_unknown(state, index, shard):
        state["model.extra_head.weight"] = torch.zeros(2)
        state["model.layers.7.self_attn.rotary_emb.inv_freq"] = torch.zeros(8)  # a layer the model lacks
        index["weight_map"].update(dict.fromkeys(("model.extra_head.weight",
                                                   "model.layers.7.self_attn.rotary_emb.inv_freq"), shard))
    _rewrite_shard(folder, add_unknown)
    with pytest.raises(CheckpointMismatch) as error:
        load_interactvlm(folder, root / CLIP_FOLDER, dtype="fp32")
    assert set(error.value.unexpected) == {"model.extra_head.weight", "model.layers.7.self_attn.rotary_emb.inv_freq"}


def test_shards_are_read_weights_only(release_root, tmp_path):
    root, _ = release_root
    folder = tmp_path / "oafford"
    shutil.copytree(root / "interactvlm" / "oafford", folder)
    shard = sorted(folder.glob("pytorch_model-*.bin"))[0]
    state = torch.load(shard, weights_only=True)
    torch.save({**state, "evil": Image.new("RGB", (1, 1))}, shard)  # an arbitrary object in the pickle
    with pytest.raises(InputError, match="pickled Python objects"):
        load_interactvlm(folder, root / CLIP_FOLDER, dtype="fp32")


@pytest.mark.parametrize("field, value, message", [
    ("token_type", "Gen-Int", "token_type 'Gen-Int' is not supported"),
    ("cam_encoder_type", "simple", "cam_encoder_type is 'simple'"),
    ("use_fusion", True, "use_fusion is True"),
    ("seg_token_idx", 5, "seg_token_idx is 5 but the tokenizer"),
    ("img_emb_len", 255, "img_emb_len is 255"),
])
def test_configs_the_release_never_trained_are_refused(release_root, tmp_path, field, value, message):
    root, _ = release_root
    folder = tmp_path / "hcontact"
    shutil.copytree(root / "interactvlm" / "hcontact", folder)
    config = json.loads((folder / "config.json").read_text())
    config[field] = value
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match=message):
        load_interactvlm(folder, root / CLIP_FOLDER, dtype="fp32")


# ---- tokenisation ------------------------------------------------------------------------------------------
def test_tokenisation_follows_the_slow_431_llama_tokenizer(sp_model):
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(sp_model))
    tokenizer = fresh_tokenizer(sp_model)
    add_contact_tokens(tokenizer, get_config("tiny-joint"))
    seg, start, end, hseg, oseg = (tokenizer.convert_tokens_to_ids(t) for t in
                                   ("[SEG]", "<im_start>", "<im_end>", "[HSEG]", "[OSEG]"))
    assert (seg, start, end, hseg, oseg) == (600, 601, 602, 603, 604)  # LISA's three, then InteractVLM's two
    encode = lambda text: tokenizer(text, add_special_tokens=False).input_ids
    # added tokens strip the whitespace of their neighbours; every chunk gets SentencePiece's own prefix
    assert encode("USER: <im_start>") == sp.encode("USER:") + [start]
    assert encode("<im_end>\nWhich body") == [end] + sp.encode("Which body")
    assert encode("region is [HSEG].") == sp.encode("region is") + [hseg] + sp.encode(".")
    assert sp.encode(".", out_type=str)[0] == "\u2581"  # legacy: the chunk after a token keeps the dummy prefix
    # </s> is an AddedToken without lstrip/rstrip: nothing is stripped next to it
    assert encode("hips </s>") == sp.encode("hips ") + [2]
    assert tokenizer("hips").input_ids == [1] + sp.encode("hips")
    # LLaVA's image splice: BOS, first chunk, the image index, second chunk
    text = prompts.conversation(prompts.human_question("chair"))
    first, second = text.split("<image>")
    assert tokenize_with_image(tokenizer, text) == [1] + encode(first) + [IMAGE_TOKEN_INDEX] + encode(second)
    assert encode(first)[-1] == start and encode(second)[0] == end
    assert encode(second)[1:] == sp.encode(f"{prompts.human_question('chair')} ASSISTANT:")
    # non-legacy (legacy=False in tokenizer_config.json): one prefix for the text, none after a token
    strict = fresh_tokenizer(sp_model, legacy=False)
    add_contact_tokens(strict, get_config("tiny-joint"))
    pieces = sp.encode(".", out_type=str)
    assert strict("[SEG].", add_special_tokens=False).input_ids == [seg] + [sp.piece_to_id(p) for p in pieces[1:]]


def test_tokenizer_files_round_trip_and_bad_files_are_refused(sp_model, tmp_path):
    tokenizer = fresh_tokenizer(sp_model)
    add_contact_tokens(tokenizer, get_config("tiny-hcontact"))
    tokenizer.save_pretrained(tmp_path)
    again = ReleaseLlamaTokenizer.from_pretrained(tmp_path)
    text = prompts.conversation(prompts.human_question("cup"), prompts.human_answer(["right_hand"]))
    assert again(text).input_ids == tokenizer(text).input_ids and len(again) == 603
    assert again.decode(again("hips [SEG]").input_ids, skip_special_tokens=True) == "hips [SEG]"
    (tmp_path / "added_tokens.json").write_text(json.dumps({"[SEG]": 700}))
    with pytest.raises(InputError, match="next free id is 600"):
        ReleaseLlamaTokenizer.from_pretrained(tmp_path)


# ---- preprocessing -----------------------------------------------------------------------------------------
def test_clip_preprocessing_is_the_431_clip_image_processor(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({  # openai/clip-vit-large-patch14's file
        "crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": 224}))
    processor = clip_processor(tmp_path, 224)
    image = (np.random.default_rng(0).random((480, 644, 3)) * 255).astype(np.uint8)
    assert int(224 * 644 / 480) == 300 and round(224 * 644 / 480) == 301  # 4.31 truncates
    # plain statement: shortest side -> 224, the other int(224 * long / short) (truncated), PIL bicubic,
    # centre crop at ((h - 224) // 2, (w - 224) // 2), /255, CLIP mean/std
    resized = np.asarray(Image.fromarray(image).resize((300, 224), Image.BICUBIC), np.float32)
    top, left = (resized.shape[0] - 224) // 2, (resized.shape[1] - 224) // 2
    crop = resized[top:top + 224, left:left + 224] / 255.0
    expected = ((crop - [0.48145466, 0.4578275, 0.40821073]) / [0.26862954, 0.26130258, 0.27577711]).transpose(2, 0, 1)
    np.testing.assert_allclose(clip_pixels(image, processor).numpy(), expected, atol=1e-5)


def test_sam_normalisation_of_renders_equals_sam_image_processor():
    try:
        from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil as SamImageProcessor
    except ImportError:
        from transformers import SamImageProcessor
    from engine.contact.sam import SAM_TINY, SamParts

    renders = (np.random.default_rng(1).random((2, 128, 128, 3)) * 255).astype(np.uint8)
    reference = SamImageProcessor(size={"longest_edge": 128}, pad_size={"height": 128, "width": 128})
    expected = reference(images=list(renders), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(SamParts(SAM_TINY).preprocess(renders), expected, atol=1e-5, rtol=0)


# ---- the network's rules -----------------------------------------------------------------------------------
def test_splitter_is_the_releases_attention_over_views():
    model, _ = new_model("tiny-joint", seed=4)
    splitter = model.attention_splitter
    assert len(splitter.state_dict()) == 12
    x = torch.randn(3, 4, 48, generator=torch.Generator().manual_seed(0))
    p = {name: tensor for name, tensor in splitter.state_dict().items()}
    linear = lambda name, value: value @ p[f"{name}.weight"].T + p[f"{name}.bias"]
    h = linear("input_proj", x)
    for target, query in (("human", "query_human"), ("object", "query_object")):
        scores = linear(query, h) @ linear("key", h).transpose(-1, -2) / math.sqrt(24)  # over the 4 views
        expected = linear("output_proj", torch.softmax(scores, dim=-1) @ linear("value", h))
        torch.testing.assert_close(splitter.branch(x, target), expected)
    assert not torch.allclose(splitter.branch(x, "human"), splitter.branch(x, "object"))
    assert not hasattr(new_model("tiny-hcontact")[0], "attention_splitter")


def test_each_view_is_decoded_with_all_four_tokens():
    model, _ = new_model("tiny-hcontact", seed=5)
    generator = torch.Generator().manual_seed(1)
    embeddings = torch.randn(4, 48, 8, 8, generator=generator)
    prompts_ = torch.randn(2, 4, 48, generator=generator)
    with torch.no_grad():
        logits = model.localise("mask_decoder", embeddings, prompts_)
        for k in range(2):
            for view in range(4):  # SAM fed the (1, 4, C) sparse prompt against this view's embedding
                low = model.sam.decode("mask_decoder", embeddings[view:view + 1], prompts_[k:k + 1])
                torch.testing.assert_close(logits[k, view], model.sam.upsample(low, 128)[0])
        own = model.sam.decode("mask_decoder", embeddings[:1], prompts_[0:1, :1])  # only its own token
        assert (model.sam.upsample(own, 128)[0] - logits[0, 0]).abs().max() > 1e-3


# ---- the predictor's numbers -------------------------------------------------------------------------------
def teacher_forced_states(predictor, image, question, answer_ids):
    """(K, h) last-layer states that emit each answer token, from ONE plain forward pass (no cache)."""
    model, tokenizer = predictor.model, predictor.tokenizer
    ids = tokenize_with_image(tokenizer, prompts.conversation(question))
    where = ids.index(IMAGE_TOKEN_INDEX)
    table = model.vlm.language_model.get_input_embeddings()
    with torch.no_grad():
        features = model.vlm.image_features(clip_pixels(image, predictor.image_processor)[None])[0]
        embeds = torch.cat([table(torch.tensor(ids[:where])), features, table(torch.tensor(ids[where + 1:] + answer_ids))])
        hidden = model.vlm.language_model(inputs_embeds=embeds[None], output_hidden_states=True).hidden_states[-1][0]
    prompt_length = len(ids) - 1 + features.shape[0]
    return hidden[prompt_length - 1:prompt_length - 1 + len(answer_ids)]


def plain_pipeline(model, states, conditioning, view_embeddings, branch):
    """Γ, Φ, the splitter branch and SAM's decoder on each view with all 4 tokens, in plain torch."""
    p = model.state_dict()
    linear = lambda prefix, x: x @ p[f"{prefix}.weight"].T + p[f"{prefix}.bias"]
    E = linear("text_hidden_fcs.2", torch.relu(linear("text_hidden_fcs.0", states)))  # Γ
    a = torch.relu(linear("cam_pose_encoder.spatial_encoder.2", torch.relu(linear("cam_pose_encoder.spatial_encoder.0", conditioning))))
    gates = torch.stack([torch.sigmoid(linear(f"cam_pose_encoder.view_transforms.{v}", a[v])) for v in range(4)])  # Φ
    x = E[:, None] * gates[None]
    if branch is not None:
        h = linear("attention_splitter.input_proj", x)
        q = linear(f"attention_splitter.query_{branch}", h)
        k, v = linear("attention_splitter.key", h), linear("attention_splitter.value", h)
        x = linear("attention_splitter.output_proj", torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(h.shape[-1]), -1) @ v)
    masks = torch.stack([torch.stack([model.sam.upsample(model.sam.decode("mask_decoder", view_embeddings[view:view + 1],
                                                                                  x[token:token + 1]), 128)[0]
                                      for view in range(4)]) for token in range(x.shape[0])])
    return torch.sigmoid(masks.clamp(-20, 20))


def plain_lift(views, probs, vote_threshold=None):
    """The lift's definition with np.add.at: per view sum(w p) / sum(w) (object meshes: only p > 0.3
    votes and only views with a vote count), then the mean over views."""
    valid = views.valid
    numerator = np.zeros((4, views.num_vertices))
    weight = np.zeros((4, views.num_vertices))
    for view in range(4):
        ids, w = views.vertex_ids[view][valid[view]], views.bary[view][valid[view]].astype(np.float64)
        p = np.repeat(probs[view][valid[view]][:, None], ids.shape[1], axis=1).astype(np.float64)
        if vote_threshold is not None:
            w = w * (p > vote_threshold)
        np.add.at(numerator[view], ids.ravel(), (w * p).ravel())
        np.add.at(weight[view], ids.ravel(), w.ravel())
    seen = weight > 0
    per_view = np.where(seen, numerator / np.where(seen, weight, 1), 0)
    return np.clip(per_view.sum(0) / np.maximum(seen.sum(0), 1), 0, 1)


@pytest.fixture(scope="module")
def joint_predictor(release_root, open_body):
    root, _ = release_root
    return load_predictor(root, "joint", dtype="fp32", body=open_body)


def _image(seed=3):
    return (np.random.default_rng(seed).random((70, 90, 3)) * 255).astype(np.uint8)


def test_joint_human_contact_equals_the_plain_pipeline(joint_predictor):
    predictor = joint_predictor
    ids = predictor.token_ids
    script = ScriptedAnswer(predictor.model, [ids["[HSEG]"], 17, ids["[SEG]"]])  # two contact tokens
    try:
        result = predictor.predict_human_contact(_image(), "chair")
    finally:
        script.remove()
    assert result.token_emitted and result.token_masks.shape == (2, 4, 128, 128)
    states = teacher_forced_states(predictor, _image(), prompts.human_question("chair"), [ids["[HSEG]"], 17, ids["[SEG]"]])
    cache = predictor.body_views()
    with torch.no_grad():  # the first token ([HSEG]) routes BOTH embeddings through the human branch
        probs = plain_pipeline(predictor.model, states[[0, 2]], rll.PRESETS["body"].camera_conditioning(),
                               cache.embeddings, "human")
    np.testing.assert_allclose(result.token_masks, probs.numpy(), atol=1e-6)
    expected = np.stack([plain_lift(cache.views, p.numpy()) for p in probs])
    np.testing.assert_allclose(result.token_probabilities, expected, atol=1e-6)
    np.testing.assert_allclose(result.probabilities, expected[0], atol=1e-6)
    assert np.abs(expected[0] - expected[1]).max() > 1e-4  # two tokens, two different masks
    with torch.no_grad():  # and the object branch would have given other masks
        other = plain_pipeline(predictor.model, states[[0]], rll.PRESETS["body"].camera_conditioning(),
                               cache.embeddings, "object")
    assert (other[0] - probs[0]).abs().max() > 2e-5  # 20x the tolerance of the equality above


def test_the_first_contact_token_routes_the_answer(joint_predictor):
    ids = joint_predictor.token_ids
    for first, branch in (("[OSEG]", "object"), ("[SEG]", None)):
        script = ScriptedAnswer(joint_predictor.model, [ids[first], ids["[HSEG]"]])
        try:
            generation = joint_predictor.generate([_image()], [prompts.human_question("cup")])
        finally:
            script.remove()
        assert generation.tokens == ((first, "[HSEG]"),) and generation.routes == (branch,)


def test_no_contact_token_means_no_mask(joint_predictor):
    script = ScriptedAnswer(joint_predictor.model, [17, 18])
    try:
        result = joint_predictor.predict_human_contact(_image(), "chair")
    finally:
        script.remove()
    assert not result.token_emitted and result.token_masks.shape == (0, 4, 128, 128)
    assert not result.probabilities.any() and not result.view_masks.any()


def test_oafford_mesh_equals_the_plain_pipeline(release_root, open_body):
    root, _ = release_root
    predictor = load_predictor(root, "oafford", dtype="fp32", body=open_body)
    mesh = trimesh.creation.box(extents=(0.5, 0.2, 0.3)).subdivide()
    mesh.vertices[mesh.vertices[:, 0] > 0.2] += [0.4, 0.1, 0.0]  # asymmetric: mean != bbox centre
    seg = predictor.token_ids["[SEG]"]
    script = ScriptedAnswer(predictor.model, [seg])
    try:
        result = predictor.predict_object_affordance(_image(5), mesh.vertices, mesh.faces, object_label="mug")
    finally:
        script.remove()
    states = teacher_forced_states(predictor, _image(5), prompts.object_question("mug"), [seg])
    cache = predictor.object_views(mesh.vertices, mesh.faces)
    with torch.no_grad():  # Φ is conditioned on the distance-2 cameras even though the mesh renders at 1.5
        probs = plain_pipeline(predictor.model, states, rll.PRESETS["object_points"].camera_conditioning(),
                               cache.embeddings, None)
    np.testing.assert_allclose(result.view_masks, probs[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(result.values, plain_lift(cache.views, probs[0].numpy(), vote_threshold=0.3), atol=1e-6)
    assert result.token_values.shape == (1, len(mesh.vertices))


def test_questions_per_variant_are_the_released_ones(joint_predictor, monkeypatch):
    asked = []
    from engine.contact.predict import Generation

    empty = lambda images, questions: asked.extend(questions) or Generation(
        ("",) * len(questions), (torch.zeros(0, 64),) * len(questions), ((),) * len(questions), (None,) * len(questions))
    monkeypatch.setattr(joint_predictor, "generate", empty)
    joint_predictor.predict_human_contact(_image(), "chair")
    joint_predictor.predict_human_contact(_image(), None)
    box = trimesh.creation.box(extents=(0.3, 0.2, 0.1))
    joint_predictor.predict_object_affordance(_image(), box.vertices, box.faces, object_label="chair")
    assert asked == ["Which body parts are in contact with the chair? Segment these contact areas.",
                     "Which body parts are in contact with the all the objects or ground? Segment these contact areas.",
                     "What type of affordance does the human-object interaction suggest? Then, segment the area on "
                     "the chair where the human is making contact."]
    assert prompts.human_answer(["left_hand", "hips"], "[HSEG]") == \
        "The contacting body parts are left hand, hips, and the contact region is [HSEG]."
    assert prompts.object_answer("grasp", "[OSEG]", 2) == "The contact points indicate an affordance of grasp, with the mask at [OSEG]."
