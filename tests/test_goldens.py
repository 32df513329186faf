"""Our implementation against golden outputs of the official code, recorded on seeded inputs and weights.

The fixtures `tests/goldens/*.json` were written by `tests/goldens/regenerate.py` from official checkouts (commits
in its docstring). These tests always compare our package with them; when `PRV2_OFFICIAL_REPO`,
`DAV2_OFFICIAL_REPO` or `MIDAS_GIST_REPO` (a checkout of EPFL-VILAB/omnidata) point to checkouts, they also
re-run the official code and compare it with the same fixtures, which catches a stale or mis-generated golden.

Tolerances (stated per quantity below) follow from the arithmetic: everything runs in float64 (unit roundoff
u = 1.1e-16). A sum of N terms carries a rounding error ≤ N·u relative to the sum of magnitudes, whatever the
summation order (SIMD width, thread split), so AVX2 vs AVX-512 and 1 vs 2 threads only move digits below that.
"""
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "goldens"))
import golden_utils as gu  # noqa: E402
import regenerate as rg  # noqa: E402

from depth_anything_nb.train.losses import (gradient_matching_loss, patchrefiner_pseudo_label_loss,  # noqa: E402
                                      patchrefiner_silog_loss, ranking_edges, ranking_pair_loss, silog_loss)
from depth_anything_nb.train.metrics import (MetricDepthProtocol, depth_discontinuities, depth_errors,  # noqa: E402
                                       evaluate_metric_depth)
from depth_anything_nb.models.prv2_model import CoarseOutput, convert_official_state_dict, roi_align_coarse  # noqa: E402
from depth_anything_nb.models.prv2_refiner import ENCODERS, PRV2Refiner, RefinerConfig  # noqa: E402
from depth_anything_nb.models.prv2_tiling import blend_mask, tiled_inference  # noqa: E402

# Losses and metrics: float64 reductions over N ≤ 2·40·52 = 4160 values give ≤ N·u ≈ 5e-13 relative error of a sum;
# the worst conditioning in these quantities is the cancellation in Var(g) = E[g²] − E[g]² (SILog) and in the
# 2×2 least-squares determinant, amplifying by ≲ 10² for these inputs (E[g²]/Var(g) < 10). 1e-9 leaves > 10× margin.
RTOL_F64 = 1e-9
# Quantities the official code returns in float32 (DAv2 `eval_depth` δ's, `.float()`; the ranking loss,
# `loss[0].float()`): one float32 rounding, ≤ 2⁻²⁴ ≈ 6e-8 relative, plus the float64 error above.
RTOL_F32 = 1.2e-7
# The refiner network in float64: each conv/linear output is a sum over K ≤ 256·9 products (≤ K·u ≈ 3e-13 of the
# magnitudes), through ≈ 60 layers whose perturbed weights N(0, 1/fan_in) keep activations O(1) — errors add up to
# ≲ 60·3e-13 ≈ 2e-11 relative to the output scale, plus GELU/sigmoid/LayerNorm at a few u each. 1e-9 is generous.
RTOL_MODEL = 1e-9


def close(got, expected, rtol, what=""):
    assert math.isclose(float(got), float(expected), rel_tol=rtol, abs_tol=0.0), f"{what}: {got!r} != golden {expected!r}"


# ------------------------------------------------------------------------------------------------ PRV2 losses
@pytest.fixture(scope="module")
def prv2_losses():
    return gu.load("prv2_losses.json")


def test_prv2_silog_matches_golden(prv2_losses):
    g, x = prv2_losses, rg.loss_inputs(prv2_losses["seed"])
    kw = dict(min_depth=g["min_depth"], max_depth=g["max_depth"])
    c = g["cases"]
    close(patchrefiner_silog_loss(x["pred_lr"], x["target"], **kw), c["silog_resized"], RTOL_F64, "resized")
    close(patchrefiner_silog_loss(x["pred"], x["target"], **kw), c["silog_same_size"], RTOL_F64, "same size")
    close(patchrefiner_silog_loss(x["pred_lr"], x["target"], x["extra_mask"], **kw), c["silog_extra_mask"], RTOL_F64,
          "extra mask")
    close(patchrefiner_silog_loss(x["pred"], x["target"], x["sparse_mask"], **kw), c["silog_sparse_mask_fallback"],
          RTOL_F64, "< 0.1% extra mask falls back to the range mask")


@pytest.mark.parametrize("kind", ["ssigm", "ssi", "gmssi"])
def test_prv2_pseudo_label_losses_match_golden(prv2_losses, kind):
    x = rg.loss_inputs(prv2_losses["seed"])
    pl = x["target"].abs() + 0.5
    got = patchrefiner_pseudo_label_loss(x["pred_lr"], pl, x["pl_mask"], kind=kind)
    close(got, prv2_losses["cases"][kind], RTOL_F64, kind)


def test_prv2_ranking_pair_loss_matches_golden():
    g = gu.load("prv2_ranking.json")
    x = rg.ranking_inputs(g["seed"])
    total = torch.zeros((), dtype=torch.float64)
    for b, p in enumerate(x["pairs"]):
        ia, ib = torch.cat([p["edge_a"], p["random_a"]]), torch.cat([p["edge_b"], p["random_b"]])
        pred, t = x["pred"][b].flatten() * (80 / 250), x["pseudo_label"][b].flatten()
        total = total + ranking_pair_loss(pred[ia], pred[ib], t[ia], t[ib], sigma=0.03, alpha=1.0)
    close(total / len(x["pairs"]), g["loss"], RTOL_F32, "ranking loss")


def test_ranking_edges_match_official_log_canny():
    g = gu.load("prv2_ranking.json")
    edges = ranking_edges(rg.edge_map(g["edge_map_seed"], tuple(g["edge_map_shape"])).float().numpy())
    got, expected = set(np.flatnonzero(edges).tolist()), set(g["log_canny_edges"])
    assert len(expected) > 50
    # Canny thresholds float32 gradient magnitudes: a pixel whose magnitude lies within a few float32 ulps of a
    # threshold can flip between libm/SIMD variants (the official log is torch's, ours numpy's). Such ties are rare;
    # allow 1% of the edge pixels, far below what a wrong σ, threshold or preprocessing changes (tens of %).
    assert len(got ^ expected) <= max(2, len(expected) // 100), sorted(got ^ expected)


# ------------------------------------------------------------------------------------------------ PRV2 metrics
@pytest.fixture(scope="module")
def prv2_metrics():
    return gu.load("prv2_metrics.json")


def test_jump_edges_match_official_get_boundaries(prv2_metrics):
    x = rg.metric_inputs(prv2_metrics["seed"])
    got = np.flatnonzero(depth_discontinuities(x["gt"]).numpy()).tolist()
    assert got == prv2_metrics["jump_edges"]  # exact: the same float64 differences compared with the same threshold


_OFFICIAL_KEYS = {"a1": "d1", "a2": "d2", "a3": "d3", "log_10": "log10"}


@pytest.mark.parametrize("case", ["plain", "garg", "eigen_kitti", "extra_mask"])
def test_prv2_compute_metrics_matches_golden(prv2_metrics, case):
    "`compute_metrics` (bilinear resize align_corners=False, clipping, crops, SEE on GT jumps) = our protocol."
    g, x = prv2_metrics, rg.metric_inputs(prv2_metrics["seed"])
    crop = {"plain": None, "garg": "garg", "eigen_kitti": "eigen", "extra_mask": None}[case]
    proto = MetricDepthProtocol("golden", min_depth=g["min_depth"], max_depth=g["max_depth"], align_corners=False,
                                clip_prediction=True, silog="prv2", crop=crop, see_from="depth")
    got = evaluate_metric_depth(x["pred"], x["gt"], proto, valid_mask=x["extra_mask"] if case == "extra_mask" else None)
    expected = {_OFFICIAL_KEYS.get(k, k): v for k, v in g["cases"][case].items()}
    assert set(expected) <= set(got)
    for k, v in expected.items():
        close(got[k], v, RTOL_F64, f"{case}/{k}")


# ------------------------------------------------------------------------------------------------ DAv2 metric_depth
def test_dav2_silog_and_eval_depth_match_golden():
    g = gu.load("dav2_metric.json")
    s = g["seed"]
    pred, target = gu.uniform(s, "pred", (2, 24, 32), 0.2, 20.0), gu.uniform(s, "target", (2, 24, 32), 0.2, 20.0)
    valid = gu.bernoulli(s, "valid", (2, 24, 32), 0.7)
    close(silog_loss(pred, target, valid, lambd=0.5, max_depth=None), g["silog"], RTOL_F64, "SiLog")
    got = depth_errors(pred[valid], target[valid], silog="dav2")
    for k, v in g["eval_depth"].items():
        close(got[k], v, RTOL_F32 if k in ("d1", "d2", "d3") else RTOL_F64, k)


# ------------------------------------------------------------------------------------------------ MiDaS gradient matching
@pytest.mark.parametrize("reduction", ["batch", "image"])
def test_midas_gradient_matching_matches_golden(reduction):
    g = gu.load("midas_gradient.json")
    s, shape = g["seed"], g["shape"]
    pred, target = gu.normal(s, "pred", shape), gu.normal(s, "target", shape)
    mask = gu.bernoulli(s, "mask", shape, 0.8)
    mask[1, :, :30] = False
    got = gradient_matching_loss(pred - target, mask, scales=4, reduction=reduction)
    close(got, g["cases"][f"{reduction}-based"], RTOL_F64, reduction)


# ------------------------------------------------------------------------------------------------ PRV2 model
WIDTHS = dict(width=256, temp_chl=(32, 64, 64, 128, 256, 512), dec_chl=(512, 256, 128, 64, 32))


@pytest.fixture(scope="module")
def prv2_model():
    return gu.load("prv2_model.json")


def _ours(encoder, variant, c0, device=None):
    cfg = RefinerConfig.preset(encoder, variant, coarse_chl=(c0, 256, 256, 256, 256, 256), **WIDTHS)
    if device is None:
        return PRV2Refiner(cfg)
    with torch.device(device):
        return PRV2Refiner(cfg)


def _converted(sd: dict) -> dict:
    return {k.removeprefix("refiner."): v for k, v in convert_official_state_dict(sd).items()}


def _roi(prv2_model):
    x = rg.model_inputs(prv2_model["seed"], tuple(prv2_model["process_shape"]), prv2_model["c0"])
    roi = roi_align_coarse(CoarseOutput(x["depth"], x["feats"]), x["boxes"], x["process"],
                           torch.zeros(len(x["boxes"]), dtype=torch.long))
    return x, roi


def test_roi_align_of_the_coarse_outputs_matches_golden(prv2_model):
    _, roi = _roi(prv2_model)
    # roi_align: bilinear samples, 4 products per sample averaged over ≤ 4 samples per bin: a few u.
    gu.compare_summary(roi.depth, prv2_model["roi_depth"], 1e-12, "roi depth")
    for i, (f, g) in enumerate(zip(roi.features, prv2_model["roi_features"])):
        gu.compare_summary(f, g, 1e-12, f"roi feature {i}")


@pytest.mark.parametrize("key", ["full", "f2c_only", "E_full"])
def test_prv2_refiner_end_to_end_matches_golden(prv2_model, key):
    "roi_align of the coarse outputs → M/E refiner (official-layout weights) → fusion, against the official modules."
    g = prv2_model["variants"][key]
    sd = gu.perturbed_state_dict(prv2_model["seed"], gu.shapes_from_text(g["state_dict_shapes"]))
    torch.manual_seed(0)
    ours = _ours(g["encoder"], g["variant"], prv2_model["c0"])
    ours.load_state_dict(_converted(sd), strict=True)
    ours = ours.double().eval()
    x = rg.model_inputs(prv2_model["seed"], tuple(g["process_shape"]), prv2_model["c0"])
    roi = roi_align_coarse(CoarseOutput(x["depth"], x["feats"]), x["boxes"], x["process"],
                           torch.zeros(len(x["boxes"]), dtype=torch.long))
    with torch.no_grad():
        got = ours(x["patches"], roi.depth, roi.features)
    gu.compare_summary(got, g["output"], RTOL_MODEL, f"{key} output")


@pytest.mark.parametrize("encoder", ["E", "C"])
def test_refiner_structure_matches_official_on_meta(prv2_model, encoder):
    "The E/C refiners: every official parameter maps to one of ours with the same shape, and nothing is left over."
    g = prv2_model["structure"][encoder] if encoder == "C" else prv2_model["variants"]["E_full"]
    assert g.get("encoder") in (encoder, ENCODERS[encoder])
    official = {k: torch.empty(s, device="meta") for k, s in gu.shapes_from_text(g["state_dict_shapes"]).items()}
    converted = {k: tuple(v.shape) for k, v in _converted(official).items()}
    ours = {k: tuple(v.shape) for k, v in _ours(encoder, "full", g.get("c0", prv2_model["c0"]), "meta").state_dict().items()}
    assert sorted(set(converted) ^ set(ours)) == []
    assert {k: s for k, s in converted.items() if ours[k] != s} == {}


# ------------------------------------------------------------------------------------------------ PRV2 coarse branch
def test_dav2_coarse_branch_matches_official_temp_features():
    "Our `DAv2Coarse` = the official metric DepthAnythingV2 coarse branch: depth and the six maps PRV2 consumes."
    from depth_anything_nb.models.dpt import DepthAnythingV2
    from depth_anything_nb.models.prv2_model import DAv2Coarse

    g = gu.load("prv2_coarse.json")
    model = DepthAnythingV2.from_config(g["encoder"], max_depth=g["max_depth"], features=g["features"],
                                        out_channels=list(g["out_channels"]))
    model.load_state_dict(gu.perturbed_state_dict(g["seed"], gu.shapes_from_text(g["state_dict_shapes"])), strict=True)
    coarse = DAv2Coarse(model, tuple(g["process_shape"])).double().eval()
    with torch.no_grad():
        out = coarse(gu.uniform(g["seed"], "coarse_image", (1, 3, *g["process_shape"])))
    gu.compare_summary(out.depth, g["metric_depth"], RTOL_MODEL, "coarse depth")
    names = ["midas_final_feat", "x_blocks_feat_3", "x_blocks_feat_2", "x_blocks_feat_1", "x_blocks_feat_0", "x_d0"]
    for name, f in zip(names, out.features):  # ours high → low resolution, the official dict low → high
        gu.compare_summary(f, g["temp_features"][name], RTOL_MODEL, name)


# ------------------------------------------------------------------------------------------------ PRV2 tiling
# Tiling runs in float32 on both sides (official: float32 canvases and mask; ours: float32 by design). A pixel is a
# weighted mean of ≤ 4 predictions; the official running average `(p·c + n·a)/(n + c)` and our Σw·p/Σw each round
# ≲ 10 times at u₃₂ = 6e-8: ≲ 6e-7 of the value scale. The mask itself: the same cv2 float32 GaussianBlur then a
# min–max normalisation (a few u₃₂).
RTOL_TILE = 2e-6


@pytest.fixture(scope="module")
def prv2_tiling():
    return gu.load("prv2_tiling.json")


def test_blend_mask_matches_official_generatemask(prv2_tiling):
    got = torch.from_numpy(blend_mask(tuple(prv2_tiling["process_shape"])))
    gu.compare_summary(got, prv2_tiling["blend_mask"], RTOL_TILE, "blend mask")


@pytest.mark.parametrize("mode", ["m1", "m2"])
def test_tiled_inference_matches_official_regular_tile(prv2_tiling, mode):
    "Tile placement, crops, blend weights and the running average of the official m1/m2 (PRV2 forward order)."
    g = prv2_tiling
    got = tiled_inference(rg.tile_image(g["seed"]), lambda patches, coarse, boxes: rg.tile_refine(patches), None,
                          process_shape=tuple(g["process_shape"]), patch_split_num=tuple(g["patch_split_num"]),
                          image_raw_shape=tuple(g["image_raw_shape"]), cai_mode=mode, process_num=g["process_num"])
    gu.compare_summary(got, g["modes"][mode], RTOL_TILE, mode)


def test_tiled_prediction_evaluated_like_official_compute_metrics(prv2_tiling):
    """m2 canvas brought to a GT of another size and scored: official = canvas → `compute_metrics` (bilinear,
    align_corners=False); ours = `tiled_inference(output_shape=GT)` → `evaluate_metric_depth` at the GT size."""
    g = prv2_tiling
    gt = rg.tile_gt(g["seed"])
    pred = tiled_inference(rg.tile_image(g["seed"]), lambda patches, coarse, boxes: rg.tile_refine(patches), None,
                           process_shape=tuple(g["process_shape"]), patch_split_num=tuple(g["patch_split_num"]),
                           image_raw_shape=tuple(g["image_raw_shape"]), cai_mode="m2", process_num=g["process_num"],
                           output_shape=tuple(gt.shape))
    proto = MetricDepthProtocol("golden", min_depth=1e-3, max_depth=80.0, align_corners=False, clip_prediction=True,
                                silog="prv2", see_from="depth")
    got = evaluate_metric_depth(pred.double(), gt, proto)
    # float32 canvas (RTOL_TILE) through float64 metrics: relative errors of means of |p − g| ≲ RTOL_TILE · p/|p − g|;
    # with p ≈ 3.5 and mean |p − g| ≈ 1 here that is < 1e-5.
    for k, v in g["m2_eval"]["metrics"].items():
        close(got[_OFFICIAL_KEYS.get(k, k)], v, 1e-5, k)


# ------------------------------------------------------------------------------------------------ live official code
def _compare_tree(live, golden, rtol, path="golden"):
    "Live official output vs the fixture: floats within rtol of the scale of their list/value, the rest exact."
    if isinstance(golden, dict):
        assert set(live) == set(golden), f"{path}: keys differ"
        for k in golden:
            if k == "log_canny_edges":  # see test_ranking_edges_match_official_log_canny
                assert len(set(live[k]) ^ set(golden[k])) <= max(2, len(golden[k]) // 100), path
            else:
                _compare_tree(live[k], golden[k], rtol, f"{path}/{k}")
    elif isinstance(golden, list) and golden and all(isinstance(v, float) for v in golden):
        a, b = np.asarray(live, dtype=float), np.asarray(golden, dtype=float)
        assert a.shape == b.shape and np.abs(a - b).max() <= rtol * max(np.abs(b).max(), 1e-300), path
    elif isinstance(golden, list) and any(isinstance(v, (dict, list)) for v in golden):
        assert isinstance(live, list) and len(live) == len(golden), f"{path}: lengths differ"
        for i, (a, b) in enumerate(zip(live, golden)):
            _compare_tree(a, b, rtol, f"{path}[{i}]")
    elif isinstance(golden, float):
        assert math.isclose(live, golden, rel_tol=rtol, abs_tol=1e-300) or (math.isnan(live) and math.isnan(golden)), path
    else:
        assert live == golden, f"{path}: {live!r} != {golden!r}"


def _roundtrip(data):
    return gu.json.loads(gu._dumps(data))


PRV2_REPO, DAV2_REPO, MIDAS_REPO = (os.environ.get(k) for k in ("PRV2_OFFICIAL_REPO", "DAV2_OFFICIAL_REPO",
                                                                 "MIDAS_GIST_REPO"))


@pytest.mark.skipif(not PRV2_REPO, reason="set PRV2_OFFICIAL_REPO to a checkout of zhyever/PatchRefinerV2")
@pytest.mark.parametrize("name", ["prv2_coarse", "prv2_losses", "prv2_ranking", "prv2_metrics", "prv2_model"])
def test_live_official_prv2_matches_golden(name):
    gen = {"prv2_coarse": rg.gen_prv2_coarse, "prv2_losses": rg.gen_prv2_losses, "prv2_ranking": rg.gen_prv2_ranking,
           "prv2_metrics": rg.gen_prv2_metrics, "prv2_model": rg.gen_prv2_model}[name]
    golden = gu.load(f"{name}.json")
    with gu.prv2_modules(PRV2_REPO) as off:
        live = _roundtrip({"source": golden["source"], **gen(off)})
    _compare_tree(live, golden, RTOL_F32)


@pytest.mark.skipif(not PRV2_REPO, reason="set PRV2_OFFICIAL_REPO to a checkout of zhyever/PatchRefinerV2")
def test_live_official_tiling_matches_golden():
    golden = gu.load("prv2_tiling.json")
    _compare_tree(_roundtrip({"source": golden["source"], **rg.gen_prv2_tiling(Path(PRV2_REPO))}), golden, RTOL_TILE)


@pytest.mark.skipif(not DAV2_REPO, reason="set DAV2_OFFICIAL_REPO to a checkout of DepthAnything/Depth-Anything-V2")
def test_live_official_dav2_matches_golden():
    golden = gu.load("dav2_metric.json")
    _compare_tree(_roundtrip({"source": golden["source"], **rg.gen_dav2(Path(DAV2_REPO))}), golden, RTOL_F32)


@pytest.mark.skipif(not MIDAS_REPO, reason="set MIDAS_GIST_REPO to a checkout of EPFL-VILAB/omnidata")
def test_live_midas_gist_matches_golden():
    golden = gu.load("midas_gradient.json")
    _compare_tree(_roundtrip({"source": golden["source"], **rg.gen_midas(Path(MIDAS_REPO))}), golden, RTOL_F32)
