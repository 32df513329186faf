"""`depth-anything refine` and the Python entry points of `depth_anything_nb.apps.prv2_cli` on tiny generated images."""

import json

import cv2
import numpy as np
import pytest
import torch

from depth_anything_nb.apps.cli import main
from depth_anything_nb.apps.prv2_cli import load_patchrefiner, refine_image
from depth_anything_nb.models.prv2_model import PatchRefiner

TINY = ["--coarse-encoder", "mini-t", "--refiner-encoder", "mini", "--process-shape", "56", "56"]


@pytest.fixture(scope="module")
def tiny_model():
    torch.set_num_threads(1)
    return load_patchrefiner(coarse_encoder="mini-t", process_shape=(56, 56), refiner_encoder="mini", max_depth=20.0)


@pytest.fixture()
def images(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for name, (h, w) in {"a.png": (112, 168), "sub/b.jpg": (120, 160)}.items():
        cv2.imwrite(str(folder / name), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_refine_writes_png16_npy_colour_and_summary(images, tmp_path):
    out = tmp_path / "out"
    code = main(["refine", "--img-path", str(images), "--work-dir", str(out), *TINY, "--patch-split-num", "2", "2",
                 "--cai-mode", "m2", "--process-num", "3", "--save", "--save-npy", "--save-coarse"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["images"] == 2 and summary["random_weights"] and summary["failed"] == 0
    assert summary["counts"]["ignored (not image files in folders)"] == 1
    for name, (h, w) in {"a": (112, 168), "sub/b": (120, 160)}.items():
        png = cv2.imread(str(out / f"{name}_depth16.png"), cv2.IMREAD_UNCHANGED)
        raw = np.load(out / f"{name}_raw_depth_meter.npy")
        coarse = np.load(out / f"{name}_coarse_raw_depth_meter.npy")
        colour = cv2.imread(str(out / f"{name}.png"))
        assert png.dtype == np.uint16 and png.shape == raw.shape == coarse.shape == (h, w)
        assert np.abs(png / 256.0 - raw).max() <= 0.5 / 256 + 1e-6  # metres × 256, rounded
        assert np.isfinite(raw).all() and raw.min() >= 0
        assert colour.shape == (h, 2 * w + 50, 3)  # image | gap | depth
        assert json.loads((out / f"{name}_depth16.json").read_text())["scale"] == 256.0
    # resuming: everything exists, nothing is redone
    again = main(["refine", "--img-path", str(images), "--work-dir", str(out), *TINY, "--patch-split-num", "2", "2",
                  "--cai-mode", "m2", "--save", "--save-npy", "--save-coarse", "--skip-existing"])
    assert again == 0 and json.loads((out / "summary.json").read_text())["counts"]["images skipped (outputs exist)"] == 2


def test_refine_matches_the_python_api(images, tmp_path, tiny_model):
    ckpt = tmp_path / "model.pth"
    torch.save(tiny_model.state_dict(), ckpt)
    out = tmp_path / "out"
    code = main(["refine", "--img-path", str(images / "a.png"), "--outdir", str(out), "--checkpoint", str(ckpt),
                 *TINY, "--max-depth", "20", "--patch-split-num", "2", "2", "--cai-mode", "r3", "--save-npy",
                 "--gray-scale", "--pred-only"])
    assert code == 0
    rgb = cv2.imread(str(images / "a.png"))[..., ::-1].copy()
    expected = refine_image(tiny_model, rgb, "r3", (2, 2))
    assert np.allclose(np.load(out / "a_raw_depth_meter.npy"), expected, atol=1e-5)
    grey = cv2.imread(str(out / "a.png"))
    assert grey.shape == (112, 168, 3) and (grey[..., 0] == grey[..., 2]).all()


def test_image_raw_shape_and_tensor_input(tiny_model):
    img = torch.rand(3, 100, 150)
    depth, coarse = refine_image(tiny_model, img, "m1", (2, 2), image_raw_shape=(112, 168), return_coarse=True)
    assert depth.shape == coarse.shape == (100, 150)  # back at the input size
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        refine_image(tiny_model, np.zeros((10, 10), np.uint8))


def test_bad_inputs_and_flags(images, tmp_path, capsys):
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "out"
    code = main(["refine", "--img-path", str(images), "--outdir", str(out), *TINY, "--patch-split-num", "2", "2"])
    summary = json.loads((out / "summary.json").read_text())
    assert code == 1 and summary["failed"] == 1 and summary["counts"]["images"] == 2
    assert "broken.png" in summary["failures"][0]["path"]
    assert main(["refine", "--img-path", str(images), "--cai-mode", "m3", *TINY]) == 2
    assert main(["refine", "--img-path", str(images), "--image-raw-shape", "100", "150", *TINY]) == 2
    assert main(["refine", "--img-path", str(images), "--checkpoint", str(tmp_path / "none.pth"), *TINY]) == 2
    assert main(["refine", *TINY]) == 2
    err = capsys.readouterr().err
    assert "--cai-mode" in err and "--image-raw-shape" in err and "no such file" in err and "nothing to do" in err


def test_load_checkpoints(tmp_path, tiny_model):
    wrong = tmp_path / "wrong.pth"
    torch.save({"refiner.nope": torch.zeros(1)}, wrong)
    with pytest.raises(Exception, match="does not fit"):
        load_patchrefiner(wrong, coarse_encoder="mini-t", process_shape=(56, 56), refiner_encoder="mini")
    wrapped = tmp_path / "wrapped.pth"  # the official trainer's layout: {"model_state_dict": ..., ...}
    torch.save({"model_state_dict": tiny_model.state_dict(), "epoch": 3}, wrapped)
    m = load_patchrefiner(wrapped, process_shape=(56, 56), refiner_encoder="mini", max_depth=20.0)
    assert m.coarse.model.encoder == "mini-t"  # inferred from the coarse weights
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), tiny_model.state_dict().values()))
    coarse = tmp_path / "coarse.pth"
    torch.save(tiny_model.coarse.model.state_dict(), coarse)
    m = load_patchrefiner(None, coarse, coarse_encoder="mini-t", process_shape=(56, 56), refiner_encoder="mini",
                          max_depth=20.0)
    assert isinstance(m, PatchRefiner) and not m.training
    assert all(torch.equal(a, b) for a, b in zip(m.coarse.state_dict().values(), tiny_model.coarse.state_dict().values()))
