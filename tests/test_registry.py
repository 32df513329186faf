"""The model registry (depth_anything_nb.models.registry, nbs/19_model_registry.ipynb): every architecture by name,
`create_model`, and one `load_model` for every checkpoint dialect, written here by the test and loaded back.

Release names are served by `models.hub` (nbs/12a_hub_weights.ipynb, another branch). Until it is merged, the tests of
the name path go through the real `models.hub` and huggingface_hub against a cache laid out by the test
(HF_HUB_OFFLINE=1), with tiny releases added to the release table.
"""
import dataclasses
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from depth_anything_nb.models.checkpoints import (CheckpointError, load_dav2, save_checkpoint, save_safetensors,
                                                  to_hf_state_dict)
from depth_anything_nb.models.dpt import DepthAnythingV2
from depth_anything_nb.models.encoder import ENCODER_CONFIGS
from depth_anything_nb.models.prv2_model import DAv2Coarse, PatchRefiner, PRV1Refiner
from depth_anything_nb.models.prv2_refiner import ENCODERS as REFINER_ENCODERS
from depth_anything_nb.models.prv2_refiner import PRV2Refiner
from depth_anything_nb.models.registry import (MODELS, create_model, list_models, load_encoder_weights, load_model,
                                               load_patchrefiner, model_entry, model_from_arch)

ROOT = Path(__file__).resolve().parents[1]
X = torch.rand(1, 3, 28, 42, generator=torch.Generator().manual_seed(0))


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture()
def mini():
    "A metric mini-t with non-default weights everywhere (a relative one would need output_bias to be non-zero)."
    return create_model("mini-t", seed=7, max_depth=20.0).eval()


# ---------------------------------------------------------------- names
def test_every_architecture_has_a_name():
    names = list_models()
    assert set(ENCODER_CONFIGS) <= set(names)  # vits..vitg and every mini size, mini-l and mini-g included
    assert {f"{e}-{d}" for e in ("vits", "vitb", "vitl") for d in ("hypersim", "vkitti")} <= set(names)
    assert {"prv2-coarse", "prv1"} | {f"prv2-{k}" for k in REFINER_ENCODERS} | {f"prv2-np-{k}" for k in REFINER_ENCODERS} \
        <= set(names)
    assert len(names) == len(set(names))
    assert list_models("mini-*") == ["mini-t", "mini-s", "mini-b", "mini-l", "mini-g"]
    assert set(list_models(family="prv2")) == {n for n, e in MODELS.items() if e.family == "prv2"}
    assert all(": " in line for line in list_models("vit*", verbose=True))
    with pytest.raises(ValueError, match="unknown model 'vitx'.*vits"):
        create_model("vitx")


def test_importing_the_stages_changes_no_registry():
    probe = ("from depth_anything_nb.models.registry import list_models; before = list_models(); "
             "import depth_anything_nb.pipelines.stages, depth_anything_nb.pipelines.prv2_stages; "
             "print(before == list_models(), 'mini-l' in before and 'mini-g' in before)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert out.stdout.split() == ["True", "True"], out.stderr[-2000:]


@pytest.mark.parametrize("name, cls", [("mini-t", DepthAnythingV2), ("vits-hypersim", DepthAnythingV2),
                                       ("prv2-mini", PatchRefiner), ("prv2-mini_convnext", PatchRefiner),
                                       ("prv2-np-mini", PRV2Refiner)])
def test_create_model_builds_the_class_of_the_name(name, cls):
    if name == "vits-hypersim":
        with torch.device("meta"):  # ViT-S: only the architecture is checked
            model = create_model(name)
        assert model.max_depth == 20.0 and model.encoder == "vits"
    else:
        model = create_model(name)
    assert type(model) is cls


def test_create_model_overrides_and_seeds():
    a = create_model("mini-t", seed=3, max_depth=80.0, output_bias=1.0)
    assert a.max_depth == 80.0 and a.depth_head.scratch.output_conv2[2].bias.item() == 1.0
    assert same_weights(a, create_model("mini-t", seed=3, max_depth=80.0, output_bias=1.0))
    assert not same_weights(a, create_model("mini-t", seed=4, max_depth=80.0, output_bias=1.0))
    v1 = create_model("prv1", coarse_encoder="mini-t", process_shape=(56, 56))
    assert isinstance(v1.refiner, PRV1Refiner) and v1.coarse.process_shape == (56, 56)
    coarse = create_model("prv2-coarse", encoder="mini-t", max_depth=10.0, process_shape=(28, 28))
    assert isinstance(coarse, DAv2Coarse) and coarse.model.max_depth == 10.0


def test_model_from_arch_is_create_model_through_json():
    torch.manual_seed(0)
    model = create_model("prv2-mini")
    arch = {"kind": "patchrefiner", "coarse": {"kind": "coarse", "encoder": "mini-t", "max_depth": 80.0,
                                               "process_shape": [112, 112]},
            "refiner": dataclasses.asdict(model.refiner.cfg), "train_coarse": True}
    torch.manual_seed(0)
    assert same_weights(model_from_arch(json.loads(json.dumps(arch))), model)
    with pytest.raises(ValueError, match="unknown model kind"):
        model_from_arch({"kind": "unet"})


# ---------------------------------------------------------------- every file dialect
def _training_checkpoint(model, out_dir: Path) -> Path:
    "A real checkpoint of the trainer (one step of a trivial loss on the model)."
    from depth_anything_nb.train.trainer import Trainer, TrainConfig, list_checkpoints, load_train_state

    data = [torch.rand(3, 28, 28) for _ in range(2)]
    cfg = TrainConfig(out_dir=str(out_dir), steps=1, batch_size=1, lr=1e-6, lr_mult={}, default_lr_mult=1.0,
                      log_every=1, checkpoint_every=1, progress=False)
    trainer = Trainer(model.train(), lambda m, x: (m(x).mean(), {}), data, cfg)
    trainer.fit()
    path = list_checkpoints(out_dir / "checkpoints")[-1]
    assert load_train_state(path)["step"] == 1  # the trainer's own format, with optimizer, scheduler and RNG states
    model.eval()
    return path


def _write(dialect: str, model: DepthAnythingV2, tmp: Path) -> tuple[Path, dict]:
    "(file, load_model arguments) of `model` in `dialect`."
    if dialect == "official .pth":
        return save_checkpoint(model, tmp / "m.pth"), {"max_depth": 20.0}
    if dialect == "safetensors with metadata":
        return save_safetensors(model, tmp / "m.safetensors"), {}
    if dialect == "safetensors without metadata":
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "m.safetensors"))
        return tmp / "m.safetensors", {"max_depth": 20.0}
    if dialect == "HF state dict":
        torch.save(to_hf_state_dict(model), tmp / "pytorch_model.bin")
        return tmp / "pytorch_model.bin", {"max_depth": 20.0}
    if dialect == "HF transformers-5 names":
        torch.save(to_hf_state_dict(model, "v5"), tmp / "m.bin")
        return tmp / "m.bin", {"max_depth": 20.0}
    if dialect == "HF folder":
        from safetensors.torch import save_file
        (tmp / "hf").mkdir()
        save_file(to_hf_state_dict(model), str(tmp / "hf" / "model.safetensors"))
        (tmp / "hf" / "config.json").write_text(json.dumps({"depth_estimation_type": "metric", "max_depth": 20}))
        return tmp / "hf", {}
    if dialect == "DDP-wrapped":
        torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp / "ddp.pt")
        return tmp / "ddp.pt", {"max_depth": 20.0}
    if dialect == "training checkpoint":
        return _training_checkpoint(model, tmp / "train"), {"max_depth": 20.0}
    if dialect == "stage model.pt + model.json":
        (tmp / "run").mkdir()
        save_checkpoint(model, tmp / "run" / "model.pt")
        (tmp / "run" / "model.json").write_text(json.dumps({"encoder": "mini-t", "max_depth": 20.0, "input_size": 56}))
        return tmp / "run" / "model.pt", {}
    raise AssertionError(dialect)


DIALECTS = ["official .pth", "safetensors with metadata", "safetensors without metadata", "HF state dict",
            "HF transformers-5 names", "HF folder", "DDP-wrapped", "training checkpoint", "stage model.pt + model.json"]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_load_model_reads_every_depth_anything_dialect(dialect, mini, tmp_path):
    path, kw = _write(dialect, mini, tmp_path)
    back = load_model(path, **kw)
    assert type(back) is DepthAnythingV2 and back.encoder == "mini-t" and back.max_depth == 20.0 and not back.training
    assert same_weights(back, mini)
    with torch.no_grad():
        assert torch.equal(back(X), mini(X))


def test_create_model_with_a_file_and_encoder_weights(mini, tmp_path):
    save_checkpoint(mini, tmp_path / "m.pth")
    assert same_weights(create_model("mini-t", pretrained=tmp_path / "m.pth", max_depth=20.0), mini)
    torch.save(to_hf_state_dict(mini), tmp_path / "hf.bin")
    assert same_weights(create_model("mini-t", pretrained=tmp_path / "hf.bin", max_depth=20.0), mini)
    dino = {k[len("pretrained."):]: v for k, v in mini.state_dict().items() if k.startswith("pretrained.")}
    torch.save(dino, tmp_path / "dinov2.pth")  # a DINOv2 release: bare keys
    fresh = create_model("mini-t", seed=1, encoder_weights=tmp_path / "dinov2.pth")
    reference = create_model("mini-t", seed=1)
    assert all(torch.equal(fresh.state_dict()[k], mini.state_dict()[k]) for k in fresh.state_dict() if k.startswith("pretrained."))
    assert torch.equal(fresh.depth_head.scratch.output_conv1.weight, reference.depth_head.scratch.output_conv1.weight)
    with pytest.raises(CheckpointError, match=r"m\.pth.*does not fit"):
        create_model("mini-s", pretrained=tmp_path / "m.pth")
    with pytest.raises(CheckpointError, match=r"dinov2\.pth: does not fit encoder 'mini-s'"):
        load_encoder_weights(DepthAnythingV2.from_config("mini-s"), tmp_path / "dinov2.pth", verbose=False)


@pytest.fixture(scope="module")
def prv2_mini():
    torch.manual_seed(0)
    return create_model("prv2-mini", coarse_encoder="mini-t", max_depth=20.0, process_shape=(56, 56)).eval()


def _save_run(model, arch: dict, folder: Path) -> Path:
    folder.mkdir(parents=True)
    torch.save(model.state_dict(), folder / "model.pt")
    (folder / "model.json").write_text(json.dumps(arch))
    return folder / "model.pt"


def test_load_model_rebuilds_patchrefiner_runs(prv2_mini, tmp_path):
    coarse_arch = {"kind": "coarse", "encoder": "mini-t", "max_depth": 20.0, "process_shape": [56, 56]}
    full = {"kind": "patchrefiner", "coarse": coarse_arch, "refiner": dataclasses.asdict(prv2_mini.refiner.cfg),
            "train_coarse": True}
    back = load_model(_save_run(prv2_mini, full, tmp_path / "prv2_train"))
    assert type(back) is PatchRefiner and same_weights(back, prv2_mini) and not back.training
    assert back.arch == json.loads(json.dumps(full))
    coarse = load_model(_save_run(prv2_mini.coarse, coarse_arch, tmp_path / "prv2_coarse"))
    assert type(coarse) is DAv2Coarse and same_weights(coarse, prv2_mini.coarse)
    v1 = model_from_arch({**full, "refiner": {"kind": "pr_v1"}})
    assert type(load_model(_save_run(v1, {**full, "refiner": {"kind": "pr_v1"}}, tmp_path / "v1")).refiner) is PRV1Refiner
    np_arch = {"kind": "np_refiner", "refiner": dataclasses.asdict(prv2_mini.refiner.cfg)}
    np_model = model_from_arch(np_arch)
    assert same_weights(load_model(_save_run(np_model, np_arch, tmp_path / "np")), np_model)


def test_load_model_reads_patchrefiner_weights_without_a_description(prv2_mini, tmp_path):
    torch.save({"model": prv2_mini.state_dict()}, tmp_path / "prv2.pt")
    back = load_model(tmp_path / "prv2.pt", max_depth=20.0, refiner_encoder="mini", process_shape=(56, 56))
    assert type(back) is PatchRefiner and same_weights(back, prv2_mini)  # coarse encoder read from the shapes
    assert same_weights(load_patchrefiner(tmp_path / "prv2.pt", max_depth=20.0, refiner_encoder="mini",
                                          process_shape=(56, 56)), prv2_mini)
    coarse = load_model(tmp_path / "prv2.pt", prefix="coarse.model.", max_depth=20.0)  # its DAv2 alone
    assert type(coarse) is DepthAnythingV2 and same_weights(coarse, prv2_mini.coarse.model)


# ---------------------------------------------------------------- bad files: one line naming the file
def _bad_files(tmp: Path, mini, prv2) -> dict[str, tuple[Path, str]]:
    save_checkpoint(mini, tmp / "good.pth")
    (tmp / "garbage.pth").write_bytes(b"\x00\x01 not a checkpoint" * 10)
    (tmp / "truncated.pth").write_bytes((tmp / "good.pth").read_bytes()[:3000])
    (tmp / "bad.safetensors").write_bytes(b"{not safetensors")
    (tmp / "empty").mkdir()
    torch.save({"step": 3, "note": "no tensors"}, tmp / "no_weights.pt")
    torch.save({"a.weight": torch.zeros(3)}, tmp / "other_model.pth")
    (tmp / "j").mkdir()
    save_checkpoint(mini, tmp / "j" / "model.pt")
    (tmp / "j" / "model.json").write_text("{truncated")
    (tmp / "k").mkdir()
    torch.save(prv2.state_dict(), tmp / "k" / "model.pt")
    (tmp / "k" / "model.json").write_text(json.dumps({"kind": "patchrefiner", "coarse": {"encoder": "mini-t"}}))
    (tmp / "l").mkdir()
    torch.save(prv2.coarse.state_dict(), tmp / "l" / "model.pt")
    (tmp / "l" / "model.json").write_text(json.dumps({"kind": "coarse", "encoder": "mini-s", "max_depth": 20.0,
                                                      "process_shape": [56, 56]}))
    return {
        "missing": (tmp / "missing.pth", "no such checkpoint file"),
        "garbage": (tmp / "garbage.pth", "not a PyTorch checkpoint"),
        "truncated": (tmp / "truncated.pth", "not a readable PyTorch checkpoint"),
        "bad safetensors": (tmp / "bad.safetensors", "not a readable safetensors checkpoint"),
        "empty folder": (tmp / "empty", "directory without model.safetensors"),
        "no weights": (tmp / "no_weights.pt", "no state dict of tensors"),
        "another model": (tmp / "other_model.pth", "cannot infer the encoder"),
        "unreadable model.json": (tmp / "j" / "model.pt", "unreadable"),  # the message names model.json
        "malformed model.json": (tmp / "k" / "model.pt", "malformed PRV2 model description"),  # names model.json
        "model.json of another size": (tmp / "l" / "model.pt", "architecture from its model.json"),
    }


def test_bad_files_are_one_line_checkpoint_errors_naming_the_file(mini, prv2_mini, tmp_path):
    for case, (path, words) in _bad_files(tmp_path, mini, prv2_mini).items():
        with pytest.raises(CheckpointError) as info:
            load_model(path)
        message = str(info.value)
        named = path.with_suffix(".json") if case in ("unreadable model.json", "malformed model.json") else path
        assert str(named) in message, (case, message)
        assert words in message and "\n" not in message, (case, message)
    with pytest.raises(CheckpointError, match="not a model or release name"):
        load_model("no-such-name")


def test_one_checkpoint_error_type():
    from depth_anything_nb.train import trainer

    assert trainer.CheckpointError is CheckpointError and issubclass(CheckpointError, ValueError)
    e = CheckpointError("x/ckpt.pt", "truncated")
    assert (e.path, e.problem, str(e)) == ("x/ckpt.pt", "truncated", "x/ckpt.pt: truncated")
    assert CheckpointError("x.pth: bad").path is None


# ---------------------------------------------------------------- release names, through the real models.hub
# The releases below are added to the real `hub.RELEASES` table (data, not code) and laid out in a Hugging Face cache
# exactly as huggingface_hub stores downloads; HF_HUB_OFFLINE=1, so huggingface_hub itself resolves them from the cache.
@pytest.fixture()
def tiny_releases(monkeypatch, tmp_path, mini):
    "Two tiny mini-t 'releases' cached offline (relative and metric 20 m); the real vitb release is not cached."
    from huggingface_hub import constants
    from depth_anything_nb.models import hub
    from test_hub import _pth_bytes, lay_out_cache

    cache = tmp_path / "hf_cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    relative = create_model("mini-t", seed=8, output_bias=1.0).eval()
    tiny = {"test/Tiny": (hub.Release("test/Tiny", "tiny_relative.pth", "mini-t", None, "official"), relative),
            "test/Tiny-Metric-Hypersim": (hub.Release("test/Tiny-Metric-Hypersim", "tiny_metric_hypersim.pth", "mini-t",
                                                      20.0, "official"), mini)}
    for name, (release, model) in tiny.items():
        monkeypatch.setitem(hub.RELEASES, name, release)
        lay_out_cache(cache, release.repo_id, {release.filename: _pth_bytes(model)})
    return {"relative": relative, "metric": mini, "cache": cache}


def test_release_names_load_the_release(tiny_releases):
    relative = load_model("test/Tiny")
    assert type(relative) is DepthAnythingV2 and relative.max_depth is None
    assert same_weights(relative, tiny_releases["relative"])
    metric = load_model("test/Tiny-Metric-Hypersim")
    assert metric.max_depth == 20.0 and same_weights(metric, tiny_releases["metric"])
    assert same_weights(load_model("mini-t", max_depth=20.0), tiny_releases["metric"])
    assert same_weights(create_model("mini-t", pretrained=True), tiny_releases["relative"])
    assert same_weights(create_model("mini-t", pretrained=True, max_depth=20.0), tiny_releases["metric"])
    with pytest.raises(CheckpointError, match="depth_anything_v2_vitb.pth.*Depth-Anything-V2-Base"):
        load_model("depth-anything/Depth-Anything-V2-Base")  # a real release, not in this cache, offline
    with pytest.raises(CheckpointError, match="no released weights"):
        load_model("mini-s")
    with pytest.raises(CheckpointError, match="no released weights for the PatchRefiner"):
        create_model("prv2-mini", pretrained=True)


def test_the_real_small_release_loads_by_encoder_name_offline(tiny_releases):
    "`vits` → depth-anything/Depth-Anything-V2-Small/depth_anything_v2_vits.pth, a full-size file in the cache."
    from depth_anything_nb.models import hub
    from test_hub import _pth_bytes, lay_out_cache

    small = hub.RELEASES["depth-anything/Depth-Anything-V2-Small"]
    model = create_model("vits", seed=1).eval()
    lay_out_cache(tiny_releases["cache"], small.repo_id, {small.filename: _pth_bytes(model)})
    assert same_weights(create_model("vits", pretrained=True), model)
    assert same_weights(load_model("depth-anything/Depth-Anything-V2-Small"), model)


def test_without_the_hub_module_a_name_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "depth_anything_nb.models.hub", None)  # as if hub.py were absent
    with pytest.raises(CheckpointError, match="weights by name need depth_anything_nb.models.hub"):
        load_model("depth-anything/Depth-Anything-V2-Small")


def test_cli_uses_release_weights_and_random_only_on_request(tiny_releases, tmp_path, capsys):
    from depth_anything_nb.apps.cli import CLIError, build_model, main

    model, weights, random = build_model("mini-t", None, None)  # the tiny test release of mini-t
    assert not random and same_weights(model, tiny_releases["relative"]) and "test/Tiny/tiny_relative.pth" in weights
    model, weights, random = build_model("mini-t", None, 20.0)
    assert not random and model.max_depth == 20.0 and "Hypersim" in weights
    model, weights, random = build_model("vits", None, None, random_weights=True)
    assert random and "RANDOM" in weights
    with pytest.raises(CLIError, match="cannot be combined with --checkpoint"):
        build_model("vits", str(tmp_path / "tiny_relative.pth"), None, random_weights=True)
    image = tmp_path / "a.png"
    import cv2
    cv2.imwrite(str(image), (torch.rand(40, 56, 3) * 255).byte().numpy())
    assert main(["run", "--img-path", str(image), "--outdir", str(tmp_path / "out"), "--encoder", "vitb"]) == 2
    err = capsys.readouterr().err
    assert "depth_anything_v2_vitb.pth" in err and "--checkpoint" in err and "--random-weights" in err
    assert main(["run", "--img-path", str(image), "--outdir", str(tmp_path / "out"), "--encoder", "vitg"]) == 2
    assert "no released weights" in capsys.readouterr().err
