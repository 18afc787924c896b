"""Batch sources (folder, zip, CSV, JSONL) with hostile inputs, and the command line."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from store_helpers import count_rows, write_batch, write_image

from annotations import models
from annotations.__main__ import main
from annotations.batch import BatchDefaults, import_batch
from annotations.errors import BatchRejected, UnsafeArchiveError
from annotations.store import Store
from engine.errors import InputError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path):
    return Store(f"sqlite:///{tmp_path / 'b.db'}", data_dir=tmp_path / "data")


def nothing_written(store: Store) -> bool:
    images = store.data_dir / "images"
    return count_rows(store, models.TaskRow) == 0 and (not images.exists() or not any(images.rglob("*.*")))


def zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def png(seed: int) -> bytes:
    path = write_image(Path(f"/tmp/png-{seed}.png"), seed)
    return path.read_bytes()


def test_csv_manifest_with_labels_predictions_and_gold(store, tmp_path):
    folder = write_batch(tmp_path / "b", [{"image": "img0.png"}, {"image": "img1.png"}])
    np.savez(folder / "prior.npz", chair=np.full(6890, 0.2))
    (folder / "tasks.csv").write_text("image,labels,redundancy,priority,prediction,model_name,model_version\n"
                                      "img0.png,chair|supporting,2,1,prior.npz,baseline: category prior,1\n"
                                      "img1.png,bottle,5,0,,,\n")
    report = import_batch(store, folder / "tasks.csv")
    first, second = (store.task(task_id) for task_id in store.task_ids())
    assert report.num_tasks == 2 and first.labels == ("chair", "supporting") and second.redundancy == 5
    assert first.prediction.model_name == "baseline: category prior" and second.prediction is None


def test_malformed_csv_rows_are_all_reported(store, tmp_path):
    folder = write_batch(tmp_path / "b", [{"image": "img0.png"}])
    (folder / "tasks.csv").write_text("image,labels,redundancy,gold\n"
                                      "img0.png,chair,three,false\n"
                                      "img0.png,,2,false\n"
                                      "img0.png,chair,2,maybe\n"
                                      "../outside.png,chair,2,false\n"
                                      "img0.png,chair,0,false\n")
    with pytest.raises(BatchRejected) as caught:
        import_batch(store, folder / "tasks.csv")
    assert [p.split(":")[0] for p in caught.value.problems] == ["row 2", "row 3", "row 4", "row 5", "row 6"]
    assert "redundancy must be an integer" in caught.value.problems[0]
    assert "'..'" in caught.value.problems[3] or ".." in caught.value.problems[3]
    (folder / "tasks.csv").write_text("image,labels,colour\nimg0.png,chair,red\n")
    with pytest.raises(InputError, match="unknown columns \\['colour'\\]"):
        import_batch(store, folder / "tasks.csv")
    assert nothing_written(store)


def test_zip_batches_safe_and_hostile(store, tmp_path):
    good = tmp_path / "good.zip"
    good.write_bytes(zip_of({"photos/a.png": png(1), "photos/b.png": png(2), "__MACOSX/._a.png": b"junk"}))
    report = import_batch(store, good, defaults=BatchDefaults(labels=("chair",)))
    assert report.num_tasks == 2
    with pytest.raises(InputError, match="give the object labels"):
        import_batch(store, good)
    fresh = Store(f"sqlite:///{tmp_path / 'fresh.db'}", data_dir=tmp_path / "fresh")
    evil = tmp_path / "evil.zip"
    evil.write_bytes(zip_of({"a.png": png(3), "../../escape.png": png(4)}))
    with pytest.raises(UnsafeArchiveError, match=r"\.\."):
        import_batch(fresh, evil, defaults=BatchDefaults(labels=("chair",)))
    bomb = tmp_path / "bomb.zip"
    bomb.write_bytes(zip_of({"a.png": png(5), "zeros.png": bytes(64 * 2**20)}))
    with pytest.raises(UnsafeArchiveError):
        import_batch(fresh, bomb, defaults=BatchDefaults(labels=("chair",)))
    assert nothing_written(fresh)
    assert not (tmp_path / "escape.png").exists() and not (tmp_path.parent / "escape.png").exists()


def test_pixel_bomb_and_oversized_images_are_rejected(store, tmp_path):
    from PIL import Image

    folder = tmp_path / "b"
    folder.mkdir()
    Image.new("1", (10000, 5000)).save(folder / "huge.png")  # 50 megapixels, a few KiB on disk
    (folder / "tasks.jsonl").write_text(json.dumps({"image": "huge.png", "labels": ["chair"]}) + "\n")
    with pytest.raises(BatchRejected, match="pixel"):
        import_batch(store, folder)
    assert nothing_written(store)


def test_object_rows_reject_nan_points_and_bad_faces(store, tmp_path):
    folder = tmp_path / "b"
    folder.mkdir()
    points = np.random.default_rng(0).random((10, 3))
    points[3, 1] = np.nan
    np.savez(folder / "nan.npz", points=points)
    np.savez(folder / "faces.npz", points=np.ones((10, 3)), faces=np.array([[0, 1, 99]]))
    np.save(folder / "pickled.npy", np.array([{"a": 1}], dtype=object))
    (folder / "pickled.npz").write_bytes(zip_of({"points.npy": (folder / "pickled.npy").read_bytes()}))
    rows = [{"image": "img0.png", "kind": "object_affordance", "labels": ["grasp"], "object": name}
            for name in ("nan.npz", "faces.npz", "pickled.npz")]
    rows.append({"image": "img0.png", "kind": "object_affordance", "labels": ["fly"], "object": "nan.npz"})
    with pytest.raises(BatchRejected) as caught:
        import_batch(store, write_batch(folder, rows))
    problems = caught.value.problems
    assert "finite" in problems[0] and "faces must be" in problems[1] and "without pickles" in problems[2]
    assert "unknown affordance 'fly'" in problems[3]


def test_cli_import_next_export_stats_migrate(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    folder = write_batch(tmp_path / "b", [{"image": "img0.png", "labels": ["chair"], "redundancy": 1}])
    base = ["--db", db, "--data", str(tmp_path / "data")]
    assert main(base + ["migrate"]) == 0
    assert "cli.db" in json.loads(capsys.readouterr().out)["migrated"]
    assert main(base + ["import", str(folder), "--models", str(tmp_path / "no-models")]) == 0
    assert json.loads(capsys.readouterr().out)["num_tasks"] == 1
    assert main(base + ["next", "worker-7"]) == 0
    assignment = json.loads(capsys.readouterr().out)
    assert assignment["task"] == 1 and assignment["labels"] == ["chair"]
    store = Store(db, data_dir=tmp_path / "data")
    from annotations import workflow

    annotator = store.ensure_annotator("worker-7")
    workflow.submit(store, annotator.id, 1, {"chair": [4, 5]}, "cli-test-key-1")
    assert main(base + ["stats"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["submissions"] == 1 and stats["annotators"][0]["external_id"] == "worker-7"
    assert main(base + ["export", str(tmp_path / "out")]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["tasks"] == 1
    assert main(base + ["import", str(tmp_path / "nope.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_runs_as_a_module(tmp_path):
    result = subprocess.run([sys.executable, "-m", "annotations", "--db", f"sqlite:///{tmp_path / 'm.db'}",
                             "migrate"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "m.db" in json.loads(result.stdout)["migrated"]


# ---- bodies the server cannot show ----------------------------------------------------------------------
def install_body(models_dir: Path, relative: str) -> Path:
    """A stand-in body file: the import only looks for the file, as the doctor does."""
    (models_dir / relative).parent.mkdir(parents=True, exist_ok=True)
    (models_dir / relative).write_bytes(b"licensed file")
    return models_dir


def test_tasks_on_a_body_that_is_not_installed_are_refused_naming_the_file(store, tmp_path):
    folder = write_batch(tmp_path / "b", [{"image": "img0.png", "labels": ["chair"], "topology": "smplh-6890"},
                                          {"image": "img1.png", "labels": ["cup"], "topology": "smplx-10475"},
                                          {"image": "img2.png", "labels": ["cup"], "topology": "openbody-v1"}])
    models_dir = tmp_path / "models"
    with pytest.raises(BatchRejected) as caught:
        import_batch(store, folder, models_dir=models_dir)
    problems = caught.value.problems
    assert len(problems) == 2 and nothing_written(store)
    assert "smplh-6890" in problems[0] and "body/smplh/SMPLH_NEUTRAL.pkl" in problems[0] and "item 1)" in problems[0]
    assert "body/smplx/SMPLX_NEUTRAL.npz" in problems[1] and "installed body (openbody-v1)" in problems[1]
    install_body(models_dir, "body/smplx/SMPLX_NEUTRAL.pkl")  # the second accepted name counts too
    with pytest.raises(BatchRejected, match="SMPLH_NEUTRAL.pkl") as caught:
        import_batch(store, folder, models_dir=models_dir)
    assert len(caught.value.problems) == 1
    report = import_batch(store, folder, models_dir=models_dir, force=True)
    assert report.num_tasks == 3
    assert [store.task(task_id).topology for task_id in store.task_ids()] == ["smplh-6890", "smplx-10475", "openbody-v1"]


def test_the_default_topology_is_the_best_body_installed(store, tmp_path):
    folder = write_batch(tmp_path / "b", [{"image": "img0.png", "labels": ["chair"]}])
    models_dir = tmp_path / "models"
    import_batch(store, folder, models_dir=models_dir)
    install_body(models_dir, "body/smplx/SMPLX_NEUTRAL.npz")
    import_batch(store, folder, models_dir=models_dir, allow_repeat=True)
    install_body(models_dir, "body/smplh/SMPLH_NEUTRAL.npz")
    import_batch(store, folder, models_dir=models_dir, allow_repeat=True)
    import_batch(store, folder, allow_repeat=True)  # no models folder given: the library default
    assert [store.task(task_id).topology for task_id in store.task_ids()] == [
        "openbody-v1", "smplx-10475", "smplh-6890", "smplh-6890"]


def test_cli_import_refuses_an_unshowable_body_unless_forced(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    folder = write_batch(tmp_path / "b", [{"image": "img0.png", "labels": ["chair"]}])
    base = ["import", str(folder), "--models", str(tmp_path / "models"), "--db", db, "--data", str(tmp_path / "d")]
    assert main(base + ["--topology", "smplh-6890"]) == 2
    assert "SMPLH_NEUTRAL.pkl" in capsys.readouterr().err
    assert main(base + ["--topology", "smplh-6890", "--force"]) == 0
    assert json.loads(capsys.readouterr().out)["num_tasks"] == 1
    assert main(base + ["--allow-repeat"]) == 0
    capsys.readouterr()
    store = Store(db, data_dir=tmp_path / "d")
    assert [store.task(task_id).topology for task_id in store.task_ids()] == ["smplh-6890", "openbody-v1"]


def test_cli_store_options_go_before_or_after_the_subcommand(tmp_path, capsys):
    after, before = tmp_path / "after.db", tmp_path / "before.db"
    assert main(["migrate", "--db", f"sqlite:///{after}"]) == 0
    assert "after.db" in json.loads(capsys.readouterr().out)["migrated"] and after.is_file()
    assert main(["--db", f"sqlite:///{before}", "migrate"]) == 0
    assert "before.db" in json.loads(capsys.readouterr().out)["migrated"] and before.is_file()
    assert main(["--db", f"sqlite:///{before}", "stats", "--data", str(tmp_path / "d")]) == 0
    assert json.loads(capsys.readouterr().out)["submissions"] == 0
