"""The trainer's self-test toy: a tiny MLP regression with dropout and a noisy input augmentation.

Test code, not part of the package (`nbs/43_trainer.ipynb` defines the same toy in a non-exported cell).
`python tests/toys.py [--field value ...]`, or `torchrun ... -m toys` with tests/ on PYTHONPATH: `TrainConfig`
flags, and toy flags prefixed `--toy_`.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from depth_anything_nb.train.distributed import config_from_argv
from depth_anything_nb.train.trainer import Trainer, TrainConfig


@dataclass
class ToyTask:
    "The self-test problem: y = sin(x·w) + noise-augmented inputs, an MLP with dropout."

    samples: int = 96
    dim: int = 8
    hidden: int = 32
    dropout: float = 0.1
    noise: float = 0.05  # input augmentation, drawn from the global torch RNG
    sleep: float = 0.0  # seconds per micro-batch (lets tests kill a run mid-way)


class ToyRegression(torch.utils.data.Dataset):
    "`samples` fixed inputs with a smooth target; Gaussian input noise as the augmentation."

    def __init__(self, task: ToyTask):
        g = torch.Generator().manual_seed(1234)
        self.task, self.x = task, torch.randn(task.samples, task.dim, generator=g)
        self.y = torch.sin(self.x @ torch.randn(task.dim, 1, generator=g)).squeeze(1)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i] + self.task.noise * torch.randn(self.task.dim), self.y[i]


def toy_setup(task: ToyTask, seed: int = 0):
    "(model, loss_fn, dataset) of the self-test; the model is initialised from `seed`."
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(task.dim, task.hidden), nn.Tanh(), nn.Dropout(task.dropout),
                          nn.Linear(task.hidden, 1))

    def loss_fn(model, batch):
        x, y = batch
        if task.sleep:
            time.sleep(task.sleep)
        err = model(x).squeeze(1) - y
        return (err ** 2).mean(), {"mae": err.abs().mean()}

    return model, loss_fn, ToyRegression(task)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    "The self-test run: `TrainConfig` flags, toy flags prefixed `--toy_`."
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) % 2:
        raise SystemExit(f"expected --name value pairs, got {argv}")
    pairs = list(zip(argv[::2], argv[1::2]))
    toy_argv = [s for a, b in pairs if a.startswith("--toy_") for s in (a.replace("--toy_", "--", 1), b)]
    train_argv = [s for a, b in pairs if not a.startswith("--toy_") for s in (a, b)]
    defaults = dict(steps=50, lr=3e-3, lr_mult={}, default_lr_mult=1.0, batch_size=8, log_every=5,
                    out_dir="runs/selftest")
    given = {a[2:] for a, _ in pairs}
    if "epochs" in given:
        defaults.pop("steps")
    config = config_from_argv(TrainConfig, train_argv, **{k: v for k, v in defaults.items() if k not in given})
    task = config_from_argv(ToyTask, toy_argv)
    model, loss_fn, data = toy_setup(task, config.seed)
    history = Trainer(model, loss_fn, data, config).fit()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    return history


if __name__ == "__main__":
    main()
