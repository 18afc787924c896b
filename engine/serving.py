"""The shared engine on Ray Serve: configuration, the replicas, and the client the studio talks to.

One Serve application per deployed model (``<app>.<model>``, one deployment inside, named after the model),
each replica holding one local :class:`~engine.runtime.Engine` with that one model resident. The studio
keeps calling ``engine.use(name)`` / ``engine.get(name)``; :class:`RayEngine` answers with a proxy whose
method calls travel through a Serve handle. Models the configuration does not deploy stay in the studio's
own process (a local Engine inside RayEngine), so nothing a handler asks for goes missing.

- Batching: ``predict_human_contact_batch`` on a deployment with ``max_batch_size > 1`` is split into one
  call per (image, label); ``@serve.batch`` on the replica gathers calls from every studio replica into one
  ``predict_human_contact_batch`` of the model (at most ``max_batch_size``, waiting ``batch_wait_timeout_s``).
- Multiplexing: a ``[multiplexed.NAME]`` section serves the fine-tuned checkpoints under
  ``<models>/<folder>/<checkpoint id>/`` (the released InteractVLM layout) as ``engine.use("NAME/ID")``;
  ``serve.multiplexed`` keeps at most ``max_models_per_replica`` per replica and Ray evicts the least recently
  used one.
- Failures: a replica that dies mid-request (its actor gone) gets the call retried once through the handle,
  which routes it to another replica; :attr:`RayEngine.retries` counts them. A model that cannot load keeps
  its replica up and answers every call with the reason in words (InputError / MissingAssetError in the
  studio), and ``status()`` lists it as failed.
- Results are plain data: the model's own frozen dataclasses of numpy arrays, pickled by Ray. Errors cross
  as a :class:`Failure` record, never as pickled exceptions.

Nothing in ``studio/`` imports this module or ray; ``app.py`` builds a RayEngine for ``--engine ray://...``.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import tomllib
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import ray
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import RayServeException

from engine.errors import InputError, MissingAssetError
from engine.registry import register_models
from engine.runtime import (ClusterStatus, DeploymentStatus, Engine, EngineConfig, EngineStatus, ModelAvailability,
                            ModelSpec, ProgressFn)

logger = logging.getLogger(__name__)

DEFAULT_APP = "studio-engine"
CONTACT_BATCH_METHOD = "predict_human_contact_batch"
SINGLE_REQUEST_METHOD = "predict_one"
STATUS_TTL_S = 5.0
CALL_TIMEOUT_S = 600.0
CONNECT_PROBE_S = 5.0
RETRIES_ON_REPLICA_DEATH = 1  # a call whose replica died is sent again this many times (to a live replica)
MULTIPLEX_SEPARATOR = "/"
BATCH_LIMIT = 16  # engine.contact.predict.MAX_BATCH (checked by a test; importing it here would load the model code)
VARIANTS = ("hcontact", "oafford", "joint")  # engine.contact.predict.VARIANTS (likewise)
VARIANT_TARGETS = {"hcontact": ("human",), "oafford": ("object",), "joint": ("human", "object")}


# ---------------------------------------------------------------------------------------------------
# Configuration (a TOML file; deploy/engine.toml is the example DEPLOY.md uses)
# ---------------------------------------------------------------------------------------------------

def _number(where: str, value: object, *, minimum: float = 0.0, whole: bool = False) -> float | int:
    kind = int if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or value < minimum:
        what = "a whole number" if whole else "a number"
        raise InputError(f"{where} must be {what} >= {minimum:g}, got {value!r}")
    return value


def _table(where: str, value: object) -> dict:
    if not isinstance(value, dict):
        raise InputError(f"{where} must be a table ([{where}]), got {value!r}")
    return value


def _unknown_keys(where: str, table: dict, known: set[str]) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(unknown)}; accepted: {', '.join(sorted(known))}")


@dataclass(frozen=True)
class DeploymentConfig:
    """One model's deployment.

    Fields:
        name: the registered model name (what ``engine.use`` takes).
        num_cpus / num_gpus: per replica; a fraction of a GPU lets several small models share one.
        replicas: a fixed count, or None with ``min_replicas``/``max_replicas`` for autoscaling on
            ``target_ongoing_requests`` (requests in flight per replica).
        max_ongoing_requests: the most requests one replica takes at once.
        max_batch_size: 1 turns batching off; above 1, single requests are gathered by ``@serve.batch``
            (only for models with ``predict_human_contact_batch``).
        batch_wait_timeout_s: how long a batch waits to fill.
    """

    name: str
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    replicas: int | None = 1
    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = 2.0
    max_ongoing_requests: int = 8
    max_batch_size: int = 1
    batch_wait_timeout_s: float = 0.01

    def __post_init__(self):
        where = f"[models.{self.name}]"
        _number(f"{where} num_cpus", self.num_cpus)
        _number(f"{where} num_gpus", self.num_gpus)
        if self.num_gpus > 1 and self.num_gpus != int(self.num_gpus):
            raise InputError(f"{where} num_gpus above 1 must be whole (Ray cannot give 1.5 GPUs), got {self.num_gpus}")
        if self.replicas is not None:
            _number(f"{where} replicas", self.replicas, minimum=1, whole=True)
        _number(f"{where} min_replicas", self.min_replicas, minimum=0, whole=True)
        _number(f"{where} max_replicas", self.max_replicas, minimum=1, whole=True)
        if self.min_replicas > self.max_replicas:
            raise InputError(f"{where} min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas})")
        _number(f"{where} target_ongoing_requests", self.target_ongoing_requests, minimum=0.1)
        _number(f"{where} max_ongoing_requests", self.max_ongoing_requests, minimum=1, whole=True)
        _number(f"{where} max_batch_size", self.max_batch_size, minimum=1, whole=True)
        if self.max_batch_size > BATCH_LIMIT:
            raise InputError(f"{where} max_batch_size must be at most {BATCH_LIMIT} (the predictor's batch limit), "
                             f"got {self.max_batch_size}")
        _number(f"{where} batch_wait_timeout_s", self.batch_wait_timeout_s)

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 1

    def serve_options(self) -> dict:
        """Keyword arguments of ``serve.deployment(...).options``."""
        options = {"name": self.name, "max_ongoing_requests": self.max_ongoing_requests,
                   "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}}
        if self.replicas is not None:
            options["num_replicas"] = self.replicas
        else:
            options["autoscaling_config"] = {"min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
                                             "target_ongoing_requests": self.target_ongoing_requests}
        return options


@dataclass(frozen=True)
class MultiplexConfig:
    """Fine-tuned checkpoints served by one deployment: ``<models>/<folder>/<id>/`` in the released layout.

    ``variant``: the InteractVLM variant they fine-tune (hcontact, oafford, joint). ``max_models_per_replica``:
    how many stay loaded per replica before Ray evicts the least recently used.
    """

    name: str
    folder: str
    variant: str = "hcontact"
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    replicas: int = 1
    max_models_per_replica: int = 3

    def __post_init__(self):
        where = f"[multiplexed.{self.name}]"
        if MULTIPLEX_SEPARATOR in self.name:
            raise InputError(f"{where}: the name may not contain {MULTIPLEX_SEPARATOR!r}")
        if not isinstance(self.folder, str) or not self.folder.strip() or Path(self.folder).is_absolute() \
                or ".." in Path(self.folder).parts:
            raise InputError(f"{where} folder must be a path relative to the models dir, got {self.folder!r}")
        if self.variant not in VARIANTS:
            raise InputError(f"{where} variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        _number(f"{where} num_cpus", self.num_cpus)
        _number(f"{where} num_gpus", self.num_gpus)
        _number(f"{where} replicas", self.replicas, minimum=1, whole=True)
        _number(f"{where} max_models_per_replica", self.max_models_per_replica, minimum=1, whole=True)

    def serve_options(self) -> dict:
        return {"name": self.name, "num_replicas": self.replicas,
                "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}}


_DEPLOYMENT_KEYS = {"num_cpus", "num_gpus", "replicas", "min_replicas", "max_replicas", "target_ongoing_requests",
                    "max_ongoing_requests", "max_batch_size", "batch_wait_timeout_s"}
_MULTIPLEX_KEYS = {"folder", "variant", "num_cpus", "num_gpus", "replicas", "max_models_per_replica"}
_TOP_KEYS = {"address", "app", "models_dir", "device", "models", "multiplexed"}


@dataclass(frozen=True)
class ServeConfig:
    """The engine's Ray Serve application: where the cluster is, and how each model is deployed.

    Fields:
        address: the cluster's GCS address ``HOST:PORT`` (``ray start --head --port``).
        app: prefix of the Serve application names (``<app>.<model>``).
        models_dir: the models folder as the replicas see it (None: ``$STUDIO_MODELS`` or models/ on that node).
        device: the replicas' device (``auto``: the GPU Ray gave the replica, else CPU).
        deployments / multiplexed: per model.
    """

    address: str
    app: str = DEFAULT_APP
    models_dir: Path | None = None
    device: str = "auto"
    deployments: tuple[DeploymentConfig, ...] = ()
    multiplexed: tuple[MultiplexConfig, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "address", parse_address(self.address))
        if not isinstance(self.app, str) or not self.app.strip() or "." in self.app:
            raise InputError(f"app must be a non-empty name without dots, got {self.app!r}")
        names = [item.name for item in (*self.deployments, *self.multiplexed)]
        repeated = sorted(name for name, count in Counter(names).items() if count > 1)
        if repeated:
            raise InputError(f"deployed twice: {', '.join(repeated)}")

    def app_name(self, model: str) -> str:
        return f"{self.app}.{model}"

    def deployment(self, name: str) -> DeploymentConfig | None:
        return next((item for item in self.deployments if item.name == name), None)

    def multiplex(self, name: str) -> MultiplexConfig | None:
        return next((item for item in self.multiplexed if item.name == name), None)

    @classmethod
    def from_file(cls, path: str | Path, address: str | None = None) -> "ServeConfig":
        """Read a TOML file; ``address`` (from the command line) overrides the file's."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"engine config {path} does not exist")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise InputError(f"engine config {path} is not valid TOML: {error}") from None
        return cls.from_dict(data, address)

    @classmethod
    def from_dict(cls, data: dict, address: str | None = None) -> "ServeConfig":
        _unknown_keys("engine config", data, _TOP_KEYS)
        address = address or data.get("address")
        if not address:
            raise InputError("engine config: no cluster address (set address = \"HOST:PORT\" or pass --address)")
        deployments = []
        for name, table in _table("models", data.get("models", {})).items():
            table = _table(f"models.{name}", table)
            _unknown_keys(f"[models.{name}]", table, _DEPLOYMENT_KEYS)
            if "replicas" not in table and ("min_replicas" in table or "max_replicas" in table):
                table = {**table, "replicas": None}
            deployments.append(DeploymentConfig(name, **table))
        multiplexed = []
        for name, table in _table("multiplexed", data.get("multiplexed", {})).items():
            table = _table(f"multiplexed.{name}", table)
            _unknown_keys(f"[multiplexed.{name}]", table, _MULTIPLEX_KEYS)
            if "folder" not in table:
                raise InputError(f"[multiplexed.{name}] needs folder = \"...\" (relative to the models dir)")
            multiplexed.append(MultiplexConfig(name, **table))
        models_dir = data.get("models_dir")
        return cls(address=address, app=data.get("app", DEFAULT_APP), device=data.get("device", "auto"),
                   models_dir=Path(models_dir) if models_dir else None,
                   deployments=tuple(deployments), multiplexed=tuple(multiplexed))


def parse_address(text: object) -> str:
    """``ray://HOST:PORT`` or ``HOST:PORT`` -> ``HOST:PORT`` (the GCS address ``ray start --head`` prints)."""
    if not isinstance(text, str):
        raise InputError(f"the Ray address must be text like ray://HOST:PORT, got {text!r}")
    bare = text.strip().removeprefix("ray://")
    host, _, port = bare.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in bare:
        raise InputError(f"the Ray address must look like ray://HOST:PORT (the head's --port), got {text!r}")
    return bare


# ---------------------------------------------------------------------------------------------------
# Plain data crossing processes
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Failure:
    """An error a user can act on, as data. ``kind``: "input" or "missing"; ``what``/``expected`` for missing files."""

    kind: str
    message: str
    what: str = ""
    expected: str = ""

    @classmethod
    def of(cls, error: BaseException) -> "Failure":
        if isinstance(error, MissingAssetError):
            return cls("missing", str(error), error.what, str(error.expected))
        return cls("input", str(error))

    def error(self) -> Exception:
        if self.kind == "missing":
            return MissingAssetError(self.what, self.expected, "The Ray deployment's node lacks it.")
        return InputError(self.message)


@dataclass(frozen=True)
class Reply:
    """A replica's answer: ``value`` or ``failure``."""

    value: object = None
    failure: Failure | None = None


@dataclass(frozen=True)
class ReplicaInfo:
    """What one replica reports: process, device, the model's state and, for multiplexing, its loaded ids."""

    pid: int
    node: str
    device: str
    model: str
    loaded: bool
    failure: Failure | None
    gpu_bytes: int = 0
    checkpoints: tuple[str, ...] = ()


class ModelUnavailableError(InputError):
    """A deployed model could not answer (not deployed, failed to load, or its replicas kept dying)."""


# ---------------------------------------------------------------------------------------------------
# Replicas (run inside Ray worker processes)
# ---------------------------------------------------------------------------------------------------

def _replica_engine(models_dir: str | None, device: str) -> Engine:
    from engine.paths import models_dir as resolve_models_dir

    engine = Engine(EngineConfig(models_dir=resolve_models_dir(models_dir), device=device))
    register_models(engine)
    return engine


def _gpu_bytes(device) -> int:
    import torch

    return int(torch.cuda.memory_allocated(device)) if device.type == "cuda" else 0


_USER_ERRORS = (InputError, MissingAssetError)
_LOAD_ERRORS = (InputError, MissingAssetError, OSError, ValueError, RuntimeError, KeyError)


class ModelReplica:
    """One replica of one registered model: loads it at start, then answers method calls on it.

    A load that fails leaves the replica running with the reason (:class:`Failure`), so the studio can say
    why instead of Serve restarting it forever.
    """

    def __init__(self, name: str, models_dir: str | None, device: str, max_batch_size: int, batch_wait_timeout_s: float):
        self.name = name
        self.engine = _replica_engine(models_dir, device)
        self.model, self.failure = None, None
        try:
            self.model = self.engine.get(name)
        except _LOAD_ERRORS as error:  # reported in words through every reply and info()
            logger.error("model %s could not load: %s", name, error)
            self.failure = Failure.of(error) if isinstance(error, _USER_ERRORS) else \
                Failure("input", f"model {name!r} could not load on the Ray cluster: {error}")
        if max_batch_size > 1:
            self.predict_one.set_max_batch_size(max_batch_size)
            self.predict_one.set_batch_wait_timeout_s(batch_wait_timeout_s)

    def info(self) -> ReplicaInfo:
        return ReplicaInfo(os.getpid(), ray.get_runtime_context().get_node_id(), str(self.engine.device), self.name,
                           self.model is not None, self.failure, _gpu_bytes(self.engine.device))

    async def call(self, method: str, args: tuple, kwargs: dict) -> Reply:
        """``model.method(*args, **kwargs)`` on a worker thread (the replica keeps answering health checks)."""
        if self.failure is not None:
            return Reply(failure=self.failure)
        if method.startswith("_") or not callable(getattr(self.model, method, None)):
            return Reply(failure=Failure("input", f"model {self.name!r} has no method {method!r}"))
        try:
            return Reply(await asyncio.to_thread(getattr(self.model, method), *args, **kwargs))
        except _USER_ERRORS as error:
            return Reply(failure=Failure.of(error))

    @serve.batch(max_batch_size=BATCH_LIMIT, batch_wait_timeout_s=0.01)
    async def predict_one(self, requests: list[tuple]) -> list[Reply]:
        """Single (image, label) requests, gathered into one ``predict_human_contact_batch`` of the model."""
        if self.failure is not None:
            return [Reply(failure=self.failure)] * len(requests)
        try:
            results = await asyncio.to_thread(self.model.predict_human_contact_batch, list(requests))
        except _USER_ERRORS as error:
            if len(requests) == 1:
                return [Reply(failure=Failure.of(error))]
            # One bad request must not fail its neighbours: answer each on its own.
            return [await self._single(request) for request in requests]
        return [Reply(result) for result in results]

    async def _single(self, request: tuple) -> Reply:
        try:
            return Reply((await asyncio.to_thread(self.model.predict_human_contact_batch, [request]))[0])
        except _USER_ERRORS as error:
            return Reply(failure=Failure.of(error))


class CheckpointReplica:
    """Fine-tuned checkpoints of one InteractVLM variant, one per multiplexed model id."""

    def __init__(self, name: str, models_dir: str | None, device: str, folder: str, variant: str):
        from engine.contact.predict import default_body

        self.name, self.folder, self.variant = name, folder, variant
        self.engine = _replica_engine(models_dir, device)
        self.body, self.topology_map = default_body(self.engine.models_dir, self.engine.device)
        self._ids: list[str] = []
        self._lock = threading.Lock()

    def checkpoint_folder(self, checkpoint: str) -> Path:
        if not checkpoint or MULTIPLEX_SEPARATOR in checkpoint or checkpoint in (".", "..") or "\\" in checkpoint:
            raise InputError(f"a checkpoint id is one folder name, got {checkpoint!r}")
        return self.engine.models_dir / self.folder / checkpoint

    async def load(self, checkpoint: str):
        raise NotImplementedError("checkpoint_replica() makes the class whose load is multiplexed")

    async def load_checkpoint(self, checkpoint: str):
        from engine.contact.checkpoint import CLIP_FOLDER, load_interactvlm
        from engine.contact.predict import InteractVLMPredictor

        folder = self.checkpoint_folder(checkpoint)
        if not (folder / "config.json").is_file():
            raise MissingAssetError(f"fine-tuned checkpoint {checkpoint!r} of {self.name}", folder,
                                    "Copy the checkpoint folder there on every node.")
        dtype = "bf16" if self.engine.device.type == "cuda" else "fp32"
        loaded = await asyncio.to_thread(load_interactvlm, folder, self.engine.models_dir / CLIP_FOLDER,
                                         dtype=dtype, device=self.engine.device)
        targets = tuple(loaded.model.config.targets)
        if VARIANT_TARGETS[self.variant] != targets:
            raise InputError(f"checkpoint {checkpoint!r} predicts {' and '.join(targets)} contact; {self.name} serves "
                             f"{self.variant} checkpoints")
        predictor = InteractVLMPredictor(loaded, self.body, self.topology_map)
        return _Tracked(predictor, checkpoint, self._ids, self._lock)

    def info(self) -> ReplicaInfo:
        with self._lock:
            ids = tuple(self._ids)
        return ReplicaInfo(os.getpid(), ray.get_runtime_context().get_node_id(), str(self.engine.device), self.name,
                           True, None, _gpu_bytes(self.engine.device), ids)

    async def call(self, method: str, args: tuple, kwargs: dict) -> Reply:
        checkpoint = serve.get_multiplexed_model_id()
        try:
            tracked = await self.load(checkpoint)
            if method.startswith("_") or not callable(getattr(tracked.model, method, None)):
                raise InputError(f"model {self.name!r} has no method {method!r}")
            return Reply(await asyncio.to_thread(getattr(tracked.model, method), *args, **kwargs))
        except _USER_ERRORS as error:
            return Reply(failure=Failure.of(error))


def checkpoint_replica(max_models_per_replica: int) -> type:
    """CheckpointReplica with ``load`` multiplexed by Serve, keeping at most ``max_models_per_replica``."""
    class MultiplexedCheckpoints(CheckpointReplica):
        @serve.multiplexed(max_num_models_per_replica=max_models_per_replica)
        async def load(self, checkpoint: str):
            return await self.load_checkpoint(checkpoint)
    return MultiplexedCheckpoints


class _Tracked:
    """A loaded checkpoint that records its id while resident; Serve evicts by deleting it (``__del__``)."""

    def __init__(self, model, checkpoint: str, ids: list[str], lock: threading.Lock):
        self.model, self.checkpoint, self._ids, self._lock = model, checkpoint, ids, lock
        with lock:
            ids.append(checkpoint)

    def __del__(self):
        with self._lock:
            if self.checkpoint in self._ids:
                self._ids.remove(self.checkpoint)
        self.model = None  # the weights go with the last reference


# ---------------------------------------------------------------------------------------------------
# Deploying (``python app.py engine``)
# ---------------------------------------------------------------------------------------------------

def connect(address: str) -> None:
    """Join the cluster at ``address`` as a driver (once per process); InputError when nothing answers there."""
    address = parse_address(address)
    if ray.is_initialized():
        return
    host, _, port = address.rpartition(":")
    try:  # Ray itself waits minutes for a head that is not there
        socket.create_connection((host, int(port)), timeout=CONNECT_PROBE_S).close()
    except OSError as error:
        raise InputError(f"no Ray cluster answers at {address} (start one with `ray start --head --port {port}`, "
                         f"or .ci/start-ray): {error}") from None
    try:
        ray.init(address=address, namespace="studio", logging_level=logging.WARNING, log_to_driver=False,
                 include_dashboard=False)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise InputError(f"no Ray cluster answers at {address} (start one with `ray start --head --port "
                         f"{address.rpartition(':')[2]}`): {error}") from None


def deploy(config: ServeConfig, registered: tuple[str, ...], *, models_dir: str | None = None) -> tuple[str, ...]:
    """Start (or update) one Serve application per model of ``config``; returns the application names.

    ``registered``: the model names this studio knows (an unknown name in the config is refused before
    anything starts). ``models_dir`` overrides the config's, as the replicas will see it.
    """
    unknown = [item.name for item in config.deployments if item.name not in registered]
    if unknown:
        raise InputError(f"the engine config deploys unknown model(s) {', '.join(unknown)}; "
                         f"registered: {', '.join(registered)}")
    connect(config.address)
    serve.start(proxy_location="Disabled")  # the studio calls handles; no HTTP proxy
    folder = str(models_dir or config.models_dir) if (models_dir or config.models_dir) else None
    targets = []
    for item in config.deployments:
        bound = serve.deployment(ModelReplica).options(**item.serve_options()).bind(
            item.name, folder, config.device, item.max_batch_size, item.batch_wait_timeout_s)
        targets.append(serve.RunTarget(bound, name=config.app_name(item.name), route_prefix=None))
    for item in config.multiplexed:
        bound = serve.deployment(checkpoint_replica(item.max_models_per_replica)).options(**item.serve_options()).bind(
            item.name, folder, config.device, item.folder, item.variant)
        targets.append(serve.RunTarget(bound, name=config.app_name(item.name), route_prefix=None))
    serve.run_many(targets)  # every application at once; returns when all are running
    return tuple(target.name for target in targets)


def undeploy(config: ServeConfig) -> tuple[str, ...]:
    """Delete the applications of ``config`` that are running; returns their names."""
    connect(config.address)
    running = set(serve.status().applications)
    names = [config.app_name(item.name) for item in (*config.deployments, *config.multiplexed)]
    for name in names:
        if name in running:
            serve.delete(name)
    return tuple(name for name in names if name in running)


# ---------------------------------------------------------------------------------------------------
# The client: the Engine API over Serve handles
# ---------------------------------------------------------------------------------------------------

class RemoteModel:
    """What ``RayEngine.use(name)`` yields: calling ``model.method(...)`` runs it on a replica."""

    def __init__(self, engine: "RayEngine", name: str, checkpoint: str | None = None):
        self._engine, self._name, self._checkpoint = engine, name, checkpoint

    def __repr__(self) -> str:
        return f"RemoteModel({self._name!r} on Ray Serve)"

    def __getattr__(self, method: str):
        if method.startswith("_"):
            raise AttributeError(method)

        def call(*args, **kwargs):
            return self._engine.call(self._name, method, args, kwargs, checkpoint=self._checkpoint)
        call.__name__ = method
        return call


class RayEngine:
    """The :class:`~engine.runtime.Engine` API with the configured models on Ray Serve.

    ``local``: the in-process engine for every model the config does not deploy (and for ``device``,
    which the studio's own computations such as fitting use). Thread-safe.
    """

    def __init__(self, config: ServeConfig, local: Engine):
        self.serve_config, self.local = config, local
        self.config = local.config
        self.device = local.device
        self.budget_bytes = local.budget_bytes
        self._lock = threading.Lock()
        self._handles: dict[str, object] = {}
        self._retries: Counter = Counter()
        self._infos: dict[str, tuple[float, tuple[ReplicaInfo, ...]]] = {}
        connect(config.address)

    # -- the Engine API -----------------------------------------------------------------------------

    @property
    def models_dir(self) -> Path:
        return self.local.models_dir

    @property
    def gpu_concurrency(self) -> int:
        return self.local.gpu_concurrency

    def register(self, spec: ModelSpec) -> None:
        self.local.register(spec)

    def names(self) -> tuple[str, ...]:
        return self.local.names()

    def deployed(self, name: str) -> bool:
        base, _, _ = name.partition(MULTIPLEX_SEPARATOR) if isinstance(name, str) else ("", "", "")
        return self.serve_config.deployment(name) is not None or self.serve_config.multiplex(base) is not None

    def get(self, name: str, progress: ProgressFn | None = None) -> object:
        if not self.deployed(name):
            return self.local.get(name, progress)
        base, _, checkpoint = name.partition(MULTIPLEX_SEPARATOR)
        if self.serve_config.multiplex(base) is not None:
            if not checkpoint:
                raise InputError(f"{base!r} serves fine-tuned checkpoints: ask for {base}/<checkpoint id>")
            return RemoteModel(self, base, checkpoint)
        if progress is not None:
            progress(1.0, f"{name} runs on the Ray cluster")
        return RemoteModel(self, name)

    @contextmanager
    def use(self, name: str, progress: ProgressFn | None = None) -> Iterator[object]:
        if not self.deployed(name):
            with self.local.use(name, progress) as model:
                yield model
            return
        yield self.get(name, progress)

    def unload(self, name: str) -> bool:
        if self.deployed(name):
            raise InputError(f"{name} lives on the Ray cluster; scale it with the engine config, not unload")
        return self.local.unload(name)

    def loaded(self) -> tuple[str, ...]:
        return self.local.loaded()

    def memory_used(self) -> int:
        return self.local.memory_used()

    @property
    def retries(self) -> dict[str, int]:
        """Calls retried on another replica after theirs died, per model."""
        with self._lock:
            return dict(self._retries)

    # -- calls --------------------------------------------------------------------------------------

    def _handle(self, name: str):
        with self._lock:
            handle = self._handles.get(name)
            if handle is None:
                try:
                    handle = serve.get_deployment_handle(name, app_name=self.serve_config.app_name(name))
                except (KeyError, RayServeException):  # no such application, or no Serve on the cluster at all
                    raise ModelUnavailableError(
                        f"the {name} model is not deployed on the Ray cluster at {self.serve_config.address}; "
                        "the administrator can run `python app.py engine`") from None
                self._handles[name] = handle
            return handle

    def _request(self, name: str, method: str, args: tuple, kwargs: dict, checkpoint: str | None):
        handle = self._handle(name)
        if checkpoint is not None:
            handle = handle.options(multiplexed_model_id=checkpoint)
        if method == SINGLE_REQUEST_METHOD:
            return handle.predict_one.remote(*args)
        return handle.call.remote(method, args, kwargs)

    def _answer(self, name: str, method: str, args: tuple, kwargs: dict, checkpoint: str | None,
                response=None) -> Reply:
        """One call's reply (``response``: the call already sent, if any), sent again up to
        ``RETRIES_ON_REPLICA_DEATH`` times when its replica died; the router then picks a live replica."""
        for attempt in range(RETRIES_ON_REPLICA_DEATH + 1):
            if response is None:
                response = self._request(name, method, args, kwargs, checkpoint)
            try:
                return response.result(timeout_s=CALL_TIMEOUT_S)
            except RayActorError as error:
                response = None
                if attempt == RETRIES_ON_REPLICA_DEATH:
                    raise ModelUnavailableError(f"the {name} model's replicas stopped while answering; "
                                                "try again in a minute") from error
                logger.warning("a replica of %s died mid-request (%s); sending the call again",
                               name, type(error).__name__)
                with self._lock:
                    self._retries[name] += 1
        raise AssertionError("unreachable")

    def call(self, name: str, method: str, args: tuple, kwargs: dict, checkpoint: str | None = None):
        """``method(*args, **kwargs)`` of deployed model ``name`` on a replica; raises its failure in words."""
        item = self.serve_config.deployment(name)
        if item is not None and item.batching and method == CONTACT_BATCH_METHOD and not kwargs and len(args) == 1:
            return self._batched(name, list(args[0]))
        reply = self._answer(name, method, args, kwargs, checkpoint)
        if reply.failure is not None:
            raise reply.failure.error()
        return reply.value

    def _batched(self, name: str, requests: list) -> list:
        """One ``predict_one`` per request, sent together so the replica's ``@serve.batch`` gathers them."""
        if not 1 <= len(requests) <= BATCH_LIMIT:
            raise InputError(f"a batch holds 1 to {BATCH_LIMIT} requests, got {len(requests)}")
        responses = [self._request(name, SINGLE_REQUEST_METHOD, (tuple(request),), {}, None) for request in requests]
        replies = [self._answer(name, SINGLE_REQUEST_METHOD, (tuple(request),), {}, None, response=response)
                   for request, response in zip(requests, responses)]
        failure = next((reply.failure for reply in replies if reply.failure is not None), None)
        if failure is not None:
            raise failure.error()
        return [reply.value for reply in replies]

    # -- status -------------------------------------------------------------------------------------

    def replica_infos(self, name: str, refresh: bool = False) -> tuple[ReplicaInfo, ...]:
        """What one replica of ``name`` reports (cached for a few seconds; empty when none answers)."""
        now = time.monotonic()
        with self._lock:
            cached = self._infos.get(name)
        if cached is not None and not refresh and now - cached[0] < STATUS_TTL_S:
            return cached[1]
        try:
            infos = (self._handle(name).info.remote().result(timeout_s=30),)
        except (RayActorError, ValueError, KeyError, TimeoutError) as error:
            logger.warning("no replica of %s answered: %s", name, error)
            infos = ()
        with self._lock:
            self._infos[name] = (now, infos)
        return infos

    def cluster_status(self) -> ClusterStatus:
        """Deployments, replicas and GPU use as Ray reports them."""
        try:
            applications = serve.status().applications
        except RayServeException:  # Serve was never started on this cluster
            applications = {}
        total, free = ray.cluster_resources(), ray.available_resources()
        rows = []
        for item in (*self.serve_config.deployments, *self.serve_config.multiplexed):
            app = applications.get(self.serve_config.app_name(item.name))
            overview = app.deployments.get(item.name) if app is not None else None
            states = dict(overview.replica_states) if overview is not None else {}
            infos = self.replica_infos(item.name) if overview is not None else ()
            failure = next((info.failure.message for info in infos if info.failure is not None), None)
            if isinstance(item, DeploymentConfig):
                bounds = (str(item.replicas) if item.replicas is not None
                          else f"{item.min_replicas}-{item.max_replicas} (autoscaling)")
                batch = item.max_batch_size
            else:
                bounds, batch = str(item.replicas), 1
            rows.append(DeploymentStatus(
                item.name, str(overview.status.value) if overview is not None else "NOT DEPLOYED",
                states.get("RUNNING", 0), bounds, float(item.num_gpus), batch,
                failure or (overview.message if overview is not None and overview.message else None),
                self.retries.get(item.name, 0), tuple(id_ for info in infos for id_ in info.checkpoints),
                sum(info.gpu_bytes for info in infos)))
        return ClusterStatus(self.serve_config.address, float(total.get("GPU", 0.0)),
                             float(total.get("GPU", 0.0) - free.get("GPU", 0.0)), float(total.get("CPU", 0.0)),
                             float(total.get("CPU", 0.0) - free.get("CPU", 0.0)), tuple(rows))

    def status(self) -> EngineStatus:
        """The local engine's snapshot with deployed models' availability from their replicas, plus the cluster."""
        local = self.local.status()
        cluster = self.cluster_status()
        by_name = {row.name: row for row in cluster.deployments}
        models = []
        for model in local.models:
            row = by_name.get(model.name)
            if row is None:
                models.append(model)
                continue
            infos = self.replica_infos(model.name)
            failure = next((info.failure for info in infos if info.failure is not None), None)
            missing = (Path(failure.expected),) if failure is not None and failure.kind == "missing" else ()
            models.append(ModelAvailability(model.name, model.capability, bool(infos) and failure is None,
                                            missing, any(info.loaded for info in infos), where="ray"))
        return replace(local, models=tuple(models), cluster=cluster)
