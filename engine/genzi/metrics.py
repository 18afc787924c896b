"""GenZI's evaluation (paper section 4, Table 1; release ``metric.py``): CLIP score, diversity, physical
plausibility, the per-prompt JSON and the batch table in the paper's layout.

CLIP score
    Raw cosine similarity (no x100, no logit scale) between the L2-normalised CLIP ViT-B/32 embeddings of
    each re-rendered view and of ``prefix, prompt`` (the release leaves the suffix out), averaged over
    views. The same score ranks stage-0 results for refinement. Weights: ``<models>/clip-vit-base-patch32``,
    a transformers folder (openai/clip-vit-base-patch32, MIT licence).

Diversity
    k-means (``scipy.cluster.vq.kmeans2``, seed 1, k-means++ starts) with k = 20 on the pose parameters of
    all results; with fewer than k results, k = max(1, n // 10) as in the release. Entropy is the natural-log
    entropy of the cluster histogram; cluster size is the mean distance of each result to its centre.

Physical plausibility (contact threshold 0, ``sdf == 0`` counts for both)
    Non-collision: the fraction of body vertices with sdf >= 0, averaged over bodies. Contact: 1 when any
    vertex has sdf <= 0, averaged over bodies.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.cluster.vq import kmeans2
from scipy.stats import entropy

from engine.errors import InputError, MissingAssetError
from engine.paths import models_dir as default_models_dir

CLIP_FOLDER = "clip-vit-base-patch32"
CLIP_HINT = "Place the transformers folder of openai/clip-vit-base-patch32 (config.json, weights, tokenizer) there"
NUM_CLUSTERS = 20
KMEANS_SEED = 1
# GenZI, Table 1 (Sketchfab, "Ours"): the figures the batch table prints beside ours.
PAPER_FIGURES = {"clip": 0.2710, "entropy": 2.7304, "cluster_size": 1.0500, "non_collision": 0.9767, "contact": 0.9868}


@dataclass(frozen=True)
class DiversityScores:
    entropy: float
    cluster_size: float
    clusters: int


@dataclass(frozen=True)
class PhysicalScores:
    non_collision: float
    contact: float


@dataclass(frozen=True)
class PromptMetrics:
    """Metrics of one prompt's results. clip: per result, mean over its views. diversity: over its results."""

    scene: str
    prompt: str
    clip: tuple[float, ...]
    non_collision: tuple[float, ...]
    contact: tuple[float, ...]
    pose_features: tuple[tuple[float, ...], ...]

    def to_json(self) -> dict:
        data = asdict(self)
        data["clip_mean"] = float(np.mean(self.clip)) if self.clip else None
        data["non_collision_mean"] = float(np.mean(self.non_collision)) if self.non_collision else None
        data["contact_mean"] = float(np.mean(self.contact)) if self.contact else None
        return data


# --- CLIP --------------------------------------------------------------------------------------------


class ClipScorer:
    """CLIP image-text cosine similarity from a local transformers folder."""

    def __init__(self, model, tokenizer, processor, device):
        self.model, self.tokenizer, self.processor, self.device = model, tokenizer, processor, device

    @classmethod
    def from_pretrained(cls, folder: Path | str | None = None, *, models: Path | str | None = None,
                        device: torch.device | str = "cpu") -> "ClipScorer":
        import transformers

        folder = Path(folder) if folder is not None else default_models_dir(models) / CLIP_FOLDER
        if not (folder / "config.json").is_file():
            raise MissingAssetError("CLIP ViT-B/32 folder", folder / "config.json", CLIP_HINT)
        processor_class = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
        model = transformers.CLIPModel.from_pretrained(folder, local_files_only=True).eval().to(device)
        tokenizer = transformers.CLIPTokenizer.from_pretrained(folder, local_files_only=True)
        return cls(model, tokenizer, processor_class.from_pretrained(folder, local_files_only=True), torch.device(device))

    @torch.no_grad()
    def scores(self, images, text: str) -> np.ndarray:
        """(N,) cosine similarity of each (H, W, 3) uint8 image with ``text``."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise InputError(f"CLIP scoring needs (N, H, W, 3) uint8 images, got {images.shape} {images.dtype}")
        pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"].to(self.device)
        tokens = self.tokenizer([text], padding=True, truncation=True, max_length=77, return_tensors="pt").to(self.device)
        image = self.model.get_image_features(pixel_values=pixels)
        words = self.model.get_text_features(**tokens)
        image = getattr(image, "pooler_output", image)
        words = getattr(words, "pooler_output", words)
        image = torch.nn.functional.normalize(image.float(), dim=-1)
        words = torch.nn.functional.normalize(words.float(), dim=-1)
        return (image @ words.T)[:, 0].cpu().numpy()

    def clip_score(self, views, text: str) -> float:
        """The mean over the views of one result."""
        return float(np.mean(self.scores(views, text)))


def clip_text(prompt: str, prefix: str) -> str:
    return ", ".join(part.strip() for part in (prefix, prompt) if part and part.strip())


def rank_by_clip(scores, keep_fraction: float = 0.5) -> np.ndarray:
    """Indices of the top ``int(n * keep_fraction)`` results (at least one), best first; ties keep order."""
    scores = np.asarray(scores, dtype=np.float64)
    keep = max(1, int(len(scores) * keep_fraction))
    return np.argsort(-scores, kind="stable")[:keep]


# --- diversity and physics ---------------------------------------------------------------------------


def diversity(features, k: int = NUM_CLUSTERS, seed: int = KMEANS_SEED) -> DiversityScores:
    """k-means entropy (natural log) and mean distance to the assigned centre over (n, d) pose features."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) == 0 or not np.isfinite(features).all():
        raise InputError(f"diversity needs a non-empty (n, d) array of finite pose features, got {features.shape}")
    clusters = k if len(features) >= k else max(1, len(features) // 10)
    centres, labels = kmeans2(features, clusters, seed=seed, minit="++")
    counts = np.bincount(labels, minlength=clusters)
    distance = np.linalg.norm(features - centres[labels], axis=1)
    return DiversityScores(float(entropy(counts)), float(distance.mean()), clusters)


def physical(body_sdf) -> PhysicalScores:
    """(B, V) scene sdf at each body's vertices -> non-collision and contact averaged over bodies."""
    values = np.asarray(body_sdf, dtype=np.float64)
    if values.ndim == 1:
        values = values[None]
    if values.ndim != 2 or values.size == 0:
        raise InputError(f"physical metrics need (bodies, vertices) sdf values, got {values.shape}")
    return PhysicalScores(float((values >= 0).mean(axis=1).mean()), float((values <= 0).any(axis=1).mean()))


# --- outputs -----------------------------------------------------------------------------------------


def write_prompt_json(metrics: PromptMetrics, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics.to_json(), indent=2))
    return path


@dataclass(frozen=True)
class BatchRow:
    method: str
    clip: float
    entropy: float
    cluster_size: float
    non_collision: float
    contact: float


def batch_row(prompts: list[PromptMetrics], method: str = "Ours (this run)", k: int = NUM_CLUSTERS) -> BatchRow:
    """One Table-1 row over every result of a batch: means over results, diversity over all of them."""
    if not prompts:
        raise InputError("the batch has no prompts")
    clip = [value for prompt in prompts for value in prompt.clip]
    non_collision = [value for prompt in prompts for value in prompt.non_collision]
    contact = [value for prompt in prompts for value in prompt.contact]
    features = [feature for prompt in prompts for feature in prompt.pose_features]
    scores = diversity(features, k) if features else DiversityScores(math.nan, math.nan, 0)
    mean = lambda values: float(np.mean(values)) if values else math.nan
    return BatchRow(method, mean(clip), scores.entropy, scores.cluster_size, mean(non_collision), mean(contact))


def format_table(rows: list[BatchRow], with_paper: bool = True) -> str:
    """Markdown in the layout of GenZI's Table 1, with the paper's row for reference."""
    if with_paper:
        rows = [*rows, BatchRow("GenZI paper (Table 1, Sketchfab)", **PAPER_FIGURES)]
    lines = ["| | Semantics | Diversity | | Physical Plausibility | |",
             "|---|---|---|---|---|---|",
             "| Method | CLIP ↑ | Entropy ↑ | Cluster Size ↑ | Non-collision ↑ | Contact ↑ |"]
    for row in rows:
        cells = (row.clip, row.entropy, row.cluster_size, row.non_collision, row.contact)
        lines.append(f"| {row.method} | " + " | ".join("n/a" if math.isnan(v) else f"{v:.4f}" for v in cells) + " |")
    return "\n".join(lines)
