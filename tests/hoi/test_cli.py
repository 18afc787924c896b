"""``python -m engine.hoi.fit`` on the chair example: every output file, the baseline beside it, and bad items
reported and skipped (a short config: a few iterations at a small render size)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from engine.hoi.cli import main
from studio.hoi import EXAMPLES, HOI_EXAMPLES

pytestmark = pytest.mark.slow


def test_cli_writes_every_output_and_the_baseline(tmp_path, capsys):
    example = HOI_EXAMPLES / "person_chair"
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(EXAMPLES / "person_chair.png", images / "a.png")
    (images / "b.png").write_bytes((EXAMPLES / "person_chair.png").read_bytes())
    bodies, masks, contacts = (tmp_path / name for name in ("bodies", "masks", "contacts"))
    for folder, source, suffix in ((bodies, "body.npz", ".npz"), (masks, "mask.png", ".png"), (contacts, "contacts.npz", ".npz")):
        folder.mkdir()
        shutil.copy(example / source, folder / f"a{suffix}")
    (masks / "b.png").write_bytes(b"not an image")  # item b is broken: reported and skipped
    shutil.copy(example / "body.npz", bodies / "b.npz")
    shutil.copy(example / "contacts.npz", contacts / "b.npz")
    code = main(["--image", str(images), "--body", str(bodies), "--object", "chair", "--mask", str(masks),
                 "--contacts", str(contacts), "--out", str(tmp_path / "out"), "--baseline", "--iterations", "3",
                 "--render-size", "64"])
    assert code == 0
    names = {"combined.obj", "human.obj", "object.obj", "fit.glb", "fit.npz", "fit.gif", "overlay.png"}
    assert names <= {p.name for p in (tmp_path / "out" / "a").iterdir()}
    assert names <= {p.name for p in (tmp_path / "out" / "a" / "baseline").iterdir()}
    fit = np.load(tmp_path / "out" / "a" / "fit.npz", allow_pickle=False)
    assert str(fit["method"]) == "interactvlm contacts" and len(fit["loss_contact"]) == 3
    baseline = np.load(tmp_path / "out" / "a" / "baseline" / "fit.npz", allow_pickle=False)
    assert str(baseline["method"]) == "silhouette only (no contacts)" and "loss_contact" not in baseline.files
    assert "b: skipped: the mask must be a PNG/JPEG image" in capsys.readouterr().out
