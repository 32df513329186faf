"""File-format primitives: readers checked against bytes built by hand from the format specs (not by our writers),
round trips of the writers (hypothesis), and clear errors on bad files."""
import os
import struct

import cv2
import h5py
import numpy as np
import pytest
import scipy.io
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from depth_anything_nb.data import formats as F
from depth_anything_nb.data.core import DatasetError

floats32 = st.floats(-1e6, 1e6, width=32, allow_nan=False)
shapes = st.tuples(st.integers(1, 9), st.integers(1, 9))


def test_pfm_reads_hand_built_big_and_little_endian(tmp_path):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)  # top row [0 1 2]
    # big-endian, positive scale, rows stored bottom-to-top, header split over lines like BlendedMVS files
    (tmp_path / "be.pfm").write_bytes(b"Pf\n3 2\n1.0\n" + a[::-1].astype(">f4").tobytes())
    (tmp_path / "le.pfm").write_bytes(b"Pf\n3\n2\n-1.000000\n" + a[::-1].astype("<f4").tobytes())
    assert np.array_equal(F.read_pfm(tmp_path / "be.pfm"), a)
    assert np.array_equal(F.read_pfm(tmp_path / "le.pfm"), a)
    rgb = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    (tmp_path / "c.pfm").write_bytes(b"PF\n2 2\n-1\n" + rgb[::-1].astype("<f4").tobytes())
    assert np.array_equal(F.read_pfm(tmp_path / "c.pfm"), rgb)


@settings(max_examples=25, deadline=None)
@given(arrays(np.float32, shapes, elements=floats32), st.booleans())
def test_pfm_round_trip(tmp_path_factory, a, le):
    p = tmp_path_factory.mktemp("pfm") / "x.pfm"
    F.write_pfm(p, a, little_endian=le)
    assert np.array_equal(F.read_pfm(p), a)


def test_pfm_errors(tmp_path):
    (tmp_path / "short.pfm").write_bytes(b"Pf\n3 2\n-1\n" + b"\0" * 8)
    (tmp_path / "magic.pfm").write_bytes(b"P6\n3 2\n255\n" + b"\0" * 18)
    for name, msg in (("short.pfm", "header says"), ("magic.pfm", "not a PFM")):
        with pytest.raises(DatasetError, match=msg) as e:
            F.read_pfm(tmp_path / name)
        assert name in str(e.value)
    with pytest.raises(DatasetError, match="file not found"):
        F.read_pfm(tmp_path / "missing.pfm")


def test_sintel_dpt_and_cam_hand_built(tmp_path):
    d = np.arange(12, dtype=np.float32).reshape(3, 4)
    (tmp_path / "f.dpt").write_bytes(b"PIEH" + struct.pack("<ii", 4, 3) + d.astype("<f4").tobytes())
    assert struct.unpack("<f", b"PIEH")[0] == 202021.25
    assert np.array_equal(F.read_sintel_dpt(tmp_path / "f.dpt"), d)
    K, P = np.arange(9.0).reshape(3, 3), np.arange(12.0).reshape(3, 4) + 100
    (tmp_path / "f.cam").write_bytes(b"PIEH" + K.astype("<f8").tobytes() + P.astype("<f8").tobytes())
    K2, P2 = F.read_sintel_cam(tmp_path / "f.cam")
    assert np.array_equal(K2, K) and np.array_equal(P2, P)
    (tmp_path / "bad.dpt").write_bytes(b"XXXX" + struct.pack("<ii", 4, 3) + d.tobytes())
    with pytest.raises(DatasetError, match="bad tag"):
        F.read_sintel_dpt(tmp_path / "bad.dpt")
    (tmp_path / "trunc.dpt").write_bytes(b"PIEH" + struct.pack("<ii", 4, 3) + d.tobytes()[:-4])
    with pytest.raises(DatasetError, match="does not match"):
        F.read_sintel_dpt(tmp_path / "trunc.dpt")


def test_png16_exact_and_8bit_rejected(tmp_path):
    a = np.array([[0, 1, 255, 256], [65535, 12345, 2, 3]], np.uint16)
    cv2.imwrite(str(tmp_path / "a.png"), a)  # OpenCV's own writer, not ours
    assert np.array_equal(F.read_png16(tmp_path / "a.png"), a)
    cv2.imwrite(str(tmp_path / "b.png"), a.astype(np.uint8))
    with pytest.raises(DatasetError, match="16-bit"):
        F.read_png16(tmp_path / "b.png")
    with pytest.raises(DatasetError, match="8-bit PNG"):
        F.read_depth_file(tmp_path / "b.png")
    (tmp_path / "c.png").write_bytes((tmp_path / "a.png").read_bytes()[:30])
    with pytest.raises(DatasetError, match="corrupt"):
        F.read_png16(tmp_path / "c.png")


def test_rgb_is_rgb_and_truncated_jpeg_is_an_error(tmp_path):
    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[..., 0] = 200  # blue in OpenCV's order
    cv2.imwrite(str(tmp_path / "b.png"), bgr)
    rgb = F.read_rgb(tmp_path / "b.png")
    assert (rgb[..., 2] == 200).all() and (rgb[..., 0] == 0).all()
    cv2.imwrite(str(tmp_path / "x.jpg"), np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = (tmp_path / "x.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="cannot decode") as e:
        F.read_rgb(tmp_path / "t.jpg")
    assert e.value.path.endswith("t.jpg")


def test_eth3d_real_size_memory_mapped(tmp_path):
    "The real 4032x6048 float32 layout, written as a sparse memory-mapped file (no 97 MB of writes)."
    p = tmp_path / "DSC_0001.JPG"
    h, w = F.ETH3D_SHAPE
    mm = np.memmap(p, dtype="<f4", mode="w+", shape=(h, w))
    mm[0, :5] = [1.0, 2.0, np.inf, 0.5, 3.25]
    mm[h - 1, w - 1] = 7.5
    mm[2000, 3000] = np.inf
    mm.flush()
    del mm
    assert os.path.getsize(p) == 4 * h * w
    d = F.read_eth3d_depth(p)
    assert d.shape == (4032, 6048) and d.dtype == np.float32
    assert d[0, :5].tolist() == [1.0, 2.0, np.inf, 0.5, 3.25] and d[-1, -1] == 7.5 and np.isinf(d[2000, 3000])
    (tmp_path / "small.JPG").write_bytes(b"\0" * 16)
    with pytest.raises(DatasetError, match="expected 97542144"):
        F.read_eth3d_depth(tmp_path / "small.JPG")


def test_exr_channels_and_errors(tmp_path):
    OpenEXR = pytest.importorskip("OpenEXR")
    a = np.random.default_rng(0).random((5, 7)).astype(np.float32)
    with OpenEXR.File({"type": OpenEXR.scanlineimage, "compression": OpenEXR.PIZ_COMPRESSION},
                      {"R": a * 2, "G": a, "B": a * 3}) as f:
        f.write(str(tmp_path / "rgb.exr"))
    assert np.array_equal(F.read_exr(tmp_path / "rgb.exr"), a)  # G, like IRS's loader
    assert np.array_equal(F.read_exr(tmp_path / "rgb.exr", channel="B"), a * 3)
    with pytest.raises(DatasetError, match="no channel"):
        F.read_exr(tmp_path / "rgb.exr", channel="Z")
    (tmp_path / "bad.exr").write_bytes(b"v/1\x01garbage")
    with pytest.raises(DatasetError, match="cannot read EXR"):
        F.read_exr(tmp_path / "bad.exr")


@settings(max_examples=15, deadline=None)
@given(arrays(np.float32, shapes, elements=st.floats(0, 1e4, width=32)))
def test_exr_and_eth3d_and_dpt_round_trip(tmp_path_factory, a):
    d = tmp_path_factory.mktemp("rt")
    F.write_exr(d / "x.exr", a)
    F.write_eth3d_depth(d / "x.JPG", a)
    F.write_sintel_dpt(d / "x.dpt", a)
    assert np.array_equal(F.read_exr(d / "x.exr"), a)
    assert np.array_equal(F.read_eth3d_depth(d / "x.JPG", a.shape), a)
    assert np.array_equal(F.read_sintel_dpt(d / "x.dpt"), a)


def test_mat_files(tmp_path):
    F.write_mat_v73(tmp_path / "v73.mat", {"depths": np.ones((2, 5, 4), np.float32)})
    head = (tmp_path / "v73.mat").read_bytes()[:128]
    assert head.startswith(b"MATLAB 7.3 MAT-file") and head[126:128] == b"IM"
    with h5py.File(tmp_path / "v73.mat") as f:
        assert f["depths"].shape == (2, 5, 4)
    with pytest.raises(DatasetError, match="v7.3"):
        F.read_mat(tmp_path / "v73.mat")
    scipy.io.savemat(tmp_path / "old.mat", {"testNdxs": np.array([[3.0], [9.0]])})
    assert F.read_mat(tmp_path / "old.mat")["testNdxs"].ravel().tolist() == [3.0, 9.0]


def test_mvsnet_cam_as_written_by_blendedmvs(tmp_path):
    text = ("extrinsic\n0.970263 0.00747983 0.241939 -191.02 \n-0.0147429 0.999493 0.0282234 3.28449 \n"
            "-0.241605 -0.030951 0.969881 22.5401 \n0.0 0.0 0.0 1.0 \n\nintrinsic\n2892.33 0 823.206 \n"
            "0 2883.18 619.072 \n0 0 1 \n\n425.0 2.5\n")
    (tmp_path / "00000000_cam.txt").write_text(text)
    cam = F.read_mvsnet_cam(tmp_path / "00000000_cam.txt")
    assert cam["extrinsic"][0, 3] == -191.02 and cam["intrinsic"][1, 2] == 619.072
    assert cam["depth_min"] == 425.0 and cam["depth_interval"] == 2.5 and "depth_max" not in cam
    (tmp_path / "bad_cam.txt").write_text("intrinsic\n1 0 0\n")
    with pytest.raises(DatasetError, match="not an MVSNet"):
        F.read_mvsnet_cam(tmp_path / "bad_cam.txt")


def test_u4k_extrinsics_cityscapes_camera_colmap(tmp_path):
    (tmp_path / "e.txt").write_text("1920 0 1920 0 1920 1080 0 0 1\n1 0 0 -0.3 0 1 0 0 0 0 1 0\n")
    K, pose = F.read_u4k_extrinsics(tmp_path / "e.txt")
    assert K[0, 0] == 1920 and K[1, 2] == 1080 and pose[0, 3] == -0.3
    (tmp_path / "short.txt").write_text("1 2 3\n")
    with pytest.raises(DatasetError, match="expected 2 lines"):
        F.read_u4k_extrinsics(tmp_path / "short.txt")
    (tmp_path / "c.json").write_text('{"extrinsic": {"baseline": 0.209313, "pitch": 0.038, "roll": 0.0, "x": 1.7, '
                                     '"y": 0.1, "yaw": -0.0195, "z": 1.18}, "intrinsic": {"fx": 2262.52, '
                                     '"fy": 2265.30, "u0": 1096.98, "v0": 513.137}}')
    assert F.read_cityscapes_camera(tmp_path / "c.json") == dict(baseline=0.209313, fx=2262.52, fy=2265.30,
                                                                 u0=1096.98, v0=513.137)
    (tmp_path / "cameras.txt").write_text("# c\n1 SIMPLE_PINHOLE 100 80 90.0 49.5 39.5\n2 PINHOLE 10 8 1 2 3 4\n")
    cams = F.read_colmap_cameras(tmp_path / "cameras.txt")
    assert (cams[1]["fx"], cams[1]["fy"], cams[1]["cx"]) == (90.0, 90.0, 49.5) and cams[2]["cy"] == 4.0


def test_raw_bgr_and_npy(tmp_path):
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    (tmp_path / "x.raw").write_bytes(rgb[..., ::-1].tobytes())  # BGR, headerless
    assert np.array_equal(F.read_raw_bgr(tmp_path / "x.raw", (2, 3)), rgb)
    with pytest.raises(DatasetError, match="expected 24883200"):
        F.read_raw_bgr(tmp_path / "x.raw")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DatasetError, match="cannot read numpy"):
        F.read_npy(tmp_path / "obj.npy")  # never unpickles
    np.savez(tmp_path / "d.npz", depth=np.ones((2, 2)), other=np.zeros(3))
    assert F.read_npy(tmp_path / "d.npz").shape == (2, 2)


def test_read_depth_file_dispatch(tmp_path):
    a = np.random.default_rng(1).random((4, 6)).astype(np.float32)
    cv2.imwrite(str(tmp_path / "a.tif"), a)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["dataset"] = a
    np.save(tmp_path / "a.npy", a[..., None])
    for name in ("a.tif", "a.h5", "a.npy"):
        assert np.array_equal(F.read_depth_file(tmp_path / name), a), name
    with pytest.raises(DatasetError, match="unknown depth file extension"):
        F.read_depth_file(tmp_path / "a.bmp")
    np.save(tmp_path / "b.npy", np.zeros((2, 3, 4)))
    with pytest.raises(DatasetError, match="HxW"):
        F.read_depth_file(tmp_path / "b.npy")


def _pil_nearest_positions(n_in, n_out):
    "Independent model of PIL's NEAREST sampling: an accumulated float step from half a step."
    step, x, out = n_in / n_out, n_in / n_out * 0.5, []
    for _ in range(n_out):
        out.append(min(int(x), n_in - 1))
        x += step
    return np.array(out)


@pytest.mark.parametrize("src,dst", [((192, 256), (1440, 1920)), ((5, 7), (13, 20)), ((4, 4), (8, 8))])
def test_upsample_nearest_matches_pil_positions(src, dst):
    a = np.arange(src[0] * src[1], dtype=np.float32).reshape(src)
    up = F.upsample_nearest(a, dst)
    assert np.array_equal(up, a[_pil_nearest_positions(src[0], dst[0])][:, _pil_nearest_positions(src[1], dst[1])])


def test_writers_are_atomic(tmp_path, monkeypatch):
    "A failing write leaves neither a partial target nor a temporary file."
    F.write_png16(tmp_path / "d.png", np.ones((2, 2), np.uint16))
    before = (tmp_path / "d.png").read_bytes()
    monkeypatch.setattr(F.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        F.write_png16(tmp_path / "d.png", np.zeros((2, 2), np.uint16))
    assert (tmp_path / "d.png").read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["d.png"]
