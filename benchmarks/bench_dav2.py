"""Speed of depth_anything_nb's DepthAnythingV2 against the official implementation, side by side.

Both models get the same deterministic perturbed weights; for every input size the two forwards alternate
(official, ours, ours, official, ...) in one process, and medians of N timed calls are compared, so slow
phases of a shared machine hit both. Prints, per size: official and our fp32 times and their ratio, the max
abs output difference, and with bf16 autocast our time, its speed-up over the official fp32 model and its
error against our fp32 output.

    python benchmarks/bench_dav2.py                      # vits, 518x518 and 518x686, 5 reps, fp32 + bf16
    python benchmarks/bench_dav2.py --reps 9 --threads 2 --sizes 518x518 --compile
    python benchmarks/bench_dav2.py --no-bf16 --exact    # our bit-exact mode (official evaluation order)

Needs the official code (`pip install --no-deps jkp-depth-anything-v2==0.1.1`). Never asserts on time.
"""
import argparse
import os
import statistics
import time

import torch

from depth_anything_nb import DepthAnythingV2
from depth_anything_nb.models.dpt import perturbed_state_dict
from depth_anything_nb.models.encoder import encoder_config


def _official(encoder, weights):
    from depth_anything_v2.dpt import DepthAnythingV2 as OfficialDAv2

    cfg = encoder_config(encoder)
    model = OfficialDAv2(encoder, features=cfg.features, out_channels=list(cfg.out_channels)).eval()
    model.load_state_dict(weights, strict=True)
    return model


def _timed(fn, x, autocast_bf16=False):
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast_bf16):
        t = time.perf_counter()
        y = fn(x)
        return time.perf_counter() - t, y


def _alternate(fns: dict, x, reps: int, autocast: dict) -> dict:
    "Median seconds per callable; the order of the calls alternates from one repetition to the next."
    times = {name: [] for name in fns}
    for name, fn in fns.items():  # warm-up (and torch.compile's first call)
        _timed(fn, x, autocast[name])
    for rep in range(reps):
        order = list(fns) if rep % 2 == 0 else list(reversed(fns))
        for name in order:
            times[name].append(_timed(fns[name], x, autocast[name])[0])
    return {name: statistics.median(v) for name, v in times.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoder", default="vits")
    p.add_argument("--sizes", nargs="+", default=["518x518", "518x686"], help="HxW, multiples of 14")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--no-bf16", action="store_true", help="skip the bf16 autocast runs")
    p.add_argument("--compile", action="store_true", help="also time torch.compile(ours)")
    p.add_argument("--exact", action="store_true", help="our bit-exact mode (official evaluation order)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    ours = DepthAnythingV2.from_config(args.encoder).eval()
    weights = perturbed_state_dict(ours)
    ours.load_state_dict(weights, strict=True)
    ours.set_exact(args.exact)
    official = _official(args.encoder, weights)
    fns = {"official": official, "ours": ours}
    autocast = {"official": False, "ours": False}
    if not args.no_bf16:
        fns["ours_bf16"], autocast["ours_bf16"] = ours, True
    if args.compile:
        fns["ours_compiled"], autocast["ours_compiled"] = torch.compile(ours), False

    print(f"{args.encoder}, torch {torch.__version__}, {torch.get_num_threads()} threads, {args.reps} reps, "
          f"exact={args.exact}; load average at start {os.getloadavg()}")
    header = f"{'size':>9} {'official':>9} {'ours':>7} {'speed-up':>8} {'max|diff|':>10}"
    if "ours_bf16" in fns:
        header += f" {'ours bf16':>9} {'speed-up':>8} {'bf16 max err':>12} {'bf16 mean rel':>13}"
    if "ours_compiled" in fns:
        header += f" {'compiled':>9} {'speed-up':>8} {'max|diff|':>10}"
    print(header)
    for size in args.sizes:
        h, w = (int(v) for v in size.lower().split("x"))
        x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))
        med = _alternate(fns, x, args.reps, autocast)
        ref, y = _timed(official, x)[1], _timed(ours, x)[1]
        line = (f"{size:>9} {med['official']:>8.3f}s {med['ours']:>6.3f}s {med['official'] / med['ours']:>7.2f}x "
                f"{(y - ref).abs().max().item():>10.2e}")
        if "ours_bf16" in fns:
            yb = _timed(ours, x, True)[1].float()
            err = (yb - y).abs()
            line += (f" {med['ours_bf16']:>8.3f}s {med['official'] / med['ours_bf16']:>7.2f}x {err.max().item():>12.2e}"
                     f" {(err.mean() / y.abs().mean()).item():>13.2e}")
        if "ours_compiled" in fns:
            yc = _timed(fns["ours_compiled"], x)[1]
            line += (f" {med['ours_compiled']:>8.3f}s {med['official'] / med['ours_compiled']:>7.2f}x"
                     f" {(yc - ref).abs().max().item():>10.2e}")
        print(line, flush=True)
    print(f"load average at end {os.getloadavg()} (speed-up = official time / our time, medians, same run)")


if __name__ == "__main__":
    main()
