"""A corpus of bad and unusual inputs for `depth-anything run` / `refine` (issue 13), every file generated here.

Each case builds its inputs in a fresh folder and says what the run must do: the exit code, a piece of the message
that names the culprit, and the outputs of the good inputs of the same batch. The runner then checks, for every
case, that no file that existed before the run (inputs, earlier outputs) changed, and that no temporary output
file remains. Runs are in-process where that is safe; the cases that kill or interrupt a run, that could hang
(FIFOs), or that are bounded by memory run in a subprocess, the memory-bound ones under `RLIMIT_AS`, so that a
regression fails fast instead of swapping the machine.

The model is a tiny `mini-t` DAv2 (random weights, saved once per module) at a 28-px network input.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import resource
import signal
import stat
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from depth_anything_nb import DepthAnythingV2
from depth_anything_nb.models.checkpoints import save_safetensors
from depth_anything_nb.apps.cli import main
from depth_anything_nb.models.inference import read_depth_png16

ROOT = Path(__file__).resolve().parents[1]
RUNNER = "import sys; from depth_anything_nb.apps.cli import main; sys.exit(main(sys.argv[1:]))"
REFINE_TINY = ["--coarse-encoder", "mini-t", "--refiner-encoder", "mini", "--process-shape", "56", "56",
               "--patch-split-num", "2", "2"]
# importing torch maps gigabytes of address space (CUDA libraries: ~3.5 GB here), so the limit is that baseline,
# measured on this machine, plus 2.5 GB for the run itself; each memory-bound case would need from 10 GB (a decoded
# 20000x20000 image in float64) to terabytes without its bound
RUN_HEADROOM = 5 << 29
# the crash case injects a MemoryError into the writer of a real subprocess run
_CRASHER = ("import sys, depth_anything_nb.apps.cli as c\n"
            "def boom(*a, **k):\n    raise MemoryError('injected')\n"
            "c.write_outputs = boom\nsys.exit(c.main(sys.argv[1:]))")
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    "Checkpoints shared by every case: a tiny relative model, and one whose output is NaN everywhere."
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    model = DepthAnythingV2.from_config("mini-t")
    torch.save(model.state_dict(), folder / "tiny.pth")
    state = model.state_dict()
    state["depth_head.scratch.output_conv2.2.bias"].fill_(float("nan"))
    torch.save(state, folder / "nan.pth")
    return {"tiny": folder / "tiny.pth", "nan": folder / "nan.pth"}


def scene(h: int = 40, w: int = 56, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def png(path: Path, h: int = 40, w: int = 56, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), scene(h, w, seed))
    return path


def bomb_png(path: Path, side: int = 20000) -> Path:
    "A valid RGB PNG of side x side black pixels: a few hundred kB on disk, 1.2 GB decoded."
    z = zlib.compressobj(9)
    row = b"\0" * (1 + 3 * side)
    body = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    chunk = lambda kind, data: len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", side.to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0]))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def dead_pid() -> int:
    "The pid of a process that has exited."
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


@dataclass
class Case:
    argv: list[str]  # after `depth-anything`
    code: int  # the expected exit code
    says: list[str]  # pieces of the message (stdout + stderr) naming the culprit and the problem
    outputs: list[str] = field(default_factory=list)  # files of the good inputs, relative to the tmp folder
    culprits: list[str] = field(default_factory=list)  # file names that summary.json must list as failed
    subprocess: bool = False
    memory_limit: bool = False  # run under RLIMIT_AS
    may_change: list[str] = field(default_factory=list)  # files allowed to change (relative to tmp)
    check: object = None  # extra assertions: check(tmp, output_text)
    during: object = None  # for subprocess cases: during(process, tmp) runs while it runs (signals)
    timeout: float = 120
    runner: str = RUNNER  # the Python code a subprocess case runs


# ----------------------------------------------------------------------------------------------- the corpus
CASES: dict[str, callable] = {}


def case(fn):
    CASES[fn.__name__] = fn
    return fn


def run_args(tmp: Path, tiny: dict, *inputs, out: str = "out", model: str = "tiny") -> list[str]:
    return ["run", "--img-path", *map(str, inputs), "--outdir", str(tmp / out), "--checkpoint", str(tiny[model]),
            "--input-size", "28"]


# --- silent data loss
@case
def input_inside_outdir_is_not_overwritten(tmp, tiny):
    photo = png(tmp / "out" / "self" / "photo.png")
    return Case(["run", "--img-path", str(photo), "--outdir", str(tmp / "out" / "self"), "--checkpoint",
                 str(tiny["tiny"]), "--input-size", "28"], 0, [],
                outputs=["out/self/photo_png.png"], check=lambda t, o: _warned(t / "out/self", "photo.png", "the input itself"))


@case
def png16_of_one_input_not_replaced_by_anothers_colour_map(tmp, tiny):
    png(tmp / "in" / "a.png")
    png(tmp / "in" / "a_depth16.jpg", seed=1)

    def check(t, o):
        assert read_depth_png16(t / "out" / "a_depth16.png").shape == (40, 56)  # 16-bit depth, not a colour map
        assert cv2.imread(str(t / "out" / "a_depth16.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
        _warned(t / "out", "a_depth16.jpg", "the output of")

    return Case(run_args(tmp, tiny, tmp / "in") + ["--save-png16"], 0, [],
                outputs=["out/a.png", "out/a_depth16.png", "out/a_depth16.json", "out/a_depth16_jpg.png",
                         "out/a_depth16_jpg_depth16.png"], check=check)


@case
def video_inside_outdir_is_not_overwritten(tmp, tiny):
    clip = _video(tmp / "out" / "clip.mp4")
    return Case(["run", "--video-path", str(clip), "--outdir", str(tmp / "out"), "--checkpoint", str(tiny["tiny"]),
                 "--input-size", "28"], 0, [], outputs=["out/clip_mp4.mp4"])


@case
def same_file_given_twice(tmp, tiny):
    png(tmp / "a.png")
    return Case(run_args(tmp, tiny, tmp / "a.png", tmp / "a.png"), 0, [], outputs=["out/a_png.png", "out/a_png_2.png"])


@case
def same_stem_in_a_list_and_a_folder(tmp, tiny):
    png(tmp / "a" / "x.png")
    png(tmp / "b" / "x.png", seed=2)
    (tmp / "list.txt").write_text(f"{tmp / 'b' / 'x.png'}\n")
    return Case(run_args(tmp, tiny, tmp / "a", tmp / "list.txt"), 0, [], outputs=["out/x_png.png", "out/x_png_2.png"])


@case
def second_run_keeps_the_first_runs_record(tmp, tiny):
    png(tmp / "in" / "a.png")
    assert main(run_args(tmp, tiny, tmp / "in" / "a.png")) == 0
    first = json.loads((tmp / "out" / "summary.json").read_text())
    assert first.pop("previous_runs") == []

    def check(t, o):
        summary = json.loads((t / "out" / "summary.json").read_text())
        assert summary["completed"] and summary["previous_runs"] == [first]

    return Case(run_args(tmp, tiny, tmp / "in" / "a.png", tmp / "gone.png"), 1, ["gone.png", "no such file"],
                outputs=["out/a.png"], culprits=["gone.png"], may_change=["out/a.png"], check=check)


@case
def unreadable_earlier_summary_is_kept_aside(tmp, tiny):
    png(tmp / "in" / "a.png")
    (tmp / "out").mkdir()
    (tmp / "out" / "summary.json").write_text("{ not json")

    def check(t, o):
        kept = list((t / "out").glob("summary.unreadable-*.json"))
        assert len(kept) == 1 and kept[0].read_text() == "{ not json"
        assert "kept as" in json.loads((t / "out" / "summary.json").read_text())["notes"][-1]

    return Case(run_args(tmp, tiny, tmp / "in" / "a.png"), 0, [], outputs=["out/a.png"],
                may_change=["out/summary.json"], check=check)


@case
def nan_checkpoint_fails_each_image(tmp, tiny):
    png(tmp / "in" / "a.png")
    png(tmp / "in" / "b.png", seed=1)

    def check(t, o):
        assert not list((t / "out").glob("*.npy")) and not list((t / "out").glob("*_depth16.png"))
        assert "flat depth" not in o

    return Case(run_args(tmp, tiny, tmp / "in", model="nan") + ["--save-npy", "--save-png16"], 1,
                ["a.png", "b.png", "non-finite depth"], culprits=["a.png", "b.png"], check=check)


def signalled_run(tmp, sig: int, exit_code: int, word: str) -> Case:
    "A run of 40 images sent `sig` after its first output: exit `exit_code`, and the summary says `word`."
    for i in range(40):
        png(tmp / "in" / f"img{i:02d}.png", 60, 80, seed=i)

    def send(process, t):
        _wait_for(lambda: list((t / "out").glob("img*.png")), process)
        process.send_signal(sig)

    def check(t, o):
        summary = json.loads((t / "out" / "summary.json").read_text())
        assert summary["exit_code"] == exit_code and not summary["completed"] and word in summary["aborted"]
        assert 0 < summary["counts"].get("images", 0) < 40

    # random vits weights at the official 518 input: slow enough (about a second an image) to be interrupted
    return Case(["run", "--img-path", str(tmp / "in"), "--outdir", str(tmp / "out"), "--encoder", "vits",
                 "--random-weights", "--batch-size", "1"], exit_code, [word], subprocess=True, during=send, check=check)


@case
def ctrl_c_is_exit_130_and_said_in_the_summary(tmp, tiny):
    return signalled_run(tmp, signal.SIGINT, 130, "interrupted")


@case
def sigterm_is_exit_143_and_said_in_the_summary(tmp, tiny):
    return signalled_run(tmp, signal.SIGTERM, 143, "terminated")


@case
def crash_is_recorded_as_a_failed_run(tmp, tiny):
    png(tmp / "in" / "a.png")
    return Case(run_args(tmp, tiny, tmp / "in" / "a.png") + ["--save-npy"], 1, ["crashed", "MemoryError"],
                check=_crash_check, subprocess=True, runner=_CRASHER)


# --- resources
@case
def thin_image_network_input_is_capped(tmp, tiny):
    png(tmp / "in" / "strip.png", 14, 1000)
    png(tmp / "in" / "good.png")

    def check(t, o):
        assert _warned(t / "out", "strip.png", "capped by --max-network-side 2072")

    return Case(["run", "--img-path", str(tmp / "in"), "--outdir", str(tmp / "out"), "--checkpoint",
                 str(tiny["tiny"]), "--save-npy", "--device", "cpu"], 0, [], outputs=["out/strip.png", "out/good.png"],
                subprocess=True, memory_limit=True, check=check)


@case
def input_size_beyond_the_network_bound(tmp, tiny):
    png(tmp / "a.png")
    return Case(["run", "--img-path", str(tmp / "a.png"), "--outdir", str(tmp / "out"), "--checkpoint",
                 str(tiny["tiny"]), "--input-size", "100000", "--device", "cpu"], 2, ["--input-size 100000", "--max-network-side"],
                subprocess=True, memory_limit=True)


@case
def decompression_bomb_refused_by_its_header(tmp, tiny):
    (tmp / "in").mkdir()
    bomb_png(tmp / "in" / "bomb.png")
    png(tmp / "in" / "good.png")
    assert (tmp / "in" / "bomb.png").stat().st_size < 2_000_000
    return Case(["run", "--img-path", str(tmp / "in"), "--outdir", str(tmp / "out"), "--checkpoint",
                 str(tiny["tiny"]), "--input-size", "28", "--device", "cpu"], 1, ["bomb.png", "20000x20000", "100 Mpx"],
                outputs=["out/good.png"], culprits=["bomb.png"], subprocess=True, memory_limit=True)


@case
def max_pixels_option(tmp, tiny):
    png(tmp / "big.png", 100, 100)
    png(tmp / "small.png", 20, 20)
    return Case(run_args(tmp, tiny, tmp / "big.png", tmp / "small.png") + ["--max-pixels", "0.005"], 1,
                ["big.png", "100x100"], outputs=["out/small.png"], culprits=["big.png"])


@case
def refine_huge_patch_split_refused_before_allocating(tmp, tiny):
    png(tmp / "a.png", 112, 112)
    return Case(["refine", "--img-path", str(tmp / "a.png"), "--outdir", str(tmp / "out"), *REFINE_TINY[:-3],
                 "--patch-split-num", "1000", "1000", "--device", "cpu"], 2, ["--patch-split-num 1000 1000", "canvas", "GB"],
                subprocess=True, memory_limit=True, check=lambda t, o: not (t / "out").exists() or _fail("outdir made"))


@case
def refine_image_too_big_for_the_memory_bound(tmp, tiny):
    png(tmp / "in" / "a.png", 112, 112)
    png(tmp / "in" / "big.png", 1200, 1600)
    return Case(["refine", "--img-path", str(tmp / "in"), "--outdir", str(tmp / "out"), *REFINE_TINY,
                 "--max-memory-gb", "0.05"], 1, ["big.png", "--max-memory-gb 0.05"], outputs=["out/a.png"],
                culprits=["big.png"])


# --- crashes and hangs
@case
def symlink_loop_in_an_input_folder(tmp, tiny):
    png(tmp / "in" / "good.png")
    os.symlink("loop.png", tmp / "in" / "loop.png")
    os.symlink("../in", tmp / "in" / "back")  # a directory cycle: not followed
    return Case(run_args(tmp, tiny, tmp / "in"), 1, ["loop.png", "symbolic link loop"], outputs=["out/good.png"],
                culprits=["loop.png"])


@case
def dangling_symlink_in_an_input_folder(tmp, tiny):
    png(tmp / "in" / "good.png")
    os.symlink(tmp / "nowhere.png", tmp / "in" / "dangling.png")
    return Case(run_args(tmp, tiny, tmp / "in"), 1, ["dangling.png", "missing file"], outputs=["out/good.png"],
                culprits=["dangling.png"])


@case
def symlink_loop_named_explicitly(tmp, tiny):
    png(tmp / "good.png")
    os.symlink("self.png", tmp / "self.png")
    return Case(run_args(tmp, tiny, tmp / "self.png", tmp / "good.png"), 1, ["self.png", "symbolic links"],
                outputs=["out/good.png"], culprits=["self.png"])


@case
def non_utf8_list(tmp, tiny):
    png(tmp / "good.png")
    (tmp / "list.txt").write_bytes(b"caf\xe9.png\n")
    return Case(run_args(tmp, tiny, tmp / "list.txt", tmp / "good.png"), 1, ["list.txt", "not UTF-8"],
                outputs=["out/good.png"], culprits=["list.txt"])


@case
def utf8_list_with_bom_and_comments(tmp, tiny):
    png(tmp / "é.png")
    (tmp / "list.txt").write_bytes(("\ufeff# photos\n\n" + str(tmp / "é.png") + "\n").encode("utf-8"))
    return Case(run_args(tmp, tiny, tmp / "list.txt"), 0, [], outputs=["out/é.png"])


@case
def outdir_is_a_file(tmp, tiny):
    png(tmp / "a.png")
    (tmp / "out").write_text("a file, not a folder")
    return Case(run_args(tmp, tiny, tmp / "a.png"), 2, ["--outdir", "is not a folder"])


@case
def outdir_below_a_file(tmp, tiny):
    png(tmp / "a.png")
    (tmp / "file").write_text("x")
    return Case(run_args(tmp, tiny, tmp / "a.png", out="file/out"), 2, ["file/out", "is not a folder"])


@case
def outdir_not_writable(tmp, tiny):
    if IS_ROOT:
        pytest.skip("root writes into read-only folders")
    png(tmp / "a.png")
    (tmp / "ro").mkdir()
    (tmp / "ro").chmod(0o555)
    return Case(run_args(tmp, tiny, tmp / "a.png", out="ro/out"), 2, ["ro", "not writable"])


@case
def outdir_in_a_pseudo_filesystem(tmp, tiny):
    "procfs takes no new files, not even from root"
    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc on this system")
    png(tmp / "a.png")
    return Case(["run", "--img-path", str(tmp / "a.png"), "--outdir", "/proc/depth-anything-out", "--checkpoint",
                 str(tiny["tiny"]), "--input-size", "28"], 2, ["/proc/depth-anything-out", "not writable"])


@case
def refine_process_shape_zero(tmp, tiny):
    png(tmp / "a.png", 112, 112)
    return Case(["refine", "--img-path", str(tmp / "a.png"), "--outdir", str(tmp / "out"), "--process-shape", "0",
                 "0"], 2, ["--process-shape", "at least 14"])


def refine_with_model_json(tmp, text: str, expected: str) -> Case:
    "A refine run whose checkpoint has `text` as its sibling model.json: a one-line error naming the json."
    png(tmp / "a.png", 112, 112)
    torch.save({"w": torch.zeros(1)}, tmp / "model.pt")
    (tmp / "model.json").write_text(text)
    return Case(["refine", "--img-path", str(tmp / "a.png"), "--outdir", str(tmp / "out"), "--checkpoint",
                 str(tmp / "model.pt")], 2, ["model.json", expected])


@case
def refine_checkpoint_with_malformed_json(tmp, tiny):
    return refine_with_model_json(tmp, '{"kind": "patchrefiner", ', "unreadable")


@case
def refine_checkpoint_with_json_of_another_kind(tmp, tiny):
    return refine_with_model_json(tmp, "[1, 2, 3]", "not a PRV2 stage model description")


@case
def refine_json_missing_fields(tmp, tiny):
    return refine_with_model_json(tmp, '{"kind": "patchrefiner"}', "malformed")


@case
def fifo_given_as_an_image(tmp, tiny):
    png(tmp / "good.png")
    os.mkfifo(tmp / "pipe.png")
    return Case(run_args(tmp, tiny, tmp / "pipe.png", tmp / "good.png"), 1, ["pipe.png", "FIFO"],
                outputs=["out/good.png"], culprits=["pipe.png"], subprocess=True, timeout=60)


@case
def fifo_inside_an_input_folder_is_skipped(tmp, tiny):
    png(tmp / "in" / "good.png")
    os.mkfifo(tmp / "in" / "pipe.png")
    return Case(run_args(tmp, tiny, tmp / "in"), 0, [], outputs=["out/good.png"], subprocess=True, timeout=60)


@case
def fifo_given_as_a_checkpoint(tmp, tiny):
    png(tmp / "good.png")
    os.mkfifo(tmp / "model.pth")
    return Case(["run", "--img-path", str(tmp / "good.png"), "--outdir", str(tmp / "out"), "--checkpoint",
                 str(tmp / "model.pth")], 2, ["model.pth", "not a regular file"], subprocess=True, timeout=60)


# --- messages
@case
def random_bytes_as_a_checkpoint(tmp, tiny):
    png(tmp / "a.png")
    (tmp / "junk.pth").write_bytes(bytes(range(7, 256)) * 40)
    return Case(["run", "--img-path", str(tmp / "a.png"), "--outdir", str(tmp / "out"), "--checkpoint",
                 str(tmp / "junk.pth")], 2, ["junk.pth", "not a PyTorch checkpoint"],
                check=lambda t, o: "Python objects" not in o or _fail("misleading message"))


@case
def pickle_with_code_refused(tmp, tiny):
    png(tmp / "a.png")
    torch.save({"state": torch.zeros(1), "callback": os.system}, tmp / "evil.pth")
    return Case(["run", "--img-path", str(tmp / "a.png"), "--outdir", str(tmp / "out"), "--checkpoint",
                 str(tmp / "evil.pth")], 2, ["evil.pth", "Python objects"])


@case
def truncated_checkpoint(tmp, tiny):
    png(tmp / "a.png")
    data = tiny["tiny"].read_bytes()
    (tmp / "cut.pth").write_bytes(data[: len(data) // 2])
    return Case(["run", "--img-path", str(tmp / "a.png"), "--outdir", str(tmp / "out"), "--checkpoint",
                 str(tmp / "cut.pth")], 2, ["cut.pth", "cannot load"])


@case
def float32_rgb_tiff(tmp, tiny):
    png(tmp / "good.png")
    cv2.imwrite(str(tmp / "depth.tif"), np.random.default_rng(0).random((40, 50, 3)).astype(np.float32))
    return Case(run_args(tmp, tiny, tmp / "depth.tif", tmp / "good.png"), 1, ["depth.tif", "floating-point TIFF"],
                outputs=["out/good.png"], culprits=["depth.tif"],
                check=lambda t, o: "corrupt" not in o or _fail("called corrupt"))


@case
def float32_gray_tiff(tmp, tiny):
    png(tmp / "good.png")
    cv2.imwrite(str(tmp / "gray.tif"), np.random.default_rng(0).random((40, 50)).astype(np.float32))
    return Case(run_args(tmp, tiny, tmp / "gray.tif", tmp / "good.png"), 1, ["gray.tif", "floating-point"],
                outputs=["out/good.png"], culprits=["gray.tif"])


@case
def hugging_face_folder_as_checkpoint(tmp, tiny):
    png(tmp / "a.png")
    (tmp / "hf").mkdir()
    save_safetensors(DepthAnythingV2.from_config("mini-t"), tmp / "hf" / "model.safetensors")
    return Case(["run", "--img-path", str(tmp / "a.png"), "--outdir", str(tmp / "out"), "--checkpoint",
                 str(tmp / "hf"), "--input-size", "28"], 0, [], outputs=["out/a.png"])


@case
def empty_folder_as_checkpoint(tmp, tiny):
    png(tmp / "a.png")
    (tmp / "empty").mkdir()
    return Case(["run", "--img-path", str(tmp / "a.png"), "--outdir", str(tmp / "out"), "--checkpoint",
                 str(tmp / "empty")], 2, ["empty", "directory without model.safetensors"])


@case
def missing_checkpoint(tmp, tiny):
    png(tmp / "a.png")
    return Case(["run", "--img-path", str(tmp / "a.png"), "--outdir", str(tmp / "out"), "--checkpoint",
                 str(tmp / "nope.pth")], 2, ["nope.pth", "no such file or directory"])


@case
def repeated_img_path_keeps_every_value(tmp, tiny):
    png(tmp / "a.png")
    png(tmp / "b.png", seed=1)
    return Case(["run", "--img-path", str(tmp / "a.png"), "--img-path", str(tmp / "b.png"), "--outdir",
                 str(tmp / "out"), "--checkpoint", str(tiny["tiny"]), "--input-size", "28"], 0, [],
                outputs=["out/a.png", "out/b.png"])


@case
def refine_repeated_img_path(tmp, tiny):
    png(tmp / "a.png", 112, 112)
    png(tmp / "b.png", 112, 112, seed=1)
    return Case(["refine", "--img-path", str(tmp / "a.png"), "--img-path", str(tmp / "b.png"), "--outdir",
                 str(tmp / "out"), *REFINE_TINY], 0, [], outputs=["out/a.png", "out/b.png"])


# --- model.json beside a trained checkpoint
def _stage_model(tmp: Path, tiny: dict, info: str) -> Path:
    (tmp / "run").mkdir()
    (tmp / "run" / "model.pt").write_bytes(tiny["tiny"].read_bytes())
    (tmp / "run" / "model.json").write_text(info)
    return tmp / "run" / "model.pt"


@case
def model_json_input_size_is_used(tmp, tiny):
    png(tmp / "a.png")
    ckpt = _stage_model(tmp, tiny, json.dumps({"encoder": "mini-t", "max_depth": None, "input_size": 42}))

    def check(t, o):
        summary = json.loads((t / "out" / "summary.json").read_text())
        assert summary["input_size"] == 42 and "model.json" in summary["input_size_from"]

    return Case(["run", "--img-path", str(tmp / "a.png"), "--outdir", str(tmp / "out"), "--checkpoint", str(ckpt)],
                0, [], outputs=["out/a.png"], check=check)


@case
def model_json_malformed(tmp, tiny):
    png(tmp / "a.png")
    ckpt = _stage_model(tmp, tiny, '{"input_size": ')
    return Case(["run", "--img-path", str(tmp / "a.png"), "--outdir", str(tmp / "out"), "--checkpoint", str(ckpt)],
                2, ["model.json", "unreadable"])


@case
def model_json_bad_input_size(tmp, tiny):
    png(tmp / "a.png")
    ckpt = _stage_model(tmp, tiny, json.dumps({"encoder": "mini-t", "input_size": 5}))
    return Case(["run", "--img-path", str(tmp / "a.png"), "--outdir", str(tmp / "out"), "--checkpoint", str(ckpt)],
                2, ["model.json", "input_size"])


# --- killed runs
@case
def temporary_of_a_killed_writer_is_removed(tmp, tiny):
    png(tmp / "a.png")
    (tmp / "out" / "sub").mkdir(parents=True)
    pid = dead_pid()
    for left in (tmp / "out" / f".a.png.tmp-{pid}-0-0123456789ab.png", tmp / "out" / "sub" / f".b.npy.tmp-{pid}-3-abcdef012345.npy"):
        left.write_bytes(b"half a file")

    def check(t, o):
        summary = json.loads((t / "out" / "summary.json").read_text())
        assert summary["counts"]["temporaries of killed runs removed"] == 2

    return Case(run_args(tmp, tiny, tmp / "a.png"), 0, [], outputs=["out/a.png"], check=check,
                may_change=[f"out/.a.png.tmp-{pid}-0-0123456789ab.png", f"out/sub/.b.npy.tmp-{pid}-3-abcdef012345.npy"])


@case
def kill_9_then_resume(tmp, tiny):
    for i in range(30):
        png(tmp / "in" / f"img{i:02d}.png", 60, 80, seed=i)
    argv = ["run", "--img-path", str(tmp / "in"), "--outdir", str(tmp / "out"), "--encoder", "vits", "--random-weights", "--batch-size", "1",
            "--save-npy", "--input-size", "518"]
    process = subprocess.Popen([sys.executable, "-c", RUNNER, *argv], env=_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    _wait_for(lambda: list((tmp / "out").glob("img*.png")), process)
    process.kill()
    process.wait()
    return Case(argv[:-2] + ["--input-size", "28", "--skip-existing"], 0, [],
                outputs=[f"out/img{i:02d}.png" for i in range(30)],
                may_change=[str(p.relative_to(tmp)) for p in (tmp / "out").rglob("*")])


# --- classic bad files, each beside a good one
def _bad_file(name: str, make, says: str):
    def build(tmp, tiny):
        png(tmp / "in" / "good.png")
        make(tmp / "in" / name)
        return Case(run_args(tmp, tiny, tmp / "in"), 1, [name, says], outputs=["out/good.png"], culprits=[name])

    build.__name__ = f"bad_file_{name.replace('.', '_')}"
    return case(build)


_noise = cv2.imencode(".png", scene(60, 80, 3))[1].tobytes()
_jpeg = cv2.imencode(".jpg", scene(60, 80, 4))[1].tobytes()
_bad_file("empty.png", lambda p: p.write_bytes(b""), "empty file")
_bad_file("cut.png", lambda p: p.write_bytes(_noise[: len(_noise) // 2]), "truncated PNG")
_bad_file("cut.jpg", lambda p: p.write_bytes(_jpeg[: len(_jpeg) // 2]), "truncated JPEG")
_bad_file("text.jpg", lambda p: p.write_text("not a JPEG at all"), "not an image")
_bad_file("tiny.png", lambda p: cv2.imwrite(str(p), scene(10, 10)), "smaller than 14")
_bad_file("zeros.bmp", lambda p: p.write_bytes(bytes(4000)), "not an image")


@case
def directory_named_like_an_image(tmp, tiny):
    png(tmp / "good.png")
    (tmp / "dir.png").mkdir()
    (tmp / "list.txt").write_text(f"{tmp / 'dir.png'}\n{tmp / 'good.png'}\n")
    return Case(run_args(tmp, tiny, tmp / "list.txt"), 1, ["dir.png", "directory"], outputs=["out/good.png"],
                culprits=["dir.png"])


@case
def sixteen_bit_and_palette_images_are_good(tmp, tiny):
    from PIL import Image

    cv2.imwrite(str(tmp / "sixteen.png"), (scene()[..., 0].astype(np.uint16) * 257))
    Image.fromarray(scene()).convert("P").save(tmp / "palette.png")
    return Case(run_args(tmp, tiny, tmp / "sixteen.png", tmp / "palette.png"), 0, [],
                outputs=["out/sixteen.png", "out/palette.png"])


@case
def video_that_is_not_a_video(tmp, tiny):
    clip = _video(tmp / "v" / "clip.mp4")
    (tmp / "v" / "broken.mp4").write_text("not a video")
    return Case(["run", "--video-path", str(clip.parent), "--outdir", str(tmp / "out"), "--checkpoint",
                 str(tiny["tiny"]), "--input-size", "28"], 1, ["broken.mp4", "cannot open"], outputs=["out/clip.mp4"],
                culprits=["broken.mp4"])


@case
def bad_batch_size(tmp, tiny):
    png(tmp / "a.png")
    return Case(run_args(tmp, tiny, tmp / "a.png") + ["--batch-size", "0"], 2, ["--batch-size"])


@case
def bad_max_network_side(tmp, tiny):
    png(tmp / "a.png")
    return Case(run_args(tmp, tiny, tmp / "a.png") + ["--max-network-side", "5"], 2, ["--max-network-side"])


@case
def bad_depth_range(tmp, tiny):
    png(tmp / "a.png")
    return Case(run_args(tmp, tiny, tmp / "a.png") + ["--depth-range", "5", "1"], 2, ["--depth-range"])


@case
def refine_truncated_image_beside_a_good_one(tmp, tiny):
    png(tmp / "in" / "a.png", 112, 112)
    (tmp / "in" / "cut.png").write_bytes(_noise[:200])
    return Case(["refine", "--img-path", str(tmp / "in"), "--outdir", str(tmp / "out"), *REFINE_TINY], 1,
                ["cut.png", "truncated"], outputs=["out/a.png"], culprits=["cut.png"])


@case
def refine_outdir_is_a_file(tmp, tiny):
    png(tmp / "a.png", 112, 112)
    (tmp / "out").write_text("x")
    return Case(["refine", "--img-path", str(tmp / "a.png"), "--outdir", str(tmp / "out"), *REFINE_TINY], 2,
                ["--outdir", "is not a folder"])


@case
def refine_missing_checkpoint(tmp, tiny):
    png(tmp / "a.png", 112, 112)
    return Case(["refine", "--img-path", str(tmp / "a.png"), "--outdir", str(tmp / "out"), "--checkpoint",
                 str(tmp / "nope.pt")], 2, ["nope.pt", "no such file"])


@case
def refine_input_inside_outdir(tmp, tiny):
    photo = png(tmp / "out" / "photo.png", 112, 112)
    return Case(["refine", "--img-path", str(photo), "--outdir", str(tmp / "out"), *REFINE_TINY], 0, [],
                outputs=["out/photo_png.png"])


# ----------------------------------------------------------------------------------------------- helpers
def _fail(message: str):
    raise AssertionError(message)


def _warned(outdir: Path, name: str, text: str) -> bool:
    warnings = json.loads((outdir / "summary.json").read_text())["warnings"]
    assert any(Path(w["path"]).name == name and text in w["warning"] for w in warnings), warnings
    return True


def _video(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5, (56, 42))
    for t in range(3):
        writer.write(scene(42, 56, t))
    writer.release()
    return path


def _crash_check(tmp: Path, output: str) -> None:
    summary = json.loads((tmp / "out" / "summary.json").read_text())
    assert summary["exit_code"] == 1 and not summary["completed"] and "MemoryError" in summary["aborted"]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1"}


def _wait_for(condition, process, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < end, "timed out waiting for the run's first output"
        time.sleep(0.05)


@functools.lru_cache(maxsize=None)
def _memory_limit() -> int:
    "Address space of a process that imported the CLI (VmPeak), plus RUN_HEADROOM."
    if not Path("/proc/self/status").is_file():
        pytest.skip("no /proc/self/status to measure the address space on")
    code = ("import depth_anything_nb.apps.cli, re\n"
            "print(re.search(r'VmPeak:\\s+(\\d+) kB', open('/proc/self/status').read())[1])")
    baseline_kb = int(subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True,
                                     check=True).stdout.split()[-1])
    return baseline_kb * 1024 + RUN_HEADROOM


def _limit_memory(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _snapshot(folder: Path) -> dict[str, str]:
    "sha1 of every regular file under `folder` (links and FIFOs left alone)."
    out = {}
    for p in folder.rglob("*"):
        try:
            mode = p.lstat().st_mode
        except OSError:
            continue
        if stat.S_ISREG(mode):
            out[str(p.relative_to(folder))] = hashlib.sha1(p.read_bytes()).hexdigest()
    return out




@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, tiny, tmp_path, capfd):
    tmp = tmp_path / "case"
    tmp.mkdir()
    spec: Case = CASES[name](tmp, tiny)
    before = _snapshot(tmp)
    if spec.subprocess:
        process = subprocess.Popen([sys.executable, "-c", spec.runner, *spec.argv], env=_env(), cwd=tmp,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   preexec_fn=_limit_memory(_memory_limit()) if spec.memory_limit else None)
        try:
            if spec.during is not None:
                spec.during(process, tmp)
            out, err = process.communicate(timeout=spec.timeout)
        except BaseException:
            process.kill()
            process.communicate()
            raise
        code, text = process.returncode, out + err
    else:
        try:
            code = main(spec.argv)
        except SystemExit as e:  # argparse
            code = e.code
        captured = capfd.readouterr()
        text = captured.out + captured.err
    assert code == spec.code, f"exit code {code}, expected {spec.code}:\n{text[-3000:]}"
    for piece in spec.says:
        assert piece in text, f"{piece!r} not in the messages:\n{text[-3000:]}"
    if spec.code == 2:  # a usage error: one line, no traceback
        assert "Traceback" not in text and "error:" in text
    elif "Traceback" in text:
        assert name == "crash_is_recorded_as_a_failed_run", text[-3000:]
    for rel in spec.outputs:
        assert (tmp / rel).is_file(), f"{rel} (a good input's output) is missing:\n{text[-3000:]}"
    if spec.culprits:
        summary = json.loads((tmp / "out" / "summary.json").read_text())
        assert {Path(f["path"]).name for f in summary["failures"]} == set(spec.culprits)
    after = _snapshot(tmp)
    allowed = set(spec.may_change) | {"out/summary.json"}
    changed = [k for k, v in before.items() if k not in allowed and after.get(k) != v]
    assert not changed, f"inputs or earlier outputs changed or vanished: {changed}"
    temps = [str(p.relative_to(tmp)) for p in tmp.rglob("*") if ".tmp-" in p.name]
    assert not temps, f"temporary files left: {temps}"
    if spec.check is not None:
        spec.check(tmp, text)


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 40
