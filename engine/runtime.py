"""The shared engine: one per process, owning the device choice and every model by name.

``app.py`` builds one :class:`Engine` from an :class:`EngineConfig`, registers a :class:`ModelSpec` per
model, and hands the engine to the studio and the CLIs. Nobody else loads a model.

Lifecycle of a model:

1. Registered by name with a loader, a capability label, an optional size estimate and the asset paths
   it needs under the models directory.
2. Loaded lazily by the first :meth:`Engine.get` / :meth:`Engine.use`. Two threads asking for the same
   unloaded model share one load: the loader runs once and its result (or its exception) reaches every
   waiter. Different models load concurrently. A failed load registers nothing; the next call retries.
3. Resident until evicted least-recently-used when the memory budget would be exceeded: before a load
   (using the spec's estimate) and after it (using the measured size). Models pinned by a running
   request (:meth:`Engine.use`) are never evicted; a model larger than the whole budget is still
   loaded, with a warning, because refusing would make it unusable on this machine.

Memory is accounted per model, not read back from the allocator: ``memory_bytes()`` when the object has
it, else the parameter and buffer bytes of a ``torch.nn.Module`` (shared tensors counted once), else the
spec's estimate, else 0. The budget defaults to 80% of the GPU's total memory on CUDA (room for
activations) and to 50% of physical RAM (capped by a cgroup limit) on CPU and MPS.

Errors: :class:`~engine.errors.InputError` for what a user chose (device, budget, model name);
:class:`~engine.errors.MissingAssetError` when a model's files are absent; ``ValueError``/``TypeError``
for programming mistakes (a duplicate registration, a malformed spec).
"""
from __future__ import annotations

import gc
import itertools
import logging
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection, Iterator

import torch

from engine.errors import InputError, MissingAssetError

logger = logging.getLogger(__name__)

ProgressFn = Callable[[float, str], None]
"""``progress(fraction, message)``: fraction in [0, 1]. A ``gr.Progress`` accepts this call as is."""

GPU_BUDGET_FRACTION = 0.8
RAM_BUDGET_FRACTION = 0.5
_DEVICE_TYPES = ("cpu", "cuda", "mps")
_DEVICE_HELP = "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"


# ---------------------------------------------------------------------------------------------------
# Device and memory budget
# ---------------------------------------------------------------------------------------------------

def _parse_device(text: object) -> torch.device:
    """``text`` as a torch.device of a supported type, without checking that this machine has it."""
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"device must be one of {_DEVICE_HELP}, got {text!r}")
    try:
        device = torch.device(text.strip().lower())
    except RuntimeError as error:
        raise InputError(f"unknown device {text!r}: accepted are {_DEVICE_HELP}") from error
    if device.type not in _DEVICE_TYPES:
        raise InputError(f"unsupported device {text!r}: accepted are {_DEVICE_HELP}")
    return device


def _is_auto(preference: object) -> bool:
    return preference is None or (isinstance(preference, str) and preference.strip().lower() == "auto")


def _require_available(device: torch.device) -> None:
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {str(device)!r} requested but CUDA is not available here; use 'cpu' or 'auto'")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise InputError(f"device {str(device)!r} does not exist: this machine has {count} CUDA device(s), "
                             f"indexes 0 to {count - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError("device 'mps' requested but Apple MPS is not available here; use 'cpu' or 'auto'")


def pick_device(preference: str | None = None) -> torch.device:
    """The device to compute on.

    ``None``/``"auto"``: CUDA when available (the current CUDA device, never a fixed index), else CPU.
    ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``: that device, or InputError if this machine lacks it.
    """
    if _is_auto(preference):
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    device = _parse_device(preference)
    _require_available(device)
    return device


def _sysconf_ram_bytes() -> int | None:
    # os.sysconf is missing on Windows and may lack these names elsewhere; the caller falls back.
    if not hasattr(os, "sysconf") or "SC_PHYS_PAGES" not in os.sysconf_names:
        return None
    pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    return pages * page_size if pages > 0 and page_size > 0 else None


def _meminfo_ram_bytes(path: Path = Path("/proc/meminfo")) -> int | None:
    if not path.is_file():
        return None
    for line in path.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024  # the file states kB, meaning KiB
    return None


def _cgroup_limit_bytes() -> int | None:
    """The container's memory limit (cgroup v2, then v1), or None when unlimited or not in a cgroup.

    In a container the physical RAM is the host's; the cgroup limit is what gets us OOM-killed.
    """
    for path in (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")):
        if path.is_file():
            text = path.read_text().strip()
            # v1 reports "no limit" as a huge page-rounded number; anything above 2**60 is that.
            if text.isdigit() and int(text) < 2 ** 60:
                return int(text)
    return None


def physical_ram_bytes() -> int | None:
    """Total RAM this process may use: physical RAM (sysconf, else /proc/meminfo), capped by a cgroup limit."""
    total = _sysconf_ram_bytes() or _meminfo_ram_bytes()
    limit = _cgroup_limit_bytes()
    if total is None:
        return limit
    return min(total, limit) if limit is not None else total


def default_memory_budget(device: torch.device) -> int:
    """80% of the GPU's total memory on CUDA; 50% of RAM on CPU and MPS (MPS shares system RAM)."""
    if device.type == "cuda":
        _free, total = torch.cuda.mem_get_info(device)
        return int(total * GPU_BUDGET_FRACTION)
    total = physical_ram_bytes()
    if total is None:
        raise InputError("could not read this machine's RAM size; set the memory budget explicitly "
                         "(EngineConfig.memory_budget_bytes)")
    return int(total * RAM_BUDGET_FRACTION)


# ---------------------------------------------------------------------------------------------------
# Memory accounting
# ---------------------------------------------------------------------------------------------------

def module_bytes(module: torch.nn.Module) -> int:
    """Bytes held by a module's parameters and buffers; tensors sharing memory (tied weights) count once."""
    seen: set[tuple[torch.device, int]] = set()
    total = 0
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        if tensor.is_meta:  # meta tensors have a shape but no storage
            continue
        key = (tensor.device, tensor.data_ptr())
        if key not in seen:
            seen.add(key)
            total += tensor.numel() * tensor.element_size()
    return total


def model_bytes(model: object, estimate: int | None = None) -> int:
    """A loaded model's size: its ``memory_bytes()``, else module bytes, else ``estimate``, else 0."""
    memory_bytes = getattr(model, "memory_bytes", None)
    if callable(memory_bytes):
        size = memory_bytes()
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"{type(model).__name__}.memory_bytes() must return an int >= 0, got {size!r}")
        return size
    if isinstance(model, torch.nn.Module):
        return module_bytes(model)
    return estimate or 0


def format_bytes(count: int) -> str:
    """``1536`` → ``"1.5 KiB"``."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


# ---------------------------------------------------------------------------------------------------
# Configuration and specs
# ---------------------------------------------------------------------------------------------------

def _check_positive_int(field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{field} must be a positive whole number, got {value!r}")


@dataclass(frozen=True)
class EngineConfig:
    """How the process's one Engine is set up. Invalid values raise InputError at construction.

    Fields:
        models_dir: root of the user's licensed files (``--models``); spec ``requires`` are relative to it.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or
            ``"mps"``. The form is checked here; whether this machine has it, when the Engine is built.
        memory_budget_bytes: most bytes resident models may take before LRU eviction. ``None``: 80% of
            total GPU memory on CUDA, 50% of RAM on CPU/MPS (see :func:`default_memory_budget`).
        gpu_concurrency: how many requests may compute on the GPU at once: the limit of the studio's
            one GPU lane (a shared Gradio ``concurrency_id``). The engine only carries it.
    """

    models_dir: Path
    device: str = "auto"
    memory_budget_bytes: int | None = None
    gpu_concurrency: int = 1

    def __post_init__(self):
        if not isinstance(self.models_dir, (str, os.PathLike)):
            raise InputError(f"models_dir must be a path, got {self.models_dir!r}")
        object.__setattr__(self, "models_dir", Path(self.models_dir))
        if not _is_auto(self.device):
            _parse_device(self.device)
        if self.memory_budget_bytes is not None:
            _check_positive_int("memory_budget_bytes", self.memory_budget_bytes)
        _check_positive_int("gpu_concurrency", self.gpu_concurrency)


def _no_progress(fraction: float, message: str) -> None:
    """Progress sink for callers that did not ask for progress."""


@dataclass(frozen=True)
class LoadContext:
    """What a loader gets.

    Fields:
        name: the model's registered name.
        device: where the model must live (``Engine.device``).
        models_dir: root of the licensed files.
        progress: ``progress(fraction, message)``; the engine reports 0 and 1 itself, loaders may
            report steps in between.
    """

    name: str
    device: torch.device
    models_dir: Path
    progress: ProgressFn

    def asset(self, relative: str | Path) -> Path:
        """``models_dir / relative``, or MissingAssetError naming where the file belongs."""
        path = self.models_dir / relative
        if not path.exists():
            raise MissingAssetError(f"file for model {self.name!r}", path,
                                    "Place it there; nothing is downloaded at run time.")
        return path


@dataclass(frozen=True)
class ModelSpec:
    """A model the engine can load, registered by name.

    Fields:
        name: unique registry key (what ``Engine.get`` takes).
        load: ``load(context) -> model``; runs once per residency, outside the engine's locks.
        capability: what the model serves, as the doctor shows it (e.g. ``"human contact"``).
        estimate_bytes: expected resident size, used to evict ahead of loading; None when unknown.
        requires: asset paths relative to ``models_dir`` that must all exist (files or folders).
    """

    name: str
    load: Callable[[LoadContext], object]
    capability: str
    estimate_bytes: int | None = None
    requires: tuple[Path, ...] = ()

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"model name must be a non-empty string, got {self.name!r}")
        if not callable(self.load):
            raise TypeError(f"{self.name}: load must be callable, got {self.load!r}")
        if not isinstance(self.capability, str) or not self.capability.strip():
            raise ValueError(f"{self.name}: capability must be a non-empty string")
        if self.estimate_bytes is not None and (isinstance(self.estimate_bytes, bool)
                                                or not isinstance(self.estimate_bytes, int) or self.estimate_bytes < 0):
            raise ValueError(f"{self.name}: estimate_bytes must be an int >= 0 or None, got {self.estimate_bytes!r}")
        requires = tuple(Path(path) for path in self.requires)
        absolute = [str(path) for path in requires if path.is_absolute()]
        if absolute:
            raise ValueError(f"{self.name}: requires must be relative to the models dir, got {absolute}")
        object.__setattr__(self, "requires", requires)


# ---------------------------------------------------------------------------------------------------
# Status
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LoadedModel:
    """A resident model. ``bytes``: accounted size; ``last_used``: epoch seconds; ``in_use``: running
    requests pinning it (0 means evictable)."""

    name: str
    bytes: int
    last_used: float
    in_use: int


@dataclass(frozen=True)
class ModelAvailability:
    """A registered model against the models dir. ``available``: every required asset exists (for a model
    on Ray Serve: a replica answered and it loaded); ``missing``: the absolute paths where absent assets are
    expected. ``where``: ``"local"`` (this process) or ``"ray"`` (a Ray Serve deployment)."""

    name: str
    capability: str
    available: bool
    missing: tuple[Path, ...]
    loaded: bool
    where: str = "local"


@dataclass(frozen=True)
class DeploymentStatus:
    """One model's Ray Serve deployment, as ``Engine.status()`` and the doctor show it.

    Fields:
        name: the model. state: Serve's deployment status (``HEALTHY``, ``UPDATING``, ...) or ``NOT DEPLOYED``.
        running / replicas: running replicas and the configured count or autoscaling bounds.
        gpus_per_replica: the GPU fraction each replica holds. max_batch_size: 1 when batching is off.
        failure: why the model cannot answer, in words (None when it can).
        retries: calls this process retried on another replica after theirs died.
        checkpoints: multiplexed checkpoint ids loaded on the replica that answered.
        gpu_bytes: GPU memory allocated by the replica that answered.
    """

    name: str
    state: str
    running: int
    replicas: str
    gpus_per_replica: float
    max_batch_size: int
    failure: str | None
    retries: int
    checkpoints: tuple[str, ...] = ()
    gpu_bytes: int = 0


@dataclass(frozen=True)
class ClusterStatus:
    """The Ray cluster behind an engine on Ray Serve: resources (total and held by actors) and deployments."""

    address: str
    gpus_total: float
    gpus_used: float
    cpus_total: float
    cpus_used: float
    deployments: tuple[DeploymentStatus, ...]

    def format(self) -> list[str]:
        lines = [f"Ray cluster at {self.address}: GPUs {self.gpus_used:g} of {self.gpus_total:g} in use, "
                 f"CPUs {self.cpus_used:g} of {self.cpus_total:g} in use",
                 "Ray Serve deployments:" if self.deployments else "Ray Serve deployments: none configured"]
        for row in self.deployments:
            batch = f"batches of up to {row.max_batch_size}" if row.max_batch_size > 1 else "no batching"
            line = (f"  {row.name}: {row.state}, {row.running} replica(s) running of {row.replicas}, "
                    f"{row.gpus_per_replica:g} GPU each, {batch}")
            if row.gpu_bytes:
                line += f", {format_bytes(row.gpu_bytes)} GPU memory on one replica"
            if row.retries:
                line += f", {row.retries} call(s) retried after a replica died"
            lines.append(line)
            if row.checkpoints:
                lines.append(f"    checkpoints loaded: {', '.join(row.checkpoints)}")
            if row.failure:
                lines.append(f"    cannot answer: {row.failure}")
        return lines


@dataclass(frozen=True)
class EngineStatus:
    """A snapshot of the engine, for the doctor and the studio.

    Fields:
        device: e.g. ``"cpu"`` or ``"cuda"``.
        models_dir: root of the licensed files.
        budget_bytes / used_bytes: the memory budget and what resident models take.
        gpu_concurrency: the GPU lane's limit.
        loaded: resident models, least recently used first.
        models: every registered model, in registration order.
        cluster: the Ray cluster and its deployments for an engine on Ray Serve; None for the local engine.
    """

    device: str
    models_dir: Path
    budget_bytes: int
    used_bytes: int
    gpu_concurrency: int
    loaded: tuple[LoadedModel, ...]
    models: tuple[ModelAvailability, ...]
    cluster: ClusterStatus | None = None

    def capabilities(self) -> dict[str, tuple[ModelAvailability, ...]]:
        """Registered models grouped by capability, in registration order."""
        groups: dict[str, list[ModelAvailability]] = {}
        for model in self.models:
            groups.setdefault(model.capability, []).append(model)
        return {capability: tuple(models) for capability, models in groups.items()}

    def format(self) -> str:
        """Human-readable lines for ``python app.py doctor`` and the studio."""
        memory = "GPU memory" if self.device.startswith("cuda") else "RAM"
        lines = [f"Engine: device {self.device}, GPU lane limit {self.gpu_concurrency}",
                 f"Memory: {format_bytes(self.used_bytes)} used of a {format_bytes(self.budget_bytes)} {memory} budget"]
        lines += self._format_loaded() + self._format_capabilities()
        if self.cluster is not None:
            lines += self.cluster.format()
        return "\n".join(lines)

    def _format_loaded(self) -> list[str]:
        if not self.loaded:
            return ["Loaded models: none (they load on first use)"]
        lines = ["Loaded models, least recently used first:"]
        for model in self.loaded:
            when = time.strftime("%H:%M:%S", time.localtime(model.last_used))
            busy = f", in use by {model.in_use} request(s)" if model.in_use else ""
            lines.append(f"  {model.name}: {format_bytes(model.bytes)}, last used {when}{busy}")
        return lines

    def _format_capabilities(self) -> list[str]:
        if not self.models:
            return ["Capabilities: no models registered"]
        lines = ["Capabilities:"]
        for capability, models in self.capabilities().items():
            ready = sum(model.available for model in models)
            lines.append(f"  {capability}: {ready} of {len(models)} model(s) ready")
            for model in models:
                where = " on Ray Serve" if model.where == "ray" else ""
                if model.available:
                    lines.append(f"    [ready]   {model.name}{where}" + (" (loaded)" if model.loaded else ""))
                elif model.where == "ray" and not model.missing:
                    lines.append(f"    [failed]  {model.name}{where}: see its deployment below")
                else:
                    lines.append(f"    [missing] {model.name}: expected at " + ", ".join(map(str, model.missing)))
        return lines


# ---------------------------------------------------------------------------------------------------
# Engine
# ---------------------------------------------------------------------------------------------------

@dataclass
class _Entry:
    """A resident model (internal, mutated under the registry lock)."""

    model: object
    bytes: int
    last_used: float
    pins: int = 0


@dataclass
class _Loading:
    """A load in flight: the per-name gate every caller of that name waits on.

    ``future`` carries the model or the loader's exception to every waiter; ``owner`` is the loading
    thread (to catch a loader asking for its own model); ``reserved`` is the estimate held in the budget.
    """

    future: Future
    owner: int
    reserved: int


Victims = list[tuple[str, _Entry]]


class Engine:
    """Owns the device, the model registry, lazy loading and LRU eviction under a memory budget.

    Thread-safe. One registry lock guards the tables and is never held while a loader runs; each
    name being loaded has its own in-flight record (:class:`_Loading`), so a model loads once however
    many threads ask, while different models load concurrently.
    """

    def __init__(self, config: EngineConfig):
        self.config = config
        self.device = pick_device(config.device)
        self.budget_bytes = config.memory_budget_bytes or default_memory_budget(self.device)
        self._lock = threading.Lock()
        self._specs: dict[str, ModelSpec] = {}
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._loading: dict[str, _Loading] = {}
        logger.info("engine on %s with a %s memory budget", self.device, format_bytes(self.budget_bytes))

    @property
    def models_dir(self) -> Path:
        return self.config.models_dir

    @property
    def gpu_concurrency(self) -> int:
        return self.config.gpu_concurrency

    def register(self, spec: ModelSpec) -> None:
        """Add a model; a second spec under the same name is a programming error (ValueError)."""
        if not isinstance(spec, ModelSpec):
            raise TypeError(f"register takes a ModelSpec, got {type(spec).__name__}")
        with self._lock:
            if spec.name in self._specs:
                raise ValueError(f"a model named {spec.name!r} is already registered")
            self._specs[spec.name] = spec

    def names(self) -> tuple[str, ...]:
        """Registered model names, in registration order."""
        with self._lock:
            return tuple(self._specs)

    def get(self, name: str, progress: ProgressFn | None = None) -> object:
        """The model ``name``, loading it on first use. Does not pin: the model may be evicted later
        (a caller holding it keeps it alive, but it no longer counts against the budget).

        ``progress`` is called by the thread that runs the load; callers that wait on another thread's
        load get no progress calls. Raises InputError for an unknown name, MissingAssetError when a
        required file is absent, and whatever the loader raised.
        """
        return self._acquire(name, progress, pin=False)

    @contextmanager
    def use(self, name: str, progress: ProgressFn | None = None) -> Iterator[object]:
        """``with engine.use(name) as model:`` pins the model for the request so it is never evicted
        underneath it; on exit the pin is released and the budget enforced again."""
        model = self._acquire(name, progress, pin=True)
        try:
            yield model
        finally:
            self._unpin(name)

    def unload(self, name: str) -> bool:
        """Evict ``name`` now. False if it was not loaded; InputError if a request is using it."""
        self._spec(name)
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                return False
            if entry.pins:
                raise InputError(f"model {name!r} is in use by {entry.pins} running request(s); "
                                 "unload it after they finish")
            del self._entries[name]
        self._release([(name, entry)])
        return True

    def loaded(self) -> tuple[str, ...]:
        """Resident model names, least recently used first."""
        with self._lock:
            return tuple(self._entries)

    def memory_used(self) -> int:
        """Accounted bytes of the resident models."""
        with self._lock:
            return sum(entry.bytes for entry in self._entries.values())

    def status(self) -> EngineStatus:
        """A snapshot: device, budget, resident models and what every registered model can do."""
        with self._lock:
            loaded = tuple(LoadedModel(name, entry.bytes, entry.last_used, entry.pins)
                           for name, entry in self._entries.items())
            specs = tuple(self._specs.values())
        resident = {model.name for model in loaded}
        models = tuple(self._availability(spec, spec.name in resident) for spec in specs)
        return EngineStatus(str(self.device), self.models_dir, self.budget_bytes,
                            sum(model.bytes for model in loaded), self.gpu_concurrency, loaded, models)

    # -- acquiring ----------------------------------------------------------------------------------

    def _spec(self, name: str) -> ModelSpec:
        with self._lock:
            spec = self._specs.get(name) if isinstance(name, str) else None
            known = ", ".join(self._specs) or "none"
        if spec is None:
            raise InputError(f"unknown model {name!r}; registered models: {known}")
        return spec

    def _acquire(self, name: str, progress: ProgressFn | None, pin: bool) -> object:
        spec = self._spec(name)
        while True:
            with self._lock:
                entry = self._entries.get(name)
                if entry is not None:
                    return self._touch(name, entry, pin)
                loading, owner = self._join_or_start(spec)
            if owner:
                self._load(spec, loading, progress, pin)
            model = loading.future.result()  # re-raises the loader's exception in every waiter
            if owner or not pin:
                return model
            # A waiter that must pin goes round again, so the pin lands on the entry under the lock
            # (and if the model was evicted in the meantime, it is loaded again).

    def _touch(self, name: str, entry: _Entry, pin: bool) -> object:
        """Mark ``name`` most recently used (caller holds the lock)."""
        self._entries.move_to_end(name)
        entry.last_used = time.time()
        entry.pins += pin
        return entry.model

    def _join_or_start(self, spec: ModelSpec) -> tuple[_Loading, bool]:
        """The in-flight load of ``spec`` and whether this thread must run it (caller holds the lock)."""
        loading = self._loading.get(spec.name)
        if loading is not None:
            if loading.owner == threading.get_ident():
                raise RuntimeError(f"the loader of {spec.name!r} asked the engine for {spec.name!r} itself")
            return loading, False
        loading = _Loading(Future(), threading.get_ident(), spec.estimate_bytes or 0)
        self._loading[spec.name] = loading
        return loading, True

    def _unpin(self, name: str) -> None:
        with self._lock:
            self._entries[name].pins -= 1  # a pinned entry cannot have been evicted or unloaded
            # Pins may have forced us over budget; now that one is released, catch up.
            victims = self._evict_lru(keep=())
        self._release(victims)

    # -- loading ------------------------------------------------------------------------------------

    def _load(self, spec: ModelSpec, loading: _Loading, progress: ProgressFn | None, pin: bool) -> None:
        """Run ``spec``'s loader for every waiter; the outcome goes into ``loading.future``."""
        try:
            self._check_assets(spec)
            self._release(self._evict_ahead(spec))
            model = self._run_loader(spec, progress or _no_progress)
            victims = self._admit(spec, model, model_bytes(model, spec.estimate_bytes), pin)
        except BaseException as error:  # handed to every waiter (the owner too) through the future
            with self._lock:
                self._loading.pop(spec.name, None)  # nothing stays registered; the next call retries
            loading.future.set_exception(error)
            return
        loading.future.set_result(model)
        self._release(victims)

    def _check_assets(self, spec: ModelSpec) -> None:
        missing = self._availability(spec, loaded=False).missing
        if missing:
            raise MissingAssetError(f"file for model {spec.name!r} ({spec.capability})", missing[0],
                                    "Place it there; nothing is downloaded at run time. "
                                    "`python app.py doctor` lists every expected path.")

    def _run_loader(self, spec: ModelSpec, progress: ProgressFn) -> object:
        logger.info("loading %s on %s", spec.name, self.device)
        progress(0.0, f"Loading {spec.name}")
        start = time.perf_counter()
        model = spec.load(LoadContext(spec.name, self.device, self.models_dir, progress))
        seconds = time.perf_counter() - start
        if model is None:
            raise ValueError(f"the loader of {spec.name!r} returned None")
        logger.info("loaded %s in %.2f s", spec.name, seconds)
        progress(1.0, f"Loaded {spec.name} in {seconds:.1f} s")
        return model

    def _admit(self, spec: ModelSpec, model: object, size: int, pin: bool) -> Victims:
        """Make ``model`` resident and evict others until back under budget (if possible)."""
        with self._lock:
            del self._loading[spec.name]  # atomically with the insert: callers see one or the other
            self._entries[spec.name] = _Entry(model, size, time.time(), pins=int(pin))
            victims = self._evict_lru(keep={spec.name})
            over = self._over_budget()
        if size > self.budget_bytes:
            logger.warning("%s takes %s, more than the whole %s budget; loaded anyway, so nothing else "
                           "can stay resident beside it", spec.name, format_bytes(size),
                           format_bytes(self.budget_bytes))
        elif over:
            logger.warning("over the %s budget after loading %s: the other resident models are in use",
                           format_bytes(self.budget_bytes), spec.name)
        return victims

    # -- eviction -----------------------------------------------------------------------------------

    def _over_budget(self) -> bool:
        """Resident bytes plus estimates of loads in flight exceed the budget (caller holds the lock)."""
        used = sum(entry.bytes for entry in self._entries.values())
        reserved = sum(loading.reserved for loading in self._loading.values())
        return used + reserved > self.budget_bytes

    def _evict_lru(self, keep: Collection[str]) -> Victims:
        """Remove least recently used, unpinned models until within budget (caller holds the lock)."""
        victims: Victims = []
        for name in list(self._entries):
            if not self._over_budget():
                break
            if name not in keep and not self._entries[name].pins:
                victims.append((name, self._entries.pop(name)))
        return victims

    def _evict_ahead(self, spec: ModelSpec) -> Victims:
        """Make room for ``spec``'s estimate (already reserved in its in-flight record)."""
        with self._lock:
            victims = self._evict_lru(keep=())
        if (spec.estimate_bytes or 0) > self.budget_bytes:
            logger.warning("%s is estimated at %s, more than the whole %s budget; loading it anyway",
                           spec.name, format_bytes(spec.estimate_bytes), format_bytes(self.budget_bytes))
        return victims

    def _release(self, victims: Victims) -> None:
        """Drop the engine's references to evicted models and hand their memory back."""
        if not victims:
            return
        for name, entry in victims:
            logger.info("evicted %s (%s)", name, format_bytes(entry.bytes))
            entry.model = None
        gc.collect()  # models often hold reference cycles (hooks, parent links) that refcounting misses
        if self.device.type == "cuda":
            torch.cuda.empty_cache()  # return cached blocks so other processes and allocations see them
        elif self.device.type == "mps":
            torch.mps.empty_cache()

    def _availability(self, spec: ModelSpec, loaded: bool) -> ModelAvailability:
        missing = tuple(self.models_dir / path for path in spec.requires if not (self.models_dir / path).exists())
        return ModelAvailability(spec.name, spec.capability, not missing, missing, loaded)
