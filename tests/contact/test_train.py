"""Training the tiny preset on CPU: the loss falls, the best model is a loadable models dir, resume is exact."""
from __future__ import annotations

import numpy as np
import pytest

from engine.contact.predict import load_predictor
from engine.contact.train import TrainOptions, _schedule, main, train
from engine.errors import InputError
from fakes import write_contact_dataset


class Interrupt(Exception):
    pass


def _options(data, out, **changes):
    defaults = dict(out=out, human_data=data, steps=30, batch_size=4, lr=2e-3, warmup=3, val_every=10, save_every=10,
                    val_fraction=0.25, seed=0)
    return TrainOptions(**{**defaults, **changes})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, open_body):
    return write_contact_dataset(tmp_path_factory.mktemp("contact-data"), open_body)


@pytest.fixture(scope="module")
def full_run(dataset, tmp_path_factory):
    return train(_options(dataset, tmp_path_factory.mktemp("run")))


def test_loss_falls_clearly_over_30_steps(full_run):
    totals = np.array([loss for _, loss in full_run.losses])
    assert len(totals) == 30 and np.isfinite(totals).all()
    assert totals[-5:].mean() < 0.75 * totals[:5].mean()
    assert [step for step, _ in full_run.validations] == [10, 20, 30]


def test_best_model_is_a_models_dir(full_run, open_body):
    models = full_run.model_folder.parent.parent
    predictor = load_predictor(models, "hcontact", dtype="fp32", body=open_body)
    assert predictor.source == "hcontact"
    image = np.full((32, 32, 3), 200, np.uint8)
    assert predictor.predict_human_contact(image, "chair").probabilities.shape == (open_body.num_vertices,)


def test_resume_continues_from_the_saved_step_exactly(dataset, tmp_path, full_run):
    def stop_at_15(step, total, loss):
        if step == 15:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(_options(dataset, tmp_path), progress=stop_at_15)
    resumed = train(_options(dataset, tmp_path, resume=True))
    assert resumed.start_step == 10 and resumed.end_step == 30  # the last checkpoint was at step 10
    uninterrupted = dict(full_run.losses)
    for step, loss in resumed.losses:
        assert loss == pytest.approx(uninterrupted[step], rel=1e-5)


def test_resume_refuses_another_runs_checkpoint(dataset, tmp_path, full_run):
    out = full_run.model_folder.parent.parent
    with pytest.raises(InputError, match="another run"):
        train(_options(dataset, out, resume=True, seed=4))


def test_schedule_warms_up_then_decays():
    assert [_schedule(step, 4, 10) for step in (0, 1, 3)] == [0.25, 0.5, 1.0]
    assert _schedule(4, 4, 10) == 1.0 and _schedule(7, 4, 10) == 0.5 and _schedule(10, 4, 10) == 0.0


def test_cli_reports_bad_input(tmp_path, capsys):
    assert main(["--human-data", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "out")]) == 2
    assert "missing.npz" in capsys.readouterr().err
    with pytest.raises(InputError, match="exactly one"):
        TrainOptions(out=tmp_path)
    with pytest.raises(InputError, match="steps"):
        TrainOptions(out=tmp_path, human_data=tmp_path / "x.npz", steps=0)


@pytest.fixture(scope="module")
def studio_export(tmp_path_factory):
    """A real studio export folder: two painted open-body tasks, exported by the store."""
    import io
    import uuid

    from annotations import workflow
    from annotations.batch import add_task
    from annotations.export import export_training_data
    from annotations.store import Store, StoreConfig
    from PIL import Image

    root = tmp_path_factory.mktemp("export-train")
    store = Store(f"sqlite:///{root / 's.db'}", data_dir=root / "data", config=StoreConfig(gold_rate=0.0))
    for seed in range(4):
        buffer = io.BytesIO()
        Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(buffer, "PNG")
        add_task(store, buffer.getvalue(), f"p{seed}.png", labels=["chair"], topology="openbody-v1")
    worker = store.ensure_annotator("w").id
    while (assignment := workflow.next_task(store, worker)) is not None:
        first = 100 * assignment.task.id
        workflow.submit(store, worker, assignment.task.id, {"chair": list(range(first, first + 300))}, uuid.uuid4().hex)
    export_training_data(store, root / "export")
    return root / "export"


def test_images_accepts_the_export_folder_or_its_images_folder(studio_export, tmp_path):
    from engine.contact.data import read_damon_npz
    from engine.contact.train import parse_args

    npz = studio_export / "contact_openbody-v1.npz"
    for images in (studio_export, studio_export / "images", None):
        argv = ["--human-data", str(npz), "--out", str(tmp_path / "o")] + (["--images", str(images)] if images else [])
        options = parse_args(argv)
        samples = read_damon_npz(options.human_data, image_root=options.image_root)
        assert len(samples) == 4 and all(sample.image_path.is_file() for sample in samples)
        assert {sample.image_path.parent for sample in samples} == {studio_export / "images"}
    plain = tmp_path / "images"  # an images/ folder that is not an export's stays as given
    plain.mkdir()
    assert parse_args(["--human-data", str(npz), "--out", str(tmp_path / "o"), "--images", str(plain)]).image_root == plain


@pytest.mark.slow
def test_readme_export_example_trains(studio_export, tmp_path):
    """The README's example on an export folder (as it is), shortened to two steps."""
    out = tmp_path / "runs" / "tiny"
    assert main(["--human-data", str(studio_export / "contact_openbody-v1.npz"), "--images", str(studio_export / "images"),
                 "--preset", "tiny", "--steps", "2", "--val-every", "1", "--save-every", "1", "--batch-size", "2",
                 "--val-fraction", "0.25", "--out", str(out)]) == 0
    assert (out / "interactvlm" / "hcontact").is_dir(), "the best model, as a models dir"
