"""Throughput of the pseudo-label stage against the bare batched forward on the same images.

The stage is the package's own: `write_pseudo_labels` reads an `ImageFolder` of JPEG files through a DataLoader
(decode in `--workers` worker processes), batches, preprocesses and runs the teacher exactly as the pseudo-label
stage does (`predict_images(..., at_image_size=False)`), and writes 16-bit PNG shards (atomic tar + index).
The bare forward runs the same model on the same images, decoded and preprocessed beforehand, batch by batch.
Both alternate in one process; medians over `--reps` runs. Prints images/s of each and the ratio
stage / bare (1.0 = all I/O hidden behind compute). Never asserts on time.

    python benchmarks/bench_pseudo_labels.py                          # vits, 8 images 480x640, batch 4, 518
    python benchmarks/bench_pseudo_labels.py --workers 0 1 --amp bf16 --images 16
"""
import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from depth_anything_nb import DepthAnythingV2
from depth_anything_nb.data.unlabeled import ImageFolder
from depth_anything_nb.models.dpt import perturbed_state_dict
from depth_anything_nb.train.eval_suite import predict_images
from depth_anything_nb.models.preprocess import prepare_image
from depth_anything_nb.data.pseudo_labels import PseudoLabelStore, write_pseudo_labels
from alternating import alternating_medians  # benchmarks/alternating.py (run as a script from any folder)

try:
    from bench_dav2 import print_machine
except ImportError:  # run from elsewhere
    from benchmarks.bench_dav2 import print_machine


def make_images(folder: Path, n: int, h: int, w: int) -> None:
    "n smooth random colour images as JPEG (quality 90): realistic decode cost, deterministic."
    g = np.random.default_rng(0)
    for i in range(n):
        small = g.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        img = np.clip(img.astype(np.int16) + g.integers(-8, 9, img.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"img{i:04d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 90])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoder", default="vits")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--image-size", default="480x640", help="HxW of the source JPEGs")
    p.add_argument("--input-size", type=int, default=518)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--workers", type=int, nargs="+", default=[1], help="DataLoader worker counts to time")
    p.add_argument("--amp", choices=["none", "bf16"], default="none")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print_machine()
    amp = None if args.amp == "none" else args.amp
    model = DepthAnythingV2.from_config(args.encoder).eval()
    model.load_state_dict(perturbed_state_dict(model), strict=True)
    h, w = (int(v) for v in args.image_size.lower().split("x"))
    work = Path(tempfile.mkdtemp(prefix="bench_pl_"))
    try:
        (work / "images").mkdir()
        make_images(work / "images", args.images, h, w)
        source = ImageFolder(work / "images")
        # the bare forward's input: the same images, decoded and preprocessed (BGR → network input) beforehand
        rgbs = [source[i]["image"] for i in range(len(source))]
        rgbs = [im.numpy() if torch.is_tensor(im) else np.asarray(im) for im in rgbs]
        if rgbs[0].dtype != np.uint8:  # float images in [0, 1]
            rgbs = [np.clip(np.round(im * 255), 0, 255).astype(np.uint8) for im in rgbs]
        if rgbs[0].shape[0] == 3:  # CHW
            rgbs = [np.ascontiguousarray(im.transpose(1, 2, 0)) for im in rgbs]
        tensors = [prepare_image(np.ascontiguousarray(im[..., ::-1]), args.input_size)[0] for im in rgbs]
        batches = [torch.cat(tensors[i : i + args.batch_size]) for i in range(0, len(tensors), args.batch_size)]

        def bare():
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16"):
                for b in batches:
                    model(b).float()

        def predict(samples):
            return predict_images(model, [s["image"] for s in samples], args.input_size, args.batch_size,
                                  at_image_size=False, amp=amp)

        runs = {"bare": bare}
        for nw in args.workers:
            def stage(nw=nw):
                root = work / f"labels-{nw}"
                shutil.rmtree(root, ignore_errors=True)
                counts = write_pseudo_labels(predict, source, root, batch_size=args.batch_size, num_workers=nw,
                                             progress=False, shard_size=max(1, args.images // 2))
                assert counts["written"] == args.images, counts
            runs[f"stage, {nw} workers"] = stage

        for fn in runs.values():  # warm-up
            fn()
        store = PseudoLabelStore(work / f"labels-{args.workers[0]}")
        assert len(store) == args.images and store[next(iter(store.keys()))].ndim == 2
        med = alternating_medians(runs, args.reps)
        print(f"{args.encoder}, {args.images} JPEG images {h}x{w} → input {args.input_size}, batch {args.batch_size}, "
              f"amp {args.amp}, {args.reps} reps (medians, alternating)")
        print(f"{'run':>20} {'seconds':>8} {'images/s':>9} {'vs bare':>8}")
        for name, t in med.items():
            print(f"{name:>20} {t:>7.2f}s {args.images / t:>9.3f} {med['bare'] / t:>7.2f}x")
        print(f"load average at end {os.getloadavg()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
