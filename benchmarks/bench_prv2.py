"""PatchRefiner V2 speed and memory on this machine (CPU unless --device says otherwise).

Speed: the same coarse branch (DAv2 metric, 448×448) and the same tile grid (P = 4×4 on 2160×3840); the PRV2-M
refiner branch (mobilenetv4_conv_small + C2F + F2C) against the PatchRefiner-V1-style refiner (the DAv2 base model
itself run on each patch + F2C). Both refiners get the same patches, coarse output and boxes; their calls alternate
(V2, V1, V2, V1, ...) and the median of the repeats is reported, with the time per refiner module (where it goes)
and the GMACs per patch for comparison. The paper's goal is ≥ 4.5× (A100); the GMAC ratio is ~2.4×.

Memory: one 2160×3840 inference with P = 16 (m1, `--process-num` patches per forward) in a fresh subprocess;
reported as the process's peak resident set size (VmHWM, i.e. ru_maxrss) and its increase over the resident size
after the model was built (the inference's own peak: activations, canvas, image).

    OMP_NUM_THREADS=2 python benchmarks/bench_prv2.py            # ViT-L coarse, PRV2-M vs V1 (ViT-L), minutes
    python benchmarks/bench_prv2.py --quick                      # same models, 112×112 patches, 720×1280: ~2 min
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict

import torch
from torch.utils.flop_counter import FlopCounterMode

from depth_anything_nb.models.prv2_model import DAv2Coarse, PatchRefiner, PRV1Refiner
from depth_anything_nb.models.prv2_refiner import PRV2Refiner, RefinerConfig, count_params
from depth_anything_nb.models.prv2_tiling import TileConfig, grid_tiles


def settings(quick: bool) -> dict:
    if quick:  # the same models at a quarter of the patch side: ~1/16 of the work per patch
        return dict(encoder="vitl", process=(112, 112), image=(720, 1280), split=(4, 4), refiner="M")
    return dict(encoder="vitl", process=(448, 448), image=(2160, 3840), split=(4, 4), refiner="M")


def build(s: dict, seed: int = 0, v1: bool = True):
    "The coarse branch, the PRV2 refiner and (if `v1`) the PR-V1-style refiner (a copy of the coarse model + F2C)."
    torch.manual_seed(seed)
    coarse = DAv2Coarse.from_config(s["encoder"], max_depth=80.0, process_shape=s["process"]).eval()
    v2 = PRV2Refiner(RefinerConfig.preset(s["refiner"], coarse_chl=coarse.channels)).eval()
    return coarse, v2, PRV1Refiner.from_coarse(coarse).eval() if v1 else None


def vm_kb(field: str) -> int:
    "VmRSS / VmHWM of this process in kB (Linux)."
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


class ModuleTimer:
    "Wall time spent in chosen submodules (forward pre/post hooks)."

    def __init__(self, modules: dict):
        self.totals, self.handles, self.t0 = defaultdict(float), [], {}
        for name, m in modules.items():
            self.handles.append(m.register_forward_pre_hook(lambda mod, inp, n=name: self.t0.__setitem__(n, time.perf_counter())))
            self.handles.append(m.register_forward_hook(lambda mod, inp, out, n=name: self._stop(n)))

    def _stop(self, name):
        self.totals[name] += time.perf_counter() - self.t0[name]

    def remove(self):
        for h in self.handles:
            h.remove()


def gmac(s: dict) -> dict:
    "GMAC per patch of each refiner branch, counted on the meta device (no compute)."
    with torch.device("meta"):
        coarse, v2, v1 = build(s)
        c = coarse(torch.rand(1, 3, *s["process"]))
        out = {}
        for name, refiner in (("PRV2-" + s["refiner"], v2), ("PR-V1 (DAv2 " + s["encoder"] + ")", v1)):
            with FlopCounterMode(display=False) as flops:
                refiner(torch.rand(1, 3, *s["process"]), torch.rand(1, 1, *s["process"]),
                        [torch.rand(1, ch, *f.shape[-2:]) for ch, f in zip(coarse.channels, c.features)])
            out[name] = flops.get_total_flops() / 2e9
    return out


@torch.no_grad()
def speed(s: dict, repeats: int, process_num: int) -> dict:
    coarse, v2, v1 = build(s)
    cfg = TileConfig(s["image"], s["process"], s["split"])
    image = torch.rand(1, 3, *s["image"])
    t0 = time.perf_counter()
    models = {"PRV2-" + s["refiner"]: PatchRefiner(coarse, v2).eval(), "PR-V1 (DAv2 " + s["encoder"] + ")": PatchRefiner(coarse, v1).eval()}
    c = models[next(iter(models))].coarse_forward(image)
    coarse_s = time.perf_counter() - t0
    tiles = grid_tiles(cfg)[:process_num]
    patches = torch.stack([image[0, :, y1:y2, x1:x2] for x1, y1, x2, y2 in tiles.raw.tolist()])
    patches = torch.nn.functional.interpolate(patches, size=s["process"], mode="bilinear", align_corners=True)
    boxes = cfg.to_coarse(tiles.raw).float()
    parts = {
        "PRV2-" + s["refiner"]: {"encoder": v2.encoder, "c2f": v2.c2f, "f2c": v2.f2c},
        "PR-V1 (DAv2 " + s["encoder"] + ")": {"base model (ViT + DPT head)": v1.fine_branch, "f2c": v1.f2c},
    }
    times, part_times = defaultdict(list), {n: defaultdict(list) for n in models}
    for name, m in models.items():  # warm-up (allocator, oneDNN primitives)
        m.refine(patches, c, boxes)
    for r in range(repeats):
        for name, m in (models.items() if r % 2 == 0 else reversed(list(models.items()))):
            timer = ModuleTimer(parts[name])
            t = time.perf_counter()
            out = m.refine(patches, c, boxes)
            times[name].append(time.perf_counter() - t)
            timer.remove()
            for k, v in timer.totals.items():
                part_times[name][k].append(v)
            assert out.shape == (process_num, 1, *s["process"])
    macs = gmac(s)
    params = {"PRV2-" + s["refiner"]: count_params(v2), "PR-V1 (DAv2 " + s["encoder"] + ")": count_params(v1)}
    n_patches = s["split"][0] * s["split"][1]
    res = {"coarse_s": coarse_s, "process_num": process_num, "patches_per_image": n_patches, "models": {}}
    for name in models:
        med = statistics.median(times[name])
        res["models"][name] = {
            "median_s_per_call": med, "all_s": times[name], "s_per_patch": med / process_num,
            "image_s_projected": coarse_s + med / process_num * n_patches, "gmac_per_patch": macs[name],
            "params_M": params[name] / 1e6,
            "parts_median_s": {k: statistics.median(v) for k, v in part_times[name].items()},
        }
    return res


def memory_child(s: dict, process_num: int) -> dict:
    coarse, v2, _ = build(s, v1=False)
    model = PatchRefiner(coarse, v2).eval()
    image = torch.rand(3, *s["image"])
    base = vm_kb("VmRSS")
    t = time.perf_counter()
    depth = model.infer(image, cai_mode="m1", patch_split_num=s["split"], process_num=process_num)
    seconds = time.perf_counter() - t
    assert depth.shape == tuple(s["image"]) and torch.isfinite(depth).all()
    return {"rss_after_build_MB": base / 1024, "peak_rss_MB": vm_kb("VmHWM") / 1024, "seconds": seconds}


def memory(s: dict, process_num: int, quick: bool) -> dict:
    cmd = [sys.executable, __file__, "--memory-child", "--process-num", str(process_num)] + (["--quick"] if quick else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="112×112 patches and a 720×1280 image (same models)")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per refiner (alternating)")
    ap.add_argument("--process-num", type=int, default=1, help="patches per refiner call")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    s = settings(args.quick)
    if args.memory_child:
        print(json.dumps(memory_child(s, args.process_num)))
        return
    load = os.getloadavg()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load[0]:.1f} / {load[1]:.1f} "
          f"on {os.cpu_count()} cores{' (shared machine: timings noisy)' if load[0] > 1.5 else ''}")
    print(f"coarse DAv2 {s['encoder']} at {s['process']}, image {s['image']}, P = {s['split']}, "
          f"patches at {s['process']}")
    if not args.skip_speed:
        r = speed(s, args.repeats, args.process_num)
        print(f"\ncoarse branch, once per image: {r['coarse_s']:.2f} s")
        names = list(r["models"])
        for name, m in r["models"].items():
            parts = ", ".join(f"{k} {v:.2f} s" for k, v in m["parts_median_s"].items())
            print(f"{name:24s} {m['params_M']:8.2f}M params {m['gmac_per_patch']:7.0f} GMAC/patch | "
                  f"median {m['median_s_per_call']:.2f} s per {r['process_num']} patches ({parts}) | "
                  f"projected image ({r['patches_per_image']} patches + coarse): {m['image_s_projected']:.1f} s")
        v2, v1 = (r["models"][n] for n in names)
        print(f"\nrefiner-branch speed-up PR-V1 / PRV2: {v1['median_s_per_call'] / v2['median_s_per_call']:.2f}x "
              f"(GMAC ratio {v1['gmac_per_patch'] / v2['gmac_per_patch']:.2f}x; paper goal on an A100: >= 4.5x)")
        print(f"whole-image speed-up (coarse included): {v1['image_s_projected'] / v2['image_s_projected']:.2f}x")
    if not args.skip_memory:
        m = memory(s, args.process_num, args.quick)
        print(f"\nmemory, PRV2-{s['refiner']} inference of one {s['image'][0]}×{s['image'][1]} image, P = "
              f"{s['split'][0] * s['split'][1]}, m1, "
              f"process_num {args.process_num} (fresh process, VmHWM = ru_maxrss): peak RSS {m['peak_rss_MB']:.0f} MB, "
              f"{m['peak_rss_MB'] - m['rss_after_build_MB']:.0f} MB above the built model "
              f"({m['rss_after_build_MB']:.0f} MB); {m['seconds']:.1f} s; goal <= 8 GB")


if __name__ == "__main__":
    main()
