"""Readers of the zero-shot benchmarks and DA-2K on tiny datasets in their real layouts (tests/fake_datasets.py)."""
import numpy as np
import pytest

import fake_datasets as fake
from depth_anything_nb.data.core import DatasetError
from depth_anything_nb.data.evaluation import (DA2K, DIODE, ETH3D, KITTI_FOCAL_BY_DATE, NYU_INTRINSICS, KITTIDepth,
                                               NYUv2, Sintel, kb_crop_box)


def test_kitti_eigen_list_none_lines_train_val_lookup(tmp_path):
    rgb, gt = fake.kitti(tmp_path)
    ds = KITTIDepth(tmp_path / "raw", tmp_path / "gts", tmp_path / "eigen_test_files_with_gt.txt")
    assert len(ds) == 1 and ds.n_without_gt == 1
    s = ds[0]
    assert np.array_equal(s["image"], rgb) and s["image"].shape == (375, 1242, 3)
    assert np.array_equal(s["valid"], gt > 0) and np.array_equal(s["depth"], gt / np.float32(256))
    assert s["focal"] == 721.5377 == KITTI_FOCAL_BY_DATE["2011_09_26"]
    assert s["intrinsics"] == pytest.approx((721.5377, 721.5377, 609.5593, 172.854))
    assert "/gts/train/" in s["depth_path"]


def test_kitti_kb_crop(tmp_path):
    rgb, gt = fake.kitti(tmp_path)
    assert kb_crop_box(375, 1242) == (23, 13, 352, 1216) and kb_crop_box(370, 1224) == (18, 4, 352, 1216)
    s = KITTIDepth(tmp_path / "raw", tmp_path / "gts", tmp_path / "eigen_test_files_with_gt.txt", kb_crop=True)[0]
    assert s["image"].shape == (352, 1216, 3) and np.array_equal(s["image"], rgb[23:, 13:1229])
    assert np.array_equal(s["depth"], gt[23:, 13:1229] / np.float32(256))
    assert s["intrinsics"] == pytest.approx((721.5377, 721.5377, 609.5593 - 13, 172.854 - 23))


def test_kitti_missing_gt_is_a_clear_error(tmp_path):
    fake.kitti(tmp_path)
    (tmp_path / "gts/train").rename(tmp_path / "gts/elsewhere")
    ds = KITTIDepth(tmp_path / "raw", tmp_path / "gts", tmp_path / "eigen_test_files_with_gt.txt")
    with pytest.raises(DatasetError, match="ground truth not found") as e:
        ds[0]
    assert "0000000069.png" in e.value.path


def test_nyu_labeled_mat_layout_and_one_based_splits(tmp_path):
    frames, raw = fake.nyu(tmp_path)
    test = NYUv2(tmp_path / "nyu_depth_v2_labeled.mat", tmp_path / "splits.mat", split="test")
    assert len(test) == 2 and [s["path"].rsplit("#", 1)[1] for s in test] == ["3", "4"]
    s = test[0]
    assert s["image"].shape == (480, 640, 3) and np.array_equal(s["image"], frames[2][0])
    assert np.array_equal(s["depth"], frames[2][1]) and s["intrinsics"] == NYU_INTRINSICS
    r = NYUv2(tmp_path / "nyu_depth_v2_labeled.mat", tmp_path / "splits.mat", split="train", raw_depth=True)[1]
    assert np.array_equal(r["valid"], raw[1] > 0) and np.array_equal(r["depth"], raw[1])
    assert len(NYUv2(tmp_path / "nyu_depth_v2_labeled.mat")) == 4


def test_nyu_handles_survive_pickling_and_worker_processes(tmp_path):
    import pickle

    import torch

    from depth_anything_nb.data.core import collate_samples

    frames, _ = fake.nyu(tmp_path, n=3, h=48, w=64)
    ds = NYUv2(tmp_path / "nyu_depth_v2_labeled.mat")
    ds[0]
    ds2 = pickle.loads(pickle.dumps(ds))  # an open h5py handle does not travel
    assert np.array_equal(ds2[2]["depth"], frames[2][1])
    batches = list(torch.utils.data.DataLoader(ds, batch_size=3, num_workers=1, collate_fn=collate_samples))
    assert batches[0]["image"].shape == (3, 48, 64, 3)


def test_nyu_bad_split_indices(tmp_path):
    import scipy.io

    fake.nyu(tmp_path, n=2, h=8, w=12)
    scipy.io.savemat(tmp_path / "zero_based.mat", {"testNdxs": np.array([[0.0], [1.0]])})
    with pytest.raises(DatasetError, match="1-based"):
        NYUv2(tmp_path / "nyu_depth_v2_labeled.mat", tmp_path / "zero_based.mat")
    (tmp_path / "old.mat").write_bytes(b"MATLAB 5.0 MAT-file, not HDF5" + b"\0" * 200)
    with pytest.raises(DatasetError, match="HDF5"):
        NYUv2(tmp_path / "old.mat")


def test_sintel_passes_scenes_and_camera(tmp_path):
    data = fake.sintel(tmp_path)
    ds = Sintel(tmp_path, pass_name="clean")
    assert len(ds) == 4 and len(Sintel(tmp_path, scenes=["market_2"])) == 2
    s = ds[3]
    assert s["path"].endswith("training/clean/market_2/frame_0002.png") and s["depth_unit"] == "scene"
    assert np.array_equal(s["depth"], data[("market_2", 2)][1]) and s["intrinsics"] == (1120.0, 1121.0, 511.5, 217.5)
    assert "final" in Sintel(tmp_path)[0]["path"]


def test_eth3d_raw_float_inf_invalid(tmp_path):
    z = fake.eth3d(tmp_path)
    for ds in (ETH3D(tmp_path, depth_shape=(8, 12)),
               ETH3D(tmp_path, list_file=tmp_path / "eth3d_filename_list.txt", depth_shape=(8, 12))):
        s = ds[0]
        assert len(ds) == 1 and not s["valid"][:, :2].any() and np.array_equal(s["depth"][:, 2:], z[:, 2:])
        assert s["intrinsics"] is None
    with pytest.raises(DatasetError, match="expected 97542144 for raw float32 4032x6048"):
        ETH3D(tmp_path)[0]  # the real shape does not fit the tiny file: a clear error


def test_diode_mask_is_ground_truth(tmp_path):
    zs = fake.diode(tmp_path)
    ds = DIODE(tmp_path)
    assert len(ds) == 2 and len(DIODE(tmp_path, scene_type="indoors")) == 1
    for s in ds:
        assert not s["valid"][:, :3].any() and s["valid"][:, 3:].all()
        assert np.array_equal(s["depth"][:, 3:], zs[s["scene_type"]][:, 3:])
    assert ds[0]["scene_type"] == "indoors" and ds[0]["intrinsics"] == (886.81, 927.06, 512.0, 384.0)


def test_da2k_pairs_and_scenes(tmp_path):
    ann = fake.da2k(tmp_path)
    ds = DA2K(tmp_path / "DA-2K")
    by_scene = {s["scene"]: s for s in ds}
    assert set(by_scene) == {"indoor", "underwater"}
    s = by_scene["indoor"]
    assert s["pairs"].tolist() == [[p["point1"], p["point2"]] for p in ann["images/indoor/0001.jpg"]]
    assert s["closer"].tolist() == [0, 0] and s["depth"] is None and s["image"].shape == (24, 32, 3)
    assert s["key"] == "images/indoor/0001.jpg"  # the annotation key: per-scene accuracy reads the scene from it


def test_da2k_point_outside_image(tmp_path):
    import json

    fake.da2k(tmp_path)
    (tmp_path / "DA-2K/annotations.json").write_text(json.dumps(
        {"images/indoor/0001.jpg": [{"point1": [24, 0], "point2": [0, 0], "closer_point": "point1"}]}))
    with pytest.raises(DatasetError, match="outside the 24x32 image"):
        DA2K(tmp_path / "DA-2K")[0]
