"""Stage entry points (issue 5) at the smoke preset: pseudo-labelling killed with SIGKILL and resumed equals an
uninterrupted run; 2 gloo processes give the 1-process loss; the `python -m depth_anything_nb.stages` command line
round trip; bad files are skipped and counted; notebook parameters = config fields."""
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from depth_anything_nb.train.distributed import config_from_argv, config_to_argv
from depth_anything_nb.models.dpt import DepthAnythingV2
from depth_anything_nb.data.pseudo_labels import PseudoLabelStore
from depth_anything_nb.pipelines.dav2_stages import (PRESET_VALUES, EvalConfig, MetricConfig, PseudoLabelConfig,
                                                     StudentConfig, TeacherConfig, evaluate, pseudo_label, train_teacher)
from depth_anything_nb.pipelines.stages import STAGES, config_from_params, main
from depth_anything_nb.train.trainer import read_log

ROOT = Path(__file__).resolve().parents[1]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "depth_anything_nb.pipelines.stages", *map(str, args), "--progress", "false"]


def _run(*args, check=True) -> subprocess.CompletedProcess:
    res = subprocess.run(_cli(*args), env=_env(), capture_output=True, text=True, timeout=300)
    if check and res.returncode:
        raise AssertionError(f"exit {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    "A random mini-t checkpoint standing in for a trained teacher (labelling only needs *a* model)."
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    torch.manual_seed(0)
    torch.save(DepthAnythingV2.from_config("mini-t", output_bias=1.0).state_dict(), path)
    return path


def _store(root: Path, run_name: str) -> PseudoLabelStore:
    return PseudoLabelStore(root / "pseudo_label" / run_name / "labels")


# ------------------------------------------------------------ pseudo-labelling: SIGKILL + resume == uninterrupted
def _write_images(folder: Path, n: int, size=(40, 52)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"img_{i:03d}.png"
        cv2.imwrite(str(p), rng.integers(0, 255, (*size, 3), dtype=np.uint8))
        paths.append(p)
    return paths


def test_pseudo_label_killed_and_resumed_equals_uninterrupted(tmp_path, teacher, capsys):
    n = 150
    _write_images(tmp_path / "images", n)
    kw = dict(preset="smoke", teacher=str(teacher), teacher_encoder="mini-t", unlabeled=str(tmp_path / "images"),
              batch_size=1, shard_size=2, out_root=str(tmp_path), progress=False)
    pseudo_label(run_name="clean", **kw)  # uninterrupted, in this process
    ref = _store(tmp_path, "clean")
    assert len(ref) == n

    labels = tmp_path / "pseudo_label" / "killed" / "labels"
    argv = [str(a) for k, v in kw.items() if k != "progress" for a in (f"--{k}", v)]
    proc = subprocess.Popen(_cli("pseudo_label", *argv, "--run_name", "killed"), env=_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and len(list(labels.glob("*.tar"))) < 2:
            time.sleep(0.002)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # like a lost node: no chance to flush anything
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    partial = len(_store(tmp_path, "killed"))
    assert 0 < partial < n, partial
    assert not (tmp_path / "pseudo_label" / "killed" / "metrics.json").exists()

    capsys.readouterr()
    metrics = pseudo_label(run_name="killed", **kw)  # resumed
    assert f"{n - partial} new labels" in capsys.readouterr().out and f"{partial} already stored"
    resumed = _store(tmp_path, "killed")
    assert sorted(resumed.keys()) == sorted(ref.keys())
    assert all(np.array_equal(resumed[k], ref[k]) for k in ref.keys())
    assert metrics["labels"] == n and metrics["failed"] == 0 and metrics["images_per_s"] > 0


# ------------------------------------------------------------ 2 gloo processes == 1 process (same global batch)
def test_two_processes_give_the_one_process_loss(tmp_path):
    # a small learning rate: with Adam at lr 1e-3 the float noise of a different gradient summation order (and the
    # analytically zero gradient of the shift-invariant output bias, which Adam turns into ±lr steps) grows into
    # visible loss differences within a few steps; at 1e-5 they stay at float precision
    kw = dict(preset="smoke", steps=4, batch_size=4, lr=1e-5, device="cpu", out_root=str(tmp_path))
    train_teacher(run_name="one", progress=False, **kw)  # one process, here
    _run("train_teacher", *[str(a) for k, v in kw.items() for a in (f"--{k}", v)], "--run_name", "two",
         "--nproc", 2)  # the stage entry point launches torchrun with 2 gloo ranks
    one = read_log(tmp_path / "train_teacher" / "one" / "train" / "metrics.jsonl")
    two = read_log(tmp_path / "train_teacher" / "two" / "train" / "metrics.jsonl")
    assert [r["step"] for r in one] == [r["step"] for r in two] == [1, 2, 3, 4]
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5), (a, b)
    cfg = json.loads((tmp_path / "train_teacher" / "two" / "train" / "config.json").read_text())
    assert cfg["world_size"] == 2 and cfg["batch_size"] == 2 and cfg["global_batch"] == 4
    w1 = torch.load(tmp_path / "train_teacher" / "one" / "model.pt", weights_only=True)
    w2 = torch.load(tmp_path / "train_teacher" / "two" / "model.pt", weights_only=True)
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < 1e-4


# ------------------------------------------------------------ the command line
@pytest.mark.parametrize("cls", [TeacherConfig, PseudoLabelConfig, StudentConfig, MetricConfig, EvalConfig])
def test_config_argv_round_trip(cls):
    base = cls(preset="smoke")
    changed = {}
    for f in dataclasses.fields(cls):
        if f.name in ("preset",):
            continue
        if f.name in ("labeled", "benchmarks"):
            changed[f.name] = {"custom": {"root": "/data/x y", "depth_scale": 0.001}}
        elif f.name in ("steps", "batch_size", "num_scenes", "eval_scenes", "num_images", "num_unlabeled"):
            changed[f.name] = 7
        elif f.name in ("lr", "head_lr_mult", "max_depth"):
            changed[f.name] = 0.25
        elif f.name in ("teacher", "labels", "unlabeled", "checkpoint", "init_from", "align_to", "run_name"):
            changed[f.name] = "/some path/with spaces.pt"
    cfg = dataclasses.replace(base, **changed)
    argv = [str(a) for a in config_to_argv(cfg)]
    assert config_from_argv(cls, argv) == cfg


def test_cli_runs_a_stage_and_rejects_bad_options(tmp_path, teacher):
    res = _run("evaluate", "--preset", "smoke", "--checkpoint", teacher, "--encoder", "mini-t", "--out_root", tmp_path,
               "--run_name", "cli")
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["stage"] == "evaluate" and Path(summary["run_dir"]) == tmp_path / "evaluate" / "cli"
    metrics = json.loads((tmp_path / "evaluate" / "cli" / "metrics.json").read_text())
    assert metrics["checkpoint"] == str(teacher) and metrics["encoder"] == "mini-t"
    assert {"procedural-synthetic", "procedural-real", "motorcycle"} <= set(metrics["eval"]["model"])
    again = main(["evaluate", "--preset", "smoke", "--checkpoint", str(teacher), "--encoder", "mini-t", "--out_root",
                  str(tmp_path), "--run_name", "cli"])
    assert again == metrics  # a finished run is reused
    with pytest.raises(SystemExit, match="unknown option '--no_such_field'"):
        main(["evaluate", "--no_such_field", "1"])
    with pytest.raises(SystemExit, match="train_teacher"):
        main([])
    with pytest.raises(FileExistsError, match="another configuration"):
        main(["evaluate", "--preset", "smoke", "--checkpoint", str(teacher), "--encoder", "mini-t", "--out_root",
              str(tmp_path), "--run_name", "cli", "--eval_scenes", "2"])


# ------------------------------------------------------------ bad data: skipped, logged, counted
def test_bad_images_are_skipped_and_counted_when_labelling(tmp_path, teacher, caplog):
    paths = _write_images(tmp_path / "images", 6)
    paths[1].write_bytes(b"this is not a png")
    paths[4].write_bytes(paths[4].read_bytes()[:60])  # truncated
    with caplog.at_level(logging.WARNING):
        metrics = pseudo_label(preset="smoke", teacher=str(teacher), teacher_encoder="mini-t",
                               unlabeled=str(tmp_path / "images"), out_root=str(tmp_path), run_name="folder",
                               progress=False)
    assert metrics["failed"] == 2 and metrics["labels"] == 4, metrics
    assert "img_001.png" in caplog.text and "img_004.png" in caplog.text  # logged by name
    store = _store(tmp_path, "folder")
    assert sorted(Path(k).name for k in store.keys()) == ["img_000.png", "img_002.png", "img_003.png", "img_005.png"]


def test_bad_labeled_samples_are_skipped_and_counted_in_training(tmp_path):
    root = tmp_path / "custom"
    paths = _write_images(root / "images", 6, size=(56, 56))
    (root / "depth").mkdir()
    for p in paths:
        np.save(root / "depth" / f"{p.stem}.npy", np.full((56, 56), 2.0, np.float32) + np.arange(56, dtype=np.float32))
    (root / "depth" / "img_003.npy").write_bytes(b"garbage")
    metrics = train_teacher(preset="smoke", labeled={"custom": {"root": str(root)}}, steps=3, batch_size=2,
                            out_root=str(tmp_path), run_name="custom", device="cpu", progress=False)
    assert metrics["bad_data"]["events"] >= 1 and [Path(f).stem for f in metrics["bad_data"]["files"]] == ["img_003"]


# ------------------------------------------------------------ notebooks: parameters = config fields
@pytest.mark.parametrize("stage", ["train_teacher", "pseudo_label", "train_student", "finetune_metric", "evaluate"])
def test_notebook_parameters_are_the_config_fields(stage):
    assert STAGES[stage].notebook == stage  # the registry names the notebook that runs the stage
    nb = json.loads((ROOT / "nbs" / f"{stage}.ipynb").read_text())
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{stage}.ipynb needs exactly one cell tagged 'parameters'"
    namespace: dict = {}
    exec("".join(cells[0]["source"]), namespace)
    cls = STAGES[stage].config
    cfg = config_from_params(cls, namespace)
    assert cfg == cls() and cfg.preset == "mini"  # defaults identical to the dataclass's
    assert set(PRESET_VALUES[cls.STAGE]) == {"smoke", "mini", "paper"}


# ------------------------------------------------------------ evaluation on benchmark readers (tiny real layouts)
def test_evaluate_on_benchmarks_in_their_real_layouts(tmp_path, teacher):
    import fake_datasets as fake

    fake.diode(tmp_path / "diode")
    fake.sintel(tmp_path / "sintel")
    ann = fake.da2k(tmp_path / "da2k")
    fake.hypersim(tmp_path / "hypersim")
    benchmarks = {"diode": {"root": str(tmp_path / "diode")}, "sintel": {"root": str(tmp_path / "sintel")},
                  "da2k": {"root": str(tmp_path / "da2k" / "DA-2K")}}
    out = evaluate(preset="smoke", checkpoint=str(teacher), encoder="mini-t", benchmarks=benchmarks,
                   max_eval_images=0, out_root=str(tmp_path), run_name="bench", progress=False)
    ev = out["eval"]["model"]
    assert set(out["eval"]) == {"model"}  # baselines only with the procedural sets
    assert ev["diode"]["protocol"] == "diode_indoor" and ev["diode"]["n_images"] == 1  # indoor scenes only
    assert ev["sintel"]["protocol"] == "sintel" and ev["sintel"]["n_images"] == 4
    assert ev["da2k"]["n_pairs"] == sum(map(len, ann.values())) == 3 and 0 <= ev["da2k"]["overall"] <= 100
    assert ev["da2k"]["kind"] == "da2k" and ev["da2k"]["prediction"] == "relative"
    assert json.loads((tmp_path / "evaluate" / "bench" / "metrics.json").read_text())["eval"] == out["eval"]
    metric = evaluate(preset="smoke", checkpoint=str(teacher), encoder="mini-t", max_depth=20.0,
                      benchmarks={"hypersim_metric": {"root": str(tmp_path / "hypersim")}}, out_root=str(tmp_path),
                      run_name="bench-metric", progress=False)
    hm = metric["eval"]["model"]["hypersim_metric"]
    assert metric["max_depth"] == 20.0 and hm["protocol"] == "dav2_hypersim" and hm["n_images"] == 1
    assert {"abs_rel", "d1", "rmse", "silog"} <= set(hm)


# ---------------------------------------------------------------- the paper preset names what it needs
@pytest.mark.parametrize("stage, fields, missing", [
    ("train_teacher", {}, "labeled"),
    ("train_teacher", {"labeled": {"hypersim": {"root": "/data/hypersim"}}}, "init_encoder"),
    ("pseudo_label", {}, "unlabeled"),
    ("train_student", {"init_encoder": "dinov2_vits14.pth"}, "unlabeled"),
    ("train_student", {"unlabeled": "/data/sa1b"}, "init_encoder"),
    ("finetune_metric", {}, "labeled"),
    ("evaluate", {"checkpoint": "depth_anything_v2_vitl.pth"}, "benchmarks"),
])
def test_paper_preset_refuses_procedural_data_and_random_weights(tmp_path, monkeypatch, stage, fields, missing):
    import depth_anything_nb.pipelines.stages as stages

    def no_work(*a, **k):
        raise RuntimeError("the stage started working")
    monkeypatch.setattr(stages, "run_lock", no_work)  # a stage that got past its config would lock its run first
    cls, run = STAGES[stage].config, STAGES[stage].run
    with pytest.raises(ValueError, match=rf"preset='paper'\): set {missing} "):
        run(cls(preset="paper", out_root=str(tmp_path), **fields))
    assert not any(tmp_path.iterdir())  # refused before any run folder, render cache or download
    cls(preset="mini", **fields).resolved()  # the miniature keeps its substitutes


def test_paper_preset_opt_outs_are_explicit_and_honoured():
    from depth_anything_nb.models.registry import create_model
    from depth_anything_nb.pipelines.dav2_stages import PROCEDURAL, RANDOM_INIT, _init_weights, unlabeled_source
    TeacherConfig(preset="paper", labeled={PROCEDURAL: {}}, init_encoder=RANDOM_INIT).resolved()
    StudentConfig(preset="paper", unlabeled=PROCEDURAL, init_encoder=RANDOM_INIT).resolved()
    PseudoLabelConfig(preset="paper", unlabeled=PROCEDURAL).resolved()
    EvalConfig(preset="paper", checkpoint="depth_anything_v2_vitl.pth", benchmarks={}).resolved()
    cfg = TeacherConfig(preset="paper", labeled={PROCEDURAL: {}}, init_encoder=RANDOM_INIT).resolved()
    assert _init_weights(cfg) is None  # RANDOM_INIT: no encoder weights, like the default
    a = create_model("mini-b", seed=3, encoder_weights=_init_weights(cfg))
    b = create_model("mini-b", seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    src = unlabeled_source(PROCEDURAL, num_images=2, size=28, seed=0)
    assert len(src) == 2 and type(src).__name__ == "ProceduralDepthDataset"


# ---------------------------------------------------------------- one registry of stages
def test_one_stage_registry_serves_the_command_line_prv2_and_experiments():
    "Every stage is registered once (by its function's decorator); the entry, the PRV2 module and experiments read it."
    from depth_anything_nb import experiments
    from depth_anything_nb import stages as entry
    from depth_anything_nb.pipelines import prv2_stages, stages

    reg = stages.stage_registry()
    assert reg is stages.STAGES is prv2_stages.STAGES is entry.STAGES
    assert set(reg) == {"train_teacher", "pseudo_label", "train_student", "finetune_metric", "evaluate",
                        "prv2_coarse", "prv2_pretrain", "prv2_train", "prv2_finetune_real", "prv2_evaluate"}
    assert reg["prv2_train"].run is prv2_stages.train_e2e and reg["prv2_train"].config is prv2_stages.E2EConfig
    assert all(s.name == s.config.STAGE for s in reg.values())
    notebooks = stages.notebook_stages()
    assert set(notebooks) == {"train_teacher", "pseudo_label", "train_student", "finetune_metric", "evaluate",
                              "prv2_pretrain", "prv2_train", "prv2_finetune_real"}
    assert all((ROOT / "nbs" / f"{name}.ipynb").is_file() for name in notebooks)
    assert experiments.PRESETS is stages.PRESETS  # the presets are defined once
    assert (experiments.stage_run_dir("prv2_train", {"seed": 3}, "smoke", "/x")
            == prv2_stages.E2EConfig(preset="smoke", seed=3, out_root="/x").resolved().run_dir())
    assert stages.STAGE_ALIASES["prv2_e2e"] == stages.STAGE_ALIASES["e2e"] == "prv2_train"
    assert stages.resolve_stage("evaluate") == "evaluate"  # an alias never hides a stage of another entry
    assert stages.resolve_stage("evaluate", "depth_anything_nb.pipelines.prv2_stages") == "prv2_evaluate"
    with pytest.raises(SystemExit, match="prv2_train"):
        stages.stage_main(["no-such-stage"])


def test_run_name_is_the_hash_of_the_whole_configuration(tmp_path):
    "Every field but the run-time ones names a run (no fields left out for older folders, no former stage names)."
    from depth_anything_nb.pipelines.stages import RUNTIME_FIELDS, StageConfig, stage_registry

    for stage in stage_registry().values():
        cls = stage.config
        fields = {f.name for f in dataclasses.fields(cls)} - set(RUNTIME_FIELDS) - set(getattr(cls, "NOT_READ", ()))
        cfg = cls(preset="mini", out_root=str(tmp_path))
        assert set(cfg.identity()) == fields, stage.name
        assert cfg.run_dir() == tmp_path / stage.name / f"mini-{cfg.digest()}"
    assert not hasattr(StageConfig, "LATER_DEFAULTS") and not hasattr(StageConfig, "FORMER_STAGES")
    a = StudentConfig(preset="smoke")
    assert a.digest() != dataclasses.replace(a, with_labeled=True).digest() != dataclasses.replace(a, labeled={}).digest()


def test_student_model_depth_is_the_depth_anything_v2_forward():
    "StudentModel runs the model's own encode/decode (no copy of `forward`): depth identical, alignment on the side."
    from depth_anything_nb.pipelines.dav2_stages import StudentModel
    from depth_anything_nb.models.registry import create_model

    x = torch.randn(2, 3, 28, 42, generator=torch.Generator().manual_seed(0))
    for max_depth in (None, 20.0):
        net = create_model("mini-s", output_bias=1.0, max_depth=max_depth, seed=0).eval()
        student = StudentModel(net, target_dim=24)
        with torch.no_grad():
            depth, align = student(x)
            assert align is None and torch.equal(depth, net(x))
            depth, align = student(x, torch.randn(2, 6, 24))  # target tokens of a 2×3 patch grid
            assert torch.equal(depth, net(x)) and align.ndim == 0 and torch.isfinite(align)

    class Doubled(DepthAnythingV2):  # a model whose head half differs: the student must follow it
        def decode(self, layers, grid, return_features=False):
            return 2 * super().decode(layers, grid, return_features)

    doubled = Doubled.from_config("mini-s", max_depth=net.max_depth)
    doubled.load_state_dict(net.state_dict())
    with torch.no_grad():
        assert torch.allclose(StudentModel(doubled.eval())(x)[0], 2 * net(x))
