"""The custom dataset: pairing by list or by stem, encodings by extension, scale, sparse masks, range, intrinsics."""
import numpy as np
import pytest

from depth_anything_nb.data import formats as F
from depth_anything_nb.data.core import DatasetError
from depth_anything_nb.data.custom import CustomDepthDataset

H, W = 6, 8


def _rgb(seed=0):
    return np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)


def _z():
    return np.linspace(1.0, 9.0, H * W, dtype=np.float32).reshape(H, W)


@pytest.mark.parametrize("ext,write,scale", [
    ("png", lambda p, z: F.write_png16(p, np.round(z * 256).astype(np.uint16)), 1 / 256),
    ("npy", lambda p, z: F.write_npy(p, z), 1.0),
    ("npz", lambda p, z: np.savez(p, depth=z), 1.0),
    ("pfm", lambda p, z: F.write_pfm(p, z * 1000), 1e-3),
    ("exr", lambda p, z: F.write_exr(p, z), 1.0),
    ("tiff", lambda p, z: __import__("cv2").imwrite(str(p), z), 1.0),
    ("hdf5", lambda p, z: F.write_hdf5(p, z), 1.0),
])
def test_every_encoding_by_stem(tmp_path, ext, write, scale):
    z = _z()
    F.write_rgb(tmp_path / "images/seq/0001.jpg", _rgb())
    (tmp_path / "depth/seq").mkdir(parents=True)
    write(tmp_path / f"depth/seq/0001.{ext}", z)
    s = CustomDepthDataset(tmp_path, depth_scale=scale)[0]
    assert s["valid"].all() and np.allclose(s["depth"], z, atol=1 / 512) and s["dataset"] == "custom"
    assert s["depth_path"].endswith(f"depth/seq/0001.{ext}")


def test_sparse_lidar_invalid_codes_and_range(tmp_path):
    z = _z()
    raw = np.round(z * 1000).astype(np.uint16)
    raw[0, :4] = 0  # no return
    raw[1, :2] = 65535  # sensor's "no data"
    F.write_rgb(tmp_path / "images/0.png", _rgb())
    F.write_png16(tmp_path / "depth/0.png", raw)
    s = CustomDepthDataset(tmp_path, depth_scale=1e-3, invalid_values=[65535], min_depth=1.5, max_depth=8.0)[0]
    d = raw.astype(np.float32) * np.float32(1e-3)
    expect = (raw != 0) & (raw != 65535) & (d >= 1.5) & (d <= 8.0)
    assert 0 < expect.sum() < H * W - 6 and np.array_equal(s["valid"], expect) and (s["depth"][~expect] == 0).all()
    assert np.array_equal(s["depth"][expect], d[expect])


def test_list_with_focal_or_intrinsics(tmp_path):
    for i in range(3):
        F.write_rgb(tmp_path / f"im{i}.png", _rgb(i))
        F.write_npy(tmp_path / f"d{i}.npy", _z())
    (tmp_path / "list.txt").write_text("# image depth [focal | fx fy cx cy]\nim0.png d0.npy\n"
                                       "im1.png d1.npy 500.5\nim2.png d2.npy 500 501 3.5 2.5\n")
    ds = CustomDepthDataset(tmp_path, list_file=tmp_path / "list.txt", intrinsics=(1.0, 1.0, 1.0, 1.0))
    assert ds[0]["intrinsics"] == (1.0, 1.0, 1.0, 1.0) and ds[1]["focal"] == 500.5
    assert ds[2]["intrinsics"] == (500.0, 501.0, 3.5, 2.5) and np.array_equal(ds[2]["image"], _rgb(2))
    (tmp_path / "bad.txt").write_text("im0.png d0.npy 1 2\n")
    with pytest.raises(DatasetError, match="expected 2, 3"):
        CustomDepthDataset(tmp_path, list_file=tmp_path / "bad.txt")


def test_matching_suffix_shared_folder_unmatched_and_ambiguous(tmp_path):
    for i in range(3):
        F.write_rgb(tmp_path / f"f/{i}.png", _rgb(i))
    for i in range(2):
        F.write_png16(tmp_path / f"f/{i}_depth.png", np.ones((H, W), np.uint16))
    with pytest.raises(DatasetError, match="1 of 3 images have no depth file"):
        CustomDepthDataset(tmp_path, image_dir="f", depth_dir="f", depth_suffix="_depth")
    ds = CustomDepthDataset(tmp_path, image_dir="f", depth_dir="f", depth_suffix="_depth", require_depth=False)
    assert len(ds) == 2 and [p.name for p in ds.unmatched] == ["2.png"]
    F.write_npy(tmp_path / "f/0_depth.npy", np.ones((H, W)))
    with pytest.raises(DatasetError, match="ambiguous"):
        CustomDepthDataset(tmp_path, image_dir="f", depth_dir="f", depth_suffix="_depth", require_depth=False)


def test_low_resolution_depth(tmp_path):
    F.write_rgb(tmp_path / "images/a.jpg", np.zeros((4 * H, 4 * W, 3), np.uint8))
    d = np.round(_z() * 1000).astype(np.uint16)
    d[0, 0] = 0
    F.write_png16(tmp_path / "depth/a.png", d)
    with pytest.raises(DatasetError, match="upsample_depth=True"):
        CustomDepthDataset(tmp_path, depth_scale=1e-3)[0]
    s = CustomDepthDataset(tmp_path, depth_scale=1e-3, upsample_depth=True)[0]
    assert s["depth"].shape == (4 * H, 4 * W) and np.allclose(s["depth"], np.kron(d, np.ones((4, 4))) * 1e-3)
    assert not s["valid"][:4, :4].any() and s["valid"].sum() == 16 * (H * W - 1)
