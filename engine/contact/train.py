"""Fine-tune InteractVLM: ``python -m engine.contact.train`` (REFERENCE.md section 1, "Training").

Stages of one step, in the paper's symbols:
1. Ψ reads image + question with the answer teacher-forced, drawn (seeded) from the release's lists
   (``engine.contact.prompts``): "The contacting body parts are {parts}, and the contact region is [SEG]."
   and its variants (parts with >= 10% of their vertices in contact, joined with ", "), or the affordance
   answers for objects. The joint model's answers carry [HSEG] (human) or [OSEG] (object), whose
   embeddings take the attention splitter's human or object branch.
2. Γ, Φ and MV-Loc turn the state that emits [SEG] into one mask per view of the canonical body
   (or of the object's point cloud).
3. ``rll.lift_tensor`` lifts the masks to vertices (or points), differentiably.
4. Losses: token CE, focal BCE + dice on the masks over the rendered region (ground truth through
   ``rll.project``, a face needs 3 contact vertices), vertex focal + sparsity (human) or
   focal/dice/MSE/L1 (object). AdamW (0.9, 0.95), linear warm-up then linear decay (LISA's
   WarmupDecayLR), clipping at 1.0, bf16 autocast on CUDA.

Validation runs the same teacher-forced pass and scores F1 (human, at 0.5) or aIoU (object) with
``engine.metrics``; the best model is written as a released-layout folder under
``<out>/interactvlm/<variant>/`` next to ``<out>/clip-vit-large-patch14/``, so ``<out>`` works as a
models directory. ``<out>/last.pt`` holds the trainable weights, optimiser, schedule, step and RNG
states; ``--resume`` continues from it.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from engine import metrics, rll
from engine.body.model import BodyModel
from engine.contact import prompts
from engine.contact.checkpoint import CLIP_FOLDER, load_interactvlm, new_model, save_released
from engine.contact.data import (AffordanceSample, load_image_rgb, read_affordance_manifest,
                                 read_damon_npz, split)
from engine.contact.lora import apply_lora, has_lora
from engine.contact.losses import LossTerms, human_contact_losses, object_affordance_losses
from engine.contact.model import InteractVLM, emitting_positions, route_for, set_trainable
from engine.contact.prior import part_contact_summary
from engine.contact.vlm import IGNORE_INDEX, clip_pixels, clip_processor, tokenize_with_image
from engine.errors import InputError
from engine.paths import write_atomically
from engine.runtime import pick_device


@dataclass(frozen=True)
class TrainOptions:
    """One training run. ``init`` is a released-layout folder to fine-tune (with ``clip``); without it a
    ``preset`` model is initialised from ``seed`` (``tiny`` trains on CPU). Defaults are the released recipe."""

    out: Path
    human_data: Path | None = None
    affordance_data: Path | None = None
    semantic: bool = True
    image_root: Path | None = None
    preset: str = "tiny"
    init: Path | None = None
    clip: Path | None = None
    steps: int = 15000
    batch_size: int = 8
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.95)
    warmup: int = 100
    clip_norm: float = 1.0
    val_fraction: float = 0.1
    val_every: int = 500
    save_every: int = 500
    seed: int = 0
    device: str = "auto"
    gradient_checkpointing: bool = False
    resume: bool = False
    models_dir: Path | None = None

    def __post_init__(self):
        if (self.human_data is None) == (self.affordance_data is None):
            raise InputError("give exactly one of --human-data (DAMON-style npz) or --affordance-data (PIAD manifest)")
        for name in ("steps", "batch_size", "val_every", "save_every"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1")
        if not 0 < self.lr < 1 or self.warmup < 0 or not 0 <= self.val_fraction < 1 or self.clip_norm <= 0:
            raise InputError("lr must be in (0, 1), warmup >= 0, val_fraction in [0, 1), clip_norm > 0")


@dataclass(frozen=True)
class TrainResult:
    """losses: (step, total) per step run in this call. validations: (step, metric). best: (step, metric) or None."""

    start_step: int
    end_step: int
    losses: tuple[tuple[int, float], ...]
    validations: tuple[tuple[int, float], ...]
    best: tuple[int, float] | None
    model_folder: Path


@dataclass(frozen=True)
class _Targets:
    """What one target kind (human body or an object) needs per sample: views, their SAM embeddings."""

    views: rll.RenderedViews
    embeddings: torch.Tensor


class Trainer:
    def __init__(self, options: TrainOptions, progress: Callable[[int, int, float], None] | None = None):
        self.options, self.progress = options, progress
        self.device = pick_device(options.device)
        self.model, self.tokenizer = self._build_model()
        self.target = "human" if options.human_data is not None else "object"
        if self.target not in self.model.config.targets:
            raise InputError(f"the {self.model.config.name} model has no {self.target} target")
        self.token = self.model.config.token_for[self.target]
        self.token_id = self.tokenizer.convert_tokens_to_ids(self.token)
        self.route = route_for(self.token, self.model.config)
        self.image_processor = clip_processor(self._clip_folder(), self.model.config.vision.image_size)
        self.text_step: int | None = None  # training step whose texts are drawn; None: the first of each list
        self.trainable = set_trainable(self.model)
        self.body: BodyModel | None = None
        self._body: _Targets | None = None
        self._object_cache: dict[int, _Targets] = {}

    # ---- setup ---------------------------------------------------------------------------------------
    def _clip_folder(self) -> Path | None:
        if self.options.init is None:
            return None
        return self.options.clip or self.options.init.parent.parent / CLIP_FOLDER

    def _build_model(self) -> tuple[InteractVLM, object]:
        options = self.options
        if options.init is not None:
            clip = options.clip or options.init.parent.parent / CLIP_FOLDER
            loaded = load_interactvlm(options.init, clip, dtype="fp32", device="cpu")
            model, tokenizer = loaded.model, loaded.tokenizer
        else:
            model, tokenizer = new_model(options.preset, seed=options.seed)
        if not has_lora(model):
            apply_lora(model)
        model.to(self.device)
        if options.gradient_checkpointing:
            model.vlm.language_model.gradient_checkpointing_enable()
        return model, tokenizer

    def _body_targets(self) -> _Targets:
        if self.body is None:
            from engine.contact.predict import default_body

            self.body, _ = default_body(self.options.models_dir or Path("models"))
            self._body = self._encode(self.body.vitruvian_vertices(), self.body.faces, "body", self.body.topology)
        return self._body

    def _encode(self, vertices, faces, preset: str, topology: str) -> _Targets:
        views = rll.render_views(vertices, faces, preset=preset, resolution=self.model.resolution, topology=topology)
        with torch.no_grad():  # Θ is frozen: its embeddings are constants of the data
            embeddings = self.model.encode_views(self.model.sam.preprocess(views.images))
        return _Targets(views, embeddings)

    def _object_targets(self, index: int, sample: AffordanceSample) -> _Targets:
        if index not in self._object_cache:
            self._object_cache[index] = self._encode(sample.points, None, "object_points", f"train-object-{index}")
        return self._object_cache[index]

    # ---- data ----------------------------------------------------------------------------------------
    def load_samples(self) -> tuple[tuple, tuple]:
        options = self.options
        if self.target == "human":
            samples = read_damon_npz(options.human_data, image_root=options.image_root, semantic=options.semantic)
            topology = self._body_targets().views.topology
            if any(sample.topology != topology for sample in samples):
                raise InputError(f"the labels are on {samples[0].topology} but the training body is {topology}; "
                                 "put the matching body file in the models dir")
        else:
            samples = read_affordance_manifest(options.affordance_data)
        if not samples:
            raise InputError("the training data holds no sample")
        return split(samples, options.val_fraction, options.seed)

    def _question_and_answer(self, sample, index: int) -> tuple[str, str]:
        """Training draws from the release's lists, seeded by (seed, step, sample) so that a resumed run
        draws the same texts; validation asks the first question and expects the first answer."""
        question = answer = 0
        if self.text_step is not None:
            rng = np.random.default_rng([self.options.seed, self.text_step, index])
            question, answer = prompts.pick(rng), prompts.pick(rng)
        if self.target == "human":
            parts = part_contact_summary(self.body, sample.contact.astype(np.float32))
            return prompts.human_question(sample.object_label, question), prompts.human_answer(parts, self.token, answer)
        return (prompts.object_question(sample.object_class or "object", question),
                prompts.object_answer(sample.affordance, self.token, answer))

    def _sequence(self, sample, index: int = 0) -> tuple[list[int], list[int]]:
        question, answer = self._question_and_answer(sample, index)
        prompt = tokenize_with_image(self.tokenizer, prompts.conversation(question, im_start_end=self.model.config.use_im_start_end))
        reply = self.tokenizer(" " + answer, add_special_tokens=False).input_ids + [self.tokenizer.eos_token_id]
        return prompt + reply, [IGNORE_INDEX] * len(prompt) + reply

    # ---- one teacher-forced pass -----------------------------------------------------------------------
    def forward(self, batch: Sequence[tuple[int, object]]) -> tuple[LossTerms, torch.Tensor, torch.Tensor]:
        """Losses, lifted scores (B, N) and their ground truth (B, N) for (index, sample) pairs."""
        model = self.model
        sequences, labels = zip(*(self._sequence(sample, index) for index, sample in batch))
        pixels = torch.stack([clip_pixels(load_image_rgb(sample.image_path), self.image_processor)
                              for _, sample in batch])
        with torch.no_grad():  # CLIP and the projector are frozen
            features = model.vlm.image_features(pixels.to(self.device))
        embedded = model.vlm.embed(list(sequences), features, labels=list(labels), pad_id=self.tokenizer.pad_token_id,
                                   left_pad=False)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            out = model.vlm.language_model(inputs_embeds=embedded.embeds, attention_mask=embedded.attention_mask,
                                           output_hidden_states=True)
            emitted = emitting_positions(embedded.token_ids, self.token_id)
            if int(emitted.sum()) != len(batch):
                raise InputError(f"every answer must hold exactly one {self.token}")
            gated = model.cam_pose_encoder(model.contact_embeddings(out.hidden_states[-1], emitted),
                                           rll.get_preset(self._preset()).camera_conditioning())
            view_prompts = model.route(gated, self.route)
            targets = [self._targets(index, sample) for index, sample in batch]
            embeddings = torch.stack([target.embeddings for target in targets])
            logits = model.localise(model.config.decoder_for[self.target], embeddings, view_prompts).float()
        return self._losses(out.logits.float(), embedded.labels, logits, targets, [sample for _, sample in batch])

    def _preset(self) -> str:
        return "body" if self.target == "human" else "object_points"

    def _targets(self, index: int, sample) -> _Targets:
        return self._body_targets() if self.target == "human" else self._object_targets(index, sample)

    def _losses(self, token_logits, token_labels, logits, targets, samples):
        probs = torch.sigmoid(logits.clamp(-rll.LOGIT_CLAMP, rll.LOGIT_CLAMP))
        truths = [sample.contact if self.target == "human" else sample.values for sample in samples]
        scores = torch.stack([rll.lift_tensor(target.views, p) for target, p in zip(targets, probs)])
        truth = torch.as_tensor(np.stack(truths), dtype=torch.float32, device=self.device)
        min_vertices = 3 if self.target == "human" else 1
        masks = torch.stack([torch.from_numpy(rll.project(target.views, values >= 0.5, min_vertices=min_vertices))
                             for target, values in zip(targets, truths)]).to(self.device, torch.float32)
        valid = torch.stack([torch.from_numpy(target.views.valid) for target in targets]).to(self.device)
        loss = human_contact_losses if self.target == "human" else object_affordance_losses
        return loss(token_logits, token_labels, logits, masks, valid, scores, truth), scores, truth


def _schedule(step: int, warmup: int, total: int) -> float:
    """LISA's WarmupDecayLR factor: linear 0 -> 1 over ``warmup`` steps, then linear to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


class TrainingRun:
    """The loop around a ``Trainer``: batches, optimiser, validation, checkpoints, resume."""

    def __init__(self, trainer: Trainer):
        self.trainer, self.options = trainer, trainer.options
        parameters = [p for name, p in trainer.model.named_parameters() if name in trainer.trainable]
        self.optimizer = torch.optim.AdamW(parameters, lr=self.options.lr, betas=self.options.betas, weight_decay=0.0)
        total = self.options.steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: _schedule(step, self.options.warmup, total))
        self.step, self.best = 0, None
        self.train_set, self.val_set = trainer.load_samples()

    @property
    def last_path(self) -> Path:
        return self.options.out / "last.pt"

    @property
    def model_folder(self) -> Path:
        variant = self.trainer.model.config.name.removeprefix("tiny-")
        return self.options.out / "interactvlm" / variant

    def batch(self, step: int) -> list[tuple[int, object]]:
        """The (index, sample) pairs of ``step``: a pure function of (seed, step), so a resumed run sees
        exactly the batches the uninterrupted run would have seen."""
        size, count = self.options.batch_size, len(self.train_set)
        per_epoch = math.ceil(count / size)
        epoch, position = divmod(step, per_epoch)
        order = np.random.default_rng([self.options.seed, epoch]).permutation(count)
        return [(int(i), self.train_set[int(i)]) for i in order[position * size:(position + 1) * size]]

    def run(self) -> TrainResult:
        options = self.options
        options.out.mkdir(parents=True, exist_ok=True)
        if options.resume and self.last_path.is_file():
            self.load_checkpoint()
        start, losses, validations = self.step, [], []
        bar = tqdm(total=options.steps, initial=start, desc="train", unit="step", disable=not sys.stderr.isatty())
        while self.step < options.steps:
            total = self.train_step(self.batch(self.step))
            losses.append((self.step, total))
            bar.update(1)
            bar.set_postfix(loss=f"{total:.4f}")
            if self.trainer.progress:
                self.trainer.progress(self.step, options.steps, total)
            if self.step % options.val_every == 0 or self.step == options.steps:
                validations.append((self.step, self.validate()))
            if self.step % options.save_every == 0 or self.step == options.steps:
                self.save_checkpoint()
        bar.close()
        return TrainResult(start, self.step, tuple(losses), tuple(validations), self.best, self.model_folder)

    def train_step(self, batch) -> float:
        self.trainer.model.train()
        self.trainer.text_step = self.step
        try:
            terms, _, _ = self.trainer.forward(batch)
        finally:
            self.trainer.text_step = None
        self.optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(parameters, self.options.clip_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return float(terms.total.detach())

    def validate(self) -> float:
        """F1 at 0.5 (human) or aIoU (object, x100) on the validation split (the training split if empty)."""
        samples = self.val_set or self.train_set
        model = self.trainer.model
        model.eval()
        scores, truths = [], []
        with torch.no_grad():
            for start in range(0, len(samples), self.options.batch_size):
                chunk = [(start + i, s) for i, s in enumerate(samples[start:start + self.options.batch_size])]
                _, predicted, truth = self.trainer.forward(chunk)
                scores.append(predicted.cpu().numpy())
                truths.append(truth.cpu().numpy())
        predicted, truth = np.concatenate(scores), np.concatenate(truths)
        if self.trainer.target == "human":
            value = metrics.contact_metrics(predicted, truth).f1
        else:
            value = metrics.affordance_metrics(np.clip(predicted, 0, 1), truth).aiou
        if self.best is None or value > self.best[1]:
            self.best = (self.step, value)
            self.export_best()
        return value

    def export_best(self) -> None:
        model = self.trainer.model
        clip_folder = self.options.out / CLIP_FOLDER
        save_released(model, self.trainer.tokenizer, self.model_folder, dtype="fp32" if self.trainer.device.type == "cpu" else "bf16",
                      clip_folder=None if (clip_folder / "config.json").is_file() else clip_folder)

    # ---- checkpoints -----------------------------------------------------------------------------------
    def _identity(self) -> dict:
        options = self.options
        return {"init": str(options.init) if options.init else None, "preset": options.preset, "seed": options.seed,
                "data": str(options.human_data or options.affordance_data), "steps": options.steps}

    def save_checkpoint(self) -> None:
        model = self.trainer.model
        state = {
            "identity": self._identity(), "step": self.step, "best": self.best,
            "trainable": {name: p.detach().cpu() for name, p in model.named_parameters() if name in self.trainer.trainable},
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        write_atomically(self.last_path, lambda handle: torch.save(state, handle))

    def load_checkpoint(self) -> None:
        state = torch.load(self.last_path, map_location="cpu", weights_only=True)
        if state["identity"] != self._identity():
            raise InputError(f"{self.last_path} belongs to another run ({state['identity']}); use a new --out "
                             "or the same data, preset, init, seed and steps")
        parameters = dict(self.trainer.model.named_parameters())
        with torch.no_grad():
            for name, tensor in state["trainable"].items():
                parameters[name].copy_(tensor)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        self.step, self.best = state["step"], state["best"]


def train(options: TrainOptions, progress: Callable[[int, int, float], None] | None = None) -> TrainResult:
    """The one entry point: build, (resume,) train, validate, save."""
    random.seed(options.seed)
    torch.manual_seed(options.seed)
    return TrainingRun(Trainer(options, progress)).run()


def image_root(images: Path | None) -> Path | None:
    """``--images`` as the npz's ``imgname`` entries need it. A studio export names its images
    ``images/<sha256>.<ext>`` relative to the export folder, so the export's own ``images/`` folder given
    as ``--images`` means the export folder (else the prefix would be doubled: ``images/images/...``)."""
    if images is not None and images.name == "images" and (images.parent / "export.json").is_file():
        return images.parent
    return images


def parse_args(argv=None) -> TrainOptions:
    parser = argparse.ArgumentParser(prog="python -m engine.contact.train", description=__doc__.split("\n\n")[0])
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--human-data", type=Path, help="DAMON hot_dca_*.npz or a store export's contact_<topology>.npz")
    data.add_argument("--affordance-data", type=Path, help="PIAD/LEMON JSONL manifest or a store export folder")
    parser.add_argument("--binary", action="store_true", help="train binary contact (ignore per-object labels)")
    parser.add_argument("--images", type=Path, help="image root for imgname entries (default: the npz's folder; a "
                                                    "studio export's folder or its images/ folder both work)")
    parser.add_argument("--out", type=Path, required=True, help="run folder; becomes a models dir with the best model")
    parser.add_argument("--preset", default="tiny", help="model preset when not fine-tuning (tiny, tiny-oafford, ...)")
    parser.add_argument("--init", type=Path, help="released-layout folder to fine-tune")
    parser.add_argument("--clip", type=Path, help="CLIP vision folder (default: next to --init's models dir)")
    parser.add_argument("--models", type=Path, help="models dir for the body (SMPL-H when present)")
    for name, kind, default in (("steps", int, 15000), ("batch-size", int, 8), ("lr", float, 3e-4), ("warmup", int, 100),
                                ("val-fraction", float, 0.1), ("val-every", int, 500), ("save-every", int, 500),
                                ("seed", int, 0)):
        parser.add_argument(f"--{name}", type=kind, default=default)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    args = parser.parse_args(argv)
    return TrainOptions(out=args.out, human_data=args.human_data, affordance_data=args.affordance_data,
                        semantic=not args.binary, image_root=image_root(args.images), preset=args.preset, init=args.init,
                        clip=args.clip, steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup,
                        val_fraction=args.val_fraction, val_every=args.val_every, save_every=args.save_every,
                        seed=args.seed, device=args.device, gradient_checkpointing=args.gradient_checkpointing,
                        resume=args.resume, models_dir=args.models)


def main(argv=None) -> int:
    try:
        result = train(parse_args(argv))
    except (InputError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    first, last = result.losses[0][1] if result.losses else math.nan, result.losses[-1][1] if result.losses else math.nan
    print(json.dumps({"steps": [result.start_step, result.end_step], "first_loss": first, "last_loss": last,
                      "best": result.best, "model": str(result.model_folder)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
