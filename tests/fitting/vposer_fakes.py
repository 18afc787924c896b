"""A tiny seeded VPoser saved as the human_body_prior V02_05 release lays it out (yaml + lightning .ckpt)."""
from __future__ import annotations

import os

import torch

from engine.fitting.priors import VPOSER_DIR, VPoser

NEURONS, LATENT = 16, 4


class _TrainerCallback:  # stands for the pytorch-lightning objects a real checkpoint pickles next to the weights
    def __init__(self):
        self.best = torch.tensor(0.03)


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def write_tiny_vposer(root, seed=0, extra=None, yaml_text=None, state_filter=None):
    torch.manual_seed(seed)
    model = VPoser(num_neurons=NEURONS, latent_dim=LATENT)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    folder = root / VPOSER_DIR
    (folder / "snapshots").mkdir(parents=True, exist_ok=True)
    (folder / "V02_05.yaml").write_text(yaml_text if yaml_text is not None else
                                        f"general:\n  expr_id: V02_05\nmodel_params:\n  num_neurons : {NEURONS}\n  latentD : {LATENT}\n")
    state = {f"vp_model.{key}": value for key, value in model.state_dict().items()}
    if state_filter:
        state = {key: value for key, value in state.items() if state_filter(key)}
    checkpoint = {"epoch": 8, "global_step": 100, "pytorch-lightning_version": "1.2.0", "state_dict": state,
                  "callbacks": {_TrainerCallback: {"best_model_score": torch.tensor(0.03)}}, **(extra or {})}
    torch.save(checkpoint, folder / "snapshots" / "V02_05_epoch=08_val_loss=0.03.ckpt")
    return model
