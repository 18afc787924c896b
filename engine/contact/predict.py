"""The inference API: human contact and object affordance from one image.

One entry point, ``load_predictor(models_dir, variant)``. With the released folder present it returns an
``InteractVLMPredictor``; without it, for human contact, the ``CategoryPriorPredictor`` baseline, whose
every result says ``source = "baseline: category prior"``. Both have ``predict_human_contact``.

Speed by design: the 4 body renders never change, so their SAM image embeddings and Φ's per-view gates
are computed once per (body topology, model) and kept; object renders are encoded once per object
(a small LRU). ``predict_human_contact_batch`` runs several requests through the VLM and SAM at once.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from engine import rll
from engine.body.model import BodyModel
from engine.contact import prompts
from engine.contact.checkpoint import CLIP_FOLDER, LoadedModel, load_interactvlm
from engine.contact.data import load_image_rgb
from engine.contact.prior import PRIOR_SOURCE, part_contact_summary, predict_category_prior
from engine.contact.model import route_for
from engine.contact.vlm import clip_pixels, tokenize_with_image
from engine.contact.vocabulary import resolve_affordance, resolve_object_label
from engine.errors import InputError, MissingAssetError

SMPLX = "smplx-10475"
OBJECT_CACHE_SIZE = 8
MAX_BATCH = 16


def _read_only(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array, dtype=np.float32)
    array.setflags(write=False)
    return array


@dataclass(frozen=True)
class HumanContactResult:
    """Contact on the body for one image and object label.

    object_label: the resolved label, or None for binary contact with anything.
    topology: the body's topology id; ``probabilities`` (V,) float32 in [0, 1] is per vertex of it.
    smplx_probabilities: (10475,) float32 through the user's SMPL->SMPL-X map, when the body is SMPL-H/SMPL
        and the map is present; else None.
    parts: contacted part names (at least 10% of a part's vertices at >= 0.5). answer: the text answer.
    view_masks: (4, S, S) float32 per-view contact probabilities on the body renders.
    source: the checkpoint folder's name, or ``"baseline: category prior"``.
    token_emitted: False when the answer held no contact token. There is then no mask: ``probabilities``
        and ``view_masks`` are all zero and ``token_masks`` is empty. The model is never asked for a mask
        from another hidden state.
    token_masks: (K, 4, S, S) float32, one set of view masks per contact token of the answer, in order;
        ``view_masks`` and ``probabilities`` come from the first. token_probabilities: (K, V) their lifts.
    """

    object_label: str | None
    topology: str
    probabilities: np.ndarray
    smplx_probabilities: np.ndarray | None
    parts: tuple[str, ...]
    answer: str
    view_masks: np.ndarray
    source: str
    token_emitted: bool = True
    token_masks: np.ndarray | None = None
    token_probabilities: np.ndarray | None = None

    @property
    def is_baseline(self) -> bool:
        return self.source == PRIOR_SOURCE


@dataclass(frozen=True)
class AffordanceResult:
    """Per-vertex (mesh) or per-point values (P,) float32 in [0, 1] on the object as given.

    kind: "mesh" or "points". view_masks: (4, S, S) per-view probabilities on the object renders.
    token_emitted, token_masks, token_values: as ``HumanContactResult`` (no contact token: no mask, zeros).
    """

    object_label: str
    affordance: str | None
    kind: str
    values: np.ndarray
    answer: str
    view_masks: np.ndarray
    source: str
    token_emitted: bool = True
    token_masks: np.ndarray | None = None
    token_values: np.ndarray | None = None


@dataclass(frozen=True)
class Generation:
    """The VLM's answers (B,) and, per request, every contact token it emitted.

    hidden: per request (K, hidden) the last-layer states that emitted its K contact tokens, in order.
    tokens: per request the K tokens. routes: per request the splitter branch its FIRST contact token picks
    ("human" for ``[HSEG]``, "object" for ``[OSEG]``, None for ``[SEG]`` or no token).
    """

    answers: tuple[str, ...]
    hidden: tuple[torch.Tensor, ...]
    tokens: tuple[tuple[str, ...], ...]
    routes: tuple[str | None, ...]


def human_result(body: BodyModel, probabilities: np.ndarray, *, label, answer, masks, source, topology_map,
                 emitted=True, token_masks=None, token_probabilities=None) -> HumanContactResult:
    smplx = None
    if topology_map is not None and body.topology in ("smplh-6890", "smpl-6890"):
        smplx = _read_only(np.clip(topology_map.convert(probabilities, body.topology, SMPLX), 0, 1))
    return HumanContactResult(label, body.topology, _read_only(probabilities), smplx,
                              part_contact_summary(body, probabilities), answer, _read_only(masks), source, emitted,
                              None if token_masks is None else _read_only(token_masks),
                              None if token_probabilities is None else _read_only(token_probabilities))


class CategoryPriorPredictor:
    """The baseline: contact from the object label alone (``engine.contact.prior``); the image is only checked."""

    source = PRIOR_SOURCE

    def __init__(self, body: BodyModel, topology_map=None, resolution: int = 512):
        self.body, self.topology_map, self.resolution = body, topology_map, resolution

    @cached_property
    def views(self) -> rll.RenderedViews:
        return rll.render_views(self.body.vitruvian_vertices(), self.body.faces, preset="body",
                                resolution=self.resolution, topology=self.body.topology)

    def predict_human_contact(self, image, object_label: str | None = None) -> HumanContactResult:
        load_image_rgb(image)
        if object_label is None:
            raise InputError("the category prior needs an object label (it predicts from the label alone)")
        prior = predict_category_prior(self.body, object_label)
        masks = rll.project(self.views, prior.probabilities >= 0.5).astype(np.float32)
        return human_result(self.body, prior.probabilities, label=prior.object_label, answer=prior.answer,
                            masks=masks, source=PRIOR_SOURCE, topology_map=self.topology_map)

    def predict_human_contact_batch(self, requests) -> list[HumanContactResult]:
        return [self.predict_human_contact(image, label) for image, label in requests]


@dataclass(frozen=True)
class _ViewCache:
    """Renders of a fixed target and their SAM embeddings (V, C, s, s)."""

    views: rll.RenderedViews
    embeddings: torch.Tensor


class InteractVLMPredictor:
    """A loaded InteractVLM variant with its caches. Thread-safe: one request batch at a time."""

    def __init__(self, loaded: LoadedModel, body: BodyModel, topology_map=None, *, cache_body: bool = True):
        self.model, self.tokenizer, self.source = loaded.model, loaded.tokenizer, loaded.name
        self.token_ids = loaded.token_ids
        self.image_processor = loaded.image_processor
        self.config = self.model.config
        self.body, self.topology_map, self.cache_body = body, topology_map, cache_body
        self._lock = threading.Lock()
        self._objects: OrderedDict[str, _ViewCache] = OrderedDict()
        self._body: _ViewCache | None = None
        self._gates: dict[str, torch.Tensor] = {}

    def memory_bytes(self) -> int:
        tensors = {id(t): t for t in list(self.model.parameters()) + list(self.model.buffers())}
        return sum(t.numel() * t.element_size() for t in tensors.values())

    # ---- stages ----------------------------------------------------------------------------------------

    def _view_cache(self, vertices, faces, preset: str, topology: str) -> _ViewCache:
        views = rll.render_views(vertices, faces, preset=preset, resolution=self.model.resolution, topology=topology)
        with torch.no_grad():
            embeddings = self.model.encode_views(self.model.sam.preprocess(views.images))
        return _ViewCache(views, embeddings)

    def body_views(self) -> _ViewCache:
        """Θ of the canonical body renders, once per predictor (``cache_body=False`` recomputes: benchmarks)."""
        if self._body is None or not self.cache_body:
            self._body = self._view_cache(self.body.vitruvian_vertices(), self.body.faces, "body", self.body.topology)
        return self._body

    def object_views(self, vertices, faces) -> _ViewCache:
        preset = "object_points" if faces is None else "object_mesh"
        key = _geometry_key(vertices, faces)
        if key not in self._objects:
            self._objects[key] = self._view_cache(vertices, faces, preset, f"object-{key[:16]}")
            while len(self._objects) > OBJECT_CACHE_SIZE:
                self._objects.popitem(last=False)
        self._objects.move_to_end(key)
        return self._objects[key]

    def gates(self, preset: str) -> torch.Tensor:
        """Φ's (V, C) per-view gates: they depend only on the preset's cameras, so computed once."""
        if preset not in self._gates or not self.cache_body:
            with torch.no_grad():
                self._gates[preset] = self.model.cam_pose_encoder.gates(rll.get_preset(preset).camera_conditioning())
        return self._gates[preset]

    def generate(self, images: list[np.ndarray], questions: list[str]) -> Generation:
        """Ψ: greedy answers, and the last hidden state that emitted each contact token."""
        model, tokenizer = self.model, self.tokenizer
        pixels = torch.stack([clip_pixels(image, self.image_processor) for image in images])
        sequences = [tokenize_with_image(tokenizer, prompts.conversation(q, im_start_end=self.config.use_im_start_end))
                     for q in questions]
        with torch.no_grad():
            batch = model.vlm.embed(sequences, model.vlm.image_features(pixels), pad_id=tokenizer.pad_token_id,
                                    left_pad=True)
            out = model.vlm.language_model.generate(
                inputs_embeds=batch.embeds, attention_mask=batch.attention_mask, max_new_tokens=self.config.max_new_tokens,
                do_sample=False, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                return_dict_in_generate=True, output_hidden_states=True)
        return self._read_generation(out)

    def _read_generation(self, out) -> Generation:
        steps = torch.stack([step[-1][:, -1] for step in out.hidden_states], dim=1)  # (B, T, h)
        generated = out.sequences[:, -steps.shape[1]:]
        answers = tuple(self.tokenizer.decode(row.tolist(), skip_special_tokens=True).strip() for row in generated)
        by_id = {token_id: token for token, token_id in self.token_ids.items()}
        hidden, tokens, routes = [], [], []
        for row in range(generated.shape[0]):
            ids = generated[row].tolist()
            ends = [t for t, token_id in enumerate(ids) if token_id == self.tokenizer.eos_token_id]
            positions = [t for t, token_id in enumerate(ids[:ends[0] if ends else len(ids)]) if token_id in by_id]
            hidden.append(steps[row, positions])
            tokens.append(tuple(by_id[ids[t]] for t in positions))
            routes.append(route_for(tokens[-1][0], self.config) if positions else None)
        return Generation(answers, tuple(hidden), tuple(tokens), tuple(routes))

    def localise(self, target: str, hidden: torch.Tensor, cache: _ViewCache, preset: str,
                 route: str | None) -> torch.Tensor:
        """Γ, Φ, the splitter ``route`` and MV-Loc for (K, h) token states -> (K, V, S, S) mask logits."""
        with torch.no_grad():
            embeddings = self.model.text_hidden_fcs(hidden.to(self.model.text_hidden_fcs[0].weight.dtype))
            view_prompts = self.model.route(embeddings[:, None] * self.gates(preset)[None], route)
            return self.model.localise(self.config.decoder_for[target], cache.embeddings, view_prompts).float()

    def _localise_all(self, target: str, generation: Generation, cache: _ViewCache, preset: str) -> list[torch.Tensor]:
        """Per request its (K, V, S, S) logits; requests sharing a route are decoded in one SAM call."""
        masks: list[torch.Tensor | None] = [None] * len(generation.hidden)
        for route in dict.fromkeys(generation.routes):
            rows = [i for i, r in enumerate(generation.routes) if r == route and generation.hidden[i].shape[0]]
            if rows:
                logits = self.localise(target, torch.cat([generation.hidden[i] for i in rows]), cache, preset, route)
                for i, chunk in zip(rows, logits.split([generation.hidden[i].shape[0] for i in rows])):
                    masks[i] = chunk
        size = self.model.resolution
        return [m if m is not None else torch.zeros(0, self.config.num_views, size, size) for m in masks]

    # ---- public API --------------------------------------------------------------------------------------

    def predict_human_contact(self, image, object_label: str | None = None) -> HumanContactResult:
        return self.predict_human_contact_batch([(image, object_label)])[0]

    def predict_human_contact_batch(self, requests) -> list[HumanContactResult]:
        """Several (image, object label or None) requests through one VLM batch and one SAM decode."""
        if "human" not in self.config.targets:
            raise InputError(f"the {self.source} model predicts object affordance, not human contact")
        if not 1 <= len(requests) <= MAX_BATCH:
            raise InputError(f"a batch holds 1 to {MAX_BATCH} requests, got {len(requests)}")
        images = [load_image_rgb(image) for image, _ in requests]
        labels = [None if label is None else resolve_object_label(label) for _, label in requests]
        questions = [prompts.human_question(label) for label in labels]
        with self._lock:
            generation = self.generate(images, questions)
            cache = self.body_views()
            logits = self._localise_all("human", generation, cache, "body")
        return [self._human_result(cache, masks, labels[i], generation.answers[i]) for i, masks in enumerate(logits)]

    def _human_result(self, cache: _ViewCache, logits: torch.Tensor, label, answer: str) -> HumanContactResult:
        probs = torch.sigmoid(logits.clamp(-rll.LOGIT_CLAMP, rll.LOGIT_CLAMP))
        lifted = (rll.lift_tensor(cache.views, probs.to(self.model.device)).cpu().numpy() if len(probs)
                  else np.zeros((0, cache.views.num_vertices), np.float32))
        if not np.isfinite(lifted).all():
            raise RuntimeError(f"the {self.source} model produced non-finite masks; check its weights and dtype")
        masks = probs.cpu().numpy()
        first = lifted[0] if len(lifted) else np.zeros(cache.views.num_vertices, np.float32)
        first_masks = masks[0] if len(masks) else np.zeros(masks.shape[1:], np.float32)
        return human_result(self.body, first, label=label, answer=answer, masks=first_masks, source=self.source,
                            topology_map=self.topology_map, emitted=len(masks) > 0, token_masks=masks,
                            token_probabilities=lifted)

    def predict_object_affordance(self, image, vertices, faces=None, *, object_label: str,
                                  affordance: str | None = None) -> AffordanceResult:
        """Affordance (oafford) or object contact (joint) on a mesh (``faces`` given) or a point cloud.

        The question is the release's affordance question for ``object_label``; ``affordance`` (when given)
        names the ground-truth affordance of an evaluation sample and is only carried into the result."""
        if "object" not in self.config.targets:
            raise InputError(f"the {self.source} model predicts human contact, not object affordance")
        picture = load_image_rgb(image)
        label = resolve_object_label(object_label)
        wanted = None if affordance is None else resolve_affordance(affordance)
        with self._lock:
            generation = self.generate([picture], [prompts.object_question(label)])
            cache = self.object_views(vertices, faces)
            logits = self._localise_all("object", generation, cache, cache.views.preset)[0]
        probs = torch.sigmoid(logits.clamp(-rll.LOGIT_CLAMP, rll.LOGIT_CLAMP)).cpu()
        lift = rll.lift_points if faces is None else rll.lift_object_mesh
        values = np.stack([lift(cache.views, p) for p in probs]) if len(probs) else \
            np.zeros((0, cache.views.num_vertices), np.float32)
        first = values[0] if len(values) else np.zeros(cache.views.num_vertices, np.float32)
        first_masks = probs[0].numpy() if len(probs) else np.zeros(probs.shape[1:], np.float32)
        return AffordanceResult(label, wanted, "points" if faces is None else "mesh", _read_only(first),
                                generation.answers[0], _read_only(first_masks), self.source, len(probs) > 0,
                                _read_only(probs.numpy()), _read_only(values))


def _geometry_key(vertices, faces) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(np.asarray(vertices, dtype=np.float32)).tobytes())
    if faces is not None:
        digest.update(np.ascontiguousarray(np.asarray(faces, dtype=np.int64)).tobytes())
    return digest.hexdigest()


# ---- the entry point ------------------------------------------------------------------------------------------
VARIANTS = ("hcontact", "oafford", "joint")


def variant_folder(models_dir: Path | str, variant: str) -> Path:
    if variant not in VARIANTS:
        raise InputError(f"unknown InteractVLM variant {variant!r}; choose one of {VARIANTS}")
    return Path(models_dir) / "interactvlm" / variant


def default_body(models_dir: Path | str, device=None) -> tuple[BodyModel, object]:
    """InteractVLM's SMPL-H body when its file is present (plus the SMPL-X map if present), else the open body."""
    from engine.assets import doctor_report
    from engine.body import load_body
    from engine.body.topology import TopologyMap

    report = doctor_report(models_dir)
    body = load_body("smplh" if "smplh" in report.available_bodies() else "openbody", models_dir, device)
    try:
        topology_map = TopologyMap.from_pretrained(models_dir)
    except MissingAssetError:
        topology_map = None
    return body, topology_map


def load_predictor(models_dir: Path | str, variant: str = "hcontact", *, device: torch.device | str = "cpu",
                   dtype: str = "bf16", bits: int | None = None, body: BodyModel | None = None, topology_map=None):
    """The predictor for ``variant``: the released model when its folder exists under
    ``<models>/interactvlm/<variant>/`` (with ``<models>/clip-vit-large-patch14/``), else for ``hcontact``
    the category-prior baseline. Object affordance without its checkpoint raises MissingAssetError."""
    folder = variant_folder(models_dir, variant)
    if body is None:
        body, topology_map = default_body(models_dir)
    if not (folder / "config.json").is_file():
        if variant == "hcontact":
            return CategoryPriorPredictor(body, topology_map)
        raise MissingAssetError(f"InteractVLM {variant} checkpoint", folder, "see the README's model table")
    loaded = load_interactvlm(folder, Path(models_dir) / CLIP_FOLDER, dtype=dtype, device=device, bits=bits)
    return InteractVLMPredictor(loaded, body.to(device), topology_map)


# ---- the shared engine's registry ------------------------------------------------------------------------------
CAPABILITIES = {"hcontact": "human contact (InteractVLM)", "oafford": "object affordance (InteractVLM)",
                "joint": "human and object contact (InteractVLM joint)"}
# bf16 sizes of the released variants: 13B LM + ViT-L/14 + ViT-H + Γ; the engine evicts ahead with these.
RELEASED_BYTES = 27 * 1024 ** 3


def _variant_loader(variant: str):
    def load(context):
        context.progress(0.1, f"loading InteractVLM {variant} from {variant_folder(context.models_dir, variant)}")
        dtype = "bf16" if context.device.type == "cuda" else "fp32"
        return load_predictor(context.models_dir, variant, device=context.device, dtype=dtype)
    return load


def _prior_loader(context):
    body, topology_map = default_body(context.models_dir)
    return CategoryPriorPredictor(body, topology_map)


def register_contact_models(engine) -> None:
    """Register ``interactvlm-<variant>`` for each released variant and ``category-prior`` (always available)."""
    from engine.runtime import ModelSpec

    for variant in VARIANTS:
        requires = (Path("interactvlm") / variant / "config.json", Path(CLIP_FOLDER) / "config.json")
        engine.register(ModelSpec(f"interactvlm-{variant}", _variant_loader(variant), CAPABILITIES[variant],
                                  estimate_bytes=RELEASED_BYTES, requires=requires))
    engine.register(ModelSpec("category-prior", _prior_loader, "human contact (baseline: category prior)"))


def human_contact_model(engine) -> str:
    """The registry name the studio should use for human contact: the model when present, else the prior."""
    status = {entry.name: entry for entry in engine.status().models}
    return "interactvlm-hcontact" if status["interactvlm-hcontact"].available else "category-prior"
