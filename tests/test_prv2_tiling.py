"""Consistency-aware tiled inference (prv2.tiling): coverage, blend weights, box bookkeeping, blending maths."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from depth_anything_nb.models.prv2_tiling import (
    BlendCanvas,
    TileConfig,
    blend_mask,
    grid_tiles,
    parse_mode,
    random_tiles,
    regular_tiles,
    tiled_inference,
)

SPLITS = [(1, 1), (2, 3), (4, 4)]
MODES = ["m1", "m2", "r9"]


def constant_refiner(value):
    return lambda patches, coarse, boxes: torch.full((len(patches), 1, *patches.shape[-2:]), float(value))


def recording_refiner(log):
    def refine(patches, coarse, boxes):
        log.append((patches.clone(), boxes.clone()))
        return patches.mean(1, keepdim=True)

    return refine


# ---------------------------------------------------------------- coverage
@pytest.mark.parametrize("split", SPLITS)
def test_m1_grid_tiles_raw_image_and_canvas_exactly_once(split):
    cfg = TileConfig((12 * split[0], 20 * split[1]), (6, 10), split)
    (tiles,) = regular_tiles(cfg, "m1")
    for boxes, shape in ((tiles.raw, cfg.image_raw_shape), (tiles.canvas, cfg.canvas_shape)):
        count = torch.zeros(shape)
        for x1, y1, x2, y2 in boxes.tolist():
            count[y1:y2, x1:x2] += 1
        assert torch.equal(count, torch.ones(shape))


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("mode", MODES)
def test_every_pixel_covered_in_every_mode(split, mode):
    image = torch.rand(3, 8 * split[0] + 3, 12 * split[1] - 1)  # not a valid raw shape: auto-rounded
    out = tiled_inference(image, lambda p, c, b: p[:, :1].clamp(0, 1) + 1, None, process_shape=(8, 12), patch_split_num=split, cai_mode=mode)
    assert out.shape == image.shape[-2:] and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.min() >= 1


def test_m2_patch_counts_and_shift_offsets():
    cfg = TileConfig((2160, 3840), (448, 448), (4, 4))
    grids = regular_tiles(cfg, "m2")
    assert [len(g) for g in grids] == [16, 12, 12, 9]
    for g, (sy, sx) in zip(grids[1:], [(0, 1), (1, 0), (1, 1)]):
        assert g.raw[0, :2].tolist() == [sx * 480, sy * 270]
        assert g.canvas[0, :2].tolist() == [sx * 224, sy * 224]
        assert ((g.raw[:, 2:] - g.raw[:, :2]) == torch.tensor([960, 540])).all()
        assert ((g.canvas[:, 2:] - g.canvas[:, :2]) == 448).all()


# ---------------------------------------------------------------- blend weights
def _reference_generatemask(h, w, border=0.15):
    "Independent numpy transcription: separable Gaussian with reflect-101 padding (OpenCV's default border)."
    mask = np.zeros((h, w), np.float64)
    bh, bw = int(border * h), int(border * w)
    mask[bh : h - bh, bw : w - bw] = 1
    sigma = int(h / 16)
    if sigma > 0:
        r = int(math.ceil(2 * sigma))
        x = np.arange(-r, r + 1)
        k = np.exp(-(x**2) / (2 * sigma**2))
        k /= k.sum()
        pad = np.pad(mask, r, mode="reflect")  # numpy "reflect" == OpenCV BORDER_REFLECT_101
        tmp = np.stack([np.convolve(row, k, mode="valid") for row in pad])
        mask = np.stack([np.convolve(col, k, mode="valid") for col in tmp.T]).T
    lo, hi = mask.min(), mask.max()
    return (mask - lo) / (hi - lo)


@pytest.mark.parametrize("shape", [(448, 448), (384, 512), (540, 960), (48, 80), (20, 12)])
def test_blend_mask_properties_and_reference(shape):
    m = blend_mask(shape)
    assert m.shape == shape and m.dtype == np.float32
    assert m.min() == 0 and m.max() == 1
    assert np.allclose(m, m[::-1], atol=1e-6) and np.allclose(m, m[:, ::-1], atol=1e-6)
    h, w = shape
    assert m[h // 2, w // 2] == 1 and m[0, 0] == 0
    row, col = m[h // 2, : w // 2 + 1], m[: h // 2 + 1, w // 2]  # non-decreasing from the border to the centre
    assert (np.diff(row) >= -1e-6).all() and (np.diff(col) >= -1e-6).all()
    assert np.allclose(m, _reference_generatemask(h, w), atol=1e-5)


def test_blend_mask_degenerate_sizes():
    assert np.array_equal(blend_mask((4, 4)), np.ones((4, 4), np.float32))  # no inset possible: ones, not NaN
    m = blend_mask((10, 10))  # sigma 0: an unblurred box
    assert set(np.unique(m)) == {0.0, 1.0}


# ---------------------------------------------------------------- box bookkeeping
@pytest.mark.parametrize("mode", ["m2", "r7"])
def test_boxes_map_back_to_raw_coordinates_exactly(mode):
    cfg = TileConfig((216, 384), (48, 64), (4, 4))
    log = []
    image = torch.rand(1, 3, *cfg.image_raw_shape)
    tiled_inference(image, recording_refiner(log), None, process_shape=cfg.process_shape, patch_split_num=(4, 4),
                    cai_mode=mode, process_num=5)
    boxes = torch.cat([b for _, b in log])
    raw = cfg.to_raw(boxes.double())
    assert torch.allclose(raw, raw.round(), atol=1e-3)
    raw = raw.round().long()
    expected = torch.cat([g.raw for g in regular_tiles(cfg, "m2")])
    assert torch.equal(raw[: len(expected)], expected)
    assert ((raw[:, 2:] - raw[:, :2]) == torch.tensor(cfg.patch_raw_shape[::-1])).all()
    patches = torch.cat([p for p, _ in log])
    for (x1, y1, x2, y2), patch in zip(raw.tolist(), patches):  # each patch is the resized crop of its box
        crop = F.interpolate(image[:, :, y1:y2, x1:x2], size=cfg.process_shape, mode="bilinear", align_corners=True)
        assert torch.allclose(patch, crop[0])


def test_box_round_trip_is_exact_in_float64():
    cfg = TileConfig((2160, 3840), (448, 448), (4, 4))
    raw = torch.cat([g.raw for g in regular_tiles(cfg, "m2")] + [random_tiles(cfg, 50, torch.Generator().manual_seed(1)).raw])
    back = cfg.to_raw(cfg.to_coarse(raw))
    assert torch.equal(back.round().long(), raw) and (back - raw).abs().max() < 1e-9
    coarse = cfg.to_coarse(grid_tiles(cfg).raw)
    assert coarse[:, [0, 2]].min() == 0 and coarse[:, [0, 2]].max() == 448  # the grid spans the coarse image


# ---------------------------------------------------------------- blending maths
def test_m1_identity_refiner_returns_the_target_exactly():
    target = torch.rand(32, 48) * 10  # raw shape == canvas shape: patches are not resampled
    cfg = TileConfig((32, 48), (8, 12), (4, 4))

    def crop_refiner(patches, coarse, boxes):
        raw = cfg.to_raw(boxes.double()).round().long()
        return torch.stack([target[y1:y2, x1:x2][None] for x1, y1, x2, y2 in raw.tolist()])

    out = tiled_inference(torch.rand(3, 32, 48), crop_refiner, None, process_shape=(8, 12), cai_mode="m1")
    assert torch.equal(out, target)


def test_m1_with_zero_residual_refiner_equals_upsampled_coarse_depth():
    coarse = torch.rand(1, 1, 10, 14) * 20

    def roi_refiner(patches, coarse_depth, boxes):
        rois = torch.cat([boxes.new_zeros(len(boxes), 1), boxes], 1)
        return roi_align(coarse_depth, rois, patches.shape[-2:], spatial_scale=1.0, aligned=True)

    out = tiled_inference(torch.rand(3, 40, 42), roi_refiner, coarse, process_shape=(10, 14), patch_split_num=(4, 3))
    expected = F.interpolate(coarse, size=(40, 42), mode="bilinear", align_corners=False)[0, 0]
    assert torch.allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("mode", ["m2", "r16"])
@pytest.mark.parametrize("split", [(2, 2), (4, 4)])
def test_constant_refiner_gives_the_constant_everywhere(mode, split):
    out = tiled_inference(torch.rand(3, 64, 96), constant_refiner(3.7), None, process_shape=(16, 24),
                          patch_split_num=split, cai_mode=mode)
    assert torch.allclose(out, torch.full_like(out, 3.7), rtol=1e-6)


def _official_running_average(cfg, preds_per_grid, weight):
    "Literal transcription of the official RunningAverageMap updates (m1 paste, then per-patch updates)."
    avg = torch.zeros(cfg.canvas_shape)
    count = torch.zeros(cfg.canvas_shape)
    for g, (tiles, preds) in enumerate(zip(regular_tiles(cfg, "m2"), preds_per_grid)):
        for (x1, y1, x2, y2), p in zip(tiles.canvas.tolist(), preds):
            if g == 0:
                avg[y1:y2, x1:x2] = p
                count[y1:y2, x1:x2] = weight
                continue
            ct = torch.zeros(cfg.canvas_shape)
            pr = torch.zeros(cfg.canvas_shape)
            ct[y1:y2, x1:x2] = weight
            pr[y1:y2, x1:x2] = p
            m = ct > 0
            avg[m] = (pr[m] * ct[m] + count[m] * avg[m]) / (count[m] + ct[m])
            count[m] = count[m] + ct[m]
    return avg


def test_blend_canvas_equals_the_official_running_average():
    cfg = TileConfig((96, 128), (24, 32), (4, 4))
    weight = torch.from_numpy(blend_mask(cfg.process_shape))
    gen = torch.Generator().manual_seed(0)
    preds = [torch.rand(len(t), *cfg.process_shape, generator=gen) * 10 for t in regular_tiles(cfg, "m2")]
    canvas = BlendCanvas(cfg.canvas_shape)
    for g, (tiles, ps) in enumerate(zip(regular_tiles(cfg, "m2"), preds)):
        for box, p in zip(tiles.canvas, ps):
            (canvas.paste if g == 0 else canvas.add)(p, box, weight)
    assert torch.allclose(canvas.average(), _official_running_average(cfg, preds, weight), atol=1e-5)


@pytest.mark.parametrize("mode", ["m1", "m2", "r13"])
def test_process_num_does_not_change_the_output(mode):
    image = torch.rand(3, 48, 64)

    def refine(patches, coarse, boxes):  # depends on content and position, elementwise per patch
        return patches.mean(1, keepdim=True) * 5 + boxes[:, :1, None, None] / 10

    outs = [tiled_inference(image, refine, None, process_shape=(12, 16), cai_mode=mode, process_num=n, seed=3)
            for n in (1, 3, 49)]
    assert all(torch.equal(outs[0], o) for o in outs[1:])


def test_official_random_sampling_quirk():
    cfg = TileConfig((216, 384), (48, 48), (4, 4))
    tiles = random_tiles(cfg, 10, torch.Generator().manual_seed(0), official_random=True, process_num=4)
    assert len(tiles) == 8  # N // process_num batches
    xs = tiles.raw[:, 0].view(2, 4)
    assert (xs == xs[:, :1]).all()  # one horizontal start per batch
    assert tiles.raw[:, 2].max() < 384 and tiles.raw[:, 3].max() < 216  # never flush with the bottom/right border
    ours = random_tiles(cfg, 10, torch.Generator().manual_seed(0))
    assert len(ours) == 10 and ours.raw[:, 2].max() <= 384 and ours.raw[:, 0].min() >= 0


# ---------------------------------------------------------------- errors
def test_invalid_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="divisible by 2"):
        TileConfig((100, 150), (16, 16), (4, 4))
    with pytest.raises(ValueError, match="cai mode"):
        parse_mode("m3")
    image = torch.rand(3, 32, 32)
    kw = dict(process_shape=(8, 8), patch_split_num=(2, 2))
    with pytest.raises(ValueError, match="non-finite"):
        tiled_inference(image, constant_refiner(float("nan")), None, **kw)
    with pytest.raises(ValueError, match="shape"):
        tiled_inference(image, lambda p, c, b: p, None, **kw)
    with pytest.raises(ValueError, match="image must be"):
        tiled_inference(torch.rand(2, 3, 32, 32), constant_refiner(1), None, **kw)


def test_explicit_image_raw_shape_and_output_shape():
    log = []
    out = tiled_inference(torch.rand(3, 50, 70), recording_refiner(log), None, process_shape=(8, 8),
                          patch_split_num=(2, 2), image_raw_shape=(32, 48), output_shape=(25, 35))
    assert out.shape == (25, 35)
    raw = TileConfig((32, 48), (8, 8), (2, 2)).to_raw(torch.cat([b for _, b in log]).double()).round().long()
    assert raw[:, 2].max() == 48 and raw[:, 3].max() == 32


# ---------------------------------------------------------------- canvas → output resize (official evaluation)
def _canvas_refiner(canvas, cfg):
    "Returns, for each tile, the values of `canvas` in its canvas box: tiled inference rebuilds `canvas` exactly."
    def refine(patches, coarse, boxes):
        raw = cfg.to_raw(boxes.double()).round().long()
        out = []
        for x1, y1, x2, y2 in raw.tolist():
            i, j = y1 // cfg.patch_raw_shape[0], x1 // cfg.patch_raw_shape[1]
            h, w = cfg.process_shape
            out.append(canvas[i * h:(i + 1) * h, j * w:(j + 1) * w][None])
        return torch.stack(out)
    return refine


def test_canvas_resized_to_output_like_official_compute_metrics():
    # The official evaluation (estimator/utils/metric.py `compute_metrics`) brings the tiled result (the canvas) to the
    # GT size with bilinear interpolation, align_corners=False. Canvas 2·12 × 2·20 = 24×40, image 32×52.
    cfg = TileConfig((32, 52), (12, 20), (2, 2))
    canvas = torch.rand(24, 40, generator=torch.Generator().manual_seed(0)) * 10 + 1
    out = tiled_inference(torch.rand(3, 32, 52), _canvas_refiner(canvas, cfg), None, process_shape=(12, 20),
                          patch_split_num=(2, 2), cai_mode="m1")
    official = F.interpolate(canvas[None, None], size=(32, 52), mode="bilinear", align_corners=False)[0, 0]
    nearest = F.interpolate(canvas[None, None], size=(32, 52), mode="nearest")[0, 0]
    assert (official - nearest).abs().max() > 1  # the two resizes really differ here
    assert torch.allclose(out, official, rtol=1e-6, atol=1e-5)
    out_n = tiled_inference(torch.rand(3, 32, 52), _canvas_refiner(canvas, cfg), None, process_shape=(12, 20),
                            patch_split_num=(2, 2), cai_mode="m1", output_resize="nearest")
    assert torch.equal(out_n, nearest)
    with pytest.raises(ValueError, match="output_resize"):
        tiled_inference(torch.rand(3, 32, 52), constant_refiner(1), None, process_shape=(12, 20),
                        patch_split_num=(2, 2), output_resize="bicubic")


def test_perfect_canvas_prediction_of_a_smooth_scene_scores_better_with_the_official_resize():
    # A smooth scene sampled at pixel centres on the canvas grid: bilinear (align_corners=False) interpolates it back
    # to the image grid to second order; nearest makes a staircase. The official resize is the one the paper's numbers use.
    H, W, ph, pw = 96, 160, 16, 24  # canvas 2·16 × 2·24 = 32×48 (coarser than the image, as at 4K)
    def scene(h, w):  # depth at pixel centres of an h×w grid over the unit square
        y = (torch.arange(h, dtype=torch.float64) + 0.5) / h
        x = (torch.arange(w, dtype=torch.float64) + 0.5) / w
        return (5 + 3 * torch.sin(3 * y)[:, None] + 2 * torch.cos(4 * x)[None]).float()
    cfg = TileConfig((H, W), (ph, pw), (2, 2))
    refine = _canvas_refiner(scene(2 * ph, 2 * pw), cfg)
    gt = scene(H, W)
    rmse = {m: (tiled_inference(torch.rand(3, H, W), refine, None, process_shape=(ph, pw), patch_split_num=(2, 2),
                                output_resize=m) - gt).pow(2).mean().sqrt().item() for m in ("bilinear", "nearest")}
    assert rmse["bilinear"] < 0.25 * rmse["nearest"], rmse
