"""The procedural world: intersections against sphere tracing of signed distance functions, culling against brute
force, exact depth across resolutions (up to 4K), determinism, styles, the cached dataset, Middlebury."""
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import depth_anything_nb.data.procedural as proc
from depth_anything_nb.data.procedural import (
    REAL,
    SYNTHETIC,
    Backdrop,
    Box,
    Camera,
    Cylinders,
    ProceduralDepthDataset,
    Sphere,
    make_scene,
    middlebury_motorcycle,
    render,
    render_linear,
    world_style,
)


# ------------------------------------------------------------------ intersections vs sphere tracing
def sdf_sphere(p, c, r):
    return np.linalg.norm(p - c, axis=-1) - r


def sdf_box(p, c, half, R):
    q = np.abs((p - c) @ R) - half
    return np.linalg.norm(np.maximum(q, 0), axis=-1) + np.minimum(q.max(-1), 0)


def sdf_capped_cylinder(p, p0, B, L, r):
    q = (p - p0) @ B
    d = np.stack([np.hypot(q[:, 0], q[:, 1]) - r, np.abs(q[:, 2] - L / 2) - L / 2], -1)
    return np.minimum(d.max(-1), 0) + np.linalg.norm(np.maximum(d, 0), axis=-1)


def sphere_trace(sdf, o, d, t_max=50.0, steps=400):
    "First surface hit along unnormalised rays: (t in units of d, hit?, closest approach)."
    dn = d / np.linalg.norm(d, axis=1, keepdims=True)
    s = np.zeros(len(d))
    closest = np.full(len(d), np.inf)
    for _ in range(steps):
        dist = sdf(o + s[:, None] * dn)
        closest = np.minimum(closest, dist)
        s = np.where((dist > 1e-7) & (s < t_max), s + dist, s)
    hit = sdf(o + s[:, None] * dn) < 1e-5
    return s / np.linalg.norm(d, axis=1), hit, closest


def random_rays(center, n=3000, seed=0, spread=3.0):
    rng = np.random.default_rng(seed)
    o = center + rng.normal(size=(n, 3)) * spread
    o += np.sign(o - center) * 1.5  # start outside the object
    target = center + rng.normal(size=(n, 3)) * 0.8
    return o.astype(np.float32), (target - o).astype(np.float32) * rng.uniform(0.3, 3, (n, 1)).astype(np.float32)


@pytest.mark.parametrize("name", ["sphere", "box", "box_yawed", "cylinder", "rod_tilted"])
def test_intersections_match_sphere_tracing(name):
    c = np.array([0.3, 1.1, 5.0])
    if name == "sphere":
        prim, sdf = Sphere(c, 0.9), lambda p: sdf_sphere(p, c, 0.9)
    elif name.startswith("box"):
        yaw = 37.0 if name == "box_yawed" else 0.0
        prim = Box(c, (0.6, 0.4, 1.0), yaw)
        sdf = lambda p: sdf_box(p, c, np.array([0.6, 0.4, 1.0]), prim.R.astype(np.float64))  # noqa: E731
    else:
        axis = (0, 1, 0) if name == "cylinder" else (0.4, 0.8, -0.3)
        radius = 0.5 if name == "cylinder" else 0.05
        prim = Cylinders(c - 0.8 * np.asarray(axis) / np.linalg.norm(axis), axis, 1.6, radius)
        sdf = lambda p: sdf_capped_cylinder(p, prim.p0[0].astype(np.float64), prim.B[0].astype(np.float64), 1.6, radius)  # noqa: E731
    results = []
    o, d = random_rays(c, seed=1)  # a ray per origin (like shadow rays)
    t, _ = prim.hit(o, d)
    results.append((t, *sphere_trace(sdf, o.astype(np.float64), d.astype(np.float64))))
    eye = (c + [0.5, 0.7, -6]).astype(np.float32)  # one shared origin (like camera rays)
    _, d = random_rays(c, seed=2)
    d = (c + (d - d.mean(0)) / np.abs(d).max() * 2 - eye).astype(np.float32)
    t, _ = prim.hit(eye, d)
    results.append((t, *sphere_trace(sdf, np.broadcast_to(eye, d.shape).astype(np.float64), d.astype(np.float64))))
    for t, t_ref, hit_ref, closest in results:
        clear = np.abs(closest) > 2e-3 if name != "rod_tilted" else np.abs(closest) > 2e-4  # not grazing
        assert (np.isfinite(t) == hit_ref)[clear | hit_ref].mean() > 0.999
        both = np.isfinite(t) & hit_ref
        assert both.sum() > (20 if name == "rod_tilted" else 100) and np.abs(t[both] - t_ref[both]).max() < 1e-3 * np.abs(t_ref[both]).max()


def test_backdrop_hits_lie_on_the_ring_below_the_hills():
    ring = Backdrop(1.0, -2.0, 40.0, base=6.0, amps=[2.0, 1.0], phases=[0.3, 1.0])
    cam = Camera(height=1.5, pitch=-5, yaw=20, hfov=80, x=1.0, z=-2.0)
    d = cam.rays(60, 80)
    t, _ = ring.hit(cam.origin.astype(np.float32), d)
    p = cam.origin + t[:, None] * d
    hit = np.isfinite(t)
    assert 0.1 < hit.mean() < 1
    assert np.allclose(np.hypot(p[hit, 0] - 1.0, p[hit, 2] + 2.0), 40.0, rtol=1e-4)
    th = np.arctan2(p[:, 0] - 1.0, p[:, 2] + 2.0)
    height = 6.0 + 2.0 * np.sin(th + 0.3) + 1.0 * np.sin(2 * th + 1.0)
    assert (p[hit, 1] <= height[hit] + 1e-3).all()
    miss = ~hit & (d[:, 1] > 0)  # rays going up without a hit pass above the hills
    assert (p[miss & np.isfinite(p[:, 1]), 1] > height[miss & np.isfinite(p[:, 1])] - 1e-3).all()


# ------------------------------------------------------------------ the renderer
def _no_culling(monkeypatch):
    monkeypatch.setattr(proc, "_screen_culling", lambda cam, h, w, objects: [None] * len(objects))
    monkeypatch.setattr(proc, "_shadow_culling", lambda cam, h, w, objects, to_sun: [
        None if ob.casts_shadow and ob.center is not None else False for ob in objects])


@pytest.mark.parametrize("style", ["synthetic", "real"])
def test_culling_changes_nothing(style, monkeypatch):
    "Screen-space and shadow culling are pure speed-ups: brute force over every ray gives the same image and depth."
    scenes = [make_scene(i, style, seed=11) for i in range(6)]
    fast = [render_linear(s, 36, 48) for s in scenes]
    _no_culling(monkeypatch)
    for (rad, depth), s in zip(fast, scenes):
        rad_bf, depth_bf = render_linear(s, 36, 48)
        assert np.array_equal(depth, depth_bf)
        assert np.abs(rad - rad_bf).max() < 1e-5


def test_depth_is_exact_at_shared_pixel_centres_and_bands_do_not_matter():
    for style in ("synthetic", "real"):
        for i in range(1, 5):  # odd factors: the very same rays, the very same depth bits
            scene = make_scene(i, style, seed=4)
            _, d1 = render_linear(scene, 45, 80)
            _, d3 = render_linear(scene, 135, 240)
            assert np.array_equal(d3[1::3, 1::3], d1), (style, i)
        scene = make_scene(2, style, seed=4)
        _, d1 = render_linear(scene, 45, 80)
        rad5, d5 = render_linear(scene, 225, 400)
        assert np.array_equal(d5[2::5, 2::5], d1)
        rad5b, d5b = render_linear(scene, 225, 400, max_pixels=3000)  # other bands of rows
        # Same machine, other bands: every per-pixel product is elementwise (`_dot`, `_along`, `_mat3`; no BLAS,
        # whose summation order depends on the batch size), and elementwise IEEE ops give the same bits for any
        # array length, so depth AND radiance are bit-identical. (Across CPUs they may differ in the last bits.)
        assert np.array_equal(d5, d5b) and np.array_equal(rad5, rad5b)
        img, d_ss, _ = render(scene, (45, 80), supersample=5)
        assert np.array_equal(d_ss, d1)  # supersampling anti-aliases the image, depth stays exact


def test_4k_render_agrees_with_a_small_render_after_downsampling():
    scene = make_scene(3, "synthetic")
    rad4k, depth4k = render_linear(scene, 2160, 3840)
    assert np.isfinite(depth4k).all() and depth4k.min() > 0.3
    small = cv2.resize(rad4k, (240, 135), interpolation=cv2.INTER_AREA)
    rad, _ = render_linear(scene, 135 * 5, 240 * 5)
    rad = rad.reshape(135, 5, 240, 5, 3).mean((1, 3))
    assert np.abs(small - rad).mean() / rad.mean() < 0.005
    img = proc.develop(rad4k, scene.develop, np.random.default_rng(0))
    assert img.shape == (2160, 3840, 3) and img.dtype == np.uint8


def test_real_style_agrees_across_resolutions():
    scene = make_scene(5, "real")
    rad_big, depth_big = render_linear(scene, 1080, 1920)
    assert (~np.isfinite(depth_big)).any()  # sky
    small = cv2.resize(rad_big, (240, 135), interpolation=cv2.INTER_AREA)
    rad, _ = render_linear(scene, 135 * 5, 240 * 5)
    rad = rad.reshape(135, 5, 240, 5, 3).mean((1, 3))
    assert np.abs(small - rad).mean() / rad.mean() < 0.01


def test_scenes_are_deterministic_and_distinct():
    a = render(make_scene(9, "real", seed=2), 48)
    b = render(make_scene(9, "real", seed=2), 48)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    others = [render(make_scene(9, "real", seed=3), 48)[0], render(make_scene(10, "real", seed=2), 48)[0],
              render(make_scene(9, "synthetic", seed=2), 48)[0]]
    assert not any(np.array_equal(a[0], o) for o in others)


def test_any_resolution_from_64_px():
    for size in (64, (64, 97), (100, 64)):
        img, depth, (fx, fy, cx, cy) = render(make_scene(0, "real"), size)
        h, w = (size, size) if isinstance(size, int) else size
        assert img.shape == (h, w, 3) and depth.shape == (h, w) and (cx, cy) == ((w - 1) / 2, (h - 1) / 2)
    with pytest.raises(ValueError, match="odd"):
        render(make_scene(0), 64, supersample=2)


# ------------------------------------------------------------------ styles
def test_style_gap_interpolates_between_the_domains():
    assert world_style("real", 0.0).lerp(SYNTHETIC, 0.0).p_room == SYNTHETIC.p_room
    for f in proc.fields(proc.WorldStyle):
        if f.name != "name":
            assert getattr(world_style("real", 0.0), f.name) == getattr(SYNTHETIC, f.name)
            assert getattr(world_style("real", 1.0), f.name) == getattr(REAL, f.name)
    with pytest.raises(ValueError, match="gap"):
        world_style("real", 1.5)
    with pytest.raises(ValueError, match="unknown style"):
        world_style("cartoon")
    sky = [np.mean([(~np.isfinite(render(make_scene(i, "real", gap=g), 32)[1])).mean() for i in range(16)]) for g in (0.0, 1.0)]
    assert sky[0] == 0 and sky[1] > 0.1  # rooms only at gap 0; open sky at gap 1


def test_scene_layout():
    "The camera is outside every object, inside the room (walls on both sides), and nothing is seen beyond a wall."
    rooms = 0
    for style in ("synthetic", "real"):
        for i in range(40):
            scene = make_scene(i, style, seed=8)
            o = scene.camera.origin
            for prim, _ in scene.objects:
                if prim.center is not None:
                    assert np.linalg.norm(prim.center - o) > prim.radius + 0.49
            walls = [p for p, _ in scene.objects if isinstance(p, proc.Plane)]
            side = [float(p.c * p.n[0]) for p in walls if abs(p.n[0]) == 1]  # x positions of side walls
            if len(side) == 2:
                rooms += 1
                assert side[0] * side[1] < 0
            if i < 6:
                _, depth = render_linear(scene, 24, 32)
                p = o + depth.reshape(-1, 1) * scene.camera.rays(24, 32)
                p = p[np.isfinite(depth.ravel())]
                for wall in walls:  # every visible point is on the camera's side of every wall
                    cam_side = np.sign(wall.n @ o - wall.c)
                    assert (cam_side * (p @ wall.n - wall.c) > -1e-3).all()
    assert rooms > 5


# ------------------------------------------------------------------ dataset and cache
def test_dataset_samples_and_cache(tmp_path):
    ds = ProceduralDepthDataset(5, (40, 56), "real", seed=1, cache_dir=tmp_path)
    fresh = [ProceduralDepthDataset(5, (40, 56), "real", seed=1)[i] for i in range(5)]
    assert ds.prerender(num_workers=2, progress=False) == 5
    for i in range(5):
        s = ds[i]
        assert np.array_equal(s["image"], fresh[i]["image"]) and np.array_equal(s["depth"], fresh[i]["depth"])
        assert s["path"] == ds.key(i) and s["depth_unit"] == "m" and s["valid"].any()
    assert sorted(p.name for p in ds.cache.iterdir()) == [f"{i:07d}.npz" for i in range(5)]
    assert ds.key(0) != ProceduralDepthDataset(5, (40, 56), "real", seed=1, gap=0.5).key(0)
    with pytest.raises(IndexError):
        ds[5]
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert batch["depth"].shape == (2, 40, 56)


def test_a_crash_while_caching_leaves_no_file(tmp_path, monkeypatch):
    ds = ProceduralDepthDataset(2, 32, cache_dir=tmp_path)

    def dies(f, **arrays):  # a partial archive, then the process is interrupted (file object or path alike)
        if hasattr(f, "write"):
            f.write(b"PK\x03\x04 partial")
        else:
            Path(f).write_bytes(b"PK\x03\x04 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez_compressed", dies)
    with pytest.raises(KeyboardInterrupt):
        ds[0]
    assert list(ds.cache.iterdir()) == []  # neither a partial .npz nor a temp file
    monkeypatch.undo()
    s = ds[0]
    (ds.cache / "0000000.npz").write_bytes(b"damaged")
    assert np.array_equal(ds[0]["image"], s["image"])  # re-rendered


def test_middlebury_motorcycle_depth_follows_the_calibration():
    m = middlebury_motorcycle()
    c = proc.MOTORCYCLE_CALIB
    v = m["valid"]
    assert np.allclose(m["depth"][v], c["f"] * c["baseline"] / (m["disparity"][v] + c["doffs"]), rtol=1e-6)
    assert (m["depth"][~v] == 0).all() and m["intrinsics"] == (c["f"], c["f"], c["cx"], c["cy"])
    assert m["right"].shape == m["image"].shape == (500, 741, 3)
    assert math.isclose(float(np.median(m["depth"][v])), 3.5, abs_tol=1.0)  # a motorcycle a few metres away
