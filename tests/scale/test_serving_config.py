"""The engine config (deploy/*.toml), the --engine option and the rule that the studio never imports ray: no cluster needed."""
from __future__ import annotations

import subprocess
import sys

import pytest

from scale_helpers import ROOT
from engine.errors import InputError
from engine.serving import DeploymentConfig, MultiplexConfig, ServeConfig, parse_address


def config(**models) -> ServeConfig:
    return ServeConfig.from_dict({"address": "127.0.0.1:6390", "models": models})


def test_the_shipped_configs_read_as_documented():
    gpu = ServeConfig.from_file(ROOT / "deploy" / "engine.toml")
    hcontact = gpu.deployment("interactvlm-hcontact")
    assert hcontact.num_gpus == 1 and hcontact.replicas is None and (hcontact.min_replicas, hcontact.max_replicas) == (1, 4)
    assert hcontact.serve_options()["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4,
                                                               "target_ongoing_requests": 4}
    assert hcontact.serve_options()["ray_actor_options"] == {"num_cpus": 1, "num_gpus": 1}
    assert gpu.deployment("sam-box").num_gpus == 0.25 and gpu.multiplex("finetuned-hcontact").max_models_per_replica == 3
    cpu = ServeConfig.from_file(ROOT / "deploy" / "engine-cpu.toml", address="ray://10.0.0.5:7000")
    assert cpu.address == "10.0.0.5:7000" and cpu.device == "cpu"
    assert cpu.deployment("interactvlm-hcontact").serve_options()["num_replicas"] == 2
    assert cpu.app_name("interactvlm-hcontact") == "studio-engine.interactvlm-hcontact"


@pytest.mark.parametrize("text", ["127.0.0.1", "ray://host", "ray://host:0", "ray://host:70000", "http://h:1/x", "", 7])
def test_bad_addresses_are_refused_in_words(text):
    with pytest.raises(InputError, match="ray://HOST:PORT"):
        parse_address(text)


@pytest.mark.parametrize("table, message", [
    ({"num_gpus": -1}, r"num_gpus must be a number >= 0"),
    ({"num_gpus": 1.5}, r"num_gpus above 1 must be whole"),
    ({"replicas": 0}, r"replicas must be a whole number >= 1"),
    ({"replicas": 1.5}, r"replicas must be a whole number"),
    ({"min_replicas": 3, "max_replicas": 2}, r"min_replicas \(3\) exceeds max_replicas \(2\)"),
    ({"max_batch_size": 17}, r"max_batch_size must be at most 16"),
    ({"max_batch_size": True}, r"max_batch_size must be a whole number"),
    ({"gpu": 1}, r"unknown key\(s\) gpu"),
])
def test_bad_deployment_values_name_the_key(table, message):
    with pytest.raises(InputError, match=message):
        config(**{"interactvlm-hcontact": table})


def test_autoscaling_when_only_bounds_are_given():
    item = config(**{"vitpose": {"min_replicas": 0, "max_replicas": 3}}).deployment("vitpose")
    assert item.replicas is None and "num_replicas" not in item.serve_options()


@pytest.mark.parametrize("table, message", [
    ({}, r"needs folder"),
    ({"folder": "/abs/path"}, r"relative to the models dir"),
    ({"folder": "../outside"}, r"relative to the models dir"),
    ({"folder": "f", "variant": "huge"}, r"variant must be one of hcontact, oafford, joint"),
    ({"folder": "f", "max_models_per_replica": 0}, r"max_models_per_replica must be a whole number >= 1"),
])
def test_bad_multiplex_values_name_the_key(table, message):
    with pytest.raises(InputError, match=message):
        ServeConfig.from_dict({"address": "h:1", "multiplexed": {"tuned": table}})


def test_bad_files_and_duplicates(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        ServeConfig.from_file(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("address = \n")
    with pytest.raises(InputError, match="not valid TOML"):
        ServeConfig.from_file(broken)
    with pytest.raises(InputError, match="no cluster address"):
        ServeConfig.from_dict({})
    with pytest.raises(InputError, match="deployed twice: a"):
        ServeConfig(address="h:1", deployments=(DeploymentConfig("a"),), multiplexed=(MultiplexConfig("a", "f"),))
    with pytest.raises(InputError, match="without dots"):
        ServeConfig.from_dict({"address": "h:1", "app": "a.b"})
    with pytest.raises(InputError, match=r"unknown key\(s\) adress"):
        ServeConfig.from_dict({"adress": "h:1"})


@pytest.mark.slow
def test_cli_refuses_a_bad_engine_and_a_missing_cluster(tmp_path, capsys):
    import app

    assert app.main(["serve", "--engine", "grpc://x:1", "--models", str(tmp_path), "--db",
                     f"sqlite:///{tmp_path / 's.db'}"]) == 2
    assert "--engine must be 'local', 'ray' (the config's address) or ray://HOST:PORT" in capsys.readouterr().err
    assert app.main(["engine", "--config", str(tmp_path / "none.toml")]) == 2
    assert "engine config" in capsys.readouterr().err
    config = tmp_path / "nobody.toml"
    config.write_text('address = "127.0.0.1:1"\n[models.category-prior]\nreplicas = 1\n')
    assert app.main(["engine", "--config", str(config)]) == 2
    assert "no Ray cluster answers at 127.0.0.1:1 (start one with `ray start --head --port 1`" in capsys.readouterr().err
    assert app.main(["serve", "--engine", "ray://127.0.0.1:1", "--engine-config", str(config), "--models", str(tmp_path),
                     "--db", f"sqlite:///{tmp_path / 's.db'}"]) == 2
    assert "no Ray cluster answers at 127.0.0.1:1" in capsys.readouterr().err
    assert app.main(["doctor", "--models", str(tmp_path), "--engine", "ray", "--engine-config", str(config)]) == 0
    assert "Engine: no Ray cluster answers at 127.0.0.1:1" in capsys.readouterr().out, "the config's address"
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('address = "127.0.0.1:1"\n[models.gpt-5]\nreplicas = 1\n')
    assert app.main(["engine", "--config", str(unknown)]) == 2
    assert "deploys unknown model(s) gpt-5; registered: interactvlm-hcontact" in capsys.readouterr().err


@pytest.mark.slow
def test_nothing_in_the_studio_imports_ray():
    sources = [path for path in (ROOT / "studio").rglob("*.py") if "node_modules" not in path.parts]
    assert sources and not [path for path in sources if "import ray" in path.read_text() or "from ray" in path.read_text()]
    code = ("import sys; import app, studio.server, studio.demo, studio.annotate, studio.admin; "
            "app.build_engine(None, 'cpu'); assert 'ray' not in sys.modules, 'ray was imported'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=300)


def test_the_batch_limit_and_variants_are_the_predictors():
    from engine.contact.predict import MAX_BATCH, VARIANTS
    from engine import serving

    assert serving.BATCH_LIMIT == MAX_BATCH and serving.VARIANTS == VARIANTS == tuple(serving.VARIANT_TARGETS)
