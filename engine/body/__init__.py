"""Body models: ``load_body(kind, models_dir)`` returns a ``BodyModel`` (open body, SMPL, SMPL-H, SMPL-X)."""
from engine.body.model import BODY_KINDS, BodyModel, BodyOutput, load_body

__all__ = ["BODY_KINDS", "BodyModel", "BodyOutput", "load_body"]
