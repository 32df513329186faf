"""Bad data in every reader: a corrupt or missing file is an error naming it; wrapped in SkipBadSamples it is logged
with its path, skipped and counted (also through DataLoader workers); invalid depth is masked; a sample without
any valid pixel is reported; no NaN ever reaches a batch."""
import logging

import numpy as np
import pytest
import torch

import fake_datasets as fake
from depth_anything_nb.data import formats as F
from depth_anything_nb.data.core import (BadDataReport, DatasetError, DepthDataset, SkipBadSamples, collate_samples,
                                         make_sample)
from depth_anything_nb.data.custom import CustomDepthDataset
from depth_anything_nb.data.evaluation import DA2K, DIODE, ETH3D, KITTIDepth, NYUv2, Sintel
from depth_anything_nb.data.highres import Cityscapes, ScanNetPP, UnrealStereo4K
from depth_anything_nb.data.synthetic import IRS, BlendedMVS, Hypersim, TartanAir, VirtualKITTI2
from depth_anything_nb.data.unlabeled import ImageFolder


class Good(DepthDataset):
    "One always-good sample of the reader's image size."

    def __init__(self, shape):
        super().__init__([dict(path="good")])
        self.shape = shape

    def load(self, item):
        return make_sample(np.zeros((*self.shape, 3), np.uint8), np.ones(self.shape, np.float32), path="good")


# reader name -> (build the fake set, make the dataset, a file of its first sample to damage, image shape)
CASES = {
    "hypersim": (fake.hypersim, lambda r: Hypersim(r),
                 "ai_001_001/images/scene_cam_00_geometry_hdf5/frame.0000.depth_meters.hdf5", (8, 12)),
    "vkitti2": (fake.vkitti2, lambda r: VirtualKITTI2(r, scenes=["Scene01"], variations=["clone"]),
                "vkitti_2.0.3_depth/Scene01/clone/frames/depth/Camera_0/depth_00000.png", (8, 12)),
    "tartanair": (fake.tartanair, lambda r: TartanAir(r), "abandonedfactory/Easy/P000/depth_left/000000_left_depth.npy",
                  (8, 12)),
    "blendedmvs": (fake.blendedmvs, lambda r: BlendedMVS(r),
                   "5a3ca9cb270f0e3f14d0eddb/rendered_depth_maps/00000000.pfm", (8, 12)),
    "irs": (fake.irs, lambda r: IRS(r, r / "IRSDataset_TRAIN.list"), "IRSDataset/Home/ArchVizInterior03Data/d_1.exr",
            (8, 12)),
    "kitti": (fake.kitti, lambda r: KITTIDepth(r / "raw", r / "gts", r / "eigen_test_files_with_gt.txt"),
              f"gts/train/{fake.KITTI_DRIVE}/proj_depth/groundtruth/image_02/0000000069.png", (375, 1242)),
    "sintel": (fake.sintel, lambda r: Sintel(r), "training/final/alley_1/frame_0001.png", (8, 12)),
    "eth3d": (fake.eth3d, lambda r: ETH3D(r, depth_shape=(8, 12)),
              "depth/courtyard_dslr_depth/courtyard/ground_truth_depth/dslr_images/DSC_0286.JPG", (8, 12)),
    "diode": (fake.diode, lambda r: DIODE(r), "val/indoors/scene_00019/scan_00183/00019_00183_indoors_000_010_depth_mask.npy",
              (8, 12)),
    "da2k": (fake.da2k, lambda r: DA2K(r / "DA-2K"), "DA-2K/images/indoor/0001.jpg", (24, 32)),
    "u4k": (fake.u4k, lambda r: UnrealStereo4K(r, r / "splits/test.txt"), "00000/Disp0/00000.npy", (8, 12)),
    "cityscapes": (fake.cityscapes, lambda r: Cityscapes(r),
                   f"camera/val/frankfurt/{fake.CITY_STEM}_camera.json", (16, 32)),
    "scannetpp": (fake.scannetpp, lambda r: ScanNetPP(r), "data/0a5c013435/iphone/depth/frame_000000.png", (24, 32)),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_bad_file_is_named_then_skipped_and_counted(tmp_path, caplog, name, damage):
    build, make, rel, shape = CASES[name]
    build(tmp_path)
    bad = tmp_path / rel
    if damage == "corrupt":
        bad.write_bytes(bad.read_bytes()[:20] + b"\x00garbage")
    else:
        bad.unlink()
    ds = make(tmp_path)
    idx = 0
    with pytest.raises(DatasetError) as e:
        ds[idx]
    assert bad.name in e.value.path or bad.name in str(e.value), str(e.value)
    if damage == "missing":
        assert "not found" in str(e.value)
    caplog.set_level(logging.WARNING, logger="depth_anything_nb.data")
    safe = SkipBadSamples(torch.utils.data.ConcatDataset([torch.utils.data.Subset(ds, [idx]), Good(shape)]))
    s = safe[0]
    assert s["path"] == "good" and len(s["skipped"]) == 1 and bad.name in s["skipped"][0]
    assert safe.report.events == 1 and bad.name in caplog.text


def test_nyu_truncated_mat(tmp_path):
    fake.nyu(tmp_path, n=2, h=8, w=12)
    p = tmp_path / "nyu_depth_v2_labeled.mat"
    p.write_bytes(p.read_bytes()[:3000])
    with pytest.raises(DatasetError) as e:
        ds = NYUv2(p)
        ds[0]
    assert "nyu_depth_v2_labeled.mat" in str(e.value)


def test_unlabeled_and_custom_bad_files(tmp_path):
    for i in range(3):
        F.write_rgb(tmp_path / f"images/{i}.jpg", np.zeros((4, 6, 3), np.uint8))
        F.write_npy(tmp_path / f"depth/{i}.npy", np.ones((4, 6), np.float32))
    (tmp_path / "images/1.jpg").write_bytes(b"\xff\xd8\xff")
    assert SkipBadSamples(ImageFolder(tmp_path / "images"))[1]["key"] == "2"
    (tmp_path / "depth/2.npy").write_bytes(b"\x93NUMPY broken")
    safe = SkipBadSamples(CustomDepthDataset(tmp_path))
    assert [safe[i]["path"].rsplit("/", 1)[1] for i in range(3)] == ["0.jpg", "0.jpg", "0.jpg"]
    assert safe.report.events == 3 and len(safe.report) == 2  # 2.npy is hit twice (from index 1 and index 2)


def test_counts_survive_worker_processes(tmp_path):
    "Four bad files among eight: the DataLoader's workers skip them, the main process counts them."
    for i in range(8):
        F.write_rgb(tmp_path / f"images/{i}.png", np.full((4, 6, 3), i, np.uint8))
        z = np.full((4, 6), 1.0 + i, np.float32)
        if i in (1, 2):
            z[:] = np.nan  # all invalid: reported as empty
        F.write_npy(tmp_path / f"depth/{i}.npy", z)
    for i in (4, 7):
        (tmp_path / f"depth/{i}.npy").write_bytes(b"junk")
    dl = torch.utils.data.DataLoader(SkipBadSamples(CustomDepthDataset(tmp_path)), batch_size=2, num_workers=2,
                                     collate_fn=collate_samples)
    report, seen = BadDataReport(), []
    for b in dl:
        report.add(b)
        assert torch.isfinite(b["depth"]).all() and b["valid"].flatten(1).any(1).all()
        seen += b["path"]
    assert len(seen) == 8 and {p.rsplit("/", 1)[1] for p in seen} == {"0.png", "3.png", "5.png", "6.png"}
    assert len(report) == 4 and report.events == 5  # index 1 skips 1, 2; index 2 skips 2; 4 and 7 once each
    assert "no valid depth pixel" in str(report) and "4.npy" in str(report)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 0.0, -2.0])
def test_nonfinite_zero_negative_masked(bad):
    d = np.full((3, 4), 2.0, np.float32)
    d[1, 2] = bad
    s = make_sample(np.zeros((3, 4, 3), np.uint8), d)
    assert not s["valid"][1, 2] and s["depth"][1, 2] == 0 and s["valid"].sum() == 11 and np.isfinite(s["depth"]).all()


def test_empty_sample_reported_not_hidden(tmp_path, caplog):
    fake.vkitti2(tmp_path)
    cm = np.full((8, 12), 65535, np.uint16)  # a frame that is all sky
    F.write_png16(tmp_path / "vkitti_2.0.3_depth/Scene01/clone/frames/depth/Camera_0/depth_00000.png", cm)
    ds = VirtualKITTI2(tmp_path, scenes=["Scene01"], variations=["clone"])
    assert not ds[0]["valid"].any()
    caplog.set_level(logging.WARNING, logger="depth_anything_nb.data")
    kept = SkipBadSamples(ds, skip_empty=False)[0]  # evaluation: keep it, flagged, and say so
    assert kept["empty"] and "keeping sample" in caplog.text and "no valid depth pixel" in caplog.text
    s = SkipBadSamples(ds)[0]  # training: skip it
    assert s["valid"].any() and "rgb_00001" in s["path"] and "no valid depth pixel" in s["skipped"][0]


def test_too_many_bad_in_a_row_is_an_error(tmp_path):
    for i in range(3):
        (tmp_path / f"{i}.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match="3 bad samples in a row"):
        SkipBadSamples(ImageFolder(tmp_path))[0]
