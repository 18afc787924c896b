"""SAM (box) and Grounding DINO + SAM (label) loaders: tiny seeded models saved with ``save_pretrained`` in
transformers' folder layout, loaded back by ``from_pretrained`` from the local folder only."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.errors import InputError, MissingAssetError
from engine.hoi.segment import BoxSegmenter, LabelSegmenter, check_box


@pytest.fixture(scope="module")
def sam_folder(tmp_path_factory):
    from transformers import (SamConfig, SamImageProcessor, SamMaskDecoderConfig, SamModel, SamProcessor,
                              SamPromptEncoderConfig, SamVisionConfig)

    torch.manual_seed(0)
    vision = SamVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, global_attn_indexes=[1],
                             window_size=4, patch_size=8, image_size=64, output_channels=16, num_pos_feats=8,
                             mlp_dim=64)
    prompt = SamPromptEncoderConfig(hidden_size=16, image_size=64, patch_size=8, mask_input_channels=4)
    decoder = SamMaskDecoderConfig(hidden_size=16, mlp_dim=32, num_hidden_layers=1, num_attention_heads=2,
                                   iou_head_hidden_dim=16)
    model = SamModel(SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)).eval()
    processor = SamProcessor(SamImageProcessor(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64},
                                               mask_size={"longest_edge": 16}, mask_pad_size={"height": 16, "width": 16}))
    folder = tmp_path_factory.mktemp("sam-hf")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_sam_box_loader_gives_a_mask_the_image_size(sam_folder):
    segmenter = BoxSegmenter.from_pretrained(sam_folder)
    image = np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)
    result = segmenter.segment(image, (10, 5, 40, 30))
    assert result.mask.shape == (48, 80) and result.mask.dtype == bool and result.source == "sam-hf"
    again = BoxSegmenter.from_pretrained(sam_folder).segment(image, (10, 5, 40, 30))
    np.testing.assert_array_equal(result.mask, again.mask)  # the saved weights, not a fresh init


def test_missing_folders_name_the_expected_file(tmp_path):
    with pytest.raises(MissingAssetError, match="config.json"):
        BoxSegmenter.from_pretrained(tmp_path / "sam-hf")
    with pytest.raises(MissingAssetError, match="grounding-dino"):
        LabelSegmenter.from_pretrained(tmp_path / "grounding-dino", tmp_path / "sam-hf")


def test_boxes_are_checked():
    assert check_box((-5, 2, 30, 200), (100, 50)) == (0.0, 2.0, 30.0, 100.0)
    with pytest.raises(InputError, match="four numbers"):
        check_box((1, 2, 3), (10, 10))
    with pytest.raises(InputError, match="smaller than 2 pixels"):
        check_box((5, 5, 5.5, 9), (10, 10))
    with pytest.raises(InputError, match="NaN"):
        check_box((0, 0, float("nan"), 3), (10, 10))


@pytest.fixture(scope="module")
def grounding_dino_folder(tmp_path_factory):
    from transformers import (BertConfig, BertTokenizerFast, GroundingDinoConfig, GroundingDinoForObjectDetection,
                              GroundingDinoImageProcessor, GroundingDinoProcessor, SwinConfig)

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("grounding-dino")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "a", "chair", "the", "person", "mug"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    backbone = SwinConfig(embed_dim=8, depths=[1, 1], num_heads=[1, 1], window_size=2, image_size=64, patch_size=4,
                          out_features=["stage1", "stage2"])
    text = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=64)
    config = GroundingDinoConfig(backbone_config=backbone, text_config=text, d_model=32, encoder_layers=1,
                                 decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2,
                                 decoder_attention_heads=2, num_queries=10, num_feature_levels=2, encoder_n_points=2,
                                 decoder_n_points=2, max_text_len=16, use_timm_backbone=False)
    GroundingDinoForObjectDetection(config).eval().save_pretrained(folder)
    GroundingDinoProcessor(GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 64}),
                           tokenizer).save_pretrained(folder)
    return folder


def test_label_segmenter_detects_then_segments(grounding_dino_folder, sam_folder):
    segmenter = LabelSegmenter.from_pretrained(grounding_dino_folder, sam_folder)
    image = np.random.default_rng(1).integers(0, 255, (48, 80, 3), dtype=np.uint8)
    result = segmenter.segment(image, "Chair", box_threshold=0.0)
    assert result.mask.shape == (48, 80) and result.source == "grounding-dino + sam-hf" and 0 <= result.score <= 1
    x0, y0, x1, y1 = result.box
    assert 0 <= x0 < x1 <= 80 and 0 <= y0 < y1 <= 48
    with pytest.raises(InputError, match="no 'chair' was found"):
        segmenter.segment(image, "chair", box_threshold=1.0)
    with pytest.raises(InputError, match="give the object's label"):
        segmenter.segment(image, "  ")
