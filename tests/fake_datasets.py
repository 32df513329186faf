"""Tiny datasets written in exactly the real on-disk layouts (paths spelled out literally, from the datasets' docs
and the official loaders), with the values they hold, for the reader tests. Writers of the file *encodings* come
from `depth_anything_nb.data.formats`; their byte-level correctness is tested separately in
test_datasets_formats.py against hand-built bytes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.io

from depth_anything_nb.data import formats as F


def frame(h=8, w=12, near=1.0, far=5.0, seed=0):
    "RGB uint8 and a depth map (a tilted plane, a nearer box) with distinct values."
    r = np.random.default_rng(seed)
    depth = np.linspace(far, near, h, dtype=np.float32)[:, None] + np.linspace(0, 0.1, w, dtype=np.float32)[None]
    depth[h // 4: h // 2, w // 4: w // 2] = near * 0.8
    rgb = r.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return rgb, depth.astype(np.float32)


def hypersim(root: Path, h=8, w=12):
    "Scene ai_001_001 cam_00 frames 0,1 (train), frame 2 excluded, ai_001_002 frame 0 (val). Returns planar depths."
    f = 886.81 * w / 1024
    u = np.arange(w) - w / 2 + 0.5
    v = np.arange(h) - h / 2 + 0.5
    ray = np.sqrt(u[None] ** 2 + v[:, None] ** 2 + f**2) / f
    planar = {}
    for scene, frames in (("ai_001_001", (0, 1, 2)), ("ai_001_002", (0,))):
        for i in frames:
            rgb, z = frame(h, w, seed=i)
            dist = (z * ray).astype(np.float16)
            dist[0, 0] = np.nan
            F.write_rgb(root / f"{scene}/images/scene_cam_00_final_preview/frame.{i:04d}.tonemap.jpg", rgb)
            F.write_hdf5(root / f"{scene}/images/scene_cam_00_geometry_hdf5/frame.{i:04d}.depth_meters.hdf5", dist)
            planar[(scene, i)] = dist.astype(np.float64) / ray
    (root / "metadata_images_split_scene_v1.csv").write_text(
        "scene_name,camera_name,frame_id,included_in_public_release,exclude_reason,split_partition_name\n"
        "ai_001_001,cam_00,0,True,,train\n"
        "ai_001_001,cam_00,1,True,,train\n"
        "ai_001_001,cam_00,2,False,scene_geometry,train\n"
        "ai_001_002,cam_00,0,True,,val\n")
    return planar


def vkitti2(root: Path, h=8, w=12):
    "Scene01/clone and Scene02/fog, Camera_0 and Camera_1, 2 frames each; rows 0-1 are sky (65535)."
    depths = {}
    for scene, var in (("Scene01", "clone"), ("Scene02", "fog")):
        lines = ["frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]"]
        for i in range(2):
            for cam in (0, 1):
                rgb, z = frame(h, w, near=3, far=70, seed=i + cam)
                cm = np.round(z * 100).astype(np.uint16)
                cm[:2] = 65535
                F.write_rgb(root / f"vkitti_2.0.3_rgb/{scene}/{var}/frames/rgb/Camera_{cam}/rgb_{i:05d}.jpg", rgb)
                F.write_png16(root / f"vkitti_2.0.3_depth/{scene}/{var}/frames/depth/Camera_{cam}/depth_{i:05d}.png", cm)
                depths[(scene, var, cam, i)] = cm
                lines.append(f"{i} {cam} {725.0087 + i} 725.0087 620.5 187")
        (root / f"vkitti_2.0.3_textgt/{scene}/{var}").mkdir(parents=True, exist_ok=True)
        (root / f"vkitti_2.0.3_textgt/{scene}/{var}/intrinsic.txt").write_text("\n".join(lines) + "\n")
    return depths


def tartanair(root: Path, h=8, w=12):
    rgb, z = frame(h, w, near=1, far=30)
    z[:2] = 9800.0
    z[3, 3] = np.inf
    for diff in ("Easy", "Hard"):
        F.write_rgb(root / f"abandonedfactory/{diff}/P000/image_left/000000_left.png", rgb)
        F.write_npy(root / f"abandonedfactory/{diff}/P000/depth_left/000000_left_depth.npy", z)
        F.write_rgb(root / f"abandonedfactory/{diff}/P000/image_right/000000_right.png", rgb)
    return rgb, z


def blendedmvs(root: Path, h=8, w=12):
    pid = "5a3ca9cb270f0e3f14d0eddb"
    rgb, z = frame(h, w, near=400, far=900)
    z[-1, :] = 0
    for i in range(2):
        F.write_rgb(root / f"{pid}/blended_images/{i:08d}.jpg", rgb)
        F.write_rgb(root / f"{pid}/blended_images/{i:08d}_masked.jpg", rgb)
        F.write_pfm(root / f"{pid}/rendered_depth_maps/{i:08d}.pfm", z)
        (root / f"{pid}/cams").mkdir(parents=True, exist_ok=True)
        (root / f"{pid}/cams/{i:08d}_cam.txt").write_text(
            "extrinsic\n1.0 0.0 0.0 0.5\n0.0 1.0 0.0 0.25\n0.0 0.0 1.0 -3.0\n0.0 0.0 0.0 1.0\n\n"
            "intrinsic\n575.0 0.0 383.5\n0.0 576.0 287.5\n0.0 0.0 1.0\n\n425.0 2.5 192 905.0\n")
    (root / f"{pid}/cams/pair.txt").write_text("2\n0\n1 1 100.0\n1\n1 0 100.0\n")
    (root / "BlendedMVS_training.txt").write_text(pid + "\n")
    return z


def irs(root: Path, h=8, w=12):
    rgb, z = frame(h, w, near=2, far=20)
    disp = (48.0 / z).astype(np.float32)
    disp[0, :3] = 0.2  # 240 m: beyond 200 m
    disp[1, 0] = np.nan
    disp[1, 1] = 0.0
    F.write_rgb(root / "IRSDataset/Home/ArchVizInterior03Data/l_1.png", rgb)
    F.write_rgb(root / "IRSDataset/Home/ArchVizInterior03Data/r_1.png", rgb)
    F.write_exr(root / "IRSDataset/Home/ArchVizInterior03Data/d_1.exr", disp)
    (root / "IRSDataset_TRAIN.list").write_text(
        "IRSDataset/Home/ArchVizInterior03Data/l_1.png IRSDataset/Home/ArchVizInterior03Data/r_1.png "
        "IRSDataset/Home/ArchVizInterior03Data/d_1.exr IRSDataset/Home/ArchVizInterior03Data/n_1.exr\n")
    return disp


KITTI_DRIVE = "2011_09_26_drive_0002_sync"


def kitti(root: Path, h=375, w=1242):
    "raw/ + gts/{train,val}/ + the Eigen list with a None line; returns the uint16 GT."
    rgb, z = frame(h, w, near=4, far=70)
    gt = np.round(z * 256).astype(np.uint16)
    gt[::3] = 0
    F.write_rgb(root / f"raw/2011_09_26/{KITTI_DRIVE}/image_02/data/0000000069.png", rgb)
    F.write_png16(root / f"gts/train/{KITTI_DRIVE}/proj_depth/groundtruth/image_02/0000000069.png", gt)
    (root / "raw/2011_09_26/calib_cam_to_cam.txt").write_text(
        "calib_time: 09-Jan-2012 13:57:47\ncorner_dist: 9.950000e-02\n"
        "P_rect_02: 7.215377e+02 0.000000e+00 6.095593e+02 4.485728e+01 0.000000e+00 7.215377e+02 1.728540e+02 "
        "2.163791e-01 0.000000e+00 0.000000e+00 1.000000e+00 2.745884e-03\n")
    (root / "eigen_test_files_with_gt.txt").write_text(
        f"2011_09_26/{KITTI_DRIVE}/image_02/data/0000000069.png "
        f"{KITTI_DRIVE}/proj_depth/groundtruth/image_02/0000000069.png 721.5377\n"
        f"2011_09_26/{KITTI_DRIVE}/image_02/data/0000000000.png None 721.5377\n")
    return rgb, gt


def nyu(root: Path, n=4, h=480, w=640):
    "nyu_depth_v2_labeled.mat (v7.3, MATLAB layout) + splits.mat (1-based: train 1,2; test 3,4)."
    frames = [frame(h, w, near=0.7, far=9, seed=i) for i in range(n)]
    raw = [np.where((np.arange(w)[None] + i) % 5 == 0, 0, d) for i, (_, d) in enumerate(frames)]
    F.write_mat_v73(root / "nyu_depth_v2_labeled.mat", {
        "images": np.stack([im.transpose(2, 1, 0) for im, _ in frames]),
        "depths": np.stack([d.T for _, d in frames]),
        "rawDepths": np.stack([d.T for d in raw])})
    scipy.io.savemat(root / "splits.mat", {"trainNdxs": np.array([[1.0], [2.0]]), "testNdxs": np.array([[3.0], [4.0]])})
    return frames, raw


def sintel(root: Path, h=8, w=12):
    out = {}
    for scene in ("alley_1", "market_2"):
        for i in (1, 2):
            rgb, z = frame(h, w, near=2, far=40, seed=i)
            for p in ("clean", "final"):
                F.write_rgb(root / f"training/{p}/{scene}/frame_{i:04d}.png", rgb)
            F.write_sintel_dpt(root / f"training/depth/{scene}/frame_{i:04d}.dpt", z)
            F.write_sintel_cam(root / f"training/camdata_left/{scene}/frame_{i:04d}.cam",
                               [[1120.0, 0, 511.5], [0, 1121.0, 217.5], [0, 0, 1]], np.eye(3, 4))
            out[(scene, i)] = (rgb, z)
    return out


def eth3d(root: Path, h=8, w=12):
    rgb, z = frame(h, w, near=2, far=12)
    z[:, :2] = np.inf
    F.write_rgb(root / "rgb/courtyard/images/dslr_images/DSC_0286.JPG", rgb)
    F.write_eth3d_depth(root / "depth/courtyard_dslr_depth/courtyard/ground_truth_depth/dslr_images/DSC_0286.JPG", z)
    (root / "eth3d_filename_list.txt").write_text(
        "rgb/courtyard/images/dslr_images/DSC_0286.JPG "
        "depth/courtyard_dslr_depth/courtyard/ground_truth_depth/dslr_images/DSC_0286.JPG\n")
    return z


def diode(root: Path, h=8, w=12):
    out = {}
    for t in ("indoors", "outdoor"):
        rgb, z = frame(h, w, near=1, far=60)
        mask = np.ones((h, w), np.float32)
        mask[:, :3] = 0
        z[:, :3] = 7.0  # garbage under the mask
        stem = f"val/{t}/scene_00019/scan_00183/00019_00183_{t}_000_010"
        F.write_rgb(root / f"{stem}.png", rgb)
        F.write_npy(root / f"{stem}_depth.npy", z[..., None])
        F.write_npy(root / f"{stem}_depth_mask.npy", mask)
        out[t] = z
    return out


def da2k(root: Path):
    rgb, _ = frame(24, 32)
    F.write_rgb(root / "DA-2K/images/indoor/0001.jpg", rgb)
    F.write_rgb(root / "DA-2K/images/underwater/0002.jpg", rgb)
    ann = {"images/indoor/0001.jpg": [{"point1": [20, 5], "point2": [2, 30], "closer_point": "point1"},
                                      {"point1": [10, 10], "point2": [3, 3], "closer_point": "point1"}],
           "images/underwater/0002.jpg": [{"point1": [23, 31], "point2": [0, 0], "closer_point": "point1"}]}
    (root / "DA-2K/annotations.json").write_text(json.dumps(ann))
    return ann


def u4k(root: Path, h=8, w=12, fx=1920.0, baseline=0.3):
    "Scene 00000, 2 frames, Image/Disp/Extrinsics for both views, .raw copies, and a 4-column split file."
    lines, depths = [], []
    K = np.array([[fx, 0, 1919.5], [0, fx + 1, 1079.5], [0, 0, 1]])
    for i in range(2):
        rgb, z = frame(h, w, near=2, far=70, seed=i)
        disp = (fx * baseline / z).astype(np.float32)
        disp[0, 0] = np.inf
        for v in (0, 1):
            F.write_rgb(root / f"00000/Image{v}/{i:05d}.png", rgb)
            F.write_raw_bgr(root / f"00000/Image{v}/{i:05d}.raw", rgb)
            F.write_npy(root / f"00000/Disp{v}/{i:05d}.npy", disp)
            pose = np.eye(3, 4)
            pose[0, 3] = 10.0 - v * baseline
            F.write_u4k_extrinsics(root / f"00000/Extrinsics{v}/{i:05d}.txt", K, pose)
        lines.append(f"00000/Image0/{i:05d}.png 00000/Image1/{i:05d}.png 00000/Disp0/{i:05d}.npy 00000/Disp1/{i:05d}.npy")
        depths.append((rgb, disp))
    (root / "splits").mkdir(exist_ok=True)
    (root / "splits/test.txt").write_text("\n".join(lines) + "\n")
    return depths


CITY_STEM = "frankfurt_000000_000294"


def cityscapes(root: Path, h=16, w=32, baseline=0.209313, fx=2262.52):
    rgb, z = frame(h, w, near=4, far=80)
    p = np.round(baseline * fx / z * 256 + 1).astype(np.uint16)
    p[3, 5], p[3, 6] = 0, 1
    seg = np.full((h, w, 3), (128, 64, 128), np.uint8)
    seg[:2] = (70, 130, 180)
    F.write_rgb(root / f"leftImg8bit/val/frankfurt/{CITY_STEM}_leftImg8bit.png", rgb)
    F.write_png16(root / f"disparity/val/frankfurt/{CITY_STEM}_disparity.png", p)
    F.write_cityscapes_camera(root / f"camera/val/frankfurt/{CITY_STEM}_camera.json", baseline, fx, 2265.3, 1096.98,
                              513.137)
    F.write_rgb(root / f"gtFine/val/frankfurt/{CITY_STEM}_gtFine_color.png", seg)
    (root / "val.txt").write_text(f"leftImg8bit/val/frankfurt/{CITY_STEM}_leftImg8bit.png "
                                  f"disparity/val/frankfurt/{CITY_STEM}_disparity.png\n")
    return p, seg


def scannetpp(root: Path, h=24, w=32, dh=6, dw=8):
    rgb, _ = frame(h, w)
    _, z = frame(dh, dw, near=0.5, far=6)
    mm = np.round(z * 1000).astype(np.uint16)
    mm[0, 0] = 0
    base = root / "data/0a5c013435/iphone"
    F.write_rgb(base / "rgb/frame_000000.jpg", rgb)
    F.write_png16(base / "depth/frame_000000.png", mm)
    (base / "colmap").mkdir(parents=True)
    (base / "colmap/cameras.txt").write_text(
        "# Camera list with one line of data per camera:\n#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n"
        f"1 OPENCV {w} {h} 30.5 31.5 15.25 11.75 0.01 -0.02 0.0 0.0\n")
    return mm
