"""Readers of the teacher's synthetic sets on tiny datasets in their real layouts (tests/fake_datasets.py)."""
import numpy as np
import pytest

import fake_datasets as fake
from depth_anything_nb.data.core import DatasetError
from depth_anything_nb.data.synthetic import (IRS, BlendedMVS, Hypersim, TartanAir, VirtualKITTI2,
                                              hypersim_planar_depth)


def test_hypersim_planar_depth_closed_form_at_real_size():
    "DAv2's conversion: x = linspace(-511.5, 511.5, 1024), y = linspace(-383.5, 383.5, 768), f = 886.81."
    dist = np.random.default_rng(0).uniform(1, 20, (768, 1024)).astype(np.float32)
    x, y = np.linspace(-511.5, 511.5, 1024), np.linspace(-383.5, 383.5, 768)
    ref = dist / np.linalg.norm(np.stack([*np.meshgrid(x, y), np.full((768, 1024), 886.81)], -1), axis=-1) * 886.81
    assert np.abs(hypersim_planar_depth(dist) - ref).max() < 1e-5
    assert np.abs(hypersim_planar_depth(dist)[384, 512] / dist[384, 512] - 886.81 / np.hypot(0.5, np.hypot(0.5, 886.81))) < 1e-6


def test_hypersim_csv_split_and_values(tmp_path):
    planar = fake.hypersim(tmp_path)
    train, val = Hypersim(tmp_path, "train"), Hypersim(tmp_path, "val")
    assert len(train) == 2 and len(val) == 1  # frame 2 is not in the public release
    s = train[1]
    assert s["path"].endswith("ai_001_001/images/scene_cam_00_final_preview/frame.0001.tonemap.jpg")
    assert s["dataset"] == "hypersim" and s["depth_unit"] == "m" and s["image"].shape == (8, 12, 3)
    assert not s["valid"][0, 0] and s["depth"][0, 0] == 0 and s["valid"].sum() == 8 * 12 - 1
    ref = planar[("ai_001_001", 1)]
    assert np.allclose(s["depth"][s["valid"]], ref[s["valid"]], rtol=1e-6)
    f = 886.81 * 12 / 1024
    assert s["intrinsics"] == pytest.approx((f, f, 5.5, 3.5))
    with pytest.raises(ValueError):
        Hypersim(tmp_path, "training")


def test_hypersim_dav2_list_file(tmp_path):
    fake.hypersim(tmp_path)
    (tmp_path / "val.txt").write_text(
        f"{tmp_path}/ai_001_002/images/scene_cam_00_final_preview/frame.0000.tonemap.jpg "
        f"{tmp_path}/ai_001_002/images/scene_cam_00_geometry_hdf5/frame.0000.depth_meters.hdf5\n")
    ds = Hypersim("/nonexistent", list_file=tmp_path / "val.txt")  # absolute paths win over the root
    assert len(ds) == 1 and ds[0]["valid"].sum() == 95


def test_vkitti2_centimetres_sky_and_intrinsics(tmp_path):
    cms = fake.vkitti2(tmp_path)
    ds = VirtualKITTI2(tmp_path, scenes=["Scene01", "Scene02"], variations=["clone", "fog"], cameras=["Camera_0", "Camera_1"])
    assert len(ds) == 8
    s = ds[1]  # Scene01/clone Camera_0 frame 1
    assert s["path"].endswith("vkitti_2.0.3_rgb/Scene01/clone/frames/rgb/Camera_0/rgb_00001.jpg")
    cm = cms[("Scene01", "clone", 0, 1)]
    assert not s["valid"][:2].any()  # 655.35 m sky > 80 m
    assert np.allclose(s["depth"][2:], cm[2:] / 100.0) and s["depth"].max() <= 80
    assert s["intrinsics"] == (726.0087, 725.0087, 620.5, 187.0)  # frame 1's row of intrinsic.txt
    assert len(VirtualKITTI2(tmp_path, scenes=["Scene01"], variations=["clone"])) == 2  # Camera_0 by default
    s = VirtualKITTI2(tmp_path, scenes=["Scene01"], variations=["clone"], max_depth=None)[0]
    assert np.allclose(s["depth"][:2], 655.35)  # without the cap the sky is a (wrong) finite depth


def test_tartanair_sky_and_nonfinite_invalid(tmp_path):
    rgb, z = fake.tartanair(tmp_path)
    ds = TartanAir(tmp_path)
    assert len(ds) == 2 and len(TartanAir(tmp_path, difficulties=("Hard",))) == 1
    s = ds[0]
    assert np.array_equal(s["image"], rgb) and s["intrinsics"] == (320.0, 320.0, 320.0, 240.0)
    assert not s["valid"][:2].any() and not s["valid"][3, 3] and s["valid"].sum() == 8 * 12 - 25
    assert np.array_equal(s["depth"][s["valid"]], z[s["valid"]])
    assert TartanAir(tmp_path, side="right", envs=["abandonedfactory"]).items[0]["depth"].name == "000000_right_depth.npy"


def test_blendedmvs_pfm_cam_and_masked_images(tmp_path):
    z = fake.blendedmvs(tmp_path)
    ds = BlendedMVS(tmp_path, split_file=tmp_path / "BlendedMVS_training.txt")
    assert len(ds) == 2  # the _masked.jpg copies are not samples
    s = ds[1]
    assert s["depth_unit"] == "scene" and s["intrinsics"] == (575.0, 576.0, 383.5, 287.5)
    assert np.array_equal(s["depth"][:-1], z[:-1]) and not s["valid"][-1].any()  # PFM bottom-up handled
    assert s["depth_range"] == (425.0, 905.0)
    assert len(BlendedMVS(tmp_path)) == 2


def test_irs_disparity_to_depth(tmp_path):
    disp = fake.irs(tmp_path)
    s = IRS(tmp_path, tmp_path / "IRSDataset_TRAIN.list")[0]
    ok = np.isfinite(disp) & (disp > 0) & (48 / np.where(disp > 0, disp, 1) <= 200)
    assert np.array_equal(s["valid"], ok) and not s["valid"][0, :3].any() and not s["valid"][1, :2].any()
    assert np.allclose(s["depth"][ok], 48.0 / disp[ok], rtol=1e-6)
    assert np.array_equal(s["disparity"][ok], disp[ok]) and (s["disparity"][~np.isfinite(disp)] == 0).all()
    assert s["focal"] == 480.0 and s["baseline"] == 0.1


def test_irs_list_needs_four_columns(tmp_path):
    (tmp_path / "bad.list").write_text("# left right disp normal\na.png b.png c.exr\n")
    with pytest.raises(DatasetError, match=r"bad.list:2.*expected 4 columns"):
        IRS(tmp_path, tmp_path / "bad.list")


def test_concatenated_teacher_mix_collates(tmp_path):
    import torch

    from depth_anything_nb.data.core import collate_samples

    fake.hypersim(tmp_path / "h")
    fake.tartanair(tmp_path / "t")
    mix = torch.utils.data.ConcatDataset([Hypersim(tmp_path / "h"), TartanAir(tmp_path / "t")])
    b = collate_samples([mix[i] for i in range(len(mix))])
    assert b["depth"].shape == (4, 8, 12) and b["intrinsics"].shape == (4, 4) and torch.isfinite(b["depth"]).all()
    assert b["dataset"] == ["hypersim", "hypersim", "tartanair", "tartanair"]
