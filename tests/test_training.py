"""The trainer's acceptance criteria (issue 5): DDP == single process, SIGKILL + resume is bit-exact, gradient
accumulation == a bigger batch, schedules == closed forms, AMP on CPU, damaged checkpoints.

Subprocess runs use the self-test task of `tests/toys.py` (a tiny MLP with dropout and a noise augmentation, run
as `python -m toys` with tests/ on PYTHONPATH); everything else runs in-process on tiny models."""
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from depth_anything_nb.train.distributed import ResumableSampler, config_from_argv, config_to_argv, launch_torchrun
from depth_anything_nb.train.trainer import (CheckpointError, LRSchedule, NonFiniteLossError, StepScheduler,
                                        TrainConfig, Trainer, list_checkpoints, load_pretrained, load_train_state,
                                        param_groups, read_log)

from toys import ToyTask, main, toy_setup  # tests/toys.py: the self-test toy (test code, not the package)

ROOT = Path(__file__).resolve().parents[1]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH")) if p)
    return env


def _selftest_cmd(out_dir, *args):
    return [sys.executable, "-m", "toys", "--out_dir", str(out_dir), "--progress", "false",
            *map(str, args)]


def _weights(path):
    return torch.load(Path(path) / "model.pt", weights_only=True)


def _max_diff(a, b):
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def _toy_trainer(out_dir, task=None, **overrides):
    task = task or ToyTask(dropout=0.0)
    kw = dict(out_dir=str(out_dir), steps=5, batch_size=8, lr=3e-3, lr_mult={}, default_lr_mult=1.0, log_every=1,
              progress=False)
    kw.update(overrides)
    config = TrainConfig(**kw)
    model, loss_fn, data = toy_setup(task, config.seed)
    return Trainer(model, loss_fn, data, config)


# ---------------------------------------------------------------- (a) 2 processes (gloo) == 1 process
def test_two_process_gloo_run_equals_one_process(tmp_path):
    "torchrun with 2 CPU processes × batch 2 × accumulation 2 == one process × batch 8 (same global batch)."
    common = ["--steps", "6", "--log_every", "1", "--progress", "false", "--toy_dropout", "0"]
    launch_torchrun("toys", ["--out_dir", str(tmp_path / "ddp"), "--batch_size", "2", "--grad_accum", "2",
                                 *common], nproc_per_node=2, env=_env(), echo=False)
    single = main(["--out_dir", str(tmp_path / "one"), "--batch_size", "8", *common])
    ddp = read_log(tmp_path / "ddp" / "metrics.jsonl")
    assert [r["step"] for r in ddp] == [r["step"] for r in single] == list(range(1, 7))
    for r_ddp, r_one in zip(ddp, single):
        assert r_ddp["samples"] == r_one["samples"]
        # another summation order (gloo all-reduce / micro-batches) of the toy MLP (K ≤ 32, losses ≤ 1): a logged loss
        # differs by ≤ 2·K·u ≈ 4e-6 (u = 2^-24); AdamW turns the gradient rounding into ≤ lr·steps·K·u ≈ 3e-8 of weight
        # (measured 3e-8), so 1e-6 on weights still fails a lost or doubled micro-batch (~lr = 3e-3)
        assert abs(r_ddp["loss"] - r_one["loss"]) <= 4e-6 and abs(r_ddp["mae"] - r_one["mae"]) <= 4e-6
    assert _max_diff(_weights(tmp_path / "ddp"), _weights(tmp_path / "one")) <= 1e-6
    assert read_log(tmp_path / "ddp" / "metrics.jsonl")[0]["loss"] != read_log(tmp_path / "ddp" / "metrics.jsonl")[-1]["loss"]


# ---------------------------------------------------------------- (b) SIGKILL mid-run + resume == uninterrupted
def test_sigkill_and_resume_is_bit_identical(tmp_path):
    """Dropout, a per-sample noise augmentation, 2 DataLoader workers, a kill in the middle of epoch 1: the resumed
    run ends with exactly the weights and the per-step losses of an uninterrupted run."""
    args = ["--steps", "30", "--batch_size", "4", "--grad_accum", "2", "--num_workers", "2",
            "--checkpoint_every", "4", "--keep_checkpoints", "2", "--log_every", "1", "--toy_dropout", "0.2"]
    ref = subprocess.run(_selftest_cmd(tmp_path / "ref", *args), env=_env(), capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr[-3000:]

    run = tmp_path / "killed"
    proc = subprocess.Popen(_selftest_cmd(run, *args, "--toy_sleep", "0.1"), env=_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    try:
        while not any(int(p.stem.split("_")[1]) >= 16 for p in list_checkpoints(run / "checkpoints")):
            assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its DataLoader workers, like a lost node
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (run / "model.pt").exists()
    killed_at = max(r["step"] for r in read_log(run / "metrics.jsonl"))
    assert 16 <= killed_at < 30  # 12 steps per epoch: killed in the middle of epoch 1

    resumed = subprocess.run(_selftest_cmd(run, *args), env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    ref_w, res_w = _weights(tmp_path / "ref"), _weights(run)
    assert all(torch.equal(ref_w[k], res_w[k]) for k in ref_w), f"max diff {_max_diff(ref_w, res_w)}"
    ref_log, res_log = read_log(tmp_path / "ref" / "metrics.jsonl"), read_log(run / "metrics.jsonl")
    assert [(r["step"], r["loss"], r["mae"]) for r in ref_log] == [(r["step"], r["loss"], r["mae"]) for r in res_log]
    assert len(list_checkpoints(run / "checkpoints")) == 2  # pruned to keep_checkpoints


def test_resume_with_longer_schedule_and_iterable_dataset(tmp_path):
    "A shard-aware IterableDataset positions itself; 4 steps + 4 more (a resumed, extended run) == 8 steps."

    class Stream(torch.utils.data.IterableDataset):
        def __init__(self):
            g = torch.Generator().manual_seed(0)
            self.x, self.y = torch.randn(40, 8, generator=g), torch.randn(40, generator=g)
            self.position = (0, 0, 0, 1)

        def set_epoch_position(self, epoch, start, rank, world_size):
            self.position = (epoch, start, rank, world_size)

        def __iter__(self):
            epoch, start, rank, world = self.position
            order = torch.randperm(40, generator=torch.Generator().manual_seed(epoch))
            for i in order[start + rank::world].tolist():
                yield self.x[i], self.y[i]

    def run(out_dir, steps):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Dropout(0.3), nn.Linear(16, 1))
        cfg = TrainConfig(out_dir=str(out_dir), steps=steps, batch_size=8, lr=1e-2, lr_mult={}, default_lr_mult=1.0,
                          schedule="constant", checkpoint_every=2, log_every=1, progress=False)
        def loss(m, b):
            return ((m(b[0]).squeeze(1) - b[1]) ** 2).mean(), {}

        trainer = Trainer(model, loss, Stream(), cfg)
        trainer.fit()
        return trainer

    full = run(tmp_path / "full", 8)  # 5 batches per epoch: crosses an epoch boundary
    run(tmp_path / "split", 4)
    resumed = run(tmp_path / "split", 8)
    assert resumed.resumed_from.name == "ckpt_00000004.pt" and resumed.epoch == full.epoch == 1
    assert all(torch.equal(a, b) for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()))


# ---------------------------------------------------------------- (c) accumulation k × b == batch k·b
@pytest.mark.parametrize("batch_size,grad_accum", [(4, 2), (2, 4), (1, 8)])
def test_grad_accumulation_equals_big_batch(tmp_path, batch_size, grad_accum):
    big = _toy_trainer(tmp_path / "big", batch_size=8)
    big.fit()
    acc = _toy_trainer(tmp_path / "acc", batch_size=batch_size, grad_accum=grad_accum)
    acc.fit()
    # another summation order (gloo all-reduce / micro-batches) of the toy MLP (K ≤ 32, losses ≤ 1): a logged loss
    # differs by ≤ 2·K·u ≈ 4e-6 (u = 2^-24); AdamW turns the gradient rounding into ≤ lr·steps·K·u ≈ 3e-8 of weight
    # (measured 3e-8), so 1e-6 on weights still fails a lost or doubled micro-batch (~lr = 3e-3)
    assert _max_diff(big.model.state_dict(), acc.model.state_dict()) <= 1e-6
    for a, b in zip(big.history, acc.history):
        assert abs(a["loss"] - b["loss"]) <= 4e-6


# ---------------------------------------------------------------- (d) schedules == closed forms
def test_poly_schedule_is_the_official_formula():
    T, base = 200, 5e-6
    poly = LRSchedule("poly", T, power=0.9)
    for s in range(T + 1):  # metric_depth/train.py: lr = args.lr * (1 - iters / total_iters) ** 0.9
        assert math.isclose(base * poly(s), base * (1 - s / T) ** 0.9, rel_tol=1e-12, abs_tol=1e-20)
    warm = LRSchedule("poly", T, warmup_steps=20, power=0.9)
    assert [warm(s) for s in range(3)] == [1 / 20, 2 / 20, 3 / 20] and warm(19) == 1.0 == warm(20)
    assert math.isclose(warm(110), (1 - 90 / 180) ** 0.9) and warm(T) == 0.0


def test_cosine_and_constant_schedules():
    T, W, m = 100, 10, 0.1
    cos = LRSchedule("cosine", T, warmup_steps=W, min_ratio=m)
    for s in range(W, T + 1):
        assert math.isclose(cos(s), m + (1 - m) * 0.5 * (1 + math.cos(math.pi * (s - W) / (T - W))), rel_tol=1e-12)
    assert cos(T) == pytest.approx(m) and cos(W) == 1.0 and cos(0) == 1 / W
    assert [LRSchedule("constant", T, warmup_steps=4)(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("total,pct,div,final_div", [(100, 0.3, 2, 100), (37, 0.25, 25, 1e4), (1000, 0.1, 10, 1e3)])
def test_onecycle_matches_pytorch_and_its_formula(total, pct, div, final_div):
    "PRV2's OneCycle (mmengine ≡ PyTorch OneCycleLR, two-phase cosine, cycled beta1) on two groups (coarse × 1/30)."
    peaks = [1.2e-4, 1.2e-4 / 30]
    p = [nn.Parameter(torch.zeros(1)) for _ in peaks]
    ref_opt = torch.optim.AdamW([{"params": [q], "lr": lr} for q, lr in zip(p, peaks)])
    ref = torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=peaks, total_steps=total, pct_start=pct,
                                              div_factor=div, final_div_factor=final_div, base_momentum=0.85,
                                              max_momentum=0.95)
    ours_opt = torch.optim.AdamW([{"params": [q], "lr": lr, "peak_lr": lr} for q, lr in zip(p, peaks)])
    ours = StepScheduler(ours_opt, LRSchedule("onecycle", total, pct_start=pct, div_factor=div,
                                              final_div_factor=final_div, momentum=(0.85, 0.95)))
    sched = ours.schedule
    for s in range(total):
        for g_ref, g in zip(ref_opt.param_groups, ours_opt.param_groups):
            assert math.isclose(g["lr"], g_ref["lr"], rel_tol=1e-9), s
            assert math.isclose(g["betas"][0], g_ref["betas"][0], rel_tol=1e-9), s
        # the closed form: cosine from 1/div up to 1 at step pct·T − 1, then down to 1/(div·final_div) at T − 1
        e1 = pct * total - 1
        if s <= e1:
            f = 1 + (1 / div - 1) / 2 * (1 + math.cos(math.pi * s / e1))
        else:
            lo = 1 / div / final_div
            f = lo + (1 - lo) / 2 * (1 + math.cos(math.pi * (s - e1) / (total - 1 - e1)))
        assert math.isclose(sched(s), f, rel_tol=1e-12)
        ours_opt.step(), ref_opt.step()
        ours.step(), ref.step()
    assert math.isclose(sched(total - 1), 1 / div / final_div)


def test_param_groups_lr_multipliers_and_logged_lrs(tmp_path):
    model = nn.ModuleDict({"pretrained": nn.Linear(2, 2), "pretrained_extra": nn.Linear(2, 2),
                           "coarse_branch": nn.Linear(2, 2), "head": nn.Linear(2, 2)})
    groups = param_groups(model, 1.0, {"pretrained.": 1.0, "coarse_branch.": 1 / 30, "coarse_branch.bias": 0.0},
                          default_lr_mult=10.0)
    named = {g["name"]: g for g in groups}
    assert named["pretrained"]["lr"] == 1.0 and len(named["pretrained"]["params"]) == 2  # not pretrained_extra
    assert named["coarse_branch"]["lr"] == pytest.approx(1 / 30) and len(named["coarse_branch"]["params"]) == 1
    assert named["rest"]["lr"] == 10.0 and len(named["rest"]["params"]) == 4
    assert not model["coarse_branch"].bias.requires_grad  # the longer prefix with multiplier 0 froze it

    t = _toy_trainer(tmp_path, steps=4, lr=1e-3, lr_mult={"0.": 1.0}, default_lr_mult=10.0, schedule="poly")
    t.fit()
    first, second = t.history[:2]  # the lr each logged step used: f(0) = 1, f(1) = (1 − 1/4)^0.9
    assert first["lr/0"] == 1e-3 and first["lr/rest"] == 1e-2
    assert second["lr/0"] == pytest.approx(1e-3 * 0.75 ** 0.9) and second["lr/rest"] == pytest.approx(1e-2 * 0.75 ** 0.9)


# ---------------------------------------------------------------- (e) AMP on CPU
@pytest.mark.parametrize("amp,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_amp_runs_on_cpu_without_nan(tmp_path, amp, dtype):
    seen = []
    model, toy_loss, data = toy_setup(ToyTask(dropout=0.1), seed=0)

    def loss_fn(m, batch):
        x, y = batch
        pred = m(x).squeeze(1)
        seen.append(pred.dtype)  # autocast really ran the linear layers in low precision
        return ((pred.float() - y) ** 2).mean(), {}

    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(out_dir=str(tmp_path), steps=8, batch_size=8, lr=3e-3, lr_mult={}, default_lr_mult=1.0,
                      amp=amp, log_every=2, progress=False)
    trainer = Trainer(model, loss_fn, data, cfg)
    history = trainer.fit()
    assert set(seen) == {dtype}
    assert all(math.isfinite(r["loss"]) for r in history) and history[-1]["loss"] < history[0]["loss"]
    assert all(torch.isfinite(v).all() for v in trainer.model.state_dict().values())
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    assert trainer.scaler.is_enabled() == (amp == "fp16")
    state = load_train_state(list_checkpoints(tmp_path / "checkpoints")[-1])
    if amp == "fp16":
        assert state["scaler"]["scale"] > 0 and "loss_scale" in history[-1]


# ---------------------------------------------------------------- (f) damaged checkpoints
def test_corrupt_checkpoint_is_named_and_auto_resume_falls_back(tmp_path):
    _toy_trainer(tmp_path, steps=8, checkpoint_every=2, keep_checkpoints=3).fit()
    ckpts = list_checkpoints(tmp_path / "checkpoints")
    assert [p.name for p in ckpts] == ["ckpt_00000004.pt", "ckpt_00000006.pt", "ckpt_00000008.pt"]
    ckpts[-1].write_bytes(ckpts[-1].read_bytes()[: ckpts[-1].stat().st_size // 2])  # truncated
    with pytest.raises(CheckpointError, match="ckpt_00000008.pt"):
        load_train_state(ckpts[-1])
    with pytest.raises(CheckpointError, match="ckpt_00000008.pt.*truncated or corrupt"):
        _toy_trainer(tmp_path, steps=8).resume(ckpts[-1])

    trainer = _toy_trainer(tmp_path, steps=8, checkpoint_every=2, keep_checkpoints=3)
    with pytest.warns(UserWarning, match="ckpt_00000008.pt.*falling back"):
        trainer.fit()
    assert trainer.resumed_from == ckpts[1] and trainer.step == 8
    assert load_train_state(ckpts[-1])["step"] == 8  # rewritten, readable again

    ckpts[-1].write_bytes(b"\x00garbage" * 100)
    ckpts[-2].write_bytes(b"")
    torch.save({"not": "a training checkpoint"}, ckpts[0])
    with pytest.raises(CheckpointError, match="not a depth_anything_nb.training/1 training checkpoint"):
        load_train_state(ckpts[0])
    with pytest.raises(CheckpointError, match="no readable checkpoint"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _toy_trainer(tmp_path, steps=8).fit()


def test_checkpoint_loads_with_weights_only_and_holds_the_position(tmp_path):
    t = _toy_trainer(tmp_path, steps=15, batch_size=8, checkpoint_every=15)  # 12 steps per epoch
    t.fit()
    state = torch.load(list_checkpoints(tmp_path / "checkpoints")[-1], weights_only=True)
    assert (state["step"], state["epoch"], state["epoch_samples"], state["samples_seen"]) == (15, 1, 24, 120)
    assert len(state["rng"]) == 1 and state["rng"][0]["numpy"]["keys"].shape == (624,)
    assert state["optimizer"]["state"] and state["config"]["steps"] == 15


def test_fresh_start_does_not_mix_with_an_old_run(tmp_path):
    _toy_trainer(tmp_path, steps=2).fit()
    with pytest.raises(FileExistsError, match="resume=None"):
        _toy_trainer(tmp_path, steps=2, resume=None).fit()


def test_evaluation_does_not_disturb_training(tmp_path):
    "An eval_fn that consumes random numbers (and sees eval mode) leaves the training run bit-identical."
    calls = []

    def noisy_eval(model, step):
        calls.append((step, model.training))
        torch.rand(100), torch.randn(3)
        return {"dummy": torch.tensor(float(step))}

    plain = _toy_trainer(tmp_path / "plain", task=ToyTask(dropout=0.3), steps=9)
    plain.fit()
    with_eval = _toy_trainer(tmp_path / "eval", task=ToyTask(dropout=0.3), steps=9, eval_every=4)
    with_eval.eval_fn = noisy_eval
    with_eval.fit()
    assert calls == [(4, False), (8, False), (9, False)]
    assert [r["step"] for r in read_log(tmp_path / "eval" / "eval.jsonl")] == [4, 8, 9]
    assert all(torch.equal(a, b) for a, b in zip(plain.model.state_dict().values(),
                                                 with_eval.model.state_dict().values()))


def test_tensorboard_is_optional(tmp_path):
    t = _toy_trainer(tmp_path, steps=2, tensorboard=True)
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.warns(UserWarning, match="tensorboard package is not installed"):
            t.fit()
    else:
        t.fit()
        assert any((tmp_path / "tb").iterdir())
    assert len(read_log(tmp_path / "metrics.jsonl")) == 2 and (tmp_path / "metrics.csv").exists()  # always there


# ---------------------------------------------------------------- non-finite losses
def _nan_at(step_to_fail):
    calls = {"n": 0}
    model, toy_loss, data = toy_setup(ToyTask(dropout=0.0), seed=0)

    def loss_fn(m, batch):
        calls["n"] += 1
        loss, logs = toy_loss(m, batch)
        return (loss * float("nan") if calls["n"] == step_to_fail else loss), logs

    return model, loss_fn, data


def test_nonfinite_loss_raises_with_the_step(tmp_path):
    model, loss_fn, data = _nan_at(3)
    cfg = TrainConfig(out_dir=str(tmp_path), steps=6, batch_size=8, progress=False)
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step 3 .*loss=nan"):
        Trainer(model, loss_fn, data, cfg).fit()


def test_nonfinite_loss_can_be_skipped_and_counted(tmp_path):
    model, loss_fn, data = _nan_at(3)
    cfg = TrainConfig(out_dir=str(tmp_path), steps=6, batch_size=8, log_every=1, max_nonfinite=1, progress=False)
    trainer = Trainer(model, loss_fn, data, cfg)
    with pytest.warns(UserWarning, match="step 3: non-finite loss, step skipped"):
        history = trainer.fit()
    assert trainer.nonfinite == 1 and history[-1]["nonfinite"] == 1 and trainer.step == 6
    assert "loss" not in history[2] and all(math.isfinite(r["loss"]) for i, r in enumerate(history) if i != 2)
    assert all(torch.isfinite(v).all() for v in trainer.model.state_dict().values())


# ---------------------------------------------------------------- initialisation, configs, sampler
def test_load_pretrained_filters_renames_and_reports(tmp_path):
    src = nn.ModuleDict({"backbone": nn.Linear(3, 4), "head": nn.Linear(4, 1), "extra": nn.Linear(1, 1)})
    dst = nn.ModuleDict({"pretrained": nn.Linear(3, 4), "head": nn.Linear(4, 2)})
    path = tmp_path / "relative.pth"
    torch.save({"model": {f"module.{k}": v for k, v in src.state_dict().items()}}, path)  # DDP-style wrapper
    report = load_pretrained(dst, path, include=("pretrained.", "head.", "extra."), rename={"backbone.": "pretrained."})
    assert report.loaded == ["pretrained.bias", "pretrained.weight"]
    assert torch.equal(dst["pretrained"].weight, src["backbone"].weight)
    assert [m[0] for m in report.mismatched] == ["head.weight", "head.bias"]
    assert sorted(report.unexpected) == ["extra.bias", "extra.weight"] and report.missing == ["head.bias", "head.weight"]
    assert "loaded 2 tensors" in str(report)
    from safetensors.torch import save_file
    save_file(src.state_dict(), str(tmp_path / "w.safetensors"))
    assert load_pretrained(src, tmp_path / "w.safetensors").missing == []
    (tmp_path / "bad.pth").write_bytes(b"nope")
    with pytest.raises(CheckpointError, match="bad.pth"):
        load_pretrained(src, tmp_path / "bad.pth")


def test_train_config_round_trips_through_argv():
    cfg = TrainConfig(out_dir="runs/007", steps=480_000, batch_size=12, lr_mult={"pretrained.": 1.0}, amp="bf16",
                      betas=(0.85, 0.99), init_include=("pretrained.",), grad_clip=35.0, onecycle_momentum=None)
    argv = config_to_argv(cfg)
    assert config_from_argv(TrainConfig, argv) == cfg
    with pytest.raises(SystemExit, match="unknown option"):
        config_from_argv(TrainConfig, ["--stepz", "3"])
    assert config_from_argv(TrainConfig, ["--resume", "null", "--init_from", "123"]).init_from == "123"
    with pytest.raises(ValueError, match="exactly one of steps"):
        TrainConfig(steps=3, epochs=2)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 60), st.integers(1, 4), st.integers(1, 4), st.integers(0, 5), st.integers(0, 3))
def test_sampler_shards_are_the_global_batches(n, world, per_rank, start_steps, epoch):
    "Whatever the world size, optimiser step s sees the same set of samples: positions [sG, (s+1)G)."
    G = world * per_rank
    one = list(ResumableSampler(n, G, seed=7, epoch=epoch))
    start = min(start_steps, n // G) * G
    shards = [list(ResumableSampler(n, G, rank=r, world_size=world, seed=7, epoch=epoch, start=start))
              for r in range(world)]
    assert len(one) == (n // G) * G and len(set(one)) == len(one)
    for s in range(len(shards[0]) // per_rank):
        got = sorted(i for shard in shards for i in shard[s * per_rank:(s + 1) * per_rank])
        assert got == sorted(one[start + s * G:start + (s + 1) * G])


def test_checkpoint_format_tag_survives_the_package_layout(tmp_path):
    "The tag inside training checkpoints is data, not a module path: runs written before the package was layered resume."
    _toy_trainer(tmp_path, steps=2, checkpoint_every=2).fit()
    state = load_train_state(list_checkpoints(tmp_path / "checkpoints")[-1])
    assert state["format"] == "depth_anything_nb.training/1" and state["step"] == 2
