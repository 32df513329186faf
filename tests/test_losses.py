"""Losses (nbs/40_losses.ipynb) against independent references: the MiDaS gists' formulas, DAv2's SiLogLoss,
PRV2's SILogLoss / ScaleAndShiftInvariantLoss / EdgeguidedRankingLoss, written out here from their definitions
with boolean indexing and per-image loops; invariances; hypothesis properties over shapes, masks and dtypes."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from depth_anything_nb.train import losses as L

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def _rand(*shape, seed=0, dtype=torch.float64, low=0.0, high=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(*shape, generator=g, dtype=torch.float64) * (high - low) + low).to(dtype)


def _random_mask(shape, seed, p=0.7):
    return _rand(*shape, seed=seed + 1000) < p


# --------------------------------------------------------------------------------------------------------------
# References, written from the formulas (MiDaS gists, DAv2 metric_depth/util/loss.py, PRV2 estimator/models/losses.py)
# --------------------------------------------------------------------------------------------------------------
def ref_scale_shift(pred, target, mask):
    "The 2x2 normal equations of the MiDaS gist, solved only where det > 0 (else s = t = 0), image by image."
    s, t = torch.zeros(pred.shape[0], dtype=pred.dtype), torch.zeros(pred.shape[0], dtype=pred.dtype)
    for b in range(pred.shape[0]):
        d, g = pred[b][mask[b]], target[b][mask[b]]
        a00, a01, a11 = (d * d).sum(), d.sum(), torch.tensor(float(d.numel()), dtype=d.dtype)
        b0, b1 = (d * g).sum(), g.sum()
        det = a00 * a11 - a01 * a01
        if det > 0:
            s[b], t[b] = (a11 * b0 - a01 * b1) / det, (-a01 * b0 + a00 * b1) / det
    return s, t


def ref_reduce(per_image, counts, reduction):
    if reduction == "batch":
        return per_image.sum() / counts.sum() if counts.sum() > 0 else torch.zeros((), dtype=per_image.dtype)
    return torch.stack([x / c if c > 0 else x * 0 for x, c in zip(per_image, counts)]).mean()


def ref_gradient_loss(pred, target, mask, reduction, scales=4):
    "MiDaS GradientLoss: levels with step 2^k, masked forward differences, each divided by its valid count."
    total = 0.0
    for k in range(scales):
        step = 2 ** k
        p, g, m = pred[:, ::step, ::step], target[:, ::step, ::step], mask[:, ::step, ::step].to(pred.dtype)
        diff = (p - g) * m
        gx = (diff[:, :, 1:] - diff[:, :, :-1]).abs() * m[:, :, 1:] * m[:, :, :-1]
        gy = (diff[:, 1:, :] - diff[:, :-1, :]).abs() * m[:, 1:, :] * m[:, :-1, :]
        total = total + ref_reduce(gx.sum((1, 2)) + gy.sum((1, 2)), m.sum((1, 2)), reduction)
    return total


def ref_ssimse(pred, target, mask, alpha, reduction):
    "MiDaS ScaleAndShiftInvariantLoss (gist dvdhfnr/732c26b6...): LS-aligned MSE over 2M + alpha * gradient loss."
    s, t = ref_scale_shift(pred, target, mask)
    aligned = s[:, None, None] * pred + t[:, None, None]
    m = mask.to(pred.dtype)
    data = ref_reduce((m * (aligned - target) ** 2).sum((1, 2)), 2 * m.sum((1, 2)), reduction)
    return data + alpha * ref_gradient_loss(aligned, target, mask, reduction)


def ref_median_mad(x, mask):
    out = torch.zeros_like(x)
    for b in range(x.shape[0]):
        v = x[b][mask[b]]
        if v.numel() == 0:
            continue
        med = v.median()  # lower median, over valid pixels only
        mad = (v - med).abs().mean().clamp_min(1e-4)
        out[b] = torch.where(mask[b], (x[b] - med) / mad, 0.0)
    return out


def ref_ssimae(pred, target, mask, alpha, trim=0.0):
    "MiDaS v2 ssimae / ssitrim (per-image trimming, sum of kept |r| over 2 x all valid pixels) + gradient loss."
    p, g = ref_median_mad(pred, mask), ref_median_mad(target, mask)
    total, count = 0.0, 0
    for b in range(pred.shape[0]):
        r = (p[b] - g[b])[mask[b]].abs().sort().values
        keep = max(int(math.floor(r.numel() * (1 - trim) + 1e-9)), 1 if r.numel() else 0)
        total, count = total + r[:keep].sum(), count + r.numel()
    data = total / (2 * count) if count else torch.zeros(())
    return data + alpha * ref_gradient_loss(p, g, mask, "batch")


def ref_dav2_silog(pred, target, valid, lambd=0.5):
    "Depth-Anything-V2 metric_depth SiLogLoss."
    d = torch.log(target[valid]) - torch.log(pred[valid])
    return torch.sqrt((d ** 2).mean() - lambd * d.mean() ** 2)


def ref_prv2_silog(pred, target, min_depth, max_depth, beta=0.15):
    "PatchRefinerV2 SILogLoss (4-D inputs)."
    if pred.shape[-2:] != target.shape[-2:]:
        pred = F.interpolate(pred, target.shape[-2:], mode="bilinear", align_corners=True)
    mask = (target > min_depth) & (target < max_depth)
    if mask.sum() <= 1:
        return torch.zeros(())
    g = torch.log(pred[mask] + 1e-7) - torch.log(target[mask] + 1e-7)
    return 10 * torch.sqrt(torch.var(g) + beta * g.mean() ** 2)


def ref_prv2_pseudo(pred, pseudo, mask, ssi=True, grad_matching=True, inverse=False):
    "PatchRefinerV2 ScaleAndShiftInvariantLoss(ssi, grad_matching, inverse), batch >= 2, (B, H, W) inputs."
    m = mask.to(pred.dtype)
    n = m.sum()
    if inverse:
        total = 0.0
        for dp, dt, dm in [(pred[:, :-2] - pred[:, 2:], pseudo[:, :-2] - pseudo[:, 2:], m[:, :-2] * m[:, 2:]),
                           (pred[:, :, :-2] - pred[:, :, 2:], pseudo[:, :, :-2] - pseudo[:, :, 2:],
                            m[:, :, :-2] * m[:, :, 2:])]:
            s, t = ref_scale_shift(dp, dt, dm.bool())
            total = total + ((s[:, None, None] * dp + t[:, None, None] - dt).abs() * dm).sum()
        return total / n
    if ssi:
        s, t = ref_scale_shift(pred, pseudo, mask)
        pred = s[:, None, None] * pred + t[:, None, None]
    if grad_matching:
        diff = (pred - pseudo) * m
        v = (diff[:, :-2] - diff[:, 2:]).abs() * m[:, :-2] * m[:, 2:]
        h = (diff[:, :, :-2] - diff[:, :, 2:]).abs() * m[:, :, :-2] * m[:, :, 2:]
        return (v.sum() + h.sum()) / n
    return (pred[mask] - pseudo[mask]).abs().mean()


def ref_ranking_pairs(pa, pb, ta, tb, sigma=0.03, alpha=1.0):
    "EdgeguidedRankingLoss's pair terms (labels by index assignment, masks as doubles, means over all pairs)."
    ratio = (ta + 1e-6) / (tb + 1e-6)
    eq = (ratio < 1 + sigma) & (ratio > 1 / (1 + sigma))
    labels = torch.zeros_like(ratio)
    labels[ratio >= 1 + sigma] = 1
    labels[ratio <= 1 / (1 + sigma)] = -1
    equal = (pa - pb) ** 2 * eq.double()
    unequal = torch.log(1 + torch.exp((-pa + pb) * labels)) * (~eq).double()
    return alpha * equal.mean() + unequal.mean()


# --------------------------------------------------------------------------------------------------------------
# Parity with the references
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_least_squares_matches_normal_equations(seed):
    pred, target = _rand(3, 9, 11, seed=seed), _rand(3, 9, 11, seed=seed + 7, low=-2, high=3)
    mask = _random_mask(pred.shape, seed)
    mask[1] = False
    mask[2, 0, 0], mask[2, 1:] = True, False
    mask[2, 0, 1:] = False  # image 2: one valid pixel → singular
    s, t = L.least_squares_scale_shift(pred, target, mask)
    rs, rt = ref_scale_shift(pred, target, mask)
    torch.testing.assert_close(s, rs, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(t, rt, rtol=1e-10, atol=1e-12)
    assert s[1] == t[1] == s[2] == t[2] == 0


@pytest.mark.parametrize("reduction", ["batch", "image"])
@pytest.mark.parametrize("seed", range(3))
def test_ssimse_matches_midas_gist(reduction, seed):
    pred, target = _rand(3, 17, 13, seed=seed), _rand(3, 17, 13, seed=seed + 5)
    mask = _random_mask(pred.shape, seed)
    mask[0] = False  # an empty image in the batch
    for alpha in (0.5, 2.0):
        ours = L.ScaleShiftInvariantLoss("least_squares", "mse", gm_weight=alpha, reduction=reduction)(pred, target, mask)
        torch.testing.assert_close(ours, ref_ssimse(pred, target, mask, alpha, reduction), rtol=1e-10, atol=1e-12)


def test_gradients_match_references():
    "The alignment is not detached (as in the gists): gradients equal those of the reference formulas."
    pred, target = _rand(2, 11, 12, seed=8, low=0.5, high=3), _rand(2, 11, 12, seed=9, low=0.5, high=3)
    mask = _random_mask(pred.shape, 4)
    cases = [
        (lambda p: L.ScaleShiftInvariantLoss.midas("ssimse")(p, target, mask),
         lambda p: ref_ssimse(p, target, mask, 0.5, "batch")),
        (lambda p: L.ScaleShiftInvariantLoss.midas("ssimae")(p, target, mask),
         lambda p: ref_ssimae(p, target, mask, 0.5)),
        (lambda p: L.silog_loss(p, target, mask, max_depth=None), lambda p: ref_dav2_silog(p, target, mask)),
        (lambda p: L.patchrefiner_silog_loss(p, target, max_depth=2.5),
         lambda p: ref_prv2_silog(p[:, None], target[:, None], 1e-3, 2.5)),
        (lambda p: L.patchrefiner_pseudo_label_loss(p, target, mask, kind="ssigm"),
         lambda p: ref_prv2_pseudo(p, target, mask)),
        (lambda p: L.patchrefiner_pseudo_label_loss(p, target, mask, kind="gmssi"),
         lambda p: ref_prv2_pseudo(p, target, mask, inverse=True)),
    ]
    for ours, ref in cases:
        p1, p2 = pred.clone().requires_grad_(), pred.clone().requires_grad_()
        ours(p1).backward()
        ref(p2).backward()
        torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_ssimae_and_ssitrim_match_reference(seed):
    pred, target = _rand(2, 16, 15, seed=seed), _rand(2, 16, 15, seed=seed + 3)
    mask = _random_mask(pred.shape, seed)
    ours = L.ScaleShiftInvariantLoss.midas("ssimae")(pred, target, mask)
    torch.testing.assert_close(ours, ref_ssimae(pred, target, mask, 0.5), rtol=1e-10, atol=1e-12)
    ours = L.ScaleShiftInvariantLoss.midas("ssitrim")(pred, target, mask)
    torch.testing.assert_close(ours, ref_ssimae(pred, target, mask, 0.5, trim=0.2), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 8, 9), (3, 7, 10), (1, 20, 20)])
def test_top10_ignore_matches_quantile_rule(shape):
    "DAv2#108: per-pixel loss map, v = 90th percentile, mean of the pixels with loss < v (per image)."
    pred, target = _rand(*shape, seed=1), _rand(*shape, seed=2)
    terms = L.scale_shift_invariant_loss(pred, target, gm_weight=0, ignore_largest=0.1)
    s, t = ref_scale_shift(pred, target, torch.ones_like(pred, dtype=torch.bool))
    loss_map = (s[:, None, None] * pred + t[:, None, None] - target) ** 2
    kept_sum, kept_n = 0.0, 0
    for b in range(shape[0]):
        v = torch.quantile(loss_map[b].flatten(), 0.9)
        keep = loss_map[b] < v
        assert torch.equal(keep, terms["kept"][b])
        kept_sum, kept_n = kept_sum + loss_map[b][keep].sum(), kept_n + keep.sum()
    torch.testing.assert_close(terms["ssi"], kept_sum / (2 * kept_n), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_dav2_silog_matches_official_formula(seed):
    pred, target = _rand(2, 12, 14, seed=seed, low=0.5, high=30), _rand(2, 12, 14, seed=seed + 9, low=0.0, high=25)
    valid = _random_mask(pred.shape, seed)
    official_mask = valid & (target >= 1e-3) & (target <= 20)
    ours = L.SiLogLoss(min_depth=1e-3, max_depth=20)(pred, target, valid)
    torch.testing.assert_close(ours, ref_dav2_silog(pred, target, official_mask), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("pred_size", [(12, 16), (6, 8), (9, 5)])
def test_prv2_silog_matches_official_formula(pred_size):
    target = _rand(2, 1, 12, 16, seed=3, low=-5, high=100)  # some below min, some above max
    pred = _rand(2, 1, *pred_size, seed=4, low=0.1, high=90)
    ours = L.PatchRefinerSiLogLoss(min_depth=1e-3, max_depth=80)(pred, target)
    torch.testing.assert_close(ours, ref_prv2_silog(pred, target, 1e-3, 80), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind,flags", [("ssigm", dict(ssi=True, grad_matching=True)),
                                        ("ssi", dict(ssi=True, grad_matching=False)),
                                        ("gm", dict(ssi=False, grad_matching=True)),
                                        ("gmssi", dict(inverse=True))])
@pytest.mark.parametrize("masked", [False, True])
def test_prv2_pseudo_label_losses_match_official(kind, flags, masked):
    pred, pseudo = _rand(3, 13, 17, seed=5, low=1, high=50), _rand(3, 13, 17, seed=6, low=1, high=50)
    mask = _random_mask(pred.shape, 3) if masked else torch.ones_like(pred, dtype=torch.bool)
    ours = L.PatchRefinerPseudoLabelLoss(kind)(pred, pseudo, mask=mask)
    torch.testing.assert_close(ours, ref_prv2_pseudo(pred, pseudo, mask, **flags), rtol=1e-10, atol=1e-12)


def test_prv2_pseudo_label_resizes_prediction():
    pred, pseudo = _rand(2, 1, 8, 10, seed=1, low=1, high=5), _rand(2, 1, 16, 20, seed=2, low=1, high=5)
    up = F.interpolate(pred, (16, 20), mode="bilinear", align_corners=True)
    torch.testing.assert_close(L.patchrefiner_pseudo_label_loss(pred, pseudo),
                               ref_prv2_pseudo(up[:, 0], pseudo[:, 0], torch.ones(2, 16, 20, dtype=torch.bool)))


@pytest.mark.parametrize("seed", range(3))
def test_ranking_pair_loss_matches_official(seed):
    g = torch.Generator().manual_seed(seed)
    ta = torch.rand(500, generator=g, dtype=torch.float64) * 10 + 1
    tb = torch.where(torch.rand(500, generator=g) < 0.3, ta * (1 + 0.02 * torch.rand(500, generator=g)),
                     torch.rand(500, generator=g, dtype=torch.float64) * 10 + 1)  # ~30% "equal" pairs
    pa, pb = torch.randn(500, generator=g, dtype=torch.float64), torch.randn(500, generator=g, dtype=torch.float64)
    for alpha in (1.0, 0.5):
        torch.testing.assert_close(L.ranking_pair_loss(pa, pb, ta, tb, 0.03, alpha),
                                   ref_ranking_pairs(pa, pb, ta, tb, 0.03, alpha), rtol=1e-12, atol=1e-12)


def test_feature_alignment_matches_loop():
    s, t = torch.randn(2, 7, 5, dtype=torch.float64), torch.randn(2, 7, 5, dtype=torch.float64)
    t[0, :3] = s[0, :3] * 2  # three tokens already aligned: excluded
    per, kept = [], 0
    for b in range(2):
        for i in range(7):
            c = float(s[b, i] @ t[b, i] / (s[b, i].norm() * t[b, i].norm()))
            per.append(0.0 if c > 0.85 else 1 - c)
            kept += c <= 0.85
    assert kept == 11
    torch.testing.assert_close(L.feature_alignment_loss(s, t), torch.tensor(sum(per) / 14, dtype=torch.float64))
    torch.testing.assert_close(L.feature_alignment_loss(s, t, reduction="kept"),
                               torch.tensor(sum(per) / kept, dtype=torch.float64))


# --------------------------------------------------------------------------------------------------------------
# Invariances and closed forms
# --------------------------------------------------------------------------------------------------------------
def _smooth_pair(seed, shape=(2, 24, 20)):
    pred, target = _rand(*shape, seed=seed, dtype=torch.float32), _rand(*shape, seed=seed + 1, dtype=torch.float32)
    return F.avg_pool2d(pred[:, None], 3, 1, 1)[:, 0] + 0.5, target + 0.5


@given(scale=st.floats(0.2, 5.0), shift=st.floats(-2.0, 2.0), seed=st.integers(0, 50), double=st.booleans())
@SETTINGS
def test_ssi_losses_invariant_to_prediction_affine_map(scale, shift, seed, double):
    """≤1e-5 relative in float32 for s in [0.2, 5], |t| ≤ 2 (wider ranges are limited by float32 itself: s·d + t
    rounds away the information); float64 inputs are invariant to 1e-10 over s in [1e-2, 1e3], |t| ≤ 1e3 (below,
    the median/MAD floor of 1e-4 on the prediction's MAD, ≈0.05 here, takes over)."""
    pred, target = _smooth_pair(seed)
    rtol = 1e-5
    if double:
        pred, target, rtol = pred.double(), target.double(), 1e-10
        scale, shift = 10 ** (5 * (scale - 0.2) / 4.8 - 2), shift * 500
    mask = _random_mask(pred.shape, seed)
    for loss in (L.ScaleShiftInvariantLoss.depth_anything_v2(), L.ScaleShiftInvariantLoss.depth_anything_v2(True),
                 L.ScaleShiftInvariantLoss.depth_anything_v1(True), L.ScaleShiftInvariantLoss.midas("ssitrim"),
                 L.ScaleShiftInvariantLoss("median_mad", "mse", reduction="image")):
        a, b = loss(pred, target, mask), loss(scale * pred + shift, target, mask)
        torch.testing.assert_close(b, a, rtol=rtol, atol=0)
    for kind in ("ssigm", "ssi", "gmssi"):
        a = L.patchrefiner_pseudo_label_loss(pred, target, mask, kind=kind)
        b = L.patchrefiner_pseudo_label_loss(scale * pred + shift, target, mask, kind=kind)
        torch.testing.assert_close(b, a, rtol=rtol, atol=0)


@given(scale=st.floats(0.2, 5.0), shift=st.floats(-2.0, 2.0), seed=st.integers(0, 50))
@SETTINGS
def test_gradient_terms_vanish_for_affine_map_of_target(scale, shift, seed):
    _, target = _smooth_pair(seed)
    mask = _random_mask(target.shape, seed)
    pred = scale * target + shift
    for alignment in ("least_squares", "median_mad"):
        terms = L.scale_shift_invariant_loss(pred, target, mask, alignment=alignment)
        assert terms["gm"] < 1e-5 and terms["ssi"] < 1e-9
    assert L.patchrefiner_pseudo_label_loss(pred, target, mask, kind="ssigm") < 1e-5
    torch.testing.assert_close(L.gradient_matching_loss(target + shift, mask), L.gradient_matching_loss(target, mask),
                               rtol=1e-5, atol=1e-6)


def test_closed_forms():
    # SSI (LS, MSE) by hand: d = (0, 1, 2), d* = (0, 0, 3): s = 1.5, t = −0.5, residual (−0.5, 1, −0.5)
    d, g = torch.tensor([[[0.0, 1.0, 2.0]]]), torch.tensor([[[0.0, 0.0, 3.0]]])
    terms = L.scale_shift_invariant_loss(d, g, gm_weight=0.0)
    torch.testing.assert_close(terms["ssi"], torch.tensor(1.5 / 6))  # Σr² / (2M) = 1.5 / 6
    torch.testing.assert_close(terms["residual"], torch.tensor([[[-0.5, 1.0, -0.5]]]))
    # GM by hand on that residual: level 0: (1.5 + 1.5) / 3; level 1 (cols 0, 2): |−0.5 − −0.5| = 0 → 0 / 2
    torch.testing.assert_close(L.gradient_matching_loss(terms["residual"]), torch.tensor(1.0))
    torch.testing.assert_close(L.scale_shift_invariant_loss(d, g)["loss"], torch.tensor(0.25 + 2.0))
    # median/MAD + MAE: d̂ = (−1.5, 0, 1.5) (median 1, MAD 2/3), d̂* = (0, 0, 3) (median 0, MAD 1)
    terms = L.scale_shift_invariant_loss(d, g, alignment="median_mad", error="mae", gm_weight=0.0)
    torch.testing.assert_close(terms["ssi"], torch.tensor(3.0 / 6))
    # PRV2 SiLog by hand: one pixel off by a factor e → g = (1, 0, 0)
    p, t = torch.tensor([[[math.e, 1.0, 1.0]]]), torch.ones(1, 1, 3)
    g = torch.tensor([1.0, 0.0, 0.0])
    torch.testing.assert_close(L.patchrefiner_silog_loss(p, t), 10 * torch.sqrt(g.var() + 0.15 * g.mean() ** 2),
                               rtol=1e-5, atol=1e-6)
    # DAv2 SiLog: all pixels off by the same factor k → sqrt((1 − λ)) · |log k|
    torch.testing.assert_close(L.silog_loss(2 * t, t, lambd=0.5), torch.tensor(math.sqrt(0.5) * math.log(2)))


def test_sobel_matches_kornia_definition_on_ramps():
    y, x = torch.meshgrid(torch.arange(6.0), torch.arange(7.0), indexing="ij")
    gx, gy = L._sobel((3 * x + 2 * y)[None])
    assert torch.allclose(gx[0, 1:-1, 1:-1], torch.full((4, 5), 3.0))  # normalised: slope exactly
    assert torch.allclose(gy[0, 1:-1, 1:-1], torch.full((4, 5), 2.0))
    assert torch.allclose(gx[0, :, 0], torch.full((6,), 1.5))  # replicate padding halves the border slope


# --------------------------------------------------------------------------------------------------------------
# Ranking-loss sampling
# --------------------------------------------------------------------------------------------------------------
def _step_depth(h=40, w=48, col=24):
    depth = torch.full((1, h, w), 10.0)
    depth[:, :, col:] = 3.0
    return depth


def test_ranking_sampling_geometry():
    depth = _step_depth()
    _, pairs = L.edge_guided_ranking_loss(depth, depth, point_pairs=500, generator=torch.Generator().manual_seed(1),
                                          return_pairs=True)
    s = pairs[0]
    w = depth.shape[-1]
    assert s["edges"][s["anchors"] // w, s["anchors"] % w].all()  # anchors lie on Canny edges
    n = s["anchors"].numel()
    assert 0 < n <= 500 and s["edge_a"].numel() == 3 * n and s["random_a"].numel() == 3 * n
    points = torch.stack([s["edge_a"][:n], s["edge_a"][n:2 * n], s["edge_a"][2 * n:], s["edge_b"][2 * n:]])
    dist = torch.hypot((points // w - s["anchors"] // w).double(), (points % w - s["anchors"] % w).double())
    assert (dist >= 2 - 0.75).all() and (dist <= 30 + 0.75).all()  # 2..30 px, up to rounding
    assert (points >= 0).all() and (points < depth.numel()).all()


def test_ranking_gradient_angle_samples_across_the_edge():
    depth = _step_depth()
    _, pairs = L.edge_guided_ranking_loss(depth, depth, point_pairs=300, direction="gradient_angle",
                                          generator=torch.Generator().manual_seed(2), return_pairs=True)
    s, w = pairs[0], depth.shape[-1]
    interior = (s["anchors"] // w > 3) & (s["anchors"] // w < depth.shape[1] - 4)  # away from the top/bottom border
    n = s["anchors"].numel()
    rows = torch.stack([s["edge_a"][:n], s["edge_a"][n:2 * n], s["edge_a"][2 * n:], s["edge_b"][2 * n:]]) // w
    assert interior.any() and (rows[:, interior] == (s["anchors"] // w)[interior]).all()  # horizontal pairs


def test_ranking_seeded_orders_and_degenerate_inputs():
    depth = 1.0 + _rand(2, 32, 32, seed=3, dtype=torch.float32) * 0.2
    depth[:, 8:20, 10:22] = 5.0
    loss = lambda pred, **kw: L.edge_guided_ranking_loss(pred, depth, point_pairs=400,
                                                          generator=torch.Generator().manual_seed(0), **kw)
    assert loss(depth) == loss(depth)
    assert loss(depth) < loss(1 / depth)
    assert loss(depth, gt=torch.zeros_like(depth)) == 0  # no valid GT pixel: nothing sampled
    assert L.edge_guided_ranking_loss(depth, torch.ones_like(depth)) == 0  # no edges
    pred = depth.clone().requires_grad_()
    loss(pred).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    ranking = L.EdgeGuidedRankingLoss(point_pairs=100, generator=torch.Generator().manual_seed(0))
    dsd = L.DetailScaleDisentanglingLoss(ranking, weight=L.DSD_WEIGHTS["kitti"])
    assert torch.isfinite(dsd(depth * 1.1, depth, depth))


# --------------------------------------------------------------------------------------------------------------
# Properties over shapes, masks and dtypes: finite values and gradients everywhere
# --------------------------------------------------------------------------------------------------------------
@st.composite
def depth_batches(draw):
    b, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 12)), draw(st.integers(1, 12))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 10_000))
    kind = draw(st.sampled_from(["random", "empty", "one", "full"]))
    mask = _random_mask((b, h, w), seed, p=draw(st.floats(0.1, 0.9)))
    if kind == "empty":
        mask[:] = False
    elif kind == "one":
        mask[:] = False
        mask[0, draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))] = True
    elif kind == "full":
        mask[:] = True
    pred = _rand(b, h, w, seed=seed, low=0.05, high=5.0)
    target = _rand(b, h, w, seed=seed + 1, low=0.05, high=5.0)
    special = draw(st.sampled_from(["none", "constant_target", "zero_pred", "nan_outside"]))
    if special == "constant_target":
        target[:] = 2.0
    elif special == "zero_pred":
        pred[:] = 0.0
    elif special == "nan_outside":
        target = torch.where(mask, target, torch.tensor(float("nan"), dtype=target.dtype))
    return pred.to(dtype), target.to(dtype), mask


def _all_losses(target, mask):
    "name → function of the prediction, for every loss of the module."
    gt, pseudo = torch.where(mask, target, 0), torch.where(mask, target, 1)
    dav2, dav1 = L.ScaleShiftInvariantLoss.depth_anything_v2(True), L.ScaleShiftInvariantLoss.depth_anything_v1(True)
    trim, image = L.ScaleShiftInvariantLoss.midas("ssitrim"), L.ScaleShiftInvariantLoss(reduction="image", ignore_largest=0.1)

    def feature(p):
        tokens = p.flatten(1)[..., None] * torch.arange(1, 5, dtype=p.dtype)
        return L.feature_alignment_loss(tokens, tokens.flip(-1), mask.flatten(1))

    losses = dict(dav2=lambda p: dav2(p, target, mask), dav1=lambda p: dav1(p, target, mask),
                  ssitrim=lambda p: trim(p, target, mask), image=lambda p: image(p, target, mask),
                  silog=lambda p: L.SiLogLoss()(p, target, mask),
                  prv2_silog=lambda p: L.PatchRefinerSiLogLoss()(p, gt, mask),
                  dsd=lambda p: L.DetailScaleDisentanglingLoss()(p, gt, pseudo), feature=feature)
    for kind in ("ssigm", "ssi", "gm", "gmssi"):
        losses[kind] = lambda p, kind=kind: L.patchrefiner_pseudo_label_loss(p, target, mask, kind=kind)
    return losses


@given(depth_batches())
@SETTINGS
def test_losses_finite_with_finite_gradients(batch):
    pred, target, mask = batch
    for name, loss_fn in _all_losses(target, mask).items():
        p = pred.clone().requires_grad_()
        loss = loss_fn(p)
        assert loss.ndim == 0 and torch.isfinite(loss), (name, loss)
        assert loss.dtype == (torch.float64 if pred.dtype == torch.float64 else torch.float32), name
        loss.backward()
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@given(depth_batches())
@SETTINGS
def test_masked_out_pixels_do_not_matter(batch):
    pred, target, mask = batch
    noisy_pred = torch.where(mask, pred, torch.full_like(pred, 123.0))
    noisy_target = torch.where(mask, target, torch.full_like(target, -7.0))
    for kind in ("ssigm", "ssi", "gm", "gmssi"):
        torch.testing.assert_close(L.patchrefiner_pseudo_label_loss(noisy_pred, noisy_target, mask, kind=kind),
                                   L.patchrefiner_pseudo_label_loss(pred, target, mask, kind=kind))
    for loss in (L.ScaleShiftInvariantLoss.depth_anything_v2(True), L.ScaleShiftInvariantLoss.midas("ssimae"),
                 L.SiLogLoss(max_depth=None)):
        torch.testing.assert_close(loss(noisy_pred, noisy_target, mask), loss(pred, target, mask))


# --------------------------------------------------------------------------------------------------------------
# torch.compile (graph capture only: no graph breaks in the dense losses), errors, devices
# --------------------------------------------------------------------------------------------------------------
def test_dense_losses_compile_without_graph_breaks():
    pred, target = _smooth_pair(0)
    mask = _random_mask(pred.shape, 0)
    feats = torch.randn(2, 10, 6)
    cases = [
        (L.ScaleShiftInvariantLoss.depth_anything_v2(pseudo_labels=True), (pred, target, mask)),
        (L.ScaleShiftInvariantLoss.depth_anything_v1(), (pred, target, mask)),
        (L.SiLogLoss(), (pred, target, mask)),
        (L.PatchRefinerSiLogLoss(), (pred[:, :12], target, mask)),
        (L.PatchRefinerPseudoLabelLoss("ssigm"), (pred, target)),
        (L.PatchRefinerPseudoLabelLoss("gmssi"), (pred, target)),
        (L.FeatureAlignmentLoss(6, 8), (feats, torch.randn(2, 10, 8))),
    ]
    torch._dynamo.reset()
    for module, args in cases:
        compiled = torch.compile(module, backend="eager", fullgraph=True)
        torch.testing.assert_close(compiled(*args), module(*args))


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="prediction"):
        L.ScaleShiftInvariantLoss()(torch.zeros(2, 3, 4, 5), torch.zeros(2, 4, 5))
    with pytest.raises(ValueError, match="mask"):
        L.ScaleShiftInvariantLoss()(torch.zeros(2, 4, 5), torch.zeros(2, 4, 5), torch.ones(2, 4, 6))
    with pytest.raises(ValueError, match="alignment"):
        L.ScaleShiftInvariantLoss(alignment="median")
    with pytest.raises(ValueError, match="kind"):
        L.PatchRefinerPseudoLabelLoss("l2")
    with pytest.raises(ValueError, match="student_dim|projection"):
        L.feature_alignment_loss(torch.zeros(1, 3, 4), torch.zeros(1, 3, 5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    pred, target = _smooth_pair(0)
    mask = _random_mask(pred.shape, 0)
    for loss in (L.ScaleShiftInvariantLoss.depth_anything_v2(True), L.SiLogLoss(), L.PatchRefinerSiLogLoss(),
                 lambda p, t, m: L.patchrefiner_pseudo_label_loss(p, t, m, kind="ssigm")):
        torch.testing.assert_close(loss(pred.cuda(), target.cuda(), mask.cuda()).cpu(), loss(pred, target, mask),
                                   rtol=1e-4, atol=1e-6)
    depth = target[:1] * 10
    ranking = lambda x: L.edge_guided_ranking_loss(x, x, point_pairs=100, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ranking(depth.cuda()).cpu(), ranking(depth), rtol=1e-4, atol=1e-6)
