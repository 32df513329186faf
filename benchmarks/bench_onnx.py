"""Speed of an exported ONNX model under onnxruntime against the same model in torch, side by side, on the CPU.

The model (perturbed deterministic weights) is exported once with `depth_anything_nb.models.onnx_export.export_onnx`;
then for every input size the two runtimes alternate (torch, onnxruntime, onnxruntime, torch, ...) in one
process at the same thread count, and the medians of N timed calls are compared, so slow phases of a shared
machine hit both. Prints the CPU, then per size: torch and onnxruntime times, their ratio, and the max abs
output difference. Never asserts on time.

    python benchmarks/bench_onnx.py                                  # vits, 518x518 and 518x686, 5 reps, 1 thread
    python benchmarks/bench_onnx.py --encoder mini-s --sizes 126x126 126x182 --reps 9 --threads 2
"""
import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from depth_anything_nb import DepthAnythingV2
from depth_anything_nb.models.dpt import perturbed_state_dict
from depth_anything_nb.models.onnx_export import OnnxDepthModel, export_onnx


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _timed(fn, x) -> tuple[float, torch.Tensor]:
    with torch.inference_mode():
        t = time.perf_counter()
        y = fn(x)
        return time.perf_counter() - t, y


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoder", default="vits")
    p.add_argument("--max-depth", type=float, default=None, help="export a metric model")
    p.add_argument("--sizes", nargs="+", default=["518x518", "518x686"], help="HxW, multiples of 14")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="threads of both runtimes")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = DepthAnythingV2.from_config(a.encoder, max_depth=a.max_depth).eval()
    model.load_state_dict(perturbed_state_dict(model))
    print(f"CPU: {cpu_name()} | threads {a.threads} | torch {torch.__version__} | encoder {a.encoder}")
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        path = export_onnx(model, Path(tmp) / "model.onnx")
        print(f"export: {time.perf_counter() - t:.1f} s, {path.stat().st_size / 1e6:.1f} MB")
        import onnxruntime

        ort = OnnxDepthModel(path, threads=a.threads)
        print(f"onnxruntime {onnxruntime.__version__}, providers {ort.session.get_providers()}")
        fns = {"torch": model, "onnxruntime": ort}
        print(f"{'size':>10} {'torch s':>9} {'ort s':>9} {'torch/ort':>10} {'max |diff|':>11} {'max |depth|':>11}")
        for size in a.sizes:
            h, w = map(int, size.lower().split("x"))
            x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(h * w))
            outs = {name: _timed(fn, x)[1] for name, fn in fns.items()}  # warm-up
            times = {name: [] for name in fns}
            for rep in range(a.reps):
                for name in (list(fns) if rep % 2 == 0 else list(reversed(fns))):
                    times[name].append(_timed(fns[name], x)[0])
            med = {name: statistics.median(v) for name, v in times.items()}
            diff = (outs["torch"] - outs["onnxruntime"]).abs().max().item()
            print(f"{size:>10} {med['torch']:9.3f} {med['onnxruntime']:9.3f} {med['torch'] / med['onnxruntime']:10.2f} {diff:11.1e} {outs['torch'].abs().max().item():11.2f}")


if __name__ == "__main__":
    main()
