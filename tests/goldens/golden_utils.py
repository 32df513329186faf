"""Shared by `regenerate.py` (writes the golden fixtures from official checkouts) and `tests/test_goldens.py`
(compares our implementation, and optionally the live official code, with them).

Everything random comes from `numpy.random.default_rng(seed)`, whose bit stream is stable across machines and
numpy versions, so the tests rebuild the exact inputs and weights of a golden from its recorded seed and shapes.
Nothing here is code of the official repositories: `import_prv2` only loads their modules from a checkout path.
"""
from __future__ import annotations

import importlib
import json
import sys
import types
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

GOLDEN_DIR = Path(__file__).resolve().parent


# ---------------------------------------------------------------------------------------------------- inputs
def rng(seed: int, *salt) -> np.random.Generator:
    "A generator for (seed, salt...); string salts enter through their CRC32 (stable across runs and machines)."
    keys = [int(seed)] + [zlib.crc32(s.encode()) if isinstance(s, str) else int(s) for s in salt]
    return np.random.default_rng(keys)


def uniform(seed, name, shape, lo=0.0, hi=1.0) -> torch.Tensor:
    return torch.from_numpy(rng(seed, name).uniform(lo, hi, size=tuple(shape)))


def normal(seed, name, shape, scale=1.0) -> torch.Tensor:
    return torch.from_numpy(scale * rng(seed, name).standard_normal(size=tuple(shape)))


def bernoulli(seed, name, shape, p) -> torch.Tensor:
    return torch.from_numpy(rng(seed, name).uniform(size=tuple(shape)) < p)


def integers(seed, name, shape, lo, hi) -> torch.Tensor:
    return torch.from_numpy(rng(seed, name).integers(lo, hi, size=tuple(shape))).long()


def perturbed_value(seed: int, key: str, shape, dtype=torch.float64) -> torch.Tensor:
    """The value of state-dict entry `key`: a function of (seed, key, shape) only, away from every default
    initialisation so that no branch is trivially zero or identity. Weights: N(0, 1/fan_in); 1-D `weight`
    (norm scales): 1 + N(0, 0.1²); biases and BN means: N(0, 0.1²); BN variances: U(0.5, 1.5)."""
    shape = tuple(int(s) for s in shape)
    g = rng(seed, key)
    if key.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.long)
    if key.endswith("running_var"):
        v = g.uniform(0.5, 1.5, size=shape)
    elif len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        v = g.standard_normal(size=shape) / np.sqrt(fan_in)
    elif key.endswith("weight") or key.endswith("gamma"):
        v = 1.0 + 0.1 * g.standard_normal(size=shape)
    else:
        v = 0.1 * g.standard_normal(size=shape)
    return torch.from_numpy(np.asarray(v)).to(dtype)


def perturbed_state_dict(seed: int, shapes: dict[str, list[int]], dtype=torch.float64) -> dict:
    return {k: perturbed_value(seed, k, s, dtype) for k, s in shapes.items()}


# ---------------------------------------------------------------------------------------------------- summaries
def summary(x: torch.Tensor, chunks: int = 64, samples: int = 256) -> dict:
    """A deterministic, text-sized summary of a tensor: the full tensor when it has ≤ 4096 values, else the sums of
    `chunks` equal contiguous chunks of the flattened tensor (the last one takes the remainder), about `samples`
    evenly strided values, and statistics."""
    x = x.detach().double().cpu()
    out = {"shape": list(x.shape), "sum": float(x.sum()), "abs_sum": float(x.abs().sum()),
           "min": float(x.min()), "max": float(x.max())}
    flat = x.flatten()
    if flat.numel() <= 4096:
        out["values"] = flat.tolist()
        return out
    size = flat.numel() // chunks
    sums = [flat[i * size:(i + 1) * size if i < chunks - 1 else None].sum() for i in range(chunks)]
    stride = max(1, flat.numel() // samples)
    out.update(chunks=chunks, chunk_sums=[float(v) for v in sums], stride=stride, strided=flat[::stride].tolist())
    return out


def compare_summary(got: torch.Tensor, golden: dict, rtol: float, what: str = "") -> None:
    """Assert `summary(got)` matches `golden`: each group of entries (values, chunk sums, samples, sum/abs_sum,
    min/max) within `rtol` × the largest magnitude in that group — an error bound relative to the scale of the
    quantity, not to each (possibly cancelling) element."""
    s = summary(got, golden.get("chunks", 64))
    assert s["shape"] == golden["shape"], f"{what}: shape {s['shape']} != golden {golden['shape']}"
    groups = [(k,) for k in ("values", "chunk_sums", "strided") if k in golden] + [("sum", "abs_sum"), ("min", "max")]
    for keys in groups:
        a = np.concatenate([np.atleast_1d(np.asarray(s[k], dtype=float)) for k in keys])
        b = np.concatenate([np.atleast_1d(np.asarray(golden[k], dtype=float)) for k in keys])
        scale = max(float(np.abs(b).max()), 1e-300)
        err = float(np.abs(a - b).max()) / scale
        assert err <= rtol, f"{what}: {'/'.join(keys)} differ by {err:.3g} of their scale (> {rtol:g})"


def shapes_text(shapes: dict) -> dict:
    "State-dict shapes as compact 'a,b,c' strings (one line each in the JSON)."
    return {k: ",".join(str(int(d)) for d in v) for k, v in shapes.items()}


def shapes_from_text(shapes: dict) -> dict:
    return {k: [int(d) for d in v.split(",")] if v else [] for k, v in shapes.items()}


def load(name: str) -> dict:
    return json.loads((GOLDEN_DIR / name).read_text())


def _dumps(data, indent: int = 0) -> str:
    "JSON with one line per dict entry and every list on one line: small and line-diffable."
    if isinstance(data, dict) and data:
        pad = " " * (indent + 1)
        items = [f"{pad}{json.dumps(k)}: {_dumps(v, indent + 1)}" for k, v in data.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    return json.dumps(data)


def save(name: str, data: dict) -> Path:
    path = GOLDEN_DIR / name
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(_dumps(data) + "\n")
    tmp.replace(path)
    return path


# ---------------------------------------------------------------------------------------------------- official code
def _stub(name: str, **attrs) -> types.ModuleType:
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


@contextmanager
def prv2_modules(root: str | Path):
    """Import the official PatchRefinerV2 modules under test from a checkout at `root`, bypassing its package
    `__init__` files (mmengine registries, datasets, trainers) with empty namespace packages, and stubbing the
    few third-party names the imported files reference but the golden code paths never call (`mmengine.print_log`,
    `kornia` — its `filters.sobel` only feeds the sampling that the ranking golden replaces with recorded pairs).
    Restores `sys.modules` on exit."""
    root = Path(root)
    names = ("estimator", "external", "mmengine", "kornia")
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] in names}
    for k in list(saved):
        del sys.modules[k]
    try:
        for name, folder in [("estimator", "estimator"), ("estimator.models", "estimator/models"),
                             ("estimator.models.blocks", "estimator/models/blocks"), ("estimator.utils", "estimator/utils"),
                             ("external", "external"), ("external.depth_anything", "external/depth_anything"),
                             ("external.depth_anything_v2", "external/depth_anything_v2")]:
            _stub(name, __path__=[str(root / folder)])
        _stub("estimator.registry", MODELS=types.SimpleNamespace(register_module=lambda *a, **k: (lambda c: c)))
        _stub("estimator.models.blocks.transformers", TwoWayTransformer=None)
        _stub("mmengine", print_log=lambda *a, **k: None)
        unavailable = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("kornia is stubbed in the golden run"))  # noqa: E731
        kornia = _stub("kornia", losses=_stub("kornia.losses", dice_loss=unavailable, focal_loss=unavailable),
                       filters=_stub("kornia.filters", sobel=lambda x, **k: torch.zeros_like(x),
                                     gaussian_blur2d=unavailable))
        kornia.__path__ = []
        utils = sys.modules["estimator.utils"]
        metric = importlib.import_module("estimator.utils.metric")
        image_ops = importlib.import_module("estimator.utils.image_ops")
        utils.__dict__.update(get_boundaries=image_ops.get_boundaries, compute_metrics=metric.compute_metrics,
                              compute_boundary_metrics=metric.compute_boundary_metrics,
                              extract_edges=metric.extract_edges, RandomBBoxQueries=None)
        yield types.SimpleNamespace(
            metric=metric, image_ops=image_ops,
            losses=importlib.import_module("estimator.models.losses"),
            refiner=importlib.import_module("estimator.models.blocks.lightweight_refiner"),
            fusion=importlib.import_module("estimator.models.blocks.bi_directional_fusion_model"),
            patchrefiner_source=(root / "estimator/models/patchrefiner.py").read_text(),
            dav2=importlib.import_module("external.depth_anything_v2.dpt"),
        )
    finally:
        for k in [k for k in sys.modules if k.split(".")[0] in names]:
            del sys.modules[k]
        sys.modules.update(saved)


def import_file(path: str | Path, name: str) -> types.ModuleType:
    "Import one Python file by path under a private module name (for single-file references)."
    spec = importlib.util.spec_from_file_location(name, str(path))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
