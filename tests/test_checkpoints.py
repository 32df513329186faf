"""Checkpoint files: round trips, wrappers, clear errors on bad files, and the transformers layout."""
import argparse
import json
import warnings

import pytest
import torch

from depth_anything_nb import DepthAnythingV2
from depth_anything_nb.models.checkpoints import (CheckpointError, describe_state_dict, from_hf_model, from_hf_state_dict,
                                           hf_config, infer_encoder, read_state_dict, save_checkpoint,
                                           save_safetensors, to_hf_model, to_hf_state_dict)
from depth_anything_nb.models.dpt import perturbed_state_dict
from depth_anything_nb.models.registry import load_model  # the one entry point; DAv2 files go to checkpoints.load_dav2
from depth_anything_nb.models.encoder import ENCODER_CONFIGS, RELEASED_ENCODERS, EncoderConfig, register_encoder

try:
    import transformers
    from transformers import DepthAnythingForDepthEstimation
except ImportError:
    transformers = None
try:
    from depth_anything_v2.dpt import DepthAnythingV2 as OfficialDAv2
except ImportError:
    OfficialDAv2 = None

needs_transformers = pytest.mark.skipif(transformers is None, reason="transformers not installed (test extra)")
# ours vs the official or the transformers code: two float32 evaluation orders of a ViT + DPT differ by ~2·sqrt(K)·u per
# layer (K ≤ 1536, u = 2^-24), a random walk over ~40 layers ≈ 3e-5 of the output scale (max |depth|, or max_depth for
# metric heads) on any CPU; a wrong weight mapping moves it by orders of magnitude more.
RTOL = 3e-5


def _model(encoder="mini-s", max_depth=None, seed=0):
    model = DepthAnythingV2.from_config(encoder, max_depth=max_depth).eval()
    model.load_state_dict(perturbed_state_dict(model, seed), strict=True)
    return model


def _same_output(a, b, hw=(28, 42)):
    x = torch.randn(2, 3, *hw, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        return torch.equal(a(x), b(x))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_round_trip(tmp_path, suffix):
    model = _model("mini-s")
    path = save_checkpoint(model, tmp_path / f"m{suffix}")
    loaded = load_model(path)
    assert loaded.encoder == "mini-s" and loaded.max_depth is None and not loaded.training
    assert _same_output(model, loaded)
    assert not list(tmp_path.glob(".*tmp*"))  # the atomic write left no temporary file


def test_metric_max_depth_from_safetensors_metadata(tmp_path):
    model = _model("mini-t", max_depth=80.0)
    loaded = load_model(save_safetensors(model, tmp_path / "m.safetensors"))
    assert loaded.max_depth == 80.0 and _same_output(model, loaded)
    from safetensors.torch import save_file  # a plain safetensors file has no metadata: max_depth must be given

    save_file(model.state_dict(), str(tmp_path / "plain.safetensors"))
    assert load_model(tmp_path / "plain.safetensors").max_depth is None
    assert _same_output(model, load_model(tmp_path / "plain.safetensors", max_depth=80.0))


@pytest.mark.parametrize("wrap", ["model", "state_dict", "module_prefix", "compiled_ddp", "nested"])
def test_wrapped_and_prefixed_state_dicts(tmp_path, wrap):
    model = _model("mini-t")
    sd = model.state_dict()
    obj = {"model": {"model": sd, "optimizer": {"state": {}}, "epoch": 3, "previous_best": {"d1": 0.5}},
           "state_dict": {"state_dict": sd, "lr": 0.1},
           "module_prefix": {f"module.{k}": v for k, v in sd.items()},
           "compiled_ddp": {"model": {f"module._orig_mod.{k}": v for k, v in sd.items()}, "epoch": 1},
           "nested": {"state_dict": {"model": sd}}}[wrap]
    torch.save(obj, tmp_path / "w.pth")
    assert _same_output(model, load_model(tmp_path / "w.pth"))


def test_prefix_selects_a_sub_model(tmp_path):
    model = _model("mini-t")
    other = {f"refiner.{k}": torch.zeros(1) for k in ("a", "b")}
    torch.save({**{f"coarse_branch.{k}": v for k, v in model.state_dict().items()}, **other}, tmp_path / "p.pth")
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "p.pth")
    assert _same_output(model, load_model(tmp_path / "p.pth", prefix="coarse_branch."))


def test_wrong_encoder_message_names_keys_and_lookalike(tmp_path):
    path = save_checkpoint(_model("mini-s"), tmp_path / "mini_s.pth")
    with pytest.raises(CheckpointError) as info:
        load_model(path, encoder="mini-b")
    msg = str(info.value)
    assert str(path) in msg and "mismatched" in msg and "looks like 'mini-s'" in msg and "missing" in msg
    assert "in all" in msg and len(msg) < 1500  # abbreviated, not a wall of keys


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    sd = _model("mini-t").state_dict()
    sd.pop("depth_head.scratch.output_conv1.weight")
    sd["depth_head.extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match=r"1 missing: depth_head\.scratch\.output_conv1\.weight.*1 unexpected"):
        load_model(tmp_path / "x.pth")
    with pytest.warns(UserWarning, match="strict=False"):
        model = load_model(tmp_path / "x.pth", strict=False)
    assert torch.equal(model.depth_head.scratch.output_conv1.bias, sd["depth_head.scratch.output_conv1.bias"])


def test_encoder_only_dinov2_file(tmp_path):
    "A bare DINOv2 backbone (no `pretrained.` prefix): strict load explains, strict=False loads the encoder."
    model = _model("mini-s")
    backbone = {k[len("pretrained."):]: v for k, v in model.state_dict().items() if k.startswith("pretrained.")}
    torch.save(backbone, tmp_path / "dinov2_mini.pth")
    with pytest.raises(CheckpointError, match="encoder only"):
        load_model(tmp_path / "dinov2_mini.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fresh = load_model(tmp_path / "dinov2_mini.pth", strict=False)
    for k, v in backbone.items():
        assert torch.equal(fresh.pretrained.state_dict()[k], v)


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty", "safetensors_garbage", "truncated_safetensors",
                                  "missing", "pickled_objects", "not_a_state_dict", "empty_dir"])
def test_bad_files_give_clear_errors(tmp_path, kind):
    good = tmp_path / "good.pth"
    save_checkpoint(_model("mini-t"), good)
    path = tmp_path / {"safetensors_garbage": "bad.safetensors", "truncated_safetensors": "cut.safetensors",
                       "empty_dir": "hf_dir"}.get(kind, f"{kind}.pth")
    if kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    elif kind in ("garbage", "safetensors_garbage"):
        path.write_bytes(b"this is not a checkpoint\n" * 40)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated_safetensors":
        full = save_safetensors(_model("mini-t"), tmp_path / "full.safetensors").read_bytes()
        path.write_bytes(full[: len(full) // 2])
    elif kind == "pickled_objects":
        torch.save({"model": _model("mini-t").state_dict(), "args": argparse.Namespace(lr=1.0)}, path)
    elif kind == "not_a_state_dict":
        torch.save({"epoch": 3, "metrics": {"d1": 0.9}}, path)
    elif kind == "empty_dir":
        path.mkdir()
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    assert str(path) in str(info.value)
    if kind == "pickled_objects":
        assert "weights_only" in str(info.value)


@pytest.mark.parametrize("encoder", RELEASED_ENCODERS)
def test_encoder_inferred_for_every_release(encoder):
    sd = DepthAnythingV2.from_config(encoder, device="meta").state_dict()
    assert infer_encoder(sd) == encoder
    assert describe_state_dict(sd).startswith(f"'{encoder}'")


@pytest.mark.skipif(OfficialDAv2 is None, reason="official depth_anything_v2 not installed")
def test_file_written_by_official_code_loads_and_ours_loads_in_official(tmp_path):
    official = OfficialDAv2("vits", features=64, out_channels=[48, 96, 192, 384]).eval()
    official.load_state_dict(perturbed_state_dict(official), strict=True)
    torch.save(official.state_dict(), tmp_path / "depth_anything_v2_vits.pth")
    ours = load_model(tmp_path / "depth_anything_v2_vits.pth")
    assert ours.encoder == "vits"
    x = torch.randn(1, 3, 14, 28)
    with torch.inference_mode():
        assert (ours(x) - official(x)).abs().max().item() <= RTOL * official(x).abs().max().item()
    save_checkpoint(ours, tmp_path / "ours.pth")
    official.load_state_dict(torch.load(tmp_path / "ours.pth", weights_only=True), strict=True)


# ---- the transformers layout ----------------------------------------------------------------------------

def test_hf_state_dict_round_trip_without_transformers():
    for encoder in ("mini-s", "vitg"):
        sd = DepthAnythingV2.from_config(encoder, device="meta" if encoder == "vitg" else None).state_dict()
        if encoder == "vitg":
            sd = {k: torch.randn(v.shape, dtype=torch.float16) for k, v in sd.items()
                  if k.startswith("pretrained.") and not (".blocks." in k and int(k.split(".")[2]) > 1)}
            # (two SwiGLU blocks suffice for the names; the head names are those of mini-s)
        for dialect in ("hub", "v5"):
            back = from_hf_state_dict(to_hf_state_dict(sd, dialect))
            assert list(back) == list(sd) or set(back) == set(sd)
            assert all(torch.equal(back[k], sd[k]) for k in sd)


@needs_transformers
@pytest.mark.parametrize("encoder", RELEASED_ENCODERS)
def test_hf_keys_and_shapes_equal_transformers(encoder):
    model = DepthAnythingV2.from_config(encoder, device="meta")
    with torch.device("meta"):
        hf = DepthAnythingForDepthEstimation(hf_config(model))
    ours_hf = {k: tuple(v.shape) for k, v in to_hf_state_dict(model.state_dict(), "v5").items()}
    assert ours_hf == {k: tuple(v.shape) for k, v in hf.state_dict().items()}


def _size_interpolation(pos_embed, grid_hw, offset=0.1, antialias=False):
    "transformers' position-embedding resampling: bicubic to a size, no offset."
    n = pos_embed.shape[1] - 1
    base = int(n ** 0.5)
    if tuple(grid_hw) == (base, base):
        return pos_embed
    grid = pos_embed[:, 1:].float().reshape(1, base, base, -1).permute(0, 3, 1, 2)
    grid = torch.nn.functional.interpolate(grid, size=tuple(grid_hw), mode="bicubic", align_corners=False)
    return torch.cat((pos_embed[:, :1].float(), grid.flatten(2).transpose(1, 2)), dim=1)


@needs_transformers
def test_hf_model_matches_ours_at_518_and_differs_elsewhere_only_by_pos_embed(monkeypatch):
    model = _model("vits", max_depth=20.0)
    hf = to_hf_model(model)
    diffs = {}
    for hw in [(518, 518), (70, 98)]:
        x = torch.randn(1, 3, *hw, generator=torch.Generator().manual_seed(1))
        with torch.inference_mode():
            diffs[hw] = (hf(pixel_values=x).predicted_depth - model(x)).abs().max().item() / 20.0
    print(f"|transformers - ours| / max_depth: {diffs}")
    assert diffs[(518, 518)] <= RTOL  # relative to max_depth
    assert diffs[(70, 98)] > 1e-4  # transformers resamples the position embedding to a size, without the offset
    import depth_anything_nb.models.encoder as encoder_module

    monkeypatch.setattr(encoder_module, "interpolate_pos_embed", _size_interpolation)
    with torch.inference_mode():
        x = torch.randn(1, 3, 70, 98, generator=torch.Generator().manual_seed(1))
        assert (hf(pixel_values=x).predicted_depth - model(x)).abs().max().item() / 20.0 <= RTOL


@needs_transformers
def test_hub_layout_directory_loads_in_transformers_and_here(tmp_path):
    "A directory in the Hub layout (config.json + model.safetensors with transformers-4 names)."
    from safetensors.torch import save_file

    model = _model("mini-s", max_depth=20.0)
    hf_config(model).save_pretrained(tmp_path)
    save_file(to_hf_state_dict(model, "hub"), str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    hf = DepthAnythingForDepthEstimation.from_pretrained(tmp_path).eval()
    ours = load_model(tmp_path)  # reads max_depth from config.json
    assert ours.max_depth == 20.0
    x = torch.randn(1, 3, 126, 126)
    with torch.inference_mode():
        ref = model(x)
        assert (hf(pixel_values=x).predicted_depth - ref).abs().max().item() <= RTOL * ref.abs().max().item()
        assert torch.equal(ours(x), model(x))


@needs_transformers
def test_save_pretrained_directory_and_from_hf_model(tmp_path):
    "transformers' own save_pretrained output loads here; a transformers-initialised model converts exactly."
    config = hf_config(DepthAnythingV2.from_config("mini-t"))
    torch.manual_seed(0)
    hf = DepthAnythingForDepthEstimation(config).eval()
    hf.save_pretrained(tmp_path)
    x = torch.randn(1, 3, 126, 126)
    with torch.inference_mode():
        reference = hf(pixel_values=x).predicted_depth
        scale = reference.abs().max().item()
        assert (load_model(tmp_path)(x) - reference).abs().max().item() <= RTOL * scale
        assert (from_hf_model(hf)(x) - reference).abs().max().item() <= RTOL * scale


@needs_transformers
def test_swiglu_encoder_conversion_matches_transformers():
    "ViT-G's SwiGLU names (w12/w3 vs weights_in/out and gate/up/down), on a tiny registered SwiGLU encoder."
    name = "test-swiglu"
    if name not in ENCODER_CONFIGS:
        register_encoder(name, EncoderConfig(48, 4, 2, (0, 1, 2, 3), 16, (8, 16, 32, 32), ffn="swiglu", img_size=70))
    model = _model(name)
    hf = to_hf_model(model)
    x = torch.randn(1, 3, 70, 70)
    with torch.inference_mode():
        ref = model(x)
        assert (hf(pixel_values=x).predicted_depth - ref).abs().max().item() <= RTOL * ref.abs().max().item()
        assert torch.equal(from_hf_model(hf)(x), model(x))
