"""The engine on a real local Ray cluster: tiny seeded checkpoints served by Ray Serve through the Engine API.

Deployed exactly as docs/DEPLOY.md's one-box commands do: ``python app.py engine --config
deploy/engine-cpu.toml`` (here in-process, with ``--address`` and ``--models`` pointing at the test's).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from scale_helpers import ROOT

CONFIG = ROOT / "deploy" / "engine-cpu.toml"
HCONTACT = "interactvlm-hcontact"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(ray_address, tiny_models):
    import app

    assert app.main(["engine", "--config", str(CONFIG), "--address", ray_address, "--models", str(tiny_models)]) == 0
    engine = app.build_engine(str(tiny_models), "cpu", engine=f"ray://{ray_address}", engine_config=str(CONFIG))
    yield engine
    assert app.main(["engine", "--config", str(CONFIG), "--address", ray_address, "--down"]) == 0
    import ray

    ray.shutdown()  # this test process leaves the cluster (the rest of the suite needs no driver)


@pytest.fixture(scope="module")
def local(tiny_models):
    """The in-process engine on the same models dir: the reference."""
    import app

    return app.build_engine(str(tiny_models), "cpu")


def reference(local, requests):
    with local.use(HCONTACT) as model:
        return model.predict_human_contact_batch(requests)


def test_contact_on_ray_serve_equals_the_local_engine(served, local, picture_bytes):
    from engine.contact.predict import HumanContactResult

    requests = [(picture_bytes, "chair"), (picture_bytes, "cup"), (picture_bytes, None)]
    with served.use(HCONTACT) as model:
        results = model.predict_human_contact_batch(requests)
    expected = reference(local, requests)
    assert [type(result) for result in results] == [HumanContactResult] * 3, "plain dataclasses came back"
    for got, want in zip(results, expected):
        assert got.object_label == want.object_label and got.source == want.source == "hcontact"
        assert got.probabilities.dtype == np.float32 and got.probabilities.shape == want.probabilities.shape
        np.testing.assert_allclose(got.probabilities, want.probabilities, atol=1e-5)
        np.testing.assert_allclose(got.view_masks, want.view_masks, atol=1e-5)
        assert got.answer == want.answer and got.parts == want.parts
    assert results[0].probabilities.std() > 0, "a real (if random) prediction"
    # Single calls (no batching path) give the same numbers.
    with served.use(HCONTACT) as model:
        single = model.predict_human_contact(picture_bytes, "chair")
    np.testing.assert_allclose(single.probabilities, expected[0].probabilities, atol=1e-5)


def test_bad_input_comes_back_as_the_same_words(served, local, picture_bytes):
    from engine.errors import InputError

    with pytest.raises(InputError) as remote, served.use(HCONTACT) as model:
        model.predict_human_contact(b"not an image", "chair")
    with pytest.raises(InputError) as here, local.use(HCONTACT) as model:
        model.predict_human_contact(b"not an image", "chair")
    def words(error):  # PIL names an object by its address, which differs between processes
        return re.sub(r"0x[0-9a-f]+", "0x", str(error.value))
    assert words(remote) == words(here) and "Traceback" not in str(remote.value)
    with pytest.raises(InputError, match="a batch holds 1 to 16"), served.use(HCONTACT) as model:
        model.predict_human_contact_batch([(picture_bytes, "chair")] * 17)
    with pytest.raises(InputError, match="no method 'steal'"), served.use(HCONTACT) as model:
        model.steal()


def test_a_model_that_cannot_load_is_reported_in_words(served):
    from engine.errors import MissingAssetError

    with pytest.raises(MissingAssetError) as failure, served.use("interactvlm-oafford") as model:
        model.predict_object_affordance(b"", np.zeros((4, 3)), object_label="chair")
    assert failure.value.what.startswith("file for model 'interactvlm-oafford'")
    status = served.status()
    oafford = next(model for model in status.models if model.name == "interactvlm-oafford")
    assert not oafford.available and oafford.where == "ray" and oafford.missing[0].name == "config.json"
    text = status.format()
    assert "cannot answer: file for model 'interactvlm-oafford'" in text


def test_status_and_doctor_show_deployments_replicas_and_gpus(served, ray_address, tiny_models, capsys):
    import app

    status = served.status()
    rows = {row.name: row for row in status.cluster.deployments}
    assert set(rows) == {HCONTACT, "interactvlm-oafford", "finetuned-hcontact"}
    assert rows[HCONTACT].state == "HEALTHY" and rows[HCONTACT].replicas == "2" and rows[HCONTACT].max_batch_size == 8
    assert status.cluster.gpus_total == 0 and status.cluster.cpus_total == pytest.approx(float(os.cpu_count() or 2), abs=64)
    hcontact = next(model for model in status.models if model.name == HCONTACT)
    assert hcontact.available and hcontact.where == "ray"
    assert app.main(["doctor", "--models", str(tiny_models), "--engine", f"ray://{ray_address}",
                     "--engine-config", str(CONFIG)]) == 0
    out = capsys.readouterr().out
    assert f"Ray cluster at {ray_address}: GPUs 0 of 0 in use" in out
    assert "interactvlm-hcontact: HEALTHY" in out and "of 2, 0 GPU each, batches of up to 8" in out
    assert "[ready]   interactvlm-hcontact on Ray Serve" in out


def test_multiplexed_checkpoints_load_by_id_and_ray_evicts(served, tiny_models, picture_bytes):
    from engine.contact.checkpoint import CLIP_FOLDER
    from engine.contact.predict import load_predictor
    from engine.errors import InputError, MissingAssetError

    got = {}
    for name in ("round-1", "round-2", "round-1"):
        with served.use(f"finetuned-hcontact/{name}") as model:
            got[name] = model.predict_human_contact(picture_bytes, "chair")
        loaded = served.replica_infos("finetuned-hcontact", refresh=True)[0].checkpoints
        assert loaded == (name,), "max_models_per_replica = 1: the other checkpoint was evicted by Ray"
    assert got["round-1"].answer != got["round-2"].answer, "two checkpoints, two answers"
    # Each checkpoint answers exactly as the local loader does with that folder as the released model.
    for name, seed_folder in (("round-1", tiny_models), ("round-2", None)):
        if seed_folder is None:
            seed_folder = tiny_models.parent / f"{name}-alone"
            if not seed_folder.exists():
                shutil.copytree(tiny_models / "finetuned" / "hcontact" / name, seed_folder / "interactvlm" / "hcontact")
                shutil.copytree(tiny_models / CLIP_FOLDER, seed_folder / CLIP_FOLDER)
        want = load_predictor(seed_folder, "hcontact", device="cpu", dtype="fp32").predict_human_contact(
            picture_bytes, "chair")
        assert got[name].answer == want.answer
        np.testing.assert_allclose(got[name].probabilities, want.probabilities, atol=1e-5)
    assert got["round-1"].probabilities.std() > 0
    with pytest.raises(MissingAssetError, match="fine-tuned checkpoint 'round-9'"), \
            served.use("finetuned-hcontact/round-9") as model:
        model.predict_human_contact(picture_bytes, "chair")
    with pytest.raises(InputError, match="one folder name"), served.use("finetuned-hcontact/..") as model:
        model.predict_human_contact(picture_bytes, "chair")
    with pytest.raises(InputError, match="ask for finetuned-hcontact/<checkpoint id>"):
        served.get("finetuned-hcontact")


def test_killing_a_replica_during_fifty_requests_loses_none(served, local, picture_bytes):
    expected = reference(local, [(picture_bytes, "chair")])[0].probabilities
    pids = set()
    for _ in range(40):
        pids |= {info.pid for info in served.replica_infos(HCONTACT, refresh=True)}
        if len(pids) == 2:
            break
    assert len(pids) == 2, "two live replicas to start with"
    victim = min(pids)
    before = served.retries.get(HCONTACT, 0)
    done = []

    def request(index: int) -> np.ndarray:
        with served.use(HCONTACT) as model:
            result = model.predict_human_contact_batch([(picture_bytes, "chair")])[0].probabilities
        done.append(index)
        return result

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(request, index) for index in range(50)]
        while len(done) < 6:
            time.sleep(0.01)
        os.kill(victim, signal.SIGKILL)
        answers = [future.result(timeout=300) for future in futures]
    assert len(answers) == 50
    for answer in answers:
        np.testing.assert_allclose(answer, expected, atol=1e-5)
    retried = served.retries.get(HCONTACT, 0) - before
    assert retried >= 1, "requests in flight on the killed replica were retried on the other"
    assert f"{served.retries[HCONTACT]} call(s) retried after a replica died" in served.status().format()


def test_the_studio_contact_endpoint_on_ray_equals_the_local_engine(served, local, ray_address, tiny_models,
                                                                    picture_bytes, tmp_path):
    """``app.py serve --engine ray://...`` in-process: the demo's contact endpoint through gradio_client."""
    from gradio_client import Client, handle_file

    import app
    from studio.server import BackgroundServer
    from studio.settings import StudioSettings

    picture = tmp_path / "person.png"
    picture.write_bytes(picture_bytes)
    settings = StudioSettings(models_dir=tiny_models, db_url=f"sqlite:///{tmp_path / 'store.db'}",
                              data_dir=tmp_path / "data", device="cpu")
    studio = app.build_studio(settings, engine=f"ray://{ray_address}", engine_config=str(CONFIG))
    assert type(studio.engine).__name__ == "RayEngine"
    server = BackgroundServer(studio)
    try:
        client = Client(server.url + "/", verbose=False)
        _, _, _, source, files = client.predict(handle_file(str(picture)), ["chair", "cup"], api_name="/predict_contact")
    finally:
        server.stop()
    assert "hcontact" in source and "baseline" not in source
    expected = reference(local, [(picture_bytes, "chair"), (picture_bytes, "cup")])
    with np.load(files[0]) as data:
        np.testing.assert_allclose(data["probabilities"], np.stack([item.probabilities for item in expected]), atol=1e-5)
        assert data["probabilities"].std() > 0


def test_a_model_missing_from_the_cluster_is_reported_in_words(served, local, picture_bytes):
    from engine.errors import InputError
    from engine.serving import RayEngine, ServeConfig

    config = ServeConfig.from_dict({"address": served.serve_config.address, "app": "never-deployed",
                                    "models": {HCONTACT: {"replicas": 1}}})
    engine = RayEngine(config, local)
    with pytest.raises(InputError, match=f"the {HCONTACT} model is not deployed on the Ray cluster at "
                                         f"{re.escape(config.address)}; the administrator can run"):
        with engine.use(HCONTACT) as model:
            model.predict_human_contact(picture_bytes, "chair")
    status = engine.status()
    assert status.cluster.deployments[0].state == "NOT DEPLOYED"
    assert not next(model for model in status.models if model.name == HCONTACT).available
    # Models the config does not deploy stay in this process.
    with engine.use("category-prior") as prior:
        assert prior.predict_human_contact(picture_bytes, "chair").is_baseline
