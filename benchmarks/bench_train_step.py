"""One DAv2 metric fine-tuning step, ours against the official metric_depth model and loss, side by side.

A step is the official metric_depth/train.py step: forward, SiLog loss (λ = 0.5) on the mask
`valid ∧ min_depth ≤ gt ≤ max_depth`, backward, AdamW (lr 5e-6 for the encoder, 10× for the decoder, betas
(0.9, 0.999), weight decay 0.01), zero_grad. Both models start from the same perturbed weights (vits, batch 2,
518×518 by default, max_depth 20); the steps alternate; medians over `--reps`. Also times, reported alone, one
step of the student stage (pseudo-label loss + feature alignment to a frozen encoder, `StudentLoss`).

How the official metric model is obtained (no network on a fresh clone): the pip oracle `jkp-depth-anything-v2`
ships the official *relative* model code. The official metric model (metric_depth/depth_anything_v2/dpt.py) is the
same code with two documented changes, applied here to the official modules: the head's last ReLU is a Sigmoid,
and forward returns that output × max_depth (instead of ReLU(head)). The official loss (metric_depth/util/loss.py)
is SiLog computed on the boolean-indexed valid pixels, written out below. Never asserts on time.

    python benchmarks/bench_train_step.py
    python benchmarks/bench_train_step.py --reps 5 --size 392 --no-student
"""
import argparse
import os
import time

import torch
import torch.nn as nn

from depth_anything_nb import DepthAnythingV2
from depth_anything_nb.models.dpt import perturbed_state_dict
from depth_anything_nb.models.encoder import create_encoder, encoder_config
from depth_anything_nb.train.losses import SiLogLoss
from depth_anything_nb.train.trainer import param_groups
from alternating import alternating_medians  # benchmarks/alternating.py (run as a script from any folder)

try:
    from bench_dav2 import print_machine
except ImportError:
    from benchmarks.bench_dav2 import print_machine

MIN_DEPTH = 1e-3


class OfficialMetric(nn.Module):
    "The official relative DAv2 modules turned into the official metric model (Sigmoid head, × max_depth)."

    def __init__(self, encoder: str, max_depth: float, weights: dict):
        super().__init__()
        from depth_anything_v2.dpt import DepthAnythingV2 as OfficialDAv2

        cfg = encoder_config(encoder)
        m = OfficialDAv2(encoder, features=cfg.features, out_channels=list(cfg.out_channels))
        m.depth_head.scratch.output_conv2[3] = nn.Sigmoid()
        m.load_state_dict(weights, strict=True)
        self.pretrained, self.depth_head = m.pretrained, m.depth_head
        self.layer_idx, self.max_depth = m.intermediate_layer_idx[encoder], max_depth

    def forward(self, x):
        ph, pw = x.shape[-2] // 14, x.shape[-1] // 14
        features = self.pretrained.get_intermediate_layers(x, self.layer_idx, return_class_token=True)
        return (self.depth_head(features, ph, pw) * self.max_depth).squeeze(1)


def official_silog(pred, target, valid_mask, lambd=0.5):
    "metric_depth/util/loss.py: sqrt(mean d² − λ (mean d)²), d = log gt − log pred over boolean-indexed pixels."
    d = torch.log(target[valid_mask]) - torch.log(pred[valid_mask])
    return torch.sqrt((d**2).mean() - lambd * d.mean() ** 2)


def adamw(model, lr=5e-6):
    "The official optimizer: encoder at lr, everything else at 10 lr."
    groups = param_groups(model, lr, {"pretrained.": 1.0}, default_lr_mult=10.0)
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), weight_decay=0.01)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoder", default="vits")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--size", type=int, default=518)
    p.add_argument("--max-depth", type=float, default=20.0)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-student", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print_machine()
    g = torch.Generator().manual_seed(0)
    b, s = args.batch_size, args.size
    x = torch.randn(b, 3, s, s, generator=g)
    gt = torch.nn.functional.interpolate(torch.rand(b, 1, s // 8, s // 8, generator=g), (s, s), mode="bilinear")[:, 0]
    gt = 0.5 + gt * (args.max_depth + 2)  # some pixels beyond max_depth: masked out
    valid = torch.rand(b, s, s, generator=g) > 0.1

    ours = DepthAnythingV2.from_config(args.encoder, max_depth=args.max_depth).train()
    weights = perturbed_state_dict(ours)
    ours.load_state_dict(weights, strict=True)
    official = OfficialMetric(args.encoder, args.max_depth, weights).train()
    silog = SiLogLoss(min_depth=MIN_DEPTH, max_depth=args.max_depth)
    opt_ours, opt_official = adamw(ours), adamw(official)
    first = {}

    def step_ours():
        opt_ours.zero_grad(set_to_none=True)
        loss = silog(ours(x), gt, valid)
        loss.backward()
        opt_ours.step()
        first.setdefault("ours", loss.item())

    def step_official():
        opt_official.zero_grad(set_to_none=True)
        loss = official_silog(official(x), gt, valid & (gt >= MIN_DEPTH) & (gt <= args.max_depth))
        loss.backward()
        opt_official.step()
        first.setdefault("official", loss.item())

    runs = {"official": step_official, "ours": step_ours}
    if not args.no_student:
        from depth_anything_nb.pipelines.dav2_stages import StudentLoss, StudentModel

        net = DepthAnythingV2.from_config(args.encoder, output_bias=1.0).train()
        frozen = create_encoder(args.encoder).eval().requires_grad_(False)
        student = StudentModel(net, frozen.embed_dim)
        student_loss = StudentLoss(frozen=frozen)
        opt_student = adamw(student)
        batch = {"image": x, "target": gt, "valid": valid}

        def step_student():
            opt_student.zero_grad(set_to_none=True)
            loss, _ = student_loss(student, batch)
            loss.backward()
            opt_student.step()

        runs["student (+ feature alignment)"] = step_student

    for fn in runs.values():  # warm-up; the first losses (same weights, same batch) must agree
        fn()
    print(f"first-step SiLog: official {first['official']:.6f}, ours {first['ours']:.6f}")
    med = alternating_medians(runs, args.reps)
    print(f"{args.encoder}, batch {b}, {s}x{s}, fp32, {args.reps} reps (medians, alternating); "
          f"step = forward + loss + backward + AdamW")
    print(f"metric fine-tuning step: official {med['official']:.3f}s, ours {med['ours']:.3f}s, "
          f"speed-up {med['official'] / med['ours']:.2f}x")
    if "student (+ feature alignment)" in med:
        print(f"student step with feature alignment (ours, alone): {med['student (+ feature alignment)']:.3f}s")
    print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
