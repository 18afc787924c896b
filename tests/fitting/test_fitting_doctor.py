"""The doctor names the ViTPose and VPoser files at their exact paths, and finds them when present."""
from __future__ import annotations

from engine.assets import doctor_report
from vposer_fakes import write_tiny_vposer


def test_doctor_lists_the_fitting_folders(tmp_path):
    text = doctor_report(tmp_path).format()
    assert "[missing] ViTPose" in text and "[missing] VPoser" in text
    for relative in ("vitpose/config.json", "vitpose/preprocessor_config.json", "vitpose/model.safetensors",
                     "vposer/V02_05/V02_05.yaml", "vposer/V02_05/snapshots/V02_05_epoch=13_val_loss=0.03.ckpt"):
        assert str(tmp_path / relative) in text
    write_tiny_vposer(tmp_path)
    for name in ("config.json", "preprocessor_config.json", "model.safetensors"):
        (tmp_path / "vitpose").mkdir(exist_ok=True)
        (tmp_path / "vitpose" / name).write_text("{}")
    found = [check for check in doctor_report(tmp_path).checks if check.found]
    names = " ".join(check.name for check in found)
    assert names.count("ViTPose") == 3 and names.count("VPoser") == 2
