"""What the models directory holds, what each capability can do with it, and where missing files go.

``python app.py doctor`` prints ``doctor_report(models_dir).format()``. Nothing is ever downloaded:
every licensed file is placed by the user under the models directory (``--models``, default ``models/``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.body.model import SMPL_FAMILY
from engine.body.topology import SMPL_TO_SMPLX_FILE
from engine.fitting.priors import VPOSER_DIR, VPOSER_SNAPSHOTS
from engine.fitting.vitpose import VITPOSE_DIR, VITPOSE_FILES
from engine.genzi.inpaint import SD2_INPAINTING_FOLDER
from engine.genzi.metrics import CLIP_FOLDER


@dataclass(frozen=True)
class AssetCheck:
    """One asset: ``found`` is the file that exists, or None; ``expected`` lists accepted paths."""

    name: str
    enables: str
    expected: tuple[Path, ...]
    found: Path | None
    body_kind: str | None = None


@dataclass(frozen=True)
class DoctorReport:
    models_dir: Path
    checks: tuple[AssetCheck, ...]

    def available_bodies(self) -> tuple[str, ...]:
        return ("openbody",) + tuple(check.body_kind for check in self.checks if check.body_kind and check.found)

    def format(self) -> str:
        state = "exists" if self.models_dir.is_dir() else "does not exist yet"
        lines = [f"Models directory: {self.models_dir} ({state})", ""]
        lines.append("Always available (no licensed files): the built-in open body (openbody-v1), multi-view "
                     "rendering, Render-Localize-Lift (lift/project), geodesic distances, contact metrics, body fitting to 2D "
                     "keypoints with the open-body pose prior, and human "
                     "contact from the category-prior baseline (labelled 'baseline: category prior').")
        lines.append("")
        for check in self.checks:
            if check.found:
                lines.append(f"  [found]   {check.name}: {check.found}")
            else:
                alternatives = " or ".join(str(path) for path in check.expected)
                lines.append(f"  [missing] {check.name}: expected at {alternatives}")
            lines.append(f"            enables: {check.enables}")
        lines += ["", "Bodies usable now: " + ", ".join(self.available_bodies())]
        return "\n".join(lines)


def _check(name: str, enables: str, root: Path, relatives, body_kind: str | None = None) -> AssetCheck:
    expected = tuple(root / relative for relative in relatives)
    return AssetCheck(name, enables, expected, next((path for path in expected if path.is_file()), None), body_kind)


_DISPLAY = {"smplx": "SMPL-X", "smplh": "SMPL-H", "smpl": "SMPL"}


def doctor_report(models_dir: Path | str) -> DoctorReport:
    root = Path(models_dir)
    checks = [
        _check(f"{_DISPLAY[kind]} body model", f"the {spec.topology} body ({spec.licence_hint})", root, spec.files, kind)
        for kind, spec in SMPL_FAMILY.items()
    ]
    checks.append(_check("SMPL(-H) <-> SMPL-X topology map", "converting per-vertex contact between smplh-6890 and smplx-10475",
                         root, (SMPL_TO_SMPLX_FILE,)))
    for variant, enables in (("hcontact", "semantic human contact (without it: the category-prior baseline)"),
                             ("oafford", "object affordance"), ("joint", "joint human and object contact")):
        checks.append(_check(f"InteractVLM {variant} (merged HF folder)", enables, root,
                             (f"interactvlm/{variant}/config.json",)))
    checks.append(_check("CLIP ViT-L/14 vision folder", "the InteractVLM vision tower (needed by every variant)", root,
                         ("clip-vit-large-patch14/config.json",)))
    checks.append(_check("SAM ViT-H (segment_anything .pth)", "training a new InteractVLM variant from SAM", root,
                         ("sam/sam_vit_h_4b8939.pth",)))
    for name in VITPOSE_FILES:
        checks.append(_check(f"ViTPose COCO-17 folder: {name}", "2D keypoints from a photo for body fitting (without it: "
                             "keypoints you give, or a body file)", root, (f"{VITPOSE_DIR}/{name}",)))
    checks.append(_check("VPoser v2 config (V02_05.yaml)", "the VPoser pose prior for body fitting (without it: the "
                         "open-body prior, joint limits + Gaussian)", root, (f"{VPOSER_DIR}/V02_05.yaml",)))
    checks.append(_check("VPoser v2 checkpoint (snapshots/*.ckpt)", "the VPoser pose prior (any .ckpt in snapshots/ works)",
                         root, tuple(f"{VPOSER_DIR}/snapshots/{name}" for name in VPOSER_SNAPSHOTS)))
    checks.append(_check("Stable Diffusion 2 inpainting (diffusers folder)", "GenZI: inpainting people into the scene "
                         "views (without it: scenes, point checks, views and lifting from keypoints you give)", root,
                         (f"{SD2_INPAINTING_FOLDER}/model_index.json",)))
    checks.append(_check("CLIP ViT-B/32 folder", "GenZI: CLIP ranking of stage-0 results and the CLIP score", root,
                         (f"{CLIP_FOLDER}/config.json",)))
    for folder, what, enables in (
            ("sam-hf", "SAM, transformers folder (SamModel + SamProcessor)", "HOI object masks from a box (without it: draw the mask)"),
            ("grounding-dino", "Grounding DINO, transformers folder (with its processor and tokenizer)",
             "HOI object masks from the object's label, with SAM (without it: a box for SAM, or draw)")):
        checks.append(_check(what, enables, root, (f"{folder}/config.json",)))
    for topology in ("smplh-6890", "smplx-10475", "smpl-6890"):
        checks.append(_check(f"part segmentation for {topology} (optional)",
                             "named body parts from your own segmentation instead of skinning-weight parts",
                             root, (f"body/parts/{topology}.json",)))
    return DoctorReport(root, tuple(checks))
