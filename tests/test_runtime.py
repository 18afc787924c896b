"""The shared engine: device choice, config validation, lazy loading, LRU eviction, pinning, concurrency, status."""
from __future__ import annotations

import logging
import threading
import time
import weakref
from pathlib import Path

import pytest
import torch

from engine.errors import InputError, MissingAssetError
from engine.runtime import (Engine, EngineConfig, LoadContext, ModelSpec, default_memory_budget, model_bytes,
                            physical_ram_bytes, pick_device)

LINEAR_BYTES = 256 * 256 * 4 + 256 * 4  # Linear(256, 256) float32: weight + bias
TWO_MODELS = 2 * LINEAR_BYTES
JOIN_SECONDS = 10  # only a guard against a hung test; never asserted as a duration


def linear_loader(calls: list[str] | None = None):
    def load(context: LoadContext) -> torch.nn.Module:
        if calls is not None:
            calls.append(context.name)
        return torch.nn.Linear(256, 256).to(context.device)
    return load


def make_engine(tmp_path: Path, budget: int | None = TWO_MODELS, names=("a", "b", "c"), estimate=None,
                calls: list[str] | None = None) -> Engine:
    engine = Engine(EngineConfig(models_dir=tmp_path, device="cpu", memory_budget_bytes=budget))
    for name in names:
        engine.register(ModelSpec(name, linear_loader(calls), capability="test", estimate_bytes=estimate))
    return engine


def run_threads(count: int, target) -> list[object]:
    """Run ``target(index)`` on ``count`` threads; return each result or the exception it raised."""
    results: list[object] = [None] * count

    def body(index: int) -> None:
        try:
            results[index] = target(index)
        except Exception as error:  # recorded and asserted on by the test
            results[index] = error

    threads = [threading.Thread(target=body, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_SECONDS)
    assert not any(thread.is_alive() for thread in threads)
    return results


# -- device and config ----------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback; this machine has CUDA")
def test_pick_device_on_a_cpu_machine():
    assert pick_device() == torch.device("cpu")
    assert pick_device("auto") == torch.device("cpu")
    assert pick_device(" CPU ") == torch.device("cpu")
    for unavailable in ("cuda", "cuda:0", "cuda:3"):
        with pytest.raises(InputError, match="CUDA is not available"):
            pick_device(unavailable)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pick_device_on_a_cuda_machine():
    assert pick_device("auto") == torch.device("cuda")  # the current device, not a fixed cuda:0
    with pytest.raises(InputError, match="does not exist"):
        pick_device(f"cuda:{torch.cuda.device_count()}")
    assert default_memory_budget(torch.device("cuda")) == int(torch.cuda.mem_get_info()[1] * 0.8)


@pytest.mark.parametrize("bad", ["banana", "", "xla", "cuda:x", 3])
def test_pick_device_rejects_unknown(bad):
    with pytest.raises(InputError, match="accepted are|must be one of"):
        pick_device(bad)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="checks the refusal; this machine has MPS")
def test_pick_device_rejects_missing_mps():
    with pytest.raises(InputError, match="MPS is not available"):
        pick_device("mps")


@pytest.mark.parametrize("changes, field", [
    ({"memory_budget_bytes": 0}, "memory_budget_bytes"),
    ({"memory_budget_bytes": -5}, "memory_budget_bytes"),
    ({"memory_budget_bytes": 1.5}, "memory_budget_bytes"),
    ({"memory_budget_bytes": True}, "memory_budget_bytes"),
    ({"gpu_concurrency": 0}, "gpu_concurrency"),
    ({"gpu_concurrency": "2"}, "gpu_concurrency"),
    ({"device": "banana"}, "device"),
    ({"models_dir": 42}, "models_dir"),
])
def test_config_rejects_bad_values(tmp_path, changes, field):
    values = {"models_dir": tmp_path, **changes}
    with pytest.raises(InputError, match=field if field != "device" else "banana"):
        EngineConfig(**values)


def test_config_defaults_and_path_coercion(tmp_path):
    config = EngineConfig(models_dir=str(tmp_path))
    assert config.models_dir == tmp_path and isinstance(config.models_dir, Path)
    assert (config.device, config.memory_budget_bytes, config.gpu_concurrency) == ("auto", None, 1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU budget; this machine has CUDA")
def test_engine_device_and_automatic_cpu_budget(tmp_path):
    engine = Engine(EngineConfig(models_dir=tmp_path, gpu_concurrency=3))
    ram = physical_ram_bytes()
    assert ram is not None and ram > 0
    assert engine.device == torch.device("cpu")
    assert engine.budget_bytes == int(ram * 0.5)
    assert engine.gpu_concurrency == 3
    with pytest.raises(InputError, match="CUDA is not available"):
        Engine(EngineConfig(models_dir=tmp_path, device="cuda"))


# -- registry ---------------------------------------------------------------------------------------

def test_duplicate_registration_is_an_error(tmp_path):
    engine = make_engine(tmp_path, names=("a",))
    with pytest.raises(ValueError, match="already registered"):
        engine.register(ModelSpec("a", linear_loader(), capability="other"))
    assert engine.names() == ("a",)


def test_unknown_name_lists_registered_names(tmp_path):
    engine = make_engine(tmp_path, names=("alpha", "beta"))
    for call in (lambda: engine.get("gamma"), lambda: engine.unload("gamma")):
        with pytest.raises(InputError, match=r"unknown model 'gamma'; registered models: alpha, beta"):
            call()


def test_spec_validation():
    with pytest.raises(ValueError, match="relative"):
        ModelSpec("x", linear_loader(), "test", requires=(Path("/abs/file.bin"),))
    with pytest.raises(ValueError, match="estimate_bytes"):
        ModelSpec("x", linear_loader(), "test", estimate_bytes=-1)
    with pytest.raises(TypeError, match="callable"):
        ModelSpec("x", "not a loader", "test")
    assert ModelSpec("x", linear_loader(), "test", requires=["a/b.pt"]).requires == (Path("a/b.pt"),)


# -- lazy loading, accounting, eviction -------------------------------------------------------------

def test_lazy_load_once_and_exact_bytes(tmp_path):
    calls: list[str] = []
    engine = make_engine(tmp_path, calls=calls)
    assert engine.loaded() == () and calls == []
    first = engine.get("a")
    assert engine.get("a") is first
    assert calls == ["a"]
    assert engine.memory_used() == LINEAR_BYTES


def test_progress_reaches_the_caller(tmp_path):
    engine = Engine(EngineConfig(models_dir=tmp_path, device="cpu", memory_budget_bytes=TWO_MODELS))

    def load(context: LoadContext):
        context.progress(0.5, "half way")
        return torch.nn.Linear(256, 256)

    engine.register(ModelSpec("a", load, "test"))
    reports: list[tuple[float, str]] = []
    engine.get("a", progress=lambda fraction, message: reports.append((fraction, message)))
    assert [fraction for fraction, _ in reports] == [0.0, 0.5, 1.0]
    assert reports[0][1] == "Loading a" and reports[1][1] == "half way" and reports[2][1].startswith("Loaded a in")


@pytest.mark.parametrize("estimate", [None, LINEAR_BYTES], ids=["measured-after", "estimated-ahead"])
def test_third_model_evicts_the_least_recently_used(tmp_path, estimate):
    engine = make_engine(tmp_path, estimate=estimate)
    engine.get("a")
    engine.get("b")
    assert engine.memory_used() == TWO_MODELS  # exactly at the budget: nothing evicted
    engine.get("a")  # refreshes a, so b is now the least recently used
    engine.get("c")
    assert engine.loaded() == ("a", "c")
    assert engine.memory_used() == TWO_MODELS


def test_eviction_drops_the_engine_reference(tmp_path):
    engine = make_engine(tmp_path)
    evicted = weakref.ref(engine.get("a"))
    engine.get("b")
    engine.get("c")
    assert engine.loaded() == ("b", "c")
    assert evicted() is None


def test_pinned_model_is_not_evicted(tmp_path):
    engine = make_engine(tmp_path)
    with engine.use("a") as model_a:
        engine.get("b")
        engine.get("c")  # a is least recently used but pinned, so b goes
        assert engine.loaded() == ("a", "c")
        assert engine.get("a") is model_a  # refreshes a: now c is the least recently used
        assert [(loaded.name, loaded.in_use) for loaded in engine.status().loaded] == [("c", 0), ("a", 1)]
        with pytest.raises(InputError, match="in use"):
            engine.unload("a")
    assert [loaded.in_use for loaded in engine.status().loaded] == [0, 0]
    assert engine.unload("a") is True
    assert engine.unload("a") is False
    assert engine.loaded() == ("c",) and engine.memory_used() == LINEAR_BYTES


def test_over_budget_while_pinned_catches_up_on_release(tmp_path, caplog):
    engine = make_engine(tmp_path, budget=LINEAR_BYTES)
    with engine.use("a"):
        with caplog.at_level(logging.WARNING, logger="engine.runtime"):
            engine.get("b")  # a cannot go while in use: over budget, with a warning
        assert engine.loaded() == ("a", "b")
        assert any("in use" in record.getMessage() for record in caplog.records)
    assert engine.loaded() == ("b",)  # releasing the pin evicted the least recently used (a)


def test_model_larger_than_the_budget_loads_with_a_warning(tmp_path, caplog):
    engine = make_engine(tmp_path, budget=LINEAR_BYTES - 1)
    engine.get("a")
    with caplog.at_level(logging.WARNING, logger="engine.runtime"):
        engine.get("b")
    assert engine.loaded() == ("b",)
    assert engine.memory_used() == LINEAR_BYTES
    assert any("more than the whole" in record.getMessage() for record in caplog.records)


def test_memory_bytes_override_and_fallbacks(tmp_path):
    class Sized:
        def memory_bytes(self) -> int:
            return 12345

    engine = Engine(EngineConfig(models_dir=tmp_path, device="cpu", memory_budget_bytes=10 ** 6))
    engine.register(ModelSpec("sized", lambda context: Sized(), "test", estimate_bytes=1))
    engine.register(ModelSpec("estimated", lambda context: object(), "test", estimate_bytes=777))
    engine.register(ModelSpec("unknown", lambda context: object(), "test"))
    for name in engine.names():
        engine.get(name)
    assert {loaded.name: loaded.bytes for loaded in engine.status().loaded} == {
        "sized": 12345, "estimated": 777, "unknown": 0}
    assert engine.memory_used() == 12345 + 777


def test_shared_tensors_count_once():
    module = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.Linear(256, 256))
    module[1].weight = module[0].weight  # tied weights
    module.register_buffer("view", module[0].bias.detach())  # same memory as a parameter
    assert model_bytes(module) == LINEAR_BYTES + 256 * 4


# -- concurrency ----------------------------------------------------------------------------------

def test_concurrent_gets_of_one_name_load_once(tmp_path):
    engine = Engine(EngineConfig(models_dir=tmp_path, device="cpu", memory_budget_bytes=TWO_MODELS))
    calls: list[str] = []
    barrier = threading.Barrier(8)

    def slow(context: LoadContext):
        calls.append(context.name)
        time.sleep(0.2)  # keeps the load in flight while the other threads arrive
        return torch.nn.Linear(256, 256)

    engine.register(ModelSpec("a", slow, "test"))
    results = run_threads(8, lambda index: (barrier.wait(), engine.get("a"))[1])
    assert calls == ["a"]
    assert all(isinstance(result, torch.nn.Linear) for result in results)
    assert all(result is results[0] for result in results)
    assert engine.memory_used() == LINEAR_BYTES


def test_concurrent_uses_of_one_name_pin_and_release(tmp_path):
    engine = Engine(EngineConfig(models_dir=tmp_path, device="cpu", memory_budget_bytes=TWO_MODELS))
    calls: list[str] = []
    barrier = threading.Barrier(4)
    inside = threading.Barrier(4)  # all four hold their pin at the same moment

    def slow(context: LoadContext):
        calls.append(context.name)
        time.sleep(0.2)
        return torch.nn.Linear(256, 256)

    def request(index: int):
        barrier.wait()
        with engine.use("a") as model:
            inside.wait(JOIN_SECONDS)
            pins = engine.status().loaded[0].in_use
            inside.wait(JOIN_SECONDS)  # nobody releases before everyone has looked
        return model, pins

    engine.register(ModelSpec("a", slow, "test"))
    results = run_threads(4, request)
    assert calls == ["a"]
    assert all(model is results[0][0] for model, _ in results)
    assert [pins for _, pins in results] == [4, 4, 4, 4]
    assert engine.status().loaded[0].in_use == 0


def test_different_names_load_concurrently(tmp_path):
    engine = Engine(EngineConfig(models_dir=tmp_path, device="cpu", memory_budget_bytes=TWO_MODELS))
    started = {"a": threading.Event(), "b": threading.Event()}
    overlapped: dict[str, bool] = {}

    def loader(mine: str, other: str):
        def load(context: LoadContext):
            started[mine].set()
            # Each load waits for the other to have started: only possible if neither blocks the other.
            overlapped[mine] = started[other].wait(JOIN_SECONDS)
            return torch.nn.Linear(256, 256)
        return load

    engine.register(ModelSpec("a", loader("a", "b"), "test"))
    engine.register(ModelSpec("b", loader("b", "a"), "test"))
    results = run_threads(2, lambda index: engine.get("ab"[index]))
    assert overlapped == {"a": True, "b": True}
    assert all(isinstance(result, torch.nn.Linear) for result in results)
    assert set(engine.loaded()) == {"a", "b"}


def test_failed_load_reaches_every_waiter_then_retries(tmp_path):
    engine = Engine(EngineConfig(models_dir=tmp_path, device="cpu", memory_budget_bytes=TWO_MODELS))
    calls: list[str] = []
    fail = threading.Event()
    fail.set()
    barrier = threading.Barrier(4)

    def flaky(context: LoadContext):
        calls.append(context.name)
        time.sleep(0.2)  # keeps the load in flight while the other threads arrive
        if fail.is_set():
            raise RuntimeError("checkpoint corrupt")
        return torch.nn.Linear(256, 256)

    engine.register(ModelSpec("a", flaky, "test", estimate_bytes=LINEAR_BYTES))
    engine.register(ModelSpec("b", linear_loader(), "test", estimate_bytes=LINEAR_BYTES))
    results = run_threads(4, lambda index: (barrier.wait(), engine.get("a"))[1])
    assert calls == ["a"]
    assert all(isinstance(result, RuntimeError) and str(result) == "checkpoint corrupt" for result in results)
    assert engine.loaded() == () and engine.memory_used() == 0
    fail.clear()
    model = engine.get("a")
    assert isinstance(model, torch.nn.Linear)
    assert calls == ["a", "a"]
    assert engine.loaded() == ("a",) and engine.memory_used() == LINEAR_BYTES
    engine.get("b")  # the failed load's reservation was released: a and b fit exactly
    assert engine.loaded() == ("a", "b")


# -- assets and status ------------------------------------------------------------------------------

def test_status_reports_loaded_models_and_assets(tmp_path):
    (tmp_path / "contact").mkdir()
    (tmp_path / "contact" / "ckpt.bin").write_bytes(b"x")
    engine = Engine(EngineConfig(models_dir=tmp_path, device="cpu", memory_budget_bytes=TWO_MODELS,
                                 gpu_concurrency=2))
    engine.register(ModelSpec("contact", linear_loader(), "human contact", requires=(Path("contact/ckpt.bin"),)))
    engine.register(ModelSpec("sam", linear_loader(), "human contact", requires=(Path("sam/sam_vit_h.pth"),)))
    engine.get("contact")

    status = engine.status()
    assert (status.device, status.budget_bytes, status.used_bytes, status.gpu_concurrency) == (
        "cpu", TWO_MODELS, LINEAR_BYTES, 2)
    assert [(loaded.name, loaded.bytes, loaded.in_use) for loaded in status.loaded] == [("contact", LINEAR_BYTES, 0)]
    contact, sam = status.models
    assert (contact.available, contact.missing, contact.loaded) == (True, (), True)
    assert (sam.available, sam.missing, sam.loaded) == (False, (tmp_path / "sam" / "sam_vit_h.pth",), False)
    assert list(status.capabilities()) == ["human contact"]

    text = status.format()
    assert "257.0 KiB used of a 514.0 KiB RAM budget" in text
    assert "human contact: 1 of 2 model(s) ready" in text
    assert "[ready]   contact (loaded)" in text
    assert f"[missing] sam: expected at {tmp_path / 'sam' / 'sam_vit_h.pth'}" in text


def test_missing_asset_stops_the_load(tmp_path):
    calls: list[str] = []
    engine = Engine(EngineConfig(models_dir=tmp_path, device="cpu", memory_budget_bytes=TWO_MODELS))
    engine.register(ModelSpec("sam", linear_loader(calls), "segmentation", requires=(Path("sam/sam.pth"),)))
    with pytest.raises(MissingAssetError) as raised:
        engine.get("sam")
    assert raised.value.expected == tmp_path / "sam" / "sam.pth"
    assert calls == [] and engine.loaded() == ()


def test_load_context_asset(tmp_path):
    (tmp_path / "w.pt").write_bytes(b"x")
    context = LoadContext("m", torch.device("cpu"), tmp_path, lambda fraction, message: None)
    assert context.asset("w.pt") == tmp_path / "w.pt"
    with pytest.raises(MissingAssetError, match="nothing is downloaded"):
        context.asset("absent.pt")


def test_loader_asking_for_itself_fails_instead_of_deadlocking(tmp_path):
    engine = Engine(EngineConfig(models_dir=tmp_path, device="cpu", memory_budget_bytes=TWO_MODELS))
    engine.register(ModelSpec("loop", lambda context: engine.get("loop"), "test"))
    with pytest.raises(RuntimeError, match="asked the engine for 'loop' itself"):
        engine.get("loop")
    assert engine.loaded() == ()
