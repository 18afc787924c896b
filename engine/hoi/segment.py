"""Object masks from a box (SAM) or from the object's label (Grounding DINO, then SAM), through transformers,
from local folders only (the release used Grounded-SAM for this step; it ships no code for it).

Folders under the models directory (each a ``save_pretrained`` folder: ``config.json``, the weights and
``preprocessor_config.json``; Grounding DINO's also holds its BERT tokenizer):

    sam-hf/           transformers ``SamModel`` + ``SamProcessor`` (e.g. a converted SAM ViT-H/L/B)
    grounding-dino/   transformers ``GroundingDinoForObjectDetection`` + ``GroundingDinoProcessor``

SAM 3 (a text-prompted segmenter) is not wired in: the GPU boxes pin an older transformers than the one
that added it, and Grounding DINO + SAM is what the release used.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.errors import InputError, MissingAssetError

SAM_FOLDER = "sam-hf"
GROUNDING_DINO_FOLDER = "grounding-dino"


def _require_folder(folder: Path, what: str) -> Path:
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise MissingAssetError(what, folder / "config.json",
                                "Save the model and its processor there with save_pretrained; nothing is downloaded.")
    return folder


def check_box(box, image_size) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) in pixels, inside the image and at least 2 pixels on each side."""
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise InputError("a box is four numbers: x0, y0, x1, y1 in pixels") from None
    height, width = image_size
    if not all(np.isfinite([x0, y0, x1, y1])):
        raise InputError("the box contains NaN or inf")
    x0, x1 = sorted((max(0.0, x0), min(float(width), x1)))
    y0, y1 = sorted((max(0.0, y0), min(float(height), y1)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise InputError("the box is smaller than 2 pixels or outside the image; draw it around the object")
    return x0, y0, x1, y1


@dataclass(frozen=True)
class Segmentation:
    """mask (H, W) bool; box (x0, y0, x1, y1) it came from; score of the box (detector) or of the mask (SAM);
    source: the model folder's name, e.g. ``"sam-hf"`` or ``"grounding-dino + sam-hf"``."""

    mask: np.ndarray
    box: tuple[float, float, float, float]
    score: float
    source: str


class BoxSegmenter:
    """SAM with one box prompt -> one mask (``multimask_output=False``)."""

    source = SAM_FOLDER

    def __init__(self, model, processor, device: torch.device):
        self.model, self.processor, self.device = model.eval(), processor, device

    @classmethod
    def from_pretrained(cls, folder: Path | str, device="cpu") -> "BoxSegmenter":
        from transformers import SamModel, SamProcessor

        folder = _require_folder(Path(folder), "SAM (transformers folder)")
        device = torch.device(device)
        return cls(SamModel.from_pretrained(folder, local_files_only=True).to(device),
                   SamProcessor.from_pretrained(folder, local_files_only=True), device)

    def memory_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.model.parameters())

    def segment(self, image: np.ndarray, box) -> Segmentation:
        box = check_box(box, image.shape[:2])
        inputs = self.processor(images=image, input_boxes=[[list(box)]], return_tensors="pt").to(self.device)
        with torch.no_grad():
            outputs = self.model(pixel_values=inputs["pixel_values"], input_boxes=inputs["input_boxes"],
                                 multimask_output=False)
        masks = self.processor.image_processor.post_process_masks(
            outputs.pred_masks.cpu(), inputs["original_sizes"].cpu(), inputs["reshaped_input_sizes"].cpu())
        mask = masks[0][0, 0].numpy().astype(bool)
        return Segmentation(mask, box, float(outputs.iou_scores.reshape(-1)[0]), self.source)


class LabelSegmenter:
    """Grounding DINO finds the label's best box; SAM turns it into a mask (Grounded-SAM)."""

    def __init__(self, detector, processor, sam: BoxSegmenter, device: torch.device):
        self.detector, self.processor, self.sam, self.device = detector.eval(), processor, sam, device
        self.source = f"{GROUNDING_DINO_FOLDER} + {SAM_FOLDER}"

    @classmethod
    def from_pretrained(cls, folder: Path | str, sam_folder: Path | str, device="cpu") -> "LabelSegmenter":
        from transformers import GroundingDinoForObjectDetection, GroundingDinoProcessor

        folder = _require_folder(Path(folder), "Grounding DINO (transformers folder)")
        device = torch.device(device)
        return cls(GroundingDinoForObjectDetection.from_pretrained(folder, local_files_only=True).to(device),
                   GroundingDinoProcessor.from_pretrained(folder, local_files_only=True),
                   BoxSegmenter.from_pretrained(sam_folder, device), device)

    def memory_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.detector.parameters()) + self.sam.memory_bytes()

    def detect(self, image: np.ndarray, label: str, box_threshold: float = 0.3, text_threshold: float = 0.25):
        """The best (box, score) for ``label``; InputError when nothing scores above ``box_threshold``."""
        if not isinstance(label, str) or not label.strip() or len(label) > 100:
            raise InputError("give the object's label (1-100 characters), e.g. 'chair'")
        text = label.strip().lower().rstrip(".") + "."  # Grounding DINO's prompt: lower case, ending in '.'
        inputs = self.processor(images=image, text=text, return_tensors="pt").to(self.device)
        with torch.no_grad():
            outputs = self.detector(**inputs)
        results = self.processor.post_process_grounded_object_detection(
            outputs, inputs["input_ids"], threshold=box_threshold, text_threshold=text_threshold,
            target_sizes=[image.shape[:2]])[0]
        if len(results["scores"]) == 0:
            raise InputError(f"no {label.strip()!r} was found in the image (score < {box_threshold}); "
                             "draw the mask or a box instead")
        best = int(results["scores"].argmax())
        return tuple(float(v) for v in results["boxes"][best].tolist()), float(results["scores"][best])

    def segment(self, image: np.ndarray, label: str, box_threshold: float = 0.3) -> Segmentation:
        box, score = self.detect(image, label, box_threshold)
        masked = self.sam.segment(image, box)
        return Segmentation(masked.mask, masked.box, score, self.source)


def register_segmenters(engine) -> None:
    """``sam-box``, ``grounded-sam`` and ``vitpose`` (the HOI tab's body source 3) in the engine's registry,
    each loaded lazily on the engine's device."""
    from engine.fitting.vitpose import VITPOSE_DIR, load_vitpose
    from engine.runtime import ModelSpec

    engine.register(ModelSpec("vitpose", lambda context: load_vitpose(context.models_dir, context.device),
                              "2D body keypoints (ViTPose)", requires=(Path(VITPOSE_DIR) / "config.json",)))
    engine.register(ModelSpec(
        "sam-box", lambda context: BoxSegmenter.from_pretrained(context.models_dir / SAM_FOLDER, context.device),
        "object mask from a box (SAM)", requires=(Path(SAM_FOLDER) / "config.json",)))
    engine.register(ModelSpec(
        "grounded-sam", lambda context: LabelSegmenter.from_pretrained(
            context.models_dir / GROUNDING_DINO_FOLDER, context.models_dir / SAM_FOLDER, context.device),
        "object mask from a label (Grounding DINO + SAM)",
        requires=(Path(GROUNDING_DINO_FOLDER) / "config.json", Path(SAM_FOLDER) / "config.json")))
