"""The JupyterLab explorer, driven headlessly: set widget values, click buttons, check state, figures and files."""

import datetime
import json

import cv2
import numpy as np
import pytest
import torch

pytest.importorskip("ipywidgets")

from depth_anything_nb.models.dpt import DepthAnythingV2, perturbed_state_dict
from depth_anything_nb.apps.explorer import (CLOUD_TAB, PROFILE_TAB, PRV2_RANDOM, RANDOM, RANDOM_NOTE, DepthResult, Explorer, ExplorerUI,
                                        LoadedModel, line_pixels, load_sample, metric_depth, point_cloud)
from depth_anything_nb.models.inference import camera_intrinsics, infer_image, read_depth_png16, read_ply

SCENE = "procedural synthetic #0"  # 240×320, exact depth and intrinsics


@pytest.fixture
def ui(tmp_path):
    return ExplorerUI(Explorer(device="cpu"), sample=SCENE, runs_root=tmp_path / "runs")


def upload_value(data: bytes, name: str):
    "What FileUpload.value holds after the browser sent one file (ipywidgets 8)."
    return ({"name": name, "type": "image/png", "size": len(data), "content": memoryview(data),
             "last_modified": datetime.datetime.now(datetime.timezone.utc)},)


def png_bytes(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


def trained_like(encoder: str, max_depth=None, seed: int = 1) -> DepthAnythingV2:
    "A model with deterministic non-trivial weights (stands in for a trained one)."
    model = DepthAnythingV2.from_config(encoder, max_depth=max_depth)
    model.load_state_dict(perturbed_state_dict(model, seed))
    return model.eval()


def is_error(ui) -> bool:
    return "#b00020" in ui.status.value


# -- the default view ---------------------------------------------------------------------------------------
def test_default_view_is_a_random_model_and_says_so(ui):
    ex = ui.explorer
    assert not is_error(ui) and RANDOM_NOTE in ui.status.value
    assert RANDOM_NOTE in ui.figures["views"].get_suptitle()
    assert bytes(ui.views.value).startswith(b"\x89PNG")
    # the random model is DepthAnythingV2 seeded with 0 and its last bias at 1 (as pipeline from-scratch models)
    torch.manual_seed(0)
    reference = DepthAnythingV2.from_config("mini-t", output_bias=1.0).eval()
    expected = infer_image(reference, load_sample(SCENE).bgr, 126)
    np.testing.assert_array_equal(ex.result().depth, expected)
    assert ex.counts == {"model_loads": 1, "forward_passes": 1}


def test_colormap_redraws_without_running_the_network(ui):
    ex, before, png = ui.explorer, dict(ui.explorer.counts), ui.views.value
    ui.cmap.value = "magma"
    assert dict(ex.counts) == before and ui.views.value != png
    assert ui.figures["views"].axes[1].images[0].get_cmap().name == "magma"
    assert "from cache" in ui.status.value


def test_input_size_runs_the_network_again_and_is_cached(ui):
    ex = ui.explorer
    first = ex.result()
    assert [v for _, v in ui.input_size.options] == [126, 252, 504]
    ui.input_size.value = 252
    assert ex.counts["forward_passes"] == 2
    np.testing.assert_array_equal(ex.result().depth, infer_image(ex.model().model, ex.sample.bgr, 252))
    assert "336×252 input" in ui.status.value and "(2×)" in ui.figures["views"].get_suptitle()
    ui.input_size.value = 126
    assert ex.counts["forward_passes"] == 2 and ex.result() is first
    ui.encoder.value = "mini-s"  # the scale (1×) carries over to the new encoder's sizes
    assert ui.input_size.value == 126 and ex.model().encoder == "mini-s"


def test_model_cache(ui):
    ex = ui.explorer
    ui.encoder.value = "mini-s"
    ui.encoder.value = "mini-t"
    ui.cmap.value = "viridis"
    assert ex.counts["model_loads"] == 2 and ex.counts["forward_passes"] == 2  # mini-t again: both cached
    ui.depth_range.value = 20.0  # a metric head is another model
    assert ex.counts["model_loads"] == 3 and ex.result().metric and ex.model().max_depth == 20.0
    assert "metres" in ui.status.value and ui.figures["views"].axes[3].get_ylabel() == "depth (m)"


# -- images in ----------------------------------------------------------------------------------------------
def test_uploaded_png_is_decoded(ui):
    image = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    ui.upload.value = upload_value(png_bytes(image), "mine.png")
    ex = ui.explorer
    assert not is_error(ui), ui.status.value
    np.testing.assert_array_equal(ex.sample.bgr, image)
    assert ex.sample.name == "mine.png" and ui.source.value is None
    assert ex.result().depth.shape == (64, 80) and ui.row.max == 63 and ui.column.max == 79
    assert "mine.png" in ui.figures["views"].axes[0].get_title()


def test_corrupt_upload_shows_a_clear_error_and_keeps_the_image(ui):
    before = ui.explorer.sample
    data = png_bytes(before.bgr)
    ui.upload.value = upload_value(data[: len(data) // 2], "broken.png")  # must not raise
    assert is_error(ui) and "broken.png" in ui.status.value and "truncated PNG" in ui.status.value
    assert ui.explorer.sample is before
    ui.upload.value = upload_value(b"hello, not an image", "notes.png")
    assert is_error(ui) and "notes.png" in ui.status.value and "not an image" in ui.status.value
    ui.source.value = "photo: coffee"  # and the app goes on
    assert not is_error(ui) and ui.explorer.sample.name == "photo: coffee"


def test_image_path(ui, tmp_path):
    image = np.random.default_rng(1).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "pic.png"), image)
    ui.path.value = str(tmp_path / "pic.png")
    ui.open_path.click()
    assert not is_error(ui) and np.array_equal(ui.explorer.sample.bgr, image)
    ui.path.value = str(tmp_path / "missing.jpg")
    ui.open_path.click()
    assert is_error(ui) and "missing.jpg: no such file" in ui.status.value


# -- profiles -----------------------------------------------------------------------------------------------
def test_profile_values_are_the_depth_map_along_the_line(ui):
    ex = ui.explorer
    depth, truth = ex.result().depth, ex.sample.depth
    ui.tabs.selected_index = PROFILE_TAB
    ui.line_mode.value = "row"
    ui.row.value = 100
    ax = ui.figures["profile"].axes[0]
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), depth[100])
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), np.arange(320))
    gt_line = ui.figures["profile"].axes[1].lines[0]  # relative model: ground truth on its own axis
    np.testing.assert_array_equal(gt_line.get_ydata(), truth[100])
    view_line = ui.figures["views"].axes[1].lines[0]  # the line is drawn on the depth view
    assert list(view_line.get_xdata()) == [0, 319] and list(view_line.get_ydata()) == [100, 100]

    ui.line_mode.value = "column"
    ui.column.value = 7
    np.testing.assert_array_equal(ui.figures["profile"].axes[0].lines[0].get_ydata(), depth[:, 7])

    ui.line_mode.value = "two points"
    with ui.batch():
        for box, v in zip(ui.points, (5, 7, 205, 106)):
            box.value = v
    ui.points[3].value = 107
    cols = np.arange(5, 206)  # 201 steps along x, the longer axis
    rows = np.rint(7 + (cols - 5) * 100 / 200).astype(int)
    prof = ex.profile(*ui.line())
    np.testing.assert_array_equal(prof.cols, cols)
    np.testing.assert_array_equal(prof.rows, rows)
    np.testing.assert_array_equal(ui.figures["profile"].axes[0].lines[0].get_ydata(), depth[rows, cols])
    np.testing.assert_allclose(prof.distance[-1], np.hypot(200, 100), rtol=1e-6)


def test_line_outside_the_image_is_an_error_not_a_crash(ui):
    ui.tabs.selected_index = PROFILE_TAB
    ui.line_mode.value = "two points"
    with pytest.raises(ValueError, match="outside"):
        line_pixels((0, 0), (320, 5), (240, 320))
    ui.upload.value = upload_value(png_bytes(np.zeros((30, 40, 3), np.uint8)), "small.png")
    assert not is_error(ui)  # the point boxes were refitted to the new image
    assert all(b.value <= m for b, m in zip(ui.points, (39, 29, 39, 29)))


# -- point clouds -------------------------------------------------------------------------------------------
class ConstantDepth(torch.nn.Module):
    "A 'model' that sees a fronto-parallel plane at `z` metres."

    def __init__(self, z: float):
        super().__init__()
        self.z, self.dummy = z, torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return torch.full((x.shape[0], *x.shape[-2:]), self.z) + 0 * self.dummy


def test_point_cloud_of_a_plane_lies_on_the_plane(ui, tmp_path):
    ui.use_model(LoadedModel(ConstantDepth(3.5), "dav2", "mini-t", 20.0, "plane at 3.5 m"))
    assert "plane at 3.5 m" in ui.figures["views"].get_suptitle()
    ui.max_points.value = 2000
    ui.tabs.selected_index = CLOUD_TAB
    ui.camera.value = "fov"
    ui.fov.value = 90
    assert "cloud" in ui.figures and not ui.cloud_note.value
    h, w = ui.explorer.sample.shape
    fx, fy, cx, cy = ui.camera_intrinsics()
    assert fx == fy == pytest.approx(w / 2) and (cx, cy) == ((w - 1) / 2, (h - 1) / 2)
    cloud = ui.explorer.point_cloud(ui.camera_intrinsics())
    assert len(cloud.points) == h * w
    np.testing.assert_allclose(cloud.points[:, 2], 3.5, rtol=1e-6)
    half_width = 3.5 * (w - 1) / w  # 90° FOV: x spans ±z at the image border
    np.testing.assert_allclose([cloud.points[:, 0].min(), cloud.points[:, 0].max()], [-half_width, half_width], rtol=1e-5)
    # the PLY export has every pixel, coloured
    ui.out_stem.value = str(tmp_path / "out" / "plane")
    ui.save_ply.click()
    assert not is_error(ui), ui.status.value
    points, colors = read_ply(tmp_path / "out" / "plane.ply")
    np.testing.assert_array_equal(points, cloud.points)
    np.testing.assert_array_equal(colors, ui.explorer.sample.rgb.reshape(-1, 3))
    # typed intrinsics
    with ui.batch():
        ui.camera.value = "pinhole"
        for box, v in zip(ui.pinhole, (100.0, 50.0, 10.0, 20.0)):
            box.value = v
    p = ui.explorer.point_cloud(ui.camera_intrinsics()).points.reshape(h, w, 3)
    np.testing.assert_allclose(p[20, 10], [0, 0, 3.5], atol=1e-6)
    np.testing.assert_allclose(p[20 + 50, 10 + 100], [3.5, 3.5, 3.5], rtol=1e-6)


def test_tilted_plane_back_projects_onto_the_plane():
    K = camera_intrinsics(90, 60, fx=70.0, fy=80.0, cx=40.0, cy=33.0)
    n = np.array([0.2, -0.1, 0.4])  # the plane n·X = 1
    v, u = np.indices((60, 90))
    depth = 1 / (n[0] * (u - K[2]) / K[0] + n[1] * (v - K[3]) / K[1] + n[2])
    points, _ = point_cloud(depth, K)
    assert len(points) == 60 * 90
    np.testing.assert_allclose(points @ n, 1, rtol=1e-5)
    grid, _ = point_cloud(depth, K, max_points=500)  # stride ceil(sqrt(5400 / 500)) = 4
    assert len(grid) == 15 * 23
    np.testing.assert_allclose(grid @ n, 1, rtol=1e-5)
    np.testing.assert_allclose(grid, points.reshape(60, 90, 3)[::4, ::4].reshape(-1, 3), rtol=1e-6)


def test_relative_depth_aligned_to_ground_truth():
    sample = load_sample(SCENE)
    inverse = np.where(sample.valid, 1 / np.where(sample.valid, sample.depth, 1), 0)
    result = DepthResult((2.0 * inverse + 0.5).astype(np.float32), False, "t", "n", 0.0)  # affine in 1/z
    depth, note = metric_depth(result, sample)
    np.testing.assert_allclose(depth[sample.valid], sample.depth[sample.valid], rtol=1e-4)
    assert "aligned to ground truth" in note


def test_relative_model_point_cloud_needs_ground_truth(ui):
    ui.tabs.selected_index = CLOUD_TAB
    assert "aligned to ground truth" in ui.figures["cloud"].get_suptitle()
    ui.source.value = "photo: coffee"  # no ground truth, relative model
    assert not is_error(ui)
    assert "no point cloud" in ui.cloud_note.value and ui.cloud.value == b"" and "cloud" not in ui.figures
    ui.depth_range.value = 80.0
    assert not ui.cloud_note.value and "metric prediction" in ui.figures["cloud"].get_suptitle()
    with ui.batch():
        ui.camera.value = "pinhole"
        for box in ui.pinhole:
            box.value = 0.0
    assert "focal length" in ui.cloud_note.value  # an impossible camera is explained, not raised


def test_save_depth_files(ui, tmp_path):
    ui.out_stem.value = str(tmp_path / "saved" / "d")
    ui.save_depth.click()
    assert not is_error(ui)
    depth = ui.explorer.result().depth
    np.testing.assert_array_equal(np.load(tmp_path / "saved" / "d.npy"), depth)
    np.testing.assert_allclose(read_depth_png16(tmp_path / "saved" / "d.png"), depth, atol=(depth.max() - depth.min()) / 65535)
    vis = cv2.imread(str(tmp_path / "saved" / "d_vis.png"))
    assert vis.shape == (240, 320 * 2 + 50, 3)  # image | 50 px | colour map, the official layout


# -- PRV2 ---------------------------------------------------------------------------------------------------
def test_prv2_refinement_controls(ui):
    ex = ui.explorer
    assert ui.refine.disabled and ui.cai_mode.disabled and not ui.input_size.disabled
    ui.checkpoint.value = PRV2_RANDOM
    loaded = ex.model()
    assert loaded.kind == "prv2" and not is_error(ui), ui.status.value
    assert not ui.refine.disabled and not ui.tiles.disabled and not ui.cai_mode.disabled and ui.input_size.disabled
    assert ui.depth_range.value == 80.0 and "PRV2 predicts metric depth" in ui.status.value
    assert RANDOM_NOTE in ui.figures["views"].get_suptitle()
    passes = ex.counts["forward_passes"]
    ui.tiles.value = (2, 2)
    assert ex.counts["forward_passes"] == passes + 1 and "2×2 tiles, m1" in ui.figures["views"].get_suptitle()
    image = torch.from_numpy(ex.sample.rgb).permute(2, 0, 1)[None].float() / 255
    np.testing.assert_allclose(ex.result().depth, loaded.model.infer(image, cai_mode="m1", patch_split_num=(2, 2)).numpy(),
                               rtol=1e-5, atol=1e-5)
    ui.cai_mode.value = "m2"
    assert ex.counts["forward_passes"] == passes + 2 and "2×2 tiles, m2" in ui.figures["views"].get_suptitle()
    ui.refine.value = False
    assert ex.counts["forward_passes"] == passes + 3 and "coarse only" in ui.figures["views"].get_suptitle()
    ui.tiles.value = (4, 4)  # the tiling does not matter without refinement: no new run
    assert ex.counts["forward_passes"] == passes + 3
    ui.checkpoint.value = RANDOM
    assert ex.model().kind == "dav2" and ui.refine.disabled and not ui.input_size.disabled
    assert ex.model().max_depth == 80.0  # the depth range stays as the control shows it


# -- checkpoints --------------------------------------------------------------------------------------------
def write_run(runs, stage, name, model, **info):
    run = runs / stage / name
    run.mkdir(parents=True)
    torch.save(model.state_dict(), run / "model.pt")
    (run / "model.json").write_text(json.dumps({"encoder": model.encoder, "max_depth": model.max_depth, **info}))
    return run / "model.pt"


def test_pipeline_checkpoints_are_listed_and_loaded(tmp_path):
    runs = tmp_path / "runs"
    trained = trained_like("mini-s", max_depth=20.0)
    path = write_run(runs, "finetune_metric", "mini-abc", trained, input_size=126)
    ui = ExplorerUI(Explorer(device="cpu"), sample=SCENE, runs_root=runs)
    labels = dict((v, k) for k, v in ui.checkpoint.options)
    assert labels[str(path)] == "pipeline-trained · finetune_metric/mini-abc (mini-s, metric 20 m)"
    ui.checkpoint.value = str(path)
    ex = ui.explorer
    assert not is_error(ui), ui.status.value
    assert ui.encoder.value == "mini-s" and ui.encoder.disabled and ui.depth_range.value == 20.0
    title = ui.figures["views"].get_suptitle()
    assert "pipeline-trained finetune_metric/mini-abc" in title and RANDOM_NOTE not in title
    np.testing.assert_array_equal(ex.result().depth, infer_image(trained, ex.sample.bgr, 126))
    # a run added later shows up after a rescan
    write_run(runs, "train_student", "mini-new", trained_like("mini-t"))
    ui.rescan.click()
    assert any("train_student/mini-new (mini-t, relative)" in k for k, _ in ui.checkpoint.options)
    # a run whose model.pt is damaged: an error, and the controls go back to the model in use
    broken = write_run(runs, "train_student", "mini-broken", trained_like("mini-t"))
    broken.write_bytes(broken.read_bytes()[:1000])
    ui.rescan.click()
    ui.checkpoint.value = str(broken)
    assert is_error(ui) and "mini-broken" in ui.status.value
    assert ui.checkpoint.value == str(path) and ex.checkpoint == str(path) and ui.encoder.value == "mini-s"


def test_checkpoint_file_by_path_and_bad_files(ui, tmp_path):
    trained = trained_like("mini-t")
    torch.save(trained.state_dict(), tmp_path / "official_like.pth")
    ui.encoder.value = "mini-s"
    ui.checkpoint_path.value = str(tmp_path / "official_like.pth")
    ui.load_checkpoint.click()
    ex = ui.explorer
    assert not is_error(ui), ui.status.value
    assert ui.encoder.value == "mini-t" and ui.checkpoint.value == str(tmp_path / "official_like.pth")
    np.testing.assert_array_equal(ex.result().depth, infer_image(trained, ex.sample.bgr, 126))
    ui.depth_range.value = 20.0  # an official file records no range: the control gives it (--max-depth)
    assert ex.model().max_depth == 20.0 and ex.result().metric

    good = ex.checkpoint
    (tmp_path / "broken.pth").write_bytes(b"\x80\x02 not a checkpoint")
    ui.checkpoint_path.value = str(tmp_path / "broken.pth")
    ui.load_checkpoint.click()
    assert is_error(ui) and "broken.pth" in ui.status.value and ex.checkpoint == good
    ui.checkpoint_path.value = str(tmp_path / "nowhere.pth")
    ui.load_checkpoint.click()
    assert is_error(ui) and "nowhere.pth: no such checkpoint file" in ui.status.value and ex.checkpoint == good
    torch.save(trained_like("mini-b").state_dict(), tmp_path / "other.pth")  # the encoder is read from the file
    ui.checkpoint_path.value = str(tmp_path / "other.pth")
    ui.load_checkpoint.click()
    assert not is_error(ui) and ui.encoder.value == "mini-b"


def test_in_memory_model(ui):
    model = trained_like("mini-t", seed=3)
    ui.use_model(model, "just trained")
    ex = ui.explorer
    assert ex.model().model is model and ui.checkpoint.label == "in memory · mini-t · just trained"
    np.testing.assert_array_equal(ex.result().depth, infer_image(model, ex.sample.bgr, 126))
    ui.checkpoint.value = RANDOM
    assert RANDOM_NOTE in ui.figures["views"].get_suptitle()


def test_prv2_pipeline_runs(tmp_path):
    "PRV2 stage runs (model.pt + model.json of prv2.training) are listed, loaded and refined; NP refiners are not."
    training = pytest.importorskip("depth_anything_nb.pipelines.prv2_stages")  # the PRV2 training stages
    cfg = training.E2EConfig(preset="smoke").resolved()
    runs = tmp_path / "runs"
    torch.manual_seed(2)
    model = training.model_from_arch(training.patchrefiner_arch(cfg)).eval()
    training.save_model(model, runs / "prv2_train" / "smoke-x", training.patchrefiner_arch(cfg))
    coarse_arch = training.coarse_arch(cfg)
    training.save_model(training.model_from_arch(coarse_arch), runs / "prv2_coarse" / "smoke-c", coarse_arch)
    (runs / "prv2_pretrain" / "smoke-n").mkdir(parents=True)  # a noisy-pretraining run: no image → depth model
    (runs / "prv2_pretrain" / "smoke-n" / "model.pt").write_bytes(b"")
    (runs / "prv2_pretrain" / "smoke-n" / "model.json").write_text(json.dumps({"kind": "np_refiner"}))

    ui = ExplorerUI(Explorer(device="cpu"), sample=SCENE, runs_root=runs)
    labels = {k: v for k, v in ui.checkpoint.options}
    name = f"pipeline-trained · prv2_train/smoke-x (PRV2 {cfg.coarse_encoder}, metric {cfg.max_depth:g} m)"
    assert name in labels and not any("prv2_pretrain" in k for k in labels)
    assert any("prv2_coarse/smoke-c" in k for k in labels)
    ui.checkpoint.value = labels[name]
    ex = ui.explorer
    assert not is_error(ui), ui.status.value
    assert ex.model().kind == "prv2" and not ui.refine.disabled and ui.depth_range.value == cfg.max_depth
    image = torch.from_numpy(ex.sample.rgb).permute(2, 0, 1)[None].float() / 255
    np.testing.assert_allclose(ex.result().depth, model.infer(image, cai_mode="m1", patch_split_num=(4, 4)).numpy(),
                               rtol=1e-5, atol=1e-5)
    ui.checkpoint.value = next(v for k, v in labels.items() if "prv2_coarse/smoke-c" in k)
    assert ex.model().kind == "prv2-coarse" and ui.refine.disabled and "coarse only" in ui.figures["views"].get_suptitle()
    ui.checkpoint_path.value = str(runs / "prv2_pretrain" / "smoke-n" / "model.pt")
    ui.load_checkpoint.click()
    assert is_error(ui) and "noisy-pretraining refiner" in ui.status.value


def test_patchrefiner_weights_without_a_model_json_load_through_the_registry(tmp_path):
    "A plain PatchRefiner state dict (e.g. a converted official one) is recognised by its key names, not rejected as DAv2."
    from depth_anything_nb.apps.explorer import load_checkpoint
    from depth_anything_nb.models.prv2_model import PatchRefiner
    from depth_anything_nb.models.registry import create_model

    model = create_model("prv2-M", seed=0, coarse_encoder="mini-t", max_depth=20.0, process_shape=(56, 56)).eval()
    torch.save(model.state_dict(), tmp_path / "prv2_u4k.pt")
    loaded = load_checkpoint(tmp_path / "prv2_u4k.pt", max_depth=20.0)
    assert loaded.kind == "prv2" and isinstance(loaded.model, PatchRefiner) and loaded.max_depth == 20.0
    assert loaded.encoder == "mini-t" and "prv2_u4k.pt" in loaded.label
    assert all(torch.equal(a, b) for a, b in zip(loaded.model.state_dict().values(), model.state_dict().values()))
