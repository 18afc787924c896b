"""Body models: ``load_body(kind, models_dir)`` returns a ``BodyModel`` (open body, SMPL, SMPL-H, SMPL-X).

The torch-backed names load lazily, so that torch-free users of ``engine.body.topology`` (the
annotation store) never import torch.
"""
from __future__ import annotations

import importlib

__all__ = ["BODY_KINDS", "BodyModel", "BodyOutput", "load_body"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module("engine.body.model"), name)
    raise AttributeError(f"module 'engine.body' has no attribute {name!r}")
