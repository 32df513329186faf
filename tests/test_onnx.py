"""ONNX export (depth_anything_nb.models.onnx_export, nbs/18_onnx_export.ipynb) and `depth-anything export` / `run --checkpoint x.onnx`.

The reference is the torch model itself: onnxruntime must reproduce it at sizes other than the traced example
(square, non-square both ways, batch > 1), relative and metric. Both sides compute in float32 with O(1) depths
(perturbed weights), so they differ by kernel and summation-order rounding (~1e-6 measured); 1e-4 leaves two
orders of margin, while a frozen position-embedding table or a mis-sized feature map is off by ~1e-1.
Skipped with a reason where the `onnx` extra (onnx, onnxruntime, onnxscript) is not installed.
"""
import json
import math

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install -e '.[onnx]'")
pytest.importorskip("onnxscript", reason="onnxscript (torch's ONNX exporter) not installed: pip install -e '.[onnx]'")

import cv2  # noqa: E402

from depth_anything_nb.models.checkpoints import save_safetensors  # noqa: E402
from depth_anything_nb.apps.cli import main  # noqa: E402
from depth_anything_nb.models.dpt import DepthAnythingV2, perturbed_state_dict  # noqa: E402
from depth_anything_nb.models.encoder import interpolate_pos_embed  # noqa: E402
from depth_anything_nb.models.inference import predict  # noqa: E402
from depth_anything_nb.models.onnx_export import (  # noqa: E402
    OnnxDepthModel, bicubic_matrix, export_onnx, traceable_pos_embed,
)

TOL = 1e-4


def _model(max_depth=None, encoder="mini-s"):
    torch.manual_seed(0)
    m = DepthAnythingV2.from_config(encoder, max_depth=max_depth).eval()
    m.load_state_dict(perturbed_state_dict(m))
    return m


@pytest.fixture(scope="module", params=[None, 20.0], ids=["relative", "metric"])
def exported(request, tmp_path_factory):
    model = _model(request.param)
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "model.onnx")
    return model, OnnxDepthModel(path)


@pytest.mark.parametrize("shape", [(1, 3, 56, 56), (1, 3, 42, 98), (1, 3, 112, 28), (3, 3, 70, 42)],
                         ids=["square", "wide", "tall", "batch3"])
def test_onnxruntime_matches_torch(exported, shape):
    model, onnx_model = exported
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(shape[-1]))
    with torch.no_grad():
        ref = model(x)
    out = onnx_model(x)
    assert out.shape == ref.shape == (shape[0], *shape[2:])
    assert ref.abs().max() > 0.1 and ref.std() > 1e-3  # a live, non-constant output (not a dead ReLU)
    assert (out - ref).abs().max().item() < TOL


def test_metadata_and_table_size(exported):
    "The file records encoder and max depth; the model's own table size (126 px = 9x9 for mini-s) takes the identity branch."
    model, onnx_model = exported
    assert onnx_model.encoder == "mini-s" and onnx_model.max_depth == model.max_depth
    x = torch.rand(2, 3, 126, 126, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (onnx_model(x) - model(x)).abs().max().item() < TOL


def test_image_path_parity(exported):
    "Through predict (official preprocessing and resize back) on a non-square image."
    model, onnx_model = exported
    image = (np.random.default_rng(0).random((75, 131, 3)) * 255).astype(np.uint8)
    a = predict(model, [image], input_size=42, device="cpu")[0]
    b = predict(onnx_model, [image], input_size=42, device="cpu")[0]
    assert a.shape == b.shape == (75, 131) and np.abs(a - b).max() < TOL


@pytest.mark.parametrize("grid", [(9, 9), (2, 2), (2, 9), (9, 2), (5, 13), (37, 37), (40, 11)])
@pytest.mark.parametrize("base", [9, 37])
def test_traceable_pos_embed_matches_official(grid, base):
    "Matrix-product resampling == DINOv2's F.interpolate(scale_factor=(g+0.1)/base, bicubic), exact at the table size."
    table = torch.randn(1, 1 + base * base, 8, generator=torch.Generator().manual_seed(base))
    ours, ref = traceable_pos_embed(table, *grid), interpolate_pos_embed(table, grid)
    assert ours.shape == ref.shape == (1, 1 + grid[0] * grid[1], 8)
    if grid == (base, base):
        assert torch.equal(ours, ref)
    else:
        # The source coordinate (i + 1/2)·base/(g + 0.1) − 1/2 is rounded in float32 (|Δt| ≤ ~2·base·eps); each
        # of the two axes turns that into Σ|w'| ≤ 2.5 times the table's range: bound 10·base·eps·max|table|.
        bound = 10 * base * torch.finfo(torch.float32).eps * table.abs().max().item()
        assert (ours - ref).abs().max().item() < bound


def test_bicubic_matrix_rows_sum_to_one():
    "Cubic-convolution weights form a partition of unity (a constant table stays constant), also at the borders."
    m, n = bicubic_matrix(23, 9)
    assert m.shape == (23, 9) and n.item() == 23
    torch.testing.assert_close(m.sum(1), torch.ones(23), atol=1e-6, rtol=0)


def test_refuses_vitg_over_protobuf_limit(tmp_path):
    model = DepthAnythingV2.from_config("vitg", device="meta")
    with pytest.raises(ValueError, match="2 GiB"):
        export_onnx(model, tmp_path / "g.onnx")
    assert not (tmp_path / "g.onnx").exists()


def test_bad_onnx_file_clear_error(tmp_path, capsys):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a protobuf")
    with pytest.raises(ValueError, match="broken.onnx"):
        OnnxDepthModel(bad)
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), np.full((40, 50, 3), 100, np.uint8))
    assert main(["run", "--checkpoint", str(bad), "--img-path", str(img), "--outdir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "broken.onnx" in err and "Traceback" not in err


def test_cli_export_then_run(tmp_path, capsys):
    "`export` a metric .safetensors, then `run --checkpoint x.onnx`: same .npy depths as the torch run, max depth from metadata."
    model = _model(max_depth=20.0)
    save_safetensors(model, tmp_path / "mini.safetensors")
    onnx_file = tmp_path / "mini.onnx"
    assert main(["export", "--checkpoint", str(tmp_path / "mini.safetensors"), "--format", "onnx",
                 "--output", str(onnx_file)]) == 0
    assert "wrote" in capsys.readouterr().out and onnx_file.is_file()
    img = tmp_path / "in" / "photo.png"
    img.parent.mkdir()
    yy, xx = np.mgrid[:60, :90]
    cv2.imwrite(str(img), np.dstack([(xx * 3) % 256, (yy * 4) % 256, (xx + yy) % 256]).astype(np.uint8))
    common = ["--img-path", str(img), "--input-size", "42", "--save-npy", "--device", "cpu"]
    assert main(["run", "--checkpoint", str(tmp_path / "mini.safetensors"), "--outdir", str(tmp_path / "t"), *common]) == 0
    assert main(["run", "--checkpoint", str(onnx_file), "--outdir", str(tmp_path / "o"), *common]) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert "onnxruntime" in summary["weights"] and "max depth 20" in summary["model"]
    a, b = (np.load(tmp_path / d / "photo_raw_depth_meter.npy") for d in ("t", "o"))
    assert a.shape == b.shape == (60, 90) and np.abs(a - b).max() < TOL * 20  # metres: sigmoid (<=1) x 20
    # flags that contradict the file are usage errors, as is --amp
    assert main(["run", "--checkpoint", str(onnx_file), "--max-depth", "80", "--outdir", str(tmp_path / "x"), *common]) == 2
    assert main(["run", "--checkpoint", str(onnx_file), "--amp", "bf16", "--outdir", str(tmp_path / "x"), *common]) == 2
    assert main(["export", "--checkpoint", str(onnx_file), "--output", str(tmp_path / "y.onnx")]) == 2
    assert main(["export", "--output", str(tmp_path / "y.pth")]) == 2
