"""PRV2 training stages (`depth_anything_nb.pipelines.prv2_stages`, `prv2.data`): every stage at the smoke preset, the
noisy-pretraining → end-to-end hand-off, online vs offline pseudo labels, the offline PNG round trip, DSD wiring."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from depth_anything_nb.data.core import DatasetError
from depth_anything_nb.train.losses import PatchRefinerPseudoLabelLoss, PatchRefinerSiLogLoss
from depth_anything_nb.pipelines import prv2_stages as prv2
from depth_anything_nb.data.prv2 import (PRV2TrainingSet, RealGT, degrade_depth, highres_scenes, pseudo_label_path,
                                         read_pseudo_label, write_offline_pseudo_labels, write_pseudo_label)
from depth_anything_nb.models.prv2_model import PatchRefiner
from depth_anything_nb.models.prv2_tiling import TileConfig


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    "A smoke end-to-end run (which produces the coarse and noisy-pretraining runs) in a temporary runs folder."
    root = tmp_path_factory.mktemp("runs")
    torch.set_num_threads(1)
    result = prv2.train_e2e(preset="smoke", out_root=str(root), progress=False)
    return root, result


def smoke(cls, root, **kw):
    return cls(preset="smoke", out_root=str(root), progress=False, **kw)


def test_e2e_produces_upstream_runs_and_reuses_them(runs):
    root, result = runs
    finished = sorted(p.parent.parent.name for p in root.glob("*/*/metrics.json"))
    assert finished == ["prv2_coarse", "prv2_pretrain", "prv2_train"]
    for stage in ("prv2_coarse", "prv2_pretrain", "prv2_train"):
        (run,) = (root / stage).iterdir()
        assert (run / "model.pt").is_file() and (run / "model.json").is_file()
        assert json.loads((run / "config.json").read_text())["stage"] == stage
        assert list((run / "train" / "checkpoints").glob("ckpt_*.pt"))  # resumable trainer checkpoints
    assert {"coarse", "refined"} <= set(result["eval"]) and result["eval"]["refined"]["n_images"] == 2
    again = prv2.train_e2e(smoke(prv2.E2EConfig, root))
    assert again["seconds"] == result["seconds"]  # the finished run was reused


def test_evaluate_stage_and_cli_aliases(runs):
    root, result = runs
    out = prv2.main(["evaluate", "--preset", "smoke", "--out_root", str(root), "--progress", "false",
                     "--model", result["model"]])
    assert out["model"] == result["model"] and {"coarse", "refined"} <= set(out["eval"])
    for key in ("rmse", "see", "f1"):
        assert np.isfinite(out["eval"]["refined"]["metrics"][key])
    with pytest.raises(SystemExit):
        prv2.main(["no-such-stage"])


def test_prv2_train_stage_answers_to_its_former_name(runs, capsys):
    """The stage of nbs/prv2_train.ipynb is `prv2_train`; `prv2_e2e` (its former name) is a command-line alias that
    runs it — reusing the finished runs/prv2_train/ run. Folders under runs/prv2_e2e/ are no longer looked at (the run
    name is the hash of the full configuration, with no list of former names; see 50_stages)."""
    root, result = runs
    assert prv2.E2EConfig.STAGE == "prv2_train" and prv2.STAGE_ALIASES["prv2_e2e"] == "prv2_train"
    capsys.readouterr()
    again = prv2.main(["prv2_e2e", "--preset", "smoke", "--out_root", str(root), "--progress", "false"])
    assert again["seconds"] == result["seconds"]  # the stored metrics of the finished run, not a new training
    assert f"reusing the finished run {root / 'prv2_train'}" in capsys.readouterr().out
    assert not (root / "prv2_e2e").exists()


def test_two_processes_run_a_stage(tmp_path):
    "nproc=2: `run_stage` launches `torchrun -m depth_anything_nb.stages`, whose 2 gloo ranks share the batch."
    from depth_anything_nb.models.prv2_model import DAv2Coarse
    from depth_anything_nb.train.trainer import read_log

    out = prv2.train_coarse(preset="smoke", run_name="two", nproc=2, threads=1, device="cpu", out_root=str(tmp_path),
                            progress=False)
    run = tmp_path / "prv2_coarse" / "two"
    assert out["run_dir"] == str(run) and (run / "metrics.json").is_file()
    trained = json.loads((run / "train" / "config.json").read_text())
    assert trained["world_size"] == 2 and trained["batch_size"] == 1 and trained["global_batch"] == 2
    assert [r["step"] for r in read_log(run / "train" / "metrics.jsonl")] == [1, 2]
    assert isinstance(prv2.load_model(run / "model.pt"), DAv2Coarse)
    assert np.isfinite(out["eval"]["coarse"]["metrics"]["rmse"])
    again = prv2.train_coarse(preset="smoke", run_name="two", nproc=1, out_root=str(tmp_path), progress=False)
    assert again["seconds"] == out["seconds"]  # nproc is a run-time field: the same run, reused


@pytest.mark.parametrize("mode", ["online", "offline"])
def test_finetune_real_smoke(runs, mode):
    root, _ = runs
    out = prv2.finetune_real(smoke(prv2.FinetuneRealConfig, root, pseudo_labels=mode, pseudo_label_loss="ssigm"))
    assert set(out["eval"]) >= {"teacher (zero-shot) refined", "real GT only (FT) refined", "DSD refined"}
    run_dir = Path(out["run_dir"])
    labels = list((run_dir / "pseudo_labels").rglob("*.png"))
    assert (len(labels) == prv2.FinetuneRealConfig(preset="smoke").resolved().num_scenes) == (mode == "offline")
    log = [json.loads(line) for line in (run_dir / "train" / "metrics.jsonl").read_text().splitlines()]
    assert all("silog" in r and "pseudo_label" in r for r in log)


def test_np_to_e2e_handoff_all_vs_encoder(runs):
    root, _ = runs
    cfg = smoke(prv2.E2EConfig, root).resolved()
    np_state, _ = prv2.read_state_dict(prv2.pretrain_config(cfg).resolved().run_dir() / "model.pt")
    stem = next(k for k, v in np_state.items() if k.startswith("encoder.") and v.dim() == 4 and v.shape[1] == 3)
    models = {mode: prv2._initial_patchrefiner(dataclasses.replace(cfg, np_load=mode)).refiner.state_dict()
              for mode in ("all", "encoder", "none")}
    for mode, own in models.items():
        assert own[stem].shape[1] == 4  # widened to RGB + coarse depth
        loaded = torch.equal(own[stem][:, :3], np_state[stem]) and not own[stem][:, 3].any()
        assert loaded == (mode != "none")
        for k, v in np_state.items():
            if k == stem:
                continue
            same = torch.equal(own[k], v)
            if k.startswith("encoder."):
                assert same == (mode != "none") or v.numel() <= 1 and not v.is_floating_point(), k
            elif mode == "all":
                assert same, k
    # encoder-only leaves C2F/F2C at their fresh initialisation (not the NP weights)
    rest = [k for k in np_state if not k.startswith("encoder.") and np_state[k].is_floating_point()]
    assert any(not torch.equal(models["encoder"][k], np_state[k]) for k in rest)


def test_online_and_offline_pseudo_labels_agree(runs, tmp_path):
    "Same teacher, a patch on the m1 grid, no augmentation: the stored tiled label = the teacher's patch output."
    root, result = runs
    teacher = prv2.load_model(result["model"])
    cfg = smoke(prv2.E2EConfig, root).resolved()
    scenes = highres_scenes(1, cfg.image_shape, "synthetic", seed=11)
    predict = prv2.pseudo_label_predictor(teacher, dataclasses.replace(cfg, cai_mode="m1"))  # what DSD stores
    write_offline_pseudo_labels(predict, scenes, tmp_path, progress=False)
    data = PRV2TrainingSet(scenes, cfg.patch_raw_shape, cfg.process_shape, augment=False, pseudo_labels=tmp_path)
    tiles = TileConfig(tuple(cfg.image_shape), tuple(cfg.process_shape), tuple(cfg.patch_split_num))
    ph, pw = cfg.patch_raw_shape
    top, left = ph, pw  # the grid patch (1, 1)
    scene = data.dataset[0]
    label = read_pseudo_label(pseudo_label_path(tmp_path, scene["path"]), scene["image"].shape[:2])
    sample = data.transform({**scene, "pseudo_label": label}, rng=_FixedCrop(top, left))
    assert sample["box_raw"].tolist() == [left, top, left + pw, top + ph]
    assert torch.allclose(sample["bboxs"].double(), tiles.to_coarse(sample["box_raw"][None].double())[0])
    loss = prv2.DSDPatchLoss("ssigm", 1.0, cfg.max_depth, teacher=teacher)
    batch = {k: v[None] for k, v in sample.items() if isinstance(v, torch.Tensor)}
    online = loss.pseudo_label(batch)[:, None]
    online = torch.nn.functional.interpolate(online, size=(ph, pw), mode="nearest")[0, 0]
    offline = sample["crop_pseudo_label"]
    assert offline.shape == online.shape
    assert (offline - online).abs().max() <= 0.5 / 256 + 1e-4  # PNG quantisation only


class _FixedCrop(np.random.Generator):
    "A generator for PatchTransform that draws no colour jitter, no flip, and a chosen crop."

    def __init__(self, top, left):
        super().__init__(np.random.PCG64(0))
        self.ints = [top, left]

    def random(self):
        return 0.99  # > 0.5: no colour jitter; >= hflip (0): no flip

    def integers(self, lo, hi):
        return self.ints.pop(0)


def test_offline_png_round_trip_and_errors(tmp_path):
    depth = np.random.default_rng(1).uniform(0.01, 200, (30, 40)).astype(np.float32)
    depth[0, 0], depth[0, 1] = np.nan, 300.0  # non-finite → 0; beyond 255.996 m → clipped
    path = write_pseudo_label(pseudo_label_path(tmp_path, "/abs/dir/img.jpg"), depth)
    assert path == tmp_path / "abs" / "dir" / "img.jpg.png"
    back = read_pseudo_label(path)
    ok = np.isfinite(depth) & (depth < 255)
    assert np.abs(back[ok] - depth[ok]).max() <= 0.5 / 256 + 1e-6
    assert back[0, 0] == 0 and back[0, 1] == pytest.approx(65535 / 256)
    small = read_pseudo_label(path, (15, 20))
    assert np.array_equal(small, back[::2, ::2])  # nearest resize by 2 picks every other pixel
    with pytest.raises(DatasetError, match="missing offline pseudo label"):
        read_pseudo_label(tmp_path / "nope.png")


def test_dsd_loss_wiring():
    torch.manual_seed(0)
    pred = torch.rand(2, 1, 8, 8) * 10 + 1
    gt = torch.rand(2, 8, 12) * 10 + 1
    gt[:, :2] = 0  # holes in the real GT
    label = torch.rand(2, 8, 12) * 3 + 0.5

    class Fake(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))
            self.seen = []

        def forward(self, image_lr, patches, boxes):
            self.seen.append((image_lr, patches, boxes))
            return pred * self.w

    batch = {"image_lr": torch.rand(2, 3, 8, 8), "crops_image_hr": torch.rand(2, 3, 8, 8),
             "bboxs": torch.tensor([[0.0, 0, 4, 4], [2.0, 2, 6, 6]]), "crop_depth": gt, "crop_valid": gt > 0,
             "crop_pseudo_label": label}
    for kind in ("ssigm", "ssi", "gm", "gmssi"):
        for weight in (0.0, 0.5):
            loss, logs = prv2.DSDPatchLoss(kind, weight, 80.0)(Fake(), batch)
            silog = PatchRefinerSiLogLoss(max_depth=80.0)(pred, gt)
            pl = PatchRefinerPseudoLabelLoss(kind)(pred, label)
            assert torch.allclose(loss, silog + weight * pl) and torch.allclose(logs["pseudo_label"], pl)
    # online: the teacher sees exactly the student's inputs, and gets no gradient
    teacher, student = Fake(), Fake()
    online = prv2.DSDPatchLoss("ssigm", 1.0, 80.0, teacher=teacher)
    loss, _ = online(student, {k: v for k, v in batch.items() if k != "crop_pseudo_label"})
    loss.backward()
    assert all(a is b for a, b in zip(teacher.seen[0], student.seen[0]))
    assert teacher.w.grad is None and student.w.grad is not None
    with pytest.raises(KeyError, match="crop_pseudo_label"):
        prv2.DSDPatchLoss("ssigm", 1.0, 80.0)(Fake(), {k: v for k, v in batch.items() if k != "crop_pseudo_label"})
    with pytest.raises(ValueError, match="pseudo_label_loss"):
        prv2.pseudo_label_loss("l2")
    ranking, _ = prv2.DSDPatchLoss("ranking", 1.0, 80.0)(Fake(), batch)
    assert torch.isfinite(ranking)


def test_real_gt_degradation():
    rng = np.random.default_rng(0)
    depth = np.full((16, 24), 2.0, np.float32)
    depth[:, 12:] = 8.0  # one vertical boundary
    valid = np.ones_like(depth, bool)
    d, ok = degrade_depth(depth, valid, RealGT(factor=4, noise=0.0, holes=0.0), rng)
    assert ok[:, :12].all() and np.allclose(d[:, :9], 2.0) and np.allclose(d[:, 12:21], 8.0)
    assert (d[:, 9:12] > 2.0).all() and (d[:, 9:12] < 8.0).all()  # the boundary became a ramp
    _, ok = degrade_depth(depth, valid, RealGT(factor=4, noise=0.0, holes=0.5), rng)
    assert 0.05 < ok.mean() < 0.8
    with pytest.raises(ValueError):
        RealGT(factor=0)


def test_config_identity_and_errors(tmp_path):
    a = prv2.E2EConfig(preset="smoke", out_root=str(tmp_path))
    assert a.digest() == dataclasses.replace(a, nproc=4, device="cpu", threads=2).digest()
    assert a.digest() != dataclasses.replace(a, np_load="encoder").digest()
    with pytest.raises(ValueError, match="paper preset"):
        prv2.E2EConfig(preset="paper").resolved()
    with pytest.raises(ValueError, match="preset"):
        prv2.E2EConfig(preset="huge").resolved()
    with pytest.raises(ValueError, match="divisible"):
        prv2.E2EConfig(preset="smoke", image_shape=[110, 168]).resolved()
    named = prv2.CoarseConfig(preset="smoke", out_root=str(tmp_path), run_name="mine")
    named.run_dir().mkdir(parents=True)
    (named.run_dir() / "config.json").write_text(json.dumps({"identity": {"something": "else"}}))
    with pytest.raises(FileExistsError, match="another configuration"):
        prv2.train_coarse(named)


def test_upstream_seed_pins_the_runs_read(tmp_path):
    "upstream_seed re-seeds one stage while it reads the seed-0 coarse / NP runs; like every field it is in the identity."
    base = prv2.E2EConfig(preset="smoke", out_root=str(tmp_path))
    assert base.identity()["upstream_seed"] is None
    reseeded = dataclasses.replace(base, seed=1)
    pinned = dataclasses.replace(base, seed=1, upstream_seed=0)
    for upstream in (prv2.coarse_config, prv2.pretrain_config):
        assert upstream(pinned).resolved().run_dir() == upstream(base).resolved().run_dir()
        assert upstream(reseeded).resolved().run_dir() != upstream(base).resolved().run_dir()
        assert upstream(pinned).upstream_seed is None and upstream(pinned).seed == 0
    assert len({base.run_dir(), reseeded.run_dir(), pinned.run_dir()}) == 3


@pytest.mark.parametrize("notebook, cls", [("prv2_pretrain", "PretrainConfig"), ("prv2_train", "E2EConfig"),
                                           ("prv2_finetune_real", "FinetuneRealConfig")])
def test_stage_notebook_parameters_are_the_config_fields(notebook, cls):
    "papermill can set every field, and every parameter is a field (config_from_params needs them all)."
    import ast

    import nbformat

    nb = nbformat.read(Path(__file__).parents[1] / "nbs" / f"{notebook}.ipynb", as_version=4)
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    names = {t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign) for t in node.targets}
    assert names == {f.name for f in dataclasses.fields(getattr(prv2, cls))}
    defaults = {t.id: ast.literal_eval(node.value) for node in ast.parse(cell.source).body
                if isinstance(node, ast.Assign) for t in node.targets}
    built = prv2.config_from_params(getattr(prv2, cls), defaults)
    assert built == getattr(prv2, cls)()  # the notebook's defaults are the config's defaults


def test_refiner_variants_share_one_coarse_run_and_pr_v1_baseline(runs):
    "Every refiner encoder/variant reads the same coarse run; `pr_v1` (Tables 1/2) trains the V1 refiner on it."
    from depth_anything_nb.models.prv2_model import PRV1Refiner

    root, _ = runs
    variants = [smoke(prv2.E2EConfig, root, refiner_encoder=e, variant=v, np_load="none")
                for e in ("mini", "mini_convnext") for v in ("full", "f2c_only")]
    assert len({prv2.coarse_config(c).digest() for c in variants}) == 1
    with pytest.raises(ValueError, match="no noisy pretraining"):
        smoke(prv2.E2EConfig, root, refiner_encoder=prv2.PR_V1).resolved()
    result = prv2.train_e2e(smoke(prv2.E2EConfig, root, refiner_encoder=prv2.PR_V1, np_load="none", train_coarse=False))
    model = prv2.load_model(Path(result["run_dir"]) / "model.pt")
    assert isinstance(model.refiner, PRV1Refiner) and len(list((root / "prv2_coarse").iterdir())) == 1
    coarse = prv2.load_model(root / "prv2_coarse" / next((root / "prv2_coarse").iterdir()).name / "model.pt")
    assert all(torch.equal(a, b) for a, b in zip(model.coarse.state_dict().values(), coarse.state_dict().values()))


def test_teacher_steps(tmp_path):
    "`teacher_steps` picks the synthetic teacher run of a DSD configuration (None: the preset's schedule)."
    plain = prv2.teacher_config(smoke(prv2.FinetuneRealConfig, tmp_path)).resolved()
    short = prv2.teacher_config(smoke(prv2.FinetuneRealConfig, tmp_path, teacher_steps=1)).resolved()
    assert plain.steps == prv2.PRESET_VALUES["prv2_train"]["smoke"]["steps"] and short.steps == 1
    assert short.run_dir() == smoke(prv2.E2EConfig, tmp_path, steps=1).resolved().run_dir()


# ---------------------------------------------------------------- paper presets = the official configs (a81f726)
U4K = dict(reader="u4k", root="/data/u4k", split_file="/data/u4k/train.txt")
PAPER = dict(preset="paper", data=U4K, coarse_init="depth_anything_v2_metric_hypersim_vitl.pth")


def test_pr_v1_lr_multiplier_reaches_its_vit_and_the_prv2_one_its_encoder():
    # official patchrefiner_dav2/pr_u4k.py: `refiner_fine_branch.pretrained` (the ViT of PR-V1's base-model copy) ×1/30
    for enc in (prv2.PR_V1, "mini"):
        cfg = prv2.E2EConfig(preset="smoke", refiner_encoder=enc, np_load="none").resolved()
        arch = prv2.patchrefiner_arch(cfg)
        coarse = prv2.model_from_arch(arch["coarse"])
        from depth_anything_nb.models.prv2_model import PRV1Refiner
        from depth_anything_nb.models.prv2_refiner import PRV2Refiner
        refiner = PRV1Refiner.from_coarse(coarse) if enc == prv2.PR_V1 else PRV2Refiner(prv2.refiner_config(cfg))
        names = [n for n, _ in PatchRefiner(coarse, refiner).named_parameters()]
        for prefix in prv2.e2e_lr_mult(cfg):
            assert any(n.startswith(prefix) for n in names), (enc, prefix)
    pr = prv2.E2EConfig(**PAPER, refiner_encoder=prv2.PR_V1, train_coarse=False, np_load="none").resolved()
    assert (pr.epochs, pr.weight_decay, pr.encoder_lr_mult, pr.coarse_decay_mult) == (24, 0.01, 1 / 30, 1.0)
    assert prv2.e2e_lr_mult(pr) == {"refiner.fine_branch.model.pretrained.": 1 / 30, "coarse.": 0.0}


@pytest.mark.parametrize("enc, np_wd, wd, coarse_decay", [("M", 1e-5, 1e-5, 1000.0), ("E", 0.01, 0.01, 1.0),
                                                          ("C", 0.01, 0.01, 1.0)])
def test_paper_weight_decay_follows_the_refiner(enc, np_wd, wd, coarse_decay):
    # official: pretrain_{mobile,eff,convx}_m0s1.py and plus_{mobile,eff,convx}_u4k_base_coarse_e2e_c2f_pretrain.py
    assert prv2.PretrainConfig(**PAPER, refiner_encoder=enc).resolved().weight_decay == np_wd
    e2e = prv2.E2EConfig(**PAPER, refiner_encoder=enc).resolved()
    assert (e2e.weight_decay, e2e.coarse_decay_mult, e2e.epochs, e2e.coarse_lr_mult) == (wd, coarse_decay, 48, 1 / 30)
    assert prv2.E2EConfig(**PAPER, refiner_encoder=enc, weight_decay=0.5).resolved().weight_decay == 0.5  # explicit wins


def test_paper_precision_rotation_and_dsd_schedule():
    e2e = prv2.E2EConfig(**PAPER).resolved()
    assert e2e.amp == "none" and e2e.rotate == 1.0  # official: fp32, aug_rotate degree 1.0
    assert prv2.E2EConfig(preset="mini").resolved().rotate == 0.0
    dsd = prv2.FinetuneRealConfig(**PAPER, teacher_model="pr_v1_u4k.pt", np_model="np_u4k.pt").resolved()
    assert (dsd.coarse_lr_mult, dsd.dsd_weight, dsd.teacher, dsd.student_init, dsd.real_epochs) == (
        1 / 30, 0.5, "pr_v1", "coarse_np", 24)  # official patchrefinerv2_dav2/semi_kitti.py: coarse 1/30, λ 0.5


def test_training_set_rotates_by_the_configured_angle(tmp_path):
    cfg = prv2.E2EConfig(preset="smoke", out_root=str(tmp_path), rotate=1.0).resolved()
    assert prv2.training_set(cfg).transform.rotate == 1.0
    assert prv2.training_set(dataclasses.replace(cfg, rotate=0.0)).transform.rotate == 0.0
    assert PRV2TrainingSet([], (28, 42), (56, 56), augment=False, rotate=1.0).transform.rotate == 0.0


def test_paper_dsd_teacher_is_pr_v1_and_student_starts_from_real_coarse_and_np():
    dsd = prv2.FinetuneRealConfig(**PAPER, teacher_model=prv2.DERIVE, np_model=prv2.DERIVE)
    teacher = prv2.teacher_config(dsd.resolved()).resolved()
    assert (teacher.refiner_encoder, teacher.train_coarse, teacher.np_load, teacher.domain) == (
        prv2.PR_V1, False, "none", "synthetic")
    real = prv2.real_config(dsd).resolved()
    assert real.init == "" and real.domain == "real" and real.epochs == 24 and real.refiner_encoder == "M"
    assert prv2.pretrain_config(real).resolved().domain == "synthetic"  # NP weights from the synthetic set
    assert prv2.coarse_config(real).resolved().domain == "real"  # the real-domain coarse model
    given = prv2.FinetuneRealConfig(**PAPER, teacher_model="t.pt", np_model="np.pt").resolved()
    assert prv2.teacher_path(given) == Path("t.pt") and prv2.real_config(given).np_model == "np.pt"
    with pytest.raises(ValueError, match="real_epochs"):
        prv2.FinetuneRealConfig(**PAPER, teacher_model="t.pt", np_model="np.pt", real_epochs=0).resolved()
    # the miniature keeps its (cheaper) pipeline: PRV2 teacher, real-domain model continued from it
    mini = prv2.FinetuneRealConfig(preset="mini").resolved()
    assert (mini.teacher, mini.student_init) == ("prv2", "teacher")
    assert prv2.teacher_config(mini).resolved().refiner_encoder == "mini"


@pytest.mark.parametrize("cls, fields, missing", [
    (prv2.CoarseConfig, {"coarse_init": ""}, "coarse_init"),
    (prv2.E2EConfig, {"coarse_init": ""}, "coarse_init"),
    (prv2.FinetuneRealConfig, {"np_model": "np.pt"}, "teacher_model"),
    (prv2.FinetuneRealConfig, {"teacher_model": "t.pt"}, "np_model"),
])
def test_paper_preset_refuses_missing_initialisation(tmp_path, monkeypatch, cls, fields, missing):
    import depth_anything_nb.pipelines.stages as stages

    def no_work(*a, **k):
        raise RuntimeError("the stage started working")
    monkeypatch.setattr(stages, "run_lock", no_work)
    cfg = cls(**{**PAPER, **fields, "out_root": str(tmp_path)})
    with pytest.raises(ValueError, match=rf"preset='paper'\): set {missing} "):
        cfg.run()
    assert not any(tmp_path.iterdir())
    opt_out = prv2.RANDOM_INIT if missing == "coarse_init" else prv2.DERIVE
    dataclasses.replace(cfg, **{missing: opt_out}).resolved()  # the explicit opt-out
