"""Regenerate the golden fixtures `tests/goldens/*.json` from the official code.

    python tests/goldens/regenerate.py --prv2 /path/to/PatchRefinerV2 --dav2 /path/to/Depth-Anything-V2 \
        --midas /path/to/omnidata [--only prv2_losses,...]

Checkouts used for the committed fixtures (read, imported from these paths, never copied into this repository):
  * zhyever/PatchRefinerV2 at a81f726294ebe6c26193dc41abe561f219e2f2c4 — `estimator/models/losses.py` (SILogLoss,
    ScaleAndShiftInvariantLoss, EdgeguidedRankingLoss), `estimator/utils/metric.py` (compute_metrics with SEE,
    extract_edges), `estimator/utils/image_ops.py` (get_boundaries), `estimator/models/blocks/lightweight_refiner.py`
    and `bi_directional_fusion_model.py` (refiner branch and fusion), `estimator/models/patchrefiner.py`
    (`coarse_postprocess_train`: the roi_align of the coarse outputs, executed from the file's source),
    `estimator/models/baseline_pretrain.py` (`regular_tile`, `prepare_tile_cfg`, executed from the file's source) and
    `estimator/models/utils.py` (`generatemask`, `RunningAverageMap`): tiled inference m1/m2 and its blending;
    `external/depth_anything_v2/dpt.py` (the metric DepthAnythingV2 coarse branch and its `temp_features`).
  * DepthAnything/Depth-Anything-V2 at a561b849ebae10a6f5ef49e26c83cbbcd36c71bf — `metric_depth/util/loss.py`
    (SiLogLoss), `metric_depth/util/metric.py` (eval_depth).
  * EPFL-VILAB/omnidata at f69ff3aedf983cb34c490a0afd0d29fdd83f6a1c — `omnidata_tools/torch/losses/midas_loss.py`,
    whose `gradient_loss`, `GradientMatchingTerm` and reductions reproduce the MiDaS authors' gist
    dvdhfnr/732c26b61a0e63a0abc8a5d769dbebd0 (the multi-scale gradient-matching term, MiDaS Eq. 11).

Needs torch, timm, numpy, scipy, scikit-image, opencv (all already dependencies of this project). The official
files' other imports (mmengine, kornia, registries) are stubbed by `golden_utils.prv2_modules`; nothing is installed.
Inputs, weights and computations are float64 on the CPU (modules built in the default float32, then `.double()`,
as the tests do); the fixtures record the seeds and shapes, so the tests rebuild all inputs
and weights. Each file is written atomically.
"""
from __future__ import annotations

import argparse
import ast
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import golden_utils as gu  # noqa: E402

COMMITS = {"prv2": "a81f726294ebe6c26193dc41abe561f219e2f2c4", "dav2": "a561b849ebae10a6f5ef49e26c83cbbcd36c71bf",
           "midas": "f69ff3aedf983cb34c490a0afd0d29fdd83f6a1c"}


# ------------------------------------------------------------------------------------------------ shared inputs
def loss_inputs(seed: int) -> dict:
    "Inputs of the PRV2 loss goldens (also rebuilt by the tests)."
    B, H, W = 2, 24, 32
    return dict(
        pred_lr=gu.uniform(seed, "pred_lr", (B, 1, H // 2, W // 2), 0.5, 12.0),
        pred=gu.uniform(seed, "pred", (B, 1, H, W), 0.5, 12.0),
        target=gu.uniform(seed, "target", (B, 1, H, W), -1.0, 12.0),  # < 1e-3 and > 10 are out of range
        extra_mask=gu.bernoulli(seed, "extra_mask", (B, 1, H, W), 0.8),
        pl_mask=gu.bernoulli(seed, "pl_mask", (B, 1, H, W), 0.85),
        sparse_mask=torch.zeros(B, 1, H, W, dtype=torch.bool),  # merged mask < 0.1%: fallback
    )


def ranking_inputs(seed: int) -> dict:
    "Inputs of the ranking golden: predictions, pseudo-labels and the recorded pairs (flat indices per image)."
    B, H, W, K = 2, 24, 32, 40
    pred = gu.uniform(seed, "rank_pred", (B, 1, H, W), 1.0, 60.0)
    pl = gu.uniform(seed, "rank_pl", (B, 1, H, W), 1.0, 60.0)
    pl[:, :, 5:9] = pl[:, :, 5:9].clamp(max=1.0) * 7.0  # a band of near-equal targets: '=' pairs occur
    pairs = []
    for b in range(B):
        n_rand = 3 * K - 5 * b  # fewer random than edge pairs in image 1 (the official min())
        pairs.append(dict(edge_a=gu.integers(seed, f"ea{b}", (3 * K,), 0, H * W),
                          edge_b=gu.integers(seed, f"eb{b}", (3 * K,), 0, H * W),
                          random_a=gu.integers(seed, f"ra{b}", (n_rand,), 0, H * W),
                          random_b=gu.integers(seed, f"rb{b}", (n_rand,), 0, H * W)))
    for b in range(B):  # some exactly equal-target pairs
        pairs[b]["edge_b"][:10] = pairs[b]["edge_a"][:10]
    return dict(pred=pred, pseudo_label=pl, pairs=pairs)


def edge_map(seed: int, shape=(32, 48)) -> torch.Tensor:
    "A piecewise-constant depth map with noise (positive): blocky structure gives Canny and jump edges."
    h, w = shape
    coarse = gu.uniform(seed, "blocks", (h // 8, w // 8), 1.0, 40.0)
    d = coarse.repeat_interleave(8, 0).repeat_interleave(8, 1)
    return d * (1 + 0.02 * gu.normal(seed, "noise", shape))


def metric_inputs(seed: int) -> dict:
    gt = edge_map(seed, (48, 64))
    gt[gu.bernoulli(seed, "gt_zero", gt.shape, 0.1)] = 0.0  # invalid
    gt[:4, :8] = 95.0  # beyond max_depth 80
    pred = gu.uniform(seed, "pred", (24, 32), -2.0, 100.0)  # below min, above max: clipped
    pred[3, 4], pred[10, 20], pred[20, 2] = float("nan"), float("inf"), -float("inf")
    return dict(gt=gt, pred=pred, extra_mask=gu.bernoulli(seed, "extra", gt.shape, 0.9))


# ------------------------------------------------------------------------------------------------ PRV2 losses
def gen_prv2_losses(off, seed=1) -> dict:
    x = loss_inputs(seed)
    L = off.losses
    out = dict(seed=seed, min_depth=1e-3, max_depth=10.0, cases={})
    silog = L.SILogLoss()
    with torch.no_grad():
        out["cases"]["silog_resized"] = float(silog(x["pred_lr"], x["target"], 1e-3, 10.0))
        out["cases"]["silog_same_size"] = float(silog(x["pred"], x["target"], 1e-3, 10.0))
        out["cases"]["silog_extra_mask"] = float(silog(x["pred_lr"], x["target"], 1e-3, 10.0, x["extra_mask"]))
        out["cases"]["silog_sparse_mask_fallback"] = float(silog(x["pred"], x["target"], 1e-3, 10.0, x["sparse_mask"]))
        pl = x["target"].abs() + 0.5  # a positive pseudo-label
        for name, kw in [("ssigm", dict(grad_matching=True)), ("ssi", dict(grad_matching=False)),
                         ("gmssi", dict(inverse=True))]:
            loss = L.ScaleAndShiftInvariantLoss(**kw)
            out["cases"][name] = float(loss(x["pred_lr"], pl, None, x["pl_mask"], 1e-3, 10.0))
    return out


def gen_prv2_ranking(off, seed=2) -> dict:
    x = ranking_inputs(seed)
    loss = off.losses.EdgeguidedRankingLoss()
    state = {"i": 0}

    def edge_sampling(inputs, targets, *args):  # the recorded edge pairs instead of the random sampling
        p = x["pairs"][state["i"]]
        a, b = p["edge_a"], p["edge_b"]
        return inputs.flatten()[a], inputs.flatten()[b], targets.flatten()[a], targets.flatten()[b], len(a)

    def random_sampling(inputs, targets, valid, n):
        p = x["pairs"][state["i"]]
        state["i"] += 1
        a, b = p["random_a"], p["random_b"]
        return inputs[a], inputs[b], targets[a], targets[b], len(a)

    loss.edgeGuidedSampling, loss.randomSampling = edge_sampling, random_sampling
    cuda = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self  # the official forward moves to CUDA; this runs on the CPU
    try:
        with torch.no_grad():
            value, _ = loss(x["pred"], x["pseudo_label"], torch.zeros_like(x["pred"]).repeat(1, 3, 1, 1),
                           depth_gt=x["pseudo_label"].clone())
    finally:
        torch.Tensor.cuda = cuda
    edges = off.metric.extract_edges(edge_map(seed).float(), use_canny=True, preprocess="log")
    return dict(seed=seed, prediction_scale="1 / (250 / 80)", loss=float(value), loss_dtype=str(value.dtype),
                edge_map_seed=seed, edge_map_shape=[32, 48],
                log_canny_edges=np.flatnonzero(edges).tolist())


# ------------------------------------------------------------------------------------------------ PRV2 metrics
def gen_prv2_metrics(off, seed=3) -> dict:
    x = metric_inputs(seed)
    gt, pred = x["gt"], x["pred"]
    edges = off.image_ops.get_boundaries(gt.numpy(), th=1, dilation=0)
    out = dict(seed=seed, min_depth=1e-3, max_depth=80.0, jump_edges=np.flatnonzero(edges).tolist(), cases={})
    cases = {"plain": dict(eigen_crop=False), "garg": dict(garg_crop=True, dataset="kitti"),
             "eigen_kitti": dict(eigen_crop=True, dataset="kitti"),
             "extra_mask": dict(eigen_crop=False, additional_mask=x["extra_mask"])}
    for name, kw in cases.items():
        m = off.metric.compute_metrics(gt[None, None], pred[None, None].clone(), min_depth_eval=1e-3, max_depth_eval=80.0,
                                       disp_gt_edges=torch.from_numpy(edges), **kw)
        out["cases"][name] = {k: float(v) for k, v in m.items()}
    return out


# ------------------------------------------------------------------------------------------------ DAv2 metric_depth
def gen_dav2(root: Path, seed=4) -> dict:
    loss = gu.import_file(root / "metric_depth/util/loss.py", "_official_dav2_loss")
    metric = gu.import_file(root / "metric_depth/util/metric.py", "_official_dav2_metric")
    pred = gu.uniform(seed, "pred", (2, 24, 32), 0.2, 20.0)
    target = gu.uniform(seed, "target", (2, 24, 32), 0.2, 20.0)
    valid = gu.bernoulli(seed, "valid", (2, 24, 32), 0.7)
    with torch.no_grad():
        si = float(loss.SiLogLoss()(pred, target, valid))
    return dict(seed=seed, silog=si, eval_depth=metric.eval_depth(pred[valid], target[valid]))


# ------------------------------------------------------------------------------------------------ MiDaS gradient matching
def midas_module(root: Path):
    folder = root / "omnidata_tools/torch/losses"
    pkg = types.ModuleType("_golden_midas")
    pkg.__path__ = [str(folder)]
    sys.modules["_golden_midas"] = pkg
    import importlib
    return importlib.import_module("_golden_midas.midas_loss")


def gen_midas(root: Path, seed=5) -> dict:
    m = midas_module(root)
    pred = gu.normal(seed, "pred", (2, 40, 52))
    target = gu.normal(seed, "target", (2, 40, 52))
    mask = gu.bernoulli(seed, "mask", (2, 40, 52), 0.8)
    mask[1, :, :30] = False  # unequal valid counts: batch- and image-based reductions differ
    out = dict(seed=seed, shape=[2, 40, 52], cases={})
    with torch.no_grad():
        for red in ("batch-based", "image-based"):
            out["cases"][red] = float(m.GradientMatchingTerm(scales=4, reduction=red)(pred, target, mask.double()))
    return out


# ------------------------------------------------------------------------------------------------ PRV2 model
def official_refiner(off, name: str, c2f: str | None, c0: int):
    "The official refiner branch + fusion as the PRV2 configs build them (4-channel stem: RGB + coarse depth)."
    import timm
    chl = timm.create_model(name, features_only=True, pretrained=False).feature_info.channels()
    convnext = "convnext" in name
    fine_chl = [chl[0] // 2] + chl if convnext else chl
    fine = off.refiner.LightWeightRefiner(name, coarse_condition=True, cls_pretrain=False, encoder_channels=fine_chl)
    # the 4-channel stem as `PatchRefinerPlus.__init__` builds it per encoder: the timm stem's layout with one more
    # input channel (TF "same" padding kept for tf_efficientnet: timm's Conv2dSame)
    from timm.layers import Conv2dSame
    attr = "stem_0" if convnext else "conv_stem"
    old = getattr(fine.refiner_encoder, attr)
    conv = Conv2dSame if isinstance(old, Conv2dSame) else nn.Conv2d
    setattr(fine.refiner_encoder, attr, conv(4, old.out_channels, old.kernel_size, old.stride, old.padding,
                                             bias=old.bias is not None))
    coarse_chl = [c0, 256, 256, 256, 256, 256]
    after = [c0] + [256] * 5 if c2f else [fine_chl[0]] + fine_chl
    fusion = off.fusion.BiDirectionalFusion(coarse2fine=c2f is not None, coarse2fine_type=c2f or "coarse-gated",
                                            coarse_chl=coarse_chl, fine_chl=list(fine_chl),
                                            fine_chl_after_coarse2fine=after)
    return fine, fusion


def shapes_of(fine, fusion) -> dict:
    sd = {f"refiner_fine_branch.{k}": v for k, v in fine.state_dict().items()}
    sd |= {f"refiner_fusion_model.{k}": v for k, v in fusion.state_dict().items()}
    return gu.shapes_text({k: list(v.shape) for k, v in sd.items()})


def coarse_postprocess(off):
    "`PatchRefiner.coarse_postprocess_train` compiled from the official file's source (the roi_align step)."
    tree = ast.parse(off.patchrefiner_source)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "PatchRefiner")
    fn = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "coarse_postprocess_train")
    from torchvision.ops import roi_align
    ns = {"torch": torch, "torch_roi_align": roi_align}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), "patchrefiner.py", "exec"), ns)
    return ns["coarse_postprocess_train"]


def model_inputs(seed: int, process=(32, 48), c0=32):
    h, w = process
    grids = [(h, w)] + [(h // 2**i + 1 + i % 2, w // 2**i + 2) for i in range(1, 6)]  # off the refiner's grids
    chl = [c0, 256, 256, 256, 256, 256]
    feats = [gu.normal(seed, f"coarse{i}", (1, c, *g)) for i, (c, g) in enumerate(zip(chl, grids))]
    depth = gu.uniform(seed, "coarse_depth", (1, 1, h, w), 0.5, 8.0)
    patches = gu.uniform(seed, "patches", (2, 3, h, w))
    boxes = torch.tensor([[0.0, 0.0, 24.0, 16.0], [20.25, 10.5, 44.25, 26.75]], dtype=torch.float64)  # x1 y1 x2 y2
    return dict(feats=feats, depth=depth, patches=patches, boxes=boxes, process=process, c0=c0)


def gen_prv2_model(off, seed=6) -> dict:
    from depth_anything_nb.models.prv2_refiner import ENCODERS
    out = dict(seed=seed, process_shape=[32, 48], c0=32, variants={}, structure={})
    x = model_inputs(seed)
    post = coarse_postprocess(off)
    with torch.no_grad():
        rois = torch.cat([torch.zeros(2, 1, dtype=torch.float64), x["boxes"]], 1)
        roi_feats, roi_depth = post(types.SimpleNamespace(patch_process_shape=x["process"]), x["depth"], x["feats"],
                                    None, rois)
    out["roi_depth"] = gu.summary(roi_depth)
    out["roi_features"] = [gu.summary(f) for f in roi_feats]
    # (key, encoder, variant, process shape): E needs both sides divisible by its stride 32 (the official fusion
    # adds maps of the patch size to the decoder's upsampled ones)
    for key, enc, variant, process in [("full", "M", "full", (32, 48)), ("f2c_only", "M", "f2c_only", (32, 48)),
                                       ("E_full", "E", "full", (32, 64))]:
        c2f = {"full": "coarse-gated", "f2c_only": None}[variant]
        xv = model_inputs(seed, process)
        with torch.no_grad():
            rois = torch.cat([torch.zeros(2, 1, dtype=torch.float64), xv["boxes"]], 1)
            v_feats, v_depth = post(types.SimpleNamespace(patch_process_shape=process), xv["depth"], xv["feats"], None,
                                    rois)
        torch.manual_seed(0)
        fine, fusion = official_refiner(off, ENCODERS[enc], c2f, x["c0"])
        shapes = shapes_of(fine, fusion)
        sd = gu.perturbed_state_dict(seed, gu.shapes_from_text(shapes))
        fine.load_state_dict({k.removeprefix("refiner_fine_branch."): v for k, v in sd.items()
                              if k.startswith("refiner_fine_branch.")})
        fusion.load_state_dict({k.removeprefix("refiner_fusion_model."): v for k, v in sd.items()
                                if k.startswith("refiner_fusion_model.")})
        fine, fusion = fine.double().eval(), fusion.double().eval()
        with torch.no_grad():
            feats, rdepth = fine(xv["patches"], v_depth)
            pred = fusion(c_feat=list(v_feats), f_feat=feats[::-1], pred1=v_depth, pred2=rdepth, update_base=v_depth)
        out["variants"][key] = dict(encoder=enc, variant=variant, c2f=c2f, process_shape=list(process),
                                    state_dict_shapes=shapes, output=gu.summary(pred))
    for enc in ("C",):  # structure only, on the meta device (no weights are allocated); E: see "E_full"
        with torch.device("meta"):
            fine, fusion = official_refiner(off, ENCODERS[enc], "coarse-gated", 256)
        out["structure"][enc] = dict(encoder=ENCODERS[enc], c2f="coarse-gated", c0=256,
                                     state_dict_shapes=shapes_of(fine, fusion))
    return out


# ------------------------------------------------------------------------------------------------ PRV2 coarse branch
COARSE = dict(encoder="vits", features=64, out_channels=[48, 96, 192, 384], max_depth=80.0, process_shape=(28, 42))


def gen_prv2_coarse(off, seed=8) -> dict:
    """The coarse branch of PRV2-DAv2 configs: the official metric `DepthAnythingV2` of `external/depth_anything_v2`
    (ViT-S, perturbed weights) on a 28×42 image, its depth and the six `temp_features` that
    `PatchRefinerPlus.coarse_forward` hands on (x_d0, x_blocks_feat_0..3, midas_final_feat)."""
    torch.manual_seed(0)
    model = off.dav2.DepthAnythingV2(encoder=COARSE["encoder"], features=COARSE["features"],
                                     out_channels=COARSE["out_channels"], max_depth=COARSE["max_depth"])
    shapes = gu.shapes_text({k: list(v.shape) for k, v in model.state_dict().items()})
    model.load_state_dict(gu.perturbed_state_dict(seed, gu.shapes_from_text(shapes)))
    model = model.double().eval()
    image = gu.uniform(seed, "coarse_image", (1, 3, *COARSE["process_shape"]))
    with torch.no_grad():
        out = model(image, return_final_centers=True)
    names = ["x_d0", "x_blocks_feat_0", "x_blocks_feat_1", "x_blocks_feat_2", "x_blocks_feat_3", "midas_final_feat"]
    return dict(seed=seed, **{k: list(v) if isinstance(v, tuple) else v for k, v in COARSE.items()},
                state_dict_shapes=shapes, metric_depth=gu.summary(out["metric_depth"]),
                temp_features={n: gu.summary(out["temp_features"][n]) for n in names})


# ------------------------------------------------------------------------------------------------ PRV2 tiling
TILE = dict(image_raw_shape=(32, 48), process_shape=(16, 24), patch_split_num=(2, 2), process_num=4)


def tile_image(seed: int) -> torch.Tensor:
    return gu.uniform(seed, "tile_image", (1, 3, *TILE["image_raw_shape"])).float()


def tile_refine(patches: torch.Tensor) -> torch.Tensor:
    """A stand-in refiner for the tiling goldens: a per-pixel function of the patch plus a ramp in patch-local
    coordinates, so overlapping tiles disagree and the blend weights and placements show in the result."""
    h, w = patches.shape[-2:]
    ramp = torch.arange(h * w, dtype=patches.dtype).view(h, w) / (h * w)
    return 1 + 3 * patches[:, :1] + 2 * ramp


def _source_functions(path: Path, cls_name: str, names: list[str], ns: dict) -> dict:
    "Compile methods `names` of class `cls_name` from an official file's source into namespace `ns`."
    tree = ast.parse(path.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls_name)
    fns = [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name in names]
    for f in fns:
        f.decorator_list = []  # @torch.no_grad(): the caller runs under no_grad
    exec(compile(ast.Module(body=fns, type_ignores=[]), str(path), "exec"), ns)
    return {n: ns[n] for n in names}


def gen_prv2_tiling(root: Path, seed=7) -> dict:
    """m1 and m2 with the official `BaselinePretrain.regular_tile` (PRV2's `PatchRefinerPlus` inherits it), the
    official `generatemask(border=0.15)` and `RunningAverageMap`, called in the order of `PatchRefinerPlus.forward`
    (`estimator/models/patchrefinerplus.py`): the [0, 0] grid with `init_flag`, then the grids shifted by half a patch
    along w, h, and both. The refiner is `tile_refine` (`tile_temp=None` path: `infer_forward(patches)`)."""
    import torch.nn.functional as F
    utils = gu.import_file(root / "estimator/models/utils.py", "_official_prv2_model_utils")
    ns = {"torch": torch, "F": F, "RunningAverageMap": utils.RunningAverageMap}
    fns = _source_functions(root / "estimator/models/baseline_pretrain.py", "BaselinePretrain",
                            ["regular_tile", "prepare_tile_cfg"], ns)
    ph, pw = TILE["process_shape"]
    fake = types.SimpleNamespace(patch_process_shape=TILE["process_shape"], resizer=lambda x: x,
                                 infer_forward=lambda crops, *a: tile_refine(crops))
    tile_cfg = fns["prepare_tile_cfg"](fake, TILE["image_raw_shape"], TILE["patch_split_num"])
    image = tile_image(seed)
    blur = torch.tensor(utils.generatemask(TILE["process_shape"], border=0.15))
    out = dict(seed=seed, **{k: list(v) if isinstance(v, tuple) else v for k, v in TILE.items()}, modes={})
    with torch.no_grad():
        for mode in ("m1", "m2"):
            kw = dict(image_hr=image[0], tile_temp=None, blur_mask=blur, tile_cfg=tile_cfg, process_num=TILE["process_num"])
            avg = fns["regular_tile"](fake, offset=[0, 0], offset_process=[0, 0], init_flag=True, **kw)
            if mode == "m2":
                for off, off_p in [([0, tile_cfg["patch_raw_shape"][1] // 2], [0, pw // 2]),
                                   ([tile_cfg["patch_raw_shape"][0] // 2, 0], [ph // 2, 0]),
                                   ([tile_cfg["patch_raw_shape"][0] // 2, tile_cfg["patch_raw_shape"][1] // 2],
                                    [ph // 2, pw // 2])]:
                    avg = fns["regular_tile"](fake, offset=off, offset_process=off_p, init_flag=False,
                                              avg_depth_map=avg, **kw)
            out["modes"][mode] = gu.summary(avg.get_avg_map())
            if mode == "m2":  # the evaluation of that canvas: official compute_metrics at a GT of another size
                gt = tile_gt(seed)
                with gu.prv2_modules(root) as off:
                    edges = off.image_ops.get_boundaries(gt.numpy(), th=1, dilation=0)
                    m = off.metric.compute_metrics(gt[None, None], avg.get_avg_map()[None, None].clone(), eigen_crop=False,
                                                   min_depth_eval=1e-3, max_depth_eval=80.0,
                                                   disp_gt_edges=torch.from_numpy(edges))
                out["m2_eval"] = dict(gt_shape=list(gt.shape), metrics={k: float(v) for k, v in m.items()})
    out["blend_mask"] = gu.summary(blur)
    return out


def tile_gt(seed: int) -> torch.Tensor:
    "GT of the tiling evaluation golden: a size other than the canvas (40×60 vs 32×48), values like the predictions'."
    return gu.uniform(seed, "tile_gt", (40, 60), 1.0, 6.0)


# ------------------------------------------------------------------------------------------------ main
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prv2", type=Path, help="checkout of zhyever/PatchRefinerV2")
    p.add_argument("--dav2", type=Path, help="checkout of DepthAnything/Depth-Anything-V2")
    p.add_argument("--midas", type=Path, help="checkout of EPFL-VILAB/omnidata (MiDaS gist losses)")
    p.add_argument("--only", default="", help="comma-separated fixture names (default: all whose checkout is given)")
    a = p.parse_args(argv)
    only = set(filter(None, a.only.split(",")))
    want = lambda n: not only or n in only  # noqa: E731
    if a.prv2:
        with gu.prv2_modules(a.prv2) as off:
            for name, fn in [("prv2_coarse", gen_prv2_coarse), ("prv2_losses", gen_prv2_losses), ("prv2_ranking", gen_prv2_ranking),
                             ("prv2_metrics", gen_prv2_metrics), ("prv2_model", gen_prv2_model)]:
                if want(name):
                    print("wrote", gu.save(f"{name}.json", {"source": f"zhyever/PatchRefinerV2@{COMMITS['prv2']}",
                                                           **fn(off)}))
    if a.prv2 and want("prv2_tiling"):
        print("wrote", gu.save("prv2_tiling.json", {"source": f"zhyever/PatchRefinerV2@{COMMITS['prv2']}",
                                                    **gen_prv2_tiling(a.prv2)}))
    if a.dav2 and want("dav2_metric"):
        print("wrote", gu.save("dav2_metric.json", {"source": f"DepthAnything/Depth-Anything-V2@{COMMITS['dav2']}",
                                                    **gen_dav2(a.dav2)}))
    if a.midas and want("midas_gradient"):
        print("wrote", gu.save("midas_gradient.json", {"source": f"EPFL-VILAB/omnidata@{COMMITS['midas']} "
                                                                 "(MiDaS gist dvdhfnr/732c26b6)", **gen_midas(a.midas)}))


if __name__ == "__main__":
    main()
