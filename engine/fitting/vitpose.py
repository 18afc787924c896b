"""2D human pose with ViTPose (transformers' ``VitPoseForPoseEstimation``) from a local folder.

Folder: ``<models>/vitpose/`` holding a transformers save of a COCO-17 ViTPose model, e.g. the
``usyd-community/vitpose-base-simple`` release: ``config.json``, ``preprocessor_config.json`` and
``model.safetensors`` (``VITPOSE_FILES``). ViTPose++ (mixture-of-experts) folders work too; their
COCO expert (dataset index 0) is used. A COCO-WholeBody model (``num_labels`` 133: body 0-16, feet
17-22, face, hands) is read as well: ``keypoint_layout`` is then ``coco23`` and
``estimator(image, layout="coco23")`` adds the 6 foot keypoints (big toes, small toes, heels) to the
COCO-17 ones; the default output stays ``coco17`` for every model.

Person boxes: ViTPose is top-down and needs a box around the person. It comes from, in order, the
user's box, the bounding box of a person mask, or the whole image. No person detector is bundled
(there is no local detector folder to load), so an image with several people needs a box or a mask.

The keypoints are decoded by the image processor's own post-processing (heatmap argmax, DARK
refinement, box transform) and returned as ``Keypoints2D`` (layout ``coco17``; see
``engine.fitting.keypoints`` for how COCO-17 maps to our body joints). Confidence is the heatmap
peak clipped to [0, 1].
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine.errors import InputError, MissingAssetError
from engine.fitting.keypoints import COCO17_NAMES, Keypoints2D, layout_size

VITPOSE_DIR = "vitpose"
VITPOSE_FILES = ("config.json", "preprocessor_config.json", "model.safetensors")
VITPOSE_HINT = ("Save a COCO-17 ViTPose model there with transformers (for example usyd-community/vitpose-base-simple: "
                "config.json, preprocessor_config.json, model.safetensors). Without it, give keypoints yourself.")
COCO_DATASET_INDEX = 0  # ViTPose++ experts: 0 is COCO
WHOLEBODY_KEYPOINTS = 133  # COCO-WholeBody: 17 body, 6 feet, 68 face, 2 x 21 hands
LAYOUT_OF_MODEL = {len(COCO17_NAMES): "coco17", WHOLEBODY_KEYPOINTS: "coco23"}


def _processor_class():
    import transformers

    # transformers 5 splits image processors by backend; the PIL one needs no torchvision.
    return getattr(transformers, "VitPoseImageProcessorPil", None) or transformers.VitPoseImageProcessor


def check_image(image) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a PIL image or an array (grey and RGBA are converted)."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or min(array.shape[:2]) < 2:
        raise InputError(f"the image must be (H, W, 3) RGB, got shape {array.shape}")
    if array.dtype != np.uint8:
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 255:
            raise InputError("image values must be finite and within 0..255")
        array = array.astype(np.uint8)
    return np.ascontiguousarray(array[..., :3])


def person_box(image_size: tuple[int, int], box=None, mask=None) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) pixels: the user's box, else the mask's bounding box, else the whole image."""
    height, width = image_size
    if box is not None:
        values = np.asarray(box, dtype=np.float64).reshape(-1)
        if values.shape != (4,) or not np.isfinite(values).all():
            raise InputError("a person box must be 4 finite numbers (x0, y0, x1, y1)")
        x0, y0 = max(values[0], 0.0), max(values[1], 0.0)
        x1, y1 = min(values[2], float(width)), min(values[3], float(height))
        if x1 - x0 < 2 or y1 - y0 < 2:
            raise InputError(f"the person box {tuple(values)} has no area inside the {width}x{height} image")
        return float(x0), float(y0), float(x1), float(y1)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != (height, width):
            raise InputError(f"the person mask is {mask.shape[:2]}, the image is {(height, width)}")
        rows, cols = np.nonzero(mask > 0)
        if len(rows) == 0:
            raise InputError("the person mask is empty")
        return float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)
    return 0.0, 0.0, float(width), float(height)


class VitPoseEstimator:
    """A loaded ViTPose model and its image processor. ``estimator(image, box=..., mask=...)`` -> ``Keypoints2D``."""

    def __init__(self, model, processor):
        self.model = model.eval()
        self.processor = processor
        if model.config.num_labels not in LAYOUT_OF_MODEL:
            raise InputError(f"the ViTPose model predicts {model.config.num_labels} keypoints; a COCO-17 (17) or "
                             f"COCO-WholeBody ({WHOLEBODY_KEYPOINTS}) model is needed")
        self.keypoint_layout = LAYOUT_OF_MODEL[model.config.num_labels]  # the richest layout it can give
        self.mixture_of_experts = getattr(model.config.backbone_config, "num_experts", 1) > 1

    @classmethod
    def from_pretrained(cls, path: Path | str, device: torch.device | str | None = None) -> "VitPoseEstimator":
        from transformers import VitPoseForPoseEstimation

        folder = Path(path)
        for name in VITPOSE_FILES:
            if not (folder / name).is_file():
                raise MissingAssetError(f"ViTPose file {name}", folder / name, VITPOSE_HINT)
        model = VitPoseForPoseEstimation.from_pretrained(folder, local_files_only=True)
        processor = _processor_class().from_pretrained(folder, local_files_only=True)
        return cls(model.to(device) if device is not None else model, processor)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def heatmaps(self, image: np.ndarray, box: tuple[float, float, float, float]) -> tuple[torch.Tensor, list]:
        """(1, K, h, w) raw heatmaps for one person box (K = the model's keypoints), and the COCO-format
        boxes the processor used."""
        x0, y0, x1, y1 = box
        boxes = [[[x0, y0, x1 - x0, y1 - y0]]]
        inputs = self.processor(Image.fromarray(image), boxes=boxes, return_tensors="pt")
        pixels = inputs["pixel_values"].to(self.device, dtype=next(self.model.parameters()).dtype)
        extra = {"dataset_index": torch.tensor([COCO_DATASET_INDEX], device=self.device)} if self.mixture_of_experts else {}
        with torch.no_grad():
            output = self.model(pixel_values=pixels, **extra)
        return output.heatmaps.float(), boxes

    def decode(self, heatmaps: torch.Tensor, box: tuple[float, float, float, float]) -> tuple[np.ndarray, np.ndarray]:
        """(1, K, h, w) heatmaps of one box to (K, 2) image pixels and (K,) confidences in [0, 1].

        The image processor's own decoding (argmax, DARK, box transform); non-finite results get confidence 0.
        """
        x0, y0, x1, y1 = box

        class _Output:  # the processor's post-processing reads only ``.heatmaps``
            pass

        output = _Output()
        output.heatmaps = heatmaps.detach().float().cpu()
        coco_box = np.asarray([[x0, y0, x1 - x0, y1 - y0]], dtype=np.float32)
        result = self.processor.post_process_pose_estimation(output, boxes=[coco_box])[0][0]
        xy = result["keypoints"].numpy().astype(np.float32).reshape(-1, 2)
        confidence = np.clip(result["scores"].numpy().astype(np.float32).reshape(-1), 0.0, 1.0)
        broken = ~np.isfinite(xy).all(1) | ~np.isfinite(confidence)
        xy[broken] = ((x0 + x1) / 2, (y0 + y1) / 2)
        confidence[broken] = 0.0
        return xy, confidence

    def __call__(self, image, box=None, mask=None, layout: str = "coco17") -> Keypoints2D:
        """Keypoints of the person in ``box`` (x0, y0, x1, y1), else in ``mask``'s bounding box, else the whole
        image; ``layout`` ``coco23`` (feet too) needs a whole-body model (``keypoint_layout``)."""
        if layout not in ("coco17", "coco23"):
            raise InputError(f"ViTPose gives coco17 or coco23 keypoints, not {layout!r}")
        if layout == "coco23" and self.keypoint_layout != "coco23":
            raise InputError("foot keypoints (coco23) need a COCO-WholeBody ViTPose (133 keypoints); this model has 17")
        image = check_image(image)
        height, width = image.shape[:2]
        person = person_box((height, width), box=box, mask=mask)
        heatmaps, _ = self.heatmaps(image, person)
        xy, confidence = self.decode(heatmaps, person)
        xy, confidence = xy[: layout_size(layout)], confidence[: layout_size(layout)]
        if confidence.max() <= 0:
            raise InputError("no person was found in the box (every keypoint has confidence 0)")
        return Keypoints2D(xy=xy, confidence=confidence, image_size=(height, width), layout=layout, box=person)


def load_vitpose(models_dir: Path | str, device: torch.device | str | None = None) -> VitPoseEstimator:
    """ViTPose from ``<models>/vitpose``; MissingAssetError naming the expected file when absent."""
    return VitPoseEstimator.from_pretrained(Path(models_dir) / VITPOSE_DIR, device=device)
