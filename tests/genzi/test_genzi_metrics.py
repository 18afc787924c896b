"""GenZI metrics on hand cases: CLIP cosine against a hand computation, seeded k-means diversity, physics,
the per-prompt JSON and the paper-layout table."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from engine.errors import InputError, MissingAssetError
from engine.genzi import metrics
from engine.genzi.metrics import ClipScorer, PromptMetrics, batch_row, diversity, format_table, physical, rank_by_clip


def test_clip_score_is_the_raw_cosine_averaged_over_views(genzi_models, clip_folder):
    scorer = ClipScorer.from_pretrained(models=genzi_models)
    views = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    text = metrics.clip_text("sitting on the sofa", "a person")
    assert text == "a person, sitting on the sofa"
    scores = scorer.scores(views, text)
    # By hand: the model's projected embeddings, normalised, dotted.
    with torch.no_grad():
        pixels = scorer.processor(images=list(views), return_tensors="pt")["pixel_values"]
        vision = scorer.model.vision_model(pixel_values=pixels).pooler_output
        image = scorer.model.visual_projection(vision)
        ids = scorer.tokenizer([text], return_tensors="pt")
        words = scorer.model.text_projection(scorer.model.text_model(**ids).pooler_output)
    expected = (image / image.norm(dim=-1, keepdim=True)) @ (words / words.norm(dim=-1, keepdim=True)).T
    np.testing.assert_allclose(scores, expected[:, 0].numpy(), rtol=1e-5, atol=1e-6)
    assert (np.abs(scores) <= 1).all()
    assert scorer.clip_score(views, text) == pytest.approx(float(scores.mean()))


def test_missing_clip_folder_is_named(tmp_path):
    with pytest.raises(MissingAssetError, match="CLIP ViT-B/32 folder not found.*clip-vit-base-patch32"):
        ClipScorer.from_pretrained(models=tmp_path)


def test_rank_keeps_the_top_half_best_first():
    assert rank_by_clip([0.20, 0.31, 0.25, 0.29]).tolist() == [1, 3]
    assert rank_by_clip([0.2]).tolist() == [0]
    assert rank_by_clip([0.2, 0.2, 0.1]).tolist() == [0]


def test_diversity_on_hand_clusters():
    # Four tight pairs far apart: 8 results, k = 4 clusters of 2 -> entropy ln 4, distance 0.5 to each centre.
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], dtype=float)
    features = np.concatenate([centres + (0.5, 0), centres - (0.5, 0)])
    scores = diversity(features, k=4)
    assert scores.clusters == 4
    assert scores.entropy == pytest.approx(math.log(4))
    assert scores.cluster_size == pytest.approx(0.5)


def test_diversity_uses_n_over_10_clusters_when_fewer_than_k():
    features = np.random.default_rng(0).normal(size=(15, 3))
    scores = diversity(features)  # 15 < 20 -> 1 cluster
    assert scores.clusters == 1 and scores.entropy == 0.0
    assert scores.cluster_size == pytest.approx(np.linalg.norm(features - features.mean(0), axis=1).mean())
    assert diversity(np.zeros((3, 2))).clusters == 1
    many = np.random.default_rng(1).normal(size=(60, 4))
    assert diversity(many) == diversity(many)  # seeded
    assert diversity(many).clusters == 20
    with pytest.raises(InputError, match="pose features"):
        diversity(np.zeros((0, 3)))


def test_physical_counts_zero_for_both():
    sdf = np.array([[0.1, 0.0, 0.2, 0.3],    # touching: non-collision 1, contact 1
                    [0.1, -0.05, 0.2, 0.3],  # one vertex inside: 0.75, contact 1
                    [0.1, 0.02, 0.2, 0.3]])  # floating: 1, contact 0
    scores = physical(sdf)
    assert scores.non_collision == pytest.approx((1 + 0.75 + 1) / 3)
    assert scores.contact == pytest.approx(2 / 3)
    with pytest.raises(InputError):
        physical(np.zeros((0, 0)))


def test_prompt_json_and_batch_table(tmp_path):
    first = PromptMetrics("living_room", "sitting on the sofa", (0.25, 0.27), (1.0, 0.9), (1.0, 0.0),
                          ((0.0, 0.0), (1.0, 1.0)))
    second = PromptMetrics("bedroom", "lying on the bed", (0.30,), (0.95,), (1.0,), ((2.0, 2.0),))
    path = metrics.write_prompt_json(first, tmp_path / "p" / "metrics.json")
    data = json.loads(path.read_text())
    assert data["clip_mean"] == pytest.approx(0.26) and data["contact_mean"] == pytest.approx(0.5)
    assert data["scene"] == "living_room" and data["pose_features"] == [[0.0, 0.0], [1.0, 1.0]]
    row = batch_row([first, second])
    assert row.clip == pytest.approx((0.25 + 0.27 + 0.30) / 3)
    assert row.non_collision == pytest.approx((1.0 + 0.9 + 0.95) / 3)
    assert row.contact == pytest.approx(2 / 3)
    assert row.entropy == 0.0  # 3 results < 20 -> one cluster
    table = format_table([row])
    lines = table.splitlines()
    assert lines[2] == "| Method | CLIP ↑ | Entropy ↑ | Cluster Size ↑ | Non-collision ↑ | Contact ↑ |"
    assert lines[-1] == "| GenZI paper (Table 1, Sketchfab) | 0.2710 | 2.7304 | 1.0500 | 0.9767 | 0.9868 |"
    assert lines[3].startswith("| Ours (this run) | 0.2733 | 0.0000 |")
