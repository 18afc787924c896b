"""Helpers of the scale-out tests, importable by their own name (``from scale_helpers import ROOT``): test
modules must not import ``conftest``, which names a different module in every test folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def requirement(flag: str, problem: str) -> None:
    """Skip with ``problem``, or fail when CI set ``flag=1``."""
    if os.environ.get(flag) == "1":
        pytest.fail(f"{flag}=1 but {problem}")
    pytest.skip(problem)


def tiny_checkpoint(folder: Path, clip_folder: Path, seed: int) -> None:
    from engine.contact.checkpoint import new_model, save_released

    model, tokenizer = new_model("tiny-hcontact", seed=seed)
    save_released(model, tokenizer, folder, dtype="fp32", clip_folder=clip_folder)
