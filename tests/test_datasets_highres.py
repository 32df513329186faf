"""Readers of PRV2's high-resolution sets on tiny datasets in their real layouts (tests/fake_datasets.py)."""
import numpy as np
import pytest

import fake_datasets as fake
from depth_anything_nb.data import formats as F
from depth_anything_nb.data.core import DatasetError
from depth_anything_nb.data.highres import Cityscapes, ScanNetPP, UnrealStereo4K, prv2_cityscapes_mask


@pytest.mark.parametrize("image_format", ["png", "raw"])
def test_u4k_depth_from_disparity_and_camera_files(tmp_path, image_format):
    frames = fake.u4k(tmp_path)
    ds = UnrealStereo4K(tmp_path, tmp_path / "splits/test.txt", image_format=image_format, raw_shape=(8, 12))
    assert len(ds) == 2
    s = ds[1]
    rgb, disp = frames[1]
    assert s["path"].endswith(f"00000/Image0/00001.{image_format}") and np.array_equal(s["image"], rgb)
    assert s["baseline"] == pytest.approx(0.3) and s["intrinsics"] == (1920.0, 1921.0, 1919.5, 1079.5)
    assert not s["valid"][0, 0] and s["valid"].sum() == 8 * 12 - 1
    ok = s["valid"]
    assert np.allclose(s["depth"][ok], 1920.0 * 0.3 / disp[ok], rtol=1e-6)
    assert np.array_equal(s["disparity"][ok], disp[ok]) and s["disparity"][0, 0] == 0


def test_u4k_right_view_and_errors(tmp_path):
    fake.u4k(tmp_path)
    s = UnrealStereo4K(tmp_path, tmp_path / "splits/test.txt", view=1)[0]
    assert s["path"].endswith("00000/Image1/00000.png") and s["baseline"] == pytest.approx(0.3)
    with pytest.raises(DatasetError, match="expected 24883200"):
        UnrealStereo4K(tmp_path, tmp_path / "splits/test.txt", image_format="raw")[0]  # tiny file, real shape
    F.write_u4k_extrinsics(tmp_path / "00000/Extrinsics1/00000.txt", np.eye(3), np.eye(3, 4))
    F.write_u4k_extrinsics(tmp_path / "00000/Extrinsics0/00000.txt", np.eye(3), np.eye(3, 4))
    with pytest.raises(DatasetError, match="zero stereo baseline"):
        UnrealStereo4K(tmp_path, tmp_path / "splits/test.txt")[0]


def test_cityscapes_disparity_rule_and_invalid_codes(tmp_path):
    p, seg = fake.cityscapes(tmp_path)
    s = Cityscapes(tmp_path, prv2_invalid=False)[0]
    assert not s["valid"][3, 5] and not s["valid"][3, 6]  # p = 0: no disparity; p = 1: d = 0, infinitely far
    assert s["valid"].sum() == 16 * 32 - 2
    d = (p.astype(np.float64) - 1) / 256
    ok = s["valid"]
    assert np.allclose(s["depth"][ok], 0.209313 * 2262.52 / d[ok], rtol=1e-6)
    assert np.allclose(s["disparity"][ok], d[ok]) and s["intrinsics"] == (2262.52, 2265.3, 1096.98, 513.137)
    assert np.array_equal(s["segmentation"], seg)


def test_cityscapes_prv2_rules(tmp_path):
    fake.cityscapes(tmp_path)
    s = Cityscapes(tmp_path, split_file=tmp_path / "val.txt")[0]
    expect = prv2_cityscapes_mask(16, 32)
    expect[:2] = False  # sky in gtFine colours
    expect[3, 5:7] = False
    assert np.array_equal(s["valid"], expect)
    assert Cityscapes(tmp_path, segmentation=False)[0]["valid"][:2, 2:-2].all()  # no segmentation: sky kept


def test_prv2_mask_at_real_size_and_odd_sizes():
    m = prv2_cityscapes_mask(1024, 2048)
    assert (~m).any(1)[768:].all() and m[:768, 128:1920].all() and not m[:, :128].any() and not m[:, 1920:].any()
    m = prv2_cityscapes_mask(10, 20)  # Python's -10 // 4 == -3: the loader drops ceil(h/4) rows, ceil(w/16) on the right
    assert m[:7].any() and not m[7:].any() and not m[:, :1].any() and not m[:, 18:].any() and m[:7, 1:18].all()


def test_cityscapes_real_size_png(tmp_path):
    "A real 1024x2048 disparity PNG and camera file: 256 bottom rows and 128 columns each side are dropped."
    h, w = 1024, 2048
    p = np.full((h, w), 256 * 20 + 1, np.uint16)  # d = 20 px everywhere
    F.write_rgb(tmp_path / "leftImg8bit/val/lindau/lindau_000000_000019_leftImg8bit.png", np.zeros((h, w, 3), np.uint8))
    F.write_png16(tmp_path / "disparity/val/lindau/lindau_000000_000019_disparity.png", p)
    F.write_cityscapes_camera(tmp_path / "camera/val/lindau/lindau_000000_000019_camera.json", 0.2, 2000.0, 2000.0,
                              1024.0, 512.0)
    s = Cityscapes(tmp_path, segmentation=False)[0]
    assert s["valid"].sum() == (1024 - 256) * (2048 - 256) and np.allclose(s["depth"][s["valid"]], 0.2 * 2000 / 20)


def test_scannetpp_upsampled_mm(tmp_path):
    mm = fake.scannetpp(tmp_path)
    s = ScanNetPP(tmp_path)[0]
    assert s["depth"].shape == (24, 32) and s["depth_lidar"].shape == (6, 8)
    assert np.array_equal(s["depth"], np.kron(mm, np.ones((4, 4))).astype(np.float32) / np.float32(1000))
    assert not s["valid"][:4, :4].any() and s["valid"].sum() == 24 * 32 - 16
    assert s["intrinsics"] == (30.5, 31.5, 15.25, 11.75)
    (tmp_path / "split.txt").write_text(f"{tmp_path}/data/0a5c013435/iphone/rgb/frame_000000.jpg "
                                        "data/0a5c013435/iphone/depth/frame_000000.png\n")
    assert len(ScanNetPP(tmp_path, split_file=tmp_path / "split.txt")) == 1
