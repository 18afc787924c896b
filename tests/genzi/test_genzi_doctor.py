"""The doctor names GenZI's two model folders, missing or found."""
from __future__ import annotations

from engine.assets import doctor_report


def test_doctor_lists_genzi_folders(tmp_path):
    report = doctor_report(tmp_path).format()
    assert f"[missing] Stable Diffusion 2 inpainting (diffusers folder): expected at {tmp_path / 'sd2-inpainting' / 'model_index.json'}" in report
    assert f"[missing] CLIP ViT-B/32 folder: expected at {tmp_path / 'clip-vit-base-patch32' / 'config.json'}" in report
    (tmp_path / "sd2-inpainting").mkdir()
    (tmp_path / "sd2-inpainting" / "model_index.json").write_text("{}")
    (tmp_path / "clip-vit-base-patch32").mkdir()
    (tmp_path / "clip-vit-base-patch32" / "config.json").write_text("{}")
    report = doctor_report(tmp_path).format()
    assert "[found]   Stable Diffusion 2 inpainting (diffusers folder)" in report
    assert "[found]   CLIP ViT-B/32 folder" in report
