"""Training transforms: parity with the official DAv2 transforms, alignment of image/maps/intrinsics through resize,
crop and flip, strong augmentations and CutMix, PRV2 patch boxes."""
import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.ops import roi_align

from depth_anything_nb.data.core import make_sample
from depth_anything_nb.models.preprocess import fit_size
from depth_anything_nb.data.transforms import (
    PatchTransform,
    StrongAugment,
    TrainTransform,
    crop_sample,
    cutmix,
    cutmix_box,
    hflip_sample,
    patch_box,
    random_crop,
    resize_sample,
    rotate_sample,
    to_tensors,
)


def coordinate_sample(h, w, intrinsics=(300.0, 310.0, 101.5, 77.25)):
    "Depth encodes each pixel's coordinates; the image is linear ramps of the pixel-centre position."
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    image = np.stack([(x + 0.5) / w, (y + 0.5) / h, np.full_like(x, 0.5)], -1)
    s = make_sample(np.zeros((h, w, 3), np.uint8), 1 + y * w + x, intrinsics=intrinsics)
    return {**s, "image": image}


def decode(depth, w):
    d = np.asarray(depth).astype(np.int64) - 1
    return d // w, d % w


# ------------------------------------------------------------------ parity with the official transforms
@pytest.mark.parametrize("hw", [(375, 1242), (480, 640), (1080, 1920), (700, 300), (100, 60), (518, 518)])
def test_resize_and_normalise_equal_the_official_transforms(hw):
    from depth_anything_v2.util.transform import NormalizeImage, PrepareForNet, Resize

    rng = np.random.default_rng(hw[0])
    img = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
    depth = rng.uniform(0.1, 80, hw).astype(np.float32)
    depth[rng.random(hw) < 0.1] = 0
    sample = make_sample(img, depth)
    ours = TrainTransform(crop=None, hflip=0.0)(sample)
    official = {"image": img / 255.0, "depth": sample["depth"], "mask": sample["valid"]}
    for t in (Resize(518, 518, keep_aspect_ratio=True, ensure_multiple_of=14, resize_method="lower_bound",
                     image_interpolation_method=cv2.INTER_CUBIC),
              NormalizeImage(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]), PrepareForNet()):
        official = t(official)
    assert ours["image"].shape[1:] == fit_size(*hw)
    assert torch.equal(ours["image"], torch.from_numpy(official["image"]))
    assert torch.equal(ours["depth"], torch.from_numpy(official["depth"]))
    assert torch.equal(ours["valid"], torch.from_numpy(official["mask"].astype(bool)))


def test_random_crop_offsets_cover_the_official_range():
    s = coordinate_sample(30, 40)
    tops, lefts = set(), set()
    for seed in range(400):
        c = random_crop(s, (25, 33), np.random.default_rng(seed))
        ys, xs = decode(c["depth"], 40)
        tops.add(int(ys[0, 0]))
        lefts.add(int(xs[0, 0]))
        assert (ys[:, 0] == ys[0, 0] + np.arange(25)).all() and (xs[0] == xs[0, 0] + np.arange(33)).all()
    assert tops == set(range(0, 6)) and lefts == set(range(0, 8))  # np.random.randint(0, H - h + 1): both ends
    with pytest.raises(ValueError, match="cannot crop"):
        random_crop(s, 31)


# ------------------------------------------------------------------ alignment
@settings(max_examples=25, deadline=None)
@given(h=st.integers(20, 120), w=st.integers(20, 120), oh=st.integers(16, 200), ow=st.integers(16, 200),
       flip=st.booleans(), exact=st.booleans(), data=st.data())
def test_maps_and_intrinsics_stay_aligned_with_the_image(h, w, oh, ow, flip, exact, data):
    src = coordinate_sample(h, w, intrinsics=(0.9 * w, 0.8 * w, 0.47 * w, 0.55 * h))
    interp = cv2.INTER_NEAREST_EXACT if exact else cv2.INTER_NEAREST
    out = resize_sample(src, (oh, ow), map_interpolation=interp)
    ch, cw = data.draw(st.integers(8, oh)), data.draw(st.integers(8, ow))
    top, left = data.draw(st.integers(0, oh - ch)), data.draw(st.integers(0, ow - cw))
    out = crop_sample(out, top, left, (ch, cw))
    if flip:
        out = hflip_sample(out)
    ys, xs = decode(out["depth"], w)
    x_img, y_img = out["image"][..., 0] * w - 0.5, out["image"][..., 1] * h - 0.5  # interpolated source position
    # away from the border, bicubic reproduces the ramps; nearest picks a source pixel near that position
    rx, ry = w / ow, h / oh
    bx, by = int(np.ceil(2 / min(rx, 1))) + 1, int(np.ceil(2 / min(ry, 1))) + 1
    inner = (slice(by, -by or None), slice(bx, -bx or None))
    tol_x, tol_y = (0.5 + 0.05, 0.5 + 0.05) if exact else (max(1.0, rx) + 0.05, max(1.0, ry) + 0.05)
    if xs[inner].size:
        assert np.abs(xs - x_img)[inner].max() <= tol_x and np.abs(ys - y_img)[inner].max() <= tol_y
        # the intrinsics cast the same ray as the source position (mirrored in x after a flip)
        fx, fy, cx, cy = out["intrinsics"]
        fx0, fy0, cx0, cy0 = src["intrinsics"]
        v, u = np.mgrid[0:ch, 0:cw]
        sign = -1 if flip else 1
        assert (np.abs((u - cx) / fx - sign * (x_img - cx0) / fx0) * fx0)[inner].max() < 0.1
        assert (np.abs((v - cy) / fy - (y_img - cy0) / fy0) * fy0)[inner].max() < 0.1
    assert (out["valid"] == (out["depth"] > 0)).all() and out["valid"].dtype == bool


def test_pixel_disparities_scale_with_the_width_and_depth_does_not():
    s = make_sample(np.zeros((10, 20, 3), np.uint8), np.full((10, 20), 4.0), disparity=np.full((10, 20), 3.0, np.float32))
    r = resize_sample(s, (20, 40))
    assert np.all(r["disparity"] == 6.0) and np.all(r["depth"] == 4.0) and r["disparity"].dtype == np.float32


def test_unlabeled_samples_collate():
    s = make_sample(np.zeros((60, 80, 3), np.uint8), path="a.jpg")
    t = TrainTransform(size=42, crop=42)
    batch = torch.utils.data.default_collate([t(s), t(s)])
    assert batch["image"].shape == (2, 3, 42, 42) and "depth" not in batch and batch["path"] == ["a.jpg", "a.jpg"]


def test_train_transform_is_reproducible_from_torch_seed():
    s = coordinate_sample(64, 96)
    torch.manual_seed(3)
    a = TrainTransform(size=42, crop=28)(s)
    torch.manual_seed(3)
    b = TrainTransform(size=42, crop=28)(s)
    assert torch.equal(a["depth"], b["depth"]) and torch.equal(a["image"], b["image"])


# ------------------------------------------------------------------ strong augmentations and CutMix
def test_strong_augment_pieces():
    rng = np.random.default_rng(0)
    img = rng.random((16, 20, 3))
    none = StrongAugment(p_jitter=0, p_gray=0, p_blur=0)
    assert np.allclose(none(img, rng), img.astype(np.float32), atol=1e-7)
    gray = StrongAugment(p_jitter=0, p_gray=1, p_blur=0)(img, rng)
    assert np.allclose(gray[..., 0], gray[..., 1]) and np.allclose(gray[..., 1], gray[..., 2])
    bright = StrongAugment(p_jitter=1, brightness=0.5, contrast=0, saturation=0, hue=0, p_gray=0, p_blur=0)
    out = bright(img, np.random.default_rng(7))
    factor = out / np.maximum(img, 1e-6)
    unclipped = out < 1
    assert np.allclose(factor[unclipped], factor[unclipped].flat[0], rtol=1e-4) and 0.5 <= factor.flat[0] <= 1.5
    blurred = StrongAugment(p_jitter=0, p_gray=0, p_blur=1)(img, rng)
    assert blurred.std() < img.std() and blurred.dtype == img.dtype


def test_cutmix_boxes_follow_unimatch():
    rng = np.random.default_rng(0)
    boxes = [cutmix_box(64, 96, rng) for _ in range(600)]
    used = [b for b in boxes if b.any()]
    assert abs(len(used) / 600 - 0.5) < 4 * np.sqrt(0.25 / 600)  # p = 0.5
    for b in used:
        ys, xs = np.nonzero(b)
        bh, bw = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        assert b.sum() == bh * bw  # one rectangle
        assert 0.015 <= b.mean() <= 0.4 and 0.3 * 0.8 <= bh / bw <= 1 / 0.3 * 1.25


def test_cutmix_mixes_every_aligned_map_the_same_way():
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.rand(3, 3, 20, 24, generator=g), "depth": torch.rand(3, 20, 24, generator=g),
             "valid": torch.rand(3, 20, 24, generator=g) > 0.3, "intrinsics": torch.rand(3, 4, generator=g), "path": ["a", "b", "c"]}
    partner = {k: v.flip(0) if torch.is_tensor(v) else v for k, v in batch.items()}
    out = cutmix(batch, np.random.default_rng(1), p=1.0, partner=partner)
    m = out["cutmix"]
    assert m.dtype == torch.bool and m.any((1, 2)).all()
    for k in ("image", "depth", "valid"):
        mm = m[:, None].expand_as(out[k]) if out[k].ndim == 4 else m
        assert torch.equal(out[k][mm], partner[k][mm]) and torch.equal(out[k][~mm], batch[k][~mm])
    assert torch.equal(out["intrinsics"], batch["intrinsics"]) and out["path"] == ["a", "b", "c"]


# ------------------------------------------------------------------ PRV2 patches
@pytest.mark.parametrize("image_hw,patch,proc,multiple", [((216, 384), (54, 96), (96, 128), 32),
                                                         ((256, 512), (64, 128), (112, 112), 14),
                                                         ((540, 960), (135, 240), (384, 512), 32)])
@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_patch_boxes_map_back_and_match_the_crop(image_hw, patch, proc, multiple, flip):
    H, W = image_hw
    src = coordinate_sample(H, W)
    src["image"] = src["image"].astype(np.float32)
    for seed in range(3):
        out = PatchTransform(patch, proc, hflip=flip, color=False, multiple=multiple)(src, np.random.default_rng(seed))
        qh, qw = proc
        x1, y1, x2, y2 = out["box_raw"].tolist()
        assert (x2 - x1, y2 - y1) == patch[::-1] and 0 <= x1 and x2 <= W and 0 <= y1 and y2 <= H
        scale = torch.tensor([W / qw, H / qh, W / qw, H / qh], dtype=torch.float64)
        assert torch.allclose(out["bboxs"].double() * scale, out["box_raw"].double(), atol=1e-3)
        assert out["bboxs"].tolist() == pytest.approx(patch_box(y1, x1, patch, (H, W), proc), abs=1e-4)
        assert torch.equal(out["crop_depth"], out["depth"][y1:y2, x1:x2])
        ys, xs = decode(out["crop_depth"], W)
        cols = xs[0] if flip == 0 else W - 1 - xs[0]  # after a flip the crop holds mirrored source columns
        assert (cols == np.arange(x1, x2)).all() and (ys[:, 0] == np.arange(y1, y2)).all()
        roi = roi_align(out["image_lr"][None], [out["bboxs"][None]], output_size=proc, aligned=True)[0]
        err_px = (roi[:2] - out["crops_image_hr"][:2]).abs().amax((1, 2)) * torch.tensor([W / qw, H / qh])
        assert (err_px < 1.0).all()  # within a coarse pixel (align_corners=True resize vs pixel-edge boxes)
        assert out["image_lr"].shape == out["crops_image_hr"].shape == (3, *proc)


def test_rotation_keeps_maps_consistent():
    src = coordinate_sample(60, 80)
    r = rotate_sample(src, 7.0)
    assert r["valid"].dtype == bool and (r["valid"] == (r["depth"] > 0)).all()
    assert not r["valid"][0, 0] and r["valid"][30, 40]  # corners rotate out (invalid), the centre stays
    ys, xs = decode(r["depth"][r["valid"]], 80)
    assert np.abs(ys - 30).max() <= 30 and np.abs(xs - 40).max() <= 40


def test_to_tensors_types():
    s = coordinate_sample(8, 10)
    t = to_tensors({**s, "segmentation": np.zeros((8, 10), np.int64), "note": None})
    assert t["image"].dtype == torch.float32 and t["image"].shape == (3, 8, 10)
    assert t["depth"].dtype == torch.float32 and t["valid"].dtype == torch.bool and t["segmentation"].dtype == torch.int64
    assert "note" not in t and t["intrinsics"].dtype == torch.float32
