"""The `depth-anything` command line (depth_anything_nb.apps.cli, nbs/60_cli.ipynb) on tiny generated files.

Models are vits at a 28-px network input so that every run takes about a second on one CPU thread; random
weights are fine here (the outputs' *content* is tested in test_inference.py, here their presence and format).
"""
import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from depth_anything_nb import DepthAnythingV2
from depth_anything_nb.apps.cli import SUBCOMMANDS, ColorRange, build_parser, collect_inputs, main, register_subcommand
from depth_anything_nb.models.inference import read_depth_png16, read_ply

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--encoder", "vits", "--random-weights", "--input-size", "28"]  # random weights only on request


def scene(h=60, w=80) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return np.dstack([(xx * 3) % 256, (yy * 4) % 256, (xx + yy) % 256]).astype(np.uint8)


@pytest.fixture
def zoo(tmp_path) -> tuple[Path, set[str], set[str]]:
    "A folder of good files in awkward formats and bad files; returns (folder, good names, bad names)."
    src = tmp_path / "photos"
    (src / "nested" / "deeper").mkdir(parents=True)
    img = scene()
    cv2.imwrite(str(src / "good.jpg"), img)
    Image.fromarray(img[..., ::-1]).convert("CMYK").save(src / "cmyk.jpg")
    cv2.imwrite(str(src / "sixteen.png"), img[..., 0].astype(np.uint16) * 257)
    cv2.imwrite(str(src / "gray.png"), img[..., 1])
    Image.fromarray(np.dstack([img[..., ::-1], np.full(img.shape[:2], 100, np.uint8)])).save(src / "rgba.png")
    Image.fromarray(img[..., ::-1]).convert("P", palette=Image.Palette.ADAPTIVE).save(src / "palette.png")
    cv2.imwrite(str(src / "constant.png"), np.full((50, 70, 3), 128, np.uint8))
    cv2.imwrite(str(src / "nested" / "deeper" / "deep.png"), img[:40])
    jpeg = cv2.imencode(".jpg", img)[1].tobytes()
    (src / "corrupt.jpg").write_bytes(jpeg[:20] + bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8)) + jpeg[320:])
    noisy = cv2.imencode(".png", (np.random.default_rng(1).random((60, 80, 3)) * 255).astype(np.uint8))[1].tobytes()
    (src / "truncated.png").write_bytes(noisy[: len(noisy) // 2])
    (src / "text.png").write_text("a text file wearing a .png suffix")
    cv2.imwrite(str(src / "tiny.png"), img[:10, :10])
    (src / "README.md").write_text("not an input: ignored, not a failure")
    good = {"good.jpg", "cmyk.jpg", "sixteen.png", "gray.png", "rgba.png", "palette.png", "constant.png", "deep.png"}
    return src, good, {"corrupt.jpg", "truncated.png", "text.png", "tiny.png"}


def _summary(outdir: Path) -> dict:
    return json.loads((outdir / "summary.json").read_text())


def test_run_folder_every_output_kind(zoo, tmp_path, capsys):
    "Good files all processed with every output; bad ones reported by name; exit code 1; random weights said loudly."
    src, good, bad = zoo
    out = tmp_path / "out"
    code = main(["run", "--img-path", str(src), "--outdir", str(out), *FAST, "--batch-size", "3", "--save-npy",
                 "--save-png16", "--pointcloud", "--fov", "60", "--inverse-depth-scale", "1.0"])
    captured = capsys.readouterr()
    assert code == 1
    summary = _summary(out)
    assert summary["counts"]["images"] == len(good) and summary["counts"]["ignored (not image/video files in folders)"] == 1
    assert {Path(f["path"]).name for f in summary["failures"]} == bad
    assert all(f["reason"] for f in summary["failures"])
    for name in bad:
        assert name in captured.err and name in captured.out  # live and in the printed summary
    assert summary["random_weights"] and "RANDOM" in summary["notes"][0] and "RANDOM" in captured.err
    for name in good:
        src_path = next(src.rglob(name))
        stem = str(src_path.relative_to(src).with_suffix(""))
        h, w = cv2.imread(str(src_path)).shape[:2]
        color = cv2.imread(str(out / f"{stem}.png"))
        assert color.shape == (h, 2 * w + 50, 3) and (color[:, w : w + 50] == 255).all()  # [image | white | depth]
        depth = np.load(out / f"{stem}_raw_inverse_depth.npy")
        assert depth.shape == (h, w) and depth.dtype == np.float32
        assert json.loads((out / f"{stem}_depth16.json").read_text())["kind"] == "relative"
        back = read_depth_png16(out / f"{stem}_depth16.png")
        assert np.abs(back - depth).max() <= (depth.max() - depth.min()) / 65535 + 1e-6
        points, colors = read_ply(out / f"{stem}.ply")
        assert colors is not None and len(points) == len(colors) <= h * w and np.all(points[:, 2] > 0)
    assert not list(out.rglob("*.tmp*"))  # no temporary file left behind


def test_run_flat_depth_metric_pred_only(zoo, tmp_path):
    "A checkpoint whose output is constant: flat maps are coloured, saved and reported, not a crash (official bug)."
    src, good, _ = zoo
    model = DepthAnythingV2.from_config("vits")
    state = model.state_dict()
    state["depth_head.scratch.output_conv2.2.weight"].zero_()
    state["depth_head.scratch.output_conv2.2.bias"].fill_(0.0)  # sigmoid(0) * 20 = 10 m everywhere
    torch.save(state, tmp_path / "flat_vits.pth")
    out = tmp_path / "flat"
    code = main(["run", "--img-path", str(src / "good.jpg"), str(src / "constant.png"), "--outdir", str(out),
                 "--checkpoint", str(tmp_path / "flat_vits.pth"), "--max-depth", "20", "--input-size", "28",
                 "--pred-only", "--grayscale", "--save-npy", "--save-png16", "--pointcloud", "--fx", "50"])
    assert code == 0
    summary = _summary(out)
    assert summary["counts"]["images"] == 2 and not summary["random_weights"] and summary["weights"].endswith("flat_vits.pth")
    assert sum("flat depth" in w["warning"] for w in summary["warnings"]) == 2
    assert np.allclose(np.load(out / "constant_raw_depth_meter.npy"), 10.0)
    assert np.allclose(read_depth_png16(out / "good_depth16.png"), 10.0)
    assert cv2.imread(str(out / "good.png")).shape == (60, 80, 3)  # pred-only
    points, _ = read_ply(out / "good.ply")
    assert np.allclose(points[:, 2], 10.0) and len(points) == 60 * 80


def test_checkpoint_metadata_and_metric_name_warning(zoo, tmp_path):
    "A .safetensors saved by this package knows its max_depth; an official metric .pth without --max-depth is flagged."
    from depth_anything_nb.models.checkpoints import save_safetensors

    src, _, _ = zoo
    model = DepthAnythingV2.from_config("vits", max_depth=80.0)
    save_safetensors(model, tmp_path / "mine.safetensors")
    out = tmp_path / "meta"
    assert main(["run", "--img-path", str(src / "good.jpg"), "--outdir", str(out), "--checkpoint",
                 str(tmp_path / "mine.safetensors"), "--input-size", "28", "--save-npy"]) == 0
    assert "metric (max depth 80 m)" in _summary(out)["model"] and (out / "good_raw_depth_meter.npy").exists()
    torch.save(model.state_dict(), tmp_path / "depth_anything_v2_metric_vkitti_vits.pth")
    out = tmp_path / "named"
    assert main(["run", "--img-path", str(src / "good.jpg"), "--outdir", str(out), "--checkpoint",
                 str(tmp_path / "depth_anything_v2_metric_vkitti_vits.pth"), "--input-size", "28"]) == 0
    summary = _summary(out)
    assert "relative" in summary["model"] and "--max-depth" in summary["warnings"][0]["warning"]


def test_run_txt_list_and_sample_images(zoo, tmp_path):
    "A .txt list (comments, blank lines, a missing file) plus the photographs bundled with scikit-image."
    src, _, _ = zoo
    listing = tmp_path / "list.txt"
    listing.write_text(f"# inputs\n{src / 'good.jpg'}\n\n{src / 'nested/deeper/deep.png'}\n{tmp_path / 'gone.png'}\n")
    out = tmp_path / "listed"
    code = main(["run", "--img-path", str(listing), "--sample-images", "--outdir", str(out), *FAST, "--pred-only"])
    summary = _summary(out)
    assert code == 1 and [Path(f["path"]).name for f in summary["failures"]] == ["gone.png"]
    assert "no such file" in summary["failures"][0]["reason"]
    names = {p.name for p in out.glob("*.png")}
    assert names == {"good.png", "deep.png", "astronaut.png", "coffee.png", "chelsea.png", "motorcycle_left.png", "rocket.png"}


def test_run_video(tmp_path):
    "Frames in, one mp4 out, side by side; a video that is not one is reported and the run exits 1."
    videos = tmp_path / "videos"
    videos.mkdir()
    writer = cv2.VideoWriter(str(videos / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for t in range(5):
        frame = np.full((48, 64, 3), 50, np.uint8)
        frame[:, 10 * t : 10 * t + 10] = 230
        writer.write(frame)
    writer.release()
    (videos / "broken.mp4").write_text("not a video")
    out = tmp_path / "vout"
    code = main(["run", "--video-path", str(videos), "--outdir", str(out), *FAST, "--video-norm", "running", "--batch-size", "2"])
    summary = _summary(out)
    assert code == 1 and [Path(f["path"]).name for f in summary["failures"]] == ["broken.mp4"]
    assert summary["counts"]["videos"] == 1 and summary["counts"]["video frames"] == 5
    capture = cv2.VideoCapture(str(out / "clip.mp4"))
    frames = []
    while (ok_frame := capture.read())[0]:
        frames.append(ok_frame[1])
    capture.release()
    assert len(frames) == 5 and frames[0].shape == (48, 2 * 64 + 50, 3)
    assert not (out / "broken.mp4").exists()


def test_color_range_modes():
    a, b = np.array([[1.0, 2.0]]), np.array([[0.0, 5.0]])
    assert ColorRange("frame")(a) is None
    first = ColorRange("first")
    assert first(a) == (1.0, 2.0) and first(b) == (1.0, 2.0)
    running = ColorRange("running")
    assert running(a) == (1.0, 2.0) and running(b) == (0.0, 5.0) and running(a) == (0.0, 5.0)
    assert ColorRange("frame", fixed=(0.0, 9.0))(a) == (0.0, 9.0)


def test_skip_existing_and_outdir_inside_input(zoo, tmp_path):
    "Resume: outputs that exist are not recomputed; outputs inside the input folder are never read as inputs."
    src, good, bad = zoo
    out = src / "depth"  # inside the input folder
    args = ["run", "--img-path", str(src), "--outdir", str(out), *FAST, "--pred-only"]
    assert main(args) == 1
    assert _summary(out)["counts"]["images"] == len(good)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    assert main(args + ["--skip-existing"]) == 1
    counts = _summary(out)["counts"]
    assert counts["images skipped (outputs exist)"] == len(good) and "images" not in counts
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == before
    assert main(args) == 1 and _summary(out)["counts"]["images"] == len(good)  # the outputs were not taken as inputs


@pytest.mark.parametrize("extra,message", [
    ([], "nothing to do"),
    (["--img-path", "x.png", "--pointcloud", "--fov", "60"], "needs metric depth"),
    (["--img-path", "x.png", "--pointcloud", "--max-depth", "20"], "needs the camera"),
    (["--img-path", "x.png", "--pointcloud", "--max-depth", "20", "--fx", "100", "--fov", "60"], "not both"),
    (["--img-path", "x.png", "--cmap", "no_such_map"], "colour map"),
    (["--img-path", "x.png", "--input-size", "10"], "at least 14"),
    (["--img-path", "x.png", "--checkpoint", "nowhere.pth"], "no such file"),
    (["--img-path", "x.png", "--depth-range", "5", "1"], "MIN < MAX"),
    (["--img-path", "x.png", "--device", "warp-drive"], "--device"),
    (["--img-path", "x.png", "--checkpoint", "{tmp}/garbage.pth"], "cannot load"),
])
def test_usage_errors_exit_2(tmp_path, capsys, extra, message):
    (tmp_path / "garbage.pth").write_bytes(b"this is not a checkpoint")
    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]
    assert main(["run", "--outdir", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_interrupt_writes_partial_summary(zoo, tmp_path, monkeypatch):
    import depth_anything_nb.apps.cli as cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "write_outputs", interrupted)
    src, _, _ = zoo
    assert main(["run", "--img-path", str(src / "good.jpg"), "--outdir", str(tmp_path / "o"), *FAST]) == 130
    assert (tmp_path / "o" / "summary.json").exists()


def test_collect_inputs_names(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for p in ["a/x.png", "a/x.JPG", "a/b/x.png", "a/.hidden.png", "a/.cache/y.png", "a/notes.txt"]:
        (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / p).write_bytes(b"")
    items, ignored = collect_inputs([tmp_path / "a", tmp_path / "a" / "x.png"])
    assert [i.name for i in items] == ["b/x", "x_jpg", "x_png", "x_png_2"] and ignored == 1


def test_subcommand_registry_is_open():
    "Another module adds a subcommand with one call; the parser picks it up."
    calls = []
    register_subcommand("echo-test", "test only", lambda p: p.add_argument("--word"), lambda a: calls.append(a.word) or 0)
    try:
        assert main(["echo-test", "--word", "hi"]) == 0 and calls == ["hi"]
        assert "echo-test" in build_parser().format_help()
    finally:
        SUBCOMMANDS.pop("echo-test")


def test_console_script_in_a_subprocess(zoo, tmp_path):
    "The real entry point, in its own process: exit code and summary on stdout."
    src, _, _ = zoo
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-c", "import sys; from depth_anything_nb.apps.cli import main; sys.exit(main())",
           "run", "--img-path", str(src / "good.jpg"), str(src / "text.png"), "--outdir", str(tmp_path / "o"), *FAST]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "summary" in result.stdout and "text.png" in result.stdout and "RANDOM" in result.stderr


def test_console_script_declared():
    "settings.ini declares the console script; an installed package exposes it."
    assert "depth-anything=depth_anything_nb.apps.cli:main" in (ROOT / "settings.ini").read_text().replace(" ", "")
    try:
        eps = [ep for ep in metadata.entry_points(group="console_scripts") if ep.name == "depth-anything"]
    except Exception:  # pragma: no cover - metadata backends differ
        eps = []
    if eps:
        assert eps[0].value == "depth_anything_nb.apps.cli:main"
