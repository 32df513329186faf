"""Metrics against independent write-ups of the official formulas, closed forms, properties, and the DDP path.

The "official" helpers below restate, in plain torch/numpy, what the DAv2 `metric_depth` code (`eval_depth`, the
evaluation loop of `train.py`) and the PatchRefiner(V2) code (`compute_metrics`, `compute_errors`,
`soft_edge_error`, `compute_boundary_metrics`, the Cityscapes `get_metrics`) do, as read in the official
Depth-Anything-V2 and PatchRefinerV2 repositories. They are written independently of `depth_anything_nb.train.metrics` (different primitives: np.roll
shifts, Gaussian-blur-then-threshold dilation, index arithmetic), so agreement is evidence, not tautology.
"""
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from scipy import ndimage
from skimage.feature import canny

from depth_anything_nb.train.metrics import (
    DEPTH_METRICS, METRIC_PROTOCOLS, RELATIVE_PROTOCOLS, MetricAccumulator, RelativeProtocol, align_prediction,
    boundary_gt_edges, boundary_metrics, cityscapes_valid_mask, image_edges, depth_discontinuities, depth_errors, dilate,
    eval_crop_mask, evaluate_da2k, evaluate_metric_depth, evaluate_prv2_cityscapes, evaluate_relative,
    fit_scale_shift, kb_crop, load_da2k, soft_edge_error,
)

HYP = settings(max_examples=40, deadline=None)


# ---------------------------------------------------------------- official formulas, restated
def official_eval_depth(pred, target):
    "DAv2 metric_depth/util/metric.py::eval_depth as documented (float32 torch)."
    thresh = torch.max(target / pred, pred / target)
    n = len(thresh)
    diff, diff_log = pred - target, torch.log(pred) - torch.log(target)
    return {
        "d1": (torch.sum(thresh < 1.25).float() / n).item(),
        "d2": (torch.sum(thresh < 1.25**2).float() / n).item(),
        "d3": (torch.sum(thresh < 1.25**3).float() / n).item(),
        "abs_rel": torch.mean(torch.abs(diff) / target).item(),
        "sq_rel": torch.mean(diff**2 / target).item(),
        "rmse": torch.sqrt(torch.mean(diff**2)).item(),
        "rmse_log": torch.sqrt(torch.mean(diff_log**2)).item(),
        "log10": torch.mean(torch.abs(torch.log10(pred) - torch.log10(target))).item(),
        "silog": torch.sqrt(torch.pow(diff_log, 2).mean() - 0.5 * torch.pow(diff_log.mean(), 2)).item(),
    }


def official_dav2_loop_step(pred, depth, valid_mask, min_depth, max_depth):
    "One image of the DAv2 train.py evaluation loop; None where the loop `continue`s."
    pred = F.interpolate(pred[None, None], depth.shape[-2:], mode="bilinear", align_corners=True)[0, 0]
    valid = (valid_mask == 1) & (depth >= min_depth) & (depth <= max_depth)
    if valid.sum() < 10:
        return None
    return official_eval_depth(pred[valid], depth[valid])


def official_compute_errors(gt, pred):
    "PatchRefiner estimator/utils/metric.py::compute_errors (numpy), renamed to the DAv2 keys."
    thresh = np.maximum(gt / pred, pred / gt)
    err = np.log(pred) - np.log(gt)
    return dict(
        d1=(thresh < 1.25).mean(), d2=(thresh < 1.25**2).mean(), d3=(thresh < 1.25**3).mean(),
        abs_rel=np.mean(np.abs(gt - pred) / gt), sq_rel=np.mean((gt - pred) ** 2 / gt),
        rmse=np.sqrt(((gt - pred) ** 2).mean()), rmse_log=np.sqrt(((np.log(gt) - np.log(pred)) ** 2).mean()),
        log10=np.abs(np.log10(gt) - np.log10(pred)).mean(), silog=np.sqrt(np.mean(err**2) - np.mean(err) ** 2) * 100,
    )


def official_shift(data, dx, dy):
    "shift_2d_replace: np.roll along columns then rows, vacated entries set to 0."
    out = np.roll(data, dx, axis=1)
    if dx < 0:
        out[:, dx:] = 0
    elif dx > 0:
        out[:, :dx] = 0
    out = np.roll(out, dy, axis=0)
    if dy < 0:
        out[dy:, :] = 0
    elif dy > 0:
        out[:dy, :] = 0
    return out


def official_see_map(pred, gt):
    return np.minimum.reduce([np.abs(official_shift(gt, i, j) - pred) for i in (-1, 0, 1) for j in (-1, 0, 1)])


def official_get_boundaries(disp, th=1.0):
    ey = np.logical_or(np.pad(np.abs(disp[1:, :] - disp[:-1, :]) > th, ((1, 0), (0, 0))),
                       np.pad(np.abs(disp[:-1, :] - disp[1:, :]) > th, ((0, 1), (0, 0))))
    ex = np.logical_or(np.pad(np.abs(disp[:, 1:] - disp[:, :-1]) > th, ((0, 0), (1, 0))),
                       np.pad(np.abs(disp[:, :-1] - disp[:, 1:]) > th, ((0, 0), (0, 1))))
    return ey | ex


def official_pr_compute_metrics(gt, pred, min_d, max_d, garg_crop=False, edges=None, additional_mask=None):
    "PatchRefiner compute_metrics on an already resized prediction (numpy float32)."
    pred = pred.copy()
    pred[pred < min_d] = min_d
    pred[pred > max_d] = max_d
    pred[np.isinf(pred)] = max_d
    pred[np.isnan(pred)] = min_d
    valid = (gt > min_d) & (gt < max_d)
    if garg_crop:
        h, w = gt.shape
        crop = np.zeros_like(valid)
        crop[int(0.40810811 * h):int(0.99189189 * h), int(0.03594771 * w):int(0.96405229 * w)] = True
        valid &= crop
    if additional_mask is not None:
        valid &= additional_mask
    out = official_compute_errors(gt[valid], pred[valid])
    if edges is not None:
        m = valid & edges
        out["see"] = official_see_map(pred, gt)[m].mean() if m.sum() > 0 else 0.0
    return out


def gaussian_blur_positive(mask, k, sigma=5.0):
    "kornia.filters.gaussian_blur2d(mask, (k, k), (σ, σ), border 'reflect') > 0, via scipy ('mirror' = torch reflect)."
    x = np.arange(k) - k // 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    g /= g.sum()
    return ndimage.convolve(mask.astype(np.float32), np.outer(g, g).astype(np.float32), mode="mirror") > 0


def official_to_log(depth):
    d = torch.as_tensor(depth)
    return ((d > 0) * d.clamp(min=torch.finfo(d.dtype).eps).log()).numpy()


def official_boundary(gt, pred, seg, valid, th=10):
    "Cityscapes get_metrics edge part + compute_boundary_metrics (F1 etc. as torchmetrics binary metrics, ×100)."
    s = seg.astype(np.float32)  # kornia's rgb_to_grayscale works on the float32 0–255 tensor
    grey = s[..., 0] * np.float32(0.299) + s[..., 1] * np.float32(0.587) + s[..., 2] * np.float32(0.114)
    seg_edge = canny(grey, sigma=1, low_threshold=0.1, high_threshold=0.2)
    gt_edges_ext = gaussian_blur_positive(canny(official_to_log(gt), sigma=1), 7)
    edge_mask = seg_edge & gt_edges_ext
    pred_edges = canny(official_to_log(pred), sigma=1)
    d_t = ndimage.distance_transform_edt(~edge_mask)
    d_p = ndimage.distance_transform_edt(~pred_edges)
    gt_e, pr_e = edge_mask & valid, pred_edges & valid
    bde = pr_e & (d_t < th)
    out = {"edge_acc": d_t[bde].mean() if bde.sum() else th, "edge_comp": d_p[gt_e].mean() if bde.sum() else th}
    a, b = gaussian_blur_positive(pred_edges, 5)[valid], gaussian_blur_positive(edge_mask, 5)[valid]
    tp, fp, fn = (a & b).sum(), (a & ~b).sum(), (~a & b).sum()
    out["f1"] = 100 * 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 0.0
    out["precision"] = 100 * tp / (tp + fp) if (tp + fp) else 0.0
    out["recall"] = 100 * tp / (tp + fn) if (tp + fn) else 0.0
    return out, edge_mask


def official_cityscapes_mask(depth, min_d=1e-3, max_d=250.0):
    mask = (depth > min_d) & (depth < max_d)
    h, w = depth.shape
    mask[-h // 4:, :] = False
    mask[:, : w // 16] = False
    mask[:, -w // 16:] = False
    return mask


def blocky_scene(seed, h=40, w=56, n_rect=5):
    "Random rectangles of constant depth with their own segmentation colour."
    rng = np.random.default_rng(seed)
    depth = np.full((h, w), 30.0, np.float32)
    seg = np.zeros((h, w, 3), np.uint8)
    seg[:] = (70, 70, 70)
    for _ in range(n_rect):
        r0, c0 = rng.integers(0, h - 6), rng.integers(0, w - 6)
        r1, c1 = r0 + rng.integers(4, h // 2), c0 + rng.integers(4, w // 2)
        depth[r0:r1, c0:c1] = rng.uniform(2, 25)
        seg[r0:r1, c0:c1] = rng.integers(0, 256, 3)
    return depth, seg


def close(a, b, rel=1e-5, abs_=1e-6):
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


# ---------------------------------------------------------------- metric depth vs the official code
@pytest.mark.parametrize("seed,pred_shape", [(0, (24, 32)), (1, (13, 17)), (2, (48, 64))])
def test_dav2_protocol_matches_official_loop(seed, pred_shape):
    g = torch.Generator().manual_seed(seed)
    depth = 25 * torch.rand(48, 64, generator=g)  # some pixels beyond 20 m and near 0 fall outside the range
    valid_mask = torch.rand(48, 64, generator=g) > 0.2
    pred = 0.5 + 19 * torch.rand(pred_shape, generator=g)
    ours = evaluate_metric_depth(pred, depth, "dav2_hypersim", valid_mask=valid_mask)
    ref = official_dav2_loop_step(pred, depth, valid_mask, 1e-3, 20.0)
    assert set(ours) == set(DEPTH_METRICS)
    for k in DEPTH_METRICS:
        assert close(ours[k], ref[k]), (k, ours[k], ref[k])


def test_dav2_protocol_skips_fewer_than_10_valid_pixels():
    depth = torch.full((8, 8), 5.0)
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask.view(-1)[:9] = True
    assert official_dav2_loop_step(depth, depth, mask, 1e-3, 20.0) is None
    assert all(math.isnan(v) for v in evaluate_metric_depth(depth, depth, "dav2_hypersim", mask).values())
    mask.view(-1)[9] = True
    assert evaluate_metric_depth(depth, depth, "dav2_hypersim", mask)["d1"] == 1.0


def test_dav2_inclusive_range_vs_prv2_strict():
    depth = torch.tensor([[20.0, 10.0], [5.0, 1.0]]).repeat(4, 4)  # 20 m is valid for DAv2 (≤), not for PRV2 (<)
    pred = depth.clone()
    pred[depth == 20.0] = 40.0
    assert evaluate_metric_depth(pred, depth, METRIC_PROTOCOLS["dav2_hypersim"])["d1"] == 0.75
    prv2 = replace(METRIC_PROTOCOLS["prv2_u4k"], name="strict20", max_depth=20.0, see_from=None)
    assert evaluate_metric_depth(pred, depth, prv2)["d1"] == 1.0


@pytest.mark.parametrize("seed", [0, 1])
def test_prv2_kitti_matches_official_compute_metrics(seed):
    rng = np.random.default_rng(seed)
    gt = np.where(rng.random((352, 1216)) < 0.3, rng.uniform(0.5, 85, (352, 1216)), 0).astype(np.float32)
    pred_small = rng.uniform(-1, 90, (88, 304)).astype(np.float32)
    pred_small[0, :5] = [np.inf, -np.inf, np.nan, 0, 100]
    resized = F.interpolate(torch.from_numpy(pred_small)[None, None], gt.shape, mode="bilinear",
                            align_corners=False)[0, 0].numpy()
    ref = official_pr_compute_metrics(gt, resized, 1e-3, 80.0, garg_crop=True, edges=official_get_boundaries(gt))
    ours = evaluate_metric_depth(pred_small, gt, "prv2_kitti")
    for k in ref:
        assert close(ours[k], float(ref[k]), rel=2e-5), (k, ours[k], ref[k])


def test_prv2_u4k_see_from_disparity_and_clipping():
    rng = np.random.default_rng(3)
    disp = np.repeat(rng.uniform(1, 40, (6, 10)), 4, axis=0).repeat(4, axis=1).astype(np.float32)  # blocky
    gt = (100.0 / disp).astype(np.float32)
    pred = gt * rng.uniform(0.8, 1.2, gt.shape).astype(np.float32)
    pred[0, 0], pred[1, 1] = np.inf, np.nan
    ref = official_pr_compute_metrics(gt, pred, 1e-3, 80.0, edges=official_get_boundaries(disp))
    ours = evaluate_metric_depth(pred, gt, "prv2_u4k", gt_disparity=disp)
    for k in ref:
        assert close(ours[k], float(ref[k]), rel=2e-5), (k, ours[k], ref[k])
    with pytest.raises(ValueError, match="gt_disparity"):
        evaluate_metric_depth(pred, gt, "prv2_u4k")


def test_see_matches_official_on_random_maps():
    rng = np.random.default_rng(4)
    for shape in [(5, 7), (16, 9), (1, 6)]:
        gt = rng.uniform(0, 10, shape).astype(np.float32)
        pred = rng.uniform(0, 10, shape).astype(np.float32)
        edges = rng.random(shape) < 0.5
        edges[0, 0] = True
        assert close(soft_edge_error(pred, gt, edges), float(official_see_map(pred, gt)[edges].mean()))
        assert torch.equal(depth_discontinuities(gt, 1.0), torch.from_numpy(official_get_boundaries(gt, 1.0)))


# ---------------------------------------------------------------- closed forms and symmetry
def test_one_pixel_error_through_the_protocol():
    gt = torch.full((4, 5), 2.0)
    pred = gt.clone()
    pred[1, 2] = 3.0  # |Δ| = 1 at one of 20 pixels
    m = evaluate_metric_depth(pred, gt, "prv2_scannetpp")
    assert close(m["abs_rel"], 0.5 / 20) and close(m["rmse"], math.sqrt(1 / 20)) and close(m["sq_rel"], 0.5 / 20)
    assert close(m["d1"], 19 / 20) and m["d2"] == 1.0
    assert m["see"] != m["see"]  # constant GT: no edge pixel → NaN, not the official 0


def test_delta_symmetric_absrel_not():
    g = torch.Generator().manual_seed(5)
    a, b = 1 + 9 * torch.rand(100, generator=g), 1 + 9 * torch.rand(100, generator=g)
    ab, ba = depth_errors(a, b), depth_errors(b, a)
    for k in ("d1", "d2", "d3", "rmse", "rmse_log", "log10", "silog"):
        assert close(ab[k], ba[k]), k
    assert not close(ab["abs_rel"], ba["abs_rel"]) and not close(ab["sq_rel"], ba["sq_rel"])


@HYP
@given(s=st.floats(-50, 50).filter(lambda v: abs(v) > 1e-3), t=st.floats(-10, 10), n=st.integers(2, 50),
       seed=st.integers(0, 2**16))
def test_least_squares_recovers_known_scale_shift(s, t, n, seed):
    x = torch.from_numpy(np.random.default_rng(seed).uniform(-5, 5, n))
    if float(x.max() - x.min()) < 1e-3:
        x[0] += 1.0
    s_hat, t_hat = fit_scale_shift(x, s * x + t)
    assert math.isclose(s_hat, s, rel_tol=1e-9, abs_tol=1e-9) and math.isclose(t_hat, t, rel_tol=1e-9, abs_tol=1e-8)


def test_alignment_in_depth_space_option():
    gt = torch.linspace(1, 9, 40, dtype=torch.float64).view(5, 8)
    proto = RelativeProtocol("depth_ls", "toy", 0.0, 10.0, alignment="depth")
    depth, s, t = align_prediction((gt - 0.5) / 3, gt, torch.ones_like(gt, dtype=torch.bool), proto)
    assert math.isclose(s, 3.0, rel_tol=1e-12) and math.isclose(t, 0.5, rel_tol=1e-12)
    assert torch.allclose(depth, gt)
    assert evaluate_relative((gt - 0.5) / 3, gt, proto)["abs_rel"] < 1e-12


def test_disparity_cap_and_marigold_clip():
    gt = torch.tensor([[1.0, 2.0, 4.0, 8.0]], dtype=torch.float64).repeat(3, 1)
    pred = 1 / gt
    pred[0, 0] = -5.0  # aligned disparity < 1/cap → clamped → depth = cap
    valid = torch.ones_like(gt, dtype=torch.bool)
    valid[0, 0] = False  # not in the fit, but the cap applies everywhere
    midas = RelativeProtocol("m", "toy", 0.0, 10.0, disparity_min=0.1)
    depth, s, t = align_prediction(pred, gt, valid, midas)
    assert math.isclose(s, 1.0) and abs(t) < 1e-12 and depth[0, 0] == 10.0
    marigold = RelativeProtocol("g", "toy", 0.0, 10.0, disparity_min=1e-3, depth_clip=(0.5, 6.0))
    depth, _, _ = align_prediction(pred, gt, valid, marigold)
    assert depth[0, 0] == 6.0 and depth[0, 3] == 6.0 and depth[0, 1] == 2.0


def test_relative_presets_record_their_choices():
    assert RELATIVE_PROTOCOLS["diode_indoor"].requires_valid_mask
    with pytest.raises(ValueError, match="valid mask"):
        evaluate_relative(torch.ones(4, 4), torch.ones(4, 4), "diode_indoor")
    kitti = RELATIVE_PROTOCOLS["kitti"]
    assert kitti.kb_crop and kitti.crop == "garg" and kitti.max_depth == 80.0 and math.isclose(kitti.disparity_min, 1 / 80)
    with pytest.raises(KeyError, match="unknown relative protocol"):
        evaluate_relative(torch.ones(4, 4), torch.ones(4, 4), "kitty")


def test_kitti_kb_crop_paths_agree():
    rng = np.random.default_rng(6)
    gt_full = np.where(rng.random((375, 1242)) < 0.2, rng.uniform(1, 79, (375, 1242)), 0).astype(np.float32)
    pred_full = (1 / np.maximum(gt_full, 1)) * 2 + 0.01 * rng.random((375, 1242)).astype(np.float32)
    a = evaluate_relative(pred_full, gt_full, "kitti")  # full-size GT + full-size pred: both cropped
    b = evaluate_relative(kb_crop(pred_full), kb_crop(gt_full), "kitti")  # KB-cropped inputs
    assert all(close(a[k], b[k], rel=1e-9) for k in a)
    with pytest.raises(ValueError, match="KB-cropped"):
        evaluate_relative(pred_full[:300], gt_full, "kitti")
    with pytest.raises(ValueError, match="480x640"):
        eval_crop_mask((48, 64), "nyu_eigen")


# ---------------------------------------------------------------- DA-2K
def test_da2k_from_file_with_ties(tmp_path):
    ann = {
        "images/indoor/a.jpg": [
            {"point1": [0, 0], "point2": [1, 1], "closer_point": "point1"},  # 3 > 1 right
            {"point1": [0, 1], "point2": [1, 0], "closer_point": "point1"},  # 2 == 2 tie → wrong
        ],
        "images/object/b.png": [
            {"point1": [0, 0], "point2": [0, 1], "closer_point": "point2"},  # closer = point2: 0.7 > 0.5 → right
        ],
    }
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(ann))
    preds = {"images/indoor/a.jpg": np.array([[3.0, 2.0], [2.0, 1.0]]), "images/object/b.png": torch.tensor([[0.5, 0.7]])}
    r = evaluate_da2k(preds, path)
    assert r["per_scene"] == {"indoor": 50.0, "object": 100.0}  # relative: larger = closer
    assert math.isclose(r["overall"], 200 / 3) and r["mean_of_scenes"] == 75.0 and r["n_ties"] == 1
    m = evaluate_da2k(lambda k: preds[k], str(path), kind="metric")  # smaller = closer: both strict pairs flip
    assert m["per_scene"] == {"indoor": 0.0, "object": 0.0} and m["overall"] == 0.0 and m["n_ties"] == 1
    assert load_da2k(path) == ann


def test_da2k_errors_name_the_problem(tmp_path):
    bad = tmp_path / "annotations.json"
    bad.write_text(json.dumps({"images/indoor/a.jpg": [{"point1": [0, 0], "point2": [1], "closer_point": "point1"}]}))
    with pytest.raises(ValueError, match=r"annotations.json: images/indoor/a.jpg: pair 0: point2"):
        load_da2k(bad)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="broken.json"):
        load_da2k(tmp_path / "broken.json")
    ann = {"images/aerial/x.jpg": [{"point1": [5, 0], "point2": [0, 0], "closer_point": "point1"}]}
    with pytest.raises(ValueError, match="outside the prediction"):
        evaluate_da2k({"images/aerial/x.jpg": np.ones((2, 2))}, ann)
    with pytest.raises(KeyError, match="no prediction for images/aerial/x.jpg"):
        evaluate_da2k({}, ann)


# ---------------------------------------------------------------- PRV2 boundary metrics and Cityscapes masks
def test_blur_then_threshold_is_square_dilation():
    rng = np.random.default_rng(7)
    m = rng.random((23, 31)) < 0.03
    for k in (3, 5, 7):
        assert np.array_equal(dilate(m, k).numpy(), gaussian_blur_positive(m, k))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_boundary_metrics_match_official(seed):
    gt, seg = blocky_scene(seed)
    rng = np.random.default_rng(100 + seed)
    pred = ndimage.uniform_filter(gt * rng.uniform(0.9, 1.1, gt.shape), 3).astype(np.float32)
    pred = np.roll(pred, int(rng.integers(-3, 4)), axis=1)
    valid = official_cityscapes_mask(gt)
    ref, ref_edges = official_boundary(gt, pred, seg, valid)
    ours_edges = boundary_gt_edges(gt, seg)
    assert np.array_equal(ours_edges.numpy(), ref_edges)
    ours = boundary_metrics(pred, ours_edges, valid)
    for k, v in ref.items():
        assert close(ours[k], float(v), rel=1e-9), (k, ours[k], v)


def test_cityscapes_mask_matches_official_index_arithmetic():
    for h, w in [(1024, 2048), (10, 33), (7, 17), (64, 96)]:
        d = np.full((h, w), 5.0, np.float32)
        d[0, -1], d[1, 1] = 300.0, 0.0
        assert np.array_equal(cityscapes_valid_mask(d).numpy(), official_cityscapes_mask(d)), (h, w)


def official_image_edges(image):
    "kornia spatial_gradient (normalised Sobel, replicate border) → Σ_c magnitude ≥ 5 % of max → 3×3 blur > 0."
    img = image.astype(np.float32) / 255
    mag = sum(np.hypot(ndimage.sobel(img[..., c], axis=1, mode="nearest") / 8,
                       ndimage.sobel(img[..., c], axis=0, mode="nearest") / 8) for c in range(3))
    return gaussian_blur_positive(mag >= 0.05 * mag.max(), 3, sigma=3.0)


def official_cityscapes(gt_raw, pred, seg, image):
    "Cityscapes dataset (mode 'infer', with_seg_map) + get_metrics, for a prediction already at the GT size."
    depth = gt_raw.astype(np.float32).copy()
    h, w = depth.shape
    depth[-h // 4:, :] = -1.0
    depth[:, : w // 16] = -1.0
    depth[:, -w // 16:] = -1.0
    depth[(seg[..., 0] == 70) & (seg[..., 1] == 130)] = 0.0
    mask = official_cityscapes_mask(depth)
    boundary, edge_mask = official_boundary(depth, pred, seg, mask)
    flatten = mask & ~edge_mask & ~official_image_edges(image)
    out = official_pr_compute_metrics(depth, pred, 1e-3, 250.0, edges=official_get_boundaries(depth), additional_mask=flatten)
    out.update(boundary)
    return out


@pytest.mark.parametrize("seed", [11, 12])
def test_cityscapes_pipeline_matches_official(seed):
    gt, seg = blocky_scene(seed, h=64, w=96)
    seg[:6] = (70, 130, 180)  # sky
    rng = np.random.default_rng(seed)
    pred = (gt * rng.uniform(0.95, 1.05, gt.shape)).astype(np.float32)
    image = np.clip(seg.astype(np.int64) + rng.integers(-3, 4, seg.shape), 0, 255).astype(np.uint8)
    assert np.array_equal(image_edges(image).numpy(), official_image_edges(image))
    ours, ref = evaluate_prv2_cityscapes(pred, gt, seg, image), official_cityscapes(gt, pred, seg, image)
    assert not cityscapes_valid_mask(gt, seg)[:6].any()
    for k, v in ref.items():
        assert close(ours[k], float(v), rel=2e-5), (k, ours[k], v)


def column_scene(shift=0, h=32, w=64):
    "A full-height near column (cols 20+shift..40+shift) with one anti-aliased pixel per side, and its segmentation."
    x = np.arange(w, dtype=np.float32)[None].repeat(h, 0)
    inside = ((x > 20 + shift) & (x < 40 + shift)) + 0.5 * ((x == 20 + shift) | (x == 40 + shift))
    depth = np.exp(np.log(10.0) + inside * (np.log(3.0) - np.log(10.0))).astype(np.float32)
    seg = np.stack([np.round(200 - 150 * inside)] * 3, -1).astype(np.uint8)
    return depth, seg


@pytest.mark.parametrize("k", [0, 1, 2, 4, 7, 9, 30])
def test_boundary_metrics_on_a_shifted_edge(k):
    gt, seg = column_scene()
    valid = np.ones(gt.shape, bool)
    m = boundary_metrics(column_scene(shift=k)[0], boundary_gt_edges(gt, seg), valid)
    expected = min(k, 10)  # k = 30: the one predicted edge is 10 px from the GT, not < 10: both metrics are 10
    assert m["edge_acc"] == expected and m["edge_comp"] == expected
    assert m["f1"] == 100 * max(5 - k, 0) / 5
    assert soft_edge_error(gt, gt, depth_discontinuities(gt)) == 0.0


def test_no_gt_edges_gives_nan_boundary_metrics():
    flat = np.full((20, 20), 5.0, np.float32)
    seg = np.zeros((20, 20, 3), np.uint8)
    out = boundary_metrics(flat, boundary_gt_edges(flat, seg), np.ones((20, 20), bool))
    assert all(v != v for v in out.values())


# ---------------------------------------------------------------- properties (hypothesis)
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


@HYP
@given(h=st.integers(1, 9), w=st.integers(1, 9), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_depth_errors_finite_and_ordered(h, w, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    gt = (0.5 + 20 * torch.rand(h, w, generator=g)).to(dtype)
    pred = (0.5 + 20 * torch.rand(h, w, generator=g)).to(dtype)
    m = depth_errors(pred, gt, silog="prv2")
    assert all(math.isfinite(v) for v in m.values())
    assert 0 <= m["d1"] <= m["d2"] <= m["d3"] <= 1 and m["abs_rel"] >= 0 and m["silog"] >= 0


@HYP
@given(h=st.integers(1, 12), w=st.integers(1, 12), p_valid=st.sampled_from([0.0, 0.05, 0.5, 1.0]),
       dtype=st.sampled_from(DTYPES), name=st.sampled_from(["dav2_hypersim", "prv2_scannetpp", "prv2_cityscapes"]),
       seed=st.integers(0, 2**16))
def test_metric_protocols_nan_only_when_skipped(h, w, p_valid, dtype, name, seed):
    g = torch.Generator().manual_seed(seed)
    gt = (0.5 + 9 * torch.rand(h, w, generator=g)).to(dtype)
    pred = (0.5 + 9 * torch.rand(max(1, h // 2), w, generator=g)).to(dtype)
    mask = torch.rand(h, w, generator=g) < p_valid
    m = evaluate_metric_depth(pred, gt, name, valid_mask=mask)
    n_valid, need = int(mask.sum()), METRIC_PROTOCOLS[name].min_valid_pixels
    core = [m[k] for k in DEPTH_METRICS]
    if n_valid < need:
        assert all(math.isnan(v) for v in m.values())
    else:
        assert all(math.isfinite(v) for v in core)
    acc = MetricAccumulator(name)
    acc.update(m)
    acc.update({k: 0.0 for k in m})
    s = acc.summary()
    assert s["n_skipped"] == int(n_valid < need) and all(math.isfinite(v) for v in s["metrics"].values())


@HYP
@given(h=st.integers(2, 10), w=st.integers(2, 10), p_valid=st.sampled_from([0.0, 0.3, 1.0]),
       scale=st.floats(0.01, 100), shift=st.floats(-5, 5), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_relative_metrics_affine_invariant(h, w, p_valid, scale, shift, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    gt = 0.5 + 9 * torch.rand(h, w, generator=g, dtype=torch.float64)
    pred = (1 / gt + 0.05 * torch.rand(h, w, generator=g, dtype=torch.float64)).to(dtype).double()
    mask = torch.rand(h, w, generator=g) < p_valid
    proto = RelativeProtocol("toy", "toy", 1e-3, 10.0, disparity_min=0.1)
    a = evaluate_relative(pred, gt, proto, valid_mask=mask)
    b = evaluate_relative(scale * pred + shift, gt, proto, valid_mask=mask)
    if not mask.any():
        assert all(math.isnan(v) for v in a.values()) and all(math.isnan(v) for v in b.values())
        return
    assert all(math.isfinite(v) for v in a.values())
    for k in ("abs_rel", "rmse"):
        assert math.isclose(a[k], b[k], rel_tol=1e-6, abs_tol=1e-9), (k, a[k], b[k])


@HYP
@given(h=st.integers(1, 8), w=st.integers(1, 8), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_see_nonnegative_nan_without_edges(h, w, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    gt, pred = (10 * torch.rand(h, w, generator=g)).to(dtype), (10 * torch.rand(h, w, generator=g)).to(dtype)
    edges = depth_discontinuities(gt)
    v = soft_edge_error(pred, gt, edges)
    assert (math.isnan(v) and not edges.any()) or v >= 0
    assert soft_edge_error(gt, gt, edges) == 0 or not edges.any()


# ---------------------------------------------------------------- accumulators and DDP
PER_IMAGE = [
    {"d1": 0.9, "abs_rel": 0.1},
    {"d1": float("nan"), "abs_rel": float("nan")},  # skipped image
    {"d1": 0.5, "abs_rel": 0.3, "see": 1.5},  # a metric only some images have
    {"d1": 0.7, "abs_rel": float("nan")},
    {"d1": 1.0, "abs_rel": 0.0, "see": 0.5},
]


def _single(per_image):
    acc = MetricAccumulator(METRIC_PROTOCOLS["prv2_u4k"])
    for m in per_image:
        acc.update(m)
    return acc.summary()


def test_accumulator_is_nanmean():
    s = _single(PER_IMAGE)
    assert s["protocol"] == "prv2_u4k" and s["settings"]["max_depth"] == 80.0
    assert s["n_images"] == 5 and s["n_skipped"] == 1 and s["counts"] == {"d1": 4, "abs_rel": 3, "see": 2}
    for k in ("d1", "abs_rel", "see"):
        assert math.isclose(s["metrics"][k], np.nanmean([m.get(k, np.nan) for m in PER_IMAGE]))


def _ddp_worker(rank, world_size, init_file, shardings, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        results = []
        for shards in shardings:
            acc = MetricAccumulator(METRIC_PROTOCOLS["prv2_u4k"])
            for m in shards[rank]:
                acc.update(m)
            results.append(acc.summary())
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(300)
def test_ddp_two_ranks_equal_one_process(tmp_path):
    shardings = [
        [PER_IMAGE[:2], PER_IMAGE[2:]],  # uneven split, metric "see" only on rank 1
        [PER_IMAGE, []],  # one rank saw nothing
        [PER_IMAGE[::2], PER_IMAGE[1::2]],
    ]
    torch.multiprocessing.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), shardings, str(tmp_path)), nprocs=2,
                                join=True)
    expected = json.loads(json.dumps(_single(PER_IMAGE)))
    for rank in range(2):
        for got in json.loads((tmp_path / f"rank{rank}.json").read_text()):
            assert got["n_images"] == expected["n_images"] and got["n_skipped"] == expected["n_skipped"]
            assert got["counts"] == expected["counts"] and got["protocol"] == "prv2_u4k"
            assert all(math.isclose(got["metrics"][k], v) for k, v in expected["metrics"].items())
