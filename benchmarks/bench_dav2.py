"""Speed of depth_anything_nb's DepthAnythingV2 against the official implementation, side by side.

Both models get the same deterministic perturbed weights; for every input size the forwards alternate
(official, ours, ours, official, ...) in one process, and medians of N timed calls are compared, so slow
phases of a shared machine hit both. Prints the CPU, its bf16 capability and the load, then per size:

- fp32: official and our times, their ratio, the max abs output difference;
- bf16: official and our times with both models under the same `torch.autocast("cpu", dtype=torch.bfloat16)`,
  their ratio, and each model's error against its own fp32 output (max abs, mean abs / mean |fp32 output|).

bf16 is timed only on a CPU with native bf16 arithmetic (AVX512_BF16, AMX-BF16 or Arm BF16); elsewhere a line
says it is skipped (PyTorch would emulate bf16, which times the emulation, not the models).

    python benchmarks/bench_dav2.py                      # vits, 518x518 and 518x686, 5 reps, fp32 + bf16
    python benchmarks/bench_dav2.py --reps 9 --threads 2 --sizes 518x518 --compile
    python benchmarks/bench_dav2.py --no-fp32            # bf16 only
    python benchmarks/bench_dav2.py --no-bf16 --exact    # our bit-exact mode (official evaluation order)

Needs the official code (`pip install --no-deps jkp-depth-anything-v2==0.1.1`). Never asserts on time.
"""
import argparse
import os
import platform
import statistics
import time

import torch

from depth_anything_nb import DepthAnythingV2
from depth_anything_nb.models.dpt import perturbed_state_dict
from depth_anything_nb.models.encoder import encoder_config


def cpu_info() -> tuple[str, list[str]]:
    "The CPU model name and its native bf16 features (from /proc/cpuinfo; empty where none or unknown)."
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key == "model name" and value.strip():
                    name = value.strip()
                elif key in ("flags", "features"):
                    flags |= set(value.split())
    except OSError:
        pass
    bf16 = sorted(f for f in flags if f in ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16"))
    return name, bf16


def print_machine() -> list[str]:
    "Print the machine line (CPU, bf16 features, torch, threads, load) and return the bf16 features."
    name, bf16 = cpu_info()
    print(f"CPU: {name}; {os.cpu_count()} logical cores; native bf16: {', '.join(bf16) or 'none'}; "
          f"torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} "
          f"threads; load average {os.getloadavg()}")
    return bf16


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


def _errors(low: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    err = (low.float() - ref).abs()
    return err.max().item(), (err.mean() / ref.abs().mean()).item()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoder", default="vits")
    p.add_argument("--sizes", nargs="+", default=["518x518", "518x686"], help="HxW, multiples of 14")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--no-bf16", action="store_true", help="skip the bf16 autocast runs")
    p.add_argument("--no-fp32", action="store_true", help="skip the fp32 runs")
    p.add_argument("--compile", action="store_true", help="also time torch.compile(ours) in fp32")
    p.add_argument("--exact", action="store_true", help="our bit-exact mode (official evaluation order)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    bf16_features = print_machine()
    run_bf16 = not args.no_bf16
    if run_bf16 and not bf16_features:
        print("bf16: skipped — this CPU has no native bf16 arithmetic (no avx512_bf16 / amx_bf16 / Arm bf16 flag)")
        run_bf16 = False

    ours = DepthAnythingV2.from_config(args.encoder).eval()
    weights = perturbed_state_dict(ours)
    ours.load_state_dict(weights, strict=True)
    ours.set_exact(args.exact)
    official = _official(args.encoder, weights)
    fns, autocast = {}, {}
    if not args.no_fp32:
        fns |= {"official": official, "ours": ours}
        autocast |= {"official": False, "ours": False}
    if run_bf16:
        fns |= {"official_bf16": official, "ours_bf16": ours}
        autocast |= {"official_bf16": True, "ours_bf16": True}
    if args.compile:
        fns["ours_compiled"], autocast["ours_compiled"] = torch.compile(ours), False
    if not fns:
        print("nothing to time")
        return

    print(f"{args.encoder}, {args.reps} reps, exact={args.exact}; medians of alternating runs, "
          f"speed-up = official time / our time")
    header = f"{'size':>9}"
    if "ours" in fns:
        header += f" | fp32: {'official':>8} {'ours':>7} {'speed-up':>8} {'max|diff|':>9}"
    if "ours_bf16" in fns:
        header += (f" | bf16: {'official':>8} {'ours':>7} {'speed-up':>8} | err vs fp32 (max, mean rel): "
                   f"{'ours':>17} {'official':>17}")
    if "ours_compiled" in fns:
        header += f" | {'compiled':>9} {'speed-up':>8} {'max|diff|':>9}"
    print(header)
    for size in args.sizes:
        h, w = (int(v) for v in size.lower().split("x"))
        x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))
        med = _alternate(fns, x, args.reps, autocast)
        ref, y = _timed(official, x)[1], _timed(ours, x)[1]
        line = f"{size:>9}"
        if "ours" in fns:
            line += (f" |       {med['official']:>7.3f}s {med['ours']:>6.3f}s {med['official'] / med['ours']:>7.2f}x "
                     f"{(y - ref).abs().max().item():>9.2e}")
        if "ours_bf16" in fns:
            ours_err, official_err = _errors(_timed(ours, x, True)[1], y), _errors(_timed(official, x, True)[1], ref)
            line += (f" |       {med['official_bf16']:>7.3f}s {med['ours_bf16']:>6.3f}s "
                     f"{med['official_bf16'] / med['ours_bf16']:>7.2f}x |                              "
                     f"{ours_err[0]:.2e}, {ours_err[1]:.2e} {official_err[0]:.2e}, {official_err[1]:.2e}")
        if "ours_compiled" in fns:
            yc = _timed(fns["ours_compiled"], x)[1]
            line += (f" | {med['ours_compiled']:>8.3f}s {med['official'] / med['ours_compiled']:>7.2f}x"
                     f" {(yc - ref).abs().max().item():>9.2e}")
        print(line, flush=True)
    print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
